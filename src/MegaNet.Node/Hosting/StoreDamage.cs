using MegaNet.Store;
using Microsoft.Extensions.Logging;

namespace MegaNet.Node.Hosting;

/// <summary>
/// Damage to the store found while the node runs: a proof needed log hashes that leaves.bin no longer gives
/// (<see cref="StoreCorruptException"/>). The first is logged with its full message (the file and what to do); later
/// ones only at debug level, since anyone can repeat such a request at will. The store's health check reports it
/// until the node restarts.
/// </summary>
public sealed partial class StoreDamage(ILogger<StoreDamage> logger)
{
    /// <summary>What clients are told: that the node's store is at fault, without the node's file paths.</summary>
    public const string ClientText = "The node's store is damaged: the log hashes this proof needs no longer read back from its files, " +
        "so the node cannot give the proof until its operator restores the store (the node's log says how).";

    private StoreCorruptException? _first;
    private long _count;

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

    [LoggerMessage(EventId = 10, Level = LogLevel.Error, Message = "A proof request failed because the store is damaged (logged once; later such failures at debug level, and the health check reports NOT_SERVING until a restart): {Reason}")]
    private static partial void LogDamaged(ILogger logger, string reason);

    [LoggerMessage(EventId = 11, Level = LogLevel.Debug, Message = "A proof request failed because the store is damaged: {Reason}")]
    private static partial void LogDamagedAgain(ILogger logger, string reason);
}
