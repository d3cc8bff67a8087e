using System.Diagnostics;
using MegaNet.Store;
using static MegaNet.Store.Tests.StoreTestKit;

namespace MegaNet.Store.Tests;

/// <summary>
/// <see cref="StoreOptions.GroupsInFlight"/>: with every group held after its write-ahead-log commit, exactly that many
/// groups are committed and the next one waits unprepared; released, each put is answered, in log order.
/// </summary>
public sealed class GroupsInFlightTests : IDisposable
{
    private readonly string _dir = NewDirectory();
    private readonly Random _random = new(23);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public async Task With_groups_held_that_many_are_committed_and_no_more(int groupsInFlight)
    {
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        int started = 0;
        bool holding = false;
        StoreOptions options = Options(_dir);
        options.CheckpointInterval = TimeSpan.FromHours(1);
        options.GroupsInFlight = groupsInFlight;
        options.AfterCommitForTests = () =>
        {
            if (!Volatile.Read(ref holding))
            {
                return Task.CompletedTask;
            }

            Interlocked.Increment(ref started);
            return release.Task;
        };

        await using FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options);
        byte[] recipient = Bytes(_random, 32);
        var puts = new List<Task<PutReceipt>>();
        try
        {
            Volatile.Write(ref holding, true);
            for (int i = 0; i <= groupsInFlight; i++)
            {
                // One put a group: the next is sent once this one is committed (and held).
                puts.Add(store.PutAsync(new PutRequest(Bytes(_random, 100), recipient, DateTimeOffset.UtcNow.AddDays(1))).AsTask());
                if (i < groupsInFlight)
                {
                    var clock = Stopwatch.StartNew();
                    while (Volatile.Read(ref started) < i + 1)
                    {
                        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(30), $"{Volatile.Read(ref started)} groups committed after put {i + 1} of a bound of {groupsInFlight}");
                        await Task.Delay(10);
                    }
                }
            }

            // The put past the bound waits for the oldest group's answer (a wrong bound shows within the half second).
            await Task.Delay(500);
            Assert.Equal(groupsInFlight, Volatile.Read(ref started));
            Assert.DoesNotContain(puts, p => p.IsCompleted);
        }
        finally
        {
            release.TrySetResult();
        }

        PutReceipt[] receipts = await Task.WhenAll(puts);
        Assert.Equal(groupsInFlight + 1, Volatile.Read(ref started));
        Assert.Equal(Enumerable.Range(0, groupsInFlight + 1).Select(i => receipts[0].LogIndex + i), receipts.Select(r => r.LogIndex));
        Assert.All(receipts, r => Assert.False(r.Duplicate));
    }
}
