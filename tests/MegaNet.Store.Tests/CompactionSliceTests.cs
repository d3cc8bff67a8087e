using MegaNet.Store;
using static MegaNet.Store.Tests.StoreTestKit;

namespace MegaNet.Store.Tests;

/// <summary>
/// A compaction that a background checkpoint starts runs a step at a time between groups (or while the store is idle),
/// never while a checkpoint is being written: that checkpoint could take the moved begin address without the copies,
/// which lie past its tail, and a crash would recover it without the live mail they held.
/// </summary>
public sealed class CompactionSliceTests : IDisposable
{
    private readonly string _dir = NewDirectory();

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public async Task A_compaction_runs_step_by_step_after_the_checkpoint_that_started_it_is_written_and_keeps_all_live_mail()
    {
        var random = new Random(5);
        StoreOptions options = Options(_dir);
        options.CheckpointInterval = TimeSpan.FromDays(1);
        await using FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options);

        // 300 envelopes of 60,000 bytes (18 MB of table under an 8 MiB budget, 1 MiB pages), three in four acknowledged:
        // garbage dominates, so the next checkpoint starts a compaction of the part on disk.
        byte[] recipient = Bytes(random, 32);
        var live = new Dictionary<ulong, byte[]>();
        var acks = new List<ulong>();
        for (int i = 0; i < 300; i += 20)
        {
            var puts = Enumerable.Range(0, 20).Select(_ => new PutRequest(Bytes(random, 60_000), recipient, DateTimeOffset.UtcNow.AddDays(1))).ToList();
            IReadOnlyList<PutResult> results = await store.PutManyAsync(puts);
            for (int j = 0; j < puts.Count; j++)
            {
                PutReceipt receipt = results[j].Receipt ?? throw new Xunit.Sdk.XunitException($"put refused: {results[j].Error}");
                if ((i + j) % 4 == 0)
                {
                    live[receipt.MailboxSeq] = puts[j].Envelope.ToArray();
                }
                else
                {
                    acks.Add(receipt.MailboxSeq);
                }
            }
        }

        Assert.Equal(acks.Count, await store.AckAsync(recipient, acks));
        long begin = store.TableExtent.Begin;

        // A background checkpoint, held after its table checkpoint is written.
        var entered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        store.AfterTableCheckpointForTests = async () =>
        {
            entered.TrySetResult();
            await release.Task;
        };
        try
        {
            options.CheckpointInterval = TimeSpan.FromMilliseconds(10);
            await entered.Task.WaitAsync(TimeSpan.FromSeconds(30));
            options.CheckpointInterval = TimeSpan.FromDays(1);

            // Groups come while it is written: no step of the compaction runs between them.
            for (int i = 0; i < 10; i++)
            {
                var put = new PutRequest(Bytes(random, 60_000), recipient, DateTimeOffset.UtcNow.AddDays(1));
                PutReceipt receipt = await store.PutAsync(put);
                live[receipt.MailboxSeq] = put.Envelope.ToArray();
            }

            await Task.Delay(100); // idle wakes too
            Assert.Equal(0, store.CompactionStepsBetweenGroups);
            Assert.Equal(begin, store.TableExtent.Begin);
            Assert.Null(store.LastCompaction);
        }
        finally
        {
            // Once it is written, the compaction runs step by step (the store is idle: one after another) to its end.
            // (Also when an assertion failed: the store's disposal waits for the checkpoint.)
            release.TrySetResult();
        }

        for (var waited = System.Diagnostics.Stopwatch.StartNew(); store.LastCompaction is null; await Task.Delay(5))
        {
            Assert.True(waited.Elapsed < TimeSpan.FromSeconds(30), "the compaction did not end within 30 s");
        }

        CompactionOutcome outcome = store.LastCompaction.Value;
        Assert.True(store.CompactionStepsBetweenGroups >= 2, $"{store.CompactionStepsBetweenGroups} compaction steps between groups");
        Assert.True(outcome.Reclaimed > 0 && outcome.Copied > 0, $"{outcome}");
        Assert.Equal(begin + outcome.Reclaimed, store.TableExtent.Begin);
        Assert.Equal(0, outcome.DamagedBytes);

        await AssertMailboxAsync(store, recipient, live);
        store.AfterTableCheckpointForTests = null;
        await store.DisposeAsync();
        await using FasterEnvelopeStore reopened = await FasterEnvelopeStore.OpenAsync(options);
        await AssertMailboxAsync(reopened, recipient, live);
    }

    private static async Task AssertMailboxAsync(FasterEnvelopeStore store, byte[] recipient, Dictionary<ulong, byte[]> live)
    {
        var listed = new List<MailboxEntry>();
        for (ulong after = 0; ;)
        {
            MailboxPage page = await store.ListAsync(recipient, after, 50);
            if (page.Entries.Count == 0)
            {
                break;
            }

            listed.AddRange(page.Entries);
            after = page.NextCursor;
        }

        Assert.Equal(live.Keys.Order(), listed.Select(e => e.Seq));
        Assert.All(listed, e => Assert.True(live[e.Seq].AsSpan().SequenceEqual(e.Envelope), $"the envelope of seq {e.Seq} differs"));
    }
}
