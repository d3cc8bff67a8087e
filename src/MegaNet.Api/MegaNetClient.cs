using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Core.Interceptors;
using Grpc.Net.Client;
using MegaNet.Api.V1;
using MegaNet.Core.Transparency;

namespace MegaNet.Api;

/// <summary>A message opened by its recipient.</summary>
/// <param name="Seq">Mailbox sequence number (the cursor).</param>
/// <param name="EnvelopeId">The envelope id (hex in JSON output).</param>
/// <param name="Sender">The sender's contact card, from inside the sealed payload.</param>
/// <param name="Content">What was sent.</param>
/// <param name="LogIndex">The envelope's leaf in the node's transparency log.</param>
/// <param name="Old">Checked against a <see cref="SeenMessages"/>: sent longer ago than its window (or dated more than a
/// day ahead), so it may be a replay of a message received and forgotten since, or the sender's clock is wrong. Shown,
/// but worth marking.</param>
public sealed record ReceivedMessage(ulong Seq, byte[] EnvelopeId, ContactCard Sender, SealedContent Content, long LogIndex, bool Old = false);

/// <summary>Mail that is not shown: it does not open (not sealed to this identity, altered, malformed inside, or with
/// a content signature that does not verify), or, with a <see cref="SeenMessages"/>, it is a copy of a message already
/// received. Anyone can seal junk to an address and a relay can replay what it saw (neither can look inside), so such
/// items are reported and skipped, never allowed to stop the rest of the mailbox; acknowledge them to delete them.</summary>
/// <param name="Seq">Mailbox sequence number.</param>
/// <param name="EnvelopeId">The envelope id.</param>
/// <param name="Reason">Why it is not shown.</param>
public sealed record UnreadableMessage(ulong Seq, byte[] EnvelopeId, string Reason);

/// <summary>A mailbox entry the node could not deliver because its store no longer reads it back: it answered
/// <c>DATA_LOSS</c> naming it (<see cref="MegaNetClient.DamagedSeqTrailer"/>). The entry stays on the node, and comes
/// again once its operator restores the store; acknowledging it would delete it for good.</summary>
/// <param name="Seq">Its mailbox sequence number.</param>
/// <param name="Error">The node's answer (its status detail is the node's text: escape it before printing it).</param>
public sealed record DamagedMail(ulong Seq, RpcException Error);

/// <summary>One page of a mailbox.</summary>
/// <param name="Messages">The messages that opened, in sequence order.</param>
/// <param name="Unreadable">The items that did not (see <see cref="UnreadableMessage"/>).</param>
/// <param name="NextCursor">The cursor for the next page; the page was the last when it did not move.</param>
public sealed record FetchResult(IReadOnlyList<ReceivedMessage> Messages, IReadOnlyList<UnreadableMessage> Unreadable, ulong NextCursor)
{
    /// <summary>Envelopes waiting in the whole mailbox when the page was read, as the node's count quota counts them
    /// (<c>Status.limits.mailbox_max_count</c>).</summary>
    public int WaitingCount { get; init; }

    /// <summary>Their bytes, as the byte quota counts them (<c>Status.limits.mailbox_max_bytes</c>).</summary>
    public long WaitingBytes { get; init; }

    /// <summary>(Messages, NextCursor), for callers that only read.</summary>
    public void Deconstruct(out IReadOnlyList<ReceivedMessage> messages, out ulong nextCursor)
    {
        messages = Messages;
        nextCursor = NextCursor;
    }
}

/// <summary>Settings of a <see cref="MegaNetClient"/>.</summary>
public sealed class MegaNetClientOptions
{
    /// <summary>The deadline each unary call gets when the caller gives it none (the calls on
    /// <see cref="MegaNetClient.Relay"/> included; each call of a method that makes several gets its own): a node that
    /// never answers then fails the call with <c>DEADLINE_EXCEEDED</c> instead of leaving it waiting forever. Streaming
    /// calls (<c>Subscribe</c>, <c>SubmitStream</c>) get none. A call made with a deadline of its own keeps it
    /// (<see cref="DateTime.MaxValue"/>: none). Null: no default. Default 30 s.</summary>
    public TimeSpan? DefaultDeadline { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>What the message of an expired default deadline names as the setting to raise: this class's
    /// <see cref="DefaultDeadline"/> for a library caller; a command-line client names its own option.</summary>
    public string DeadlineSettingName { get; init; } = "MegaNetClientOptions.DefaultDeadline";

    /// <summary>The most proof-of-work bits <see cref="MegaNetClient.SendAsync"/> computes when the node demands a
    /// stamp (about 2^bits hashes: 24 take seconds to a minute); a node that demands more is refused with
    /// <see cref="PowDemandTooHighException"/>. Nodes demand at most 16 by default. 0 to 32; default 24.</summary>
    public int MaxPowBits { get; init; } = 24;

    /// <summary>Interceptors every call goes through (logging, metrics, headers, retries), the first outermost; the
    /// default deadline is set inside them, so one that sets a deadline wins.</summary>
    public IReadOnlyList<Interceptor> Interceptors { get; init; } = [];

    /// <summary>Asked, on first contact (no node id expected), about the id the node shows, before anything is signed
    /// for it: a text refuses it (<see cref="FirstContactRefusedException"/> with that text), null accepts it. A client
    /// that pins ids per address refuses one pinned under another address, so a node cannot collect signatures for a
    /// node it impersonates. Default: none.</summary>
    public Func<byte[], string?>? FirstContactCheck { get => _firstContactCheck; init => _firstContactCheck = value; }

    /// <summary>For an <c>https://</c> node whose certificate this system's certificate authorities do not vouch for (a
    /// self-signed one, as a node at home would have): exactly this certificate is accepted too, compared by its
    /// SHA-256 fingerprint, whatever name or dates it carries (the node's operator hands it out, as they hand out the
    /// node id). Certificates the system accepts stay accepted. Default: none.</summary>
    public X509Certificate2? TrustedCertificate { get; init; }

    /// <summary>The most HTTP/2 connections the client opens to the node. A MegaNet node's connection carries 100 calls
    /// at once; the client opens a second connection only when every open one is full, and once it has this many, a
    /// call waits for a free stream instead of opening another connection, which a node refuses beyond its
    /// <c>MaxConnectionsPerAddress</c> (256 by default; before this cap a client whose calls piled up against a busy
    /// node opened connection after connection until the node refused them). 1 or more; default 16 (1,600 calls at
    /// once).</summary>
    public int MaxConnections { get; init; } = 16;

    private Func<byte[], string?>? _firstContactCheck;

    /// <summary>These settings with <paramref name="check"/> as <see cref="FirstContactCheck"/>.</summary>
    public MegaNetClientOptions WithFirstContactCheck(Func<byte[], string?> check)
    {
        var copy = (MegaNetClientOptions)MemberwiseClone();
        copy._firstContactCheck = check;
        return copy;
    }
}

/// <summary>
/// The client library thin clients use: seals and submits envelopes, authenticates to its mailbox with a signed
/// challenge, fetches, listens and acknowledges, and checks receipts against the node's transparency log.
/// </summary>
/// <remarks>
/// <para>Thread-safe: one client can serve any number of concurrent calls from many tasks (it multiplexes them over
/// HTTP/2 connections); make one per node and keep it. Dispose it once its calls are done: calls still open then fail.</para>
/// <para>Every unary call has a deadline (<see cref="MegaNetClientOptions.DefaultDeadline"/>, 30 s unless set) and
/// every method takes a cancellation token. Refusals by the node arrive as <see cref="RpcException"/> with the node's
/// status and a message that says why; <see cref="NodeRefusals.RetryAfter"/> and
/// <see cref="NodeRefusals.RequiredPowBits"/> with <see cref="NodeRefusals.RequiredPowSeed"/> read the waits and stamps they ask for; a call the node did not take
/// because it was closing the connection (stopping, restarting) ends <see cref="StatusCode.Unavailable"/>. A cancelled token ends a call
/// with <see cref="RpcException"/> (<see cref="StatusCode.Cancelled"/>), as gRPC does, and the proof of work of
/// <see cref="SendAsync"/> with <see cref="OperationCanceledException"/>.</para>
/// </remarks>
public sealed class MegaNetClient : IDisposable
{
    private readonly ConnectionPool _connections;
    private readonly int _maxPowBits;
    private byte[]? _nodeId;
    private byte[]? _confirmedNodeId;
    private readonly Func<byte[], string?>? _firstContactCheck;

    /// <summary>Connects to a node at <paramref name="address"/> (e.g. http://127.0.0.1:7700).</summary>
    /// <param name="address">The node's gRPC address.</param>
    /// <param name="nodeId">The node id (32-byte Ed25519 public key) to sign mailbox challenges for. Without it the
    /// client trusts the id the node shows at the first challenge and holds every later one to it.</param>
    /// <param name="localAddress">The local address to connect from (a multi-homed host, or a test that plays a
    /// second client on 127.0.0.2); default: the one the operating system picks.</param>
    /// <param name="options">Deadline, proof-of-work limit and interceptors; default: <see cref="MegaNetClientOptions"/>'s.</param>
    public MegaNetClient(Uri address, byte[]? nodeId = null, IPAddress? localAddress = null, MegaNetClientOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(address);
        if (nodeId is not null && nodeId.Length != 32)
        {
            throw new ArgumentException("A node id is 32 bytes.", nameof(nodeId));
        }

        options ??= new MegaNetClientOptions();
        _firstContactCheck = options.FirstContactCheck;
        if (options.DefaultDeadline is { } d && d <= TimeSpan.Zero)
        {
            throw new ArgumentOutOfRangeException(nameof(options), d, "The default deadline must be positive, or null for none.");
        }

        if (options.MaxPowBits is < 0 or > 32)
        {
            throw new ArgumentOutOfRangeException(nameof(options), options.MaxPowBits, "MaxPowBits must be 0 to 32.");
        }

        if (options.MaxConnections < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(options), options.MaxConnections, "MaxConnections must be 1 or more.");
        }

        ArgumentNullException.ThrowIfNull(options.Interceptors, nameof(options.Interceptors));
        _maxPowBits = options.MaxPowBits;
        _nodeId = nodeId?.ToArray();
        byte[]? fingerprint = options.TrustedCertificate?.GetCertHash(HashAlgorithmName.SHA256);
        _connections = new ConnectionPool(() => GrpcChannel.ForAddress(address,
            new GrpcChannelOptions { MaxReceiveMessageSize = 64 << 20, HttpHandler = Handler(fingerprint, localAddress), DisposeHttpClient = true }),
            options.MaxConnections);
        // The first interceptor in the list is the outermost: the caller's run outside the default deadline's, and
        // both see a graceful close by the node as UNAVAILABLE.
        Interceptor[] interceptors = options.DefaultDeadline is { } deadline
            ? [.. options.Interceptors, new DefaultDeadlineInterceptor(deadline, options.DeadlineSettingName), new GracefulCloseInterceptor()]
            : [.. options.Interceptors, new GracefulCloseInterceptor()];
        CallInvoker = _connections.Intercept(interceptors);
        Relay = new Relay.RelayClient(CallInvoker);
    }

    /// <summary>The handler of one of the client's connections (<see cref="ConnectionPool"/> opens each).</summary>
    private static SocketsHttpHandler Handler(byte[]? trustedFingerprint, IPAddress? localAddress)
    {
        var handler = new SocketsHttpHandler
        {
            // One connection per handler: calls beyond its streams wait for one; the pool opens more (up to MaxConnections).
            EnableMultipleHttp2Connections = false,
            // HTTP/2 pings while a call is open: a connection whose peer went away without a FIN or RST (a laptop
            // that slept, a NAT that dropped the mapping) fails the call instead of leaving it waiting forever.
            KeepAlivePingDelay = KeepAlivePingDelay,
            KeepAlivePingTimeout = KeepAlivePingTimeout,
            KeepAlivePingPolicy = HttpKeepAlivePingPolicy.WithActiveRequests,
            // The default waits as long as the operating system (minutes, for a host that drops the SYNs).
            ConnectTimeout = TimeSpan.FromSeconds(15),
        };
        if (trustedFingerprint is { } fingerprint)
        {
            handler.SslOptions.RemoteCertificateValidationCallback = (_, certificate, _, errors) =>
                errors == System.Net.Security.SslPolicyErrors.None
                || (certificate is not null && certificate.GetCertHash(HashAlgorithmName.SHA256).AsSpan().SequenceEqual(fingerprint));
        }

        if (localAddress is not null)
        {
            handler.ConnectCallback = async (context, ct) =>
            {
                var socket = new Socket(localAddress.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
                try
                {
                    socket.Bind(new IPEndPoint(localAddress, 0));
                    await socket.ConnectAsync(context.DnsEndPoint, ct).ConfigureAwait(false);
                    return new NetworkStream(socket, ownsSocket: true);
                }
                catch
                {
                    socket.Dispose();
                    throw;
                }
            };
        }

        return handler;
    }

    /// <summary>How long a connection with an open call may be silent before the client pings the node.</summary>
    public static readonly TimeSpan KeepAlivePingDelay = TimeSpan.FromSeconds(30);

    /// <summary>How long the client waits for the node to answer a ping before the connection counts as dead.</summary>
    public static readonly TimeSpan KeepAlivePingTimeout = TimeSpan.FromSeconds(20);

    /// <summary>What <see cref="Relay"/> calls through (the client's connections, interceptors and default deadline), for
    /// calls with marshallers of one's own, such as requests encoded ahead of time.</summary>
    public CallInvoker CallInvoker { get; }

    /// <summary>The generated client, for the calls this class does not wrap (<c>Submit</c>, <c>SubmitStream</c>,
    /// <c>SubmitBatchStream</c> beyond <see cref="SubmitBatchesAsync"/>, <c>VerifyBatch</c>, <c>Status</c>, the log's
    /// proofs). Its calls go through the client's interceptors and get its default deadline.</summary>
    public Relay.RelayClient Relay { get; }

    /// <summary>Seals <paramref name="content"/> to <paramref name="recipient"/>, stamps it if the node asks for proof
    /// of work, and submits it; it expires after <paramref name="ttl"/>, by default 7 days (or just under the node's
    /// maximum TTL, when that is shorter). The stamp is made for the seed the node's <c>Status</c> gives; a node that raises
    /// its demand meanwhile, or no longer takes that seed (it turns every 10 minutes and at a restart), refuses the stamp
    /// with <c>FAILED_PRECONDITION</c>, the bits it wants and its seed: the envelope is stamped again for that seed and
    /// resubmitted (twice at most).</summary>
    /// <returns>The node's receipt, checked to name the envelope sent; its tree head and inclusion are not checked
    /// here: <see cref="VerifyReceiptAsync"/> does that.</returns>
    /// <exception cref="PowDemandTooHighException">The node demands more proof of work than
    /// <see cref="MegaNetClientOptions.MaxPowBits"/>.</exception>
    /// <exception cref="RpcException">The node refused the envelope (<see cref="NodeRefusals.RetryAfter"/> says when
    /// to retry a <c>RESOURCE_EXHAUSTED</c>), or could not be reached in time: a submit that got no answer is made
    /// again with the same envelope, twice at most, so a node that stored it answers with the original receipt; the node's
    /// <c>Status</c>, asked first, is asked again the same way.</exception>
    /// <exception cref="SendInterruptedException"><paramref name="cancellationToken"/> was cancelled while a submit was
    /// in flight or after one got no answer: it names the envelope the node may have stored.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled before any submit
    /// of the envelope was started, or after the node refused it: the message was not sent (an
    /// <see cref="RpcException"/> with <see cref="StatusCode.Cancelled"/> when that was during the node's status call).</exception>
    public async Task<Receipt> SendAsync(Identity sender, ContactCard recipient, byte[] content, string contentType, string? fileName = null,
        TimeSpan? ttl = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(sender);
        ArgumentNullException.ThrowIfNull(recipient);
        ArgumentNullException.ThrowIfNull(content);
        ArgumentNullException.ThrowIfNull(contentType);
        Envelope envelope = await SealAndStampAsync(sender, recipient, content, contentType, fileName, ttl, cancellationToken).ConfigureAwait(false);
        return await SubmitCheckedAsync(sender, envelope, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Seals <paramref name="content"/> with the expiry and the stamp the node's <c>Status</c> asks for now.</summary>
    private async Task<Envelope> SealAndStampAsync(Identity sender, ContactCard recipient, byte[] content, string contentType, string? fileName,
        TimeSpan? ttl, CancellationToken cancellationToken)
    {
        StatusResponse status = await StatusBeforeSealingAsync(cancellationToken).ConfigureAwait(false);
        if (ttl is { } wanted && status.Limits is { MaxTtlSeconds: > 0 } limits && wanted > TimeSpan.FromSeconds(limits.MaxTtlSeconds))
        {
            // Said before sealing and stamping: the node refuses the expiry after the work, in the words of its protocol.
            throw new TtlBeyondNodeMaximumException(wanted, TimeSpan.FromSeconds(limits.MaxTtlSeconds));
        }

        int bits = PowBitsToSolve(status.PowBitsRequired);
        DateTimeOffset expires = DateTimeOffset.UtcNow + (ttl ?? DefaultTtl(status.Limits));
        Envelope envelope = EnvelopeFormat.Seal(sender, recipient, content, contentType, fileName, expires);
        if (bits > 0)
        {
            await StampAsync(sender, envelope, NodePowSeed(status), bits, cancellationToken).ConfigureAwait(false);
        }

        return envelope;
    }

    /// <summary>The node's <c>Status</c>, asked again after 1 and 2 s (as a submit is) when it got no answer or the node
    /// was unavailable: a node restarting for a second or two failed the send at once, before anything was sealed. It
    /// stores nothing, so asking again is always safe.</summary>
    private async Task<StatusResponse> StatusBeforeSealingAsync(CancellationToken cancellationToken)
    {
        for (int tries = 0; ; tries++)
        {
            try
            {
                return await Relay.StatusAsync(new StatusRequest(), cancellationToken: cancellationToken).ResponseAsync.ConfigureAwait(false);
            }
            catch (RpcException e) when (e.StatusCode is StatusCode.Unavailable or StatusCode.DeadlineExceeded
                && tries < MaxResubmits && !cancellationToken.IsCancellationRequested)
            {
                await Task.Delay(TimeSpan.FromSeconds(tries + 1), cancellationToken).ConfigureAwait(false);
            }
        }
    }

    /// <summary>Submits of one envelope made again, at most, when an answer may have been lost (see
    /// <see cref="SubmitCheckedAsync"/>).</summary>
    private const int MaxResubmits = 2;

    /// <summary>Submits <paramref name="envelope"/>, stamping it again when the node asks for more work (twice at
    /// most), and checks that the receipt names it. When no answer came (the deadline passed, the connection broke,
    /// the node was unavailable) the same envelope is submitted again, twice at most, after 1 and 2 s: the node may
    /// have stored it, and the same envelope again gets the original receipt (its <see cref="Receipt.Duplicate"/> is
    /// then cleared: this client sent it once), where a caller sending the message again would seal a second copy
    /// that neither the node nor the recipient could tell from the first. Once a submit went unanswered the envelope is
    /// never stamped again: a new stamp is a new envelope, and the first may still be stored.</summary>
    /// <exception cref="RpcException">As the node's last answer; after a submit that went unanswered, its message says
    /// which envelope the node may have stored.</exception>
    /// <param name="sender">Whose sending key signs the envelope again after a new stamp.</param>
    /// <param name="envelope">The envelope, sealed and stamped.</param>
    /// <param name="cancellationToken">Ends the submits and the waits between them.</param>
    /// <param name="history">What happened to this envelope in earlier calls (a file's part submitted again after a
    /// retry hint): an unanswered submit then still forbids a new stamp.</param>
    private async Task<Receipt> SubmitCheckedAsync(Identity sender, Envelope envelope, CancellationToken cancellationToken, SubmitHistory? history = null)
    {
        history ??= new SubmitHistory();
        Receipt receipt;
        int restamps = 0, resubmits = 0;
        try
        {
            while (true)
            {
                // Cancelled before this submit left (Ctrl+C while the envelope was sealed or stamped): this try stored
                // nothing, and is not counted as unanswered, so a send no earlier submit of which went unanswered is
                // told as not sent rather than as possibly stored. Cancelled once the call is under way, it may have.
                cancellationToken.ThrowIfCancellationRequested();
                try
                {
                    receipt = await Relay.SubmitAsync(new SubmitRequest { Envelope = envelope }, cancellationToken: cancellationToken).ResponseAsync.ConfigureAwait(false);
                    break;
                }
                catch (RpcException e) when (e.StatusCode == StatusCode.FailedPrecondition && restamps < 2 && !history.Unanswered
                    && e.RequiredPowBits() is { } demanded && e.RequiredPowSeed() is { } seed && EnvelopeFormat.StampBits(envelope, seed) < demanded)
                {
                    // More bits than the stamp has, or a stamp made for a seed the node no longer takes (it changes
                    // every 10 minutes and at a restart): stamped again for the seed the refusal names.
                    restamps++;
                    await StampAsync(sender, envelope, seed, PowBitsToSolve((uint)demanded), cancellationToken).ConfigureAwait(false);
                }
                catch (Exception e) when (cancellationToken.IsCancellationRequested && e is OperationCanceledException or RpcException { StatusCode: StatusCode.Cancelled })
                {
                    // Cancelled (Ctrl+C) while the submit was in flight: the node may have queued it already, and a
                    // submission the node has queued is not withdrawn when its call is cancelled.
                    history.Unanswered = true;
                    throw;
                }
                catch (RpcException e)
                {
                    if (e.StatusCode is StatusCode.DeadlineExceeded or StatusCode.Unavailable)
                    {
                        // Only a deadline or a broken connection (the transport's own error) may have hidden a receipt; the
                        // node's own UNAVAILABLE says nothing was stored, and so does a call that never left (a refused
                        // connection) or that the node closed unprocessed (an HTTP/2 graceful close). Told before the
                        // budget is looked at: the last submit timing out after two that never left said nothing of a
                        // possible copy, and the caller sealed the message again.
                        history.Unanswered |= e.StatusCode == StatusCode.DeadlineExceeded || (e.Status.DebugException is not null && !NeverProcessed(e.Status));
                        if (resubmits < MaxResubmits && !cancellationToken.IsCancellationRequested)
                        {
                            // No answer, or a node that is going down or cannot store: the same envelope again costs nothing.
                            history.Resubmitted = true;
                            resubmits++;
                            await Task.Delay(TimeSpan.FromSeconds(resubmits), cancellationToken).ConfigureAwait(false);
                            continue;
                        }
                    }

                    if (!history.Unanswered)
                    {
                        throw;
                    }

                    throw new RpcException(new Status(e.StatusCode,
                        $"{e.Status.Detail} (A submit of this message got no answer: the node may have stored it as envelope " +
                        $"{Convert.ToHexStringLower(EnvelopeFormat.EnvelopeId(envelope))}, so sending it again may deliver it twice.)", e.Status.DebugException), e.Trailers);
                }
            }
        }
        catch (Exception e) when (history.Unanswered && cancellationToken.IsCancellationRequested && e is OperationCanceledException or RpcException)
        {
            // Ctrl+C during a submit, or after one that got no answer: "interrupted", and which envelope the node may have
            // stored. Any RpcException once cancelled: Ctrl+C just as a submit came back unanswered skipped the resubmit
            // and ended in that submit's deadline error, told as a failure (exit 2), not as the interruption it was.
            throw new SendInterruptedException(EnvelopeFormat.EnvelopeId(envelope), e, cancellationToken);
        }

        if (history.Resubmitted && receipt.Duplicate)
        {
            // The node had it from this client's own unanswered submit, not from an earlier send.
            receipt.Duplicate = false;
        }

        byte[] id = EnvelopeFormat.EnvelopeId(envelope);
        if (!receipt.EnvelopeId.Span.SequenceEqual(id))
        {
            throw new NodeMisbehavedException(
                $"The node's receipt names envelope {Convert.ToHexStringLower(receipt.EnvelopeId.Span)}, not the one sent ({Convert.ToHexStringLower(id)}). " +
                "The node is faulty, or older than the envelope-id rule of docs/protocol.md (changed 2026-11-28): do not count this as delivered.");
        }

        return receipt;
    }

    /// <summary>What became of one envelope's submits across calls of <see cref="SubmitCheckedAsync"/>.</summary>
    private sealed class SubmitHistory
    {
        /// <summary>A submit got no answer: the node may have stored the envelope.</summary>
        public bool Unanswered;

        /// <summary>The envelope was submitted more than once: a duplicate receipt is of this client's own submit.</summary>
        public bool Resubmitted;
    }

    /// <summary>True when the call never reached the node's handler: the connection was refused, or the node closed it
    /// gracefully before processing the call (<see cref="GracefulCloseInterceptor"/>).</summary>
    private static bool NeverProcessed(Status status) => GracefulCloseInterceptor.HasCause(status, static e =>
        e is System.Net.Sockets.SocketException { SocketErrorCode: System.Net.Sockets.SocketError.ConnectionRefused } || GracefulCloseInterceptor.IsHttp2NoError(e));

    /// <summary>Parts <c>SendFileInPartsAsync</c> has in flight at once.</summary>
    private const int PartsInFlight = 4;

    /// <summary>The longest retry hint <c>SendFileInPartsAsync</c> waits out: a sending key's token bucket or a
    /// full admission queue asks for milliseconds; a full mailbox or store asks for a minute, and is no wait for a person
    /// watching a send.</summary>
    private static readonly TimeSpan MaxPartRetryHint = TimeSpan.FromSeconds(5);

    /// <summary>How long <c>SendFileInPartsAsync</c> tries in all to send one part the node keeps putting off.</summary>
    private static readonly TimeSpan MaxPartRetryWait = TimeSpan.FromMinutes(2);

    /// <summary>Tries <c>SendFileInPartsAsync</c> makes at most to send one part.</summary>
    private const int MaxPartAttempts = 200;

    /// <summary>
    /// Sends a file too large for one envelope as <see cref="FileParts"/>: each part sealed, stamped and submitted as
    /// <see cref="SendAsync"/> does, four at a time, and a part the node puts off for a moment (<c>RESOURCE_EXHAUSTED</c>
    /// with a retry hint of at most 5 s: the sending key's token bucket runs dry after its burst) sent again after that
    /// wait, for up to 2 minutes and 200 tries. <paramref name="progress"/> hears how many parts the node has accepted so
    /// far, from several threads at once, so counts may arrive out of order.
    /// </summary>
    /// <returns>Each part's receipt, in part order.</returns>
    /// <exception cref="ArgumentNullException">A required argument is null.</exception>
    /// <exception cref="ArgumentException">The file is too large for <see cref="FileParts"/>.</exception>
    /// <exception cref="RpcException">The node refused a part, or could not be reached: the parts accepted before it
    /// stay in the mailbox, but the recipient cannot put the file together without the rest (send it again).</exception>
    public Task<IReadOnlyList<Receipt>> SendFileInPartsAsync(Identity sender, ContactCard recipient, byte[] file, string fileName, TimeSpan? ttl = null,
        IProgress<int>? progress = null, CancellationToken cancellationToken = default) =>
        SendFileInPartsAsync(sender, recipient, file, fileName, journal: null, ttl, progress, cancellationToken);

    /// <summary>
    /// As <see cref="SendFileInPartsAsync(Identity, ContactCard, byte[], string, TimeSpan?, IProgress{int}?, CancellationToken)"/>,
    /// continuing an earlier try at the same file to the same recipient through the same node that <paramref name="journal"/>
    /// kept: a part it holds a receipt for is not sent (its receipt is returned, and <paramref name="progress"/> counts
    /// from those parts on), a part whose earlier envelope got no answer is submitted as that same envelope (a node that
    /// stored it answers with its original receipt, so the recipient gets no second copy), and each part accepted now,
    /// or left unanswered when this try stops, is told to the journal.
    /// </summary>
    /// <param name="sender">Who sends the file.</param>
    /// <param name="recipient">To whom.</param>
    /// <param name="file">The whole file.</param>
    /// <param name="fileName">Its name, which goes with every part.</param>
    /// <param name="journal">The earlier try and the record of this one; null: none.</param>
    /// <param name="ttl">How long the parts sealed now are kept (parts from the journal keep their own expiry).</param>
    /// <param name="progress">Hears the number of parts accepted so far.</param>
    /// <param name="cancellationToken">Ends the send.</param>
    /// <returns>Each part's receipt, in part order (the journal's for the parts it held).</returns>
    /// <exception cref="ArgumentNullException">A required argument is null.</exception>
    /// <exception cref="ArgumentException">The file is too large for <see cref="FileParts"/>.</exception>
    /// <exception cref="RpcException">As the other overload.</exception>
    public async Task<IReadOnlyList<Receipt>> SendFileInPartsAsync(Identity sender, ContactCard recipient, byte[] file, string fileName, IFilePartsJournal? journal,
        TimeSpan? ttl = null, IProgress<int>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(file);
        IReadOnlyList<byte[]> parts = FileParts.Split(file, fileName);
        var receipts = new Receipt[parts.Count];
        var toSend = new List<int>(parts.Count);
        for (int index = 0; index < parts.Count; index++)
        {
            if (journal?.AcceptedEarlier(index) is { } earlier)
            {
                receipts[index] = earlier;
            }
            else
            {
                toSend.Add(index);
            }
        }

        int accepted = parts.Count - toSend.Count;
        var options = new ParallelOptions { MaxDegreeOfParallelism = PartsInFlight, CancellationToken = cancellationToken };
        // The first part that fails stops the send: no part starts after it, and it is thrown once the parts in flight
        // have their answers. The loop's own token is not used: it cancels the parts in flight as soon as one fails, and
        // a part the node had accepted then lost its receipt (a refusal of the fourth part could arrive first, so the
        // first three went down as unanswered, and the send claimed none accepted).
        System.Runtime.ExceptionServices.ExceptionDispatchInfo? failure = null;
        CancellationToken ct = cancellationToken;
        await Parallel.ForEachAsync(toSend, options, async (index, _) =>
        {
            if (Volatile.Read(ref failure) is not null)
            {
                return;
            }

            try
            {
                await SendPartAsync(index).ConfigureAwait(false);
            }
            catch (Exception e)
            {
                Interlocked.CompareExchange(ref failure, System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(e), null);
            }
        }).ConfigureAwait(false);
        failure?.Throw();
        return receipts;

        async Task SendPartAsync(int index)
        {
            // Sealed and stamped once: a part put off was not stored, so the same envelope is submitted again. Bounded by
            // the clock (any new stamp counts too), and by tries: a 1 ms hint is no reason for thousands of them.
            long started = System.Diagnostics.Stopwatch.GetTimestamp();
            // An envelope an earlier try left unanswered may be stored: it goes again as it is, as a resubmit within one
            // try does (never stamped anew, and a duplicate receipt is of this sender's own submit).
            Envelope? envelope = journal?.UnansweredEarlier(index);
            bool earlier = envelope is not null;
            var history = earlier ? new SubmitHistory { Unanswered = true, Resubmitted = true } : new SubmitHistory();
            envelope ??= await SealAndStampAsync(sender, recipient, parts[index], FileParts.ContentType, fileName, ttl, ct).ConfigureAwait(false);
            try
            {
                for (int attempt = 1; ; attempt++)
                {
                    try
                    {
                        receipts[index] = await SubmitCheckedAsync(sender, envelope, ct, history).ConfigureAwait(false);
                        break;
                    }
                    catch (RpcException e) when (e.StatusCode == StatusCode.ResourceExhausted && e.RetryAfter() is { } wait && wait <= MaxPartRetryHint
                        && attempt < MaxPartAttempts && System.Diagnostics.Stopwatch.GetElapsedTime(started) + wait <= MaxPartRetryWait)
                    {
                        history.Resubmitted = true;
                        await Task.Delay(wait, ct).ConfigureAwait(false);
                    }
                    catch (RpcException e) when (earlier && e.StatusCode is StatusCode.InvalidArgument or StatusCode.FailedPrecondition)
                    {
                        // The node looks an envelope up before it checks the stamp, and refuses an expired one even if it
                        // holds it: refused so, the earlier envelope is not stored (or no longer of use), and a new one is
                        // sealed with the stamp and expiry the node takes now. Once: the new one has no past.
                        earlier = false;
                        envelope = await SealAndStampAsync(sender, recipient, parts[index], FileParts.ContentType, fileName, ttl, ct).ConfigureAwait(false);
                        history = new SubmitHistory();
                    }
                }
            }
            catch (Exception e) when (journal is not null && (history.Unanswered || e is OperationCanceledException
                || e is RpcException { StatusCode: StatusCode.Cancelled or StatusCode.DeadlineExceeded or StatusCode.Unavailable }))
            {
                // Cancelled (Ctrl+C, or another part failed) or unanswered while the submit may have reached the node: the
                // next try submits this envelope again rather than a second copy. Submitting it again costs nothing if
                // it was never stored; a part the node refused outright is sealed anew next time.
                journal.Unanswered(index, envelope);
                throw;
            }

            // Recorded only now that the node answered with its receipt, and before the part counts as sent.
            journal?.Accepted(index, envelope, receipts[index]);
            progress?.Report(Interlocked.Increment(ref accepted));
        }
    }

    /// <summary>Most envelopes in one <c>SubmitBatchStream</c> request (<c>Status.limits.max_batch_envelopes</c>).</summary>
    public const int MaxBatchEnvelopes = 256;

    /// <summary>Most bytes <see cref="SubmitBatchesAsync"/> puts in one request: under the 257 KiB a node takes in a
    /// submit request (docs/protocol.md).</summary>
    public const int MaxBatchRequestBytes = 256 << 10;

    /// <summary>
    /// Submits sealed <paramref name="envelopes"/> in bulk on one <c>SubmitBatchStream</c> call: up to
    /// <paramref name="perRequest"/> envelopes a request (fewer where the next would take a request past
    /// <see cref="MaxBatchRequestBytes"/>), written while the answers are read, so the node's stream window keeps the
    /// pace. Yields one <see cref="SubmitResult"/> per envelope, in the order given: a receipt, or the refusal of that
    /// envelope alone (<c>status_code</c>, <c>error</c>, and <c>retry_after_ms</c>, or <c>pow_bits</c> and <c>pow_seed</c>,
    /// where a unary call's trailers would carry them).
    /// </summary>
    /// <exception cref="RpcException">The stream itself ended (the node is stopping, a request it could not take, the
    /// connection failed): the results yielded before it stand, the envelopes after them were not answered.</exception>
    /// <exception cref="NodeMisbehavedException">The node answered a request with another number of results than it
    /// had envelopes, gave a receipt naming another envelope than the one in its place, or ended the stream without
    /// answering every request: it is faulty, and what it answered from there on is not to be counted as delivered (the
    /// results yielded before stand).</exception>
    public async IAsyncEnumerable<SubmitResult> SubmitBatchesAsync(IEnumerable<Envelope> envelopes, int perRequest = 64,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(envelopes);
        ArgumentOutOfRangeException.ThrowIfLessThan(perRequest, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(perRequest, MaxBatchEnvelopes);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        using AsyncDuplexStreamingCall<SubmitBatchRequest, SubmitBatchResult> call = Relay.SubmitBatchStream(cancellationToken: stop.Token);
        // Each request, queued before it is written, so that every answer is checked against the envelopes it answers.
        var sent = new ConcurrentQueue<SubmitBatchRequest>();
        Task writing = Task.Run(() => WriteBatchesAsync(call.RequestStream, envelopes, perRequest, sent, stop), CancellationToken.None);
        try
        {
            await foreach (SubmitBatchResult answer in call.ResponseStream.ReadAllAsync(stop.Token).ConfigureAwait(false))
            {
                if (!sent.TryDequeue(out SubmitBatchRequest? request))
                {
                    throw new NodeMisbehavedException("The node sent an answer with no request waiting for one: it is faulty; do not count what it answers from here on as delivered.");
                }

                if (request.Envelopes.Count != answer.Results.Count)
                {
                    throw new NodeMisbehavedException(
                        $"The node answered a request of {request.Envelopes.Count} envelope(s) with {answer.Results.Count} result(s): it is faulty; do not count what it answers from here on as delivered.");
                }

                for (int i = 0; i < answer.Results.Count; i++)
                {
                    SubmitResult result = answer.Results[i];
                    if (result.Receipt is { } receipt && !receipt.EnvelopeId.Span.SequenceEqual(EnvelopeFormat.EnvelopeId(request.Envelopes[i])))
                    {
                        throw new NodeMisbehavedException(
                            $"The node's receipt names envelope {Convert.ToHexStringLower(receipt.EnvelopeId.Span)}, not the one in its place ({Convert.ToHexStringLower(EnvelopeFormat.EnvelopeId(request.Envelopes[i]))}): it is faulty; do not count this as delivered.");
                    }

                    yield return result;
                }
            }

            // A node ends the stream only once the client has ended its side: a request still queued was never answered.
            if (!sent.IsEmpty)
            {
                throw new NodeMisbehavedException($"The node ended the stream with {sent.Count} request(s) unanswered: their envelopes may or may not be stored.");
            }
        }
        finally
        {
            // Also when the caller stops early or the stream failed: the writer must not outlive the call.
            await stop.CancelAsync().ConfigureAwait(false);
            try
            {
                await writing.ConfigureAwait(false);
            }
            catch (Exception e) when (e is OperationCanceledException or RpcException or InvalidOperationException or IOException)
            {
                // A write the ended call refused: the reader's outcome is what the caller gets. (A failure of the
                // caller's own sequence is none of these, unless the sequence itself threw one: then the caller sees
                // the cancelled call.)
            }
        }
    }

    private static async Task WriteBatchesAsync(IClientStreamWriter<SubmitBatchRequest> requests, IEnumerable<Envelope> envelopes, int perRequest,
        ConcurrentQueue<SubmitBatchRequest> sent, CancellationTokenSource stop)
    {
        using IEnumerator<SubmitBatchRequest> cut = BatchRequests(envelopes, perRequest).GetEnumerator();
        while (true)
        {
            try
            {
                if (!cut.MoveNext())
                {
                    break;
                }
            }
            catch
            {
                // The caller's sequence failed (a null envelope, its own exception): end the call, so the reader stops
                // waiting for answers to requests that will never come, and let the caller see why.
                await stop.CancelAsync().ConfigureAwait(false);
                throw;
            }

            sent.Enqueue(cut.Current);
            await requests.WriteAsync(cut.Current, stop.Token).ConfigureAwait(false);
        }

        await requests.CompleteAsync().ConfigureAwait(false);
    }

    /// <summary>Cuts <paramref name="envelopes"/> into <c>SubmitBatchStream</c> requests, in order, lazily: up to
    /// <paramref name="perRequest"/> envelopes each, and fewer where the next would take a request past
    /// <see cref="MaxBatchRequestBytes"/> (an envelope larger than that goes alone).</summary>
    public static IEnumerable<SubmitBatchRequest> BatchRequests(IEnumerable<Envelope> envelopes, int perRequest)
    {
        ArgumentNullException.ThrowIfNull(envelopes);
        ArgumentOutOfRangeException.ThrowIfLessThan(perRequest, 1);
        return Cut(envelopes, perRequest);

        static IEnumerable<SubmitBatchRequest> Cut(IEnumerable<Envelope> envelopes, int perRequest)
        {
            var request = new SubmitBatchRequest();
            int bytes = 0;
            foreach (Envelope envelope in envelopes)
            {
                ArgumentNullException.ThrowIfNull(envelope, nameof(envelopes));
                int size = 1 + CodedOutputStream.ComputeMessageSize(envelope);
                if (request.Envelopes.Count == perRequest || (request.Envelopes.Count > 0 && bytes + size > MaxBatchRequestBytes))
                {
                    yield return request;
                    request = new SubmitBatchRequest();
                    bytes = 0;
                }

                request.Envelopes.Add(envelope);
                bytes += size;
            }

            if (request.Envelopes.Count > 0)
            {
                yield return request;
            }
        }
    }

    /// <summary>7 days, or less on a node whose maximum TTL is shorter (it refuses an expiry beyond it): a little less
    /// than that maximum, for clocks.</summary>
    internal static TimeSpan DefaultTtl(Limits? limits)
    {
        TimeSpan week = TimeSpan.FromDays(7);
        if (limits is not { MaxTtlSeconds: > 0 } || limits.MaxTtlSeconds >= (long)week.TotalSeconds + 300)
        {
            return week;
        }

        TimeSpan max = TimeSpan.FromSeconds(limits.MaxTtlSeconds);
        return max - TimeSpan.FromTicks(Math.Min(TimeSpan.FromMinutes(5).Ticks, max.Ticks / 10));
    }

    /// <summary>The seed a node's <c>Status</c> says stamps are made for now.</summary>
    /// <exception cref="NodeMisbehavedException">The node demands a stamp but gives no seed of
    /// <see cref="EnvelopeFormat.PowSeedLength"/> bytes.</exception>
    private static byte[] NodePowSeed(StatusResponse status) => status.PowSeed.Length == EnvelopeFormat.PowSeedLength
        ? status.PowSeed.ToByteArray()
        : throw new NodeMisbehavedException($"The node demands a proof-of-work stamp but its Status gives a seed of {status.PowSeed.Length} bytes, not {EnvelopeFormat.PowSeedLength}: it speaks another version of the protocol.");

    /// <summary>The proof of work to compute for a demand of <paramref name="demanded"/> bits.</summary>
    /// <exception cref="PowDemandTooHighException">More than <see cref="MegaNetClientOptions.MaxPowBits"/>.</exception>
    private int PowBitsToSolve(uint demanded) =>
        demanded <= (uint)_maxPowBits ? (int)demanded : throw new PowDemandTooHighException(demanded, _maxPowBits);

    /// <summary>Stamps and signs again off the caller's thread (seconds of CPU at 20 bits and more), cancellably.</summary>
    private static Task StampAsync(Identity sender, Envelope envelope, byte[] seed, int bits, CancellationToken cancellationToken) =>
        Task.Run(() => EnvelopeFormat.Stamp(sender, envelope, seed, bits, cancellationToken), cancellationToken);

    /// <summary>The node id this client signs mailbox challenges for: the one it was given, else the one the node
    /// showed at the first challenge (or, by <see cref="VerifyReceiptAsync"/> or <see cref="CheckLogAsync"/>, signs its
    /// log with); null before that.
    /// A copy.</summary>
    public byte[]? NodeId => Volatile.Read(ref _nodeId)?.ToArray();

    /// <summary>The node id the node at this address answered a challenge with, once that matched <see cref="NodeId"/>
    /// (or was the first); null while the node has not answered, or answered as another node. A given
    /// <see cref="NodeId"/> is only what the caller expects: this is what to pin. A copy.</summary>
    public byte[]? ConfirmedNodeId => Volatile.Read(ref _confirmedNodeId)?.ToArray();

    /// <summary>Signs a fresh challenge for <paramref name="identity"/>'s mailbox, good for one call of what
    /// <paramref name="purpose"/> names.</summary>
    /// <exception cref="NodeIdMismatchException">The challenge names another node than <see cref="NodeId"/>: signing
    /// it would hand that node's holder a key to this mailbox there.</exception>
    public async Task<MailboxAuth> AuthenticateAsync(Identity identity, MailboxPurpose purpose, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(identity);
        ChallengeResponse challenge = await Relay.ChallengeAsync(new ChallengeRequest { Address = ByteString.CopyFrom(identity.Address) }, cancellationToken: cancellationToken).ResponseAsync.ConfigureAwait(false);
        byte[]? expected = Volatile.Read(ref _nodeId);
        if (expected is null)
        {
            if (challenge.NodeId.Length != 32)
            {
                throw new NodeIdMismatchException(new byte[32], challenge.NodeId.ToByteArray());
            }

            byte[] shown = challenge.NodeId.ToByteArray();
            if (FirstContactRefusal(shown) is { } refusal)
            {
                throw new FirstContactRefusedException(refusal);
            }

            // One first contact wins, also among concurrent calls: the others are held to it.
            expected = Interlocked.CompareExchange(ref _nodeId, shown, null) ?? shown;
        }

        if (!challenge.NodeId.Span.SequenceEqual(expected))
        {
            throw new NodeIdMismatchException(expected.ToArray(), challenge.NodeId.ToByteArray());
        }

        Interlocked.CompareExchange(ref _confirmedNodeId, expected, null);
        return SignChallenge(identity, challenge, identity.Address, purpose);
    }

    /// <summary>The auth <paramref name="identity"/>'s keys give for <paramref name="challenge"/>,
    /// <paramref name="address"/> (its own, except in tests that forge) and <paramref name="purpose"/>.</summary>
    internal static MailboxAuth SignChallenge(Identity identity, ChallengeResponse challenge, byte[] address, MailboxPurpose purpose) => new()
    {
        Address = ByteString.CopyFrom(address),
        Nonce = challenge.Nonce,
        IdentitySigningKey = ByteString.CopyFrom(identity.Card.SigningKey),
        IdentityEncryptionKey = ByteString.CopyFrom(identity.Card.EncryptionKey),
        Signature = ByteString.CopyFrom(identity.SignWithIdentity(EnvelopeFormat.AuthBytes(challenge.Nonce.Span, challenge.NodeId.Span, address, purpose))),
    };

    /// <summary>Fetches and opens one page of mail after <paramref name="afterSeq"/>. With <paramref name="seen"/>,
    /// messages are remembered there and copies of ones already received go to <see cref="FetchResult.Unreadable"/>.</summary>
    public async Task<FetchResult> FetchAsync(Identity identity, ulong afterSeq = 0, int limit = 100,
        CancellationToken cancellationToken = default, SeenMessages? seen = null)
    {
        MailboxAuth auth = await AuthenticateAsync(identity, MailboxPurpose.Fetch, cancellationToken).ConfigureAwait(false);
        FetchResponse page = await Relay.FetchAsync(new FetchRequest { Auth = auth, AfterSeq = afterSeq, Limit = limit }, cancellationToken: cancellationToken).ResponseAsync.ConfigureAwait(false);
        var messages = new List<ReceivedMessage>(page.Items.Count);
        var unreadable = new List<UnreadableMessage>();
        foreach (MailItem item in page.Items)
        {
            if (TryOpen(identity, item, seen, out ReceivedMessage? message, out UnreadableMessage? bad))
            {
                messages.Add(message);
            }
            else
            {
                unreadable.Add(bad);
            }
        }

        return new FetchResult(messages, unreadable, page.NextCursor) { WaitingCount = page.WaitingCount, WaitingBytes = page.WaitingBytes };
    }

    /// <summary>Deletes messages from the mailbox, in calls of at most 1,000 (what the node takes), in the order given.
    /// Returns how many the node says it deleted (those gone already, or never there, are not counted).</summary>
    /// <exception cref="AckIncompleteException">A call failed after earlier ones went through: the messages those deleted
    /// are gone, and the exception says how many, and which of <paramref name="seqs"/> they covered; what failed is its
    /// <see cref="Exception.InnerException"/>. A failure of the first call is thrown as it is: the node confirmed
    /// nothing.</exception>
    public async Task<int> AckAsync(Identity identity, IEnumerable<ulong> seqs, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(seqs);
        ulong[] all = seqs as ulong[] ?? [.. seqs];
        int deleted = 0, settled = 0;
        // The node takes at most 1,000 per call (docs/protocol.md).
        foreach (ulong[] chunk in all.Chunk(1000))
        {
            try
            {
                MailboxAuth auth = await AuthenticateAsync(identity, MailboxPurpose.Ack(chunk), cancellationToken).ConfigureAwait(false);
                var request = new AckRequest { Auth = auth };
                request.Seqs.AddRange(chunk);
                deleted += (await Relay.AckAsync(request, cancellationToken: cancellationToken).ResponseAsync.ConfigureAwait(false)).Deleted;
            }
            catch (Exception e) when (settled > 0)
            {
                // Thrown as it was, the count of what the earlier calls deleted was lost: a caller could not tell that
                // some of the mail is gone from the node, nor which.
                throw new AckIncompleteException(deleted, settled, all.Length, e);
            }

            settled += chunk.Length;
        }

        return deleted;
    }

    /// <summary>The trailer with which a node ends a <c>Subscribe</c> stream that has run its lifetime
    /// (status <c>UNAVAILABLE</c>, value <see cref="SubscriptionLifetimeEnded"/>): the client is to subscribe again at
    /// once, with a fresh challenge, from its cursor (docs/protocol.md).</summary>
    public const string SubscriptionEndedTrailer = "subscription-ended";

    /// <summary>The value of <see cref="SubscriptionEndedTrailer"/> for a subscription ended by its lifetime.</summary>
    public const string SubscriptionLifetimeEnded = "lifetime";

    /// <summary>True for the status with which a node ends a subscription that has run its lifetime.</summary>
    public static bool IsSubscriptionLifetimeEnd(RpcException exception) =>
        exception is { StatusCode: StatusCode.Unavailable } && exception.Trailers.GetValue(SubscriptionEndedTrailer) == SubscriptionLifetimeEnded;

    /// <summary>The trailer with which a node answers <c>DATA_LOSS</c> to <c>Fetch</c> or <c>Subscribe</c> when the next
    /// envelope of the mailbox no longer reads back from its store: that entry's sequence number, in decimal. The mail
    /// after it comes from <c>after_seq</c> of it; the entry itself stays in the mailbox (docs/protocol.md).</summary>
    public const string DamagedSeqTrailer = "damaged-seq";

    /// <summary>The sequence number of the mailbox entry a node could not deliver because its store is damaged (a
    /// <c>DATA_LOSS</c> with <see cref="DamagedSeqTrailer"/>); null for any other failure, or a trailer that is no
    /// sequence number.</summary>
    public static ulong? DamagedSeq(RpcException exception)
    {
        ArgumentNullException.ThrowIfNull(exception);
        return exception.StatusCode == StatusCode.DataLoss
            && ulong.TryParse(exception.Trailers.GetValue(DamagedSeqTrailer), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out ulong seq)
            ? seq : null;
    }

    /// <summary>The least time between two subscriptions <see cref="ListenAsync"/> renews on its own: a node that
    /// ended each at once would otherwise have it sign challenges in a loop.</summary>
    internal static readonly TimeSpan MinRenewalInterval = TimeSpan.FromSeconds(1);

    /// <summary>Streams mail as it arrives (after <paramref name="afterSeq"/>), opened; keepalives are consumed silently.
    /// Items that do not open, and with <paramref name="seen"/> copies of messages already received, are skipped and
    /// handed to <paramref name="unreadable"/> when given.</summary>
    /// <remarks>
    /// The node sends a keepalive after each interval without mail (its KeepaliveSeconds, 15 by default; it does not
    /// announce it), stamped with its clock. The client takes the longest gap between two keepalives in a row, by those
    /// stamps, as that interval, and once it knows one, a wait for the next event (mail or keepalive) that lasts 3 times
    /// as long, plus 2 s for scheduling, ends the stream with <see cref="NodeSilentException"/>: the connection or the
    /// node is dead even if no packet says so.
    /// Before the first keepalive, HTTP/2 pings (<see cref="KeepAlivePingDelay"/>, <see cref="KeepAlivePingTimeout"/>)
    /// find a dead connection. Time the caller spends between items does not count.
    /// The node ends every subscription after its lifetime (SubscriptionLifetimeSeconds, an hour by default; see
    /// <see cref="SubscriptionEndedTrailer"/>); a subscription that had begun (its first keepalive came) is then renewed
    /// here, with a fresh challenge, after the last item read, and the enumeration goes on as if nothing happened (at
    /// most once per <see cref="MinRenewalInterval"/>). A failure of that renewal ends it as any other.
    /// An entry the node's store no longer reads back (<c>DATA_LOSS</c> naming it in <see cref="DamagedSeqTrailer"/>)
    /// is handed to <c>damaged</c>, once, and the subscription is renewed from after it the same way; it is not
    /// acknowledged, so it comes again once the node's operator restores the store. Without <c>damaged</c> that
    /// <c>DATA_LOSS</c> ends the enumeration, as any other failure: the entry is never passed over unseen.
    /// </remarks>
    /// <param name="identity">Whose mailbox.</param>
    /// <param name="afterSeq">The cursor: mail after this sequence number.</param>
    /// <param name="cancellationToken">Ends the subscription.</param>
    /// <param name="unreadable">Gets the items that are not shown.</param>
    /// <param name="seen">The record copies are checked against.</param>
    /// <param name="alive">Called at every event, keepalives included; the node sends a keepalive as soon as it has
    /// registered the subscription, so the first call says the subscription works (a refusal's response headers do
    /// not count: they came for refused subscriptions too). A caller that subscribes again after a failure can
    /// reset its backoff here, at a call after the first: the node reads the mailbox only once it has sent that
    /// keepalive, and a read that fails then (its store unreadable just now) ends the subscription at once with
    /// <c>UNAVAILABLE</c>.</param>
    /// <param name="damaged">Gets each entry the node could not deliver because its store is damaged; the mail after it
    /// comes on.</param>
    /// <exception cref="NodeSilentException">No event within the watchdog's time; subscribe again to resume.</exception>
    public async IAsyncEnumerable<ReceivedMessage> ListenAsync(Identity identity, ulong afterSeq = 0, [EnumeratorCancellation] CancellationToken cancellationToken = default,
        Action<UnreadableMessage>? unreadable = null, SeenMessages? seen = null, Action? alive = null, Action<DamagedMail>? damaged = null)
    {
        ulong cursor = afterSeq; // the last item read (shown or not): a renewed subscription resumes after it
        TimeSpan interval = TimeSpan.Zero; // the node's keepalive interval, as far as seen; zero until it is known
        while (true)
        {
            long opened = Environment.TickCount64;
            MailboxAuth auth = await AuthenticateAsync(identity, MailboxPurpose.Subscribe, cancellationToken).ConfigureAwait(false);
            using var watchdog = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            using AsyncServerStreamingCall<MailEvent> call = Relay.Subscribe(new SubscribeRequest { Auth = auth, AfterSeq = cursor }, cancellationToken: watchdog.Token);
            long? previousKeepalive = null; // the node's clock on the last event, when that was a keepalive
            bool begun = false; // an event came on this subscription
            while (true)
            {
                TimeSpan deadline = interval > TimeSpan.Zero ? Deadline(interval) : Timeout.InfiniteTimeSpan;
                watchdog.CancelAfter(deadline);
                bool more;
                try
                {
                    more = await call.ResponseStream.MoveNext(watchdog.Token).ConfigureAwait(false);
                }
                catch (RpcException ended) when (begun && IsSubscriptionLifetimeEnd(ended) && !watchdog.IsCancellationRequested)
                {
                    // The node's expected end, not an outage: the caller sees nothing of it.
                    break;
                }
                catch (RpcException lost) when (damaged is not null && DamagedSeq(lost) is { } seq && seq > cursor && !watchdog.IsCancellationRequested)
                {
                    // The mail after it comes from after it; the entry stays on the node. (A seq at or before the
                    // cursor would not move on: that DATA_LOSS ends the enumeration as sent.)
                    cursor = seq;
                    damaged(new DamagedMail(seq, lost));
                    break;
                }
                catch (Exception failure) when (failure is RpcException or OperationCanceledException && watchdog.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
                {
                    throw new NodeSilentException(deadline, interval, failure);
                }

                // Until the next wait: the caller's time with an item is not the node's silence.
                watchdog.CancelAfter(Timeout.InfiniteTimeSpan);
                if (!more)
                {
                    yield break;
                }

                begun = true;
                alive?.Invoke();
                MailEvent e = call.ResponseStream.Current;
                if (e.KindCase != MailEvent.KindOneofCase.Item)
                {
                    // Two keepalives in a row are one interval apart by the node's own clock, whenever this client got
                    // to read them (a slow reader, or a backlog, made times measured here far too short). A gap beyond
                    // a day is a clock step, not an interval.
                    long sent = e.KeepaliveUnixMs;
                    if (previousKeepalive is { } before && sent - before is > 0 and <= 86_400_000)
                    {
                        interval = TimeSpan.FromMilliseconds(Math.Max(interval.TotalMilliseconds, sent - before));
                    }

                    previousKeepalive = sent;
                    continue;
                }

                previousKeepalive = null;
                cursor = e.Item.Seq;
                if (TryOpen(identity, e.Item, seen, out ReceivedMessage? message, out UnreadableMessage? bad))
                {
                    yield return message;
                }
                else
                {
                    unreadable?.Invoke(bad);
                }
            }

            // Only a lifetime end or a damaged entry gets here: subscribed again, never more than once per
            // MinRenewalInterval, so a node that answers every subscription so does not have it sign in a loop.
            TimeSpan lasted = TimeSpan.FromMilliseconds(Environment.TickCount64 - opened);
            if (lasted < MinRenewalInterval)
            {
                await Task.Delay(MinRenewalInterval - lasted, cancellationToken).ConfigureAwait(false);
            }
        }
    }

    /// <summary>How long <see cref="ListenAsync"/> waits for an event once it knows the node's keepalive interval.</summary>
    internal static TimeSpan Deadline(TimeSpan keepaliveInterval) => 3 * keepaliveInterval + TimeSpan.FromSeconds(2);

    /// <summary>
    /// Checks a receipt against the node at this address: the tree head is signed by this node (the <see cref="NodeId"/>
    /// the client was given, else the key the node signs its current tree head with, which then becomes
    /// <see cref="NodeId"/>), the envelope id's inclusion proof leads to that head's root, and the node's current log
    /// extends the one the receipt was signed in (a consistency proof; a node that forked or rewrote its log fails it).
    /// Returns null when valid, else what failed: that text quotes a refusing node's status detail as the node sent it,
    /// control characters included, so escape them before printing it to a terminal.
    /// </summary>
    /// <exception cref="RpcException">A call failed as outages do (any code for <c>GetTreeHead</c>; for a proof, any
    /// but the refusals <see cref="IsRefusal"/> names, which are returned as what failed: the node signed the tree the
    /// proof is about, so it holds it).</exception>
    public async Task<string?> VerifyReceiptAsync(Receipt receipt, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(receipt);
        V1.SignedTreeHead head = receipt.TreeHead;
        if (head is null)
        {
            return "the receipt has no tree head";
        }

        if (!head.SignatureVerifies)
        {
            return "the tree head's signature does not verify with its node key";
        }

        // Checked here, not left to the node: it answers a proof request for a leaf outside the tree with OUT_OF_RANGE,
        // which is no statement about the receipt (the log index is not signed: anyone can change it).
        if (receipt.LogIndex < 0 || receipt.LogIndex >= head.TreeSize)
        {
            return $"the receipt's log index {receipt.LogIndex} is outside its tree head's log (size {head.TreeSize})";
        }

        (V1.SignedTreeHead? current, string? problem) = await NodeHeadAsync(head, null, "for the receipt", cancellationToken).ConfigureAwait(false);
        if (problem is not null)
        {
            return problem;
        }

        InclusionProof proof;
        try
        {
            proof = await Relay.GetInclusionProofAsync(new InclusionProofRequest { LeafIndex = receipt.LogIndex, TreeSize = head.TreeSize }, cancellationToken: cancellationToken).ResponseAsync.ConfigureAwait(false);
        }
        catch (RpcException e) when (e.StatusCode == StatusCode.DataLoss)
        {
            return $"the node cannot give the inclusion proof of leaf {receipt.LogIndex} in the tree of size {head.TreeSize} it signed: it says its store is damaged, " +
                $"so the receipt cannot be checked until its operator restores the store ({e.StatusCode}: {e.Status.Detail})";
        }
        catch (RpcException e) when (IsRefusal(e.StatusCode))
        {
            return $"the node refused the inclusion proof of leaf {receipt.LogIndex} in the tree of size {head.TreeSize} it signed ({e.StatusCode}: {e.Status.Detail})";
        }

        if (!MerkleTree.VerifyInclusion(MerkleTree.LeafHash(receipt.EnvelopeId.Span), receipt.LogIndex, head.TreeSize, proof.Path, static hash => hash.Memory, head.RootHash.Span))
        {
            return "the inclusion proof does not lead to the tree head's root";
        }

        return await ExtendsAsync(current!, head, "the log the receipt was signed in", cancellationToken).ConfigureAwait(false) ?? PinFromLog(head.NodeKey);
    }

    /// <summary>
    /// Checks that the node at this address still extends a tree head it signed earlier: a monitor's remembered head,
    /// or one somebody else was given (comparing heads across clients is how a log that shows different histories to
    /// different people is caught). <paramref name="earlier"/> and the node's current head must be signed by this node
    /// (<see cref="NodeId"/>, else the key of the node's current head, which then becomes <see cref="NodeId"/>), the
    /// log must be no smaller, and a consistency proof must lead from the earlier root to the current one.
    /// </summary>
    /// <param name="earlier">The head to hold the node to.</param>
    /// <param name="current">The node's current head when the caller already asked for it (this client's node), else
    /// null: it is asked for here.</param>
    /// <param name="cancellationToken">Cancels the calls.</param>
    /// <returns>The node's current head (null when it could not be checked) and null, or what failed (quoting the node as <see cref="VerifyReceiptAsync"/> does).</returns>
    /// <exception cref="RpcException">A call failed as outages do (see <see cref="VerifyReceiptAsync"/>).</exception>
    public async Task<(V1.SignedTreeHead? Current, string? Problem)> CheckLogAsync(V1.SignedTreeHead earlier, V1.SignedTreeHead? current = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(earlier);
        if (!earlier.SignatureVerifies)
        {
            return (null, "the earlier tree head's signature does not verify with its node key");
        }

        string? problem;
        (current, problem) = await NodeHeadAsync(earlier, current, "in the earlier head", cancellationToken).ConfigureAwait(false);
        if (problem is not null)
        {
            return (current, problem);
        }

        return (current, await ExtendsAsync(current!, earlier, "the log of the earlier head", cancellationToken).ConfigureAwait(false) ?? PinFromLog(earlier.NodeKey));
    }

    /// <summary>With no node id expected, pins <paramref name="nodeKey"/>, the key a receipt's or an earlier head's log
    /// checked out under, as <see cref="NodeId"/> (later challenges are held to it): after the first-contact check, as an
    /// id shown in a challenge passes it (pinned unchecked, it let every later challenge be signed without the check),
    /// and only once every check passed. Null, or what refused it.</summary>
    private string? PinFromLog(ByteString nodeKey)
    {
        byte[] key = nodeKey.ToByteArray();
        if (Volatile.Read(ref _nodeId) is null && FirstContactRefusal(key) is { } refusal)
        {
            return $"the node's key {Convert.ToHexStringLower(key)} is refused on first contact: {refusal}";
        }

        return Interlocked.CompareExchange(ref _nodeId, key, null) is { } other && !other.AsSpan().SequenceEqual(key)
            ? $"the node at this address showed node id {Convert.ToHexStringLower(other)} to a concurrent call, and signs its log with {Convert.ToHexStringLower(key)}"
            : null;
    }

    /// <summary>What <see cref="MegaNetClientOptions.FirstContactCheck"/> says of <paramref name="nodeId"/> (a copy goes to
    /// it), the one rule for every first contact: a challenge's node id, or the key of a log that checked out.</summary>
    private string? FirstContactRefusal(byte[] nodeId) => _firstContactCheck?.Invoke(nodeId.ToArray());

    /// <summary>The node's current tree head, checked to be signed by the node that signed <paramref name="head"/>
    /// (whose own signature the caller checked) and to be no smaller; else what failed.</summary>
    private async Task<(V1.SignedTreeHead? Current, string? Problem)> NodeHeadAsync(V1.SignedTreeHead head, V1.SignedTreeHead? fetched, string signedFor, CancellationToken cancellationToken)
    {
        // A signature only says which key signed: anyone can sign a head over a log of their own. The key must be the
        // node's.
        V1.SignedTreeHead current = fetched ?? await Relay.GetTreeHeadAsync(new GetTreeHeadRequest(), cancellationToken: cancellationToken).ResponseAsync.ConfigureAwait(false);
        byte[]? pinned = Volatile.Read(ref _nodeId);
        byte[] nodeKey = pinned ?? current.NodeKey.ToByteArray();
        if (!head.NodeKey.Span.SequenceEqual(nodeKey))
        {
            return (null, $"the tree head is signed by key {Convert.ToHexStringLower(head.NodeKey.Span)}, not by {(pinned is null ? "the node at this address" : "the expected node")} ({Convert.ToHexStringLower(nodeKey)})");
        }

        if (!current.NodeKey.Span.SequenceEqual(nodeKey) ||
            !current.SignatureVerifies)
        {
            return (null, $"the node's current tree head is not signed by {Convert.ToHexStringLower(nodeKey)}");
        }

        // Before any proof request: the node cannot prove anything about a tree larger than its log (it would answer
        // OUT_OF_RANGE), and a signed log that shrank is the answer.
        if (current.TreeSize < head.TreeSize)
        {
            return (current, $"the node's log has {current.TreeSize} entries now, fewer than the {head.TreeSize} it signed {signedFor}: it lost or rewrote its log");
        }

        return (current, null);
    }

    /// <summary>Null when the node proves that <paramref name="current"/> extends <paramref name="earlier"/> (no
    /// smaller, both signed by the node), else what failed.</summary>
    private async Task<string?> ExtendsAsync(V1.SignedTreeHead current, V1.SignedTreeHead earlier, string what, CancellationToken cancellationToken)
    {
        ConsistencyProof consistency;
        try
        {
            consistency = current.TreeSize == earlier.TreeSize
                ? new ConsistencyProof { First = earlier.TreeSize, Second = current.TreeSize }
                : await Relay.GetConsistencyProofAsync(new ConsistencyProofRequest { First = earlier.TreeSize, Second = current.TreeSize }, cancellationToken: cancellationToken).ResponseAsync.ConfigureAwait(false);
        }
        catch (RpcException e) when (e.StatusCode == StatusCode.DataLoss)
        {
            // Still a failed check (the node cannot back what it signed), but one its operator can mend, not a fork.
            return $"the node cannot give a consistency proof between two sizes it signed, {earlier.TreeSize} and {current.TreeSize}: it says its store is damaged, " +
                $"so its log cannot be checked until its operator restores the store ({e.StatusCode}: {e.Status.Detail})";
        }
        catch (RpcException e) when (IsRefusal(e.StatusCode))
        {
            // The node signed both sizes, so it holds both trees: refusing the proof between them is no outage (which
            // a monitor would shrug off) but an answer.
            return $"the node refused a consistency proof between two sizes it signed, {earlier.TreeSize} and {current.TreeSize} ({e.StatusCode}: {e.Status.Detail})";
        }

        return MerkleTree.VerifyConsistency(earlier.TreeSize, current.TreeSize, earlier.RootHash.Span, current.RootHash.Span, consistency.Path, static hash => hash.Memory)
            ? null
            : $"the node's current log (size {current.TreeSize}) does not extend {what} (size {earlier.TreeSize}): it forked or rewrote its log";
    }

    /// <summary>The answers that say "no" about a proof of a tree the node signed, rather than that the call did not get
    /// through: a transport fault is reported as <c>Internal</c> or <c>Unknown</c> by gRPC libraries, and the rest
    /// (unavailable, busy, late, aborted) are outages. A node can always feign an outage instead: a monitor should also
    /// raise an alarm over one node that stays unreachable for its proofs.</summary>
    internal static bool IsRefusal(StatusCode code) =>
        code is StatusCode.InvalidArgument or StatusCode.OutOfRange or StatusCode.NotFound or StatusCode.FailedPrecondition
            or StatusCode.Unimplemented or StatusCode.DataLoss;

    private static bool TryOpen(Identity identity, MailItem item, SeenMessages? seen, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out ReceivedMessage? message,
        [System.Diagnostics.CodeAnalysis.NotNullWhen(false)] out UnreadableMessage? unreadable)
    {
        // The id the client computes, not the one the node says: a receipt or an ack is then about these very bytes.
        // The signing bytes once (they hash the payload): the former id hashes them too.
        byte[]? signing = item.Envelope is null ? null : EnvelopeFormat.SigningBytes(item.Envelope);
        byte[] id = signing is null ? item.EnvelopeId.ToByteArray() : new byte[32];
        if (signing is not null)
        {
            EnvelopeFormat.EnvelopeId(signing, id);
        }

        try
        {
            SealedContent content = EnvelopeFormat.Open(identity, item.Envelope ?? throw new System.Security.Cryptography.CryptographicException("The item carries no envelope."), out byte[] digest);
            if (seen?.Check(digest, id, content.SentUnixMs, FormerEnvelopeId(signing!, item.Envelope)) is { } copy)
            {
                message = null;
                unreadable = new UnreadableMessage(item.Seq, id, copy);
                return false;
            }

            var sender = new ContactCard(content.SenderSigningKey.ToByteArray(), content.SenderEncryptionKey.ToByteArray());
            message = new ReceivedMessage(item.Seq, id, sender, content, item.LogIndex, seen?.IsOld(content.SentUnixMs) ?? false);
            unreadable = null;
            return true;
        }
        catch (System.Security.Cryptography.CryptographicException e)
        {
            message = null;
            unreadable = new UnreadableMessage(item.Seq, id, e.Message);
            return false;
        }
    }

    // The id by the rule before 2026-11-29: BLAKE2b-256(signing bytes ‖ signature). Only for seen records written then.
    private static byte[] FormerEnvelopeId(byte[] signingBytes, Envelope envelope) =>
        NSec.Cryptography.HashAlgorithm.Blake2b_256.Hash([.. signingBytes, .. envelope.Signature.Span]);

    /// <inheritdoc />
    public void Dispose() => _connections.Dispose();
}

/// <summary>
/// <see cref="MegaNetClient.AckAsync"/> sent its sequence numbers in several calls, and one failed after earlier ones
/// went through: the messages those deleted are gone from the node. The failure is the
/// <see cref="Exception.InnerException"/>; the messages of the call that failed, and of those after it, may still be on
/// the node (the failed one's may also have been deleted, with the answer lost on the way).
/// </summary>
public sealed class AckIncompleteException : Exception
{
    /// <summary>A failure after the calls that went through.</summary>
    /// <param name="acknowledged">Messages the node confirmed deleted.</param>
    /// <param name="settled">Sequence numbers, counted from the first given, in the calls that went through.</param>
    /// <param name="requested">Sequence numbers given.</param>
    /// <param name="inner">What failed.</param>
    public AckIncompleteException(int acknowledged, int settled, int requested, Exception inner)
        : base($"Acknowledged {acknowledged} of {requested} message(s) before a call failed: {inner?.Message}", inner)
    {
        ArgumentNullException.ThrowIfNull(inner);
        (Acknowledged, Settled, Requested) = (acknowledged, settled, requested);
    }

    /// <summary>Messages the node confirmed deleted (those gone already are not counted).</summary>
    public int Acknowledged { get; }

    /// <summary>How many of the sequence numbers given, counted from the first, went in the calls that went through:
    /// deleted, or gone already. The others may still be on the node.</summary>
    public int Settled { get; }

    /// <summary>Sequence numbers given.</summary>
    public int Requested { get; }
}

/// <summary>A subscription got no event (mail or keepalive) for several of the node's keepalive intervals: the connection
/// or the node is dead, though no packet said so. Nothing was lost: subscribe again after the last sequence number.</summary>
public sealed class NodeSilentException(TimeSpan waited, TimeSpan keepaliveInterval, Exception inner)
    : Exception($"No mail and no keepalive from the node for {waited.TotalSeconds:0.#} s, though it sends a keepalive about every {keepaliveInterval.TotalSeconds:0.#} s when idle: the connection or the node is dead.", inner)
{
    /// <summary>How long the client waited.</summary>
    public TimeSpan Waited { get; } = waited;
}

/// <summary>A node answered against the protocol (a receipt for another envelope, answers that do not match the
/// requests): it is faulty, and what it answered is not to be counted as delivered. An
/// <see cref="InvalidOperationException"/>, as it was before it had a type of its own.</summary>
public sealed class NodeMisbehavedException(string message) : InvalidOperationException(message);

/// <summary>A send cancelled while a submit was in flight, or after one of its submits got no answer: the node may have
/// stored the envelope (<see cref="EnvelopeId"/>), so sending the message again may deliver it twice.</summary>
public sealed class SendInterruptedException(byte[] envelopeId, Exception inner, CancellationToken token)
    : OperationCanceledException(
        $"the send was interrupted before the node answered a submit: the node may have stored the message as envelope {Convert.ToHexStringLower(envelopeId)}, " +
        "so sending it again may deliver it twice.", inner, token)
{
    /// <summary>The envelope the node may have stored.</summary>
    public byte[] EnvelopeId { get; } = envelopeId;
}

/// <summary>A node showed another node id than the client expects; nothing was signed.</summary>
public sealed class NodeIdMismatchException(byte[] expected, byte[] actual)
    : Exception($"The node answered as node id {Convert.ToHexStringLower(actual)}, not {Convert.ToHexStringLower(expected)}; its challenge was not signed (the signature would open this mailbox at the node it names).")
{
    /// <summary>The node id the client expected.</summary>
    public byte[] Expected { get; } = expected;

    /// <summary>The node id the node showed.</summary>
    public byte[] Actual { get; } = actual;
}

/// <summary>On first contact the node showed an id <see cref="MegaNetClientOptions.FirstContactCheck"/> refused; nothing
/// was signed.</summary>
public sealed class FirstContactRefusedException(string message) : Exception(message);

/// <summary>The node demands a proof-of-work stamp of more bits than the client computes
/// (<see cref="MegaNetClientOptions.MaxPowBits"/>); nothing was sent.</summary>
public sealed class PowDemandTooHighException(uint demandedBits, int maxBits)
    : Exception($"The node demands a proof-of-work stamp of {demandedBits} bits (about 2^{demandedBits} hashes), more than this client computes ({maxBits} bits, MegaNetClientOptions.MaxPowBits); nothing was sent. " +
        "The node raises its demand with its load: retry later, use another node, or raise MaxPowBits.")
{
    /// <summary>The bits the node demands.</summary>
    public uint DemandedBits { get; } = demandedBits;

    /// <summary>The most the client computes.</summary>
    public int MaxBits { get; } = maxBits;
}

/// <summary>A lifetime asked of <see cref="MegaNetClient.SendAsync"/> (or a file's parts) beyond what the node keeps
/// mail (<c>Status.limits.max_ttl_seconds</c>, its operator's MaxTtlDays): found before anything was sealed, so nothing
/// was sent.</summary>
public sealed class TtlBeyondNodeMaximumException(TimeSpan asked, TimeSpan nodeMaximum)
    : ArgumentOutOfRangeException("ttl", asked,
        $"The node keeps mail at most {nodeMaximum.TotalDays:0.######} days (its MaxTtlDays); an expiry {asked.TotalDays:0.######} days away would be refused. Nothing was sent: ask for at most that, or leave the lifetime to the client's default, which fits the node.")
{
    /// <summary>The lifetime asked for.</summary>
    public TimeSpan Asked { get; } = asked;

    /// <summary>The longest the node keeps mail.</summary>
    public TimeSpan NodeMaximum { get; } = nodeMaximum;
}

/// <summary>What a node's refusal asks of the caller, from its trailers (docs/protocol.md, "Relay service"); the node
/// writes them with <see cref="Trailers"/>.</summary>
public static class NodeRefusals
{
    /// <summary>The trailer saying how many milliseconds to wait before retrying.</summary>
    public const string RetryAfterTrailer = "retry-after-ms";

    /// <summary>The trailer saying how many proof-of-work bits to stamp with.</summary>
    public const string PowBitsTrailer = "pow-bits";

    /// <summary>The trailer giving the node's proof-of-work seed to stamp for (lowercase hex), beside
    /// <see cref="PowBitsTrailer"/>.</summary>
    public const string PowSeedTrailer = "pow-seed";

    /// <summary>The trailers of a refusal: a wait of <paramref name="retryAfterMs"/> and a demand of
    /// <paramref name="powBits"/>, each only when above 0, with the seed to stamp for beside the demand.</summary>
    /// <exception cref="ArgumentException">A demand without a seed of <see cref="EnvelopeFormat.PowSeedLength"/> bytes:
    /// its client could not stamp for it.</exception>
    public static Metadata Trailers(int retryAfterMs = 0, int powBits = 0, ReadOnlySpan<byte> powSeed = default)
    {
        if (powBits > 0 && powSeed.Length != EnvelopeFormat.PowSeedLength)
        {
            throw new ArgumentException($"A proof-of-work demand goes with the node's seed of {EnvelopeFormat.PowSeedLength} bytes, not {powSeed.Length}.", nameof(powSeed));
        }

        var trailers = new Metadata();
        if (retryAfterMs > 0)
        {
            trailers.Add(RetryAfterTrailer, retryAfterMs.ToString(System.Globalization.CultureInfo.InvariantCulture));
        }

        if (powBits > 0)
        {
            trailers.Add(PowBitsTrailer, powBits.ToString(System.Globalization.CultureInfo.InvariantCulture));
            trailers.Add(PowSeedTrailer, Convert.ToHexStringLower(powSeed));
        }

        return trailers;
    }

    /// <summary>How long to wait before retrying, from the <c>retry-after-ms</c> trailer a <c>RESOURCE_EXHAUSTED</c>
    /// refusal carries (rate limit, full queue, mailbox quota, busy <c>VerifyBatch</c>); null when there is none.</summary>
    public static TimeSpan? RetryAfter(this RpcException exception)
    {
        ArgumentNullException.ThrowIfNull(exception);
        return exception.Trailers.GetValue(RetryAfterTrailer) is { } text
            && long.TryParse(text, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out long ms)
            && ms <= (long)TimeSpan.FromDays(1).TotalMilliseconds
            ? TimeSpan.FromMilliseconds(ms)
            : null;
    }

    /// <summary>The proof-of-work bits to stamp the envelope with (<see cref="EnvelopeFormat.Stamp"/>) before
    /// submitting it again, from the <c>pow-bits</c> trailer a <c>FAILED_PRECONDITION</c> refusal carries; null when
    /// there is none.</summary>
    public static int? RequiredPowBits(this RpcException exception)
    {
        ArgumentNullException.ThrowIfNull(exception);
        return exception.Trailers.GetValue(PowBitsTrailer) is { } text
            && int.TryParse(text, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int bits)
            && bits is > 0 and <= 256
            ? bits
            : null;
    }

    /// <summary>The node's proof-of-work seed to stamp for, from the <c>pow-seed</c> trailer beside
    /// <c>pow-bits</c>; null when there is none or it is not <see cref="EnvelopeFormat.PowSeedLength"/> bytes of hex.</summary>
    public static byte[]? RequiredPowSeed(this RpcException exception)
    {
        ArgumentNullException.ThrowIfNull(exception);
        return exception.Trailers.GetValue(PowSeedTrailer) is { Length: EnvelopeFormat.PowSeedLength * 2 } text
            && text.All(char.IsAsciiHexDigit)
            ? Convert.FromHexString(text)
            : null;
    }
}

/// <summary>Gives unary calls made without a deadline the client's default, and says so when it expires.</summary>
internal sealed class DefaultDeadlineInterceptor(TimeSpan deadline, string settingName) : Interceptor
{
    public override AsyncUnaryCall<TResponse> AsyncUnaryCall<TRequest, TResponse>(TRequest request, ClientInterceptorContext<TRequest, TResponse> context,
        AsyncUnaryCallContinuation<TRequest, TResponse> continuation)
    {
        if (context.Options.Deadline is not null)
        {
            return continuation(request, context);
        }

        AsyncUnaryCall<TResponse> call = continuation(request, WithDeadline(context));
        // The state-taking constructor keeps the headers task lazy, as Grpc.Net.Client's own calls make it.
        return new AsyncUnaryCall<TResponse>(Explain(call.ResponseAsync), static s => ((AsyncUnaryCall<TResponse>)s).ResponseHeadersAsync,
            static s => ((AsyncUnaryCall<TResponse>)s).GetStatus(), static s => ((AsyncUnaryCall<TResponse>)s).GetTrailers(),
            static s => ((AsyncUnaryCall<TResponse>)s).Dispose(), call);
    }

    public override TResponse BlockingUnaryCall<TRequest, TResponse>(TRequest request, ClientInterceptorContext<TRequest, TResponse> context,
        BlockingUnaryCallContinuation<TRequest, TResponse> continuation)
    {
        if (context.Options.Deadline is not null)
        {
            return continuation(request, context);
        }

        try
        {
            return continuation(request, WithDeadline(context));
        }
        catch (RpcException e) when (e.StatusCode == StatusCode.DeadlineExceeded)
        {
            throw Explained(e);
        }
    }

    private ClientInterceptorContext<TRequest, TResponse> WithDeadline<TRequest, TResponse>(ClientInterceptorContext<TRequest, TResponse> context)
        where TRequest : class where TResponse : class =>
        new(context.Method, context.Host, context.Options.WithDeadline(DateTime.UtcNow + deadline));

    private async Task<TResponse> Explain<TResponse>(Task<TResponse> response)
    {
        try
        {
            return await response.ConfigureAwait(false);
        }
        catch (RpcException e) when (e.StatusCode == StatusCode.DeadlineExceeded)
        {
            throw Explained(e);
        }
    }

    private RpcException Explained(RpcException e) => new(
        new Status(StatusCode.DeadlineExceeded,
            $"No answer from the node within {deadline.TotalSeconds:0.###} s (the client's default deadline, {settingName}): " +
            $"the node is overloaded or unreachable. Retry, or give {settingName} more time.", e.Status.DebugException),
        e.Trailers);
}
