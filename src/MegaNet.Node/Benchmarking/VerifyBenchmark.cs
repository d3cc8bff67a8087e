using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Text.Json;
using System.Text.Json.Serialization;
using MegaNet.Core.Ed25519;
using MegaNet.Core.Verification;
using MegaNet.Node.Verification;
using MegaNet.Verify.Gpu;
using MegaNet.Verify.Simd;
using Microsoft.Extensions.Logging.Abstractions;

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

    /// <summary>Ends the sweep (with <see cref="OperationCanceledException"/>) between batches, and the check's signing
    /// and reference verdicts.</summary>
    public CancellationToken Cancellation { get; init; }

    /// <summary>Items in that mixed sample.</summary>
    public int CheckItems { get; init; } = 512;

    /// <summary>Backends left out of the sweep, with a line saying why, when they cannot run here (a GPU that fails to
    /// start, or gives verdicts other than the reference's on its start-up check) instead of ending it: the default
    /// sweep's <c>gpu</c>, so that its SIMD rows still come. A backend named on its own fails the sweep.</summary>
    public IReadOnlyCollection<string> SkipIfUnavailable { get; init; } = [];

    /// <summary>Throws <see cref="ArgumentException"/> naming a backend, batch size or thread count given twice: each
    /// would time the same point again as a row of its own, the first of them on a colder process.</summary>
    public void Validate()
    {
        if (Backends.GroupBy(b => b, StringComparer.OrdinalIgnoreCase).FirstOrDefault(g => g.Count() > 1) is { } backend)
        {
            throw new ArgumentException($"backend '{backend.Key}' is given twice; name each once.");
        }

        if (BatchSizes.GroupBy(b => b).FirstOrDefault(g => g.Count() > 1) is { } batch)
        {
            throw new ArgumentException($"batch size {batch.Key} is given twice; name each once.");
        }

        if (Threads.GroupBy(t => t).FirstOrDefault(g => g.Count() > 1) is { } threads)
        {
            throw new ArgumentException($"thread count {threads.Key} is given twice; name each once.");
        }
    }
}

/// <summary>One measured point. <see cref="Threads"/> is how many threads verified the batch (simd splits a batch only
/// from 48 items per thread), for the GPU backends the host threads of their share (the largest thread count of the
/// sweep); <see cref="ThreadsRequested"/> is the thread count the backend was made with, null where it is timed at one
/// count only.</summary>
public sealed record VerifyBenchmarkResult(
    [property: JsonPropertyName("backend")] string Backend,
    [property: JsonPropertyName("batch")] int Batch,
    [property: JsonPropertyName("threads")] int? Threads,
    [property: JsonPropertyName("verifies_per_s")] double VerifiesPerSecond,
    [property: JsonPropertyName("ratio_to_libsodium")] double RatioToLibsodium,
    [property: JsonPropertyName("key_cache")] bool KeyCache,
    [property: JsonPropertyName("description")] string Description)
{
    /// <summary>Wall time of one batch call in milliseconds (the added latency of verifying a batch this size).</summary>
    [JsonPropertyName("ms_per_batch")]
    public double MillisecondsPerBatch => Batch / VerifiesPerSecond * 1000;

    /// <summary>The thread count the backend was made with (<c>--threads</c>); null for backends that take none.</summary>
    [JsonPropertyName("threads_requested")]
    public int? ThreadsRequested { get; init; }

    /// <summary>libsodium's rate in the slice paired with the one <see cref="VerifiesPerSecond"/> comes from, so that
    /// <see cref="RatioToLibsodium"/> is exactly the one divided by the other (for the libsodium row, its own rate).</summary>
    [JsonPropertyName("libsodium_paired_per_s")]
    public double LibsodiumPairedPerSecond { get; init; }

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

    /// <summary>The vector tier the SIMD verifier runs on in this process (after DOTNET_Enable* knobs), as the verifier
    /// decides it; below AVX2, whether the runtime still has 128-bit vectors.</summary>
    public static string IsaTier() => SimdBatchVerifier.Tier switch
    {
        SimdTier.Avx512 => "AVX-512F",
        SimdTier.Avx2 => "AVX2",
        _ => Vector128.IsHardwareAccelerated ? "SSE/Vector128" : "scalar",
    };

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

/// <summary>The untimed warm-up of one configuration before the sweep: how long it ran and whether it settled (no
/// method JIT-compiled for <see cref="VerifyBenchmark.QuietTime"/> and the rate no longer rising) within its bound.</summary>
public sealed record WarmUpResult(
    [property: JsonPropertyName("configuration")] string Configuration,
    [property: JsonPropertyName("seconds")] double Seconds,
    [property: JsonPropertyName("settled")] bool Settled);

/// <summary>A backend the sweep left out (<see cref="VerifyBenchmarkOptions.SkipIfUnavailable"/>) and why.</summary>
public sealed record SkippedBackend(
    [property: JsonPropertyName("backend")] string Backend,
    [property: JsonPropertyName("reason")] string Reason);

/// <summary>How a sweep was run (<c>meganet bench</c>'s options), saved with its figures: the same machine gives other
/// rates with the key cache on, fewer distinct keys or shorter points, and a report read later must say which.</summary>
public sealed record BenchSettings(
    [property: JsonPropertyName("backends")] IReadOnlyList<string> Backends,
    [property: JsonPropertyName("batch_sizes")] IReadOnlyList<int> BatchSizes,
    [property: JsonPropertyName("threads")] IReadOnlyList<int> Threads,
    [property: JsonPropertyName("seconds_per_point")] double SecondsPerPoint,
    [property: JsonPropertyName("distinct_keys")] int DistinctKeys,
    [property: JsonPropertyName("key_cache")] bool KeyCache,
    [property: JsonPropertyName("check")] bool Check,
    [property: JsonPropertyName("check_items")] int CheckItems)
{
    /// <summary>The <c>DOTNET_Enable*</c> variables set for the run (such as <c>DOTNET_EnableAVX512=0</c>), which
    /// lower the vector tier <see cref="MachineInfo.Isa"/> reports; empty when none is.</summary>
    [JsonPropertyName("dotnet_isa_knobs")]
    public IReadOnlyDictionary<string, string> DotnetIsaKnobs { get; init; } = new SortedDictionary<string, string>(StringComparer.Ordinal);

    /// <summary>The settings of a sweep run with <paramref name="options"/> in this process.</summary>
    public static BenchSettings From(VerifyBenchmarkOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var knobs = new SortedDictionary<string, string>(StringComparer.Ordinal);
        foreach (System.Collections.DictionaryEntry variable in Environment.GetEnvironmentVariables())
        {
            if (variable.Key is string name && name.StartsWith("DOTNET_Enable", StringComparison.OrdinalIgnoreCase))
            {
                knobs[name] = variable.Value as string ?? "";
            }
        }

        return new BenchSettings([.. options.Backends], [.. options.BatchSizes], [.. options.Threads], options.Duration.TotalSeconds,
            options.DistinctKeys, options.KeyCache, options.Check, options.CheckItems)
        { DotnetIsaKnobs = knobs };
    }

    /// <summary>One line for the console and the plot: key cache, keys, time per point, the check, knobs set.</summary>
    public string Describe() =>
        $"key cache {(KeyCache ? "on" : "off")}, {(DistinctKeys == 0 ? "one key per item" : $"{DistinctKeys} distinct keys")}, " +
        $"{SecondsPerPoint.ToString("0.###", System.Globalization.CultureInfo.InvariantCulture)} s per point" +
        (Check ? $", verdicts checked against the reference ({CheckItems} items)" : ", verdicts not checked") +
        (DotnetIsaKnobs.Count > 0 ? ", " + string.Join(" ", DotnetIsaKnobs.Select(k => $"{k.Key}={k.Value}")) : "");
}

/// <summary>A whole sweep: machine and points.</summary>
public sealed record VerifyBenchmarkReport(
    [property: JsonPropertyName("machine")] MachineInfo Machine,
    [property: JsonPropertyName("results")] IReadOnlyList<VerifyBenchmarkResult> Results)
{
    private static readonly JsonSerializerOptions Json = new() { WriteIndented = true };

    /// <summary>Each configuration's warm-up, in the order they ran (before any point was timed).</summary>
    [JsonPropertyName("warm_up")]
    public IReadOnlyList<WarmUpResult> WarmUp { get; init; } = [];

    /// <summary>How the sweep was run; null only for a report not made by <see cref="VerifyBenchmark.Run"/>.</summary>
    [JsonPropertyName("options")]
    public BenchSettings? Options { get; init; }

    /// <summary>Backends left out of the sweep because they could not run here, with why.</summary>
    [JsonPropertyName("skipped")]
    public IReadOnlyList<SkippedBackend> Skipped { get; init; } = [];

    /// <summary>The report as JSON (<c>{"machine":{...},"results":[...],"warm_up":[...],"options":{...},"skipped":[...]}</c>).</summary>
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
        options.Validate();
        var results = new List<VerifyBenchmarkResult>();
        var warmUp = new List<WarmUpResult>();
        var skipped = new List<SkippedBackend>();
        using var libsodium = new LibsodiumBatchVerifier();
        // One instance per backend and thread count for the whole sweep: a GPU backend compiles its kernel and sizes
        // its buffers once, as in a node.
        var verifiers = new Dictionary<(string Backend, int Threads), IBatchVerifier>();
        try
        {
            Sweep(results, warmUp, skipped, libsodium, verifiers);
        }
        finally
        {
            foreach (IBatchVerifier verifier in verifiers.Values)
            {
                verifier.Dispose();
            }
        }

        return new VerifyBenchmarkReport(MachineInfo.Current(), results) { WarmUp = warmUp, Skipped = skipped, Options = BenchSettings.From(options) };
    }

    private void Sweep(List<VerifyBenchmarkResult> results, List<WarmUpResult> warmUp, List<SkippedBackend> skipped, LibsodiumBatchVerifier libsodium,
        Dictionary<(string Backend, int Threads), IBatchVerifier> verifiers)
    {
        // Every instance is made (and checked) before the first timing: a wrong backend stops the sweep at once, and
        // each thread count is checked, not only the first (a threading bug shows only with several threads).
        foreach (string backend in options.Backends)
        {
            foreach (int threads in options.Threads)
            {
                if ((TimedOnce(backend) && threads != options.Threads[0]) || verifiers.ContainsKey((backend, threads)) || skipped.Exists(b => b.Backend == backend))
                {
                    continue;
                }

                options.Cancellation.ThrowIfCancellationRequested();
                // A GPU's host work (copies into its page-locked buffers; SHA-512 with MEGANET_GPU_HOST_HASH=1) runs on
                // its thread count: made with the first --threads value, 1 by default, it was timed on one host thread
                // while a node gives it all cores but one.
                int made = VerifierStartup.IsGpuName(backend) ? GpuHostThreads : threads;
                var verifierOptions = new VerifierOptions { Threads = made, KeyCacheCapacity = options.KeyCache ? 65_536 : 0 };
                IBatchVerifier verifier;
                try
                {
                    // Started as a node starts it, by name: a GPU that fails to start, or whose verdicts differ from
                    // the reference's on the start-up check, is refused (its figures would time a wrong verifier).
                    // Timed is the GPU itself, not the node's router over it.
                    verifier = VerifierStartup.CreateChecked(registry, backend, verifierOptions, NullLogger.Instance);
                }
                catch (BackendUnavailableException e) when (options.SkipIfUnavailable.Contains(backend))
                {
                    skipped.Add(new SkippedBackend(backend, e.Reason));
                    progress?.WriteLine($"  {backend}: skipped, {e.Reason}");
                    continue;
                }

                if (VerifierStartup.IsGpu(verifier))
                {
                    verifier = new FaultsNamed(verifier);
                }

                verifiers.Add((backend, threads), verifier);
                progress?.WriteLine($"  {verifier.Name} x{made}: {verifier.Description}");
                if (options.Check)
                {
                    Check(verifier, made);
                }
            }
        }

        WarmUp(warmUp, libsodium, verifiers);
        foreach (int size in options.BatchSizes)
        {
            options.Cancellation.ThrowIfCancellationRequested();
            using SignatureBatch batch = MakeBatch(size, options.DistinctKeys, cancellationToken: options.Cancellation);
            // libsodium verifies one item at a time, so its rate does not depend on the batch size; timing it on a
            // slice keeps one call short at batch 1,000,000 (a whole batch would take half a minute per call).
            using SignatureBatch baselineBatch = size <= BaselineSlice ? batch : Slice(batch, BaselineSlice);
            double baseline = Measure(libsodium, baselineBatch);
            results.Add(new VerifyBenchmarkResult(libsodium.Name, size, 1, baseline, 1.0, false, libsodium.Description) { LibsodiumPairedPerSecond = baseline });
            progress?.WriteLine($"  batch {size,6}: libsodium {baseline,12:N0}/s");
            foreach (string backend in options.Backends)
            {
                foreach (int threads in options.Threads)
                {
                    if (!verifiers.TryGetValue((backend, threads), out IBatchVerifier? verifier))
                    {
                        continue; // timed once (TimedOnce), at the first thread count
                    }

                    (double rate, double pairedBaseline, GpuBreakdown? gpuTimes) = MeasureAgainst(verifier, libsodium, batch, baselineBatch);
                    int? threadsUsed = ThreadsUsed(backend, VerifierStartup.IsGpuName(backend) ? GpuHostThreads : threads, size);
                    var result = new VerifyBenchmarkResult(verifier.Name, size, threadsUsed, rate, rate / pairedBaseline, options.KeyCache, verifier.Description)
                    {
                        Gpu = gpuTimes,
                        ThreadsRequested = TakesThreads(backend) ? threads : null,
                        LibsodiumPairedPerSecond = pairedBaseline,
                    };
                    results.Add(result);
                    progress?.WriteLine($"  batch {size,6}: {verifier.Name} {ThreadsLabel(result)} {rate,12:N0}/s  ({result.RatioToLibsodium:F2}x libsodium's {pairedBaseline:N0}/s beside it), {result.MillisecondsPerBatch:F3} ms per batch");
                    if (result.Gpu is { } gpu)
                    {
                        progress?.WriteLine($"  {verifier.Name} batch {size}, per batch: host prep {gpu.HostMs:F3} ms, copies {gpu.CopyMs:F3} ms ({gpu.CopyMs / result.MillisecondsPerBatch:P0} of wall), kernel {gpu.KernelMs:F3} ms, {gpu.Launches:F1} launches");
                    }
                }
            }
        }
    }

    /// <summary>The GPU backends are made once, with <see cref="GpuHostThreads"/> (the device does the verifying), and
    /// reference and libsodium verify on the calling thread: they are made, checked and timed once, at the first thread
    /// count, not once per count (that gave rows differing only in a thread count that did not run).</summary>
    private static bool TimedOnce(string backend) => VerifierStartup.IsGpuName(backend) || backend is ReferenceBatchVerifier.BackendName or LibsodiumBatchVerifier.BackendName;

    /// <summary>The host threads a GPU backend is made with: the largest <c>--threads</c> value (all cores by default),
    /// as a node gives its GPU all its cores but one.</summary>
    private int GpuHostThreads => options.Threads.Max();

    /// <summary>Whether <paramref name="backend"/> is timed at each thread count it is given.</summary>
    private static bool TakesThreads(string backend) => !TimedOnce(backend);

    /// <summary>How many threads verify a batch of <paramref name="batch"/> items on <paramref name="backend"/> made
    /// with <paramref name="threads"/>: for the GPU backends the host threads they were made with (their share of a
    /// batch: copies, SHA-512 with MEGANET_GPU_HOST_HASH=1), 1 for reference and libsodium, for simd only as many as get <see cref="SimdBatchVerifier.MinItemsPerThread"/> items each.</summary>
    internal static int? ThreadsUsed(string backend, int threads, int batch) => backend switch
    {
        _ when VerifierStartup.IsGpuName(backend) => threads,
        ReferenceBatchVerifier.BackendName or LibsodiumBatchVerifier.BackendName => 1,
        SimdBatchVerifier.BackendName => SimdBatchVerifier.ThreadsFor(batch, threads),
        _ => threads,
    };

    /// <summary><c>x2</c>, <c>x1 of 2</c> where fewer threads ran than were asked for, or <c>-</c> without a thread count.</summary>
    internal static string ThreadsLabel(VerifyBenchmarkResult r) =>
        r.Threads is not { } used ? "-" : r.ThreadsRequested is { } asked && asked != used ? $"x{used} of {asked}" : $"x{used}";

    /// <summary>How long a configuration must go without any method being JIT-compiled before its warm-up can end:
    /// tiered compilation waits 100 ms after the last tier-0 activity before it promotes methods, so a shorter quiet
    /// spell would not show that tier-1 code (with OSR and dynamic PGO) has been installed.</summary>
    public static readonly TimeSpan QuietTime = TimeSpan.FromMilliseconds(300);

    /// <summary>Warm-up batches hold at most this many items: larger ones run the same code (Pippenger) and would only
    /// make the warm-up longer.</summary>
    private const int WarmUpItems = 1024;

    /// <summary>
    /// Before anything is timed, runs libsodium and every backend instance, untimed, on each of the sweep's batch sizes
    /// (capped at <see cref="WarmUpItems"/>) in rounds, until no method has been JIT-compiled for
    /// <see cref="QuietTime"/> and a round's rates no longer beat the best so far by 5 %, or for at most five times
    /// <see cref="VerifyBenchmarkOptions.Duration"/> (0.1 to 10 s). Without it the sweep's first point was timed
    /// mostly in tier-0 code: `--batch 1,1,8,8` gave 0.26× libsodium at the first batch-1 point and 0.40× at the second.
    /// </summary>
    private void WarmUp(List<WarmUpResult> warmUp, LibsodiumBatchVerifier libsodium, Dictionary<(string Backend, int Threads), IBatchVerifier> verifiers)
    {
        SignatureBatch[] batches = options.BatchSizes.Select(s => Math.Min(s, WarmUpItems)).Distinct().Order()
            .Select(s => MakeBatch(s, options.DistinctKeys, seed: 2, options.Cancellation)).ToArray();
        try
        {
            TimeSpan window = TimeSpan.FromTicks(Math.Clamp((options.Duration / 7).Ticks, TimeSpan.TicksPerMillisecond, 100 * TimeSpan.TicksPerMillisecond));
            TimeSpan limit = TimeSpan.FromTicks(Math.Clamp((options.Duration * 5).Ticks, TimeSpan.TicksPerSecond / 10, 10 * TimeSpan.TicksPerSecond));
            var configurations = new List<(string Label, IBatchVerifier Verifier)> { (libsodium.Name, libsodium) };
            configurations.AddRange(verifiers.Select(v => (TakesThreads(v.Key.Backend) ? $"{v.Value.Name} x{v.Key.Threads}" : v.Value.Name, v.Value)));
            foreach ((string label, IBatchVerifier verifier) in configurations)
            {
                (double seconds, bool settled) = WarmUp(verifier, batches, window, limit);
                warmUp.Add(new WarmUpResult(label, seconds, settled));
                progress?.WriteLine(settled
                    ? $"  warm-up: {label} settled after {seconds:F1} s (no JIT compilation for {QuietTime.TotalSeconds:0.#} s, rate steady)"
                    : $"  warm-up: {label} had not settled after {seconds:F1} s (its bound); timing it anyway");
            }
        }
        finally
        {
            foreach (SignatureBatch batch in batches)
            {
                batch.Dispose();
            }
        }
    }

    private (double Seconds, bool Settled) WarmUp(IBatchVerifier verifier, SignatureBatch[] batches, TimeSpan window, TimeSpan limit)
    {
        double[] best = new double[batches.Length];
        long compiled = System.Runtime.JitInfo.GetCompiledMethodCount();
        var clock = Stopwatch.StartNew();
        TimeSpan lastCompilation = TimeSpan.Zero;
        for (int round = 0; ; round++)
        {
            bool rising = false;
            for (int i = 0; i < batches.Length; i++)
            {
                double rate = TimeSlice(verifier, batches[i], window, out _, out _);
                rising |= rate > best[i] * 1.05;
                best[i] = Math.Max(best[i], rate);
            }

            long now = System.Runtime.JitInfo.GetCompiledMethodCount();
            if (now != compiled)
            {
                compiled = now;
                lastCompilation = clock.Elapsed;
            }

            bool quiet = clock.Elapsed - lastCompilation >= QuietTime;
            if ((round > 0 && quiet && !rising) || clock.Elapsed >= limit)
            {
                return (clock.Elapsed.TotalSeconds, round > 0 && quiet && !rising);
            }
        }
    }

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
        int mismatches = VerifierSelfCheck.Mismatches(verifier, options.CheckItems, batchSize: batch, cancellationToken: options.Cancellation);
        string where = batch > options.CheckItems ? $"{options.CheckItems} mixed items repeated to a batch of {batch}" : $"{options.CheckItems} mixed items";
        progress?.WriteLine($"  check: {verifier.Name} x{threads} against the reference on {where}: {mismatches} mismatches");
        if (mismatches > 0)
        {
            throw new InvalidOperationException($"Backend '{verifier.Name}' with {threads} thread(s) disagrees with the reference on {mismatches} of {batch} items ({where}).");
        }
    }

    /// <summary>
    /// Times <paramref name="verifier"/> in three slices, each right after a slice of libsodium on the same batch, and
    /// returns both rates of the pair whose ratio is the median: on a shared, noisy machine a slowdown then hits both
    /// sides of a pair instead of only one of them. Rate and ratio come from the same pair, so the printed rate divided
    /// by the printed libsodium rate beside it is the printed ratio (the rate was once the mean over all slices while
    /// the ratio was the median pair's, and the two disagreed: 52,167/s shown as 2.85× a libsodium at 27,607/s). The
    /// GPU breakdown is that slice's too, so its parts compare with the row's ms per batch.
    /// </summary>
    private (double Rate, double Baseline, GpuBreakdown? Gpu) MeasureAgainst(IBatchVerifier verifier, IBatchVerifier libsodium, SignatureBatch batch, SignatureBatch baselineBatch)
    {
        const int Rounds = 3;
        CheckAndWarm(verifier, batch);
        var pairs = new (double Rate, double Baseline, GpuBreakdown? Gpu)[Rounds];
        for (int r = 0; r < Rounds; r++)
        {
            double baseline = TimeSlice(libsodium, baselineBatch, options.Duration / (2 * Rounds), out _, out _);
            using var gpuTimes = new GpuTimeListener();
            gpuTimes.Start();
            double rate = TimeSlice(verifier, batch, options.Duration / Rounds, out long sliceItems, out _);
            gpuTimes.Batches = sliceItems / batch.Count;
            pairs[r] = (rate, baseline, gpuTimes.PerBatch());
        }

        Array.Sort(pairs, (a, b) => (a.Rate / a.Baseline).CompareTo(b.Rate / b.Baseline));
        return pairs[Rounds / 2];
    }

    private double TimeSlice(IBatchVerifier verifier, SignatureBatch batch, TimeSpan duration, out long items, out double seconds)
    {
        bool[] verdicts = new bool[batch.Count];
        items = 0;
        var watch = Stopwatch.StartNew();
        do
        {
            // Between batches: Ctrl+C ends the sweep within a batch, not after the command's grace period.
            options.Cancellation.ThrowIfCancellationRequested();
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

    /// <summary>Refuses to time a verifier that rejects the valid batch, then runs it a while on this batch (caches,
    /// branch predictors; tiered compilation was settled by the warm-up before the sweep).</summary>
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
            options.Cancellation.ThrowIfCancellationRequested();
            verifier.Verify(batch, verdicts);
        }
    }

    /// <summary>A GPU backend whose faults while it is checked, warmed up or timed (ILGPU's and the driver's exceptions,
    /// which the command does not know) end the sweep as an <see cref="InvalidOperationException"/> naming the backend:
    /// one line, not an unhandled exception's stack trace.</summary>
    private sealed class FaultsNamed(IBatchVerifier gpu) : IBatchVerifier
    {
        public string Name => gpu.Name;

        public string Description => gpu.Description;

        public VerificationRule Rule => gpu.Rule;

        public void Verify(SignatureBatch batch, int start, int count, Span<bool> verdicts)
        {
            try
            {
                gpu.Verify(batch, start, count, verdicts);
            }
            catch (Exception e) when (e is not (OperationCanceledException or OutOfMemoryException or InvalidOperationException))
            {
                throw new InvalidOperationException($"Backend '{gpu.Name}' faulted ({e.GetType().Name}: {e.Message}); no figures are given for it.", e);
            }
        }

        public void Dispose() => gpu.Dispose();
    }

    /// <summary>A batch of valid items signed with seeded keys (deterministic across runs).</summary>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (signing batch
    /// 1,000,000 takes minutes on two cores, longer than Ctrl+C's grace period).</exception>
    public static SignatureBatch MakeBatch(int size, int distinctKeys, int seed = 1, CancellationToken cancellationToken = default)
    {
        var random = new Random(seed);
        int keyCount = distinctKeys <= 0 ? size : Math.Min(distinctKeys, size);
        var keys = new (byte[] Pk, byte[] Sk)[Math.Max(keyCount, 1)];
        // The seeds come from the seeded generator in order (one call draws the same bytes as one call a key); the keys
        // are made on every core and stop at Ctrl+C, as the signing below: one at a time, a million took as long.
        byte[] keySeeds = new byte[32L * keys.Length <= Array.MaxLength ? 32 * keys.Length : throw new ArgumentOutOfRangeException(nameof(size))];
        random.NextBytes(keySeeds);
        var parallel = new ParallelOptions { CancellationToken = cancellationToken };
        Parallel.For(0, keys.Length, parallel, i =>
        {
            keys[i] = (new byte[32], new byte[64]);
            Ed25519Signer.KeyPairFromSeed(keySeeds.AsSpan(32 * i, 32), keys[i].Pk, keys[i].Sk);
        });

        // Messages come from the seeded generator in order; signing (deterministic) runs on every core, which matters
        // at batch 1,000,000.
        byte[] messages = new byte[64L * size <= Array.MaxLength ? 64 * size : throw new ArgumentOutOfRangeException(nameof(size))];
        random.NextBytes(messages);
        byte[] signatures = new byte[64 * size];
        Parallel.For(0, size, parallel, i => Ed25519Signer.Sign(keys[i % keys.Length].Sk, messages.AsSpan(64 * i, 64), signatures.AsSpan(64 * i, 64)));
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
