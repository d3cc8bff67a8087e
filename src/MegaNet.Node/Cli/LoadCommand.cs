using System.CommandLine;
using Grpc.Core;
using MegaNet.Api;
using MegaNet.Api.V1;
using MegaNet.Core.Verification;
using MegaNet.Node.Benchmarking;
using MegaNet.Node.Hosting;
using MegaNet.Node.Services;
using MegaNet.Node.Verification;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace MegaNet.Node.Cli;

/// <summary><c>meganet load</c>: N concurrent clients over unary and streaming submit.</summary>
internal static class LoadCommand
{
    private static readonly TimeSpan SealProgressInterval = TimeSpan.FromSeconds(5);

    public static Command Build()
    {
        var node = new Option<Uri?>("--node", "-n")
        {
            Description = "Node to load, e.g. http://127.0.0.1:7700. Default: start an embedded node on 127.0.0.1 with a temporary data directory. " +
                "The load goes to 64 recipients, and a node at its default quotas asks for proof of work for mail to a mailbox past 5,000 waiting envelopes " +
                "and refuses it at 10,000: for runs of more than about 300,000 envelopes in all, raise its MailboxMaxCount.",
            CustomParser = CliParsers.NodeUri,
        };
        var clients = new Option<int>("--clients", "-c") { Description = "Concurrent clients.", DefaultValueFactory = _ => 8 };
        var connections = new Option<int>("--connections")
        {
            Description = "HTTP/2 connections the clients spread over (client i uses connection i mod N; a connection carries 100 calls at once, and calls beyond that wait in the client). " +
                "1: every client multiplexed over one connection, as in the figures of docs/performance.md; " +
                "--connections equal to --clients gives each its own, as separate phones would have (more unary capacity, but more buffered in flight when streaming). " +
                "A mixed phase opens this many for its streams and as many again for its unary calls.",
            DefaultValueFactory = _ => 1,
        };
        var count = new Option<int>("--envelopes")
        {
            Description = "Envelopes per phase (sealed, and for streaming encoded, before timing starts); with --mode both the unary phase gets half as many, " +
                "with --mode mixed the mixed phase as many (so at the default --mixed-share it lasts twice as long as the streaming phase).",
            DefaultValueFactory = _ => 20_000,
        };
        var mode = new Option<string>("--mode")
        {
            Description = "stream, unary, both (stream first, then unary offered at half the stream rate), or mixed (stream first, then --mixed-share of the stream rate " +
                "again, half by default, as streamed envelopes with unary calls at --rate among them, by default a tenth of that load: the latency a single submission " +
                "gets from a node that busy).",
            DefaultValueFactory = _ => "both",
        };
        var rate = new Option<double>("--rate")
        {
            CustomParser = CliParsers.Number,
            Description = "Unary offered load in envelopes/s: calls start on schedule whether or not earlier ones have returned (open loop). " +
                "Default: half the measured streaming rate with --mode both; with --mode unary, closed loop (each client waits for its answer); with --mode mixed " +
                "the unary part of the mixed phase's load (--mixed-share of the streaming rate, the rest streamed), a tenth of it by default.",
        };
        var mixedShare = new Option<double>("--mixed-share")
        {
            CustomParser = CliParsers.Number,
            Description = "With --mode mixed: the share of the measured streaming rate the mixed phase offers in all, above 0 and at most 1. " +
                "Default 0.5, the relay target's half; lower ones say at what load a single submission's latency comes down.",
            DefaultValueFactory = _ => 0.5,
        };
        var warmup = new Option<int>("--warmup")
        {
            Description = "Envelopes sent before the measured phases, not counted: half streamed, half unary one call per client at a time, " +
                "so the node's code for both paths is compiled and tiered up (a cold node builds a backlog an open loop never drains). 0 skips it.",
            DefaultValueFactory = _ => 10_000,
        };
        var forged = new Option<double>("--forged")
        {
            CustomParser = CliParsers.Number,
            Description = "Also submit this many forged envelopes per second (well-formed, signature spoilt) during each measured phase, unary on a " +
                "connection of their own (from 127.0.0.2 when the node is on 127.0.0.1, so it sees another client), and report how the node answered them: what one hostile client costs the honest ones. Default 0: none.",
        };
        var backend = new Option<string>("--backend", "-b") { Description = "Verifier backend of the embedded node.", DefaultValueFactory = _ => "auto" };
        var noBaseline = new Option<bool>("--no-baseline")
        {
            Description = $"Skip the baseline. By default, when the node is on this machine (embedded, or at a loopback address), this process times the raw simd verifier " +
                $"(batch {LoadBaseline.Batch:N0}, one thread per core, key cache off, libsodium beside it) just before the streaming phase and again just after it, with the node idle, " +
                "and gives the streaming rate (and with --mode both the unary rate after it, with --mode mixed the mixed phase's) as a share of the two timings' mean (with the range it lies in when they " +
                $"differ by more than {LoadBaseline.UnsteadySpread:P0}: the machine's speed changed). About 5 s each.",
        };
        var floor = new Option<bool>("--floor")
        {
            Description = "After the unary phase, offer the same open loop (rate, clients, connections) of Status calls, which neither verify nor store: " +
                "the latency this machine's gRPC client and server alone give at that rate, printed as 'floor'. The unary latency cannot be below it. With --mode unary or both.",
        };
        var perRequest = new Option<int>("--per-request")
        {
            Description = $"Envelopes per streamed request: 1 streams them one a request on SubmitStream, as the figures of docs/performance.md do; 2 to {RelayService.MaxBatchEnvelopes} " +
                "send them in batches on SubmitBatchStream (a request also stops short of 256 KiB), as a gateway or a bulk sender would. The warm-up streams the same way.",
            DefaultValueFactory = _ => 1,
        };
        var timeline = new Option<string?>("--timeline")
        {
            Description = $"Also write every measured call to this CSV file (replaced whole; flushed after each phase), one row each: {LoadTimeline.Header}. " +
                "completed_unix_ms is the wall clock, to line a slow stretch up with the node's log or metrics; started_s counts from the phase's start; " +
                "late_ms is the client's own start lateness (empty without a schedule); ok is 1 accepted, 0 refused. A streamed request's envelopes each get a row, " +
                "with the request's times. The warm-up and --forged's submissions are not written.",
        };
        var tlsCert = ClientCommands.TlsCertOption();
        var command = new Command("load", "Drive concurrent clients at a node and report accepted envelopes/s, p50/p99 latency and the verifier batch sizes achieved.")
        {
            node, clients, connections, count, mode, perRequest, rate, mixedShare, warmup, forged, backend, noBaseline, floor, timeline, tlsCert,
        };
        command.SetAction(async (parse, ct) =>
        {
            int n = parse.GetValue(count), c = parse.GetValue(clients), w = parse.GetValue(warmup);
            int k = parse.GetValue(connections);
            int per = parse.GetValue(perRequest);
            string m = parse.GetValue(mode)!;
            double offered = parse.GetValue(rate);
            double share = parse.GetValue(mixedShare);
            double forgedRate = parse.GetValue(forged);
            bool floorToo = parse.GetValue(floor);
            // Options that would be ignored are refused: the run would not be the one asked for.
            bool backendGiven = parse.GetResult(backend) is { Implicit: false }, rateGiven = parse.GetResult(rate) is { Implicit: false };
            string? ignored = backendGiven && parse.GetValue(node) is not null ? "--backend picks the embedded node's verifier; a node given with --node uses its own (drop one of them)." :
                rateGiven && m == "stream" ? "--rate sets the unary phase's offered load; use it with --mode unary, both or mixed." :
                parse.GetResult(mixedShare) is { Implicit: false } && m != "mixed" ? "--mixed-share sets the mixed phase's load; use it with --mode mixed." :
                parse.GetValue(tlsCert) is not null && parse.GetValue(node)?.Scheme != Uri.UriSchemeHttps ? "--tls-cert is the certificate of a node given with --node https://...; the embedded node and an http:// node have none." :
                null;
            if ((Problem(n, c, k, w, m, per, offered, forgedRate, floorToo, share) ?? ignored) is { } problem)
            {
                Console.Error.WriteLine($"meganet load: {problem}");
                Console.Error.WriteLine(MeganetCommand.UsageHint("meganet load"));
                return 1;
            }

            if (SlowRateWarning(m, offered, n, floorToo) is { } slow)
            {
                Console.Error.WriteLine($"meganet load: warning: {slow}");
            }

            // Return to System.CommandLine at once: it listens for Ctrl+C only once the action has returned its task,
            // and without this the action runs synchronously up to its first real wait (the sealing included).
            await Task.Yield();
            WebApplication? embedded = null;
            string? dir = null;
            LoadTimeline? timelineFile = null;
            try
            {
                // Before the node and the sealing: a path that cannot be written fails at once, not after the phases.
                if (parse.GetValue(timeline) is { } timelinePath)
                {
                    timelineFile = CreateTimeline(timelinePath);
                }

                Uri target;
                Uri? given = parse.GetValue(node);
                using System.Security.Cryptography.X509Certificates.X509Certificate2? trusted = parse.GetValue(tlsCert) is { } cert ? ClientCommands.LoadTlsCertificate(cert, given!) : null;
                // One HTTP/2 connection per client object, so that --connections is what it says: calls beyond a
                // connection's 100 streams wait in the client (and show as lateness) instead of opening more.
                var clientOptions = new MegaNetClientOptions { TrustedCertificate = trusted, MaxConnections = 1 };
                // A baseline timed here says nothing about a node on another machine.
                bool baseline = !parse.GetValue(noBaseline) && m is not "unary" && (given is null || given.IsLoopback);
                if (given is not null)
                {
                    target = given;
                    // Before sealing anything: a wrong address should fail in a second, not after the sealing.
                    using var probe = new MegaNetClient(target, options: clientOptions);
                    StatusResponse status = await probe.Relay.StatusAsync(new StatusRequest(), deadline: DateTime.UtcNow.AddSeconds(10), cancellationToken: ct);
                    Console.WriteLine($"node at {target}: {status.VerifierDescription}");
                }
                else
                {
                    string backendName = parse.GetValue(backend)!;
                    CheckEmbeddedBackend(backendName);
                    dir = Directory.CreateTempSubdirectory("meganet-load-").FullName;
                    var options = new NodeOptions
                    {
                        DataDirectory = dir,
                        Listen = "127.0.0.1:0",
                        Backend = backendName,
                        MailboxMaxCount = 1_000_000,
                        MailboxMaxBytes = 1L << 34,
                        SubmitRatePerKey = 1e6,
                        SubmitBurst = 1_000_000,
                        // Every client comes from 127.0.0.1: room for all its connections (twice --connections in a mixed
                        // phase, streams and unary calls apart) and a few more.
                        MaxConnectionsPerAddress = Math.Max(new NodeOptions().MaxConnectionsPerAddress, (2 * k) + 16),
                        // Every client is one site (127.0.0.1), which the last tenth of the cap is kept from (ConnectionGate.Reserve).
                        MaxConnections = Math.Max(new NodeOptions().MaxConnections, (((2 * k) + 16) * 10 / 9) + 1),
                    };
                    embedded = NodeHost.Build(options, logging: l => l.SetMinimumLevel(LogLevel.Warning));
                    target = await NodeHost.StartAsync(embedded, ct);
                    Console.WriteLine($"embedded node at {target} (data {dir}; in this process, so its CPU counts in this process's): " +
                        embedded.Services.GetRequiredService<IBatchVerifier>().Description);
                }

                // The figures depend on the machine, and on a node on this machine sharing its cores with the clients.
                MachineInfo machine = MachineInfo.Current();
                Console.WriteLine($"load client: CPU {machine.Cpu}, {machine.LogicalCores} logical cores, ISA tier {machine.Isa}, {machine.Runtime}; " +
                    $"{c} clients over {k} connection{(k == 1 ? "" : "s")}");
                if (w > 0)
                {
                    Console.WriteLine($"warm-up: {w} envelopes, not counted ...");
                    var quiet = new LoadGenerator(target, c, k, clientOptions: clientOptions);
                    await quiet.RunStreamingAsync(await PrepareAsync(w - (w / 2), ct), ct, per);
                    if (w / 2 > 0)
                    {
                        await quiet.RunUnaryAsync(await PrepareAsync(w / 2, ct), 0, ct);
                    }
                }

                Console.WriteLine($"sealing {n} envelopes from {LoadGenerator.DefaultSenders:N0} sending keys to {LoadGenerator.DefaultRecipients} recipients ...");

                var generator = new LoadGenerator(target, c, k, Console.Out, clientOptions) { Timeline = timelineFile };
                List<Envelope>? forgeries = forgedRate > 0 ? await Task.Run(() => ForgedLoad.Prepare(2_000), ct).WaitAsync(ct) : null;
                double streamRate = 0;
                VerifyBenchmarkResult? raw = null, rawAfter = null;
                if (m is not "unary")
                {
                    List<Envelope> envelopes = await PrepareAsync(n, ct);
                    if (baseline)
                    {
                        Console.WriteLine("timing the raw simd verifier on this machine for the baseline (--no-baseline skips it) ...");
                        raw = await Task.Run(() => LoadBaseline.Measure(TimeSpan.FromMilliseconds(700)), ct).WaitAsync(ct);
                        Console.WriteLine(LoadBaseline.DescribeBaseline(raw));
                    }

                    LoadReport stream = await WithForgeriesAsync(target, clientOptions, forgeries, forgedRate, () => generator.RunStreamingAsync(envelopes, ct, per), ct);
                    streamRate = stream.AcceptedPerSecond;
                    if (raw is not null)
                    {
                        Console.WriteLine("timing the raw simd verifier again, after the streaming phase ...");
                        rawAfter = await Task.Run(() => LoadBaseline.Measure(TimeSpan.FromMilliseconds(700)), ct).WaitAsync(ct);
                        Console.WriteLine(LoadBaseline.DescribeBaseline(rawAfter));
                        Console.WriteLine(LoadBaseline.DescribeShare(stream, raw, rawAfter));
                    }
                }

                if (m is "mixed")
                {
                    if (UnaryRateProblem(m, 0, streamRate, n, share) is { } noRate)
                    {
                        Console.Error.WriteLine($"meganet load: {noRate}");
                        return 1;
                    }

                    double load = streamRate * share, singles = offered > 0 ? offered : load / 10;
                    if (singles >= load)
                    {
                        Console.Error.WriteLine($"meganet load: --rate {offered:G} is the unary part of the mixed phase's load, {ShareOfStream(share)} " +
                            $"({load:N0}/s, the rest streamed); give less than that (default: a tenth of it).");
                        return 1;
                    }

                    (int streamedCount, int unaryCount) = MixedSplit(n, load, singles);
                    if (unaryCount < MixedFewCalls)
                    {
                        Console.Error.WriteLine($"meganet load: warning: the mixed phase makes only {unaryCount:N0} unary call{(unaryCount == 1 ? "" : "s")} at {singles:N0}/s: " +
                            $"too few for a p99 after the first {LoadGenerator.WarmUpSeconds:0} s (that takes {MixedFewCalls:N0}); raise --rate or --envelopes.");
                    }

                    // Sealed in one go (the same senders and recipients for both kinds), then split.
                    List<Envelope> sealedForPhase = await PrepareAsync(streamedCount + unaryCount, ct);
                    List<Envelope> streamed = sealedForPhase.GetRange(0, streamedCount), single = sealedForPhase.GetRange(streamedCount, unaryCount);
                    Console.WriteLine($"mixed phase: {ShareOfStream(share)}, {load:N0}/s: {unaryCount:N0} unary calls at {singles:N0}/s among {streamedCount:N0} envelopes streamed at {load - singles:N0}/s ...");
                    LoadGenerator.MixedLoad mixed = await WithForgeriesAsync(target, clientOptions, forgeries, forgedRate,
                        () => generator.RunMixedAsync(streamed, single, load - singles, singles, per, ct), ct);
                    if (raw is not null)
                    {
                        Console.WriteLine(LoadBaseline.DescribeShare(mixed.Total, raw, rawAfter));
                    }
                }

                if (m is "both" or "unary")
                {
                    int unaryCount = UnaryCalls(m, n);
                    if (UnaryRateProblem(m, offered, streamRate, unaryCount, share) is { } noRate)
                    {
                        Console.Error.WriteLine($"meganet load: {noRate}");
                        return 1;
                    }

                    List<Envelope> envelopes = await PrepareAsync(unaryCount, ct);
                    LoadReport unary = await WithForgeriesAsync(target, clientOptions, forgeries, forgedRate, () => generator.RunUnaryAsync(envelopes, offered > 0 ? offered : streamRate / 2, ct), ct);
                    if (raw is not null)
                    {
                        Console.WriteLine(LoadBaseline.DescribeShare(unary, raw, rawAfter));
                    }

                    if (floorToo)
                    {
                        // The rate the unary phase was offered at, so the two lines compare like with like.
                        await generator.RunUnaryAsync(envelopes, offered > 0 ? offered : streamRate / 2, ct, floor: true);
                    }
                }

                return 0;
            }
            catch (Exception e) when (ct.IsCancellationRequested && e is OperationCanceledException or RpcException)
            {
                // Ctrl+C: an embedded node stops on the same signal, so its calls can fail rather than cancel.
                Console.Error.WriteLine("meganet load: interrupted; the phase in progress has no report (phases reported above completed).");
                return Interruption.ExitCode;
            }
            catch (RpcException e)
            {
                // A status the node sent has no DebugException; one made by the client's transport does.
                bool unreachable = ((e.StatusCode == StatusCode.Unavailable && e.Status.DebugException is not null) || e.StatusCode == StatusCode.DeadlineExceeded)
                    && ClientCommands.NotGrpc(e.Status.DebugException) is null;
                Console.Error.WriteLine(unreachable
                    ? (parse.GetValue(node) is { } given
                        ? $"meganet load: cannot reach the node at {given} ({Said(e)}); is 'meganet node' running there?"
                        : $"meganet load: the embedded node stopped answering ({Said(e)}).")
                    : $"meganet load: {ClientCommands.Describe(e)}");
                return 2;
            }
            catch (Exception e) when (e is BackendUnavailableException or ArgumentException or IOException or UnauthorizedAccessException or CliException)
            {
                Console.Error.WriteLine($"meganet load: {ErrorText.Plain(e)}");
                return 1;
            }
            finally
            {
                timelineFile?.Dispose();
                if (embedded is not null)
                {
                    await embedded.StopAsync(CancellationToken.None);
                    await embedded.DisposeAsync();
                }

                if (dir is not null)
                {
                    Directory.Delete(dir, recursive: true);
                }
            }
        });
        return command;
    }

    /// <summary>The <c>--timeline</c> file, created (or emptied) now; a path that cannot be written is a
    /// <see cref="CliException"/> naming the option.</summary>
    internal static LoadTimeline CreateTimeline(string path)
    {
        try
        {
            return LoadTimeline.Create(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            throw new CliException($"cannot write --timeline '{path}': {ErrorText.Plain(e)}");
        }
    }

    /// <summary>The longest a unary phase paced at half the streaming rate may take before it is refused as pointless.</summary>
    internal static readonly TimeSpan MaxPacedPhase = TimeSpan.FromMinutes(10);

    /// <summary>Why the unary phase (and --floor's) cannot run at the rate the help promises, or null. With --mode both
    /// and no --rate it is offered half the streaming phase's accepted rate: a streaming phase that accepted nothing left
    /// that 0, which RunUnaryAsync takes as closed loop, so the phase ran unpaced and was reported as if paced; one that
    /// accepted a handful (a node refusing nearly everything) paced <paramref name="unaryEnvelopes"/> over days.</summary>
    /// <remarks>With --mode mixed the mixed phase is offered <paramref name="mixedShare"/> of the streaming rate in all,
    /// whatever --rate says (its unary part), so <paramref name="offered"/> is not looked at and there is no --rate way
    /// out.</remarks>
    internal static string? UnaryRateProblem(string mode, double offered, double streamRate, int unaryEnvelopes, double mixedShare)
    {
        bool mixed = mode == "mixed";
        if (mode is not ("both" or "mixed") || (offered > 0 && !mixed))
        {
            return null;
        }

        string phase = mixed ? "mixed phase" : "unary phase";
        string wayOut = mixed ? "Find out why the node refused the stream." : "Find out why the node refused the stream, or give --rate.";
        double share = mixed ? mixedShare : 0.5;
        string ofThat = ShareOf(share, "that");
        return !(streamRate > 0)
            ? $"the streaming phase accepted nothing (see its report above), so there is no rate to offer the {phase} " +
              $"({ShareOfStream(share)}); the {phase} is not run. {wayOut}"
            : unaryEnvelopes / (streamRate * share) > MaxPacedPhase.TotalSeconds
                ? $"the streaming phase accepted {streamRate:N1}/s (see its report above): {unaryEnvelopes:N0} {(mixed ? "envelopes" : "unary calls")} at {ofThat} " +
                  $"would take {TimeSpan.FromSeconds(unaryEnvelopes / (streamRate * share)):g}, more than {MaxPacedPhase.TotalMinutes:N0} minutes; " +
                  $"the {phase} is not run. {wayOut}"
                : null;
    }

    /// <summary>"half the streaming rate", or "0.25 of the streaming rate".</summary>
    private static string ShareOfStream(double share) => ShareOf(share, "the streaming rate");

    /// <summary>"half <paramref name="what"/>", or "0.25 of <paramref name="what"/>".</summary>
    private static string ShareOf(double share, string what) => share == 0.5 ? $"half {what}" : $"{share:G3} of {what}";

    /// <summary>Fewer unary calls than this in a mixed phase give no steady-state p99 (LoadGenerator.Summarize): warned of.</summary>
    internal const int MixedFewCalls = 1_000;

    /// <summary>The mixed phase's <paramref name="envelopes"/> split between the streamed and the unary ones in proportion
    /// to their rates (<paramref name="unaryRate"/> of <paramref name="total"/>), so both last about as long; at least one each.</summary>
    internal static (int Streamed, int Unary) MixedSplit(int envelopes, double total, double unaryRate)
    {
        int unary = Math.Clamp((int)Math.Round(envelopes * unaryRate / total), 1, Math.Max(1, envelopes - 1));
        return (Math.Max(1, envelopes - unary), unary);
    }

    /// <summary>A status as the transport gave it, its words shown, not obeyed.</summary>
    private static string Said(RpcException e) => $"{e.StatusCode}: {ClientCommands.Printable(e.Status.Detail, multiline: false)}";

    /// <summary>The unary phase's calls: half the envelopes (at least one) after a streaming phase, else all.</summary>
    private static int UnaryCalls(string mode, int envelopes) => mode == "both" ? Math.Max(1, envelopes / 2) : envelopes;

    /// <summary>A warning, or null, for a unary phase whose given --rate stretches it past <see cref="MaxPacedPhase"/>:
    /// run as asked (the rate was chosen), but said before the sealing, so a slip such as 0.5 for 500 is seen at once
    /// and not after hours of a silent run.</summary>
    internal static string? SlowRateWarning(string mode, double offered, int envelopes, bool floor)
    {
        // A mixed phase lasts as its streamed part does; --rate only sets its unary share.
        if (mode is "stream" or "mixed" || !(offered > 0))
        {
            return null;
        }

        int calls = UnaryCalls(mode, envelopes);
        // --floor offers the same calls again at the same rate.
        double seconds = calls / offered * (floor ? 2 : 1);
        return seconds > MaxPacedPhase.TotalSeconds
            ? $"at --rate {offered:G} the unary phase's {calls:N0} calls{(floor ? " (and --floor's as many again)" : "")} take about " +
              $"{TimeSpan.FromSeconds(Math.Min(seconds, TimeSpan.MaxValue.TotalSeconds / 2)):g}; lower --envelopes or raise --rate for a shorter run (Ctrl+C stops it)."
            : null;
    }

    /// <summary>The first option out of range, said in one line; null when all are fine.</summary>
    private static string? Problem(int envelopes, int clients, int connections, int warmup, string mode, int perRequest, double rate, double forged, bool floor, double share) =>
        envelopes < 1 ? $"--envelopes must be at least 1 (got {envelopes})." :
        clients < 1 ? $"--clients must be at least 1 (got {clients})." :
        connections < 1 || connections > clients ? $"--connections must be between 1 and --clients ({clients}); got {connections}." :
        warmup < 0 ? $"--warmup must be 0 or more (got {warmup})." :
        mode is not ("both" or "stream" or "unary" or "mixed") ? $"--mode must be stream, unary, both or mixed (got '{mode}')." :
        perRequest is < 1 or > RelayService.MaxBatchEnvelopes ? $"--per-request must be 1 to {RelayService.MaxBatchEnvelopes} (got {perRequest})." :
        perRequest > 1 && mode == "unary" ? "--per-request batches streamed requests; use it with --mode stream, both or mixed." :
        rate < 0 || !double.IsFinite(rate) ? $"--rate must be a finite number of envelopes/s, 0 or more (got {rate}); 0 means the default: half the streaming rate, closed loop with --mode unary, a tenth of the mixed phase's load with --mode mixed." :
        forged < 0 || !double.IsFinite(forged) ? $"--forged must be a finite number of envelopes/s, 0 or more (got {forged})." :
        floor && mode is ("stream" or "mixed") ? "--floor follows a unary phase; use it with --mode unary or both." :
        floor && mode == "unary" && rate == 0 ? "--floor needs an open loop: give --rate with --mode unary." :
        share is not (> 0 and <= 1) ? $"--mixed-share must be above 0 and at most 1 (got {share}); 0.5 is half the streaming rate." :
        null;

    /// <summary>Seals <paramref name="count"/> envelopes on the thread pool, saying every 5 s how far it got (a million
    /// take about two minutes on two cores); Ctrl+C stops the sealing (and the wait for it), so the embedded node is
    /// still stopped and its directory deleted.</summary>
    private static async Task<List<Envelope>> PrepareAsync(int count, CancellationToken ct)
    {
        int done = 0;
        Task<List<Envelope>> sealing = Task.Run(() => LoadGenerator.Prepare(count, sealedOne: () => Interlocked.Increment(ref done), ct: ct), ct);
        var watch = System.Diagnostics.Stopwatch.StartNew();
        while (await Task.WhenAny(sealing, Task.Delay(SealProgressInterval, ct)).ConfigureAwait(false) != sealing)
        {
            ct.ThrowIfCancellationRequested();
            int now = Volatile.Read(ref done);
            Console.WriteLine($"  sealed {now:N0} of {count:N0} ({now / watch.Elapsed.TotalSeconds:N0}/s) ...");
        }

        return await sealing.ConfigureAwait(false);
    }

    /// <summary>Runs a phase with forged submissions beside it (when asked for) and prints what became of them.</summary>
    private static async Task<T> WithForgeriesAsync<T>(Uri node, MegaNetClientOptions clientOptions, List<Envelope>? forgeries, double rate, Func<Task<T>> phase, CancellationToken ct)
    {
        if (forgeries is null)
        {
            return await phase();
        }

        await using ForgedLoad forged = await ForgedLoad.StartAsync(node, forgeries, rate, ForgedLoad.DefaultFrom(node), clientOptions, ct);
        T report = await phase();
        Console.WriteLine(ForgedLoad.Describe(await forged.StopAsync()));
        return report;
    }

    /// <summary>Refuses, before a data directory is made, a backend the embedded node could not start with.</summary>
    /// <remarks>The node's backends are named first: the verifier catalog's list of known names offered libsodium, which
    /// the node refuses.</remarks>
    private static void CheckEmbeddedBackend(string name)
    {
        if (string.Equals(name, LibsodiumBatchVerifier.BackendName, StringComparison.OrdinalIgnoreCase))
        {
            throw new ArgumentException($"--backend {LibsodiumBatchVerifier.BackendName} applies libsodium's rule, which a node refuses; choose one of {string.Join(", ", NodeOptions.NodeBackends)}.");
        }

        if (!NodeOptions.NodeBackends.Contains(name, StringComparer.OrdinalIgnoreCase))
        {
            throw new ArgumentException($"Unknown verifier backend '{name}'. A node runs one of {string.Join(", ", NodeOptions.NodeBackends)}.");
        }

        VerifierCatalog.Create().EnsureAvailable(name);
    }
}
