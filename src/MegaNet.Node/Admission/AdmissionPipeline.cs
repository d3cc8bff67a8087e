using System.Buffers;
using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Threading.Channels;
using Google.Protobuf;
using Grpc.Core;
using MegaNet.Api;
using MegaNet.Api.V1;
using MegaNet.Core.Diagnostics;
using MegaNet.Core.Interop;
using MegaNet.Core.Threading;
using MegaNet.Core.Verification;
using MegaNet.Node.Hosting;
using MegaNet.Store;
using Microsoft.Extensions.Logging;

namespace MegaNet.Node.Admission;

/// <summary>
/// client → checks → bounded queue → batched signature verification → store → receipt. Cheap checks (shape, size
/// class, expiry, replay, per-key token bucket, proof-of-work while the node is loaded) run on the caller's thread;
/// concurrent submissions then coalesce into one verification batch (flushed at <see cref="NodeOptions.MaxBatch"/>
/// items or after <see cref="NodeOptions.FlushMicroseconds"/>), and the valid ones go to the store in one group commit.
/// A full queue answers RESOURCE_EXHAUSTED with a retry hint; memory stays bounded.
/// </summary>
public sealed partial class AdmissionPipeline : IAsyncDisposable
{
    private readonly IBatchVerifier _verifier;
    private readonly IEnvelopeStore _store;
    private readonly NodeOptions _options;
    private readonly string _rateLimitedText;
    private readonly IDisposable _queueDepthSource;
    private readonly TimeProvider _clock;
    private readonly ILogger _logger;
    private readonly StoreRefusalWatch _storeRefusals;
    private readonly PowSeeds _powSeeds;
    private readonly Channel<Pending> _queue;
    private readonly Task _batcher;
    /// <summary>Sending keys with a token bucket, at most (then the full ones are forgotten).</summary>
    private const int MaxBuckets = 1_000_000;

    // Added to and removed from by the batcher thread alone (TakeToken, SweepBuckets); read by callers (HasToken).
    private readonly ConcurrentDictionary<Key256, TokenBucket> _buckets = new();
    private int _bucketCount;
    private long _nextBucketSweep = long.MinValue; // batcher thread

    // Submissions that took their sending key's token and are with the store, until the store answers them: chained
    // (Pending.NextTaker) from a slot of their envelope id. A copy of one of them (the same envelope on another
    // connection at the same moment) that finds the key's bucket empty, emptied by that very submission, is answered
    // with its receipt as a replay would be: refused for the rate, it was told to wait for a token its one envelope
    // already paid. Written by the batcher and the store stage, read by callers, each chain under its stripe's lock; a
    // fixed table whose links are fields of the submissions, so nothing is allocated per envelope. (Until the sixty-second
    // session a slot held one submission and a newer one took its place: with as many slots as envelopes the store may
    // hold in flight, a copy under streaming load often found its original pushed out and was refused for the rate.)
    private const int TokenTakerSlots = 1 << 14;
    private const int TokenTakerStripes = 64;
    private readonly Pending?[] _tokenTakers = new Pending?[TokenTakerSlots];
    private readonly Lock[] _tokenTakerLocks = [.. Enumerable.Range(0, TokenTakerStripes).Select(_ => new Lock())];
    private long _batches;
    private long _signatures;
    private long _overflowed;
    private int _depth;
    // Bytes of the buffers of submissions admitted to the queue and not yet released (see QueueMaxMiB).
    private long _heldBytes;
    private int _storeRefusalLogged;
    private bool _closing;
    private int _disposed;

    /// <summary>Starts the batcher: submissions are verified by <paramref name="verifier"/> (MegaNet's rule only) and
    /// the accepted ones stored in <paramref name="store"/>, under <paramref name="options"/>' limits.</summary>
    public AdmissionPipeline(IBatchVerifier verifier, IEnvelopeStore store, NodeOptions options, TimeProvider clock, ILogger<AdmissionPipeline> logger)
    {
        RequireMegaNetRule(verifier);
        _verifier = verifier;
        _store = store;
        _options = options;
        _clock = clock;
        _logger = logger;
        _storeRefusals = new StoreRefusalWatch(options, clock, logger);
        _powSeeds = new PowSeeds(clock);
        _rateLimitedText = $"Too many submissions from this sending key (limit {options.SubmitRatePerKey}/s, burst {options.SubmitBurst}); retry later.";
        _queue = Channel.CreateBounded<Pending>(new BoundedChannelOptions(options.QueueCapacity) { SingleReader = true, FullMode = BoundedChannelFullMode.Wait });
        _queueDepthSource = MegaNetMetrics.ObserveQueueDepth(() => Volatile.Read(ref _depth));
        _batcher = Task.Factory.StartNew(BatchLoop, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
    }

    /// <summary>Batches verified so far.</summary>
    public long Batches => Interlocked.Read(ref _batches);

    /// <summary>Signatures verified so far.</summary>
    public long Signatures => Interlocked.Read(ref _signatures);

    /// <summary>Submissions verified in a second batch because their site had more than <see cref="MainBatchPerSite"/>
    /// in a window shared with other sites.</summary>
    public long Overflowed => Interlocked.Read(ref _overflowed);

    /// <summary>Refuses a backend that applies another rule than docs/verification.md (libsodium's).</summary>
    internal static void RequireMegaNetRule(IBatchVerifier verifier)
    {
        if (verifier.Rule != VerificationRule.MegaNet)
        {
            throw new ArgumentException($"Backend '{verifier.Name}' applies libsodium's rule, not MegaNet's; the node admits only under MegaNet's rule (docs/verification.md). Choose one of {string.Join(", ", NodeOptions.NodeBackends)}.");
        }
    }

    /// <summary>The seed proof-of-work stamps are to be made for now (<c>Status.pow_seed</c>); read-only, as stamps are
    /// checked against it.</summary>
    public ReadOnlySpan<byte> PowSeed => _powSeeds.Current;

    /// <summary>The node's seeds (tests turn them).</summary>
    internal PowSeeds PowSeeds => _powSeeds;

    /// <summary>Sending keys with a token bucket now (tests).</summary>
    internal int SendingKeysTracked => _buckets.Count;

    /// <summary>Whether the store refuses new mail for want of room, told to the operator in the log and in <c>Status</c>.</summary>
    internal StoreRefusalWatch StoreRefusals => _storeRefusals;

    /// <summary>Submissions waiting for verification.</summary>
    public int QueueDepth => Volatile.Read(ref _depth);

    /// <summary>Bytes the buffers of submissions in admission hold (queued, being verified or stored), which
    /// <see cref="NodeOptions.QueueMaxMiB"/> bounds.</summary>
    public long HeldBytes => Interlocked.Read(ref _heldBytes);

    // The queue's fill: by count or by the memory its submissions hold, whichever is further.
    private double QueueFill => Math.Max((double)QueueDepth / _options.QueueCapacity, (double)HeldBytes / ((long)_options.QueueMaxMiB << 20));

    /// <summary>The backend in use.</summary>
    public IBatchVerifier Verifier => _verifier;

    /// <summary>Proof-of-work bits demanded right now of every envelope: 0 while the queue is under a quarter full, rising
    /// to <see cref="NodeOptions.PowMaxBits"/> as it fills; with <see cref="NodeOptions.StoreMaxMiB"/>, also a quarter of
    /// that from half the mail the node may hold, another at each further quarter of the way to full; at least
    /// <see cref="NodeOptions.PowMinBits"/>.</summary>
    public int PowBitsRequired => NodeBitsFor(0);

    /// <summary><see cref="PowBitsRequired"/> for an envelope of <paramref name="length"/> bytes: without the held mail's
    /// part when the envelope would take the node past <see cref="NodeOptions.StoreMaxMiB"/>, which the store refuses
    /// (work paid for a refusal would be wasted).</summary>
    private int NodeBitsFor(int length)
    {
        if (_options.PowMaxBits == 0)
        {
            return 0; // stamps off (PowMinBits is at most PowMaxBits)
        }

        double fill = QueueFill;
        int load = fill < 0.25 ? 0 : (int)Math.Ceiling(_options.PowMaxBits * Math.Min(1.0, (fill - 0.25) / 0.5));
        int held = 0;
        long cap = _options.StoreMaxBytes;
        if (cap > 0)
        {
            long heldBytes = _store.HeldBytes;
            held = heldBytes + length > cap ? 0 : QuarterBits(Quarters(heldBytes, cap, 50));
        }

        return Math.Max(_options.PowMinBits, Math.Max(load, held));
    }

    /// <summary>Bits for a demand of <paramref name="quarters"/> quarters of <see cref="NodeOptions.PowMaxBits"/>, rounded up.</summary>
    private int QuarterBits(int quarters) => (_options.PowMaxBits * quarters + 3) / 4;

    /// <summary>Proof-of-work bits demanded of an envelope of <paramref name="length"/> bytes to
    /// <paramref name="recipient"/>: the larger of <see cref="PowBitsRequired"/> and what the mailbox asks for
    /// (<see cref="NodeOptions.MailboxPowFromPercent"/>), and whether the mailbox's is the larger.</summary>
    /// <remarks>In quarters of <see cref="NodeOptions.PowMaxBits"/>, not in proportion to the fill: any sender sees the
    /// demand, and steps say less about how much mail waits (docs/protocol.md). Integers throughout, as the store
    /// decides which mailboxes it reports, so the two agree at every boundary.</remarks>
    private int PowBitsFor(ReadOnlySpan<byte> recipient, int length, out bool forMailbox)
    {
        int load = NodeBitsFor(length);
        forMailbox = false;
        int from = _options.MailboxPowFrom;
        if (from == 0)
        {
            return load;
        }

        MailboxUsage held = _store.ReportedUsage(recipient);
        // Under the mark (not reported), or full, or too full for this envelope: no stamp. The store refuses the last
        // two for the quota (unless expired mail made room), and work paid for a refusal would be wasted.
        if (held == default || held.Count >= _options.MailboxMaxCount || held.Bytes + length > _options.MailboxMaxBytes)
        {
            return load;
        }

        int quarters = Math.Max(Quarters(held.Count, _options.MailboxMaxCount, from), Quarters(held.Bytes, _options.MailboxMaxBytes, from));
        int mailbox = QuarterBits(quarters);
        forMailbox = mailbox > load;
        return Math.Max(load, mailbox);
    }

    /// <summary>0 under <paramref name="from"/> % of <paramref name="quota"/>; from there 1, then one more at each further
    /// quarter of the way to full, at most 4: 1 + floor(4 (100 held - from quota) / ((100 - from) quota)).</summary>
    internal static int Quarters(long held, long quota, int from)
    {
        Int128 over = (Int128)held * 100 - (Int128)from * quota;
        return over < 0 ? 0 : (int)Int128.Min(4, 1 + 4 * over / ((Int128)(100 - from) * quota));
    }

    /// <summary>Admits one envelope from <paramref name="source"/> (the client's address, when known). The task faults
    /// with an <see cref="RpcException"/> whose status says why not.</summary>
    /// <remarks>No per-call state machine: the checks run synchronously (the replay lookup completes synchronously when
    /// the FASTER store has the record in memory; a read from disk continues asynchronously) and the task handed back
    /// is the pending submission itself, completed by the store stage. Cancellation does not withdraw a queued
    /// submission; its result is simply not read.</remarks>
    public Task<Receipt> SubmitAsync(Envelope envelope, ClientAddress? source, CancellationToken cancellationToken) =>
        SubmitAsync(envelope, source, undefinedFields: null, cancellationToken);

    /// <summary>Admits one envelope as <see cref="SubmitAsync(Envelope, ClientAddress?, CancellationToken)"/> does, or
    /// refuses it with <paramref name="undefinedFields"/> when not null: why the envelope was sent with protobuf fields
    /// version 1 does not define, which were dropped when its request was parsed (see UndefinedFieldCheck).</summary>
    public Task<Receipt> SubmitAsync(Envelope envelope, ClientAddress? source, string? undefinedFields, CancellationToken cancellationToken)
    {
        // Refusals are returned as faulted tasks, never thrown: they come fastest when the node is busiest (a full
        // queue, a flood past the token bucket), and a throw and catch cost more than the check.
        if (ShapeRefusal(envelope, undefinedFields, out int length) is { } refused)
        {
            return Task.FromException<Receipt>(refused);
        }

        Pending? pending = null;
        try
        {
            // Bad signatures are held against the site (an IPv6 /48), so hopping /64s gives a forger no fresh start.
            pending = new Pending(envelope, length, Stopwatch.GetTimestamp()) { Source = source?.Site };

            // The lookup below reads the id's bucket at a random place in the store's index, larger than the cache: it
            // is fetched while the envelope is re-encoded.
            _store.PrefetchFind(pending.Id.Span);
            pending.WriteCanonical(envelope);

            // Replays return the original receipt and cost no verification. The mark, read first, tells the store
            // that this lookup found nothing (set below), so its duplicate check need not read the table again.
            long mark = _store.LookupMark;
            ValueTask<PutReceipt?> replay = _store.FindAsync(pending.Id, cancellationToken);
            if (!replay.IsCompletedSuccessfully)
            {
                return AdmitAfterLookupAsync(pending, envelope, replay.AsTask(), mark);
            }

            if (replay.Result is { } existing)
            {
                pending.Release();
                return Task.FromResult(ToProto(existing));
            }

            pending.NotFoundAtMark = mark;
            return Admit(pending, envelope);
        }
        catch (Exception e)
        {
            pending?.Release();
            return Task.FromException<Receipt>(AsStatus(e));
        }
    }

    /// <summary>Every refusal reaches the caller as a gRPC status from the list in docs/protocol.md, never UNKNOWN.</summary>
    private RpcException AsStatus(Exception e) => e switch
    {
        RpcException rpc => rpc,
        ObjectDisposedException => Reject("closing", StatusCode.Unavailable, "The node is shutting down; nothing was stored. Retry later or through another node."),
        _ => Unexpected(e),
    };

    private RpcException Unexpected(Exception e)
    {
        LogAdmissionFailed(_logger, e);
        return Reject("internal", StatusCode.Internal, "The node failed to admit the envelope (logged); nothing was stored. Retry.");
    }

    private async Task<Receipt> AdmitAfterLookupAsync(Pending pending, Envelope envelope, Task<PutReceipt?> lookup, long mark)
    {
        PutReceipt? existing;
        try
        {
            existing = await lookup.ConfigureAwait(false);
        }
        catch (Exception e)
        {
            pending.Release();
            throw AsStatus(e);
        }

        if (existing is not null)
        {
            pending.Release();
            return ToProto(existing);
        }

        pending.NotFoundAtMark = mark;
        Task<Receipt> admitted;
        try
        {
            admitted = Admit(pending, envelope);
        }
        catch (Exception e)
        {
            // As on the synchronous path: a status from docs/protocol.md's list, never UNKNOWN, and the buffer back.
            pending.Release();
            throw AsStatus(e);
        }

        return await admitted.ConfigureAwait(false);
    }

    /// <summary>Token bucket, proof of work, then the queue; a refusal releases the submission's buffer. From the queue
    /// on only the submission's buffer is kept, not the parsed envelope.</summary>
    private Task<Receipt> Admit(Pending pending, Envelope envelope)
    {
        RpcException refusal;
        int bits;
        // Only a look: the token is taken once the signature verifies, so envelopes forged under someone's sending key
        // (relays and recipients see it) cannot spend that key's budget, and refusals cost nothing.
        if (!HasToken(pending))
        {
            if (AnswerWithoutToken(pending) is { } answer)
            {
                pending.Release();
                return answer;
            }

            refusal = RateLimited();
        }
        else if ((bits = PowBitsFor(pending.Recipient.Span, pending.Canonical.Length, out bool forMailbox)) > 0
            && _powSeeds.StampBits(pending.SigningBytes[..EnvelopeFormat.CoreLength], envelope) < bits)
        {
            // A stamp that claims enough but does not hold here: say why, since "at least N bits" alone would send its
            // client to stamp again with the same mistake. (With no demand a stamp counts for nothing, so one that does
            // not hold, made for a seed since turned, is taken as none: an honest resend must not fail on it.)
            string? notHeld = envelope.Pow is { } pow && pow.Bits >= bits
                ? $" This envelope's stamp claims {pow.Bits} bits but does not hold for this node's current seed (Status.pow_seed, in the pow-seed trailer) or the one before it: it was made for another node, before this node restarted, for a seed over 10 to 20 minutes old, or it claims other bits than its hash begins with (a stamp claims exactly the zero bits its hash has; docs/protocol.md)."
                : null;
            refusal = forMailbox
                ? Reject("mailbox_pow", StatusCode.FailedPrecondition,
                    $"The recipient's mailbox is nearly full, so mail to it needs a proof-of-work stamp of at least {bits} bits until its owner collects mail (see Status.limits.mailbox_pow_from_percent).{notHeld}", powBits: bits, powSeed: PowSeed)
                : Reject("pow", StatusCode.FailedPrecondition,
                    $"The node is under load (or holds much mail) and requires a proof-of-work stamp of at least {bits} bits (see Status.pow_bits_required).{notHeld}", powBits: bits, powSeed: PowSeed);
        }
        else
        {
            Interlocked.Increment(ref _depth);
            // The memory bound: held until the buffer goes back to its pool (after the store), so a disk that lags
            // fills it as it fills the queue. One submission always gets in (a budget below one envelope still admits).
            // (Counted before it is queued: the batcher may release it at once.)
            long held = Interlocked.Add(ref _heldBytes, pending.BufferBytes);
            pending.CountedIn = this;
            if ((held <= (long)_options.QueueMaxMiB << 20 || held == pending.BufferBytes) && _queue.Writer.TryWrite(pending))
            {
                return pending.Task;
            }

            pending.CountedIn = null;
            Interlocked.Add(ref _heldBytes, -pending.BufferBytes);
            Interlocked.Decrement(ref _depth);
            refusal = Volatile.Read(ref _closing)
                ? Reject("closing", StatusCode.Unavailable, "The node is shutting down; nothing was stored. Retry later or through another node.")
                : Reject("queue_full", StatusCode.ResourceExhausted, "The node's admission queue is full; retry shortly.", retryAfterMs: 50);
        }

        pending.Release();
        return Task.FromException<Receipt>(refusal);
    }

    /// <summary>Stops taking submissions, verifies and stores what is queued, then returns. Only the first call does
    /// (and throws what the batcher's end threw); the node's stop calls it, then the service container again.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        Volatile.Write(ref _closing, true);
        _queue.Writer.TryComplete();
        try
        {
            await _batcher.ConfigureAwait(false);
        }
        finally
        {
            _queueDepthSource.Dispose();
        }
    }

    /// <summary>Checks what needs no cryptography: the refusal, or null and the envelope's serialized length.</summary>
    private RpcException? ShapeRefusal(Envelope? envelope, string? undefinedFields, out int length)
    {
        length = 0;
        // Off the wire these fields were found on the request's tags and dropped in the parse (UndefinedFieldCheck);
        // HasUnknownFields is for envelopes that reach admission any other way. First: a field of the right number
        // under another wire type was dropped too, and the version or size refusal it then causes would name the wrong
        // cause.
        if (undefinedFields is not null)
        {
            return Reject("malformed", StatusCode.InvalidArgument, undefinedFields);
        }

        if (envelope is null)
        {
            return Reject("malformed", StatusCode.InvalidArgument, "The request carries no envelope.");
        }

        if (envelope.Version != EnvelopeFormat.Version)
        {
            return Reject("malformed", StatusCode.InvalidArgument, $"Envelope version {envelope.Version} is not supported; this node speaks version {EnvelopeFormat.Version}.");
        }

        if (envelope.Recipient.Length != 32 || envelope.SendingKey.Length != 32 || envelope.Signature.Length != 64)
        {
            return Reject("malformed", StatusCode.InvalidArgument, "recipient and sending_key must be 32 bytes and signature 64 bytes.");
        }

        if (envelope.HasUnknownFields)
        {
            return Reject("malformed", StatusCode.InvalidArgument,
                "The envelope carries protobuf fields that version 1 does not define; no signature covers them, so relays refuse them. Send only the fields of docs/protocol.md.");
        }

        if (!EnvelopeFormat.IsPaddedSize(envelope.SealedPayload.Length))
        {
            return Reject("padding", StatusCode.InvalidArgument,
                $"sealed_payload is {envelope.SealedPayload.Length} bytes; it must be a size class ({PayloadClassList}) plus {EnvelopeFormat.SealOverhead}.");
        }

        length = envelope.CalculateSize();
        if (length > _options.MaxEnvelopeBytes)
        {
            return Reject("oversize", StatusCode.InvalidArgument, $"The envelope is {length} bytes; the limit is {_options.MaxEnvelopeBytes}.");
        }

        // In milliseconds: any int64 is a valid field value, and most are outside DateTimeOffset's range.
        long now = _clock.GetUtcNow().ToUnixTimeMilliseconds();
        // Both refusals give the two times: a sender whose clock is off (a phone set by hand, a VM resumed) otherwise
        // reads only that its fresh envelope "has expired".
        if (envelope.ExpiresUnixMs <= now)
        {
            return Reject("expired", StatusCode.InvalidArgument,
                $"The envelope has expired: its expiry is {ExpiryText(envelope.ExpiresUnixMs)}, the node's time {ExpiryText(now)}. Seal it again with a later " +
                "expiry; if it was just made, the sender's clock is behind.");
        }

        if (envelope.ExpiresUnixMs - now > (long)TimeSpan.FromDays(_options.MaxTtlDays).TotalMilliseconds)
        {
            return Reject("ttl", StatusCode.InvalidArgument,
                $"The envelope's expiry, {ExpiryText(envelope.ExpiresUnixMs)}, is more than {_options.MaxTtlDays} days (the node's maximum TTL) after the node's " +
                $"time, {ExpiryText(now)}. Seal it again with a nearer expiry; if its lifetime was within {_options.MaxTtlDays} days, the sender's clock is ahead.");
        }

        return null;
    }

    private static readonly string PayloadClassList = string.Join(", ", EnvelopeFormat.PayloadClasses);

    private static readonly long MinCalendarUnixMs = DateTimeOffset.MinValue.ToUnixTimeMilliseconds(), MaxCalendarUnixMs = DateTimeOffset.MaxValue.ToUnixTimeMilliseconds();

    // An expiry as a UTC time to the second, or as the raw field where no calendar holds it (any int64 is a valid value).
    private static string ExpiryText(long unixMs) =>
        unixMs >= MinCalendarUnixMs && unixMs <= MaxCalendarUnixMs
            ? DateTimeOffset.FromUnixTimeMilliseconds(unixMs).ToString("yyyy-MM-dd HH:mm:ss 'UTC'", CultureInfo.InvariantCulture)
            : $"{unixMs} ms after 1970 (outside any calendar)";

    private RpcException RateLimited() => Reject("rate_limited", StatusCode.ResourceExhausted, _rateLimitedText,
        retryAfterMs: (int)Math.Clamp(Math.Ceiling(1000 / _options.SubmitRatePerKey), 1, 3_600_000));

    /// <summary>True if the sending key's bucket holds a token now (a key without a bucket has a full one). The bucket
    /// found stays with the submission for <see cref="TakeToken"/> and <see cref="ReturnToken"/>.</summary>
    /// <remarks>One lookup per envelope instead of three: each missed the cache on the dictionary's node (the
    /// envelopes streaming through evict it): the two dropped took 1.5 % of a streaming node's CPU samples (2026-12-01).</remarks>
    private bool HasToken(Pending pending)
    {
        if (!_buckets.TryGetValue(Key256.From(pending.SendingKey), out TokenBucket? bucket))
        {
            return true;
        }

        pending.Bucket = bucket;
        return bucket.Has(Stopwatch.GetTimestamp(), _options.SubmitRatePerKey, _options.SubmitBurst);
    }

    /// <summary>Takes a token for a verified envelope.</summary>
    /// <remarks>A bucket the sweep forgot since <see cref="HasToken"/> found it (it was full) is looked up again: the
    /// submissions queued on it took a whole burst from it while later ones took another from the key's new bucket,
    /// twice the burst at once. One dropped when the table, over its bound, was cleared whole
    /// (<see cref="ForgetFullBuckets"/>) may still give this token: bounded memory matters more there.</remarks>
    private bool TakeToken(Pending pending)
    {
        long now = Stopwatch.GetTimestamp();
        if (pending.Bucket is not { } bucket || bucket.Forgotten)
        {
            Key256 id = Key256.From(pending.SendingKey);
            if (!_buckets.TryGetValue(id, out bucket))
            {
                // Counted here rather than with ConcurrentDictionary.Count, which takes every lock of the dictionary
                // (it was 4 % of node CPU under streaming load). Racing adds may count a key twice: the bound is
                // approximate.
                if (Interlocked.Increment(ref _bucketCount) > MaxBuckets)
                {
                    ForgetFullBuckets(now);
                }

                bucket = _buckets.GetOrAdd(id, new TokenBucket(_options.SubmitBurst, now));
            }

            pending.Bucket = bucket;
        }

        // Published before the token is taken, so that a caller who finds the bucket emptied by this submission finds
        // it in the table too (the bucket's lock orders the two); taken out again when no token is left.
        AddTokenTaker(pending);
        if (bucket.TryTake(now, _options.SubmitRatePerKey, _options.SubmitBurst))
        {
            return true;
        }

        ForgetTokenTaker(pending);
        return false;
    }

    /// <summary>The submission of the same envelope that took its sending key's token and is still with the store (see
    /// <c>_tokenTakers</c>): its answer is the copy's. Every path takes a taker out of the table before it answers it
    /// (<see cref="ForgetTokenTaker"/>), so one found here has no answer yet; for a copy that comes later
    /// <see cref="StoredSinceLookup"/> takes over.</summary>
    private Pending? TokenTakerOf(Pending copy)
    {
        uint slot = TokenTakerSlot(copy.IdKey);
        lock (TokenTakerLock(slot))
        {
            for (Pending? taker = _tokenTakers[slot]; taker is not null; taker = taker.NextTaker)
            {
                if (taker != copy && taker.IdKey == copy.IdKey)
                {
                    return taker;
                }
            }
        }

        return null;
    }

    /// <summary>Submissions the token-taker table holds now (a scan of it; tests): those with the store, unanswered.</summary>
    internal int TokenTakersHeld
    {
        get
        {
            int held = 0;
            for (uint slot = 0; slot < TokenTakerSlots; slot++)
            {
                lock (TokenTakerLock(slot))
                {
                    for (Pending? taker = _tokenTakers[slot]; taker is not null; taker = taker.NextTaker)
                    {
                        held++;
                    }
                }
            }

            return held;
        }
    }

    private static uint TokenTakerSlot(Key256 envelopeId) => (uint)envelopeId.GetHashCode() % TokenTakerSlots;

    private Lock TokenTakerLock(uint slot) => _tokenTakerLocks[slot % TokenTakerStripes];

    /// <summary>Puts <paramref name="taker"/> at the head of its slot's chain (once: a second call does nothing).</summary>
    private void AddTokenTaker(Pending taker)
    {
        uint slot = TokenTakerSlot(taker.IdKey);
        lock (TokenTakerLock(slot))
        {
            if (!taker.IsTokenTaker)
            {
                taker.NextTaker = _tokenTakers[slot];
                _tokenTakers[slot] = taker;
                taker.IsTokenTaker = true;
            }
        }
    }

    /// <summary>Takes <paramref name="taker"/> out of the table before it is answered (by the store stage, or the batcher
    /// when the batch fails before the store), or when it got no token; nothing when it is not there. (Until the
    /// fifty-seventh session a taker stayed until another envelope took its slot: the table held the last 16,384
    /// submissions with their receipts alive for seconds, promoted by every collection, and the node's gen-0 pauses
    /// were 40-75 ms on a machine whose large cache sizes the GC's gen-0 budget at hundreds of MiB: unary p99 ~50 ms at
    /// 5,000/s; docs/performance-log.md.)</summary>
    private void ForgetTokenTaker(Pending taker)
    {
        uint slot = TokenTakerSlot(taker.IdKey);
        lock (TokenTakerLock(slot))
        {
            if (!taker.IsTokenTaker)
            {
                return;
            }

            ref Pending? link = ref _tokenTakers[slot];
            while (link != taker)
            {
                link = ref link!.NextTaker;
            }

            link = taker.NextTaker;
            taker.NextTaker = null;
            taker.IsTokenTaker = false;
        }
    }

    /// <summary>The answer to <paramref name="p"/>, refused a token, where it is a copy of an envelope that took one
    /// (<see cref="TokenTakerOf"/>) or may have been stored since its lookup (<see cref="StoredSinceLookup"/>); null
    /// where the rate refusal is its answer. Read before <paramref name="p"/>'s buffer goes back.</summary>
    private Task<Receipt>? AnswerWithoutToken(Pending p) =>
        TokenTakerOf(p) is { } original ? AsCopyOfAsync(original)
        : StoredSinceLookup(p) ? ReplayOrRateLimitedAsync(p.Id.ToArray())
        : null;

    /// <summary>Whether the store applied a group since <paramref name="copy"/>'s replay lookup found nothing: then
    /// the submission that took the token it lacks may have been stored and left the table since, and a second lookup
    /// tells (<see cref="ReplayOrRateLimitedAsync"/>).</summary>
    private bool StoredSinceLookup(Pending copy) => copy.NotFoundAtMark is { } mark && _store.LookupMark != mark;

    /// <summary>The answer to a submission refused a token after the store took more: a replay's, where the store now
    /// holds the envelope (a copy whose original was stored while it waited), else the rate refusal.</summary>
    /// <remarks>A lookup that completes at once is answered without a throw, as every refusal in admission is
    /// (<see cref="SubmitAsync(Envelope, ClientAddress?, string?, CancellationToken)"/>): under load most token
    /// refusals in the batcher come here (groups are stored while a submission waits for its batch and its batch is
    /// verified), on the stage that cannot spread over cores.</remarks>
    private Task<Receipt> ReplayOrRateLimitedAsync(byte[] envelopeId)
    {
        ValueTask<PutReceipt?> lookup;
        try
        {
            lookup = _store.FindAsync(envelopeId);
        }
        catch (Exception e)
        {
            return Task.FromException<Receipt>(AsStatus(e));
        }

        return lookup.IsCompletedSuccessfully ? ReplayOrRateLimited(lookup.Result) : AfterLookupAsync(lookup.AsTask());

        async Task<Receipt> AfterLookupAsync(Task<PutReceipt?> pending)
        {
            PutReceipt? existing;
            try
            {
                existing = await pending.ConfigureAwait(false);
            }
            catch (Exception e)
            {
                throw AsStatus(e);
            }

            return await ReplayOrRateLimited(existing).ConfigureAwait(false);
        }
    }

    private Task<Receipt> ReplayOrRateLimited(PutReceipt? existing) =>
        existing is not null ? Task.FromResult(ToProto(existing)) : Task.FromException<Receipt>(RateLimited());

    /// <summary>The answer to a copy of <paramref name="original"/> refused a token: the original's receipt, marked a
    /// duplicate as a replay's is, or the original's refusal (its signature verified, so the store refused it, or the
    /// node is stopping: the same holds for the copy).</summary>
    private static async Task<Receipt> AsCopyOfAsync(Pending original)
    {
        Receipt receipt = (await original.Task.ConfigureAwait(false)).Clone();
        receipt.Duplicate = true;
        return receipt;
    }

    /// <summary>Gives back the token of a verified envelope the store did not take (a full mailbox, a store that
    /// refuses writes): the sender's allowance is for envelopes stored, not for attempts the node turned away.</summary>
    private void ReturnToken(Pending pending) => pending.Bucket?.Return(_options.SubmitBurst);

    /// <summary>A full bucket is the same as none: forget those. Buckets exist only for keys whose envelopes verified,
    /// so filling the table costs a valid signature per key; if every one is still in use, all are forgotten (bounded
    /// memory matters more than a burst allowance).</summary>
    private void ForgetFullBuckets(long now)
    {
        RemoveFullBuckets(now);
        if (_buckets.Count > MaxBuckets / 2)
        {
            _buckets.Clear();
        }

        Interlocked.Exchange(ref _bucketCount, _buckets.Count);
    }

    /// <summary>At most once a second, on the batcher thread: forgets the buckets that are full again. Before, buckets
    /// were forgotten only once <see cref="MaxBuckets"/> keys had one, so a node kept a bucket (about 110 bytes) for
    /// every sending key that ever sent it mail (one per sender and recipient, and clients may make fresh ones) until
    /// it held a million of them, found in a soak (2026-12-05). A bucket is full again within
    /// <c>SubmitBurst / SubmitRatePerKey</c> (2 s by default) of its last token, so what is kept now is the keys that
    /// sent lately, and the scan, once a second, is of those.</summary>
    private void SweepBuckets(long now)
    {
        // Also at once after the clock stepped back, which would otherwise postpone every sweep (as SiteTable's).
        if (now < _nextBucketSweep && now >= _nextBucketSweep - Stopwatch.Frequency)
        {
            return;
        }

        _nextBucketSweep = now + Stopwatch.Frequency;
        if (_buckets.IsEmpty)
        {
            return;
        }

        RemoveFullBuckets(now);
        Interlocked.Exchange(ref _bucketCount, _buckets.Count);
    }

    // A full bucket is the same as none.
    private void RemoveFullBuckets(long now)
    {
        foreach (KeyValuePair<Key256, TokenBucket> entry in _buckets)
        {
            if (entry.Value.Has(now, _options.SubmitRatePerKey, _options.SubmitBurst, _options.SubmitBurst) && _buckets.TryRemove(entry))
            {
                entry.Value.Forgotten = true;
            }
        }
    }

    /// <summary>Submissions from one site that go in the main batch of a window that other sites share; the rest of
    /// that site's go in a second batch (<see cref="BatchLoop"/>).</summary>
    internal const int MainBatchPerSite = 16;

    /// <summary>The first chunk of a window's main batch (<see cref="BatchLoop"/>): at most this many forgeries from a
    /// site with no record yet are bisected at the clean lanes' rate before its other submissions count as suspect.</summary>
    internal const int MainFirstChunk = 1_024;

    /// <summary>The first chunk of the overflow batch, whose sites each already have <see cref="MainBatchPerSite"/> in
    /// the main one.</summary>
    internal const int OverflowFirstChunk = 256;

    // How often an idle batcher forgets the forgery suspects whose hold ended, and the sending keys whose buckets are full.
    private static readonly TimeSpan IdleSweepInterval = TimeSpan.FromSeconds(1);

    // Longest sleep between looks at the queue while a batch fills (the kernel adds its timer slack, 50 µs on Linux).
    private const int FlushSliceMicroseconds = 100;

    /// <summary>
    /// The batcher, on a thread of its own: it sleeps through each flush window and runs the verifier synchronously,
    /// so it waits synchronously too. With awaits it continued on the thread pool after its first wait, and every
    /// window then held a pool thread asleep that gRPC and the store needed.
    /// </summary>
    private void BatchLoop()
    {
        // Named so that `top -H`, perf and dotnet-trace show the batcher's share: one thread, a stage that cannot
        // spread over cores.
        Thread.CurrentThread.Name = "mn-admission";
        ChannelReader<Pending> reader = _queue.Reader;
        var items = new List<Pending>(_options.MaxBatch);
        var main = new List<Pending>();
        var suspect = new List<Pending>();
        var overflow = new List<Pending>();
        var perSite = new Dictionary<ClientAddress, int>();
        var foundBad = new HashSet<ClientAddress>(); // sites with a bad signature in this window's clean lanes
        var suspects = new ForgerySuspects();
        using var batch = new SignatureBatch(Math.Min(_options.MaxBatch, 65_536), Math.Min(_options.MaxBatch, 65_536) * 160);
        bool[] verdicts = new bool[_options.MaxBatch];
        var stores = new List<(Task Task, int Count)>(); // handed to the store, not yet answered, and how many envelopes
        int storing = 0; // the envelopes of those, kept rather than summed per batch (a list of up to StoreInFlight)
        List<Pending>? tokensTaken = null; // verified and given their tokens, not yet handed to the store (VerifyAndSettle)
        using var thread = new StageThread();
        Action sweepIdle = () => // made once: it runs while idle
        {
            long now = Stopwatch.GetTimestamp();
            suspects.Sweep(now);
            SweepBuckets(now);
        };
        while (WaitForWork())
        {
            items.Clear();
            long first = Stopwatch.GetTimestamp();
            while (items.Count < _options.MaxBatch)
            {
                if (reader.TryRead(out Pending? p))
                {
                    if (items.Count == 0)
                    {
                        // The window counts from the oldest submission's arrival, not from now: under load it arrived
                        // while the previous batch was verified, has waited a window or more already, and goes at once
                        // with everything queued behind it. (Counted from now, the verifier slept a window per batch
                        // and those submissions waited twice.)
                        first = Math.Min(first, p.Start);
                    }

                    items.Add(p);
                    continue;
                }

                long left = _options.FlushMicroseconds - (long)Stopwatch.GetElapsedTime(first).TotalMicroseconds;
                if (left <= 0 || reader.Completion.IsCompleted)
                {
                    break;
                }

                // Sleep through the window in short slices (a full batch still flushes within one slice) instead of
                // spinning on Thread.Yield, which at 1,000 unary submissions/s was 17 % of the node's CPU samples.
                ShortSleep.Sleep((int)Math.Min(left, FlushSliceMicroseconds));
            }

            Interlocked.Add(ref _depth, -items.Count);
            try
            {
                // Three batches, each stored before the next is verified. The main one; a second for a site's
                // submissions beyond MainBatchPerSite in a window it shares with other sites (so a site not yet
                // suspect puts only that many forgeries into the batch that carries everyone's few); and one for sites
                // that lately sent bad signatures, so the bisection that finds their forgeries costs only them. A
                // site past its budget of bad signatures is refused unverified. The first two are verified in chunks
                // (SettleClean), so a site found forging in one chunk joins the third for the rest of the window.
                long now = Stopwatch.GetTimestamp();
                suspects.Sweep(now);
                SweepBuckets(now);
                main.Clear();
                suspect.Clear();
                overflow.Clear();
                perSite.Clear();
                foundBad.Clear();
                ClientAddress? firstSite = items.Count > 0 ? items[0].Source : null;
                bool shared = items.Exists(p => p.Source != firstSite);
                foreach (Pending p in items)
                {
                    ForgerySuspects.Lane lane = suspects.Classify(p.Source, now, out int retryAfterMs);
                    if (lane != ForgerySuspects.Lane.Clean)
                    {
                        SuspectOrRefuse(p, lane, retryAfterMs);
                    }
                    else if (shared && p.Source is { } site && ++CollectionsMarshal.GetValueRefOrAddDefault(perSite, site, out _) > MainBatchPerSite)
                    {
                        overflow.Add(p);
                        Interlocked.Increment(ref _overflowed);
                    }
                    else
                    {
                        main.Add(p);
                    }
                }

                // items now lists what is put in the batch, in the batch's order.
                items.Clear();
                batch.Clear();

                // Each batch goes to the store before the next is verified: the main batch's receipts do not wait for
                // the bisection of forgeries in the overflow or the suspects' batch.
                SettleClean(main, MainFirstChunk, now);
                SettleClean(overflow, OverflowFirstChunk, now);
                int from = items.Count;
                foreach (Pending p in suspect)
                {
                    items.Add(p);
                    batch.Add(p.SendingKey, p.Signature, p.SigningBytes);
                }

                VerifyAndSettle(from, items.Count, suspectLane: true, now);
            }
            catch (Exception e)
            {
                LogBatchFailed(_logger, e, items.Count);
                if (tokensTaken is { } taken)
                {
                    // Verified and given a token, then refused below with nothing stored: the token goes back, and the
                    // submission leaves the token-taker table, as the store stage does for a refusal.
                    foreach (Pending p in taken)
                    {
                        if (!p.HandedToStore)
                        {
                            ForgetTokenTaker(p);
                            ReturnToken(p);
                        }
                    }

                    tokensTaken = null;
                }

                foreach (Pending p in items.Concat(main).Concat(overflow).Concat(suspect))
                {
                    if (p.HandedToStore)
                    {
                        // An earlier lane's: the store reads its buffer until the commit and StoreAsync answers it.
                        continue;
                    }

                    // The batch holds copies of what it verifies, so the buffers are free again. (A submission already
                    // answered keeps its answer and is not counted again: both calls do nothing the second time.)
                    p.Release();
                    if (!p.Task.IsCompleted)
                    {
                        p.TrySetException(Reject("internal", StatusCode.Internal, "Verification failed inside the node; nothing was stored. Retry."));
                    }
                }
            }
        }

        thread.Wait(Task.WhenAll(stores.Select(s => s.Task)));

        // Drops the answered store calls from stores and their envelopes from storing.
        void DropAnswered()
        {
            stores.RemoveAll(s =>
            {
                if (!s.Task.IsCompleted)
                {
                    return false;
                }

                storing -= s.Count;
                return true;
            });
        }

        // Waits for submissions. While none come, the sites held as forgery suspects are swept every second, and the
        // last batch's lists are emptied: a site is remembered as long as docs/protocol.md says (60 s after its last
        // bad signature), not until the next submission.
        bool WaitForWork()
        {
            ValueTask<bool> ready = reader.WaitToReadAsync();
            if (ready.IsCompleted)
            {
                return thread.Wait(ready);
            }

            items.Clear();
            main.Clear();
            suspect.Clear();
            overflow.Clear();
            perSite.Clear();
            foundBad.Clear();
            return thread.Wait(ready, IdleSweepInterval, sweepIdle);
        }

        // A submission from a site held as a forgery suspect: to the suspects' batch, or refused unverified.
        void SuspectOrRefuse(Pending p, ForgerySuspects.Lane lane, int retryAfterMs)
        {
            switch (lane)
            {
                case ForgerySuspects.Lane.Suspect:
                    suspect.Add(p);
                    break;
                case ForgerySuspects.Lane.Refused:
                    p.Release();
                    p.TrySetException(Reject("bad_signature_budget", StatusCode.ResourceExhausted,
                        $"More than {ForgerySuspects.BadPerSecond} envelopes a second whose signatures did not verify came from this network address; " +
                        "its submissions are refused unverified until that rate falls. Nothing was stored; retry later.", retryAfterMs));
                    break;
                default:
                    p.Release();
                    p.TrySetException(Reject("suspect_lane_full", StatusCode.ResourceExhausted,
                        $"Envelopes whose signatures did not verify came from this network address lately, and the node verifies at most {ForgerySuspects.LanePerSecond:N0} " +
                        $"a second from such addresses (for {ForgerySuspects.Hold.TotalSeconds:0} s after the last bad one). Nothing was stored; retry later.", retryAfterMs));
                    break;
            }
        }

        // Verifies a clean lane in chunks that grow fourfold from firstChunk. Before each chunk, the submissions of a
        // site found to forge in an earlier chunk of this window are classified again: to the suspects' batch within
        // the site's budget, refused beyond it. In one batch, a site with no record yet had every forgery of its
        // window bisected at the clean rate (MaxBatch, 4,096 by default: ~0.7 s of the batcher's time here); now at most
        // a first chunk's worth, and the small first chunks cost honest traffic under 2 % (6.4 µs an item at 1,024
        // against 5.7 µs at 16,384, one AVX-512 thread).
        void SettleClean(List<Pending> lane, int chunk, long now)
        {
            int next = 0;
            while (next < lane.Count)
            {
                int from = items.Count;
                while (next < lane.Count && items.Count - from < chunk)
                {
                    Pending p = lane[next++];
                    if (p.Source is { } site && foundBad.Contains(site))
                    {
                        ForgerySuspects.Lane again = suspects.Classify(site, now, out int retryAfterMs);
                        if (again != ForgerySuspects.Lane.Clean)
                        {
                            SuspectOrRefuse(p, again, retryAfterMs);
                            continue;
                        }
                    }

                    items.Add(p);
                    batch.Add(p.SendingKey, p.Signature, p.SigningBytes);
                }

                VerifyAndSettle(from, items.Count, suspectLane: false, now);
                chunk = (int)Math.Min(4L * chunk, int.MaxValue);
            }
        }

        // Verifies items[from..to) as one batch, answers them by their verdicts and hands the accepted ones to the store.
        void VerifyAndSettle(int from, int to, bool suspectLane, long now)
        {
            if (to == from)
            {
                return;
            }

            _verifier.Verify(batch, from, to - from, verdicts.AsSpan(from, to - from));
            // Counted once verified: a verifier that threw left both figures as they were (Status' mean batch size).
            Interlocked.Add(ref _signatures, to - from);
            Interlocked.Increment(ref _batches);
            var accepted = new List<Pending>(to - from);
            tokensTaken = accepted; // until the store has them: a throw before that leaves their tokens to the catch
            for (int i = from; i < to; i++)
            {
                Pending p = items[i];
                suspects.Verified(p.Source, verdicts[i], suspectLane, now);
                if (!verdicts[i])
                {
                    if (!suspectLane && p.Source is { } site)
                    {
                        foundBad.Add(site);
                    }

                    p.Release();
                    p.TrySetException(Reject("signature", StatusCode.InvalidArgument,
                        "The envelope signature does not verify under MegaNet's rule (docs/verification.md)."));
                }
                else if (!TakeToken(p))
                {
                    if (AnswerWithoutToken(p) is { } answer)
                    {
                        p.Follow(answer);
                    }
                    else
                    {
                        p.TrySetException(RateLimited());
                    }

                    p.Release();
                }
                else
                {
                    accepted.Add(p);
                }
            }

            if (accepted.Count > 0)
            {
                // A slow store holds the batcher once StoreInFlight envelopes wait for it, so the queue fills and pushes
                // back (RESOURCE_EXHAUSTED, proof of work) instead of verified envelopes piling up behind the store. A
                // batch goes whatever its size when nothing is in flight. (Until 2026-12-04 the bound was four batches:
                // about 4,000 envelopes while streaming, which at the store's 10-30 ms a batch may cap a many-core
                // node near the 125,000-200,000/s it carried; docs/performance-log.md.)
                DropAnswered();
                while (stores.Count > 0 && storing + accepted.Count > _options.StoreInFlight)
                {
                    thread.Wait(Task.WhenAny(stores.Select(s => s.Task)));
                    DropAnswered();
                }

                foreach (Pending p in accepted)
                {
                    p.HandedToStore = true;
                }

                int handed = accepted.Count;
                stores.Add((StoreAsync(accepted), handed));
                storing += handed;
            }

            tokensTaken = null;
        }
    }

    private async Task StoreAsync(List<Pending> accepted)
    {
        // accepted[..tokensSettled] had their tokens kept or given back by the loop over the results: a throw past them
        // must not give those back again (a stored envelope's token was spent, a refused one's is back already).
        int tokensSettled = 0;
        try
        {
            var requests = new PutRequest[accepted.Count];
            for (int i = 0; i < requests.Length; i++)
            {
                Pending p = accepted[i];
                requests[i] = new PutRequest(p.Canonical, p.Recipient, DateTimeOffset.FromUnixTimeMilliseconds(p.ExpiresUnixMs))
                {
                    EnvelopeId = p.Id, // hashed on arrival for the replay check; the store need not hash it again
                    NotFoundAtMark = p.NotFoundAtMark,
                };
            }

            IReadOnlyList<PutResult> results = await _store.PutManyAsync(requests).ConfigureAwait(false);

            // Every request has its answer, so the store is done with the envelope bytes (a throw above leaves the
            // buffers to the GC instead: a request may still be inside the store).
            Store.SignedTreeHead? head = null;
            Api.V1.SignedTreeHead? headProto = null;
            Exception? storeFailure = null;
            int failedHere = 0, stored = 0, diskLow = 0, storeFull = 0;
            for (int i = 0; i < accepted.Count; i++)
            {
                Pending p = accepted[i];
                PutResult r = results[i];
                ForgetTokenTaker(p);
                if (r.Receipt is null or { Duplicate: true })
                {
                    // A copy settled inside the store (the same envelope on two streams at once) stored nothing new,
                    // as a replay found by the lookup costs nothing.
                    ReturnToken(p);
                }

                tokensSettled = i + 1;
                p.Release();
                if (r.Receipt is { } receipt)
                {
                    // A group's receipts share one head; convert it once.
                    if (!ReferenceEquals(receipt.TreeHead, head))
                    {
                        head = receipt.TreeHead;
                        headProto = ToProto(head);
                    }

                    if (!receipt.Duplicate)
                    {
                        // A copy the store settled (the same envelope on two streams) adds nothing to the log, as a
                        // replay found by the lookup does not.
                        MegaNetMetrics.EnvelopesAccepted.Add(1);
                        stored++;
                    }
                    MegaNetMetrics.AdmissionLatency.Record(Stopwatch.GetElapsedTime(p.Start).TotalMilliseconds);
                    p.TrySetResult(ToProto(receipt, headProto!));
                }
                else
                {
                    RpcException? refusal = r.Error switch
                    {
                        DiskSpaceLowException d => Reject(StoreRefusalWatch.DiskLow, StatusCode.ResourceExhausted, d.Message, retryAfterMs: 60_000),
                        StoreFullException f => Reject(StoreRefusalWatch.StoreFull, StatusCode.ResourceExhausted, f.Message, retryAfterMs: 60_000),
                        QuotaExceededException q => Reject("quota", StatusCode.ResourceExhausted, q.Message, retryAfterMs: 60_000),
                        ArgumentException a => Reject("invalid", StatusCode.InvalidArgument, a.Message),
                        _ => null,
                    };
                    if (refusal is null)
                    {
                        // The store failed, not the envelope: part of the batch failed after the rest was committed (its
                        // slices went into two group commits, the second refused), and those were answered with their
                        // receipts. What the store says names its directory and the OS error: the operator's to read
                        // (logged below), more than a submitter may learn (docs/protocol.md).
                        refusal = StoreFailed(r.Error);
                        storeFailure ??= r.Error;
                        failedHere++;
                    }

                    diskLow += r.Error is DiskSpaceLowException ? 1 : 0;
                    storeFull += r.Error is StoreFullException ? 1 : 0;
                    p.TrySetException(refusal);
                }
            }

            // Stored first: a group that both stored and refused (the last envelopes past StoreMaxMiB) leaves the node
            // refusing.
            if (stored > 0)
            {
                _storeRefusals.Accepted();
            }

            if (diskLow > 0)
            {
                _storeRefusals.Refused(StoreRefusalWatch.DiskLow, diskLow);
            }

            if (storeFull > 0)
            {
                _storeRefusals.Refused(StoreRefusalWatch.StoreFull, storeFull);
            }

            if (storeFailure is not null)
            {
                LogStoreFailure(storeFailure, failedHere);
            }
        }
        catch (Exception e)
        {
            // Only this stage answers a submission it was handed, so this is exact: those the loop answered keep their
            // answer, and are neither counted in the log line nor refused again in the rejection metric. Logged before
            // the answers go out, so a caller that sees its refusal finds the line.
            LogStoreFailure(e, accepted.Count(p => !p.Task.IsCompleted));
            for (int i = 0; i < accepted.Count; i++)
            {
                // Nothing of the batch was stored, or the loop over its results threw: the sender's allowance is for
                // envelopes stored, so those the loop had not reached get their tokens back. The buffer goes to the GC,
                // not the pool (a request may still be inside the store), but leaves the held bytes: counted still,
                // every refused envelope would raise the work demanded and then fill the queue of a node that holds
                // nothing (found in review, 2026-12-04). (One the loop answered keeps its answer: the calls below do nothing.)
                Pending p = accepted[i];
                if (i >= tokensSettled)
                {
                    ReturnToken(p);
                }

                ForgetTokenTaker(p);
                p.Abandon();
                if (!p.Task.IsCompleted)
                {
                    p.TrySetException(StoreFailed(e));
                }
            }
        }
    }

    /// <summary>The refusal of an envelope the store failed to take. Fixed words: the exception names the store's
    /// directory and the OS error, logged for the operator, more than a submitter may learn (docs/protocol.md).</summary>
    private static RpcException StoreFailed(Exception? e) => Reject("store", StatusCode.Unavailable, e is StoreUnavailableException
        ? StoreRefusesText
        : "The node could not store the envelope (an error its log records); nothing was acknowledged. Retry later.");

    private void LogStoreFailure(Exception e, int count)
    {
        if (e is not StoreUnavailableException || Interlocked.Exchange(ref _storeRefusalLogged, 1) == 0)
        {
            LogStoreFailed(_logger, e, count);
        }
        else
        {
            // A store that refuses writes refuses every batch until the restart: the first is logged in full, the rest
            // would flood the log with the same words (health says it too).
            LogStoreStillRefusing(_logger, count);
        }
    }

    private const string StoreRefusesText =
        "The node cannot store mail until its operator frees disk space or fixes the device and restarts it (its log says which); " +
        "nothing was acknowledged. Send through another node or retry later.";

    internal static Receipt ToProto(PutReceipt receipt) => ToProto(receipt, ToProto(receipt.TreeHead));

    // The store never changes a receipt's arrays after handing it out, so the id is wrapped, not copied.
    private static Receipt ToProto(PutReceipt receipt, Api.V1.SignedTreeHead head) => new()
    {
        EnvelopeId = UnsafeByteOperations.UnsafeWrap(receipt.EnvelopeId),
        LogIndex = receipt.LogIndex,
        Duplicate = receipt.Duplicate,
        TreeHead = head,
    };

    internal static Api.V1.SignedTreeHead ToProto(Store.SignedTreeHead head) => new()
    {
        TreeSize = head.TreeSize,
        RootHash = ByteString.CopyFrom(head.RootHash),
        TimestampUnixMs = head.TimestampUnixMs,
        NodeKey = ByteString.CopyFrom(head.NodePublicKey),
        Signature = ByteString.CopyFrom(head.Signature),
    };

    /// <summary>A refusal of an envelope, counted in <c>meganet.admission.rejected</c> under <paramref name="reason"/>.</summary>
    internal static RpcException Reject(string reason, StatusCode code, string message, int retryAfterMs = 0, int powBits = 0, ReadOnlySpan<byte> powSeed = default)
    {
        MegaNetMetrics.EnvelopesRejected.Add(1, new KeyValuePair<string, object?>("reason", reason));
        return retryAfterMs <= 0 && powBits <= 0
            ? new RpcException(new Status(code, message))
            : new RpcException(new Status(code, message), NodeRefusals.Trailers(retryAfterMs, powBits, powSeed));
    }

    [LoggerMessage(EventId = 100, Level = LogLevel.Error, Message = "Verification of a batch of {Count} envelopes failed")]
    private static partial void LogBatchFailed(ILogger logger, Exception exception, int count);

    [LoggerMessage(EventId = 101, Level = LogLevel.Error, Message = "Storing {Count} verified envelopes failed")]
    private static partial void LogStoreFailed(ILogger logger, Exception exception, int count);

    [LoggerMessage(EventId = 103, Level = LogLevel.Error, Message = "Admitting an envelope failed unexpectedly")]
    private static partial void LogAdmissionFailed(ILogger logger, Exception exception);

    [LoggerMessage(EventId = 102, Level = LogLevel.Debug, Message = "The store still refuses writes: {Count} verified envelopes refused")]
    private static partial void LogStoreStillRefusing(ILogger logger, int count);

    /// <summary>A submission on its way through admission, and the task its caller awaits. One pooled buffer holds
    /// the canonical envelope bytes (what the store keeps), the signing bytes (whose core bytes the proof-of-work check
    /// reuses, and where the sending key and the recipient are read), the id hashed from them, and the signature.</summary>
    private sealed class Pending : TaskCompletionSource<Receipt>
    {
        // Buffers up to the size a 1 KiB-class envelope needs come from a pool of their own: ArrayPool.Shared keeps 32
        // arrays a size per core, and with thousands of submissions in flight nearly every rent missed it and allocated
        // (2 KiB of garbage per envelope, about 30 % of the node's allocations while streaming). At most 4,096 are kept
        // (8 MiB); bigger envelopes, rarer, use the shared pool.
        private const int SmallBuffer = 2048;
        private const int Tail = 32 + 64; // id, signature
        private static readonly ArrayPool<byte> SmallBuffers = ArrayPool<byte>.Create(SmallBuffer, 4096);

        private readonly int _length;
        private byte[]? _buffer;

        public Pending(Envelope envelope, int length, long start)
            : base(TaskCreationOptions.RunContinuationsAsynchronously)
        {
            Start = start;
            ExpiresUnixMs = envelope.ExpiresUnixMs;
            _length = length;
            // canonical bytes ‖ signing bytes ‖ id ‖ signature: all the pipeline reads after the queue (the sending key
            // and the recipient are in the signing bytes), so the parsed envelope dies young instead of living, like
            // the submission, for a verification batch and a store group (long enough to be promoted, then collected in
            // an older generation).
            int size = length + EnvelopeFormat.SigningLength + Tail;
            _buffer = size <= SmallBuffer ? SmallBuffers.Rent(size) : ArrayPool<byte>.Shared.Rent(size);
            Span<byte> signing = _buffer.AsSpan(length, EnvelopeFormat.SigningLength);
            EnvelopeFormat.WriteSigningBytes(envelope, signing);
            Span<byte> tail = _buffer.AsSpan(length + EnvelopeFormat.SigningLength, Tail);
            EnvelopeFormat.EnvelopeId(signing, tail[..32]);
            IdKey = Key256.From(tail[..32]);
            envelope.Signature.Span.CopyTo(tail[32..]);
        }

        /// <summary>The envelope id as a value: read by copies of this submission after its buffer went back.</summary>
        public Key256 IdKey { get; }

        /// <summary>Answers this submission with <paramref name="answer"/>'s outcome once it has one.</summary>
        public void Follow(Task<Receipt> answer) => _ = answer.ContinueWith(static (task, state) =>
        {
            var pending = (Pending)state!;
            if (task.IsCompletedSuccessfully)
            {
                pending.TrySetResult(task.Result);
            }
            else
            {
                pending.TrySetException(task.Exception!.InnerException!);
            }
        }, this, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);

        /// <summary>Writes <see cref="Canonical"/> (the constructor leaves it for later, so that the id is known
        /// first).</summary>
        public void WriteCanonical(Envelope envelope) => envelope.WriteTo(Buffer.AsSpan(0, _length));

        /// <summary>The submitting client's address, when known.</summary>
        public ClientAddress? Source { get; init; }

        /// <summary>The store's <see cref="IEnvelopeStore.LookupMark"/> before the replay lookup that found nothing.</summary>
        public long? NotFoundAtMark { get; set; }

        /// <summary>In the token-taker table (<see cref="AddTokenTaker"/>); with <see cref="NextTaker"/>, read and written
        /// under its chain's lock only.</summary>
        public bool IsTokenTaker;

        /// <summary>The next submission in this one's chain of the token-taker table.</summary>
        public Pending? NextTaker;

        /// <summary>The sending key's token bucket, once admission has looked it up.</summary>
        public TokenBucket? Bucket { get; set; }

        /// <summary><see cref="Stopwatch"/> timestamp of arrival.</summary>
        public long Start { get; }

        public long ExpiresUnixMs { get; }

        /// <summary>The envelope re-encoded: what the store keeps.</summary>
        public ReadOnlyMemory<byte> Canonical => Buffer.AsMemory(0, _length);

        /// <summary><see cref="EnvelopeFormat.EnvelopeId(Envelope)"/>.</summary>
        public ReadOnlyMemory<byte> Id => Buffer.AsMemory(_length + EnvelopeFormat.SigningLength, 32);

        public ReadOnlySpan<byte> SigningBytes => Buffer.AsSpan(_length, EnvelopeFormat.SigningLength);

        public ReadOnlySpan<byte> Signature => Buffer.AsSpan(_length + EnvelopeFormat.SigningLength + 32, 64);

        public ReadOnlySpan<byte> SendingKey => Buffer.AsSpan(_length + EnvelopeFormat.CoreSendingKeyOffset, 32);

        public ReadOnlyMemory<byte> Recipient => Buffer.AsMemory(_length + EnvelopeFormat.CoreRecipientOffset, 32);

        private byte[] Buffer => _buffer ?? throw new InvalidOperationException("The submission's buffer was already released.");

        /// <summary>Set once the submission is in a store request: from then the store reads its buffer until the
        /// commit, and only <see cref="StoreAsync"/> releases it and answers the submission.</summary>
        public bool HandedToStore { get; set; }

        /// <summary>Bytes the submission's buffer holds (a pool rounds sizes up: 128 KiB for an envelope of the 64 KiB
        /// class).</summary>
        public int BufferBytes => Buffer.Length;

        /// <summary>The pipeline whose <see cref="AdmissionPipeline.HeldBytes"/> counts this buffer, once queued.</summary>
        public AdmissionPipeline? CountedIn { get; set; }

        /// <summary>Gives the buffer back to the pool; once nothing reads it any more.</summary>
        public void Release()
        {
            if (Uncount() is { } buffer)
            {
                (buffer.Length <= SmallBuffer ? SmallBuffers : ArrayPool<byte>.Shared).Return(buffer);
            }
        }

        /// <summary>Leaves the buffer to the GC, where something may still read it (a store that threw), and takes it
        /// out of the held bytes.</summary>
        public void Abandon() => Uncount();

        private byte[]? Uncount()
        {
            byte[]? buffer = Interlocked.Exchange(ref _buffer, null);
            if (buffer is not null && CountedIn is { } pipeline)
            {
                Interlocked.Add(ref pipeline._heldBytes, -buffer.Length);
            }

            return buffer;
        }
    }

    private sealed class TokenBucket(double tokens, long stamp)
    {
        private TokenCount _count = new(tokens, stamp);

        /// <summary>Swept out of the table as full (set and read on the batcher thread only): a submission that found it
        /// earlier takes its token from the key's bucket in the table instead.</summary>
        public bool Forgotten { get; set; }

        public bool TryTake(long now, double rate, int burst)
        {
            lock (this)
            {
                _count.Refill(now, rate, burst);
                if (_count.Tokens < 1)
                {
                    return false;
                }

                _count.Tokens -= 1;
                return true;
            }
        }

        /// <summary>Gives back a token taken for an envelope that was then not stored.</summary>
        public void Return(int burst)
        {
            lock (this)
            {
                _count.Return(burst);
            }
        }

        /// <summary>True if at least <paramref name="needed"/> tokens are there at <paramref name="now"/>; takes none.</summary>
        public bool Has(long now, double rate, int burst, double needed = 1)
        {
            lock (this)
            {
                return _count.At(now, rate, burst) >= needed;
            }
        }
    }
}
