using System.Buffers;
using System.Buffers.Binary;
using System.Globalization;
using System.IO.Pipelines;
using System.Runtime.CompilerServices;
using Grpc.AspNetCore.Server;
using Grpc.Core;
using MegaNet.Api;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;

namespace MegaNet.Node.Hosting;

/// <summary>
/// Bounds what a gRPC request message still arriving may hold in the node. Grpc.AspNetCore buffers a whole message
/// before it parses it, and Kestrel keeps granting HTTP/2 window for the bytes it buffers; with only the service-wide
/// limit (16 MiB) a client could declare a 16 MiB message on each of its streams, send all but the last byte, and hold
/// that memory for good (a review measured 1.8 GB for one connection of 100 streams). So, from each message's 5-byte
/// prefix, before its bytes are buffered:
/// <list type="bullet">
/// <item>a limit per method: 257 KiB for Submit, SubmitStream and SubmitBatchStream (the largest envelope a node may take), 16 MiB for
/// VerifyBatch, 64 KiB for the rest;</item>
/// <item>a message still arriving must be whole within 10 s plus 1 s per 64 KiB of its size once the reader waits for it;</item>
/// <item>the bytes received of messages still arriving, node-wide and per site (an IPv4 address or IPv6 /48), are held
/// to a budget (<see cref="NodeOptions.ArrivingMessageMiB"/>, a quarter of it per site, and three quarters of it for
/// messages larger than an envelope's).</item>
/// </list>
/// A message that arrives whole in one read (almost every one) costs a look at its prefix and nothing else; the
/// request costs the reader wrapper. The wrapper also reports a body that fails under it (the client reset the call) as
/// CANCELLED rather than as the IOException Grpc.AspNetCore would log as a server error.
/// </summary>
internal sealed class RequestMessageGuard(NodeOptions options, TimeProvider clock)
{
    /// <summary>Largest Submit, SubmitStream or SubmitBatchStream request: the largest <see cref="NodeOptions.MaxEnvelopeBytes"/> allowed, plus 1 KiB.</summary>
    public const int EnvelopeMessageBytes = NodeOptions.MaxEnvelopeBytesLimit + 1024;

    /// <summary>Largest VerifyBatch request (65,536 items of key, signature and a short message or digest).</summary>
    public const int VerifyBatchMessageBytes = 16 << 20;

    /// <summary>Largest request of the methods that carry no envelope and no batch (auth, cursors, up to 1,000 seqs).</summary>
    public const int SmallMessageBytes = 64 << 10;

    /// <summary>How far a message's arrival may lag: 10 s, plus 1 s for each this many bytes of it.</summary>
    public const int MinimumBytesPerSecond = 64 << 10;

    private static readonly TimeSpan Grace = TimeSpan.FromSeconds(10);

    private readonly TimeProvider _clock = clock;
    private readonly SiteByteBudget _arriving = new((long)options.ArrivingMessageMiB << 20);

    /// <summary>Bytes of messages still arriving, node-wide.</summary>
    public long Arriving => _arriving.Held;

    /// <summary>The most the messages still arriving from one site may hold: a quarter of the budget.</summary>
    public long SiteBudget => _arriving.SiteBudget;

    /// <summary>Runs <paramref name="next"/> with a guarded request body when the request is a gRPC call.</summary>
    public async Task InvokeAsync(HttpContext context, RequestDelegate next)
    {
        string? contentType = context.Request.ContentType;
        if (!IsGrpcContentType(contentType))
        {
            if (context.GetEndpoint()?.Metadata.GetMetadata<GrpcMethodMetadata>() is not null)
            {
                // HTTP 415 as gRPC asks, but with a status a gRPC client can act on: Grpc.AspNetCore's was INTERNAL,
                // which says the node failed inside and that the same request may be sent again.
                context.Response.StatusCode = StatusCodes.Status415UnsupportedMediaType;
                context.Response.Headers["grpc-status"] = ((int)StatusCode.InvalidArgument).ToString(CultureInfo.InvariantCulture);
                context.Response.Headers["grpc-message"] = NotGrpcContentType;
                return;
            }

            await next(context).ConfigureAwait(false);
            return;
        }

        string method = context.Request.Path.Value ?? string.Empty;
        ClientAddress site = ClientAddress.From(context.Connection.RemoteIpAddress)?.Site ?? default;
        // A unary or server-streaming method takes exactly one request message: Grpc.AspNetCore answered a body without
        // one, or with more, INTERNAL ("Incomplete message.", "Additional data after the message received."), which
        // tells the client the node failed inside and to retry the same bytes.
        bool single = context.GetEndpoint()?.Metadata.GetMetadata<GrpcMethodMetadata>()?.Method.Type is MethodType.Unary or MethodType.ServerStreaming;
        var reader = new GuardedReader(context.Request.BodyReader, this, method, LimitFor(method), site, single);
        context.Features.Set<IRequestBodyPipeFeature>(reader);
        try
        {
            await next(context).ConfigureAwait(false);
        }
        finally
        {
            reader.ReleaseCharge();
        }
    }

    /// <summary>The detail of the refusal of a gRPC method's request whose Content-Type is not gRPC's (printable ASCII
    /// without '%', so it goes into grpc-message as it is).</summary>
    internal const string NotGrpcContentType =
        "The request's Content-Type is not application/grpc: gRPC methods take protobuf messages, each after a 5-byte prefix, sent as application/grpc. Nothing was done with it.";

    /// <summary>As Grpc.AspNetCore tells a gRPC request: application/grpc, alone or followed by ';' or '+'.</summary>
    private static bool IsGrpcContentType(string? contentType) =>
        contentType is not null && contentType.StartsWith("application/grpc", StringComparison.OrdinalIgnoreCase)
        && (contentType.Length == "application/grpc".Length || contentType["application/grpc".Length] is ';' or '+');

    private int LimitFor(string method) => method switch
    {
        // SubmitRequest { envelope }: the largest envelope any node may be configured to take, and a few bytes of
        // framing; one over this node's MaxEnvelopeBytes but under that reaches admission, which refuses it with
        // INVALID_ARGUMENT and the node's limit, as it refuses any envelope too large for the node.
        "/meganet.v1.Relay/Submit" or "/meganet.v1.Relay/SubmitStream" or "/meganet.v1.Relay/SubmitBatchStream" => EnvelopeMessageBytes,
        EarlyVerifyBatchRefusal.Path => VerifyBatchMessageBytes,
        _ => SmallMessageBytes,
    };

    /// <summary>What messages larger than an envelope (<c>VerifyBatch</c>) may hold node-wide: three quarters of the
    /// budget. The last quarter is kept for messages that carry envelopes, so a few sites stalling 16 MiB messages (a
    /// quarter each) cannot stop everyone's submissions that span more than one read.</summary>
    public long LargeMessageBudget => _arriving.Budget / 4 * 3;

    private bool TryCharge(ClientAddress site, long bytes, bool large) => _arriving.TryCharge(site, bytes, large ? LargeMessageBudget : long.MaxValue);

    private void Release(ClientAddress site, long bytes) => _arriving.Release(site, bytes);

    /// <summary>
    /// The request body as Grpc.AspNetCore reads it, watching each message's prefix as it goes by. Offsets are counted
    /// from the start of the body; <see cref="_start"/> is where the unconsumed data begins, so the message there is
    /// the one the reader parses next. A refusal found in a message further on waits until that message is next: the
    /// messages before it are whole and are answered first.
    /// </summary>
    private sealed class GuardedReader(PipeReader inner, RequestMessageGuard guard, string method, int limit, ClientAddress site, bool single)
        : PipeReader, IRequestBodyPipeFeature
    {
        private const int PrefixLength = 5; // compressed flag, then the message length (big-endian)

        private long _firstEnd;         // where the body's first message ends (0: its prefix not seen yet)

        private ReadOnlySequence<byte> _last;
        private long _start;
        private long _nextPrefix;       // where the next prefix not yet looked at begins
        private long _arrivingStart;    // the message still arriving: where its prefix begins,
        private long _arrivingEnd;      // where it ends (0 when no message is arriving),
        private long _arrivingLength;   // its length,
        private long _charged;          // the bytes of it received so far, charged to the budget,
        private long _waitingSince;     // and since when the reader has waited for it (0: not yet)
        private RpcException? _refusal; // for the message whose prefix begins at _nextPrefix
        private CancellationTokenSource? _deadline; // cancels a wait for the arriving message at its deadline
        private CancellationToken _deadlineLinkedTo;

        PipeReader IRequestBodyPipeFeature.Reader => this;

        // Pooled: a stream's reads mostly wait for the next message, and each would otherwise box its state machine.
        [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
        public override async ValueTask<ReadResult> ReadAsync(CancellationToken cancellationToken = default)
        {
            try
            {
                ReadResult result;
                if (_arrivingEnd == 0 || _arrivingStart != _start)
                {
                    result = await inner.ReadAsync(cancellationToken).ConfigureAwait(false);
                }
                else
                {
                    // The reader waits for the message still arriving: it has until its deadline, counted from the first
                    // such wait (time the reader spent elsewhere, e.g. a stream waiting for answers, is not the client's).
                    long now = guard._clock.GetTimestamp();
                    if (_waitingSince == 0)
                    {
                        _waitingSince = now;
                    }

                    TimeSpan allowed = Grace + TimeSpan.FromSeconds((double)_arrivingLength / MinimumBytesPerSecond);
                    TimeSpan left = allowed - guard._clock.GetElapsedTime(_waitingSince, now);
                    if (left <= TimeSpan.Zero)
                    {
                        // Past it: what has come since is still looked at (the message may be whole now), but no waiting.
                        // TryRead returns the unconsumed bytes even when nothing new came, so only a whole message or the
                        // end of the body is an answer here.
                        if (!inner.TryRead(out result) || (_start + result.Buffer.Length < _arrivingEnd && !result.IsCompleted))
                        {
                            if (result.Buffer.Length > 0)
                            {
                                inner.AdvanceTo(result.Buffer.Start, result.Buffer.End);
                            }

                            throw Stalled();
                        }
                    }
                    else
                    {
                        // One token source per arriving message (reset for each wait), not one per read: a 16 MiB message
                        // can arrive in a thousand reads.
                        if (_deadline is null || _deadlineLinkedTo != cancellationToken)
                        {
                            _deadline?.Dispose();
                            _deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                            _deadlineLinkedTo = cancellationToken;
                        }

                        _deadline.CancelAfter(left);
                        try
                        {
                            result = await inner.ReadAsync(_deadline.Token).ConfigureAwait(false);
                        }
                        catch (OperationCanceledException) when (_deadline.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
                        {
                            throw Stalled();
                        }
                    }
                }

                Inspect(result.Buffer);
                if (result.IsCompleted)
                {
                    Ended(result.Buffer);
                }

                return result;
            }
            catch (IOException e)
            {
                throw Unreadable(e);
            }
        }

        public override bool TryRead(out ReadResult result)
        {
            try
            {
                if (!inner.TryRead(out result))
                {
                    return false;
                }

                Inspect(result.Buffer);
                if (result.IsCompleted)
                {
                    Ended(result.Buffer);
                }

                return true;
            }
            catch (IOException e)
            {
                throw Unreadable(e);
            }
        }

        public override void AdvanceTo(SequencePosition consumed)
        {
            _start += _last.Slice(_last.Start, consumed).Length;
            try
            {
                inner.AdvanceTo(consumed);
            }
            catch (IOException e)
            {
                throw Unreadable(e);
            }
        }

        public override void AdvanceTo(SequencePosition consumed, SequencePosition examined)
        {
            _start += _last.Slice(_last.Start, consumed).Length;
            try
            {
                inner.AdvanceTo(consumed, examined);
            }
            catch (IOException e)
            {
                throw Unreadable(e);
            }
        }

        public override void CancelPendingRead() => inner.CancelPendingRead();

        public override void Complete(Exception? exception = null) => inner.Complete(exception);

        public override ValueTask CompleteAsync(Exception? exception = null) => inner.CompleteAsync(exception);

        /// <summary>Gives back what the message still arriving holds of the budget (at the end of the request).</summary>
        public void ReleaseCharge()
        {
            if (_charged != 0)
            {
                guard.Release(site, _charged);
                _charged = 0;
            }

            _deadline?.Dispose();
            _deadline = null;
        }

        private void Inspect(ReadOnlySequence<byte> buffer)
        {
            _last = buffer;
            long end = _start + buffer.Length;
            if (_arrivingEnd != 0)
            {
                if (end >= _arrivingEnd)
                {
                    // Whole: the reader parses it next, and the request's other limits take over.
                    ReleaseCharge();
                    _arrivingEnd = 0;
                    _waitingSince = 0;
                }
                else
                {
                    Charge(buffer, end);
                }
            }

            Span<byte> prefix = stackalloc byte[PrefixLength];
            while (_arrivingEnd == 0 && _refusal is null && _nextPrefix + PrefixLength <= end)
            {
                buffer.Slice(_nextPrefix - _start, PrefixLength).CopyTo(prefix);
                long length = BinaryPrimitives.ReadUInt32BigEndian(prefix[1..]);
                long messageEnd = _nextPrefix + PrefixLength + length;
                if (_nextPrefix == 0)
                {
                    _firstEnd = messageEnd;
                }

                if (prefix[0] != 0)
                {
                    _refusal = new RpcException(new Status(StatusCode.Unimplemented,
                        "Compressed request messages are not accepted (their size limits are read on the wire); send them uncompressed, grpc-encoding identity."));
                }
                else if (length > limit)
                {
                    _refusal = new RpcException(new Status(StatusCode.ResourceExhausted, string.Create(CultureInfo.InvariantCulture,
                        $"The request message is {length:N0} bytes; {method} takes at most {limit:N0}.")));
                }
                else if (messageEnd <= end)
                {
                    _nextPrefix = messageEnd;
                }
                else
                {
                    // Still arriving: what it has received holds memory, so that is charged, and once the reader
                    // waits for it, it is timed until it is whole.
                    _arrivingStart = _nextPrefix;
                    _arrivingEnd = messageEnd;
                    _arrivingLength = length;
                    _nextPrefix = messageEnd;
                    Charge(buffer, end);
                }
            }

            if (_refusal is not null && _nextPrefix == _start)
            {
                // The read is over (the exception is what the caller gets of it): nothing consumed, all examined. An
                // examined position behind the one the reader last gave made Kestrel's HTTP/2 flow control miscount,
                // and it closed the whole connection with FLOW_CONTROL_ERROR.
                inner.AdvanceTo(buffer.Start, buffer.End);
                throw _refusal;
            }
        }

        /// <summary>
        /// The body has ended (<paramref name="buffer"/> is all that is left of it): a message cut short by its end, or,
        /// for a method that takes one message, none or more than one, is refused with INVALID_ARGUMENT once the reader
        /// has reached it (on a stream, the messages before it are answered first), as a request that is not valid
        /// protobuf is. Grpc.AspNetCore answered each INTERNAL.
        /// </summary>
        private void Ended(ReadOnlySequence<byte> buffer)
        {
            if (_refusal is not null)
            {
                return; // refused already, from a prefix before the end
            }

            long end = _start + buffer.Length;
            string? problem = null;
            if (single && end == 0)
            {
                problem = $"The request carries no message; {method} takes exactly one.";
            }
            else if (single && _firstEnd != 0 && end > _firstEnd)
            {
                problem = $"The request carries more than one message; {method} takes exactly one.";
            }
            else if (_arrivingEnd > end && _arrivingStart == _start)
            {
                problem = string.Create(CultureInfo.InvariantCulture,
                    $"The request ended inside a message: its prefix declares {_arrivingLength:N0} bytes, and {end - _arrivingStart - PrefixLength:N0} came.");
            }
            else if (_arrivingEnd == 0 && end > _nextPrefix && _nextPrefix == _start)
            {
                problem = $"The request ended inside a message's {PrefixLength}-byte prefix ({end - _nextPrefix} of its bytes came).";
            }

            if (problem is not null)
            {
                inner.AdvanceTo(buffer.Start, buffer.End); // as in Inspect
                throw new RpcException(new Status(StatusCode.InvalidArgument, problem + " Nothing was done with it."));
            }
        }

        // Charges the bytes of the arriving message received so far. Beyond the budget the message is refused: at
        // once when the reader is waiting for it, else once it is next (until then its charge stays where it was).
        private void Charge(ReadOnlySequence<byte> buffer, long end)
        {
            long received = end - _arrivingStart;
            if (received <= _charged)
            {
                return;
            }

            if (guard.TryCharge(site, received - _charged, large: limit > EnvelopeMessageBytes))
            {
                _charged = received;
                return;
            }

            if (_arrivingStart == _start)
            {
                inner.AdvanceTo(buffer.Start, buffer.End); // as in Inspect
                throw new RpcException(
                    new Status(StatusCode.ResourceExhausted, string.Create(CultureInfo.InvariantCulture,
                        $"The node is receiving too many large messages at once (ArrivingMessageMiB {guard._arriving.Budget >> 20}, a quarter of it per network address{(limit > EnvelopeMessageBytes ? ", three quarters of it for VerifyBatch" : string.Empty)}); this one ({_arrivingLength:N0} bytes) was refused while it arrived. Retry in a moment, or send smaller requests.")),
                    NodeRefusals.Trailers(1000));
            }
        }

        /// <summary>The request's body failed under the reader (on a read or an advance): the client reset the stream or
        /// closed the connection (Kestrel's "The client reset the request stream."), or broke HTTP/2's rules for it. Kestrel cancels the
        /// request's abort token on the thread pool, so Grpc.AspNetCore, which takes an IOException for a server error
        /// unless that token is already cancelled, logged most client resets during a read as errors. As an
        /// <see cref="RpcException"/> it is the call's status (which no client is left to read) and an information line.</summary>
        private static RpcException Unreadable(IOException e) =>
            new(new Status(StatusCode.Cancelled, $"The request could not be read: {e.Message}"));

        private RpcException Stalled() => new(new Status(StatusCode.DeadlineExceeded, string.Create(CultureInfo.InvariantCulture,
            $"A request message of {_arrivingLength:N0} bytes began to arrive but was not whole within {Grace.TotalSeconds:0} s plus 1 s per {MinimumBytesPerSecond >> 10} KiB; the node ends calls that stall in the middle of a message. Send each message without pausing inside it.")));
    }
}
