using MegaNet.Core.Verification;
using MegaNet.Node.Benchmarking;
using MegaNet.Node.Cli;
using MegaNet.Verify.Gpu;
using MegaNet.Verify.Simd;

namespace MegaNet.Verify.Tests;

/// <summary><c>meganet bench</c>'s sweep: warmed up before the first point, one row per distinct point, each row's
/// rate and ratio from the same slices, and the threads column saying what ran.</summary>
public sealed class BenchSweepTests
{
    [Fact]
    public void Every_configuration_is_warmed_up_before_the_first_point_is_timed()
    {
        // The first point used to be timed on a cold process (tier-0 code): 0.26x libsodium at batch 1, 0.40x when
        // the same point was timed again.
        var progress = new StringWriter();
        VerifyBenchmarkReport report = new VerifyBenchmark(Backends.Registry, new VerifyBenchmarkOptions
        {
            Backends = ["simd", "gpu-cpu"],
            BatchSizes = [1, 8],
            Threads = [1, 2],
            Duration = TimeSpan.FromMilliseconds(20),
        }, progress).Run();

        Assert.Equal(["libsodium", "simd x1", "simd x2", "gpu-cpu"], report.WarmUp.Select(w => w.Configuration));
        Assert.All(report.WarmUp, w => Assert.True(w.Seconds > 0));
        string text = progress.ToString();
        int lastWarmUp = text.LastIndexOf("warm-up: ", StringComparison.Ordinal);
        int firstTiming = text.IndexOf("/s", StringComparison.Ordinal);
        Assert.True(lastWarmUp >= 0 && lastWarmUp < firstTiming, $"no warm-up before the first timing:\n{text}");
        Assert.Contains("warm-up", string.Join('\n', BenchCommand.Footnotes(report)), StringComparison.Ordinal);
    }

    [Fact]
    public void A_saved_report_says_how_it_was_measured()
    {
        // --json wrote the machine and the rows only: a file read later did not say whether the key cache was on, how
        // many distinct keys a batch had, how long each point ran or whether the verdicts were checked.
        VerifyBenchmarkReport report = new VerifyBenchmark(Backends.Registry, new VerifyBenchmarkOptions
        {
            Backends = ["simd"],
            BatchSizes = [1, 8],
            Threads = [1, 2],
            Duration = TimeSpan.FromMilliseconds(20),
            DistinctKeys = 4,
            KeyCache = true,
            Check = true,
            CheckItems = 64,
        }).Run();

        using System.Text.Json.JsonDocument json = System.Text.Json.JsonDocument.Parse(report.ToJson());
        System.Text.Json.JsonElement o = json.RootElement.GetProperty("options");
        Assert.Equal(["simd"], o.GetProperty("backends").EnumerateArray().Select(e => e.GetString()));
        Assert.Equal([1, 8], o.GetProperty("batch_sizes").EnumerateArray().Select(e => e.GetInt32()));
        Assert.Equal([1, 2], o.GetProperty("threads").EnumerateArray().Select(e => e.GetInt32()));
        Assert.Equal(0.02, o.GetProperty("seconds_per_point").GetDouble());
        Assert.Equal(4, o.GetProperty("distinct_keys").GetInt32());
        Assert.True(o.GetProperty("key_cache").GetBoolean());
        Assert.True(o.GetProperty("check").GetBoolean());
        Assert.Equal(64, o.GetProperty("check_items").GetInt32());
        Assert.Equal(System.Text.Json.JsonValueKind.Object, o.GetProperty("dotnet_isa_knobs").ValueKind);
        // The plot's title says it too (the legend names each backend and thread count).
        // (At a lower ISA tier the DOTNET_Enable* variables set follow.)
        Assert.Contains("\nkey cache on, 4 distinct keys, 0.02 s per point, verdicts checked against the reference (64 items)", BenchPlot.Title(report), StringComparison.Ordinal);
    }

    [Fact]
    public void A_value_given_twice_is_refused_naming_it()
    {
        Assert.Contains("batch size 8 is given twice",
            Assert.Throws<ArgumentException>(() => new VerifyBenchmark(Backends.Registry, new VerifyBenchmarkOptions { BatchSizes = [8, 1, 8] }).Run()).Message,
            StringComparison.Ordinal);
        Assert.Contains("backend 'simd' is given twice",
            Assert.Throws<ArgumentException>(() => new VerifyBenchmark(Backends.Registry, new VerifyBenchmarkOptions { Backends = ["simd", "SIMD"] }).Run()).Message,
            StringComparison.Ordinal);

        // Through the command line, before any work: one line, exit 1.
        (int rc, string output, string error) = ConsoleLock.Run(["bench", "--backend", "simd,simd", "--batch", "8", "--seconds", "0.3"]);

        Assert.Equal(1, rc);
        Assert.Equal(["meganet bench: --backend: simd is given twice; name each backend once.", "Run 'meganet bench --help' for usage."],
            error.Trim().Split('\n', StringSplitOptions.TrimEntries));
        Assert.DoesNotContain("/s", output, StringComparison.Ordinal);
    }

    [Fact]
    public void Each_rows_rate_divided_by_its_libsodium_rate_is_its_ratio()
    {
        VerifyBenchmarkReport report = new VerifyBenchmark(Backends.Registry, new VerifyBenchmarkOptions
        {
            Backends = ["simd"],
            BatchSizes = [8, 64],
            Threads = [1],
            Duration = TimeSpan.FromMilliseconds(30),
        }).Run();

        Assert.Equal(4, report.Results.Count);
        Assert.All(report.Results, r =>
        {
            Assert.True(r.LibsodiumPairedPerSecond > 0, $"{r.Backend} at {r.Batch}: no paired libsodium rate");
            Assert.Equal(r.VerifiesPerSecond / r.LibsodiumPairedPerSecond, r.RatioToLibsodium, 9);
        });
    }

    [Fact]
    public void The_threads_column_shows_the_threads_that_verified_the_batch()
    {
        VerifyBenchmarkReport report = new VerifyBenchmark(Backends.Registry, new VerifyBenchmarkOptions
        {
            Backends = ["simd", "gpu-cpu"],
            BatchSizes = [64, 95, 96, 200],
            Threads = [2],
            Duration = TimeSpan.FromMilliseconds(20),
        }).Run();

        // simd gives each thread at least 48 items (SimdBatchVerifier.MinItemsPerThread), so x2 ran on one thread
        // below 96; the column used to say 2 there.
        Assert.Equal([(64, 1), (95, 1), (96, 2), (200, 2)], report.Results.Where(r => r.Backend == "simd").Select(r => (r.Batch, r.Threads ?? 0)));
        Assert.All(report.Results.Where(r => r.Backend == "simd"), r => Assert.Equal(2, r.ThreadsRequested));
        Assert.All(report.Results.Where(r => r.Backend == "gpu-cpu"), r => Assert.Equal(2, r.Threads));
        Assert.Contains("fewer than --threads asked for", string.Join('\n', BenchCommand.Footnotes(report)), StringComparison.Ordinal);
    }

    [Fact]
    public void A_gpu_backend_is_made_with_the_largest_thread_count_as_its_host_threads_and_the_row_says_so()
    {
        // Its host work (copies, SHA-512 with MEGANET_GPU_HOST_HASH=1) runs on that many threads: made with the first
        // count, 1 by default, it was timed on one host thread while a node gives it all cores but one.
        var made = new List<int>();
        var registry = new BatchVerifierRegistry().Register(new BackendDescriptor(GpuBatchVerifier.CpuBackendName, "simd under the GPU's name", -1, () => null, o =>
        {
            made.Add(o.Threads);
            return new SimdAsGpu(Backends.Get(SimdBatchVerifier.BackendName));
        }));

        VerifyBenchmarkReport report = new VerifyBenchmark(registry, new VerifyBenchmarkOptions
        {
            Backends = [GpuBatchVerifier.CpuBackendName],
            BatchSizes = [8],
            Threads = [1, 3],
            Duration = TimeSpan.FromMilliseconds(20),
        }).Run();

        Assert.Equal([3], made);
        VerifyBenchmarkResult row = Assert.Single(report.Results, r => r.Backend == GpuBatchVerifier.CpuBackendName);
        Assert.Equal(3, row.Threads);
        Assert.Equal("x3", VerifyBenchmark.ThreadsLabel(row));
        string footnotes = string.Join('\n', BenchCommand.Footnotes(report));
        Assert.Contains("the largest --threads", footnotes, StringComparison.Ordinal);
        // The limit is filled in, not printed as the code that gives it.
        Assert.Contains($"SHA-512 of messages over {GpuBatchVerifier.MaxDeviceHashedMessageBytes >> 10} KiB", footnotes, StringComparison.Ordinal);
        Assert.DoesNotContain("{", footnotes, StringComparison.Ordinal);
    }

    private sealed class SimdAsGpu(IBatchVerifier simd) : BatchVerifierBase
    {
        public override string Name => GpuBatchVerifier.CpuBackendName;

        public override string Description => "simd under the GPU's name";

        protected override void VerifyCore(SignatureBatch batch, int start, int count, Span<bool> verdicts) => simd.Verify(batch, start, count, verdicts);
    }
}
