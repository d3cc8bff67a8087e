using BenchmarkDotNet.Attributes;
using MegaNet.Core.Verification;
using MegaNet.Node.Benchmarking;
using MegaNet.Node.Verification;
using MegaNet.Verify.Gpu;

namespace MegaNet.Perf;

/// <summary>One backend verifying one batch of valid items per operation (Mean / batch size is the time per signature).</summary>
public abstract class BatchVerifyBenchmark
{
    private SignatureBatch _batch = null!;
    private IBatchVerifier _verifier = null!;
    private bool[] _verdicts = [];

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

    /// <summary>Creates the backend first (an unavailable one fails here, saying why), then signs the batch.</summary>
    protected void Prepare(string backend, int batch, VerifierOptions options)
    {
        _verifier = VerifierCatalog.Create().Create(backend, options);
        _batch = VerifyBenchmark.MakeBatch(batch, 0);
        _verdicts = new bool[batch];
    }
}

/// <summary>
/// Verify throughput per backend and batch size, with libsodium's single verify in the same run (one thread, key
/// cache off, one key per item). Each operation is one batch call: Mean / Batch is the time per signature. The
/// <c>gpu</c> backend joins when a CUDA or OpenCL device is present.
/// Run: <c>dotnet run -c Release --project perf/MegaNet.Perf -- --filter '*VerifyBenchmarks*'</c>.
/// </summary>
[MemoryDiagnoser]
public class VerifyBenchmarks : BatchVerifyBenchmark
{
    [ParamsSource(nameof(Backends))]
    public string Backend { get; set; } = "simd";

    /// <summary>The backends timed here: the GPU one only where it can run.</summary>
    public static IEnumerable<string> Backends() =>
        GpuBatchVerifier.Probe(GpuDeviceKind.Device) is null ? ["libsodium", "simd", "gpu-cpu", "gpu"] : ["libsodium", "simd", "gpu-cpu"];

    [Params(1, 8, 64, 1024, 16384)]
    public int Batch { get; set; }

    [GlobalSetup]
    public void Setup() => Prepare(Backend, Batch, new VerifierOptions { Threads = 1, KeyCacheCapacity = 0 });
}

/// <summary>
/// The GPU backend at the batch sizes it is for (4,096 to 1,048,576 signatures, host hashing, copies and kernel
/// included); each operation is one batch call (Mean / Batch per signature). Needs a CUDA or OpenCL device: without
/// one, setup fails and says so.
/// Run: <c>dotnet run -c Release --project perf/MegaNet.Perf -- --filter '*GpuThroughputBenchmarks*'</c>.
/// </summary>
public class GpuThroughputBenchmarks : BatchVerifyBenchmark
{
    [Params(4096, 65536, 1048576)]
    public int Batch { get; set; }

    [GlobalSetup]
    public void Setup() => Prepare(GpuBatchVerifier.DeviceBackendName, Batch, new VerifierOptions { KeyCacheCapacity = 0 });
}
