using System.CommandLine;
using MegaNet.Core.Ed25519;
using MegaNet.Core.Verification;
using MegaNet.Node.Cli;
using MegaNet.Verify.Gpu;
using MegaNet.Verify.Simd;

namespace MegaNet.Verify.Tests;

/// <summary>
/// <c>meganet verify</c> and <c>meganet bench</c> start a GPU as the node does (VerifierStartup): held to the reference
/// first, replaced by SIMD under <c>auto</c>, refused in one line when named, and (verify) behind the router that
/// finishes a faulting GPU's work on SIMD. They used to create it directly: wrong verdicts unflagged, and a device
/// fault as an unhandled exception with a stack trace. A stand-in plays the GPU (this machine has none).
/// </summary>
public sealed class GpuCommandStartupTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("meganet-gpu-startup-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>Stands for a device's own exception (ILGPU's derive from <see cref="Exception"/>, which no command's
    /// error handling lists).</summary>
    private sealed class DeviceLostException(string message) : Exception(message);

    /// <summary>A "gpu": SIMD's verdicts for its first <paramref name="goodCalls"/> calls, then every call throws as a
    /// lost device; with <paramref name="acceptsAll"/>, it says valid to everything (a miscompiled kernel).</summary>
    private sealed class StandInGpu(int goodCalls = int.MaxValue, bool acceptsAll = false) : BatchVerifierBase
    {
        private int _calls;

        /// <summary>Calls made so far.</summary>
        public int Calls => Volatile.Read(ref _calls);

        public override string Name => GpuBatchVerifier.DeviceBackendName;

        public override string Description => "a stand-in GPU";

        protected override void VerifyCore(SignatureBatch batch, int start, int count, Span<bool> verdicts)
        {
            if (Interlocked.Increment(ref _calls) > goodCalls)
            {
                throw new DeviceLostException("CUDA_ERROR_ILLEGAL_ADDRESS");
            }

            Backends.Get(SimdBatchVerifier.BackendName).Verify(batch, start, count, verdicts);
            if (acceptsAll)
            {
                verdicts.Fill(true);
            }
        }
    }

    /// <summary>simd, and a "gpu" that auto prefers, made by <paramref name="createGpu"/>.</summary>
    private static BatchVerifierRegistry WithGpu(Func<IBatchVerifier> createGpu) => new BatchVerifierRegistry()
        .Register(new BackendDescriptor(SimdBatchVerifier.BackendName, "simd", 10, () => null, o => new SimdBatchVerifier(o)))
        .Register(new BackendDescriptor(GpuBatchVerifier.DeviceBackendName, "a stand-in GPU", 20, () => null, _ => createGpu()));

    private static (int ExitCode, string Out, string Error) Run(Command command, params string[] args) =>
        ConsoleLock.Run(() => new RootCommand { command }.Parse(args).Invoke());

    /// <summary>Writes <paramref name="count"/> seeded mixed items as verify's input; returns its path and SIMD's verdicts.</summary>
    private (string Path, bool[] Expected) Input(int count)
    {
        var generator = new SignatureCaseGenerator(5);
        using var batch = new SignatureBatch(count);
        var lines = new List<string>(count);
        for (int i = 0; i < count; i++)
        {
            SignatureCase c = generator.NextMixed(invalidShare: 0.3);
            batch.Add(c.PublicKey, c.Signature, c.Message);
            lines.Add($"{{\"pk\":\"{Convert.ToHexString(c.PublicKey)}\",\"sig\":\"{Convert.ToHexString(c.Signature)}\",\"msg\":\"{Convert.ToHexString(c.Message)}\"}}");
        }

        string path = Path.Combine(_dir, "in.jsonl");
        File.WriteAllLines(path, lines);
        return (path, Backends.Get(SimdBatchVerifier.BackendName).Verify(batch));
    }

    private static bool[] Verdicts(string path) => [.. File.ReadAllLines(path).Select(l => l == "{\"valid\":true}")];

    /// <summary>One line, no stack trace.</summary>
    private static void AssertOneLine(string error)
    {
        Assert.Single(error.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.DoesNotContain("Unhandled", error, StringComparison.Ordinal);
    }

    [Fact]
    public void Verify_under_auto_replaces_a_gpu_whose_verdicts_are_wrong_with_simd()
    {
        (string input, bool[] expected) = Input(64);
        string output = Path.Combine(_dir, "out.jsonl");

        (int rc, _, string error) = Run(VerifyCommand.Build(() => WithGpu(() => new StandInGpu(acceptsAll: true))), "verify", "--in", input, "--out", output);

        Assert.Equal(0, rc);
        Assert.Equal(expected, Verdicts(output));
        Assert.Contains("meganet verify: The GPU verifier was not used: its verdicts differ from the reference rule", error, StringComparison.Ordinal);
        Assert.Contains("64 items verified with simd", error, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(64, "64 items verified with simd (")]
    [InlineData(1024 + 64, "1088 items verified with gpu+simd (")]
    public void Verify_under_auto_names_the_backends_that_verified(int count, string said)
    {
        // Batches under the router's threshold (1,024) go to simd: the router's own name ("gpu") said otherwise.
        (string input, bool[] expected) = Input(count);
        string output = Path.Combine(_dir, "out.jsonl");
        var gpu = new StandInGpu();

        (int rc, _, string error) = Run(VerifyCommand.Build(() => WithGpu(() => gpu)), "verify", "--in", input, "--out", output, "--batch", "1024");

        Assert.True(rc == 0, error);
        Assert.Equal(expected, Verdicts(output));
        Assert.Equal(2 + (count / 1024), gpu.Calls);
        Assert.Contains(said, error, StringComparison.Ordinal);
    }

    [Fact]
    public void Verify_refuses_a_named_gpu_that_gives_wrong_verdicts_or_fails_to_start_in_one_line()
    {
        (string input, _) = Input(16);
        string output = Path.Combine(_dir, "out.jsonl");

        (int rc, _, string error) = Run(VerifyCommand.Build(() => WithGpu(() => new StandInGpu(acceptsAll: true))), "verify", "--backend", "gpu", "--in", input, "--out", output);
        Assert.Equal(1, rc);
        AssertOneLine(error);
        Assert.StartsWith("meganet verify: Verifier backend 'gpu' is not available: its verdicts differ from the reference rule", error, StringComparison.Ordinal);
        Assert.False(File.Exists(output));

        (rc, _, error) = Run(VerifyCommand.Build(() => WithGpu(() => throw new DeviceLostException("CUDA_ERROR_NO_DEVICE"))), "verify", "--backend", "gpu", "--in", input, "--out", output);
        Assert.Equal(1, rc);
        AssertOneLine(error);
        Assert.Contains("Verifier backend 'gpu' is not available: it failed to start (DeviceLostException: CUDA_ERROR_NO_DEVICE)", error, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("auto")]
    [InlineData("Auto")] // as the registry reads it: case ignored
    public void Verify_on_a_gpu_that_faults_under_auto_finishes_on_simd_with_exact_verdicts(string backend)
    {
        // Three batches of 1,024 (the router's threshold): the GPU passes the start-up check's two batches, then faults
        // on the first batch of work; that batch and the rest are verified on SIMD.
        (string input, bool[] expected) = Input(3 * 1024);
        string output = Path.Combine(_dir, "out.jsonl");

        (int rc, _, string error) = Run(VerifyCommand.Build(() => WithGpu(() => new StandInGpu(goodCalls: 2))),
            "verify", "--backend", backend, "--in", input, "--out", output, "--batch", "1024");

        Assert.True(rc == 0, error);
        Assert.Equal(expected, Verdicts(output));
        Assert.Contains("meganet verify: the gpu backend faulted (DeviceLostException: CUDA_ERROR_ILLEGAL_ADDRESS); that batch and every later one were verified on simd.", error, StringComparison.Ordinal);
        Assert.Contains("3072 items verified with simd", error, StringComparison.Ordinal);
    }

    [Fact]
    public void Verify_on_a_named_gpu_verifies_every_batch_on_it_and_a_fault_ends_the_run_in_one_line()
    {
        // Batches of 16, far under the router's threshold: a named GPU must verify them itself, or a check of its
        // verdicts (perf/gpu/device-check.sh) checks SIMD's. The stand-in counts its calls: the start-up check's two,
        // then one a batch.
        (string input, bool[] expected) = Input(64);
        string output = Path.Combine(_dir, "out.jsonl");
        var gpu = new StandInGpu();
        (int rc, _, string error) = Run(VerifyCommand.Build(() => WithGpu(() => gpu)), "verify", "--backend", "gpu", "--in", input, "--out", output, "--batch", "16");
        Assert.True(rc == 0, error);
        Assert.Equal(expected, Verdicts(output));
        Assert.Equal(2 + (64 / 16), gpu.Calls);

        (rc, _, error) = Run(VerifyCommand.Build(() => WithGpu(() => new StandInGpu(goodCalls: 3))), "verify", "--backend", "gpu", "--in", input, "--out", output + "2", "--batch", "16");
        Assert.Equal(1, rc);
        AssertOneLine(error);
        Assert.StartsWith("meganet verify: Verifier backend 'gpu' is not available: it faulted (DeviceLostException: CUDA_ERROR_ILLEGAL_ADDRESS); no --out file was written", error, StringComparison.Ordinal);
        Assert.False(File.Exists(output + "2"));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Bench_default_sweep_skips_a_gpu_that_fails_to_start_or_its_check_and_still_times_simd(bool startsButIsWrong)
    {
        Func<IBatchVerifier> gpu = startsButIsWrong ? () => new StandInGpu(acceptsAll: true) : () => throw new DeviceLostException("CUDA_ERROR_NO_DEVICE");

        (int rc, string output, string error) = Run(BenchCommand.Build(() => WithGpu(gpu)), "bench", "--batch", "8", "--threads", "1", "--seconds", "0.3");

        Assert.True(rc == 0, error);
        Assert.Contains("  gpu: skipped, ", output, StringComparison.Ordinal);
        Assert.Contains(startsButIsWrong ? "gpu: not measured: its verdicts differ from the reference rule" : "gpu: not measured: it failed to start (DeviceLostException: CUDA_ERROR_NO_DEVICE)",
            output, StringComparison.Ordinal);
        string[] rows = output.Split('\n');
        Assert.Contains(rows, r => r.StartsWith("simd ", StringComparison.Ordinal));
        Assert.DoesNotContain(rows, r => r.StartsWith("gpu ", StringComparison.Ordinal));
    }

    [Fact]
    public void Bench_of_a_named_gpu_gives_no_figures_when_it_is_wrong_and_one_line_when_it_faults()
    {
        (int rc, string output, string error) = Run(BenchCommand.Build(() => WithGpu(() => new StandInGpu(acceptsAll: true))),
            "bench", "--backend", "gpu", "--batch", "8", "--seconds", "0.3");
        Assert.Equal(1, rc);
        AssertOneLine(error);
        Assert.StartsWith("meganet bench: Verifier backend 'gpu' is not available: its verdicts differ from the reference rule", error, StringComparison.Ordinal);
        Assert.DoesNotContain("verifies/s", output, StringComparison.Ordinal);

        // Right on the start-up check, then a device fault while it is warmed up: the bench's own error line.
        (rc, output, error) = Run(BenchCommand.Build(() => WithGpu(() => new StandInGpu(goodCalls: 2))),
            "bench", "--backend", "gpu", "--batch", "8", "--seconds", "0.3");
        Assert.Equal(1, rc);
        AssertOneLine(error);
        Assert.StartsWith("meganet bench: Backend 'gpu' faulted (DeviceLostException: CUDA_ERROR_ILLEGAL_ADDRESS); no figures are given for it.", error, StringComparison.Ordinal);
        Assert.DoesNotContain("verifies/s", output, StringComparison.Ordinal);
    }
}
