using System.Text;
using MegaNet.Api;
using MegaNet.Core.Verification;
using MegaNet.Node.Diagnostics;
using Xunit.Abstractions;

namespace MegaNet.Node.Tests;

/// <summary>The profiler attached to a real node process under load, and the Prometheus endpoint.</summary>
[Collection(AloneCollection.Name)]
public sealed class ProfilerTests(ITestOutputHelper output)
{
    [Fact]
    public async Task The_profiler_reads_the_counters_of_a_loaded_node_consistently_with_the_load()
    {
        // The node runs as its own process, exactly as an operator starts it.
        await using ExternalNode node = await ExternalNode.StartTemporaryAsync("meganet-profile-");
        NodeProcess found = NodeProfiler.Resolve(node.ProcessId);
        Assert.Equal(node.ProcessId, found.ProcessId);
        Assert.Contains(NodeProfiler.FindNodes(), n => n.ProcessId == node.ProcessId);

        // One message first, so the node's first verification (compiled on first use, seconds on a busy machine)
        // is over before the counters are read; the readings are totals, so it counts among those sent.
        const int Sent = 25;
        using (var client = new MegaNetClient(node.Address))
        using (Identity alice = Identity.Create(), bob = Identity.Create())
        {
            await client.SendAsync(alice, bob.Card, Encoding.UTF8.GetBytes("warm-up"), "text/plain");
        }

        Task<IReadOnlyList<InstrumentReading>> collecting = NodeProfiler.CollectAsync(node.ProcessId, TimeSpan.FromSeconds(7));
        await Task.Delay(TimeSpan.FromSeconds(2));
        using (var client = new MegaNetClient(node.Address))
        using (Identity alice = Identity.Create(), bob = Identity.Create())
        {
            for (int i = 1; i < Sent; i++)
            {
                await client.SendAsync(alice, bob.Card, Encoding.UTF8.GetBytes($"m{i}"), "text/plain");
            }
        }

        IReadOnlyList<InstrumentReading> readings = await collecting;
        output.WriteLine(string.Join(Environment.NewLine, readings.Select(r => $"{r.Meter} {r.Instrument} {r.Tags} {r.Value}")));
        InstrumentReading accepted = Assert.Single(readings, r => r.Instrument == "meganet.admission.accepted");
        Assert.InRange(accepted.Value, 1, Sent);
        InstrumentReading logSize = Assert.Single(readings, r => r.Instrument == "meganet.store.log_size");
        Assert.InRange(logSize.Value, 1, Sent);
        double verified = readings.Where(r => r.Instrument == "meganet.verify.signatures").Sum(r => r.Value);
        Assert.InRange(verified, accepted.Value, Sent);
        Assert.Contains(readings, r => r.Meter == "System.Runtime" && r.Instrument == "dotnet.process.cpu.time");

        // A CPU trace taken while the node admits mail names the node's own code among the sampled methods.
        string trace = Path.Combine(node.TemporaryDirectory!, "node.nettrace");
        Task tracing = NodeProfiler.TraceAsync(node.ProcessId, trace, TimeSpan.FromSeconds(4));
        await Task.Delay(TimeSpan.FromSeconds(1));
        using (var client = new MegaNetClient(node.Address))
        using (Identity alice = Identity.Create(), bob = Identity.Create())
        {
            var sends = Enumerable.Range(0, 200).Select(i => client.SendAsync(alice, bob.Card, Encoding.UTF8.GetBytes($"t{i}"), "text/plain"));
            await Task.WhenAll(sends);
        }

        await tracing;
        HotMethods summary = TraceSummary.Summarize(trace, 100_000);
        IReadOnlyList<MethodShare> byInclusive = summary.ByInclusive;
        output.WriteLine(TraceSummary.Format(summary with { ByExclusive = [], ByInclusive = [.. byInclusive.Take(30)] }));
        Assert.True(summary.Samples > 0, "no samples of busy threads in the trace");
        Assert.Contains(byInclusive, m => m.Method.StartsWith("MegaNet.", StringComparison.Ordinal) && m.Inclusive > 0);
        Assert.All(byInclusive, m => Assert.InRange(m.Inclusive, m.Exclusive, 1.0));
    }

    [SkippableFact]
    public async Task A_load_that_embeds_its_node_is_listed_among_the_nodes()
    {
        // --pid profiles such a load, but --list (and profile without --pid) did not find it.
        Skip.If(OperatingSystem.IsWindows(), NodeProfiler.NotFoundOnWindows);
        string dir = Directory.CreateTempSubdirectory("meganet-listed-load-").FullName;
        try
        {
            using var load = new RunningMeganet(dir, "load", "--envelopes", "1000000", "--no-baseline", "--mode", "stream");
            var waited = System.Diagnostics.Stopwatch.StartNew();
            while (!NodeProfiler.FindNodes().Any(n => n.ProcessId == load.Process.Id))
            {
                Assert.False(load.Process.HasExited || waited.Elapsed > TimeSpan.FromMinutes(1), $"not listed\n{load.Output}");
                await Task.Delay(100);
            }

            Assert.Contains(" load ", NodeProfiler.FindNodes().Single(n => n.ProcessId == load.Process.Id).CommandLine, StringComparison.Ordinal);
            await load.StopAsync(); // SIGTERM: the load removes its node's data directory
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public async Task The_live_table_is_updated_after_every_refresh_interval()
    {
        // The update callback redraws the live table. It waited for an event named "CollectionComplete", which the
        // runtime never sends (each interval ends with CollectionStop), so 'meganet profile' printed nothing, ever.
        await using ExternalNode node = await StartWithOneMessageAsync();

        var updates = new List<IReadOnlyList<InstrumentReading>>();
        IReadOnlyList<InstrumentReading> last = await NodeProfiler.CollectAsync(node.ProcessId, TimeSpan.FromSeconds(6), refreshSeconds: 1, onUpdate: table =>
        {
            lock (updates)
            {
                updates.Add(table);
            }
        });

        output.WriteLine($"{updates.Count} updates; the last: {string.Join(", ", updates.LastOrDefault()?.Select(r => r.Instrument) ?? [])}");
        Assert.True(updates.Count >= 2, $"the live table was updated {updates.Count} times in 6 s at --refresh 1");
        IReadOnlyList<InstrumentReading> shown = updates[^1];
        Assert.Contains(shown, r => r.Instrument == "meganet.store.log_size" && r.Value >= 1);
        Assert.Contains(shown, r => r.Meter == "System.Runtime" && r.Instrument == "dotnet.process.cpu.time");
        Assert.True(shown.Count <= last.Count, "an update showed rows the final table lacks");
    }

    [Fact]
    public async Task A_second_session_joins_a_compatible_one_and_fails_naming_the_cause_otherwise()
    {
        // The runtime aggregates metrics for one session at a time. Before, a second 'meganet profile' (or one beside
        // dotnet-counters) got only an error event it ignored, and showed an empty table with exit code 0.
        await using ExternalNode node = await StartWithOneMessageAsync();

        Task<IReadOnlyList<InstrumentReading>> first = NodeProfiler.CollectAsync(node.ProcessId, TimeSpan.FromSeconds(9), refreshSeconds: 1);
        await Task.Delay(TimeSpan.FromSeconds(2));

        // Another refresh interval: the runtime will not share; the profiler says why and what to do.
        ProfilerException e = await Assert.ThrowsAsync<ProfilerException>(() => NodeProfiler.CollectAsync(node.ProcessId, TimeSpan.FromSeconds(5), refreshSeconds: 2));
        output.WriteLine(e.Message);
        Assert.Contains("every 1 s", e.Message, StringComparison.Ordinal);
        Assert.Contains("--refresh 1", e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("\n", e.Message, StringComparison.Ordinal);

        // The same settings: it joins the running session and reads the node.
        IReadOnlyList<InstrumentReading> joined = await NodeProfiler.CollectAsync(node.ProcessId, TimeSpan.FromSeconds(3), refreshSeconds: 1);
        Assert.Contains(joined, r => r.Instrument == "meganet.store.log_size" && r.Value >= 1);

        // And the first session kept reading throughout.
        Assert.Contains(await first, r => r.Instrument == "meganet.store.log_size" && r.Value >= 1);
    }

    [Fact]
    public async Task A_session_beside_one_that_cannot_be_shared_fails_naming_it()
    {
        await using ExternalNode node = await ExternalNode.StartTemporaryAsync("meganet-profile-");
        // A metrics session under an id of its own, as dotnet-counters before the shared session started them.
        string other = Guid.NewGuid().ToString();
        var client = new Microsoft.Diagnostics.NETCore.Client.DiagnosticsClient(node.ProcessId);
        using Microsoft.Diagnostics.NETCore.Client.EventPipeSession unshared = client.StartEventPipeSession(
            new Microsoft.Diagnostics.NETCore.Client.EventPipeProvider("System.Diagnostics.Metrics", System.Diagnostics.Tracing.EventLevel.Informational, 0x2,
                new Dictionary<string, string> { ["SessionId"] = other, ["Metrics"] = "MegaNet", ["RefreshInterval"] = "1" }),
            requestRundown: false);
        Task drain = unshared.EventStream.CopyToAsync(Stream.Null);
        await Task.Delay(TimeSpan.FromSeconds(1));

        ProfilerException e = await Assert.ThrowsAsync<ProfilerException>(() => NodeProfiler.CollectAsync(node.ProcessId, TimeSpan.FromSeconds(5)));
        output.WriteLine(e.Message);
        Assert.Contains("cannot be shared", e.Message, StringComparison.Ordinal);
        Assert.Contains(other, e.Message, StringComparison.Ordinal);

        await unshared.StopAsync(CancellationToken.None);
        await drain.WaitAsync(TimeSpan.FromSeconds(10));
    }

    [SkippableFact]
    public void The_command_line_ps_shows_is_the_one_proc_holds()
    {
        // macOS and the BSDs have no /proc: nodes are found by the command line ps(1) shows, checked here against
        // Linux's own record of this process's.
        Skip.IfNot(OperatingSystem.IsLinux(), "checked against /proc, which Linux has");

        int pid = Environment.ProcessId;
        string proc = File.ReadAllText($"/proc/{pid}/cmdline").Replace('\0', ' ').Trim();
        Assert.Equal(proc, NodeProfiler.CommandLineFromPs(pid));
        Assert.Null(NodeProfiler.CommandLineFromPs(int.MaxValue)); // no such process
    }

    [Fact]
    public void Readings_are_per_second_and_the_table_says_what_each_column_holds()
    {
        // The runtime reports a counter's change per refresh interval and a histogram's recordings in it: at --refresh 5
        // the old "rate/s" column showed five times the rate.
        InstrumentReading counter = NodeProfiler.Reading("counter", "MegaNet", "meganet.admission.accepted", "", "{envelope}", refreshSeconds: 5, previous: null,
            rate: "250", value: "1000");
        InstrumentReading histogram = NodeProfiler.Reading("histogram", "MegaNet", "meganet.admission.latency", "", "ms", refreshSeconds: 5, previous: null,
            count: 40, quantiles: "0.5=1;0.95=2;0.99=3");
        InstrumentReading gauge = NodeProfiler.Reading("gauge", "MegaNet", "meganet.store.log_size", "", "{leaf}", refreshSeconds: 5, previous: null, lastValue: "7");

        Assert.Equal((50.0, 1000.0), (counter.PerSecond, counter.Value));
        Assert.Equal((8.0, 40.0, "0.5=1;0.95=2;0.99=3"), (histogram.PerSecond, histogram.Value, histogram.Quantiles));
        Assert.Equal((0.0, 7.0), (gauge.PerSecond, gauge.Value));

        string table = NodeProfiler.Render([counter, histogram, gauge], new NodeProcess(1, "meganet node"), refreshSeconds: 5);
        output.WriteLine(table);
        Assert.Contains("per s: per second over the last 5 s (counters: change; histograms: recordings)", table, StringComparison.Ordinal);
        Assert.Contains("value: counters: running total", table, StringComparison.Ordinal);
        Assert.DoesNotContain("rate/s", table, StringComparison.Ordinal);
        string accepted = table.Split('\n').Single(l => l.Contains("meganet.admission.accepted", StringComparison.Ordinal));
        Assert.Matches(@"counter\s+50\.0\s+1,000\.0", accepted);
        string latency = table.Split('\n').Single(l => l.Contains("meganet.admission.latency", StringComparison.Ordinal));
        Assert.Matches(@"histogram\s+8\.0\s+40\.0", latency);
    }

    [Fact]
    public void The_table_shows_a_verification_rows_tags_whole_so_valid_and_invalid_rows_differ()
    {
        // With the purpose tag, the verification rows' tags are 39 to 51 characters: cut at 30 they all read
        // "backend=simd,purpose=admissio…", valid and invalid alike.
        string[] tags = ["backend=simd,purpose=admission,verdict=invalid", "backend=simd,purpose=admission,verdict=valid", "backend=simd,purpose=delegated,verdict=invalid"];
        InstrumentReading[] readings = [.. tags.Select(t => NodeProfiler.Reading("counter", "MegaNet", "meganet.verify.signatures", t, "{signature}", refreshSeconds: 1, previous: null,
            rate: "1", value: "1"))];
        string table = NodeProfiler.Render(readings, new NodeProcess(1, "meganet node"));
        output.WriteLine(table);
        foreach (string t in tags)
        {
            Assert.Single(table.Split('\n'), l => l.Contains(t + " ", StringComparison.Ordinal));
        }

        // Past the widest the column grows, a tag list is still cut, and the columns after it stay in line.
        string longTags = string.Join(',', Enumerable.Range(0, 10).Select(i => $"tag{i}=value{i}"));
        string cut = NodeProfiler.Render([NodeProfiler.Reading("counter", "MegaNet", "meganet.x", longTags, "", refreshSeconds: 1, previous: null, rate: "1", value: "1")],
            new NodeProcess(1, "meganet node")).Split('\n').Single(l => l.Contains("meganet.x", StringComparison.Ordinal));
        Assert.Contains(longTags[..(NodeProfiler.MaxTagsWidth - 1)] + "… counter", cut, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_thread_busy_in_native_code_counts_like_one_busy_in_managed_code_and_a_sleeping_one_not_at_all()
    {
        // Three threads of this process for the length of a trace: one verifying with libsodium (nearly all of its
        // time in native code, External samples), one in a managed loop (Managed samples), one sleeping. Before,
        // External samples were dropped: the native thread read almost nothing.
        string dir = Directory.CreateTempSubdirectory("meganet-trace-").FullName;
        using var stop = new CancellationTokenSource();
        using SignatureBatch batch = MegaNet.Node.Benchmarking.VerifyBenchmark.MakeBatch(16, 0);
        Thread[] threads =
        [
            new(() => NativeSpin(batch, stop.Token)) { IsBackground = true },
            new(() => ManagedSpin(stop.Token)) { IsBackground = true },
            new(() => Sleeper(stop.Token)) { IsBackground = true },
        ];
        try
        {
            foreach (Thread t in threads)
            {
                t.Start();
            }

            string trace = Path.Combine(dir, "self.nettrace");
            await NodeProfiler.TraceAsync(Environment.ProcessId, trace, TimeSpan.FromSeconds(3));
            stop.Cancel();
            HotMethods summary = TraceSummary.Summarize(trace, 100_000);
            IReadOnlyList<MethodShare> byInclusive = summary.ByInclusive;
            output.WriteLine(TraceSummary.Format(summary with { ByExclusive = [], ByInclusive = [.. byInclusive.Take(25)] }));
            double Share(string method) => byInclusive.FirstOrDefault(m => m.Method.Contains($"ProfilerTests.{method}(", StringComparison.Ordinal))?.Inclusive ?? 0;
            double native = Share(nameof(NativeSpin)), managed = Share(nameof(ManagedSpin)), sleeping = Share(nameof(Sleeper));
            output.WriteLine($"native {native:P1}, managed {managed:P1}, sleeping {sleeping:P1}");

            Assert.True(managed > 0.05, $"the managed loop got only {managed:P1} of the samples; the test proved little");
            // The sampler records every thread at each tick, so two threads busy all along get about the same count.
            Assert.InRange(native / managed, 0.85, 1.18);
            // A sleeping thread's samples are nearly all External in Thread.Sleep (a wait, left out); the few Managed
            // ones on its way in and out of the sleep count, as all Managed samples do.
            Assert.True(sleeping < 0.05, $"a sleeping thread counted {sleeping:P1}");
        }
        finally
        {
            stop.Cancel();
            foreach (Thread t in threads)
            {
                t.Join();
            }

            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public async Task A_trace_of_an_idle_node_finds_its_threads_waiting_not_busy()
    {
        // Each of the store's I/O threads waits for a request in IoQueue.Take; with Monitor.Wait's wrappers inlined
        // into it, Take was the innermost method of every sample, so an idle node's 15 s trace counted 90,629 busy
        // samples (more than its processors could run) and a loaded node's summary ranked Take at 99 %. The JIT inlines
        // only once a method is compiled with optimisation (after a load has made it hot): here from the start.
        string data = Directory.CreateTempSubdirectory("meganet-profile-idle-").FullName;
        try
        {
            HotMethods summary;
            await using (ExternalNode node = await ExternalNode.StartAsync(data, new Dictionary<string, string> { ["DOTNET_TieredCompilation"] = "0" }))
            {
                string trace = Path.Combine(data, "idle.nettrace");
                await NodeProfiler.TraceAsync(node.ProcessId, trace, TimeSpan.FromSeconds(3));
                summary = TraceSummary.Summarize(trace, 100_000);
            }

            output.WriteLine(TraceSummary.Format(summary with { ByExclusive = [.. summary.ByExclusive.Take(15)], ByInclusive = [] }));
            Assert.True(summary.Sampled > TimeSpan.FromSeconds(1), $"the trace sampled only {summary.Sampled}; the test proved little");
            Assert.DoesNotContain(summary.ByExclusive, m => m.Method.Contains("DirectFileDevice", StringComparison.Ordinal) && m.Exclusive > 0.05);
            // An idle node runs a few timers and the trace session's own work: far less than one processor's worth.
            double oneProcessor = summary.Sampled.TotalSeconds * TraceSummary.SamplesPerSecond;
            Assert.True(summary.Samples < oneProcessor / 4, $"{summary.Samples:N0} busy samples in {summary.Sampled.TotalSeconds:0.0} s of an idle node");
        }
        finally
        {
            Directory.Delete(data, recursive: true);
        }
    }

    [Fact]
    public async Task A_summary_cancelled_while_it_converts_the_trace_stops_and_leaves_no_index()
    {
        // Ctrl+C during the summary of a long trace: the process is ended after a few seconds' grace, which the
        // conversion into a temporary index could outlast, leaving the index (meganet-trace-*.etlx) behind. Cancelled
        // here as soon as the conversion starts writing the index.
        string dir = Directory.CreateTempSubdirectory("meganet-trace-").FullName;
        using var stop = new CancellationTokenSource();
        var spinner = new Thread(() => ManagedSpin(stop.Token)) { IsBackground = true };
        try
        {
            spinner.Start();
            string trace = Path.Combine(dir, "self.nettrace");
            await NodeProfiler.TraceAsync(Environment.ProcessId, trace, TimeSpan.FromSeconds(3));
            stop.Cancel();
            spinner.Join();

            string etlx = Path.Combine(dir, "index.etlx");
            using var interrupt = new CancellationTokenSource();
            using var watcher = new FileSystemWatcher(dir, "index.etlx*");
            watcher.Created += (_, _) => interrupt.Cancel();
            watcher.EnableRaisingEvents = true;
            Assert.Throws<OperationCanceledException>(() => TraceSummary.Summarize(trace, 10, etlx, interrupt.Token));
            Assert.Equal(["self.nettrace"], Directory.EnumerateFiles(dir).Select(Path.GetFileName));
        }
        finally
        {
            stop.Cancel();
            spinner.Join();
            Directory.Delete(dir, recursive: true);
        }
    }

    [Theory]
    [InlineData(241_120, 30.0, 2, true)] // the loaded node's summary that ranked idle I/O threads at 99 %
    [InlineData(90_629, 15.0, 2, true)] // the idle node's
    [InlineData(59_000, 30.0, 2, false)] // two processors busy nearly all along: possible
    [InlineData(1_000, 0.0, 2, false)] // no span to judge by
    public void A_busy_sample_count_no_processors_could_run_is_warned_about(int samples, double seconds, int processors, bool warned)
    {
        string? warning = TraceSummary.ImpossibleCountWarning(samples, TimeSpan.FromSeconds(seconds), processors);
        output.WriteLine(warning ?? "(no warning)");
        Assert.Equal(warned, warning is not null);
        string formatted = TraceSummary.Format(new HotMethods(samples, TimeSpan.FromSeconds(seconds), processors, [], []));
        Assert.Equal(warned, formatted.StartsWith("warning: ", StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("System.Threading.Monitor.Wait(class System.Object,int32)", true)]
    [InlineData("MegaNet.Store.DirectFileDevice+IoQueue.WaitForItem()", true)] // the store's idle I/O threads
    [InlineData("System.Threading.LowLevelLifoSemaphore.WaitNative(class Microsoft.Win32.SafeHandles.SafeWaitHandle,int32)", true)]
    [InlineData("System.Threading.Thread.Sleep(int32)", true)]
    [InlineData("MegaNet.Core.Interop.ShortSleep.Sleep(int32)", true)]
    [InlineData("System.Net.Sockets.SocketAsyncEngine.EventLoop()", true)]
    [InlineData("System.Threading.PortableThreadPool+WorkerThread.WorkerThreadStart()", true)]
    [InlineData("Interop+Sys.PWrite(class System.Runtime.InteropServices.SafeHandle,unsigned int8*,int32,int64)", true)]
    [InlineData("MegaNet.Core.Verification.BatchVerifierBase.Verify(class MegaNet.Core.Verification.SignatureBatch,int32,int32,value class System.Span`1<bool>)", false)]
    [InlineData("Interop+Libsodium.crypto_hash_sha256(value class System.Span`1<unsigned int8>)", false)]
    [InlineData("MegaNet.Store.ThreadedReader.Read()", false)] // a Read of our own is work, not a blocking system call
    [InlineData("System.Threading.LowLevelSpinWaiter.Wait(int32,int32,bool)", true)]
    [InlineData("System.Threading.SpinWait.SpinOnceCore(int32)", true)]
    [InlineData("System.Threading.Monitor.Enter_Slowpath(class System.Object)", true)]
    [InlineData("System.IO.RandomAccess.WriteAtOffset(class Microsoft.Win32.SafeHandles.SafeFileHandle,value class System.ReadOnlySpan`1<unsigned int8>,int64)", true)]
    [InlineData("System.Threading.Thread.Join(int32)", true)]
    [InlineData("System.String.Join(class System.String,class System.String[])", false)] // joining strings is work
    [InlineData("System.Runtime.CompilerServices.AsyncTaskMethodBuilder`1[System.__Canon].AwaitUnsafeOnCompleted(!!0&,class System.Runtime.CompilerServices.IAsyncStateMachineBox)", false)]
    public void External_samples_are_waits_by_the_innermost_methods_own_name(string method, bool wait) =>
        Assert.Equal(wait, TraceSummary.IsWait(method));

    [Theory]
    // A thread spinning or blocked in the runtime is sampled as Managed too; those samples are waits, as README says.
    // Before, the wait filter applied to External samples only, and a summary ranked LowLevelSpinWaiter.Wait first.
    [InlineData("Managed", "System.Threading.LowLevelSpinWaiter.Wait(int32,int32,bool)", false)]
    [InlineData("Managed", "System.Threading.SpinWait.SpinOnceCore(int32)", false)]
    [InlineData("Managed", "System.Threading.Monitor.Enter_Slowpath(class System.Object)", false)]
    [InlineData("Managed", "System.Threading.LowLevelLifoSemaphore.WaitNative(class Microsoft.Win32.SafeHandles.SafeWaitHandle,int32)", false)]
    [InlineData("Managed", "System.IO.RandomAccess.WriteAtOffset(class Microsoft.Win32.SafeHandles.SafeFileHandle,value class System.ReadOnlySpan`1<unsigned int8>,int64)", false)]
    [InlineData("External", "System.IO.RandomAccess.WriteAtOffset(class Microsoft.Win32.SafeHandles.SafeFileHandle,value class System.ReadOnlySpan`1<unsigned int8>,int64)", false)]
    [InlineData("Managed", "MegaNet.Core.Verification.BatchVerifierBase.Verify(class MegaNet.Core.Verification.SignatureBatch,int32,int32,value class System.Span`1<bool>)", true)]
    [InlineData("Managed", null, true)] // managed code without a name (a stub) is still running code
    [InlineData("External", "Interop+Libsodium.crypto_hash_sha256(value class System.Span`1<unsigned int8>)", true)]
    [InlineData("External", null, false)] // native code with no managed caller to charge it to
    public void Samples_of_waiting_threads_are_left_out_whether_managed_or_external(string type, string? innermost, bool counts) =>
        Assert.Equal(counts, TraceSummary.Counts(type, innermost));

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static void NativeSpin(SignatureBatch batch, CancellationToken stop)
    {
        using var libsodium = new LibsodiumBatchVerifier();
        bool[] verdicts = new bool[batch.Count];
        while (!stop.IsCancellationRequested)
        {
            libsodium.Verify(batch, verdicts);
        }
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static void ManagedSpin(CancellationToken stop)
    {
        ulong x = 1;
        while (!stop.IsCancellationRequested)
        {
            for (int i = 0; i < 100_000; i++)
            {
                x = (x * 6364136223846793005) + 1442695040888963407;
            }
        }

        GC.KeepAlive(x);
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static void Sleeper(CancellationToken stop)
    {
        while (!stop.IsCancellationRequested)
        {
            Thread.Sleep(20);
        }
    }

    [Fact]
    public void Profiling_a_process_that_is_not_a_node_says_so()
    {
        ProfilerException e = Assert.Throws<ProfilerException>(() => NodeProfiler.Resolve(Environment.ProcessId));
        Assert.Contains("not a MegaNet node", e.Message);
        Assert.Throws<ProfilerException>(() => NodeProfiler.Resolve(int.MaxValue));
    }

    [Fact]
    public async Task The_prometheus_endpoint_exposes_the_MegaNet_instruments()
    {
        await using TestNode node = await TestNode.StartAsync(o => o.MetricsListen = "127.0.0.1:0");
        int metricsPort = node.MetricsPort;
        using (MegaNetClient client = node.Client())
        using (Identity alice = Identity.Create(), bob = Identity.Create())
        {
            await client.SendAsync(alice, bob.Card, Encoding.UTF8.GetBytes("count me"), "text/plain");
        }

        using var http = new HttpClient();
        string text = await http.GetStringAsync($"http://127.0.0.1:{metricsPort}/metrics");
        Assert.Contains("# TYPE meganet_admission_accepted_total counter", text);
        Assert.Contains("meganet_verify_signatures_total{backend=\"simd\",purpose=\"admission\",verdict=\"valid\"}", text);
        Assert.Contains("meganet_admission_accepted_total ", text);
        Assert.Contains("meganet_store_log_size", text);

        // Not on the gRPC port (HTTP/2), which may face the internet.
        using var onGrpcPort = new HttpRequestMessage(HttpMethod.Get, new Uri(node.Address, "/metrics"))
        {
            Version = System.Net.HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
        };
        using HttpResponseMessage refused = await http.SendAsync(onGrpcPort);
        Assert.Equal(System.Net.HttpStatusCode.NotFound, refused.StatusCode);

        // Connections are capped (the listener may face more than loopback): the client's pooled one goes first, then 16
        // are held, each shown to be let in by a scrape over it; one more is closed at once, and once they go, a new
        // client scrapes again.
        http.Dispose();
        var held = new List<System.Net.Sockets.TcpClient>();
        try
        {
            byte[] request = Encoding.ASCII.GetBytes($"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{metricsPort}\r\n\r\n");
            for (int i = 0; i < MegaNet.Node.Hosting.NodeHost.MaxMetricsConnections; i++)
            {
                var connection = new System.Net.Sockets.TcpClient();
                held.Add(connection);
                await connection.ConnectAsync(System.Net.IPAddress.Loopback, metricsPort);
                await connection.GetStream().WriteAsync(request);
                byte[] head = new byte[12];
                await connection.GetStream().ReadExactlyAsync(head);
                Assert.Equal("HTTP/1.1 200", Encoding.ASCII.GetString(head));
            }

            using var extra = new System.Net.Sockets.TcpClient();
            await extra.ConnectAsync(System.Net.IPAddress.Loopback, metricsPort);
            using var closing = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            Assert.Equal(0, await extra.GetStream().ReadAsync(new byte[1], closing.Token));
        }
        finally
        {
            held.ForEach(c => c.Dispose());
        }

        using var again = new HttpClient();
        for (int tries = 0; ; tries++)
        {
            try
            {
                Assert.Contains("meganet_store_log_size", await again.GetStringAsync($"http://127.0.0.1:{metricsPort}/metrics"));
                break;
            }
            catch (HttpRequestException) when (tries < 50)
            {
                await Task.Delay(100);
            }
        }

        node.AssertNoServerErrors();
    }

    /// <summary>A node process whose store holds one message, so its instruments have something to count.</summary>
    private static async Task<ExternalNode> StartWithOneMessageAsync()
    {
        ExternalNode node = await ExternalNode.StartTemporaryAsync("meganet-profile-");
        try
        {
            using var client = new MegaNetClient(node.Address);
            using Identity alice = Identity.Create(), bob = Identity.Create();
            await client.SendAsync(alice, bob.Card, Encoding.UTF8.GetBytes("something to count"), "text/plain");
            return node;
        }
        catch
        {
            await node.DisposeAsync();
            throw;
        }
    }
}
