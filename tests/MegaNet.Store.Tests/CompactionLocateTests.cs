using System.Buffers.Binary;
using MegaNet.Store;
using static MegaNet.Store.Tests.StoreTestKit;

namespace MegaNet.Store.Tests;

/// <summary>
/// Compaction copies a record only when a lookup of its key locates that very record. Keys whose hash falls in the same
/// index bucket with the same 14-bit tag share one chain: the lookup of the older one starts at the newer one's record
/// and follows the chain back. From disk, FASTER 2.6.5 reported the chain's start as the address found, so the older
/// record read as superseded and was dropped (6 of 43,381 live envelopes compacting 200,000 with 64 MiB).
/// </summary>
public sealed class CompactionLocateTests : IDisposable
{
    private readonly string _dir = NewDirectory();

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void A_live_record_behind_another_key_with_its_tag_is_copied_by_compaction()
    {
        using var kv = new EnvelopeKv(_dir, 8L << 20, 1L << 20);
        var random = new Random(21);
        (byte[] older, byte[] newer) = TwoIdsSharingBucketAndTag(kv, random);
        long now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        byte[] envelope = Bytes(random, 1024);

        kv.Put(older, Meta(random, now + 3_600_000), envelope);
        PutExpired(kv, random, now, 4_000);
        kv.Put(newer, Meta(random, now + 3_600_000), envelope);
        PutExpired(kv, random, now, 12_000); // 12 MiB more than the 8 MiB held in memory: both are on disk only

        byte[] olderMeta = kv.GetMetaForPrepare(older).Value!, newerMeta = kv.GetMetaForPrepare(newer).Value!;
        long beginBefore = kv.BeginAddress;
        CompactionOutcome outcome = kv.Compact(now);

        Assert.True(kv.BeginAddress > beginBefore + (4L << 20), $"compaction moved the begin address from {beginBefore} to {kv.BeginAddress} only");
        Assert.Equal(2, outcome.Copied);
        Assert.Equal(olderMeta, kv.GetMetaForPrepare(older).Value);
        Assert.Equal(newerMeta, kv.GetMetaForPrepare(newer).Value);
    }

    // Random ids until two land in one bucket under one tag (16,384 buckets here, 2^28 pairs of bucket and tag: a few
    // tens of thousands of ids).
    private static (byte[] Older, byte[] Newer) TwoIdsSharingBucketAndTag(EnvelopeKv kv, Random random)
    {
        var seen = new Dictionary<(nint, ushort), byte[]>();
        while (true)
        {
            byte[] id = Bytes(random, 32);
            nint bucket = kv.BucketOf(id, out ushort tag);
            Assert.NotEqual(0, bucket);
            if (seen.TryGetValue((bucket, tag), out byte[]? first))
            {
                return (first, id);
            }

            seen[(bucket, tag)] = id;
        }
    }

    private static byte[] Meta(Random random, long expiresUnixMs)
    {
        byte[] meta = Bytes(random, EnvelopeKv.MetaLength);
        BinaryPrimitives.WriteInt64LittleEndian(meta.AsSpan(40), expiresUnixMs);
        return meta;
    }

    // Records of 1 KiB envelopes that have expired: compaction drops them, so only the two under test are copied.
    private static void PutExpired(EnvelopeKv kv, Random random, long now, int count)
    {
        byte[] envelope = Bytes(random, 1024);
        for (int i = 0; i < count; i++)
        {
            kv.Put(Bytes(random, 32), Meta(random, now - 1), envelope);
        }
    }
}
