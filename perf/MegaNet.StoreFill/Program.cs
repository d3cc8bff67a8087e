using System.Diagnostics;
using System.Globalization;
using MegaNet.Core.Ed25519;
using MegaNet.Store;

namespace MegaNet.StoreFill;

/// <summary>
/// Sustained store throughput: fills a fresh store with acknowledged 1 KiB puts from several producers (each sending
/// batches back to back, so groups overlap in the store's pipelined committer), reports puts/s, CPU per put, bytes
/// written and allocated per put, then times a reopen. BenchmarkDotNet's short iterations cannot show a table growing
/// past its memory; this can.
/// Run: <c>dotnet run -c Release --project perf/MegaNet.StoreFill -- [puts] [batch] [producers] [--exit]</c>
/// (defaults 1,000,000, 1,000, 4). With <c>--exit</c> it exits without closing the store and prints the directory;
/// <c>reopen DIR</c> then times recovery after an exit without a shutdown checkpoint.
/// </summary>
internal static class Program
{
    private static async Task<int> Main(string[] args)
    {
        byte[] seed = new byte[32], publicKey = new byte[32], secretKey = new byte[64];
        Ed25519Signer.KeyPairFromSeed(seed, publicKey, secretKey);
        if (args.Length == 2 && args[0] == "reopen")
        {
            await Reopen(args[1], secretKey, "after an exit without shutdown").ConfigureAwait(false);
            Directory.Delete(args[1], recursive: true);
            return 0;
        }

        string[] numbers = args.Where(a => !a.StartsWith("--", StringComparison.Ordinal)).ToArray();
        int total = numbers.Length > 0 ? int.Parse(numbers[0], CultureInfo.InvariantCulture) : 1_000_000;
        int batch = numbers.Length > 1 ? int.Parse(numbers[1], CultureInfo.InvariantCulture) : 1_000;
        int producers = numbers.Length > 2 ? int.Parse(numbers[2], CultureInfo.InvariantCulture) : 4;
        bool exitWithoutClosing = args.Contains("--exit");

        string dir = Directory.CreateTempSubdirectory("meganet-fill-").FullName;
        FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(Options(dir, secretKey)).ConfigureAwait(false);
        var random = new Random(1);
        byte[][] recipients = Enumerable.Range(0, 4096).Select(_ => Bytes(random, 32)).ToArray();
        DateTimeOffset expiry = DateTimeOffset.UtcNow.AddDays(1);
        Console.WriteLine($"building {total:N0} requests ...");
        var requests = new PutRequest[total];
        for (int i = 0; i < total; i++)
        {
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
            Environment.Exit(0);
        }

        var closing = Stopwatch.StartNew();
        await store.DisposeAsync().ConfigureAwait(false);
        long size = new DirectoryInfo(dir).EnumerateFiles("*", SearchOption.AllDirectories).Sum(f => f.Length);
        Console.WriteLine($"closed (final checkpoint) in {closing.Elapsed.TotalSeconds:F1} s; store {size >> 20:N0} MiB");
        await Reopen(dir, secretKey, "after a clean shutdown").ConfigureAwait(false);
        Directory.Delete(dir, recursive: true);
        return 0;
    }

    private static async Task Reopen(string dir, byte[] secretKey, string how)
    {
        var clock = Stopwatch.StartNew();
        FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(Options(dir, secretKey)).ConfigureAwait(false);
        Console.WriteLine($"reopened {how} in {clock.Elapsed.TotalSeconds:F1} s; {store.TreeSize:N0} leaves");
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
