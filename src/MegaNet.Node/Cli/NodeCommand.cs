using System.CommandLine;
using MegaNet.Core.Verification;
using MegaNet.Node.Hosting;
using MegaNet.Store;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Configuration;

namespace MegaNet.Node.Cli;

/// <summary><c>meganet node</c>: runs the relay node until Ctrl+C / SIGTERM, then drains admission and commits.</summary>
internal static class NodeCommand
{
    public static Command Build()
    {
        var defaults = new NodeOptions();
        var data = new Option<string?>("--data") { Description = $"Data directory (node key, store). Default {defaults.DataDirectory}." };
        var listen = new Option<string?>("--listen") { Description = $"ADDRESS:PORT for gRPC over HTTP/2. Default {defaults.Listen}; a non-loopback address needs --tls-cert." };
        var backend = new Option<string?>("--backend", "-b") { Description = "Verifier backend: auto (default), simd, gpu, reference." };
        var threads = new Option<int?>("--threads", "-t") { Description = "Verifier threads. Default: all cores but one (at least one), leaving a core to the network and the store." };
        var tlsCert = new Option<string?>("--tls-cert") { Description = "TLS certificate (PEM or PFX) for non-loopback listening." };
        var tlsKey = new Option<string?>("--tls-key") { Description = "PEM private key for --tls-cert." };
        var metrics = new Option<string?>("--metrics-listen") { Description = "ADDRESS:PORT serving Prometheus text at /metrics over HTTP/1.1. Default: off." };
        var config = new Option<string>("--config") { Description = "Settings file (section \"MegaNet\"). Default meganet.json if present.", DefaultValueFactory = _ => "meganet.json" };
        var command = new Command("node",
            "Run the relay node. Settings come from meganet.json (section MegaNet), then MEGANET_MegaNet__<Option> environment variables, then these flags; " +
            "every option and its default is listed in README.")
        {
            data, listen, backend, threads, tlsCert, tlsKey, metrics, config,
        };
        command.SetAction(async (parse, ct) =>
        {
            NodeOptions options;
            try
            {
                IConfigurationRoot configuration = new ConfigurationBuilder()
                    .AddJsonFile(Path.GetFullPath(parse.GetValue(config)!), optional: true)
                    .AddEnvironmentVariables("MEGANET_")
                    .Build();
                options = new NodeOptions();
                configuration.GetSection("MegaNet").Bind(options);
                options.DataDirectory = parse.GetValue(data) ?? options.DataDirectory;
                options.Listen = parse.GetValue(listen) ?? options.Listen;
                options.Backend = parse.GetValue(backend) ?? options.Backend;
                options.Threads = parse.GetValue(threads) ?? options.Threads;
                options.TlsCertificate = parse.GetValue(tlsCert) ?? options.TlsCertificate;
                options.TlsKey = parse.GetValue(tlsKey) ?? options.TlsKey;
                options.MetricsListen = parse.GetValue(metrics) ?? options.MetricsListen;
                options.Validate();
            }
            catch (Exception e) when (e is ArgumentException or InvalidOperationException or FormatException or InvalidDataException)
            {
                Console.Error.WriteLine($"meganet node: {e.Message}");
                return 1;
            }

            try
            {
                await using WebApplication app = NodeHost.Build(options);
                await NodeHost.StartAsync(app, ct);
                await app.WaitForShutdownAsync(CancellationToken.None);
                return Environment.ExitCode; // non-zero when the store could not shut down cleanly (logged)
            }
            catch (Exception e) when (e is BackendUnavailableException or StoreCorruptException or StoreInUseException or InvalidDataException or ArgumentException or IOException)
            {
                string hint = e.InnerException is Microsoft.AspNetCore.Connections.AddressInUseException
                    ? " Another node (or program) listens there: stop it, or choose another address with --listen."
                    : "";
                Console.Error.WriteLine($"meganet node: {e.Message}{hint}");
                return 1;
            }
        });
        return command;
    }
}
