using MegaNet.Node.Hosting;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace MegaNet.Node.Tests;

/// <summary>What a node tells its operator: a failure that stops it.</summary>
public sealed class NodeStartLogTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("meganet-startlog-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private NodeOptions Options(Action<NodeOptions>? configure = null)
    {
        var options = new NodeOptions
        {
            DataDirectory = Path.Combine(_dir, "data"),
            Listen = "127.0.0.1:0",
            Backend = "simd",
            Threads = 1,
            StoreMemoryMiB = 8,
        };
        configure?.Invoke(options);
        return options;
    }

    [Fact]
    public async Task A_background_service_that_fails_stops_the_node_with_a_critical_line_and_exit_code_1()
    {
        // The host logged the failure under its own category, which `meganet node` mutes, and the node exited 0
        // saying it had stopped cleanly.
        var log = new LogCapture();
        await using WebApplication app = NodeHost.Build(Options(), l => l.AddProvider(log), s => s.AddHostedService<FailsAfterStart>());
        await NodeHost.StartAsync(app);
        await app.WaitForShutdownAsync().WaitAsync(TimeSpan.FromMinutes(1));
        Assert.Contains(log.Lines, l => l.StartsWith("Critical MegaNet.Node: The node's background service FailsAfterStart failed, which stops the node", StringComparison.Ordinal)
            && l.EndsWith("[InvalidOperationException: broken on purpose]", StringComparison.Ordinal));
        Assert.Equal(1, NodeHost.ExitCode(app));
    }

    [Fact]
    public async Task A_node_stopped_on_request_exits_0()
    {
        await using WebApplication app = NodeHost.Build(Options());
        await NodeHost.StartAsync(app);
        await app.StopAsync();
        Assert.Equal(0, NodeHost.ExitCode(app));
    }

    private sealed class FailsAfterStart : BackgroundService
    {
        protected override async Task ExecuteAsync(CancellationToken stoppingToken)
        {
            await Task.Delay(200, stoppingToken);
            throw new InvalidOperationException("broken on purpose");
        }
    }
}
