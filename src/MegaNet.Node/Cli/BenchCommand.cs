using System.CommandLine;
using System.Globalization;
using MegaNet.Core.Verification;
using MegaNet.Node.Benchmarking;
using MegaNet.Node.Diagnostics;
using MegaNet.Node.Verification;
using MegaNet.Verify.Gpu;
using MegaNet.Verify.Simd;

namespace MegaNet.Node.Cli;

/// <summary><c>meganet bench</c>: a quick throughput sweep against libsodium measured in the same run.</summary>
internal static class BenchCommand
{
    public static Command Build() => Build(VerifierCatalog.Create);

    /// <summary>The command, with its backends from <paramref name="registry"/> (tests give one with a stand-in GPU).</summary>
    internal static Command Build(Func<BatchVerifierRegistry> registry)
    {
        var backends = new Option<string>("--backend", "-b")
        {
            Description = "Comma-separated backends to time (libsodium is always timed as the baseline). Default: every fast backend that can run here (simd, gpu).",
        };
        var sizes = new Option<string>("--batch")
        {
            Description = "Comma-separated batch sizes.",
            DefaultValueFactory = _ => "1,8,64,1024,16384",
        };
        var threads = new Option<string>("--threads", "-t")
        {
            Description = "Comma-separated thread counts for multi-threaded CPU backends (libsodium and reference run on one thread and are timed once; a GPU backend is timed once, with the largest count as its host threads). Default: 1 and all cores.",
        };
        var seconds = new Option<double>("--seconds")
        {
            CustomParser = CliParsers.Number,
            Description = "Measuring time per point in seconds, 0.3 to 3600.",
            DefaultValueFactory = _ => 0.7,
        };
        var keys = new Option<int>("--keys")
        {
            Description = "Distinct signing keys per batch; 0 gives every item its own key.",
            DefaultValueFactory = _ => 0,
        };
        var keyCache = new Option<bool>("--key-cache")
        {
            Description = "Let backends keep decompressed keys between calls (a node's steady state with repeat senders). Off by default so figures show cold keys.",
        };
        var check = new Option<bool>("--check")
        {
            Description = "First check each backend's verdicts against the reference on a seeded mix of valid and adversarial items (bit flips, S + L, non-canonical and small-order encodings, torsion residues; see --check-items).",
        };
        var checkItems = new Option<int>("--check-items")
        {
            Description = "Items in --check's mixed sample, 1 to 1,048,576 (the reference verifies them on every core, a few hundred a second per core).",
            DefaultValueFactory = _ => 512,
        };
        var json = new Option<FileInfo?>("--json")
        {
            Description = "Also write {\"machine\":{...},\"results\":[...],\"warm_up\":[...],\"options\":{...},\"skipped\":[...]} to this file once the sweep is done, replacing it whole (an interrupted run leaves an earlier file there as it was); \"options\" records how the run was made (backends, batch sizes, threads, seconds per point, distinct keys, key cache, check and its items, DOTNET_Enable* variables set).",
        };
        var plot = new Option<FileInfo?>("--plot")
        {
            Description = "Also draw verifies/s against batch size, a line per backend and thread count (with the libsodium baseline), to this PNG once the sweep is done, replacing it whole; its title names the machine and how the run was made (key cache, keys, seconds per point, check).",
        };
        var command = new Command("bench",
            "Measure verifies/s per backend, batch size and thread count, with the ratio to libsodium measured in the same run.")
        {
            backends, sizes, threads, seconds, keys, keyCache, check, checkItems, json, plot,
        };
        command.SetAction((parse, ct) => Task.FromResult(Execute(parse, ct)));
        return command;

        int Execute(ParseResult parse, CancellationToken ct)
        {
            try
            {
                // Every argument is checked before any batch is signed or backend started.
                double secondsPerPoint = parse.GetValue(seconds);
                if (!(secondsPerPoint >= MinSeconds && secondsPerPoint <= MaxSeconds))
                {
                    throw new UsageException("bench", $"--seconds must be {MinSeconds} to {MaxSeconds} (got {secondsPerPoint}): shorter points time mostly noise.");
                }

                int[] batchSizes = ParseList(parse.GetValue(sizes)!, "--batch");
                if (batchSizes.FirstOrDefault(b => b > SignatureBatch.MaxItems) is > 0 and int tooLarge)
                {
                    throw new UsageException("bench", $"--batch {tooLarge} is larger than a batch holds ({SignatureBatch.MaxItems:N0} items).");
                }

                int[] threadCounts = parse.GetValue(threads) is { } t ? ParseList(t, "--threads") : Environment.ProcessorCount > 1 ? [1, Environment.ProcessorCount] : [1];
                if (threadCounts.FirstOrDefault(n => n > MaxThreads) is > 0 and int tooMany)
                {
                    throw new UsageException("bench", $"--threads {tooMany} is more than {MaxThreads}.");
                }

                if (parse.GetValue(keys) < 0)
                {
                    throw new UsageException("bench", "--keys must be 0 (a key per item) or positive.");
                }

                // Unbounded, 100,000,000 items were signed for hours and would have needed tens of GiB: the reference
                // verifies a few hundred a second per core, so the cap is already half an hour of it on 2 cores.
                if (parse.GetValue(checkItems) is < 1 or > MaxCheckItems)
                {
                    throw new UsageException("bench", $"--check-items must be 1 to {MaxCheckItems:N0} (got {parse.GetValue(checkItems)}).");
                }

                if (parse.GetResult(checkItems) is { Implicit: false } && !parse.GetValue(check))
                {
                    throw new UsageException("bench", "--check-items sizes the check that --check runs; give --check too, or drop --check-items.");
                }

                BatchVerifierRegistry backendRegistry = registry();
                string[]? requested = parse.GetValue(backends)?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
                if (requested is { Length: 0 })
                {
                    // `--backend ""` or `--backend ,` said "no fast backend can run here", which is not what was wrong.
                    throw new UsageException("bench", "--backend names no backend; give one or more, comma-separated (simd, gpu, gpu-cpu, reference), or leave it out for the fast ones this machine runs.");
                }

                // An unknown name is refused here: the registry's own refusal lists libsodium among the known backends,
                // which bench refuses below.
                if (requested?.FirstOrDefault(n => backendRegistry.Find(n) is null && !string.Equals(n, BatchVerifierRegistry.Auto, StringComparison.OrdinalIgnoreCase)) is { } unknown)
                {
                    throw new UsageException("bench", $"--backend: unknown backend '{unknown}'; choose from {string.Join(", ", backendRegistry.Backends.Select(b => b.Name).Where(n => n != LibsodiumBatchVerifier.BackendName))}, {BatchVerifierRegistry.Auto} (libsodium, the baseline, is timed beside each).");
                }

                IReadOnlyList<string> names = requested is null
                    ? new[] { "simd", "gpu" }.Where(n => backendRegistry.Find(n)?.Probe() is null).ToList()
                    : requested.Select(backendRegistry.Resolve).ToList();
                // libsodium is every row's baseline, timed beside each point: named as a backend too, it came out twice
                // per batch size under one name.
                if (names.Contains(LibsodiumBatchVerifier.BackendName))
                {
                    throw new UsageException("bench", "--backend: libsodium is the baseline every row is measured against (the 'libsodium/s' column and its own rows); name the backends to compare with it.");
                }

                // After Resolve, so an alias and its name count as the same backend.
                if (names.GroupBy(n => n).FirstOrDefault(g => g.Count() > 1) is { } twice)
                {
                    // 'simd,auto' said "simd is given twice", which the user had not typed: name what was given.
                    string[] given = requested!.Where((_, i) => names[i] == twice.Key).Distinct(StringComparer.OrdinalIgnoreCase).ToArray();
                    throw new UsageException("bench", given.Length > 1
                        ? $"--backend: {string.Join(" and ", given)} are the same backend here ({twice.Key}); name it once."
                        : $"--backend: {twice.Key} is given twice; name each backend once.");
                }

                if (names.Count == 0)
                {
                    Console.Error.WriteLine("meganet bench: no fast backend can run here; name one with --backend (e.g. reference).");
                    return 1;
                }

                // Say so before signing batches and timing libsodium, not after.
                foreach (string name in names)
                {
                    backendRegistry.EnsureAvailable(name);
                }

                // The output paths are checked now, not after the sweep: a path that cannot be written is refused
                // before minutes of work, in one line. Nothing is created there until the sweep is done, so an earlier
                // report at the path survives a run that is interrupted or fails.
                // One file for both: the plot replaced the JSON report after the sweep, and both were said to be written.
                if (parse.GetValue(json) is { } sameJson && parse.GetValue(plot) is { } samePlot
                    && sameJson.FullName == samePlot.FullName && !sameJson.FullName.StartsWith("/dev/", StringComparison.Ordinal))
                {
                    throw new UsageException("bench", $"--json and --plot both name {sameJson.FullName}; give each a file of its own.");
                }

                using ReportFile? jsonFile = parse.GetValue(json) is { } j ? ReportFile.Check(j.FullName, "--json") : null;
                using ReportFile? plotFile = parse.GetValue(plot) is { } png ? ReportFile.Check(png.FullName, "--plot") : null;

                var options = new VerifyBenchmarkOptions
                {
                    Backends = names,
                    BatchSizes = batchSizes,
                    Threads = threadCounts,
                    Duration = TimeSpan.FromSeconds(secondsPerPoint),
                    DistinctKeys = parse.GetValue(keys),
                    KeyCache = parse.GetValue(keyCache),
                    Check = parse.GetValue(check),
                    CheckItems = parse.GetValue(checkItems),
                    // Not asked for by name, a GPU that fails to start or to agree with the reference is left out with
                    // a line saying why, and the SIMD rows still come.
                    SkipIfUnavailable = requested is null ? [GpuBatchVerifier.DeviceBackendName] : [],
                    Cancellation = ct,
                };
                MachineInfo machine = MachineInfo.Current();
                Console.WriteLine($"CPU {machine.Cpu}, {machine.LogicalCores} logical cores, ISA tier {machine.Isa}, {machine.Runtime}, libsodium {machine.Libsodium}");
                Console.WriteLine(BenchSettings.From(options).Describe());
                VerifyBenchmarkReport report = new VerifyBenchmark(backendRegistry, options, Console.Out).Run();
                Console.WriteLine();
                Console.WriteLine($"{"backend",-10} {"batch",7} {"threads",8} {"verifies/s",14} {"libsodium/s",12} {"x libsodium",12} {"ms/batch",10}");
                foreach (VerifyBenchmarkResult r in report.Results)
                {
                    string threadsUsed = r.Threads is { } n ? (r.ThreadsRequested is { } asked && asked != n ? $"{n}*" : $"{n}") : "-";
                    Console.WriteLine($"{r.Backend,-10} {r.Batch,7} {threadsUsed,8} {r.VerifiesPerSecond,14:N0} {r.LibsodiumPairedPerSecond,12:N0} {r.RatioToLibsodium,12:F2} {r.MillisecondsPerBatch,10:F3}");
                }

                foreach (string note in Footnotes(report))
                {
                    Console.WriteLine(note);
                }

                if (jsonFile is not null)
                {
                    jsonFile.Write(System.Text.Encoding.UTF8.GetBytes(report.ToJson()));
                    Console.WriteLine($"wrote {jsonFile.FullPath}");
                }

                if (plotFile is not null)
                {
                    plotFile.Write(BenchPlot.Png(report));
                    Console.WriteLine($"wrote {plotFile.FullPath}");
                }

                return 0;
            }
            catch (Exception e) when (e is BackendUnavailableException or ArgumentException or InvalidOperationException or IOException or UnauthorizedAccessException)
            {
                Console.Error.WriteLine($"meganet bench: {ErrorText.Plain(e)}");
                if (e is UsageException usage)
                {
                    Console.Error.WriteLine(usage.Hint);
                }

                return 1;
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
                // --json and --plot are written only after the sweep: an earlier file at either path is unchanged.
                Console.Error.WriteLine("meganet bench: interrupted; nothing was written.");
                return Interruption.ExitCode;
            }
        }
    }

    /// <summary>Shortest --seconds: a point is three paired slices, each after a warm-up; below this they are too
    /// short to time against the libsodium slices beside them.</summary>
    private const double MinSeconds = 0.3;

    /// <summary>Longest --seconds (an hour per point).</summary>
    private const double MaxSeconds = 3600;

    /// <summary>Largest --check-items.</summary>
    private const int MaxCheckItems = 1 << 20;

    /// <summary>The most threads a verifier takes (VerifierOptions.Validate).</summary>
    private const int MaxThreads = 1024;

    private static int[] ParseList(string text, string option)
    {
        int[] values = text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(s => int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out int v) && v > 0 ? v : throw new UsageException("bench", $"{option}: '{s}' is not a positive integer."))
            .ToArray();
        // A value given twice would be timed twice as rows of their own, the first on a colder process.
        if (values.GroupBy(v => v).FirstOrDefault(g => g.Count() > 1) is { } twice)
        {
            throw new UsageException("bench", $"{option}: {twice.Key} is given twice; name each value once.");
        }

        return values.Length > 0 ? values : throw new UsageException("bench", $"{option} needs at least one value.");
    }

    /// <summary>What the table's columns mean where that is not obvious, and how the sweep was warmed up.</summary>
    internal static IEnumerable<string> Footnotes(VerifyBenchmarkReport report)
    {
        yield return "verifies/s and x libsodium come from the median of three paired slices (libsodium, then the backend); " +
            "libsodium/s is the libsodium slice of that pair, so verifies/s / libsodium/s = x libsodium. The libsodium rows are timed on their own.";
        if (report.Results.Any(r => r.Threads is { } n && r.ThreadsRequested is { } asked && asked != n))
        {
            yield return $"threads: the threads that verified the batch; * marks fewer than --threads asked for (simd splits a batch only from {SimdBatchVerifier.MinItemsPerThread} items per thread).";
        }

        if (report.Results.Any(r => VerifierStartup.IsGpuName(r.Backend)))
        {
            yield return $"threads for a GPU backend: the host threads of its share of a batch (copies into page-locked buffers; SHA-512 of messages over {GpuBatchVerifier.MaxDeviceHashedMessageBytes >> 10} KiB, and of all with MEGANET_GPU_HOST_HASH=1), the largest --threads; timed once.";
        }

        foreach (SkippedBackend skipped in report.Skipped)
        {
            yield return $"{skipped.Backend}: not measured: {skipped.Reason}";
        }

        if (report.WarmUp.Count > 0)
        {
            List<WarmUpResult> unsettled = report.WarmUp.Where(w => !w.Settled).ToList();
            yield return $"warm-up: before the sweep each configuration ran untimed ({string.Join(", ", report.WarmUp.Select(w => $"{w.Configuration} {w.Seconds:F1} s"))})" +
                (unsettled.Count == 0
                    ? $", each until no method had been JIT-compiled for {VerifyBenchmark.QuietTime.TotalSeconds:0.#} s and its rate held."
                    : $"; {string.Join(", ", unsettled.Select(w => w.Configuration))} had not settled within the bound (5 x --seconds, at most 10 s), so its first points may be low.");
        }
    }
}
