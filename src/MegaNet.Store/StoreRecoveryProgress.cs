using System.Diagnostics;

namespace MegaNet.Store;

/// <summary>Where an open of the store is in its recovery (<see cref="StoreRecoveryProgress.Stage"/>).</summary>
public enum StoreRecoveryStage
{
    /// <summary>The store is locked and about to recover: whether it has a checkpoint and how much write-ahead log is
    /// on disk. Reported once, before anything slow.</summary>
    Opening,

    /// <summary>The write-ahead log has recovered and the checkpoint (if any) is loaded: its counts, and the log after it
    /// to replay. Reported once.</summary>
    Loaded,

    /// <summary>The replay of the write-ahead log is under way; reported every
    /// <see cref="StoreOptions.RecoveryProgressInterval"/> while it lasts.</summary>
    Replaying,

    /// <summary>The store is recovered and about to take writes. Reported once.</summary>
    Recovered,
}

/// <summary>How an open rebuilt the transparency log's Merkle tree from the checkpoint
/// (<see cref="StoreRecoveryProgress.TreeLoad"/>). Every case but <see cref="SavedLevels"/> and <see cref="None"/> hashed
/// every leaf of leaves.bin (about 2 SHA-256 hashes a leaf, a minute per 100 million leaves); the next checkpoint writes
/// level8.bin whole again.</summary>
public enum StoreTreeLoad
{
    /// <summary>No checkpoint: no tree to load (the write-ahead log holds every leaf).</summary>
    None,

    /// <summary>Read from level8.bin (one hash per 256 leaves), whose hashes made the manifest's root: only the leaves
    /// after its last whole 256-leaf block were hashed.</summary>
    SavedLevels,

    /// <summary>level8.bin is missing: a store a build before 2026-12-05 wrote.</summary>
    LevelsMissing,

    /// <summary>level8.bin holds fewer hashes than the manifest counts: an older build checkpointed the store since, or
    /// a crash cut its rewrite short.</summary>
    LevelsShort,

    /// <summary>level8.bin's hashes do not make the manifest's root (changed since it was written).</summary>
    LevelsMismatch,

    /// <summary>level8.bin could not be read (an error that may pass; leaves.bin served instead).</summary>
    LevelsUnreadable,

    /// <summary>The manifest records no root to check level8.bin against (a build before 2026-12-01 wrote it).</summary>
    NoRoot,
}

/// <summary>What <see cref="StoreOptions.RecoveryProgress"/> hears while <see cref="FasterEnvelopeStore.OpenAsync"/>
/// recovers a store: a node with a large store otherwise says nothing for the seconds or minutes this takes.</summary>
/// <param name="Stage">Which report this is.</param>
/// <param name="StoreDirectory">The store's directory (<c>{DataDirectory}/store</c>), as a full path.</param>
/// <param name="CheckpointFound">Whether the store has a checkpoint (without one the whole write-ahead log is replayed).</param>
/// <param name="LogBytesOnDisk">Bytes of write-ahead log files on disk when the open began (at most what is replayed).</param>
/// <param name="ReplayBytes">Bytes of write-ahead log after the checkpoint, which the replay reads (0 while opening).</param>
/// <param name="ReplayedBytes">Bytes of it replayed so far (all of them once recovered).</param>
/// <param name="ReplayedRecords">Write-ahead log records (puts and acks) replayed so far.</param>
/// <param name="LogEntries">Transparency log entries: the checkpoint's once loaded, all of them once recovered (else 0).</param>
/// <param name="Mailboxes">Mailboxes holding mail, counted the same way.</param>
/// <param name="Envelopes">Envelopes waiting in them, counted the same way.</param>
/// <param name="Elapsed">Time since the open began.</param>
public sealed record StoreRecoveryProgress(
    StoreRecoveryStage Stage,
    string StoreDirectory,
    bool CheckpointFound,
    long LogBytesOnDisk,
    long ReplayBytes,
    long ReplayedBytes,
    long ReplayedRecords,
    long LogEntries,
    int Mailboxes,
    long Envelopes,
    TimeSpan Elapsed)
{
    /// <summary>How the checkpoint's Merkle tree was rebuilt (from <see cref="StoreRecoveryStage.Loaded"/> on; else
    /// <see cref="StoreTreeLoad.None"/>).</summary>
    public StoreTreeLoad TreeLoad { get; init; }

    /// <summary>Leaf hashes of leaves.bin the open hashed into the tree (from <see cref="StoreRecoveryStage.Loaded"/> on):
    /// fewer than 256 when it read level8.bin, every leaf the checkpoint counts otherwise (and those few as well when
    /// level8.bin's hashes did not make the root).</summary>
    public long LeavesHashed { get; init; }

    /// <summary>Whether the store is new: neither a checkpoint nor any write-ahead log was on disk when the open began,
    /// so there was nothing to recover (a first start, or a store that never took a write).</summary>
    public bool IsNew => !CheckpointFound && LogBytesOnDisk == 0;
}

/// <summary>Reports one open's recovery to <see cref="StoreOptions.RecoveryProgress"/>: the replay's check is a
/// comparison of timestamps per record, and nothing at all without a listener.</summary>
internal sealed class RecoveryReporter(StoreOptions options, string storeDirectory)
{
    private readonly IProgress<StoreRecoveryProgress>? _progress = options.RecoveryProgress;
    private readonly string _directory = Path.GetFullPath(storeDirectory);
    private readonly long _started = Stopwatch.GetTimestamp();
    private readonly long _interval = (long)(options.RecoveryProgressInterval.TotalSeconds * Stopwatch.Frequency);
    private long _nextReport = long.MaxValue;
    private bool _checkpointFound;
    private long _onDisk;
    private long _from;
    private long _until;
    private StoreTreeLoad _treeLoad;
    private long _leavesHashed;

    /// <summary>The open begins: whether a checkpoint is there, and <paramref name="logBytesOnDisk"/>.</summary>
    public void Opening(bool checkpointFound, long logBytesOnDisk)
    {
        _checkpointFound = checkpointFound;
        _onDisk = logBytesOnDisk;
        Report(StoreRecoveryStage.Opening, 0, 0, 0, 0, 0);
    }

    /// <summary>The checkpoint (none: 0s) is loaded, its tree as <paramref name="treeLoad"/> says after hashing
    /// <paramref name="leavesHashed"/> leaves; the log from <paramref name="from"/> to <paramref name="until"/> is
    /// replayed next.</summary>
    public void Loaded(long from, long until, long logEntries, int mailboxes, long envelopes, StoreTreeLoad treeLoad, long leavesHashed)
    {
        _treeLoad = treeLoad;
        _leavesHashed = leavesHashed;
        _from = from;
        _until = Math.Max(from, until);
        Report(StoreRecoveryStage.Loaded, 0, 0, logEntries, mailboxes, envelopes);
        _nextReport = _progress is null ? long.MaxValue : Stopwatch.GetTimestamp() + _interval;
    }

    /// <summary>Called for each replayed record (<paramref name="records"/> so far, the last at <paramref name="address"/>);
    /// reports once the interval has passed since the last report.</summary>
    public void Replayed(long records, long address)
    {
        if (_progress is null)
        {
            return;
        }

        long now = Stopwatch.GetTimestamp();
        if (now < _nextReport)
        {
            return;
        }

        _nextReport = now + _interval;
        Report(StoreRecoveryStage.Replaying, Math.Clamp(address - _from, 0, _until - _from), records, 0, 0, 0);
    }

    /// <summary>The recovery is done: <paramref name="records"/> replayed, and what the store holds now.</summary>
    public void Recovered(long records, long logEntries, int mailboxes, long envelopes) =>
        Report(StoreRecoveryStage.Recovered, _until - _from, records, logEntries, mailboxes, envelopes);

    private void Report(StoreRecoveryStage stage, long replayed, long records, long logEntries, int mailboxes, long envelopes) =>
        _progress?.Report(new StoreRecoveryProgress(stage, _directory, _checkpointFound, _onDisk, _until - _from, replayed, records,
            logEntries, mailboxes, envelopes, Stopwatch.GetElapsedTime(_started))
        { TreeLoad = _treeLoad, LeavesHashed = _leavesHashed });
}
