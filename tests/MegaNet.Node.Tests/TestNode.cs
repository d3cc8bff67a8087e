using System.Collections.Concurrent;
using MegaNet.Api;
using MegaNet.Node.Hosting;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace MegaNet.Node.Tests;

/// <summary>
/// A real node on 127.0.0.1 (port 0) with its own data directory, and a log sink that records every error (and
/// critical) line the server writes, so a test can fail on an unexpected one; warnings are not recorded.
/// </summary>
public sealed class TestNode : IAsyncDisposable
{
    private WebApplication? _app;

    private readonly Action<IServiceCollection>? _services;

    private TestNode(NodeOptions options, Action<IServiceCollection>? services) => (Options, _services) = (options, services);

    public NodeOptions Options { get; }

    public Uri Address { get; private set; } = null!;

    public ConcurrentQueue<string> Errors { get; } = new();

    /// <summary>Options for load that the per-key token bucket must not refuse (a million a second, a million burst).</summary>
    public static void Unthrottled(NodeOptions options)
    {
        options.SubmitRatePerKey = 1_000_000;
        options.SubmitBurst = 1_000_000;
    }

    /// <summary>Starts a node; <paramref name="services"/> are added after the node's own (a test's observer of the
    /// calls, such as a gRPC interceptor), at every restart too.</summary>
    public static async Task<TestNode> StartAsync(Action<NodeOptions>? configure = null, string? dataDirectory = null, Action<IServiceCollection>? services = null)
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
        var node = new TestNode(options, services);
        await node.RestartAsync();
        return node;
    }

    public async Task RestartAsync()
    {
        await StopAsync();
        _app = NodeHost.Build(Options, l => l.AddProvider(new LogCapture(LogLevel.Error, Errors, stackTraces: true)), _services);
        Address = await NodeHost.StartAsync(_app);
    }

    public MegaNetClient Client() => new(Address);

    /// <summary>Stops the node, copies its data directory (key and store) to <paramref name="destination"/> as an
    /// operator's backup, and starts it again (at a new port).</summary>
    public async Task BackUpAsync(string destination)
    {
        await StopAsync();
        CopyDirectory(Options.DataDirectory, destination);
        await RestartAsync();
    }

    /// <summary>Stops the node, puts back the store of a backup <see cref="BackUpAsync"/> made, and starts it again:
    /// the same key over an older log.</summary>
    public async Task RestoreStoreAsync(string backup)
    {
        await StopAsync();
        string store = Path.Combine(Options.DataDirectory, "store");
        Directory.Delete(store, recursive: true);
        CopyDirectory(Path.Combine(backup, "store"), store);
        await RestartAsync();
    }

    /// <summary>Copies <paramref name="source"/> and everything in it to <paramref name="destination"/> (files keep their modes).</summary>
    public static void CopyDirectory(string source, string destination)
    {
        Directory.CreateDirectory(destination);
        foreach (string file in Directory.EnumerateFiles(source))
        {
            File.Copy(file, Path.Combine(destination, Path.GetFileName(file)));
        }

        foreach (string directory in Directory.EnumerateDirectories(source))
        {
            CopyDirectory(directory, Path.Combine(destination, Path.GetFileName(directory)));
        }
    }

    /// <summary>The running node's services.</summary>
    public IServiceProvider Services => _app?.Services ?? throw new InvalidOperationException("The node is not running.");

    /// <summary>The port the node's metrics listener took (the second listener; <c>MetricsListen</c> ADDRESS:0 lets
    /// the kernel choose one no other test holds).</summary>
    public int MetricsPort => new Uri(Services.GetRequiredService<Microsoft.AspNetCore.Hosting.Server.IServer>()
        .Features.Get<Microsoft.AspNetCore.Hosting.Server.Features.IServerAddressesFeature>()!.Addresses.ElementAt(1)).Port;

    /// <summary>The seed proof-of-work stamps are made for at this node now (<c>Status.pow_seed</c>).</summary>
    public byte[] PowSeed => Services.GetRequiredService<Admission.AdmissionPipeline>().PowSeed.ToArray();

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
