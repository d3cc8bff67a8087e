using MegaNet.Store;
using static MegaNet.Store.Tests.StoreTestKit;

namespace MegaNet.Store.Tests;

/// <summary>
/// The index lock is never held over a table write: while the table delete of an acknowledged envelope waits (for a
/// page flush, or for ever while a full disk fails it), readers of the indexes are still answered.
/// </summary>
public sealed class IndexLockTests : IDisposable
{
    private readonly string _dir = NewDirectory();
    private readonly Random _random = new(23);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public async Task Readers_are_answered_while_an_acks_table_delete_waits()
    {
        byte[] recipient = Bytes(_random, 32);
        await using FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(Options(_dir));
        var receipts = new List<PutReceipt>();
        for (int i = 0; i < 3; i++)
        {
            receipts.Add(await store.PutAsync(new PutRequest(Bytes(_random, 500), recipient, DateTimeOffset.UtcNow.AddDays(1))));
        }

        using var entered = new ManualResetEventSlim();
        using var release = new ManualResetEventSlim();
        store.BeforeAckDeleteForTests = () =>
        {
            entered.Set();
            release.Wait(TimeSpan.FromMinutes(2));
        };
        Task<int> ack = store.AckAsync(recipient, [receipts[1].MailboxSeq]).AsTask();
        try
        {
            Assert.True(entered.Wait(TimeSpan.FromSeconds(10)), "the ack's table delete never started");

            // Each of these takes the index lock (or took it for the head); none may wait for the stalled delete.
            // Far below the stall (two minutes), so a call that waits for it still fails, but not so short that a
            // loaded machine (other test classes on the same two cores) makes a call that never waited miss it.
            TimeSpan patience = TimeSpan.FromSeconds(30);
            MailboxPage page = await store.ListAsync(recipient, 0, 10).AsTask().WaitAsync(patience);
            Assert.Equal([receipts[0].MailboxSeq, receipts[2].MailboxSeq], page.Entries.Select(e => e.Seq));
            Assert.Equal(3, await Task.Run(() => store.TreeSize).WaitAsync(patience));
            Assert.Equal(3, (await Task.Run(store.GetTreeHead).WaitAsync(patience)).TreeSize);
            Assert.NotNull(await Task.Run(() => store.GetInclusionProof(1, 3)).WaitAsync(patience));
            Assert.False(ack.IsCompleted, "the ack was answered before its table delete");
        }
        finally
        {
            release.Set();
        }

        Assert.Equal(1, await ack.WaitAsync(TimeSpan.FromSeconds(10)));
        store.BeforeAckDeleteForTests = null;
        MailboxPage after = await store.ListAsync(recipient, 0, 10);
        Assert.Equal([receipts[0].MailboxSeq, receipts[2].MailboxSeq], after.Entries.Select(e => e.Seq));

        // The metadata stays after an ack, so the envelope still has its receipt.
        Assert.Equal(1, (await store.FindAsync(receipts[1].EnvelopeId))?.LogIndex);
    }
}
