using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using MegaNet.Core.Ed25519;
using MegaNet.Store;

namespace MegaNet.StoreFill;

/// <summary>
/// Sustained store throughput: fills a fresh store with acknowledged 1 KiB puts from several producers (each sending
/// batches back to back, so groups overlap in the store's pipelined committer), reports puts/s, CPU per put, bytes
/// written and allocated per put, then times a reopen. BenchmarkDotNet's short iterations cannot show a table growing
/// past its memory; this can.
/// Run: <c>dotnet run -c Release --project perf/MegaNet.StoreFill -- [puts] [batch] [producers] [--exit]</c>
/// (defaults 1,000,000, 1,000, 4; <c>--help</c> prints the usage, and any other option is refused). With <c>--exit</c> it exits without closing the store and prints the directory;
/// <c>reopen DIR</c> then times recovery after an exit without a shutdown checkpoint and deletes DIR. Because
/// <c>reopen</c> deletes what it is given, it accepts only a directory a fill created (marked with
/// <see cref="MarkerFile"/>) and never one holding a node key, so a node's data directory cannot be passed by mistake.
/// </summary>
internal static class Program
{
    /// <summary>Written into every directory a fill creates, before the store opens there.</summary>
    internal const string MarkerFile = ".meganet-storefill";

    private const string Usage = """
        usage: MegaNet.StoreFill [puts] [batch] [producers] [--exit]
               MegaNet.StoreFill reopen DIR
               MegaNet.StoreFill churn [seconds] [rate]
          puts       acknowledged 1 KiB puts to fill a fresh store with (default 1,000,000: about 1.3 GiB on disk)
          batch      puts per PutManyAsync call (default 1,000)
          producers  concurrent callers, each sending batches back to back (default 4)
          --exit     exit without closing the store and print its directory, for reopen DIR
          reopen DIR time recovery of a directory a fill left with --exit, then delete it
          churn      steady 1 KiB puts at rate a second (default 10,000) for seconds (default 30), each acknowledged
                     2 s after it was stored, so checkpoints start compactions: put latency and how long checkpoints
                     and compaction steps held writes up
        """;

    private static async Task<int> Main(string[] args)
    {
        if (args.Any(a => a is "--help" or "-h" or "-?"))
        {
            Console.WriteLine(Usage);
            return 0;
        }

        // A misspelt option (--exti) used to be dropped and a full fill run without it.
        if (args.FirstOrDefault(a => a.StartsWith('-') && a != "--exit") is { } unknown)
        {
            return Fail($"unknown option {unknown}; the only option is --exit (--help shows the usage)");
        }

        byte[] seed = new byte[32], publicKey = new byte[32], secretKey = new byte[64];
        Ed25519Signer.KeyPairFromSeed(seed, publicKey, secretKey);
        if (args.Length > 0 && args[0] == "reopen")
        {
            if (args.Length != 2)
            {
                return Fail("usage: reopen DIR (a directory printed by a fill run with --exit)");
            }

            string? refusal = RefuseToDelete(args[1]);
            if (refusal is not null)
            {
                return Fail(refusal);
            }

            // Kept when recovery throws, so a failed reopen can be looked at; deleted only after it succeeded.
            await Reopen(args[1], secretKey, "after an exit without shutdown").ConfigureAwait(false);
            Directory.Delete(args[1], recursive: true);
            return 0;
        }

        bool churn = args.Length > 0 && args[0] == "churn";
        string[] numbers = args.Skip(churn ? 1 : 0).Where(a => !a.StartsWith("--", StringComparison.Ordinal)).ToArray();
        int total = 0, batch = 0, producers = 0, seconds = 0, rate = 0;
        if (churn
            ? !TryCount(numbers, 0, 30, out seconds) || !TryCount(numbers, 1, 10_000, out rate) || numbers.Length > 2 || args.Contains("--exit")
            : !TryCount(numbers, 0, 1_000_000, out total) || !TryCount(numbers, 1, 1_000, out batch) || !TryCount(numbers, 2, 4, out producers) || numbers.Length > 3)
        {
            return Fail("usage: [puts] [batch] [producers] [--exit] (positive integers), reopen DIR, or churn [seconds] [rate]; --help says more");
        }

        bool exitWithoutClosing = args.Contains("--exit");

        // Ctrl+C or SIGTERM ends the fill through this token, so the finally below still removes the directory (the
        // default handling ended the process under it, leaving a store of up to 1.3 GiB behind in /tmp).
        using var stop = new CancellationTokenSource();
        int exitCode = 130;
        void OnSignal(PosixSignalContext context)
        {
            // The first signal asks the fill to stop and clean up; a second one ends the process the usual way.
            if (stop.IsCancellationRequested)
            {
                return;
            }

            context.Cancel = true;
            exitCode = context.Signal == PosixSignal.SIGTERM ? 143 : 130;
            stop.Cancel();
        }

        using PosixSignalRegistration onInterrupt = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);
        using PosixSignalRegistration onTerminate = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
        string dir = Directory.CreateTempSubdirectory("meganet-fill-").FullName;
        File.WriteAllText(Path.Combine(dir, MarkerFile), "created by perf/MegaNet.StoreFill; reopen DIR may delete this directory\n");
        // The fill owns this directory: it is removed however the run ends (a failed put, an exception in the store,
        // a clean finish), except by --exit, which hands it to a later "reopen DIR".
        bool handedOver = false;
        FasterEnvelopeStore? store = null;
        try
        {
            if (churn)
            {
                return await Churn.RunAsync(dir, secretKey, seconds, rate, stop.Token).ConfigureAwait(false);
            }

            store = await FasterEnvelopeStore.OpenAsync(Options(dir, secretKey)).ConfigureAwait(false);
            var random = new Random(1);
            byte[][] recipients = Enumerable.Range(0, 4096).Select(_ => Bytes(random, 32)).ToArray();
            DateTimeOffset expiry = DateTimeOffset.UtcNow.AddDays(1);
            Console.WriteLine($"building {total:N0} requests ...");
            var requests = new PutRequest[total];
            for (int i = 0; i < total; i++)
            {
                if ((i & 0xFFFF) == 0)
                {
                    stop.Token.ThrowIfCancellationRequested();
                }

                byte[] envelope = Bytes(random, 1024);
                BitConverter.TryWriteBytes(envelope, i);
                requests[i] = new PutRequest(envelope, recipients[i % recipients.Length], expiry);
            }

            TimeSpan cpu0 = Process.GetCurrentProcess().TotalProcessorTime;
            long allocated0 = GC.GetTotalAllocatedBytes(precise: true);
            long written0 = WrittenBytes();
            var clock = Stopwatch.StartNew();
            int next = 0;
            long done = 0, report = total / 10;
            await Task.WhenAll(Enumerable.Range(0, producers).Select(async _ =>
            {
                await Task.Yield();
                int start;
                while ((start = Interlocked.Add(ref next, batch) - batch) < total)
                {
                    stop.Token.ThrowIfCancellationRequested();
                    var slice = new ArraySegment<PutRequest>(requests, start, Math.Min(batch, total - start));
                    IReadOnlyList<PutResult> results = await store.PutManyAsync(slice).ConfigureAwait(false);
                    foreach (PutResult result in results)
                    {
                        if (result.Receipt is not { Duplicate: false })
                        {
                            throw new InvalidOperationException($"a put was not stored as new: {result.Error?.Message ?? "duplicate"}");
                        }
                    }

                    long d = Interlocked.Add(ref done, slice.Count);
                    long mark = Interlocked.Read(ref report);
                    if (d >= mark && Interlocked.CompareExchange(ref report, mark + (total / 10), mark) == mark)
                    {
                        Console.WriteLine($"  {d,12:N0} puts  {d / clock.Elapsed.TotalSeconds,10:N0}/s so far");
                    }
                }
            })).ConfigureAwait(false);
            clock.Stop();
            double cpuMicros = (Process.GetCurrentProcess().TotalProcessorTime - cpu0).TotalMilliseconds * 1000 / total;
            Console.WriteLine($"{total:N0} acknowledged 1 KiB puts in {clock.Elapsed.TotalSeconds:F1} s = {total / clock.Elapsed.TotalSeconds:N0}/s " +
                $"({producers} producers, batches of {batch}, {Environment.ProcessorCount} cores); CPU {cpuMicros:F1} µs/put; " +
                $"written {(WrittenBytes() - written0) / total:N0} B/put; allocated {(GC.GetTotalAllocatedBytes(precise: true) - allocated0) / total:N0} B/put");
            if (exitWithoutClosing)
            {
                Console.WriteLine($"exiting without closing the store; time its recovery with: reopen {dir}");
                handedOver = true;
                Environment.Exit(0);
            }

            stop.Token.ThrowIfCancellationRequested();
            var closing = Stopwatch.StartNew();
            await store.DisposeAsync().ConfigureAwait(false);
            long size = new DirectoryInfo(dir).EnumerateFiles("*", SearchOption.AllDirectories).Sum(f => f.Length);
            Console.WriteLine($"closed (final checkpoint) in {closing.Elapsed.TotalSeconds:F1} s; store {size >> 20:N0} MiB");
            stop.Token.ThrowIfCancellationRequested();
            await Reopen(dir, secretKey, "after a clean shutdown").ConfigureAwait(false);
            return stop.IsCancellationRequested ? exitCode : 0;
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested)
        {
            Console.Error.WriteLine($"interrupted; removing {dir}");
            return exitCode;
        }
        finally
        {
            if (!handedOver)
            {
                if (store is not null)
                {
                    try
                    {
                        await store.DisposeAsync().ConfigureAwait(false); // no-op when already closed
                    }
                    catch (Exception e) when (e is StoreUnavailableException or IOException)
                    {
                        // The fill already failed (a full disk, most likely): its error is the one to report, and the
                        // directory still goes.
                    }
                }

                try
                {
                    Directory.Delete(dir, recursive: true);
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                    // Said, not thrown: an exception here would hide the one that ended the fill.
                    Console.Error.WriteLine($"could not remove {dir}: {e.Message}");
                }
            }
        }
    }

    /// <summary>Why <paramref name="dir"/> must not be deleted by <c>reopen</c>, or null when a fill created it.</summary>
    internal static string? RefuseToDelete(string dir)
    {
        if (!Directory.Exists(dir))
        {
            return $"reopen: {dir} is not a directory";
        }

        if (File.Exists(Path.Combine(dir, "node.key")))
        {
            return $"reopen: {dir} holds a node.key (a node's data directory); refusing to delete it";
        }

        if (!File.Exists(Path.Combine(dir, MarkerFile)))
        {
            return $"reopen: {dir} was not created by a fill (no {MarkerFile}); refusing to delete it";
        }

        return null;
    }

    private static bool TryCount(string[] numbers, int index, int fallback, out int value)
    {
        if (index >= numbers.Length)
        {
            value = fallback;
            return true;
        }

        return int.TryParse(numbers[index], NumberStyles.None, CultureInfo.InvariantCulture, out value) && value > 0;
    }

    private static int Fail(string message)
    {
        Console.Error.WriteLine(message);
        return 1;
    }

    private static async Task Reopen(string dir, byte[] secretKey, string how)
    {
        var clock = Stopwatch.StartNew();
        StoreRecoveryProgress? loaded = null;
        StoreOptions options = Options(dir, secretKey);
        // The checkpoint's load (table, mailboxes, Merkle tree) apart from the log's replay after it: the reopen after a
        // clean shutdown is nearly all load, the one after --exit mostly replay.
        options.RecoveryProgress = new RecoveryListener(p => loaded = p.Stage == StoreRecoveryStage.Loaded ? p : loaded);
        FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options).ConfigureAwait(false);
        Console.WriteLine($"reopened {how} in {clock.Elapsed.TotalSeconds:F1} s; {store.TreeSize:N0} leaves; " +
            $"checkpoint loaded {loaded?.Elapsed.TotalSeconds ?? 0:F2} s into the open (Merkle tree: {loaded?.TreeLoad}, {loaded?.LeavesHashed ?? 0:N0} leaves hashed)");
        await store.DisposeAsync().ConfigureAwait(false);
    }

    private static StoreOptions Options(string dir, byte[] secretKey) => new()
    {
        DataDirectory = dir,
        NodeSecretKey = secretKey,
        MailboxMaxCount = int.MaxValue,
        MailboxMaxBytes = long.MaxValue,
    };

    private static byte[] Bytes(Random random, int n)
    {
        byte[] b = new byte[n];
        random.NextBytes(b);
        return b;
    }

    // Bytes this process handed to write system calls (Linux /proc/self/io); 0 elsewhere.
    private static long WrittenBytes()
    {
        const string Path = "/proc/self/io";
        if (!File.Exists(Path))
        {
            return 0;
        }

        string? line = File.ReadLines(Path).FirstOrDefault(l => l.StartsWith("wchar:", StringComparison.Ordinal));
        return line is null ? 0 : long.Parse(line.AsSpan(6).Trim(), CultureInfo.InvariantCulture);
    }
}

/// <summary>Hears the store's recovery reports on the reporting thread (<see cref="Progress{T}"/> would post them to the
/// pool, after the open has returned).</summary>
internal sealed class RecoveryListener(Action<StoreRecoveryProgress> report) : IProgress<StoreRecoveryProgress>
{
    public void Report(StoreRecoveryProgress value) => report(value);
}
