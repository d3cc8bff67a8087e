using System.Collections.Concurrent;
using System.Diagnostics;
using System.Threading.Channels;
using Google.Protobuf;
using Grpc.Core;
using MegaNet.Api;
using MegaNet.Api.V1;
using MegaNet.Core.Diagnostics;
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
    private readonly TimeProvider _clock;
    private readonly ILogger _logger;
    private readonly Channel<Pending> _queue;
    private readonly Task _batcher;
    private readonly ConcurrentDictionary<ByteKey, TokenBucket> _buckets = new();
    private long _batches;
    private long _signatures;
    private int _depth;

    public AdmissionPipeline(IBatchVerifier verifier, IEnvelopeStore store, NodeOptions options, TimeProvider clock, ILogger<AdmissionPipeline> logger)
    {
        if (verifier.Rule != VerificationRule.MegaNet)
        {
            throw new ArgumentException($"Backend '{verifier.Name}' applies libsodium's rule, not MegaNet's; the node admits only under MegaNet's rule (docs/verification.md). Choose auto, simd, gpu or reference.");
        }

        _verifier = verifier;
        _store = store;
        _options = options;
        _clock = clock;
        _logger = logger;
        _queue = Channel.CreateBounded<Pending>(new BoundedChannelOptions(options.QueueCapacity) { SingleReader = true, FullMode = BoundedChannelFullMode.Wait });
        MegaNetMetrics.ObserveQueueDepth(() => Volatile.Read(ref _depth));
        _batcher = Task.Factory.StartNew(BatchLoopAsync, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default).Unwrap();
    }

    /// <summary>Batches verified so far.</summary>
    public long Batches => Interlocked.Read(ref _batches);

    /// <summary>Signatures verified so far.</summary>
    public long Signatures => Interlocked.Read(ref _signatures);

    /// <summary>Submissions waiting for verification.</summary>
    public int QueueDepth => Volatile.Read(ref _depth);

    /// <summary>The backend in use.</summary>
    public IBatchVerifier Verifier => _verifier;

    /// <summary>Proof-of-work bits demanded right now: 0 while the queue is under a quarter full, rising to
    /// <see cref="NodeOptions.PowMaxBits"/> as it fills.</summary>
    public int PowBitsRequired
    {
        get
        {
            double fill = (double)QueueDepth / _options.QueueCapacity;
            int load = fill < 0.25 ? 0 : (int)Math.Ceiling(_options.PowMaxBits * Math.Min(1.0, (fill - 0.25) / 0.5));
            return Math.Max(_options.PowMinBits, load);
        }
    }

    /// <summary>Admits one envelope; throws <see cref="RpcException"/> with the status that says why not.</summary>
    public async Task<Receipt> SubmitAsync(Envelope envelope, CancellationToken cancellationToken)
    {
        long start = Stopwatch.GetTimestamp();
        byte[] canonical = CheckShape(envelope);

        // Replays return the original receipt and cost no verification.
        byte[] id = NSec.Cryptography.HashAlgorithm.Blake2b_256.Hash(canonical);
        if (await _store.FindAsync(id, cancellationToken).ConfigureAwait(false) is { } existing)
        {
            return ToProto(existing);
        }

        if (!TakeToken(envelope.SendingKey.Span))
        {
            throw Reject("rate_limited", StatusCode.ResourceExhausted,
                $"Too many submissions from this sending key (limit {_options.SubmitRatePerKey}/s, burst {_options.SubmitBurst}); retry later.",
                retryAfterMs: (int)Math.Ceiling(1000 / _options.SubmitRatePerKey));
        }

        int bits = PowBitsRequired;
        if (!EnvelopeFormat.HasValidPow(envelope, bits))
        {
            throw Reject("pow", StatusCode.FailedPrecondition,
                $"The node is under load and requires a proof-of-work stamp of at least {bits} bits (see Status.pow_bits_required).", powBits: bits);
        }

        var pending = new Pending(envelope, canonical, EnvelopeFormat.SigningBytes(envelope));
        if (!_queue.Writer.TryWrite(pending))
        {
            throw Reject("queue_full", StatusCode.ResourceExhausted, "The node's admission queue is full; retry shortly.", retryAfterMs: 50);
        }

        Interlocked.Increment(ref _depth);
        Receipt receipt = await pending.Done.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
        MegaNetMetrics.AdmissionLatency.Record(Stopwatch.GetElapsedTime(start).TotalMilliseconds);
        return receipt;
    }

    /// <summary>Stops taking submissions, verifies and stores what is queued, then returns.</summary>
    public async ValueTask DisposeAsync()
    {
        _queue.Writer.TryComplete();
        await _batcher.ConfigureAwait(false);
    }

    private byte[] CheckShape(Envelope? envelope)
    {
        if (envelope is null)
        {
            throw Reject("malformed", StatusCode.InvalidArgument, "The request carries no envelope.");
        }

        if (envelope.Version != EnvelopeFormat.Version)
        {
            throw Reject("malformed", StatusCode.InvalidArgument, $"Envelope version {envelope.Version} is not supported; this node speaks version {EnvelopeFormat.Version}.");
        }

        if (envelope.Recipient.Length != 32 || envelope.SendingKey.Length != 32 || envelope.Signature.Length != 64)
        {
            throw Reject("malformed", StatusCode.InvalidArgument, "recipient and sending_key must be 32 bytes and signature 64 bytes.");
        }

        if (!EnvelopeFormat.IsPaddedSize(envelope.SealedPayload.Length))
        {
            throw Reject("padding", StatusCode.InvalidArgument,
                $"sealed_payload is {envelope.SealedPayload.Length} bytes; it must be a size class ({string.Join(", ", EnvelopeFormat.PayloadClasses)}) plus {EnvelopeFormat.SealOverhead}.");
        }

        byte[] canonical = envelope.ToByteArray();
        if (canonical.Length > _options.MaxEnvelopeBytes)
        {
            throw Reject("oversize", StatusCode.InvalidArgument, $"The envelope is {canonical.Length} bytes; the limit is {_options.MaxEnvelopeBytes}.");
        }

        DateTimeOffset now = _clock.GetUtcNow();
        var expires = DateTimeOffset.FromUnixTimeMilliseconds(envelope.ExpiresUnixMs);
        if (expires <= now)
        {
            throw Reject("expired", StatusCode.InvalidArgument, "The envelope has expired.");
        }

        if (expires > now.AddDays(_options.MaxTtlDays))
        {
            throw Reject("ttl", StatusCode.InvalidArgument, $"The envelope's expiry is more than {_options.MaxTtlDays} days away (the node's maximum TTL).");
        }

        return canonical;
    }

    private bool TakeToken(ReadOnlySpan<byte> sendingKey)
    {
        long now = Stopwatch.GetTimestamp();
        TokenBucket bucket = _buckets.GetOrAdd(new ByteKey(sendingKey.ToArray()), _ => new TokenBucket(_options.SubmitBurst, now));
        if (_buckets.Count > 1_000_000)
        {
            // Idle keys are full buckets: forgetting them changes nothing; bounded memory matters more.
            _buckets.Clear();
        }

        return bucket.TryTake(now, _options.SubmitRatePerKey, _options.SubmitBurst);
    }

    private async Task BatchLoopAsync()
    {
        ChannelReader<Pending> reader = _queue.Reader;
        var items = new List<Pending>(_options.MaxBatch);
        using var batch = new SignatureBatch(Math.Min(_options.MaxBatch, 65_536), Math.Min(_options.MaxBatch, 65_536) * 160);
        bool[] verdicts = new bool[_options.MaxBatch];
        var stores = new List<Task>();
        while (await reader.WaitToReadAsync().ConfigureAwait(false))
        {
            items.Clear();
            long first = Stopwatch.GetTimestamp();
            double flushSeconds = _options.FlushMicroseconds / 1e6;
            while (items.Count < _options.MaxBatch)
            {
                if (reader.TryRead(out Pending? p))
                {
                    items.Add(p);
                    continue;
                }

                if (Stopwatch.GetElapsedTime(first).TotalSeconds >= flushSeconds || reader.Completion.IsCompleted)
                {
                    break;
                }

                Thread.Yield();
            }

            Interlocked.Add(ref _depth, -items.Count);
            try
            {
                batch.Clear();
                foreach (Pending p in items)
                {
                    batch.Add(p.Envelope.SendingKey.Span, p.Envelope.Signature.Span, p.SigningBytes);
                }

                _verifier.Verify(batch, verdicts);
                Interlocked.Increment(ref _batches);
                Interlocked.Add(ref _signatures, items.Count);

                var accepted = new List<Pending>(items.Count);
                for (int i = 0; i < items.Count; i++)
                {
                    if (verdicts[i])
                    {
                        accepted.Add(items[i]);
                    }
                    else
                    {
                        items[i].Done.TrySetException(Reject("signature", StatusCode.InvalidArgument,
                            "The envelope signature does not verify under MegaNet's rule (docs/verification.md)."));
                    }
                }

                if (accepted.Count > 0)
                {
                    stores.Add(StoreAsync(accepted));
                    stores.RemoveAll(t => t.IsCompleted);
                }
            }
            catch (Exception e)
            {
                LogBatchFailed(_logger, e, items.Count);
                foreach (Pending p in items)
                {
                    p.Done.TrySetException(new RpcException(new Status(StatusCode.Internal, "Verification failed inside the node; nothing was stored. Retry.")));
                }
            }
        }

        await Task.WhenAll(stores).ConfigureAwait(false);
    }

    private async Task StoreAsync(List<Pending> accepted)
    {
        try
        {
            var requests = accepted.Select(p => new PutRequest(p.Canonical, p.Envelope.Recipient.Memory, DateTimeOffset.FromUnixTimeMilliseconds(p.Envelope.ExpiresUnixMs))).ToList();
            IReadOnlyList<PutResult> results = await _store.PutManyAsync(requests).ConfigureAwait(false);
            for (int i = 0; i < accepted.Count; i++)
            {
                PutResult r = results[i];
                if (r.Receipt is { } receipt)
                {
                    MegaNetMetrics.EnvelopesAccepted.Add(1);
                    accepted[i].Done.TrySetResult(ToProto(receipt));
                }
                else
                {
                    accepted[i].Done.TrySetException(r.Error switch
                    {
                        QuotaExceededException q => Reject("quota", StatusCode.ResourceExhausted, q.Message, retryAfterMs: 60_000),
                        ArgumentException a => Reject("invalid", StatusCode.InvalidArgument, a.Message),
                        _ => Reject("store", StatusCode.Unavailable, r.Error?.Message ?? "The store refused the envelope."),
                    });
                }
            }
        }
        catch (Exception e)
        {
            LogStoreFailed(_logger, e, accepted.Count);
            foreach (Pending p in accepted)
            {
                p.Done.TrySetException(Reject("store", StatusCode.Unavailable, $"The node could not store the envelope: {e.Message}. Nothing was acknowledged; retry later."));
            }
        }
    }

    internal static Receipt ToProto(PutReceipt receipt) => new()
    {
        EnvelopeId = ByteString.CopyFrom(receipt.EnvelopeId),
        LogIndex = receipt.LogIndex,
        Duplicate = receipt.Duplicate,
        TreeHead = ToProto(receipt.TreeHead),
    };

    internal static Api.V1.SignedTreeHead ToProto(Store.SignedTreeHead head) => new()
    {
        TreeSize = head.TreeSize,
        RootHash = ByteString.CopyFrom(head.RootHash),
        TimestampUnixMs = head.TimestampUnixMs,
        NodeKey = ByteString.CopyFrom(head.NodePublicKey),
        Signature = ByteString.CopyFrom(head.Signature),
    };

    private static RpcException Reject(string reason, StatusCode code, string message, int retryAfterMs = 0, int powBits = 0)
    {
        MegaNetMetrics.EnvelopesRejected.Add(1, new KeyValuePair<string, object?>("reason", reason));
        var trailers = new Metadata();
        if (retryAfterMs > 0)
        {
            trailers.Add("retry-after-ms", retryAfterMs.ToString(System.Globalization.CultureInfo.InvariantCulture));
        }

        if (powBits > 0)
        {
            trailers.Add("pow-bits", powBits.ToString(System.Globalization.CultureInfo.InvariantCulture));
        }

        return new RpcException(new Status(code, message), trailers);
    }

    [LoggerMessage(EventId = 100, Level = LogLevel.Error, Message = "Verification of a batch of {Count} envelopes failed")]
    private static partial void LogBatchFailed(ILogger logger, Exception exception, int count);

    [LoggerMessage(EventId = 101, Level = LogLevel.Error, Message = "Storing {Count} verified envelopes failed")]
    private static partial void LogStoreFailed(ILogger logger, Exception exception, int count);

    private sealed class Pending(Envelope envelope, byte[] canonical, byte[] signingBytes)
    {
        public Envelope Envelope { get; } = envelope;

        public byte[] Canonical { get; } = canonical;

        public byte[] SigningBytes { get; } = signingBytes;

        public TaskCompletionSource<Receipt> Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    private sealed class TokenBucket(double tokens, long stamp)
    {
        private double _tokens = tokens;
        private long _stamp = stamp;

        public bool TryTake(long now, double rate, int burst)
        {
            lock (this)
            {
                _tokens = Math.Min(burst, _tokens + Stopwatch.GetElapsedTime(_stamp, now).TotalSeconds * rate);
                _stamp = now;
                if (_tokens < 1)
                {
                    return false;
                }

                _tokens -= 1;
                return true;
            }
        }
    }
}

/// <summary>A byte string usable as a dictionary key (compared by content).</summary>
public readonly struct ByteKey(byte[] bytes) : IEquatable<ByteKey>
{
    private readonly byte[] _bytes = bytes;

    public bool Equals(ByteKey other) => _bytes.AsSpan().SequenceEqual(other._bytes);

    public override bool Equals(object? obj) => obj is ByteKey k && Equals(k);

    public override int GetHashCode()
    {
        var h = new HashCode();
        h.AddBytes(_bytes);
        return h.ToHashCode();
    }
}
