using System.Diagnostics;
using Grpc.Core;
using MegaNet.Api;
using MegaNet.Api.V1;

namespace MegaNet.Node.Benchmarking;

/// <summary>What <c>meganet load</c> measured.</summary>
public sealed record LoadReport(string Mode, int Clients, int Sent, int Accepted, int Refused, double Seconds, double P50Ms, double P99Ms,
    double MeanServerBatch, string Backend)
{
    public double AcceptedPerSecond => Accepted / Seconds;
}

/// <summary>
/// Drives N concurrent clients at a node over unary or streaming Submit with pre-sealed envelopes (so client-side
/// sealing does not count), and reports accepted envelopes/s, latency percentiles and the verifier batch sizes
/// the node achieved (from Status).
/// </summary>
public sealed class LoadGenerator(Uri node, int clients, TextWriter? progress = null)
{
    /// <summary>Seals <paramref name="count"/> envelopes from <paramref name="senders"/> sending keys to <paramref name="recipients"/> recipients.</summary>
    public static List<Envelope> Prepare(int count, int senders = 256, int recipients = 64)
    {
        Identity[] from = Enumerable.Range(0, senders).Select(_ => Identity.Create()).ToArray();
        Identity[] to = Enumerable.Range(0, recipients).Select(_ => Identity.Create()).ToArray();
        var envelopes = new Envelope[count];
        DateTimeOffset expires = DateTimeOffset.UtcNow.AddDays(1);
        Parallel.For(0, count, i =>
        {
            byte[] content = BitConverter.GetBytes(i);
            envelopes[i] = EnvelopeFormat.Seal(from[i % senders], to[i % recipients].Card, content, "application/octet-stream", null, expires);
        });
        foreach (Identity id in from.Concat(to))
        {
            id.Dispose();
        }

        return [.. envelopes];
    }

    /// <summary>Unary submits: each client sends its share one call at a time, optionally paced to <paramref name="targetRate"/> per second in total.</summary>
    public async Task<LoadReport> RunUnaryAsync(IReadOnlyList<Envelope> envelopes, double targetRate = 0, CancellationToken ct = default)
    {
        using var client = new MegaNetClient(node);
        StatusResponse before = await client.Relay.StatusAsync(new StatusRequest(), cancellationToken: ct);
        var latencies = new double[envelopes.Count];
        int accepted = 0, refused = 0;
        var watch = Stopwatch.StartNew();
        await Task.WhenAll(Enumerable.Range(0, clients).Select(c => Task.Run(async () =>
        {
            for (int i = c; i < envelopes.Count; i += clients)
            {
                if (targetRate > 0)
                {
                    double due = i / targetRate;
                    double wait = due - watch.Elapsed.TotalSeconds;
                    if (wait > 0)
                    {
                        await Task.Delay(TimeSpan.FromSeconds(wait), ct);
                    }
                }

                long start = Stopwatch.GetTimestamp();
                try
                {
                    await client.Relay.SubmitAsync(new SubmitRequest { Envelope = envelopes[i] }, cancellationToken: ct);
                    Interlocked.Increment(ref accepted);
                }
                catch (RpcException)
                {
                    Interlocked.Increment(ref refused);
                }

                latencies[i] = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
            }
        }, ct)));
        double seconds = watch.Elapsed.TotalSeconds;
        return await Report("unary", envelopes.Count, accepted, refused, seconds, latencies, client, before, ct);
    }

    /// <summary>Streaming submits: each client opens one SubmitStream and pipelines its share.</summary>
    public async Task<LoadReport> RunStreamingAsync(IReadOnlyList<Envelope> envelopes, CancellationToken ct = default)
    {
        using var client = new MegaNetClient(node);
        StatusResponse before = await client.Relay.StatusAsync(new StatusRequest(), cancellationToken: ct);
        var sentAt = new long[envelopes.Count];
        var latencies = new double[envelopes.Count];
        int accepted = 0, refused = 0;
        var watch = Stopwatch.StartNew();
        await Task.WhenAll(Enumerable.Range(0, clients).Select(c => Task.Run(async () =>
        {
            using AsyncDuplexStreamingCall<SubmitRequest, SubmitResult> call = client.Relay.SubmitStream(cancellationToken: ct);
            var mine = Enumerable.Range(0, envelopes.Count).Where(i => i % clients == c).ToList();
            Task reader = Task.Run(async () =>
            {
                int k = 0;
                await foreach (SubmitResult r in call.ResponseStream.ReadAllAsync(ct))
                {
                    int i = mine[k++];
                    latencies[i] = Stopwatch.GetElapsedTime(sentAt[i]).TotalMilliseconds;
                    if (r.StatusCode == 0)
                    {
                        Interlocked.Increment(ref accepted);
                    }
                    else
                    {
                        Interlocked.Increment(ref refused);
                    }
                }
            }, ct);
            foreach (int i in mine)
            {
                sentAt[i] = Stopwatch.GetTimestamp();
                await call.RequestStream.WriteAsync(new SubmitRequest { Envelope = envelopes[i] }, ct);
            }

            await call.RequestStream.CompleteAsync();
            await reader;
        }, ct)));
        double seconds = watch.Elapsed.TotalSeconds;
        return await Report("stream", envelopes.Count, accepted, refused, seconds, latencies, client, before, ct);
    }

    private async Task<LoadReport> Report(string mode, int sent, int accepted, int refused, double seconds, double[] latencies, MegaNetClient client, StatusResponse before, CancellationToken ct)
    {
        StatusResponse after = await client.Relay.StatusAsync(new StatusRequest(), cancellationToken: ct);
        double batches = after.BatchesVerified - before.BatchesVerified;
        double signatures = after.SignaturesVerified - before.SignaturesVerified;
        Array.Sort(latencies);
        var report = new LoadReport(mode, clients, sent, accepted, refused, seconds, Percentile(latencies, 0.50), Percentile(latencies, 0.99),
            batches == 0 ? 0 : signatures / batches, after.VerifierBackend);
        progress?.WriteLine($"{mode,-6} clients {clients}: {report.AcceptedPerSecond,10:N0} accepted/s ({accepted}/{sent}, {refused} refused), p50 {report.P50Ms:F2} ms, p99 {report.P99Ms:F2} ms, mean verifier batch {report.MeanServerBatch:F1} ({report.Backend})");
        return report;
    }

    private static double Percentile(double[] sorted, double p) => sorted.Length == 0 ? 0 : sorted[Math.Min(sorted.Length - 1, (int)(p * sorted.Length))];
}
