using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace MegaNet.Node.Hosting;

/// <summary>
/// Every node setting with its default. Read from <c>meganet.json</c> (section <c>MegaNet</c>), then environment
/// variables <c>MEGANET_MegaNet__Name</c>, then command-line flags; validated at start.
/// </summary>
public sealed class NodeOptions
{
    /// <summary>Data directory (node key, store). Default <c>./data</c>.</summary>
    public string DataDirectory { get; set; } = "./data";

    /// <summary>Address and port for gRPC (HTTP/2), the port written out. Default <c>127.0.0.1:7700</c>; port 0 picks a free port.</summary>
    public string Listen { get; set; } = "127.0.0.1:7700";

    /// <summary>PEM or PFX certificate for TLS; required when <see cref="Listen"/> is not a loopback address.</summary>
    public string? TlsCertificate { get; set; }

    /// <summary>PEM private key for <see cref="TlsCertificate"/> when the certificate's PEM file does not hold it (refused without a
    /// certificate, or beside a .pfx/.p12).</summary>
    public string? TlsKey { get; set; }

    /// <summary>Verifier backend: auto, simd, gpu, reference, or gpu-cpu (the GPU kernels on ILGPU's CPU accelerator,
    /// composed like gpu: router, threshold, fallback; for testing a GPU node without a GPU, slow, never for serving).
    /// libsodium is refused: it applies another rule. Default auto.</summary>
    public string Backend { get; set; } = "auto";

    /// <summary>Verifier threads. Default: all cores but one (at least one), which is left to the network and the store:
    /// on 2 cores a loaded relay accepted 13,600/s with one verifier thread against 11,500/s with two (means of four
    /// alternating runs of 150,000 streamed envelopes each).</summary>
    public int Threads { get; set; } = Math.Max(1, Environment.ProcessorCount - 1);

    /// <summary>With a GPU backend: smallest batch sent to the GPU; smaller ones go to SIMD. Default 1,024.</summary>
    public int GpuThreshold { get; set; } = 1_024;

    /// <summary>With a GPU backend: most signatures in one launch; device and page-locked buffers grow to it. Default 1,048,576.</summary>
    public int GpuMaxBatch { get; set; } = 1 << 20;

    /// <summary>With a CUDA GPU: multiply field limbs with PTX <c>mul.wide.s32</c> (the kernel's PTX rewritten). Default
    /// on, checked on an H200 (perf/gpu/results); <c>MEGANET_GPU_INLINE_PTX=0</c> also turns it off.</summary>
    public bool GpuInlinePtx { get; set; } = new Core.Verification.VerifierOptions().GpuInlinePtx;

    /// <summary>With a GPU backend: minutes after a GPU fault before the GPU's start-up check runs again (SIMD takes every
    /// batch meanwhile); the wait doubles at every fault and failed check, up to <see cref="GpuRetryMaxMinutes"/>, and
    /// starts from this again for a fault after the GPU served that long since it came back. 0: a
    /// GPU that faulted stays off until the node restarts. Default 5.</summary>
    public int GpuRetryMinutes { get; set; } = 5;

    /// <summary>With a GPU backend: the longest wait between checks of a GPU that faulted, in minutes. Default 60.</summary>
    public int GpuRetryMaxMinutes { get; set; } = 60;

    /// <summary>Most signatures per verification batch. Default 4,096.</summary>
    public int MaxBatch { get; set; } = 4_096;

    /// <summary>Longest a submission waits for others to fill its batch, in microseconds, counted from its arrival (one
    /// that waited behind a batch being verified goes in the next at once). Default 500.</summary>
    public int FlushMicroseconds { get; set; } = 500;

    /// <summary>Submissions waiting for verification before new ones are refused with RESOURCE_EXHAUSTED. Default 65,536.</summary>
    public int QueueCapacity { get; set; } = 65_536;

    /// <summary>Memory the submissions in admission may hold, in MiB (queued, being verified, or being stored): past it
    /// new ones are refused as by a full queue, and the proof of work demanded rises with this fill too. Default 256: the
    /// count alone let 65,536 envelopes of the 64 KiB class hold 8 GiB (a 128 KiB buffer each) while the disk lagged.</summary>
    public int QueueMaxMiB { get; set; } = 256;

    /// <summary>Submissions one <c>SubmitStream</c> call may have in admission at once; the stream stops reading
    /// until the oldest is answered. Default 512: on 2 cores, 8 streaming clients from 256 sending keys got 38,600/s
    /// (mean verifier batch 1,000–1,200, p50 90–100 ms) at 512 against 34,600/s (batch 610–690, p50 60–66 ms) at 256,
    /// means of five alternating runs of 150,000 envelopes: bigger batches hold more items of each key, which share one
    /// term of the batch equation. (Before that sharing, 256 did best: 20,600/s against 19,200/s at 1,024 and
    /// 18,100/s at 64.)</summary>
    public int StreamWindow { get; set; } = 512;

    /// <summary>Verified envelopes the admission batcher may have handed to the store and not yet had answered; past it
    /// the batcher waits for the store (a batch goes whatever its size when none is in flight), and the queue behind it
    /// pushes back. Default 16,384: a store group takes 10-30 ms under load, and the bound it replaced (four batches,
    /// about 4,000 envelopes while streaming) allowed at most 130,000-400,000/s through it. <see cref="QueueMaxMiB"/>
    /// bounds their memory either way.</summary>
    public int StoreInFlight { get; set; } = 16_384;

    /// <summary>Store groups (write-ahead-log commits) that may be between prepare and answer at once; see
    /// <see cref="Store.StoreOptions.GroupsInFlight"/>. Default 2, 1 to 8. More lets commits overlap on a machine whose
    /// cores wait on the store's round trip; whether it helps there is not measured yet (docs/store.md).</summary>
    public int StoreGroupsInFlight { get; set; } = 2;

    /// <summary>Threads the store's apply stage may write a large group's envelope records and leaf hashes on; see
    /// <see cref="Store.StoreOptions.ApplyThreads"/>. Default 1, 1 to 8. More spreads the one stage that takes a group at a
    /// time over cores a many-core machine has idle; whether it helps there is not measured yet (docs/store.md).</summary>
    public int StoreApplyThreads { get; set; } = 1;

    /// <summary>Memory, in MiB, the node lets request messages hold while they are still arriving (the bytes received
    /// of a message not yet whole); one site (an IPv4 address, or an IPv6 /48) may hold a quarter of it. A message that
    /// would go beyond it is refused with RESOURCE_EXHAUSTED + retry-after-ms. Default 256, at least 128 (so that one
    /// site can send two 16 MiB VerifyBatch requests slowly at once).</summary>
    public int ArrivingMessageMiB { get; set; } = 256;

    /// <summary>Memory, in MiB, the node lets <c>Fetch</c> replies and <c>Subscribe</c> pages hold until their clients
    /// have read them (a reply the client does not read stays in the node; HTTP/2 lets it not read); one site (an IPv4
    /// address, or an IPv6 /48) may hold a quarter of it. A Fetch that would go beyond it is refused with
    /// RESOURCE_EXHAUSTED + retry-after-ms, a subscription's next page waits for room (keepalives go on), and a reply or
    /// page not read within 30 s plus 1 s per 64 KiB is reset. Default 256, 16 to 1,048,576.</summary>
    public int UnsentReplyMiB { get; set; } = 256;

    /// <summary>Seconds a <c>SubmitStream</c> call may go without a request while every request it sent is answered;
    /// then the node ends it with DEADLINE_EXCEEDED, so an idle stream does not hold its connection (and the client's
    /// connection slot) open for good. Default 300.</summary>
    public int StreamIdleSeconds { get; set; } = 300;

    /// <summary>Sustained submissions per second per sending key. Default 200.</summary>
    public double SubmitRatePerKey { get; set; } = 200;

    /// <summary>Burst allowance per sending key. Default 400.</summary>
    public int SubmitBurst { get; set; } = 400;

    /// <summary>Proof-of-work bits demanded once the admission queue is three quarters full, of mail to a mailbox nearly
    /// at its quota (<see cref="MailboxPowFromPercent"/>), or once the node holds nearly <see cref="StoreMaxMiB"/> of
    /// mail; 0 turns stamps off. The queue's demand is 0 below a
    /// quarter full and rises linearly in between: ceil(PowMaxBits * (fill - 1/4) * 2). Default 16.</summary>
    public int PowMaxBits { get; set; } = 16;

    /// <summary>From how full a recipient's mailbox is (percent of the fuller of its two quotas) mail to it needs a
    /// proof-of-work stamp, so that sending keys made up on the spot, each with a fresh token bucket, cannot fill it for
    /// free. The demand is a quarter of <see cref="PowMaxBits"/> from there, rising by a quarter at each further quarter
    /// of the way to full, whatever the node's load (a full mailbox, or one without room for the envelope, is refused
    /// for its quota with no stamp asked); 0 turns it off. 0 to 99; default 50.</summary>
    public int MailboxPowFromPercent { get; set; } = 50;

    /// <summary><see cref="MailboxPowFromPercent"/> as it acts: 0 (off) also when <see cref="PowMaxBits"/> turns stamps off.</summary>
    internal int MailboxPowFrom => PowMaxBits == 0 ? 0 : MailboxPowFromPercent;

    /// <summary><see cref="StoreMaxMiB"/> in bytes (0: no cap).</summary>
    internal long StoreMaxBytes => StoreMaxMiB << 20;

    /// <summary>Proof-of-work bits demanded even when idle (a floor under the load-driven demand). Default 0: stamps dormant when idle.</summary>
    public int PowMinBits { get; set; }

    /// <summary>The most <see cref="StoreMaxMiB"/> may be set to: 1 EiB, so its bytes fit in a long.</summary>
    public const long MaxStoreMaxMiB = 1L << 40;

    /// <summary>The most <see cref="MaxEnvelopeBytes"/> may be set to: 256 KiB (a log record must fit in a log page).</summary>
    public const int MaxEnvelopeBytesLimit = 256 << 10;

    /// <summary>Largest envelope accepted (serialized), in bytes. Default 69,632.</summary>
    public int MaxEnvelopeBytes { get; set; } = 65_536 + 4_096;

    /// <summary>The most <see cref="MaxTtlDays"/> may be set to (ten years); clients refuse longer lifetimes too.</summary>
    public const double MaxTtlDaysLimit = 3650;

    /// <summary>The most <see cref="KeepaliveSeconds"/> may be set to (a day): a longer period is no keepalive.</summary>
    public const int MaxKeepaliveSeconds = 86_400;

    /// <summary>Longest envelope lifetime accepted, in days. Default 30.</summary>
    public double MaxTtlDays { get; set; } = 30;

    /// <summary>Mailbox quota by count. Default 10,000.</summary>
    public int MailboxMaxCount { get; set; } = 10_000;

    /// <summary>Mailbox quota by bytes. Default 64 MiB.</summary>
    public long MailboxMaxBytes { get; set; } = 64L << 20;

    /// <summary>Memory the store (envelope table and write-ahead log) may use before paging to disk, in MiB. Default 256, at least 8.</summary>
    public int StoreMemoryMiB { get; set; } = 256;

    /// <summary>Write-ahead log, in MiB, after which the store checkpoints (besides once a minute and at shutdown). More
    /// means fewer checkpoints under heavy load (on a 2-core machine streaming about 75,000 envelopes a second, a run
    /// with none carried about a tenth more) and a longer replay when the node restarts after <c>kill -9</c> (about
    /// 1 s per 100 MiB). In a store whose checkpoint writes more than half this (about 1.7 million waiting envelopes at
    /// the default memory), the log between checkpoints is twice what the last one wrote instead. 16 to 16,384; default
    /// 256.</summary>
    public int CheckpointLogMiB { get; set; } = 256;

    /// <summary>Free disk space, in MiB, the store keeps on the data directory's file system: below it new mail is refused
    /// with <c>RESOURCE_EXHAUSTED</c> (retryable) until space is back, while acks and checkpoints go on. 0 turns it off.
    /// Default 1,024.</summary>
    public int StoreMinFreeDiskMiB { get; set; } = 1024;

    /// <summary>The most mail the node holds, in MiB of envelopes waiting in all mailboxes (expired mail counts until the
    /// expiry sweep): from half of it senders must add proof of work, rising like a mailbox's demand to
    /// <see cref="PowMaxBits"/>, and beyond it new mail is refused with <c>RESOURCE_EXHAUSTED</c> until owners acknowledge
    /// mail or the sweep removes expired mail. The store's files take more than this (2.5 times as much in one
    /// measurement, docs/store.md). 0: no cap but the free-space mark. Default 10,240 (10 GiB of mail), so a node on a
    /// desktop's disk stays within bounds its operator can see.</summary>
    public long StoreMaxMiB { get; set; } = 10_240;

    /// <summary>ADDRESS:PORT of an HTTP/1.1 listener serving Prometheus text at <c>/metrics</c>, not the gRPC port; a
    /// non-loopback address is logged as a warning (plaintext, no authentication). Default empty: off.</summary>
    public string? MetricsListen { get; set; }

    /// <summary>Most client connections open at once on the gRPC port; more are closed as soon as they are accepted.
    /// Lowered at start to fit the hard open-file limit (<c>ulimit -Hn</c>: .NET raises the soft one to it), less 512
    /// descriptors for the rest of the node; a hard limit below 528 stops the node.
    /// Default 10,000.</summary>
    public int MaxConnections { get; set; } = 10_000;

    /// <summary>Most client connections one address (an IPv6 /64) may hold open on the gRPC port. Phones behind one
    /// carrier NAT share an IPv4 address: raise it when many clients connect from one address. Default 256.</summary>
    public int MaxConnectionsPerAddress { get; set; } = 256;

    /// <summary>Most live <c>Subscribe</c> streams the node holds. Past it, only sites (an IPv4 address, or an IPv6 /48)
    /// with fewer than 8 live get in, up to a tenth more, so that the few sites that filled it do not lock every other
    /// owner out; a refusal is RESOURCE_EXHAUSTED with <c>retry-after-ms</c>. Each stream costs a keepalive every
    /// <see cref="KeepaliveSeconds"/> and the memory of an open HTTP/2 stream, and keeps its connection clear of the
    /// idle timeout. 1 to 1,000,000; default 20,000 (two for each of <see cref="MaxConnections"/>' connections).</summary>
    public int MaxSubscriptions { get; set; } = 20_000;

    /// <summary>Most live <c>Subscribe</c> streams one client site (an IPv4 address, or an IPv6 /48) may hold;
    /// identities are free to make, so the 16 per mailbox alone let one host hold tens of thousands. Raise it with
    /// <see cref="MaxConnectionsPerAddress"/> when many clients connect from one address (a carrier NAT).
    /// 1 to 1,000,000; default 1,024 (four for each of the 256 connections an address may hold).</summary>
    public int MaxSubscriptionsPerSite { get; set; } = 1_024;

    /// <summary>Keepalive interval on Subscribe streams, in seconds: 1 to 86,400. Default 15.</summary>
    public int KeepaliveSeconds { get; set; } = 15;

    /// <summary>Longest a <c>Subscribe</c> stream lasts, in seconds: the node ends it after 90 % to 100 % of this
    /// (each subscription draws its own, so those opened together do not all come back at once) with UNAVAILABLE and
    /// the trailer <c>subscription-ended: lifetime</c>, and the client subscribes again with a fresh challenge from its
    /// cursor (the shipped clients do so without a word). The mailbox auth is checked only when a subscription opens:
    /// without an end, an auth captured before it was used (a TLS-terminating proxy, a plaintext h2c link) watched the
    /// mailbox's new mail for good. 1 to 86,400; default 3,600.</summary>
    public int SubscriptionLifetimeSeconds { get; set; } = 3_600;

    /// <summary>Parsed <see cref="Listen"/>.</summary>
    public IPEndPoint ListenEndPoint => ParseEndPoint(Listen, nameof(Listen), FlagOf(nameof(Listen)), "7700", OriginOf(nameof(Listen)));

    /// <summary>Parsed <see cref="MetricsListen"/>; null when metrics are off.</summary>
    public IPEndPoint? MetricsEndPoint => string.IsNullOrEmpty(MetricsListen) ? null : ParseEndPoint(MetricsListen, nameof(MetricsListen), FlagOf(nameof(MetricsListen)), "9700", OriginOf(nameof(MetricsListen)));

    /// <summary>The command-line flag that gave each setting it gave (e.g. Threads → --threads), so that a refusal
    /// names what the person typed and says where the usage is; null or missing: the settings file or the environment.
    /// Internal, so the configuration binder leaves it alone.</summary>
    internal IReadOnlyDictionary<string, string>? Flags { get; set; }

    private string? FlagOf(string setting) => Flags?.GetValueOrDefault(setting);

    /// <summary>Where each setting not given by a flag came from: "the environment variable MEGANET_MegaNet__Threads"
    /// or the settings file's path; missing: its default. Internal, so the configuration binder leaves it alone.</summary>
    internal IReadOnlyDictionary<string, string>? Origins { get; set; }

    /// <summary>Tests: how often the store's recovery at start logs the replay's progress. Default 2 seconds.</summary>
    internal TimeSpan StoreRecoveryProgressInterval { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>"; set in FILE" or "; set by the environment variable …" for a setting from either (empty otherwise),
    /// ended by a refusal so the operator knows which to edit.</summary>
    private string OriginOf(string setting) => FlagOf(setting) is null && Origins?.GetValueOrDefault(setting) is { } origin
        ? origin.StartsWith("the environment", StringComparison.Ordinal) ? $"; set by {origin}" : $"; set in {origin}"
        : "";

    /// <summary>A setting as the operator gave it: its flag, else "TlsKey '…' (set in FILE)" style.</summary>
    private string Named(string setting, string value) => FlagOf(setting) is { } flag ? $"{flag} '{value}'"
        : OriginOf(setting) is { Length: > 0 } origin ? $"{setting} '{value}' ({origin[2..]})" : $"{setting} '{value}'";

    /// <summary>How advice names <paramref name="setting"/>: the flag that gave it, the setting's own name when the
    /// settings file or the environment gave it (the place to edit), else <paramref name="flag"/>, the flag a person would
    /// add.</summary>
    private string FixWith(string setting, string flag) =>
        FlagOf(setting) ?? (Origins?.ContainsKey(setting) == true ? setting : flag);

    /// <summary>The refusal of a setting: a <see cref="Cli.UsageException"/> (the command prints where the usage is)
    /// when <paramref name="flag"/> gave it.</summary>
    private static ArgumentException Refusal(string message, string? flag, Exception? inner = null) =>
        flag is null ? new ArgumentException(message, inner) : new Cli.UsageException("node", message);

    /// <summary>ADDRESS:PORT with the port written out: <see cref="IPEndPoint.TryParse(string, out IPEndPoint?)"/>
    /// alone takes "127.0.0.1" for port 0, which would bind a random port without a word.</summary>
    private static IPEndPoint ParseEndPoint(string value, string setting, string? flag, string examplePort, string origin)
    {
        string name = flag ?? setting;
        int colon = value.LastIndexOf(':');
        string host = colon > 0 ? value[..colon] : "";
        // An IPv6 address needs brackets, or its last group would be read as the port.
        bool hostOk = !host.Contains(':', StringComparison.Ordinal) || (host.StartsWith('[') && host.EndsWith(']'));
        if (colon > 0 && hostOk && ushort.TryParse(value.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out _)
            && IPEndPoint.TryParse(value, out IPEndPoint? endpoint))
        {
            return endpoint;
        }

        // The two mistakes that have the form right say which part is wrong: "is not ADDRESS:PORT" read as the
        // colon or the order being at fault.
        if (colon > 0 && hostOk && ulong.TryParse(value.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out ulong port))
        {
            string address = host.TrimStart('[').TrimEnd(']');
            if (port > ushort.MaxValue && IPAddress.TryParse(address, out _))
            {
                throw Refusal($"{name} '{value}': port {port} is out of range; a port is 0 to 65535 (0 picks a free port){origin}.", flag);
            }

            // Digits and dots are an IPv4 address written wrong (999.1.1.1, 127.0.0.256), which CheckHostName takes
            // for a host name as readily as localhost.
            if (address.Length > 0 && !IPAddress.TryParse(address, out _) && address.All(c => char.IsAsciiDigit(c) || c == '.'))
            {
                throw Refusal($"{name} '{value}': '{address}' is not an IPv4 address; each of its four parts is 0 to 255, " +
                    $"e.g. 127.0.0.1:{(port <= ushort.MaxValue ? port : examplePort)}{origin}.", flag);
            }

            if (!IPAddress.TryParse(address, out _) && Uri.CheckHostName(address) == UriHostNameType.Dns)
            {
                throw Refusal($"{name} '{value}': '{address}' is a host name; give an IP address of this machine, " +
                    $"e.g. 127.0.0.1:{(port <= ushort.MaxValue ? port : examplePort)} (or 0.0.0.0 for every address; [::1] for IPv6){origin}.", flag);
            }
        }

        throw Refusal($"{name} '{value}' is not ADDRESS:PORT (e.g. 127.0.0.1:{examplePort}, or [::1]:{examplePort} for IPv6; port 0 picks a free port){origin}.", flag);
    }

    /// <summary>The most proof-of-work bits the shipped clients pay: <see cref="Api.MegaNetClientOptions.MaxPowBits"/>'s
    /// default, and the JavaScript client's <c>MAX_POW_BITS</c> (examples/javascript), the same.</summary>
    internal static readonly int ClientMaxPowBits = new Api.MegaNetClientOptions().MaxPowBits;

    /// <summary>The most items of a <c>VerifyBatch</c> request verified as one batch: RelayService verifies a request in
    /// chunks of this many.</summary>
    internal const int VerifyBatchChunk = 4_096;

    /// <summary>Why <see cref="GpuThreshold"/> keeps every batch off the GPU (it is above any batch the node verifies:
    /// admission's <see cref="MaxBatch"/>, a <c>VerifyBatch</c> chunk), or null when it does not. Logged at start with
    /// a GPU, not refused: the node still verifies everything, on the CPU.</summary>
    internal string? GpuThresholdWarning
    {
        get
        {
            int largest = Math.Max(MaxBatch, VerifyBatchChunk);
            return GpuThreshold <= largest ? null
                : $"GpuThreshold {GpuThreshold:N0} is above the largest batch the node verifies ({largest:N0}: MaxBatch {MaxBatch:N0} in admission, " +
                  $"{VerifyBatchChunk:N0} in a VerifyBatch chunk), so no batch reaches the GPU and SIMD verifies everything; " +
                  $"set GpuThreshold to {largest:N0} or less (or raise MaxBatch), or start with --backend simd";
        }
    }

    /// <summary>Why <see cref="PowMinBits"/> locks the shipped clients out (it asks more than they pay, on every
    /// envelope), or null when it does not. Logged at start, not refused: clients set to pay more may be all this
    /// node serves.</summary>
    internal string? PowMinBitsWarning => PowMinBits <= ClientMaxPowBits ? null
        : $"PowMinBits {PowMinBits} is above the {ClientMaxPowBits} bits the shipped clients pay at most (MegaNetClientOptions.MaxPowBits, " +
          $"the command line and the JavaScript client): they refuse every send to this node, even an idle one; set PowMinBits to " +
          $"{ClientMaxPowBits} or less unless every client of this node is set to pay more";

    /// <summary>Why <see cref="MailboxMaxBytes"/> keeps every envelope out (it is below the largest envelope of the
    /// smallest payload class, 1 KiB, so no mailbox has room for one, and every sender is told the recipient's mailbox is
    /// full), or null when it does not. Logged at start, not refused: the range stays "at least 1".</summary>
    internal string? MailboxMaxBytesWarning => MailboxMaxBytes >= SmallestEnvelopeBytes ? null
        : $"MailboxMaxBytes {MailboxMaxBytes:N0} is below the {SmallestEnvelopeBytes:N0} bytes an envelope of the smallest payload class " +
          $"({Api.EnvelopeFormat.PayloadClasses[0]:N0} bytes) can take: no mailbox has room for one, so every send to this node is refused as to a full mailbox; " +
          $"set MailboxMaxBytes to at least {MaxEnvelopeBytes:N0} (MaxEnvelopeBytes) so that any envelope the node takes fits (it is in bytes, not MiB)";

    /// <summary>The largest serialized envelope of the smallest payload class.</summary>
    internal static readonly int SmallestEnvelopeBytes = Api.EnvelopeFormat.LargestEnvelopeLength(Api.EnvelopeFormat.PayloadClasses[0]);

    /// <summary>Throws <see cref="ArgumentException"/> naming the first bad setting and how to fix it.</summary>
    public void Validate()
    {
        // Each refusal names the setting as it was given: by its flag, with the usage hint, when a flag gave it.
        string? listenFlag = FlagOf(nameof(Listen)), metricsFlag = FlagOf(nameof(MetricsListen)), dataFlag = FlagOf(nameof(DataDirectory));
        string? certFlag = FlagOf(nameof(TlsCertificate)), keyFlag = FlagOf(nameof(TlsKey));
        IPEndPoint ep = ListenEndPoint;
        if (!IPAddress.IsLoopback(ep.Address) && string.IsNullOrEmpty(TlsCertificate))
        {
            throw Refusal($"{listenFlag ?? nameof(Listen)} {Listen} is reachable beyond this machine: give a certificate (--tls-cert, or TlsCertificate in meganet.json; a PEM certificate's key with --tls-key / TlsKey unless the same file holds it) or listen on 127.0.0.1{OriginOf(nameof(Listen))}.", listenFlag);
        }

        if (MetricsEndPoint is { } metrics && metrics.Port == ep.Port && ep.Port != 0
            && Overlap(metrics.Address, ep.Address))
        {
            // Kestrel would report the second bind as "address already in use", as if another program held it.
            throw Refusal($"{metricsFlag ?? nameof(MetricsListen)} {MetricsListen} is the gRPC address ({listenFlag ?? nameof(Listen)} {Listen}); give {FixWith(nameof(MetricsListen), "--metrics-listen")} a port of its own{(OriginOf(nameof(MetricsListen)) is { Length: > 0 } o ? o : OriginOf(nameof(Listen)))}.", metricsFlag ?? listenFlag);
        }

        if (string.IsNullOrWhiteSpace(DataDirectory))
        {
            throw Refusal($"{dataFlag ?? nameof(DataDirectory)} is empty; give {FixWith(nameof(DataDirectory), "--data")} a directory (it is created if missing){OriginOf(nameof(DataDirectory))}.", dataFlag);
        }

        if (File.Exists(DataDirectory))
        {
            throw Refusal($"{dataFlag ?? nameof(DataDirectory)} '{DataDirectory}' is a file, not a directory; give {FixWith(nameof(DataDirectory), "--data")} a directory (it is created if missing){OriginOf(nameof(DataDirectory))}.", dataFlag);
        }

        // A directory under a file cannot be made: refused here, not by the OS's words about the file once the
        // verifier (a GPU kernel compile, up to about 40 s) has started.
        for (string? d = Path.GetDirectoryName(Path.GetFullPath(DataDirectory)); d is not null && !Directory.Exists(d); d = Path.GetDirectoryName(d))
        {
            if (File.Exists(d))
            {
                throw Refusal($"{dataFlag ?? nameof(DataDirectory)} '{DataDirectory}' cannot be created: '{d}' is a file, not a directory; give {FixWith(nameof(DataDirectory), "--data")} a directory (it is created if missing){OriginOf(nameof(DataDirectory))}.", dataFlag);
            }
        }

        string store = Path.Combine(DataDirectory, "store");
        if (File.Exists(store))
        {
            throw Refusal($"{dataFlag ?? nameof(DataDirectory)} '{DataDirectory}' holds a file named store where the store's directory belongs; move it aside, or give {FixWith(nameof(DataDirectory), "--data")} another directory{OriginOf(nameof(DataDirectory))}.", dataFlag);
        }

        if (!string.IsNullOrEmpty(TlsKey) && string.IsNullOrEmpty(TlsCertificate))
        {
            throw Refusal($"{Named(nameof(TlsKey), TlsKey)} is given without a certificate: give {certFlag ?? (keyFlag is null ? nameof(TlsCertificate) : "--tls-cert")} too (the key belongs to a PEM certificate), or remove {keyFlag ?? nameof(TlsKey)}.", keyFlag);
        }

        if (!string.IsNullOrEmpty(TlsCertificate))
        {
            if (!File.Exists(TlsCertificate))
            {
                throw Refusal(Directory.Exists(TlsCertificate)
                    ? $"{certFlag ?? "TLS certificate"} '{TlsCertificate}' is a directory; give the certificate's file (PEM, or PFX/P12){OriginOf(nameof(TlsCertificate))}."
                    : $"{certFlag ?? "TLS certificate"} '{TlsCertificate}' does not exist{OriginOf(nameof(TlsCertificate))}.", certFlag);
            }

            if (!string.IsNullOrEmpty(TlsKey) && IsPkcs12(TlsCertificate))
            {
                throw Refusal($"{Named(nameof(TlsKey), TlsKey)} is given with '{TlsCertificate}', which holds its own key (PKCS#12): remove {keyFlag ?? nameof(TlsKey)}.", keyFlag ?? certFlag);
            }

            if (!string.IsNullOrEmpty(TlsKey) && !File.Exists(TlsKey))
            {
                throw Refusal(Directory.Exists(TlsKey)
                    ? $"{keyFlag ?? "TLS key"} '{TlsKey}' is a directory; give the PEM private key's file{OriginOf(nameof(TlsKey))}."
                    : $"{keyFlag ?? "TLS key"} '{TlsKey}' does not exist{OriginOf(nameof(TlsKey))}.", keyFlag);
            }

            // Load it now: a certificate Kestrel cannot use would otherwise fail the start deep inside the host.
            using TlsServerCertificate certificate = LoadTlsCertificate();
        }

        // Named here so an empty or unknown name is refused as this option, and libsodium (another rule) is not offered.
        Check(NodeBackends.Contains(Backend ?? "", StringComparer.OrdinalIgnoreCase), nameof(Backend),
            $"one of {string.Join(", ", NodeBackends)} (got '{Backend}'" +
            (string.Equals(Backend, Core.Verification.LibsodiumBatchVerifier.BackendName, StringComparison.OrdinalIgnoreCase) ? ", which applies libsodium's rule: the node admits only under MegaNet's, docs/verification.md)" : ")"));
        Check(Threads is >= 1 and <= 1024, nameof(Threads), "1 to 1024");
        Check(GpuThreshold >= 1, nameof(GpuThreshold), "at least 1");
        Check(GpuMaxBatch is >= 1 and <= 1 << 24, nameof(GpuMaxBatch), "1 to 16,777,216");
        Check(GpuRetryMinutes is >= 0 and <= 10_080, nameof(GpuRetryMinutes), "0 (never: a GPU that faulted stays off until a restart) to 10,080 (a week)");
        Check(GpuRetryMaxMinutes >= Math.Max(1, GpuRetryMinutes) && GpuRetryMaxMinutes <= 10_080, nameof(GpuRetryMaxMinutes),
            $"GpuRetryMinutes ({GpuRetryMinutes}{OriginOf(nameof(GpuRetryMinutes)).Replace("; ", ", ", StringComparison.Ordinal)}) or more, at least 1, and at most 10,080 (a week)");
        Check(MaxBatch is >= 1 and <= 1 << 20, nameof(MaxBatch), "1 to 1,048,576");
        Check(FlushMicroseconds is >= 0 and <= 1_000_000, nameof(FlushMicroseconds), "0 to 1,000,000");
        Check(QueueCapacity >= 1, nameof(QueueCapacity), "at least 1");
        Check(QueueMaxMiB is >= 1 and <= 1 << 20, nameof(QueueMaxMiB), "1 to 1,048,576");
        Check(StreamWindow is >= 1 and <= 65_536, nameof(StreamWindow), "1 to 65,536");
        Check(StoreInFlight is >= 1 and <= 1 << 20, nameof(StoreInFlight), "1 to 1,048,576");
        Check(StoreGroupsInFlight is >= 1 and <= 8, nameof(StoreGroupsInFlight), "1 to 8");
        Check(StoreApplyThreads is >= 1 and <= 8, nameof(StoreApplyThreads), "1 to 8");
        Check(ArrivingMessageMiB is >= 128 and <= 1 << 20, nameof(ArrivingMessageMiB), "128 to 1,048,576");
        Check(UnsentReplyMiB is >= 16 and <= 1 << 20, nameof(UnsentReplyMiB), "16 to 1,048,576");
        Check(StreamIdleSeconds is >= 1 and <= 86_400, nameof(StreamIdleSeconds), "1 to 86,400 (a day)");
        // "Infinity" parses as a double: a bucket that never empties, shown as an infinite rate in Status.
        Check(SubmitRatePerKey > 0 && double.IsFinite(SubmitRatePerKey), nameof(SubmitRatePerKey), "a finite number above 0");
        Check(SubmitBurst >= 1, nameof(SubmitBurst), "at least 1");
        Check(PowMaxBits is >= 0 and <= 32, nameof(PowMaxBits), "0 to 32");
        Check(PowMinBits >= 0 && PowMinBits <= PowMaxBits, nameof(PowMinBits), $"0 to PowMaxBits ({PowMaxBits}{OriginOf(nameof(PowMaxBits)).Replace("; ", ", ", StringComparison.Ordinal)})");
        Check(MailboxPowFromPercent is >= 0 and <= 99, nameof(MailboxPowFromPercent), "0 (off) to 99");
        Check(MaxEnvelopeBytes is >= 2048 and <= MaxEnvelopeBytesLimit, nameof(MaxEnvelopeBytes), "between 2048 (an envelope of the smallest size class, 1 KiB, takes about 1,250 bytes) and 262144 (256 KiB; a log record must fit in a log page)");
        Check(MaxTtlDays > 0 && MaxTtlDays <= MaxTtlDaysLimit, nameof(MaxTtlDays), $"above 0 and at most {MaxTtlDaysLimit}");
        Check(MailboxMaxCount >= 1, nameof(MailboxMaxCount), "at least 1");
        Check(MailboxMaxBytes >= 1, nameof(MailboxMaxBytes), "at least 1");
        Check(StoreMemoryMiB >= 8, nameof(StoreMemoryMiB), "at least 8");
        Check(StoreMinFreeDiskMiB >= 0, nameof(StoreMinFreeDiskMiB), "0 (off) or more");
        Check(StoreMaxMiB is >= 0 and <= MaxStoreMaxMiB, nameof(StoreMaxMiB), $"0 (no cap) to {MaxStoreMaxMiB:N0}");
        Check(CheckpointLogMiB is >= 16 and <= 16_384, nameof(CheckpointLogMiB), "16 to 16,384 (MiB of write-ahead log between checkpoints)");
        Check(MaxConnections is >= 1 and <= 1_000_000, nameof(MaxConnections), "1 to 1,000,000");
        Check(MaxConnectionsPerAddress is >= 1 and <= 1_000_000, nameof(MaxConnectionsPerAddress), "1 to 1,000,000");
        Check(KeepaliveSeconds is >= 1 and <= MaxKeepaliveSeconds, nameof(KeepaliveSeconds), $"1 to {MaxKeepaliveSeconds:N0} (a day)");
        Check(SubscriptionLifetimeSeconds is >= 1 and <= 86_400, nameof(SubscriptionLifetimeSeconds), "1 to 86,400 (a day)");
        Check(MaxSubscriptions is >= 1 and <= 1_000_000, nameof(MaxSubscriptions), "1 to 1,000,000");
        Check(MaxSubscriptionsPerSite is >= 1 and <= 1_000_000, nameof(MaxSubscriptionsPerSite), "1 to 1,000,000");
    }

    /// <summary>The OID of the Extended Key Usage that lets a certificate serve TLS (id-kp-serverAuth).</summary>
    internal const string ServerAuthenticationOid = "1.3.6.1.5.5.7.3.1";

    /// <summary>Loads <see cref="TlsCertificate"/>: PKCS#12 (.pfx, .p12, no password) or PEM with its key from
    /// <see cref="TlsKey"/> or, without one, from the certificate file itself; the other certificates in the file (a
    /// PEM full chain's intermediates, a PKCS#12 file's CA certificates) come with it, for the node to send.</summary>
    /// <exception cref="ArgumentException">It cannot be loaded, has no private key, or may not serve TLS; the message
    /// says what to give instead.</exception>
    internal TlsServerCertificate LoadTlsCertificate()
    {
        string path = TlsCertificate ?? throw new InvalidOperationException("No TLS certificate is configured.");
        string? certFlag = FlagOf(nameof(TlsCertificate)), keyFlag = FlagOf(nameof(TlsKey)), flag = certFlag ?? keyFlag;
        string named = certFlag is null && OriginOf(nameof(TlsCertificate)) is { Length: > 0 } origin
            ? $"TLS certificate '{path}' ({origin[2..]})"
            : $"{certFlag ?? "TLS certificate"} '{path}'";
        bool pkcs12 = IsPkcs12(path);
        X509Certificate2? certificate = null;
        var chain = new X509Certificate2Collection();
        try
        {
            if (pkcs12)
            {
                // The whole file, not LoadPkcs12FromFile's one certificate: a .pfx exported with its chain holds the
                // intermediates clients need.
                foreach (X509Certificate2 item in X509CertificateLoader.LoadPkcs12CollectionFromFile(path, null))
                {
                    if (certificate is null && item.HasPrivateKey)
                    {
                        certificate = item;
                    }
                    else
                    {
                        chain.Add(item);
                    }
                }
            }
            else
            {
                certificate = X509Certificate2.CreateFromPemFile(path, string.IsNullOrEmpty(TlsKey) ? null : TlsKey);
                // A full chain (fullchain.pem: the certificate, then its intermediates): CreateFromPemFile reads only
                // the first, and a node that sent only that one was refused by every client that has the root alone.
                // Blocks other than CERTIFICATE (the key, when the same file holds it) are skipped.
                var all = new X509Certificate2Collection();
                all.ImportFromPemFile(path);
                foreach (X509Certificate2 item in all)
                {
                    if (item.RawDataMemory.Span.SequenceEqual(certificate.RawDataMemory.Span))
                    {
                        item.Dispose();
                    }
                    else
                    {
                        chain.Add(item);
                    }
                }
            }
        }
        catch (UnauthorizedAccessException e)
        {
            certificate?.Dispose();
            DisposeAll(chain);
            // The node's own user must read them; the message otherwise names neither the option nor the fix.
            throw Refusal($"{named}{(string.IsNullOrEmpty(TlsKey) ? "" : $" or {keyFlag ?? "key"} '{TlsKey}'")} cannot be read by this user ({e.Message}): " +
                "give the user the node runs as read access to it (keep the key owner-only), or copy both where it can read them.", flag, e);
        }
        catch (Exception e) when (e is CryptographicException or ArgumentException)
        {
            certificate?.Dispose();
            DisposeAll(chain);
            string keyFile = string.IsNullOrEmpty(TlsKey) ? path : TlsKey;
            // ArgumentException: a PEM key that is not the certificate's ("The provided key does not match the public
            // key for this certificate."), which names neither file. The common PEM mistakes get advice of their own:
            // "a PEM certificate needs its PEM private key" read as wrong for a key file given as the certificate, and
            // "malformed" for a key under a passphrase, which the node cannot ask for.
            throw Refusal(
                pkcs12 ? $"{named} is not a PKCS#12 file without a password ({e.Message})."
                : !PemHolds(path, "CERTIFICATE") ? $"{named} holds no certificate (no PEM block labelled CERTIFICATE{(PemHolds(path, "PRIVATE KEY") ? "; it holds a private key" : "")}): " +
                    $"give {FixWith(nameof(TlsCertificate), "--tls-cert")} the certificate's file (PEM, or PFX/P12) and a PEM certificate's key with {FixWith(nameof(TlsKey), "--tls-key")}."
                : PemEncrypted(keyFile) ? $"{(string.IsNullOrEmpty(TlsKey) ? named : Named(nameof(TlsKey), TlsKey))} holds a private key encrypted with a passphrase, which the node cannot ask for: " +
                    $"give it the key unencrypted (openssl pkey -in {keyFile} -out node-key.pem, kept owner-only)."
                : string.IsNullOrEmpty(TlsKey) ? $"{named} could not be loaded ({e.Message}): a PEM certificate needs its PEM private key, given with --tls-key (or in the same file)."
                : $"{named} with {keyFlag ?? "key"} '{TlsKey}' could not be loaded ({e.Message}): give a PEM certificate and its matching PEM private key, or a .pfx/.p12 file.",
                flag,
                e);
        }

        if (certificate is not { HasPrivateKey: true })
        {
            certificate?.Dispose();
            DisposeAll(chain);
            throw Refusal($"{named} holds no private key; a server needs one (export the .pfx with its key).", flag);
        }

        var loaded = new TlsServerCertificate(certificate, chain);
        try
        {
            // Kestrel refuses such a certificate only when it binds, after the node key and the store were created,
            // with an InvalidOperationException the command line did not expect (a stack trace).
            RequireServerAuthentication(certificate, named, flag);
        }
        catch (ArgumentException)
        {
            loaded.Dispose();
            throw;
        }

        return loaded;
    }

    /// <summary>Refuses a certificate whose Extended Key Usage extension leaves out serverAuth, as Kestrel (and TLS
    /// clients) do; a certificate without the extension may serve any use.</summary>
    private static void RequireServerAuthentication(X509Certificate2 certificate, string named, string? flag)
    {
        List<Oid> usages = [];
        bool restricted = false;
        foreach (X509Extension extension in certificate.Extensions)
        {
            if (extension is X509EnhancedKeyUsageExtension usage)
            {
                restricted = true;
                foreach (Oid oid in usage.EnhancedKeyUsages)
                {
                    if (oid.Value == ServerAuthenticationOid)
                    {
                        return;
                    }

                    usages.Add(oid);
                }
            }
        }

        if (restricted)
        {
            string listed = usages.Count == 0 ? "none" : string.Join(", ", usages.Select(o => string.IsNullOrEmpty(o.FriendlyName) ? o.Value : $"{o.FriendlyName} {o.Value}"));
            throw Refusal(
                $"{named} may not serve TLS: its Extended Key Usage ({listed}) leaves out serverAuth ({ServerAuthenticationOid}). " +
                "Give a server certificate: have it issued with serverAuth in its Extended Key Usage (openssl: extendedKeyUsage = serverAuth), or without that extension.",
                flag);
        }
    }

    private static void DisposeAll(X509Certificate2Collection certificates)
    {
        foreach (X509Certificate2 item in certificates)
        {
            item.Dispose();
        }
    }

    /// <summary>Whether the text file at <paramref name="path"/> has a PEM block whose label ends with
    /// <paramref name="label"/> ("PRIVATE KEY" also matches "EC PRIVATE KEY" and "ENCRYPTED PRIVATE KEY"); false when it
    /// cannot be read.</summary>
    private static bool PemHolds(string path, string label)
    {
        try
        {
            string text = File.ReadAllText(path);
            return System.Text.RegularExpressions.Regex.IsMatch(text, $"-----BEGIN [A-Z0-9 ]*{label}-----");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    /// <summary>Whether the PEM private key at <paramref name="path"/> is under a passphrase: PKCS#8's ENCRYPTED PRIVATE
    /// KEY, or OpenSSL's traditional form with its Proc-Type header.</summary>
    private static bool PemEncrypted(string path) =>
        PemHolds(path, "ENCRYPTED PRIVATE KEY")
        || (PemHolds(path, "PRIVATE KEY") && File.ReadAllText(path).Contains("Proc-Type: 4,ENCRYPTED", StringComparison.Ordinal));

    private static bool IsPkcs12(string path) =>
        path.EndsWith(".pfx", StringComparison.OrdinalIgnoreCase) || path.EndsWith(".p12", StringComparison.OrdinalIgnoreCase);

    /// <summary>Whether Kestrel binding both addresses on one port would collide: the same address, [::] (which
    /// Kestrel binds dual-stack, taking IPv4 too) beside any, or 0.0.0.0 beside an IPv4 address. 0.0.0.0 and an
    /// IPv6 address do not collide: an IPv4 wildcard holds no IPv6 address.</summary>
    private static bool Overlap(IPAddress a, IPAddress b) =>
        a.Equals(b) || a.Equals(IPAddress.IPv6Any) || b.Equals(IPAddress.IPv6Any)
        || (a.Equals(IPAddress.Any) && b.AddressFamily == AddressFamily.InterNetwork)
        || (b.Equals(IPAddress.Any) && a.AddressFamily == AddressFamily.InterNetwork);

    /// <summary>The backends a node can run: MegaNet's rule (docs/verification.md) on each.</summary>
    internal static readonly string[] NodeBackends =
    [
        Core.Verification.BatchVerifierRegistry.Auto, Verify.Simd.SimdBatchVerifier.BackendName, Verify.Gpu.GpuBatchVerifier.DeviceBackendName,
        Verify.Gpu.GpuBatchVerifier.CpuBackendName, Core.Verification.ReferenceBatchVerifier.BackendName,
    ];

    private void Check(bool ok, string name, string range)
    {
        if (!ok)
        {
            string? flag = FlagOf(name);
            throw Refusal($"{flag ?? $"MegaNet option {name}"} must be {range}{OriginOf(name)}.", flag);
        }
    }
}

/// <summary>The node's TLS certificate, with its private key, and the certificates its file held besides (the
/// intermediates a server sends after its own, so that a client that trusts only the root can build the chain).</summary>
internal sealed class TlsServerCertificate(X509Certificate2 certificate, X509Certificate2Collection chain) : IDisposable
{
    /// <summary>The server's certificate, with its private key.</summary>
    public X509Certificate2 Certificate { get; } = certificate;

    /// <summary>The other certificates in the file, in its order; empty when it held only the server's.</summary>
    public X509Certificate2Collection Chain { get; } = chain;

    /// <summary>Disposes every certificate.</summary>
    public void Dispose()
    {
        Certificate.Dispose();
        foreach (X509Certificate2 item in Chain)
        {
            item.Dispose();
        }
    }
}
