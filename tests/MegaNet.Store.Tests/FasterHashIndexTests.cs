using System.Globalization;
using MegaNet.Store;
using Xunit.Abstractions;
using static MegaNet.Store.Tests.StoreTestKit;

namespace MegaNet.Store.Tests;

/// <summary>
/// The envelope table's hash index, found by reflection into FASTER (see FasterHashIndex): it asks Linux for huge pages,
/// and a put's bucket is prefetched. Nothing else notices a FASTER version that moved the index or changed its hash.
/// </summary>
public sealed class FasterHashIndexTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = NewDirectory();

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void The_hash_index_is_found_and_its_whole_huge_pages_are_advised()
    {
        long index = EnvelopeKv.IndexBytesFor(256L << 20);
        using var kv = new EnvelopeKv(_dir, 64L << 20, index);
        FasterHashIndex.Outcome outcome = kv.IndexPages;
        output.WriteLine($"index {index >> 20} MiB: {outcome}");
        if (!OperatingSystem.IsLinux())
        {
            Assert.Equal(0, outcome.Bytes);
            Assert.Equal("not Linux", outcome.WhyNot);
            return;
        }

        if (!Directory.Exists("/sys/kernel/mm/transparent_hugepage"))
        {
            // A kernel without transparent huge pages refuses the advice; the index works on small pages.
            Assert.StartsWith("madvise(MADV_HUGEPAGE) failed", outcome.WhyNot, StringComparison.Ordinal);
            return;
        }

        Assert.Null(outcome.WhyNot);
        // At most the partial 2 MiB page at each end is left out.
        Assert.InRange(outcome.Bytes, index - (4L << 20), index);
        Assert.Equal(0, outcome.Start % (2L << 20));

        // The kernel's view: the mapping that holds the advised range carries the huge-page flag ("hg").
        string? flags = MappingFlags(outcome.Start);
        output.WriteLine($"VmFlags of the mapping at {outcome.Start:x}: {flags}");
        Assert.NotNull(flags);
        Assert.Contains("hg", flags.Split(' '));
    }

    [Fact]
    public async Task An_index_smaller_than_a_huge_page_is_left_alone_and_the_table_works()
    {
        using var kv = new EnvelopeKv(_dir, 8L << 20, 1L << 20);
        Assert.Equal(0, kv.IndexPages.Bytes);
        Assert.Equal(OperatingSystem.IsLinux() ? "the index is smaller than a huge page" : "not Linux", kv.IndexPages.WhyNot);

        var random = new Random(5);
        byte[] id = Bytes(random, 32), meta = Bytes(random, EnvelopeKv.MetaLength);
        byte[] envelope = Bytes(random, 100);
        kv.Put(id, meta, envelope);
        // One record: the metadata, then the envelope.
        byte[]? record = (await kv.GetMetaAsync(id)).Value;
        Assert.NotNull(record);
        Assert.Equal([.. meta, .. envelope], record);
    }

    [Fact]
    public unsafe void The_prefetched_bucket_is_the_one_FASTER_files_each_put_under()
    {
        // Prefetch computes FASTER's hash and bucket itself: were they to differ from FASTER's (another version),
        // every prefetch would load a useless line and nothing else would show it.
        using var kv = new EnvelopeKv(_dir, 8L << 20, 1L << 20);
        var random = new Random(9);
        byte[] meta = Bytes(random, EnvelopeKv.MetaLength);
        int found = 0;
        for (int i = 0; i < 200; i++)
        {
            byte[] id = Bytes(random, 32);
            kv.Put(id, meta, Bytes(random, 100));
            nint bucket = kv.BucketOf(id, out ushort tag);
            Assert.NotEqual(0, bucket);
            // Seven entries a bucket (the eighth links an overflow bucket): [48-bit address][14-bit tag][2 flag bits].
            long* entries = (long*)bucket;
            bool here = false;
            for (int e = 0; e < FasterHashIndex.EntriesPerBucket && !here; e++)
            {
                here = entries[e] != 0 && FasterHashIndex.TagOf(entries[e]) == tag;
            }

            found += here ? 1 : 0;
        }

        // 200 keys in 16,384 buckets: none should need an overflow bucket, so every one is found in its own.
        Assert.Equal(200, found);
    }

    [Theory]
    [InlineData(1L << 20, 20_000)] // 16,384 buckets: a bucket rarely overflows, so a new id is nearly always answered
    [InlineData(1L << 12, 20_000)] // 64 buckets: every bucket overflows, so every lookup reads the table
    public async Task A_stored_id_is_never_taken_for_absent_also_after_recovery(long indexBytes, int count)
    {
        // SurelyAbsent answers a lookup from FASTER's index alone: one stored id it called absent would be stored again
        // as new (the node's replay check skips the table on its word), a second copy with a second receipt.
        var random = new Random(17);
        byte[] meta = Bytes(random, EnvelopeKv.MetaLength);
        var stored = new List<byte[]>(count);
        Guid token;
        using (var kv = new EnvelopeKv(_dir, 8L << 20, indexBytes))
        {
            for (int i = 0; i < count; i++)
            {
                byte[] id = Bytes(random, 32);
                kv.Put(id, meta, Bytes(random, 100));
                stored.Add(id);
            }

            await AssertAnsweredRightly(kv, stored, new Random(18), indexBytes, "before the checkpoint");
            token = await kv.CheckpointAsync();
        }

        using var recovered = new EnvelopeKv(_dir, 8L << 20, indexBytes);
        recovered.Recover(token);
        await AssertAnsweredRightly(recovered, stored, new Random(19), indexBytes, "after recovery");
    }

    private async Task AssertAnsweredRightly(EnvelopeKv kv, List<byte[]> stored, Random random, long indexBytes, string when)
    {
        foreach (byte[] id in stored)
        {
            Assert.False(kv.SurelyAbsent(id), $"stored id {Convert.ToHexString(id)} taken for absent {when}");
            Assert.NotNull((await kv.GetMetaAsync(id)).Value);
        }

        int answered = 0;
        for (int i = 0; i < stored.Count; i++)
        {
            byte[] fresh = Bytes(random, 32);
            answered += kv.SurelyAbsent(fresh) ? 1 : 0;
            Assert.Null((await kv.GetMetaAsync(fresh)).Value);
        }

        output.WriteLine($"index {indexBytes:N0} bytes, {when}: {answered:N0} of {stored.Count:N0} new ids answered from the index");
        if (indexBytes >= 1L << 20)
        {
            // Misses: an overflowing bucket (~1e-5 of them) or a tag shared with one of its ~1.2 entries (1 in 16,384).
            Assert.InRange(answered, stored.Count * 99 / 100, stored.Count);
        }
        else
        {
            Assert.Equal(0, answered);
        }
    }

    private static string? MappingFlags(nint address)
    {
        bool inside = false;
        foreach (string line in File.ReadLines("/proc/self/smaps"))
        {
            int dash = line.IndexOf('-', StringComparison.Ordinal);
            int space = line.IndexOf(' ', StringComparison.Ordinal);
            if (dash > 0 && space > dash && ulong.TryParse(line.AsSpan(0, dash), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out ulong start)
                && ulong.TryParse(line.AsSpan(dash + 1, space - dash - 1), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out ulong end))
            {
                inside = (ulong)address >= start && (ulong)address < end;
            }
            else if (inside && line.StartsWith("VmFlags:", StringComparison.Ordinal))
            {
                return line["VmFlags:".Length..].Trim();
            }
        }

        return null;
    }
}
