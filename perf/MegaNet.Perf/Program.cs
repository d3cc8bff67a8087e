using BenchmarkDotNet.Running;

namespace MegaNet.Perf;

/// <summary>
/// BenchmarkDotNet entry point. Always pass a filter, e.g. <c>dotnet run -c Release --project perf/MegaNet.Perf -- --filter '*Verify*'</c>;
/// without one and without a terminal BenchmarkDotNet prints its menu and runs nothing.
/// </summary>
internal static class Program
{
    private static void Main(string[] args) => BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
}
