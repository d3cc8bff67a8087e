using System.Collections.Concurrent;
using System.Runtime.Intrinsics.X86;
using FASTER.core;
using MegaNet.Core.Interop;

namespace MegaNet.Store;

/// <summary>What a read of the envelope table gave: the record's value, or null where it found none.</summary>
/// <param name="Value">The value read; null when there is none.</param>
/// <param name="FromDisk">The read went to disk (the record, or the chain of records it looked through, was beyond the
/// part of the table held in memory). Only such a read can miss a record that is there: damage on the disk (a bad
/// sector) reads as no record at all.</param>
/// <param name="Failure">Set when nothing was found while a read of the device failed (<c>EIO</c>, <c>EMFILE</c>), each
/// time it was tried: the record may well be there, and a later read may find it.</param>
internal readonly record struct TableRead(byte[]? Value, bool FromDisk, IOException? Failure);

/// <summary>
/// The envelope table on a FASTER <see cref="FasterKV{Key, Value}"/> with byte-string keys and values: for every
/// stored envelope one record, <c>'E' ‖ id</c> → metadata (recipient, mailbox seq, expiry, log index, length;
/// <see cref="MetaLength"/> bytes) followed by the envelope bytes until ack or expiry. An ack rewrites the record
/// without the bytes: the metadata outlives it so that replays keep their receipt. The hybrid log keeps the newest
/// records within the memory budget and pages the rest to disk.
/// </summary>
/// <remarks>
/// Stores written before manifest version 3 (2026-12-01) kept the bytes in a record of their own, <c>'B' ‖ id</c> →
/// expiry ‖ envelope; <see cref="SeparateEnvelopeRecords"/> says such records may still be there. One record per put
/// instead of two saves a FASTER upsert per envelope, most of it a cache miss on its hash bucket.
///
/// Not durable by itself: FasterKV comes back as of its last checkpoint after <c>kill -9</c>, so the store replays its
/// write-ahead log on top of the checkpoint. FASTER sessions are single-threaded and spin: writes use one session
/// (the store's apply stage; with <see cref="StoreOptions.ApplyThreads"/> above 1, a large group's puts also use up to
/// that many minus one more, <see cref="EnsureWriters"/>, each on one thread at a time), the duplicate checks of the
/// store's prepare stage another, and other reads borrow one of at most <see cref="Environment.ProcessorCount"/> pooled
/// sessions.
/// </remarks>
internal sealed partial class EnvelopeKv : IDisposable
{
    public const int MetaLength = 32 + 8 + 8 + 8 + 4;

    /// <summary>The hash index of stores whose checkpoint manifest predates the recorded index size.</summary>
    public const long Version1IndexBytes = 1L << 22;

    private readonly FasterKV<SpanByte, SpanByte> _kv;
    private readonly ClientSession<SpanByte, SpanByte, SpanByte, byte[], Empty, SpanByteFunctions_ByteArrayOutput<Empty>> _writer;
    private readonly ClientSession<SpanByte, SpanByte, SpanByte, byte[], Empty, SpanByteFunctions_ByteArrayOutput<Empty>> _lookup;
    private readonly ConcurrentBag<ClientSession<SpanByte, SpanByte, SpanByte, byte[], Empty, SpanByteFunctions_ByteArrayOutput<Empty>>> _readers = [];
    private readonly SemaphoreSlim _readerSlots = new(Environment.ProcessorCount);
    private readonly List<IDisposable> _allSessions = [];
    // Sessions of the apply stage's extra writers (see Put with a writer number), made on first use: writer 0 is _writer.
    private readonly List<ClientSession<SpanByte, SpanByte, SpanByte, byte[], Empty, SpanByteFunctions_ByteArrayOutput<Empty>>> _extraWriters = [];
    // Drives checkpoints (one at a time: the store's committer never overlaps them).
    private ClientSession<SpanByte, SpanByte, SpanByte, byte[], Empty, SpanByteFunctions_ByteArrayOutput<Empty>>? _checkpointer;
    private readonly DirectFileDevice _device;
    private readonly CheckpointDeviceFactory _checkpointFiles;
    private readonly DeviceLogCommitCheckpointManager _checkpointManager;

    // 64 MiB table segments: the unit compaction frees.
    private const int SegmentBits = 26;
    private readonly int _pageBits;
    private long _diskReads;
    private long _compactionRetries;
    // FASTER's hash index, for Prefetch and SurelyAbsent (0 when it was not found); found again after Recover.
    private nint _indexBuckets;
    private long _indexMask;
    private volatile bool _disposed;

    /// <param name="directory">Directory of the hybrid log and its checkpoints.</param>
    /// <param name="memoryBytes">Memory for the hybrid log (rounded down to a power of two).</param>
    /// <param name="indexBytes">Size of the hash index (see <see cref="IndexBytesFor"/>); a checkpoint recovers only
    /// into the size it was taken with.</param>
    /// <param name="checkpointFiles">Devices for the checkpoint files (tests inject failures); default
    /// <see cref="CheckpointFileFactory"/>.</param>
    /// <param name="pageBits">The page size (a power of two) the table was created with: a FASTER checkpoint recovers
    /// only into pages of the size it was written with (another size read records at wrong offsets and ended the
    /// process with an access violation). Null: <see cref="PageBitsFor(long)"/> of <paramref name="memoryBytes"/>. The
    /// memory is raised to four such pages where the budget gives less.</param>
    public EnvelopeKv(string directory, long memoryBytes, long indexBytes, INamedDeviceFactory? checkpointFiles = null, int? pageBits = null)
    {
        int memoryBits = MemoryBitsFor(memoryBytes);
        _pageBits = pageBits ?? PageBitsFor(memoryBits);
        memoryBits = Math.Max(memoryBits, _pageBits + 2);
        // Made here, durably, before FASTER makes them without flushing their parents (see DirectoryFlush).
        DirectoryFlush.CreateDirectory(Path.Combine(directory, "checkpoints"));
        var settings = new FasterKVSettings<SpanByte, SpanByte>(directory, deleteDirOnDispose: false)
        {
            MemorySize = 1L << memoryBits,
            PageSize = 1L << _pageBits,
            SegmentSize = 1L << SegmentBits,
            IndexSize = indexBytes,
            TryRecoverLatest = false,
            RemoveOutdatedCheckpoints = false,
        };
        // Page flushes straight to disk instead of through the page cache where the file system allows (see
        // DirectFileDevice); either way segments freed by compaction wait for the manifest (see DeferRemovals).
        string hlog = Path.Combine(directory, "hlog.log");
        _device = DirectFileDevice.TryCreate(hlog, "mn-io-table") ?? DirectFileDevice.CreateBuffered(hlog, "mn-io-table");
        _device.DeferRemovals = true;
        _device.WriteFailed += e => TableWriteFailed?.Invoke(e);
        settings.LogDevice.Dispose();
        settings.LogDevice = _device;

        // FASTER's own checkpoint manager, on devices that record failed writes (see CheckpointDeviceFactory) and write
        // on threads of their own (see CheckpointFileFactory).
        _checkpointFiles = new CheckpointDeviceFactory(checkpointFiles ?? new CheckpointFileFactory());
        _checkpointManager = new DeviceLogCommitCheckpointManager(_checkpointFiles,
            new DefaultCheckpointNamingScheme(new DirectoryInfo(Path.Combine(directory, "checkpoints")).FullName), removeOutdated: false);
        settings.CheckpointManager = _checkpointManager;

        Directory = directory;
        IndexBytes = indexBytes;
        _kv = new FasterKV<SpanByte, SpanByte>(settings);
        // One reflection into FASTER for every use of its index: huge pages now, prefetches and absence checks later.
        long count = FindIndex();
        IndexPages = FasterHashIndex.AdviseHugePages(_indexBuckets, count);

        _writer = NewSession();
        _lookup = NewSession();
    }

    // Pages of a quarter of the log's memory, 4 MiB at most: the unit FASTER flushes and evicts.
    private static int PageBitsFor(int memoryBits) => Math.Min(22, memoryBits - 2);

    private static int MemoryBitsFor(long memoryBytes) => Math.Clamp((int)Math.Floor(Math.Log2(memoryBytes)), 20, 40);

    /// <summary>The page size (a power of two) a new table gets for <paramref name="memoryBytes"/> of memory.</summary>
    public static int PageBitsFor(long memoryBytes) => PageBitsFor(MemoryBitsFor(memoryBytes));

    /// <summary>The page size (a power of two) this table reads and writes.</summary>
    public int PageBits => _pageBits;

    /// <summary>Directory of the hybrid log and its checkpoints.</summary>
    public string Directory { get; }

    /// <summary>A write of the table's log failed; it is retried until it succeeds (on an I/O thread). Only after
    /// <see cref="RetryFailedWrites"/>.</summary>
    public event Action<IOException>? TableWriteFailed;

    /// <summary>
    /// Retry failed writes of the table's log (see <see cref="DirectFileDevice.RetryFailedWrites"/>). Off until the
    /// store has recovered the table: FASTER's <see cref="Recover"/> fails at once on a page it cannot flush, which is
    /// the right answer at open, while a retried write would keep it waiting with nothing said.
    /// </summary>
    public bool RetryFailedWrites
    {
        get => _device.RetryFailedWrites;
        set => _device.RetryFailedWrites = value;
    }

    /// <summary>Tests: makes writes of the table's log fail as on a full disk while it returns true.</summary>
    internal Func<bool>? FailTableWriteForTests
    {
        get => _device.FailWriteForTests;
        set => _device.FailWriteForTests = value;
    }

    /// <summary>Tests: the table's device, to make its reads fail (<see cref="DirectFileDevice.FailReadForTests"/>).</summary>
    internal DirectFileDevice DeviceForTests => _device;

    /// <summary>Tests: where the in-memory part of the table's log begins; records below it are read from disk.</summary>
    internal long HeadAddressForTests => _kv.Log.HeadAddress;

    /// <summary>Reads that went to disk (the record was beyond the in-memory part of the log).</summary>
    public long DiskReads => Interlocked.Read(ref _diskReads);

    /// <summary>Reads repeated because a compaction moved the log's begin address under them.</summary>
    public long CompactionRetries => Interlocked.Read(ref _compactionRetries);

    /// <summary>Size of the hash index in bytes.</summary>
    public long IndexBytes { get; }

    /// <summary>Whether the hash index asked for huge pages, and how much of it (see <see cref="FasterHashIndex"/>).</summary>
    public FasterHashIndex.Outcome IndexPages { get; }

    /// <summary>
    /// The hash index for a new table under a store memory budget: an eighth of it (a power of two, 1 MiB to 1 GiB).
    /// Each envelope takes one index entry (two in stores with separate byte records) and a 64-byte bucket holds seven before
    /// FASTER chains overflow buckets, which every later lookup in that bucket walks: with the fixed 4 MiB index of
    /// version 1 a store of 3,000,000 envelopes spent 14.4 µs of CPU per put instead of 10.8 µs with 32 MiB.
    /// </summary>
    public static long IndexBytesFor(long memoryBudgetBytes) =>
        Math.Clamp(1L << System.Numerics.BitOperations.Log2((ulong)Math.Max(1, memoryBudgetBytes / 8)), 1L << 20, 1L << 30);

    /// <summary>True for a size FASTER accepts for the index and this store could have chosen.</summary>
    public static bool IsValidIndexSize(long bytes) => bytes is >= 64 and <= (1L << 30) && long.IsPow2(bytes);

    /// <summary>Log addresses (for diagnostics and the compaction policy).</summary>
    public long BeginAddress => _kv.Log.BeginAddress;

    public long TailAddress => _kv.Log.TailAddress;

    /// <summary>Restores the table to checkpoint <paramref name="token"/>; throws when that checkpoint cannot be read.</summary>
    public void Recover(Guid token)
    {
        _kv.Recover(token);
        // FASTER allocates the index anew when the checkpoint's size differs; SurelyAbsent must not read the old one.
        FindIndex();
        // Segments below the checkpoint's begin address that a crash left behind before their deletion (see
        // ReleaseFreedSegments): nothing refers to them any more.
        long firstSegment = _kv.Log.BeginAddress >> SegmentBits;
        foreach (string file in System.IO.Directory.EnumerateFiles(Directory, "hlog.log.*"))
        {
            if (int.TryParse(Path.GetExtension(file).AsSpan(1), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int segment)
                && segment < firstSegment)
            {
                File.Delete(file);
            }
        }
    }

    /// <summary>Deletes the table segments compaction freed; call once the manifest names a checkpoint taken after the
    /// compaction (until then the previous checkpoint, which a crash would recover, still reads them).</summary>
    public void ReleaseFreedSegments() => _device.RemoveHeldSegments();

    /// <summary>
    /// True while the table may hold envelope bytes in separate <c>'B'</c> records (a store written before manifest
    /// version 3): acks delete those too (compaction drops expired ones), and bytes not found in the metadata record are
    /// looked for there.
    /// </summary>
    public bool SeparateEnvelopeRecords { get; set; }

    /// <summary>Tests: puts write the layout of stores before manifest version 3 (metadata and bytes apart).</summary>
    internal bool WriteSeparateRecordsForTests { get; set; }

    /// <summary>Writer session only (the store's committer). <paramref name="meta"/> is <see cref="MetaLength"/> bytes
    /// with the expiry (Unix ms) at offset 40, which compaction reads to drop the record once expired.</summary>
    public void Put(ReadOnlySpan<byte> id, ReadOnlySpan<byte> meta, ReadOnlySpan<byte> envelope) => Put(_writer, id, meta, envelope);

    /// <summary>
    /// <see cref="Put(ReadOnlySpan{byte}, ReadOnlySpan{byte}, ReadOnlySpan{byte})"/> on writer session
    /// <paramref name="writer"/> (0 is the committer's own): the apply stage writes a large group's records from several
    /// threads at once, each on a session of its own, since a session serves one thread at a time. Call
    /// <see cref="EnsureWriters"/> first, from the apply stage.
    /// </summary>
    public void Put(int writer, ReadOnlySpan<byte> id, ReadOnlySpan<byte> meta, ReadOnlySpan<byte> envelope) =>
        Put(writer == 0 ? _writer : _extraWriters[writer - 1], id, meta, envelope);

    /// <summary>Makes writer sessions 1 to <paramref name="count"/> - 1 if they are not there yet (apply stage only, before
    /// it hands them out).</summary>
    public void EnsureWriters(int count)
    {
        while (_extraWriters.Count < count - 1)
        {
            _extraWriters.Add(NewSession());
        }
    }

    private void Put(ClientSession<SpanByte, SpanByte, SpanByte, byte[], Empty, SpanByteFunctions_ByteArrayOutput<Empty>> session,
        ReadOnlySpan<byte> id, ReadOnlySpan<byte> meta, ReadOnlySpan<byte> envelope)
    {
        if (WriteSeparateRecordsForTests)
        {
            // The layout before manifest version 3: the metadata alone, and the bytes under 'B' behind the expiry.
            Upsert(session, 'E', id, meta);
            Upsert(session, 'B', id, meta.Slice(40, 8), envelope);
            return;
        }

        Upsert(session, 'E', id, meta, envelope);
    }

    /// <summary>
    /// Starts loading into the cache the hash bucket of <paramref name="id"/>'s record, which
    /// <see cref="Put(ReadOnlySpan{byte}, ReadOnlySpan{byte}, ReadOnlySpan{byte})"/> and <see cref="GetMetaAsync"/> of it
    /// read. A bucket lies at a random place in an index larger than the cache, and its load was the costliest instruction
    /// of an upsert and of a lookup (0.9 and 1.3 % of a streaming node's samples); a caller that knows which id comes next
    /// fetches its bucket while it does other work. Only a hint: it changes nothing, and does nothing where the index was
    /// not found.
    /// </summary>
    public unsafe void Prefetch(ReadOnlySpan<byte> id)
    {
        if (_indexBuckets != 0 && Sse.IsSupported)
        {
            Sse.Prefetch0((void*)BucketOf(id, out _));
        }
    }

    /// <summary>
    /// True when the table surely holds no record of <paramref name="id"/> (kind <paramref name="kind"/>) now: no entry of
    /// its index bucket carries its tag, and the bucket has no overflow bucket. That is what FASTER's own lookup finds
    /// before it follows a chain of records, so a read would have found nothing at this moment either; false means only
    /// "read to know". Nearly every envelope a node admits is new, and its replay lookup answered here costs one bucket
    /// load (prefetched) instead of a session, an epoch and FASTER's read (the node's replay lookups went from 3.5 to
    /// 1.3 % of its CPU samples while streaming, 2026-12-06). Sound because FASTER never moves an entry to another slot and clears one only when the records it
    /// leads to lie below the log's begin address (gone); a tentative entry counts as present, which is stricter than
    /// FASTER's lookup.
    /// </summary>
    private unsafe bool SurelyAbsent(char kind, ReadOnlySpan<byte> id)
    {
        if (_indexBuckets == 0 || _disposed)
        {
            return false;
        }

        Span<byte> keyBytes = stackalloc byte[33];
        MakeKey(keyBytes, kind, id);
        long* entries = (long*)BucketOfKey(keyBytes, out ushort tag);
        if ((Volatile.Read(ref entries[FasterHashIndex.EntriesPerBucket]) & FasterHashIndex.AddressMask) != 0)
        {
            return false;
        }

        for (int e = 0; e < FasterHashIndex.EntriesPerBucket; e++)
        {
            long word = Volatile.Read(ref entries[e]);
            if (word != 0 && FasterHashIndex.TagOf(word) == tag)
            {
                return false;
            }
        }

        return true;
    }

    // Locates FASTER's index (see FasterHashIndex.TryFind); returns its bucket count, 0 when it was not found.
    private long FindIndex()
    {
        bool found = FasterHashIndex.TryFind(_kv, out nint buckets, out long count);
        _indexMask = found ? count - 1 : 0;
        _indexBuckets = found ? buckets : 0;
        return found ? count : 0;
    }

    /// <summary><see cref="SurelyAbsent(char, ReadOnlySpan{byte})"/> of an envelope record: a caller that would read it
    /// asynchronously skips the read's machinery (<see cref="GetMetaAsync"/> checks as well).</summary>
    public bool SurelyAbsent(ReadOnlySpan<byte> id) => SurelyAbsent('E', id);

    /// <summary>The address of the index bucket FASTER files the record of <paramref name="id"/> under
    /// (0 where the index was not found), and the 14-bit tag its entry carries there.</summary>
    internal nint BucketOf(ReadOnlySpan<byte> id, out ushort tag)
    {
        Span<byte> keyBytes = stackalloc byte[33];
        MakeKey(keyBytes, 'E', id);
        return BucketOfKey(keyBytes, out tag);
    }

    /// <summary>Tests: the index bucket (its number) and tag of <paramref name="id"/>'s record; two ids with both equal
    /// share one chain. (-1, tag) where the index was not found.</summary>
    internal (long Bucket, ushort Tag) SlotOf(ReadOnlySpan<byte> id)
    {
        nint bucket = BucketOf(id, out ushort tag);
        return (bucket == 0 ? -1 : (bucket - _indexBuckets) / FasterHashIndex.BucketBytes, tag);
    }

    // BucketOf for a whole key (kind and id).
    private unsafe nint BucketOfKey(ReadOnlySpan<byte> keyBytes, out ushort tag)
    {
        fixed (byte* k = keyBytes)
        {
            // The hash FASTER's upsert computes for the same key (SpanByte keys hash through SpanByteComparer): the low
            // bits pick the bucket, the top 14 are the tag.
            var key = SpanByte.FromFixedSpan(keyBytes);
            long hash = SpanByteComparer.StaticGetHashCode64(ref key);
            tag = (ushort)((ulong)hash >> 50);
            return _indexBuckets == 0 ? 0 : _indexBuckets + (nint)((hash & _indexMask) * FasterHashIndex.BucketBytes);
        }
    }

    // A record whose value is prefix ‖ envelope, assembled in a pooled buffer (FASTER takes one contiguous value).
    private static void Upsert(ClientSession<SpanByte, SpanByte, SpanByte, byte[], Empty, SpanByteFunctions_ByteArrayOutput<Empty>> session,
        char kind, ReadOnlySpan<byte> id, ReadOnlySpan<byte> prefix, ReadOnlySpan<byte> envelope)
    {
        byte[] value = System.Buffers.ArrayPool<byte>.Shared.Rent(prefix.Length + envelope.Length);
        try
        {
            prefix.CopyTo(value);
            envelope.CopyTo(value.AsSpan(prefix.Length));
            Upsert(session, kind, id, value.AsSpan(0, prefix.Length + envelope.Length));
        }
        finally
        {
            System.Buffers.ArrayPool<byte>.Shared.Return(value);
        }
    }

    /// <summary>Writer session only: drops the envelope bytes and keeps the metadata (an ack); <paramref name="meta"/>
    /// as for <see cref="Put(ReadOnlySpan{byte}, ReadOnlySpan{byte}, ReadOnlySpan{byte})"/>.</summary>
    public void DeleteBytes(ReadOnlySpan<byte> id, ReadOnlySpan<byte> meta)
    {
        Upsert(_writer, 'E', id, meta);
        if (SeparateEnvelopeRecords)
        {
            Delete('B', id);
        }
    }

    /// <summary>Metadata of an envelope (as <see cref="GetMetaAsync"/>), or none, for the store's prepare stage: on its own
    /// session (one thread at a time; it runs while the writer session applies an earlier group), waiting for a read
    /// from disk.</summary>
    public TableRead GetMetaForPrepare(ReadOnlySpan<byte> id) => GetMetaWaiting(_lookup, id);

    /// <summary>Metadata of an envelope, or null, on the writer session: for the one stage that writes the table (the
    /// apply stage, replay), while the prepare stage may be reading on its own session.</summary>
    public byte[]? GetMetaOnWriter(ReadOnlySpan<byte> id) => GetMetaWaiting(_writer, id).Value;

    private TableRead GetMetaWaiting(ClientSession<SpanByte, SpanByte, SpanByte, byte[], Empty, SpanByteFunctions_ByteArrayOutput<Empty>> session, ReadOnlySpan<byte> id)
    {
        if (SurelyAbsent('E', id))
        {
            return default;
        }

        for (int tries = 1; ; tries++)
        {
            long failures = _device.ReadFailures;
            Status status = StartRead(session, 'E', id, out byte[] output);
            bool fromDisk = status.IsPending;
            if (fromDisk)
            {
                Interlocked.Increment(ref _diskReads);
                session.CompletePendingWithOutputs(out CompletedOutputIterator<SpanByte, SpanByte, SpanByte, byte[], Empty> completed, wait: true);
                using (completed)
                {
                    (status, output) = Last(completed, status, output);
                }
            }

            if (status.Found || !ReadFailedSince(failures, fromDisk, tries))
            {
                return Outcome(status.Found ? output : null, fromDisk, failures);
            }
        }
    }

    /// <summary>Metadata of an envelope (the first <see cref="MetaLength"/> bytes; the envelope may follow), or none.</summary>
    public ValueTask<TableRead> GetMetaAsync(ReadOnlyMemory<byte> id) => ReadAsync('E', id);

    /// <summary>The envelope bytes, or none once acknowledged or expired (or when the record could not be read).</summary>
    public async ValueTask<TableRead> GetEnvelopeAsync(ReadOnlyMemory<byte> id)
    {
        TableRead record = await ReadAsync('E', id).ConfigureAwait(false);
        if (record.Value is { Length: > MetaLength } value)
        {
            return record with { Value = value[MetaLength..] };
        }

        if (record.Value is null || !SeparateEnvelopeRecords)
        {
            return record with { Value = null };
        }

        TableRead bytes = await ReadAsync('B', id).ConfigureAwait(false);
        return bytes with { Value = bytes.Value is { Length: >= 8 } b ? b[8..] : null };
    }

    /// <summary>Takes a full (index + log) fold-over checkpoint and returns its token.</summary>
    /// <remarks>
    /// FASTER's own <c>TakeFullCheckpointAsync</c> waits in <c>CompleteCheckpointAsync</c>, which re-checks the state
    /// machine in a loop without yielding whenever a phase waits for other threads to reach it; with the checkpoint
    /// running beside the apply stage that loop burned half a core for the whole ~1 s checkpoint of a streaming node
    /// (9 % of the node's CPU samples, 2026-11-29). Here a session of its own moves the state machine along every
    /// millisecond instead: the other sessions move it too, at their next operation.
    /// </remarks>
    public async Task<Guid> CheckpointAsync()
    {
        long failuresBefore = _checkpointFiles.Failures;
        if (!_kv.TryInitiateFullCheckpoint(out Guid token, CheckpointType.FoldOver))
        {
            throw new IOException($"FASTER could not start a checkpoint of '{Directory}' (another one is still running)");
        }

        _checkpointer ??= NewSession();
        var driver = _checkpointer.UnsafeContext;
        while (true)
        {
            driver.BeginUnsafe();
            try
            {
                // Marks this session's part of the current phase and moves the machine on when every session has.
                driver.Refresh();
            }
            finally
            {
                // Also when a step throws (a checkpoint file that cannot be written): no thread may stay protected.
                driver.EndUnsafe();
            }

            if (_kv.SystemState.Phase == Phase.REST)
            {
                // FASTER counts a failed checkpoint file write as done: the checkpoint is complete but not on disk.
                if (_checkpointFiles.Failures != failuresBefore)
                {
                    throw new IOException($"The envelope table checkpoint {token} was not written ({_checkpointFiles.LastFailure}); the previous checkpoint and the log are kept.");
                }

                return token;
            }

            await Task.Delay(1).ConfigureAwait(false);
        }
    }

    /// <summary>Deletes every checkpoint except <paramref name="keep"/> (after the manifest names it).</summary>
    public void DeleteCheckpointsExcept(Guid keep)
    {
        foreach (string kind in new[] { "index-checkpoints", "cpr-checkpoints" })
        {
            string root = Path.Combine(Directory, "checkpoints", kind);
            if (!System.IO.Directory.Exists(root))
            {
                continue;
            }

            foreach (string dir in System.IO.Directory.EnumerateDirectories(root))
            {
                if (Guid.TryParse(Path.GetFileName(dir), out Guid token) && token != keep)
                {
                    try
                    {
                        System.IO.Directory.Delete(dir, recursive: true);
                    }
                    catch (IOException)
                    {
                        // Housekeeping; the next checkpoint retries.
                    }
                }
            }
        }
    }

    public void Dispose()
    {
        // First: SurelyAbsent reads FASTER's index without a session, and must stop before the index goes.
        _disposed = true;
        foreach (IDisposable s in _allSessions)
        {
            s.Dispose();
        }

        _locator?.Dispose();
        FreeScanPage();

        // Before FASTER frees the page buffers that a retried write would read.
        _device.AbandonRetries();
        _kv.Dispose();
        _checkpointManager.Dispose();
        _device.Dispose();
        _readerSlots.Dispose();
    }

    private ClientSession<SpanByte, SpanByte, SpanByte, byte[], Empty, SpanByteFunctions_ByteArrayOutput<Empty>> NewSession()
    {
        var session = _kv.For(new SpanByteFunctions_ByteArrayOutput<Empty>()).NewSession<SpanByteFunctions_ByteArrayOutput<Empty>>();
        lock (_allSessions)
        {
            _allSessions.Add(session);
        }

        return session;
    }

    private static void MakeKey(Span<byte> key, char kind, ReadOnlySpan<byte> id)
    {
        key[0] = (byte)kind;
        id.CopyTo(key[1..]);
    }

    private static unsafe void Upsert(ClientSession<SpanByte, SpanByte, SpanByte, byte[], Empty, SpanByteFunctions_ByteArrayOutput<Empty>> session,
        char kind, ReadOnlySpan<byte> id, ReadOnlySpan<byte> value)
    {
        Span<byte> keyBytes = stackalloc byte[33];
        MakeKey(keyBytes, kind, id);
        fixed (byte* k = keyBytes, v = value)
        {
            var key = SpanByte.FromFixedSpan(keyBytes);
            var val = SpanByte.FromFixedSpan(value);
            Status status = session.Upsert(ref key, ref val);
            if (status.IsPending)
            {
                session.CompletePending(wait: true);
            }
        }
    }

    private unsafe void Delete(char kind, ReadOnlySpan<byte> id)
    {
        Span<byte> keyBytes = stackalloc byte[33];
        MakeKey(keyBytes, kind, id);
        fixed (byte* k = keyBytes)
        {
            var key = SpanByte.FromFixedSpan(keyBytes);
            Status status = _writer.Delete(ref key);
            if (status.IsPending)
            {
                _writer.CompletePending(wait: true);
            }
        }
    }

    /// <summary>
    /// A read on a pooled session. Waits asynchronously, both for a free session and for a read from disk, so that under
    /// overload no pool thread blocks here: the node once stalled with ~1,700 pool threads blocked behind two readers
    /// that waited synchronously for completions queued behind them.
    /// </summary>
    private async ValueTask<TableRead> ReadAsync(char kind, ReadOnlyMemory<byte> id)
    {
        if (SurelyAbsent(kind, id.Span))
        {
            return default;
        }

        await _readerSlots.WaitAsync().ConfigureAwait(false);
        if (!_readers.TryTake(out var session))
        {
            session = NewSession();
        }

        try
        {
            for (int tries = 1; ; tries++)
            {
                long begin = _kv.Log.BeginAddress;
                long failures = _device.ReadFailures;
                Status status = StartRead(session, kind, id.Span, out byte[] output);
                bool fromDisk = status.IsPending;
                if (fromDisk)
                {
                    Interlocked.Increment(ref _diskReads);
                    // Not cancellable: a session must not go back to the pool with a read still pending on it.
                    using CompletedOutputIterator<SpanByte, SpanByte, SpanByte, byte[], Empty> completed =
                        await session.CompletePendingWithOutputsAsync().ConfigureAwait(false);
                    (status, output) = Last(completed, status, output);
                }

                if (!status.Found && _kv.Log.BeginAddress != begin)
                {
                    // Compaction moved the log's begin address during this read: the read may have followed the record's
                    // old copy below it (FASTER then says not found) while the live copy is at the tail now. Read again.
                    Interlocked.Increment(ref _compactionRetries);
                    tries--;
                    continue;
                }

                if (status.Found || !ReadFailedSince(failures, fromDisk, tries))
                {
                    return Outcome(status.Found ? output : null, fromDisk, failures);
                }
            }
        }
        finally
        {
            _readers.Add(session);
            _readerSlots.Release();
        }
    }

    // How often a read that found nothing while a read of the device failed is tried in all.
    private const int ReadTries = 3;

    // After a read that found nothing: whether to read again, because a read of the device failed while it ran (it
    // may have been this one, which FASTER then takes for a record that is not there).
    private bool ReadFailedSince(long failures, bool fromDisk, int tries) =>
        fromDisk && _device.ReadFailures != failures && tries < ReadTries;

    private TableRead Outcome(byte[]? found, bool fromDisk, long failures) =>
        new(found, fromDisk, found is null && fromDisk && _device.ReadFailures != failures ? _device.LastReadFailure : null);

    /// <summary>Starts a read: found or not found at once when the record is in memory, pending when it is on disk.</summary>
    private static unsafe Status StartRead(ClientSession<SpanByte, SpanByte, SpanByte, byte[], Empty, SpanByteFunctions_ByteArrayOutput<Empty>> session, char kind, ReadOnlySpan<byte> id, out byte[] output)
    {
        Span<byte> keyBytes = stackalloc byte[33];
        MakeKey(keyBytes, kind, id);
        fixed (byte* k = keyBytes)
        {
            var key = SpanByte.FromFixedSpan(keyBytes);
            output = null!;
            return session.Read(ref key, ref output);
        }
    }

    // A session has at most one read pending (each caller completes its own before the session is used again).
    private static (Status Status, byte[] Output) Last(CompletedOutputIterator<SpanByte, SpanByte, SpanByte, byte[], Empty> completed, Status status, byte[] output)
    {
        while (completed.Next())
        {
            status = completed.Current.Status;
            output = completed.Current.Output;
        }

        return (status, output);
    }
}
