using System.Diagnostics.Metrics;
using MegaNet.Core.Diagnostics;
using MegaNet.Node.Diagnostics;

namespace MegaNet.Node.Tests;

/// <summary>A tagged measurement (a rejected envelope's reason, a batch's backend and verdict) reaches its series
/// without building its label string again, and the text is what the tags say whatever their order or instance.</summary>
public sealed class PrometheusExporterCacheTests
{
    [Fact]
    public void Tagged_measurements_allocate_nothing_once_their_tags_were_seen()
    {
        // A meter of the exporter's name and a counter of this test's own, so other tests' measurements cannot interfere.
        string name = "test_cache_" + Guid.NewGuid().ToString("N")[..8];
        using var meter = new Meter(MegaNetMetrics.MeterName);
        Counter<long> counter = meter.CreateCounter<long>(name, description: "cache test");
        using var exporter = new PrometheusExporter();
        var reason = new KeyValuePair<string, object?>("reason", "rate_limited");
        var other = new KeyValuePair<string, object?>("reason", "pow");
        counter.Add(1, reason);
        counter.Add(1, other);

        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 1_000; i++)
        {
            counter.Add(1, reason);
            counter.Add(2, other);
        }

        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;

        // Equal values in other instances, and the same tags in another order, are the same series.
        counter.Add(5, new KeyValuePair<string, object?>("reason", new string("rate_limited".AsSpan())));
        counter.Add(1, new KeyValuePair<string, object?>("b", "x"), new KeyValuePair<string, object?>("a", "y"));
        counter.Add(1, new KeyValuePair<string, object?>("a", "y"), new KeyValuePair<string, object?>("b", "x"));

        string text = exporter.Render();
        Assert.Equal(0, allocated);
        Assert.Contains($"# HELP {name}_total cache test\n# TYPE {name}_total counter\n", text, StringComparison.Ordinal);
        Assert.Contains($"{name}_total{{reason=\"rate_limited\"}} 1006\n", text, StringComparison.Ordinal);
        Assert.Contains($"{name}_total{{reason=\"pow\"}} 2001\n", text, StringComparison.Ordinal);
        Assert.Contains($"{name}_total{{a=\"y\",b=\"x\"}} 2\n", text, StringComparison.Ordinal);
    }
}
