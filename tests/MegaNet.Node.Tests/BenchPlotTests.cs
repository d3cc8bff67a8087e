using MegaNet.Node.Benchmarking;

namespace MegaNet.Node.Tests;

/// <summary>What <c>meganet bench --plot</c> draws.</summary>
public sealed class BenchPlotTests
{
    [Theory]
    // One batch size, rates within a decade (a 2-core machine's batch 64): the axis had no number at all.
    [InlineData(new[] { 64 }, new[] { 11_890.0 }, new[] { 81_195.0 })]
    // The default sweep on 2 cores (14,000 to 350,000/s): one number, 100,000, on the whole axis.
    [InlineData(new[] { 1, 1024, 16384 }, new[] { 20_000.0, 14_500.0, 14_000.0 }, new[] { 25_000.0, 220_000.0, 350_000.0 })]
    // A rate on a decade exactly.
    [InlineData(new[] { 8 }, new[] { 10_000.0 }, new[] { 10_000.0 })]
    public void The_rate_axis_labels_at_least_two_values_and_every_point_lies_within_it(int[] batches, double[] libsodium, double[] simd)
    {
        var results = batches.SelectMany((b, i) => new[]
        {
            new VerifyBenchmarkResult("libsodium", b, 1, libsodium[i], 1, false, "libsodium"),
            new VerifyBenchmarkResult("simd", b, 1, simd[i], simd[i] / libsodium[i], false, "simd") { ThreadsRequested = 1 },
        }).ToList();
        using ScottPlot.Plot plot = BenchPlot.Build(new VerifyBenchmarkReport(MachineInfo.Current(), results));
        plot.GetImageBytes(BenchPlot.Width, BenchPlot.Height, ScottPlot.ImageFormat.Png); // lays out the axes and their ticks

        ScottPlot.AxisLimits limits = plot.Axes.GetLimits();
        string[] labels = plot.Axes.Left.TickGenerator.Ticks
            .Where(t => t.IsMajor && t.Position >= limits.Bottom && t.Position <= limits.Top && t.Label.Length > 0)
            .Select(t => t.Label).ToArray();
        Assert.True(labels.Length >= 2, $"the rate axis ({limits.Bottom:F2} to {limits.Top:F2} in log10) labels {labels.Length}: {string.Join(", ", labels)}");
        Assert.All(libsodium.Concat(simd), r => Assert.InRange(Math.Log10(r), limits.Bottom, limits.Top));
    }
}
