using System.Net.Sockets;
using System.Reflection;
using System.Runtime.ExceptionServices;
using System.Runtime.InteropServices;
using MegaNet.Node.Hosting;
using MegaNet.Store;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace MegaNet.Node.Tests;

/// <summary>What a starting node tells its operator: the addresses it is bound to as they are, settings that defeat
/// their purpose, and a failure that stops it.</summary>
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

    [SkippableFact]
    public async Task A_node_on_every_address_is_announced_as_bound_with_its_metrics_port_and_pings_silent_connections()
    {
        // [::] needs IPv6 in the kernel, which a container may have switched off.
        Skip.IfNot(Socket.OSSupportsIPv6, "this machine has no IPv6, so [::] cannot be bound");
        // --listen [::]:7700 was announced as https://127.0.0.1:7700/ (a rewrite meant for the callers that dial it),
        // and the port --metrics-listen 127.0.0.1:0 chose was never shown.
        (string certificate, string key) = TlsNodeTests.SelfSigned(_dir, "node");
        var log = new LogCapture();
        await using WebApplication app = NodeHost.Build(Options(o =>
        {
            o.Listen = "[::]:0";
            o.TlsCertificate = certificate;
            o.TlsKey = key;
            o.MetricsListen = "127.0.0.1:0";
        }), l => l.AddProvider(log));
        Uri dialled = await NodeHost.StartAsync(app);
        try
        {
            Assert.Equal("https://127.0.0.1:" + dialled.Port + "/", dialled.ToString());
            string started = Assert.Single(log.Lines, l => l.Contains("MegaNet node listening on", StringComparison.Ordinal));
            Assert.Contains($"listening on https://[::]:{dialled.Port};", started, StringComparison.Ordinal);

            string metrics = Assert.Single(log.Lines, l => l.Contains("Metrics served at ", StringComparison.Ordinal));
            string url = metrics[(metrics.IndexOf("Metrics served at ", StringComparison.Ordinal) + "Metrics served at ".Length)..];
            Assert.Matches(@"^http://127\.0\.0\.1:[1-9][0-9]*/metrics$", url);
            using var http = new HttpClient();
            Assert.Contains("# TYPE", await http.GetStringAsync(new Uri(url)), StringComparison.Ordinal);

            // A subscriber whose connection died without a word (a NAT that forgot it) is found by these pings within
            // about a minute and its Subscribe slot freed; without them it held the slot until TCP gave up (~15 min).
            Http2Limits http2 = app.Services.GetRequiredService<IOptions<KestrelServerOptions>>().Value.Limits.Http2;
            Assert.Equal(TimeSpan.FromSeconds(30), http2.KeepAlivePingDelay);
            Assert.Equal(TimeSpan.FromSeconds(20), http2.KeepAlivePingTimeout);
        }
        finally
        {
            await app.StopAsync();
        }
    }

    [Fact]
    public async Task A_proof_of_work_floor_the_shipped_clients_do_not_pay_is_a_warning_at_start()
    {
        var log = new LogCapture();
        await using WebApplication app = NodeHost.Build(Options(o =>
        {
            o.PowMaxBits = 32;
            o.PowMinBits = 25;
        }), l => l.AddProvider(log));
        await NodeHost.StartAsync(app);
        await app.StopAsync();
        Assert.Single(log.Lines, l => l.StartsWith("Warning MegaNet.Node: PowMinBits 25 is above the 24 bits the shipped clients pay at most", StringComparison.Ordinal));
    }

    [Fact]
    public async Task A_node_says_which_sha_256_its_transparency_log_hashes_with()
    {
        // The log's hashing fell back to libsodium's portable SHA-256, about a microsecond more per stored envelope,
        // without a word where libcrypto did not load or answered a known input wrongly.
        var log = new LogCapture();
        await using WebApplication app = NodeHost.Build(Options(), l => l.AddProvider(log));
        await NodeHost.StartAsync(app);
        await app.StopAsync();
        string line = Assert.Single(log.Lines, l => l.Contains("Transparency log hashing: ", StringComparison.Ordinal));
        Assert.StartsWith("Information MegaNet.Node: Transparency log hashing: SHA-256 through ", line, StringComparison.Ordinal);
        // Where this process can load OpenSSL's libcrypto with the low-level calls (Linux; .NET's own cryptography loads
        // it there), they are the ones used, and the line names the library; elsewhere it says why not.
        string? loadable = ((string[])["libcrypto.so.3", "libcrypto.so.1.1"]).FirstOrDefault(name =>
            NativeLibrary.TryLoad(name, out nint library) && ((string[])["SHA256_Init", "SHA256_Update", "SHA256_Final"]).All(f => NativeLibrary.TryGetExport(library, f, out _)));
        if (OperatingSystem.IsLinux() && loadable is not null)
        {
            Assert.Contains($"OpenSSL's low-level calls ({loadable};", line, StringComparison.Ordinal);
        }
        else
        {
            Assert.Contains("libsodium's portable code, the slower one (OpenSSL's calls are not used: ", line, StringComparison.Ordinal);
        }
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
    public async Task A_node_says_how_its_store_recovery_goes_and_when_its_stop_begins()
    {
        // A node on a large store said nothing between "Starting the verifier" and "listening" while the store recovered
        // (seconds to minutes), and nothing between a SIGTERM and "stopped cleanly".
        string crashed = Path.Combine(_dir, "crashed");
        var firstLog = new LogCapture();
        await using (WebApplication first = NodeHost.Build(Options(), l => l.AddProvider(firstLog)))
        {
            await NodeHost.StartAsync(first);
            // A first start says that the store is new, not that it found no checkpoint and 0.0 MiB to replay.
            List<string> firstLines = [.. firstLog.Lines];
            int created = firstLines.IndexOf($"Information MegaNet.Store: Opening the store in {Path.Combine(_dir, "data", "store")}: a new store (no checkpoint, no write-ahead log), nothing to recover");
            int ready = firstLines.FindIndex(l => l.StartsWith("Information MegaNet.Store: New store ready in ", StringComparison.Ordinal));
            Assert.True(created >= 0 && ready > created, string.Join(Environment.NewLine, firstLines));
            Assert.DoesNotContain(firstLines, l => l.Contains("Store recovered", StringComparison.Ordinal));
            var store = (FasterEnvelopeStore)first.Services.GetRequiredService<IEnvelopeStore>();
            byte[] recipient = new byte[32];
            for (int i = 0; i < 50; i++)
            {
                if (i == 20)
                {
                    await store.CheckpointAsync();
                }

                byte[] envelope = new byte[300];
                envelope[0] = (byte)i;
                await store.PutAsync(new PutRequest(envelope, recipient, DateTimeOffset.UtcNow.AddDays(1)));
            }

            // What a kill -9 now would leave: the checkpoint of 20 and the log of 30 after it (the lock is the running node's).
            foreach (string file in Directory.EnumerateFiles(Path.Combine(_dir, "data"), "*", SearchOption.AllDirectories).Where(f => Path.GetFileName(f) != "LOCK"))
            {
                string target = Path.Combine(crashed, Path.GetRelativePath(Path.Combine(_dir, "data"), file));
                Directory.CreateDirectory(Path.GetDirectoryName(target)!);
                File.Copy(file, target);
            }

            await first.StopAsync();
        }

        // As a store an older build wrote: its start hashes every leaf again, and says why.
        File.Delete(Path.Combine(crashed, "store", "level8.bin"));
        var log = new LogCapture();
        await using WebApplication app = NodeHost.Build(Options(o =>
        {
            o.DataDirectory = crashed;
            o.StoreRecoveryProgressInterval = TimeSpan.Zero; // a line at every record replayed
        }), l => l.AddProvider(log));
        await NodeHost.StartAsync(app);
        await app.StopAsync();

        List<string> lines = [.. log.Lines];
        int opening = lines.FindIndex(l => l.StartsWith($"Information MegaNet.Store: Opening the store in {Path.Combine(crashed, "store")}: a checkpoint, and ", StringComparison.Ordinal));
        int loaded = lines.FindIndex(l => l.StartsWith("Information MegaNet.Store: Loaded the store's checkpoint (", StringComparison.Ordinal)
            && l.Contains("): 20 log entries, 20 waiting envelopes in 1 mailboxes; replaying ", StringComparison.Ordinal));
        int rehashed = lines.IndexOf("Information MegaNet.Store: Rebuilt the transparency log's tree from all 20 leaf hashes of leaves.bin (level8.bin is missing: " +
            "a build before 2026-12-05 wrote the store); the next checkpoint writes level8.bin, and later starts read it instead");
        int[] replaying = [.. lines.Select((l, i) => l.StartsWith("Information MegaNet.Store: Replaying the store's write-ahead log: ", StringComparison.Ordinal) ? i : -1).Where(i => i >= 0)];
        int recovered = lines.FindIndex(l => l.StartsWith("Information MegaNet.Store: Store recovered in ", StringComparison.Ordinal)
            && l.EndsWith(" s: 50 waiting envelopes in 1 mailboxes, 50 log entries; 30 write-ahead log records replayed", StringComparison.Ordinal));
        int listening = lines.FindIndex(l => l.Contains("MegaNet node listening on", StringComparison.Ordinal));
        int stopping = lines.FindIndex(l => l == "Information MegaNet.Node: MegaNet node stopping: ending streams, draining admission (0 submissions queued), then the store's final checkpoint");
        string all = string.Join(Environment.NewLine, lines);
        Assert.True(opening >= 0 && rehashed > opening && loaded > rehashed && recovered > loaded && listening > recovered && stopping > listening, all);
        Assert.Equal(30, replaying.Length);
        Assert.All(replaying, i => Assert.InRange(i, loaded + 1, recovered - 1));
        Assert.Contains("Replaying the store's write-ahead log: 30 records, ", lines[replaying[^1]], StringComparison.Ordinal);
        Assert.Equal(0, NodeHost.ExitCode(app));
    }

    [Fact]
    public async Task A_node_stopped_on_request_exits_0()
    {
        await using WebApplication app = NodeHost.Build(Options());
        await NodeHost.StartAsync(app);
        await app.StopAsync();
        Assert.Equal(0, NodeHost.ExitCode(app));
    }

    [Fact]
    public async Task A_store_that_cannot_close_gives_this_node_exit_code_3_and_leaves_the_process_exit_code_alone()
    {
        // The stop used to set Environment.ExitCode: a node embedded in a test run (or in `meganet load`) set the exit
        // code of the whole test process.
        var log = new LogCapture();
        try
        {
            await using WebApplication app = NodeHost.Build(Options(), l => l.AddProvider(log), services =>
            {
                ServiceDescriptor opens = services.Single(d => d.ServiceType == typeof(IEnvelopeStore));
                services.Remove(opens);
                services.AddSingleton(sp => FailsToClose.Around((IEnvelopeStore)opens.ImplementationFactory!(sp)));
            });
            await NodeHost.StartAsync(app);
            await app.StopAsync();
            Assert.Contains(log.Lines, l => l == $"Critical MegaNet.Node: {FailsToClose.Reason}");
            Assert.Equal(3, NodeHost.ExitCode(app));
            Assert.Equal(0, Environment.ExitCode);
        }
        finally
        {
            Environment.ExitCode = 0;
        }
    }

    [Fact]
    public void A_store_failure_outranks_a_drain_failure_in_either_order()
    {
        foreach (int[] order in new[] { new[] { NodeStopOutcome.DrainFailed, NodeStopOutcome.StoreFailed }, [NodeStopOutcome.StoreFailed, NodeStopOutcome.DrainFailed] })
        {
            var outcome = new NodeStopOutcome();
            Assert.Equal(0, outcome.ExitCode);
            outcome.Failed(order[0]);
            Assert.Equal(order[0], outcome.ExitCode);
            outcome.Failed(order[1]);
            Assert.Equal(3, outcome.ExitCode);
        }
    }

    /// <summary>The node's store, whose first close fails the way a store that cannot take its final checkpoint does
    /// (after closing, as <see cref="FasterEnvelopeStore"/> does); everything else goes to the store as it is.</summary>
    public class FailsToClose : DispatchProxy
    {
        public const string Reason = "The store closed without its shutdown checkpoint (a test's store)";

        private IEnvelopeStore _inner = null!;
        private int _closed;

        public static IEnvelopeStore Around(IEnvelopeStore inner)
        {
            IEnvelopeStore proxy = Create<IEnvelopeStore, FailsToClose>();
            ((FailsToClose)(object)proxy)._inner = inner;
            return proxy;
        }

        protected override object? Invoke(MethodInfo? targetMethod, object?[]? args)
        {
            if (targetMethod!.Name == nameof(IAsyncDisposable.DisposeAsync))
            {
                // Once: the container disposes the store again when the application is disposed.
                return Interlocked.Exchange(ref _closed, 1) == 0 ? CloseAndFailAsync() : _inner.DisposeAsync();
            }

            try
            {
                return targetMethod.Invoke(_inner, args);
            }
            catch (TargetInvocationException e) when (e.InnerException is not null)
            {
                ExceptionDispatchInfo.Throw(e.InnerException);
                throw;
            }
        }

        private async ValueTask CloseAndFailAsync()
        {
            await _inner.DisposeAsync();
            throw new StoreUnavailableException(Reason);
        }
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
