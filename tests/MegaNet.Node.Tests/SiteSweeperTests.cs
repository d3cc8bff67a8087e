using MegaNet.Node.Hosting;

namespace MegaNet.Node.Tests;

/// <summary>The node's once-a-second sweep of its site tables survives a sweep that throws.</summary>
public sealed class SiteSweeperTests
{
    [Fact]
    public async Task A_failing_sweep_is_logged_once_per_distinct_failure_and_every_table_goes_on_being_swept()
    {
        // An exception out of the sweeper stopped the whole node (the host's default for a failed background service),
        // logged only under the host's category, which `meganet node` mutes, and the node exited 0.
        var log = new LogCapture();
        int failing = 0, healthy = 0;
        var sweeper = new SiteSweeper(
            [
                ("failing", () => throw (Interlocked.Increment(ref failing) <= 5 ? new InvalidOperationException("the same fault") : new IOException("another fault"))),
                ("healthy", () => Interlocked.Increment(ref healthy)),
            ],
            log.CreateLogger("MegaNet.Node"), TimeSpan.FromMilliseconds(5));
        await sweeper.StartAsync(CancellationToken.None);
        try
        {
            var waited = System.Diagnostics.Stopwatch.StartNew();
            while (Volatile.Read(ref failing) < 20 && waited.Elapsed < TimeSpan.FromMinutes(1))
            {
                await Task.Delay(10);
            }
        }
        finally
        {
            await sweeper.StopAsync(CancellationToken.None);
        }

        Assert.True(Volatile.Read(ref failing) >= 20, $"the failing sweep ran {failing} times");
        Assert.True(Volatile.Read(ref healthy) >= 20, $"the other table was swept {healthy} times");
        Assert.True(sweeper.ExecuteTask!.IsCompletedSuccessfully, $"the sweeper ended {sweeper.ExecuteTask.Status}");
        Assert.Collection(log.Lines,
            l => Assert.Equal("Error MegaNet.Node: Sweeping the failing site table failed (logged once per distinct failure); the node goes on and tries again each second [InvalidOperationException: the same fault]", l),
            l => Assert.EndsWith("[IOException: another fault]", l, StringComparison.Ordinal));
    }

    [Fact]
    public async Task A_sweep_that_fails_differently_every_time_stops_being_logged()
    {
        var log = new LogCapture();
        int calls = 0;
        var sweeper = new SiteSweeper([("changing", () => throw new InvalidOperationException($"fault {Interlocked.Increment(ref calls)}"))],
            log.CreateLogger("MegaNet.Node"), TimeSpan.FromMilliseconds(2));
        await sweeper.StartAsync(CancellationToken.None);
        var waited = System.Diagnostics.Stopwatch.StartNew();
        while (Volatile.Read(ref calls) < SiteSweeper.MaxLoggedFailures * 3 && waited.Elapsed < TimeSpan.FromMinutes(1))
        {
            await Task.Delay(10);
        }

        await sweeper.StopAsync(CancellationToken.None);
        Assert.Equal(SiteSweeper.MaxLoggedFailures, log.Lines.Count);
        Assert.Contains("further failures of this sweep are not logged", log.Lines[^1], StringComparison.Ordinal);
    }
}
