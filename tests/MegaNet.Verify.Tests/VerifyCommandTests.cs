using System.Text.Json;
using MegaNet.Core.Verification;
using MegaNet.Node.Benchmarking;
using MegaNet.Node.Cli;
using MegaNet.Node.Verification;

namespace MegaNet.Verify.Tests;

/// <summary><c>meganet verify</c> and <c>meganet bench</c> driven through the real command line parser.</summary>
public sealed class VerifyCommandTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("meganet-verify-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Theory]
    [InlineData("reference")]
    [InlineData("simd")]
    public void Verdict_lines_match_the_vectors_in_order(string backend)
    {
        IReadOnlyList<Vector> vectors = TestVectors.Load("wycheproof_v1.jsonl");
        string input = Path.Combine(_dir, "in.jsonl"), output = Path.Combine(_dir, "out.jsonl");
        File.WriteAllLines(input, vectors.Select(v => JsonSerializer.Serialize(new
        {
            pk = Convert.ToHexString(v.PublicKey).ToLowerInvariant(),
            sig = Convert.ToHexString(v.Signature),
            msg = Convert.ToHexString(v.Message),
        })));

        // Through the console lock: the command's summary line goes to stderr, which another test may have swapped.
        (int rc, _, _) = ConsoleLock.Run(["verify", "--backend", backend, "--in", input, "--out", output, "--batch", "50"]);

        Assert.Equal(0, rc);
        string[] lines = File.ReadAllLines(output);
        Assert.Equal(vectors.Count, lines.Length);
        for (int i = 0; i < lines.Length; i++)
        {
            Assert.Equal(vectors[i].Meganet ? "{\"valid\":true}" : "{\"valid\":false}", lines[i]);
        }
    }

    [Theory]
    [InlineData("{\"pk\":\"00\",\"sig\":\"zz\",\"msg\":\"\"}")]
    [InlineData("{\"pk\":\"00\",\"msg\":\"\"}")]
    [InlineData("[1,2]")]
    [InlineData("not json")]
    public void A_bad_line_is_an_error_and_writes_no_output(string badLine)
    {
        string input = Path.Combine(_dir, "bad.jsonl"), output = Path.Combine(_dir, "bad.out");
        File.WriteAllLines(input, ["{\"pk\":\"00\",\"sig\":\"00\",\"msg\":\"\"}", badLine]);
        (int rc, _, string error) = ConsoleLock.Run(["verify", "--backend", "reference", "--in", input, "--out", output]);

        Assert.Equal(1, rc);
        Assert.Contains("line 2", error);
        Assert.False(File.Exists(output));
    }

    [Fact]
    public void Bench_report_has_the_documented_json_shape_and_plots()
    {
        var registry = Backends.Registry;
        var report = new VerifyBenchmark(registry, new VerifyBenchmarkOptions
        {
            Backends = ["reference"],
            BatchSizes = [1, 4],
            Threads = [1],
            Duration = TimeSpan.FromMilliseconds(20),
            Check = true,
        }).Run();

        string png = Path.Combine(_dir, "bench.png");
        BenchPlot.Write(report, png);
        byte[] image = File.ReadAllBytes(png);
        Assert.True(image.Length > 5_000, "the plot is suspiciously small");
        Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, image[..4]);

        using JsonDocument doc = JsonDocument.Parse(report.ToJson());
        JsonElement machine = doc.RootElement.GetProperty("machine");
        Assert.False(string.IsNullOrEmpty(machine.GetProperty("cpu").GetString()));
        JsonElement[] results = doc.RootElement.GetProperty("results").EnumerateArray().ToArray();
        Assert.Equal(4, results.Length);
        foreach (JsonElement r in results)
        {
            Assert.True(r.GetProperty("verifies_per_s").GetDouble() > 0);
            Assert.True(r.GetProperty("ratio_to_libsodium").GetDouble() > 0);
            Assert.Contains(r.GetProperty("backend").GetString(), new[] { "reference", "libsodium" });
            Assert.Equal(1, r.GetProperty("threads").GetInt32());
        }
    }

    [Fact]
    public void Bench_check_tells_the_cofactorless_rule_from_ours()
    {
        // libsodium's cofactorless rule differs from MegaNet's only on torsion residues; the check's mix has them.
        using var libsodium = new LibsodiumBatchVerifier();
        Assert.True(VerifierSelfCheck.Mismatches(libsodium, 1024) > 0, "the check did not catch the cofactorless rule");
        Assert.Equal(0, VerifierSelfCheck.Mismatches(Backends.Get("simd"), 1024));
    }

    [Fact]
    public void The_start_up_check_catches_a_backend_without_the_decoding_rules()
    {
        // Rules 3 and 4 refuse items whose equation holds only among the kinds built for them; the check has each kind.
        using var loose = new WithoutDecodingRules();
        int mismatches = VerifierSelfCheck.Mismatches(loose, VerifierSelfCheck.StartupItems);
        Assert.True(mismatches >= 4, $"the check found {mismatches} mismatches: it did not catch a backend that accepts non-canonical and small-order encodings");
    }

    [Fact]
    public void Bench_check_holds_libsodium_to_its_own_rule_not_to_the_references()
    {
        // `bench --backend libsodium --check` used to fail on every run: libsodium was compared with MegaNet's reference,
        // whose rule it does not follow (its Rule says so).
        var progress = new StringWriter();
        VerifyBenchmarkReport report = new VerifyBenchmark(Backends.Registry, new VerifyBenchmarkOptions
        {
            Backends = [LibsodiumBatchVerifier.BackendName],
            BatchSizes = [1],
            Threads = [1],
            Duration = TimeSpan.FromMilliseconds(20),
            Check = true,
            CheckItems = 1024,
        }, progress).Run();

        Assert.Contains(report.Results, r => r.Backend == LibsodiumBatchVerifier.BackendName);
        Assert.Contains("libsodium keeps its own rule (Libsodium), not MegaNet's; not compared", progress.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public void Bench_check_covers_every_thread_count_before_timing_anything()
    {
        // A backend right on one thread and wrong on two (it accepts everything there; the valid timing batch cannot
        // tell): only a check of every (backend, threads) instance catches it.
        var registry = new BatchVerifierRegistry().Register(new BackendDescriptor("threads-bug", "right on one thread only", -1, () => null,
            o => new AcceptsAllWithThreads(Backends.Registry.Create("simd", o), o.Threads > 1)));
        var progress = new StringWriter();

        var e = Assert.Throws<InvalidOperationException>(() => new VerifyBenchmark(registry, new VerifyBenchmarkOptions
        {
            Backends = ["threads-bug"],
            BatchSizes = [1],
            Threads = [1, 2],
            Duration = TimeSpan.FromMilliseconds(20),
            Check = true,
            CheckItems = 64,
        }, progress).Run());

        Assert.Contains("'threads-bug' with 2 thread(s) disagrees with the reference", e.Message, StringComparison.Ordinal);
        Assert.Contains("check: threads-bug x1 against the reference on 64 mixed items: 0 mismatches", progress.ToString(), StringComparison.Ordinal);
        Assert.DoesNotContain("/s", progress.ToString(), StringComparison.Ordinal); // nothing was timed first
    }

    /// <summary>Wraps a real backend; with <paramref name="broken"/> it accepts every item.</summary>
    private sealed class AcceptsAllWithThreads(IBatchVerifier inner, bool broken) : IBatchVerifier
    {
        public string Name => "threads-bug";

        public string Description => inner.Description;

        public VerificationRule Rule => inner.Rule;

        public void Verify(SignatureBatch batch, int start, int count, Span<bool> verdicts)
        {
            inner.Verify(batch, start, count, verdicts);
            if (broken)
            {
                verdicts[..count].Fill(true);
            }
        }

        public void Dispose() => inner.Dispose();
    }

    [Fact]
    public void Bench_reports_where_a_gpu_batch_spends_its_time()
    {
        var report = new VerifyBenchmark(Backends.Registry, new VerifyBenchmarkOptions
        {
            Backends = ["gpu-cpu", "simd"],
            BatchSizes = [64],
            Threads = [1],
            Duration = TimeSpan.FromMilliseconds(40),
        }).Run();

        using JsonDocument doc = JsonDocument.Parse(report.ToJson());
        JsonElement[] results = doc.RootElement.GetProperty("results").EnumerateArray().ToArray();
        JsonElement gpu = results.Single(r => r.GetProperty("backend").GetString() == "gpu-cpu");
        JsonElement breakdown = gpu.GetProperty("gpu");
        Assert.True(breakdown.GetProperty("kernel_ms").GetDouble() > 0);
        Assert.True(breakdown.GetProperty("host_ms").GetDouble() > 0);
        Assert.Equal(1.0, breakdown.GetProperty("launches").GetDouble());
        // The kernel is part of the batch's wall time, so it cannot exceed it by much: ILGPU 1.5.3's CPU accelerator
        // times its markers with DateTime.UtcNow, a clock the system may adjust, where the batch's wall time is the
        // Stopwatch's, and on gpu-cpu the kernel is nearly all of a batch (CI once saw it exceed the wall time under
        // load). A wrong unit or a sum over several batches would still be far beyond the slack.
        double kernelMs = breakdown.GetProperty("kernel_ms").GetDouble(), wallMs = gpu.GetProperty("ms_per_batch").GetDouble();
        Assert.True(kernelMs <= wallMs * 1.1, $"kernel {kernelMs:F3} ms of a batch taking {wallMs:F3} ms");
        JsonElement simd = results.Single(r => r.GetProperty("backend").GetString() == "simd");
        Assert.Equal(JsonValueKind.Null, simd.GetProperty("gpu").ValueKind);
    }
}

/// <summary>Serialises tests that run <c>meganet</c> commands, which write to the process-wide console.</summary>
internal static class ConsoleLock
{
    private static readonly object Gate = new();

    /// <summary>Runs a command with its stdout and stderr captured. Every test that runs a command goes through here:
    /// one that ran outside the lock wrote its stderr line into another test's captured writer (CI, 2026-11-30), and
    /// one that read the previous writers outside the lock could restore another test's writer for good.</summary>
    public static (int ExitCode, string Out, string Error) Run(string[] args) => Run(() => MeganetCommand.Run(args));

    /// <summary>Runs <paramref name="command"/> (a command built for the test) the same way.</summary>
    public static (int ExitCode, string Out, string Error) Run(Func<int> command)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        lock (Gate)
        {
            TextWriter previousOut = Console.Out, previousError = Console.Error;
            Console.SetOut(output);
            Console.SetError(error);
            try
            {
                int exitCode = command();
                return (exitCode, output.ToString(), error.ToString());
            }
            finally
            {
                Console.SetOut(previousOut);
                Console.SetError(previousError);
            }
        }
    }
}

/// <summary>Option errors are reported, not thrown.</summary>
public sealed class CommandLineErrorTests
{
    [Theory]
    [InlineData("fetch", "--node", "nonsense")]
    [InlineData("load", "--node", "127.0.0.1:7700")]
    [InlineData("load", "--warmup", "-1")]
    [InlineData("profile", "--trace", "x.nettrace", "--duration", "5x")]
    [InlineData("verify", "--in")]
    public void A_bad_option_value_exits_1_with_a_message(params string[] args)
    {
        (int rc, _, string error) = ConsoleLock.Run(args);

        Assert.Equal(1, rc);
        Assert.False(string.IsNullOrWhiteSpace(error));
    }
}
