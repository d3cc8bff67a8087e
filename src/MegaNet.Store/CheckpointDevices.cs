using FASTER.core;
using MegaNet.Core.Interop;

namespace MegaNet.Store;

/// <summary>
/// FASTER's device factory for the envelope table's checkpoint files, recording every failed write. FASTER 2.6.5 only
/// logs a failed write of a checkpoint's index (<c>ht.dat</c>) or metadata (<c>info.dat</c>) and counts it as done, so
/// a checkpoint whose files never reached the disk (a full disk, an I/O error) still reported success; the store then
/// named it in its manifest, deleted the good checkpoint before it and truncated the write-ahead log, and after a
/// restart the envelopes were gone or the store would not open. <see cref="Failures"/> lets the store refuse such a
/// checkpoint instead.
/// </summary>
internal sealed class CheckpointDeviceFactory(INamedDeviceFactory inner) : INamedDeviceFactory
{
    private long _failures;
    private string? _lastFailure;

    /// <summary>Failed writes so far (compare before and after a checkpoint).</summary>
    public long Failures => Interlocked.Read(ref _failures);

    /// <summary>The newest failed write, for the error message.</summary>
    public string? LastFailure => Volatile.Read(ref _lastFailure);

    /// <inheritdoc />
    public void Initialize(string baseName) => inner.Initialize(baseName);

    /// <inheritdoc />
    public IDevice Get(FileDescriptor fileInfo) =>
        new ErrorRecordingDevice(inner.Get(fileInfo), $"{fileInfo.directoryName}/{fileInfo.fileName}", this);

    /// <inheritdoc />
    public IEnumerable<FileDescriptor> ListContents(string path) => inner.ListContents(path);

    /// <inheritdoc />
    public void Delete(FileDescriptor fileInfo) => inner.Delete(fileInfo);

    private void Record(string file, uint errorCode)
    {
        Volatile.Write(ref _lastFailure, $"writing {file} failed with error {errorCode}{(errorCode == 28 ? " (no space left on device)" : string.Empty)}");
        Interlocked.Increment(ref _failures);
    }

    /// <summary>The device FASTER asked for, with write completions watched for errors (reads are passed through: a
    /// failed read already fails the recovery that made it).</summary>
    private sealed class ErrorRecordingDevice(IDevice device, string file, CheckpointDeviceFactory owner) : IDevice
    {
        public uint SectorSize => device.SectorSize;

        public string FileName => device.FileName;

        public long Capacity => device.Capacity;

        public long SegmentSize => device.SegmentSize;

        public int StartSegment => device.StartSegment;

        public int EndSegment => device.EndSegment;

        public int ThrottleLimit
        {
            get => device.ThrottleLimit;
            set => device.ThrottleLimit = value;
        }

        public void Initialize(long segmentSize, LightEpoch? epoch = null, bool omitSegmentIdFromFilename = false) =>
            device.Initialize(segmentSize, epoch, omitSegmentIdFromFilename);

        public bool TryComplete() => device.TryComplete();

        public bool Throttle() => device.Throttle();

        public void WriteAsync(IntPtr sourceAddress, int segmentId, ulong destinationAddress, uint numBytesToWrite, DeviceIOCompletionCallback callback, object context) =>
            device.WriteAsync(sourceAddress, segmentId, destinationAddress, numBytesToWrite, Watch(callback), context);

        public void WriteAsync(IntPtr alignedSourceAddress, ulong alignedDestinationAddress, uint numBytesToWrite, DeviceIOCompletionCallback callback, object context) =>
            device.WriteAsync(alignedSourceAddress, alignedDestinationAddress, numBytesToWrite, Watch(callback), context);

        public void ReadAsync(int segmentId, ulong sourceAddress, IntPtr destinationAddress, uint readLength, DeviceIOCompletionCallback callback, object context) =>
            device.ReadAsync(segmentId, sourceAddress, destinationAddress, readLength, callback, context);

        public void ReadAsync(ulong alignedSourceAddress, IntPtr alignedDestinationAddress, uint alignedReadLength, DeviceIOCompletionCallback callback, object context) =>
            device.ReadAsync(alignedSourceAddress, alignedDestinationAddress, alignedReadLength, callback, context);

        public void TruncateUntilAddressAsync(long toAddress, AsyncCallback callback, IAsyncResult result) => device.TruncateUntilAddressAsync(toAddress, callback, result);

        public void TruncateUntilAddress(long toAddress) => device.TruncateUntilAddress(toAddress);

        public void TruncateUntilSegmentAsync(int toSegment, AsyncCallback callback, IAsyncResult result) => device.TruncateUntilSegmentAsync(toSegment, callback, result);

        public void TruncateUntilSegment(int toSegment) => device.TruncateUntilSegment(toSegment);

        public void RemoveSegmentAsync(int segment, AsyncCallback callback, IAsyncResult result) => device.RemoveSegmentAsync(segment, callback, result);

        public void RemoveSegment(int segment) => device.RemoveSegment(segment);

        public long GetFileSize(int segment) => device.GetFileSize(segment);

        public void Reset() => device.Reset();

        public void Dispose() => device.Dispose();

        private DeviceIOCompletionCallback Watch(DeviceIOCompletionCallback callback) => (errorCode, numBytes, context) =>
        {
            if (errorCode != 0)
            {
                owner.Record(file, errorCode);
            }

            callback(errorCode, numBytes, context);
        };
    }
}

/// <summary>
/// The envelope table's checkpoint files (its index, <c>ht.dat</c>, and metadata, <c>info.dat</c>) on <see cref="DirectFileDevice"/>s,
/// under FASTER's file names, on I/O threads of the device's own: with direct I/O where the file system takes it (as
/// the table's log), else through the page cache, and to the disk before each write completes, as with FASTER's
/// <see cref="LocalStorageNamedDeviceFactory"/>.
/// </summary>
/// <remarks>
/// Own threads: FASTER's local device writes through asynchronous file streams, which on Linux run each write
/// synchronously on a thread-pool thread: a checkpoint's index writes held the two-core pool's threads in <c>pwrite</c>
/// for over half a second, until the pool injected more, and the write-ahead log's commits, whose completions also run
/// on the pool, waited behind them (streaming 300,000 envelopes, commits stalled 530-650 ms in 3 of 10 runs, 2026-11-30;
/// docs/store.md). Direct I/O: through the page cache, each checkpoint copied the whole index (32 MiB at the default
/// memory budget) into freshly allocated cache pages, 1.8-2.3 % of the node's CPU samples while streaming (2026-12-01).
/// </remarks>
internal sealed class CheckpointFileFactory : INamedDeviceFactory
{
    // Listing and deleting stay FASTER's (they touch no device).
    private readonly LocalStorageNamedDeviceFactory _files = new();
    private string _baseName = string.Empty;
    private int _direct;

    /// <inheritdoc />
    public void Initialize(string baseName)
    {
        _baseName = baseName;
        _files.Initialize(baseName);
        // One probe of the file system for all the checkpoints to come (each gets a directory of its own).
        _direct = DirectFileDevice.DirectFlagFor(baseName);
    }

    /// <inheritdoc />
    public IDevice Get(FileDescriptor fileInfo)
    {
        string path = Path.Combine(_baseName, fileInfo.directoryName, fileInfo.fileName);
        // Made here without flushing the new folder's name: this runs on the store's committer as a checkpoint begins,
        // and a directory flush there held the puts behind it. The store flushes the checkpoint folders before its
        // manifest names the checkpoint; the files inside flush their own names as they are created. Owner-only, as
        // the store's other directories: the checkpoint holds the table.
        PrivateFile.CreateDirectory(Path.GetDirectoryName(path)!, flush: false);
        return _direct != 0
            ? DirectFileDevice.CreateDirect(path, _direct, DirectFileDevice.CheckpointIoThreads, "mn-io-ckpt")
            : DirectFileDevice.CreateBuffered(path, DirectFileDevice.CheckpointIoThreads, "mn-io-ckpt");
    }

    /// <inheritdoc />
    public IEnumerable<FileDescriptor> ListContents(string path) => _files.ListContents(path);

    /// <inheritdoc />
    public void Delete(FileDescriptor fileInfo) => _files.Delete(fileInfo);
}
