using System.Diagnostics.Metrics;
using MegaNet.Core.Diagnostics;
using MegaNet.Store;
using static MegaNet.Store.Tests.StoreTestKit;

namespace MegaNet.Store.Tests;

/// <summary>Checkpoint snapshots of the mailbox indexes (a buffer of chunks reused from checkpoint to checkpoint) restore exactly
/// the waiting mail, and each checkpoint's pause of the writes is measured, as are each put call and each group's
/// stages.</summary>
[Collection(AloneCollection.Name)]
public sealed class CheckpointSnapshotTests : IDisposable
{
    private readonly string _dir = NewDirectory();
    private readonly Random _random = new(31);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    // Collects the measurements of one MegaNet histogram (lock the list to read it).
    private static MeterListener Listen(string instrumentName, List<double> into)
    {
        var listener = new MeterListener
        {
            InstrumentPublished = (instrument, l) =>
            {
                if (instrument.Meter.Name == MegaNetMetrics.MeterName && instrument.Name == instrumentName)
                {
                    l.EnableMeasurementEvents(instrument);
                }
            },
        };
        listener.SetMeasurementEventCallback<double>((_, value, _, _) =>
        {
            lock (into)
            {
                into.Add(value);
            }
        });
        listener.SetMeasurementEventCallback<int>((_, value, _, _) =>
        {
            lock (into)
            {
                into.Add(value);
            }
        });
        listener.Start();
        return listener;
    }

    [Fact]
    public async Task Each_put_call_records_its_latency_from_arrival_to_answer()
    {
        var latencies = new List<double>();
        using MeterListener listener = Listen("meganet.store.put_latency", latencies);

        await using FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(Options(_dir));
        byte[] recipient = Bytes(_random, 32);
        int before;
        lock (latencies)
        {
            before = latencies.Count;
        }

        await store.PutAsync(new PutRequest(Bytes(_random, 100), recipient, DateTimeOffset.UtcNow.AddDays(1)));
        await store.PutManyAsync([.. Enumerable.Range(0, 5).Select(_ => new PutRequest(Bytes(_random, 100), recipient, DateTimeOffset.UtcNow.AddDays(1)))]);
        lock (latencies)
        {
            // One per call (in the alone collection no other test's store records meanwhile), and a commit takes time.
            Assert.True(latencies.Count == before + 2, $"{latencies.Count - before} put latencies recorded for 2 calls");
            Assert.All(latencies.Skip(before), l => Assert.True(l > 0));
        }
    }

    [Fact]
    public async Task Each_group_records_its_size_and_the_time_of_each_stage()
    {
        // Which stage bounds a many-core node's store: the prepare stage, the log commit or the apply stage.
        string[] names = ["meganet.store.group_size", "meganet.store.prepare_duration", "meganet.store.log_commit_duration", "meganet.store.apply_duration"];
        List<double>[] values = [.. names.Select(_ => new List<double>())];
        MeterListener[] listeners = [.. names.Select((n, i) => Listen(n, values[i]))];
        try
        {
            await using FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(Options(_dir));
            byte[] recipient = Bytes(_random, 32);
            int[] before = [.. values.Select(v => { lock (v) { return v.Count; } })];

            await store.PutAsync(new PutRequest(Bytes(_random, 100), recipient, DateTimeOffset.UtcNow.AddDays(1)));
            await store.PutManyAsync([.. Enumerable.Range(0, 5).Select(_ => new PutRequest(Bytes(_random, 100), recipient, DateTimeOffset.UtcNow.AddDays(1)))]);
            for (int i = 0; i < names.Length; i++)
            {
                lock (values[i])
                {
                    double[] recorded = [.. values[i].Skip(before[i])];
                    if (i == 0)
                    {
                        Assert.Equal([1.0, 5.0], recorded); // two groups: one put, then a call of five
                    }
                    else
                    {
                        Assert.True(recorded.Length == 2 && recorded.All(ms => ms > 0), $"{names[i]}: {string.Join(", ", recorded)} for 2 groups");
                    }
                }
            }
        }
        finally
        {
            foreach (MeterListener listener in listeners)
            {
                listener.Dispose();
            }
        }
    }

    [Theory]
    [InlineData(0)]
    [InlineData(7)]
    public async Task Checkpoints_in_a_row_with_mail_coming_and_going_restore_exactly_the_waiting_mail(int chunkEntries)
    {
        // chunkEntries 7: the snapshot buffer's chunks hold 7 entries each, so every mailbox of more spans several and
        // its entries reach the manifest in runs (0: the store's own chunks, one here).
        var pauses = new List<double>();
        using MeterListener listener = Listen("meganet.store.checkpoint_pause", pauses);

        StoreOptions options = Options(_dir);
        options.SnapshotChunkEntriesForTests = chunkEntries;
        byte[][] recipients = [.. Enumerable.Range(0, 5).Select(_ => Bytes(_random, 32))];
        var waiting = recipients.ToDictionary(r => Convert.ToHexString(r), _ => new List<ulong>());
        await using (FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options))
        {
            for (int checkpoint = 0; checkpoint < 6; checkpoint++)
            {
                // New mail for some recipients (a new one from the third round on), acks of some waiting mail, and
                // one mailbox emptied.
                foreach (byte[] recipient in recipients.Take(checkpoint < 2 ? 3 : 5))
                {
                    for (int i = _random.Next(1, 40); i > 0; i--)
                    {
                        PutReceipt receipt = await store.PutAsync(new PutRequest(Bytes(_random, 100), recipient, DateTimeOffset.UtcNow.AddDays(1)));
                        waiting[Convert.ToHexString(recipient)].Add(receipt.MailboxSeq);
                    }
                }

                foreach (byte[] recipient in recipients)
                {
                    List<ulong> box = waiting[Convert.ToHexString(recipient)];
                    List<ulong> acked = recipient == recipients[checkpoint % 5] ? [.. box] : [.. box.Where(_ => _random.Next(3) == 0)];
                    for (int from = 0; from < acked.Count; from += FasterEnvelopeStore.MaxAckSeqs)
                    {
                        await store.AckAsync(recipient, acked.Skip(from).Take(FasterEnvelopeStore.MaxAckSeqs).ToList());
                    }

                    box.RemoveAll(acked.Contains);
                }

                int before;
                lock (pauses)
                {
                    before = pauses.Count;
                }

                await store.CheckpointAsync();
                lock (pauses)
                {
                    Assert.True(pauses.Count > before, "the checkpoint recorded no pause");
                }
            }
        }

        // Reopened from the last checkpoint: every mailbox index holds what is waiting, no more, and reads return it.
        await using FasterEnvelopeStore reopened = await FasterEnvelopeStore.OpenAsync(options);
        Assert.Equal(waiting.Count(w => w.Value.Count > 0), reopened.MailboxCount);
        foreach (byte[] recipient in recipients)
        {
            List<ulong> expected = waiting[Convert.ToHexString(recipient)];
            Assert.Equal(expected, reopened.IndexedSeqs(recipient));
            Assert.Equal(expected, (await reopened.ListAsync(recipient, 0, 100_000)).Entries.Select(e => e.Seq));
        }
    }
}
