using MegaNet.Node.Admission;
using MegaNet.Node.Services;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace MegaNet.Node.Hosting;

/// <summary>
/// Every second, has the tables that remember client sites (mailbox authentication, delegated verification, log proofs)
/// forget what expired. They sweep themselves on each call; on a node that gets no more calls, an address seen once stayed in
/// memory for good, where docs/protocol.md says how long each is kept. (The admission batcher sweeps its own table
/// while idle.)
/// </summary>
/// <remarks>A sweep that throws is logged and tried again a second later: an exception out of this service would stop
/// the whole node (the host's default for a failed background service) over tables that only bound memory.</remarks>
internal sealed partial class SiteSweeper : BackgroundService
{
    /// <summary>Distinct failures logged per table; past them a table's failures are no longer logged (each sweep
    /// that fails would otherwise add a line once a second, if its message changes every time).</summary>
    internal const int MaxLoggedFailures = 16;

    private readonly (string Table, Action Sweep)[] _sweeps;
    private readonly ILogger _logger;
    private readonly TimeSpan _interval;
    private readonly HashSet<string>[] _logged;

    /// <summary>Sweeps the node's three site tables every second, logging to <paramref name="logger"/>.</summary>
    public SiteSweeper(MailboxAuthenticator authenticator, DelegatedVerificationGate verifyGate, ProofGate proofGate, ILogger logger)
        : this([("mailbox authentication", authenticator.Sweep), ("delegated verification", verifyGate.Sweep), ("log proof", proofGate.Sweep)], logger, TimeSpan.FromSeconds(1))
    {
    }

    /// <summary>Runs each of <paramref name="sweeps"/> every <paramref name="interval"/> (tests give their own).</summary>
    internal SiteSweeper((string Table, Action Sweep)[] sweeps, ILogger logger, TimeSpan interval)
    {
        _sweeps = sweeps;
        _logger = logger;
        _interval = interval;
        _logged = [.. sweeps.Select(_ => new HashSet<string>(StringComparer.Ordinal))];
    }

    /// <inheritdoc/>
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(_interval);
        try
        {
            while (await timer.WaitForNextTickAsync(stoppingToken).ConfigureAwait(false))
            {
                for (int i = 0; i < _sweeps.Length; i++)
                {
                    Sweep(i);
                }
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
    }

    private void Sweep(int index)
    {
        (string table, Action sweep) = _sweeps[index];
        try
        {
            sweep();
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // Once per distinct failure: a sweep that keeps failing the same way would log a line every second.
            HashSet<string> logged = _logged[index];
            if (logged.Count < MaxLoggedFailures && logged.Add($"{e.GetType().FullName}: {e.Message}"))
            {
                LogSweepFailed(_logger, table, logged.Count == MaxLoggedFailures ? "; further failures of this sweep are not logged" : "", e);
            }
        }
    }

    [LoggerMessage(EventId = 7, Level = LogLevel.Error, Message = "Sweeping the {Table} site table failed (logged once per distinct failure{More}); the node goes on and tries again each second")]
    private static partial void LogSweepFailed(ILogger logger, string table, string more, Exception exception);
}
