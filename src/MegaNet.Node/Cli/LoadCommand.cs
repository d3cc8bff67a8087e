using System.CommandLine;
using MegaNet.Api.V1;
using MegaNet.Node.Benchmarking;
using MegaNet.Node.Hosting;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Logging;

namespace MegaNet.Node.Cli;

/// <summary><c>meganet load</c>: N concurrent clients over unary and streaming submit.</summary>
internal static class LoadCommand
{
    public static Command Build()
    {
        var node = new Option<Uri?>("--node", "-n")
        {
            Description = "Node to load, e.g. http://127.0.0.1:7700. Default: start an embedded node on 127.0.0.1 with a temporary data directory.",
            CustomParser = CliParsers.NodeUri,
        };
        var clients = new Option<int>("--clients", "-c") { Description = "Concurrent clients. Default 8.", DefaultValueFactory = _ => 8 };
        var connections = new Option<int>("--connections")
        {
            Description = "HTTP/2 connections the clients spread over (client i uses connection i mod N). Default 1: every client multiplexed over one connection, as in the README figures; " +
                "--connections equal to --clients gives each its own, as separate phones would have (more unary capacity, but more buffered in flight when streaming).",
            DefaultValueFactory = _ => 1,
        };
        var count = new Option<int>("--envelopes") { Description = "Envelopes per phase (sealed before timing starts). Default 20,000.", DefaultValueFactory = _ => 20_000 };
        var mode = new Option<string>("--mode") { Description = "stream, unary, or both (stream first, then unary offered at half the stream rate). Default both.", DefaultValueFactory = _ => "both" };
        var rate = new Option<double>("--rate")
        {
            Description = "Unary offered load in envelopes/s: calls start on schedule whether or not earlier ones have returned (open loop). " +
                "Default: half the measured streaming rate with --mode both; with --mode unary, closed loop (each client waits for its answer).",
        };
        var warmup = new Option<int>("--warmup")
        {
            Description = "Envelopes sent before the measured phases, not counted: half streamed, half unary one call per client at a time, " +
                "so the node's code for both paths is compiled and tiered up (a cold node builds a backlog an open loop never drains). 0 skips it. Default 10,000.",
            DefaultValueFactory = _ => 10_000,
        };
        var backend = new Option<string>("--backend", "-b") { Description = "Verifier backend of the embedded node. Default auto.", DefaultValueFactory = _ => "auto" };
        var command = new Command("load", "Drive concurrent clients at a node and report accepted envelopes/s, p50/p99 latency and the verifier batch sizes achieved.")
        {
            node, clients, connections, count, mode, rate, warmup, backend,
        };
        command.SetAction(async (parse, ct) =>
        {
            int n = parse.GetValue(count), c = parse.GetValue(clients), w = parse.GetValue(warmup);
            int k = parse.GetValue(connections);
            string m = parse.GetValue(mode)!;
            double offered = parse.GetValue(rate);
            if (n < 1 || c < 1 || w < 0 || m is not ("both" or "stream" or "unary") || offered < 0 || double.IsNaN(offered)
                || k < 1 || k > c)
            {
                Console.Error.WriteLine("meganet load: --envelopes and --clients must be positive, --connections between 1 and --clients, --rate and --warmup zero or positive, and --mode one of stream, unary, both.");
                return 1;
            }

            WebApplication? embedded = null;
            string? dir = null;
            Uri target;
            if (parse.GetValue(node) is { } given)
            {
                target = given;
            }
            else
            {
                dir = Directory.CreateTempSubdirectory("meganet-load-").FullName;
                var options = new NodeOptions
                {
                    DataDirectory = dir,
                    Listen = "127.0.0.1:0",
                    Backend = parse.GetValue(backend)!,
                    MailboxMaxCount = 1_000_000,
                    MailboxMaxBytes = 1L << 34,
                    SubmitRatePerKey = 1e6,
                    SubmitBurst = 1_000_000,
                };
                embedded = NodeHost.Build(options, logging: l => l.SetMinimumLevel(LogLevel.Warning));
                target = await NodeHost.StartAsync(embedded, ct);
                Console.WriteLine($"embedded node at {target} (data {dir})");
            }

            try
            {
                if (w > 0)
                {
                    Console.WriteLine($"warm-up: {w} envelopes, not counted ...");
                    var quiet = new LoadGenerator(target, c, k);
                    await quiet.RunStreamingAsync(LoadGenerator.Prepare(w - (w / 2)), ct);
                    if (w / 2 > 0)
                    {
                        await quiet.RunUnaryAsync(LoadGenerator.Prepare(w / 2), 0, ct);
                    }
                }

                Console.WriteLine($"sealing {n} envelopes from 256 sending keys to 64 recipients ...");

                var generator = new LoadGenerator(target, c, k, Console.Out);
                double streamRate = 0;
                if (m is "both" or "stream")
                {
                    LoadReport stream = await generator.RunStreamingAsync(LoadGenerator.Prepare(n), ct);
                    streamRate = stream.AcceptedPerSecond;
                }

                if (m is "both" or "unary")
                {
                    await generator.RunUnaryAsync(LoadGenerator.Prepare(m == "both" ? Math.Max(1, n / 2) : n), offered > 0 ? offered : streamRate / 2, ct);
                }

                return 0;
            }
            finally
            {
                if (embedded is not null)
                {
                    await embedded.StopAsync(CancellationToken.None);
                    await embedded.DisposeAsync();
                    Directory.Delete(dir!, recursive: true);
                }
            }
        });
        return command;
    }
}
