using BenchmarkDotNet.Configs;
using BenchmarkDotNet.ConsoleArguments;
using BenchmarkDotNet.Loggers;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using MegaNet.Verify.Gpu;

namespace MegaNet.Perf;

/// <summary>
/// BenchmarkDotNet entry point. Always pass a filter, e.g. <c>dotnet run -c Release --project perf/MegaNet.Perf -- --filter '*.VerifyBenchmarks.*'</c>;
/// without one and without a terminal BenchmarkDotNet prints its menu and runs nothing. Exit code 0 when every
/// selected benchmark ran and gave results, 1 when none was selected, a build failed, a benchmark failed or had no
/// results, or BenchmarkDotNet refused the configuration.
/// </summary>
internal static class Program
{
    /// <summary>How long BenchmarkDotNet may take to build the project it generates. Its default of 2 minutes was hit
    /// on a 2-core machine (the build of the whole chain took 322 s): every row NA, and exit code 0. In-process
    /// execution would skip that build but measures in the host process (its JIT settings and GC); a longer wait
    /// changes nothing measured. A longer <c>--buildTimeout SECONDS</c> raises it (BenchmarkDotNet keeps the
    /// longer of the two).</summary>
    private static readonly TimeSpan BuildTimeout = TimeSpan.FromMinutes(15);

    private static int Main(string[] args)
    {
        Type[] types = typeof(Program).Assembly.GetTypes().Where(t => t.IsPublic && !t.IsAbstract && t.Name.EndsWith("Benchmarks", StringComparison.Ordinal)).ToArray();
        // Without a device every GpuThroughputBenchmarks case failed in its setup, each with a stack trace: leave the
        // class out, and say so in one line where the filters select any of its cases.
        if (GpuBatchVerifier.Probe(GpuDeviceKind.Device) is { } noGpu)
        {
            types = types.Where(t => t != typeof(GpuThroughputBenchmarks)).ToArray();
            if (FilterConfig(args) is { } filtered && Selects(filtered, typeof(GpuThroughputBenchmarks)))
            {
                // The probe's advice names the command line's --backend, which this tool does not have.
                Console.WriteLine($"GpuThroughputBenchmarks skipped, no GPU here: {noGpu.Replace(GpuBatchVerifier.NoDeviceAdvice, ".", StringComparison.Ordinal)} " +
                    "'*.VerifyBenchmarks.*' times the GPU kernels on the CPU (gpu-cpu) beside simd and libsodium.");
                if (!types.Any(t => Selects(filtered, t)))
                {
                    // Nothing else selected: BenchmarkDotNet would add "returned 0 benchmarks" and list every other one.
                    return 0;
                }
            }
        }

        Summary[] summaries = BenchmarkSwitcher.FromTypes(types).Run(args, ManualConfig.Create(DefaultConfig.Instance).WithBuildTimeout(BuildTimeout)).ToArray();
        if (args.Any(a => a is "--list" or "--help" or "-h" or "--version" or "--info"))
        {
            return 0; // nothing was to run
        }

        string? failure = Failure(summaries);
        if (failure is not null)
        {
            Console.Error.WriteLine($"MegaNet.Perf: {failure}");
            return 1;
        }

        return 0;
    }

    /// <summary>Why the run measured less than was asked (BenchmarkDotNet's own log above says more), or null.</summary>
    private static string? Failure(Summary[] summaries)
    {
        if (summaries.Length == 0 || summaries.All(s => s.Reports.Length == 0 && !s.HasCriticalValidationErrors))
        {
            return "no benchmark ran: give --filter a pattern that selects some ('--list flat' lists them).";
        }

        if (summaries.FirstOrDefault(s => s.HasCriticalValidationErrors) is { } refused)
        {
            return $"BenchmarkDotNet refused {refused.Title}: {string.Join("; ", refused.ValidationErrors.Where(e => e.IsCritical).Select(e => e.Message))}";
        }

        BenchmarkReport[] reports = summaries.SelectMany(s => s.Reports).ToArray();
        if (reports.Count(r => !r.BuildResult.IsBuildSuccess) is > 0 and int unbuilt)
        {
            return $"{unbuilt} of {reports.Length} benchmarks were not built (a build timeout? give --buildTimeout SECONDS); their rows are NA.";
        }

        if (reports.Count(r => !r.Success || r.ResultStatistics is null) is > 0 and int failed)
        {
            return $"{failed} of {reports.Length} benchmarks failed or gave no results; their rows are NA.";
        }

        return null;
    }

    /// <summary>The configuration BenchmarkDotNet makes of <paramref name="args"/>, where they parse and give it a filter
    /// (<c>--filter</c>, <c>--anyCategories</c>, ...); otherwise null, and BenchmarkDotNet's run says what it does
    /// with them.</summary>
    private static IConfig? FilterConfig(string[] args)
    {
        (bool parsed, IConfig config, _) = ConfigParser.Parse(args, NullLogger.Instance, DefaultConfig.Instance);
        return parsed && config.GetFilters().Any() ? config : null;
    }

    /// <summary>Whether <paramref name="config"/>'s filters pass any of <paramref name="type"/>'s benchmark cases, judged
    /// by BenchmarkDotNet itself: its globs match the full case name with parameters
    /// (<c>MegaNet.Perf.VerifyBenchmarks.Verify(Backend: "gpu-cpu", Batch: 1)</c>), in any case.</summary>
    private static bool Selects(IConfig config, Type type) =>
        BenchmarkConverter.TypeToBenchmarks(type, config).BenchmarksCases.Length > 0;
}
