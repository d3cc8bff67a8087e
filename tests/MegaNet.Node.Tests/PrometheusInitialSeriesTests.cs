using System.Text.RegularExpressions;
using MegaNet.Core.Diagnostics;
using MegaNet.Node.Diagnostics;

namespace MegaNet.Node.Tests;

/// <summary>
/// Prometheus takes a counter's first sample as its baseline: a series that first appears at 1 never shows in
/// <c>increase()</c> or <c>rate()</c>. The exporter made a series only at its first measurement, so the first envelope
/// rejected for a reason, the first refused connection, the first mail-listener failure or low-disk refusal went unseen.
/// Alone: other tests' nodes reject envelopes and refuse connections meanwhile, and the figures here must be 0.
/// </summary>
[Collection(AloneCollection.Name)]
public sealed class PrometheusInitialSeriesTests
{
    [Fact]
    public void A_fresh_exporter_lists_rare_events_at_0_under_every_reason()
    {
        using var exporter = new PrometheusExporter();
        string text = exporter.Render();

        Assert.Contains("\nmeganet_store_mail_listener_failures_total 0\n", text, StringComparison.Ordinal);
        Assert.Contains("\nmeganet_store_low_disk_refusals_total 0\n", text, StringComparison.Ordinal);
        Assert.Contains("\nmeganet_admission_accepted_total 0\n", text, StringComparison.Ordinal);
        foreach (string reason in MegaNetMetrics.RejectionReasons)
        {
            Assert.Contains($"\nmeganet_admission_rejected_total{{reason=\"{reason}\"}} 0\n", text, StringComparison.Ordinal);
        }

        foreach (string reason in MegaNetMetrics.ConnectionRefusalReasons)
        {
            Assert.Contains($"\nmeganet_connections_refused_total{{reason=\"{reason}\"}} 0\n", text, StringComparison.Ordinal);
        }

        // Histograms recorded without tags, empty; a series of a tagged instrument is never shown without its tags.
        Assert.Contains("\nmeganet_store_commit_latency_seconds_bucket{le=\"+Inf\"} 0\nmeganet_store_commit_latency_seconds_sum 0\nmeganet_store_commit_latency_seconds_count 0\n", text, StringComparison.Ordinal);
        Assert.DoesNotContain("\nmeganet_admission_rejected_total ", text, StringComparison.Ordinal);
        Assert.DoesNotContain("\nmeganet_connections_refused_total ", text, StringComparison.Ordinal);
        Assert.DoesNotContain("\nmeganet_verify_signatures_total ", text, StringComparison.Ordinal);
        Assert.DoesNotContain("\nmeganet_verify_batch_size_count ", text, StringComparison.Ordinal);

        // The live counts are gauges, read when scraped.
        Assert.Matches(new Regex(@"\n# TYPE meganet_connections_open gauge\nmeganet_connections_open \d+\n"), text);
        Assert.Matches(new Regex(@"\n# TYPE meganet_relay_subscriptions gauge\nmeganet_relay_subscriptions \d+\n"), text);
    }

    [Fact]
    public void Every_rejection_reason_the_node_records_is_one_the_exporter_lists()
    {
        // A reason missing from the list would be back to appearing at 1 (and to being missed by increase()).
        var recorded = new SortedSet<string>(StringComparer.Ordinal);
        // Reasons given as a constant (Reject(StoreRefusalWatch.DiskLow, ...)): their names first, then their values.
        var constants = new HashSet<string>(StringComparer.Ordinal);
        string[] sources = [.. Directory.EnumerateFiles(Checkout.Path("src"), "*.cs", SearchOption.AllDirectories).Select(File.ReadAllText)];
        foreach (string code in sources)
        {
            foreach (Match m in Regex.Matches(code, @"\bReject\(""([a-z_]+)""|EnvelopesRejected\.Add\([^;]*""reason"", ""([a-z_]+)""|\bReject\(\w+\.(\w+),"))
            {
                if (m.Groups[3].Success)
                {
                    constants.Add(m.Groups[3].Value);
                }
                else
                {
                    recorded.Add(m.Groups[1].Success ? m.Groups[1].Value : m.Groups[2].Value);
                }
            }
        }

        foreach (Match m in sources.SelectMany(code => Regex.Matches(code, @"\bconst string (\w+) = ""([a-z_]+)"";")))
        {
            if (constants.Contains(m.Groups[1].Value))
            {
                recorded.Add(m.Groups[2].Value);
            }
        }

        Assert.Contains("internal", recorded);
        Assert.Contains("malformed", recorded);
        Assert.Equal(recorded, MegaNetMetrics.RejectionReasons.Order(StringComparer.Ordinal));
    }

    [Fact]
    public void Every_connection_refusal_reason_the_gate_returns_is_one_the_exporter_lists()
    {
        // Read from ConnectionGate's source, as the rejection reasons are: compared with a copy of the list, a new
        // reason returned by TryEnter or FirstBytesAsync went unnoticed and appeared at 1.
        string code = File.ReadAllText(Checkout.Path("src/MegaNet.Node/Hosting/ConnectionGate.cs"));
        var returned = new SortedSet<string>(StringComparer.Ordinal);
        foreach (string method in new[] { "TryEnter", "FirstBytesAsync" })
        {
            Match body = Regex.Match(code, $@"\b{method}\([^)]*\)\s*\{{(.*?)\n    \}}", RegexOptions.Singleline);
            Assert.True(body.Success, $"ConnectionGate.{method} was not found: point this test at where connections are refused now");
            foreach (Match m in Regex.Matches(body.Groups[1].Value, @"\breturn ""([a-z_]+)"";"))
            {
                returned.Add(m.Groups[1].Value);
            }
        }

        // "gone" is a peer that closed first (a health probe), not a refusal, and is not counted.
        Assert.Contains("gone", returned);
        Assert.Contains("silent", returned);
        Assert.Contains("node", returned);
        returned.Remove("gone");
        Assert.Equal(returned, MegaNetMetrics.ConnectionRefusalReasons.Order(StringComparer.Ordinal));
    }
}
