using Grpc.Core;
using Grpc.Core.Interceptors;

namespace MegaNet.Api;

/// <summary>
/// Reports a call that failed because the node closed its connection gracefully (an HTTP/2 GOAWAY with NO_ERROR, as a
/// node sends when it stops or restarts) as <c>UNAVAILABLE</c>, which it is, instead of the <c>INTERNAL</c> that
/// Grpc.Net.Client makes of it; and a call its caller cancelled that failed on an object the cancellation disposed
/// or on the stream it aborted (<see cref="IsCancellationRace"/>) as <c>CANCELLED</c>, not <c>INTERNAL</c> or
/// <c>UNAVAILABLE</c>; and a stream the node reset with HTTP/2 CANCEL (<see cref="IsNodeCancel"/>) as
/// <c>UNAVAILABLE</c>, not the <c>CANCELLED</c> that reads as the caller's own cancellation.
/// </summary>
/// <remarks>
/// SocketsHttpHandler retries a request the node never took on a new connection, but not all of them: one still
/// waiting to send its headers when the node's GOAWAY and FIN arrive fails with the GOAWAY's error (seen under load in
/// CI), and one that met closing connections four times in a row fails with it too. Grpc.Net.Client maps an HTTP/2
/// error code to a status by the gRPC spec's RST_STREAM table, where NO_ERROR is <c>INTERNAL</c>: "do not retry".
/// But a node only sends NO_ERROR when it closes on purpose, after answering every call it took, so such a call was
/// not processed, and "try again" is the right answer (grpc-java made the same change: grpc/grpc-java#1355, "GOAWAY
/// with OK maps to INTERNAL"). A retry is safe either way: a Submit sent again gets the original receipt. Innermost of the client's interceptors, so the
/// caller's own (retries, logging) see the mapped status.
/// </remarks>
internal sealed class GracefulCloseInterceptor : Interceptor
{
    public override AsyncUnaryCall<TResponse> AsyncUnaryCall<TRequest, TResponse>(TRequest request, ClientInterceptorContext<TRequest, TResponse> context,
        AsyncUnaryCallContinuation<TRequest, TResponse> continuation)
    {
        AsyncUnaryCall<TResponse> call = continuation(request, context);
        // The state-taking constructor keeps the headers task lazy, as Grpc.Net.Client's own calls make it.
        return new AsyncUnaryCall<TResponse>(Mapped(call.ResponseAsync, context.Options.CancellationToken), static s => Mapped(((AsyncUnaryCall<TResponse>)s).ResponseHeadersAsync),
            static s => Mapped(((AsyncUnaryCall<TResponse>)s).GetStatus()), static s => ((AsyncUnaryCall<TResponse>)s).GetTrailers(),
            static s => ((AsyncUnaryCall<TResponse>)s).Dispose(), call);
    }

    public override TResponse BlockingUnaryCall<TRequest, TResponse>(TRequest request, ClientInterceptorContext<TRequest, TResponse> context,
        BlockingUnaryCallContinuation<TRequest, TResponse> continuation)
    {
        try
        {
            return continuation(request, context);
        }
        catch (RpcException e) when (IsGracefulClose(e.Status))
        {
            throw Unavailable(e);
        }
    }

    public override AsyncServerStreamingCall<TResponse> AsyncServerStreamingCall<TRequest, TResponse>(TRequest request, ClientInterceptorContext<TRequest, TResponse> context,
        AsyncServerStreamingCallContinuation<TRequest, TResponse> continuation)
    {
        AsyncServerStreamingCall<TResponse> call = continuation(request, context);
        return new AsyncServerStreamingCall<TResponse>(new MappedReader<TResponse>(call.ResponseStream, context.Options.CancellationToken),
            static s => Mapped(((AsyncServerStreamingCall<TResponse>)s).ResponseHeadersAsync), static s => Mapped(((AsyncServerStreamingCall<TResponse>)s).GetStatus()),
            static s => ((AsyncServerStreamingCall<TResponse>)s).GetTrailers(), static s => ((AsyncServerStreamingCall<TResponse>)s).Dispose(), call);
    }

    public override AsyncClientStreamingCall<TRequest, TResponse> AsyncClientStreamingCall<TRequest, TResponse>(ClientInterceptorContext<TRequest, TResponse> context,
        AsyncClientStreamingCallContinuation<TRequest, TResponse> continuation)
    {
        AsyncClientStreamingCall<TRequest, TResponse> call = continuation(context);
        return new AsyncClientStreamingCall<TRequest, TResponse>(new MappedWriter<TRequest>(call.RequestStream, context.Options.CancellationToken), Mapped(call.ResponseAsync, context.Options.CancellationToken),
            static s => Mapped(((AsyncClientStreamingCall<TRequest, TResponse>)s).ResponseHeadersAsync),
            static s => Mapped(((AsyncClientStreamingCall<TRequest, TResponse>)s).GetStatus()),
            static s => ((AsyncClientStreamingCall<TRequest, TResponse>)s).GetTrailers(), static s => ((AsyncClientStreamingCall<TRequest, TResponse>)s).Dispose(), call);
    }

    public override AsyncDuplexStreamingCall<TRequest, TResponse> AsyncDuplexStreamingCall<TRequest, TResponse>(ClientInterceptorContext<TRequest, TResponse> context,
        AsyncDuplexStreamingCallContinuation<TRequest, TResponse> continuation)
    {
        AsyncDuplexStreamingCall<TRequest, TResponse> call = continuation(context);
        return new AsyncDuplexStreamingCall<TRequest, TResponse>(new MappedWriter<TRequest>(call.RequestStream, context.Options.CancellationToken), new MappedReader<TResponse>(call.ResponseStream, context.Options.CancellationToken),
            static s => Mapped(((AsyncDuplexStreamingCall<TRequest, TResponse>)s).ResponseHeadersAsync),
            static s => Mapped(((AsyncDuplexStreamingCall<TRequest, TResponse>)s).GetStatus()),
            static s => ((AsyncDuplexStreamingCall<TRequest, TResponse>)s).GetTrailers(), static s => ((AsyncDuplexStreamingCall<TRequest, TResponse>)s).Dispose(), call);
    }

    /// <summary>An <c>INTERNAL</c> status whose cause is an HTTP/2 NO_ERROR from the node.</summary>
    internal static bool IsGracefulClose(Status status)
    {
        return status.StatusCode == StatusCode.Internal && HasCause(status, IsHttp2NoError);
    }

    /// <summary>An HTTP/2 NO_ERROR: the node closed the connection on purpose (a graceful close).</summary>
    internal static bool IsHttp2NoError(Exception e) => e is HttpProtocolException { ErrorCode: 0 };

    /// <summary>
    /// A <c>CANCELLED</c> status whose cause is the node's RST_STREAM with CANCEL while the caller cancelled nothing
    /// (<paramref name="call"/>, <paramref name="cancellation"/>): the node ended a stream whose writes it had to give
    /// up on, as it does when it stops or a subscription's lifetime ends while the client is not reading (a suspended
    /// laptop, a slow link). Grpc.Net.Client maps CANCEL to <c>CANCELLED</c> by the gRPC spec's table, which callers
    /// take for their own cancellation: `meganet listen` ended saying "interrupted" instead of subscribing again (seen
    /// 2026-12-06, a listen held by SIGSTOP across a node's stop). A cancellation of this side resets the stream itself
    /// and fails with an OperationCanceledException, never with the node's reset behind it.
    /// </summary>
    internal static bool IsNodeCancel(Status status, CancellationToken call, CancellationToken cancellation) =>
        status.StatusCode == StatusCode.Cancelled && !call.IsCancellationRequested && !cancellation.IsCancellationRequested
        && HasCause(status, static e => e is HttpProtocolException { ErrorCode: Http2CancelCode });

    // RFC 9113 section 7: CANCEL.
    private const long Http2CancelCode = 0x8;

    private static RpcException NodeCancelled(RpcException e) => new(new Status(StatusCode.Unavailable,
        "The node reset the stream (HTTP/2 CANCEL): it gave up on answers this client had not read, as it does when it stops or a " +
        $"subscription's lifetime ends. Call again. ({e.Status.Detail})", e.Status.DebugException), e.Trailers);

    /// <summary>Whether the exception behind <paramref name="status"/>, or one of its inner exceptions, matches.</summary>
    internal static bool HasCause(Status status, Func<Exception, bool> match)
    {
        for (Exception? e = status.DebugException; e is not null; e = e.InnerException)
        {
            if (match(e))
            {
                return true;
            }
        }

        return false;
    }

    private static Status Mapped(Status status) => IsGracefulClose(status) ? UnavailableStatus(status) : status;

    private static Status UnavailableStatus(Status status) => new(StatusCode.Unavailable,
        "The node closed the connection before answering this call (an HTTP/2 graceful close: it is stopping or restarting). " +
        $"Retry later or through another node. ({status.Detail})", status.DebugException);

    private static RpcException Unavailable(RpcException e) => new(UnavailableStatus(e.Status), e.Trailers);

    /// <summary>A graceful close as <c>UNAVAILABLE</c>, and a call the caller cancelled (<paramref name="call"/>, its own
    /// token, or <paramref name="cancellation"/>, a read's) that failed as <see cref="IsCancellationRace"/> says as
    /// <c>CANCELLED</c>.</summary>
    internal static async Task<T> Mapped<T>(Task<T> task, CancellationToken call = default, CancellationToken cancellation = default)
    {
        try
        {
            return await task.ConfigureAwait(false);
        }
        catch (RpcException e) when (IsGracefulClose(e.Status))
        {
            throw Unavailable(e);
        }
        catch (RpcException e) when (IsCancellationRace(e.Status, call) || IsCancellationRace(e.Status, cancellation))
        {
            throw new RpcException(new Status(StatusCode.Cancelled, "The call was cancelled by its caller.", e.Status.DebugException), e.Trailers);
        }
        catch (RpcException e) when (IsNodeCancel(e.Status, call, cancellation))
        {
            throw NodeCancelled(e);
        }
    }

    /// <summary>
    /// A status the client's transport made of the call's end while <paramref name="cancellation"/> is cancelled: the
    /// caller's own cancellation, racing the sending of the request or the read of the response, ended it with an object
    /// it disposed (<c>INTERNAL</c>, "Error starting gRPC call. ObjectDisposedException: ... 'HttpConnectionResponseContent'":
    /// grpc/grpc-dotnet#1547; seen in ClientChurnTests, 2026-12-04) or with the stream it aborted (<c>UNAVAILABLE</c>,
    /// "IOException: The request was aborted.": 1 of 5,400 Fetch calls cancelled at random moments against a
    /// live node, 24 in a 47-minute soak, told as a node failure; or <c>RESOURCE_EXHAUSTED</c> from an HTTP/2
    /// ENHANCE_YOUR_CALM reset that came after the cancellation). The call was cancelled, and says so; one not
    /// cancelled keeps its status. (A node's own status comes in its trailers, with no exception behind it.)
    /// </summary>
    internal static bool IsCancellationRace(Status status, CancellationToken cancellation) =>
        cancellation.IsCancellationRequested && status.StatusCode switch
        {
            StatusCode.Internal => HasCause(status, static e => e is ObjectDisposedException),
            // A stream or connection the transport saw end (an HTTP/2 reset, ENHANCE_YOUR_CALM among them, is an
            // IOException too): a node's own UNAVAILABLE or RESOURCE_EXHAUSTED carries no exception.
            StatusCode.Unavailable or StatusCode.ResourceExhausted => HasCause(status, static e => e is IOException),
            _ => false,
        };

    private sealed class MappedReader<T>(IAsyncStreamReader<T> inner, CancellationToken call) : IAsyncStreamReader<T>
    {
        public T Current => inner.Current;

        public Task<bool> MoveNext(CancellationToken cancellationToken) => Mapped(inner.MoveNext(cancellationToken), call, cancellationToken);
    }

    private sealed class MappedWriter<T>(IClientStreamWriter<T> inner, CancellationToken call) : IClientStreamWriter<T>
    {
        public WriteOptions? WriteOptions
        {
            get => inner.WriteOptions;
            set => inner.WriteOptions = value;
        }

        public Task WriteAsync(T message) => Mapped(inner.WriteAsync(message), default);

        public Task WriteAsync(T message, CancellationToken cancellationToken) => Mapped(inner.WriteAsync(message, cancellationToken), cancellationToken);

        public Task CompleteAsync() => Mapped(inner.CompleteAsync(), default);

        private async Task Mapped(Task task, CancellationToken cancellation)
        {
            try
            {
                await task.ConfigureAwait(false);
            }
            catch (RpcException e) when (IsGracefulClose(e.Status))
            {
                throw Unavailable(e);
            }
            catch (RpcException e) when (IsNodeCancel(e.Status, call, cancellation))
            {
                throw NodeCancelled(e);
            }
        }
    }
}
