using System.CommandLine;
using System.Text.Json;
using MegaNet.Node.Benchmarking;
using MegaNet.Node.Cli;

namespace MegaNet.Node.Tests;

/// <summary><c>meganet bench --help</c> against what the command writes.</summary>
public sealed class BenchHelpTests
{
    [Fact]
    public void The_json_option_names_every_part_of_the_report()
    {
        // --help named "machine" and "results" only; the file holds "warm_up" and "skipped" too.
        var report = new VerifyBenchmarkReport(MachineInfo.Current(), []);
        using JsonDocument json = JsonDocument.Parse(report.ToJson());
        string help = Description("--json");

        Assert.All(json.RootElement.EnumerateObject(), part => Assert.Contains($"\"{part.Name}\"", help, StringComparison.Ordinal));
    }

    [Fact]
    public void The_plot_option_says_each_thread_count_gets_a_line()
    {
        // BenchPlot draws a line per backend and thread count (simd x1, simd x2); --help said per backend.
        Assert.Contains("a line per backend and thread count", Description("--plot"), StringComparison.Ordinal);
    }

    private static string Description(string option) =>
        BenchCommand.Build().Options.Single(o => o.Name == option).Description ?? "";
}
