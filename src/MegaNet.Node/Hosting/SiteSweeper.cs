using MegaNet.Node.Admission;
using MegaNet.Node.Services;
using Microsoft.Extensions.Hosting;

namespace MegaNet.Node.Hosting;

/// <summary>
/// Every second, has the tables that remember client sites (mailbox authentication, delegated verification) forget
/// what expired. They sweep themselves on each call; on a node that gets no more calls, an address seen once stayed in
/// memory for good, where docs/protocol.md says how long each is kept. (The admission batcher sweeps its own table
/// while idle.)
/// </summary>
internal sealed class SiteSweeper(MailboxAuthenticator authenticator, DelegatedVerificationGate verifyGate) : BackgroundService
{
    private static readonly TimeSpan Interval = TimeSpan.FromSeconds(1);

    /// <inheritdoc/>
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(Interval);
        try
        {
            while (await timer.WaitForNextTickAsync(stoppingToken).ConfigureAwait(false))
            {
                authenticator.Sweep();
                verifyGate.Sweep();
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
    }
}
