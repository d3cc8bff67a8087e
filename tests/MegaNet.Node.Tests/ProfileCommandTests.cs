using System.Diagnostics;
using System.Globalization;
using System.Text;
using MegaNet.Node.Diagnostics;
using Xunit.Abstractions;

using Result = MegaNet.Node.Tests.MeganetProcess.Result;

namespace MegaNet.Node.Tests;

/// <summary><c>meganet profile</c> run as a person runs it: its output redirected, stopped with Ctrl+C, outliving its
/// node, given options that do not fit together.</summary>
[Collection(AloneCollection.Name)]
public sealed class ProfileCommandTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("meganet-profile-cli-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Theory]
    [InlineData("--refresh must be 1 to 3,600 seconds (got 0)", "--refresh", "0")]
    [InlineData("--refresh must be 1 to 3,600 seconds (got -3)", "--refresh", "-3")]
    [InlineData("--refresh must be 1 to 3,600 seconds (got 3000000)", "--once", "--refresh", "3000000")] // crashed Task.Delay
    [InlineData("--duration sets how long --trace records; give --trace too", "--duration", "5m")] // ran the live table forever
    [InlineData("--top sizes the summary after --trace; give --trace too", "--top", "5")]
    [InlineData("--trace reads none: drop --refresh", "--trace", "x.nettrace", "--refresh", "5")]
    [InlineData("--dump reads none: drop --refresh", "--dump", "x.dmp", "--refresh", "5")]
    [InlineData("--list lists every node, so --pid does not apply", "--list", "--pid", "1")]
    [InlineData("--top must be 0 (no summary) or more (got -1)", "--trace", "x.nettrace", "--top", "-1")]
    [InlineData("--json needs --once", "--json")]
    [InlineData("--once and --trace cannot be combined", "--once", "--trace", "x.nettrace")]
    [InlineData("--trace and --dump cannot be combined", "--dump", "x.dmp", "--trace", "x.nettrace")]
    [InlineData("--duration must be more than 0 and at most 30 days, such as 30s", "--trace", "x.nettrace", "--duration", "0s")]
    [InlineData("--duration must be more than 0 and at most 30 days", "--trace", "x.nettrace", "--duration", "1e300s")]
    public async Task Options_that_would_be_ignored_or_replaced_are_refused_in_one_line(string expected, params string[] args)
    {
        // Before, --refresh 0 and -3 became 1, --top -1 became 0, --json without --once and one of --once/--dump
        // beside --trace were ignored, --duration 0s was "not a duration" and 1e300s crashed (TimeSpan overflow).
        // And --duration and --top without --trace, --refresh with --trace or --dump and --pid with --list were
        // ignored, and --refresh 3000000 crashed. Refused before any node is looked for.
        Result r = await MeganetProcess.RunAsync(_dir, null, closeStdout: false, ["profile", .. args]);
        output.WriteLine(r.Stderr);
        Assert.True(r.ExitCode == 1, $"exit code {r.ExitCode}; stderr: {r.Stderr}");
        Assert.Contains(expected, r.Stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", r.Stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("No MegaNet node", r.Stderr, StringComparison.Ordinal);
        Assert.Empty(Directory.EnumerateFileSystemEntries(_dir));
    }

    [Fact]
    public async Task The_live_table_reaches_a_redirected_output_and_ctrl_c_ends_it_and_a_trace_with_130_and_sigterm_with_143()
    {
        await using ExternalNode node = await ExternalNode.StartTemporaryAsync("meganet-profile-");

        // 'meganet profile > live.txt' printed nothing at all: the redraw waited for an event the runtime never sends.
        await using (var live = Profile("--pid", Pid(node)))
        {
            await live.WaitForOutputAsync(o => Headers(o) >= 2, "two tables");
            Assert.Contains("meganet.store.log_size", live.Stdout, StringComparison.Ordinal);
            Assert.Contains("dotnet.process.cpu.time", live.Stdout, StringComparison.Ordinal);
            live.Signal("INT");
            // Ctrl+C exited 0; README says 130.
            Assert.Equal(130, await live.WaitForExitAsync());
        }

        // SIGTERM exited 130 too, as if Ctrl+C; a shell reports 143 for it.
        await using (var terminated = Profile("--pid", Pid(node)))
        {
            await terminated.WaitForOutputAsync(o => Headers(o) >= 1, "a table");
            terminated.Signal("TERM");
            Assert.Equal(143, await terminated.WaitForExitAsync());
        }

        // A trace stopped early keeps what it traced and says how long that was (it said "for 60 s" and exited 0).
        string trace = Path.Combine(_dir, "early.nettrace");
        await using (var tracing = Profile("--pid", Pid(node), "--trace", trace, "--duration", "60s"))
        {
            await tracing.WaitForOutputAsync(o => o.Contains("tracing", StringComparison.Ordinal), "the trace to start");
            await Task.Delay(TimeSpan.FromSeconds(3));
            tracing.Signal("INT");
            Assert.Equal(130, await tracing.WaitForExitAsync());
            Assert.Matches(@"interrupted: traced \d+\.\d s of the 60 s asked for; wrote .*early\.nettrace \([\d,]+ bytes\)", tracing.Stdout);
            double traced = double.Parse(System.Text.RegularExpressions.Regex.Match(tracing.Stdout, @"traced (\d+\.\d) s").Groups[1].Value, CultureInfo.InvariantCulture);
            Assert.InRange(traced, 2.0, 50.0);
            Assert.Contains("(no summary after Ctrl+C)", tracing.Stdout, StringComparison.Ordinal);
        }

        // SIGTERM keeps the trace too, and is named as itself: it said "(no summary after Ctrl+C)".
        await using (var terminated = Profile("--pid", Pid(node), "--trace", Path.Combine(_dir, "term.nettrace"), "--duration", "60s"))
        {
            await terminated.WaitForOutputAsync(o => o.Contains("tracing", StringComparison.Ordinal), "the trace to start");
            await Task.Delay(TimeSpan.FromSeconds(2));
            terminated.Signal("TERM");
            Assert.Equal(143, await terminated.WaitForExitAsync());
            Assert.Contains("(no summary after SIGTERM)", terminated.Stdout, StringComparison.Ordinal);
        }

        // And the partial trace is a whole one: it can be summarised.
        int samples = TraceSummary.Summarize(trace, 5).Samples;
        output.WriteLine($"{samples} samples in the interrupted trace");
    }

    [Fact]
    public async Task The_live_table_ends_when_its_node_exits_saying_so_with_exit_code_2()
    {
        // Before, 'meganet profile' was still running 10 minutes after its node had stopped cleanly.
        // A trace, too, waited out its duration and then failed stopping a session in a process that was gone.
        await using ExternalNode node = await ExternalNode.StartTemporaryAsync("meganet-profile-");
        await using var live = Profile("--pid", Pid(node));
        await live.WaitForOutputAsync(o => Headers(o) >= 1, "a table");
        string trace = Path.Combine(_dir, "cut.nettrace");
        Task<TimeSpan> tracing = NodeProfiler.TraceAsync(node.ProcessId, trace, TimeSpan.FromMinutes(10));
        await Task.Delay(TimeSpan.FromSeconds(2));
        using (Process kill = Process.Start("kill", ["-TERM", Pid(node)]))
        {
            await kill.WaitForExitAsync();
        }

        int code = await live.WaitForExitAsync();
        Assert.True(code == 2, $"exit code {code}; stderr: {live.Stderr}");
        Assert.Equal($"meganet profile: node {node.ProcessId} exited", live.Stderr.Trim());

        NodeExitedException e = await Assert.ThrowsAsync<NodeExitedException>(() => tracing.WaitAsync(TimeSpan.FromMinutes(1)));
        output.WriteLine(e.Message);
        Assert.StartsWith($"node {node.ProcessId} exited after ", e.Message, StringComparison.Ordinal);
        Assert.Contains($"{trace} holds the trace up to then", e.Message, StringComparison.Ordinal);
        Assert.True(new FileInfo(trace).Length > 0, "the trace up to the node's exit was not kept");
    }

    [Fact]
    public async Task Ctrl_c_ends_a_bench_at_once_and_leaves_no_output_file()
    {
        // bench ran synchronously without the signal's token: Ctrl+C waited out the 5 s grace period, and the process
        // ended under the sweep, leaving the empty --json file it had opened at the start.
        string json = Path.Combine(_dir, "bench.json");
        await using var bench = new RunningProfile(_dir, output, ["bench", "--backend", "simd", "--json", json]);
        await bench.WaitForOutputAsync(o => o.Contains("warm-up:", StringComparison.Ordinal), "the warm-up");
        bench.Signal("INT");
        Assert.Equal(130, await bench.WaitForExitAsync());
        // Stopped by itself: the grace period's end would have said it "had not stopped".
        Assert.Contains("interrupted; nothing was written", bench.Stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("had not stopped", bench.Stderr, StringComparison.Ordinal);
        Assert.False(File.Exists(json));
    }

    [Fact]
    public async Task Ctrl_c_ends_a_bench_during_its_check_against_the_reference()
    {
        // --check signed its items and had the reference judge them without the signal's token: a large
        // --check-items (the reference does a few hundred a second per core) held Ctrl+C off until the 5 s grace period
        // ended the process.
        await using var bench = new RunningProfile(_dir, output,
            ["bench", "--backend", "simd", "--batch", "8", "--threads", "1", "--check", "--check-items", "200000"]);
        // The backend's description is printed just before its check begins.
        await bench.WaitForOutputAsync(o => o.Contains("simd x1:", StringComparison.Ordinal), "the backend's line");
        await Task.Delay(TimeSpan.FromSeconds(1));
        bench.Signal("INT");
        Assert.Equal(130, await bench.WaitForExitAsync());
        Assert.Contains("interrupted; nothing was written", bench.Stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("had not stopped", bench.Stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("check: simd", bench.Stdout, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_bench_ended_mid_sweep_leaves_its_output_paths_as_they_were()
    {
        // --json and --plot were opened at the start: a new path held an empty file for the whole sweep, left behind
        // when the run was killed (no Ctrl+C handling runs then), and at the end the file was emptied and written in
        // place, so a fault part way through that write destroyed an earlier report there.
        string json = Path.Combine(_dir, "bench.json");
        string plot = Path.Combine(_dir, "bench.png");
        File.WriteAllText(plot, "an earlier plot");
        // An hour a point: the sweep is still on its first point when the warm-up's last line has come.
        await using var bench = new RunningProfile(_dir, output,
            ["bench", "--backend", "simd", "--batch", "8", "--threads", "1", "--seconds", "3600", "--json", json, "--plot", plot]);
        await bench.WaitForOutputAsync(o => o.Contains("warm-up: simd x1", StringComparison.Ordinal), "the last warm-up");

        Assert.False(File.Exists(json), "--json's file was made before the sweep had anything to write");
        Assert.Equal("an earlier plot", File.ReadAllText(plot));

        bench.Signal("KILL");
        await bench.WaitForExitAsync();
        Assert.Equal([plot], Directory.GetFiles(_dir));
        Assert.Equal("an earlier plot", File.ReadAllText(plot));
    }

    [Fact]
    public void Signing_a_bench_batch_stops_at_ctrl_c()
    {
        // MakeBatch took no token: Ctrl+C while bench signed a large batch (minutes at 1,000,000 on two cores) waited
        // out the 5 s grace period, and the process ended without removing its empty --json and --plot files.
        using var interrupted = new CancellationTokenSource();
        interrupted.Cancel();
        Assert.ThrowsAny<OperationCanceledException>(() => MegaNet.Node.Benchmarking.VerifyBenchmark.MakeBatch(100_000, 0, cancellationToken: interrupted.Token));
    }

    private static string Pid(ExternalNode node) => node.ProcessId.ToString(CultureInfo.InvariantCulture);

    private static int Headers(string stdout) => stdout.Split('\n').Count(l => l.StartsWith("MegaNet node pid ", StringComparison.Ordinal));

    private RunningProfile Profile(params string[] args) => new(_dir, output, ["profile", .. args]);

    /// <summary><c>meganet ARGS</c> (a profile, or another long command) in the background, its output collected as it
    /// comes.</summary>
    private sealed class RunningProfile : IAsyncDisposable
    {
        private readonly Process _process;
        private readonly StringBuilder _stdout = new(), _stderr = new();
        private readonly ITestOutputHelper _output;

        public RunningProfile(string directory, ITestOutputHelper output, string[] args)
        {
            _output = output;
            // Through env --default-signal=INT (GNU coreutils 8.31 or later): a test run started in the background by a
            // non-interactive shell has SIGINT ignored, every child inherits that, and the runtime rightly keeps an
            // inherited ignore (a background job is not for the terminal's Ctrl+C), so Ctrl+C below never arrived.
            var psi = new ProcessStartInfo("env", ["--default-signal=INT", "dotnet", ExternalNode.MeganetPath(), .. args])
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                WorkingDirectory = directory,
            };
            _process = new Process { StartInfo = psi };
            _process.OutputDataReceived += (_, e) => Append(_stdout, e.Data);
            _process.ErrorDataReceived += (_, e) => Append(_stderr, e.Data);
            _process.Start();
            _process.BeginOutputReadLine();
            _process.BeginErrorReadLine();
        }

        public string Stdout => Read(_stdout);

        public string Stderr => Read(_stderr);

        /// <summary>Waits (at most 2 minutes) until stdout satisfies <paramref name="done"/>.</summary>
        public async Task WaitForOutputAsync(Func<string, bool> done, string what)
        {
            var clock = Stopwatch.StartNew();
            while (!done(Stdout))
            {
                if (_process.HasExited)
                {
                    Assert.Fail($"meganet profile exited ({_process.ExitCode}) before printing {what}; stdout: {Stdout}\nstderr: {Stderr}");
                }

                Assert.True(clock.Elapsed < TimeSpan.FromMinutes(2), $"no {what} after 2 minutes; stdout: {Stdout}\nstderr: {Stderr}");
                await Task.Delay(200);
            }
        }

        public void Signal(string signal)
        {
            using Process kill = Process.Start("kill", [$"-{signal}", _process.Id.ToString(CultureInfo.InvariantCulture)]);
            kill.WaitForExit();
            Assert.True(kill.ExitCode == 0, $"kill -{signal} {_process.Id} exited {kill.ExitCode}");
        }

        /// <summary>Its exit code; fails (killing it) when it has not exited within 2 minutes.</summary>
        public async Task<int> WaitForExitAsync()
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2));
            try
            {
                await _process.WaitForExitAsync(timeout.Token);
            }
            catch (OperationCanceledException) when (timeout.IsCancellationRequested)
            {
                // How the process held its signals says which side lost one (SigIgn: ignored, SigCgt: caught).
                string signals = string.Join("; ", File.ReadLines($"/proc/{_process.Id}/status").Where(l => l.StartsWith("Sig", StringComparison.Ordinal)));
                _process.Kill(entireProcessTree: true);
                Assert.Fail($"meganet profile had not exited after 2 minutes (killed; {signals}); stdout: {Stdout}\nstderr: {Stderr}");
            }

            _output.WriteLine($"exit {_process.ExitCode}; stdout (end): {Tail(Stdout)}\nstderr: {Stderr}");
            return _process.ExitCode;
        }

        public async ValueTask DisposeAsync()
        {
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: true);
                await _process.WaitForExitAsync();
            }

            _process.Dispose();
        }

        private static string Tail(string text) => text.Length <= 2000 ? text : text[^2000..];

        private static void Append(StringBuilder sb, string? line)
        {
            if (line is not null)
            {
                lock (sb)
                {
                    sb.AppendLine(line);
                }
            }
        }

        private static string Read(StringBuilder sb)
        {
            lock (sb)
            {
                return sb.ToString();
            }
        }
    }

    [Fact]
    public void A_load_process_is_profiled_for_its_embedded_node_and_one_against_another_node_is_refused_naming_it()
    {
        // `meganet profile --pid` on a `meganet load` process said "not a MegaNet node", though without --node the load
        // runs its node in that very process.
        Assert.Null(NodeProfiler.NotProfilable(42, "dotnet /opt/meganet/meganet.dll load --clients 64 --seconds 10"));
        Assert.Null(NodeProfiler.NotProfilable(42, "/usr/local/bin/meganet node --data /srv/meganet"));
        Assert.Null(NodeProfiler.NotProfilable(42, "/tmp/b/dotnet/dotnet /tmp/b/app/MegaNet.RelayCeiling.dll --without store --backend simd"));
        Assert.Null(NodeProfiler.NotProfilable(42, "/work/perf/MegaNet.RelayCeiling/bin/Release/net10.0/MegaNet.RelayCeiling --backend simd"));
        // The build tool that starts the ceiling is not it (it was listed as a second node).
        Assert.Contains("is not a MegaNet node", NodeProfiler.NotProfilable(42, "/usr/bin/dotnet run -c Release --project perf/MegaNet.RelayCeiling -- --without store")!, StringComparison.Ordinal);
        // load's -n alias, and values after '=' or ':', name a node elsewhere too.
        foreach (string load in (string[])["meganet load -n http://127.0.0.1:7733", "meganet load -n=http://127.0.0.1:7733", "meganet load --node:http://127.0.0.1:7733"])
        {
            Assert.Contains("against the node at http://127.0.0.1:7733", NodeProfiler.NotProfilable(42, load)!, StringComparison.Ordinal);
        }

        string against = NodeProfiler.NotProfilable(42, "meganet load --node https://relay.example:7700 --tls-cert node.pem")!;
        Assert.Contains("Process 42 is 'meganet load' against the node at https://relay.example:7700", against, StringComparison.Ordinal);
        Assert.Contains("on that node's own process", against, StringComparison.Ordinal);
        Assert.Contains("is not a MegaNet node", NodeProfiler.NotProfilable(42, "dotnet other.dll")!, StringComparison.Ordinal);
    }
}
