using MegaNet.Store;
using static MegaNet.Store.Tests.StoreTestKit;

namespace MegaNet.Store.Tests;

/// <summary>
/// The free-space mark (<see cref="StoreOptions.MinFreeDiskBytes"/>): below it puts are refused with a retryable
/// <see cref="DiskSpaceLowException"/> while acks, reads and checkpoints go on, and puts are taken again by themselves
/// once space is back; the store never faults for it. Free space comes from a fake probe.
/// </summary>
public sealed class DiskSpaceMarkTests : IDisposable
{
    private const long GiB = 1L << 30;
    private readonly string _dir = NewDirectory();
    private readonly Random _random = new(31);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public async Task Below_the_mark_puts_are_refused_while_acks_reads_and_checkpoints_go_on_and_above_it_puts_return()
    {
        long free = 2 * GiB;
        StoreOptions options = Options(_dir);
        options.FreeDiskBytesForTests = () => Interlocked.Read(ref free);
        options.FreeDiskCheckInterval = TimeSpan.Zero;
        Assert.Equal(GiB, options.MinFreeDiskBytes);
        byte[] recipient = Bytes(_random, 32);
        await using FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options);
        PutReceipt first = await store.PutAsync(new PutRequest(Bytes(_random, 300), recipient, DateTimeOffset.UtcNow.AddDays(1)));
        PutReceipt second = await store.PutAsync(new PutRequest(Bytes(_random, 300), recipient, DateTimeOffset.UtcNow.AddDays(1)));

        Interlocked.Exchange(ref free, GiB - 1);
        Assert.True(store.DiskSpaceLow());
        DiskSpaceLowException refused = await Assert.ThrowsAsync<DiskSpaceLowException>(async () =>
            await store.PutAsync(new PutRequest(Bytes(_random, 300), recipient, DateTimeOffset.UtcNow.AddDays(1))));
        Assert.IsAssignableFrom<QuotaExceededException>(refused); // admission answers RESOURCE_EXHAUSTED with a retry delay
        Assert.Contains("low on disk space", refused.Message, StringComparison.Ordinal);
        Assert.Contains("1,024 MiB", refused.Message, StringComparison.Ordinal);
        Assert.Contains("retry later", refused.Message, StringComparison.Ordinal);

        // A batch: every valid item refused, a bad one still told why it is bad.
        IReadOnlyList<PutResult> batch = await store.PutManyAsync([
            new PutRequest(Bytes(_random, 300), recipient, DateTimeOffset.UtcNow.AddDays(1)),
            new PutRequest(Bytes(_random, 300), new byte[5], DateTimeOffset.UtcNow.AddDays(1)),
        ]);
        Assert.IsType<DiskSpaceLowException>(batch[0].Error);
        Assert.IsType<ArgumentException>(batch[1].Error);

        // Acks, reads and checkpoints go on below the mark, and the store is not faulted.
        Assert.Equal(1, await store.AckAsync(recipient, [first.MailboxSeq]));
        await store.CheckpointAsync();
        MailboxPage page = await store.ListAsync(recipient, 0, 10);
        Assert.Equal([second.MailboxSeq], page.Entries.Select(e => e.Seq));
        Assert.Equal(2, store.TreeSize);
        Assert.Null(store.Fault);

        // Space back: puts are taken again, the log continues where it was.
        Interlocked.Exchange(ref free, GiB);
        PutReceipt third = await store.PutAsync(new PutRequest(Bytes(_random, 300), recipient, DateTimeOffset.UtcNow.AddDays(1)));
        Assert.Equal(2, third.LogIndex);
    }

    [Fact]
    public async Task Free_space_is_read_at_most_once_per_interval_not_per_put()
    {
        int reads = 0;
        StoreOptions options = Options(_dir);
        options.FreeDiskBytesForTests = () =>
        {
            Interlocked.Increment(ref reads);
            return 10 * GiB;
        };
        options.FreeDiskCheckInterval = TimeSpan.FromHours(1);
        await using FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options);
        byte[] recipient = Bytes(_random, 32);
        await Task.WhenAll(Enumerable.Range(0, 8).Select(_ => Task.Run(async () =>
        {
            for (int i = 0; i < 20; i++)
            {
                await store.PutAsync(new PutRequest(Bytes(Random.Shared, 100), recipient, DateTimeOffset.UtcNow.AddDays(1)));
            }
        })));
        Assert.Equal(1, Volatile.Read(ref reads));
    }

    [Fact]
    public async Task The_real_probe_reads_the_file_system_of_the_store()
    {
        StoreOptions options = Options(_dir);
        options.FreeDiskCheckInterval = TimeSpan.Zero;
        options.MinFreeDiskBytes = long.MaxValue; // more than any disk has
        byte[] recipient = Bytes(_random, 32);
        await using (FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options))
        {
            await Assert.ThrowsAsync<DiskSpaceLowException>(async () =>
                await store.PutAsync(new PutRequest(Bytes(_random, 300), recipient, DateTimeOffset.UtcNow.AddDays(1))));
        }

        options.MinFreeDiskBytes = 1;
        await using (FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options))
        {
            Assert.Equal(0, (await store.PutAsync(new PutRequest(Bytes(_random, 300), recipient, DateTimeOffset.UtcNow.AddDays(1)))).LogIndex);
        }
    }

    [Fact]
    public async Task Zero_turns_the_mark_off()
    {
        StoreOptions options = Options(_dir);
        options.MinFreeDiskBytes = 0;
        options.FreeDiskBytesForTests = () => 0;
        options.FreeDiskCheckInterval = TimeSpan.Zero;
        await using FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options);
        Assert.False(store.DiskSpaceLow());
        Assert.Equal(0, (await store.PutAsync(new PutRequest(Bytes(_random, 300), Bytes(_random, 32), DateTimeOffset.UtcNow.AddDays(1)))).LogIndex);
    }
}
