using System.Diagnostics;
using System.Threading.Channels;
using Google.Protobuf;
using Grpc.Core;
using MegaNet.Api;
using MegaNet.Api.V1;
using MegaNet.Core.Interop;

namespace MegaNet.Node.Benchmarking;

/// <summary>What <c>meganet load</c> measured. Latency percentiles are over accepted calls (nearest rank).
/// <paramref name="SteadyP50Ms"/> and <paramref name="SteadyP99Ms"/> cover only the calls started after the first
/// <see cref="LoadGenerator.WarmUpSeconds"/> seconds (the node's code paths are compiled and tiered up by then) and
/// <paramref name="SteadyAcceptedPerSecond"/> the acceptances completed after them; NaN when fewer than 1,000 calls
/// started after that. <paramref name="OfferedPerSecond"/> is the rate calls were started at.
/// <paramref name="StartLateP50Ms"/> and <paramref name="StartLateP99Ms"/> (open loop only, else NaN) say how late this
/// load client itself started the accepted calls past their due times: that lag is the client's, not the node's, and
/// is included in the latency (which counts from the due time), so a reader can tell the two apart.
/// <paramref name="Refusals"/> says why calls were refused: a count per gRPC status with its first error text.
/// <paramref name="Cpu"/>: the cores this process (the load client, and an embedded node) and the whole machine kept
/// busy on average over the phase. <paramref name="StatusCalls"/>: the calls were <c>Status</c> calls (<c>--floor</c>),
/// which verify and store nothing, so the line counts answers, not accepted envelopes, and gives no verifier batch.</summary>
public sealed record LoadReport(string Mode, int Clients, int Sent, int Accepted, int Refused, double Seconds, double P50Ms, double P99Ms,
    double SteadyP50Ms, double SteadyP99Ms, double SteadyAcceptedPerSecond, double MeanServerBatch, string Backend, double OfferedPerSecond = double.NaN,
    double StartLateP50Ms = double.NaN, double StartLateP99Ms = double.NaN, string Refusals = "", CpuSpent? Cpu = null, bool StatusCalls = false)
{
    /// <summary>The client's start lateness, at p99, at or above this share of the latency p99 is worth a warning: that much
    /// of the latency is the client's own lag.</summary>
    public const double ClientLagWarningShare = 0.10;

    /// <summary>Accepted envelopes per second over the whole run, first seconds included.</summary>
    public double AcceptedPerSecond => Accepted / Seconds;

    /// <summary>True when the client's own start lateness is a large part of the latency (see <see cref="ClientLagWarningShare"/>).</summary>
    public bool ClientLagWarning => StartLateP99Ms >= ClientLagWarningShare * P99Ms;
}

/// <summary>
/// Drives N concurrent clients at a node over unary or streaming Submit with pre-sealed envelopes (so client-side
/// sealing does not count; streaming requests are encoded beforehand too), and reports accepted envelopes/s, latency
/// percentiles and the verifier batch sizes the node achieved (from Status). The clients spread over
/// <c>connections</c> HTTP/2 connections (client i uses connection i mod connections). <c>clientOptions</c> (e.g. a
/// trusted certificate) apply to every connection.
/// </summary>
public sealed class LoadGenerator(Uri node, int clients, int connections, TextWriter? progress = null, MegaNetClientOptions? clientOptions = null)
{
    /// <summary>Calls started this long after a phase began count towards the steady-state percentiles.</summary>
    public const double WarmUpSeconds = 2;

    /// <summary>Where each measured phase's calls are written, one row each (<c>meganet load --timeline</c>); none by default.</summary>
    internal LoadTimeline? Timeline { get; init; }

    /// <summary>Sending keys of <see cref="Prepare"/>: with the node's default token bucket (200 envelopes/s per sending
    /// key) 1,024 keys carry up to 204,800/s, so the load measures the node's capacity, not its anti-spam limit (256 keys
    /// capped it at 51,200/s, and two-core runs that streamed 80,000/s had a tenth of their envelopes refused).</summary>
    public const int DefaultSenders = 1024;

    /// <summary>Recipients of <see cref="Prepare"/>.</summary>
    public const int DefaultRecipients = 64;

    /// <summary>Seals <paramref name="count"/> envelopes from <paramref name="senders"/> sending keys to <paramref name="recipients"/> recipients
    /// (on every core; stops at <paramref name="ct"/>: about 8,000 a second on this project's 2-core machine).
    /// <paramref name="sealedOne"/>, when given, is called after each envelope, from the sealing threads.</summary>
    public static List<Envelope> Prepare(int count, int senders = DefaultSenders, int recipients = DefaultRecipients, Action? sealedOne = null, CancellationToken ct = default)
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
                sealedOne?.Invoke();
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
    /// i / <paramref name="targetRate"/> seconds whether or not earlier calls have returned (on client i mod clients), and
    /// its latency counts from then, not from when this client got round to sending it: a client (or node) that falls
    /// behind shows up in the latency instead of slowing the offered load and hiding itself. How late this client
    /// started each call is reported apart (<see cref="LoadReport.StartLateP99Ms"/>), so its own lag can be told from the
    /// node's. The report gives the rate calls really started at. With <paramref name="floor"/> each call is a
    /// <c>Status</c> call instead of a submission (the envelopes only set the count): the same clients, connections and
    /// schedule through the same gRPC client and server with nothing verified or stored, so its latency is what this
    /// machine's gRPC plumbing alone gives at that rate, a floor under the submissions'.</summary>
    public async Task<LoadReport> RunUnaryAsync(IReadOnlyList<Envelope> envelopes, double targetRate = 0, CancellationToken ct = default, bool floor = false)
    {
        using Connections channels = await Connections.OpenAsync(node, Math.Clamp(connections, 1, clients), clientOptions, ct);
        MegaNetClient client = channels[0];
        SettleHeap();
        StatusResponse before = await client.Relay.StatusAsync(new StatusRequest(), cancellationToken: ct);
        CpuUse cpuAtStart = CpuUse.Now();
        DateTimeOffset began = DateTimeOffset.UtcNow;
        var watch = Stopwatch.StartNew();
        var unary = new UnaryCalls(channels, clients, envelopes, watch, floor, ct);

        if (targetRate > 0)
        {
            // One pacing thread of its own starts every call on schedule (client i mod clients): it sleeps, so many
            // clients cost no more than one, and it is not a thread-pool thread that the calls' continuations delay.
            List<Task> open = await Task.Factory.StartNew(
                () => Pace(envelopes.Count, i => i / targetRate, watch, unary.StartAsync, ct), ct, TaskCreationOptions.LongRunning, TaskScheduler.Default);
            await Task.WhenAll(open);
        }
        else
        {
            await Task.WhenAll(Enumerable.Range(0, clients).Select(c => Task.Run(async () =>
            {
                for (int i = c; i < envelopes.Count; i += clients)
                {
                    await unary.StartAsync(i, -1);
                }
            }, ct)));
        }

        double seconds = watch.Elapsed.TotalSeconds;
        string mode = (floor ? "floor (Status calls, nothing verified or stored)" : "unary") + (targetRate > 0 ? $" (open loop at {targetRate:N0}/s)" : string.Empty);
        LoadReport report = await Report(mode, unary.Tally, seconds, cpuAtStart, client, before, ct, statusCalls: floor);
        // After Report has taken the phase's CPU: writing the rows is not the phase's work.
        Timeline?.Add(floor ? "floor" : "unary", floor ? "status" : "unary", began, unary.Tally.Calls);
        return report;
    }

    /// <summary>
    /// A mixed phase: envelopes streamed at <paramref name="streamRate"/> (each client's requests written on a schedule,
    /// none before its due time: an open loop, as <see cref="RunUnaryAsync"/>'s) and, over the same seconds on
    /// connections of their own, unary calls at <paramref name="unaryRate"/>: the latency a thin client's single
    /// submission gets from a node busy with bulk streams. One thread paces both schedules; the two envelope lists should
    /// last about as long at their rates. Each kind gets its report (the node's mean verifier batch is the phase's, both
    /// kinds' items together), and <see cref="MixedLoad.Total"/> the two together, with the phase's CPU.
    /// </summary>
    public async Task<MixedLoad> RunMixedAsync(IReadOnlyList<Envelope> streamed, IReadOnlyList<Envelope> unary, double streamRate, double unaryRate,
        int perRequest = 1, CancellationToken ct = default)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(perRequest, 1);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(streamRate);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(unaryRate);
        int open = Math.Clamp(connections, 1, clients);
        using Connections streams = await Connections.OpenAsync(node, open, clientOptions, ct);
        using Connections singles = await Connections.OpenAsync(node, open, clientOptions, ct);
        MegaNetClient client = streams[0];
        Method<byte[], SubmitOutcome[]> method = perRequest == 1 ? PreEncodedSubmits.SubmitStream : PreEncodedSubmits.SubmitBatchStream;
        StreamShare[] shares = Enumerable.Range(0, clients).Select(c => StreamShare.Of(streamed, c, clients, perRequest)).ToArray();
        Schedule schedule = Schedule.Of(shares, streamRate, unary.Count, unaryRate);
        Channel<double>[] gates = shares.Select(_ => Channel.CreateUnbounded<double>(
            new UnboundedChannelOptions { SingleReader = true, SingleWriter = true })).ToArray();
        SettleHeap();
        StatusResponse before = await client.Relay.StatusAsync(new StatusRequest(), cancellationToken: ct);
        var streamTally = new PhaseTally(streamed.Count);
        CpuUse cpuAtStart = CpuUse.Now();
        DateTimeOffset began = DateTimeOffset.UtcNow;
        var watch = Stopwatch.StartNew();
        var singleCalls = new UnaryCalls(singles, clients, unary, watch, floor: false, ct);

        // A stream that fails stops the pacing (and so the unary calls) at once, rather than at the schedule's end.
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        Task streaming = Task.WhenAll(shares.Select((share, c) => Task.Run(() => StreamAsync(streams[c], method, share, gates[c].Reader, watch, streamTally, ct), ct)));
        _ = streaming.ContinueWith(_ => stop.Cancel(), CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted | TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        Task<List<Task>> pacing = Task.Factory.StartNew(() =>
        {
            try
            {
                // A stream request is handed to its client's writer (done at once); a unary call is started.
                return Pace(schedule.Count, k => schedule.Due[k], watch, (k, due) =>
                {
                    int item = schedule.Item[k];
                    if (item < 0)
                    {
                        gates[~item].Writer.TryWrite(due);
                        return Task.CompletedTask;
                    }

                    return singleCalls.StartAsync(item, due);
                }, stop.Token);
            }
            finally
            {
                foreach (Channel<double> gate in gates)
                {
                    gate.Writer.TryComplete();
                }
            }
        }, ct, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        try
        {
            await Task.WhenAll(streaming, pacing);
        }
        catch when (streaming.IsFaulted && !ct.IsCancellationRequested)
        {
            // The stream's failure, not the pacing's cancellation that followed it.
            await streaming;
        }

        await Task.WhenAll(await pacing);
        double seconds = watch.Elapsed.TotalSeconds;
        CpuSpent cpu = CpuUse.Between(cpuAtStart, CpuUse.Now(), seconds);
        StatusResponse after = await client.Relay.StatusAsync(new StatusRequest(), cancellationToken: ct);
        double batch = MeanBatch(before, after);
        Timeline?.Add("mixed", "stream", began, streamTally.Calls);
        Timeline?.Add("mixed", "unary", began, singleCalls.Tally.Calls);
        string streamMode = $"{(perRequest == 1 ? "stream" : $"stream x{perRequest}")} (paced at {streamRate:N0}/s)";
        LoadReport streamReport = Summarize(streamMode, clients, streamed.Count, streamTally.Accepted, streamTally.Refused, seconds, streamTally.Calls, batch,
            after.VerifierBackend, streamTally.Refusals.ToString());
        PhaseTally u = singleCalls.Tally;
        LoadReport unaryReport = Summarize($"unary (open loop at {unaryRate:N0}/s) beside it", clients, unary.Count, u.Accepted, u.Refused, seconds, u.Calls, batch,
            after.VerifierBackend, u.Refusals.ToString());
        // Both kinds' calls as one phase, by the same rules as each kind's (the rate after the warm-up, the rate started at).
        LoadReport both = Summarize("stream + unary", clients, streamed.Count + unary.Count, streamTally.Accepted + u.Accepted, streamTally.Refused + u.Refused,
            seconds, CallSamples.Concat(streamTally.Calls, u.Calls), batch, after.VerifierBackend);
        LoadReport total = both with { Cpu = cpu };
        var mixed = new MixedLoad(streamReport, unaryReport, total);
        progress?.Write(DescribeMixed(mixed));
        return mixed;
    }

    /// <summary>The lines of a mixed phase: each kind's, then both together with the phase's CPU.</summary>
    internal static string DescribeMixed(MixedLoad mixed)
    {
        LoadReport total = mixed.Total;
        string steady = double.IsNaN(total.SteadyAcceptedPerSecond) ? string.Empty : $"{total.SteadyAcceptedPerSecond:N0}/s after the first {WarmUpSeconds:0} s; ";
        string started = double.IsNaN(total.OfferedPerSecond) ? "-" : $"{total.OfferedPerSecond:N0}";
        return Describe(mixed.Stream) + Describe(mixed.Unary) +
            $"{total.Mode}: {total.AcceptedPerSecond:N0} accepted/s ({steady}started at {started}/s), {total.Refused} refused{Environment.NewLine}" +
            (total.Cpu is { } cpu ? DescribeCpu(cpu, total.Accepted, total.Seconds, statusCalls: false) : string.Empty);
    }

    /// <summary>A mixed phase's reports: the streamed envelopes', the unary calls', and both together with the phase's
    /// CPU (whose latency figures mix the two kinds; each kind's own are in its report).</summary>
    public sealed record MixedLoad(LoadReport Stream, LoadReport Unary, LoadReport Total);

    /// <summary>A mixed phase's schedule in due order: <see cref="Item"/> is a unary call's envelope index, or the
    /// complement (<c>~c</c>) of the streaming client whose next request is due.</summary>
    internal sealed record Schedule(double[] Due, int[] Item)
    {
        public int Count => Due.Length;

        /// <summary>Streamed envelope j (counted over the clients' requests taken in turn) is due at j / streamRate, and a
        /// request at its first envelope's time; unary call i at i / unaryRate.</summary>
        public static Schedule Of(IReadOnlyList<StreamShare> shares, double streamRate, int unaryCalls, double unaryRate)
        {
            var items = new List<(double Due, int Item)>(unaryCalls + shares.Sum(s => s.Requests.Count));
            int[] next = new int[shares.Count];
            long envelopesBefore = 0;
            for (bool any = true; any;)
            {
                any = false;
                for (int c = 0; c < shares.Count; c++)
                {
                    if (next[c] < shares[c].Requests.Count)
                    {
                        items.Add((envelopesBefore / streamRate, ~c));
                        envelopesBefore += shares[c].Requests[next[c]++].Count;
                        any = true;
                    }
                }
            }

            for (int i = 0; i < unaryCalls; i++)
            {
                items.Add((i / unaryRate, i));
            }

            // Stable: each client's requests stay in order.
            (double Due, int Item)[] ordered = [.. items.OrderBy(x => x.Due)];
            return new(ordered.Select(x => x.Due).ToArray(), ordered.Select(x => x.Item).ToArray());
        }
    }

    /// <summary>Unary submissions (or, for <c>--floor</c>, <c>Status</c> calls) of one phase, each started by
    /// <see cref="StartAsync"/> on client i mod clients and recorded in <see cref="Tally"/>.</summary>
    private sealed class UnaryCalls(Connections channels, int clients, IReadOnlyList<Envelope> envelopes, Stopwatch watch, bool floor, CancellationToken ct)
    {
        public PhaseTally Tally { get; } = new(envelopes.Count);

        /// <summary>Call <paramref name="i"/>, due at <paramref name="dueSeconds"/> on the phase's watch (open loop: the
        /// latency counts from then, so the client's lateness is in it, and kept apart too), or −1 (closed loop: from its
        /// start).</summary>
        public async Task StartAsync(int i, double dueSeconds)
        {
            CallSamples calls = Tally.Calls;
            double started = watch.Elapsed.TotalSeconds;
            calls.StartedAt[i] = started;
            double from = started;
            if (dueSeconds >= 0)
            {
                calls.LateMs[i] = Math.Max(0, started - dueSeconds) * 1000;
                from = Math.Min(started, dueSeconds);
            }

            calls.CountsFrom[i] = from;

            try
            {
                if (floor)
                {
                    await channels[i % clients].Relay.StatusAsync(EmptyStatusRequest, cancellationToken: ct);
                }
                else
                {
                    await channels[i % clients].Relay.SubmitAsync(new SubmitRequest { Envelope = envelopes[i] }, cancellationToken: ct);
                }

                Tally.Accept(i);
            }
            catch (RpcException e)
            {
                Tally.Refuse(e.StatusCode, e.Status.Detail);
            }

            double completed = watch.Elapsed.TotalSeconds;
            calls.CompletedAt[i] = completed;
            calls.LatencyMs[i] = (completed - from) * 1000;
        }
    }

    /// <summary>What a phase's calls recorded, and the counts and refusals, filled from many threads.</summary>
    private sealed class PhaseTally(int count)
    {
        private int _accepted, _refused;

        public CallSamples Calls { get; } = new(count);

        public RefusalTally Refusals { get; } = new();

        public int Accepted => Volatile.Read(ref _accepted);

        public int Refused => Volatile.Read(ref _refused);

        public void Accept(int i)
        {
            Calls.Ok[i] = true;
            Interlocked.Increment(ref _accepted);
        }

        public void Refuse(StatusCode status, string error)
        {
            Refusals.Add(status, error);
            Interlocked.Increment(ref _refused);
        }
    }

    private static readonly StatusRequest EmptyStatusRequest = new();

    /// <summary>Collects this process's garbage before a phase is timed, the envelopes sealed (and requests encoded) for
    /// it promoted to the oldest generation in one go. Left to the phase's first collections, they stalled this client
    /// 40-115 ms at a time, neither starting calls nor reading answers, and that was counted as the node's latency: at
    /// 5,000 unary calls/s a p99 of 14-28 ms here, against 7-10 ms with this (2026-12-07).</summary>
    private static void SettleHeap()
    {
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Forced, blocking: true, compacting: true);
        GC.WaitForPendingFinalizers();
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Forced, blocking: true, compacting: true);
    }

    /// <summary>Starts call i at <paramref name="dueOf"/>(i) seconds on <paramref name="watch"/> (not decreasing in i),
    /// in order, without waiting for earlier calls; returns the calls that had not completed successfully when it last
    /// looked, and every call started since.</summary>
    /// <remarks>Calls that succeeded are let go as it goes: held to the end, every call of the last seconds lived
    /// through each of this client's collections, which promoted them (3.4 MB, a 10.7 ms pause, every 2 s at 5,000
    /// calls/s) while its calls waited (a unary p99 of 7.3-10.4 ms, against 4.3-4.6 ms without; 2026-12-07).</remarks>
    internal static List<Task> Pace(int count, Func<int, double> dueOf, Stopwatch watch, Func<int, double, Task> start, CancellationToken ct)
    {
        var open = new List<Task>();
        int prune = 4_096;
        for (int i = 0; i < count; i++)
        {
            double due = dueOf(i);
            WaitUntil(watch, due, ct);
            open.Add(start(i, due));
            if (open.Count == prune)
            {
                open.RemoveAll(static t => t.IsCompletedSuccessfully);
                // Doubling: calls that pile up (a node that does not answer) are looked at a bounded number of times each.
                prune = Math.Max(4_096, 2 * open.Count);
            }
        }

        return open;
    }

    /// <summary>The last stretch before a due time is spun through rather than slept: a sleep ends up to the kernel's timer
    /// slack (50 µs) late.</summary>
    internal const double SpinSeconds = 60e-6;

    /// <summary>Blocks the calling (dedicated) thread until <paramref name="watch"/> reads <paramref name="dueSeconds"/>,
    /// never returning early. Timers and <see cref="Task.Delay(TimeSpan)"/> wake 1-3 ms late here (p99 up to 25 ms at
    /// 8,000 calls/s), which an open loop would report as latency; so: whole-millisecond sleeps until ~1 ms before, then
    /// <see cref="ShortSleep"/> to <see cref="SpinSeconds"/> before, then a spin, bounded by that, to the due time.
    /// Whatever lateness is left (a busy machine that runs this thread late) is measured and reported, not hidden.</summary>
    internal static void WaitUntil(Stopwatch watch, double dueSeconds, CancellationToken ct)
    {
        while (true)
        {
            double remaining = dueSeconds - watch.Elapsed.TotalSeconds;
            if (remaining <= 0)
            {
                return;
            }

            ct.ThrowIfCancellationRequested();
            if (remaining > 0.002)
            {
                // At most 100 ms at a time, so Ctrl+C is seen at low rates too.
                Thread.Sleep(TimeSpan.FromSeconds(Math.Min(remaining - 0.001, 0.1)));
            }
            else if (remaining > SpinSeconds)
            {
                if (ShortSleep.IsSupported)
                {
                    ShortSleep.Sleep((int)((remaining - SpinSeconds) * 1e6));
                }
                else
                {
                    Thread.Yield();
                }
            }
            else
            {
                Thread.SpinWait(20);
            }
        }
    }

    /// <summary>Streaming submits: each client opens one stream and pipelines its share, one envelope per request on
    /// <c>SubmitStream</c> when <paramref name="perRequest"/> is 1, else up to that many per request on
    /// <c>SubmitBatchStream</c>. The requests are encoded before timing starts and the answers read for their status
    /// alone (<see cref="PreEncodedSubmits"/>). An envelope's latency runs from when its request was written to when its
    /// answer came.</summary>
    public async Task<LoadReport> RunStreamingAsync(IReadOnlyList<Envelope> envelopes, CancellationToken ct = default, int perRequest = 1)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(perRequest, 1);
        using Connections channels = await Connections.OpenAsync(node, Math.Clamp(connections, 1, clients), clientOptions, ct);
        MegaNetClient client = channels[0];
        Method<byte[], SubmitOutcome[]> method = perRequest == 1 ? PreEncodedSubmits.SubmitStream : PreEncodedSubmits.SubmitBatchStream;
        StreamShare[] shares = Enumerable.Range(0, clients).Select(c => StreamShare.Of(envelopes, c, clients, perRequest)).ToArray();
        SettleHeap();
        StatusResponse before = await client.Relay.StatusAsync(new StatusRequest(), cancellationToken: ct);
        var tally = new PhaseTally(envelopes.Count);
        CpuUse cpuAtStart = CpuUse.Now();
        DateTimeOffset began = DateTimeOffset.UtcNow;
        var watch = Stopwatch.StartNew();
        await Task.WhenAll(shares.Select((share, c) => Task.Run(() => StreamAsync(channels[c], method, share, paced: null, watch, tally, ct), ct)));
        double seconds = watch.Elapsed.TotalSeconds;
        LoadReport report = await Report(perRequest == 1 ? "stream" : $"stream x{perRequest}", tally, seconds, cpuAtStart, client, before, ct);
        Timeline?.Add("stream", "stream", began, tally.Calls); // after the phase's CPU is taken, as in RunUnaryAsync
        return report;
    }

    /// <summary>One client's stream: its requests written in order, each as soon as the one before is written or, with
    /// <paramref name="paced"/>, when that gives its due time (its latency then counts from that time, and how late it
    /// was written is kept apart); its answers read as they come.</summary>
    private static async Task StreamAsync(MegaNetClient channel, Method<byte[], SubmitOutcome[]> method, StreamShare share, ChannelReader<double>? paced,
        Stopwatch watch, PhaseTally tally, CancellationToken ct)
    {
        CallSamples calls = tally.Calls;
        using AsyncDuplexStreamingCall<byte[], SubmitOutcome[]> call = channel.CallInvoker.AsyncDuplexStreamingCall(method, null, new CallOptions(cancellationToken: ct));
        Task reader = Task.Run(async () =>
        {
            int k = 0;
            await foreach (SubmitOutcome[] answer in call.ResponseStream.ReadAllAsync(ct))
            {
                double completed = watch.Elapsed.TotalSeconds;
                foreach (SubmitOutcome r in answer)
                {
                    int i = share.Envelopes[k++];
                    calls.CompletedAt[i] = completed;
                    calls.LatencyMs[i] = (completed - calls.CountsFrom[i]) * 1000;
                    if (r.StatusCode == 0)
                    {
                        tally.Accept(i);
                    }
                    else
                    {
                        tally.Refuse((StatusCode)r.StatusCode, r.Error);
                    }
                }
            }
        }, ct);
        int written = 0;
        double lastWritten = 0;
        foreach ((byte[] request, int count) in share.Requests)
        {
            double due = paced is null ? -1 : await paced.ReadAsync(ct);
            double started = watch.Elapsed.TotalSeconds;
            for (int j = 0; j < count; j++)
            {
                int i = share.Envelopes[written++];
                calls.StartedAt[i] = started;
                calls.CountsFrom[i] = started;
                if (due >= 0)
                {
                    // The latency counts from the due time; the lateness kept apart is the client's own lag only: a
                    // request held up by the write before it (the node's flow control pushing back) is the node's.
                    calls.LateMs[i] = Math.Max(0, started - Math.Max(due, lastWritten)) * 1000;
                    calls.CountsFrom[i] = Math.Min(started, due);
                }
            }

            await call.RequestStream.WriteAsync(request, ct);
            lastWritten = watch.Elapsed.TotalSeconds;
        }

        await call.RequestStream.CompleteAsync();
        await reader;
    }

    /// <summary>One streaming client's envelopes (every <c>clients</c>-th, from its own index) and its requests, encoded,
    /// with how many envelopes each carries.</summary>
    internal sealed record StreamShare(int[] Envelopes, List<(byte[] Request, int Count)> Requests)
    {
        public static StreamShare Of(IReadOnlyList<Envelope> envelopes, int client, int clients, int perRequest)
        {
            int[] mine = Enumerable.Range(0, envelopes.Count).Where(i => i % clients == client).ToArray();
            List<(byte[], int)> requests = perRequest == 1
                ? mine.Select(i => (new SubmitRequest { Envelope = envelopes[i] }.ToByteArray(), 1)).ToList()
                : MegaNetClient.BatchRequests(mine.Select(i => envelopes[i]), perRequest).Select(r => (r.ToByteArray(), r.Envelopes.Count)).ToList();
            return new(mine, requests);
        }
    }

    private async Task<LoadReport> Report(string mode, PhaseTally tally, double seconds, CpuUse cpuAtStart, MegaNetClient client, StatusResponse before,
        CancellationToken ct, bool statusCalls = false)
    {
        // Before the Status call below: the phase's CPU, over the phase's seconds.
        CpuSpent cpu = CpuUse.Between(cpuAtStart, CpuUse.Now(), seconds);
        StatusResponse after = await client.Relay.StatusAsync(new StatusRequest(), cancellationToken: ct);
        LoadReport summary = Summarize(mode, clients, tally.Calls.Ok.Length, tally.Accepted, tally.Refused, seconds, tally.Calls, MeanBatch(before, after),
            after.VerifierBackend, tally.Refusals.ToString());
        LoadReport report = summary with { Cpu = cpu, StatusCalls = statusCalls };
        progress?.Write(Describe(report));
        return report;
    }

    /// <summary>The node's mean verifier batch between two of its <c>Status</c> answers; 0 where it verified none.</summary>
    private static double MeanBatch(StatusResponse before, StatusResponse after)
    {
        double batches = after.BatchesVerified - before.BatchesVerified;
        return batches == 0 ? 0 : (after.SignaturesVerified - before.SignaturesVerified) / batches;
    }

    /// <summary>The report over what each call recorded (times in seconds since the phase began).</summary>
    internal static LoadReport Summarize(string mode, int clients, int sent, int accepted, int refused, double seconds, CallSamples calls,
        double meanServerBatch, string backend, string refusals = "")
    {
        bool[] ok = calls.Ok;
        // Latency of accepted calls only: a refusal (queue full, rate limit) is answered fast and would flatter them.
        double[] all = calls.LatencyMs.Where((_, i) => ok[i]).Order().ToArray();
        double[] steady = calls.LatencyMs.Where((_, i) => ok[i] && calls.StartedAt[i] >= WarmUpSeconds).Order().ToArray();
        // Acceptances completed after the warm-up, over the time after it: the rate once the node's code is tiered up.
        // By when each call really completed: its start plus its latency would count an open-loop call's lateness twice
        // (the latency counts from the due time, which is before the start).
        int acceptedLater = Enumerable.Range(0, sent).Count(i => ok[i] && calls.CompletedAt[i] >= WarmUpSeconds);
        double[] late = calls.LateMs.Where((l, i) => ok[i] && !double.IsNaN(l)).Order().ToArray();
        double startSpan = sent > 1 ? calls.StartedAt.Max() - calls.StartedAt.Min() : 0;
        bool hasSteady = steady.Length >= 1000;
        return new LoadReport(mode, clients, sent, accepted, refused, seconds, Percentile(all, 0.50), Percentile(all, 0.99),
            hasSteady ? Percentile(steady, 0.50) : double.NaN, hasSteady ? Percentile(steady, 0.99) : double.NaN,
            hasSteady ? acceptedLater / (seconds - WarmUpSeconds) : double.NaN,
            meanServerBatch, backend, startSpan > 0 ? (sent - 1) / startSpan : double.NaN,
            Percentile(late, 0.50), Percentile(late, 0.99), refusals);
    }

    /// <summary>The printed line (and, when the client's own lag is a large part of the latency, a warning line).</summary>
    internal static string Describe(LoadReport report)
    {
        // --floor's Status calls are answered, not accepted, and reach no verifier: "mean verifier batch 0.0" said nothing.
        string done = report.StatusCalls ? "answered" : "accepted";
        string steadyText = double.IsNaN(report.SteadyP50Ms)
            ? string.Empty
            : $" (after the first {WarmUpSeconds:0} s: {report.SteadyAcceptedPerSecond:N0} {done}/s, p50 {report.SteadyP50Ms:F2} ms, p99 {report.SteadyP99Ms:F2} ms)";
        string lateText = double.IsNaN(report.StartLateP50Ms)
            ? string.Empty
            : $"; client start lateness p50 {report.StartLateP50Ms:F2} ms, p99 {report.StartLateP99Ms:F2} ms (in the latency)";
        string batchText = report.StatusCalls ? string.Empty : $", mean verifier batch {report.MeanServerBatch:F1} ({report.Backend})";
        string text = $"{report.Mode,-6} clients {report.Clients}: {report.AcceptedPerSecond,10:N0} {done}/s ({report.Accepted}/{report.Sent}, {report.Refused} refused; " +
            $"started at {(double.IsNaN(report.OfferedPerSecond) ? "-" : $"{report.OfferedPerSecond:N0}")}/s), p50 {report.P50Ms:F2} ms, p99 {report.P99Ms:F2} ms{steadyText}{lateText}" +
            $"{batchText}{Environment.NewLine}";
        if (report.Cpu is { } cpu)
        {
            text += DescribeCpu(cpu, report.Accepted, report.Seconds, report.StatusCalls);
        }

        if (report.Refused > 0 && report.Refusals.Length > 0)
        {
            text += $"  refused: {report.Refusals}{Environment.NewLine}";
        }
        if (report.ClientLagWarning)
        {
            text += $"warning: this load client started calls up to {report.StartLateP99Ms:F2} ms late (p99), {report.StartLateP99Ms / report.P99Ms:P0} of the latency p99: " +
                $"that part is the client's own lag, not the node's; offer less, or run the client on another machine{Environment.NewLine}";
        }

        return text;
    }

    /// <summary>The cores this process and the machine kept busy over a phase, and the machine's CPU time a call; empty
    /// where nothing was measured.</summary>
    internal static string DescribeCpu(CpuSpent cpu, int accepted, double seconds, bool statusCalls)
    {
        if (double.IsNaN(cpu.ProcessCores))
        {
            return string.Empty;
        }

        string text = $"  CPU: this process {cpu.ProcessCores:F2} cores";
        if (!double.IsNaN(cpu.MachineCores))
        {
            text += $", the machine {cpu.MachineCores:F2} of {cpu.LogicalCores} busy";
            if (accepted > 0)
            {
                text += $" ({cpu.MachineCores * seconds / accepted * 1e6:F1} µs of the machine's CPU {(statusCalls ? "a call" : "an accepted envelope")})";
            }
        }

        if (cpu.BusiestThread is { } thread)
        {
            text += $"; its busiest thread '{thread}' {cpu.BusiestThreadCores:F2} of a core";
        }

        return text + Environment.NewLine;
    }

    /// <summary>Why calls were refused: a count per gRPC status and the first error text of each, most frequent first.</summary>
    internal sealed class RefusalTally
    {
        private readonly System.Collections.Concurrent.ConcurrentDictionary<StatusCode, (int Count, string First)> _byStatus = new();

        public void Add(StatusCode status, string error) =>
            _byStatus.AddOrUpdate(status, static (_, e) => (1, e), static (_, seen, _) => (seen.Count + 1, seen.First), error);

        public override string ToString() => string.Join("; ", _byStatus
            .OrderByDescending(p => p.Value.Count)
            .Select(p => $"{p.Value.Count:N0} {p.Key}{(string.IsNullOrEmpty(p.Value.First) ? string.Empty : $" (first: {p.Value.First})")}"));
    }

    /// <summary>What each call of a phase recorded, by envelope index; times in seconds since the phase began.</summary>
    internal sealed class CallSamples(int count)
    {
        public double[] StartedAt { get; } = new double[count];

        public double[] CompletedAt { get; } = new double[count];

        /// <summary>From the due time (open loop) or the start to the answer.</summary>
        public double[] LatencyMs { get; } = new double[count];

        /// <summary>When the latency counts from: the due time (open loop) or the start, whichever was first.</summary>
        public double[] CountsFrom { get; } = new double[count];

        /// <summary>How late this client started the call past its due time (a paced stream's request: past its due
        /// time or the end of the write before it, whichever was later); NaN without a schedule (closed loop, unpaced
        /// streaming).</summary>
        public double[] LateMs { get; } = Enumerable.Repeat(double.NaN, count).ToArray();

        public bool[] Ok { get; } = new bool[count];

        /// <summary>The samples of <paramref name="first"/> followed by those of <paramref name="second"/>.</summary>
        public static CallSamples Concat(CallSamples first, CallSamples second)
        {
            var both = new CallSamples(first.Ok.Length + second.Ok.Length);
            foreach ((double[] to, double[] a, double[] b) in (ReadOnlySpan<(double[], double[], double[])>)[
                (both.StartedAt, first.StartedAt, second.StartedAt), (both.CompletedAt, first.CompletedAt, second.CompletedAt),
                (both.LatencyMs, first.LatencyMs, second.LatencyMs), (both.CountsFrom, first.CountsFrom, second.CountsFrom), (both.LateMs, first.LateMs, second.LateMs)])
            {
                a.CopyTo(to, 0);
                b.CopyTo(to, a.Length);
            }

            first.Ok.CopyTo(both.Ok, 0);
            second.Ok.CopyTo(both.Ok, first.Ok.Length);
            return both;
        }
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

        public static async Task<Connections> OpenAsync(Uri node, int count, MegaNetClientOptions? options, CancellationToken ct)
        {
            var connections = new Connections(Enumerable.Range(0, count).Select(_ => new MegaNetClient(node, options: options)).ToArray());
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
