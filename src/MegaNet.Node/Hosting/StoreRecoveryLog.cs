using MegaNet.Store;
using Microsoft.Extensions.Logging;

namespace MegaNet.Node.Hosting;

/// <summary>
/// The store's recovery at start, as log lines (category <c>MegaNet.Store</c>): what it found, how far a long replay of
/// the write-ahead log has got (every <see cref="StoreOptions.RecoveryProgressInterval"/>), and what it recovered in how
/// long. Before, a node with a large store said nothing between "Starting the verifier" and "listening" for the seconds
/// or minutes its replay took.
/// </summary>
internal sealed partial class StoreRecoveryLog(ILogger logger) : IProgress<StoreRecoveryProgress>
{
    private const double MiB = 1 << 20;

    public void Report(StoreRecoveryProgress value)
    {
        ArgumentNullException.ThrowIfNull(value);
        switch (value.Stage)
        {
            case StoreRecoveryStage.Opening when value.IsNew:
                LogOpeningNew(logger, value.StoreDirectory);
                break;
            case StoreRecoveryStage.Opening when value.CheckpointFound:
                LogOpening(logger, value.StoreDirectory, value.LogBytesOnDisk / MiB);
                break;
            case StoreRecoveryStage.Opening:
                LogOpeningWithoutCheckpoint(logger, value.StoreDirectory, value.LogBytesOnDisk / MiB);
                break;
            case StoreRecoveryStage.Loaded when value.CheckpointFound:
                ReportTreeLoad(value);
                LogLoaded(logger, value.Elapsed.TotalSeconds, value.LogEntries, value.Envelopes, value.Mailboxes, value.ReplayBytes / MiB);
                break;
            case StoreRecoveryStage.Loaded:
                break; // without a checkpoint nothing was loaded, and the opening line said what there is to replay
            case StoreRecoveryStage.Replaying:
                LogReplaying(logger, value.ReplayedRecords, value.ReplayedBytes / MiB, value.ReplayBytes / MiB,
                    value.ReplayBytes == 0 ? 100 : 100.0 * value.ReplayedBytes / value.ReplayBytes, value.Elapsed.TotalSeconds);
                break;
            case StoreRecoveryStage.Recovered when value.IsNew:
                LogNewReady(logger, value.Elapsed.TotalSeconds);
                break;
            default:
                LogRecovered(logger, value.Elapsed.TotalSeconds, value.Envelopes, value.Mailboxes, value.LogEntries, value.ReplayedRecords);
                break;
        }
    }

    /// <summary>Says so when the open hashed every leaf of leaves.bin, as it did before level8.bin (a minute per 100
    /// million leaves), and why: an operator whose node starts slowly sees whether the next start will be quick.</summary>
    private void ReportTreeLoad(StoreRecoveryProgress value)
    {
        string? why = value.TreeLoad switch
        {
            StoreTreeLoad.LevelsMissing => "level8.bin is missing: a build before 2026-12-05 wrote the store",
            StoreTreeLoad.LevelsShort => "level8.bin holds fewer hashes than the checkpoint counts: a build before 2026-12-05 checkpointed the store since, or a crash cut its rewrite short",
            StoreTreeLoad.NoRoot => "the checkpoint records no root to check level8.bin against: a build before 2026-12-01 wrote it",
            _ => null,
        };
        if (why is not null)
        {
            LogTreeRehashed(logger, value.LeavesHashed, why);
        }
        else if (value.TreeLoad is StoreTreeLoad.LevelsMismatch or StoreTreeLoad.LevelsUnreadable)
        {
            LogTreeRehashedWarning(logger, value.LeavesHashed, value.TreeLoad == StoreTreeLoad.LevelsMismatch
                ? "level8.bin's hashes do not make the checkpoint's root: the file changed after it was written"
                : "level8.bin could not be read");
        }
    }

    // Event ids 30-39: the store's open (ids are unique across the node; LoggerEventIdTests checks). Counts with
    // thousands separators: a large store's are in the millions.
    [LoggerMessage(EventId = 30, Level = LogLevel.Information, Message = "Opening the store in {StoreDirectory}: a checkpoint, and {LogMiB:F1} MiB of write-ahead log on disk")]
    private static partial void LogOpening(ILogger logger, string storeDirectory, double logMiB);

    [LoggerMessage(EventId = 31, Level = LogLevel.Information, Message = "Opening the store in {StoreDirectory}: no checkpoint, and {LogMiB:F1} MiB of write-ahead log on disk to replay")]
    private static partial void LogOpeningWithoutCheckpoint(ILogger logger, string storeDirectory, double logMiB);

    [LoggerMessage(EventId = 32, Level = LogLevel.Information, Message = "Loaded the store's checkpoint ({Seconds:F1} s into the open): {LogEntries:N0} log entries, " +
        "{Envelopes:N0} waiting envelopes in {Mailboxes:N0} mailboxes; replaying {ReplayMiB:F1} MiB of write-ahead log after it")]
    private static partial void LogLoaded(ILogger logger, double seconds, long logEntries, long envelopes, int mailboxes, double replayMiB);

    [LoggerMessage(EventId = 33, Level = LogLevel.Information, Message = "Replaying the store's write-ahead log: {Records:N0} records, " +
        "{ReplayedMiB:F1} of {ReplayMiB:F1} MiB ({Percent:F0} %), {Seconds:F0} s into the open")]
    private static partial void LogReplaying(ILogger logger, long records, double replayedMiB, double replayMiB, double percent, double seconds);

    [LoggerMessage(EventId = 34, Level = LogLevel.Information, Message = "Store recovered in {Seconds:F1} s: {Envelopes:N0} waiting envelopes in {Mailboxes:N0} mailboxes, " +
        "{LogEntries:N0} log entries; {Records:N0} write-ahead log records replayed")]
    private static partial void LogRecovered(ILogger logger, double seconds, long envelopes, int mailboxes, long logEntries, long records);

    // A new store's lines: before, its first start said "no checkpoint, and 0.0 MiB of write-ahead log on disk to
    // replay" and "Store recovered", as if something had been lost and recovered.
    [LoggerMessage(EventId = 35, Level = LogLevel.Information, Message = "Opening the store in {StoreDirectory}: a new store (no checkpoint, no write-ahead log), nothing to recover")]
    private static partial void LogOpeningNew(ILogger logger, string storeDirectory);

    [LoggerMessage(EventId = 37, Level = LogLevel.Information, Message = "Rebuilt the transparency log's tree from all {Leaves:N0} leaf hashes of leaves.bin ({Reason}); the next checkpoint writes level8.bin, and later starts read it instead")]
    private static partial void LogTreeRehashed(ILogger logger, long leaves, string reason);

    [LoggerMessage(EventId = 38, Level = LogLevel.Warning, Message = "Rebuilt the transparency log's tree from all {Leaves:N0} leaf hashes of leaves.bin ({Reason}); the next checkpoint writes level8.bin again")]
    private static partial void LogTreeRehashedWarning(ILogger logger, long leaves, string reason);

    [LoggerMessage(EventId = 36, Level = LogLevel.Information, Message = "New store ready in {Seconds:F1} s")]
    private static partial void LogNewReady(ILogger logger, double seconds);
}
