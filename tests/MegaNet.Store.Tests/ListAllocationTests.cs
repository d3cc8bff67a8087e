using MegaNet.Store;
using Xunit.Abstractions;
using static MegaNet.Store.Tests.StoreTestKit;

namespace MegaNet.Store.Tests;

/// <summary>A listing of a mailbox allocates for what it finds, not for its limit: a Subscribe lists twice per delivered
/// envelope (the second finds nothing), and a list presized to its limit of 64 cost 4 KiB of index entries each time.</summary>
[Collection(AloneCollection.Name)]
public sealed class ListAllocationTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = NewDirectory();
    private readonly Random _random = new(31);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public async Task A_listing_that_finds_nothing_or_one_entry_allocates_for_that_not_for_its_limit()
    {
        await using FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(Options(_dir));
        byte[] recipient = Bytes(_random, 32);
        PutReceipt receipt = await store.PutAsync(new PutRequest(Bytes(_random, 200), recipient, DateTimeOffset.UtcNow.AddDays(1)));

        // Warm: the table's reader session and the code paths. In memory, each listing completes on this thread.
        for (int i = 0; i < 3; i++)
        {
            Assert.Single((await store.ListAsync(recipient, 0, 64)).Entries);
            Assert.Empty((await store.ListAsync(recipient, receipt.MailboxSeq, 64)).Entries);
        }

        long before = GC.GetAllocatedBytesForCurrentThread();
        ValueTask<MailboxPage> empty = store.ListAsync(recipient, receipt.MailboxSeq, 64);
        long emptyBytes = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.True(empty.IsCompletedSuccessfully);
        Assert.Empty((await empty).Entries);

        before = GC.GetAllocatedBytesForCurrentThread();
        ValueTask<MailboxPage> one = store.ListAsync(recipient, 0, 64);
        long oneBytes = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.True(one.IsCompletedSuccessfully);
        Assert.Single((await one).Entries);

        output.WriteLine($"empty listing: {emptyBytes} B; one entry of 200 B: {oneBytes} B");
        // 64 index entries of 64 bytes are 4 KiB: either listing allocating that much sized by its limit.
        Assert.True(emptyBytes < 1024, $"an empty listing allocated {emptyBytes} B");
        Assert.True(oneBytes < 2048, $"a listing of one 200-byte envelope allocated {oneBytes} B");
    }
}
