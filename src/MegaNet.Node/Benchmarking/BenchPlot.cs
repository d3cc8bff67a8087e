using System.Globalization;

namespace MegaNet.Node.Benchmarking;

/// <summary>Draws verifies/s against batch size (both log scale), one line per backend and thread count, libsodium included.</summary>
public static class BenchPlot
{
    /// <summary>Writes a PNG of <paramref name="report"/> to <paramref name="path"/>.</summary>
    public static void Write(VerifyBenchmarkReport report, string path)
    {
        ArgumentNullException.ThrowIfNull(report);
        var plot = new ScottPlot.Plot();
        foreach (var series in report.Results.GroupBy(r => r.Backend == "libsodium" ? "libsodium (baseline)" : $"{r.Backend} x{r.Threads}"))
        {
            var points = series.OrderBy(r => r.Batch).ToList();
            var line = plot.Add.Scatter(
                points.Select(r => Math.Log10(r.Batch)).ToArray(),
                points.Select(r => Math.Log10(r.VerifiesPerSecond)).ToArray());
            line.LegendText = series.Key;
            line.MarkerSize = 7;
        }

        static string Power(double v) => Math.Pow(10, v).ToString("N0", CultureInfo.InvariantCulture);
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic { LabelFormatter = Power };
        plot.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic { LabelFormatter = Power };
        plot.Axes.Bottom.Label.Text = "batch size (log)";
        plot.Axes.Left.Label.Text = "verifies/s (log)";
        MachineInfo m = report.Machine;
        plot.Title($"Ed25519 verification on {m.Cpu}, {m.LogicalCores} cores, {m.Isa}, libsodium {m.Libsodium}");
        plot.ShowLegend(ScottPlot.Alignment.UpperLeft);
        plot.SavePng(path, 1000, 620);
    }
}
