using MegaNet.Node.Verification;

namespace MegaNet.Node.Benchmarking;

/// <summary>
/// The raw SIMD verifier's rate on this machine, measured by <c>meganet load</c> in the same run as its streaming phase,
/// so the relay's throughput is given as a share of it: the machine's speed and its neighbours' load change from hour to
/// hour, and a ratio against a figure from another run mixes two machines.
/// </summary>
public static class LoadBaseline
{
    /// <summary>Batch size of the baseline: the node's batches under streaming load are of this order.</summary>
    public const int Batch = 1_024;

    /// <summary>Measures the simd backend on every core (key cache off, one key per item, as <c>meganet bench</c>
    /// measures it by default) with libsodium beside it.</summary>
    public static VerifyBenchmarkResult Measure(TimeSpan perSlice)
    {
        var options = new VerifyBenchmarkOptions
        {
            Backends = ["simd"],
            BatchSizes = [Batch],
            Threads = [Environment.ProcessorCount],
            Duration = perSlice,
        };
        VerifyBenchmarkReport report = new VerifyBenchmark(VerifierCatalog.Create(), options).Run();
        return report.Results.Single(r => r.Backend == "simd");
    }

    /// <summary>The line that states the measured baseline.</summary>
    public static string DescribeBaseline(VerifyBenchmarkResult raw) =>
        $"raw simd verifier in this process: {raw.VerifiesPerSecond:N0}/s at batch {raw.Batch:N0} on {raw.Threads} thread{(raw.Threads == 1 ? "" : "s")}, " +
        $"key cache off ({raw.RatioToLibsodium:F2}x libsodium's {raw.LibsodiumPairedPerSecond:N0}/s beside it)";

    /// <summary>
    /// The rate (after the first seconds when the report has that figure, else over the whole phase, and it says which)
    /// as a share of the raw rate timed before the streaming phase and, when given, again after it: of their mean then.
    /// This machine's speed drifts by a fifth within minutes (neighbours on the same host), so one timing taken before
    /// the phase can be off by that much; two taken around it bracket the phase.
    /// </summary>
    public static string DescribeShare(LoadReport report, VerifyBenchmarkResult before, VerifyBenchmarkResult? after = null)
    {
        bool steady = !double.IsNaN(report.SteadyAcceptedPerSecond);
        double rate = steady ? report.SteadyAcceptedPerSecond : report.AcceptedPerSecond;
        string when = steady ? $"after the first {LoadGenerator.WarmUpSeconds:0} s" : "over the whole phase (too short for a figure after the first seconds)";
        if (after is null)
        {
            return $"{report.Mode} accepted {rate:N0}/s {when}: {rate / before.VerifiesPerSecond:P1} of the raw simd verifier's {before.VerifiesPerSecond:N0}/s measured in this run";
        }

        double mean = (before.VerifiesPerSecond + after.VerifiesPerSecond) / 2;
        string share = $"{report.Mode} accepted {rate:N0}/s {when}: {rate / mean:P1} of the raw simd verifier's {mean:N0}/s measured in this run " +
            $"(mean of {before.VerifiesPerSecond:N0}/s before the streaming phase and {after.VerifiesPerSecond:N0}/s after it)";
        double slower = Math.Min(before.VerifiesPerSecond, after.VerifiesPerSecond);
        double faster = Math.Max(before.VerifiesPerSecond, after.VerifiesPerSecond);
        if (faster <= slower * (1 + UnsteadySpread))
        {
            return share;
        }

        // A shared host's neighbours can slow this machine by a third from one minute to the next: the mean of two such
        // timings is then a guess, and the line says how far apart they were rather than give one share as firm.
        return share + $"; the two timings differ by {faster / slower - 1:P0}, so the machine's speed changed during the run: " +
            $"the share lies anywhere from {rate / faster:P1} (of the faster timing) to {rate / slower:P1} (of the slower); run again for a firmer figure";
    }

    /// <summary>How far apart (as a fraction of the slower) the timings before and after the streaming phase may be
    /// before <see cref="DescribeShare"/> calls the run's share unsure: 15 %.</summary>
    public const double UnsteadySpread = 0.15;
}
