using System.Collections.Concurrent;
using MegaNet.Api;
using MegaNet.Node.Hosting;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Logging;

namespace MegaNet.Node.Tests;

/// <summary>
/// A real node on 127.0.0.1 (port 0) with its own data directory, and a log sink that records every error (and
/// critical) line the server writes, so a test can fail on an unexpected one; warnings are not recorded.
/// </summary>
public sealed class TestNode : IAsyncDisposable
{
    private WebApplication? _app;

    private TestNode(NodeOptions options) => Options = options;

    public NodeOptions Options { get; }

    public Uri Address { get; private set; } = null!;

    public ConcurrentQueue<string> Errors { get; } = new();

    /// <summary>Options for load that the per-key token bucket must not refuse (a million a second, a million burst).</summary>
    public static void Unthrottled(NodeOptions options)
    {
        options.SubmitRatePerKey = 1_000_000;
        options.SubmitBurst = 1_000_000;
    }

    public static async Task<TestNode> StartAsync(Action<NodeOptions>? configure = null, string? dataDirectory = null)
    {
        var options = new NodeOptions
        {
            DataDirectory = dataDirectory ?? Directory.CreateTempSubdirectory("meganet-node-").FullName,
            Listen = "127.0.0.1:0",
            Backend = "simd",
            Threads = 2,
            FlushMicroseconds = 200,
            StoreMemoryMiB = 8,
        };
        configure?.Invoke(options);
        var node = new TestNode(options);
        await node.RestartAsync();
        return node;
    }

    public async Task RestartAsync()
    {
        await StopAsync();
        _app = NodeHost.Build(Options, logging: l => l.AddProvider(new LogCapture(LogLevel.Error, Errors, stackTraces: true)));
        Address = await NodeHost.StartAsync(_app);
    }

    public MegaNetClient Client() => new(Address);

    /// <summary>The running node's services.</summary>
    public IServiceProvider Services => _app?.Services ?? throw new InvalidOperationException("The node is not running.");

    public async Task StopAsync()
    {
        if (_app is not null)
        {
            await _app.StopAsync();
            await _app.DisposeAsync();
            _app = null;
        }
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync();
        try
        {
            Directory.Delete(Options.DataDirectory, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    /// <summary>Fails when the server logged an error.</summary>
    public void AssertNoServerErrors() => Assert.True(Errors.IsEmpty, "The node logged errors:\n" + string.Join("\n", Errors));
}
