using MegaNet.Node.Hosting;
using MegaNet.Store;
using Microsoft.Extensions.Logging;

namespace MegaNet.Node.Admission;

/// <summary>
/// Tells the operator when the store refuses new mail for want of room: below the free-space mark
/// (<see cref="NodeOptions.StoreMinFreeDiskMiB"/>, <see cref="DiskLow"/>) or holding all the mail
/// <see cref="NodeOptions.StoreMaxMiB"/> allows (<see cref="StoreFull"/>). Senders only see a retryable refusal, so a
/// node short on disk used to refuse every envelope with nothing in its log. One warning at most a
/// <see cref="WarningInterval"/> while it refuses (with the count refused since the one before), one information line
/// when it stores mail again; <see cref="Refusing"/> is what <c>Status</c> reports.
/// </summary>
internal sealed partial class StoreRefusalWatch(NodeOptions options, TimeProvider clock, ILogger logger)
{
    /// <summary>The reason (as counted in <c>meganet.admission.rejected</c>) for a store below its free-space mark.</summary>
    public const string DiskLow = "disk_low";

    /// <summary>The reason for a store that holds all the mail its operator allows.</summary>
    public const string StoreFull = "store_full";

    /// <summary>At most one warning this often while the store refuses: a refusing node is asked again by every sender.</summary>
    public static readonly TimeSpan WarningInterval = TimeSpan.FromMinutes(1);

    private readonly Lock _lock = new();
    private string? _refusing;
    private long _refusedSinceWarning;
    private long _refusedInAll;
    // TimeProvider timestamps (the monotonic clock): with the wall clock, a step back (NTP, a VM resumed) silenced the
    // warnings for as long as the step while the node went on refusing, and made the stretch's length wrong.
    private long _lastWarning;
    private long _since;

    /// <summary><see cref="DiskLow"/> or <see cref="StoreFull"/> while the store refuses new mail, as the node last
    /// found it (at start, or storing the latest envelopes); null while it accepts.</summary>
    public string? Refusing => Volatile.Read(ref _refusing);

    /// <summary>
    /// <see cref="Refusing"/> looked at again, for <c>Status</c>: a stretch of refusals ends when the store takes mail, so
    /// with no sender since room came back (disk freed, mail acknowledged or expired) the node went on saying it refused.
    /// Null once the cause is gone: the data directory's free space back at the mark, or room under
    /// <see cref="NodeOptions.StoreMaxMiB"/> beside the mail held (<paramref name="heldBytes"/>, the store's count) for
    /// the largest envelope the node takes (<see cref="NodeOptions.MaxEnvelopeBytes"/>).
    /// </summary>
    public string? RefusingNow(long heldBytes) => Refusing switch
    {
        DiskLow when DiskSpace.FreeBytes(options.DataDirectory) >= (long)options.StoreMinFreeDiskMiB << 20 => null,
        StoreFull when options.StoreMaxBytes <= 0 || heldBytes + options.MaxEnvelopeBytes <= options.StoreMaxBytes => null,
        var refusing => refusing,
    };

    /// <summary>At start: warns when the data directory's file system is already below the free-space mark, so the
    /// operator learns it before the first sender is refused.</summary>
    public void CheckAtStart()
    {
        long mark = (long)options.StoreMinFreeDiskMiB << 20;
        if (mark > 0 && DiskSpace.FreeBytes(options.DataDirectory) is var free && free < mark)
        {
            lock (_lock)
            {
                long now = clock.GetTimestamp();
                (_since, _lastWarning, _refusedSinceWarning, _refusedInAll) = (now, now, 0, 0);
                Volatile.Write(ref _refusing, DiskLow);
            }

            LogDiskLowAtStart(logger, Path.GetFullPath(options.DataDirectory), free >> 20, options.StoreMinFreeDiskMiB);
        }
    }

    /// <summary>The store refused <paramref name="count"/> envelopes of one group for <paramref name="reason"/>
    /// (<see cref="DiskLow"/> or <see cref="StoreFull"/>).</summary>
    public void Refused(string reason, int count)
    {
        int refusedSinceWarning;
        lock (_lock)
        {
            long now = clock.GetTimestamp();
            bool newStretch = _refusing != reason;
            if (newStretch)
            {
                // A new stretch of refusals (or another reason): said at once.
                (_since, _refusedInAll, _refusedSinceWarning) = (now, 0, 0);
                Volatile.Write(ref _refusing, reason);
            }

            _refusedSinceWarning += count;
            _refusedInAll += count;
            if (!newStretch && clock.GetElapsedTime(_lastWarning, now) < WarningInterval)
            {
                return;
            }

            _lastWarning = now;
            refusedSinceWarning = (int)Math.Min(int.MaxValue, _refusedSinceWarning);
            _refusedSinceWarning = 0;
        }

        if (reason == DiskLow)
        {
            LogRefusingDiskLow(logger, refusedSinceWarning, Path.GetFullPath(options.DataDirectory), DiskSpace.FreeBytes(options.DataDirectory) >> 20, options.StoreMinFreeDiskMiB);
        }
        else
        {
            LogRefusingStoreFull(logger, refusedSinceWarning, options.StoreMaxMiB);
        }
    }

    /// <summary>The store took new mail: ends a stretch of refusals, if there was one. Cheap while there was none (the
    /// path of every stored group).</summary>
    public void Accepted()
    {
        if (Volatile.Read(ref _refusing) is null)
        {
            return;
        }

        string reason;
        long refused;
        TimeSpan lasted;
        lock (_lock)
        {
            if (_refusing is null)
            {
                return;
            }

            (reason, refused, lasted) = (_refusing, _refusedInAll, clock.GetElapsedTime(_since));
            Volatile.Write(ref _refusing, null);
        }

        LogAcceptingAgain(logger, reason, refused, Math.Max(0, (long)lasted.TotalSeconds));
    }

    [LoggerMessage(EventId = 14, Level = LogLevel.Warning, Message = "The data directory {DataDirectory} has {FreeMiB} MiB free, under the " +
        "{MarkMiB} MiB the store keeps free (StoreMinFreeDiskMiB): the node refuses all new mail until space is freed. Free disk space there " +
        "(the node notices within a second), or lower StoreMinFreeDiskMiB (0 turns the mark off)")]
    private static partial void LogDiskLowAtStart(ILogger logger, string dataDirectory, long freeMiB, int markMiB);

    [LoggerMessage(EventId = 104, Level = LogLevel.Warning, Message = "Refusing new mail for want of disk space: {Count} envelopes refused since " +
        "the last warning. The data directory {DataDirectory} has {FreeMiB} MiB free, under the {MarkMiB} MiB the store keeps free " +
        "(StoreMinFreeDiskMiB). Free disk space there (the node notices within a second), or lower StoreMinFreeDiskMiB (0 turns the mark off)")]
    private static partial void LogRefusingDiskLow(ILogger logger, int count, string dataDirectory, long freeMiB, int markMiB);

    [LoggerMessage(EventId = 105, Level = LogLevel.Warning, Message = "Refusing new mail: the node holds all the mail StoreMaxMiB allows " +
        "({CapMiB} MiB); {Count} envelopes refused since the last warning. Raise StoreMaxMiB, or wait for recipients to acknowledge their " +
        "mail or for it to expire")]
    private static partial void LogRefusingStoreFull(ILogger logger, int count, long capMiB);

    [LoggerMessage(EventId = 106, Level = LogLevel.Information, Message = "Accepting new mail again after refusing it ({Reason}) for {Seconds} s; " +
        "{Count} envelopes were refused")]
    private static partial void LogAcceptingAgain(ILogger logger, string reason, long count, long seconds);
}
