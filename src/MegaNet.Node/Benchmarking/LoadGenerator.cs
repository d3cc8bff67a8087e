using System.Diagnostics;
using Grpc.Core;
using MegaNet.Api;
using MegaNet.Api.V1;

namespace MegaNet.Node.Benchmarking;

/// <summary>What <c>meganet load</c> measured. Latency percentiles are over accepted calls (nearest rank).
/// <paramref name="SteadyP50Ms"/> and <paramref name="SteadyP99Ms"/> cover only the calls started after the first
/// <see cref="LoadGenerator.WarmUpSeconds"/> seconds (the node's code paths are compiled and tiered up by then) and
/// <paramref name="SteadyAcceptedPerSecond"/> the acceptances completed after them; NaN when fewer than 1,000 calls
/// started after that. <paramref name="OfferedPerSecond"/> is the rate calls were started at.</summary>
public sealed record LoadReport(string Mode, int Clients, int Sent, int Accepted, int Refused, double Seconds, double P50Ms, double P99Ms,
    double SteadyP50Ms, double SteadyP99Ms, double SteadyAcceptedPerSecond, double MeanServerBatch, string Backend, double OfferedPerSecond = double.NaN)
{
    public double AcceptedPerSecond => Accepted / Seconds;
}

/// <summary>
/// Drives N concurrent clients at a node over unary or streaming Submit with pre-sealed envelopes (so client-side
/// sealing does not count), and reports accepted envelopes/s, latency percentiles and the verifier batch sizes
/// the node achieved (from Status). The clients spread over <c>connections</c> HTTP/2 connections (client i uses
/// connection i mod connections).
/// </summary>
public sealed class LoadGenerator(Uri node, int clients, int connections, TextWriter? progress = null)
{
    /// <summary>Calls started this long after a phase began count towards the steady-state percentiles.</summary>
    public const double WarmUpSeconds = 2;

    /// <summary>Seals <paramref name="count"/> envelopes from <paramref name="senders"/> sending keys to <paramref name="recipients"/> recipients
    /// (on every core; stops at <paramref name="ct"/>: sealing 400,000 takes about a minute here).</summary>
    public static List<Envelope> Prepare(int count, int senders = 256, int recipients = 64, CancellationToken ct = default)
    {
        Identity[] from = Enumerable.Range(0, senders).Select(_ => Identity.Create()).ToArray();
        Identity[] to = Enumerable.Range(0, recipients).Select(_ => Identity.Create()).ToArray();
        var envelopes = new Envelope[count];
        DateTimeOffset expires = DateTimeOffset.UtcNow.AddDays(1);
        try
        {
            Parallel.For(0, count, new ParallelOptions { CancellationToken = ct }, i =>
            {
                byte[] content = BitConverter.GetBytes(i);
                envelopes[i] = EnvelopeFormat.Seal(from[i % senders], to[i % recipients].Card, content, "application/octet-stream", null, expires);
            });
        }
        finally
        {
            foreach (Identity id in from.Concat(to))
            {
                id.Dispose();
            }
        }

        return [.. envelopes];
    }

    /// <summary>Unary submits over <c>clients</c> concurrent workers. Without <paramref name="targetRate"/> each worker sends
    /// its share one call at a time (closed loop: as fast as the node answers). With it the load is open: call i is due at
    /// i / <paramref name="targetRate"/> seconds whether or not earlier calls have returned, and its latency counts from
    /// then, not from when this client got round to sending it: a client (or node) that falls behind shows up in the
    /// latency instead of slowing the offered load and hiding itself. The report gives the rate calls really started at.</summary>
    public async Task<LoadReport> RunUnaryAsync(IReadOnlyList<Envelope> envelopes, double targetRate = 0, CancellationToken ct = default)
    {
        using Connections channels = await Connections.OpenAsync(node, Math.Clamp(connections, 1, clients), ct);
        MegaNetClient client = channels[0];
        StatusResponse before = await client.Relay.StatusAsync(new StatusRequest(), cancellationToken: ct);
        var latencies = new double[envelopes.Count];
        var startedAt = new double[envelopes.Count];
        var ok = new bool[envelopes.Count];
        int accepted = 0, refused = 0;
        var watch = Stopwatch.StartNew();

        async Task SubmitOneAsync(int i, double dueSeconds)
        {
            long start = Stopwatch.GetTimestamp();
            startedAt[i] = watch.Elapsed.TotalSeconds;
            // Open loop: the time this call was late to start counts too.
            double lateMs = dueSeconds >= 0 ? Math.Max(0, startedAt[i] - dueSeconds) * 1000 : 0;
            try
            {
                await channels[i % clients].Relay.SubmitAsync(new SubmitRequest { Envelope = envelopes[i] }, cancellationToken: ct);
                ok[i] = true;
                Interlocked.Increment(ref accepted);
            }
            catch (RpcException)
            {
                Interlocked.Increment(ref refused);
            }

            latencies[i] = lateMs + Stopwatch.GetElapsedTime(start).TotalMilliseconds;
        }

        await Task.WhenAll(Enumerable.Range(0, clients).Select(c => Task.Run(async () =>
        {
            var open = new List<Task>();
            for (int i = c; i < envelopes.Count; i += clients)
            {
                if (targetRate <= 0)
                {
                    await SubmitOneAsync(i, -1);
                    continue;
                }

                double due = i / targetRate;
                double wait = due - watch.Elapsed.TotalSeconds;
                if (wait > 0.001)
                {
                    await Task.Delay(TimeSpan.FromSeconds(wait), ct);
                }

                open.Add(SubmitOneAsync(i, due));
            }

            await Task.WhenAll(open);
        }, ct)));
        double seconds = watch.Elapsed.TotalSeconds;
        string mode = targetRate > 0 ? $"unary (open loop at {targetRate:N0}/s)" : "unary";
        return await Report(mode, envelopes.Count, accepted, refused, seconds, latencies, startedAt, ok, client, before, ct);
    }

    /// <summary>Streaming submits: each client opens one SubmitStream and pipelines its share.</summary>
    public async Task<LoadReport> RunStreamingAsync(IReadOnlyList<Envelope> envelopes, CancellationToken ct = default)
    {
        using Connections channels = await Connections.OpenAsync(node, Math.Clamp(connections, 1, clients), ct);
        MegaNetClient client = channels[0];
        StatusResponse before = await client.Relay.StatusAsync(new StatusRequest(), cancellationToken: ct);
        var sentAt = new long[envelopes.Count];
        var startedAt = new double[envelopes.Count];
        var latencies = new double[envelopes.Count];
        var ok = new bool[envelopes.Count];
        int accepted = 0, refused = 0;
        var watch = Stopwatch.StartNew();
        await Task.WhenAll(Enumerable.Range(0, clients).Select(c => Task.Run(async () =>
        {
            using AsyncDuplexStreamingCall<SubmitRequest, SubmitResult> call = channels[c].Relay.SubmitStream(cancellationToken: ct);
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
                        ok[i] = true;
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
                startedAt[i] = watch.Elapsed.TotalSeconds;
                await call.RequestStream.WriteAsync(new SubmitRequest { Envelope = envelopes[i] }, ct);
            }

            await call.RequestStream.CompleteAsync();
            await reader;
        }, ct)));
        double seconds = watch.Elapsed.TotalSeconds;
        return await Report("stream", envelopes.Count, accepted, refused, seconds, latencies, startedAt, ok, client, before, ct);
    }

    private async Task<LoadReport> Report(string mode, int sent, int accepted, int refused, double seconds, double[] latencies, double[] startedAt,
        bool[] ok, MegaNetClient client, StatusResponse before, CancellationToken ct)
    {
        StatusResponse after = await client.Relay.StatusAsync(new StatusRequest(), cancellationToken: ct);
        double batches = after.BatchesVerified - before.BatchesVerified;
        double signatures = after.SignaturesVerified - before.SignaturesVerified;
        // Latency of accepted calls only: a refusal (queue full, rate limit) is answered fast and would flatter them.
        double[] all = latencies.Where((_, i) => ok[i]).Order().ToArray();
        double[] steady = latencies.Where((_, i) => ok[i] && startedAt[i] >= WarmUpSeconds).Order().ToArray();
        // Acceptances completed after the warm-up, over the time after it: the rate once the node's code is tiered up.
        int acceptedLater = Enumerable.Range(0, sent).Count(i => ok[i] && startedAt[i] + (latencies[i] / 1000) >= WarmUpSeconds);
        double startSpan = sent > 1 ? startedAt.Max() - startedAt.Min() : 0;
        bool hasSteady = steady.Length >= 1000;
        var report = new LoadReport(mode, clients, sent, accepted, refused, seconds, Percentile(all, 0.50), Percentile(all, 0.99),
            hasSteady ? Percentile(steady, 0.50) : double.NaN, hasSteady ? Percentile(steady, 0.99) : double.NaN,
            hasSteady ? acceptedLater / (seconds - WarmUpSeconds) : double.NaN,
            batches == 0 ? 0 : signatures / batches, after.VerifierBackend, startSpan > 0 ? (sent - 1) / startSpan : double.NaN);
        string steadyText = hasSteady
            ? $" (after the first {WarmUpSeconds:0} s: {report.SteadyAcceptedPerSecond:N0} accepted/s, p50 {report.SteadyP50Ms:F2} ms, p99 {report.SteadyP99Ms:F2} ms)"
            : string.Empty;
        progress?.WriteLine($"{mode,-6} clients {clients}: {report.AcceptedPerSecond,10:N0} accepted/s ({accepted}/{sent}, {refused} refused; started at {report.OfferedPerSecond:N0}/s), p50 {report.P50Ms:F2} ms, p99 {report.P99Ms:F2} ms{steadyText}, mean verifier batch {report.MeanServerBatch:F1} ({report.Backend})");
        return report;
    }

    /// <summary>The clients' connections (channels), opened before timing starts. One shared HTTP/2 connection puts every
    /// call through a single frame reader on each side: unary at 14,000/s offered, p99 1.7 s on one connection against
    /// 53 ms on eight; streaming, eight connections buffer eight flow-control windows (p50 100-115 ms against 37 ms) for
    /// no more throughput (2026-11-29).</summary>
    private sealed class Connections : IDisposable
    {
        private readonly MegaNetClient[] _clients;

        private Connections(MegaNetClient[] clients) => _clients = clients;

        public MegaNetClient this[int client] => _clients[client % _clients.Length];

        public static async Task<Connections> OpenAsync(Uri node, int count, CancellationToken ct)
        {
            var connections = new Connections(Enumerable.Range(0, count).Select(_ => new MegaNetClient(node)).ToArray());
            try
            {
                await Task.WhenAll(connections._clients.Select(c => c.Relay.StatusAsync(new StatusRequest(), cancellationToken: ct).ResponseAsync));
                return connections;
            }
            catch
            {
                connections.Dispose();
                throw;
            }
        }

        public void Dispose()
        {
            foreach (MegaNetClient c in _clients)
            {
                c.Dispose();
            }
        }
    }

    /// <summary>Nearest rank: the smallest value with at least <paramref name="p"/> of the values at or below it.</summary>
    internal static double Percentile(double[] sorted, double p) =>
        sorted.Length == 0 ? double.NaN : sorted[Math.Clamp((int)Math.Ceiling(p * sorted.Length) - 1, 0, sorted.Length - 1)];
}
