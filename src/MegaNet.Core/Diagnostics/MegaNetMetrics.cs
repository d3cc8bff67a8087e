using System.Diagnostics.Metrics;

namespace MegaNet.Core.Diagnostics;

/// <summary>
/// Every MegaNet instrument, on one <see cref="Meter"/> named <c>MegaNet</c>, so dotnet-counters
/// (<c>--counters MegaNet</c>), OpenTelemetry/Prometheus and <c>meganet profile</c> read the same numbers.
/// Components record here; nothing else creates MegaNet instruments.
/// </summary>
public static class MegaNetMetrics
{
    /// <summary>The meter name.</summary>
    public const string MeterName = "MegaNet";

    /// <summary>Every <c>reason</c> <see cref="EnvelopesRejected"/> is recorded with (docs/protocol.md says when each
    /// is given). Exporters show each at 0 before the first such rejection.</summary>
    public static IReadOnlyList<string> RejectionReasons { get; } =
    [
        "bad_signature_budget", "closing", "disk_low", "expired", "internal", "invalid", "mailbox_pow", "malformed", "oversize", "padding",
        "pow", "queue_full", "quota", "rate_limited", "signature", "store", "store_full", "suspect_lane_full", "ttl",
    ];

    /// <summary>Every <c>reason</c> <see cref="ConnectionsRefused"/> is recorded with. Exporters show each at 0 before
    /// the first such refusal.</summary>
    public static IReadOnlyList<string> ConnectionRefusalReasons { get; } = ["node", "per_address", "per_site", "reserve", "silent"];

    /// <summary>Every <c>outcome</c> <see cref="GpuChecks"/> is recorded with. Exporters show each at 0 before the
    /// first check.</summary>
    public static IReadOnlyList<string> GpuCheckOutcomes { get; } = ["failed", "passed"];

    // Names of the instruments InitialSeries treats apart, by name so that it answers rightly whenever it is called.
    private const string RejectedName = "meganet.admission.rejected", RefusedName = "meganet.connections.refused",
        GpuChecksName = "meganet.gpu.checks", VerificationsName = "meganet.verify.signatures", BatchSizeName = "meganet.verify.batch_size", BatchDurationName = "meganet.verify.batch_duration";

    /// <summary>The meter.</summary>
    public static readonly Meter Meter = new(MeterName, "1.0");

    /// <summary>Bucket bounds for the millisecond histograms (0.1 ms to 30 s): exporters that build real buckets
    /// (Prometheus, OpenTelemetry) take them from the instruments' advice instead of guessing.</summary>
    public static readonly IReadOnlyList<double> MillisecondBuckets = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000];

    /// <summary>Bucket bounds for items per batch: powers of two to 16,384, then coarser up to a batch's 1,048,576.</summary>
    public static readonly IReadOnlyList<int> BatchSizeBuckets = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1_024, 2_048, 4_096, 8_192, 16_384, 65_536, 262_144, 1_048_576];

    private static Histogram<double> Milliseconds(string name, string description) =>
        Meter.CreateHistogram(name, "ms", description, tags: null, advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = MillisecondBuckets });

    /// <summary>Signatures verified, tagged <c>backend</c>, <c>purpose</c> (admission/auth/delegated) and <c>verdict</c> (valid/invalid).</summary>
    public static readonly Counter<long> Verifications = Meter.CreateCounter<long>(VerificationsName, "{signature}", "Signatures verified, by backend, purpose and verdict");

    /// <summary>Items per verification batch, tagged <c>backend</c>.</summary>
    public static readonly Histogram<int> BatchSize = Meter.CreateHistogram(BatchSizeName, "{signature}", "Items per verification batch",
        tags: null, advice: new InstrumentAdvice<int> { HistogramBucketBoundaries = BatchSizeBuckets });

    /// <summary>Wall time of one backend batch call in milliseconds, tagged <c>backend</c>.</summary>
    public static readonly Histogram<double> BatchDuration = Milliseconds(BatchDurationName, "Time per verification batch");

    /// <summary>GPU kernel time per launch in milliseconds (a large batch is cut into several launches).</summary>
    public static readonly Histogram<double> GpuKernelTime = Milliseconds("meganet.gpu.kernel_time", "GPU kernel time per launch");

    /// <summary>GPU host↔device copy time per launch in milliseconds.</summary>
    public static readonly Histogram<double> GpuTransferTime = Milliseconds("meganet.gpu.transfer_time", "GPU copy time per launch");

    /// <summary>Host time per GPU launch in milliseconds: the S &lt; L checks and SHA-512 of R ‖ A ‖ M for its items.</summary>
    public static readonly Histogram<double> GpuHostTime = Milliseconds("meganet.gpu.host_time", "Host preparation (S < L, SHA-512) per GPU launch");

    /// <summary>Faults of the node's GPU: each faulted batch was verified again on SIMD, which then takes every batch
    /// until the GPU passes its start-up check again (<see cref="GpuChecks"/>).</summary>
    public static readonly Counter<long> GpuFaults = Meter.CreateCounter<long>("meganet.gpu.faults", "{fault}", "GPU faults (the batch verified again on SIMD, the GPU off until it passes its check again)");

    /// <summary>Checks of a GPU that faulted, tagged <c>outcome</c> (one of <see cref="GpuCheckOutcomes"/>): after
    /// <c>passed</c> it takes large batches again.</summary>
    public static readonly Counter<long> GpuChecks = Meter.CreateCounter<long>(GpuChecksName, "{check}", "Checks of a GPU that faulted, by outcome (passed: it serves again)");

    private static readonly ObservedSource GpuServingSource = new();

    /// <summary>1 while the node's GPU takes the large batches; 0 while one that faulted is off, and on a node without
    /// a GPU (observable; the node supplies the source).</summary>
    public static readonly ObservableGauge<long> GpuServing = Meter.CreateObservableGauge("meganet.gpu.serving", GpuServingSource.Read, "{gpu}", "1 while the GPU takes the large batches, 0 while one that faulted is off or without a GPU");

    private static readonly AsyncLocal<bool> GpuTimingsOff = new();

    /// <summary>True inside <see cref="SuspendGpuTimings"/> on this flow of execution: the GPU backend then records no
    /// <see cref="GpuKernelTime"/>, <see cref="GpuTransferTime"/> or <see cref="GpuHostTime"/>. Read once per launch.</summary>
    public static bool GpuTimingsSuspended => GpuTimingsOff.Value;

    /// <summary>
    /// Keeps the GPU timings of launches made on this flow of execution (this thread, and what it starts or awaits) out of
    /// the instruments until the returned scope is disposed. For a node's start-up self-check of its GPU: a known-answer
    /// run for nobody, which counted made a node that had verified nothing report GPU launches and their times.
    /// </summary>
    public static IDisposable SuspendGpuTimings()
    {
        var scope = new Suspension(GpuTimingsOff.Value);
        GpuTimingsOff.Value = true;
        return scope;
    }

    /// <summary>Puts back the setting <see cref="SuspendGpuTimings"/> found (scopes nest).</summary>
    private sealed class Suspension(bool previous) : IDisposable
    {
        public void Dispose() => GpuTimingsOff.Value = previous;
    }

    /// <summary>Envelopes accepted by admission and new to the store (a replay, answered with its original receipt, is
    /// not counted).</summary>
    public static readonly Counter<long> EnvelopesAccepted = Meter.CreateCounter<long>("meganet.admission.accepted", "{envelope}", "Envelopes accepted");

    /// <summary>Envelopes rejected, tagged <c>reason</c> (one of <see cref="RejectionReasons"/>).</summary>
    public static readonly Counter<long> EnvelopesRejected = Meter.CreateCounter<long>(RejectedName, "{envelope}", "Envelopes rejected, by reason");

    /// <summary>Submit-to-receipt latency in milliseconds.</summary>
    public static readonly Histogram<double> AdmissionLatency = Milliseconds("meganet.admission.latency", "Admission latency, submit to receipt");

    /// <summary>Store group-commit latency in milliseconds.</summary>
    public static readonly Histogram<double> StoreCommitLatency = Milliseconds("meganet.store.commit_latency", "Store group commit latency");

    /// <summary>Milliseconds from a store put call's arrival to its answer, once per call (an admission batch), waiting for
    /// the committer included: the commit latency above starts when the committer takes the group up, so a committer
    /// held up by something else (it once deleted old commit files, 8-9 ms every 64 commits) shows only here.</summary>
    public static readonly Histogram<double> StorePutLatency = Milliseconds("meganet.store.put_latency", "Store put latency per call, arrival to answer (waiting for the committer included)");

    /// <summary>Puts and acks per store group: the items one write-ahead-log commit carries.</summary>
    public static readonly Histogram<int> StoreGroupSize = Meter.CreateHistogram("meganet.store.group_size", "{item}", "Puts and acks per store group commit",
        tags: null, advice: new InstrumentAdvice<int> { HistogramBucketBoundaries = BatchSizeBuckets });

    /// <summary>Milliseconds of the store's prepare stage per group (duplicate, quota and sequence decisions, the log
    /// records), on the committer's thread, one group at a time.</summary>
    public static readonly Histogram<double> StorePrepareDuration = Milliseconds("meganet.store.prepare_duration", "Store prepare stage per group (decisions, log records)");

    /// <summary>Milliseconds of each group's write-ahead-log commit, from its start to the commit record known written.
    /// Several groups may be in flight (the store's GroupsInFlight), so one group's commit overlaps the next one's
    /// prepare.</summary>
    public static readonly Histogram<double> StoreLogCommitDuration = Milliseconds("meganet.store.log_commit_duration", "Store write-ahead log commit per group");

    /// <summary>Milliseconds of the store's apply stage per group, its own work only (table writes, leaf hashes,
    /// mailbox indexes, tree and signed head, receipts), not its wait for the commit. Groups are applied one at a time:
    /// when these times add up to nearly a second each second, the apply stage bounds the store's rate, whatever the
    /// cores.</summary>
    public static readonly Histogram<double> StoreApplyDuration = Milliseconds("meganet.store.apply_duration", "Store apply stage per group (table, indexes, tree, receipts)");

    /// <summary>Store checkpoint cycle duration in milliseconds.</summary>
    public static readonly Histogram<double> StoreCheckpointDuration = Milliseconds("meganet.store.checkpoint_duration", "Store checkpoint cycle duration (sweep, compaction, table checkpoint, log truncation)");

    /// <summary>Milliseconds each checkpoint holds up the store's writes (the committer takes the snapshot of the mailbox
    /// indexes and sweeps expired mail before it commits the next group; an asked-for checkpoint and the shutdown one
    /// also finish a compaction under way, which otherwise runs in short steps, see <see cref="StoreCompactionPause"/>);
    /// the index snapshot also holds up mailbox reads.</summary>
    public static readonly Histogram<double> StoreCheckpointPause = Milliseconds("meganet.store.checkpoint_pause", "Writes held up by a checkpoint (index snapshot, expiry sweep; compaction when one is asked for or at shutdown)");

    /// <summary>Milliseconds each step of a table compaction holds up the store's writes: a compaction runs between
    /// groups a few hundred records at a time (and a page read and parse when a step starts a page), after the
    /// checkpoint that started it is written; an asked-for or shutdown checkpoint finishes it in one step.</summary>
    public static readonly Histogram<double> StoreCompactionPause = Milliseconds("meganet.store.compaction_pause", "Writes held up by a step of table compaction");

    /// <summary>Exceptions thrown by listeners of the store's <c>MailArrived</c> event. The mail was stored and answered
    /// all the same, but live delivery (Subscribe) may have missed it: any count here is a bug to look into.</summary>
    public static readonly Counter<long> StoreMailListenerFailures = Meter.CreateCounter<long>("meganet.store.mail_listener_failures", "{exception}", "Exceptions from MailArrived listeners (the mail was stored; live delivery may have missed it)");

    /// <summary>Envelopes the store refused because its disk was below its free-space mark (<c>MinFreeDiskBytes</c>);
    /// admission also counts them among rejected envelopes, as <c>disk_low</c>.</summary>
    public static readonly Counter<long> StoreLowDiskRefusals = Meter.CreateCounter<long>("meganet.store.low_disk_refusals", "{envelope}", "Envelopes refused because the store's disk was below its free-space mark");

    private static readonly LiveCount SubscriptionCount = new();
    private static readonly LiveCount ConnectionCount = new();

    /// <summary>Live mailbox subscriptions now, in the whole process (observable up-down counter; changed through
    /// <see cref="SubscriptionStarted"/> and <see cref="SubscriptionEnded"/>). Observed rather than added to: a plain
    /// up-down counter gives a listener only the changes made after it attached, so <c>meganet profile</c> and
    /// dotnet-counters showed the change since they attached (-1 when one subscription ended), not the count.</summary>
    public static readonly ObservableUpDownCounter<long> ActiveSubscriptions = Meter.CreateObservableUpDownCounter("meganet.relay.subscriptions", SubscriptionCount.Read, "{subscription}", "Active mailbox subscriptions");

    /// <summary>Open client connections on the gRPC listener now, in the whole process (observable up-down counter,
    /// for the same reason as <see cref="ActiveSubscriptions"/>; changed through <see cref="ConnectionOpened"/> and
    /// <see cref="ConnectionClosed"/>).</summary>
    public static readonly ObservableUpDownCounter<long> OpenConnections = Meter.CreateObservableUpDownCounter("meganet.connections.open", ConnectionCount.Read, "{connection}", "Open client connections");

    /// <summary>Counts a subscription in <see cref="ActiveSubscriptions"/>; pair each with <see cref="SubscriptionEnded"/>.</summary>
    public static void SubscriptionStarted() => SubscriptionCount.Add(1);

    /// <summary>Counts a subscription out of <see cref="ActiveSubscriptions"/>.</summary>
    public static void SubscriptionEnded() => SubscriptionCount.Add(-1);

    /// <summary>Counts a connection in <see cref="OpenConnections"/>; pair each with <see cref="ConnectionClosed"/>.</summary>
    public static void ConnectionOpened() => ConnectionCount.Add(1);

    /// <summary>Counts a connection out of <see cref="OpenConnections"/>.</summary>
    public static void ConnectionClosed() => ConnectionCount.Add(-1);

    /// <summary>Client connections closed at once because a cap was reached, tagged <c>reason</c>
    /// (<c>per_address</c>, <c>per_site</c>, <c>node</c>, or <c>reserve</c> for the last tenth kept for light sites),
    /// or closed because they sent nothing within 10 s of connecting (<c>silent</c>).</summary>
    public static readonly Counter<long> ConnectionsRefused = Meter.CreateCounter<long>(RefusedName, "{connection}", "Client connections refused, by cap reached, or closed for sending nothing");

    private static readonly ObservedSource QueueDepthSource = new();
    private static readonly ObservedSource LogSizeSource = new();
    private static readonly ObservedSource PeersSource = new();
    private static readonly ObservedSource TableDiskReadsSource = new();
    private static readonly ObservedSource HeldBytesSource = new();

    /// <summary>Admission queue depth (observable; the pipeline supplies the source).</summary>
    public static readonly ObservableGauge<long> AdmissionQueueDepth = Meter.CreateObservableGauge("meganet.admission.queue_depth", QueueDepthSource.Read, "{envelope}", "Envelopes waiting for verification");

    /// <summary>Leaves in the transparency log (observable; the store supplies the source).</summary>
    public static readonly ObservableGauge<long> LogSize = Meter.CreateObservableGauge("meganet.store.log_size", LogSizeSource.Read, "{leaf}", "Transparency log size");

    /// <summary>Envelope bytes waiting in all mailboxes, what the node option <c>StoreMaxMiB</c> caps (observable; the
    /// store supplies the source).</summary>
    public static readonly ObservableGauge<long> HeldBytes = Meter.CreateObservableGauge("meganet.store.held", HeldBytesSource.Read, "By", "Envelope bytes waiting in all mailboxes");

    /// <summary>Envelope-table reads that had to go to disk (observable; the store supplies the source). When it climbs
    /// with every mailbox read or replay check, the memory budget holds less than the mail being read.</summary>
    public static readonly ObservableCounter<long> TableDiskReads = Meter.CreateObservableCounter("meganet.store.table_disk_reads", TableDiskReadsSource.Read, "{read}", "Envelope table reads served from disk (beyond the memory budget)");

    /// <summary>Connected peers (the mesh is not built yet; reads 0 until it is).</summary>
    public static readonly ObservableGauge<long> ConnectedPeers = Meter.CreateObservableGauge("meganet.mesh.peers", PeersSource.Read, "{peer}", "Connected peer nodes (always 0 for now: the mesh is not built yet)");

    /// <summary>
    /// The series <paramref name="instrument"/> has before its first measurement, for an exporter that would otherwise
    /// list a series only once something is recorded in it: Prometheus takes a counter's first sample as its baseline,
    /// so a series that first appears at 1 never shows in <c>increase()</c> or <c>rate()</c>, and a rare event (one
    /// listener failure, the first refusal) went unseen. For a MegaNet counter or histogram recorded without tags, the
    /// untagged series; for one tagged from a closed set (<see cref="RejectionReasons"/>,
    /// <see cref="ConnectionRefusalReasons"/>, <see cref="GpuCheckOutcomes"/>), one series per value; none for those
    /// tagged with open-ended values (a backend's name), for observable instruments (read whenever they are asked) and
    /// for other meters' instruments.
    /// </summary>
    public static IReadOnlyList<KeyValuePair<string, object?>[]> InitialSeries(Instrument instrument)
    {
        ArgumentNullException.ThrowIfNull(instrument);
        if (!ReferenceEquals(instrument.Meter, Meter) || instrument.IsObservable)
        {
            return [];
        }

        return instrument.Name switch
        {
            RejectedName => [.. RejectionReasons.Select(r => new[] { new KeyValuePair<string, object?>("reason", r) })],
            RefusedName => [.. ConnectionRefusalReasons.Select(r => new[] { new KeyValuePair<string, object?>("reason", r) })],
            GpuChecksName => [.. GpuCheckOutcomes.Select(o => new[] { new KeyValuePair<string, object?>("outcome", o) })],
            VerificationsName or BatchSizeName or BatchDurationName => [],
            _ => [[]],
        };
    }

    /// <summary>Sets the source of the admission queue depth gauge until the returned registration is disposed.</summary>
    public static IDisposable ObserveQueueDepth(Func<long> source) => QueueDepthSource.Set(source);

    /// <summary>Sets the source of the log size gauge until the returned registration is disposed.</summary>
    public static IDisposable ObserveLogSize(Func<long> source) => LogSizeSource.Set(source);

    /// <summary>Sets the source of the held bytes gauge until the returned registration is disposed.</summary>
    public static IDisposable ObserveHeldBytes(Func<long> source) => HeldBytesSource.Set(source);

    /// <summary>Sets the source of the table disk reads counter until the returned registration is disposed.</summary>
    public static IDisposable ObserveTableDiskReads(Func<long> source) => TableDiskReadsSource.Set(source);

    /// <summary>Sets the source of the GPU serving gauge until the returned registration is disposed.</summary>
    public static IDisposable ObserveGpuServing(Func<long> source) => GpuServingSource.Set(source);

    /// <summary>Sets the source of the connected peers gauge until the returned registration is disposed.</summary>
    public static IDisposable ObservePeers(Func<long> source) => PeersSource.Set(source);

    /// <summary>A count kept here and read by an observable instrument, so any listener reads the count itself whenever it
    /// attaches.</summary>
    private sealed class LiveCount
    {
        private long _value;

        public long Read() => Volatile.Read(ref _value);

        public void Add(long change) => Interlocked.Add(ref _value, change);
    }

    /// <summary>
    /// Where an observable instrument reads from: the latest component to register (one node per process is the normal
    /// case). Disposing the registration puts back 0 unless a newer one took over, so a disposed pipeline or store is
    /// neither reported nor kept alive by the instrument.
    /// </summary>
    private sealed class ObservedSource
    {
        private static readonly Func<long> Zero = static () => 0;
        private Func<long> _current = Zero;

        public long Read() => Volatile.Read(ref _current)();

        public IDisposable Set(Func<long> source)
        {
            ArgumentNullException.ThrowIfNull(source);
            Volatile.Write(ref _current, source);
            return new Registration(this, source);
        }

        private sealed class Registration(ObservedSource owner, Func<long> source) : IDisposable
        {
            public void Dispose() => Interlocked.CompareExchange(ref owner._current, Zero, source);
        }
    }
}
