using System.Reflection;
using MegaNet.Node.Services;
using MegaNet.Store;

namespace MegaNet.Node.Tests;

/// <summary>The notifier sits in the store's serial apply stage, once per stored envelope: it must not allocate or
/// throw there, whether anyone is subscribed or not.</summary>
public sealed class MailboxNotifierTests
{
    /// <summary>A store that only keeps what subscribes to <see cref="IEnvelopeStore.MailArrived"/>; every other member throws.</summary>
    public class EventOnlyStore : DispatchProxy
    {
        public Action<ReadOnlyMemory<byte>, ulong>? Handler { get; private set; }

        protected override object? Invoke(MethodInfo? targetMethod, object?[]? args)
        {
            if (targetMethod?.Name == "add_MailArrived")
            {
                Handler += (Action<ReadOnlyMemory<byte>, ulong>)args![0]!;
                return null;
            }

            throw new NotSupportedException(targetMethod?.Name);
        }
    }

    private static (MailboxNotifier Notifier, Action<ReadOnlyMemory<byte>, ulong> Raise) Make()
    {
        IEnvelopeStore store = DispatchProxy.Create<IEnvelopeStore, EventOnlyStore>();
        var notifier = new MailboxNotifier(store);
        return (notifier, ((EventOnlyStore)(object)store).Handler!);
    }

    private static long AllocatedBy(Action<ReadOnlyMemory<byte>, ulong> raise, ReadOnlyMemory<byte> address, int times)
    {
        raise(address, 0); // warm up: JIT and first-call state
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < times; i++)
        {
            raise(address, (ulong)i);
        }

        return GC.GetAllocatedBytesForCurrentThread() - before;
    }

    [Fact]
    public void Mail_for_nobody_allocates_nothing()
    {
        (_, Action<ReadOnlyMemory<byte>, ulong> raise) = Make();
        Assert.Equal(0, AllocatedBy(raise, new byte[32], 1_000));
    }

    [Fact]
    public async Task A_burst_for_a_subscribed_mailbox_allocates_nothing_and_wakes_once()
    {
        (MailboxNotifier notifier, Action<ReadOnlyMemory<byte>, ulong> raise) = Make();
        byte[] address = new byte[32];
        address[5] = 7;
        byte[] other = new byte[32];
        using MailboxNotifier.Subscription subscription = notifier.Subscribe(address);
        int thrown = 0;
        EventHandler<System.Runtime.ExceptionServices.FirstChanceExceptionEventArgs> count = (_, e) =>
        {
            if (e.Exception is SemaphoreFullException)
            {
                Interlocked.Increment(ref thrown);
            }
        };
        AppDomain.CurrentDomain.FirstChanceException += count;
        try
        {
            // Another mailbox's mail, then a burst for this one while it is already signalled.
            Assert.Equal(0, AllocatedBy(raise, other, 100));
            Assert.Equal(0, AllocatedBy(raise, address, 1_000));
        }
        finally
        {
            AppDomain.CurrentDomain.FirstChanceException -= count;
        }

        Assert.Equal(0, thrown);
        Assert.True(await subscription.WaitAsync(TimeSpan.Zero, CancellationToken.None));
        Assert.False(await subscription.WaitAsync(TimeSpan.Zero, CancellationToken.None)); // one wake-up drains the burst
        raise(address, 2_000);
        Assert.True(await subscription.WaitAsync(TimeSpan.Zero, CancellationToken.None));
    }

    [Fact]
    public async Task Mail_after_the_last_unsubscribe_is_ignored_and_a_new_subscriber_is_woken()
    {
        (MailboxNotifier notifier, Action<ReadOnlyMemory<byte>, ulong> raise) = Make();
        byte[] address = new byte[32];
        notifier.Subscribe(address).Dispose();
        Assert.Equal(0, notifier.Addresses);
        raise(address, 1);
        using MailboxNotifier.Subscription subscription = notifier.Subscribe(address);
        Assert.False(await subscription.WaitAsync(TimeSpan.Zero, CancellationToken.None));
        raise(address, 2);
        Assert.True(await subscription.WaitAsync(TimeSpan.Zero, CancellationToken.None));
        Assert.Equal(1, notifier.Count(address));
    }
}
