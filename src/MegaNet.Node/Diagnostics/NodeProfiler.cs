using System.Collections.Concurrent;
using System.Diagnostics.Tracing;
using System.Globalization;
using System.Text;
using Microsoft.Diagnostics.NETCore.Client;
using Microsoft.Diagnostics.Tracing;

namespace MegaNet.Node.Diagnostics;

/// <summary>A running MegaNet node found over the diagnostics IPC.</summary>
public sealed record NodeProcess(int ProcessId, string CommandLine);

/// <summary>One instrument's latest reading (the runtime aggregates over refresh intervals).</summary>
/// <param name="Meter">Meter name (MegaNet, System.Runtime).</param>
/// <param name="Instrument">Instrument name.</param>
/// <param name="Tags">Tags as "k=v,k=v" (empty when none).</param>
/// <param name="Kind">counter, updown, gauge or histogram.</param>
/// <param name="Unit">Instrument unit.</param>
/// <param name="PerSecond">Per second over the last interval: the change of a counter or up-down counter, the recordings
/// of a histogram; 0 for gauges. (The runtime reports the change per interval; this divides by its length.)</param>
/// <param name="Value">Counters: the running total (for counters the node increments, since the runtime's metrics
/// session began: when this profiler, or a tool whose session it joined, attached; observable counters report their own
/// total). Up-down counters and gauges: the current value. Histograms: recordings in the last interval.</param>
/// <param name="Quantiles">Histogram quantiles over the last interval "0.5=..;0.95=..;0.99=..", else empty.</param>
public sealed record InstrumentReading(string Meter, string Instrument, string Tags, string Kind, string Unit, double PerSecond, double Value, string Quantiles);

/// <summary>Thrown for every condition a person running <c>meganet profile</c> must fix; the message says how.</summary>
public sealed class ProfilerException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>The node being profiled exited (its diagnostics stream ended) before the profiler was done with it.</summary>
/// <param name="processId">The node's process id.</param>
/// <param name="lastReadings">The table as it stood when the node went away.</param>
/// <param name="detail">What else to say, appended to "node N exited" (what a trace holds, say).</param>
public sealed class NodeExitedException(int processId, IReadOnlyList<InstrumentReading> lastReadings, string detail = "")
    : Exception($"node {processId} exited{detail}")
{
    /// <summary>The node's process id.</summary>
    public int ProcessId { get; } = processId;

    /// <summary>The table as it stood when the node went away.</summary>
    public IReadOnlyList<InstrumentReading> LastReadings { get; } = lastReadings;
}

/// <summary>
/// Attaches to a running node over the .NET diagnostics IPC (no restart, no endpoint): reads the <c>MegaNet</c> meter
/// and the runtime's own <c>System.Runtime</c> meter through an EventPipe session, writes CPU-sampling traces
/// (.nettrace) and dumps. <c>meganet profile</c> drives it; tests drive it programmatically.
/// </summary>
public static class NodeProfiler
{
    private const string MetricsProvider = "System.Diagnostics.Metrics";

    /// <summary>Why no node is found by itself on Windows, and what to do.</summary>
    internal const string NotFoundOnWindows =
        "Windows does not show another process's command line, so nodes are not found by it: pass --pid with the node's process id (Task Manager's PID column).";

    /// <summary>Running processes that are MegaNet nodes (<c>meganet node</c>, apphost or <c>dotnet meganet.dll node</c>),
    /// and those that embed one: a <c>meganet load</c> without <c>--node</c> (<see cref="NotProfilable"/>), which
    /// <c>--pid</c> profiles, so <c>--list</c> names it too.</summary>
    /// <exception cref="ProfilerException">On Windows, which shows no other process's arguments.</exception>
    public static IReadOnlyList<NodeProcess> FindNodes()
    {
        if (OperatingSystem.IsWindows())
        {
            throw new ProfilerException(NotFoundOnWindows);
        }

        var nodes = new List<NodeProcess>();
        // A killed process leaves its diagnostics socket behind, named by its pid; that number may since belong to a
        // thread of another process (whose /proc entry shows that process's command line), so keep only live
        // processes, once each.
        foreach (int pid in DiagnosticsClient.GetPublishedProcesses().Distinct().Where(IsLiveProcess))
        {
            string? commandLine = CommandLine(pid);
            if (commandLine is not null && NotProfilable(pid, commandLine) is null)
            {
                nodes.Add(new NodeProcess(pid, commandLine));
            }
        }

        return nodes;
    }

    /// <summary>The node to attach to: <paramref name="pid"/> if given (checked), else the only one running.</summary>
    public static NodeProcess Resolve(int? pid)
    {
        if (pid is { } p)
        {
            string? commandLine = IsLiveProcess(p) ? CommandLine(p) : null;
            if (commandLine is null && OperatingSystem.IsWindows() && IsRunning(p))
            {
                // Windows does not show its arguments: taken as given, and its table shows whether it is a node.
                commandLine = $"process {p}";
            }
            else if (commandLine is null)
            {
                throw new ProfilerException($"No process {p} is running (or its command line cannot be read).");
            }
            else if (NotProfilable(p, commandLine) is { } refusal)
            {
                throw new ProfilerException(refusal);
            }

            if (!DiagnosticsClient.GetPublishedProcesses().Contains(p))
            {
                throw new ProfilerException($"Process {p} has no diagnostics endpoint (DOTNET_EnableDiagnostics=0, another user, or another container).");
            }

            return new NodeProcess(p, commandLine);
        }

        IReadOnlyList<NodeProcess> nodes = FindNodes();
        return nodes.Count switch
        {
            0 => throw new ProfilerException("No MegaNet node is running as this user. Start one with 'meganet node'."),
            1 => nodes[0],
            _ => throw new ProfilerException($"{nodes.Count} nodes are running ({string.Join(", ", nodes.Select(n => n.ProcessId))}); choose one with --pid."),
        };
    }

    /// <summary>The runtime's metrics EventSource aggregates for one session at a time; sessions that all use this id (and
    /// the same refresh interval and limits) share it instead. A session with any other id, started while one runs, gets
    /// nothing but a MultipleSessionsNotSupportedError event.</summary>
    internal const string SharedSessionId = "SHARED";

    /// <summary>The limits every session this profiler starts asks for: a shared session must match them exactly.</summary>
    private const string MaxTimeSeries = "1000", MaxHistograms = "100";

    /// <summary>
    /// Streams instrument readings from <paramref name="pid"/> for <paramref name="duration"/> (or until cancelled),
    /// calling <paramref name="onUpdate"/> with the full current table after each refresh. Returns the last table.
    /// Joins the runtime's shared metrics session when one with the same refresh interval runs (another
    /// <c>meganet profile</c>, or dotnet-counters with the same settings).
    /// </summary>
    /// <exception cref="ProfilerException">The node cannot be attached to, or its runtime refused this session's metrics
    /// (another tool holds a session that cannot be shared, or shares one with other settings); the message names the
    /// cause. Before, such a session silently showed an empty table.</exception>
    /// <exception cref="NodeExitedException">The node exited first. Before, a session with no duration outlived its
    /// node forever, waiting on a delay while nothing more could come.</exception>
    public static async Task<IReadOnlyList<InstrumentReading>> CollectAsync(int pid, TimeSpan duration, int refreshSeconds = 1,
        Action<IReadOnlyList<InstrumentReading>>? onUpdate = null, CancellationToken cancellationToken = default)
    {
        var client = new DiagnosticsClient(pid);
        // This client's name within the shared session; the runtime names it in a MultipleSessionsConfiguredIncorrectlyError.
        string clientId = Guid.NewGuid().ToString();
        Dictionary<string, string> arguments = MetricsSession("MegaNet,System.Runtime", refreshSeconds, clientId);
        var providers = new[] { new EventPipeProvider(MetricsProvider, EventLevel.Informational, 0x2, arguments) };
        EventPipeSession session;
        try
        {
            session = await client.StartEventPipeSessionAsync(providers, requestRundown: false, circularBufferMB: 64, cancellationToken);
        }
        catch (Exception e) when (e is UnauthorizedAccessException or ServerNotAvailableException or DiagnosticsClientException or IOException)
        {
            throw Explain(pid, e);
        }

        var table = new ConcurrentDictionary<string, InstrumentReading>();
        var done = new TaskCompletionSource();
        var refused = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        bool ended;
        using (session)
        {
            Task reader = Task.Run(() =>
            {
                try
                {
                    using var source = new EventPipeEventSource(session.EventStream);
                    source.Dynamic.All += e =>
                    {
                        if (Refusal(e, clientId, refreshSeconds) is { } why)
                        {
                            refused.TrySetResult(why);
                            return;
                        }

                        OnEvent(e, refreshSeconds, table, onUpdate);
                    };
                    source.Process();
                }
                catch (Exception)
                {
                    // The session was stopped under the reader, or the node went away mid-event; which one is
                    // decided below, by whether the stream ended before this profiler was done.
                }
            }, CancellationToken.None);

            // The reader returns when the stream ends: the runtime closes it only as the process goes away.
            Task first = await Task.WhenAny(Task.Delay(duration, cancellationToken), refused.Task, reader);
            ended = first == reader;
            done.TrySetResult();
            try
            {
                await session.StopAsync(CancellationToken.None);
            }
            catch (Exception e) when (e is ServerNotAvailableException or IOException or EndOfStreamException)
            {
                // The node went away; keep what was read.
            }

            await Task.WhenAny(reader, Task.Delay(TimeSpan.FromSeconds(5), CancellationToken.None));
        }

        if (refused.Task.IsCompleted)
        {
            throw new ProfilerException($"process {pid}: {await refused.Task}");
        }

        if (ended)
        {
            // The stream ends as the runtime shuts down, a moment before the process is gone.
            for (int i = 0; i < 50 && IsRunning(pid); i++)
            {
                await Task.Delay(100, CancellationToken.None);
            }

            if (IsRunning(pid))
            {
                throw new ProfilerException($"process {pid} closed its diagnostics stream but is still running; run 'meganet profile' again");
            }

            throw new NodeExitedException(pid, Sorted(table));
        }

        return Sorted(table);
    }

    /// <summary>The arguments of a client of the runtime's shared metrics session (the limits must match every other
    /// client's; <paramref name="clientId"/> names this one in the runtime's error events).</summary>
    private static Dictionary<string, string> MetricsSession(string meters, int refreshSeconds, string clientId) => new()
    {
        ["SessionId"] = SharedSessionId,
        ["Metrics"] = meters,
        ["RefreshInterval"] = refreshSeconds.ToString(CultureInfo.InvariantCulture),
        ["MaxTimeSeries"] = MaxTimeSeries,
        ["MaxHistograms"] = MaxHistograms,
        // The runtime has read the client's name under both keys (SharedIdentifier in .NET 8, ClientId in .NET 10).
        ["SharedIdentifier"] = clientId,
        ["ClientId"] = clientId,
    };

    /// <summary>Why the runtime refused this client's metrics session, from its error events; null for any other event.
    /// These events go to every session listening, so only those naming another session or this client count.</summary>
    internal static string? Refusal(TraceEvent e, string clientId, int refreshSeconds)
    {
        if (e.ProviderName != MetricsProvider)
        {
            return null;
        }

        string Text(string name) => e.PayloadByName(name)?.ToString() ?? "?";
        switch (e.EventName)
        {
            case "MultipleSessionsNotSupportedError" when Text("runningSessionId") != SharedSessionId:
                return RefusalText.NotShared(Text("runningSessionId"));
            // The client's name is "clientId" in .NET 10's payload, "sharedIdentifier" in .NET 8's.
            case "MultipleSessionsConfiguredIncorrectlyError" when (e.PayloadByName("clientId") ?? e.PayloadByName("sharedIdentifier"))?.ToString() == clientId:
                return RefusalText.OtherSettings(refreshSeconds, Text("expectedRefreshInterval"), Text("expectedMaxTimeSeries"), Text("actualMaxTimeSeries"),
                    Text("expectedMaxHistograms"), Text("actualMaxHistograms"));
            case "Error" when Text("sessionId") == SharedSessionId:
                return $"the runtime's metrics collection failed: {Text("errorMessage").Split('\n')[0].Trim()}";
            default:
                return null;
        }
    }

    /// <summary>The messages for a refused metrics session, one line each.</summary>
    internal static class RefusalText
    {
        public static string NotShared(string runningSessionId) =>
            $"another tool is already reading this node's metrics in a session that cannot be shared (session {runningSessionId}: " +
            "an older dotnet-counters or dotnet-monitor, say), and the runtime serves one such session at a time; stop it, or wait until it ends";

        public static string OtherSettings(int refreshSeconds, string otherRefresh, string otherTimeSeries, string ourTimeSeries, string otherHistograms, string ourHistograms) =>
            otherTimeSeries == ourTimeSeries && otherHistograms == ourHistograms
                ? $"another tool is reading this node's metrics every {otherRefresh} s, and the runtime shares its session only at the same interval: " +
                  $"use --refresh {otherRefresh} instead of {refreshSeconds}, or wait until the other tool ends"
                : $"another tool is reading this node's metrics with other limits ({otherTimeSeries} time series and {otherHistograms} histograms against " +
                  $"{ourTimeSeries} and {ourHistograms}), and the runtime shares its session only with the same ones; stop it, or wait until it ends";
    }

    /// <summary>Writes a .nettrace with CPU sampling (PerfView and speedscope open it) for <paramref name="duration"/>, or
    /// until cancelled; returns how long it traced (less than asked for when cancelled: the trace so far is kept).</summary>
    /// <exception cref="ProfilerException">The file cannot be written (checked before the session starts), or the node
    /// cannot be attached to.</exception>
    public static async Task<TimeSpan> TraceAsync(int pid, string file, TimeSpan duration, CancellationToken cancellationToken = default)
    {
        using OutputFile output = OpenTrace(file);
        return await TraceAsync(pid, output, duration, cancellationToken);
    }

    /// <summary>Opens the file a trace is to be written to, so a path that cannot be written is refused before any
    /// session starts in the node.</summary>
    /// <exception cref="ProfilerException">It cannot be written; the message says why in one line.</exception>
    internal static OutputFile OpenTrace(string file)
    {
        try
        {
            return OutputFile.Open(file, "--trace");
        }
        catch (IOException e)
        {
            throw new ProfilerException(e.Message, e);
        }
    }

    /// <summary>Streams a CPU-sampling trace of <paramref name="pid"/> into <paramref name="output"/>, opened beforehand
    /// (<see cref="OpenTrace"/>); returns how long it traced.</summary>
    internal static async Task<TimeSpan> TraceAsync(int pid, OutputFile output, TimeSpan duration, CancellationToken cancellationToken = default)
    {
        var client = new DiagnosticsClient(pid);
        string traceClientId = Guid.NewGuid().ToString();
        var providers = new[]
        {
            new EventPipeProvider("Microsoft-DotNETCore-SampleProfiler", EventLevel.Informational),
            new EventPipeProvider("Microsoft-Windows-DotNETRuntime", EventLevel.Informational, 0x1 | 0x8 | 0x10 | 0x20000 | 0x4000000),
            // The MegaNet instruments in the trace too, in the shared session (so a trace neither blocks a later
            // 'meganet profile' at the same refresh nor is blocked by one); refused, the trace just lacks them.
            new EventPipeProvider(MetricsProvider, EventLevel.Informational, 0x2, MetricsSession("MegaNet", 1, traceClientId)),
        };
        EventPipeSession session;
        try
        {
            session = await client.StartEventPipeSessionAsync(providers, requestRundown: true, circularBufferMB: 256, cancellationToken);
        }
        catch (Exception e) when (e is UnauthorizedAccessException or ServerNotAvailableException or DiagnosticsClientException or IOException)
        {
            throw Explain(pid, e);
        }

        TimeSpan traced;
        using (session)
        {
            Task copy = session.EventStream.CopyToAsync(output.Begin(), CancellationToken.None);
            // Timed here, so a trace stopped early (Ctrl+C) can say how much it holds rather than what was asked for.
            var clock = System.Diagnostics.Stopwatch.StartNew();
            // The copy ends early only when the stream does: the node exited. Before, the trace then waited out its
            // duration and failed stopping a session in a process that was gone.
            bool ended = await Task.WhenAny(Task.Delay(duration, cancellationToken), copy) == copy;
            traced = clock.Elapsed;
            if (!ended)
            {
                await session.StopAsync(CancellationToken.None);
            }

            try
            {
                await copy;
            }
            catch (IOException e)
            {
                // The disk filled up, say: the session is stopped already, so only the file needs saying.
                throw new ProfilerException($"--trace {output.FullPath}: writing the trace failed ({e.Message})", e);
            }

            if (ended)
            {
                throw new NodeExitedException(pid, [], $" after {traced.TotalSeconds:0.0} s of tracing; {output.FullPath} holds the trace up to then");
            }
        }

        return traced;
    }

    /// <summary>What <see cref="Dump"/> writes: the node's memory with its managed heap, threads and stacks, all that
    /// dotnet-dump analyze reads. Not a full dump, which also copies the image of every library the node has loaded (the
    /// runtime's, libsodium, a GPU driver's) and so is much larger, for nothing the analysis needs.</summary>
    internal const DumpType DumpKind = DumpType.WithHeap;

    /// <summary>What <c>profile --dump</c> writes, in its help; README says the same.</summary>
    internal const string DumpHelp =
        "Write a heap dump to this file: the node's memory with its managed heap, threads and stacks, for dotnet-dump analyze " +
        "(not a full dump, which also copies every loaded library and is much larger).";

    /// <summary>Writes a heap dump of the node (<see cref="DumpKind"/>).</summary>
    public static void Dump(int pid, string file)
    {
        // The node's runtime writes the dump; a missing directory would come back as a vague IPC error.
        string? directory = Path.GetDirectoryName(Path.GetFullPath(file));
        if (directory is not null && !Directory.Exists(directory))
        {
            throw new ProfilerException($"--dump {file}: the directory {directory} does not exist");
        }

        if (Directory.Exists(file))
        {
            throw new ProfilerException($"--dump {file}: is a directory; give a file path");
        }

        try
        {
            new DiagnosticsClient(pid).WriteDump(DumpKind, Path.GetFullPath(file), logDumpGeneration: false);
        }
        catch (Exception e) when (e is UnauthorizedAccessException or ServerNotAvailableException or DiagnosticsClientException or IOException)
        {
            throw Explain(pid, e);
        }
    }

    /// <summary>The widest the tags column grows in <see cref="Render"/>; longer tag lists are cut with "…".</summary>
    internal const int MaxTagsWidth = 60;

    /// <summary>Formats the table for a terminal: what each column holds depends on the kind, so the kind is a column
    /// and a legend under the header says what "per s" and "value" mean for each.</summary>
    public static string Render(IReadOnlyList<InstrumentReading> readings, NodeProcess node, int refreshSeconds = 1, bool live = true)
    {
        var sb = new StringBuilder();
        sb.AppendLine(CultureInfo.InvariantCulture, $"MegaNet node pid {node.ProcessId}  {DateTime.Now:HH:mm:ss}{(live ? "   (Ctrl+C to stop)" : "")}");
        sb.AppendLine(CultureInfo.InvariantCulture, $"per s: per second over the last {refreshSeconds} s (counters: change; histograms: recordings).");
        sb.AppendLine("value: counters: running total (since metrics collection began); gauges, up-down counters: now; histograms: recordings in the interval.");
        // Size the instrument column to the longest name so runtime names such as
        // dotnet.gc.last_collection.heap.fragmentation.size do not push the other columns out of line.
        int width = Math.Max("instrument".Length, readings.Count == 0 ? 0 : readings.Max(r => r.Instrument.Length));
        // The tags column too, up to 60: cut at 30, the verification rows (backend, purpose, verdict) all read
        // "backend=simd,purpose=admissio…", valid and invalid alike.
        int tagsWidth = Math.Clamp(readings.Count == 0 ? 0 : readings.Max(r => r.Tags.Length), "tags".Length, MaxTagsWidth);
        sb.AppendLine(CultureInfo.InvariantCulture, $"{"meter",-15} {"instrument".PadRight(width)} {"tags".PadRight(tagsWidth)} {"kind",-9} {"per s",12} {"value",14}  quantiles (interval)");
        foreach (InstrumentReading r in readings)
        {
            string tags = r.Tags.Length > tagsWidth ? r.Tags[..(tagsWidth - 1)] + "…" : r.Tags;
            string perSecond = r.Kind is "gauge" ? string.Empty : r.PerSecond.ToString("N1", CultureInfo.InvariantCulture);
            sb.AppendLine(CultureInfo.InvariantCulture, $"{r.Meter,-15} {r.Instrument.PadRight(width)} {tags.PadRight(tagsWidth)} {r.Kind,-9} {perSecond,12} {r.Value,14:N1}  {r.Quantiles}");
        }

        return sb.ToString();
    }

    private static void OnEvent(TraceEvent e, int refreshSeconds, ConcurrentDictionary<string, InstrumentReading> table, Action<IReadOnlyList<InstrumentReading>>? onUpdate)
    {
        if (e.ProviderName != MetricsProvider || (e.PayloadByName("sessionId") as string) != SharedSessionId)
        {
            return;
        }

        string kind = e.EventName switch
        {
            "CounterRateValuePublished" => "counter",
            "UpDownCounterRateValuePublished" => "updown",
            "GaugeValuePublished" => "gauge",
            "HistogramValuePublished" => "histogram",
            // The runtime's MetricsEventSource ends each interval's values with CollectionStop (event 3, after
            // CollectionStart), which TraceEvent names by task and opcode, "Collection/Stop". The runtime sends no
            // "CollectionComplete", the name matched before, so the live table never drew.
            "Collection/Stop" or "CollectionStop" => "complete",
            _ => string.Empty,
        };
        if (kind == "complete")
        {
            onUpdate?.Invoke(Sorted(table));
            return;
        }

        if (kind.Length == 0)
        {
            return;
        }

        string meter = e.PayloadByName("meterName") as string ?? string.Empty;
        if (meter is not (MegaNetMeter or RuntimeMeter))
        {
            return; // a shared session also carries the meters other clients asked for
        }

        string instrument = e.PayloadByName("instrumentName") as string ?? string.Empty;
        string tags = e.PayloadByName("tags") as string ?? string.Empty;
        string key = $"{meter}|{instrument}|{tags}";
        table.TryGetValue(key, out InstrumentReading? previous);
        table[key] = Reading(kind, meter, instrument, tags, e.PayloadByName("unit") as string ?? string.Empty, refreshSeconds, previous,
            rate: e.PayloadByName("rate"), value: e.PayloadByName("value"), lastValue: e.PayloadByName("lastValue"), count: e.PayloadByName("count"),
            quantiles: e.PayloadByName("quantiles") as string);
    }

    private const string MegaNetMeter = "MegaNet", RuntimeMeter = "System.Runtime";

    /// <summary>One reading from a published value's payload. The runtime's "rate" is the change over the interval and a
    /// histogram's "count" the recordings in it; both become per second here.</summary>
    internal static InstrumentReading Reading(string kind, string meter, string instrument, string tags, string unit, int refreshSeconds,
        InstrumentReading? previous, object? rate = null, object? value = null, object? lastValue = null, object? count = null, string? quantiles = null)
    {
        double seconds = Math.Max(1, refreshSeconds);
        double perSecond = 0, reading = 0;
        switch (kind)
        {
            case "counter":
            case "updown":
                double change = Number(rate);
                change = double.IsNaN(change) ? 0 : change; // the first interval of an instrument has no change yet
                perSecond = change / seconds;
                reading = Number(value);
                if (kind == "counter" && double.IsNaN(reading) && previous is not null)
                {
                    // Runtimes before .NET 8 sent no total: add up the changes seen.
                    reading = previous.Value + change;
                }

                break;
            case "gauge":
                reading = Number(lastValue);
                break;
            case "histogram":
                reading = Number(count);
                perSecond = reading / seconds;
                break;
        }

        return new InstrumentReading(meter, instrument, tags, kind, unit, perSecond, reading, kind == "histogram" ? quantiles ?? string.Empty : string.Empty);
    }

    private static double Number(object? payload) => payload switch
    {
        string s when double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out double d) => d,
        double d => d,
        float f => f,
        int i => i,
        long l => l,
        _ => double.NaN,
    };

    private static List<InstrumentReading> Sorted(ConcurrentDictionary<string, InstrumentReading> table) =>
        [.. table.Values.OrderBy(r => r.Meter == "MegaNet" ? 0 : 1).ThenBy(r => r.Meter, StringComparer.Ordinal).ThenBy(r => r.Instrument, StringComparer.Ordinal).ThenBy(r => r.Tags, StringComparer.Ordinal)];

    /// <summary>Why process <paramref name="pid"/>, run as <paramref name="commandLine"/>, has no node to profile; null
    /// when it has one.</summary>
    /// <remarks>A <c>meganet load</c> without <c>--node</c> runs its node in its own process, with the same meters: that
    /// is profiled (its table has the load client's gRPC figures beside the node's). With <c>--node</c> it runs none.</remarks>
    internal static string? NotProfilable(int pid, string commandLine)
    {
        if (IsNode(commandLine))
        {
            return null;
        }

        string[] args = commandLine.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        int program = Array.FindIndex(args, a => Path.GetFileName(a) is "meganet" or "meganet.dll" or "meganet.exe");
        if (program >= 0 && program + 1 < args.Length && args[program + 1] == "load")
        {
            // --node and its alias -n, with the value after a space, '=' or ':' (System.CommandLine takes all three).
            int node = Array.FindIndex(args, program + 2, a => a is "--node" or "-n" || NodeValuePrefix(a) > 0);
            if (node < 0)
            {
                return null;
            }

            string address = NodeValuePrefix(args[node]) is > 0 and int prefix ? args[node][prefix..] : node + 1 < args.Length ? args[node + 1] : "?";
            return $"Process {pid} is 'meganet load' against the node at {address}: it runs no node of its own to profile. " +
                "Run 'meganet profile' (with --pid) on that node's own process, on its machine ('meganet profile --list' there lists it), " +
                "or run 'meganet load' without --node, which embeds a node that --pid can profile.";
        }

        return $"Process {pid} is not a MegaNet node ('{commandLine}'); 'meganet profile --list' lists the nodes running.";
    }

    // The length of "--node=" (or "-n=", "--node:", "-n:") where the argument begins so, else 0.
    private static int NodeValuePrefix(string argument)
    {
        foreach (string prefix in (ReadOnlySpan<string>)["--node=", "--node:", "-n=", "-n:"])
        {
            if (argument.StartsWith(prefix, StringComparison.Ordinal))
            {
                return prefix.Length;
            }
        }

        return 0;
    }

    // `meganet node`, or perf/MegaNet.RelayCeiling: the node with a stage taken out, with the same meters (profiled to
    // tell which stage limits a machine beside the whole node). For the ceiling, the program itself (its apphost, or
    // the first .dll after dotnet), not any argument: `dotnet run --project perf/MegaNet.RelayCeiling` is the build
    // tool that starts it, and was listed as a second node (found in review, 2026-12-04).
    private static bool IsNode(string commandLine)
    {
        string[] args = commandLine.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        int program = Array.FindIndex(args, a => Path.GetFileName(a) is "meganet" or "meganet.dll" or "meganet.exe");
        if (program >= 0 && program + 1 < args.Length && args[program + 1] == "node")
        {
            return true;
        }

        string? ceiling = args.Length == 0 ? null
            : Path.GetFileName(args[0]) is "dotnet" or "dotnet.exe" ? args.Skip(1).FirstOrDefault(a => a.EndsWith(".dll", StringComparison.OrdinalIgnoreCase))
            : args[0];
        return ceiling is not null && Path.GetFileName(ceiling) is "MegaNet.RelayCeiling" or "MegaNet.RelayCeiling.dll" or "MegaNet.RelayCeiling.exe";
    }

    /// <summary>True when <paramref name="pid"/> is a live process, not a thread of one (Linux: /proc/PID/status
    /// shows Tgid equal to Pid and no zombie state); true elsewhere, where process ids are not thread ids.</summary>
    internal static bool IsLiveProcess(int pid)
    {
        if (!OperatingSystem.IsLinux())
        {
            return true;
        }

        try
        {
            string? tgid = null, ownPid = null;
            foreach (string line in File.ReadLines($"/proc/{pid}/status"))
            {
                if (line.StartsWith("State:", StringComparison.Ordinal) && line.Contains("zombie", StringComparison.Ordinal))
                {
                    return false;
                }

                if (line.StartsWith("Tgid:", StringComparison.Ordinal))
                {
                    tgid = line[5..].Trim();
                }
                else if (line.StartsWith("Pid:", StringComparison.Ordinal))
                {
                    ownPid = line[4..].Trim();
                }
            }

            return tgid is not null && tgid == ownPid;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    /// <summary>True while <paramref name="pid"/> runs (on Linux, not once it is a zombie waiting for its parent).</summary>
    private static bool IsRunning(int pid)
    {
        if (OperatingSystem.IsLinux())
        {
            return IsLiveProcess(pid);
        }

        try
        {
            using var process = System.Diagnostics.Process.GetProcessById(pid);
            return !process.HasExited;
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or System.ComponentModel.Win32Exception)
        {
            return false;
        }
    }

    /// <summary>The command line of <paramref name="pid"/> (its arguments joined by spaces), or null when it cannot be
    /// read: from /proc on Linux, from ps(1) on macOS and the BSDs; Windows does not show another process's arguments
    /// to .NET, so there only <c>--pid</c> finds a node.</summary>
    private static string? CommandLine(int pid)
    {
        try
        {
            if (OperatingSystem.IsLinux())
            {
                string path = $"/proc/{pid}/cmdline";
                return File.Exists(path) ? File.ReadAllText(path).Replace('\0', ' ').Trim() : null;
            }

            return OperatingSystem.IsWindows() ? null : CommandLineFromPs(pid);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or InvalidOperationException or System.ComponentModel.Win32Exception)
        {
            return null;
        }
    }

    /// <summary>The command line of <paramref name="pid"/> as ps(1) shows it (<c>-ww</c>: not cut at the terminal's
    /// width), or null when ps does not know the process.</summary>
    internal static string? CommandLineFromPs(int pid)
    {
        var psi = new System.Diagnostics.ProcessStartInfo("ps", ["-ww", "-o", "command=", "-p", pid.ToString(System.Globalization.CultureInfo.InvariantCulture)])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        using System.Diagnostics.Process ps = System.Diagnostics.Process.Start(psi) ?? throw new InvalidOperationException("ps did not start");
        string output = ps.StandardOutput.ReadToEnd();
        ps.StandardError.ReadToEnd();
        ps.WaitForExit();
        return ps.ExitCode == 0 && output.Trim() is { Length: > 0 } line ? line : null;
    }

    private static ProfilerException Explain(int pid, Exception e) => e switch
    {
        UnauthorizedAccessException => new ProfilerException($"Permission denied attaching to process {pid}: run 'meganet profile' as the same user as the node (or root).", e),
        _ => new ProfilerException($"Could not attach to process {pid} over the diagnostics IPC: {e.Message}", e),
    };
}
