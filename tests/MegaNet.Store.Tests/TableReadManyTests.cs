using MegaNet.Store;
using static MegaNet.Store.Tests.StoreTestKit;

namespace MegaNet.Store.Tests;

/// <summary>
/// The expiry sweep reads the table record of every entry it sweeps, many from disk at once
/// (<see cref="EnvelopeKv.GetMetaMany"/>): each answer must be the one a single read gives, whether the record is in
/// memory, on disk, deleted or never written, and a read the device failed is read again.
/// </summary>
public sealed class TableReadManyTests : IDisposable
{
    private readonly string _dir = NewDirectory();

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void Many_reads_at_once_answer_as_single_reads_do_from_memory_disk_and_nowhere()
    {
        using var kv = new EnvelopeKv(_dir, 8L << 20, 1L << 20);
        var random = new Random(11);
        List<byte[]> ids = Fill(kv, random, 12_000); // 12 MiB of records: most are on disk only
        for (int i = 0; i < 500; i++)
        {
            kv.DeleteAll(ids[i * 7]);
        }

        // Never written, and one asked for twice.
        ids.AddRange(Enumerable.Range(0, 300).Select(_ => Bytes(random, 32)));
        ids.Add(ids[100]);
        ids = [.. ids.OrderBy(_ => random.Next())];

        long diskReads = kv.DiskReads;
        byte[]?[] many = ReadMany(kv, ids);
        Assert.True(kv.DiskReads - diskReads > 5_000, $"{kv.DiskReads - diskReads} reads from disk: the test wants most records on disk");

        for (int i = 0; i < ids.Count; i++)
        {
            Assert.Equal(kv.GetMetaForPrepare(ids[i]).Value, many[i]);
        }

        Assert.Equal(ids.Count - 500 - 300, many.Count(m => m is not null));
    }

    [Fact]
    public void A_batch_in_which_the_device_failed_a_read_reads_the_missing_records_again()
    {
        using var kv = new EnvelopeKv(_dir, 8L << 20, 1L << 20);
        var random = new Random(12);
        List<byte[]> ids = Fill(kv, random, 12_000);

        // The first read of each record in the table's first MiB fails once (as a flaky device's would).
        var failedOnce = new HashSet<ulong>();
        kv.DeviceForTests.FailReadForTests = address =>
        {
            lock (failedOnce)
            {
                return address < 1 << 20 && failedOnce.Add(address);
            }
        };
        byte[]?[] many = ReadMany(kv, ids);
        kv.DeviceForTests.FailReadForTests = null;

        Assert.NotEmpty(failedOnce);
        Assert.All(many, Assert.NotNull);
    }

    [Fact]
    public void More_ids_than_one_call_takes_are_refused()
    {
        using var kv = new EnvelopeKv(_dir, 8L << 20, 1L << 20);
        byte[][] ids = Enumerable.Range(0, EnvelopeKv.ManyReads + 1).Select(_ => new byte[32]).ToArray();
        Assert.Throws<ArgumentOutOfRangeException>(() => kv.GetMetaMany(ids, new byte[]?[ids.Length]));
    }

    // GetMetaMany over all of ids, as the sweep calls it: ManyReads at a time.
    private static byte[]?[] ReadMany(EnvelopeKv kv, List<byte[]> ids)
    {
        byte[]?[] metas = new byte[]?[ids.Count];
        byte[][] all = [.. ids];
        for (int start = 0; start < all.Length; start += EnvelopeKv.ManyReads)
        {
            int count = Math.Min(EnvelopeKv.ManyReads, all.Length - start);
            kv.GetMetaMany(all.AsSpan(start, count), metas.AsSpan(start, count));
        }

        return metas;
    }

    // Records of a 1 KiB envelope each, under fresh ids.
    private static List<byte[]> Fill(EnvelopeKv kv, Random random, int count)
    {
        var ids = new List<byte[]>(count);
        byte[] meta = Bytes(random, EnvelopeKv.MetaLength), envelope = Bytes(random, 1024);
        for (int i = 0; i < count; i++)
        {
            byte[] id = Bytes(random, 32);
            meta[0] = (byte)i;
            kv.Put(id, meta, envelope);
            ids.Add(id);
        }

        return ids;
    }
}
