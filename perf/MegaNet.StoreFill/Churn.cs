using System.Collections.Concurrent;
using System.Diagnostics;
using System.Diagnostics.Metrics;
using MegaNet.Store;

namespace MegaNet.StoreFill;

/// <summary>
/// Steady traffic with deliveries: 1 KiB puts at a fixed rate (open loop, 10 a call, to 64 recipients) and each
/// acknowledged about 2 s after it was stored, as a mailbox owner that is online would, so the table's log fills with
/// garbage and checkpoints start compactions. Reports each put call's latency from the time it was due (p50, p99,
/// p99.9, max; per 5 s window and overall after the first) and how long checkpoints and compaction steps held writes up (the store's
/// <c>meganet.store.checkpoint_pause</c> and <c>meganet.store.compaction_pause</c> histograms): what an operator's
/// clients feel while the store reclaims space.
/// </summary>
internal static class Churn
{
    private const int PutsPerCall = 10;
    private const int Recipients = 64;
    private static readonly TimeSpan AckAfter = TimeSpan.FromSeconds(2);
    private static readonly TimeSpan Window = TimeSpan.FromSeconds(5);

    public static async Task<int> RunAsync(string dir, byte[] secretKey, int seconds, int rate, CancellationToken stop)
    {
        var options = new StoreOptions
        {
            DataDirectory = dir,
            NodeSecretKey = secretKey,
            MemoryBudgetBytes = 64L << 20,
            CheckpointInterval = TimeSpan.FromSeconds(5),
            MailboxMaxCount = int.MaxValue,
            MailboxMaxBytes = long.MaxValue,
        };
        var pauses = new PauseStats();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Name is "meganet.store.checkpoint_pause" or "meganet.store.compaction_pause")
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<double>((instrument, ms, _, _) => pauses.Add(instrument.Name, ms));
        listener.Start();

        await using FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options, stop).ConfigureAwait(false);
        var random = new Random(2);
        byte[][] recipients = [.. Enumerable.Range(0, Recipients).Select(_ => Bytes(random, 32))];
        byte[] template = Bytes(random, 1024);
        var toAck = new ConcurrentQueue<(long StoredAt, int Recipient, ulong Seq)>();
        var latencies = new List<double>();
        var window = new List<double>();
        long failures = 0, acked = 0, windowStored = 0;
        using var inFlight = new SemaphoreSlim(10_000);
        Console.WriteLine($"churn: {rate:N0} puts/s of 1 KiB for {seconds} s, {PutsPerCall} a call, each acknowledged {AckAfter.TotalSeconds:F0} s after it was stored; " +
            $"64 MiB memory budget, a checkpoint every {options.CheckpointInterval.TotalSeconds:F0} s; {Environment.ProcessorCount} cores");

        // Runs shorter than two windows count every call (the first window would be most of them).
        bool skipFirstWindow = seconds >= 2 * Window.TotalSeconds;
        var clock = Stopwatch.StartNew();
        long start = Stopwatch.GetTimestamp();
        Task acking = Task.Run(async () =>
        {
            var due = new Dictionary<int, List<ulong>>();
            while (!stop.IsCancellationRequested && clock.Elapsed < TimeSpan.FromSeconds(seconds))
            {
                await Task.Delay(10, CancellationToken.None).ConfigureAwait(false);
                long now = Stopwatch.GetTimestamp();
                due.Clear();
                while (toAck.TryPeek(out var e) && Stopwatch.GetElapsedTime(e.StoredAt, now) >= AckAfter && toAck.TryDequeue(out e))
                {
                    (due.TryGetValue(e.Recipient, out List<ulong>? seqs) ? seqs : due[e.Recipient] = []).Add(e.Seq);
                }

                foreach ((int recipient, List<ulong> seqs) in due)
                {
                    foreach (ulong[] chunk in seqs.Chunk(1_000))
                    {
                        acked += await store.AckAsync(recipients[recipient], chunk, CancellationToken.None).ConfigureAwait(false);
                    }
                }
            }
        });

        long issued = 0, next = 0;
        TimeSpan nextReport = Window;
        var calls = new List<Task>();
        while (!stop.IsCancellationRequested && clock.Elapsed < TimeSpan.FromSeconds(seconds))
        {
            long due = (long)(clock.Elapsed.TotalSeconds * rate);
            while (issued + PutsPerCall <= due)
            {
                // The schedule's time for this call, not the time this loop got to it: a stall here (a GC, the
                // thread pool, the 1 ms delay below) is then in the latency of every call due during it.
                long dueAt = start + (long)((issued + PutsPerCall) * (double)Stopwatch.Frequency / rate);
                await inFlight.WaitAsync(stop).ConfigureAwait(false);
                var puts = new PutRequest[PutsPerCall];
                int[] to = new int[PutsPerCall];
                for (int i = 0; i < puts.Length; i++)
                {
                    byte[] envelope = (byte[])template.Clone();
                    BitConverter.TryWriteBytes(envelope, next);
                    to[i] = (int)(next++ % Recipients);
                    puts[i] = new PutRequest(envelope, recipients[to[i]], DateTimeOffset.UtcNow.AddDays(1));
                }

                issued += PutsPerCall;
                calls.Add(PutAsync(puts, to, dueAt));
            }

            if (clock.Elapsed >= nextReport)
            {
                double[] w;
                lock (latencies)
                {
                    w = [.. window];
                    window.Clear();
                }

                Array.Sort(w);
                Console.WriteLine($"  {nextReport.TotalSeconds,4:F0} s  {Interlocked.Exchange(ref windowStored, 0) / Window.TotalSeconds,8:N0} stored/s  p50 {At(w, 0.5),7:F2} ms  p99 {At(w, 0.99),7:F2} ms  max {At(w, 1),7:F2} ms  " +
                    $"table {store.TableExtent.Tail - store.TableExtent.Begin >> 20:N0} MiB  {pauses.Line()}");
                nextReport += Window;
            }

            calls.RemoveAll(t => t.IsCompleted);
            await Task.Delay(1, CancellationToken.None).ConfigureAwait(false);
        }

        await Task.WhenAll(calls).ConfigureAwait(false);
        await acking.ConfigureAwait(false);
        double[] all;
        lock (latencies)
        {
            all = [.. latencies];
        }

        Array.Sort(all);
        Console.WriteLine($"{issued:N0} puts in {seconds} s ({failures:N0} failed), {acked:N0} acknowledged; put call latency from its due time {(skipFirstWindow ? $"after the first {Window.TotalSeconds:F0} s" : "over the whole run")}: " +
            $"p50 {At(all, 0.5):F2} ms, p99 {At(all, 0.99):F2} ms, p99.9 {At(all, 0.999):F2} ms, max {At(all, 1):F2} ms");
        Console.WriteLine($"writes held up: {pauses.Line()}");
        return failures == 0 ? 0 : 1;

        async Task PutAsync(PutRequest[] puts, int[] to, long dueAt)
        {
            try
            {
                IReadOnlyList<PutResult> results = await store.PutManyAsync(puts, CancellationToken.None).ConfigureAwait(false);
                double ms = Stopwatch.GetElapsedTime(dueAt).TotalMilliseconds;
                long storedAt = Stopwatch.GetTimestamp();
                for (int i = 0; i < results.Count; i++)
                {
                    if (results[i].Receipt is { } receipt)
                    {
                        toAck.Enqueue((storedAt, to[i], receipt.MailboxSeq));
                        Interlocked.Increment(ref windowStored);
                    }
                    else
                    {
                        Interlocked.Increment(ref failures);
                    }
                }

                lock (latencies)
                {
                    // The overall figures leave out the first window: the JIT and the first faults of the table's
                    // memory held calls up to 100 ms there, with neither a checkpoint nor a compaction yet.
                    if (!skipFirstWindow || clock.Elapsed >= Window)
                    {
                        latencies.Add(ms);
                    }

                    window.Add(ms);
                }
            }
            finally
            {
                inFlight.Release();
            }
        }
    }

    private static double At(double[] sorted, double quantile) =>
        sorted.Length == 0 ? double.NaN : sorted[Math.Min(sorted.Length - 1, (int)Math.Ceiling(quantile * sorted.Length) - 1)];

    private static byte[] Bytes(Random random, int n)
    {
        byte[] b = new byte[n];
        random.NextBytes(b);
        return b;
    }

    /// <summary>The store's pause histograms, as the listener hears them.</summary>
    private sealed class PauseStats
    {
        private readonly Lock _lock = new();
        private int _checkpoints, _steps;
        private double _checkpointMax, _stepMax, _stepSum;

        public void Add(string name, double ms)
        {
            lock (_lock)
            {
                if (name == "meganet.store.checkpoint_pause")
                {
                    _checkpoints++;
                    _checkpointMax = Math.Max(_checkpointMax, ms);
                }
                else
                {
                    _steps++;
                    _stepMax = Math.Max(_stepMax, ms);
                    _stepSum += ms;
                }
            }
        }

        public string Line()
        {
            lock (_lock)
            {
                return $"checkpoints {_checkpoints} (longest pause {_checkpointMax:F1} ms), compaction steps {_steps} (longest {_stepMax:F1} ms, {_stepSum:F0} ms in all)";
            }
        }
    }
}
