namespace MegaNet.Store;

/// <summary>Settings of <see cref="FasterEnvelopeStore"/>. Every default is documented here and in README.</summary>
public sealed class StoreOptions
{
    /// <summary>Root of the node's data (the store uses <c>{DataDirectory}/store/</c>). Default <c>./data</c>.</summary>
    public string DataDirectory { get; set; } = "./data";

    /// <summary>The node's 64-byte Ed25519 secret key (libsodium layout) that signs tree heads. Required.</summary>
    public byte[] NodeSecretKey { get; set; } = [];

    /// <summary>Memory the envelope table (7/8) and the write-ahead log (1/8) may keep in RAM before pages go to disk.
    /// Default 256 MiB (minimum 8 MiB).</summary>
    public long MemoryBudgetBytes { get; set; } = 256L << 20;

    /// <summary>Longest a put waits for others to share its commit. Default 1 ms (at most 2 ms recommended).</summary>
    public TimeSpan GroupCommitWindow { get; set; } = TimeSpan.FromMilliseconds(1);

    /// <summary>
    /// Groups the store may hold between the start of their prepare and their answer. While one group's write-ahead-log
    /// commit and apply stage run, the committer prepares and commits the next, up to this many in all; 1 prepares a
    /// group only once the one before it is answered. Default 2. More lets log commits overlap where the store's round
    /// trip, not a core, bounds the rate (a many-core machine; docs/store.md); the apply stage stays one group at a time.
    /// </summary>
    public int GroupsInFlight { get; set; } = 2;

    /// <summary>
    /// Threads the apply stage may write a group's envelope records and hash its leaves on, each with a table session of
    /// its own; a group is split only where each takes at least 256 new puts. Default 1: the apply stage is one group at a
    /// time, and where it is the store's limit (a many-core machine; docs/store.md) more lets its table writes spread.
    /// The tree, the mailbox indexes and the answers stay on one thread, in log order.
    /// </summary>
    public int ApplyThreads { get; set; } = 1;

    /// <summary>
    /// How often the envelope table is checkpointed (and expired mail swept, the table compacted when it has grown, and
    /// the write-ahead log truncated); also done at shutdown. Bounds the log replayed at start. Default 1 minute.
    /// </summary>
    public TimeSpan CheckpointInterval { get; set; } = TimeSpan.FromMinutes(1);

    /// <summary>
    /// Longest <see cref="FasterEnvelopeStore.DisposeAsync"/> waits for the queued writes and the shutdown checkpoint
    /// before giving up with <see cref="StoreUnavailableException"/> (on a full disk the checkpoint never finishes;
    /// everything acknowledged is in the committed log either way). Default 60 seconds.
    /// </summary>
    public TimeSpan ShutdownTimeout { get; set; } = TimeSpan.FromSeconds(60);

    /// <summary>
    /// A checkpoint is also taken once this much write-ahead log has accumulated since the last one, which bounds the
    /// log a restart after <c>kill -9</c> replays (about 1 s per 100 MiB here), or twice what the last checkpoint wrote
    /// where that is more (its manifest grows with the waiting mail, about 60 bytes an envelope, and it also writes the
    /// table's hash index): in a store of millions of waiting envelopes the log between checkpoints grows with them, so
    /// checkpoints never write more than half as much as the log. Default 256 MiB.
    /// </summary>
    public long CheckpointLogBytes { get; set; } = 256L << 20;

    /// <summary>The lifetime the node suggests in <c>Status</c> (<c>Limits.default_ttl_seconds</c>); every envelope
    /// carries its own expiry, so nothing here applies it. Default 14 days.</summary>
    public TimeSpan DefaultTtl { get; set; } = TimeSpan.FromDays(14);

    /// <summary>Longest lifetime a sender may ask for. Default 30 days.</summary>
    public TimeSpan MaxTtl { get; set; } = TimeSpan.FromDays(30);

    /// <summary>Most envelopes one mailbox holds. Default 10,000.</summary>
    public int MailboxMaxCount { get; set; } = 10_000;

    /// <summary>Most envelope bytes one mailbox holds. Default 64 MiB.</summary>
    public long MailboxMaxBytes { get; set; } = 64L << 20;

    /// <summary>The most envelope bytes all mailboxes together may hold (as the mailbox quotas count them); a put beyond
    /// it is refused with <see cref="StoreFullException"/> until mail is acknowledged or expires. The store's files take
    /// more than this (docs/store.md). 0 (the default): no cap but the free-space mark.</summary>
    public long MaxHeldBytes { get; set; }

    /// <summary>From what percent of either quota <see cref="IEnvelopeStore.ReportedUsage"/> reports a mailbox (1 to
    /// 100); an emptier one reads (0, 0), so the store tracks only the few mailboxes near their quotas. Default 50.</summary>
    public int MailboxReportedFromPercent { get; set; } = 50;

    /// <summary>Largest envelope accepted, in bytes. Default 69,632 (64 KiB payload class plus headers).</summary>
    public int MaxEnvelopeBytes { get; set; } = 65_536 + 4_096;

    /// <summary>
    /// Free space the store keeps on the file system of its directory. Below it, puts are refused with
    /// <see cref="DiskSpaceLowException"/> (the node answers <c>RESOURCE_EXHAUSTED</c>, retryable) until space is back,
    /// which the store notices by itself; acks, checkpoints, the expiry sweep and compaction go on in the room left, so
    /// ordinary mail never fills the disk (a full disk faults the store until a restart). Free space is read at most
    /// once a second (statvfs), so the margin must hold a second of the fastest ingest (one client wrote ~150 MB/s) plus
    /// a table checkpoint. 0 turns the check off. Default 1 GiB.
    /// </summary>
    public long MinFreeDiskBytes { get; set; } = 1L << 30;

    /// <summary>Tests: the free bytes the check sees, instead of the file system's.</summary>
    internal Func<long>? FreeDiskBytesForTests { get; set; }

    /// <summary>Tests: how often free space is read. Default 1 second.</summary>
    internal TimeSpan FreeDiskCheckInterval { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// Told how the open's recovery goes (<see cref="StoreRecoveryProgress"/>): once when it knows what it will load and
    /// replay, every <see cref="RecoveryProgressInterval"/> while it replays the write-ahead log, and once when done.
    /// Called synchronously on the recovering thread, in that order (so not <see cref="Progress{T}"/>, which may
    /// reorder); it must be quick and must not throw, or the open fails. Default none.
    /// </summary>
    public IProgress<StoreRecoveryProgress>? RecoveryProgress { get; set; }

    /// <summary>How often <see cref="RecoveryProgress"/> hears of a replay under way (a replay that takes less is
    /// reported only when it starts and ends). 0 to 1 hour; default 2 seconds.</summary>
    public TimeSpan RecoveryProgressInterval { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>Clock for expiry (tests inject one). Default <see cref="TimeProvider.System"/>.</summary>
    public TimeProvider Clock { get; set; } = TimeProvider.System;

    /// <summary>Tests: devices for the envelope table's checkpoint files (to make their writes fail).</summary>
    internal FASTER.core.INamedDeviceFactory? CheckpointFilesForTests { get; set; }

    /// <summary>Tests: the table is written as by stores before manifest version 3, metadata and envelope bytes in
    /// records of their own (an upgraded store).</summary>
    internal bool SeparateEnvelopeRecordsForTests { get; set; }

    /// <summary>Tests: makes the envelope table's page writes fail as on a full disk, from the open on, while it returns
    /// true.</summary>
    internal Func<bool>? FailTableWriteForTests { get; set; }

    /// <summary>Tests: a group's commit of the write-ahead log fails (as on a full disk) while it returns true.</summary>
    internal Func<bool>? FailCommitForTests { get; set; }

    /// <summary>Tests: awaited after each group's commit of the write-ahead log, before the group is applied (to hold
    /// groups in flight). Held before the commit instead, later groups' records would go in an earlier commit.</summary>
    internal Func<Task>? AfterCommitForTests { get; set; }

    /// <summary>Tests: the most puts in one group commit, when above 0 (one request, a slice of a PutManyAsync call, is
    /// never split).</summary>
    internal int MaxGroupForTests { get; set; }

    /// <summary>Tests: the hash index of a new table, in bytes, when above 0 (a few buckets make keys share chains and
    /// overflow buckets, as a full index does).</summary>
    internal long IndexBytesForTests { get; set; }

    /// <summary>Tests: entries per chunk of a checkpoint snapshot's buffer (0: the store's own), so that a test spreads
    /// mailboxes over several chunks without a store of 65,536 envelopes.</summary>
    internal int SnapshotChunkEntriesForTests { get; set; }

    /// <summary>Throws <see cref="ArgumentOutOfRangeException"/> or <see cref="ArgumentException"/> naming the first bad setting.</summary>
    public void Validate()
    {
        if (string.IsNullOrWhiteSpace(DataDirectory))
        {
            throw new ArgumentException("StoreOptions.DataDirectory must name a directory.", nameof(DataDirectory));
        }

        if (NodeSecretKey is not { Length: 64 })
        {
            throw new ArgumentException("StoreOptions.NodeSecretKey must be the node's 64-byte Ed25519 secret key.", nameof(NodeSecretKey));
        }

        if (MemoryBudgetBytes < (8L << 20))
        {
            throw new ArgumentOutOfRangeException(nameof(MemoryBudgetBytes), MemoryBudgetBytes, "MemoryBudgetBytes must be at least 8 MiB.");
        }

        if (GroupCommitWindow < TimeSpan.Zero || GroupCommitWindow > TimeSpan.FromSeconds(1))
        {
            throw new ArgumentOutOfRangeException(nameof(GroupCommitWindow), GroupCommitWindow, "GroupCommitWindow must be between 0 and 1 s.");
        }

        if (GroupsInFlight is < 1 or > 8)
        {
            throw new ArgumentOutOfRangeException(nameof(GroupsInFlight), GroupsInFlight, "GroupsInFlight must be 1 to 8.");
        }

        if (ApplyThreads is < 1 or > 8)
        {
            throw new ArgumentOutOfRangeException(nameof(ApplyThreads), ApplyThreads, "ApplyThreads must be 1 to 8.");
        }

        if (ShutdownTimeout < TimeSpan.FromSeconds(1) || ShutdownTimeout > TimeSpan.FromHours(1))
        {
            throw new ArgumentOutOfRangeException(nameof(ShutdownTimeout), ShutdownTimeout, "ShutdownTimeout must be between 1 second and 1 hour.");
        }

        if (CheckpointInterval < TimeSpan.FromMilliseconds(10) || CheckpointInterval > TimeSpan.FromDays(1))
        {
            throw new ArgumentOutOfRangeException(nameof(CheckpointInterval), CheckpointInterval, "CheckpointInterval must be between 10 ms and 1 day.");
        }

        if (CheckpointLogBytes < (1L << 20))
        {
            throw new ArgumentOutOfRangeException(nameof(CheckpointLogBytes), CheckpointLogBytes, "CheckpointLogBytes must be at least 1 MiB.");
        }

        if (DefaultTtl <= TimeSpan.Zero || MaxTtl < DefaultTtl)
        {
            throw new ArgumentOutOfRangeException(nameof(DefaultTtl), DefaultTtl, "DefaultTtl must be positive and at most MaxTtl.");
        }

        if (MailboxMaxCount < 1 || MailboxMaxBytes < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(MailboxMaxCount), MailboxMaxCount, "Mailbox quotas must be positive.");
        }

        if (MaxHeldBytes < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(MaxHeldBytes), MaxHeldBytes, "MaxHeldBytes must be 0 (no cap) or more.");
        }

        if (MailboxReportedFromPercent is < 1 or > 100)
        {
            throw new ArgumentOutOfRangeException(nameof(MailboxReportedFromPercent), MailboxReportedFromPercent, "MailboxReportedFromPercent must be 1 to 100.");
        }

        if (MaxEnvelopeBytes < 64 || MaxEnvelopeBytes > 256 << 10)
        {
            // A put is one log record, which must fit in a log page (at least 512 KiB).
            throw new ArgumentOutOfRangeException(nameof(MaxEnvelopeBytes), MaxEnvelopeBytes, "MaxEnvelopeBytes must be between 64 and 262144 (256 KiB).");
        }

        if (MinFreeDiskBytes < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(MinFreeDiskBytes), MinFreeDiskBytes, "MinFreeDiskBytes must be 0 (off) or more.");
        }

        if (RecoveryProgressInterval < TimeSpan.Zero || RecoveryProgressInterval > TimeSpan.FromHours(1))
        {
            throw new ArgumentOutOfRangeException(nameof(RecoveryProgressInterval), RecoveryProgressInterval, "RecoveryProgressInterval must be between 0 and 1 hour.");
        }

        ArgumentNullException.ThrowIfNull(Clock);
    }
}
