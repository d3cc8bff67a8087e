using System.Reflection;
using System.Text.RegularExpressions;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
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
        // class out, and say so in one line where a filter selects it.
        if (GpuBatchVerifier.Probe(GpuDeviceKind.Device) is { } noGpu)
        {
            types = types.Where(t => t != typeof(GpuThroughputBenchmarks)).ToArray();
            if (Selects(args, BenchmarkNames(typeof(GpuThroughputBenchmarks))))
            {
                Console.WriteLine($"GpuThroughputBenchmarks skipped, no GPU here: {noGpu}");
                if (!Selects(args, types.SelectMany(BenchmarkNames)))
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

    /// <summary>The names a filter matches for <paramref name="type"/>'s benchmarks: Namespace.Type.Method.</summary>
    private static IEnumerable<string> BenchmarkNames(Type type) =>
        type.GetMethods(BindingFlags.Public | BindingFlags.Instance)
            .Where(m => m.GetCustomAttribute<BenchmarkAttribute>() is not null)
            .Select(m => $"{type.FullName}.{m.Name}");

    /// <summary>Whether a <c>--filter</c>/<c>-f</c> glob (BenchmarkDotNet's: * and ?, any case; also written
    /// <c>--filter=GLOB</c>) matches any of <paramref name="names"/>.</summary>
    private static bool Selects(string[] args, IEnumerable<string> names)
    {
        var globs = new List<string>();
        bool inFilter = false;
        foreach (string arg in args)
        {
            if (arg is "--filter" or "-f")
            {
                inFilter = true;
            }
            else if (arg.StartsWith("--filter=", StringComparison.Ordinal))
            {
                globs.Add(arg["--filter=".Length..]);
                inFilter = false;
            }
            else if (arg.StartsWith('-'))
            {
                inFilter = false;
            }
            else if (inFilter)
            {
                globs.Add(arg);
            }
        }

        return names.Any(name => globs.Any(glob => Regex.IsMatch(name, "^" + Regex.Escape(glob).Replace(@"\*", ".*", StringComparison.Ordinal).Replace(@"\?", ".", StringComparison.Ordinal) + "$", RegexOptions.IgnoreCase)));
    }
}
