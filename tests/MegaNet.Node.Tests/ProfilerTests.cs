using System.Text;
using MegaNet.Api;
using MegaNet.Node.Diagnostics;
using Xunit.Abstractions;

namespace MegaNet.Node.Tests;

/// <summary>The profiler attached to a real node process under load, and the Prometheus endpoint.</summary>
public sealed class ProfilerTests(ITestOutputHelper output)
{
    [Fact]
    public async Task The_profiler_reads_the_counters_of_a_loaded_node_consistently_with_the_load()
    {
        // The node runs as its own process, exactly as an operator starts it.
        string data = Directory.CreateTempSubdirectory("meganet-profile-").FullName;
        ExternalNode node = await ExternalNode.StartAsync(data);
        try
        {
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
            string trace = Path.Combine(data, "node.nettrace");
            Task tracing = NodeProfiler.TraceAsync(node.ProcessId, trace, TimeSpan.FromSeconds(4));
            await Task.Delay(TimeSpan.FromSeconds(1));
            using (var client = new MegaNetClient(node.Address))
            using (Identity alice = Identity.Create(), bob = Identity.Create())
            {
                var sends = Enumerable.Range(0, 200).Select(i => client.SendAsync(alice, bob.Card, Encoding.UTF8.GetBytes($"t{i}"), "text/plain"));
                await Task.WhenAll(sends);
            }

            await tracing;
            (int samples, _, IReadOnlyList<MethodShare> byInclusive) = TraceSummary.Summarize(trace, 100_000);
            output.WriteLine(TraceSummary.Format(samples, [], byInclusive.Take(30).ToList()));
            Assert.True(samples > 0, "no managed-code samples in the trace");
            Assert.Contains(byInclusive, m => m.Method.StartsWith("MegaNet.", StringComparison.Ordinal) && m.Inclusive > 0);
            Assert.All(byInclusive, m => Assert.InRange(m.Inclusive, m.Exclusive, 1.0));
        }
        finally
        {
            await node.DisposeAsync();
            Directory.Delete(data, recursive: true);
        }
    }

    [Fact]
    public async Task A_second_session_joins_a_compatible_one_and_fails_naming_the_cause_otherwise()
    {
        // The runtime aggregates metrics for one session at a time. Before, a second 'meganet profile' (or one beside
        // dotnet-counters) got only an error event it ignored, and showed an empty table with exit code 0.
        string data = Directory.CreateTempSubdirectory("meganet-profile-").FullName;
        ExternalNode node = await ExternalNode.StartAsync(data);
        try
        {
            using (var client = new MegaNetClient(node.Address))
            using (Identity alice = Identity.Create(), bob = Identity.Create())
            {
                await client.SendAsync(alice, bob.Card, Encoding.UTF8.GetBytes("something to count"), "text/plain");
            }

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
        finally
        {
            await node.DisposeAsync();
            Directory.Delete(data, recursive: true);
        }
    }

    [Fact]
    public async Task A_session_beside_one_that_cannot_be_shared_fails_naming_it()
    {
        string data = Directory.CreateTempSubdirectory("meganet-profile-").FullName;
        ExternalNode node = await ExternalNode.StartAsync(data);
        try
        {
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
        finally
        {
            await node.DisposeAsync();
            Directory.Delete(data, recursive: true);
        }
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
    public void Profiling_a_process_that_is_not_a_node_says_so()
    {
        ProfilerException e = Assert.Throws<ProfilerException>(() => NodeProfiler.Resolve(Environment.ProcessId));
        Assert.Contains("not a MegaNet node", e.Message);
        Assert.Throws<ProfilerException>(() => NodeProfiler.Resolve(int.MaxValue));
    }

    [Fact]
    public async Task The_prometheus_endpoint_exposes_the_MegaNet_instruments()
    {
        int metricsPort = ExternalNode.FreePort();
        await using TestNode node = await TestNode.StartAsync(o => o.MetricsListen = $"127.0.0.1:{metricsPort}");
        using (MegaNetClient client = node.Client())
        using (Identity alice = Identity.Create(), bob = Identity.Create())
        {
            await client.SendAsync(alice, bob.Card, Encoding.UTF8.GetBytes("count me"), "text/plain");
        }

        using var http = new HttpClient();
        string text = await http.GetStringAsync($"http://127.0.0.1:{metricsPort}/metrics");
        Assert.Contains("# TYPE meganet_admission_accepted_total counter", text);
        Assert.Contains("meganet_verify_signatures_total{backend=\"simd\",verdict=\"valid\"}", text);
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
        node.AssertNoServerErrors();
    }
}
