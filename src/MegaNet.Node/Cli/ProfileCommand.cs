using System.CommandLine;
using System.Text.Json;
using MegaNet.Node.Diagnostics;

namespace MegaNet.Node.Cli;

/// <summary><c>meganet profile</c>: attach to a running node without restarting it.</summary>
internal static class ProfileCommand
{
    public static Command Build()
    {
        var pid = new Option<int?>("--pid", "-p") { Description = "Node process id: a 'meganet node', or a 'meganet load' without --node (its node runs in that process). Default: the only node running.", CustomParser = CliParsers.OptionalInt32 };
        var list = new Option<bool>("--list") { Description = "List running MegaNet nodes (a 'meganet load' without --node embeds one) and exit." };
        var once = new Option<bool>("--once") { Description = "Print one snapshot and exit." };
        var json = new Option<bool>("--json") { Description = "With --once: print the snapshot as JSON." };
        var refresh = new Option<int>("--refresh") { Description = "Seconds between updates.", DefaultValueFactory = _ => 1 };
        var trace = new Option<string?>("--trace") { Description = "Write a .nettrace with CPU sampling to this file (PerfView, speedscope)." };
        var duration = new Option<CliDuration>("--duration")
        {
            Description = "How long --trace records (e.g. 30s, 2m).",
            DefaultValueFactory = _ => new(TimeSpan.FromSeconds(30)),
            CustomParser = CliParsers.Duration,
        };
        var top = new Option<int>("--top")
        {
            Description = "After --trace, print the N hottest methods by own and by inclusive samples of busy threads (native code such as libsodium is charged to its managed caller; waits are left out) (0: don't).",
            DefaultValueFactory = _ => 20,
        };
        var dump = new Option<string?>("--dump") { Description = NodeProfiler.DumpHelp };
        var command = new Command("profile",
            "Attach to a running MegaNet node over the .NET diagnostics IPC: a live table of the MegaNet instruments and runtime counters, " +
            "--once --json for scripts, --trace for a CPU-sampling .nettrace, --dump for a heap dump.")
        {
            pid, list, once, json, refresh, trace, duration, top, dump,
        };
        command.SetAction(async (parse, ct) =>
        {
            try
            {
                // Before anything else: an option that would be ignored, or a value that would be replaced, is a
                // mistake to point out, not to guess around (--refresh 0 became 1, --json without --once was dropped).
                string[] modes = [.. new (string Name, bool Given)[]
                {
                    ("--list", parse.GetValue(list)), ("--once", parse.GetValue(once)), ("--trace", parse.GetValue(trace) is not null), ("--dump", parse.GetValue(dump) is not null),
                }.Where(m => m.Given).Select(m => m.Name)];
                if (modes.Length > 1)
                {
                    throw new UsageException("profile", $"{string.Join(" and ", modes)} cannot be combined: each is a run of its own; give one of them.");
                }

                if (parse.GetValue(json) && !parse.GetValue(once))
                {
                    throw new UsageException("profile", "--json needs --once: the live table is text; use --once --json for one snapshot as JSON.");
                }

                bool Given(Option o) => parse.GetResult(o) is { Implicit: false };
                if (Given(duration) && parse.GetValue(trace) is null)
                {
                    throw new UsageException("profile", "--duration sets how long --trace records; give --trace too, or drop --duration (the live table runs until Ctrl+C).");
                }

                if (Given(top) && parse.GetValue(trace) is null)
                {
                    throw new UsageException("profile", "--top sizes the summary after --trace; give --trace too, or drop --top.");
                }

                if (Given(refresh) && modes.FirstOrDefault(m => m is not "--once") is { } other)
                {
                    throw new UsageException("profile", $"--refresh sets how often the live table and --once read the counters; {other} reads none: drop --refresh.");
                }

                if (Given(pid) && parse.GetValue(list))
                {
                    throw new UsageException("profile", "--list lists every node, so --pid does not apply; drop one of them.");
                }

                if (parse.GetValue(refresh) is (< 1 or > MaxRefreshSeconds) and int r)
                {
                    throw new UsageException("profile", $"--refresh must be 1 to {MaxRefreshSeconds:N0} seconds (got {r}).");
                }

                if (parse.GetValue(top) is < 0 and int tp)
                {
                    throw new UsageException("profile", $"--top must be 0 (no summary) or more (got {tp}).");
                }

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
                    Console.WriteLine($"heap dump of {node.ProcessId} written to {Path.GetFullPath(dumpFile)} (dotnet-dump analyze reads it)");
                    return 0;
                }

                if (traceOutput is not null)
                {
                    TimeSpan d = parse.GetValue(duration);
                    Console.WriteLine($"tracing {node.ProcessId} for {d.TotalSeconds:0.#} s ...");
                    TimeSpan traced = await NodeProfiler.TraceAsync(node.ProcessId, traceOutput, d, ct);
                    traceOutput.Dispose(); // closed, so the summary reads all of it
                    string traceFile = traceOutput.FullPath;
                    if (ct.IsCancellationRequested)
                    {
                        // Ctrl+C: the trace so far is complete and kept. No summary: the process has only a few seconds
                        // (MeganetCommand's termination timeout) before it is ended, and converting a trace can take longer.
                        Console.WriteLine($"interrupted: traced {traced.TotalSeconds:0.0} s of the {d.TotalSeconds:0.#} s asked for; " +
                            $"wrote {traceFile} ({new FileInfo(traceFile).Length:N0} bytes); open it in PerfView or speedscope (no summary after {(Interruption.ExitCode == Interruption.ExitCodeFor(terminated: true) ? "SIGTERM" : "Ctrl+C")})");
                        return Interruption.ExitCode;
                    }

                    Console.WriteLine($"wrote {traceFile} ({new FileInfo(traceFile).Length:N0} bytes); open it in PerfView or speedscope");
                    if (parse.GetValue(top) is > 0 and int n)
                    {
                        HotMethods summary;
                        try
                        {
                            summary = TraceSummary.Summarize(traceFile, n, ct);
                        }
                        catch (OperationCanceledException) when (ct.IsCancellationRequested)
                        {
                            // Ctrl+C while summarising (a long trace takes a while): the trace is whole and kept.
                            Console.WriteLine($"interrupted: no summary; the trace {traceFile} is complete");
                            return Interruption.ExitCode;
                        }

                        Console.Write(TraceSummary.Format(summary));
                    }

                    return 0;
                }

                int seconds = parse.GetValue(refresh);
                if (parse.GetValue(once))
                {
                    IReadOnlyList<InstrumentReading> snapshot = await NodeProfiler.CollectAsync(node.ProcessId, TimeSpan.FromSeconds(seconds * 2.5), seconds, null, ct);
                    if (ct.IsCancellationRequested)
                    {
                        // Ctrl+C before the snapshot was whole: print none rather than a partial one a script would take as complete.
                        return Interruption.ExitCode;
                    }

                    Console.WriteLine(parse.GetValue(json)
                        ? JsonSerializer.Serialize(new { pid = node.ProcessId, instruments = snapshot }, new JsonSerializerOptions { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower })
                        : NodeProfiler.Render(snapshot, node, seconds, live: false));
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
                // The live table runs until Ctrl+C (or the node exits, below); Ctrl+C exits 130, as README says.
                return Interruption.ExitCode;
            }
            catch (ProfilerException e)
            {
                Console.Error.WriteLine($"meganet profile: {e.Message}");
                return 1;
            }
            catch (UsageException e)
            {
                Console.Error.WriteLine($"meganet profile: {e.Message}");
                Console.Error.WriteLine(e.Hint);
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

    /// <summary>Longest --refresh: an hour between readings (--once waits 2.5 times as long for its snapshot; beyond
    /// about 24 days the wait could not even be set, and 3,000,000 s crashed).</summary>
    private const int MaxRefreshSeconds = 3600;
}
