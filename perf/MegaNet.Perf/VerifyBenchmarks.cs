using System.Globalization;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using MegaNet.Core.Verification;
using MegaNet.Node.Benchmarking;
using MegaNet.Node.Verification;
using MegaNet.Verify.Gpu;

namespace MegaNet.Perf;

/// <summary>One backend verifying one batch of valid items per operation. libsodium, the baseline, verifies at most
/// <see cref="BaselineSlice"/> of them (it checks one item at a time, so its rate does not depend on the batch, and a
/// whole batch of 1,048,576 would take most of a minute per operation); the µs/signature and × libsodium columns
/// account for that.</summary>
[Config(typeof(VerifyColumnsConfig))]
public abstract class BatchVerifyBenchmark
{
    /// <summary>Items libsodium verifies per operation at most.</summary>
    public const int BaselineSlice = 4096;

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

    /// <summary>Creates the backend first (an unavailable one fails here, saying why), signs the batch, and checks the
    /// verdicts once: a verifier that rejected (or accepted) everything quickly would otherwise time well.</summary>
    protected void Prepare(string backend, int batch, VerifierOptions options)
    {
        _verifier = VerifierCatalog.Create().Create(backend, options);
        int items = ItemsPerOperation(backend, batch);
        _batch = VerifyBenchmark.MakeBatch(items, 0);
        _verdicts = new bool[items];
        _verifier.Verify(_batch, _verdicts);
        if (_verdicts.Count(v => !v) is > 0 and int rejected)
        {
            throw new InvalidOperationException($"{backend} rejected {rejected} of {items} valid signatures; refusing to time it.");
        }

        using var forged = new SignatureBatch(1, _batch.GetMessage(0).Length);
        byte[] signature = _batch.GetSignature(0).ToArray();
        signature[5] ^= 1;
        forged.Add(_batch.GetPublicKey(0), signature, _batch.GetMessage(0));
        if (_verifier.Verify(forged)[0])
        {
            throw new InvalidOperationException($"{backend} accepted a signature with a flipped bit; refusing to time it.");
        }
    }

    /// <summary>Signatures one operation verifies for <paramref name="backend"/> at <paramref name="batch"/>.</summary>
    public static int ItemsPerOperation(string backend, int batch) =>
        backend == LibsodiumBatchVerifier.BackendName ? Math.Min(batch, BaselineSlice) : batch;

    /// <summary>Threads <paramref name="backend"/> verifies with in <paramref name="benchmark"/>: libsodium's verifier
    /// checks one item at a time on the caller's thread whatever its options say.</summary>
    public static int ThreadsUsed(Type benchmark, string backend) =>
        backend == LibsodiumBatchVerifier.BackendName ? 1
        : benchmark == typeof(GpuThroughputBenchmarks) ? GpuThroughputBenchmarks.Threads
        : VerifyBenchmarks.Threads;
}

/// <summary>
/// Verify throughput per backend and batch size, with libsodium's single verify in the same run (one thread, key
/// cache off, one key per item). Each operation is one batch call; see the µs/signature and × libsodium columns.
/// The <c>gpu</c> backend joins when a CUDA or OpenCL device is present.
/// Run: <c>dotnet run -c Release --project perf/MegaNet.Perf -- --filter '*.VerifyBenchmarks.*'</c>.
/// </summary>
[MemoryDiagnoser]
public class VerifyBenchmarks : BatchVerifyBenchmark
{
    /// <summary>Threads every backend here verifies with: one, so the rows compare the kernels, not the cores.</summary>
    public const int Threads = 1;

    [ParamsSource(nameof(Backends))]
    public string Backend { get; set; } = "simd";

    /// <summary>The backends timed here: the GPU one only where it can run.</summary>
    public static IEnumerable<string> Backends() =>
        GpuBatchVerifier.Probe(GpuDeviceKind.Device) is null ? ["libsodium", "simd", "gpu-cpu", "gpu"] : ["libsodium", "simd", "gpu-cpu"];

    [Params(1, 8, 64, 1024, 16384)]
    public int Batch { get; set; }

    [GlobalSetup]
    public void Setup() => Prepare(Backend, Batch, new VerifierOptions { Threads = Threads, KeyCacheCapacity = 0 });
}

/// <summary>
/// The GPU backend at the batch sizes it is for (4,096 to 1,048,576 signatures, host hashing, copies and kernel
/// included), with libsodium's single verify in the same run as the baseline; each operation is one batch call (see
/// the µs/signature and × libsodium columns). Needs a CUDA or OpenCL device: without one, Program leaves this class
/// out and says so in one line.
/// Run: <c>dotnet run -c Release --project perf/MegaNet.Perf -- --filter '*GpuThroughputBenchmarks*'</c>.
/// </summary>
public class GpuThroughputBenchmarks : BatchVerifyBenchmark
{
    /// <summary>Host threads the GPU backend hashes and packs with: every core, as the node's default.</summary>
    public static int Threads => Environment.ProcessorCount;

    [Params(LibsodiumBatchVerifier.BackendName, GpuBatchVerifier.DeviceBackendName)]
    public string Backend { get; set; } = GpuBatchVerifier.DeviceBackendName;

    [Params(4096, 65536, 1048576)]
    public int Batch { get; set; }

    [GlobalSetup]
    public void Setup() => Prepare(Backend, Batch, new VerifierOptions { Threads = Threads, KeyCacheCapacity = 0 });
}

/// <summary>Adds the threads and signatures behind each row's Mean, the per-signature time, and the ratio to libsodium
/// at the same batch size.</summary>
public sealed class VerifyColumnsConfig : ManualConfig
{
    public VerifyColumnsConfig() => AddColumn(
        new VerifyColumn(VerifyColumnKind.Threads), new VerifyColumn(VerifyColumnKind.SignaturesPerOperation),
        new VerifyColumn(VerifyColumnKind.PerSignature), new VerifyColumn(VerifyColumnKind.Ratio));
}

/// <summary>What a <see cref="VerifyColumn"/> shows.</summary>
internal enum VerifyColumnKind
{
    /// <summary>Threads the row's backend verifies with.</summary>
    Threads,

    /// <summary>Signatures one operation verifies (libsodium's are capped at <see cref="BatchVerifyBenchmark.BaselineSlice"/>).</summary>
    SignaturesPerOperation,

    /// <summary>Mean over the signatures one operation verifies.</summary>
    PerSignature,

    /// <summary>How many times libsodium's µs per signature, timed in the same run at the same Batch, this row's is.</summary>
    Ratio,
}

/// <summary>One of the columns a verify benchmark's table needs to be read right (<see cref="VerifyColumnKind"/>).</summary>
internal sealed class VerifyColumn(VerifyColumnKind kind) : IColumn
{
    public string Id => "Verify" + kind;

    public string ColumnName => kind switch
    {
        VerifyColumnKind.Threads => "Threads",
        VerifyColumnKind.SignaturesPerOperation => "Signatures/op",
        VerifyColumnKind.PerSignature => "us/signature",
        _ => "x libsodium",
    };

    public bool AlwaysShow => true;

    public ColumnCategory Category => ColumnCategory.Custom;

    public int PriorityInCategory => (int)kind;

    public bool IsNumeric => true;

    public UnitType UnitType => UnitType.Dimensionless;

    public string Legend => kind switch
    {
        VerifyColumnKind.Threads => "Threads the backend verifies with (libsodium: one item at a time on one thread)",
        VerifyColumnKind.SignaturesPerOperation => $"Signatures one operation verifies, which Mean is for (libsodium's at most {BatchVerifyBenchmark.BaselineSlice:N0}, whatever Batch says)",
        VerifyColumnKind.PerSignature => "Mean divided by Signatures/op",
        _ => "libsodium's us/signature at the same Batch, in this run, divided by this row's",
    };

    public bool IsAvailable(Summary summary) => true;

    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
    {
        if (kind is VerifyColumnKind.Threads or VerifyColumnKind.SignaturesPerOperation)
        {
            if (benchmarkCase.Parameters["Backend"] is not string name || benchmarkCase.Parameters["Batch"] is not int size)
            {
                return "-";
            }

            int value = kind == VerifyColumnKind.Threads ? BatchVerifyBenchmark.ThreadsUsed(benchmarkCase.Descriptor.Type, name) : BatchVerifyBenchmark.ItemsPerOperation(name, size);
            return value.ToString(CultureInfo.InvariantCulture);
        }

        double? mine = MicrosecondsPerSignature(summary, benchmarkCase);
        if (kind == VerifyColumnKind.PerSignature)
        {
            return mine is { } us ? us.ToString("F3", CultureInfo.InvariantCulture) : "-";
        }

        BenchmarkCase? baseline = summary.BenchmarksCases.FirstOrDefault(c => c.Descriptor.Type == benchmarkCase.Descriptor.Type
            && Equals(c.Parameters["Backend"], LibsodiumBatchVerifier.BackendName) && Equals(c.Parameters["Batch"], benchmarkCase.Parameters["Batch"]));
        double? theirs = baseline is null ? null : MicrosecondsPerSignature(summary, baseline);
        return mine is { } m && theirs is { } t ? (t / m).ToString("F2", CultureInfo.InvariantCulture) : "-";
    }

    private static double? MicrosecondsPerSignature(Summary summary, BenchmarkCase benchmarkCase)
    {
        double? meanNs = summary[benchmarkCase]?.ResultStatistics?.Mean;
        if (meanNs is not { } ns || benchmarkCase.Parameters["Backend"] is not string backend || benchmarkCase.Parameters["Batch"] is not int batch)
        {
            return null;
        }

        return ns / 1000 / BatchVerifyBenchmark.ItemsPerOperation(backend, batch);
    }
}
