using Grpc.AspNetCore.Server;
using Grpc.Core;
using Grpc.Core.Interceptors;
using MegaNet.Api;

namespace MegaNet.Node.Hosting;

/// <summary>
/// Bounds the open-ended streams of the services beside the relay, server reflection's <c>ServerReflectionInfo</c> and
/// health's <c>Watch</c>: at most <see cref="MaxPerSite"/> open from one site (an IPv4 address, or an IPv6 /48) and
/// <see cref="MaxTotal"/> in all (more are refused with <c>RESOURCE_EXHAUSTED</c> and <c>retry-after-ms</c>); a
/// reflection stream ends, as if its client had finished, once no request came for
/// <see cref="NodeOptions.StreamIdleSeconds"/>; and either ends after <see cref="NodeOptions.SubscriptionLifetimeSeconds"/>
/// (a Watch with <c>UNAVAILABLE</c> and the trailer <c>subscription-ended: lifetime</c>, after which health clients
/// watch again). A global interceptor that passes the relay's own calls (<c>meganet.v1</c>, bounded by its own caps)
/// through untouched: health's service type is internal to its package, so it cannot be given interceptors of its own.
/// Before, nothing ended them: Grpc.AspNetCore lifts Kestrel's minimum data rate for streaming calls and
/// HTTP/2 pings are answered by any client library, so one address held 25,600 reflection streams that sent nothing
/// (256 connections of 100) for good, 2 GB of the node's memory.
/// </summary>
internal sealed class ServiceStreamLimits(NodeOptions options, TimeProvider clock) : Interceptor
{
    /// <summary>Open reflection and Watch streams one site may hold: an operator's tools, a load balancer's probes.</summary>
    public const int MaxPerSite = 16;

    /// <summary>Open reflection and Watch streams the node holds in all.</summary>
    public const int MaxTotal = 1_024;

    /// <summary>The retry hint of a refusal: streams end within the idle limit or the lifetime, and a dead
    /// connection's within about a minute (HTTP/2 pings).</summary>
    private const int FullRetryMs = 30_000;

    private readonly Dictionary<ClientAddress, int> _bySite = [];
    private readonly Lock _lock = new();
    private int _total;

    /// <summary>Streams open now, in all.</summary>
    internal int Open
    {
        get
        {
            lock (_lock)
            {
                return _total;
            }
        }
    }

    /// <inheritdoc/>
    public override async Task DuplexStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream,
        IServerStreamWriter<TResponse> responseStream, ServerCallContext context, DuplexStreamingServerMethod<TRequest, TResponse> continuation)
    {
        if (IsRelays(context))
        {
            await continuation(requestStream, responseStream, context).ConfigureAwait(false);
            return;
        }

        ClientAddress? site = Enter(context);
        try
        {
            using var lifetime = new CancellationTokenSource(TimeSpan.FromSeconds(options.SubscriptionLifetimeSeconds), clock);
            await continuation(new Bounded<TRequest>(requestStream, TimeSpan.FromSeconds(options.StreamIdleSeconds), lifetime.Token, clock), responseStream, context).ConfigureAwait(false);
        }
        finally
        {
            Leave(site);
        }
    }

    /// <inheritdoc/>
    public override async Task ServerStreamingServerHandler<TRequest, TResponse>(TRequest request, IServerStreamWriter<TResponse> responseStream,
        ServerCallContext context, ServerStreamingServerMethod<TRequest, TResponse> continuation)
    {
        if (IsRelays(context))
        {
            await continuation(request, responseStream, context).ConfigureAwait(false);
            return;
        }

        ClientAddress? site = Enter(context);
        try
        {
            using var lifetime = new CancellationTokenSource(TimeSpan.FromSeconds(options.SubscriptionLifetimeSeconds), clock);
            using var either = CancellationTokenSource.CreateLinkedTokenSource(context.CancellationToken, lifetime.Token);
            // Health's Watch runs until its call's token is cancelled, and then returns: handed a token that the
            // lifetime cancels too, it ends then, and the call ends with the status below instead of OK.
            await continuation(request, responseStream, new EndingContext(context, either.Token)).ConfigureAwait(false);
            if (lifetime.IsCancellationRequested && !context.CancellationToken.IsCancellationRequested)
            {
                throw new RpcException(new Status(StatusCode.Unavailable,
                    $"This stream ended after {options.SubscriptionLifetimeSeconds:N0} s, the most the node keeps one open (SubscriptionLifetimeSeconds); open it again."),
                    new Metadata { { MegaNetClient.SubscriptionEndedTrailer, MegaNetClient.SubscriptionLifetimeEnded } });
            }
        }
        finally
        {
            Leave(site);
        }
    }

    private static bool IsRelays(ServerCallContext context) => context.Method.StartsWith("/meganet.v1.", StringComparison.Ordinal);

    private ClientAddress? Enter(ServerCallContext context)
    {
        ClientAddress? site = ClientAddress.From(context.GetHttpContext().Connection.RemoteIpAddress)?.Site;
        lock (_lock)
        {
            int fromSite = site is { } s ? _bySite.GetValueOrDefault(s) : 0;
            if (fromSite >= MaxPerSite)
            {
                throw Full($"This network address (its site: an IPv4 address, or an IPv6 /48) holds {fromSite} open reflection and health Watch streams, the most the node keeps for one; " +
                    "close some and retry after retry-after-ms.");
            }

            if (_total >= MaxTotal)
            {
                throw Full($"The node holds {_total:N0} open reflection and health Watch streams, the most it keeps; retry after retry-after-ms (health Check answers meanwhile).");
            }

            if (site is { } counted)
            {
                _bySite[counted] = fromSite + 1;
            }

            _total++;
        }

        return site;
    }

    private void Leave(ClientAddress? site)
    {
        lock (_lock)
        {
            _total--;
            if (site is { } s && _bySite.TryGetValue(s, out int count))
            {
                if (count <= 1)
                {
                    _bySite.Remove(s);
                }
                else
                {
                    _bySite[s] = count - 1;
                }
            }
        }
    }

    private static RpcException Full(string message) =>
        new(new Status(StatusCode.ResourceExhausted, message), NodeRefusals.Trailers(FullRetryMs));

    /// <summary>A request stream that ends (no more requests) when none comes for <paramref name="idle"/>, or once
    /// <paramref name="lifetime"/> is cancelled.</summary>
    private sealed class Bounded<T>(IAsyncStreamReader<T> inner, TimeSpan idle, CancellationToken lifetime, TimeProvider clock) : IAsyncStreamReader<T>
    {
        public T Current => inner.Current;

        public async Task<bool> MoveNext(CancellationToken cancellationToken)
        {
            if (lifetime.IsCancellationRequested)
            {
                return false;
            }

            using var quiet = new CancellationTokenSource(idle, clock);
            using var any = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, lifetime, quiet.Token);
            try
            {
                return await inner.MoveNext(any.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested && (lifetime.IsCancellationRequested || quiet.IsCancellationRequested))
            {
                return false;
            }
        }
    }

    /// <summary>The call's context with another cancellation token; everything else is the call's own. Grpc.AspNetCore
    /// finds the request's HttpContext in a context of another type under the user-state key <c>__HttpContext</c>
    /// (its invoker needs it to make the service), so it is put there.</summary>
    private sealed class EndingContext : ServerCallContext
    {
        private readonly ServerCallContext inner;
        private readonly CancellationToken token;

        public EndingContext(ServerCallContext inner, CancellationToken token)
        {
            inner.UserState["__HttpContext"] = inner.GetHttpContext();
            this.inner = inner;
            this.token = token;
        }

        protected override string MethodCore => inner.Method;

        protected override string HostCore => inner.Host;

        protected override string PeerCore => inner.Peer;

        protected override DateTime DeadlineCore => inner.Deadline;

        protected override Metadata RequestHeadersCore => inner.RequestHeaders;

        protected override CancellationToken CancellationTokenCore => token;

        protected override Metadata ResponseTrailersCore => inner.ResponseTrailers;

        protected override Status StatusCore
        {
            get => inner.Status;
            set => inner.Status = value;
        }

        protected override WriteOptions? WriteOptionsCore
        {
            get => inner.WriteOptions;
            set => inner.WriteOptions = value;
        }

        protected override AuthContext AuthContextCore => inner.AuthContext;

        protected override IDictionary<object, object> UserStateCore => inner.UserState;

        protected override ContextPropagationToken CreatePropagationTokenCore(ContextPropagationOptions? options) => inner.CreatePropagationToken(options);

        protected override Task WriteResponseHeadersAsyncCore(Metadata responseHeaders) => inner.WriteResponseHeadersAsync(responseHeaders);
    }
}
