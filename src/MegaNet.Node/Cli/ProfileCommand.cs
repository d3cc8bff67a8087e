using System.CommandLine;
using System.Text.Json;
using MegaNet.Node.Diagnostics;

namespace MegaNet.Node.Cli;

/// <summary><c>meganet profile</c>: attach to a running node without restarting it.</summary>
internal static class ProfileCommand
{
    public static Command Build()
    {
        var pid = new Option<int?>("--pid", "-p") { Description = "Node process id. Default: the only node running.", CustomParser = CliParsers.OptionalInt32 };
        var list = new Option<bool>("--list") { Description = "List running MegaNet nodes and exit." };
        var once = new Option<bool>("--once") { Description = "Print one snapshot and exit." };
        var json = new Option<bool>("--json") { Description = "With --once: print the snapshot as JSON." };
        var refresh = new Option<int>("--refresh") { Description = "Seconds between updates. Default 1.", DefaultValueFactory = _ => 1 };
        var trace = new Option<string?>("--trace") { Description = "Write a .nettrace with CPU sampling to this file (PerfView, speedscope)." };
        var duration = new Option<TimeSpan>("--duration")
        {
            Description = "How long --trace records (e.g. 30s, 2m). Default 30s.",
            DefaultValueFactory = _ => TimeSpan.FromSeconds(30),
            CustomParser = CliParsers.Duration,
        };
        var top = new Option<int>("--top")
        {
            Description = "After --trace, print the N hottest methods by own and by inclusive samples of busy threads (native code such as libsodium is charged to its managed caller; waits are left out) (0: don't). Default 20.",
            DefaultValueFactory = _ => 20,
        };
        var dump = new Option<string?>("--dump") { Description = "Write a full memory dump to this file." };
        var command = new Command("profile",
            "Attach to a running MegaNet node over the .NET diagnostics IPC: a live table of the MegaNet instruments and runtime counters, " +
            "--once --json for scripts, --trace for a CPU-sampling .nettrace, --dump for a dump.")
        {
            pid, list, once, json, refresh, trace, duration, top, dump,
        };
        command.SetAction(async (parse, ct) =>
        {
            try
            {
                if (parse.GetValue(list))
                {
                    IReadOnlyList<NodeProcess> nodes = NodeProfiler.FindNodes();
                    if (nodes.Count == 0)
                    {
                        Console.WriteLine("No MegaNet node is running as this user.");
                    }

                    foreach (NodeProcess n in nodes)
                    {
                        Console.WriteLine($"{n.ProcessId,8}  {n.CommandLine}");
                    }

                    return 0;
                }

                // Before looking for the node: a trace path that cannot be written is refused first, and never after a
                // session has started in the node.
                using OutputFile? traceOutput = parse.GetValue(trace) is { } t ? NodeProfiler.OpenTrace(t) : null;
                NodeProcess node = NodeProfiler.Resolve(parse.GetValue(pid));
                if (parse.GetValue(dump) is { } dumpFile)
                {
                    NodeProfiler.Dump(node.ProcessId, dumpFile);
                    Console.WriteLine($"dump of {node.ProcessId} written to {Path.GetFullPath(dumpFile)}");
                    return 0;
                }

                if (traceOutput is not null)
                {
                    TimeSpan d = parse.GetValue(duration);
                    Console.WriteLine($"tracing {node.ProcessId} for {d.TotalSeconds:0} s ...");
                    await NodeProfiler.TraceAsync(node.ProcessId, traceOutput, d, ct);
                    traceOutput.Dispose(); // closed, so the summary reads all of it
                    string traceFile = traceOutput.FullPath;
                    Console.WriteLine($"wrote {traceFile} ({new FileInfo(traceFile).Length:N0} bytes); open it in PerfView or speedscope");
                    if (parse.GetValue(top) is > 0 and int n)
                    {
                        (int samples, IReadOnlyList<MethodShare> byExclusive, IReadOnlyList<MethodShare> byInclusive) = TraceSummary.Summarize(traceFile, n);
                        Console.Write(TraceSummary.Format(samples, byExclusive, byInclusive));
                    }

                    return 0;
                }

                int seconds = Math.Max(1, parse.GetValue(refresh));
                if (parse.GetValue(once))
                {
                    IReadOnlyList<InstrumentReading> snapshot = await NodeProfiler.CollectAsync(node.ProcessId, TimeSpan.FromSeconds(seconds * 2.5), seconds, null, ct);
                    Console.WriteLine(parse.GetValue(json)
                        ? JsonSerializer.Serialize(new { pid = node.ProcessId, instruments = snapshot }, new JsonSerializerOptions { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower })
                        : NodeProfiler.Render(snapshot, node, seconds));
                    return 0;
                }

                bool interactive = !Console.IsOutputRedirected;
                await NodeProfiler.CollectAsync(node.ProcessId, Timeout.InfiniteTimeSpan, seconds, table =>
                {
                    if (interactive)
                    {
                        Console.Clear();
                    }

                    Console.Write(NodeProfiler.Render(table, node, seconds));
                }, ct);
                return 0;
            }
            catch (ProfilerException e)
            {
                Console.Error.WriteLine($"meganet profile: {e.Message}");
                return 1;
            }
            catch (NodeExitedException e)
            {
                // The node went away: like a node that cannot be reached, exit code 2.
                Console.Error.WriteLine($"meganet profile: {e.Message}");
                return 2;
            }
        });
        return command;
    }
}
