using MegaNet.Store;
using Microsoft.Extensions.Logging;

namespace MegaNet.Node.Hosting;

/// <summary>
/// Damage to the store found while the node runs (<see cref="StoreCorruptException"/>): a proof needed log hashes that
/// leaves.bin no longer gives, or a mailbox holds an envelope whose record no longer reads back from the envelope table.
/// The first is logged with its full message (the file and what to do); later ones only at debug level, since anyone
/// can repeat such a request at will. The store's health check reports it until the node restarts.
/// <para>A read of those hashes or that record that failed for a reason that may pass
/// (<see cref="StoreUnavailableException"/>: too many open files, a device error) is no damage: it is counted and logged
/// as a warning, at most one a minute (the rest at debug level), and the health check does not change.</para>
/// </summary>
public sealed partial class StoreDamage(ILogger<StoreDamage> logger, TimeProvider clock)
{
    /// <summary>How often at most a failed read is logged as a warning.</summary>
    internal static readonly TimeSpan UnreadableWarningInterval = TimeSpan.FromMinutes(1);

    /// <summary>What clients are told: that the node's store is at fault, without the node's file paths.</summary>
    public const string ClientText = "The node's store is damaged: the log hashes this proof needs no longer read back from its files, " +
        "so the node cannot give the proof until its operator restores the store (the node's log says how).";

    private StoreCorruptException? _first;
    private long _count;
    private long _unreadableCount;

    // When the last warning about a failed read was logged (a TimeProvider timestamp); long.MinValue before the first.
    private long _unreadableWarnedAt = long.MinValue;

    /// <summary>The first damage found (its message names the file and what to do); null while none was.</summary>
    public string? Reason => Volatile.Read(ref _first)?.Message;

    /// <summary>Requests that failed on damage so far.</summary>
    public long Count => Interlocked.Read(ref _count);

    /// <summary>Counts a request that failed on <paramref name="damage"/>, logging it in full if it is the first.</summary>
    public void Report(StoreCorruptException damage)
    {
        ArgumentNullException.ThrowIfNull(damage);
        Interlocked.Increment(ref _count);
        if (Interlocked.CompareExchange(ref _first, damage, null) is null)
        {
            LogDamaged(logger, damage.Message);
        }
        else
        {
            LogDamagedAgain(logger, damage.Message);
        }
    }

    /// <summary>What a client whose mailbox holds an envelope that no longer reads back from the store is told (a
    /// <c>DATA_LOSS</c> of <c>Fetch</c> or <c>Subscribe</c>): which one, and how to go on without it, without the node's
    /// file paths.</summary>
    /// <param name="seq">The entry's sequence number (<see cref="StoreCorruptException.MailboxSeq"/>).</param>
    public static string MailClientText(ulong seq) =>
        $"The node's store is damaged: the envelope at seq {seq} of this mailbox no longer reads back from its files, so the node cannot deliver it " +
        $"until its operator restores the store (the node's log says how). The mail after it is delivered from after_seq {seq}.";

    /// <summary>Requests that failed because the store's files could not be read just then (no damage).</summary>
    public long UnreadableCount => Interlocked.Read(ref _unreadableCount);

    /// <summary>What clients are told when the hashes a proof needs could not be read just then: that asking again
    /// later may work, with the OS's error but without the node's file paths.</summary>
    public static string UnreadableClientText(StoreUnavailableException failure) =>
        $"The node could not read the log hashes this proof needs from its store just now ({ErrorOf(failure)}). " +
        "Its store is not damaged: ask for the proof again later.";

    /// <summary>What a client is told when the next envelope of its mailbox could not be read just then (an
    /// <c>UNAVAILABLE</c> of <c>Fetch</c> or <c>Subscribe</c>): to ask again from <paramref name="afterSeq"/>, with the
    /// OS's error but without the node's file paths.</summary>
    public static string MailUnreadableClientText(StoreUnavailableException failure, ulong afterSeq) =>
        $"The node could not read the next envelope of this mailbox from its store just now ({ErrorOf(failure)}). " +
        $"This is no sign of damage: ask again later from after_seq {afterSeq}.";

    private static string ErrorOf(StoreUnavailableException failure)
    {
        ArgumentNullException.ThrowIfNull(failure);
        string error = failure.InnerException?.Message ?? "an I/O error";
        // .NET puts the path in quotes in its I/O messages ("Too many open files : '/srv/meganet/store/leaves.bin'");
        // the file's name is enough for a client.
        return QuotedPath().Replace(error, m => $"'{Path.GetFileName(m.Groups[1].Value)}'");
    }

    /// <summary>Counts a request that failed because the store's files could not be read just then, logging it as
    /// a warning if none was in the last <see cref="UnreadableWarningInterval"/>. Not damage: the health check stays
    /// as it is.</summary>
    public void ReportUnreadable(StoreUnavailableException failure)
    {
        ArgumentNullException.ThrowIfNull(failure);
        long count = Interlocked.Increment(ref _unreadableCount);
        long now = clock.GetTimestamp();
        long warnedAt = Interlocked.Read(ref _unreadableWarnedAt);
        if ((warnedAt == long.MinValue || clock.GetElapsedTime(warnedAt, now) >= UnreadableWarningInterval)
            && Interlocked.CompareExchange(ref _unreadableWarnedAt, now, warnedAt) == warnedAt)
        {
            LogUnreadable(logger, count, failure.Message);
        }
        else
        {
            LogUnreadableAgain(logger, failure.Message);
        }
    }

    [LoggerMessage(EventId = 12, Level = LogLevel.Warning, Message = "A request failed because the store's files could not be read just then ({Count} such failures since the start; at most one warning a minute, the rest at debug level; the health check is not changed): {Reason}")]
    private static partial void LogUnreadable(ILogger logger, long count, string reason);

    [LoggerMessage(EventId = 13, Level = LogLevel.Debug, Message = "A request failed because the store's files could not be read just then: {Reason}")]
    private static partial void LogUnreadableAgain(ILogger logger, string reason);

    [System.Text.RegularExpressions.GeneratedRegex("'(/[^']*)'")]
    private static partial System.Text.RegularExpressions.Regex QuotedPath();

    [LoggerMessage(EventId = 10, Level = LogLevel.Error, Message = "A request failed because the store is damaged (logged once; later such failures at debug level, and the health check reports NOT_SERVING until a restart): {Reason}")]
    private static partial void LogDamaged(ILogger logger, string reason);

    [LoggerMessage(EventId = 11, Level = LogLevel.Debug, Message = "A request failed because the store is damaged: {Reason}")]
    private static partial void LogDamagedAgain(ILogger logger, string reason);
}
