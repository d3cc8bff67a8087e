using System.Text;
using MegaNet.Api;
using MegaNet.Api.V1;

namespace MegaNet.Node.Tests;

/// <summary>
/// The client library called from a thread with a synchronization context that blocks on the call, as an app's UI
/// thread does with <c>.Result</c>: every call completes, and nothing is posted to that context. Before, most of
/// <see cref="MegaNetClient"/>'s awaits came back to the caller's context, so such a caller deadlocked (the work after
/// the await waited for the thread that waited for it), and an app whose UI thread did not block ran the library's
/// work there.
/// </summary>
public sealed class BlockedCallerContextTests
{
    [Fact]
    public async Task Send_fetch_listen_ack_and_receipt_checks_complete_on_a_blocked_thread_and_post_nothing_to_its_context()
    {
        await using TestNode node = await TestNode.StartAsync();
        using MegaNetClient client = node.Client();
        using Identity alice = Identity.Create(), bob = Identity.Create();
        var ui = new BlockedThreadContext();

        Receipt receipt = await OnBlockedThreadAsync(ui, () => client.SendAsync(alice, bob.Card, Encoding.UTF8.GetBytes("hello"), "text/plain"));
        IReadOnlyList<Receipt> parts = await OnBlockedThreadAsync(ui, () => client.SendFileInPartsAsync(alice, bob.Card, new byte[(2 * FileParts.SliceLength("f.bin")) + 1], "f.bin"));
        Assert.Equal(3, parts.Count);
        FetchResult page = await OnBlockedThreadAsync(ui, () => client.FetchAsync(bob));
        Assert.Equal("hello", page.Messages[0].Content.Content.ToStringUtf8());
        ReceivedMessage first = await OnBlockedThreadAsync(ui, () =>
        {
            // Blocked on, not awaited: an await here would post the test's own continuation to the context.
            IAsyncEnumerator<ReceivedMessage> listening = client.ListenAsync(bob).GetAsyncEnumerator();
            try
            {
                Assert.True(listening.MoveNextAsync().AsTask().Wait(TimeSpan.FromSeconds(30)), "no message from ListenAsync in 30 s");
                return Task.FromResult(listening.Current);
            }
            finally
            {
                Assert.True(listening.DisposeAsync().AsTask().Wait(TimeSpan.FromSeconds(30)), "ListenAsync not disposed in 30 s");
            }
        });
        Assert.Equal(page.Messages[0].Seq, first.Seq);
        Assert.Null(await OnBlockedThreadAsync(ui, () => client.VerifyReceiptAsync(receipt)));
        (SignedTreeHead? current, string? problem) = await OnBlockedThreadAsync(ui, () => client.CheckLogAsync(receipt.TreeHead));
        Assert.Null(problem);
        Assert.NotNull(current);
        Assert.Equal(page.Messages.Count, await OnBlockedThreadAsync(ui, () => client.AckAsync(bob, page.Messages.Select(m => m.Seq))));

        Assert.Equal(0, ui.Posted);
    }

    /// <summary>Runs <paramref name="call"/> on a thread of its own whose context is <paramref name="ui"/>, and blocks
    /// that thread on the result, at most 30 s.</summary>
    private static Task<T> OnBlockedThreadAsync<T>(BlockedThreadContext ui, Func<Task<T>> call)
    {
        var result = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        var thread = new Thread(() =>
        {
            SynchronizationContext.SetSynchronizationContext(ui);
            try
            {
                Task<T> task = call();
                if (task.Wait(TimeSpan.FromSeconds(30)))
                {
                    result.SetResult(task.Result);
                }
                else
                {
                    result.SetException(new TimeoutException($"no answer in 30 s on a blocked thread; {ui.Posted} continuation(s) posted to its context"));
                }
            }
            catch (Exception e)
            {
                result.SetException(e);
            }
        })
        { IsBackground = true };
        thread.Start();
        return result.Task;
    }

    /// <summary>The context of a thread that is blocked: what is posted to it never runs (it is counted).</summary>
    private sealed class BlockedThreadContext : SynchronizationContext
    {
        private int _posted;

        public int Posted => Volatile.Read(ref _posted);

        public override void Post(SendOrPostCallback d, object? state) => Interlocked.Increment(ref _posted);

        public override void Send(SendOrPostCallback d, object? state) => Interlocked.Increment(ref _posted);
    }
}
