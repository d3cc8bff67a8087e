using MegaNet.Core.Transparency;
using MegaNet.Store;
using static MegaNet.Store.Tests.StoreTestKit;

namespace MegaNet.Store.Tests;

/// <summary>
/// <see cref="StoreOptions.ApplyThreads"/>: a group large enough is written to the table by several writers at once, and
/// the store keeps what one writer keeps: every envelope readable, log indexes in request order, each leaf where its
/// inclusion proof says, replays answered with their first receipt, and all of it after a reopen.
/// </summary>
public sealed class ApplyThreadsTests : IDisposable
{
    private readonly string _dir = NewDirectory();
    private readonly Random _random = new(47);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    public async Task A_large_group_split_among_writers_stores_what_one_writer_stores(int applyThreads)
    {
        StoreOptions options = Options(_dir);
        options.CheckpointInterval = TimeSpan.FromHours(1);
        options.ApplyThreads = applyThreads;
        // One call of 1,000 puts is one request (PutSlice): held together in one group however slow the machine.
        options.GroupCommitWindow = TimeSpan.FromMilliseconds(200);
        byte[][] recipients = [.. Enumerable.Range(0, 4).Select(_ => Bytes(_random, 32))];
        var earlier = Enumerable.Range(0, 100).Select(i => Put(recipients[i % 4])).ToList();
        // 900 new puts with every tenth item a replay of an earlier one: the writers' ranges mix both, and 900 new puts
        // give three writers at least 256 each.
        var call = new List<PutRequest>();
        for (int i = 0; i < 1000; i++)
        {
            call.Add(i % 10 == 9 ? earlier[i / 10] : Put(recipients[i % 4]));
        }

        PutReceipt[] first, receipts;
        SignedTreeHead head;
        await using (FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options))
        {
            first = [.. (await store.PutManyAsync(earlier)).Select(r => r.Receipt!)];
            long splitBefore = store.SplitAppliesForTests;
            receipts = [.. (await store.PutManyAsync(call)).Select(r => r.Receipt ?? throw new InvalidOperationException("a put was refused"))];
            Assert.Equal(applyThreads > 1 ? 1 : 0, store.SplitAppliesForTests - splitBefore);

            head = store.GetTreeHead();
            Assert.Equal(1000, head.TreeSize);
            long next = 100;
            for (int i = 0; i < call.Count; i++)
            {
                if (i % 10 == 9)
                {
                    Assert.True(receipts[i].Duplicate, $"item {i} is a replay");
                    Assert.Equal(first[i / 10].LogIndex, receipts[i].LogIndex);
                    continue;
                }

                Assert.False(receipts[i].Duplicate, $"item {i} is new");
                Assert.Equal(next++, receipts[i].LogIndex);
            }

            await AssertStored(store, head, recipients, earlier.Concat(call).ToList(), first.Concat(receipts).ToList(), 1000);
        }

        // The writers' records are in the table the shutdown checkpoint saved, read back by a store with one writer.
        options.ApplyThreads = 1;
        await using FasterEnvelopeStore reopened = await FasterEnvelopeStore.OpenAsync(options);
        Assert.Equal(head.RootHash, reopened.GetTreeHead().RootHash);
        await AssertStored(reopened, head, recipients, earlier.Concat(call).ToList(), first.Concat(receipts).ToList(), 1000);
    }

    [Fact]
    public async Task A_group_that_begins_with_replays_gives_each_writer_as_many_new_puts()
    {
        // A retried call of 1,024 puts, all replays now, then 1,024 new ones, in one group: cut by items, two of four
        // writers took only replays and the other two all the work.
        StoreOptions options = Options(_dir);
        options.CheckpointInterval = TimeSpan.FromHours(1);
        options.ApplyThreads = 4;
        options.GroupCommitWindow = TimeSpan.FromMilliseconds(200);
        byte[][] recipients = [.. Enumerable.Range(0, 4).Select(_ => Bytes(_random, 32))];
        var earlier = Enumerable.Range(0, 1024).Select(i => Put(recipients[i % 4])).ToList();
        var fresh = Enumerable.Range(0, 1024).Select(i => Put(recipients[i % 4])).ToList();
        await using FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options);
        PutReceipt[] first = [.. (await store.PutManyAsync(earlier)).Select(r => r.Receipt!)];
        long splitBefore = store.SplitAppliesForTests;
        PutReceipt[] receipts = [.. (await store.PutManyAsync([.. earlier, .. fresh])).Select(r => r.Receipt ?? throw new InvalidOperationException("a put was refused"))];

        Assert.Equal(1, store.SplitAppliesForTests - splitBefore);
        Assert.Equal([256, 256, 256, 256], store.LastSplitForTests ?? []);
        for (int i = 0; i < earlier.Count; i++)
        {
            Assert.True(receipts[i].Duplicate, $"item {i} is a replay");
            Assert.Equal(first[i].LogIndex, receipts[i].LogIndex);
        }

        Assert.Equal(Enumerable.Range(1024, 1024).Select(i => (long)i), receipts[1024..].Select(r => r.LogIndex));
        await AssertStored(store, store.GetTreeHead(), recipients, [.. earlier, .. fresh], [.. first, .. receipts[1024..]], 2048);
    }

    [Fact]
    public async Task A_failed_table_write_in_a_split_group_refuses_with_its_reason_and_loses_nothing_acknowledged()
    {
        // As TableWriteFailureTests, with each group of 1,000 puts of 1 KB split among three writers: the disk fills
        // (8 MiB budget: a table page flush every few hundred puts), and the store refuses from the first failed write.
        bool failing = false;
        StoreOptions options = Options(_dir);
        options.CheckpointInterval = TimeSpan.FromHours(1);
        options.ShutdownTimeout = TimeSpan.FromSeconds(5);
        options.ApplyThreads = 3;
        byte[][] recipients = [.. Enumerable.Range(0, 8).Select(_ => Bytes(_random, 32))];
        var acknowledged = new List<PutReceipt>();
        string? refusal = null;
        FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options);
        try
        {
            store.FailTableWriteForTests = () => Volatile.Read(ref failing);
            acknowledged.AddRange((await store.PutManyAsync(Calls(1000, recipients))).Select(r => r.Receipt!));
            Assert.Equal(1, store.SplitAppliesForTests);
            Volatile.Write(ref failing, true);
            for (int call = 0; call < 50 && refusal is null; call++)
            {
                Task<IReadOnlyList<PutResult>> put = store.PutManyAsync(Calls(1000, recipients)).AsTask();
                Assert.True(await Task.WhenAny(put, Task.Delay(TimeSpan.FromSeconds(60))) == put, $"call {call} waited 60 s without an answer after a failed table write");
                try
                {
                    acknowledged.AddRange((await put).Select(r => r.Receipt ?? throw new InvalidOperationException($"refused alone: {r.Error}")));
                }
                catch (StoreUnavailableException e)
                {
                    refusal = e.Message;
                }
            }

            Assert.NotNull(refusal);
            Assert.Contains("envelope table", refusal);
            Assert.Contains("No space left on device", refusal);
            Volatile.Write(ref failing, false);
        }
        finally
        {
            try
            {
                await store.DisposeAsync();
            }
            catch (StoreUnavailableException)
            {
                // Closed without its shutdown checkpoint, as the store was refusing writes; the log replays.
            }
        }

        options.ApplyThreads = 1;
        await using FasterEnvelopeStore reopened = await FasterEnvelopeStore.OpenAsync(options);
        foreach (PutReceipt r in acknowledged)
        {
            Assert.NotNull(await reopened.FindAsync(r.EnvelopeId));
        }

        Assert.InRange(reopened.TreeSize, acknowledged.Count, acknowledged.Count + 8192);
    }

    [Fact]
    public async Task A_writer_that_throws_refuses_the_group_with_its_own_exception_and_a_reopen_keeps_the_committed_group()
    {
        StoreOptions options = Options(_dir);
        options.CheckpointInterval = TimeSpan.FromHours(1);
        options.ShutdownTimeout = TimeSpan.FromSeconds(5);
        options.ApplyThreads = 3;
        options.GroupCommitWindow = TimeSpan.FromMilliseconds(200);
        byte[][] recipients = [.. Enumerable.Range(0, 4).Select(_ => Bytes(_random, 32))];
        List<PutRequest> acknowledgedCall = Calls(1000, recipients), refusedCall = Calls(1000, recipients);
        var thrown = new IOException("table writer 2 failed");
        StoreUnavailableException refusal;
        FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options);
        try
        {
            Assert.All(await store.PutManyAsync(acknowledgedCall), r => Assert.NotNull(r.Receipt));
            Assert.Equal(1, store.SplitAppliesForTests);
            store.TableWriterFaultForTests = writer =>
            {
                if (writer == 2)
                {
                    throw thrown;
                }
            };
            refusal = await Assert.ThrowsAsync<StoreUnavailableException>(async () => await store.PutManyAsync(refusedCall));
        }
        finally
        {
            try
            {
                await store.DisposeAsync();
            }
            catch (StoreUnavailableException)
            {
                // Closed without its shutdown checkpoint, as the store was refusing writes; the log replays.
            }
        }

        // The writer's exception itself, as one writer would have thrown it, not the parallel loop's AggregateException.
        Assert.Same(thrown, refusal.InnerException);
        Assert.Contains("table writer 2 failed", refusal.Message);
        Assert.DoesNotContain("One or more errors", refusal.Message);

        // The refused group was committed before its apply failed: a reopen replays it, and a resend gets its receipts.
        options.ApplyThreads = 1;
        await using FasterEnvelopeStore reopened = await FasterEnvelopeStore.OpenAsync(options);
        Assert.Equal(2000, reopened.TreeSize);
        IReadOnlyList<PutResult> first = await reopened.PutManyAsync(acknowledgedCall), resent = await reopened.PutManyAsync(refusedCall);
        Assert.All(first.Concat(resent), r => Assert.True(r.Receipt?.Duplicate, $"refused: {r.Error}"));
        Assert.Equal(Enumerable.Range(1000, 1000).Select(i => (long)i), resent.Select(r => r.Receipt!.LogIndex));
    }

    private List<PutRequest> Calls(int count, byte[][] recipients) =>
        [.. Enumerable.Range(0, count).Select(i => new PutRequest(Bytes(_random, 1000), recipients[i % recipients.Length], DateTimeOffset.UtcNow.AddDays(1)))];

    private PutRequest Put(byte[] recipient) => new(Bytes(_random, 200 + _random.Next(200)), recipient, DateTimeOffset.UtcNow.AddDays(1));

    private static async Task AssertStored(FasterEnvelopeStore store, SignedTreeHead head, byte[][] recipients, List<PutRequest> puts, List<PutReceipt> receipts, int stored)
    {
        var byId = new Dictionary<string, byte[]>();
        foreach (byte[] recipient in recipients)
        {
            MailboxPage page = await store.ListAsync(recipient, 0, 10_000);
            foreach (MailboxEntry e in page.Entries)
            {
                byId[Convert.ToHexString(e.EnvelopeId)] = e.Envelope.ToArray();
            }
        }

        Assert.Equal(stored, byId.Count);
        for (int i = 0; i < puts.Count; i++)
        {
            PutReceipt r = receipts[i];
            Assert.Equal(puts[i].Envelope.ToArray(), byId[Convert.ToHexString(r.EnvelopeId)]);
            Assert.True(MerkleTree.VerifyInclusion(MerkleTree.LeafHash(r.EnvelopeId), r.LogIndex, head.TreeSize, store.GetInclusionProof(r.LogIndex, head.TreeSize), head.RootHash),
                $"leaf {r.LogIndex} (item {i}) is not where its proof says");
        }
    }
}
