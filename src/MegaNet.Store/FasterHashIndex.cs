using System.Reflection;
using System.Runtime.InteropServices;
using FASTER.core;

namespace MegaNet.Store;

/// <summary>
/// FASTER's hash index, found by reflection: put on 2 MiB pages (Linux transparent huge pages) where the kernel allows
/// it, and located so that a writer can prefetch the bucket of its next put (<see cref="EnvelopeKv.Prefetch"/>) and a
/// lookup of a new id can be answered from the bucket alone (<c>EnvelopeKv.SurelyAbsent</c>).
/// </summary>
/// <remarks>
/// Every put and lookup loads one 64-byte bucket at a random place in the index (32 MiB by default). On 4 KiB pages
/// that load misses the TLB as well as the cache: in a profile of the node streaming envelopes the two bucket loads
/// (the admission lookup and the put's upsert) held 6 % of the samples, and with huge pages forced on for the whole
/// machine 1.9 %. Most machines leave huge pages to <c>madvise</c>, so the index asks for them itself:
/// <c>MADV_HUGEPAGE</c> for pages touched later and <c>MADV_COLLAPSE</c> (Linux 6.1) for those already in memory.
/// FASTER keeps the index in a private field; when that field is not there (another FASTER version) or the kernel
/// says no, the index stays on small pages, nothing is prefetched and every lookup reads the table: all are speed-ups,
/// never conditions of running (FasterHashIndexTests fails when a FASTER upgrade moves the index or changes its entries).
/// </remarks>
internal static unsafe partial class FasterHashIndex
{
    private const int MadvHugepage = 14;
    private const int MadvCollapse = 25;
    private const long HugePage = 2L << 20;

    /// <summary>What <see cref="AdviseHugePages"/> did: the range advised (<paramref name="Bytes"/> 0 when nothing was) and,
    /// when it could not, why.</summary>
    public readonly record struct Outcome(nint Start, long Bytes, string? WhyNot);

    /// <summary>Advises the 2 MiB pages that lie wholly inside the hash index <see cref="TryFind"/> found at
    /// <paramref name="start"/> (0 when it found none) with <paramref name="buckets"/> buckets.</summary>
    public static Outcome AdviseHugePages(nint start, long buckets)
    {
        if (!OperatingSystem.IsLinux())
        {
            return new(0, 0, "not Linux");
        }

        if (start == 0)
        {
            return new(0, 0, "FASTER's index was not found where this build looks for it");
        }

        long length = buckets * BucketBytes;

        // Only whole huge pages: the index sits inside a larger heap block the advice must not spill over.
        long first = (start + HugePage - 1) & ~(HugePage - 1);
        long end = (start + length) & ~(HugePage - 1);
        if (end <= first)
        {
            return new(0, 0, "the index is smaller than a huge page");
        }

        nuint bytes = (nuint)(end - first);
        if (Madvise((nint)first, bytes, MadvHugepage) != 0)
        {
            return new(0, 0, $"madvise(MADV_HUGEPAGE) failed with errno {Marshal.GetLastPInvokeError()}");
        }

        // FASTER has just allocated the index and nothing has touched it yet, so its first touches get huge pages. Pages
        // already in memory (a heap block the GC reused) would stay small until khugepaged got to them, tens of seconds
        // for a 32 MiB index; a collapse takes a few milliseconds. The kernel refuses it for a range with nothing in
        // memory, and before Linux 6.1, which leaves the advice for later faults.
        _ = Madvise((nint)first, bytes, MadvCollapse);
        return new((nint)first, (long)bytes, null);
    }

    /// <summary>Size of one FASTER hash bucket (a cache line of eight entries).</summary>
    public const int BucketBytes = 64;

    // FASTER 2.6.5's bucket: seven entries of [48-bit record address][14-bit tag][pending bit][tentative bit], then a
    // word whose address bits link the bucket's overflow bucket (its other bits are latches).

    /// <summary>Entries a bucket holds; the word after them is the overflow link.</summary>
    public const int EntriesPerBucket = 7;

    /// <summary>The address bits of an entry or of the overflow link.</summary>
    public const long AddressMask = (1L << 48) - 1;

    /// <summary>Set while an entry is being inserted (FASTER's own lookups pass over it).</summary>
    public const long TentativeBit = 1L << 63;

    /// <summary>The 14-bit tag of an entry.</summary>
    public static ushort TagOf(long entry) => (ushort)((entry >> 48) & 0x3FFF);

    /// <summary>
    /// Finds <paramref name="kv"/>'s hash index: the address of its first bucket and the number of buckets (a power of
    /// two; a key's bucket is its FASTER hash masked to that count). FASTER 2.x keeps the live table in
    /// <c>FasterBase.state[resizeInfo.version]</c>, an InternalHashTable with the bucket count in <c>size</c> and the
    /// aligned start in <c>tableAligned</c>; it moves only when the index is resized, which this store never asks for.
    /// </summary>
    public static bool TryFind(FasterKV<SpanByte, SpanByte> kv, out nint start, out long buckets)
    {
        start = 0;
        buckets = 0;
        const BindingFlags Flags = BindingFlags.Instance | BindingFlags.NonPublic | BindingFlags.Public;
        try
        {
            if (typeof(FasterBase).GetField("state", Flags)?.GetValue(kv) is not Array { Length: > 0 } state)
            {
                return false;
            }

            int version = 0;
            if (typeof(FasterBase).GetField("resizeInfo", Flags)?.GetValue(kv) is { } resize
                && resize.GetType().GetField("version", Flags)?.GetValue(resize) is int v && v >= 0 && v < state.Length)
            {
                version = v;
            }

            object? table = state.GetValue(version);
            Type? type = table?.GetType();
            if (type?.GetField("size", Flags)?.GetValue(table) is not long size
                || type.GetField("tableAligned", Flags)?.GetValue(table) is not Pointer pointer)
            {
                return false;
            }

            start = (nint)Pointer.Unbox(pointer);
            buckets = size;
            return start != 0 && long.IsPow2(buckets);
        }
        catch (Exception e) when (e is TargetException or FieldAccessException or ArgumentException or NotSupportedException)
        {
            return false;
        }
    }

    [LibraryImport("libc", EntryPoint = "madvise", SetLastError = true)]
    private static partial int Madvise(nint address, nuint length, int advice);
}
