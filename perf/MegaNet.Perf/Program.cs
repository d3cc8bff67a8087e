using System.Text.RegularExpressions;
using BenchmarkDotNet.Running;
using MegaNet.Verify.Gpu;

namespace MegaNet.Perf;

/// <summary>
/// BenchmarkDotNet entry point. Always pass a filter, e.g. <c>dotnet run -c Release --project perf/MegaNet.Perf -- --filter '*.VerifyBenchmarks.*'</c>;
/// without one and without a terminal BenchmarkDotNet prints its menu and runs nothing.
/// </summary>
internal static class Program
{
    private static void Main(string[] args)
    {
        Type[] types = typeof(Program).Assembly.GetTypes().Where(t => t.IsPublic && !t.IsAbstract && t.Name.EndsWith("Benchmarks", StringComparison.Ordinal)).ToArray();
        // Without a device every GpuThroughputBenchmarks case failed in its setup, each with a stack trace: leave the
        // class out, and say so in one line where a filter selects it.
        if (GpuBatchVerifier.Probe(GpuDeviceKind.Device) is { } noGpu)
        {
            types = types.Where(t => t != typeof(GpuThroughputBenchmarks)).ToArray();
            if (Selects(args, $"{typeof(GpuThroughputBenchmarks).FullName}.{nameof(BatchVerifyBenchmark.Verify)}"))
            {
                Console.WriteLine($"GpuThroughputBenchmarks skipped, no GPU here: {noGpu}");
            }
        }

        BenchmarkSwitcher.FromTypes(types).Run(args);
    }

    /// <summary>Whether a <c>--filter</c>/<c>-f</c> glob (BenchmarkDotNet's: * and ?, any case) matches <paramref name="name"/>.</summary>
    private static bool Selects(string[] args, string name)
    {
        bool inFilter = false;
        foreach (string arg in args)
        {
            if (arg is "--filter" or "-f")
            {
                inFilter = true;
            }
            else if (arg.StartsWith('-'))
            {
                inFilter = false;
            }
            else if (inFilter && Regex.IsMatch(name, "^" + Regex.Escape(arg).Replace(@"\*", ".*", StringComparison.Ordinal).Replace(@"\?", ".", StringComparison.Ordinal) + "$", RegexOptions.IgnoreCase))
            {
                return true;
            }
        }

        return false;
    }
}
