using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using FASTER.core;
using MegaNet.Core.Interop;
using Microsoft.Win32.SafeHandles;

namespace MegaNet.Store;

/// <summary>
/// A FASTER storage device for Linux whose files are opened with <c>O_DIRECT | O_DSYNC</c>: a write goes from FASTER's
/// sector-aligned page buffers to the disk and returns once the data is durable, without passing through the page
/// cache. FASTER's own managed device asks for unbuffered I/O too, but .NET on Linux drops that flag, so every byte
/// was copied into the page cache (with O_SYNC) first: in a 1,000,000-put fill that copy and the zeroing of fresh
/// cache pages took about half of all CPU time.
/// </summary>
/// <remarks>Use <see cref="TryCreate"/>: it returns null where the platform or the file system does not take direct
/// I/O (tmpfs, for one), and the caller keeps FASTER's managed device, which is just as durable.</remarks>
internal sealed partial class DirectFileDevice : StorageDeviceBase
{
    private const uint Sector = 512;
    private const int ORdWr = 0x2, OCreat = 0x40, ODsync = 0x1000, OCloexec = 0x80000;

    // I/O runs on threads of the device's own, never on the thread pool: FASTER's readers wait synchronously for their
    // reads, and under overload the pool can be full of threads blocked behind them, so a completion queued to the pool
    // would wait for thread injection (seen: 1,700 blocked pool threads, the node stalled).
    private const int IoThreads = 8;

    /// <summary>I/O threads of a checkpoint file's device (see <see cref="CheckpointFileFactory"/>): a checkpoint
    /// opens a few such devices for one burst of writes each.</summary>
    internal const int CheckpointIoThreads = 4;

    private readonly ConcurrentDictionary<int, SafeFileHandle> _segments = new();
    private readonly ConcurrentDictionary<int, SafeFileHandle> _unaligned = new();

    // Under _opening: segment files this device created whose directory has not been flushed yet (see Opened).
    private readonly HashSet<string> _unflushedNames = [];
    private readonly Lock _opening = new();
    private readonly IoQueue _io = new();
    private readonly Thread[] _workers;
    private readonly int _flags;
    private readonly bool _buffered;
    private readonly List<int> _held = [];
    private int _pending;
    private int _retrying;
    private int _abandoned;
    private long _readFailures;
    private IOException? _lastReadFailure;

    private DirectFileDevice(string filename, int directFlag, string threadName, bool buffered = false, int ioThreads = IoThreads)
        : base(filename, Sector, Devices.CAPACITY_UNSPECIFIED)
    {
        _flags = ORdWr | OCreat | ODsync | OCloexec | directFlag;
        _buffered = buffered;
        _workers = new Thread[ioThreads];
        for (int i = 0; i < _workers.Length; i++)
        {
            _workers[i] = new Thread(() =>
            {
                while (_io.Take() is { } io)
                {
                    io();
                }
            })
            { IsBackground = true, Name = threadName };
            _workers[i].Start();
        }
    }

    /// <summary>A direct-I/O device for files named <paramref name="filename"/>.N, or null where direct I/O is not
    /// available for that directory (checked by writing and reading back one aligned sector in a probe file).
    /// <paramref name="threadName"/> names its I/O threads, so that a profile tells the devices apart (Linux keeps 15
    /// characters of it).</summary>
    public static DirectFileDevice? TryCreate(string filename, string threadName = DefaultThreadName)
    {
        int direct = DirectFlagFor(Path.GetDirectoryName(Path.GetFullPath(filename))!);
        return direct == 0 ? null : new DirectFileDevice(filename, direct, threadName);
    }

    /// <summary>The I/O threads' name where the caller gives none.</summary>
    public const string DefaultThreadName = "mn-io";

    /// <summary>A direct-I/O device on a directory that <see cref="DirectFlagFor"/> already said takes it (one probe for
    /// many files).</summary>
    internal static DirectFileDevice CreateDirect(string filename, int directFlag, int ioThreads, string threadName)
    {
        DirectoryFlush.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(filename))!);
        return new DirectFileDevice(filename, directFlag, threadName, ioThreads: ioThreads);
    }

    /// <summary>The <c>O_DIRECT</c> flag to open files in <paramref name="directory"/> with (created if missing), or 0
    /// where the platform or its file system does not take direct I/O: a probe file there gets one aligned sector written
    /// and read back.</summary>
    internal static int DirectFlagFor(string directory)
    {
        // O_DIRECT's value differs between architectures; elsewhere stay with the managed device.
        int direct = RuntimeInformation.ProcessArchitecture switch
        {
            Architecture.X64 or Architecture.X86 => 0x4000,
            Architecture.Arm64 or Architecture.Arm => 0x10000,
            _ => 0,
        };
        if (!OperatingSystem.IsLinux() || direct == 0)
        {
            return 0;
        }

        DirectoryFlush.CreateDirectory(directory);
        string probe = Path.Combine(directory, ".direct-io-probe");
        try
        {
            using SafeFileHandle handle = Open(probe, ORdWr | OCreat | ODsync | OCloexec | direct);
            unsafe
            {
                byte* buffer = (byte*)NativeMemory.AlignedAlloc(Sector, Sector);
                try
                {
                    var span = new Span<byte>(buffer, (int)Sector);
                    span.Fill(0x5A);
                    RandomAccess.Write(handle, span, Sector);
                    span.Clear();
                    if (RandomAccess.Read(handle, span, Sector) != Sector || span[^1] != 0x5A)
                    {
                        return 0;
                    }
                }
                finally
                {
                    NativeMemory.AlignedFree(buffer);
                }
            }
        }
        catch (IOException)
        {
            return 0;
        }
        finally
        {
            File.Delete(probe);
        }

        return direct;
    }

    /// <summary>The same device without direct I/O (the page cache, written through), on any OS and file system: for
    /// where <see cref="TryCreate"/> says no and <see cref="DeferRemovals"/> is still needed.</summary>
    public static DirectFileDevice CreateBuffered(string filename, string threadName = DefaultThreadName) => CreateBuffered(filename, IoThreads, threadName);

    /// <summary><see cref="CreateBuffered(string, string)"/> with <paramref name="ioThreads"/> I/O threads.</summary>
    public static DirectFileDevice CreateBuffered(string filename, int ioThreads, string threadName)
    {
        DirectoryFlush.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(filename))!);
        return new DirectFileDevice(filename, 0, threadName, buffered: true, ioThreads);
    }

    /// <summary>True when the files are opened with <c>O_DIRECT</c> (false for <see cref="CreateBuffered(string, string)"/>).</summary>
    public bool IsDirect => !_buffered;

    /// <summary>
    /// When set, segments FASTER removes stay on disk until <see cref="RemoveHeldSegments"/>. FASTER deletes the table's
    /// segments below a compacted begin address while it commits the next checkpoint, before the store's manifest names
    /// that checkpoint: a crash in between recovered the old checkpoint, whose records were in those segments.
    /// </summary>
    public bool DeferRemovals { get; set; }

    /// <summary>Deletes the segments held back since the last call (the checkpoint that no longer needs them is the
    /// one the manifest names now).</summary>
    public void RemoveHeldSegments()
    {
        int[] held;
        lock (_held)
        {
            held = [.. _held];
            _held.Clear();
        }

        foreach (int segment in held)
        {
            Remove(segment);
        }
    }

    /// <summary>
    /// When set, a failed write is retried (after 10 ms, doubling to 2 s) until it succeeds or the device is disposed,
    /// and each failure is reported to <see cref="WriteFailed"/>. For the envelope table: FASTER 2.6.5 neither retries a
    /// failed page flush nor reports it, and never again advances its flushed address, so one failed write (a moment of
    /// a full disk) left every later checkpoint and, once memory filled, every put waiting forever without an error.
    /// Not for the write-ahead log, whose commits check their own records and must fail rather than wait.
    /// </summary>
    public bool RetryFailedWrites { get; set; }

    /// <summary>A write failed and will be retried (see <see cref="RetryFailedWrites"/>); on an I/O thread.</summary>
    public event Action<IOException>? WriteFailed;

    /// <summary>Tests: when it returns true, a write fails as on a full disk (errno 28) before reaching the file.</summary>
    internal Func<bool>? FailWriteForTests { get; set; }

    /// <summary>
    /// Reads that failed (an error of the OS, such as <c>EIO</c> or <c>EMFILE</c>, not of the data) since the device was
    /// made. FASTER takes such a read for a record that is not there, so a reader that must tell the two apart compares
    /// the count before and after its read; <see cref="LastReadFailure"/> says what failed.
    /// </summary>
    public long ReadFailures => Interlocked.Read(ref _readFailures);

    /// <summary>The error of the latest failed read (see <see cref="ReadFailures"/>); null while none failed.</summary>
    public IOException? LastReadFailure => Volatile.Read(ref _lastReadFailure);

    /// <summary>Tests: when it returns true for a read's offset in its segment file, the read fails with
    /// <see cref="FailReadErrnoForTests"/> before reaching the file.</summary>
    internal Func<ulong, bool>? FailReadForTests { get; set; }

    /// <summary>Tests: the error of a read <see cref="FailReadForTests"/> fails: 24 (<c>EMFILE</c>, too many open files, a
    /// reason that may pass) by default, or 5 (<c>EIO</c>, the device's own error).</summary>
    internal int FailReadErrnoForTests { get; set; } = Emfile;

    private const int Eio = 5, Enxio = 6, Emfile = 24;

    /// <summary>Whether <paramref name="failure"/> is the device's own error (<c>EIO</c>, <c>ENXIO</c>): a bad sector, or
    /// a device gone, which reading again does not mend, unlike running out of open files or memory.</summary>
    public static bool IsDeviceError(IOException failure) => (failure.HResult & 0xFFFF) is Eio or Enxio;

    /// <inheritdoc />
    public override void WriteAsync(IntPtr sourceAddress, int segmentId, ulong destinationAddress, uint numBytesToWrite, DeviceIOCompletionCallback callback, object context)
    {
        HandleCapacity(segmentId);
        Interlocked.Increment(ref _pending);
        // The write blocks until the data is on disk: off the caller's thread, as FASTER expects of an async device.
        Queue(() => Write(sourceAddress, segmentId, destinationAddress, numBytesToWrite, callback, context, 0));
    }

    /// <summary>Drops the writes waiting to be retried and waits for a retry under way: call before FASTER frees the
    /// buffers they read (the write they stand for fails for good; what is acknowledged is in the write-ahead log).</summary>
    public void AbandonRetries()
    {
        // A full fence between setting the flag and reading the count (a plain volatile store then load may be
        // reordered): a retry either sees the flag, or is counted here before it reads the buffer.
        Interlocked.Exchange(ref _abandoned, 1);
        SpinWait spin = default;
        while (Volatile.Read(ref _retrying) != 0)
        {
            spin.SpinOnce();
        }
    }

    // FASTER keeps the source buffer until the callback (the page cannot be evicted before its flush completes), so a
    // retry may read it again later, unless the retries were abandoned.
    private void Write(IntPtr sourceAddress, int segmentId, ulong destinationAddress, uint numBytesToWrite, DeviceIOCompletionCallback callback, object context, int attempt)
    {
        if (attempt == 0)
        {
            WriteOnce(sourceAddress, segmentId, destinationAddress, numBytesToWrite, callback, context, attempt);
            return;
        }

        Interlocked.Increment(ref _retrying);
        try
        {
            if (Volatile.Read(ref _abandoned) != 0)
            {
                Interlocked.Decrement(ref _pending);
                return;
            }

            WriteOnce(sourceAddress, segmentId, destinationAddress, numBytesToWrite, callback, context, attempt);
        }
        finally
        {
            Interlocked.Decrement(ref _retrying);
        }
    }

    private unsafe void WriteOnce(IntPtr sourceAddress, int segmentId, ulong destinationAddress, uint numBytesToWrite, DeviceIOCompletionCallback callback, object context, int attempt)
    {
        uint error = 0;
        try
        {
            if (FailWriteForTests?.Invoke() == true)
            {
                throw new IOException("No space left on device (injected)", 28);
            }

            RandomAccess.Write(Segment(segmentId, sourceAddress, numBytesToWrite, destinationAddress), new ReadOnlySpan<byte>((void*)sourceAddress, (int)numBytesToWrite), (long)destinationAddress);
        }
        catch (Exception e)
        {
            error = ErrorCode(e);
            if (RetryFailedWrites)
            {
                WriteFailed?.Invoke(e as IOException ?? new IOException(e.Message, e));
                TimeSpan wait = TimeSpan.FromMilliseconds(Math.Min(2000, 10 << Math.Min(attempt, 8)));
                _ = Task.Delay(wait).ContinueWith(
                    _ =>
                    {
                        try
                        {
                            _io.Add(() => Write(sourceAddress, segmentId, destinationAddress, numBytesToWrite, callback, context, attempt + 1));
                        }
                        catch (ObjectDisposedException)
                        {
                            // Disposed while waiting: FASTER is gone, so no callback.
                            Interlocked.Decrement(ref _pending);
                        }
                    },
                    TaskScheduler.Default);
                return;
            }

            numBytesToWrite = 0;
        }

        Interlocked.Decrement(ref _pending);
        callback(error, numBytesToWrite, context);
    }

    /// <inheritdoc />
    public override unsafe void ReadAsync(int segmentId, ulong sourceAddress, IntPtr destinationAddress, uint readLength, DeviceIOCompletionCallback callback, object context)
    {
        Interlocked.Increment(ref _pending);
        Queue(() =>
        {
            uint error = 0, read = 0;
            try
            {
                if (FailReadForTests?.Invoke(sourceAddress) == true)
                {
                    string what = FailReadErrnoForTests == Eio ? "Input/output error" : "Too many open files";
                    throw new IOException($"{what} (injected) : '{GetSegmentFilename(FileName, segmentId)}'", FailReadErrnoForTests);
                }

                read = (uint)RandomAccess.Read(Segment(segmentId, destinationAddress, readLength, sourceAddress), new Span<byte>((void*)destinationAddress, (int)readLength), (long)sourceAddress);
            }
            catch (Exception e)
            {
                error = ErrorCode(e);
                // FASTER 2.6.5 only logs the error and parses the buffer anyway: zeros read as no record at all, where
                // the buffer's last contents (it is pooled) could read as some other record, or an older one of this key.
                new Span<byte>((void*)destinationAddress, (int)readLength).Clear();
                Volatile.Write(ref _lastReadFailure, e as IOException ?? new IOException(e.Message, e));
                Interlocked.Increment(ref _readFailures);
            }

            Interlocked.Decrement(ref _pending);
            callback(error, read, context);
        });
    }

    /// <summary>
    /// Reads <paramref name="destination"/> from segment <paramref name="segmentId"/> at <paramref name="offset"/> on the
    /// calling thread, for the table's own compaction scan (<see cref="EnvelopeKv.Compact"/>): unlike
    /// <see cref="ReadAsync"/> the error is thrown to the caller, who decides what it means, and not counted in
    /// <see cref="ReadFailures"/> (no FASTER read took the zeros). Returns the bytes read (fewer at the file's end).
    /// </summary>
    internal unsafe int ReadSegment(int segmentId, long offset, Span<byte> destination)
    {
        if (FailReadForTests?.Invoke((ulong)offset) == true)
        {
            string what = FailReadErrnoForTests == Eio ? "Input/output error" : "Too many open files";
            throw new IOException($"{what} (injected) : '{GetSegmentFilename(FileName, segmentId)}'", FailReadErrnoForTests);
        }

        fixed (byte* buffer = destination)
        {
            return RandomAccess.Read(Segment(segmentId, (IntPtr)buffer, (uint)destination.Length, (ulong)offset), destination, offset);
        }
    }

    /// <inheritdoc />
    public override void RemoveSegment(int segment)
    {
        if (DeferRemovals)
        {
            lock (_held)
            {
                _held.Add(segment);
            }

            return;
        }

        Remove(segment);
    }

    private void Remove(int segment)
    {
        if (_segments.TryRemove(segment, out SafeFileHandle? handle))
        {
            handle.Dispose();
        }

        if (_unaligned.TryRemove(segment, out SafeFileHandle? unaligned))
        {
            unaligned.Dispose();
        }

        File.Delete(GetSegmentFilename(FileName, segment));
    }

    /// <inheritdoc />
    public override void RemoveSegmentAsync(int segment, AsyncCallback callback, IAsyncResult result)
    {
        RemoveSegment(segment);
        callback(result);
    }

    /// <inheritdoc />
    public override long GetFileSize(int segment) => segmentSize > 0 ? segmentSize : RandomAccess.GetLength(Segment(segment));

    /// <inheritdoc />
    public override bool TryComplete() => Volatile.Read(ref _pending) == 0;

    /// <inheritdoc />
    public override void Dispose()
    {
        if (_io.Complete())
        {
            foreach (Thread worker in _workers)
            {
                // Not itself: a completion callback on an I/O thread may be what disposes the device.
                if (worker != Thread.CurrentThread)
                {
                    worker.Join();
                }
            }
        }

        foreach (SafeFileHandle handle in _segments.Values.Concat(_unaligned.Values))
        {
            handle.Dispose();
        }

        _segments.Clear();
        _unaligned.Clear();
    }

    // A request refused by a disposed device was never pending: TryComplete must not wait for it forever.
    private void Queue(Action io)
    {
        try
        {
            _io.Add(io);
        }
        catch (ObjectDisposedException)
        {
            Interlocked.Decrement(ref _pending);
            throw;
        }
    }

    private SafeFileHandle Segment(int segmentId) =>
        _segments.TryGetValue(segmentId, out SafeFileHandle? handle) ? handle : Opened(_segments, segmentId, path => _buffered ? OpenBuffered(path) : Open(path, _flags));

    /// <summary>
    /// Opens segment <paramref name="segmentId"/> into <paramref name="handles"/>, one opener at a time (two I/O threads
    /// must not both open it, nor one write to it before the other has flushed its name). A segment this device created
    /// has its directory flushed before any write to it can complete: written through (<c>O_DSYNC</c>), its contents are
    /// on the disk, but its name only once the directory is too, and a crash of the machine could otherwise take a
    /// segment of acknowledged records (or a checkpoint file the manifest names) with it. A flush that failed is tried
    /// again by the next opener (the name is remembered until one succeeds).
    /// </summary>
    private SafeFileHandle Opened(ConcurrentDictionary<int, SafeFileHandle> handles, int segmentId, Func<string, SafeFileHandle> open)
    {
        lock (_opening)
        {
            if (handles.TryGetValue(segmentId, out SafeFileHandle? handle))
            {
                return handle;
            }

            string path = GetSegmentFilename(FileName, segmentId);
            if (!File.Exists(path))
            {
                _unflushedNames.Add(path);
            }

            handle = open(path);
            if (_unflushedNames.Contains(path))
            {
                try
                {
                    DirectoryFlush.Flush(Path.GetDirectoryName(Path.GetFullPath(path))!);
                }
                catch
                {
                    handle.Dispose();
                    throw;
                }

                _unflushedNames.Remove(path);
            }

            handles[segmentId] = handle;
            return handle;
        }
    }

    // Direct I/O takes only sector-aligned buffers, lengths and offsets (anything else fails with EINVAL). FASTER aligns
    // its page flushes and checkpoint files (it writes them unbuffered on Windows), but a request that is not aligned
    // goes through the page cache on a second handle of the same file (written through, so as durable) instead of
    // failing; Linux keeps the two coherent (a direct write drops the cached pages it overlaps).
    private SafeFileHandle Segment(int segmentId, IntPtr buffer, uint length, ulong offset) =>
        _buffered || (((ulong)buffer | length | offset) & (Sector - 1)) == 0
            ? Segment(segmentId)
            : _unaligned.TryGetValue(segmentId, out SafeFileHandle? handle) ? handle : Opened(_unaligned, segmentId, OpenBuffered);

    private static SafeFileHandle OpenBuffered(string path)
    {
        // File.OpenHandle takes no mode: a file it created had the umask's (0644 as a rule), readable by any local user.
        PrivateFile.CreateIfMissing(path);
        return File.OpenHandle(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.ReadWrite | FileShare.Delete, FileOptions.WriteThrough);
    }

    private static SafeFileHandle Open(string path, int flags)
    {
        int fd = NativeOpen(path, flags, Convert.ToInt32("600", 8)); // owner-only, as the data directory
        if (fd < 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            throw new IOException($"Cannot open '{path}' for direct I/O: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno}).", errno);
        }

        return new SafeFileHandle(fd, ownsHandle: true);
    }

    // FASTER only distinguishes success (0) from failure; keep the OS error where there is one, for its log.
    private static uint ErrorCode(Exception e) => e is IOException { HResult: var h } && (h & 0xFFFF) != 0 ? (uint)(h & 0xFFFF) : uint.MaxValue;

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int NativeOpen(string path, int flags, int mode);

    /// <summary>
    /// The I/O threads' queue. Not a <see cref="BlockingCollection{T}"/>: its <c>Take</c> waits in a
    /// <see cref="SemaphoreSlim"/>, which spins (about 140 rounds, most of them <c>sched_yield</c>) before it blocks, on
    /// each of the sixteen threads of the two devices after every request; at 1,000 unary submissions/s that spinning
    /// was 12 % of the node's CPU samples. Here an idle thread blocks at once in <see cref="Monitor.Wait(object)"/>.
    /// </summary>
    private sealed class IoQueue
    {
        private readonly Queue<Action> _items = new();
        private bool _completed;

        /// <summary>Queues <paramref name="io"/> for one I/O thread; throws once <see cref="Complete"/> ran.</summary>
        public void Add(Action io)
        {
            lock (_items)
            {
                ObjectDisposedException.ThrowIf(_completed, this);
                _items.Enqueue(io);
                Monitor.Pulse(_items);
            }
        }

        /// <summary>The next request, waiting for one; null once the queue is completed and empty.</summary>
        public Action? Take()
        {
            lock (_items)
            {
                while (_items.Count == 0)
                {
                    if (_completed)
                    {
                        return null;
                    }

                    WaitForItem();
                }

                return _items.Dequeue();
            }
        }

        /// <summary>Blocks (holding the lock, as <see cref="Take"/> does) until <see cref="Add"/> or
        /// <see cref="Complete"/> pulses. A method of its own, never inlined, and named for what it does: the profiler's
        /// summary tells an idle thread from a busy one by its innermost method (TraceSummary.IsWait), and with
        /// Monitor.Wait's wrappers inlined into Take that was Take, so the idle I/O threads were ranked as 99 % of a
        /// node's work.</summary>
        [MethodImpl(MethodImplOptions.NoInlining)]
        private void WaitForItem() => Monitor.Wait(_items);

        /// <summary>Stops new requests; the threads finish the queued ones and end. False when already completed.</summary>
        public bool Complete()
        {
            lock (_items)
            {
                if (_completed)
                {
                    return false;
                }

                _completed = true;
                Monitor.PulseAll(_items);
                return true;
            }
        }
    }
}
