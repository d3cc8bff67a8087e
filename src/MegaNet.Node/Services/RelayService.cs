using System.Collections.Concurrent;
using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using System.Threading.Channels;
using Google.Protobuf;
using Grpc.Core;
using MegaNet.Api;
using MegaNet.Api.V1;
using MegaNet.Core.Diagnostics;
using MegaNet.Core.Transparency;
using MegaNet.Core.Verification;
using MegaNet.Node.Admission;
using MegaNet.Node.Hosting;
using MegaNet.Store;
using Microsoft.AspNetCore.Http;

namespace MegaNet.Node.Services;

/// <summary>The <c>meganet.v1.Relay</c> service: thin wrappers over admission, the store and the verifier.</summary>
public sealed class RelayService(
    AdmissionPipeline admission,
    IEnvelopeStore store,
    MailboxAuthenticator authenticator,
    MailboxNotifier notifier,
    NodeOptions options,
    TimeProvider clock,
    Microsoft.Extensions.Hosting.IHostApplicationLifetime lifetime,
    DelegatedVerificationGate verifyGate,
    ProofGate proofGate,
    StoreDamage storeDamage,
    UnsentReplyGuard unsentReplies) : Relay.RelayBase
{
    /// <summary>Most items (signatures, inclusion and consistency proofs together) in one <c>VerifyBatch</c> call.</summary>
    internal const int MaxVerifyItems = 65_536;

    /// <summary>The refusal of a <c>VerifyBatch</c> call of <paramref name="items"/> items.</summary>
    internal static string TooManyVerifyItems(long items) =>
        $"This VerifyBatch call has {items:N0} items; at most {MaxVerifyItems:N0} (signatures, inclusion and consistency proofs together, Status.limits.max_verify_batch) are taken in one call.";

    /// <summary>Most path hashes (inclusion and consistency proofs together) in one <c>VerifyBatch</c> call, counted on
    /// the wire before it is parsed: 2^19, more than a 16 MiB request of 32-byte hashes holds (34 bytes each on the
    /// wire), so no request of real proofs reaches it, while one of empty entries (2 bytes each, an object each when
    /// parsed) is refused before it costs gigabytes.</summary>
    internal const int MaxVerifyPathHashes = 1 << 19;

    /// <summary>The refusal of a <c>VerifyBatch</c> call whose proofs hold <paramref name="hashes"/> path hashes.</summary>
    internal static string TooManyVerifyPathHashes(long hashes) =>
        $"This VerifyBatch call's proofs hold {hashes:N0} path hashes; at most {MaxVerifyPathHashes:N0} (inclusion and consistency proofs together) are taken in one call, " +
        $"and a proof has at most {MerkleTree.MaxPathHashes} of 32 bytes each.";

    /// <summary>Why a <c>SubmitBatchStream</c> request of <paramref name="count"/> envelopes is not admitted.</summary>
    internal static string TooManyBatchEnvelopes(long count) =>
        $"it holds {count:N0} envelopes, and a SubmitBatchRequest may hold at most {MaxBatchEnvelopes} (Status.limits.max_batch_envelopes)";

    /// <summary>Most envelopes in one <c>SubmitBatchStream</c> request: the protocol's limit, defined once with the client
    /// library (its bytes are bounded as a Submit request's are, by <see cref="RequestMessageGuard.EnvelopeMessageBytes"/>).</summary>
    public const int MaxBatchEnvelopes = MegaNetClient.MaxBatchEnvelopes;

    // Signatures (or proofs) verified per step of a VerifyBatch call, with a look at the client's cancellation between
    // steps; NodeOptions warns of a GPU threshold above it.
    private const int VerifyChunk = NodeOptions.VerifyBatchChunk;

    /// <summary>Most envelope bytes in one <c>Fetch</c> page (the first envelope is always included). A reply stays in
    /// the node's memory until the client reads it, and HTTP/2 flow control lets a client simply not read: the call
    /// completes on the node all the same (there is no hook for "read"), so what bounds the memory is the page size times
    /// the streams a connection may hold open (Kestrel's 100) times the connections. With pages of up to 1,000
    /// envelopes of the 64 KiB class a reply pinned ~68 MB; at 1 MiB, 100 unread replies on one connection pinned
    /// 100 MiB (measured); now they pin 25 MiB. (32 streams a connection would make that 8 MiB, but clients that open
    /// a burst of calls before the node's settings arrive then lose the connection: seen in the tests.) Across
    /// connections, <see cref="UnsentReplyGuard"/> holds unread replies to <see cref="NodeOptions.UnsentReplyMiB"/>.</summary>
    public const long FetchPageBytes = 256 << 10;

    // Envelope bytes one Subscribe reads from the mailbox at a time (at least one envelope). A subscriber that stops
    // reading holds its page in the node until its lifetime ends, and MaxSubscriptions of them may: 256 KiB made that
    // about 5 GiB at the defaults (found in review, 2026-12-04), 64 KiB about a quarter (a backlog of large envelopes
    // then drains one listing per envelope, each a lookup in memory). Across subscriptions, a page is charged to
    // UnsentReplyGuard's budget while it is listed and written (SubscribePageCharge).
    private const long SubscribePageBytes = 64 << 10;

    // What a page's item fields besides its envelopes take at most (64 items of a seq, a 32-byte id and a log index).
    private const long SubscribeItemFieldBytes = 64 * 64;

    private static readonly WriteOptions BufferedWrite = new(WriteFlags.BufferHint);

    // Status is called before every send by MegaNetClient: read the assembly's version once, not by reflection per call.
    private static readonly string NodeVersion = typeof(RelayService).Assembly.GetName().Version?.ToString() ?? "0";

    /// <inheritdoc/>
    public override Task<Receipt> Submit(SubmitRequest request, ServerCallContext context)
    {
        Task<Receipt> admitted = AdmitOne(request, Source(context), context.CancellationToken);
        // The call ends when its client goes, even while admission still holds the envelope (which it verifies and
        // stores all the same: a Submit sent again gets its receipt). A stop closes the connections still busy
        // NodeHost.ServerStopDrain in, then drains admission: a call left waiting on a full queue outlived the
        // server and wrote its answer into the server's disposed buffers, an error logged for each such call.
        return admitted.IsCompleted ? admitted : admitted.WaitAsync(context.CancellationToken);
    }

    /// <summary>The calling client's address, which admission holds bad signatures against.</summary>
    private static ClientAddress? Source(ServerCallContext context) => ClientAddress.From(context.GetHttpContext().Connection.RemoteIpAddress);

    /// <inheritdoc/>
    public override Task SubmitStream(IAsyncStreamReader<SubmitRequest> requestStream, IServerStreamWriter<SubmitResult> responseStream, ServerCallContext context) =>
        RunSubmitStream(requestStream, responseStream, context,
            (request, source, ct) => new InFlight(AdmitOne(request, source, ct), null),
            item => ResultOf(item.One!));

    /// <inheritdoc/>
    public override Task SubmitBatchStream(IAsyncStreamReader<SubmitBatchRequest> requestStream, IServerStreamWriter<SubmitBatchResult> responseStream, ServerCallContext context) =>
        RunSubmitStream(requestStream, responseStream, context, AdmitBatch, item =>
        {
            var result = new SubmitBatchResult();
            foreach (Task<Receipt> task in item.Many!)
            {
                result.Results.Add(ResultOf(task));
            }

            return result;
        });

    // Admission copies what it keeps of the envelope before SubmitAsync returns (an answer that comes later reads only
    // the copy and the parsed stamp), so the request's pooled bytes go back as soon as it has.
    private Task<Receipt> AdmitOne(SubmitRequest request, ClientAddress? source, CancellationToken cancellationToken)
    {
        try
        {
            return admission.SubmitAsync(request.Envelope, source, UndefinedFieldCheck.Take(request)?.EnvelopeRefusal(0), cancellationToken);
        }
        finally
        {
            PooledSubmitParser.Return(request);
        }
    }

    private InFlight AdmitBatch(SubmitBatchRequest request, ClientAddress? source, CancellationToken cancellationToken)
    {
        try
        {
            int count = request.Envelopes.Count;
            if (count > MaxBatchEnvelopes)
            {
                // Read but not admitted: the stream ends as for an unreadable request, after the answers before it.
                throw new RpcException(new Status(StatusCode.InvalidArgument, TooManyBatchEnvelopes(count)));
            }

            // One bad envelope costs only its own result, those with fields version 1 does not define included.
            UndefinedFields? undefined = UndefinedFieldCheck.Take(request);
            var tasks = new Task<Receipt>[count];
            for (int i = 0; i < tasks.Length; i++)
            {
                tasks[i] = admission.SubmitAsync(request.Envelopes[i], source, undefined?.EnvelopeRefusal(i), cancellationToken);
            }

            return new InFlight(null, tasks);
        }
        finally
        {
            PooledSubmitParser.Return(request);
        }
    }

    /// <summary>
    /// Both submit streams: requests are admitted as they are read (so their envelopes share verification batches with
    /// everyone else's) and answered in request order, each answer once all its envelopes are settled.
    /// </summary>
    private async Task RunSubmitStream<TRequest, TResult>(IAsyncStreamReader<TRequest> requestStream, IServerStreamWriter<TResult> responseStream, ServerCallContext context,
        Func<TRequest, ClientAddress?, CancellationToken, InFlight> admit, Func<InFlight, TResult> answer)
    {
        // The window bounds one stream's envelopes in admission, and with it the latency of every submission behind
        // them: the stream reads its next request only while fewer than StreamWindow envelopes it read are unanswered
        // (a batch counts each of its envelopes, an empty one counts one, so it may go over by one batch less one
        // envelope).
        var window = new EnvelopeWindow(options.StreamWindow);
        var inFlight = Channel.CreateUnbounded<InFlight>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        // Reading stops when the client goes, when the writer fails (nobody would take the answers), or when the node
        // begins to shut down (then what was read is still answered).
        using var reading = CancellationTokenSource.CreateLinkedTokenSource(context.CancellationToken, lifetime.ApplicationStopping);
        using var writes = new WriteDeadline(context.CancellationToken, lifetime.ApplicationStopping);
        long answered = 0;
        Exception? unreadable = null;
        bool gone = false;
        ClientAddress? source = Source(context);
        // Read once: Kestrel takes a lock for each read of the request's abort token (0.2 % of a streaming node's
        // samples when read per envelope).
        CancellationToken aborted = context.CancellationToken;
        // Idle: no request read and every one read answered for StreamIdleSeconds; then waiting for the next request
        // stops (a request already read is still admitted and answered). Checked by a timer that compares counters,
        // rather than a deadline reset per request, which would cost a timer update per envelope.
        using var waiting = CancellationTokenSource.CreateLinkedTokenSource(reading.Token);
        var idle = new StreamIdleness(TimeSpan.FromSeconds(options.StreamIdleSeconds));
        ITimer idleCheck = clock.CreateTimer(_ => idle.Tick(waiting), null, idle.CheckInterval, idle.CheckInterval);
        Task writer = Task.Run(async () =>
        {
            try
            {
                await foreach (InFlight item in inFlight.Reader.ReadAllAsync(context.CancellationToken))
                {
                    // Refusals come back as faulted tasks, and come exactly when the node is saturated: an await
                    // would rethrow each one (a stack trace captured per refused envelope), so wait without throwing
                    // and read the outcome off the task.
                    if (item.One is { IsCompleted: false } one)
                    {
                        await ((Task)one).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
                    }
                    else if (item.Many is not null)
                    {
                        foreach (Task task in item.Many)
                        {
                            if (!task.IsCompleted)
                            {
                                await task.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
                            }
                        }
                    }

                    TResult result = answer(item);
                    window.Exit(item.Count);

                    // Receipts complete a store group at a time: while the next answer is ready too, this one is only
                    // buffered, so a run of answers leaves in one flush (one HTTP/2 frame, one socket write), not one each.
                    bool nextReady = inFlight.Reader.TryPeek(out InFlight next) && next.IsCompleted;
                    responseStream.WriteOptions = nextReady ? BufferedWrite : null;
                    await responseStream.WriteAsync(result, writes.Token).ConfigureAwait(false);
                    answered++;
                    idle.Answered(answered);
                }
            }
            catch
            {
                await reading.CancelAsync().ConfigureAwait(false);
                throw;
            }
        });

        try
        {
            await foreach (TRequest request in requestStream.ReadAllAsync(waiting.Token))
            {
                idle.Read();
                InFlight item = admit(request, source, aborted);
                window.Add(item.Count);
                inFlight.Writer.TryWrite(item);
                await window.WaitForRoomAsync(reading.Token).ConfigureAwait(false);
            }
        }
        catch (Exception e) when ((ClientGoneInterceptor.FailsAsReset(e) && ClientGone(context)) || e is RpcException { StatusCode: StatusCode.Cancelled })
        {
            // The client went away. A read of an aborted request ends in CANCELLED from RequestMessageGuard (the body
            // failed under it), a cancellation, or Grpc.AspNetCore's "Can't read messages after the request is
            // complete" (an InvalidOperationException, which went to the log as a server error); whichever comes,
            // there is nobody left to answer.
            gone = true;
        }
        catch (OperationCanceledException) when ((reading.IsCancellationRequested || waiting.IsCancellationRequested) && !context.CancellationToken.IsCancellationRequested && !writer.IsFaulted)
        {
            // The node is shutting down, or the stream went idle: answer what was read, then say so. Both sources are
            // read: a wait for room in the window is under reading's token, whose cancellation resumes it before the
            // linked waiting is cancelled (a stop with a full window logged the cancellation as a server error).
        }
        catch (Exception e) when (e is RpcException or InvalidProtocolBufferException or IOException && !context.CancellationToken.IsCancellationRequested)
        {
            // A request that cannot be read (over the size limit, not protobuf) or admitted (a batch over its limit)
            // ends the stream, but only after every request before it is answered: those may be stored already, and
            // their receipts are the client's only word of it. Thrown from here, the answers still queued were dropped.
            unreadable = e;
        }
        finally
        {
            inFlight.Writer.TryComplete();
            idleCheck.Dispose(); // reading is over: answering what was read is not idleness
        }

        try
        {
            await writer.ConfigureAwait(false);
        }
        catch (Exception e) when (ClientGoneInterceptor.FailsAsReset(e) && ClientGone(context))
        {
            // The client went away while its answers were written (see Subscribe): nobody is left to tell.
            return;
        }
        catch (OperationCanceledException) when (writes.Token.IsCancellationRequested && lifetime.ApplicationStopping.IsCancellationRequested)
        {
            // A stop's grace for writes ran out (WriteDeadline) on a client that stopped reading its receipts: the write
            // cancelled midway reset the stream. Kestrel cancels the request's abort token for that reset a moment later,
            // on the thread pool, so the filter above may not see it yet (CI, 2026-12-06: the cancellation went to the
            // log as a server error). Ended below as a stop, which the reset client never reads.
        }

        if (gone)
        {
            return;
        }

        if (unreadable is not null)
        {
            (StatusCode code, string what) = unreadable is RpcException { StatusCode: StatusCode.ResourceExhausted or StatusCode.DeadlineExceeded } rpc
                ? (rpc.StatusCode, rpc.Status.Detail)
                : (StatusCode.InvalidArgument, unreadable is RpcException other ? other.Status.Detail : $"it is not a {typeof(TRequest).Name} ({unreadable.Message})");
            // The refusal's trailers (retry-after-ms, for arriving bytes over the node's budget) go with it.
            throw new RpcException(new Status(code,
                $"Request {answered + 1} of this stream could not be read: {what.TrimEnd('.')}. The {answered} before it were answered; send the rest on a new stream."),
                unreadable is RpcException { StatusCode: StatusCode.ResourceExhausted } refused ? refused.Trailers : Metadata.Empty);
        }

        if (lifetime.ApplicationStopping.IsCancellationRequested)
        {
            throw new RpcException(new Status(StatusCode.Unavailable,
                $"The node is shutting down; the first {answered} requests of this stream were answered. Send the rest again later or through another node."));
        }

        if (idle.Expired)
        {
            throw new RpcException(new Status(StatusCode.DeadlineExceeded,
                $"This stream sent no request for {options.StreamIdleSeconds} s (StreamIdleSeconds), so the node ended it; all {answered} requests were answered. Open a new stream when there is more to send."));
        }
    }

    /// <summary>The answer to one streamed submission, from its completed task: the receipt, or for a refusal what a
    /// unary call's status and trailers would say, so a streaming sender can wait or stamp as told. A cancelled
    /// submission throws, as awaiting it would (it ends the stream).</summary>
    private static SubmitResult ResultOf(Task<Receipt> task)
    {
        if (task.IsCompletedSuccessfully)
        {
            return new SubmitResult { Receipt = task.Result };
        }

        Exception? error = task.Exception?.InnerException;
        switch (error)
        {
            case RpcException e:
                return new SubmitResult
                {
                    StatusCode = (int)e.StatusCode,
                    Error = e.Status.Detail,
                    RetryAfterMs = (uint)Math.Max(0, (e.RetryAfter() ?? TimeSpan.Zero).TotalMilliseconds),
                    PowBits = (uint)(e.RequiredPowBits() ?? 0),
                    PowSeed = e.RequiredPowSeed() is { } seed ? ByteString.CopyFrom(seed) : ByteString.Empty,
                };
            case null or OperationCanceledException:
                // Cancelled, or faulted with a cancellation: rare, and it ends the stream, so throwing is fine here.
                task.GetAwaiter().GetResult();
                throw new UnreachableException();
            default:
                // Admission logged it (an unexpected fault); its text is the operator's, not the submitter's.
                return new SubmitResult { StatusCode = (int)StatusCode.Internal, Error = "The node failed to admit the envelope (an internal error, in its log); nothing was stored." };
        }
    }

    /// <summary>What one request of a submit stream put in admission: one submission (<c>SubmitStream</c>) or a
    /// batch's (<c>SubmitBatchStream</c>).</summary>
    private readonly record struct InFlight(Task<Receipt>? One, Task<Receipt>[]? Many)
    {
        /// <summary>What it takes of the stream's window: its envelopes, and an empty batch one, since answering it holds
        /// a slot in the queue of answers as much as an envelope does (counted as none, empty requests of five bytes each
        /// were read without end while a client left the answers unread).</summary>
        public int Count => Many is { Length: > 1 } many ? many.Length : 1;

        public bool IsCompleted
        {
            get
            {
                if (One is not null)
                {
                    return One.IsCompleted;
                }

                foreach (Task<Receipt> task in Many!)
                {
                    if (!task.IsCompleted)
                    {
                        return false;
                    }
                }

                return true;
            }
        }
    }

    /// <summary>A submit stream's envelopes read and not yet answered; its reader waits while they fill the window.
    /// One reader adds and waits, one writer takes away.</summary>
    private sealed class EnvelopeWindow(int size)
    {
        private readonly Lock _lock = new();
        private int _unanswered;
        private TaskCompletionSource? _room;

        public void Add(int envelopes)
        {
            lock (_lock)
            {
                _unanswered += envelopes;
            }
        }

        public void Exit(int envelopes)
        {
            TaskCompletionSource? room = null;
            lock (_lock)
            {
                _unanswered -= envelopes;
                if (_unanswered < size)
                {
                    (room, _room) = (_room, null);
                }
            }

            room?.TrySetResult();
        }

        /// <summary>Completes once fewer than the window's envelopes are unanswered.</summary>
        public ValueTask WaitForRoomAsync(CancellationToken cancellationToken) =>
            HasRoom(out Task? wait) ? ValueTask.CompletedTask : new ValueTask(WaitSlowAsync(wait, cancellationToken));

        private async Task WaitSlowAsync(Task wait, CancellationToken cancellationToken)
        {
            Task? next = wait;
            do
            {
                await next.WaitAsync(cancellationToken).ConfigureAwait(false);
            }
            while (!HasRoom(out next));
        }

        // True if there is room now; else the task that Exit completes when there may be.
        private bool HasRoom([NotNullWhen(false)] out Task? wait)
        {
            lock (_lock)
            {
                if (_unanswered < size)
                {
                    wait = null;
                    return true;
                }

                _room ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                wait = _room.Task;
                return false;
            }
        }
    }

    /// <summary>Whether a <c>SubmitStream</c> has gone idle: for the whole idle period it read no request, wrote no
    /// answer, and had every request it read answered. The reader and the writer each count; a timer compares the
    /// counts every quarter of the period, so the hot path pays two plain stores per envelope and nothing else.</summary>
    private sealed class StreamIdleness(TimeSpan limit)
    {
        private const int QuietTicks = 4;
        private long _read;       // written by the reader only
        private long _answered;   // written by the writer only
        private long _readAtTick;
        private long _answeredAtTick;
        private int _quietTicks;
        private int _expired;

        /// <summary>How often the counts are compared: a quarter of the limit, so a stream ends at most a quarter late.</summary>
        public TimeSpan CheckInterval => limit / QuietTicks;

        public bool Expired => Volatile.Read(ref _expired) != 0;

        public void Read() => Volatile.Write(ref _read, _read + 1);

        public void Answered(long answered) => Volatile.Write(ref _answered, answered);

        public void Tick(CancellationTokenSource waiting)
        {
            lock (this)
            {
                long read = Volatile.Read(ref _read), answered = Volatile.Read(ref _answered);
                // Quiet: nothing read and nothing answered since the last tick, and nothing left to answer. An answer
                // counts as activity too: a client that waits for each answer before it sends again gets the whole
                // limit from that answer, not from its request (before, a slow answer ate into the client's time, and
                // a stream could end three quarters of the limit after its last answer).
                bool quiet = read == _readAtTick && answered == _answeredAtTick && read == answered;
                _readAtTick = read;
                _answeredAtTick = answered;
                _quietTicks = quiet ? _quietTicks + 1 : 0;
                // Four quiet quarters in a row: at least the whole limit since the last request or answer, at most a
                // quarter more.
                if (_quietTicks < QuietTicks || Interlocked.Exchange(ref _expired, 1) != 0)
                {
                    return;
                }
            }

            try
            {
                waiting.Cancel();
            }
            catch (ObjectDisposedException)
            {
                // The call ended between the check and the cancel.
            }
        }
    }

    /// <inheritdoc/>
    public override Task<ChallengeResponse> Challenge(ChallengeRequest request, ServerCallContext context) =>
        Task.FromResult(authenticator.Challenge(request.Address.Span));

    /// <inheritdoc/>
    public override async Task<FetchResponse> Fetch(FetchRequest request, ServerCallContext context)
    {
        byte[] address = authenticator.Authenticate(request.Auth, MailboxPurpose.Fetch, Source(context));
        int limit = request.Limit <= 0 ? 100 : Math.Min(request.Limit, 1000);
        MailboxPage page;
        try
        {
            page = await ListMailAsync(address, request.AfterSeq, limit, FetchPageBytes, context.CancellationToken).ConfigureAwait(false);
        }
        catch (ObjectDisposedException)
        {
            throw new RpcException(new Status(StatusCode.Unavailable, "The node is shutting down; fetch again from it once it is back, or from another node."));
        }

        var response = new FetchResponse { NextCursor = page.NextCursor, WaitingCount = page.WaitingCount, WaitingBytes = page.WaitingBytes };
        foreach (MailboxEntry entry in page.Entries)
        {
            response.Items.Add(ToItem(entry));
        }

        UnsentReplyGuard.ReplySize(context.GetHttpContext(), response.CalculateSize());
        return response;
    }

    /// <inheritdoc/>
    public override async Task<AckResponse> Ack(AckRequest request, ServerCallContext context)
    {
        if (request.Seqs.Count > FasterEnvelopeStore.MaxAckSeqs)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, $"At most {FasterEnvelopeStore.MaxAckSeqs} sequence numbers per Ack; got {request.Seqs.Count}. Acknowledge in several calls."));
        }

        byte[] address = authenticator.Authenticate(request.Auth, MailboxPurpose.Ack(request.Seqs), Source(context));
        try
        {
            // The store copies the numbers before it returns: no list of them here.
            int deleted = await store.AckAsync(address, request.Seqs, context.CancellationToken).ConfigureAwait(false);
            return new AckResponse { Deleted = deleted };
        }
        catch (Exception e) when (e is StoreUnavailableException or ObjectDisposedException or ChannelClosedException)
        {
            // Not UNKNOWN: the client should learn that acknowledging again later is safe (an ack deletes what is
            // still there, and counts what it deleted).
            throw new RpcException(new Status(StatusCode.Unavailable, e is StoreUnavailableException
                ? "The node cannot delete mail until its operator frees disk space or fixes the device and restarts it; the mail may still be there. Acknowledge again later."
                : "The node is shutting down; the mail may still be there. Acknowledge again once it is back."));
        }
    }

    /// <inheritdoc/>
    public override async Task Subscribe(SubscribeRequest request, IServerStreamWriter<MailEvent> responseStream, ServerCallContext context)
    {
        byte[] address = authenticator.Authenticate(request.Auth, MailboxPurpose.Subscribe, Source(context));
        // A subscription lasts until the client goes, the node begins to shut down (which would otherwise wait for it),
        // or its lifetime ends. The auth is checked only here, so without that end an auth captured before it was used
        // (a TLS-terminating proxy, a plaintext h2c link) watched every future envelope's metadata for good. Each draws
        // 90-100 % of the option, so the subscriptions of a burst (listeners coming back after a restart) do not all
        // come back for a challenge in the same second an hour later.
        using var expiry = new CancellationTokenSource(SubscriptionLife(options.SubscriptionLifetimeSeconds, Random.Shared.NextDouble()), clock);
        using var ending = CancellationTokenSource.CreateLinkedTokenSource(lifetime.ApplicationStopping, expiry.Token);
        using var streaming = CancellationTokenSource.CreateLinkedTokenSource(context.CancellationToken, ending.Token);
        CancellationToken ct = streaming.Token;
        // A write blocked by a client that stopped reading gets the stop's grace at the end of the lifetime too, then
        // the stream is reset: otherwise such a subscriber kept its slot past the lifetime (it learns nothing more).
        using var writes = new WriteDeadline(context.CancellationToken, ending.Token);
        using MailboxNotifier.Subscription subscription = notifier.Subscribe(address, Source(context));
        // A page the client does not take within the reply deadline resets the stream, as an unread Fetch reply does:
        // its charge would otherwise hold the budget until the lifetime ends. Armed only while a page is written.
        HttpContext http = context.GetHttpContext();
        ClientAddress site = Source(context)?.Site ?? default;
        using var pageDeadline = new CancellationTokenSource();
        using CancellationTokenRegistration reset = pageDeadline.Token.Register(static c => ((HttpContext)c!).Abort(), http);
        // A keepalive now (it carries the headers), not only after the first interval: the client learns at once that
        // it is subscribed (a refusal ends the call instead, and response headers alone do not tell which it got). A
        // write the client went away from throws InvalidOperationException; ClientGoneInterceptor makes it CANCELLED.
        // Counted before that keepalive is written, so a client that has it is counted already.
        MegaNetMetrics.SubscriptionStarted();
        ulong sent = request.AfterSeq; // the last sequence number written to the client
        // Keepalives are stamped with the wall clock at the start plus the monotonic time since: clients learn the
        // node's interval from the gap between two (MegaNetClient.ListenAsync, examples/javascript), and a wall clock
        // stepped forward between them (NTP, a VM resumed) read as an interval as long as the step, which stretched
        // their watchdog to three times the step for the rest of their listen.
        long startUnixMs = clock.GetUtcNow().ToUnixTimeMilliseconds(), startTimestamp = clock.GetTimestamp();
        long Stamp() => startUnixMs + (long)clock.GetElapsedTime(startTimestamp).TotalMilliseconds;
        try
        {
            await responseStream.WriteAsync(new MailEvent { KeepaliveUnixMs = startUnixMs }, writes.Token).ConfigureAwait(false);
            long lastWrite = Stopwatch.GetTimestamp();
            try
            {
                var keepalive = TimeSpan.FromSeconds(options.KeepaliveSeconds);
                while (true)
                {
                    // A stop that began before this call got here ends it the same way as one that comes later.
                    ct.ThrowIfCancellationRequested();

                    // Drain everything after the cursor, then wait for a signal or the keepalive.
                    ulong from = sent;
                    while (true)
                    {
                        // Charged before it is listed, as much as a page may hold; with the budget full (subscribers and
                        // Fetch clients not reading), the subscription waits holding nothing, its keepalives going on.
                        long charge = SubscribePageCharge;
                        while (!unsentReplies.TryChargePage(site, charge))
                        {
                            if (Stopwatch.GetElapsedTime(lastWrite) >= keepalive)
                            {
                                await responseStream.WriteAsync(new MailEvent { KeepaliveUnixMs = Stamp() }, writes.Token).ConfigureAwait(false);
                                lastWrite = Stopwatch.GetTimestamp();
                            }

                            await Task.Delay(UnsentReplyGuard.RetryAfterMs, ct).ConfigureAwait(false);
                        }

                        MailboxPage page;
                        try
                        {
                            // Small pages: what a subscriber that stops reading holds the node to is one page and one write.
                            page = await ListMailAsync(address, from, 64, SubscribePageBytes, ct).ConfigureAwait(false);
                            long bytes = SubscribeItemFieldBytes;
                            foreach (MailboxEntry entry in page.Entries)
                            {
                                bytes += entry.Envelope.Length;
                            }

                            // (Never more than charged, unless MaxEnvelopeBytes was lowered after larger mail was stored:
                            // such a page goes out charged as much as a page may hold.)
                            if (bytes < charge)
                            {
                                unsentReplies.ReleasePage(site, charge - bytes);
                                charge = bytes;
                            }

                            pageDeadline.CancelAfter(unsentReplies.ReadDeadline(charge));
                            foreach (MailboxEntry entry in page.Entries)
                            {
                                // Writes end with the client, or when a stop has waited WriteDeadline.StopGrace for them:
                                // cancelling one midway makes the server reset the stream, and the client sees CANCELLED
                                // instead of the status below, so a stop does not cancel them at once. A write completes
                                // once its message has left the stream's buffer (Kestrel's HTTP/2 flush), so the page
                                // is charged until then.
                                await responseStream.WriteAsync(new MailEvent { Item = ToItem(entry) }, writes.Token).ConfigureAwait(false);
                                sent = entry.Seq;
                                lastWrite = Stopwatch.GetTimestamp();
                            }

                            pageDeadline.CancelAfter(Timeout.InfiniteTimeSpan);
                        }
                        finally
                        {
                            unsentReplies.ReleasePage(site, charge);
                        }

                        // Until a page moves the cursor no further. A short page does not mean the end: entries acked or
                        // expired after the index was read are left out of it.
                        if (page.NextCursor <= from)
                        {
                            break;
                        }

                        from = page.NextCursor;
                    }

                    // The keepalive is due a period after the last write, whatever woke the stream meanwhile: a signal whose
                    // mail was gone by the time it was listed (acknowledged by another device, or expired) wrote nothing,
                    // and waiting the whole period again after each left the client without a word until it gave the node
                    // up as silent.
                    TimeSpan left = keepalive - Stopwatch.GetElapsedTime(lastWrite);
                    if (left <= TimeSpan.Zero || !await subscription.WaitAsync(left, ct).ConfigureAwait(false))
                    {
                        await responseStream.WriteAsync(new MailEvent { KeepaliveUnixMs = Stamp() }, writes.Token).ConfigureAwait(false);
                        lastWrite = Stopwatch.GetTimestamp();
                    }
                }
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
                if (!context.CancellationToken.IsCancellationRequested)
                {
                    if (lifetime.ApplicationStopping.IsCancellationRequested)
                    {
                        throw new RpcException(new Status(StatusCode.Unavailable, $"The node is shutting down; subscribe again with after_seq {sent} to resume."));
                    }

                    // UNAVAILABLE, retryable for any gRPC client; the trailer tells the shipped clients that this is the
                    // expected end, to be renewed at once and without a word, not an outage.
                    throw new RpcException(new Status(StatusCode.Unavailable, SubscriptionEndedText(options.SubscriptionLifetimeSeconds, sent)), LifetimeEndedTrailers());
                }

                // The client went away.
            }
        }
        finally
        {
            MegaNetMetrics.SubscriptionEnded();
        }
    }

    /// <summary>What a Subscribe page is charged before it is listed: at most <see cref="SubscribePageBytes"/> of
    /// envelopes, or one envelope alone, and the items' other fields.</summary>
    private long SubscribePageCharge => Math.Max(SubscribePageBytes, options.MaxEnvelopeBytes) + SubscribeItemFieldBytes;

    /// <summary>A page of the mailbox after <paramref name="afterSeq"/>. An envelope the store cannot read is answered as a
    /// proof whose hashes it cannot read is (<see cref="Guard"/>), with words for mail: DATA_LOSS naming the entry, the
    /// damage reported (logged, health NOT_SERVING), or UNAVAILABLE to ask again from <paramref name="afterSeq"/>.</summary>
    private async Task<MailboxPage> ListMailAsync(byte[] address, ulong afterSeq, int limit, long maxBytes, CancellationToken cancellationToken)
    {
        try
        {
            return await store.ListAsync(address, afterSeq, limit, maxBytes, cancellationToken).ConfigureAwait(false);
        }
        catch (StoreCorruptException e)
        {
            storeDamage.Report(e);
            // (ListAsync names the entry in every such error.) The trailer names it for programs: a client goes on
            // from after it without parsing the text.
            ulong seq = e.MailboxSeq ?? afterSeq + 1;
            throw new RpcException(new Status(StatusCode.DataLoss, StoreDamage.MailClientText(seq)),
                new Metadata { { MegaNetClient.DamagedSeqTrailer, seq.ToString(CultureInfo.InvariantCulture) } });
        }
        catch (StoreUnavailableException e)
        {
            storeDamage.ReportUnreadable(e);
            throw new RpcException(new Status(StatusCode.Unavailable, StoreDamage.MailUnreadableClientText(e, afterSeq)));
        }
    }

    private static bool ClientGone(ServerCallContext context) => ClientGoneInterceptor.ClientGone(context);

    /// <summary>How long one subscription lasts: between 90 % and 100 % of <paramref name="lifetimeSeconds"/>, by
    /// <paramref name="draw"/> (0 to 1).</summary>
    internal static TimeSpan SubscriptionLife(int lifetimeSeconds, double draw) => TimeSpan.FromSeconds(lifetimeSeconds * (1 - (draw / 10)));

    /// <summary>The status detail of a subscription ended by its lifetime, <paramref name="sent"/> being the last
    /// sequence number written to it.</summary>
    internal static string SubscriptionEndedText(int lifetimeSeconds, ulong sent) =>
        $"This subscription has run its course (the node ends each within SubscriptionLifetimeSeconds, {lifetimeSeconds:N0} s, so that a mailbox auth " +
        $"is proven again from time to time); subscribe again with a fresh challenge and after_seq {sent} to resume.";

    /// <summary>The trailers of a subscription ended by its lifetime (made per end, once a subscription's lifetime:
    /// a shared <see cref="Metadata"/> is mutable).</summary>
    private static Metadata LifetimeEndedTrailers() => new() { { MegaNetClient.SubscriptionEndedTrailer, MegaNetClient.SubscriptionLifetimeEnded } };

    /// <inheritdoc/>
    public override Task<Api.V1.SignedTreeHead> GetTreeHead(GetTreeHeadRequest request, ServerCallContext context) =>
        Task.FromResult(AdmissionPipeline.ToProto(store.GetTreeHead()));

    /// <inheritdoc/>
    public override async Task<InclusionProof> GetInclusionProof(InclusionProofRequest request, ServerCallContext context)
    {
        if (request.LeafIndex < 0 || request.TreeSize < 1 || request.LeafIndex >= request.TreeSize)
        {
            // Wrong whatever the log holds: OUT_OF_RANGE is for a size the log has not reached yet.
            throw new RpcException(new Grpc.Core.Status(StatusCode.InvalidArgument,
                $"leaf_index {request.LeafIndex} of tree_size {request.TreeSize}: a proof needs 0 <= leaf_index < tree_size."));
        }

        IReadOnlyList<byte[]> path;
        using (await proofGate.EnterAsync(Source(context), context.CancellationToken).ConfigureAwait(false))
        {
            path = Guard(() => store.GetInclusionProof(request.LeafIndex, request.TreeSize));
        }

        var proof = new InclusionProof { LeafIndex = request.LeafIndex, TreeSize = request.TreeSize };
        proof.Path.AddRange(path.Select(ByteString.CopyFrom));
        return proof;
    }

    /// <inheritdoc/>
    public override async Task<ConsistencyProof> GetConsistencyProof(ConsistencyProofRequest request, ServerCallContext context)
    {
        if (request.First < 0 || request.First > request.Second)
        {
            throw new RpcException(new Grpc.Core.Status(StatusCode.InvalidArgument,
                $"first {request.First}, second {request.Second}: a proof needs 0 <= first <= second."));
        }

        IReadOnlyList<byte[]> path;
        using (await proofGate.EnterAsync(Source(context), context.CancellationToken).ConfigureAwait(false))
        {
            path = Guard(() => store.GetConsistencyProof(request.First, request.Second));
        }

        var proof = new ConsistencyProof { First = request.First, Second = request.Second };
        proof.Path.AddRange(path.Select(ByteString.CopyFrom));
        return proof;
    }

    /// <inheritdoc/>
    public override async Task<VerifyBatchResponse> VerifyBatch(VerifyBatchRequest request, ServerCallContext context)
    {
        int items = request.Signatures.Count + request.Inclusions.Count + request.Consistencies.Count;
        if (items > MaxVerifyItems)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, TooManyVerifyItems(items)));
        }

        DelegatedVerificationGate.Call? call = verifyGate.TryEnter(Source(context), request.Signatures.Count, out DelegatedVerificationGate.Refusal refusal, out int retryAfterMs);
        if (call is null)
        {
            throw new RpcException(new Status(StatusCode.ResourceExhausted, verifyGate.RefusalText(refusal)), NodeRefusals.Trailers(retryAfterMs));
        }

        using (call)
        {
            // Up to seconds of CPU: on the gate's own thread, not on one of the thread pool's.
            CancellationToken ct = context.CancellationToken;
            return await verifyGate.RunAsync(() => Verify(request, call, ct), ct).ConfigureAwait(false);
        }
    }

    private static void CheckStep(int item, CancellationToken cancellationToken)
    {
        if (item % VerifyChunk == 0)
        {
            cancellationToken.ThrowIfCancellationRequested();
        }
    }

    private VerifyBatchResponse Verify(VerifyBatchRequest request, DelegatedVerificationGate.Call call, CancellationToken cancellationToken)
    {
        var response = new VerifyBatchResponse();
        // The backends that gave this call's verdicts, not the router's name read before it: a GPU node's call under
        // GpuThreshold, or one the GPU faulted on, ran on SIMD and was answered "gpu".
        var router = verifyGate.Verifier as RoutingBatchVerifier;
        RoutedTo ran = RoutedTo.None;
        int count = request.Signatures.Count;
        using (var batch = new SignatureBatch(Math.Max(1, count)))
        {
            foreach (SignatureItem item in request.Signatures)
            {
                batch.Add(item.PublicKey.Span, item.Signature.Span, item.Message.Span);
            }

            bool[] verdicts = new bool[count];
            for (int start = 0; start < count; start += VerifyChunk)
            {
                // A client that gave up (or timed out) stops costing the node at the next step.
                cancellationToken.ThrowIfCancellationRequested();
                int length = Math.Min(VerifyChunk, count - start);
                Span<bool> step = verdicts.AsSpan(start, length);
                if (router is not null)
                {
                    ran |= router.VerifyReporting(batch, start, length, step);
                }
                else
                {
                    verifyGate.Verifier.Verify(batch, start, length, step);
                }

                // Invalid verdicts are what cost (bisection): the site pays for them, and one that has spent its budget
                // stops here rather than holding the slot for the rest (an all-invalid call of 65,536 took 12 s).
                if (!call.Stepped(start + length, length - step.Count(true), out int retryAfterMs) && start + length < count)
                {
                    throw new RpcException(new Status(StatusCode.ResourceExhausted, DelegatedVerificationGate.BadBudgetText(
                        $"VerifyBatch stopped after {start + length:N0} of {count:N0} signatures: too many signatures sent from this network address were invalid")), NodeRefusals.Trailers(retryAfterMs));
                }
            }

            response.SignatureValid.AddRange(verdicts);
        }

        response.Backend = router?.NamesOf(ran) ?? verifyGate.Verifier.Name;

        // Proofs cost up to 64 (inclusion) or 128 (consistency) SHA-256 hashes each, microseconds, and allocate nothing:
        // the cancellation is looked at once per step as for signatures.
        Span<byte> path = stackalloc byte[MerkleTree.MaxPathHashes * MerkleTree.HashSize];
        Span<byte> leafHash = stackalloc byte[MerkleTree.HashSize];
        for (int i = 0; i < request.Inclusions.Count; i++)
        {
            CheckStep(i, cancellationToken);
            InclusionItem item = request.Inclusions[i];
            MerkleTree.LeafHash(item.Leaf.Span, leafHash);
            response.InclusionValid.Add(MerkleTree.TryConcatenate(item.Path, static hash => hash.Memory, path, out int length)
                && MerkleTree.VerifyInclusion(leafHash, item.LeafIndex, item.TreeSize, path[..length], item.RootHash.Span));
        }

        for (int i = 0; i < request.Consistencies.Count; i++)
        {
            CheckStep(i, cancellationToken);
            ConsistencyItem item = request.Consistencies[i];
            response.ConsistencyValid.Add(MerkleTree.TryConcatenate(item.Path, static hash => hash.Memory, path, out int length)
                && MerkleTree.VerifyConsistency(item.FirstSize, item.SecondSize, item.FirstRoot.Span, item.SecondRoot.Span, path[..length]));
        }

        return response;
    }

    /// <inheritdoc/>
    public override Task<StatusResponse> Status(StatusRequest request, ServerCallContext context)
    {
        long batches = admission.Batches, signatures = admission.Signatures;
        var limits = new Limits
        {
            MaxEnvelopeBytes = options.MaxEnvelopeBytes,
            DefaultTtlSeconds = (long)TimeSpan.FromDays(Math.Min(14, options.MaxTtlDays)).TotalSeconds,
            MaxTtlSeconds = (long)TimeSpan.FromDays(options.MaxTtlDays).TotalSeconds,
            MailboxMaxCount = options.MailboxMaxCount,
            MailboxMaxBytes = options.MailboxMaxBytes,
            SubmitRatePerKey = options.SubmitRatePerKey,
            SubmitBurst = options.SubmitBurst,
            MaxVerifyBatch = MaxVerifyItems,
            MaxBatchEnvelopes = MaxBatchEnvelopes,
            MailboxPowFromPercent = options.MailboxPowFrom,
        };
        // Only the classes this node takes: with MaxEnvelopeBytes under 64 KiB, the larger classes were announced and
        // every envelope of them refused as oversize.
        limits.PayloadClasses.AddRange(Api.EnvelopeFormat.PayloadClasses.Where(c => Api.EnvelopeFormat.LargestEnvelopeLength(c) <= options.MaxEnvelopeBytes));
        return Task.FromResult(new StatusResponse
        {
            Version = NodeVersion,
            VerifierBackend = admission.Verifier.Name,
            VerifierDescription = admission.Verifier.Description,
            BatchesVerified = (ulong)batches,
            SignaturesVerified = (ulong)signatures,
            MeanBatchSize = batches == 0 ? 0 : (double)signatures / batches,
            PowBitsRequired = (uint)admission.PowBitsRequired,
            Limits = limits,
            TreeSize = store.GetTreeHead().TreeSize,
            QueueDepth = admission.QueueDepth,
            StoreRefusing = admission.StoreRefusals.RefusingNow(store.HeldBytes) ?? "",
            PowSeed = ByteString.CopyFrom(admission.PowSeed),
        });
    }

    // The store hands out a fresh id array per entry and never changes it (as with receipts): wrapped, not copied.
    private static MailItem ToItem(MailboxEntry entry) => new()
    {
        Seq = entry.Seq,
        EnvelopeId = UnsafeByteOperations.UnsafeWrap(entry.EnvelopeId),
        Envelope = Envelope.Parser.ParseFrom(entry.Envelope),
        LogIndex = entry.LogIndex,
    };

    private T Guard<T>(Func<T> f)
    {
        try
        {
            return f();
        }
        catch (ArgumentOutOfRangeException e)
        {
            throw new RpcException(new Grpc.Core.Status(StatusCode.OutOfRange, ErrorText.Plain(e)));
        }
        catch (StoreCorruptException e)
        {
            // The node's fault, not the request's: said as such (an unmapped exception reached clients as UNKNOWN,
            // which they read as an outage), and logged once, since anyone can ask for the same proof again at will.
            storeDamage.Report(e);
            throw new RpcException(new Grpc.Core.Status(StatusCode.DataLoss, StoreDamage.ClientText));
        }
        catch (StoreUnavailableException e)
        {
            // A read of leaves.bin that failed for a reason that may pass (too many open files, a device error): no
            // damage, so not DATA_LOSS for good and no NOT_SERVING, but an outage the client can retry.
            storeDamage.ReportUnreadable(e);
            throw new RpcException(new Grpc.Core.Status(StatusCode.Unavailable, StoreDamage.UnreadableClientText(e)));
        }
    }
}

/// <summary>Wakes Subscribe streams when mail for their address commits.</summary>
public sealed class MailboxNotifier
{
    // One lock: subscribe, unsubscribe and a signal per new mail are all short, and an address's entry goes away with
    // its last subscriber (addresses cost nothing to make, so empty entries must not pile up).
    private readonly Dictionary<Key256, List<Subscription>> _subscribers = [];

    // Live subscriptions in all, written under the lock: the store raises OnMail once per stored envelope in its serial
    // apply stage, and a relay mostly has nobody subscribed, so that case must cost one read, not the lock. Skipping on
    // a zero loses no wake-up: the entry is in the mailbox index before OnMail runs, and a Subscribe counts itself
    // before its first read of that index, so it either sees the count or its read sees the entry.
    private int _subscriberCount;

    // Under the lock: live subscriptions by client site (an IPv4 address, or an IPv6 /48), an entry only while it has
    // one. Identities cost nothing to make, so the cap per mailbox alone let one host hold tens of thousands of streams
    // (each a keepalive every KeepaliveSeconds, and each keeping its connection clear of Kestrel's idle timeout).
    private readonly Dictionary<ClientAddress, int> _bySite = [];

    private readonly int _maxTotal;
    private readonly int _maxPerSite;

    /// <summary>Listens to <paramref name="store"/>'s <see cref="IEnvelopeStore.MailArrived"/> for the node's lifetime,
    /// with the default caps of <see cref="NodeOptions"/>.</summary>
    public MailboxNotifier(IEnvelopeStore store)
        : this(store, new NodeOptions())
    {
    }

    /// <summary>Listens to <paramref name="store"/>'s <see cref="IEnvelopeStore.MailArrived"/> for the node's lifetime,
    /// holding subscriptions to <paramref name="options"/>' <see cref="NodeOptions.MaxSubscriptions"/> and
    /// <see cref="NodeOptions.MaxSubscriptionsPerSite"/>.</summary>
    public MailboxNotifier(IEnvelopeStore store, NodeOptions options)
    {
        ArgumentNullException.ThrowIfNull(store);
        ArgumentNullException.ThrowIfNull(options);
        _maxTotal = options.MaxSubscriptions;
        _maxPerSite = options.MaxSubscriptionsPerSite;
        store.MailArrived += OnMail;
    }

    /// <summary>Live subscriptions one mailbox may hold: an owner's few devices, not a way to pin node resources.</summary>
    public const int MaxPerAddress = 16;

    /// <summary>Past <see cref="NodeOptions.MaxSubscriptions"/>, sites with fewer live subscriptions than this still
    /// get in, up to a tenth more: the few sites that filled the cap do not lock every other owner out (taking the
    /// reserve as well needs a tenth of the cap over this many more sites), as the nonce reserve of mailbox auth does.</summary>
    internal const int LightSiteSubscriptions = 8;

    /// <summary>The retry hint of a Subscribe refused for a cap: about when a subscription whose connection died is
    /// let go (HTTP/2 keepalive pings, NodeHost); live ones end within SubscriptionLifetimeSeconds.</summary>
    public const int SubscriptionsFullRetryMs = 30_000;

    /// <summary>Registers a subscription for <paramref name="address"/> from <paramref name="source"/> (the client's
    /// address, when known), or throws RESOURCE_EXHAUSTED with <c>retry-after-ms</c> when the mailbox has
    /// <see cref="MaxPerAddress"/> already, the source's site its <see cref="NodeOptions.MaxSubscriptionsPerSite"/>, or
    /// the node its <see cref="NodeOptions.MaxSubscriptions"/> (and the site is not a light one).</summary>
    public Subscription Subscribe(byte[] address, ClientAddress? source = null)
    {
        var key = Key256.From(address);
        ClientAddress? site = source?.Site; // by /48 for IPv6: hopping /64s must not multiply the cap
        var subscription = new Subscription(this, key, site);
        lock (_subscribers)
        {
            // Every refusal before anything is added: a call turned away leaves no entry behind.
            if (_subscribers.TryGetValue(key, out List<Subscription>? list) && list.Count >= MaxPerAddress)
            {
                // With a hint: a subscription whose connection died without a word (a phone that changed networks)
                // holds its slot until the node's keepalive ping finds the connection dead, and a listen that subscribes
                // again meanwhile waits for that instead of giving up.
                throw Full($"This mailbox has {MaxPerAddress} live subscriptions already, the most a node keeps; close one (or fetch instead). " +
                    "A subscription whose connection died is let go within about a minute; retry after retry-after-ms.");
            }

            int fromSite = site is { } s ? _bySite.GetValueOrDefault(s) : 0;
            if (site is not null && fromSite >= _maxPerSite)
            {
                throw Full($"This network address (its site: an IPv4 address, or an IPv6 /48) holds {fromSite:N0} live subscriptions, the most this node keeps for one " +
                    "(MaxSubscriptionsPerSite); close some (or fetch instead) and retry after retry-after-ms. Many clients behind one address (a carrier NAT) need the node's operator to raise it.");
            }

            if (_subscriberCount >= _maxTotal + (fromSite < LightSiteSubscriptions ? _maxTotal / 10 : 0))
            {
                throw Full($"The node holds {_subscriberCount:N0} live subscriptions, the most it keeps (MaxSubscriptions); fetch instead, use another node, " +
                    "or subscribe again after retry-after-ms (subscriptions end within the node's SubscriptionLifetimeSeconds).");
            }

            if (list is null)
            {
                _subscribers[key] = list = [];
            }

            list.Add(subscription);
            if (site is { } counted)
            {
                _bySite[counted] = fromSite + 1;
            }

            Volatile.Write(ref _subscriberCount, _subscriberCount + 1);
        }

        return subscription;
    }

    private static RpcException Full(string message) =>
        new(new Status(StatusCode.ResourceExhausted, message), NodeRefusals.Trailers(SubscriptionsFullRetryMs, 0));

    /// <summary>Live subscriptions from <paramref name="site"/> (an IPv4 address, or an IPv6 /48).</summary>
    internal int CountBySite(ClientAddress site)
    {
        lock (_subscribers)
        {
            return _bySite.GetValueOrDefault(site.Site);
        }
    }

    /// <summary>Live subscriptions in all.</summary>
    internal int Total => Volatile.Read(ref _subscriberCount);

    /// <summary>Live subscriptions of <paramref name="address"/>.</summary>
    internal int Count(byte[] address)
    {
        lock (_subscribers)
        {
            return _subscribers.TryGetValue(Key256.From(address), out List<Subscription>? list) ? list.Count : 0;
        }
    }

    // Subscriptions parked in WaitAsync: a test waits for this to know a stream has drained its mailbox, so that mail
    // sent then can reach it only by a push.
    private int _waiting;

    /// <summary>Subscriptions waiting for a signal or their keepalive, each past its drain of the mailbox.</summary>
    internal int Waiting => Volatile.Read(ref _waiting);

    /// <summary>Addresses with at least one subscriber.</summary>
    internal int Addresses
    {
        get
        {
            lock (_subscribers)
            {
                return _subscribers.Count;
            }
        }
    }

    /// <summary>Wakes the subscriptions of <paramref name="address"/> (the store's <see cref="IEnvelopeStore.MailArrived"/>;
    /// tests call it to wake them without mail).</summary>
    internal void OnMail(ReadOnlyMemory<byte> address, ulong seq)
    {
        if (Volatile.Read(ref _subscriberCount) == 0)
        {
            return;
        }

        var key = Key256.From(address.Span);
        lock (_subscribers)
        {
            if (_subscribers.TryGetValue(key, out List<Subscription>? list))
            {
                foreach (Subscription s in list)
                {
                    s.Signal();
                }
            }
        }
    }

    private void Remove(Subscription subscription, Key256 key, ClientAddress? site)
    {
        lock (_subscribers)
        {
            if (_subscribers.TryGetValue(key, out List<Subscription>? list) && list.Remove(subscription))
            {
                Volatile.Write(ref _subscriberCount, _subscriberCount - 1);
                if (list.Count == 0)
                {
                    _subscribers.Remove(key);
                }

                if (site is { } s && --System.Runtime.InteropServices.CollectionsMarshal.GetValueRefOrNullRef(_bySite, s) == 0)
                {
                    _bySite.Remove(s);
                }
            }
        }
    }

    /// <summary>One Subscribe stream's registration: signalled when mail for its address commits; dispose to unregister.</summary>
    public sealed class Subscription : IDisposable
    {
        private readonly SemaphoreSlim _signal = new(0, 1);
        private readonly MailboxNotifier _owner;
        private readonly Key256 _key;
        private readonly ClientAddress? _site;

        internal Subscription(MailboxNotifier owner, Key256 key, ClientAddress? site)
        {
            _owner = owner;
            _key = key;
            _site = site;
        }

        /// <summary>Called under the owner's lock only, so nothing else releases between the check and the release
        /// (waiters only take), and the semaphore is never found full: a burst of mail for one mailbox cost a thrown
        /// and caught SemaphoreFullException per envelope. Already signalled: one wake-up drains everything.</summary>
        internal void Signal()
        {
            if (_signal.CurrentCount == 0)
            {
                _signal.Release();
            }
        }

        /// <summary>True when signalled, false on timeout.</summary>
        public async Task<bool> WaitAsync(TimeSpan timeout, CancellationToken cancellationToken)
        {
            Interlocked.Increment(ref _owner._waiting);
            try
            {
                return await _signal.WaitAsync(timeout, cancellationToken).ConfigureAwait(false);
            }
            finally
            {
                Interlocked.Decrement(ref _owner._waiting);
            }
        }

        /// <inheritdoc />
        public void Dispose() =>
            // The semaphore is not disposed: nothing signals it after the removal, but a WaitAsync may still be
            // unwinding, and a SemaphoreSlim without a wait handle holds nothing to release.
            _owner.Remove(this, _key, _site);
    }
}
