using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using System.Text.Json;
using System.Text.Json.Serialization;
using MegaNet.Core.Ed25519;
using MegaNet.Core.Verification;
using MegaNet.Node.Verification;
using MegaNet.Verify.Gpu;

namespace MegaNet.Node.Benchmarking;

/// <summary>What one sweep measures.</summary>
public sealed class VerifyBenchmarkOptions
{
    /// <summary>Backends to time (the libsodium baseline is always timed too).</summary>
    public IReadOnlyList<string> Backends { get; init; } = ["simd"];

    /// <summary>Batch sizes.</summary>
    public IReadOnlyList<int> BatchSizes { get; init; } = [1, 8, 64, 1024, 16384];

    /// <summary>Thread counts for the CPU backends.</summary>
    public IReadOnlyList<int> Threads { get; init; } = [1];

    /// <summary>Minimum measuring time per point.</summary>
    public TimeSpan Duration { get; init; } = TimeSpan.FromMilliseconds(700);

    /// <summary>Distinct signing keys in a batch (0: one per item). Fewer keys exercise the per-key cache.</summary>
    public int DistinctKeys { get; init; }

    /// <summary>Per-key cache on or off for the measured backends.</summary>
    public bool KeyCache { get; init; }

    /// <summary>Check every backend instance (each backend at each thread count) against the reference on a mixed sample
    /// before anything is timed; a backend that declares another rule than MegaNet's (libsodium) is not compared, as the
    /// reference judges MegaNet's rule only.</summary>
    public bool Check { get; init; }

    /// <summary>Items in that mixed sample.</summary>
    public int CheckItems { get; init; } = 512;
}

/// <summary>One measured point.</summary>
public sealed record VerifyBenchmarkResult(
    [property: JsonPropertyName("backend")] string Backend,
    [property: JsonPropertyName("batch")] int Batch,
    [property: JsonPropertyName("threads")] int Threads,
    [property: JsonPropertyName("verifies_per_s")] double VerifiesPerSecond,
    [property: JsonPropertyName("ratio_to_libsodium")] double RatioToLibsodium,
    [property: JsonPropertyName("key_cache")] bool KeyCache,
    [property: JsonPropertyName("description")] string Description)
{
    /// <summary>Wall time of one batch call in milliseconds (the added latency of verifying a batch this size).</summary>
    [JsonPropertyName("ms_per_batch")]
    public double MillisecondsPerBatch => Batch / VerifiesPerSecond * 1000;

    /// <summary>For GPU backends, where one batch's time went; null for the others.</summary>
    [JsonPropertyName("gpu")]
    public GpuBreakdown? Gpu { get; init; }
}

/// <summary>Per batch, summed over its launches: host preparation (S &lt; L, SHA-512), host↔device copies and kernel,
/// in milliseconds. Launches overlap (two streams), so the parts can add up to more than the batch's wall time.</summary>
public sealed record GpuBreakdown(
    [property: JsonPropertyName("host_ms")] double HostMs,
    [property: JsonPropertyName("copy_ms")] double CopyMs,
    [property: JsonPropertyName("kernel_ms")] double KernelMs,
    [property: JsonPropertyName("launches")] double Launches);

/// <summary>The machine a sweep ran on.</summary>
public sealed record MachineInfo(
    [property: JsonPropertyName("cpu")] string Cpu,
    [property: JsonPropertyName("logical_cores")] int LogicalCores,
    [property: JsonPropertyName("isa")] string Isa,
    [property: JsonPropertyName("os")] string Os,
    [property: JsonPropertyName("runtime")] string Runtime,
    [property: JsonPropertyName("libsodium")] string Libsodium)
{
    /// <summary>Reads the current machine.</summary>
    public static MachineInfo Current() => new(CpuName(), Environment.ProcessorCount, IsaTier(), RuntimeInformation.OSDescription,
        RuntimeInformation.FrameworkDescription, Ed25519Signer.LibsodiumVersion);

    /// <summary>The widest vector ISA the runtime uses in this process (after DOTNET_Enable* knobs).</summary>
    public static string IsaTier() =>
        Avx512F.IsSupported && Vector512.IsHardwareAccelerated ? "AVX-512F" :
        Avx2.IsSupported ? "AVX2" :
        Vector128.IsHardwareAccelerated ? "SSE/Vector128" : "scalar";

    private static string CpuName()
    {
        try
        {
            string? line = File.Exists("/proc/cpuinfo") ? File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal)) : null;
            return line?.Split(':', 2)[1].Trim() ?? RuntimeInformation.ProcessArchitecture.ToString();
        }
        catch (IOException)
        {
            return RuntimeInformation.ProcessArchitecture.ToString();
        }
    }
}

/// <summary>A whole sweep: machine and points.</summary>
public sealed record VerifyBenchmarkReport(
    [property: JsonPropertyName("machine")] MachineInfo Machine,
    [property: JsonPropertyName("results")] IReadOnlyList<VerifyBenchmarkResult> Results)
{
    private static readonly JsonSerializerOptions Json = new() { WriteIndented = true };

    /// <summary>The report as JSON (<c>{"machine":{...},"results":[...]}</c>).</summary>
    public string ToJson() => JsonSerializer.Serialize(this, Json);
}

/// <summary>
/// <c>meganet bench</c>'s engine: signs batches of valid items, then times each backend at each batch size next to the
/// libsodium single-verify loop measured in the same run, so ratios survive a noisy machine.
/// </summary>
public sealed class VerifyBenchmark(BatchVerifierRegistry registry, VerifyBenchmarkOptions options, TextWriter? progress = null)
{
    /// <summary>Runs the sweep.</summary>
    public VerifyBenchmarkReport Run()
    {
        var results = new List<VerifyBenchmarkResult>();
        using var libsodium = new LibsodiumBatchVerifier();
        // One instance per backend and thread count for the whole sweep: a GPU backend compiles its kernel and sizes
        // its buffers once, as in a node.
        var verifiers = new Dictionary<(string Backend, int Threads), IBatchVerifier>();
        try
        {
            Sweep(results, libsodium, verifiers);
        }
        finally
        {
            foreach (IBatchVerifier verifier in verifiers.Values)
            {
                verifier.Dispose();
            }
        }

        return new VerifyBenchmarkReport(MachineInfo.Current(), results);
    }

    private void Sweep(List<VerifyBenchmarkResult> results, LibsodiumBatchVerifier libsodium, Dictionary<(string Backend, int Threads), IBatchVerifier> verifiers)
    {
        // Every instance is made (and checked) before the first timing: a wrong backend stops the sweep at once, and
        // each thread count is checked, not only the first (a threading bug shows only with several threads).
        foreach (string backend in options.Backends)
        {
            foreach (int threads in options.Threads)
            {
                if ((TimedOnce(backend) && threads != options.Threads[0]) || verifiers.ContainsKey((backend, threads)))
                {
                    continue;
                }

                var verifierOptions = new VerifierOptions { Threads = threads, KeyCacheCapacity = options.KeyCache ? 65_536 : 0 };
                IBatchVerifier verifier = registry.Create(backend, verifierOptions);
                verifiers.Add((backend, threads), verifier);
                progress?.WriteLine($"  {verifier.Name} x{threads}: {verifier.Description}");
                if (options.Check)
                {
                    Check(verifier, threads);
                }
            }
        }

        foreach (int size in options.BatchSizes)
        {
            using SignatureBatch batch = MakeBatch(size, options.DistinctKeys);
            // libsodium verifies one item at a time, so its rate does not depend on the batch size; timing it on a
            // slice keeps one call short at batch 1,000,000 (a whole batch would take half a minute per call).
            using SignatureBatch baselineBatch = size <= BaselineSlice ? batch : Slice(batch, BaselineSlice);
            double baseline = Measure(libsodium, baselineBatch);
            results.Add(new VerifyBenchmarkResult(libsodium.Name, size, 1, baseline, 1.0, false, libsodium.Description));
            progress?.WriteLine($"  batch {size,6}: libsodium {baseline,12:N0}/s");
            foreach (string backend in options.Backends)
            {
                foreach (int threads in options.Threads)
                {
                    if (!verifiers.TryGetValue((backend, threads), out IBatchVerifier? verifier))
                    {
                        continue; // timed once (TimedOnce), at the first thread count
                    }

                    using var gpuTimes = new GpuTimeListener();
                    (double rate, double ratio) = MeasureAgainst(verifier, libsodium, batch, baselineBatch, gpuTimes);
                    int threadsUsed = backend is ReferenceBatchVerifier.BackendName or LibsodiumBatchVerifier.BackendName ? 1 : threads;
                    var result = new VerifyBenchmarkResult(verifier.Name, size, threadsUsed, rate, ratio, options.KeyCache, verifier.Description)
                    {
                        Gpu = gpuTimes.PerBatch(),
                    };
                    results.Add(result);
                    progress?.WriteLine($"  batch {size,6}: {verifier.Name} x{threadsUsed} {rate,12:N0}/s  ({ratio:F2}x libsodium), {result.MillisecondsPerBatch:F3} ms per batch");
                    if (result.Gpu is { } gpu)
                    {
                        progress?.WriteLine($"  {verifier.Name} batch {size}, per batch: host prep {gpu.HostMs:F3} ms, copies {gpu.CopyMs:F3} ms ({gpu.CopyMs / result.MillisecondsPerBatch:P0} of wall), kernel {gpu.KernelMs:F3} ms, {gpu.Launches:F1} launches");
                    }
                }
            }
        }
    }

    /// <summary>The GPU backends ignore the thread count (the device and the pool's threads do the work), and reference
    /// and libsodium verify on the calling thread: they are made, checked and timed once, at the first thread count, not
    /// once per count (that gave rows differing only in a thread count that did not run).</summary>
    private static bool TimedOnce(string backend) => backend is GpuBatchVerifier.DeviceBackendName or GpuBatchVerifier.CpuBackendName
        or ReferenceBatchVerifier.BackendName or LibsodiumBatchVerifier.BackendName;

    /// <summary>Compares <paramref name="verifier"/> with the reference on the seeded mix, if it declares MegaNet's rule;
    /// throws when they disagree.</summary>
    private void Check(IBatchVerifier verifier, int threads)
    {
        if (verifier.Rule != VerificationRule.MegaNet)
        {
            // The reference implements MegaNet's rule only; on the mix's torsion residues a cofactorless backend differs
            // by design (docs/verification.md), and there is no reference for its rule to hold it to.
            progress?.WriteLine($"  check: {verifier.Name} keeps its own rule ({verifier.Rule}), not MegaNet's; not compared with the reference");
            return;
        }

        // A GPU is checked at the sweep's largest batch too (the mix repeated): only there does a batch go out in chunks
        // on both streams, and the timed runs, all valid, would not notice a verdict written to the wrong item.
        int batch = verifier.Name == GpuBatchVerifier.DeviceBackendName ? Math.Max(options.CheckItems, options.BatchSizes.Max()) : options.CheckItems;
        int mismatches = VerifierSelfCheck.Mismatches(verifier, options.CheckItems, batchSize: batch);
        string where = batch > options.CheckItems ? $"{options.CheckItems} mixed items repeated to a batch of {batch}" : $"{options.CheckItems} mixed items";
        progress?.WriteLine($"  check: {verifier.Name} x{threads} against the reference on {where}: {mismatches} mismatches");
        if (mismatches > 0)
        {
            throw new InvalidOperationException($"Backend '{verifier.Name}' with {threads} thread(s) disagrees with the reference on {mismatches} of {batch} items ({where}).");
        }
    }

    /// <summary>
    /// Times <paramref name="verifier"/> in three slices, each right after a slice of libsodium on the same batch, and
    /// returns its rate and the median of the three paired ratios: on a shared, noisy machine a slowdown then hits both
    /// sides of a pair instead of only one of them.
    /// </summary>
    private (double Rate, double Ratio) MeasureAgainst(IBatchVerifier verifier, IBatchVerifier libsodium, SignatureBatch batch, SignatureBatch baselineBatch, GpuTimeListener gpuTimes)
    {
        const int Rounds = 3;
        CheckAndWarm(verifier, batch);
        gpuTimes.Start();
        Span<double> ratios = stackalloc double[Rounds];
        double items = 0, seconds = 0;
        for (int r = 0; r < Rounds; r++)
        {
            double baseline = TimeSlice(libsodium, baselineBatch, options.Duration / (2 * Rounds), out _, out _);
            double rate = TimeSlice(verifier, batch, options.Duration / Rounds, out long sliceItems, out double sliceSeconds);
            gpuTimes.Batches += sliceItems / batch.Count;
            items += sliceItems;
            seconds += sliceSeconds;
            ratios[r] = rate / baseline;
        }

        ratios.Sort();
        return (items / seconds, ratios[Rounds / 2]);
    }

    private static double TimeSlice(IBatchVerifier verifier, SignatureBatch batch, TimeSpan duration, out long items, out double seconds)
    {
        bool[] verdicts = new bool[batch.Count];
        items = 0;
        var watch = Stopwatch.StartNew();
        do
        {
            verifier.Verify(batch, verdicts);
            items += batch.Count;
        }
        while (watch.Elapsed < duration);

        seconds = watch.Elapsed.TotalSeconds;
        return items / seconds;
    }

    private double Measure(IBatchVerifier verifier, SignatureBatch batch)
    {
        CheckAndWarm(verifier, batch);
        return TimeSlice(verifier, batch, options.Duration, out _, out _);
    }

    /// <summary>Refuses to time a verifier that rejects the valid batch, then warms it up (tiering, caches).</summary>
    private void CheckAndWarm(IBatchVerifier verifier, SignatureBatch batch)
    {
        bool[] verdicts = new bool[batch.Count];
        verifier.Verify(batch, verdicts);
        int invalid = verdicts.Count(v => !v);
        if (invalid > 0)
        {
            throw new InvalidOperationException($"Backend '{verifier.Name}' rejected {invalid} of {batch.Count} valid signatures; refusing to time a wrong verifier.");
        }

        var warm = Stopwatch.StartNew();
        while (warm.Elapsed < options.Duration / 4)
        {
            verifier.Verify(batch, verdicts);
        }
    }

    /// <summary>A batch of valid items signed with seeded keys (deterministic across runs).</summary>
    public static SignatureBatch MakeBatch(int size, int distinctKeys, int seed = 1)
    {
        var random = new Random(seed);
        int keyCount = distinctKeys <= 0 ? size : Math.Min(distinctKeys, size);
        var keys = new (byte[] Pk, byte[] Sk)[Math.Max(keyCount, 1)];
        byte[] keySeed = new byte[32];
        for (int i = 0; i < keys.Length; i++)
        {
            random.NextBytes(keySeed);
            keys[i] = (new byte[32], new byte[64]);
            Ed25519Signer.KeyPairFromSeed(keySeed, keys[i].Pk, keys[i].Sk);
        }

        // Messages come from the seeded generator in order; signing (deterministic) runs on every core, which matters
        // at batch 1,000,000.
        byte[] messages = new byte[64L * size <= Array.MaxLength ? 64 * size : throw new ArgumentOutOfRangeException(nameof(size))];
        random.NextBytes(messages);
        byte[] signatures = new byte[64 * size];
        Parallel.For(0, size, i => Ed25519Signer.Sign(keys[i % keys.Length].Sk, messages.AsSpan(64 * i, 64), signatures.AsSpan(64 * i, 64)));
        var batch = new SignatureBatch(size, size * 64);
        for (int i = 0; i < size; i++)
        {
            batch.Add(keys[i % keys.Length].Pk, signatures.AsSpan(64 * i, 64), messages.AsSpan(64 * i, 64));
        }

        return batch;
    }

    /// <summary>Items timed for the libsodium baseline at most (see <see cref="Run"/>).</summary>
    private const int BaselineSlice = 4096;

    private static SignatureBatch Slice(SignatureBatch batch, int count)
    {
        var slice = new SignatureBatch(count, count * 64);
        for (int i = 0; i < count; i++)
        {
            slice.Add(batch.GetPublicKey(i), batch.GetSignature(i), batch.GetMessage(i));
        }

        return slice;
    }
}
