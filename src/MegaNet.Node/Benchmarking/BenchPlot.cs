using System.Globalization;

namespace MegaNet.Node.Benchmarking;

/// <summary>Draws verifies/s against batch size (both log scale), one line per backend and thread count, libsodium included.</summary>
public static class BenchPlot
{
    /// <summary>Writes a PNG of <paramref name="report"/> to <paramref name="path"/>.</summary>
    public static void Write(VerifyBenchmarkReport report, string path) => File.WriteAllBytes(path, Png(report));

    /// <summary>The plot of <paramref name="report"/> as PNG bytes.</summary>
    public static byte[] Png(VerifyBenchmarkReport report)
    {
        using ScottPlot.Plot plot = Build(report);
        return plot.GetImageBytes(Width, Height, ScottPlot.ImageFormat.Png);
    }

    /// <summary>The picture's size in pixels.</summary>
    internal const int Width = 1000, Height = 620;

    /// <summary>The plot <see cref="Png"/> draws.</summary>
    internal static ScottPlot.Plot Build(VerifyBenchmarkReport report)
    {
        ArgumentNullException.ThrowIfNull(report);
        var plot = new ScottPlot.Plot();
        // A line per configuration as it was made (the thread count asked for): simd x2 runs small batches on one
        // thread, and grouping by the threads that ran would put those points on the x1 line.
        foreach (var series in report.Results.GroupBy(r => r.Backend == "libsodium" ? "libsodium (baseline)" : r.ThreadsRequested is { } t ? $"{r.Backend} x{t}" : r.Backend))
        {
            var points = series.OrderBy(r => r.Batch).ToList();
            var line = plot.Add.Scatter(
                points.Select(r => Math.Log10(r.Batch)).ToArray(),
                points.Select(r => Math.Log10(r.VerifiesPerSecond)).ToArray());
            line.LegendText = series.Key;
            line.MarkerSize = 7;
        }

        static string Power(double v) => Math.Pow(10, v).ToString("N0", CultureInfo.InvariantCulture);
        // Data are plotted as log10 values: label only whole decades (1, 10, 100, …) and draw log-spaced minor ticks,
        // otherwise the automatic ticks land on fractional exponents (15,849, 19,953, …).
        static ScottPlot.TickGenerators.NumericAutomatic Decades() => new()
        {
            LabelFormatter = Power,
            IntegerTicksOnly = true,
            MinorTickGenerator = new ScottPlot.TickGenerators.LogMinorTickGenerator(),
        };
        plot.Axes.Bottom.TickGenerator = Decades();
        plot.Axes.Left.TickGenerator = Decades();
        // Only whole decades are labelled, and rates on a 2-core machine (about 12,000 to 350,000/s) spanned one at
        // most: the axis showed a single number, or none for a sweep of one batch size. Its ends are whole decades.
        double[] rates = report.Results.Where(r => r.VerifiesPerSecond > 0).Select(r => Math.Log10(r.VerifiesPerSecond)).ToArray();
        if (rates.Length > 0)
        {
            double bottom = Math.Floor(rates.Min());
            plot.Axes.SetLimitsY(bottom, Math.Max(Math.Ceiling(rates.Max()), bottom + 1));
        }

        plot.Axes.Bottom.Label.Text = "batch size (log)";
        plot.Axes.Left.Label.Text = "verifies/s (log)";
        plot.Title(Title(report));
        plot.ShowLegend(ScottPlot.Alignment.UpperLeft);
        return plot;
    }

    /// <summary>The plot's title: the machine, then how the sweep was run (key cache, keys, time per point, check), so
    /// a saved picture says how it was measured.</summary>
    internal static string Title(VerifyBenchmarkReport report)
    {
        MachineInfo m = report.Machine;
        string machine = $"Ed25519 verification on {m.Cpu}, {m.LogicalCores} cores, {m.Isa}, libsodium {m.Libsodium}";
        return report.Options is { } settings ? $"{machine}\n{settings.Describe()}" : machine;
    }
}
