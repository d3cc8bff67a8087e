using BenchmarkDotNet.Attributes;
using MegaNet.Core.Verification;
using MegaNet.Node.Benchmarking;
using MegaNet.Node.Verification;

namespace MegaNet.Perf;

/// <summary>
/// Verify throughput per backend and batch size, with libsodium's single verify in the same run (one thread, key
/// cache off, one key per item). Each operation is one signature: compare Mean across backends directly.
/// Run: <c>dotnet run -c Release --project perf/MegaNet.Perf -- --filter '*VerifyBenchmarks*'</c>.
/// </summary>
[MemoryDiagnoser]
public class VerifyBenchmarks
{
    private SignatureBatch _batch = null!;
    private IBatchVerifier _verifier = null!;
    private bool[] _verdicts = [];

    [Params("libsodium", "simd", "gpu-cpu")]
    public string Backend { get; set; } = "simd";

    [Params(1, 8, 64, 1024, 16384)]
    public int Batch { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _batch = VerifyBenchmark.MakeBatch(Batch, 0);
        _verifier = VerifierCatalog.Create().Create(Backend, new VerifierOptions { Threads = 1, KeyCacheCapacity = 0 });
        _verdicts = new bool[Batch];
    }

    [Benchmark]
    public void Verify()
    {
        _verifier.Verify(_batch, _verdicts);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _verifier.Dispose();
        _batch.Dispose();
    }
}
