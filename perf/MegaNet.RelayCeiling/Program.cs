using System.Net;
using MegaNet.Core.Verification;
using MegaNet.Node.Hosting;
using MegaNet.Store;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace MegaNet.RelayCeiling;

/// <summary>
/// Serves the real node (gRPC, admission, batching, the verifier) on loopback with a stage taken out, so that
/// <c>meganet load</c> against it shows what the rest of the node can carry on this machine: with <c>--without store</c>
/// every put is acknowledged without being stored (<see cref="NoOpStore"/>); with <c>--without store,verification</c>
/// every signature also counts as valid unseen (<see cref="UncheckedVerifier"/>). The relay target (streaming accepted
/// envelopes/s at least half the raw simd verifier's rate) can be met only where the node without its store reaches it.
/// </summary>
internal static class Program
{
    private const string Usage = """
        usage: MegaNet.RelayCeiling [--without store|store,verification] [--listen 127.0.0.1:PORT] [--backend NAME]
          --without  the stages taken out of the node: store (default; puts acknowledged, nothing kept, receipts
                     that do not check) or store,verification (every signature also counted valid unseen)
          --listen   loopback address and port to serve on (default 127.0.0.1:7712; port 0 takes a free one, named
                     at start); other addresses are refused, since this node keeps nothing and, without
                     verification, accepts anything
          --backend  the verifier, as `meganet node --backend` takes it (default auto: the GPU when there is one),
                     so the node it is compared with can run the same one
        Then, from another shell, e.g.:
          meganet load --node http://127.0.0.1:7712 --clients 8 --envelopes 300000 --mode stream --per-request 64
        and compare with the same load against `meganet node` (the load prints each rate as a share of the raw simd
        verifier's, timed in the same run). Ctrl+C stops it and deletes its temporary data directory (the node key).
        """;

    private static async Task<int> Main(string[] args)
    {
        if (args.Any(a => a is "--help" or "-h" or "-?"))
        {
            Console.WriteLine(Usage);
            return 0;
        }

        string without = "store";
        string listen = "127.0.0.1:7712";
        string backend = "auto";
        for (int i = 0; i < args.Length; i++)
        {
            string? value = i + 1 < args.Length ? args[i + 1] : null;
            switch (args[i])
            {
                case "--without" when value is not null:
                    without = value;
                    i++;
                    break;
                case "--listen" when value is not null:
                    listen = value;
                    i++;
                    break;
                case "--backend" when value is not null:
                    backend = value;
                    i++;
                    break;
                default:
                    return Fail($"unknown or incomplete argument '{args[i]}' (--help shows the usage)");
            }
        }

        bool noVerification;
        switch (without)
        {
            case "store":
                noVerification = false;
                break;
            case "store,verification" or "verification,store":
                noVerification = true;
                break;
            default:
                return Fail($"--without takes 'store' or 'store,verification', not '{without}'");
        }

        // Port 0 takes a free port, named in the NOT A RELAY line (tests).
        // A port must be given: IPEndPoint reads "[::1]" as port 0, and "::1" too (an IPv6 address goes in brackets).
        bool hasPort = listen.StartsWith('[') ? listen.Contains("]:", StringComparison.Ordinal) : listen.Count(c => c == ':') == 1;
        if (!IPEndPoint.TryParse(listen, out IPEndPoint? endpoint) || !hasPort)
        {
            return Fail($"--listen takes a loopback address and port such as 127.0.0.1:7712 or [::1]:7712, not '{listen}'");
        }

        if (!IPAddress.IsLoopback(endpoint.Address))
        {
            return Fail($"--listen {listen} is not a loopback address: this node keeps nothing{(noVerification ? " and accepts any signature" : "")}, so it serves this machine only");
        }

        string data = Directory.CreateTempSubdirectory("meganet-ceiling-").FullName;
        try
        {
            var options = new NodeOptions
            {
                DataDirectory = data,
                Listen = listen,
                Backend = backend,
                // Nothing is held, but admission still reads the quotas: the load's 64 mailboxes must never fill.
                MailboxMaxCount = int.MaxValue,
                MailboxMaxBytes = long.MaxValue,
                // Nor may the anti-spam limit bound the rate: 1,024 sending keys at the default 200/s carry 204,800/s,
                // which a many-core machine passes (97,645 of 1,000,000 refused at 344,000/s on 16 cores).
                SubmitRatePerKey = 1_000_000,
                SubmitBurst = 1_000_000,
            };
            WebApplication built;
            try
            {
                built = Build(options, noVerification);
            }
            catch (ArgumentException e)
            {
                // An option the node refuses (an unknown --backend): its own message, in one line.
                return Fail(e.Message);
            }

            await using WebApplication app = built;
            Uri url;
            try
            {
                url = await NodeHost.StartAsync(app).ConfigureAwait(false);
            }
            catch (IOException e)
            {
                // Kestrel's bind failure ("address already in use"): one line, not a stack trace.
                return Fail($"cannot listen on {listen}: {e.Message} (another --listen port, or stop what holds it)");
            }
            catch (System.Net.Sockets.SocketException e)
            {
                // An address this machine does not have ([::1] without IPv6).
                return Fail($"cannot listen on {listen}: {e.Message} (give an address this machine has)");
            }
            catch (BackendUnavailableException e)
            {
                // --backend gpu without a usable GPU, or one that failed its self-check: its reason, in one line.
                return Fail(e.Message);
            }

            Console.WriteLine($"NOT A RELAY: a node without its {(noVerification ? "store and without verification" : "store")} at {url} (keeps nothing; receipts do not check). Ctrl+C stops it.");
            await app.WaitForShutdownAsync().ConfigureAwait(false);
            var store = (NoOpStore)app.Services.GetRequiredService<IEnvelopeStore>();
            Console.WriteLine($"stopped after acknowledging {store.Puts:N0} puts without storing them");
            return 0;
        }
        finally
        {
            Directory.Delete(data, recursive: true);
        }
    }

    // The node with the store (and, asked, verification) replaced. The host's own "Hosting failed to start" error would
    // repeat a bind failure, reported in one line by Main.
    private static WebApplication Build(NodeOptions options, bool noVerification) =>
        NodeHost.Build(options, logging: l => l.AddFilter("Microsoft.Extensions.Hosting.Internal.Host", LogLevel.None), services: s =>
        {
            // Registered after the node's own, so these are the ones resolved.
            s.AddSingleton<IEnvelopeStore>(sp =>
            {
                NodeKey key = sp.GetRequiredService<NodeKey>();
                return new NoOpStore(key.SecretKey, key.PublicKey);
            });
            if (noVerification)
            {
                s.AddSingleton<IBatchVerifier>(sp => new UncheckedVerifier(sp.GetRequiredService<NodeVerifiers>().Node));
            }
        });

    private static int Fail(string message)
    {
        Console.Error.WriteLine($"MegaNet.RelayCeiling: {message}");
        return 2;
    }
}
