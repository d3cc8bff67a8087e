using MegaNet.Core.Transparency;
using MegaNet.Store;
using static MegaNet.Store.Tests.StoreTestKit;

namespace MegaNet.Store.Tests;

public sealed class EnvelopeStoreTests : IDisposable
{
    private readonly string _dir = NewDirectory();
    private readonly Random _random = new(42);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public async Task An_envelope_round_trips_and_its_receipt_verifies()
    {
        await using FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(Options(_dir));
        byte[] recipient = Bytes(_random, 32), envelope = Bytes(_random, 1024);
        PutReceipt receipt = await store.PutAsync(new PutRequest(envelope, recipient, DateTimeOffset.UtcNow.AddDays(1)));

        Assert.False(receipt.Duplicate);
        Assert.Equal(0, receipt.LogIndex);
        Assert.Equal(1UL, receipt.MailboxSeq);
        MailboxPage page = await store.ListAsync(recipient, 0, 10);
        MailboxEntry entry = Assert.Single(page.Entries);
        Assert.Equal(envelope, entry.Envelope);
        Assert.Equal(receipt.EnvelopeId, entry.EnvelopeId);

        SignedTreeHead head = receipt.TreeHead;
        Assert.Equal(1, head.TreeSize);
        Assert.True(TreeHeadSignature.Verify(head.NodePublicKey, head.TreeSize, head.RootHash, head.TimestampUnixMs, head.Signature));
        IReadOnlyList<byte[]> proof = store.GetInclusionProof(receipt.LogIndex, head.TreeSize);
        Assert.True(MerkleTree.VerifyInclusion(MerkleTree.LeafHash(receipt.EnvelopeId), receipt.LogIndex, head.TreeSize, proof, head.RootHash));
    }

    [Fact]
    public async Task A_page_whose_entries_were_all_acknowledged_meanwhile_lists_on_instead_of_ending_empty()
    {
        await using FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(Options(_dir));
        byte[] recipient = Bytes(_random, 32);
        var receipts = new List<PutReceipt>();
        for (int i = 0; i < 5; i++)
        {
            receipts.Add(await store.PutAsync(new PutRequest(Bytes(_random, 300), recipient, DateTimeOffset.UtcNow.AddDays(1))));
        }

        // Another device acknowledges the first two between the index read of a page of two and the envelopes' read.
        bool once = true;
        store.AfterListIndexForTests = () =>
        {
            if (once)
            {
                once = false;
                Assert.Equal(2, store.AckAsync(recipient, [receipts[0].MailboxSeq, receipts[1].MailboxSeq]).AsTask().GetAwaiter().GetResult());
            }
        };
        MailboxPage page = await store.ListAsync(recipient, 0, 2);
        // Empty with its cursor past the two (before), the page read as the mailbox's end: the other three waited.
        Assert.Equal([receipts[2].MailboxSeq, receipts[3].MailboxSeq], page.Entries.Select(e => e.Seq));
        Assert.Equal(receipts[3].MailboxSeq, page.NextCursor);
        Assert.Equal(3, page.WaitingCount);

        // Everything acknowledged between the two reads: the mailbox is gone, and the page says it holds nothing (it
        // reported the count of the first read).
        once = true;
        store.AfterListIndexForTests = () =>
        {
            if (once)
            {
                once = false;
                Assert.Equal(3, store.AckAsync(recipient, [.. receipts.Skip(2).Select(r => r.MailboxSeq)]).AsTask().GetAwaiter().GetResult());
            }
        };
        page = await store.ListAsync(recipient, receipts[1].MailboxSeq, 10);
        Assert.Empty(page.Entries);
        Assert.Equal(0, page.WaitingCount);
        Assert.Equal(0, page.WaitingBytes);
    }

    [Fact]
    public async Task A_given_envelope_id_is_used_as_is_and_a_malformed_one_is_refused()
    {
        await using FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(Options(_dir));
        byte[] recipient = Bytes(_random, 32), envelope = Bytes(_random, 512);
        byte[] id = NSec.Cryptography.HashAlgorithm.Blake2b_256.Hash(envelope);
        PutReceipt given = await store.PutAsync(new PutRequest(envelope, recipient, DateTimeOffset.UtcNow.AddDays(1)) { EnvelopeId = id });
        Assert.Equal(id, given.EnvelopeId);

        // The same bytes without an id hash to the same id: a replay of the first put.
        PutReceipt again = await store.PutAsync(new PutRequest(envelope, recipient, DateTimeOffset.UtcNow.AddDays(1)));
        Assert.True(again.Duplicate);
        Assert.Equal(given.LogIndex, again.LogIndex);

        ArgumentException e = await Assert.ThrowsAsync<ArgumentException>(async () =>
            await store.PutAsync(new PutRequest(Bytes(_random, 512), recipient, DateTimeOffset.UtcNow.AddDays(1)) { EnvelopeId = new byte[31] }));
        Assert.Contains("32 bytes", e.Message, StringComparison.Ordinal);
        Assert.Equal(1, store.GetTreeHead().TreeSize);
    }

    [Fact]
    public async Task The_same_envelope_twice_is_one_entry_with_the_original_receipt()
    {
        await using FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(Options(_dir));
        byte[] recipient = Bytes(_random, 32), envelope = Bytes(_random, 300);
        var request = new PutRequest(envelope, recipient, DateTimeOffset.UtcNow.AddDays(1));
        PutReceipt first = await store.PutAsync(request);
        PutReceipt second = await store.PutAsync(request);
        IReadOnlyList<PutResult> both = await store.PutManyAsync([request, request]);

        Assert.True(second.Duplicate);
        Assert.Equal(first.EnvelopeId, second.EnvelopeId);
        Assert.Equal(first.LogIndex, second.LogIndex);
        Assert.All(both, r => Assert.True(r.Receipt!.Duplicate));
        Assert.Single((await store.ListAsync(recipient, 0, 10)).Entries);
        Assert.Equal(1, store.GetTreeHead().TreeSize);
        Assert.NotNull(await store.FindAsync(first.EnvelopeId));
    }

    [Fact]
    public async Task A_put_whose_caller_looked_it_up_is_still_a_duplicate_of_every_earlier_put()
    {
        // Admission reads LookupMark, finds nothing, and passes the mark on; meanwhile the same envelope may be stored
        // (a concurrent copy). The store must answer every later copy as a duplicate: from the ids it still remembers
        // since the mark, and from its table once it has forgotten them (after RetainedIds more puts, or a checkpoint).
        await using FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(Options(_dir));
        byte[] recipient = Bytes(_random, 32), envelope = Bytes(_random, 300);
        byte[] id = NSec.Cryptography.HashAlgorithm.Blake2b_256.Hash(envelope);
        long mark = store.LookupMark;
        Assert.Null(await store.FindAsync(id));
        var request = new PutRequest(envelope, recipient, DateTimeOffset.UtcNow.AddDays(1)) { EnvelopeId = id, NotFoundAtMark = mark };
        PutReceipt first = await store.PutAsync(request);
        Assert.False(first.Duplicate);

        PutReceipt remembered = await store.PutAsync(request);
        Assert.True(remembered.Duplicate, "a copy looked up before the first was stored was stored again");
        Assert.Equal(first.LogIndex, remembered.LogIndex);

        for (int done = 0; done <= FasterEnvelopeStore.RetainedIds; done += 1000)
        {
            await store.PutManyAsync(Enumerable.Range(0, 1000)
                .Select(_ => new PutRequest(Bytes(_random, 64), Bytes(_random, 32), DateTimeOffset.UtcNow.AddDays(1))).ToList());
        }

        long size = store.GetTreeHead().TreeSize;
        PutReceipt fromTable = await store.PutAsync(request);
        Assert.True(fromTable.Duplicate, "once the store forgot the ids since the mark, it must read its table");
        Assert.Equal(first.LogIndex, fromTable.LogIndex);

        await store.CheckpointAsync();
        PutReceipt afterCheckpoint = await store.PutAsync(request);
        Assert.True(afterCheckpoint.Duplicate);
        Assert.Equal(size, store.GetTreeHead().TreeSize);
        Assert.Single((await store.ListAsync(recipient, 0, 10)).Entries);
    }

    [Fact]
    public async Task A_mailbox_pages_from_a_cursor_and_ack_deletes()
    {
        await using FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(Options(_dir));
        byte[] recipient = Bytes(_random, 32);
        var requests = Enumerable.Range(0, 25).Select(i => new PutRequest(Bytes(_random, 100 + i), recipient, DateTimeOffset.UtcNow.AddDays(1))).ToList();
        IReadOnlyList<PutResult> results = await store.PutManyAsync(requests);
        Assert.All(results, r => Assert.Null(r.Error));

        var seen = new List<byte[]>();
        ulong cursor = 0;
        for (int pages = 0; ; pages++)
        {
            MailboxPage page = await store.ListAsync(recipient, cursor, 10);
            if (page.Entries.Count == 0)
            {
                Assert.Equal(3, pages);
                break;
            }

            seen.AddRange(page.Entries.Select(e => e.Envelope));
            cursor = page.NextCursor;
        }

        Assert.Equal(requests.Select(r => r.Envelope.ToArray()), seen);
        Assert.Equal(2, await store.AckAsync(recipient, [1, 2, 999]));
        MailboxPage after = await store.ListAsync(recipient, 0, 100);
        Assert.Equal(23, after.Entries.Count);
        Assert.Equal(3UL, after.Entries[0].Seq);
    }

    [Fact]
    public async Task Expired_entries_are_never_returned_and_bad_expiries_are_refused()
    {
        var clock = new ManualClock(DateTimeOffset.UtcNow);
        await using FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(Options(_dir, clock));
        byte[] recipient = Bytes(_random, 32);
        await store.PutAsync(new PutRequest(Bytes(_random, 64), recipient, clock.Now.AddHours(1)));
        await store.PutAsync(new PutRequest(Bytes(_random, 64), recipient, clock.Now.AddDays(2)));
        clock.Now = clock.Now.AddHours(2);

        MailboxPage page = await store.ListAsync(recipient, 0, 10);
        Assert.Single(page.Entries);
        await Assert.ThrowsAsync<ArgumentException>(async () => await store.PutAsync(new PutRequest(Bytes(_random, 64), recipient, clock.Now.AddSeconds(-1))));
        await Assert.ThrowsAsync<ArgumentException>(async () => await store.PutAsync(new PutRequest(Bytes(_random, 64), recipient, clock.Now.AddDays(31))));
    }

    [Fact]
    public async Task Over_quota_is_refused_and_nothing_is_written()
    {
        StoreOptions options = Options(_dir);
        options.MailboxMaxCount = 3;
        options.MailboxMaxBytes = 10_000;
        await using FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options);
        byte[] recipient = Bytes(_random, 32);
        for (int i = 0; i < 3; i++)
        {
            await store.PutAsync(new PutRequest(Bytes(_random, 100), recipient, DateTimeOffset.UtcNow.AddDays(1)));
        }

        QuotaExceededException e = await Assert.ThrowsAsync<QuotaExceededException>(async () =>
            await store.PutAsync(new PutRequest(Bytes(_random, 100), recipient, DateTimeOffset.UtcNow.AddDays(1))));
        Assert.Contains("full", e.Message);
        Assert.Equal(3, store.GetTreeHead().TreeSize);

        byte[] other = Bytes(_random, 32);
        await Assert.ThrowsAsync<QuotaExceededException>(async () =>
            await store.PutAsync(new PutRequest(Bytes(_random, 10_001), other, DateTimeOffset.UtcNow.AddDays(1))));
        Assert.Equal(3, store.GetTreeHead().TreeSize);
    }

    [Fact]
    public async Task ReportedUsage_from_its_mark_follows_puts_acks_sweeps_and_reopens()
    {
        var clock = new ManualClock(DateTimeOffset.UtcNow);
        StoreOptions options = Options(_dir, clock);
        options.MailboxMaxCount = 8;
        options.MailboxMaxBytes = 2_000;
        options.MailboxReportedFromPercent = 50;
        byte[] counted = Bytes(_random, 32), weighed = Bytes(_random, 32), quiet = Bytes(_random, 32);
        string crashed = NewDirectory();
        await using (FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options))
        {
            var seqs = new List<ulong>();
            for (int i = 0; i < 3; i++)
            {
                seqs.Add((await store.PutAsync(new PutRequest(Bytes(_random, 10), counted, clock.Now.AddDays(1)))).MailboxSeq);
            }

            Assert.Equal(default, store.ReportedUsage(counted)); // 3 of 8: under the mark
            seqs.Add((await store.PutAsync(new PutRequest(Bytes(_random, 10), counted, clock.Now.AddMinutes(5)))).MailboxSeq);
            Assert.Equal(new MailboxUsage(4, 40), store.ReportedUsage(counted)); // 4 of 8: at the mark
            await store.PutAsync(new PutRequest(Bytes(_random, 10), counted, clock.Now.AddDays(1)));
            Assert.Equal(new MailboxUsage(5, 50), store.ReportedUsage(counted));

            // Bytes: 999 of 2,000 is under the mark, 1,000 at it, though one envelope of 8 by count.
            await store.PutAsync(new PutRequest(Bytes(_random, 999), weighed, clock.Now.AddDays(1)));
            Assert.Equal(default, store.ReportedUsage(weighed));
            await store.PutAsync(new PutRequest(Bytes(_random, 1), weighed, clock.Now.AddDays(1)));
            Assert.Equal(new MailboxUsage(2, 1_000), store.ReportedUsage(weighed));
            await store.PutAsync(new PutRequest(Bytes(_random, 10), quiet, clock.Now.AddDays(1)));
            Assert.Equal(default, store.ReportedUsage(quiet));
            Assert.Equal(default, store.ReportedUsage(new byte[31]));

            Assert.Equal(1, await store.AckAsync(counted, [seqs[0]]));
            Assert.Equal(new MailboxUsage(4, 40), store.ReportedUsage(counted));
            clock.Now = clock.Now.AddMinutes(10); // the fourth one expires; the sweep takes it out
            Assert.Equal(new MailboxUsage(4, 40), store.ReportedUsage(counted));
            await store.CheckpointAsync();
            Assert.Equal(default, store.ReportedUsage(counted)); // 3 of 8
            await store.PutAsync(new PutRequest(Bytes(_random, 10), counted, clock.Now.AddDays(1)));
            Assert.Equal(new MailboxUsage(4, 40), store.ReportedUsage(counted));
            await store.CheckpointAsync();
            // After the checkpoint, so the crashed copy below replays these from the log: under the mark and back.
            ulong second = (await store.ListAsync(counted, 0, 10)).Entries[0].Seq;
            Assert.Equal(1, await store.AckAsync(counted, [second]));
            Assert.Equal(default, store.ReportedUsage(counted));
            await store.PutAsync(new PutRequest(Bytes(_random, 10), counted, clock.Now.AddDays(1)));
            Assert.Equal(new MailboxUsage(4, 40), store.ReportedUsage(counted));
            CopyStoreFiles(store.StoreDirectory, Path.Combine(crashed, "store")); // what kill -9 now would leave
        }

        // Reopened after a crash (the checkpoint, then the log after it) and after the clean close (its checkpoint).
        foreach (string directory in new[] { crashed, _dir })
        {
            options.DataDirectory = directory;
            await using FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options);
            Assert.Equal(new MailboxUsage(4, 40), store.ReportedUsage(counted));
            Assert.Equal(new MailboxUsage(2, 1_000), store.ReportedUsage(weighed));
            Assert.Equal(default, store.ReportedUsage(quiet));
            ulong[] held = [.. (await store.ListAsync(weighed, 0, 10)).Entries.Select(e => e.Seq)];
            Assert.Equal(2, await store.AckAsync(weighed, held));
            Assert.Equal(default, store.ReportedUsage(weighed)); // emptied and forgotten
        }

        Directory.Delete(crashed, recursive: true);
    }

    [Fact]
    public async Task MaxHeldBytes_caps_all_mailboxes_together_across_groups_in_flight_and_acks_make_room()
    {
        StoreOptions options = Options(_dir);
        options.MaxHeldBytes = 10_000;
        options.GroupCommitWindow = TimeSpan.Zero; // many small groups, so a group's decision meets groups still in flight
        DateTimeOffset expiry = DateTimeOffset.UtcNow.AddDays(1);
        byte[][] recipients = [.. Enumerable.Range(0, 8).Select(_ => Bytes(_random, 32))];
        await using (FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options))
        {
            // 160 envelopes of 100 bytes from 16 senders at once, to 8 mailboxes: exactly 100 fit.
            PutResult[][] results = await Task.WhenAll(Enumerable.Range(0, 16).Select(async sender =>
            {
                var mine = new List<PutResult>();
                for (int i = 0; i < 10; i++)
                {
                    mine.AddRange(await store.PutManyAsync([new PutRequest(Bytes(_random, 100), recipients[(sender + i) % 8], expiry)]));
                }

                return mine.ToArray();
            }));
            PutResult[] all = [.. results.SelectMany(r => r)];
            Assert.Equal(100, all.Count(r => r.Receipt is not null));
            Assert.All(all.Where(r => r.Receipt is null), r => Assert.IsType<StoreFullException>(r.Error));
            Assert.Equal(10_000, store.HeldBytes);

            ulong[] first = [.. (await store.ListAsync(recipients[0], 0, 3)).Entries.Select(e => e.Seq)];
            Assert.Equal(3, await store.AckAsync(recipients[0], first));
            Assert.Equal(9_700, store.HeldBytes);
            IReadOnlyList<PutResult> more = await store.PutManyAsync([.. Enumerable.Range(0, 4).Select(_ => new PutRequest(Bytes(_random, 100), recipients[1], expiry))]);
            Assert.Equal(3, more.Count(r => r.Receipt is not null));
            Assert.IsType<StoreFullException>(more[3].Error);
        }

        await using (FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options))
        {
            Assert.Equal(10_000, store.HeldBytes);
            await Assert.ThrowsAsync<StoreFullException>(async () => await store.PutAsync(new PutRequest(Bytes(_random, 1), recipients[2], expiry)));
        }
    }

    [Fact]
    public async Task An_idle_store_checkpoints_and_sweeps_expired_mail_without_a_request_so_MaxHeldBytes_makes_room()
    {
        var clock = new ManualClock(DateTimeOffset.UtcNow);
        StoreOptions options = Options(_dir, clock);
        options.MaxHeldBytes = 10_000;
        options.CheckpointInterval = TimeSpan.FromMilliseconds(50);
        byte[] recipient = Bytes(_random, 32);
        await using FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options);
        long logBegin = store.LogCommittedBeginAddress;
        IReadOnlyList<PutResult> full = await store.PutManyAsync(
            [.. Enumerable.Range(0, 101).Select(_ => new PutRequest(Bytes(_random, 100), recipient, clock.Now.AddMinutes(5)))]);
        Assert.Equal(100, full.Count(r => r.Receipt is not null));
        Assert.IsType<StoreFullException>(full[100].Error);

        // No request from here on: the committer checkpoints on its own, and finishes the checkpoint (log truncation),
        // committed, so that the segments go (the in-memory begin address moves before).
        await WaitUntil(() => store.LogCommittedBeginAddress > logBegin, "the idle store's checkpoint to truncate the log on disk");

        // The node then sits idle past its mail's expiry: the next checkpoint sweeps it, so it no longer counts.
        clock.Now = clock.Now.AddMinutes(10);
        await WaitUntil(() => store.HeldBytes == 0 && store.MailboxCount == 0, "the idle store to sweep its expired mail");
        PutReceipt after = await store.PutAsync(new PutRequest(Bytes(_random, 5_000), recipient, clock.Now.AddMinutes(5)));
        Assert.False(after.Duplicate);
        Assert.Equal(5_000, store.HeldBytes);
    }

    [Fact]
    public async Task A_put_refused_for_the_cap_while_held_mail_has_expired_sweeps_it_then_and_not_at_the_next_interval()
    {
        var clock = new ManualClock(DateTimeOffset.UtcNow);
        StoreOptions options = Options(_dir, clock);
        options.MaxHeldBytes = 10_000;
        options.CheckpointInterval = TimeSpan.FromDays(1);
        byte[] recipient = Bytes(_random, 32);
        await using FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options);
        IReadOnlyList<PutResult> full = await store.PutManyAsync(
            [.. Enumerable.Range(0, 100).Select(_ => new PutRequest(Bytes(_random, 100), recipient, clock.Now.AddMinutes(5)))]);
        Assert.All(full, r => Assert.NotNull(r.Receipt));
        await store.CheckpointAsync(); // names the mail's expiry

        // Expired, and still counted: the put is refused, and that makes the sweep due. Before, the cap stayed full of
        // expired mail until the checkpoint interval (a minute by default, a day here) had passed.
        clock.Now = clock.Now.AddMinutes(10);
        await Assert.ThrowsAsync<StoreFullException>(async () => await store.PutAsync(new PutRequest(Bytes(_random, 5_000), recipient, clock.Now.AddMinutes(5))));
        await WaitUntil(() => store.HeldBytes == 0, "the refused store to sweep its expired mail");
        PutReceipt after = await store.PutAsync(new PutRequest(Bytes(_random, 5_000), recipient, clock.Now.AddMinutes(5)));
        Assert.False(after.Duplicate);
    }

    [Fact]
    public async Task The_sweep_reads_no_table_record_and_expired_mail_is_gone_by_id_at_once_acked_or_not()
    {
        // Mail on disk expires in bulk. The sweep used to read each swept entry's table record (most from disk, writes
        // held meanwhile: 7-9 s for 150,000) to delete it; now the records wait for compaction, and a lookup by id takes
        // an expired record for none: acknowledged mail (whose metadata the ack keeps for replays) as much as swept mail.
        var clock = new ManualClock(DateTimeOffset.UtcNow);
        StoreOptions options = Options(_dir, clock);
        byte[] recipient = Bytes(_random, 32);
        await using FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options);
        store.CompactionOffForTests = true; // its reads are not the sweep's
        var receipts = new List<PutReceipt>();
        foreach (int chunk in Enumerable.Range(0, 6))
        {
            IReadOnlyList<PutResult> results = await store.PutManyAsync(
                [.. Enumerable.Range(0, 20).Select(_ => new PutRequest(Bytes(_random, 60_000), recipient, clock.Now.AddMinutes(5)))]);
            receipts.AddRange(results.Select(r => r.Receipt!));
        }

        Assert.True(store.TableHeadAddressForTests >= 3 << 19, $"the table holds {store.TableHeadAddressForTests} bytes on disk only");
        PutReceipt acked = receipts[0], onDisk = receipts[1], inMemory = receipts[^1];
        Assert.Equal(1, await store.AckAsync(recipient, [acked.MailboxSeq]));
        foreach (PutReceipt r in new[] { acked, onDisk, inMemory })
        {
            Assert.Equal(r.LogIndex, (await store.FindAsync(r.EnvelopeId))!.LogIndex); // replays, before expiry
        }

        clock.Now = clock.Now.AddMinutes(10);
        long readsBefore = store.TableDiskReads;
        await store.CheckpointAsync();
        Assert.Equal(readsBefore, store.TableDiskReads);
        Assert.Equal(0, store.HeldBytes);
        Assert.Equal(0, store.MailboxCount);
        Assert.Empty((await store.ListAsync(recipient, 0, 1_000)).Entries);
        foreach (PutReceipt r in new[] { acked, onDisk, inMemory })
        {
            Assert.Null(await store.FindAsync(r.EnvelopeId));
        }

        // Compaction then drops the expired records: nothing of them is copied, and the table's log shrinks to what
        // the records still in memory hold.
        store.CompactionOffForTests = false;
        (long beginBefore, _) = store.TableExtent;
        await store.CheckpointAsync();
        CompactionOutcome compacted = Assert.IsType<CompactionOutcome>(store.LastCompaction);
        Assert.Equal(0, compacted.Copied);
        Assert.True(store.TableExtent.Begin > beginBefore, $"the table's begin address stayed at {beginBefore}");
    }

    /// <summary>Polls <paramref name="done"/> until it holds, failing after a deadline generous for a loaded machine.</summary>
    private static async Task WaitUntil(Func<bool> done, string what)
    {
        DateTime deadline = DateTime.UtcNow.AddMinutes(1);
        while (!done())
        {
            Assert.True(DateTime.UtcNow < deadline, $"Gave up waiting for {what}.");
            await Task.Delay(10);
        }
    }

    [Fact]
    public async Task Expired_mail_does_not_count_against_the_quota_before_the_sweep()
    {
        var clock = new ManualClock(DateTimeOffset.UtcNow);
        StoreOptions options = Options(_dir, clock);
        options.MailboxMaxCount = 3;
        await using FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options);
        byte[] recipient = Bytes(_random, 32);
        for (int i = 0; i < 3; i++)
        {
            await store.PutAsync(new PutRequest(Bytes(_random, 100), recipient, clock.Now.AddMinutes(i == 0 ? 5 : 60)));
        }

        await Assert.ThrowsAsync<QuotaExceededException>(async () => await store.PutAsync(new PutRequest(Bytes(_random, 100), recipient, clock.Now.AddHours(1))));
        clock.Now = clock.Now.AddMinutes(10); // the first one expired; no checkpoint (and so no sweep) has run
        await store.PutAsync(new PutRequest(Bytes(_random, 100), recipient, clock.Now.AddHours(1)));
        QuotaExceededException full = await Assert.ThrowsAsync<QuotaExceededException>(async () =>
            await store.PutAsync(new PutRequest(Bytes(_random, 100), recipient, clock.Now.AddHours(1))));
        Assert.Contains("limits 3 envelopes", full.Message);
        Assert.DoesNotContain("bytes;", full.Message); // what the mailbox holds is not the sender's business
        Assert.Equal(3, (await store.ListAsync(recipient, 0, 10)).Entries.Count);
    }

    [Fact]
    public async Task An_emptied_mailbox_is_forgotten_and_its_sequence_numbers_are_never_given_again()
    {
        var clock = new ManualClock(DateTimeOffset.UtcNow);
        StoreOptions options = Options(_dir, clock);
        byte[] acked = Bytes(_random, 32), expiring = Bytes(_random, 32), kept = Bytes(_random, 32);
        ulong cursor;
        await using (FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options))
        {
            await store.PutAsync(new PutRequest(Bytes(_random, 100), kept, clock.Now.AddDays(1)));
            ulong[] seqs = [(await store.PutAsync(new PutRequest(Bytes(_random, 100), acked, clock.Now.AddDays(1)))).MailboxSeq,
                (await store.PutAsync(new PutRequest(Bytes(_random, 100), acked, clock.Now.AddDays(1)))).MailboxSeq];
            await store.PutAsync(new PutRequest(Bytes(_random, 100), expiring, clock.Now.AddMinutes(5)));
            Assert.Equal(3, store.MailboxCount);

            cursor = (await store.ListAsync(acked, 0, 10)).NextCursor;
            Assert.Equal(seqs[1], cursor);
            Assert.Equal(2, await store.AckAsync(acked, seqs));
            Assert.Equal(2, store.MailboxCount);
            clock.Now = clock.Now.AddMinutes(10);
            await store.CheckpointAsync(); // sweeps the expired one
            Assert.Equal(1, store.MailboxCount);

            // New mail for the emptied mailbox comes after the owner's cursor.
            PutReceipt again = await store.PutAsync(new PutRequest(Bytes(_random, 100), acked, clock.Now.AddDays(1)));
            Assert.True(again.MailboxSeq > cursor, $"seq {again.MailboxSeq} is not after the cursor {cursor}");
            Assert.Single((await store.ListAsync(acked, cursor, 10)).Entries);
            Assert.Equal(1, await store.AckAsync(acked, [again.MailboxSeq, .. seqs])); // the old ones are gone
        }

        // The reopen restores from the checkpoint and replays the rest: emptied mailboxes stay forgotten.
        await using FasterEnvelopeStore reopened = await FasterEnvelopeStore.OpenAsync(options);
        Assert.Equal(1, reopened.MailboxCount);
        Assert.Single((await reopened.ListAsync(kept, 0, 10)).Entries);
        Assert.Empty((await reopened.ListAsync(acked, 0, 10)).Entries);
    }

    [Fact]
    public async Task Concurrent_groups_decide_duplicates_quotas_and_sequences_as_one_order()
    {
        // The committer prepares a group while the previous one commits and applies: duplicates, quotas and mailbox
        // sequences must come out as if every request were decided one after another.
        StoreOptions options = Options(_dir);
        options.MailboxMaxCount = 100;
        options.GroupCommitWindow = TimeSpan.Zero; // many small groups, so a group's decisions meet groups still in flight
        await using FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options);
        byte[][] recipients = [.. Enumerable.Range(0, 4).Select(_ => Bytes(_random, 32))];
        // Recipient 0 gets 160 distinct envelopes (60 over quota), the others 40 each; every envelope is sent 1-3 times.
        var distinct = Enumerable.Range(0, 280).Select(i => (Envelope: Bytes(_random, 64 + (i % 7)), Recipient: recipients[i < 160 ? 0 : 1 + (i % 3)])).ToArray();
        var sends = distinct.SelectMany((d, i) => Enumerable.Repeat(i, 1 + _random.Next(3))).OrderBy(_ => _random.Next()).ToArray();
        var results = new System.Collections.Concurrent.ConcurrentBag<(int Item, PutResult Result)>();
        DateTimeOffset expiry = DateTimeOffset.UtcNow.AddDays(1);
        // Sixteen senders with staggered starts, each sending small batches one after another: requests keep arriving
        // while earlier groups commit, so groups overlap.
        await Task.WhenAll(Enumerable.Range(0, 16).Select(async sender =>
        {
            await Task.Delay(sender % 4);
            foreach (int[] chunk in sends.Where((_, k) => k % 16 == sender).Chunk(3))
            {
                IReadOnlyList<PutResult> r = await store.PutManyAsync([.. chunk.Select(i => new PutRequest(distinct[i].Envelope, distinct[i].Recipient, expiry))]);
                for (int k = 0; k < chunk.Length; k++)
                {
                    results.Add((chunk[k], r[k]));
                }
            }
        }));

        var byItem = results.GroupBy(r => r.Item).ToDictionary(g => g.Key, g => g.Select(x => x.Result).ToList());
        var stored = new List<PutReceipt>();
        foreach ((int item, List<PutResult> all) in byItem)
        {
            if (all.Any(r => r.Receipt is null))
            {
                // Refused for quota: refused every time (nothing frees space here), and never for another reason.
                Assert.All(all, r => Assert.IsType<QuotaExceededException>(r.Error));
                continue;
            }

            PutReceipt original = Assert.Single(all, r => !r.Receipt!.Duplicate).Receipt!;
            Assert.All(all, r => Assert.Equal((original.LogIndex, original.MailboxSeq), (r.Receipt!.LogIndex, r.Receipt.MailboxSeq)));
            stored.Add(original);
        }

        Assert.Equal(100 + 120, stored.Count);
        Assert.Equal(Enumerable.Range(0, stored.Count).Select(i => (long)i), stored.Select(r => r.LogIndex).Order());
        Assert.Equal(stored.Count, store.GetTreeHead().TreeSize);
        foreach (byte[] recipient in recipients)
        {
            MailboxPage page = await store.ListAsync(recipient, 0, 1000);
            Assert.All(page.Entries, e => Assert.Equal((ulong)e.LogIndex + 1, e.Seq));
            Assert.Equal(recipient == recipients[0] ? 100 : 40, page.Entries.Count);
        }
    }

    [Fact]
    public async Task Reopening_keeps_every_acknowledged_write_and_ack()
    {
        byte[] recipient = Bytes(_random, 32);
        var receipts = new List<PutReceipt>();
        SignedTreeHead before;
        StoreOptions options = Options(_dir);
        await using (FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options))
        {
            for (int i = 0; i < 20; i++)
            {
                receipts.Add(await store.PutAsync(new PutRequest(Bytes(_random, 200), recipient, DateTimeOffset.UtcNow.AddDays(1))));
            }

            await store.AckAsync(recipient, [1, 2]);
            before = store.GetTreeHead();
        }

        await using FasterEnvelopeStore reopened = await FasterEnvelopeStore.OpenAsync(options);
        SignedTreeHead after = reopened.GetTreeHead();
        Assert.Equal(before.TreeSize, after.TreeSize);
        Assert.Equal(before.RootHash, after.RootHash);
        Assert.Equal(18, (await reopened.ListAsync(recipient, 0, 100)).Entries.Count);
        Assert.NotNull(await reopened.FindAsync(receipts[5].EnvelopeId));
        PutReceipt next = await reopened.PutAsync(new PutRequest(Bytes(_random, 200), recipient, DateTimeOffset.UtcNow.AddDays(1)));
        Assert.Equal(20, next.LogIndex);
        Assert.Equal(21UL, next.MailboxSeq);
    }

    [Fact]
    public async Task A_crash_between_a_compacting_checkpoint_and_its_manifest_keeps_every_live_envelope()
    {
        var clock = new ManualClock(DateTimeOffset.UtcNow);
        StoreOptions options = Options(_dir, clock);
        byte[] keeper = Bytes(_random, 32);
        var kept = new List<PutReceipt>();
        string crash = NewDirectory();
        try
        {
            await using (FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options))
            {
                for (int i = 0; i < 200; i++)
                {
                    kept.Add(await store.PutAsync(new PutRequest(Bytes(_random, 4096), keeper, clock.Now.AddDays(10))));
                }

                // 80 MB that expires in an hour: more than the table's first 64 MiB segment, which compaction then frees.
                byte[][] others = Enumerable.Range(0, 4).Select(_ => Bytes(_random, 32)).ToArray();
                for (int chunk = 0; chunk < 40; chunk++)
                {
                    PutRequest[] group = Enumerable.Range(0, 500).Select(i => new PutRequest(Bytes(_random, 4096), others[i % 4], clock.Now.AddHours(1))).ToArray();
                    Assert.All(await store.PutManyAsync(group), r => Assert.NotNull(r.Receipt));
                }

                await store.CheckpointAsync();
                (long beginBefore, _) = store.TableExtent;
                clock.Now = clock.Now.AddHours(2);
                // "kill -9" after FASTER committed the compacted table's checkpoint, before the manifest names it: what
                // is on disk then is what the next start recovers from (the previous manifest and its checkpoint).
                store.AfterTableCheckpointForTests = async () =>
                {
                    // FASTER removes the freed segments (64 MiB each) in the background as it commits the checkpoint;
                    // the table device holds those deletions until the manifest is written. Time for an unheld delete
                    // to happen, then the segment the previous checkpoint needs must still be there.
                    await Task.Delay(500);
                    string freed = Path.Combine(store.StoreDirectory, "kv", $"hlog.log.{(store.TableExtent.Begin >> 26) - 1}");
                    Assert.True(File.Exists(freed), $"{freed}, which the previous checkpoint needs, was removed before the manifest named the new one");
                    CopyStoreFiles(store.StoreDirectory, Path.Combine(crash, "store"));
                };
                await store.CheckpointAsync();
                store.AfterTableCheckpointForTests = null;
                Assert.True(store.TableExtent.Begin > beginBefore + (64 << 20), $"compaction should have freed a segment (begin {beginBefore} -> {store.TableExtent.Begin})");
            }

            await using FasterEnvelopeStore recovered = await FasterEnvelopeStore.OpenAsync(Options(crash, clock));
            Assert.Equal(kept.Count, (await recovered.ListAsync(keeper, 0, 1000)).Entries.Count);
            foreach (PutReceipt r in kept)
            {
                Assert.Equal(r.LogIndex, (await recovered.FindAsync(r.EnvelopeId))!.LogIndex);
            }
        }
        finally
        {
            Directory.Delete(crash, recursive: true);
        }
    }

    [Fact]
    public async Task A_clock_set_back_does_not_date_a_larger_head_before_a_smaller_one()
    {
        var clock = new ManualClock(DateTimeOffset.UtcNow);
        await using FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(Options(_dir, clock));
        PutReceipt first = await store.PutAsync(new PutRequest(Bytes(_random, 100), Bytes(_random, 32), clock.Now.AddDays(1)));
        clock.Now = clock.Now.AddSeconds(-5); // NTP stepping the clock back
        PutReceipt second = await store.PutAsync(new PutRequest(Bytes(_random, 100), Bytes(_random, 32), clock.Now.AddDays(1)));
        Assert.True(second.TreeHead.TreeSize > first.TreeHead.TreeSize);
        Assert.True(second.TreeHead.TimestampUnixMs >= first.TreeHead.TimestampUnixMs,
            $"the larger head is dated {first.TreeHead.TimestampUnixMs - second.TreeHead.TimestampUnixMs} ms before the smaller one");
        Assert.True(TreeHeadSignature.Verify(second.TreeHead.NodePublicKey, second.TreeHead.TreeSize, second.TreeHead.RootHash, second.TreeHead.TimestampUnixMs, second.TreeHead.Signature));
    }

    [Fact]
    public async Task An_expired_entry_brought_back_by_a_crash_and_then_acknowledged_spares_a_later_put_of_its_envelope()
    {
        var clock = new ManualClock(DateTimeOffset.UtcNow);
        StoreOptions options = Options(_dir, clock);
        options.CheckpointInterval = TimeSpan.FromDays(1);
        byte[] owner = Bytes(_random, 32), envelope = Bytes(_random, 300);
        string crash = NewDirectory();
        try
        {
            PutReceipt? again = null;
            await using (FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options))
            {
                PutReceipt first = await store.PutAsync(new PutRequest(envelope, owner, clock.Now.AddHours(1)));
                await store.CheckpointAsync(); // names the entry
                clock.Now = clock.Now.AddHours(2);

                // The next checkpoint (one the committer starts in the background, as it does every minute) sweeps the
                // expired entry and deletes its record. Before its manifest is written (a "kill -9" there), the same
                // envelope is put again, which finds no record and is stored anew, and the old entry is acknowledged,
                // which is logged although nothing live is left to delete.
                var crashed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                store.AfterTableCheckpointForTests = async () =>
                {
                    store.AfterTableCheckpointForTests = null;
                    options.CheckpointInterval = TimeSpan.FromDays(1);
                    try
                    {
                        again = await store.PutAsync(new PutRequest(envelope, owner, clock.Now.AddDays(1)));
                        Assert.False(again.Duplicate);
                        Assert.Equal(0, await store.AckAsync(owner, [first.MailboxSeq]));
                        CopyStoreFiles(store.StoreDirectory, Path.Combine(crash, "store"));
                        crashed.SetResult();
                    }
                    catch (Exception e)
                    {
                        crashed.SetException(e);
                    }
                };
                options.CheckpointInterval = TimeSpan.FromMilliseconds(10);
                await Task.Delay(50);
                await store.PutAsync(new PutRequest(Bytes(_random, 100), Bytes(_random, 32), clock.Now.AddDays(1)));
                await crashed.Task.WaitAsync(TimeSpan.FromMinutes(2));
            }

            // Recovered from the first checkpoint: its entry is back, the log replays the put again and the ack of the
            // old entry, and the ack must not write the old entry's metadata (without bytes) over the new put's record.
            await using FasterEnvelopeStore recovered = await FasterEnvelopeStore.OpenAsync(Options(crash, clock));
            MailboxEntry listed = Assert.Single((await recovered.ListAsync(owner, 0, 10)).Entries);
            Assert.Equal(again!.MailboxSeq, listed.Seq);
            Assert.Equal(envelope, listed.Envelope);
            Assert.Equal(again.LogIndex, (await recovered.FindAsync(again.EnvelopeId))!.LogIndex);
        }
        finally
        {
            Directory.Delete(crash, recursive: true);
        }
    }

    [Fact]
    public async Task An_ack_of_a_sequence_number_not_yet_given_deletes_nothing_live_or_after_replay()
    {
        StoreOptions options = Options(_dir);
        byte[] owner = Bytes(_random, 32);
        string crash = NewDirectory();
        try
        {
            int live, raced = 0;
            await using (FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options))
            {
                for (int round = 0; round < 40; round++)
                {
                    // A busy committer, so the ack and the put behind it share a group.
                    ValueTask<IReadOnlyList<PutResult>> load = store.PutManyAsync(Enumerable.Range(0, 300)
                        .Select(_ => new PutRequest(Bytes(_random, 256), Bytes(_random, 32), DateTimeOffset.UtcNow.AddDays(1))).ToArray());
                    // Every sequence number the next 1,000 puts can get (a put's is its log index + 1).
                    ulong given = (ulong)store.GetTreeHead().TreeSize;
                    ulong[] ahead = Enumerable.Range(1, 1000).Select(i => given + (ulong)i).ToArray();
                    Task<int> ack = store.AckAsync(owner, ahead).AsTask();
                    Task<PutReceipt> put = store.PutAsync(new PutRequest(Bytes(_random, 100), owner, DateTimeOffset.UtcNow.AddDays(1))).AsTask();
                    await load;
                    Assert.Equal(0, await ack); // none of them existed when the ack was made
                    raced += Array.IndexOf(ahead, (await put).MailboxSeq) >= 0 ? 1 : 0;
                }

                live = (await store.ListAsync(owner, 0, 1000)).Entries.Count;
                // What kill -9 leaves now: everything in the log, no checkpoint since; the reopen replays it all.
                CopyStoreFiles(store.StoreDirectory, Path.Combine(crash, "store"));
            }

            Assert.Equal(40, live);
            Assert.True(raced > 0, "no put received the sequence number acked just before it");
            await using FasterEnvelopeStore replayed = await FasterEnvelopeStore.OpenAsync(Options(crash));
            Assert.Equal(live, (await replayed.ListAsync(owner, 0, 1000)).Entries.Count);
        }
        finally
        {
            Directory.Delete(crash, recursive: true);
        }
    }

    [Fact]
    public async Task A_lookup_during_a_put_never_returns_a_receipt_its_head_does_not_cover()
    {
        await using FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(Options(_dir));
        int found = 0;
        for (int round = 0; round < 150; round++)
        {
            PutRequest[] group = Enumerable.Range(0, 8).Select(_ => new PutRequest(Bytes(_random, 200), Bytes(_random, 32), DateTimeOffset.UtcNow.AddDays(1))
            {
                EnvelopeId = Bytes(_random, 32),
            }).ToArray();
            using var putDone = new CancellationTokenSource();
            // The apply stage writes the table before it signs the head that covers the group; a lookup in between
            // once handed out receipts whose inclusion proofs could not be fetched.
            Task<int> looking = Task.Run(async () =>
            {
                int seen = 0;
                while (!putDone.IsCancellationRequested)
                {
                    foreach (PutRequest r in group)
                    {
                        if (await store.FindAsync(r.EnvelopeId) is { } receipt)
                        {
                            Assert.True(receipt.LogIndex < receipt.TreeHead.TreeSize, $"receipt for leaf {receipt.LogIndex} carries a head of size {receipt.TreeHead.TreeSize}");
                            seen++;
                        }
                    }
                }

                return seen;
            });
            await store.PutManyAsync(group);
            await putDone.CancelAsync();
            found += await looking;
        }

        // The lookups ran while puts completed, and found envelopes once their heads covered them.
        Assert.True(found > 0, "no lookup overlapped a put; the test proved nothing");
    }

    [Fact]
    public async Task A_store_open_elsewhere_is_refused_and_the_open_one_keeps_working()
    {
        byte[] recipient = Bytes(_random, 32);
        StoreOptions options = Options(_dir);
        await using (FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options))
        {
            PutReceipt first = await store.PutAsync(new PutRequest(Bytes(_random, 200), recipient, DateTimeOffset.UtcNow.AddDays(1)));
            // A second open (as a second node on the same data directory would) takes the OS lock of another open file.
            StoreInUseException e = await Assert.ThrowsAsync<StoreInUseException>(() => FasterEnvelopeStore.OpenAsync(options));
            Assert.Contains(Path.Combine(_dir, "store"), e.Message, StringComparison.Ordinal);
            Assert.Contains("another process", e.Message, StringComparison.Ordinal);
            PutReceipt second = await store.PutAsync(new PutRequest(Bytes(_random, 200), recipient, DateTimeOffset.UtcNow.AddDays(1)));
            Assert.Equal(first.LogIndex + 1, second.LogIndex);
        }

        // Closed: the lock went with it.
        await using FasterEnvelopeStore reopened = await FasterEnvelopeStore.OpenAsync(options);
        Assert.Equal(2, reopened.TreeSize);
    }

    [Fact]
    public async Task A_checkpoint_truncates_the_log_and_a_restart_restores_from_it()
    {
        StoreOptions options = Options(_dir);
        byte[] recipient = Bytes(_random, 32);
        var receipts = new List<PutReceipt>();
        SignedTreeHead before;
        long logBegin;
        await using (FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options))
        {
            for (int i = 0; i < 30; i++)
            {
                receipts.Add(await store.PutAsync(new PutRequest(Bytes(_random, 500), recipient, DateTimeOffset.UtcNow.AddDays(1))));
            }

            await store.AckAsync(recipient, [1, 2, 3]);
            await store.CheckpointAsync();
            logBegin = store.LogBeginAddress;
            Assert.True(logBegin > 0, "the checkpoint did not truncate the write-ahead log");

            // After the checkpoint: more puts and an ack that only the log holds.
            for (int i = 0; i < 5; i++)
            {
                receipts.Add(await store.PutAsync(new PutRequest(Bytes(_random, 700), recipient, DateTimeOffset.UtcNow.AddDays(1))));
            }

            await store.AckAsync(recipient, [4]);
            before = store.GetTreeHead();
        }

        Assert.True(File.Exists(Path.Combine(_dir, "store", "checkpoint.manifest")));
        await using FasterEnvelopeStore reopened = await FasterEnvelopeStore.OpenAsync(options);
        Assert.True(reopened.LogBeginAddress >= logBegin);
        SignedTreeHead after = reopened.GetTreeHead();
        Assert.Equal(before.TreeSize, after.TreeSize);
        Assert.Equal(before.RootHash, after.RootHash);
        MailboxPage page = await reopened.ListAsync(recipient, 0, 100);
        Assert.Equal(Enumerable.Range(5, 31).Select(i => (ulong)i), page.Entries.Select(e => e.Seq));
        // Acknowledged envelopes keep their receipt (replays) but not their bytes.
        PutReceipt? acked = await reopened.FindAsync(receipts[0].EnvelopeId);
        Assert.NotNull(acked);
        Assert.Equal(receipts[0].LogIndex, acked!.LogIndex);
        Assert.True(MerkleTree.VerifyInclusion(MerkleTree.LeafHash(receipts[33].EnvelopeId), receipts[33].LogIndex, after.TreeSize, reopened.GetInclusionProof(receipts[33].LogIndex, after.TreeSize), after.RootHash));
        PutReceipt next = await reopened.PutAsync(new PutRequest(Bytes(_random, 64), recipient, DateTimeOffset.UtcNow.AddDays(1)));
        Assert.Equal(35, next.LogIndex);
        Assert.Equal(36UL, next.MailboxSeq);
    }

    [Fact]
    public async Task Expired_mail_is_swept_and_its_table_space_reclaimed_by_compaction()
    {
        var clock = new ManualClock(DateTimeOffset.UtcNow);
        StoreOptions options = Options(_dir, clock);
        byte[] recipient = Bytes(_random, 32), keeper = Bytes(_random, 32);
        await using FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options);
        var shortLived = new List<PutReceipt>();
        for (int i = 0; i < 3000; i++)
        {
            shortLived.Add(await store.PutAsync(new PutRequest(Bytes(_random, 4096), recipient, clock.Now.AddHours(1))));
        }

        PutReceipt kept = await store.PutAsync(new PutRequest(Bytes(_random, 4096), keeper, clock.Now.AddDays(10)));
        (long begin0, long tail0) = store.TableExtent;

        clock.Now = clock.Now.AddHours(2);
        await store.CheckpointAsync();
        (long begin1, long tail1) = store.TableExtent;

        Assert.Empty((await store.ListAsync(recipient, 0, 10_000)).Entries);
        Assert.Null(await store.FindAsync(shortLived[0].EnvelopeId));
        Assert.Single((await store.ListAsync(keeper, 0, 10)).Entries);
        Assert.NotNull(await store.FindAsync(kept.EnvelopeId));
        Assert.True(begin1 - begin0 > (tail0 - begin0) / 2, $"compaction reclaimed {begin1 - begin0} of {tail0 - begin0} bytes (tail now {tail1})");
        // The log of the transparency tree is never reclaimed.
        Assert.Equal(3001, store.GetTreeHead().TreeSize);
    }

    [Fact]
    public async Task Concurrent_reads_beyond_memory_come_from_disk_intact()
    {
        // An 8 MiB budget keeps 4 MiB of the table in memory; 4,000 envelopes of 4 KiB push the first ones out to disk.
        await using FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(Options(_dir));
        byte[][] recipients = Enumerable.Range(0, 16).Select(_ => Bytes(_random, 32)).ToArray();
        var requests = Enumerable.Range(0, 4000)
            .Select(i => new PutRequest(Bytes(_random, 4096), recipients[i % 16], DateTimeOffset.UtcNow.AddDays(1))).ToList();
        var receipts = new List<PutReceipt>();
        foreach (PutRequest[] chunk in requests.Chunk(500))
        {
            receipts.AddRange((await store.PutManyAsync(chunk)).Select(r => r.Receipt!));
        }

        long diskReadsBefore = store.TableDiskReads;
        // 64 concurrent readers, more than the pooled reader sessions, over the oldest 512 envelopes.
        await Task.WhenAll(Enumerable.Range(0, 64).Select(reader => Task.Run(async () =>
        {
            for (int i = reader; i < 512; i += 64)
            {
                PutReceipt? found = await store.FindAsync(receipts[i].EnvelopeId);
                Assert.Equal(receipts[i].LogIndex, found!.LogIndex);
                MailboxPage page = await store.ListAsync(recipients[i % 16], receipts[i].MailboxSeq - 1, 1);
                Assert.Equal(requests[i].Envelope.ToArray(), Assert.Single(page.Entries).Envelope.ToArray());
            }
        })));
        Assert.True(store.TableDiskReads - diskReadsBefore >= 512, $"{store.TableDiskReads - diskReadsBefore} table reads went to disk");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task The_table_keeps_the_index_size_its_checkpoint_was_taken_with(bool asVersion1Manifest)
    {
        // A 32 MiB budget gives a 4 MiB hash index: the size every version 1 manifest (before the size was recorded) implies.
        StoreOptions options = Options(_dir);
        options.MemoryBudgetBytes = 32L << 20;
        byte[] recipient = Bytes(_random, 32);
        var receipts = new List<PutReceipt>();
        await using (FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options))
        {
            for (int i = 0; i < 10; i++)
            {
                receipts.Add(await store.PutAsync(new PutRequest(Bytes(_random, 300), recipient, DateTimeOffset.UtcNow.AddDays(1))));
            }
        }

        string storeDir = Path.Combine(_dir, "store");
        Assert.Equal(4L << 20, Checkpoint.Read(storeDir)!.IndexBytes);
        if (asVersion1Manifest)
        {
            // Version 1 layout: magic, version, token, WAL address, leaf count, mailboxes (no index size, no flags),
            // SHA-256.
            byte[] v3 = File.ReadAllBytes(Checkpoint.ManifestPath(storeDir));
            byte[] body = [.. v3.AsSpan(0, 40), .. v3.AsSpan(52, v3.Length - 52 - 32)];
            BitConverter.TryWriteBytes(body.AsSpan(4), 1);
            File.WriteAllBytes(Checkpoint.ManifestPath(storeDir), [.. body, .. System.Security.Cryptography.SHA256.HashData(body)]);
        }

        // A larger budget would choose an 8 MiB index for a new table; FASTER refuses to recover a checkpoint into that.
        options.MemoryBudgetBytes = 64L << 20;
        await using (FasterEnvelopeStore reopened = await FasterEnvelopeStore.OpenAsync(options))
        {
            Assert.Equal(10, (await reopened.ListAsync(recipient, 0, 100)).Entries.Count);
            foreach (PutReceipt receipt in receipts)
            {
                Assert.Equal(receipt.LogIndex, (await reopened.FindAsync(receipt.EnvelopeId))!.LogIndex);
            }

            Assert.Equal(10, (await reopened.PutAsync(new PutRequest(Bytes(_random, 300), recipient, DateTimeOffset.UtcNow.AddDays(1)))).LogIndex);
        }

        Assert.Equal(4L << 20, Checkpoint.Read(storeDir)!.IndexBytes);
    }

    [Fact]
    public async Task A_manifest_from_a_newer_build_is_refused_as_newer_not_as_damaged_and_left_as_it_was()
    {
        StoreOptions options = Options(_dir);
        await using (FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options))
        {
            await store.PutAsync(new PutRequest(Bytes(_random, 100), Bytes(_random, 32), DateTimeOffset.UtcNow.AddDays(1)));
        }

        // The same manifest under the next version number, checksum intact: what a later build would write.
        string path = Checkpoint.ManifestPath(Path.Combine(_dir, "store"));
        byte[] manifest = File.ReadAllBytes(path);
        byte[] body = manifest[..^32];
        int version = BitConverter.ToInt32(body, 4);
        BitConverter.TryWriteBytes(body.AsSpan(4), version + 1);
        byte[] newer = [.. body, .. System.Security.Cryptography.SHA256.HashData(body)];
        File.WriteAllBytes(path, newer);

        StoreCorruptException e = await Assert.ThrowsAsync<StoreCorruptException>(async () => await FasterEnvelopeStore.OpenAsync(options));
        Assert.Contains($"manifest version {version + 1}", e.Message, StringComparison.Ordinal);
        Assert.Contains("newer MegaNet build", e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("damaged", e.Message, StringComparison.Ordinal);
        Assert.Equal(newer, File.ReadAllBytes(path));
    }

    [Fact]
    public async Task A_store_with_envelope_bytes_in_records_of_their_own_serves_acks_and_sweeps_them_after_the_upgrade()
    {
        // Before manifest version 3 the table kept an envelope's bytes apart from its metadata. An upgraded store reads,
        // acknowledges and expires those envelopes as before, stores new ones in one record, and its manifest keeps
        // saying that old records may be there.
        StoreOptions options = Options(_dir);
        options.SeparateEnvelopeRecordsForTests = true;
        byte[] recipient = Bytes(_random, 32);
        var clock = new ManualClock(DateTimeOffset.UtcNow);
        options.Clock = clock;
        var old = Enumerable.Range(0, 6).Select(i => new PutRequest(Bytes(_random, 200 + i), recipient, clock.GetUtcNow().AddHours(i < 3 ? 1 : 48))).ToList();
        var oldReceipts = new List<PutReceipt>();
        await using (FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options))
        {
            oldReceipts.AddRange((await store.PutManyAsync(old)).Select(r => r.Receipt!));
        }

        string storeDir = Path.Combine(_dir, "store");
        Assert.True(Checkpoint.Read(storeDir)!.SeparateEnvelopeRecords);
        options.SeparateEnvelopeRecordsForTests = false;
        await using (FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options))
        {
            var fresh = Enumerable.Range(0, 3).Select(i => new PutRequest(Bytes(_random, 300 + i), recipient, clock.GetUtcNow().AddHours(48))).ToList();
            List<PutReceipt> freshReceipts = (await store.PutManyAsync(fresh)).Select(r => r.Receipt!).ToList();
            MailboxPage page = await store.ListAsync(recipient, 0, 100);
            Assert.Equal(old.Concat(fresh).Select(r => r.Envelope.ToArray()), page.Entries.Select(e => e.Envelope));

            // Acks of an old and a new envelope: both gone from the mailbox, both still replays with their receipts.
            Assert.Equal(2, await store.AckAsync(recipient, [oldReceipts[4].MailboxSeq, freshReceipts[0].MailboxSeq]));
            foreach (PutReceipt acked in new[] { oldReceipts[4], freshReceipts[0] })
            {
                Assert.Equal(acked.LogIndex, (await store.FindAsync(acked.EnvelopeId))!.LogIndex);
            }

            // The first three old envelopes expire and a checkpoint sweeps them: no receipt, no bytes, no entry.
            clock.Now += TimeSpan.FromHours(2);
            await store.CheckpointAsync();
            foreach (PutReceipt swept in oldReceipts.Take(3))
            {
                Assert.Null(await store.FindAsync(swept.EnvelopeId));
            }

            page = await store.ListAsync(recipient, 0, 100);
            Assert.Equal(new[] { old[3], old[5], fresh[1], fresh[2] }.Select(r => r.Envelope.ToArray()), page.Entries.Select(e => e.Envelope));
        }

        Assert.True(Checkpoint.Read(storeDir)!.SeparateEnvelopeRecords, "old records may remain: the manifest must keep saying so");

        // A new store writes one record per envelope and says so.
        string fresher = NewDirectory();
        try
        {
            await using (FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(Options(fresher)))
            {
                await store.PutAsync(new PutRequest(Bytes(_random, 100), recipient, DateTimeOffset.UtcNow.AddDays(1)));
            }

            Assert.False(Checkpoint.Read(Path.Combine(fresher, "store"))!.SeparateEnvelopeRecords);
        }
        finally
        {
            Directory.Delete(fresher, recursive: true);
        }
    }

    [Fact]
    public async Task The_log_replays_whole_when_the_memory_budget_changed_after_a_crash()
    {
        // An 8 MiB budget writes the log in 512 KiB pages; 256 MiB would read it in 4 MiB pages. No checkpoint, so the
        // reopen replays the whole log, across several page ends.
        StoreOptions options = Options(_dir);
        options.CheckpointInterval = TimeSpan.FromDays(1);
        options.CheckpointLogBytes = 1L << 30;
        byte[] recipient = Bytes(_random, 32);
        var receipts = new List<PutReceipt>();
        string copy = NewDirectory();
        try
        {
            await using (FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options))
            {
                for (int i = 0; i < 15; i++)
                {
                    var batch = Enumerable.Range(0, 100).Select(_ => new PutRequest(Bytes(_random, 1000), recipient, DateTimeOffset.UtcNow.AddDays(1))).ToList();
                    receipts.AddRange((await store.PutManyAsync(batch)).Select(r => r.Receipt!));
                }

                // What a kill -9 leaves of the log: everything acknowledged is committed (the table starts over).
                string from = store.StoreDirectory;
                CopyStoreFiles(from, Path.Combine(copy, "store"), f => !f.StartsWith(Path.Combine(from, "kv"), StringComparison.Ordinal));

                Assert.True(new FileInfo(Path.Combine(from, "wal.log.0")).Length > 3 << 19, "the log should span several 512 KiB pages");
            }

            StoreOptions reopen = Options(copy);
            reopen.MemoryBudgetBytes = 256L << 20;
            await using FasterEnvelopeStore recovered = await FasterEnvelopeStore.OpenAsync(reopen);
            Assert.Equal(receipts.Count, recovered.TreeSize);
            Assert.Equal(receipts.Count, (await recovered.ListAsync(recipient, 0, 10_000)).Entries.Count);
            foreach (PutReceipt receipt in receipts)
            {
                Assert.Equal(receipt.LogIndex, (await recovered.FindAsync(receipt.EnvelopeId))!.LogIndex);
            }
        }
        finally
        {
            Directory.Delete(copy, recursive: true);
        }
    }
}
