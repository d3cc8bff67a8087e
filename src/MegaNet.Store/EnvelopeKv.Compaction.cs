using System.Buffers.Binary;
using System.Runtime.InteropServices;
using FASTER.core;

namespace MegaNet.Store;

/// <summary>What one compaction of the envelope table did (<see cref="EnvelopeKv.Compact"/>).</summary>
/// <param name="Reclaimed">Bytes of log the begin address moved past.</param>
/// <param name="Copied">Live records copied to the tail.</param>
/// <param name="DamagedBytes">Bytes of log that held no readable record where one was due: zeros or garbage between
/// records, or a part of the file the device could not read (<c>EIO</c>). Any record there is gone.</param>
/// <param name="FirstDamage">The table address of the first such byte (−1 when none).</param>
/// <param name="StoppedBy">A read that failed for a reason that may pass (out of open files or memory): the
/// compaction stopped before the page it was reading, and the next one goes on from there.</param>
internal readonly record struct CompactionOutcome(long Reclaimed, long Copied, long DamagedBytes, long FirstDamage, IOException? StoppedBy);

internal sealed partial class EnvelopeKv
{
    // FASTER 2.6.5's record layout for SpanByte keys and values (VariableLengthBlittableAllocator): RecordInfo (8 bytes),
    // the key as a 4-byte length and its bytes padded to 8, the value as a 4-byte length and its bytes; each record padded
    // to 8 bytes, none crossing a page. Every key here is a kind byte and a 32-byte id.
    private const int KeyLength = 33;
    private const int ValueLengthOffset = 8 + 40;
    private const int ValueBytesOffset = ValueLengthOffset + 4;
    private const long PreviousAddressMask = (1L << 48) - 1;
    private const long TombstoneBit = 1L << 55, ValidBit = 1L << 56, SealedBit = 1L << 57;

    // The compactor reads the table's files in chunks of this size: a chunk the device cannot read (EIO) costs the
    // records in it, not the whole page.
    private const int ChunkBytes = 64 << 10;

    // How often a chunk the device failed is read in all before its bytes count as damaged.
    private const int ChunkReadTries = 3;

    private ClientSession<SpanByte, SpanByte, SpanByte, long, Empty, LocateFunctions>? _locator;

    // The page a compaction is working through, kept between calls (Compact): its bytes (4 KiB aligned for direct
    // reads; freed with the table), the address on it the next call is to go on from (-1: none), its parse, and the
    // next of its candidate records to look at. Committer only.
    private unsafe byte* _scanPage;
    private long _scanResumeAt = -1;
    private PageScan? _scan;
    private int _scanNext;

    /// <summary>
    /// Writer session only: copies the live, unexpired records of the on-disk part of the log below
    /// <paramref name="limit"/>, from the begin address and at most <paramref name="maxRecords"/> of them that need
    /// looking at, to its tail and moves the begin address past them; the freed segments are deleted after the next
    /// checkpoint. Each call stands on its own (the begin address is where the next one starts, at a record boundary),
    /// so a compaction can be run a few hundred records at a time between other writes (see
    /// <see cref="CompactableUntil"/>); the page being worked through is kept between calls (on-disk pages do not
    /// change), so it is read and parsed once.
    /// </summary>
    /// <remarks>
    /// Not FASTER's own <c>Compact</c>: its scan takes a record's sizes on trust, so zeros or garbage on the disk (a bad
    /// sector) ended the process with an access violation (a key length read from garbage points outside the page), and a
    /// page the device failed to read parsed as zeros, its live records dropped without a word. Here the table's files
    /// are read and checked record by record: a record is copied only when FASTER's index names exactly its address as
    /// the newest version of its key (a read that locates it), so garbage that happens to look like a record is never
    /// copied; bytes that do not parse are skipped to the next plausible record header and reported; a read that fails
    /// for a reason that may pass stops the compaction before that page, and a lookup during which the device failed a
    /// read stops it before the records it looked up (the lookup may have missed one). Records still in memory (at and
    /// above the log's head address) wait for a later compaction. Only the committer writes the table, so nothing
    /// changes a record between its lookup and its copy.
    /// </remarks>
    public CompactionOutcome Compact(long nowUnixMs, long limit = long.MaxValue, int maxRecords = int.MaxValue)
    {
        long begin = _kv.Log.BeginAddress;
        long start = begin;
        int pageBytes = 1 << _pageBits;
        long until = Math.Min(CompactableUntil, limit);
        _locator ??= _kv.For(new LocateFunctions()).NewSession<LocateFunctions>();
        long copied = 0, damaged = 0, firstDamage = -1;
        IOException? stoppedBy = null;
        int looked = 0, pagesRead = 0;
        while (begin < until && looked < maxRecords)
        {
            long pageStart = begin & ~(pageBytes - 1L);
            if (_scanResumeAt != begin)
            {
                if (pagesRead++ > 0 && maxRecords != int.MaxValue)
                {
                    // A call with a limit reads at most one page (about 10 ms with its parse): pages whose records are
                    // all garbage need no lookups, and a run of them would hold writes as long as a whole compaction.
                    break;
                }

                // A page not begun yet (or a compaction that did not go on from where this one left it): read and parse
                // it from the begin address on.
                _scanResumeAt = -1;
                _scan = new PageScan(nowUnixMs);
                unsafe
                {
                    if (_scanPage == null)
                    {
                        _scanPage = (byte*)NativeMemory.AlignedAlloc((nuint)pageBytes, 4096);
                    }

                    if (ReadPage(pageStart, new Span<byte>(_scanPage, pageBytes), _scan) is { } failure)
                    {
                        stoppedBy = failure;
                        break;
                    }

                    _scan.Parse(new Span<byte>(_scanPage, pageBytes), pageStart, begin, until);
                }

                damaged += _scan.DamagedBytes;
                if (firstDamage < 0)
                {
                    firstDamage = _scan.FirstDamage;
                }

                _scanNext = 0;
            }

            List<int> order = _scan!.InOrder;
            int count = Math.Min(order.Count - _scanNext, maxRecords - looked);
            long failuresBefore = _device.ReadFailures;
            unsafe
            {
                copied += LocateAndCopy(new Span<byte>(_scanPage, pageBytes), pageStart, _scan, CollectionsMarshal.AsSpan(order).Slice(_scanNext, count));
            }

            if (_device.ReadFailures != failuresBefore)
            {
                // A lookup read from the device while some read failed: it may have missed a record it looked up (FASTER
                // takes a failed read for "not found"). What was copied stays copied; those records are kept.
                stoppedBy = _device.LastReadFailure;
                _scanResumeAt = -1;
                break;
            }

            _scanNext += count;
            looked += count;
            // Past the records looked at, and whatever lies between them and the next one (garbage, damage counted).
            long next = _scanNext < order.Count ? pageStart + order[_scanNext] : Math.Min(pageStart + pageBytes, until);
            _kv.Log.ShiftBeginAddress(next, snapToPageStart: false, truncateLog: false);
            begin = next;
            _scanResumeAt = next < pageStart + pageBytes ? next : -1;
        }

        return new CompactionOutcome(_kv.Log.BeginAddress - start, copied, damaged, firstDamage, stoppedBy);
    }

    private unsafe void FreeScanPage()
    {
        NativeMemory.AlignedFree(_scanPage);
        _scanPage = null;
    }

    /// <summary>
    /// The end of the part of the log a compaction may go through now: the on-disk part (below FASTER's head address, and
    /// its read-only one), in whole pages, since a page boundary is a record boundary and the head moves page by page.
    /// Only grows.
    /// </summary>
    public long CompactableUntil => Math.Min(_kv.Log.SafeReadOnlyAddress, _kv.Log.HeadAddress) & ~((1L << _pageBits) - 1);

    // Reads the page at pageStart into bytes chunk by chunk; a chunk the device fails (EIO, also after retries) reads as
    // zeros and is counted as damage by the parse (its records cannot be located). Returns the error of a read that may
    // pass, which stops the compaction.
    private IOException? ReadPage(long pageStart, Span<byte> bytes, PageScan scan)
    {
        scan.UnreadableChunks.Clear();
        int segment = (int)(pageStart >> SegmentBits);
        long offset = pageStart & ((1L << SegmentBits) - 1);
        for (int at = 0; at < bytes.Length; at += ChunkBytes)
        {
            Span<byte> chunk = bytes.Slice(at, Math.Min(ChunkBytes, bytes.Length - at));
            for (int tries = 1; ; tries++)
            {
                try
                {
                    int read = _device.ReadSegment(segment, offset + at, chunk);
                    // Past the file's end (the page was never written that far): no record there.
                    chunk[read..].Clear();
                    break;
                }
                catch (IOException e) when (DirectFileDevice.IsDeviceError(e))
                {
                    if (tries < ChunkReadTries)
                    {
                        continue;
                    }

                    chunk.Clear();
                    scan.UnreadableChunks.Add((at, chunk.Length));
                    break;
                }
                catch (IOException e)
                {
                    return e;
                }
            }
        }

        return null;
    }

    // Looks up the given candidate records of the page (page offsets, ascending) in the index: a record is live when the
    // newest version of its key is the record itself. Those are copied to the tail. Returns how many were.
    private unsafe long LocateAndCopy(Span<byte> bytes, long pageStart, PageScan scan, ReadOnlySpan<int> batch)
    {
        if (batch.IsEmpty)
        {
            return 0;
        }

        scan.Live.Clear();
        int pending = 0;
        foreach (int offset in batch)
        {
            if (IndexNames(bytes.Slice(offset + 12, KeyLength), pageStart + offset))
            {
                scan.Live.Add(offset);
                continue;
            }

            fixed (byte* k = bytes.Slice(offset + 12, KeyLength))
            {
                var key = SpanByte.FromFixedSpan(new ReadOnlySpan<byte>(k, KeyLength));
                SpanByte input = default;
                long output = -1;
                ReadOptions options = default;
                Status status = _locator!.Read(ref key, ref input, ref output, ref options, out _);
                if (status.IsPending)
                {
                    // As FASTER's own compaction: a bounded number of reads in flight.
                    if (++pending >= 256)
                    {
                        CompleteLocates(bytes.Length, pageStart, scan, batch[0], batch[^1]);
                        pending = 0;
                    }
                }
                else if (status.Found && output == pageStart + offset)
                {
                    scan.Live.Add(offset);
                }
            }
        }

        CompleteLocates(bytes.Length, pageStart, scan, batch[0], batch[^1]);

        // In address order, as they were written (the order does not change what is read, only where it lands).
        scan.Live.Sort();
        foreach (int offset in scan.Live)
        {
            int valueLength = BinaryPrimitives.ReadInt32LittleEndian(bytes[(offset + ValueLengthOffset)..]);
            ReadOnlySpan<byte> key = bytes.Slice(offset + 12, KeyLength);
            Upsert(_writer, (char)key[0], key[1..], bytes.Slice(offset + ValueBytesOffset, valueLength));
        }

        return scan.Live.Count;
    }

    /// <summary>
    /// Whether FASTER's index alone says that the record at <paramref name="address"/> is the newest of
    /// <paramref name="key"/>: the entry for the key's tag in its bucket points at the record (no newer record of any key
    /// with that tag, so none of this key). False where it does not tell (the entry points elsewhere, is in an overflow
    /// bucket, or the index was not found): a read must locate the record then. Reading the entry needs no I/O,
    /// where the read does one for every record that is still live, as most compacted ones are (3.5 times the time of
    /// FASTER's compaction without this). Only the committer changes the index, and it is here.
    /// </summary>
    private unsafe bool IndexNames(ReadOnlySpan<byte> key, long address)
    {
        nint bucket = BucketOfKey(key, out ushort tag);
        if (bucket == 0)
        {
            return false;
        }

        long* entries = (long*)bucket;
        for (int i = 0; i < FasterHashIndex.EntriesPerBucket; i++)
        {
            long entry = Volatile.Read(ref entries[i]);
            if (entry != 0 && (entry & FasterHashIndex.TentativeBit) == 0 && FasterHashIndex.TagOf(entry) == tag)
            {
                return (entry & FasterHashIndex.AddressMask) == address;
            }
        }

        return false;
    }

    // Waits for the locating reads that went to disk; those that found the record at its own address mark it live. The
    // address is the one the read reports to its reader (LocateFunctions), not the completion's RecordMetadata: for a
    // read that went to disk, FASTER 2.6.5 puts there the address the read started from (the hash entry's), not the
    // one where it found the key, so a record reached by following its bucket's chain past a record of another key
    // with the same tag read as not live, and compaction dropped it. 6 of 43,381 live envelopes were lost that way
    // compacting 200,000 (CompactionLocateTests).
    private void CompleteLocates(int pageBytes, long pageStart, PageScan scan, int first, int last)
    {
        _locator!.CompletePendingWithOutputs(out CompletedOutputIterator<SpanByte, SpanByte, SpanByte, long, Empty> completed, wait: true);
        using (completed)
        {
            while (completed.Next())
            {
                long address = completed.Current.Output;
                // Only a record of this batch: a key with two records on the page, the newer one past the batch, is
                // looked at again with the batch that holds the newer one.
                if (completed.Current.Status.Found && address >= pageStart + first && address <= pageStart + last && scan.Candidates.Contains((int)(address - pageStart)))
                {
                    scan.Live.Add((int)(address - pageStart));
                }
            }
        }
    }

    /// <summary>The parse of one page at a time: where its candidate records are and what did not parse.</summary>
    private sealed class PageScan(long nowUnixMs)
    {
        /// <summary>Page offsets of records that are neither deleted, invalid nor expired: each live if the index says so.</summary>
        public readonly HashSet<int> Candidates = [];

        /// <summary>The same offsets in address order, as the parse found them.</summary>
        public readonly List<int> InOrder = [];

        public readonly List<int> Live = [];

        /// <summary>Page offset and length of chunks the device could not read.</summary>
        public readonly List<(int Offset, int Length)> UnreadableChunks = [];

        public long DamagedBytes;
        public long FirstDamage = -1;

        /// <summary>Finds the records of the page that lie in [<paramref name="from"/>, <paramref name="until"/>).</summary>
        public void Parse(ReadOnlySpan<byte> page, long pageStart, long from, long until)
        {
            Candidates.Clear();
            InOrder.Clear();
            int end = (int)Math.Min(page.Length, until - pageStart);
            int at = (int)(from - pageStart);
            // Where a run of zero words began. Zeros are no record (FASTER's scan steps over them a word at a time): the end
            // of a page where the next record did not fit, and the rest of a value an update shortened in place (FASTER
            // zeroes it, an ack's rewrite of a record still in memory). Zeros followed by bytes that are no record are
            // counted with them as damage (a zeroed sector ending inside a record).
            int gapStart = -1;
            while (at < end)
            {
                long word = BinaryPrimitives.ReadInt64LittleEndian(page[at..]);
                if (word == 0 && !InUnreadable(at))
                {
                    if (gapStart < 0)
                    {
                        gapStart = at;
                    }

                    at += 8;
                    continue;
                }

                int size = RecordSize(page, at, pageStart + at);
                if (size == 0)
                {
                    // Not a record where one is due: damage up to the next offset that reads as one.
                    int damageStart = gapStart >= 0 ? gapStart : at;
                    gapStart = -1;
                    at += 8;
                    while (at < end && RecordSize(page, at, pageStart + at) == 0)
                    {
                        at += 8;
                    }

                    Damaged(pageStart + damageStart, at - damageStart);
                    continue;
                }

                gapStart = -1;
                if (IsCandidate(page, at, word))
                {
                    Candidates.Add(at);
                    InOrder.Add(at);
                }

                at += size;
            }
        }

        private bool InUnreadable(int offset)
        {
            foreach ((int start, int length) in UnreadableChunks)
            {
                if (offset >= start && offset < start + length)
                {
                    return true;
                }
            }

            return false;
        }

        private void Damaged(long address, long bytes)
        {
            if (FirstDamage < 0)
            {
                FirstDamage = address;
            }

            DamagedBytes += bytes;
        }

        // The record's size if the bytes at offset are a record this table could hold (header, key and value lengths,
        // chain address), else 0. Zeros of an unreadable chunk never are.
        private int RecordSize(ReadOnlySpan<byte> page, int offset, long address)
        {
            if (page.Length - offset < ValueBytesOffset || InUnreadable(offset))
            {
                return 0;
            }

            long word = BinaryPrimitives.ReadInt64LittleEndian(page[offset..]);
            long previous = word & PreviousAddressMask;
            byte kind = page[offset + 12];
            if (word == 0 || previous >= address || BinaryPrimitives.ReadInt32LittleEndian(page[(offset + 8)..]) != KeyLength || kind is not ((byte)'E' or (byte)'B'))
            {
                return 0;
            }

            int valueLength = BinaryPrimitives.ReadInt32LittleEndian(page[(offset + ValueLengthOffset)..]);
            if (valueLength < 0 || valueLength > page.Length - offset - ValueBytesOffset)
            {
                return 0;
            }

            int size = (ValueBytesOffset + valueLength + 7) & ~7;
            if (size > page.Length - offset)
            {
                return 0;
            }

            // A record spanning an unreadable chunk is gone with it.
            foreach ((int start, int length) in UnreadableChunks)
            {
                if (start < offset + size && offset < start + length)
                {
                    return 0;
                }
            }

            return size;
        }

        // Neither deleted, nor invalid (a write FASTER abandoned), nor expired: its expiry (Unix ms) is at offset 40 of
        // metadata records and 0 of the envelope records of stores before manifest version 3.
        private bool IsCandidate(ReadOnlySpan<byte> page, int offset, long word)
        {
            if ((word & TombstoneBit) != 0 || (word & (ValidBit | SealedBit)) != ValidBit)
            {
                return false;
            }

            ReadOnlySpan<byte> value = page.Slice(offset + ValueBytesOffset, BinaryPrimitives.ReadInt32LittleEndian(page[(offset + ValueLengthOffset)..]));
            int expiryAt = page[offset + 12] == (byte)'E' ? 40 : 0;
            return value.Length >= expiryAt + 8 && BinaryPrimitives.ReadInt64LittleEndian(value[expiryAt..]) > nowUnixMs;
        }
    }

    /// <summary>Reads that only locate a record: the output is the address of the record read, its value not copied.</summary>
    private sealed class LocateFunctions : FunctionsBase<SpanByte, SpanByte, SpanByte, long, Empty>
    {
        // Records on disk (and in the read-only region).
        public override bool SingleReader(ref SpanByte key, ref SpanByte input, ref SpanByte value, ref long dst, ref ReadInfo readInfo)
        {
            dst = readInfo.Address;
            return true;
        }

        // Records in the mutable region.
        public override bool ConcurrentReader(ref SpanByte key, ref SpanByte input, ref SpanByte value, ref long dst, ref ReadInfo readInfo)
        {
            dst = readInfo.Address;
            return true;
        }
    }
}
