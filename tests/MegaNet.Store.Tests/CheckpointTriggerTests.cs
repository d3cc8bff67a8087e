using static MegaNet.Store.Tests.StoreTestKit;

namespace MegaNet.Store.Tests;

/// <summary>The write-ahead log between two checkpoints is at least twice what the last checkpoint wrote (its manifest
/// of every waiting envelope and the table's hash index), so a store of many waiting envelopes does not checkpoint more
/// than it logs; a small store still checkpoints every <see cref="StoreOptions.CheckpointLogBytes"/>.</summary>
[Collection(AloneCollection.Name)]
public sealed class CheckpointTriggerTests : IDisposable
{
    private readonly string _dir = NewDirectory();
    private readonly Random _random = new(53);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static StoreOptions OneMiBTrigger(string dir)
    {
        StoreOptions options = Options(dir);
        options.CheckpointLogBytes = 1L << 20;
        // Only the log trigger: no checkpoint falls due by time while a test runs.
        options.CheckpointInterval = TimeSpan.FromHours(1);
        options.MailboxMaxCount = int.MaxValue;
        options.MailboxMaxBytes = long.MaxValue;
        return options;
    }

    // Puts 1,000-byte envelopes until the log since the last finished checkpoint reaches at least `bytes`.
    private async Task LogAtLeastAsync(FasterEnvelopeStore store, byte[] recipient, long bytes)
    {
        while (store.LogSinceCheckpointForTests < bytes)
        {
            await store.PutManyAsync([.. Enumerable.Range(0, 64).Select(_ => new PutRequest(Bytes(_random, 1_000), recipient, DateTimeOffset.UtcNow.AddDays(1)))]);
        }
    }

    private static async Task<bool> CheckpointStartsAsync(FasterEnvelopeStore store, long startedBefore, TimeSpan within)
    {
        // The committer looks at the trigger between groups and, idle, at least once a second.
        DateTime end = DateTime.UtcNow + within;
        while (DateTime.UtcNow < end)
        {
            if (store.BackgroundCheckpointsStarted > startedBefore)
            {
                return true;
            }

            await Task.Delay(20);
        }

        return store.BackgroundCheckpointsStarted > startedBefore;
    }

    [Fact]
    public async Task A_store_of_many_waiting_envelopes_logs_twice_its_checkpoint_before_the_next()
    {
        await using FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(OneMiBTrigger(_dir));
        byte[][] recipients = [.. Enumerable.Range(0, 16).Select(_ => Bytes(_random, 32))];
        const int Waiting = 40_000;
        for (int i = 0; i < Waiting; i += 1_000)
        {
            await store.PutManyAsync([.. Enumerable.Range(i, 1_000).Select(k => new PutRequest(Bytes(_random, 64), recipients[k % 16], DateTimeOffset.UtcNow.AddDays(1)))]);
        }

        await store.CheckpointAsync();
        // 40,000 manifest entries of 60 bytes and the 1 MiB hash index of the fixture's 8 MiB budget.
        long threshold = store.CheckpointLogThreshold;
        Assert.True(threshold >= 2 * ((Waiting * 60L) + (1 << 20)), $"the log trigger after a checkpoint of {Waiting:N0} entries is {threshold:N0} bytes");

        // Twice the configured 1 MiB of log, which used to make a checkpoint due, and still under the threshold: none.
        long started = store.BackgroundCheckpointsStarted;
        await LogAtLeastAsync(store, recipients[0], 2L << 20);
        Assert.True(store.LogSinceCheckpointForTests < threshold, "the puts overshot the trigger; the test needs a larger store");
        Assert.False(await CheckpointStartsAsync(store, started, TimeSpan.FromSeconds(2.5)), "a checkpoint started before the log reached twice the last one's size");

        // Past it: one starts.
        await LogAtLeastAsync(store, recipients[0], threshold);
        Assert.True(await CheckpointStartsAsync(store, started, TimeSpan.FromSeconds(15)), $"no checkpoint started after {store.LogSinceCheckpointForTests:N0} bytes of log (trigger {threshold:N0})");
    }

    [Fact]
    public async Task A_small_store_checkpoints_every_CheckpointLogBytes_past_its_index()
    {
        StoreOptions options = OneMiBTrigger(_dir);
        // A 64 MiB budget: an 8 MiB hash index, which alone would ask for 16 MiB of log. A larger CheckpointLogBytes
        // governs.
        options.MemoryBudgetBytes = 64L << 20;
        options.CheckpointLogBytes = 24L << 20;
        await using FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options);
        byte[] recipient = Bytes(_random, 32);
        await store.PutAsync(new PutRequest(Bytes(_random, 100), recipient, DateTimeOffset.UtcNow.AddDays(1)));
        await store.CheckpointAsync();
        Assert.Equal(24L << 20, store.CheckpointLogThreshold);

        long started = store.BackgroundCheckpointsStarted;
        await LogAtLeastAsync(store, recipient, 24L << 20);
        Assert.True(await CheckpointStartsAsync(store, started, TimeSpan.FromSeconds(15)), $"no checkpoint started after {store.LogSinceCheckpointForTests:N0} bytes of log");
    }

    [Fact]
    public async Task Under_steady_growth_every_snapshot_finds_its_buffer_ready()
    {
        // Each interval adds about as many waiting envelopes as the last, as streaming does. The buffer a snapshot copies
        // the index into must be faulted in beforehand (halfway through the interval), not while the snapshot holds
        // every write: the rule of a quarter to spare alone missed every other checkpoint under such growth.
        // Chunks of 1,024 entries: the buffer grows by adding chunks, and keeps the ones it has (growing by a larger
        // copy faulted all of it in again, and left the old one to the collector).
        StoreOptions options = OneMiBTrigger(_dir);
        options.SnapshotChunkEntriesForTests = 1_024;
        await using FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options);
        byte[][] recipients = [.. Enumerable.Range(0, 16).Select(_ => Bytes(_random, 32))];
        int put = 0;
        DateTime end = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        IndexEntry[][] first = [];
        while (store.BackgroundCheckpointsStarted < 5 && DateTime.UtcNow < end)
        {
            await store.PutManyAsync([.. Enumerable.Range(put, 64).Select(k => new PutRequest(Bytes(_random, 1_000), recipients[k % 16], DateTimeOffset.UtcNow.AddDays(1)))]);
            put += 64;
            if (first.Length == 0 && store.BackgroundCheckpointsStarted >= 1)
            {
                first = store.SnapshotChunksForTests;
            }
        }

        Assert.True(store.BackgroundCheckpointsStarted >= 5, $"only {store.BackgroundCheckpointsStarted} checkpoints started after {put:N0} puts");
        Assert.Equal(0, store.SnapshotBuffersFaultedInline);
        IndexEntry[][] last = store.SnapshotChunksForTests;
        Assert.True(last.Length > first.Length, $"the buffer did not grow past {first.Length} chunks over {put:N0} puts");
        Assert.True(first.Length > 0 && first.Zip(last).All(p => ReferenceEquals(p.First, p.Second)), "growing replaced chunks the buffer had");
        Assert.All(last, c => Assert.True(c.Length <= 1_024));
    }
}
