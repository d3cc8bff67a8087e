using MegaNet.Store;
using static MegaNet.Store.Tests.StoreTestKit;

namespace MegaNet.Store.Tests;

/// <summary>
/// The envelope table's pages are sized from the memory budget (a quarter of the table's memory, 4 MiB at most), and a
/// FASTER checkpoint recovers only into the page size it was written with: a node restarted with another
/// <c>StoreMemoryMiB</c> below 32 (256 → 16, 32 → 8, 8 → 256) ended in an <c>AccessViolationException</c> inside
/// FASTER's recovery, the process aborted with a stack trace. The page size is fixed when the table is created, as the
/// write-ahead log's is.
/// </summary>
public sealed class TablePageSizeTests : IDisposable
{
    private readonly string _dir = NewDirectory();
    private readonly Random _random = new(7);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Theory]
    [InlineData(8, 256)]
    [InlineData(32, 8)]
    [InlineData(256, 16)]
    public async Task A_store_reopens_with_another_memory_budget_and_keeps_every_envelope(int createdMiB, int reopenedMiB)
    {
        StoreOptions options = Options(_dir);
        options.MemoryBudgetBytes = (long)createdMiB << 20;
        byte[] recipient = Bytes(_random, 32);
        var puts = Enumerable.Range(0, 200).Select(_ => new PutRequest(Bytes(_random, 60_000), recipient, DateTimeOffset.UtcNow.AddDays(1))).ToList();
        var receipts = new List<PutReceipt>();
        await using (FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options))
        {
            foreach (PutRequest[] chunk in puts.Chunk(20))
            {
                receipts.AddRange((await store.PutManyAsync(chunk)).Select(r => r.Receipt!));
            }

            // Half acknowledged, so the table holds records of both kinds; the close takes a checkpoint.
            Assert.Equal(100, await store.AckAsync(recipient, receipts.Take(100).Select(r => r.MailboxSeq).ToList()));
        }

        options.MemoryBudgetBytes = (long)reopenedMiB << 20;
        for (int open = 0; open < 2; open++)
        {
            await using FasterEnvelopeStore reopened = await FasterEnvelopeStore.OpenAsync(options);
            Assert.Equal(receipts.Count, reopened.TreeSize);
            MailboxPage page = await reopened.ListAsync(recipient, 0, 1000);
            Assert.Equal(puts.Skip(100).Select(p => Convert.ToHexString(p.Envelope.Span)), page.Entries.Select(e => Convert.ToHexString(e.Envelope)));
            foreach (PutReceipt receipt in receipts)
            {
                Assert.Equal(receipt.LogIndex, (await reopened.FindAsync(receipt.EnvelopeId))!.LogIndex);
            }

            // The second open after a checkpoint written under the new budget.
            await reopened.CheckpointAsync();
        }
    }
}
