using MegaNet.Store;
using static MegaNet.Store.Tests.StoreTestKit;

namespace MegaNet.Store.Tests;

/// <summary>What an open tells <see cref="StoreOptions.RecoveryProgress"/> while it recovers: before, a large store's
/// recovery (seconds to minutes) reported nothing until it was done.</summary>
public sealed class RecoveryProgressTests : IDisposable
{
    private readonly string _dir = NewDirectory();

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>Keeps every report, in the order and on the thread it came (Progress&lt;T&gt; would post them).</summary>
    private sealed class Recorded : IProgress<StoreRecoveryProgress>
    {
        public List<StoreRecoveryProgress> Reports { get; } = [];

        public void Report(StoreRecoveryProgress value) => Reports.Add(value);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task An_open_reports_what_it_found_the_replay_as_it_goes_and_what_it_recovered(bool checkpoint)
    {
        var random = new Random(Seed());
        string live = Path.Combine(_dir, "live"), crashed = Path.Combine(_dir, "crashed");
        byte[][] recipients = [Bytes(random, 32), Bytes(random, 32), Bytes(random, 32)];
        int checkpointed = checkpoint ? 60 : 0;
        await using (FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(Options(live)))
        {
            for (int i = 0; i < 200; i++)
            {
                if (i == checkpointed && checkpoint)
                {
                    await store.CheckpointAsync();
                }

                await store.PutAsync(new PutRequest(Bytes(random, 500), recipients[i % 3], DateTimeOffset.UtcNow.AddDays(1)));
            }

            // What a kill -9 now would leave: the checkpoint (if any) and the log after it.
            CopyStoreFiles(Path.Combine(live, "store"), Path.Combine(crashed, "store"));
        }

        var recorded = new Recorded();
        StoreOptions options = Options(crashed);
        options.RecoveryProgress = recorded;
        options.RecoveryProgressInterval = TimeSpan.Zero; // a report at every record
        await using (FasterEnvelopeStore reopened = await FasterEnvelopeStore.OpenAsync(options))
        {
            Assert.Equal(200, reopened.TreeSize);
        }

        List<StoreRecoveryProgress> reports = recorded.Reports;
        StoreRecoveryProgress opening = reports[0], loaded = reports[1], recovered = reports[^1];
        string storeDirectory = Path.GetFullPath(Path.Combine(crashed, "store"));
        Assert.All(reports, r => Assert.Equal(storeDirectory, r.StoreDirectory));
        Assert.All(reports, r => Assert.Equal(checkpoint, r.CheckpointFound));

        Assert.Equal(StoreRecoveryStage.Opening, opening.Stage);
        Assert.True(opening.LogBytesOnDisk >= 200 * 500, $"{opening.LogBytesOnDisk} bytes of log on disk");

        Assert.Equal(StoreRecoveryStage.Loaded, loaded.Stage);
        Assert.Equal(checkpointed, loaded.LogEntries);
        Assert.Equal(checkpointed, loaded.Envelopes);
        Assert.Equal(checkpoint ? 3 : 0, loaded.Mailboxes);
        Assert.InRange(loaded.ReplayBytes, (200 - checkpointed) * 500, opening.LogBytesOnDisk);

        // Every record replayed was reported (the interval is 0), in order, within the log to replay.
        StoreRecoveryProgress[] replaying = [.. reports.Skip(2).SkipLast(1)];
        Assert.All(replaying, r => Assert.Equal(StoreRecoveryStage.Replaying, r.Stage));
        Assert.Equal(Enumerable.Range(1, 200 - checkpointed).Select(n => (long)n), replaying.Select(r => r.ReplayedRecords));
        Assert.All(replaying, r => Assert.InRange(r.ReplayedBytes, 0, loaded.ReplayBytes));
        Assert.Equal(replaying.Select(r => r.ReplayedBytes).Order(), replaying.Select(r => r.ReplayedBytes));
        Assert.True(replaying[^1].ReplayedBytes > replaying[0].ReplayedBytes, "the bytes replayed did not grow");

        Assert.Equal(StoreRecoveryStage.Recovered, recovered.Stage);
        Assert.Equal(200 - checkpointed, recovered.ReplayedRecords);
        Assert.Equal(loaded.ReplayBytes, recovered.ReplayedBytes);
        Assert.Equal(200, recovered.LogEntries);
        Assert.Equal(200, recovered.Envelopes);
        Assert.Equal(3, recovered.Mailboxes);
        Assert.True(recovered.Elapsed >= loaded.Elapsed && loaded.Elapsed >= opening.Elapsed, "the times went back");
    }

    [Fact]
    public async Task Only_a_store_without_checkpoint_or_log_on_disk_is_new()
    {
        var recorded = new Recorded();
        string live = Path.Combine(_dir, "live"), crashed = Path.Combine(_dir, "crashed");
        StoreOptions options = Options(live);
        options.RecoveryProgress = recorded;
        await using (FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options))
        {
            await store.PutAsync(new PutRequest(Bytes(new Random(Seed()), 500), new byte[32], DateTimeOffset.UtcNow.AddDays(1)));
            CopyStoreFiles(Path.Combine(live, "store"), Path.Combine(crashed, "store")); // a log, no checkpoint
        }

        Assert.NotEmpty(recorded.Reports);
        Assert.All(recorded.Reports, r => Assert.True(r.IsNew));
        recorded.Reports.Clear();
        options = Options(crashed);
        options.RecoveryProgress = recorded;
        await using (FasterEnvelopeStore reopened = await FasterEnvelopeStore.OpenAsync(options))
        {
            Assert.Equal(1, reopened.TreeSize);
        }

        Assert.All(recorded.Reports, r => Assert.False(r.IsNew));
        Assert.NotEmpty(recorded.Reports);
    }

    [Fact]
    public void A_negative_progress_interval_is_refused_by_name()
    {
        StoreOptions options = Options(_dir);
        options.RecoveryProgressInterval = TimeSpan.FromSeconds(-1);
        Assert.Contains("RecoveryProgressInterval", Assert.Throws<ArgumentOutOfRangeException>(options.Validate).Message, StringComparison.Ordinal);
    }
}
