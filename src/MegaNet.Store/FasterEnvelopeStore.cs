using System.Buffers;
using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Threading.Channels;
using FASTER.core;
using MegaNet.Core.Diagnostics;
using MegaNet.Core.Interop;
using MegaNet.Core.Threading;
using MegaNet.Core.Transparency;
using Microsoft.Win32.SafeHandles;
using NSec.Cryptography;

namespace MegaNet.Store;

/// <summary>
/// The node's store on FASTER: a <see cref="FasterLog"/> write-ahead log and a FasterKV envelope table
/// (<see cref="EnvelopeKv"/>). Every put and ack is one log record; a single committer task gathers concurrent requests
/// and commits them together (group commit), and only then applies them to the table and the in-memory indexes and
/// answers. A committed record is the durability point: after <c>kill -9</c> FasterLog comes back with exactly the
/// committed records, FasterKV as of its last checkpoint, and the store replays the log after that checkpoint.
/// On a timer and at shutdown the committer sweeps expired mail, compacts the table when it has grown, checkpoints it
/// with a manifest of the in-memory indexes, and truncates the log the checkpoint covers. The timer runs while no
/// request arrives too: the idle committer wakes (at most every second) to finish a checkpoint written meanwhile and to
/// take a due one, unless nothing changed and no mail expired since the last.
/// </summary>
public sealed class FasterEnvelopeStore : IEnvelopeStore
{
    private const byte PutRecord = 1;
    private const byte AckRecord = 2;
    private const int PutHeader = 1 + 32 + 32 + 8 + 8 + 8;

    // Groups smaller than this mean light load: the next group skips the commit window.
    private const int LightGroup = 64;

    // Most puts and acks in one group (a request carrying a slice of PutManyAsync counts for its items).
    private const int MaxGroup = 8192;

    // Most puts of one PutManyAsync call in one request: a larger call becomes several, so a group stays near MaxGroup.
    internal const int PutSlice = 1024;

    // Longest sleep between looks at the queue while a group fills (the kernel adds its timer slack, 50 µs on Linux).
    private const int WindowSliceMicroseconds = 100;

    private readonly StoreOptions _options;
    private readonly IDevice _device;
    private readonly CommitSlotFile _commitFile;
    private readonly FileStream _lockFile;
    private readonly IDisposable[] _metricSources;
    private readonly FasterLog _log;
    private readonly Channel<Request> _requests = Channel.CreateBounded<Request>(new BoundedChannelOptions(65_536) { SingleReader = true });
    private Task? _committer;
    private readonly object _state = new();
    private readonly ListPool<(Request Request, int Item, Stored Stored, bool IsNew)> _groupLists = new(4);
    private readonly EnvelopeKv _kv;
    private readonly Dictionary<Key32, Mailbox> _mailboxes = [];
    private readonly MerkleLog _merkle;

    // What the mailboxes at least MailboxReportedFromPercent full hold (ReportedUsage): written under the index lock
    // (NoteUsage), read without it, per envelope, by admission. Most mailboxes are far from their quotas, so the table
    // is small and usually empty, which the count says without a lookup (ConcurrentDictionary.IsEmpty takes every lock
    // when it is). A mailbox's Reported flag says whether it is in the table, so the others cost no table access.
    private readonly ConcurrentDictionary<Key32, MailboxUsage> _reported = new();
    private int _reportedCount;
    private readonly int _reportFromCount;
    private readonly long _reportFromBytes;
    private readonly byte[] _nodePublicKey;

    // Replaced whole by the apply stage (and replay) after the tree grew; read without the index lock.
    private volatile SignedTreeHead _head;
    private int _disposed;

    // Set when a commit fails (full disk, device error). Records of the failed group may or may not be on disk, so
    // appending more would break the log's index sequence: the store refuses writes until it is reopened, and the
    // reopen replays exactly what reached the disk.
    private volatile Exception? _fault;

    // Completed at the table's first failed write: an open whose replay waits on such a write (retried until there is
    // room) fails at once instead of waiting without a word.
    private readonly TaskCompletionSource _tableWriteFailed = new(TaskCreationOptions.RunContinuationsAsynchronously);

    // Why the committer took no checkpoint at shutdown (set before it ends; DisposeAsync reads it after awaiting it).
    private Exception? _noFinalCheckpoint;
    private long _lastCheckpoint = Stopwatch.GetTimestamp();
    private long _savedLeaves;

    // Hashes at MerkleLog.KeptLevel that level8.bin holds as the last manifest counts them (0 after an open that could
    // not use it: the next checkpoint writes it whole).
    private long _savedKept;
    private long _checkpointedWal;

    // The chunks the live index entries of the checkpoint being written are copied into, how many entries they hold, and
    // more chunks on their way with the entries those will add (see SnapshotBuffer). Committer loop only.
    private readonly List<IndexEntry[]> _snapshotChunks = [];
    private readonly int _snapshotChunkEntries;
    private long _snapshotCapacity;
    private readonly List<Task<IndexEntry[][]>> _snapshotChunksComing = [];
    private long _snapshotCapacityComing;

    // The live entries the last snapshot copied, and whether this checkpoint interval's halfway look at the buffer
    // was taken (see GrowSnapshotBufferAhead). Committer loop only.
    private int _lastSnapshotEntries;
    private long _lastSnapshotWal;
    private bool _snapshotBufferChecked;

    // A checkpoint being written while the committer goes on (committer loop only; see StartCheckpoint).
    private Task<CheckpointSnapshot>? _writing;

    // Records a compaction step between groups looks at: each needs an index check, and the few the index does not
    // settle a read (from disk, about 20 µs each here), so a step holds writes a few milliseconds, plus about 10 ms when
    // it starts a page (a 4 MiB read and its parse). Whole pages held writes 40-140 ms each (perf/MegaNet.StoreFill churn).
    private const int CompactionStepRecords = 256;

    // A compaction under way, run a step at a time between groups (committer loop only; see CompactStep), and the
    // timestamp before which the loop runs no next step of it (the steps take at most half the committer's time).
    private CompactionRun? _compaction;
    private long _nextCompactionStep;

    // As of the last snapshot (committer loop only): the newest group it covers, and the earliest expiry among the
    // entries it kept (not known before the first: mail replayed at open may have expired while the node was down).
    // An idle committer takes no checkpoint while neither changed (see IdleHousekeeping).
    private long _snapshotGeneration;
    private long _snapshotEarliestExpiry = long.MinValue;

    // A put refused for MaxHeldBytes since the last snapshot (committer loop only): expired mail counts against the cap
    // until a sweep, so with some of it expired the sweep is due at once (see CheckpointDue), not at the next interval.
    private bool _refusedForCapSinceSnapshot;
    private long _liveBytes;

    // Prepare-stage state, touched only by the committer loop: the decisions of groups that are committing or applying
    // but not applied yet, so that the next group's duplicate, quota and sequence decisions see them.
    private readonly Dictionary<Key32, (Stored Stored, long Generation)> _pendingIds = [];
    private readonly Dictionary<Key32, (int Count, long Bytes, long Generation)> _pendingUsage = [];
    private readonly Queue<(long Generation, List<Key32> Ids, List<Key32> Recipients, long PutBytes)> _pendingByGeneration = new();

    // What the store holds once the groups in flight and the one being prepared are applied, for MaxHeldBytes (committer
    // loop only): read at each group's start as _liveBytes plus the put bytes of the groups the apply stage had not added
    // to it (after _liveGeneration), then grown by each put taken.
    private long _heldForPrepare;

    // The newest group whose puts _liveBytes counts (written with it, under the index lock, by the apply stage).
    private long _liveGeneration;

    // Ids of applied groups, kept in _pendingIds a while longer (the newest RetainedIds of them, about 50 ms of
    // streaming) for puts whose caller looked them up before that group was applied (see PutRequest.NotFoundAtMark);
    // every group up to _idsForgottenThrough has left _pendingIds. Committer loop only. Streaming 300,000 envelopes,
    // 4,096 still covered every put's mark, and 16,384 made _pendingIds' lookups miss the cache more (2.4 % of the
    // CPU samples against 1.6 %).
    internal const int RetainedIds = 4_096;
    private readonly Queue<(long Generation, List<Key32> Ids)> _retainedIds = new();
    private int _retainedIdCount;
    private long _idsForgottenThrough;

    // Committer only (Prepare): the mailbox usage read for one group; and the id and recipient lists of applied groups,
    // reused instead of made per group.
    private readonly Dictionary<Key32, (int Count, long Bytes)> _baseUsage = [];
    private readonly ListPool<Key32> _keyLists = new(64);
    private long _generation;
    private long _nextLogIndex;

    // Written by the apply stage after a group's table writes and index updates; read by the prepare stage.
    private long _appliedGeneration;

    // Marks up to this one do not settle a put (PutRequest.NotFoundAtMark): a FindAsync read the table's disk and found
    // nothing since, which damage or a failed read can cause too (see PreparePut).
    private long _marksUnsureThrough = -1;

    // Free bytes on the store's file system as last read, and when (Stopwatch ticks) to read them again (DiskSpaceLow).
    private long _freeDiskBytes = long.MaxValue;
    private long _nextDiskCheck;

    private FasterEnvelopeStore(StoreOptions options, IDevice device, CommitSlotFile commitFile, FasterLog log, EnvelopeKv kv, FileStream lockFile)
    {
        _options = options;
        _snapshotChunkEntries = options.SnapshotChunkEntriesForTests > 0 ? options.SnapshotChunkEntriesForTests : SnapshotChunkEntries;
        _lockFile = lockFile;
        _device = device;
        _commitFile = commitFile;
        _log = log;
        _kv = kv;
        _merkle = new MerkleLog(StoreDirectory);
        _nodePublicKey = options.NodeSecretKey.AsSpan(32, 32).ToArray();
        // Integers, as admission compares them: a mailbox is reported once 100 x held >= percent x quota.
        _reportFromCount = (int)Math.Max(1, CeilingPercent(options.MailboxReportedFromPercent, options.MailboxMaxCount));
        _reportFromBytes = Math.Max(1, CeilingPercent(options.MailboxReportedFromPercent, options.MailboxMaxBytes));
        // The table retries a failed write until it succeeds (see DirectFileDevice.RetryFailedWrites); meanwhile its
        // flushes, checkpoints and, once memory fills, puts wait. Refuse writes from the first failure, with its reason,
        // instead of letting callers wait without one.
        kv.TableWriteFailed += e =>
        {
            Interlocked.CompareExchange(ref _fault,
                new IOException($"Writing the envelope table in '{kv.Directory}' failed ({e.Message}); the write is retried, and everything acknowledged is in the write-ahead log.", e), null);
            _tableWriteFailed.TrySetResult();
        };
        kv.RetryFailedWrites = true;
        _head = SignHead();
        _metricSources = [MegaNetMetrics.ObserveLogSize(() => TreeSize), MegaNetMetrics.ObserveTableDiskReads(() => TableDiskReads), MegaNetMetrics.ObserveHeldBytes(() => HeldBytes)];
    }

    // After Restore: the committer's log index and sequence decisions start from the recovered state.
    private void StartCommitter()
    {
        lock (_state)
        {
            _nextLogIndex = _merkle.Size;
        }

        // The first checkpoint's snapshot buffer, faulted in meanwhile (see SnapshotBuffer).
        int live = LiveEntries();
        StartSnapshotInterval(live);
        if (live > 0)
        {
            Grow(Roomy(live));
        }

        // A thread of its own: the loop sleeps through each group-commit window and waits for the pipeline
        // synchronously, which must not hold a thread-pool thread that the apply stage and callers need.
        _committer = Task.Factory.StartNew(CommitLoop, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
    }

    /// <summary>The write-ahead log's commit record the open recovered to (tests: the newest, unless it did not read back).</summary>
    internal long RecoveredCommit { get; private init; } = -1;

    /// <summary>Directory of the envelope table (FasterKV hybrid log and checkpoints).</summary>
    public string TableDirectory => Path.Combine(StoreDirectory, "kv");

    /// <summary>Begin and tail address of the envelope table's log (its on-disk extent; compaction moves the begin).</summary>
    public (long Begin, long Tail) TableExtent => (_kv.BeginAddress, _kv.TailAddress);

    /// <summary>Table reads that went to disk since the store opened (the record had left the memory budget).</summary>
    public long TableDiskReads => _kv.DiskReads;

    /// <summary>Table reads repeated because a compaction moved the table's begin address under them.</summary>
    public long TableCompactionRetries => _kv.CompactionRetries;

    /// <summary>Begin address of the write-ahead log (moves forward when a checkpoint lets it be truncated).</summary>
    public long LogBeginAddress => _log.BeginAddress;

    /// <summary>Begin address of the write-ahead log as its last commit recorded it: the segments below it are deleted
    /// (a truncation reaches the disk with the commit after it; tests).</summary>
    internal long LogCommittedBeginAddress => _log.CommittedBeginAddress;

    /// <summary>Runs the checkpoint cycle now (sweep, compaction when due, checkpoint, log truncation) and waits for it.</summary>
    public async Task CheckpointAsync(CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        var request = new Request(null) { Checkpoint = true };
        await _requests.Writer.WriteAsync(request, cancellationToken).ConfigureAwait(false);
        await request.Done.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Directory holding the write-ahead log and its commit records.</summary>
    public string StoreDirectory => Path.Combine(_options.DataDirectory, "store");

    /// <summary>Why the store refuses writes (a failed commit), or null while it is healthy.</summary>
    public Exception? Fault => _fault;

    /// <summary>Why the store refuses writes, in words for an operator (FASTER's bare error codes named); null while it takes them.</summary>
    public string? FaultReason => _fault is { } fault ? Describe(fault) : null;

    /// <summary>Leaves in the transparency log.</summary>
    public long TreeSize
    {
        get
        {
            lock (_state)
            {
                return _merkle.Size;
            }
        }
    }

    /// <inheritdoc />
    public event Action<ReadOnlyMemory<byte>, ulong>? MailArrived;

    // The address MailArrived lends its listeners; the apply stage's only (see Apply).
    private readonly byte[] _arrivedAddress = new byte[32];

    /// <summary>A compaction of the envelope table found bytes of its log that hold no readable record (a damaged disk);
    /// raised on the store's committer thread, after it went past them.</summary>
    public event Action<StoreCorruptException>? TableDamageFound;

    /// <summary>Opens (or creates) the store and replays the committed log.</summary>
    /// <exception cref="StoreCorruptException">A log or commit file cannot be read; the message names it and what to do.</exception>
    public static async Task<FasterEnvelopeStore> OpenAsync(StoreOptions options, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        string dir = Path.Combine(options.DataDirectory, "store");
        string commitDir = Path.Combine(dir, "commits");
        // Durably: the commit records are written through, and a power loss must not take their directory's name.
        DirectoryFlush.CreateDirectory(commitDir);
        var recovery = new RecoveryReporter(options, dir);
        FileStream lockFile = Lock(dir);
        try
        {
            return await OpenLockedAsync(options, dir, commitDir, lockFile, recovery, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (!HandedOver(e))
        {
            lockFile.Dispose();
            throw;
        }
    }

    /// <summary>
    /// One process at a time: two would interleave their writes to one log and table. The OS lock (flock on Linux and
    /// macOS, the share mode on Windows) belongs to the open file, so the kernel drops it when the process dies and a
    /// kill -9 leaves nothing to clean up.
    /// </summary>
    private static FileStream Lock(string dir)
    {
        string path = Path.Combine(dir, "LOCK");
        try
        {
            return PrivateFile.Open(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
        }
        catch (IOException e) when (FileLock.IsContention(e))
        {
            throw new StoreInUseException(
                $"The store in '{dir}' is open in another process (another meganet node with the same data directory?). " +
                "Stop that process, or give this one a data directory of its own.", e);
        }
        catch (IOException e)
        {
            // Not another process: the file cannot be opened for writing at all (a read-only mount, a device error).
            throw new IOException(
                $"The store's lock file '{path}' cannot be opened for writing ({e.Message}): the data directory must be on a file system " +
                "mounted read-write, and writable by this user.", e);
        }
    }

    private static async Task<FasterEnvelopeStore> OpenLockedAsync(StoreOptions options, string dir, string commitDir, FileStream lockFile, RecoveryReporter recovery,
        CancellationToken cancellationToken)
    {
        long walBytes = Directory.EnumerateFiles(dir, "wal.log*").Sum(f => new FileInfo(f).Length);
        recovery.Opening(File.Exists(Checkpoint.ManifestPath(dir)), walBytes);
        CommitSlotFile commitFile = CommitSlotFile.Open(commitDir, walBytes);
        try
        {
            return await RecoverAsync(options, dir, commitFile, walBytes, lockFile, recovery, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (!HandedOver(e))
        {
            commitFile.Dispose(); // (the store, once made, disposed it too; a second Dispose does nothing)
            throw;
        }
    }

    // Marks an open that failed while its replay still runs (see RecoverAsync): the lock and the commit file belong to
    // the abandoned store, which lets them go once the replay ends. Let go at once, a second open in this process would
    // have run beside a replay still writing the same table.
    private const string HandedOverKey = "MegaNet.Store.HandedOver";

    private static bool HandedOver(Exception e) => e.Data.Contains(HandedOverKey);

    private static async Task<FasterEnvelopeStore> RecoverAsync(StoreOptions options, string dir, CommitSlotFile commitFile, long walBytes, FileStream lockFile,
        RecoveryReporter recovery, CancellationToken cancellationToken)
    {
        // Recovery falls back from the newest commit record to older ones (the file keeps several), so a record that
        // does not read back does not make a log with intact data unrecoverable.
        long[] commits = commitFile.Commits; // newest first
        commitFile.CommitsInLog = CommitsInLog(dir, holdsData: walBytes > 0 || commits.Length > 0, emptied: commits.Length > 0 && Emptied(commitFile, commits[0]));
        int pageBits = WalPageBits(dir, options);
        FasterLog? log = null;
        IDevice? device = null;
        Exception? failure = null;
        long recovered = -1;
        // With the commits in the log FASTER itself falls back from the newest readable record and scans forward from
        // it: one attempt.
        long[] attempts = commits.Length == 0 ? [-1L] : commitFile.CommitsInLog ? [commits[0]] : commits;
        foreach (long commit in attempts)
        {
            // Commits write straight to disk where the file system allows (see DirectFileDevice).
            device = (IDevice?)DirectFileDevice.TryCreate(Path.Combine(dir, "wal.log"), "mn-io-wal")
                ?? Devices.CreateLogDevice(Path.Combine(dir, "wal.log"), preallocateFile: false);
            try
            {
                log = new FasterLog(Settings(options, device, commitFile, pageBits));
                if (commits.Length > 0)
                {
                    // TryRecoverLatest would swallow a failure and start empty: recover explicitly so it surfaces.
                    // (With the commits in the log, Recover() swallows it too: the check below catches a start short
                    // of any record the file holds, each of which was written after its commit was in the log.)
                    log.Recover(commitFile.CommitsInLog ? -1 : commit);
                    long until = commitFile.CommitsInLog ? commits.Max(c => commitFile.Range(c)?.Until ?? long.MaxValue) : commitFile.Range(commit)?.Until ?? long.MaxValue;
                    if (log.CommittedUntilAddress < until)
                    {
                        // FASTER skips a record it cannot read and starts empty without a word. (A log that a
                        // checkpoint truncated to its tail is empty, its record says so, and that is no fault: until
                        // 2026-11-29 such a log counted as unreadable and every clean restart fell back a commit.)
                        throw new InvalidDataException($"commit record {commit} in '{commitFile.Path}' is unreadable");
                    }

                    recovered = commit;
                }

                failure = null;
                break;
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                failure = e;
                log?.Dispose();
                log = null;
                device.Dispose();
                device = null;
            }
        }

        if (log is null || device is null)
        {
            throw new StoreCorruptException(
                $"The store's write-ahead log in '{dir}' could not be recovered from any commit record ({failure?.Message}); '{Path.Combine(dir, "wal.log")}' holds {walBytes} bytes. " +
                StoreCorruptException.Advice, failure);
        }

        string kvDir = Path.Combine(dir, "kv");
        Checkpoint.Manifest? manifest;
        EnvelopeKv kv;
        bool tablePageBitsKept = false;
        try
        {
            manifest = Checkpoint.Read(dir);
            // A table checkpoint recovers only into an index of the size it was taken with, so the size is chosen
            // when the table is new and the manifest carries it from then on.
            long indexBytes = manifest?.IndexBytes ?? (options.IndexBytesForTests > 0 ? options.IndexBytesForTests : EnvelopeKv.IndexBytesFor(options.MemoryBudgetBytes));
            long tableMemory = options.MemoryBudgetBytes - (options.MemoryBudgetBytes / 8);
            // So is the table's page size: its checkpoint recovers only into pages of the size it was written with.
            kv = new EnvelopeKv(kvDir, tableMemory, indexBytes, options.CheckpointFilesForTests, TablePageBits(dir, tableMemory, tableIsNew: manifest is null, out tablePageBitsKept))
            {
                // Without a manifest the table starts empty (everything comes from the log), so in today's layout.
                SeparateEnvelopeRecords = manifest?.SeparateEnvelopeRecords == true || options.SeparateEnvelopeRecordsForTests,
                WriteSeparateRecordsForTests = options.SeparateEnvelopeRecordsForTests,
            };
        }
        catch (Exception e)
        {
            log.Dispose();
            device.Dispose();
            if (e is StoreCorruptException)
            {
                throw;
            }

            throw new StoreCorruptException($"The store's checkpoint in '{dir}' cannot be read ({e.Message}). {StoreCorruptException.Advice}", e);
        }

        if (manifest is not null)
        {
            try
            {
                kv.Recover(manifest.Token);
                if (!tablePageBitsKept)
                {
                    // A store from before the file: its size is known good now that its checkpoint recovered.
                    WritePageBits(Path.Combine(dir, TablePageBitsFile), kv.PageBits);
                }
            }
            catch (Exception e)
            {
                kv.Dispose();
                log.Dispose();
                device.Dispose();
                throw new StoreCorruptException(
                    $"The envelope table checkpoint {manifest.Token} in '{kvDir}' (named by '{Checkpoint.ManifestPath(dir)}') cannot be recovered ({e.Message}). " +
                    StoreCorruptException.Advice, e);
            }
        }

        var store = new FasterEnvelopeStore(options, device, commitFile, log, kv, lockFile) { RecoveredCommit = recovered };
        kv.FailTableWriteForTests = options.FailTableWriteForTests;
        // Replayed on a thread of its own, watched: a table write that fails (a full disk) is retried until it succeeds,
        // and a replay waiting on one would hold the open, and the node's start, without a word.
        Task restoring = Task.Factory.StartNew(() => store.Restore(manifest, recovery, cancellationToken), CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        if (await Task.WhenAny(restoring, store._tableWriteFailed.Task).ConfigureAwait(false) != restoring
            && await Task.WhenAny(restoring, Task.Delay(TimeSpan.FromSeconds(1))).ConfigureAwait(false) != restoring)
        {
            // Stuck behind the retried write: the open fails now; the store, holding the lock, closes once the replay
            // ends, if it does (disposing FASTER's objects under it would hang as well). The process is expected to exit.
            // Its gauges go now: they read the tree under the lock the stuck replay holds.
            foreach (IDisposable source in store._metricSources)
            {
                source.Dispose();
            }

            _ = restoring.ContinueWith(t => { _ = t.Exception; return store.DisposeAsync().AsTask(); }, CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default).Unwrap()
                .ContinueWith(t => _ = t.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted, TaskScheduler.Default);
            StoreUnavailableException abandoned = store.TableUnwritableAtOpen();
            abandoned.Data[HandedOverKey] = true;
            throw abandoned;
        }

        try
        {
            await restoring.ConfigureAwait(false);
            if (store._fault is not null)
            {
                throw store.TableUnwritableAtOpen();
            }

            commitFile.DropMigratedRecords();
            store.StartCommitter();
        }
        catch
        {
            await store.DisposeAsync().ConfigureAwait(false);
            throw;
        }

        return store;
    }

    // The write-ahead log keeps 1/8 of the memory budget, in pages of at most 4 MiB (at least two pages).
    private static int LogMemoryBits(StoreOptions options) => Math.Clamp((int)Math.Floor(Math.Log2(options.MemoryBudgetBytes / 8)), 20, 40);

    /// <summary>The most sequence numbers one <see cref="AckAsync"/> takes (as many as the largest page Fetch returns).</summary>
    public const int MaxAckSeqs = 1000;

    /// <summary>
    /// The envelope table's page size (as a power of two), kept in <c>table.page-bits</c> from the table's first open
    /// on: a FASTER checkpoint recovers only into the page size it was written with, and the size follows the memory
    /// budget below 32 MiB (<c>StoreMemoryMiB</c> 8 and 16 against the default 256: 1, 2 and 4 MiB), so a node
    /// restarted with another budget aborted in FASTER's recovery with an access violation (2026-12-05). A new table
    /// (no checkpoint) takes the size <paramref name="tableMemory"/> gives and writes it down; a store from before the
    /// file is opened with that size, as it always was, and the file is written once its checkpoint has recovered.
    /// </summary>
    private static int TablePageBits(string dir, long tableMemory, bool tableIsNew, out bool kept)
    {
        string path = Path.Combine(dir, TablePageBitsFile);
        if (ReadPageBits(path, "the envelope table's", 18, "20 for StoreMemoryMiB 8-15, 21 for 16-31, 22 for 32 and more") is { } bits)
        {
            kept = true;
            return bits;
        }

        int chosen = EnvelopeKv.PageBitsFor(tableMemory);
        if (tableIsNew)
        {
            WritePageBits(path, chosen);
        }

        kept = tableIsNew;
        return chosen;
    }

    /// <summary>Where <see cref="TablePageBits"/> keeps the table's page size, in the store's directory.</summary>
    private const string TablePageBitsFile = "table.page-bits";

    /// <summary>A page size kept in <paramref name="path"/> (a power of two, <paramref name="minBits"/> to 30), or null
    /// when there is no such file; a file holding anything else is refused, naming the sizes the store may have had.</summary>
    private static int? ReadPageBits(string path, string whose, int minBits, string sizes)
    {
        if (!File.Exists(path))
        {
            return null;
        }

        string text = File.ReadAllText(path).Trim();
        if (!int.TryParse(text, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int bits) || bits < minBits || bits > 30)
        {
            throw new StoreCorruptException(
                $"'{path}' should hold {whose} page size as a power of two ({minBits}-30) but holds '{text}'. Nothing was changed. " +
                $"Restore it from a backup, or write the size the store was created with ({sizes}).");
        }

        return bits;
    }

    /// <summary>Writes a page size for <see cref="ReadPageBits"/>.</summary>
    private static void WritePageBits(string path, int bits) =>
        DurableRename.WriteAllBytes(path, System.Text.Encoding.ASCII.GetBytes(bits.ToString(System.Globalization.CultureInfo.InvariantCulture) + "\n"));

    /// <summary>
    /// The write-ahead log's page size (as a power of two), fixed when the log is created and kept in
    /// <c>wal.page-bits</c>. FASTER's scan skips the unused end of each page by the page size it is opened with: a log
    /// written with 512 KiB pages (an 8 MiB budget) and replayed with 4 MiB pages (256 MiB) silently lost everything
    /// after its first page end, 316 acknowledged envelopes in the case seen. A log from before the file existed keeps
    /// the size the current budget gives, as it always did.
    /// </summary>
    private static int WalPageBits(string dir, StoreOptions options)
    {
        string path = Path.Combine(dir, "wal.page-bits");
        if (ReadPageBits(path, "the write-ahead log's", 9, "19 for StoreMemoryMiB 8-15, 20 for 16-31, 21 for 32-63, 22 for 64 and more") is { } bits)
        {
            return bits;
        }

        int chosen = Math.Min(22, LogMemoryBits(options) - 1);
        WritePageBits(path, chosen);
        return chosen;
    }

    /// <summary>
    /// Whether the write-ahead log holds its own commit records (FASTER's fast commit mode, with a checksum on every
    /// entry), fixed when the log is created and kept in <c>wal.commit-mode</c>: <c>log</c>, or <c>file</c> for a log
    /// whose commits are only in <c>commits/wal.commits</c>. A commit in the log is one synchronous write (the log
    /// page with the record in it) instead of two (the page, then the record in the file): unary submissions at
    /// 2,000/s spent p50 0.43–0.49 ms committing against 0.91–0.98 ms, p99 2.9–3.2 ms against 5.5–7.1 ms. The entries'
    /// format differs (the checksums), so a log with entries from before keeps its commits in the file until it is
    /// <paramref name="emptied"/>: its newest commit left nothing in it, as a clean shutdown's checkpoint does (it
    /// truncates the log to its tail), so every entry after it will be in the new format.
    /// </summary>
    private static bool CommitsInLog(string dir, bool holdsData, bool emptied)
    {
        string path = Path.Combine(dir, "wal.commit-mode");
        string? mode = File.Exists(path) ? File.ReadAllText(path).Trim() : null;
        if (mode is not (null or "log" or "file"))
        {
            throw new StoreCorruptException(
                $"'{path}' should say where the write-ahead log's commit records are ('log' or 'file') but holds '{mode}'. Nothing was changed. " +
                $"Restore it from a backup, or write 'file' if its log holds entries written before 2026-11-30 (its '{CommitSlotFile.FileName}' then has a record for every commit), 'log' otherwise.");
        }

        if (mode == "log")
        {
            return true;
        }

        if (mode == "file" && !emptied)
        {
            return false;
        }

        // Written before the log opens: once an entry in the new format may be on disk, the file says so.
        bool inLog = !holdsData || emptied;
        DurableRename.WriteAllBytes(path, inLog ? "log\n"u8 : "file\n"u8);
        return inLog;
    }

    /// <summary>Whether commit <paramref name="commit"/>'s record says the log held nothing (begin = until).</summary>
    private static bool Emptied(CommitSlotFile commitFile, long commit)
    {
        try
        {
            return commitFile.Range(commit) is { } range && range.Begin == range.Until;
        }
        catch (Exception e) when (e is IOException or InvalidDataException or FasterException or ArgumentException)
        {
            return false; // recovery reports the record
        }
    }

    private static FasterLogSettings Settings(StoreOptions options, IDevice device, CommitSlotFile commitFile, int pageBits)
    {
        return new FasterLogSettings
        {
            LogDevice = device,
            LogCommitManager = commitFile,
            PageSizeBits = pageBits,
            MemorySizeBits = Math.Max(LogMemoryBits(options), pageBits + 1),
            TryRecoverLatest = false,
            RemoveOutdatedCommits = false,
            // Off: only scans of uncommitted entries read the safe tail, and the store scans committed ones. On, every
            // enqueue kept a chain of epoch bumps and thread-pool tasks going (about one of each per put while
            // streaming: 0.1 KB of garbage a put and a pool hop each).
            AutoRefreshSafeTailAddress = false,
            // Fast commit needs the checksums: recovery's forward scan stops at the first entry that does not verify.
            FastCommitMode = commitFile.CommitsInLog,
            LogChecksum = commitFile.CommitsInLog ? LogChecksumType.PerEntry : LogChecksumType.None,
        };
    }

    // FASTER reports a commit done once it has asked for the record to be written, which cannot fail from its side (a
    // full tmpfs once left an empty record behind a successful CommitAsync with FASTER's own files). Check that this
    // commit's record was written before acknowledging anything (by its number: with groups in flight the newest
    // record may belong to a commit still being written).
    private async Task CommitAndCheckAsync()
    {
        if (_options.FailCommitForTests?.Invoke() == true)
        {
            throw new IOException("the write-ahead log's commit failed (a failure a test asked for)");
        }

        long started = Stopwatch.GetTimestamp();
        (bool success, _, long commitNum) = await _log.CommitStronglyAsync().ConfigureAwait(false);
        if (_options.AfterCommitForTests is { } held)
        {
            await held().ConfigureAwait(false);
        }

        // With the commits in the log FASTER reports one as soon as the log write is durable, and only then calls the
        // commit file: the log's first record, recovery's starting point, may still be on its way. (Only the first
        // commit of a new log ever waits here.)
        for (int waited = 0; success && _commitFile.CommitsInLog && !_commitFile.Wrote(commitNum) && waited < 2_000; waited++)
        {
            await Task.Delay(1).ConfigureAwait(false);
        }

        if (!success || !_commitFile.Wrote(commitNum))
        {
            throw new IOException($"the commit record {commitNum} was not written to '{_commitFile.Path}'");
        }

        MegaNetMetrics.StoreLogCommitDuration.Record(Stopwatch.GetElapsedTime(started).TotalMilliseconds);
    }

    /// <inheritdoc />
    public async ValueTask<PutReceipt> PutAsync(PutRequest request, CancellationToken cancellationToken = default)
    {
        IReadOnlyList<PutResult> results = await PutManyAsync([request], cancellationToken).ConfigureAwait(false);
        return results[0].Receipt ?? throw results[0].Error!;
    }

    /// <inheritdoc />
    public async ValueTask<IReadOnlyList<PutResult>> PutManyAsync(IReadOnlyList<PutRequest> requests, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(requests);
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        long arrived = Stopwatch.GetTimestamp();
        var results = new PutResult[requests.Count];
        DiskSpaceLowException? lowOnDisk = DiskSpaceLow() ? new DiskSpaceLowException(
            $"The node is low on disk space (under the {_options.MinFreeDiskBytes >> 20:N0} MiB it keeps free) and stores no new mail until space is freed. " +
            "Nothing was stored; retry later or send through another node.") : null;

        // One request and one completion per slice of up to PutSlice puts, not per put: the caller waits for all of
        // them anyway. The slice's puts are copied into an array of the request's own (the store reads them until it
        // answers, and a cancelled caller may reuse its list), and the store writes the answers into results.
        Request? first = null;
        List<Request>? more = null;
        for (int start = 0; start < requests.Count; start += PutSlice)
        {
            int end = Math.Min(requests.Count, start + PutSlice);
            PutRequest?[]? slice = null;
            for (int i = start; i < end; i++)
            {
                PutRequest put = requests[i];
                string? problem = Check(put);
                if (problem is not null)
                {
                    results[i] = new PutResult(null, new ArgumentException(problem));
                    continue;
                }

                if (lowOnDisk is not null)
                {
                    results[i] = new PutResult(null, lowOnDisk);
                    MegaNetMetrics.StoreLowDiskRefusals.Add(1);
                    continue;
                }

                slice ??= new PutRequest?[end - start];
                slice[i - start] = put;
            }

            if (slice is null)
            {
                continue;
            }

            var request = new Request(slice, results, start);
            if (first is null)
            {
                first = request;
            }
            else
            {
                (more ??= []).Add(request);
            }

            await _requests.Writer.WriteAsync(request, cancellationToken).ConfigureAwait(false);
        }

        // A put refused for its mailbox's quota has its answer in results; a failed commit fails the whole request.
        if (first is null)
        {
            return results;
        }

        // Each slice is answered on its own: slices may be committed in different groups, and a group that failed (a
        // full disk) must not turn the receipts of a slice committed before it into errors: those envelopes are stored,
        // and their recipients may have fetched them already. Only a call none of whose slices was stored throws.
        Exception? failed = await FailureOf(first, cancellationToken).ConfigureAwait(false);
        bool stored = failed is null;
        if (more is not null)
        {
            foreach (Request request in more)
            {
                Exception? failure = await FailureOf(request, cancellationToken).ConfigureAwait(false);
                stored |= failure is null;
                failed ??= failure;
            }
        }

        if (!stored)
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(failed!);
        }

        MegaNetMetrics.StorePutLatency.Record(Stopwatch.GetElapsedTime(arrived).TotalMilliseconds);
        return results;

        // Null once the slice is answered; else its failure, which becomes the answer of each of its puts (the apply
        // stage may have written receipts for a group it then failed: nothing of that group is acknowledged).
        static async ValueTask<Exception?> FailureOf(Request request, CancellationToken cancellationToken)
        {
            try
            {
                await request.Done.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
                return null;
            }
            catch (Exception e) when (!cancellationToken.IsCancellationRequested)
            {
                PutRequest?[] puts = request.Puts!;
                for (int i = 0; i < puts.Length; i++)
                {
                    if (puts[i] is not null)
                    {
                        request.Results![request.ResultStart + i] = new PutResult(null, e);
                    }
                }

                return e;
            }
        }
    }

    /// <summary>
    /// Whether the store's file system has less free space than <see cref="StoreOptions.MinFreeDiskBytes"/>, read at
    /// most once per <see cref="StoreOptions.FreeDiskCheckInterval"/> (one statvfs; the caller that finds it due reads
    /// it, the others use the last value). Puts are refused meanwhile, nothing else: acks, checkpoints and compaction
    /// need the room the mark keeps. A failed read refuses nothing.
    /// </summary>
    internal bool DiskSpaceLow()
    {
        if (_options.MinFreeDiskBytes <= 0)
        {
            return false;
        }

        long now = Stopwatch.GetTimestamp();
        long due = Volatile.Read(ref _nextDiskCheck);
        if (now >= due && Interlocked.CompareExchange(ref _nextDiskCheck, now + (long)(_options.FreeDiskCheckInterval.TotalSeconds * Stopwatch.Frequency), due) == due)
        {
            Volatile.Write(ref _freeDiskBytes, FreeDiskBytes());
        }

        return Volatile.Read(ref _freeDiskBytes) < _options.MinFreeDiskBytes;
    }

    private long FreeDiskBytes()
    {
        if (_options.FreeDiskBytesForTests is { } probe)
        {
            return probe();
        }

        // Not knowing (long.MaxValue) is no reason to refuse mail; a full disk still faults the store as before.
        return DiskSpace.FreeBytes(StoreDirectory);
    }

    /// <inheritdoc />
    public long LookupMark => Volatile.Read(ref _appliedGeneration);

    /// <inheritdoc />
    public void PrefetchFind(ReadOnlySpan<byte> envelopeId)
    {
        if (envelopeId.Length == 32)
        {
            _kv.Prefetch(envelopeId);
        }
    }

    /// <inheritdoc />
    public ValueTask<PutReceipt?> FindAsync(ReadOnlyMemory<byte> envelopeId, CancellationToken cancellationToken = default) =>
        // Nearly every id a node looks up is new: answered from the table's index without the async read's machinery.
        envelopeId.Length != 32 || _kv.SurelyAbsent(envelopeId.Span) ? default : FindInTableAsync(envelopeId);

    private async ValueTask<PutReceipt?> FindInTableAsync(ReadOnlyMemory<byte> envelopeId)
    {
        TableRead read = await _kv.GetMetaAsync(envelopeId).ConfigureAwait(false);
        if (read.Value is not { } meta)
        {
            if (read.FromDisk)
            {
                // The caller read its mark before this lookup: every mark up to now is held to the prepare stage's
                // lookup, which can tell damage from absence (the put's recipient is known there).
                long now = LookupMark;
                for (long unsure = Volatile.Read(ref _marksUnsureThrough); unsure < now; unsure = Volatile.Read(ref _marksUnsureThrough))
                {
                    Interlocked.CompareExchange(ref _marksUnsureThrough, now, unsure);
                }
            }

            return null;
        }

        // An envelope whose expiry has passed is gone, whether or not its record is (see TakeSnapshot): a replay of it is
        // no replay, and a put of it would be refused as expired or stored anew.
        if (ExpiryOf(meta) <= _options.Clock.GetUtcNow().ToUnixTimeMilliseconds())
        {
            return null;
        }

        // The apply stage writes a group to the table before it signs the head that covers the group: a lookup in
        // between would hand out a receipt whose head does not cover its own leaf. Until then the envelope counts as
        // not found here; a put of it is answered as a duplicate with the covering head, in log order.
        PutReceipt receipt = ReceiptFromMeta(envelopeId.ToArray(), meta, GetTreeHead());
        return receipt.LogIndex < receipt.TreeHead.TreeSize ? receipt : null;
    }

    /// <inheritdoc />
    public async ValueTask<MailboxPage> ListAsync(ReadOnlyMemory<byte> recipient, ulong afterSeq, int limit, long maxBytes = long.MaxValue, CancellationToken cancellationToken = default)
    {
        if (recipient.Length != 32)
        {
            throw new ArgumentException("A recipient address is 32 bytes.", nameof(recipient));
        }

        ArgumentOutOfRangeException.ThrowIfLessThan(limit, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxBytes, 1);
        // Empty until the mailbox has something to give (CopyAfter sizes it then): most listings of a Subscribe find one
        // entry or none.
        var picked = new List<IndexEntry>();
        var entries = new List<MailboxEntry>();
        ulong next = afterSeq;
        (int Count, long Bytes) waiting = (0, 0);
        for (int attempt = 1; ; attempt++)
        {
            long now = _options.Clock.GetUtcNow().ToUnixTimeMilliseconds();
            ulong from = next;
            picked.Clear();
            waiting = (0, 0); // a mailbox emptied meanwhile is gone
            lock (_state)
            {
                if (_mailboxes.TryGetValue(new Key32(recipient.Span), out Mailbox? box))
                {
                    next = box.CopyAfter(from, limit, maxBytes, picked, now);
                    waiting = Usage(box, now);
                }
            }

            AfterListIndexForTests?.Invoke();
            entries.EnsureCapacity(picked.Count);
            foreach (IndexEntry e in picked)
            {
                cancellationToken.ThrowIfCancellationRequested();
                byte[] id = new byte[32];
                e.Id.CopyTo(id);
                TableRead read = await _kv.GetEnvelopeAsync(id).ConfigureAwait(false);
                if (read.Value is { } envelope)
                {
                    entries.Add(new MailboxEntry(e.Seq, id, envelope, DateTimeOffset.FromUnixTimeMilliseconds(e.ExpiresUnixMs), e.LogIndex));
                    continue;
                }

                // An ack or the expiry sweep that removed it since the index was read: both take the entry out of the
                // index before they touch its record, so it is gone from there too. Skip it.
                if (!StillWaiting(recipient.Span, e))
                {
                    continue;
                }

                // Else its record is damaged, or could not be read just now. Skipped, it was lost without a word: the
                // cursor moved past it. The page ends before it instead, and the page from there says what is wrong.
                if (entries.Count > 0)
                {
                    return new MailboxPage(entries, e.Seq - 1) { WaitingCount = waiting.Count, WaitingBytes = waiting.Bytes };
                }

                // The device's own error (EIO: a bad sector, as real disks answer one) is damage, as zeros read back are:
                // answered "ask again later", every listing would stop before it until the envelope expired, with the
                // node healthy and the mail after it out of reach.
                throw read.Failure is { } failure && !DirectFileDevice.IsDeviceError(failure) ? TableUnreadable(id, e, failure) : TableDamaged(id, e, read.Failure);
            }

            // Every entry picked went meanwhile (another device acknowledged them): an empty page whose cursor moved
            // would read as the end of the mailbox (docs/protocol.md: continue until a page is empty), and the mail
            // after it would wait for the next fetch. List on from where this stopped, a few times at most.
            if (entries.Count > 0 || picked.Count == 0 || attempt == MaxListAttempts)
            {
                break;
            }
        }

        return new MailboxPage(entries, next) { WaitingCount = waiting.Count, WaitingBytes = waiting.Bytes };
    }

    // The entry of envelope id in the mailbox of recipient, if it holds one (a scan of the mailbox).
    private Stored? HeldEntry(Key32 recipient, Key32 id)
    {
        lock (_state)
        {
            return _mailboxes.TryGetValue(recipient, out Mailbox? box) && box.Find(id) is { } e
                ? new Stored(recipient, DateTimeOffset.FromUnixTimeMilliseconds(e.ExpiresUnixMs), e.Length, id.ToArray(), e.LogIndex, e.Seq)
                : null;
        }
    }

    // Whether the mailbox of recipient still holds entry, unexpired: an entry whose envelope is not in the table then
    // has a record that is damaged or could not be read.
    private bool StillWaiting(ReadOnlySpan<byte> recipient, in IndexEntry entry)
    {
        long now = _options.Clock.GetUtcNow().ToUnixTimeMilliseconds();
        lock (_state)
        {
            return _mailboxes.TryGetValue(new Key32(recipient), out Mailbox? box) && box.TryGet(entry.Seq, out IndexEntry held)
                && held.Id.Equals(entry.Id) && held.ExpiresUnixMs > now;
        }
    }

    private StoreCorruptException TableDamaged(byte[] id, in IndexEntry entry, IOException? deviceError) => new(
        $"The store's envelope table in '{_kv.Directory}' is damaged: the record of envelope {Convert.ToHexStringLower(id)} (mailbox seq {entry.Seq}, " +
        $"log index {entry.LogIndex}) no longer reads back from it{(deviceError is null ? "" : $" (the device fails to read it: {deviceError.Message})")}, " +
        $"while its mailbox still holds it. {StoreCorruptException.MailRunTimeAdvice}", deviceError)
    {
        MailboxSeq = entry.Seq,
    };

    private StoreUnavailableException TableUnreadable(byte[] id, in IndexEntry entry, IOException failure) => new(
        $"Reading the record of envelope {Convert.ToHexStringLower(id)} (mailbox seq {entry.Seq}) from the store's envelope table in '{_kv.Directory}' " +
        $"failed ({failure.Message}). This is no sign of damage and nothing was changed: the mail can be fetched again, and is delivered once the cause passes. " +
        "If it keeps failing, check the node's open-file limit and its memory.", failure);

    /// <summary>Tries of <see cref="ListAsync"/> at a page whose every entry was removed while their bytes were read.</summary>
    private const int MaxListAttempts = 8;

    /// <summary>Tests: runs between reading a mailbox's index and reading the envelopes it listed.</summary>
    internal Action? AfterListIndexForTests { get; set; }

    /// <inheritdoc />
    public async ValueTask<int> AckAsync(ReadOnlyMemory<byte> recipient, IReadOnlyList<ulong> seqs, CancellationToken cancellationToken = default)
    {
        if (recipient.Length != 32)
        {
            throw new ArgumentException("A recipient address is 32 bytes.", nameof(recipient));
        }

        ArgumentNullException.ThrowIfNull(seqs);
        if (seqs.Count > MaxAckSeqs)
        {
            // One ack is one log record, and a record must fit in a log page: an unbounded list would fail the commit.
            throw new ArgumentException($"At most {MaxAckSeqs} sequence numbers per ack; got {seqs.Count}.", nameof(seqs));
        }

        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        var request = new Request(new AckRequest(recipient.ToArray(), seqs.ToArray()));
        await _requests.Writer.WriteAsync(request, cancellationToken).ConfigureAwait(false);
        await request.Done.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
        return request.AckedCount;
    }

    /// <inheritdoc />
    public SignedTreeHead GetTreeHead() => _head;

    /// <summary>Called with leaves.bin's path before a proof reads released hashes back from it; what it throws is
    /// taken as the read's own failure (tests).</summary>
    internal Action<string>? BeforeLeavesReadForTests
    {
        get => _merkle.BeforeLeavesReadForTests;
        set => _merkle.BeforeLeavesReadForTests = value;
    }

    /// <inheritdoc />
    public IReadOnlyList<byte[]> GetInclusionProof(long leafIndex, long treeSize)
    {
        CheckCompleteTreeSize(treeSize);
        return _merkle.InclusionProof(leafIndex, treeSize);
    }

    /// <inheritdoc />
    public IReadOnlyList<byte[]> GetConsistencyProof(long firstSize, long secondSize)
    {
        CheckCompleteTreeSize(secondSize);
        return _merkle.ConsistencyProof(firstSize, secondSize);
    }

    /// <summary>The root hash of the log at <paramref name="treeSize"/> (for tests and audits).</summary>
    public byte[] GetRootHash(long treeSize)
    {
        CheckCompleteTreeSize(treeSize);
        return _merkle.Root(treeSize);
    }

    /// <summary>
    /// Proofs and roots are computed outside the index lock (O(log² n) hashes each, and unmetered: under the lock a
    /// flood of proof requests held up the apply stage, which appends leaves under it). The tree is append-only and
    /// every hash a size needs is written before the apply stage lets go of the lock, so a size checked under the lock
    /// can be read without it while later leaves are appended and checkpoints release saved levels, whose hashes are
    /// then read back from leaves.bin (see <see cref="MerkleLog"/>).
    /// </summary>
    private void CheckCompleteTreeSize(long treeSize)
    {
        long size;
        lock (_state)
        {
            size = _merkle.Size;
        }

        if (treeSize < 0 || treeSize > size)
        {
            throw new ArgumentOutOfRangeException(nameof(treeSize), treeSize, $"The log holds {size} leaves.");
        }
    }

    /// <summary>Stops accepting writes, commits what was queued, takes the shutdown checkpoint, and closes the log.</summary>
    /// <exception cref="StoreUnavailableException">No shutdown checkpoint was taken: the store was refusing writes (a
    /// full disk), the checkpoint failed, or it did not finish within <see cref="StoreOptions.ShutdownTimeout"/>. The
    /// message says why; nothing acknowledged is lost (the next open replays the log). The files and the lock are let go
    /// first, except after the timeout.</exception>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        _requests.Writer.TryComplete();
        foreach (IDisposable source in _metricSources)
        {
            source.Dispose(); // the gauges stop reading this store (and holding it)
        }

        Task committer = _committer ?? Task.CompletedTask;
        if (await Task.WhenAny(committer, Task.Delay(_options.ShutdownTimeout)).ConfigureAwait(false) != committer)
        {
            // FASTER's objects are left as they are: disposing them under a stuck checkpoint would hang as well.
            throw new StoreUnavailableException(
                $"The store in '{StoreDirectory}' did not finish its shutdown checkpoint within {_options.ShutdownTimeout.TotalSeconds:0} s " +
                "(is the disk full?). Everything acknowledged is in the committed log, which the next start replays; free disk space before restarting.");
        }

        try
        {
            await committer.ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
        }
        finally
        {
            // Whatever the committer ended with, the files and the lock are let go (the log holds what was acknowledged).
            _kv.Dispose();
            _log.Dispose();
            _commitFile.Dispose();
            _device.Dispose();
            _lockFile.Dispose();
        }

        if (_noFinalCheckpoint is { } reason)
        {
            throw new StoreUnavailableException(
                $"The store in '{StoreDirectory}' closed without its shutdown checkpoint: {Describe(reason).TrimEnd('.')}. Everything acknowledged is in the " +
                "committed log, which the next start replays; free disk space or fix the device before restarting.", reason);
        }
    }

    private string? Check(PutRequest request)
    {
        if (request.Recipient.Length != 32)
        {
            return $"A recipient address is 32 bytes; got {request.Recipient.Length}.";
        }

        if (!request.EnvelopeId.IsEmpty && request.EnvelopeId.Length != 32)
        {
            return $"An envelope id is 32 bytes; got {request.EnvelopeId.Length}.";
        }

        if (request.Envelope.Length == 0 || request.Envelope.Length > _options.MaxEnvelopeBytes)
        {
            return $"An envelope is 1 to {_options.MaxEnvelopeBytes} bytes; got {request.Envelope.Length}.";
        }

        DateTimeOffset now = _options.Clock.GetUtcNow();
        if (request.ExpiresAt <= now)
        {
            return "The envelope has already expired.";
        }

        if (request.ExpiresAt > now + _options.MaxTtl)
        {
            return $"The envelope's expiry is more than the node's maximum TTL ({_options.MaxTtl.TotalDays:0.#} days) away.";
        }

        return null;
    }

    /// <summary>
    /// The committer: gathers concurrent requests into a group (the group-commit window), prepares it (duplicate, quota
    /// and sequence decisions, log records), starts its commit, and hands it to the apply stage, which waits for the
    /// commit, writes the table and indexes and answers. The next group is prepared while the previous one commits and
    /// applies, so the two halves of the work run on both cores; at most GroupsInFlight groups (2 by default) are in
    /// flight. Runs on a thread of its own (see <see cref="StartCommitter"/>) and waits synchronously.
    /// </summary>
    private void CommitLoop()
    {
        // Named for `top -H`, perf and dotnet-trace, as the node's admission batcher is.
        Thread.CurrentThread.Name = "mn-store-commit";
        ChannelReader<Request> reader = _requests.Reader;
        Task applying = Task.CompletedTask;
        int lastGroup = 0, items = 0;
        int maxGroup = _options.MaxGroupForTests > 0 ? _options.MaxGroupForTests : MaxGroup;
        int groupsInFlight = _options.GroupsInFlight;
        var inFlight = new Queue<Task>(groupsInFlight);
        // Reused: Prepare and the apply stage copy what they keep, and nothing holds the list past its iteration.
        var group = new List<Request>();
        using var thread = new StageThread();
        // The housekeeping runs inside thread's wait for the queue, so it never waits with thread. One delegate for the
        // loop: it reads the latest applying through the shared local.
        Action housekeeping = () => IdleHousekeeping(applying);
        while (thread.Wait(reader.WaitToReadAsync(), IdleWake, housekeeping))
        {
            group.Clear();
            items = 0;
            long windowStart = Stopwatch.GetTimestamp();
            // Under light load (the previous group was small) waiting only adds latency: commit what is there, and
            // what arrives meanwhile forms the next group while this one commits.
            bool light = lastGroup < LightGroup;
            while (true)
            {
                while (items < maxGroup && reader.TryRead(out Request? r))
                {
                    group.Add(r);
                    items += r.Items;
                }

                // Concurrent callers arrive microseconds apart: give them the window to share this commit.
                TimeSpan left = _options.GroupCommitWindow - Stopwatch.GetElapsedTime(windowStart);
                if (items >= maxGroup || left <= TimeSpan.Zero || (light && items < LightGroup) || reader.Completion.IsCompleted)
                {
                    break;
                }

                // Sleep through the window in short slices (a full group still goes within one slice) instead of
                // spinning on Thread.Yield: sched_yield returns at once when nothing else wants the core, so under
                // streaming load that was a busy loop of up to the whole window per group.
                ShortSleep.Sleep((int)Math.Min(Math.Ceiling(left.TotalMicroseconds), WindowSliceMicroseconds));
            }

            try
            {
                if (_fault is { } fault)
                {
                    throw fault;
                }

                FinishWrittenCheckpoint();
                GrowSnapshotBufferAhead();

                lastGroup = items;
                long preparing = Stopwatch.GetTimestamp();
                PreparedGroup prepared = Prepare(group, items);
                MegaNetMetrics.StorePrepareDuration.Record(Stopwatch.GetElapsedTime(preparing).TotalMilliseconds);
                MegaNetMetrics.StoreGroupSize.Record(items);
                Task commit = prepared.NeedsCommit ? CommitAndCheckAsync() : Task.CompletedTask;
                applying = ApplyAfterCommitAsync(applying, prepared, commit);
                // GroupsInFlight in all, counting the next one to be prepared: with the default 2, this waits for the
                // group before this one. Groups are answered in order, so waiting for the oldest waits for all before it.
                inFlight.Enqueue(applying);
                while (inFlight.Count >= groupsInFlight)
                {
                    thread.Wait(inFlight.Dequeue());
                }

                bool asked = group.Exists(r => r.Checkpoint);
                if (asked || (_writing is null && CheckpointDue()))
                {
                    // The snapshot is of the indexes against the log's tail: nothing may be in flight.
                    thread.Wait(applying);
                    if (_fault is null)
                    {
                        if (asked)
                        {
                            CheckpointCycleAsync().GetAwaiter().GetResult();
                        }
                        else
                        {
                            StartCheckpoint();
                        }
                    }

                    foreach (Request r in group.Where(r => r.Checkpoint))
                    {
                        // Success only if the checkpoint was taken: a fault (here or in the apply stage awaited above)
                        // skipped it.
                        if (_fault is { } skippedFor)
                        {
                            r.Done.TrySetException(new StoreUnavailableException(
                                $"No checkpoint was taken: the store refuses writes ({Describe(skippedFor)}). Free disk space or fix the device, then restart the node.", skippedFor));
                        }
                        else
                        {
                            r.Done.TrySetResult(null);
                        }
                    }
                }
                else if (_compaction is not null && _writing is null && Stopwatch.GetTimestamp() >= _nextCompactionStep)
                {
                    // A step of the compaction under way. It writes the table with the writer session, so nothing may be
                    // in flight: this group's commit is waited for (a few milliseconds), the next group meanwhile queues.
                    thread.Wait(applying);
                    if (_fault is null)
                    {
                        long took = CompactStep(CompactionStepRecords);
                        _nextCompactionStep = Stopwatch.GetTimestamp() + took;
                    }
                }
            }
            catch (Exception e)
            {
                // A failed prepare, checkpoint or compaction acknowledges nothing in the group, and nothing after it until
                // the store is reopened. (TrySet: requests the apply stage already answered keep their answer.)
                _fault ??= e;
                FailAll(group, e);
            }
        }

        applying.GetAwaiter().GetResult();
        if (_fault is not null && _writing is { } writing)
        {
            // The table must not be closed under a checkpoint still writing; its outcome no longer matters.
            writing.ContinueWith(static _ => { }, TaskScheduler.Default).Wait();
            _writing = null;
        }

        // Shutdown: a last checkpoint so the next start replays nothing. Without one nothing is lost (the log holds
        // everything since the previous checkpoint), but DisposeAsync must say so: the node reports a shutdown without
        // its checkpoint as a failure (exit code 3), not as a clean stop.
        if (_fault is { } refusing)
        {
            _noFinalCheckpoint = refusing;
            return;
        }

        try
        {
            CheckpointCycleAsync().GetAwaiter().GetResult();
        }
        catch (Exception e)
        {
            _noFinalCheckpoint = e;
        }
    }

    /// <summary>Committer loop only: finishes the checkpoint written in the background, if it is done; true if one was.</summary>
    private bool FinishWrittenCheckpoint()
    {
        if (_writing is not { IsCompleted: true } written)
        {
            return false;
        }

        _writing = null;
        FinishCheckpoint(written.GetAwaiter().GetResult());
        return true;
    }

    private bool CheckpointDue() => Stopwatch.GetElapsedTime(_lastCheckpoint) >= _options.CheckpointInterval
        || _log.TailAddress - _checkpointedWal >= CheckpointLogThreshold
        || (_refusedForCapSinceSnapshot && _snapshotEarliestExpiry <= _options.Clock.GetUtcNow().ToUnixTimeMilliseconds());

    /// <summary>Write-ahead log since the last checkpoint that makes the next one due: <see cref="StoreOptions.CheckpointLogBytes"/>,
    /// or twice what the last checkpoint wrote where that is more. A checkpoint writes every waiting envelope's index
    /// entry and the table's whole hash index, however little changed: in a store of millions of waiting envelopes,
    /// one every 256 MiB of log wrote more than the log itself (8 million entries: a 480 MB manifest per 256 MiB), and
    /// held writes for its snapshot each time. So a checkpoint's own writes stay under half the log's, at the cost of
    /// a longer replay after <c>kill -9</c> in such a store (about 1 s per 100 MiB of log). Committer loop only.</summary>
    internal long CheckpointLogThreshold => Math.Max(_options.CheckpointLogBytes, 2 * _lastCheckpointBytes);

    // What the last checkpoint wrote besides the log (its manifest and the table's hash index); committer loop only
    // (see CheckpointLogThreshold).
    private long _lastCheckpointBytes;

    /// <summary>How often the committer wakes while no request arrives (<see cref="IdleHousekeeping"/>): the checkpoint
    /// interval, between 10 ms and a second, so a checkpoint finishes and expired mail goes within a second of when
    /// they would under traffic; every 10 ms while a checkpoint is being written, so that its log truncation, and the
    /// compaction it may have started, follow within 10 ms of its end. Read at each wait: tests change the interval of
    /// an open store.</summary>
    private TimeSpan IdleWake => _writing is not null
        ? TimeSpan.FromMilliseconds(10)
        : TimeSpan.FromTicks(Math.Clamp(_options.CheckpointInterval.Ticks, TimeSpan.TicksPerMillisecond * 10, TimeSpan.TicksPerSecond));

    /// <summary>
    /// Committer loop only, while it waits for requests: what the loop does between groups when there are none. A
    /// checkpoint written in the background is finished (log truncation, Merkle log release), and a due one is started
    /// (sweeping expired mail, which <see cref="HeldBytes"/> and the MaxHeldBytes check count until then) once
    /// <paramref name="applying"/>, the last group, is applied, since the snapshot needs nothing in flight. A due
    /// checkpoint is skipped while no group came since the last snapshot and none of its mail has expired: it would
    /// write the same checkpoint again.
    /// </summary>
    private void IdleHousekeeping(Task applying)
    {
        if (_fault is not null)
        {
            return;
        }

        try
        {
            if (FinishWrittenCheckpoint() && _log.BeginAddress > _log.CommittedBeginAddress)
            {
                // The truncation deletes the segments and records the new begin address only with a commit, and an idle
                // store makes none: as at the end of a checkpoint cycle, one with nothing in flight. (Plain waits: this
                // runs at most once a wake, off the per-group path StageThread is for.)
                applying.GetAwaiter().GetResult();
                _log.CommitAsync().AsTask().GetAwaiter().GetResult();
            }

            BackgroundCheckpointUnfinished = _writing is not null;

            if (_writing is null && CheckpointDue()
                && (_generation != _snapshotGeneration || _snapshotEarliestExpiry <= _options.Clock.GetUtcNow().ToUnixTimeMilliseconds()))
            {
                applying.GetAwaiter().GetResult();
                if (_fault is null)
                {
                    StartCheckpoint();
                }
            }

            if (_compaction is not null && _writing is null)
            {
                // Idle: the compaction goes on step after step until it is done or a request waits (it then waits at
                // most for one step, and the loop goes on with the rest between its groups).
                applying.GetAwaiter().GetResult();
                while (_fault is null && _compaction is not null && _requests.Reader.Count == 0)
                {
                    CompactStep(CompactionStepRecords);
                }
            }
        }
        catch (Exception e)
        {
            // As in the loop: a failed checkpoint leaves the store refusing writes until it is reopened (no request is
            // waiting on it to be told).
            _fault ??= e;
        }
    }

    private void FailAll(IEnumerable<Request> requests, Exception e)
    {
        foreach (Request r in requests)
        {
            r.Done.TrySetException(new StoreUnavailableException(
                $"The store could not commit to '{StoreDirectory}' ({Describe(_fault ?? e)}); nothing was acknowledged. Free disk space or fix the device, then restart the node.", e));
        }
    }

    /// <summary>A commit failure's message, with the OS's words for FASTER's bare "error code N" (the errno our device
    /// passes on Linux: 28 reads "No space left on device").</summary>
    private static string Describe(Exception e)
    {
        System.Text.RegularExpressions.Match code = System.Text.RegularExpressions.Regex.Match(e.Message, @"error code (\d+)\b");
        return code.Success && int.TryParse(code.Groups[1].ValueSpan, out int errno) && errno is > 0 and < 4096 && !OperatingSystem.IsWindows()
            ? $"{e.Message}: {System.Runtime.InteropServices.Marshal.GetPInvokeErrorMessage(errno)}"
            : e.Message;
    }

    /// <summary>
    /// Sweep, compaction when due, checkpoint, log truncation, all before returning (an asked-for checkpoint, and the
    /// last one at shutdown). Committer loop only, with nothing in flight.
    /// </summary>
    private async Task CheckpointCycleAsync()
    {
        if (_writing is { } writing)
        {
            _writing = null;
            FinishCheckpoint(await writing.ConfigureAwait(false));
        }

        CheckpointSnapshot snapshot = await WriteCheckpointAsync(TakeSnapshot(wholeCompaction: true)).ConfigureAwait(false);
        FinishCheckpoint(snapshot);
        await _log.CommitAsync().ConfigureAwait(false);
    }

    /// <summary>
    /// Takes the snapshot (committer loop, nothing in flight) and writes the checkpoint in the background while the
    /// committer goes on; the loop finishes it (log truncation) once written. Writing the table checkpoint took
    /// 170-230 ms per 256 MiB of log under streaming load, during which no group could commit when the loop waited
    /// for it. The table may take in writes of later groups meanwhile (FASTER checkpoints a prefix of its writer
    /// session's operations): replay from the snapshot's log address re-applies them, and each put, delete and ack
    /// sets a record to the same value again, so the table ends as if the checkpoint had held exactly the snapshot.
    /// </summary>
    private void StartCheckpoint()
    {
        BackgroundCheckpointUnfinished = true;
        Interlocked.Increment(ref _backgroundCheckpointsStarted);
        CheckpointSnapshot snapshot = TakeSnapshot(wholeCompaction: false);
        _writing = Task.Run(() => WriteCheckpointAsync(snapshot));
    }

    /// <summary>What a checkpoint covers: the indexes as of <see cref="Checkpoint.Manifest.WalAddress"/>, and the leaf
    /// hashes from the previous checkpoint's count up to its own; once written, the manifest's size.</summary>
    private sealed record CheckpointSnapshot(Checkpoint.Manifest Manifest, long SavedLeaves, long SavedKept, long Start, long ManifestBytes = 0);

    /// <summary>Sweeps expired mail, starts a compaction of the table when garbage dominates (and with
    /// <paramref name="wholeCompaction"/> runs it, with the rest of one under way, to its end), and snapshots the indexes
    /// against the log's tail. Committer loop only, with nothing in flight (the sweep and compaction use the writer
    /// session).</summary>
    private CheckpointSnapshot TakeSnapshot(bool wholeCompaction)
    {
        var start = Stopwatch.GetTimestamp();
        // The sweep below takes expired mail out: an id of it retained in _pendingIds must not be answered as a duplicate
        // afterwards, as the table no longer answers it (an expired record counts as none there).
        DropAppliedPending(forgetAllIds: true);
        long now = _options.Clock.GetUtcNow().ToUnixTimeMilliseconds();
        Checkpoint.Manifest manifest;
        long earliestExpiry = long.MaxValue;
        // Every live entry is copied into the chunks of a buffer kept from checkpoint to checkpoint (see SnapshotBuffer). Nothing
        // changes the indexes between the count and the copy: the committer is their only writer, with nothing in flight.
        List<IndexEntry[]> chunks = SnapshotBuffer(LiveEntries());
        lock (_state)
        {
            // Expired mail leaves the indexes now (not logged: after a crash it comes back from the log as expired, is
            // never returned, and is swept again); its table records wait for compaction (below).
            var boxes = new List<(byte[] Address, ulong NextSeq, ReadOnlySequence<IndexEntry> Entries)>(_mailboxes.Count);
            var emptied = new List<Key32>();
            var runs = new List<ArraySegment<IndexEntry>>();
            int chunk = 0, at = 0;
            foreach ((Key32 address, Mailbox box) in _mailboxes)
            {
                // Copied whole before any entry leaves the mailbox (a removal may squeeze its slots), in one run per
                // chunk it reaches: a mailbox that does not fit in what is left of a chunk goes on in the next.
                runs.Clear();
                int slot = 0;
                for (int copied = 0; copied < box.Count;)
                {
                    if (at == chunks[chunk].Length)
                    {
                        chunk++;
                        at = 0;
                    }

                    int n = box.CopyLive(ref slot, chunks[chunk].AsSpan(at));
                    runs.Add(new ArraySegment<IndexEntry>(chunks[chunk], at, n));
                    at += n;
                    copied += n;
                }

                int kept = 0;
                for (int r = 0; r < runs.Count; r++)
                {
                    ArraySegment<IndexEntry> run = runs[r];
                    int used = 0;
                    for (int i = 0; i < run.Count; i++)
                    {
                        IndexEntry e = run[i];
                        if (e.ExpiresUnixMs <= now)
                        {
                            RemoveEntry(box, e.Seq, out _);
                        }
                        else
                        {
                            run[used++] = e;
                            earliestExpiry = Math.Min(earliestExpiry, e.ExpiresUnixMs);
                        }
                    }

                    runs[r] = run[..used];
                    kept += used;
                }

                if (box.Reported)
                {
                    NoteUsage(address, box);
                }

                if (kept == 0)
                {
                    emptied.Add(address);
                    continue;
                }

                boxes.Add((address.ToArray(), 0, EntryRun.Sequence(runs)));
            }

            foreach (Key32 address in emptied)
            {
                _mailboxes.Remove(address);
            }

            manifest = new Checkpoint.Manifest(Guid.Empty, _log.TailAddress, _merkle.Size, _kv.IndexBytes, _kv.SeparateEnvelopeRecords, boxes, _merkle.Root(_merkle.Size));
        }

        _snapshotGeneration = _generation;
        _snapshotEarliestExpiry = earliestExpiry;
        _refusedForCapSinceSnapshot = false;

        // The swept entries' table records stay: a lookup by id takes a record whose expiry has passed for none (FindAsync,
        // the prepare stage), and compaction drops expired records when it reaches them (the expiry is in the record),
        // as it does the metadata an ack leaves. Deleting each one here meant reading it first (a later put of the same
        // id may own the record), most from disk, with writes held: 150,000 expired 1 KiB envelopes held them 7-9 s
        // (27.8 s one read at a time), and a delete frees no space before compaction anyway.
        // Compaction rewrites the live part of the table's oldest region, so only when garbage dominates. It runs
        // outside the index lock (readers go on); only this committer writes the table. One started here runs in steps
        // between later groups (CompactStep), not in this pause: whole, it held writes 0.5-0.8 s per 200 MB.
        (long begin, long tail) = TableExtent;
        if (_compaction is null && tail - begin > (2 * HeldBytes) + (_options.MemoryBudgetBytes / 2) && !CompactionOffForTests)
        {
            _compaction = new CompactionRun(_kv.CompactableUntil);
            _nextCompactionStep = 0;
        }

        while (wholeCompaction && _compaction is not null)
        {
            CompactStep(int.MaxValue);
        }

        MegaNetMetrics.StoreCheckpointPause.Record(Stopwatch.GetElapsedTime(start).TotalMilliseconds);
        return new CheckpointSnapshot(manifest, _savedLeaves, _savedKept, start);
    }

    /// <summary>
    /// Committer loop only, with nothing in flight and no checkpoint being written: looks at up to
    /// <paramref name="maxRecords"/> more records of the compaction under way (reading and parsing a page when it starts
    /// one), and ends the compaction once it reached the end it was started with (or a read stopped it). Between steps,
    /// groups go on: a record a later group supersedes or acks before its step comes is no longer the newest of its key
    /// there, so it is not copied; one it supersedes after its copy leaves the copy as garbage for a later compaction. No
    /// step runs while a checkpoint is written: the checkpoint might then take the moved begin address without the
    /// copies, which lie past its tail, and the segments freed would be deleted with it; a step before the snapshot is
    /// in it whole, one after it in the next checkpoint. Returns the step's time in Stopwatch ticks.
    /// </summary>
    private long CompactStep(int maxRecords)
    {
        CompactionRun run = _compaction!;
        long start = Stopwatch.GetTimestamp();
        CompactionOutcome step = _kv.Compact(_options.Clock.GetUtcNow().ToUnixTimeMilliseconds(), run.Until, maxRecords);
        run.Add(step);
        if (maxRecords != int.MaxValue)
        {
            CompactionStepsBetweenGroups++;
        }

        long end = Stopwatch.GetTimestamp(), took = end - start;
        MegaNetMetrics.StoreCompactionPause.Record(Stopwatch.GetElapsedTime(start, end).TotalMilliseconds);
        // Done at its end, or when a read stopped it (the next compaction goes on from there), or when a step moved
        // nothing (cannot happen while the begin address is below the end; a guard against a loop that never ends).
        if (_kv.BeginAddress < run.Until && step.StoppedBy is null && step.Reclaimed > 0)
        {
            return took;
        }

        _compaction = null;
        CompactionOutcome compacted = run.Outcome;
        LastCompaction = compacted;
        if (compacted.DamagedBytes > 0)
        {
            TableDamageFound?.Invoke(new StoreCorruptException(
                $"Compacting the envelope table in '{_kv.Directory}' found {compacted.DamagedBytes:N0} bytes of its log that hold no readable record " +
                $"(zeros or garbage where records were written, or a part of the file the device could not read), from table address {compacted.FirstDamage:N0}: " +
                "the disk damaged them. Any envelope whose record was there is lost from the table; a mailbox that still lists one answers DATA_LOSS naming it. " +
                "The compaction went past them, so the table goes on reclaiming space. " + StoreCorruptException.RunTimeAdvice));
        }

        return took;
    }

    /// <summary>A compaction run a step at a time: the table address it goes to, and what its steps did so far.</summary>
    private sealed class CompactionRun(long until)
    {
        public long Until { get; } = until;

        public CompactionOutcome Outcome { get; private set; } = new(0, 0, 0, -1, null);

        public void Add(CompactionOutcome step) => Outcome = new CompactionOutcome(
            Outcome.Reclaimed + step.Reclaimed,
            Outcome.Copied + step.Copied,
            Outcome.DamagedBytes + step.DamagedBytes,
            Outcome.FirstDamage >= 0 ? Outcome.FirstDamage : step.FirstDamage,
            step.StoppedBy);
    }

    private int LiveEntries()
    {
        lock (_state)
        {
            int total = 0;
            foreach (Mailbox box in _mailboxes.Values)
            {
                total += box.Count;
            }

            return total;
        }
    }

    /// <summary>
    /// Once halfway to the next checkpoint by log size, and the last one written (its size sets the next one's
    /// threshold), makes sure a buffer for the next snapshot is on its way: the entries waiting now, plus their growth
    /// since the last snapshot carried on at the same rate per byte of log to the threshold, and a quarter to spare.
    /// Under steady streaming the waiting entries grow by the same amount every interval, so the rule in
    /// <see cref="SnapshotBuffer"/> alone (grow once fewer than a quarter to spare are left) missed every other
    /// checkpoint and faulted in the new buffer inside the snapshot: 19-57 MB at 200,000-600,000 waiting envelopes held
    /// every write for 87-327 ms on a 2-core AMD EPYC VM (page faults are dear there), against 21-28 ms for snapshots
    /// that found their buffer ready. Committer loop only.
    /// </summary>
    private void GrowSnapshotBufferAhead()
    {
        // From the last snapshot, not the last checkpoint written: one is being written for a while after its snapshot.
        long since = _log.TailAddress - _lastSnapshotWal;
        long threshold = CheckpointLogThreshold;
        if (_snapshotBufferChecked || _writing is not null || since <= 0 || since < threshold / 2)
        {
            return;
        }

        _snapshotBufferChecked = true;
        int live = LiveEntries();
        double perByte = Math.Max(0, live - _lastSnapshotEntries) / (double)since;
        double expected = live + (perByte * Math.Max(0, threshold - since));
        long wanted = (long)Math.Min(int.MaxValue, expected * 1.25);
        // Only the room missing beside what is there and on its way is added (see SnapshotBuffer).
        Grow(wanted);
    }

    /// <summary>
    /// The buffer a snapshot copies the live index entries into, chunks of room for at least <paramref name="total"/>
    /// entries in all, kept from checkpoint to checkpoint (the next snapshot is taken only once this one is written) and
    /// only ever added to. An array per mailbox, allocated at each checkpoint, held the index lock (and with it every
    /// mailbox read) and the committer 100-340 ms at 0.5-1 million waiting envelopes (perf/MegaNet.StoreFill): the
    /// first writes to fresh memory fault its pages in, 64 MiB of them per million entries, and that is most of the
    /// time. With the buffer kept, the lock is held 6-28 ms at a million. Room for half as many again as needed is
    /// faulted in on a pool thread once less than a quarter of room is left, and at open for the first checkpoint, so
    /// that growing does not hold the committer either (it did for up to 490 ms). Until 2026-12-07 the buffer was one
    /// array, replaced by a larger one to grow: every growth faulted in all of it again (up to 87 MB at 600,000 waiting
    /// envelopes, twice per checkpoint interval under steady streaming: 16-25 % of the pool's and the store writers'
    /// samples on a 2-core VM while a checkpoint was written) and left the old one to a full collection; chunks fault in
    /// only the room added.
    /// </summary>
    private List<IndexEntry[]> SnapshotBuffer(int total)
    {
        StartSnapshotInterval(total);
        if (_snapshotCapacity < total)
        {
            // Chunks on their way are waited for: faulting in others beside them would only compete with them.
            foreach (Task<IndexEntry[][]> coming in _snapshotChunksComing)
            {
                foreach (IndexEntry[] arrived in coming.GetAwaiter().GetResult())
                {
                    AddSnapshotChunk(arrived);
                }
            }

            _snapshotChunksComing.Clear();
            _snapshotCapacityComing = 0;
            if (_snapshotCapacity < total)
            {
                foreach (IndexEntry[] added in FaultedIn(AtLeastMinimum(Roomy(total) - _snapshotCapacity), _snapshotChunkEntries))
                {
                    AddSnapshotChunk(added);
                }

                _snapshotBuffersFaultedInline++;
            }
        }

        if (_snapshotChunksComing.Count == 0 && _snapshotCapacity < total + (total / 4))
        {
            Grow(Roomy(total));
        }

        return _snapshotChunks;
    }

    /// <summary>A snapshot's interval starts (at open, and at each snapshot) with <paramref name="entries"/> live
    /// entries at the log's tail: <see cref="GrowSnapshotBufferAhead"/> projects the growth from there.</summary>
    private void StartSnapshotInterval(int entries)
    {
        _lastSnapshotEntries = entries;
        _lastSnapshotWal = _log.TailAddress;
        _snapshotBufferChecked = false;
    }

    private void AddSnapshotChunk(IndexEntry[] chunk)
    {
        _snapshotChunks.Add(chunk);
        _snapshotCapacity += chunk.Length;
    }

    /// <summary>Tests: snapshots that found no buffer large enough ready and faulted one in while holding writes.</summary>
    internal int SnapshotBuffersFaultedInline => Volatile.Read(ref _snapshotBuffersFaultedInline);

    private int _snapshotBuffersFaultedInline;

    /// <summary>Tests: the snapshot buffer's chunks (read while no snapshot is taken: the committer adds to them).</summary>
    internal IndexEntry[][] SnapshotChunksForTests => [.. _snapshotChunks];

    /// <summary>Starts faulting in, on a pool thread, the chunks that bring the buffer (with those already on their way)
    /// to room for <paramref name="entries"/>.</summary>
    private void Grow(long entries)
    {
        long more = entries - _snapshotCapacity - _snapshotCapacityComing;
        if (more <= 0)
        {
            return;
        }

        // Counted as it will be made, so that what is on its way is known exactly.
        more = AtLeastMinimum(more);
        _snapshotCapacityComing += more;
        int chunkEntries = _snapshotChunkEntries;
        _snapshotChunksComing.Add(Task.Run(() => FaultedIn(more, chunkEntries)));
    }

    private static long Roomy(int total) => total + (total / 2L);

    /// <summary>Entries per chunk of the snapshot buffer (4 MiB): a mailbox spans few of them. The last chunk of each
    /// growth holds only the room that growth adds, so a store of a few mailboxes does not fault in megabytes.</summary>
    internal const int SnapshotChunkEntries = 1 << 16;

    private const int MinSnapshotEntries = 1024;

    /// <summary>The room one growth adds: at least <see cref="MinSnapshotEntries"/>, so small stores do not grow a few
    /// entries at a time.</summary>
    private static long AtLeastMinimum(long entries) => Math.Max(entries, MinSnapshotEntries);

    /// <summary>Chunks of <paramref name="chunkEntries"/> (the last one fewer) with room for exactly
    /// <paramref name="entries"/> entries, every page of them written.</summary>
    private static IndexEntry[][] FaultedIn(long entries, int chunkEntries)
    {
        var chunks = new IndexEntry[(int)((entries + chunkEntries - 1) / chunkEntries)][];
        for (int i = 0; i < chunks.Length; i++)
        {
            chunks[i] = new IndexEntry[(int)Math.Min(chunkEntries, entries - ((long)i * chunkEntries))];
            chunks[i].AsSpan().Clear(); // writes every page now, not under the lock
        }

        return chunks;
    }

    /// <summary>Tests: the Merkle log's 64 KiB blocks held for its levels below <see cref="MerkleLog.KeptLevel"/>.</summary>
    internal int MerkleLowerBlocksHeld
    {
        get
        {
            lock (_state)
            {
                return _merkle.LowerBlocksHeld;
            }
        }
    }

    /// <summary>Mailboxes held in memory (tests: emptied ones go).</summary>
    internal int MailboxCount
    {
        get
        {
            lock (_state)
            {
                return _mailboxes.Count;
            }
        }
    }

    /// <summary>Tests: the sequence numbers the mailbox index holds for <paramref name="recipient"/> (reads skip an entry
    /// whose envelope is gone, so they would not show one that should not be there).</summary>
    internal ulong[] IndexedSeqs(ReadOnlySpan<byte> recipient)
    {
        lock (_state)
        {
            if (!_mailboxes.TryGetValue(new Key32(recipient), out Mailbox? box))
            {
                return [];
            }

            var live = new IndexEntry[box.Count];
            box.CopyLive(live);
            return [.. live.Select(e => e.Seq)];
        }
    }

    /// <summary>Tests: makes writes of the envelope table's log fail as on a full disk while it returns true.</summary>
    internal Func<bool>? FailTableWriteForTests
    {
        get => _kv.FailTableWriteForTests;
        set => _kv.FailTableWriteForTests = value;
    }

    /// <summary>Tests: the commit file's <see cref="CommitSlotFile.RecordEvery"/>, so that which commit writes a record to
    /// it does not depend on how fast the machine runs.</summary>
    internal TimeSpan CommitRecordEveryForTests
    {
        get => _commitFile.RecordEvery;
        set => _commitFile.RecordEvery = value;
    }

    /// <summary>Tests: the envelope table's device, to make its reads fail as on a device error or for lack of open
    /// files (<see cref="DirectFileDevice.FailReadForTests"/>, <see cref="DirectFileDevice.FailReadErrnoForTests"/>).</summary>
    internal DirectFileDevice TableDeviceForTests => _kv.DeviceForTests;

    /// <summary>Tests that damage the table's files and then repair them: a compaction between the two would go past
    /// the damaged records (reporting them), and the repaired bytes would no longer be read.</summary>
    internal bool CompactionOffForTests { get; set; }

    /// <summary>Tests: true from the start of a checkpoint in the background until an idle committer has finished it (log
    /// truncation committed): while it is, the store's files change without a request (a copy of them then need not be
    /// what a crash leaves).</summary>
    internal bool BackgroundCheckpointUnfinished { get => Volatile.Read(ref _backgroundCheckpointUnfinished); private set => Volatile.Write(ref _backgroundCheckpointUnfinished, value); }

    private bool _backgroundCheckpointUnfinished;

    /// <summary>Tests: checkpoints started in the background so far (one may start just after
    /// <see cref="BackgroundCheckpointUnfinished"/> read false: a committer that found one due before the test changed
    /// the interval).</summary>
    internal long BackgroundCheckpointsStarted => Interlocked.Read(ref _backgroundCheckpointsStarted);

    private long _splitApplies;
    private long _backgroundCheckpointsStarted;

    /// <summary>Tests: compaction steps run between groups or while idle (not in a checkpoint's pause).</summary>
    internal long CompactionStepsBetweenGroups { get; private set; }

    /// <summary>What the latest compaction of the envelope table did (null before the first).</summary>
    internal CompactionOutcome? LastCompaction { get; private set; }

    /// <summary>Tests: the envelope table's index bucket and tag for <paramref name="id"/> (see EnvelopeKv.SlotOf).</summary>
    internal (long Bucket, ushort Tag) TableSlotForTests(ReadOnlySpan<byte> id) => _kv.SlotOf(id);

    /// <summary>Tests: table records below this address are read from disk (they were flushed before they left memory).</summary>
    internal long TableHeadAddressForTests => _kv.HeadAddressForTests;

    /// <summary>Write-ahead log appended since the address the last finished checkpoint covers (tests).</summary>
    internal long LogSinceCheckpointForTests => _log.TailAddress - Volatile.Read(ref _checkpointedWal);

    /// <summary>Runs between the table checkpoint and the manifest that names it (tests take what a crash there leaves),
    /// on the thread that then writes the manifest.</summary>
    internal Func<Task>? AfterTableCheckpointForTests { get; set; }

    /// <summary>Runs once leaves.bin and level8.bin are written and flushed, just before the manifest that counts them
    /// (tests take what a crash there leaves).</summary>
    internal Action? BeforeManifestForTests { get; set; }

    /// <summary>Tests: how the open rebuilt the checkpoint's Merkle tree.</summary>
    internal StoreTreeLoad TreeLoad { get; private set; }

    /// <summary>Tests: leaf hashes of leaves.bin the open hashed into the tree (fewer than 256 from level8.bin).</summary>
    internal long LeavesHashedAtOpen { get; private set; }

    /// <summary>Table checkpoint, new leaf hashes, manifest; then older table checkpoints go. May run beside the
    /// committer: it touches no session and reads the Merkle log under the index lock.</summary>
    private async Task<CheckpointSnapshot> WriteCheckpointAsync(CheckpointSnapshot snapshot)
    {
        Guid token = await _kv.CheckpointAsync().ConfigureAwait(false);
        // The rest writes and flushes files, 20-70 ms each under streaming load (2026-11-30): on a thread of its own, not
        // one of the pool's, which on a small machine are few and also complete the write-ahead log's commits (see
        // CheckpointFileFactory for what blocking them cost).
        return await Task.Factory.StartNew(
            () => WriteCheckpointFiles(snapshot, token), CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default).ConfigureAwait(false);
    }

    /// <summary>The files of a checkpoint whose table checkpoint <paramref name="token"/> is written; blocks.</summary>
    private CheckpointSnapshot WriteCheckpointFiles(CheckpointSnapshot snapshot, Guid token)
    {
        if (AfterTableCheckpointForTests is { } hook)
        {
            hook().GetAwaiter().GetResult();
        }

        // The lock a chunk at a time: puts wait for it, and the leaves since the last checkpoint may be millions.
        Checkpoint.AppendLeaves(StoreDirectory, snapshot.SavedLeaves, snapshot.Manifest.LeafCount, (hashes, first) =>
        {
            lock (_state)
            {
                for (int i = 0; i < hashes.Length / 32; i++)
                {
                    _merkle.LeafHashAt(first + i).CopyTo(hashes[(i * 32)..]);
                }
            }
        });
        // One hash per 256 leaves, held for good: the next open reads these instead of hashing every leaf again. Before
        // the manifest, as leaves.bin: a crash here leaves hashes past the old manifest's count, which an open ignores.
        Checkpoint.AppendKeptHashes(StoreDirectory, snapshot.SavedKept, snapshot.Manifest.LeafCount >> MerkleLog.KeptLevel, (hashes, first) =>
        {
            lock (_state)
            {
                _merkle.CopyKeptHashes(first, hashes);
            }
        });
        BeforeManifestForTests?.Invoke();
        // The checkpoint's folders were made without flushing their names (on the committer's path, where a directory
        // flush would hold every put behind it): flushed here, in the background, before the manifest names them.
        foreach (string folder in (string[])["index-checkpoints", "cpr-checkpoints", string.Empty])
        {
            string path = Path.Combine(_kv.Directory, "checkpoints", folder);
            if (Directory.Exists(path))
            {
                DirectoryFlush.Flush(path);
            }
        }

        Checkpoint.Manifest manifest = snapshot.Manifest with { Token = token };
        long manifestBytes = Checkpoint.Write(StoreDirectory, manifest);
        // Only now may the table segments that compaction freed go: until the manifest named this checkpoint, a crash
        // recovered the previous one, which still reads them.
        _kv.ReleaseFreedSegments();
        _kv.DeleteCheckpointsExcept(token);
        // Timed here, not when the committer picks the result up: that waits for its next group or idle wake (a second).
        MegaNetMetrics.StoreCheckpointDuration.Record(Stopwatch.GetElapsedTime(snapshot.Start).TotalMilliseconds);
        return snapshot with { Manifest = manifest, ManifestBytes = manifestBytes };
    }

    /// <summary>Committer loop only: the checkpoint is on disk, so the log before its address may go (the truncation
    /// reaches the disk with the next commit).</summary>
    private void FinishCheckpoint(CheckpointSnapshot written)
    {
        _savedLeaves = written.Manifest.LeafCount;
        _savedKept = written.Manifest.LeafCount >> MerkleLog.KeptLevel;
        _checkpointedWal = written.Manifest.WalAddress;
        _lastCheckpointBytes = written.ManifestBytes + _kv.IndexBytes;
        // leaves.bin holds these leaves for good now (the manifest counts them, and later checkpoints append after
        // them), so proofs can read their lower hashes back from it.
        lock (_state)
        {
            _merkle.ReleaseSaved(_savedLeaves);
        }

        // Not past where a recovery would start scanning (the newest commit record, which may be up to a second older
        // than the checkpoint): FASTER asks for a new record at the new begin address and deletes the segments below it
        // whether or not that record could be written, and a failed one (reported only at the next commit) would leave
        // the newest readable record pointing into a deleted segment, so the store, every record after the checkpoint
        // still on disk, would refuse to open. The rest goes at the next checkpoint (none while no record is readable).
        long until = Math.Min(written.Manifest.WalAddress, _commitFile.NewestUntil ?? _log.BeginAddress);
        if (until > _log.BeginAddress)
        {
            _log.TruncateUntil(until);
        }

        _lastCheckpoint = Stopwatch.GetTimestamp();
    }

    /// <summary>
    /// Prepare stage (committer loop only): decides every request of the group in order, as if the groups still in
    /// flight were applied, and enqueues the log records. Nothing becomes visible to readers here.
    /// </summary>
    private PreparedGroup Prepare(List<Request> group, int items)
    {
        var prepared = new PreparedGroup(++_generation, Stopwatch.GetTimestamp(), _groupLists.Rent(items));
        DropAppliedPending();

        // Mailbox usage of the put recipients no in-flight group touches: stable while this group is prepared (an ack
        // being applied can only lower it, which makes the quota check conservative). One short lock for the whole group.
        // (Acks need none: what they may delete is bounded by the log index, see SeqFor.)
        Dictionary<Key32, (int Count, long Bytes)> baseUsage = _baseUsage;
        baseUsage.Clear();
        long now = _options.Clock.GetUtcNow().ToUnixTimeMilliseconds();
        long live, liveGeneration;
        lock (_state)
        {
            live = _liveBytes;
            liveGeneration = _liveGeneration;
            foreach (Request r in group)
            {
                foreach (PutRequest? put in r.Puts ?? [])
                {
                    ReadOnlySpan<byte> address = put is null ? default : put.Recipient.Span;
                    if (address.Length == 32)
                    {
                        var recipient = new Key32(address);
                        if (!_pendingUsage.ContainsKey(recipient))
                        {
                            baseUsage.TryAdd(recipient, Usage(recipient, now));
                        }
                    }
                }
            }
        }

        // Groups applied since are in live already: counting them again refused puts there was room for.
        long heldBefore = live;
        foreach ((long generation, _, _, long putBytes) in _pendingByGeneration)
        {
            if (generation > liveGeneration)
            {
                heldBefore += putBytes;
            }
        }

        _heldForPrepare = heldBefore;

        // Kept until the group is applied, then reused (DropAppliedPending).
        List<Key32> ids = _keyLists.Rent(items);
        List<Key32> recipients = _keyLists.Rent(items);
        foreach (Request r in group)
        {
            if (r.Checkpoint)
            {
                continue;
            }

            if (r.Ack is { } ack)
            {
                // An ack deletes only mail that exists at its place in the log. The apply stage adds a group's puts
                // before its acks, replay goes in log order: without this, an ack of a sequence number that a later
                // put of the same group received deleted that put live, and a restart brought it back. Every sequence
                // number given so far is at most the next log index (see SeqFor).
                ulong given = SeqFor(_nextLogIndex - 1);
                if (ack.Seqs.Any(seq => seq > given))
                {
                    r.Ack = ack = ack with { Seqs = ack.Seqs.Where(seq => seq <= given).ToArray() };
                }

                _log.Enqueue(EncodeAck(ack));
                prepared.NeedsCommit = true;
                prepared.Acks.Add(r);
                continue;
            }

            prepared.Puts.Add(r);
            PutRequest?[] puts = r.Puts!;
            for (int item = 0; item < puts.Length; item++)
            {
                if (puts[item] is { } put)
                {
                    PreparePut(prepared, r, item, put, baseUsage, ids, recipients);
                }
            }
        }

        _pendingByGeneration.Enqueue((prepared.Generation, ids, recipients, _heldForPrepare - heldBefore));
        return prepared;
    }

    // One put of a request, in the group's order (see Prepare).
    private void PreparePut(PreparedGroup prepared, Request r, int item, PutRequest put, Dictionary<Key32, (int Count, long Bytes)> baseUsage,
        List<Key32> ids, List<Key32> recipients)
    {
        byte[] id = put.EnvelopeId.IsEmpty ? EnvelopeId(put.Envelope.Span) : put.EnvelopeId.ToArray();
        var key = new Key32(id);

        // Pending first, then the table: the apply stage writes a group's table records before it marks the group
        // applied, and only then does DropAppliedPending forget it, so one of the two always sees an earlier put.
        if (_pendingIds.TryGetValue(key, out var pending))
        {
            prepared.Accepted.Add((r, item, pending.Stored, false));
            return;
        }

        // The table only when the caller's own lookup does not settle it. That lookup found nothing after the mark was
        // read: every group applied by then was in the table for it to see, and every later one is still in
        // _pendingIds unless forgotten since. (The read missed the cache for nearly every put: 2.2 % of the node's CPU
        // samples while streaming, 2026-12-01.)
        bool settled = put.NotFoundAtMark is { } mark && mark >= _idsForgottenThrough && mark > Volatile.Read(ref _marksUnsureThrough);
        var recipient = new Key32(put.Recipient.Span);
        if (!settled)
        {
            TableRead read = _kv.GetMetaForPrepare(id);
            if (read.Value is { } meta && ExpiryOf(meta) > _options.Clock.GetUtcNow().ToUnixTimeMilliseconds())
            {
                prepared.Accepted.Add((r, item, StoredFromMeta(id, meta), false));
                return;
            }

            // A read that went to disk also finds nothing where the record is damaged or could not be read (see
            // TableRead): taken for absent, the replay was stored again, with a new receipt and a second copy for its
            // recipient. While the mailbox holds the envelope, its entry has all the original receipt needs. (Only after
            // a miss on disk: the scan is of the whole mailbox. Once acknowledged, a damaged envelope is stored again.)
            if (read.FromDisk && HeldEntry(recipient, key) is { } held)
            {
                prepared.Accepted.Add((r, item, held, false));
                return;
            }
        }

        (int count, long bytes) = _pendingUsage.TryGetValue(recipient, out var usage)
            ? (usage.Count, usage.Bytes)
            : baseUsage[recipient];
        if (count + 1 > _options.MailboxMaxCount || bytes + put.Envelope.Length > _options.MailboxMaxBytes)
        {
            r.Results![r.ResultStart + item] = new PutResult(null, new QuotaExceededException(
                // The limits only (public in Status): the sender learns that the mailbox is full, not what is in it.
                $"The recipient's mailbox is full (limits {_options.MailboxMaxCount:N0} envelopes, {_options.MailboxMaxBytes:N0} bytes). Nothing was stored; retry after the owner fetches and acknowledges mail."));
            return;
        }

        if (_options.MaxHeldBytes > 0 && _heldForPrepare + put.Envelope.Length > _options.MaxHeldBytes)
        {
            _refusedForCapSinceSnapshot = true;
            r.Results![r.ResultStart + item] = new PutResult(null, new StoreFullException(
                $"The node holds as much mail as its operator allows ({_options.MaxHeldBytes:N0} bytes). Nothing was stored; retry later or send through another node."));
            return;
        }

        long logIndex = _nextLogIndex++;
        ulong seq = SeqFor(logIndex);
        // Serialized straight into the log's page (a staging copy of each envelope was 1-2 % of the node's CPU).
        _log.Enqueue(new PutLogEntry(id, put, seq, logIndex));

        var stored = new Stored(recipient, put.ExpiresAt, put.Envelope.Length, id, logIndex, seq);
        _pendingIds[key] = (stored, prepared.Generation);
        _pendingUsage[recipient] = (count + 1, bytes + put.Envelope.Length, prepared.Generation);
        _heldForPrepare += put.Envelope.Length;
        ids.Add(key);
        recipients.Add(recipient);
        prepared.Accepted.Add((r, item, stored, true));
        prepared.NeedsCommit = true;
    }

    // Forgets the pending usage of groups the apply stage has finished (their effects are in the table and indexes),
    // and the ids of the oldest of them beyond RetainedIds (all of them when forgetAllIds: nothing may be in flight).
    private void DropAppliedPending(bool forgetAllIds = false)
    {
        long applied = Volatile.Read(ref _appliedGeneration);
        while (_pendingByGeneration.TryPeek(out var oldest) && oldest.Generation <= applied)
        {
            _pendingByGeneration.Dequeue();
            foreach (Key32 recipient in oldest.Recipients)
            {
                if (_pendingUsage.TryGetValue(recipient, out var u) && u.Generation <= applied)
                {
                    _pendingUsage.Remove(recipient);
                }
            }

            _keyLists.Return(oldest.Recipients);
            _retainedIds.Enqueue((oldest.Generation, oldest.Ids));
            _retainedIdCount += oldest.Ids.Count;
        }

        while ((forgetAllIds || _retainedIdCount > RetainedIds) && _retainedIds.TryDequeue(out var old))
        {
            _retainedIdCount -= old.Ids.Count;
            foreach (Key32 id in old.Ids)
            {
                if (_pendingIds.TryGetValue(id, out var p) && p.Generation <= old.Generation)
                {
                    _pendingIds.Remove(id);
                }
            }

            _idsForgottenThrough = old.Generation;
            _keyLists.Return(old.Ids);
        }
    }

    /// <summary>
    /// Apply stage: after the previous group has been applied and this group's commit returned, writes the table, then
    /// the indexes and the Merkle leaves, signs a new head and answers. Never throws: a failure fails the group and
    /// faults the store.
    /// </summary>
    private async Task ApplyAfterCommitAsync(Task previous, PreparedGroup prepared, Task commit)
    {
        await previous.ConfigureAwait(false);
        IEnumerable<Request> everyone = prepared.Puts.Concat(prepared.Acks);
        try
        {
            await commit.ConfigureAwait(false);
            if (_fault is { } fault)
            {
                // An earlier group failed: its records may or may not be on disk, so nothing after it is acknowledged.
                throw fault;
            }
        }
        catch (Exception e)
        {
            _fault ??= e;
            FailAll(everyone, e);
            return;
        }

        try
        {
            long applying = Stopwatch.GetTimestamp();
            Apply(prepared);
            MegaNetMetrics.StoreApplyDuration.Record(Stopwatch.GetElapsedTime(applying).TotalMilliseconds);
        }
        catch (Exception e)
        {
            // Committed but not applied: a reopen replays it from the log.
            _fault ??= e;
            FailAll(everyone, e);
        }

        // Answered and applied: nothing reads the group's list after this. (A group that failed above keeps its list,
        // which the GC takes.)
        _groupLists.Return(prepared.Accepted);
    }

    private void Apply(PreparedGroup prepared)
    {
        // The group's leaf hashes go into one pooled buffer, not an array per leaf.
        byte[] leaves = ArrayPool<byte>.Shared.Rent(Math.Max(1, prepared.Accepted.Count) * MerkleTree.HashSize);
        try
        {
            Apply(prepared, leaves);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(leaves);
        }
    }

    private void Apply(PreparedGroup prepared, byte[] leafBuffer)
    {
        // The table first, outside the index lock: a reader may see an envelope before its mailbox entry, never an
        // entry without its envelope. Leaf hashes too, so the lock covers only the index and tree updates.
        int leafCount = WriteTable(prepared.Accepted, leafBuffer);

        long size;
        byte[] root;
        List<(Key32 Recipient, IndexEntry Entry)>? acked = prepared.Acks.Count > 0 ? [] : null;
        lock (_state)
        {
            foreach ((Request _, int _, Stored stored, bool isNew) in prepared.Accepted)
            {
                if (isNew)
                {
                    // Reported here only: an open reports each mailbox once, when whole (end of Restore).
                    NoteUsage(stored.Recipient, AddEntry(stored));
                }
            }

            _liveGeneration = prepared.Generation;

            for (int i = 0; i < leafCount; i++)
            {
                _merkle.AppendLeafHash(leafBuffer.AsSpan(i * MerkleTree.HashSize, MerkleTree.HashSize));
            }

            foreach (Request r in prepared.Acks)
            {
                r.AckedCount = ApplyAck(r.Ack!, acked);
            }

            size = _merkle.Size;
            root = leafCount > 0 ? _merkle.Root(size) : [];
        }

        // The acknowledged envelopes' bytes go after the lock, as the puts' records went before it: a table write can
        // wait (for a page flush, or for ever while a full disk fails it), and under the lock it held up every reader
        // of the indexes (Fetch, Subscribe, Status, proofs, the log-size gauge). The entries already left the indexes,
        // so no reader finds them any more; the apply stage is serial and a checkpoint's snapshot waits for it, so the
        // deletes still reach the table before the next group's writes and before any snapshot, as they did.
        DeleteAckedBytes(acked);

        if (leafCount > 0)
        {
            // Signed outside the lock; only this stage changes the tree, so the head still describes its newest size.
            _head = SignHead(size, root);
        }

        Volatile.Write(ref _appliedGeneration, prepared.Generation);
        SignedTreeHead current = GetTreeHead();
        foreach ((Request r, int item, Stored stored, bool isNew) in prepared.Accepted)
        {
            // Receipts carry the head signed after this commit, which covers every leaf in it. Made here, once.
            r.Results![r.ResultStart + item] = new PutResult(stored.Receipt(current, duplicate: !isNew), null);
        }

        foreach (Request r in prepared.Puts)
        {
            // Every put of the request is in this group and answered in results (quota refusals by Prepare).
            r.Done.TrySetResult(null);
        }

        foreach (Request r in prepared.Acks)
        {
            r.Done.TrySetResult(null);
        }

        MegaNetMetrics.StoreCommitLatency.Record(Stopwatch.GetElapsedTime(prepared.Start).TotalMilliseconds);
        if (MailArrived is { } arrived)
        {
            // One buffer for the stage (it applies one group at a time), lent to the listeners for each call: an array per
            // stored envelope was 56 bytes of garbage each, and the node always listens, mostly with nobody subscribed.
            byte[] address = _arrivedAddress;
            foreach ((Request _, int _, Stored stored, bool isNew) in prepared.Accepted)
            {
                if (isNew)
                {
                    try
                    {
                        stored.Recipient.CopyTo(address);
                        arrived(address, stored.MailboxSeq);
                    }
                    catch (Exception)
                    {
                        // The mail is committed and answered; a listener's failure is not the store's, and must not
                        // be taken for a failed commit (that would refuse every later write). Counted, so that a
                        // listener that keeps failing (live delivery stopped) shows; the store has no logger.
                        MegaNetMetrics.StoreMailListenerFailures.Add(1);
                    }
                }
            }
        }
    }

    /// <summary>
    /// Writes the group's new puts to the table and their leaf hashes, in log order, into <paramref name="leafBuffer"/>;
    /// returns how many. A group of at least <see cref="ApplyChunkMin"/> new puts for each of two or more writers is
    /// split among up to <see cref="StoreOptions.ApplyThreads"/> of them, each on a table session of its own: the apply
    /// stage is one group at a time, and on a many-core machine its table writes and hashes need not be.
    /// </summary>
    private int WriteTable(List<(Request Request, int Item, Stored Stored, bool IsNew)> accepted, byte[] leafBuffer)
    {
        if (_options.ApplyThreads == 1)
        {
            // The default: no count of the new puts first, on the stage that takes one group at a time.
            return WriteRange(0, accepted, 0, accepted.Count, leafBuffer, 0);
        }

        int fresh = 0;
        foreach ((Request _, int _, Stored _, bool isNew) in accepted)
        {
            fresh += isNew ? 1 : 0;
        }

        int writers = Math.Min(_options.ApplyThreads, fresh / ApplyChunkMin);
        if (writers <= 1)
        {
            return WriteRange(0, accepted, 0, accepted.Count, leafBuffer, 0);
        }

        // Contiguous ranges of as many new puts each (replays cost a writer next to nothing: a group that begins with a
        // retried call's replays cut by items left whole ranges with no new put); a range's leaves follow the new puts
        // of the ranges before it. The last range takes the rest, replays after the last new put included.
        var ranges = new (int Start, int End, int FirstLeaf)[writers];
        int range = 0, start = 0, firstLeaf = 0, leaf = 0;
        for (int i = 0; i < accepted.Count && range < writers - 1; i++)
        {
            if (accepted[i].IsNew && ++leaf == (int)((long)fresh * (range + 1) / writers))
            {
                ranges[range++] = (start, i + 1, firstLeaf);
                (start, firstLeaf) = (i + 1, leaf);
            }
        }

        ranges[writers - 1] = (start, accepted.Count, firstLeaf);
        _lastSplit = (ranges, fresh);

        _kv.EnsureWriters(writers);
        try
        {
            Parallel.For(0, writers, new ParallelOptions { MaxDegreeOfParallelism = writers }, w =>
                WriteRange(w, accepted, ranges[w].Start, ranges[w].End, leafBuffer, ranges[w].FirstLeaf));
        }
        catch (AggregateException e) when (e.InnerExceptions.Count > 0)
        {
            // The failure itself (a full disk names its device), as a single writer would have thrown it: the first
            // writer's to fail in time, which need not be the earliest range's.
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(e.InnerExceptions[0]);
        }

        Interlocked.Increment(ref _splitApplies);
        return fresh;
    }

    // Items [start, end) of a group on table writer session `writer`; the new puts' leaf hashes from `firstLeaf` on.
    // Returns how many new puts it wrote.
    private int WriteRange(int writer, List<(Request Request, int Item, Stored Stored, bool IsNew)> accepted, int start, int end, byte[] leafBuffer, int firstLeaf)
    {
        TableWriterFaultForTests?.Invoke(writer);
        Span<byte> meta = stackalloc byte[EnvelopeKv.MetaLength];
        int leaf = firstLeaf;
        for (int i = start; i < end; i++)
        {
            (Request r, int item, Stored stored, bool isNew) = accepted[i];
            if (isNew)
            {
                // The next put's index bucket comes into the cache while this one is written.
                if (i + 1 < end && accepted[i + 1].IsNew)
                {
                    _kv.Prefetch(accepted[i + 1].Stored.EnvelopeId);
                }

                EncodeMeta(stored, meta);
                _kv.Put(writer, stored.EnvelopeId, meta, r.Puts![item]!.Envelope.Span);
                MerkleTree.LeafHash(stored.EnvelopeId, leafBuffer.AsSpan(leaf++ * MerkleTree.HashSize, MerkleTree.HashSize));
            }
        }

        return leaf - firstLeaf;
    }

    /// <summary>New puts each of the apply stage's table writers takes at least (<see cref="StoreOptions.ApplyThreads"/>):
    /// below that a hand-off to another thread costs about what it saves.</summary>
    internal const int ApplyChunkMin = 256;

    /// <summary>Tests: groups whose table writes were split among writers.</summary>
    internal long SplitAppliesForTests => Interlocked.Read(ref _splitApplies);

    /// <summary>Tests: the new puts each writer of the last split group took (from its ranges' first leaves).</summary>
    internal int[]? LastSplitForTests => _lastSplit is ({ } ranges, int fresh)
        ? [.. ranges.Select((r, w) => (w + 1 < ranges.Length ? ranges[w + 1].FirstLeaf : fresh) - r.FirstLeaf)]
        : null;

    private ((int Start, int End, int FirstLeaf)[] Ranges, int Fresh)? _lastSplit;

    /// <summary>Tests: called with the writer's number as each table writer of the apply stage starts its range, to
    /// throw there as a failing table would.</summary>
    internal Action<int>? TableWriterFaultForTests { get; set; }

    /// <summary>
    /// The mailbox sequence number of the put at <paramref name="logIndex"/>: one past it, so sequence numbers grow
    /// store-wide and an emptied mailbox can be forgotten without a later put reusing a number a reader's cursor
    /// already passed.
    /// </summary>
    /// <remarks>Stores written before 2026-11-29 numbered each mailbox 1, 2, 3…; such a number is never above its put's
    /// log index + 1, so numbers given now still come after every earlier one in the same mailbox.</remarks>
    private static ulong SeqFor(long logIndex) => (ulong)logIndex + 1;

    // What counts against the quota: live, unexpired mail. Expired mail stays in the index until the next sweep (up to
    // a checkpoint interval), so it is counted out here, but only when the mailbox is near a limit (a scan).
    private (int Count, long Bytes) Usage(Key32 recipient, long nowUnixMs) =>
        _mailboxes.TryGetValue(recipient, out Mailbox? box) ? Usage(box, nowUnixMs) : (0, 0);

    private (int Count, long Bytes) Usage(Mailbox box, long nowUnixMs) =>
        box.Count < _options.MailboxMaxCount && box.Bytes + _options.MaxEnvelopeBytes <= _options.MailboxMaxBytes
            ? (box.Count, box.Bytes)
            : box.Unexpired(nowUnixMs);

    // Replay: one logged put, under the index lock.
    private void Apply(Stored stored, ReadOnlySpan<byte> envelope)
    {
        Span<byte> meta = stackalloc byte[EnvelopeKv.MetaLength];
        EncodeMeta(stored, meta);
        _kv.Put(stored.EnvelopeId, meta, envelope);
        AddEntry(stored);
        _merkle.Append(stored.EnvelopeId);
    }

    private Mailbox AddEntry(in Stored stored) => AddEntry(stored.Recipient, stored.Entry);

    private Mailbox AddEntry(Key32 recipient, in IndexEntry entry)
    {
        if (!_mailboxes.TryGetValue(recipient, out Mailbox? box))
        {
            box = new Mailbox();
            _mailboxes[recipient] = box;
        }

        long before = box.Bytes;
        box.Add(entry);
        _liveBytes += box.Bytes - before;
        return box;
    }

    /// <inheritdoc/>
    // Written under the index lock; an aligned long is read whole (FASTER runs on 64-bit only), and a locked read on
    // every admitted envelope would cost a cache line's ownership.
    public long HeldBytes => Volatile.Read(ref _liveBytes);

    /// <inheritdoc/>
    public MailboxUsage ReportedUsage(ReadOnlySpan<byte> recipient) =>
        recipient.Length == 32 && Volatile.Read(ref _reportedCount) > 0 && _reported.TryGetValue(new Key32(recipient), out MailboxUsage usage)
            ? usage
            : default;

    // Under the index lock, after the recipient's mailbox grew, or shrank while reported: keeps _reported current.
    private void NoteUsage(Key32 recipient, Mailbox box)
    {
        if (box.Count < _reportFromCount && box.Bytes < _reportFromBytes)
        {
            if (box.Reported)
            {
                _reported.TryRemove(recipient, out _);
                box.Reported = false;
                Volatile.Write(ref _reportedCount, _reportedCount - 1);
            }

            return;
        }

        _reported[recipient] = new MailboxUsage(box.Count, box.Bytes);
        if (!box.Reported)
        {
            box.Reported = true;
            Volatile.Write(ref _reportedCount, _reportedCount + 1);
        }
    }

    // ceil(percent x quota / 100), exact for any quota.
    private static long CeilingPercent(int percent, long quota) => (long)(((Int128)percent * quota + 99) / 100);

    private bool RemoveEntry(Mailbox box, ulong seq, out IndexEntry removed)
    {
        if (!box.Remove(seq, out removed))
        {
            return false;
        }

        _liveBytes -= removed.Length;
        return true;
    }

    // An empty mailbox holds nothing a later put needs (sequence numbers come from the log index), so it goes: a relay
    // sees mail for millions of addresses over its life, and an index kept per address ever seen only grows.
    private void ForgetIfEmpty(Key32 recipient, Mailbox box)
    {
        if (box.Count == 0)
        {
            _mailboxes.Remove(recipient);
        }
    }

    // Under the index lock: removes the acknowledged entries and adds them to removed, with the recipient, whose bytes
    // the caller deletes from the table after letting go of the lock (DeleteAckedBytes).
    private int ApplyAck(AckRequest ack, List<(Key32 Recipient, IndexEntry Entry)>? removed)
    {
        var recipient = new Key32(ack.Recipient);
        if (!_mailboxes.TryGetValue(recipient, out Mailbox? box))
        {
            return 0;
        }

        int count = 0;
        foreach (ulong seq in ack.Seqs)
        {
            if (RemoveEntry(box, seq, out IndexEntry entry))
            {
                removed!.Add((recipient, entry));
                count++;
            }
        }

        if (box.Reported)
        {
            NoteUsage(recipient, box);
        }

        ForgetIfEmpty(recipient, box);
        return count;
    }

    // The bytes go; the metadata stays until expiry so a replay still gets its original receipt. Apply stage (or
    // replay) only, outside the index lock.
    //
    // An entry whose envelope expired may no longer own the table's record of its id: an expired record counts as none,
    // so a put of the same id could be stored anew (a new entry, a new record over the old one; the store refuses
    // expired envelopes, so only with a clock that went back), and a crash before the sweep's checkpoint brought the
    // old entry back. Acknowledging the old entry then wrote its metadata, without bytes, over the new put's record,
    // which was lost. Only the record of expired mail can be taken over, so only entries expired by now are looked
    // up before the write (a read that may go to disk, on the stage that applies puts), live and in replay.
    private void DeleteAckedBytes(List<(Key32 Recipient, IndexEntry Entry)>? acked)
    {
        if (acked is null)
        {
            return;
        }

        long now = _options.Clock.GetUtcNow().ToUnixTimeMilliseconds();
        Span<byte> id = stackalloc byte[32];
        Span<byte> meta = stackalloc byte[EnvelopeKv.MetaLength];
        foreach ((Key32 recipient, IndexEntry entry) in acked)
        {
            BeforeAckDeleteForTests?.Invoke();
            entry.Id.CopyTo(id);
            if (entry.ExpiresUnixMs <= now && (_kv.GetMetaOnWriter(id) is not { } current || LogIndexOf(current) != entry.LogIndex))
            {
                continue; // the record is gone, or a later put of this id owns it
            }

            EncodeMeta(recipient, entry, meta);
            _kv.DeleteBytes(id, meta);
        }
    }

    /// <summary>Tests: runs before each table delete of an acknowledged envelope's bytes (to stall one).</summary>
    internal Action? BeforeAckDeleteForTests { get; set; }

    /// <summary>Loads the checkpoint's indexes and leaves (if any), then replays the log after it.</summary>
    private void Restore(Checkpoint.Manifest? manifest, RecoveryReporter recovery, CancellationToken cancellationToken)
    {
        long from = _log.BeginAddress;
        long checkpointed = 0;
        if (manifest is not null && manifest.WalAddress > _log.CommittedUntilAddress)
        {
            // The checkpoint was taken with everything before its address committed, so a log that ends earlier lost
            // committed records (a damaged entry where recovery stopped, or a log older than the manifest). Opened
            // anyway, new puts would go below the checkpoint's address, be acknowledged, and never be replayed.
            throw Corrupt($"it ends at address {_log.CommittedUntilAddress}, before address {manifest.WalAddress}, which the checkpoint says was committed");
        }

        if (manifest is not null)
        {
            lock (_state)
            {
                foreach ((byte[] address, _, ReadOnlySequence<IndexEntry> entries) in manifest.Mailboxes)
                {
                    checkpointed += (int)entries.Length;
                    var key = new Key32(address);
                    foreach (ReadOnlyMemory<IndexEntry> run in entries)
                    {
                        foreach (IndexEntry e in run.Span)
                        {
                            AddEntry(key, e);
                        }
                    }
                }

                Checkpoint.CheckLeavesLength(StoreDirectory, manifest.LeafCount);
                TreeLoad = LoadSavedLevels(manifest);
                if (TreeLoad != StoreTreeLoad.SavedLevels)
                {
                    _merkle.Clear();
                }

                HashSavedLeaves(manifest.LeafCount);
                // A damaged hash would otherwise become a signed tree head that contradicts the ones handed out, and
                // every older receipt's proof would stop verifying, without a word.
                if (manifest.LeavesRoot is { } root && !_merkle.Root(manifest.LeafCount).AsSpan().SequenceEqual(root))
                {
                    if (TreeLoad != StoreTreeLoad.SavedLevels)
                    {
                        throw Checkpoint.LeavesDamaged(StoreDirectory, manifest.LeafCount);
                    }

                    // level8.bin (or the few leaves hashed after it) changed since: leaves.bin, whole, decides.
                    TreeLoad = StoreTreeLoad.LevelsMismatch;
                    _merkle.Clear();
                    HashSavedLeaves(manifest.LeafCount);
                    if (!_merkle.Root(manifest.LeafCount).AsSpan().SequenceEqual(root))
                    {
                        throw Checkpoint.LeavesDamaged(StoreDirectory, manifest.LeafCount);
                    }
                }

                // Written whole at the next checkpoint unless it made the root.
                _savedKept = TreeLoad == StoreTreeLoad.SavedLevels ? manifest.LeafCount >> MerkleLog.KeptLevel : 0;
                _savedLeaves = manifest.LeafCount;
            }

            from = Math.Max(from, manifest.WalAddress);
            _checkpointedWal = manifest.WalAddress;
        }

        recovery.Loaded(from, _log.CommittedUntilAddress, manifest?.LeafCount ?? 0, manifest?.Mailboxes.Count ?? 0, checkpointed, TreeLoad, LeavesHashedAtOpen);

        long replayed;
        try
        {
            replayed = Replay(from, recovery, cancellationToken);
        }
        catch (FasterException e)
        {
            // An entry in a page read from disk whose checksum fails (damage after the commit that covers it: a bad
            // disk, a hand): FASTER's own words ("Invalid checksum found during scan, skipping") name neither the file
            // nor what to do, and the open must stop, not go on without what follows.
            throw Corrupt($"replaying it from address {from} (the {(manifest is null ? "log's start" : "checkpoint")}) to {_log.CommittedUntilAddress} failed: {e.Message}");
        }

        // Mailboxes are reported once, when whole, rather than at each of their entries.
        long waiting = 0;
        lock (_state)
        {
            foreach ((Key32 address, Mailbox box) in _mailboxes)
            {
                NoteUsage(address, box);
                waiting += box.Count;
            }

            recovery.Recovered(replayed, _merkle.Size, _mailboxes.Count, waiting);
        }
    }

    /// <summary>
    /// Appends the checkpoint's whole 256-leaf blocks to the (empty) Merkle log by their hashes in level8.bin, streamed in
    /// 64 KiB reads; returns <see cref="StoreTreeLoad.SavedLevels"/>, or why the file cannot serve (the caller then hashes
    /// every leaf). Whether its hashes are right only the root can tell, once the leaves after them are appended.
    /// </summary>
    private StoreTreeLoad LoadSavedLevels(Checkpoint.Manifest manifest)
    {
        if (manifest.LeavesRoot is null)
        {
            return StoreTreeLoad.NoRoot;
        }

        string path = Checkpoint.LevelsPath(StoreDirectory);
        long kept = manifest.LeafCount >> MerkleLog.KeptLevel;
        try
        {
            using SafeFileHandle file = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
            if (RandomAccess.GetLength(file) < kept * MerkleTree.HashSize)
            {
                return StoreTreeLoad.LevelsShort;
            }

            byte[] chunk = new byte[1 << 16];
            for (long read = 0; read < kept;)
            {
                int count = (int)Math.Min(chunk.Length / MerkleTree.HashSize, kept - read);
                Span<byte> hashes = chunk.AsSpan(0, count * MerkleTree.HashSize);
                if (Checkpoint.ReadFully(file, hashes, read * MerkleTree.HashSize) < hashes.Length)
                {
                    return StoreTreeLoad.LevelsShort; // cut short while read
                }

                _merkle.AppendSavedBlocks(hashes);
                read += count;
            }

            return StoreTreeLoad.SavedLevels;
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            return StoreTreeLoad.LevelsMissing;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Only a shortcut: leaves.bin holds every leaf, and decides.
            return StoreTreeLoad.LevelsUnreadable;
        }
    }

    /// <summary>Appends the checkpoint's leaf hashes from the Merkle log's size up to <paramref name="count"/>, read from
    /// leaves.bin in 64 KiB reads; the lower levels of what is read are let go as it goes (they are in leaves.bin):
    /// holding them all took 64 bytes per leaf ever stored, and a long-lived node more memory at each start.</summary>
    private void HashSavedLeaves(long count)
    {
        byte[] chunk = new byte[1 << 16];
        for (long read = _merkle.Size; read < count;)
        {
            int n = (int)Math.Min(chunk.Length / MerkleTree.HashSize, count - read);
            Span<byte> hashes = chunk.AsSpan(0, n * MerkleTree.HashSize);
            Checkpoint.ReadLeafHashes(StoreDirectory, read, hashes);
            for (int i = 0; i < n; i++)
            {
                _merkle.AppendLeafHash(hashes.Slice(i * MerkleTree.HashSize, MerkleTree.HashSize));
            }

            read += n;
            LeavesHashedAtOpen += n;
            _merkle.ReleaseSaved(read);
        }
    }

    /// <summary>Replays the committed log from <paramref name="from"/>; returns the records replayed.</summary>
    private long Replay(long from, RecoveryReporter recovery, CancellationToken cancellationToken)
    {
        long records = 0;
        using FasterLogScanIterator iterator = _log.Scan(from, _log.CommittedUntilAddress);
        lock (_state)
        {
            while (iterator.GetNext(out byte[] entry, out int length, out long address))
            {
                cancellationToken.ThrowIfCancellationRequested();
                if (_fault is not null)
                {
                    throw TableUnwritableAtOpen();
                }

                records++;
                recovery.Replayed(records, address);
                ReadOnlySpan<byte> r = entry.AsSpan(0, length);
                switch (r.Length > 0 ? r[0] : (byte)0)
                {
                    case PutRecord when r.Length > PutHeader:
                    {
                        byte[] id = r.Slice(1, 32).ToArray();
                        byte[] recipient = r.Slice(33, 32).ToArray();
                        ulong seq = BinaryPrimitives.ReadUInt64LittleEndian(r[65..]);
                        var expires = DateTimeOffset.FromUnixTimeMilliseconds(BinaryPrimitives.ReadInt64LittleEndian(r[73..]));
                        long logIndex = BinaryPrimitives.ReadInt64LittleEndian(r[81..]);
                        if (logIndex != _merkle.Size)
                        {
                            throw Corrupt($"record at address {address} has log index {logIndex}, expected {_merkle.Size}");
                        }

                        Apply(new Stored(new Key32(recipient), expires, length - PutHeader, id, logIndex, seq), r[PutHeader..]);
                        break;
                    }

                    case AckRecord when r.Length >= 1 + 32 + 4:
                    {
                        byte[] recipient = r.Slice(1, 32).ToArray();
                        int n = BinaryPrimitives.ReadInt32LittleEndian(r[33..]);
                        if (n < 0 || r.Length != 37 + 8 * n)
                        {
                            throw Corrupt($"ack record at address {address} is malformed");
                        }

                        var seqs = new ulong[n];
                        for (int i = 0; i < n; i++)
                        {
                            seqs[i] = BinaryPrimitives.ReadUInt64LittleEndian(r[(37 + 8 * i)..]);
                        }

                        // Nothing else runs during replay: the bytes go at once.
                        var acked = new List<(Key32, IndexEntry)>();
                        // Entries expired by now are checked, as live: a swept entry expired before its sweep, which
                        // came before now unless the clock went back (one read from disk each for a whole replay's
                        // acks would slow every open).
                        ApplyAck(new AckRequest(recipient, seqs), acked);
                        DeleteAckedBytes(acked);
                        break;
                    }

                    default:
                        throw Corrupt($"record at address {address} has an unknown type or is truncated");
                }
            }

            _head = SignHead();
        }

        return records;
    }

    /// <summary>The open's replay could not write the table (see <see cref="_tableWriteFailed"/>).</summary>
    private StoreUnavailableException TableUnwritableAtOpen() => new(
        $"The store in '{StoreDirectory}' cannot be opened: replaying its write-ahead log into the envelope table failed ({Describe(_fault!)}). " +
        "Nothing acknowledged was lost (it is all in the log). Free disk space, then start again.", _fault);

    private StoreCorruptException Corrupt(string what) => new(
        $"The store's write-ahead log '{Path.Combine(StoreDirectory, "wal.log")}' is corrupt: {what}. " +
        StoreCorruptException.Advice);

    private SignedTreeHead SignHead() => SignHead(_merkle.Size, _merkle.Root(_merkle.Size));

    private SignedTreeHead SignHead(long size, byte[] root)
    {
        // Never earlier than the head before it (while this store is open): a clock stepped back would otherwise date a
        // larger head before a smaller one. Across a restart only the clock orders them (docs/protocol.md).
        long now = Math.Max(_options.Clock.GetUtcNow().ToUnixTimeMilliseconds(), _head?.TimestampUnixMs ?? 0);
        return new SignedTreeHead(size, root, now, _nodePublicKey, TreeHeadSignature.Sign(_options.NodeSecretKey, size, root, now));
    }

    private static byte[] EnvelopeId(ReadOnlySpan<byte> envelope) => HashAlgorithm.Blake2b_256.Hash(envelope);

    // Table metadata: recipient(32) ‖ mailbox seq(8) ‖ expiry Unix ms(8, offset 40, where compaction reads it) ‖
    // log index(8) ‖ length(4).
    // (From the fields, not through Stored.Entry, which copies the id into a Key32 the metadata does not hold: once per
    // put on the apply stage.)
    private static void EncodeMeta(in Stored stored, Span<byte> meta) =>
        EncodeMeta(stored.Recipient, stored.MailboxSeq, stored.ExpiresAt.ToUnixTimeMilliseconds(), stored.LogIndex, stored.Length, meta);

    private static void EncodeMeta(Key32 recipient, in IndexEntry entry, Span<byte> meta) =>
        EncodeMeta(recipient, entry.Seq, entry.ExpiresUnixMs, entry.LogIndex, entry.Length, meta);

    private static void EncodeMeta(Key32 recipient, ulong seq, long expiresUnixMs, long logIndex, int length, Span<byte> meta)
    {
        recipient.CopyTo(meta);
        BinaryPrimitives.WriteUInt64LittleEndian(meta[32..], seq);
        BinaryPrimitives.WriteInt64LittleEndian(meta[40..], expiresUnixMs);
        BinaryPrimitives.WriteInt64LittleEndian(meta[48..], logIndex);
        BinaryPrimitives.WriteInt32LittleEndian(meta[56..], length);
    }

    // The expiry (Unix ms) of the put a table record stands for; once passed, the record counts as none.
    private static long ExpiryOf(byte[] meta) => BinaryPrimitives.ReadInt64LittleEndian(meta.AsSpan(40));

    // The log index of the put a table record stands for (the same id may be put again once its first put expired).
    private static long LogIndexOf(byte[] meta) => BinaryPrimitives.ReadInt64LittleEndian(meta.AsSpan(48));

    private static Stored StoredFromMeta(byte[] id, byte[] meta)
    {
        return new Stored(new Key32(meta.AsSpan(0, 32)), DateTimeOffset.FromUnixTimeMilliseconds(BinaryPrimitives.ReadInt64LittleEndian(meta.AsSpan(40))),
            BinaryPrimitives.ReadInt32LittleEndian(meta.AsSpan(56)), id, LogIndexOf(meta),
            BinaryPrimitives.ReadUInt64LittleEndian(meta.AsSpan(32)));
    }

    private static PutReceipt ReceiptFromMeta(byte[] id, byte[] meta, SignedTreeHead head) => StoredFromMeta(id, meta).Receipt(head, duplicate: true);

    /// <summary>A put's log record: kind, id, recipient, seq, expiry, log index (little-endian), then the envelope.</summary>
    private readonly struct PutLogEntry(byte[] id, PutRequest put, ulong seq, long logIndex) : ILogEnqueueEntry
    {
        public int SerializedLength => PutHeader + put.Envelope.Length;

        public void SerializeTo(Span<byte> record)
        {
            record[0] = PutRecord;
            id.CopyTo(record[1..]);
            put.Recipient.Span.CopyTo(record[33..]);
            BinaryPrimitives.WriteUInt64LittleEndian(record[65..], seq);
            BinaryPrimitives.WriteInt64LittleEndian(record[73..], put.ExpiresAt.ToUnixTimeMilliseconds());
            BinaryPrimitives.WriteInt64LittleEndian(record[81..], logIndex);
            put.Envelope.Span.CopyTo(record[PutHeader..]);
        }
    }

    private static byte[] EncodeAck(AckRequest ack)
    {
        byte[] record = new byte[37 + 8 * ack.Seqs.Length];
        record[0] = AckRecord;
        ack.Recipient.CopyTo(record, 1);
        BinaryPrimitives.WriteInt32LittleEndian(record.AsSpan(33), ack.Seqs.Length);
        for (int i = 0; i < ack.Seqs.Length; i++)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(record.AsSpan(37 + 8 * i), ack.Seqs[i]);
        }

        return record;
    }

    private sealed record AckRequest(byte[] Recipient, ulong[] Seqs);

    /// <summary>A group between the prepare and apply stages.</summary>
    private sealed class PreparedGroup(long generation, long start, List<(Request Request, int Item, Stored Stored, bool IsNew)> accepted)
    {
        public long Generation { get; } = generation;

        public long Start { get; } = start;

        /// <summary>Each put decided, in the group's order (empty when rented).</summary>
        public List<(Request Request, int Item, Stored Stored, bool IsNew)> Accepted { get; } = accepted;

        /// <summary>The group's put requests, each once (answered together after the apply stage).</summary>
        public List<Request> Puts { get; } = [];

        public List<Request> Acks { get; } = [];

        public bool NeedsCommit { get; set; }
    }

    /// <summary>
    /// Lists kept for reuse, at most <paramref name="kept"/>: the <see cref="PreparedGroup.Accepted"/> lists of applied
    /// groups (at 600-1,000 puts a group while streaming, each was a new array of 60-100 KB, from about 800 puts on the
    /// large object heap, whose growth starts full collections; a few groups are in flight, so a few lists serve them),
    /// and the id and recipient lists the prepare stage keeps until a group is applied.
    /// </summary>
    private sealed class ListPool<T>(int kept)
    {
        private readonly Stack<List<T>> _free = new(kept);

        /// <summary>An empty list with room for <paramref name="items"/>.</summary>
        public List<T> Rent(int items)
        {
            List<T>? list;
            lock (_free)
            {
                _free.TryPop(out list);
            }

            list ??= new(items);
            list.EnsureCapacity(items);
            return list;
        }

        /// <summary>Takes back a list nothing reads any more, emptied so that it holds no references.</summary>
        public void Return(List<T> list)
        {
            list.Clear();
            lock (_free)
            {
                if (_free.Count < kept)
                {
                    _free.Push(list);
                }
            }
        }
    }

    /// <summary>A slice of one PutManyAsync call (puts, with null where the caller's put was refused before the
    /// queue, and answers written into the caller's results from <see cref="ResultStart"/>), an ack, or a checkpoint.
    /// Completed once, with null, when all of it is answered.</summary>
    private sealed class Request
    {
        public Request(AckRequest? ack) => Ack = ack;

        public Request(PutRequest?[] puts, PutResult[] results, int resultStart)
        {
            Puts = puts;
            Results = results;
            ResultStart = resultStart;
        }

        public PutRequest?[]? Puts { get; }

        public PutResult[]? Results { get; }

        public int ResultStart { get; }

        /// <summary>What the request counts for against <see cref="MaxGroup"/>.</summary>
        public int Items => Puts?.Length ?? 1;

        public AckRequest? Ack { get; set; }

        public TaskCompletionSource<PutReceipt?> Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public int AckedCount { get; set; }

        public bool Checkpoint { get; init; }
    }

    /// <summary>What the store decided for a put: a value, not an object per put; the receipt is made once, when the
    /// put is answered (it carries the tree head signed after its commit).</summary>
    internal readonly record struct Stored(Key32 Recipient, DateTimeOffset ExpiresAt, int Length, byte[] EnvelopeId, long LogIndex, ulong MailboxSeq)
    {
        /// <summary>Its receipt under <paramref name="head"/>.</summary>
        public PutReceipt Receipt(SignedTreeHead head, bool duplicate) => new(EnvelopeId, LogIndex, MailboxSeq, head, duplicate);

        /// <summary>Its mailbox index entry (also what the table's metadata holds, with the recipient).</summary>
        public IndexEntry Entry => new(MailboxSeq, new Key32(EnvelopeId), ExpiresAt.ToUnixTimeMilliseconds(), LogIndex, Length);
    }

    internal readonly struct Key32 : IEquatable<Key32>
    {
        private readonly ulong _a, _b, _c, _d;

        public Key32(ReadOnlySpan<byte> bytes)
        {
            _a = BinaryPrimitives.ReadUInt64LittleEndian(bytes);
            _b = BinaryPrimitives.ReadUInt64LittleEndian(bytes[8..]);
            _c = BinaryPrimitives.ReadUInt64LittleEndian(bytes[16..]);
            _d = BinaryPrimitives.ReadUInt64LittleEndian(bytes[24..]);
        }

        public bool Equals(Key32 other) => _a == other._a && _b == other._b && _c == other._c && _d == other._d;

        public override bool Equals(object? obj) => obj is Key32 k && Equals(k);

        public override int GetHashCode() => HashCode.Combine(_a, _b, _c, _d);

        public void CopyTo(Span<byte> destination)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(destination, _a);
            BinaryPrimitives.WriteUInt64LittleEndian(destination[8..], _b);
            BinaryPrimitives.WriteUInt64LittleEndian(destination[16..], _c);
            BinaryPrimitives.WriteUInt64LittleEndian(destination[24..], _d);
        }

        public byte[] ToArray()
        {
            byte[] b = new byte[32];
            BinaryPrimitives.WriteUInt64LittleEndian(b, _a);
            BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(8), _b);
            BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(16), _c);
            BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(24), _d);
            return b;
        }
    }
}

/// <summary>A store file cannot be read; the message names it and what to do (<see cref="Advice"/> when the store is
/// opened, <see cref="RunTimeAdvice"/> when the damage is found while it is open). Nothing was changed.</summary>
public sealed class StoreCorruptException(string message, Exception? inner = null) : Exception(message, inner)
{
    /// <summary>Where the damage was found listing a mailbox: the sequence number of the entry whose envelope no longer
    /// reads back from the store's table, which that mailbox still holds. Null for other damage.</summary>
    public ulong? MailboxSeq { get; init; }

    /// <summary>What to do, the end of every such message. An empty store under the same node key would sign a second,
    /// smaller log that contradicts the tree heads already handed out, so starting over takes a new key too; a backup
    /// older than the last head handed out does the same in part, which the operator should know before restoring.</summary>
    public const string Advice = "Nothing was changed. Restore the directory from a backup " + BackupCaveat + " " + StartOver;

    /// <summary>What to do when a file the store needs could not be read at open (the OS's error, not the file's
    /// content): the error may pass, so trying again comes before a backup.</summary>
    internal const string UnreadableAdvice = "Nothing was changed. If that error passes (open files or memory ran out, a device came back), " +
        "open the store again as it is; if the file stays unreadable, restore the directory from a backup " + BackupCaveat + " " + StartOver;

    /// <summary>What to do when the damage is found while the store is open (a proof needed hashes read back from a
    /// file that no longer gives them): the store keeps serving everything else, so the backup is restored once the
    /// node is stopped.</summary>
    public const string RunTimeAdvice = "The store keeps serving everything else, but no proof that needs these hashes can be given until it is repaired: " +
        "stop the node, then restore the store directory from a backup " + BackupCaveat + " " + StartOver;

    /// <summary>What to do when an envelope that a mailbox still holds no longer reads back from the store's table: the
    /// store keeps serving everything else, so the backup is restored once the node is stopped.</summary>
    public const string MailRunTimeAdvice = "The store keeps serving everything else, but this envelope cannot be delivered until it is repaired (its recipient " +
        "is told which one, and can fetch the mail after it): stop the node, then restore the store directory from a backup " + BackupCaveat + " " + StartOver;

    private const string BackupCaveat = "(one older than the store's last state makes the node sign a smaller log under " +
        "the same id, which clients' 'meganet audit' reports as a fork: the entries signed since the backup are gone and their receipts no longer verify; expect that, and tell those who audit the node).";

    private const string StartOver = "To start over with an empty store instead, move the store directory aside together with the node key (node.key in the data directory): the node then signs a new log under a new id, and receipts from the old one can no longer be checked against it.";
}

/// <summary>Another process has the store open.</summary>
public sealed class StoreInUseException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>The store could not commit (full disk, device error); nothing in the affected group was acknowledged. Also
/// a proof whose hashes, or a mailbox listing whose envelope, could not be read back from the store's files just then
/// (too many open files, a device error): no damage, and asking again may succeed.</summary>
public sealed class StoreUnavailableException(string message, Exception? inner = null) : Exception(message, inner);
