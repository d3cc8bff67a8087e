using MegaNet.Store;
using static MegaNet.Store.Tests.StoreTestKit;

namespace MegaNet.Store.Tests;

/// <summary>
/// Compaction of an envelope table whose files the disk damaged. FASTER 2.6.5's own compaction took a record's sizes
/// from the bytes on disk on trust: over zeros followed by the middle of a record it ended the process with an
/// AccessViolationException, and a page the device failed to read parsed as zeros, its live records dropped without a
/// word as the begin address moved past them. The store's own compaction copies only records the index locates, goes
/// past damage and reports it, and stops before a page it could not read for a reason that may pass.
/// </summary>
public sealed class CompactionDamageTests : IDisposable
{
    private const int PageBytes = 256 << 10;
    private readonly string _dir = NewDirectory();
    private readonly Random _random = new(17);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary><see cref="FillOneMailboxAsync"/>, then a checkpoint (the puts are in the table, not only in the
    /// write-ahead log).</summary>
    private async Task<(FasterEnvelopeStore Store, byte[] Recipient, List<PutRequest> Puts, List<PutReceipt> Receipts)> FillAsync()
    {
        (FasterEnvelopeStore Store, byte[] Recipient, List<PutRequest> Puts, List<PutReceipt> Receipts) filled = await FillOneMailboxAsync(_dir, _random);
        await filled.Store.CheckpointAsync();
        return filled;
    }

    // The entry of receipt as a listing gives it, or null where listing it throws damage (its record no longer reads back).
    private static async Task<MailboxEntry?> ReadEntryAsync(FasterEnvelopeStore store, byte[] recipient, PutReceipt receipt)
    {
        try
        {
            MailboxPage page = await store.ListAsync(recipient, receipt.MailboxSeq - 1, 1, PageBytes);
            Assert.Equal(receipt.MailboxSeq, page.Entries[0].Seq);
            return page.Entries[0];
        }
        catch (StoreCorruptException e)
        {
            Assert.Equal(receipt.MailboxSeq, e.MailboxSeq);
            return null;
        }
    }

    private static async Task<bool> IsDamagedAsync(FasterEnvelopeStore store, byte[] recipient, PutReceipt receipt) =>
        await ReadEntryAsync(store, recipient, receipt) is null;

    // Acknowledges every entry but those kept: little live mail in much log, so the next checkpoint compacts.
    private static async Task AckAllButAsync(FasterEnvelopeStore store, byte[] recipient, List<PutReceipt> receipts, Func<int, bool> keep)
    {
        ulong[] acked = [.. receipts.Where((r, i) => !keep(i)).Select(r => r.MailboxSeq)];
        Assert.Equal(acked.Length, await store.AckAsync(recipient, acked));
    }

    private static void AssertEnvelopesReadBack(List<PutRequest> puts, List<PutReceipt> receipts, IEnumerable<MailboxEntry> entries)
    {
        foreach (MailboxEntry entry in entries)
        {
            int i = receipts.FindIndex(r => r.MailboxSeq == entry.Seq);
            Assert.True(puts[i].Envelope.Span.SequenceEqual(entry.Envelope), $"envelope {i} (seq {entry.Seq}) changed");
        }
    }

    [Fact]
    public async Task Compaction_goes_past_zeroed_records_reports_them_and_keeps_every_other_live_envelope()
    {
        (FasterEnvelopeStore store, byte[] recipient, List<PutRequest> puts, List<PutReceipt> receipts) = await FillAsync();
        await using (store)
        {
            // A bad sector: 512 KiB of zeros from 1 MiB into the table, from a page's start into the middle of a record.
            using (var segment = new FileStream(Path.Combine(store.TableDirectory, "hlog.log.0"), FileMode.Open, FileAccess.Write, FileShare.ReadWrite))
            {
                segment.Position = 1 << 20;
                segment.Write(new byte[512 << 10]);
            }

            var damaged = new HashSet<int>();
            for (int i = 0; i < receipts.Count; i++)
            {
                if (await IsDamagedAsync(store, recipient, receipts[i]))
                {
                    damaged.Add(i);
                }
            }

            Assert.InRange(damaged.Count, 8, 10);
            // Kept: five before the damage, the damaged ones, and the last five (in memory).
            bool Kept(int i) => i < 5 || damaged.Contains(i) || i >= 115;
            await AckAllButAsync(store, recipient, receipts, Kept);
            var reports = new List<StoreCorruptException>();
            store.TableDamageFound += reports.Add;
            (long beginBefore, _) = store.TableExtent;

            await store.CheckpointAsync();

            CompactionOutcome outcome = Assert.IsType<CompactionOutcome>(store.LastCompaction);
            (long beginAfter, _) = store.TableExtent;
            Assert.True(beginAfter >= 3 << 19, $"the begin address moved from {beginBefore} to {beginAfter} only, not past the damage");
            Assert.Null(outcome.StoppedBy);
            Assert.InRange(outcome.FirstDamage, 1 << 20, (3 << 19) - 1);
            Assert.InRange(outcome.DamagedBytes, 1, 3 << 19);
            Assert.Equal(5, outcome.Copied);
            StoreCorruptException report = Assert.Single(reports);
            Assert.Contains($"{outcome.DamagedBytes:N0} bytes of its log that hold no readable record", report.Message, StringComparison.Ordinal);
            Assert.Contains(store.TableDirectory, report.Message, StringComparison.Ordinal);

            // The five before the damage were copied and read back as they were put; the damaged ones are still reported
            // as damage (their mailbox holds them), not taken for acknowledged; the last five are there.
            MailboxPage first = await store.ListAsync(recipient, 0, 1000, 4 << 20);
            Assert.Equal(receipts.Take(5).Select(r => r.MailboxSeq), first.Entries.Select(e => e.Seq));
            AssertEnvelopesReadBack(puts, receipts, first.Entries);
            foreach (int i in damaged)
            {
                Assert.True(await IsDamagedAsync(store, recipient, receipts[i]), $"envelope {i}, damaged, is no longer reported");
            }

            MailboxPage last = await store.ListAsync(recipient, receipts[damaged.Max()].MailboxSeq, 1000, 4 << 20);
            Assert.Equal(receipts.Skip(115).Select(r => r.MailboxSeq), last.Entries.Select(e => e.Seq));
            AssertEnvelopesReadBack(puts, receipts, last.Entries);
        }

        // The copies are in the checkpoint: reopened, the store reads them back.
        await using FasterEnvelopeStore reopened = await FasterEnvelopeStore.OpenAsync(Options(_dir));
        MailboxPage again = await reopened.ListAsync(recipient, 0, 1000, 4 << 20);
        Assert.Equal(receipts.Take(5).Select(r => r.MailboxSeq), again.Entries.Select(e => e.Seq));
        AssertEnvelopesReadBack(puts, receipts, again.Entries);
    }

    [Fact]
    public async Task Acknowledgements_shortened_in_memory_leave_zeros_that_are_no_damage()
    {
        await using FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(Options(_dir));
        var reports = new List<StoreCorruptException>();
        store.TableDamageFound += reports.Add;
        byte[] recipient = Bytes(_random, 32);
        var puts = new List<PutRequest>();
        var receipts = new List<PutReceipt>();
        // Nine in ten acknowledged right after their put, while the record is in the table's mutable memory: FASTER
        // shortens it in place to the metadata and zeroes the rest of the envelope's bytes there.
        for (int i = 0; i < 200; i++)
        {
            puts.Add(new PutRequest(Bytes(_random, 60_000), recipient, DateTimeOffset.UtcNow.AddDays(1)));
            receipts.Add(await store.PutAsync(puts[^1]));
            if (i % 10 != 0)
            {
                Assert.Equal(1, await store.AckAsync(recipient, [receipts[^1].MailboxSeq]));
            }
        }

        await store.CheckpointAsync();

        CompactionOutcome outcome = Assert.IsType<CompactionOutcome>(store.LastCompaction);
        Assert.True(outcome.Reclaimed > 0, "the compaction reclaimed nothing");
        Assert.Equal(0, outcome.DamagedBytes);
        Assert.Empty(reports);
        MailboxPage page = await store.ListAsync(recipient, 0, 1000, 4 << 20);
        Assert.Equal(receipts.Where((r, i) => i % 10 == 0).Select(r => r.MailboxSeq), page.Entries.Select(e => e.Seq));
        AssertEnvelopesReadBack(puts, receipts, page.Entries);
    }

    [Fact]
    public async Task Compaction_stops_before_a_page_it_cannot_read_for_now_and_loses_nothing()
    {
        (FasterEnvelopeStore store, byte[] recipient, List<PutRequest> puts, List<PutReceipt> receipts) = await FillAsync();
        await using (store)
        {
            static bool Kept(int i) => i % 20 == 0;
            await AckAllButAsync(store, recipient, receipts, Kept);
            // Out of open files for every read from 2 MiB into the table on.
            store.TableDeviceForTests.FailReadForTests = offset => offset >= 2 << 20;

            await store.CheckpointAsync();

            CompactionOutcome stopped = Assert.IsType<CompactionOutcome>(store.LastCompaction);
            Assert.Contains("Too many open files (injected)", Assert.IsType<IOException>(stopped.StoppedBy).Message, StringComparison.Ordinal);
            Assert.Equal(0, stopped.DamagedBytes);
            (long begin, _) = store.TableExtent;
            Assert.InRange(begin, 1, 2 << 20);

            // Every live envelope is still there, also those in the pages compaction did not reach.
            store.TableDeviceForTests.FailReadForTests = null;
            MailboxPage page = await store.ListAsync(recipient, 0, 1000, 4 << 20);
            Assert.Equal(receipts.Where((r, i) => Kept(i)).Select(r => r.MailboxSeq), page.Entries.Select(e => e.Seq));
            AssertEnvelopesReadBack(puts, receipts, page.Entries);

            // Once reads work, the next compaction goes on from there.
            await store.CheckpointAsync();
            Assert.Null(store.LastCompaction!.Value.StoppedBy);
            Assert.True(store.TableExtent.Begin > begin, $"the begin address stayed at {begin}");
            page = await store.ListAsync(recipient, 0, 1000, 4 << 20);
            Assert.Equal(receipts.Where((r, i) => Kept(i)).Select(r => r.MailboxSeq), page.Entries.Select(e => e.Seq));
            AssertEnvelopesReadBack(puts, receipts, page.Entries);
        }
    }

    [Fact]
    public async Task A_chunk_the_device_fails_EIO_is_damage_past_which_compaction_goes_keeping_the_records_around_it()
    {
        (FasterEnvelopeStore store, byte[] recipient, List<PutRequest> puts, List<PutReceipt> receipts) = await FillAsync();
        await using (store)
        {
            // Every tenth envelope kept, the rest acknowledged; the device fails reads of 64 KiB at 1 MiB (EIO) only.
            static bool Kept(int i) => i % 10 == 0;
            await AckAllButAsync(store, recipient, receipts, Kept);
            store.TableDeviceForTests.FailReadErrnoForTests = 5;
            store.TableDeviceForTests.FailReadForTests = offset => offset is >= 1 << 20 and < (1 << 20) + (64 << 10);

            await store.CheckpointAsync();

            CompactionOutcome outcome = store.LastCompaction!.Value;
            Assert.Null(outcome.StoppedBy);
            Assert.Equal(1 << 20, outcome.FirstDamage);
            Assert.InRange(outcome.DamagedBytes, 64 << 10, 3 * 60_112);
            store.TableDeviceForTests.FailReadForTests = null;

            // The kept envelopes are all there, but for one whose record lay in the failed chunk, if one did.
            var missing = new List<int>();
            var read = new List<MailboxEntry>();
            foreach (int i in Enumerable.Range(0, receipts.Count).Where(Kept))
            {
                if (await ReadEntryAsync(store, recipient, receipts[i]) is { } entry)
                {
                    read.Add(entry);
                }
                else
                {
                    missing.Add(i);
                }
            }

            Assert.True(missing.Count <= 1, $"kept envelopes {string.Join(", ", missing)} lost, beyond the one chunk");
            AssertEnvelopesReadBack(puts, receipts, read);
        }
    }
}
