using Grpc.Core;
using Grpc.Net.Client;

namespace MegaNet.Api;

/// <summary>
/// Spreads a client's calls over at most a set number of HTTP/2 connections to one node, each the single connection of
/// a <see cref="GrpcChannel"/> of its own: a call goes to the first connection with a free stream, a new connection
/// opens only when every open one is full, and once the cap is reached a call goes to the least busy connection and
/// waits there for a stream.
/// </summary>
/// <remarks>
/// SocketsHttpHandler with <c>EnableMultipleHttp2Connections</c> opens another connection whenever every stream of the
/// open ones is taken, with no upper bound (<c>MaxConnectionsPerServer</c> counts only HTTP/1.1 connections), and a
/// node refuses connections beyond its <c>MaxConnectionsPerAddress</c>: a client whose calls piled up against a busy
/// node had calls refused, and added connections to the node's load. With it off, a handler keeps one connection and
/// queues calls beyond its streams, so the cap is that many handlers. Filling the first connection before opening a
/// second keeps a client with few calls on one connection: phones behind one carrier NAT share the node's per-address
/// allowance. Calls are counted from start to end (the response's end, a failure or dispose); a stream that outlives
/// its count only makes a call wait on its connection for a moment.
/// </remarks>
internal sealed class ConnectionPool : CallInvoker, IDisposable
{
    /// <summary>The streams a node's connection carries at once (Kestrel's default, which the node keeps).</summary>
    internal const int StreamsPerConnection = 100;

    private readonly Func<GrpcChannel> _open;
    private readonly Lane?[] _lanes;
    private readonly Lock _lock = new();
    private int _count;
    private bool _disposed;

    /// <param name="open">Opens a channel whose handler keeps a single HTTP/2 connection.</param>
    /// <param name="maxConnections">The most connections, 1 or more (<see cref="MegaNetClient"/> checks it).</param>
    public ConnectionPool(Func<GrpcChannel> open, int maxConnections)
    {
        _open = open;
        _lanes = new Lane?[maxConnections];
        // The first now, so that an address the channel cannot take fails here, not at the first call; a channel
        // connects only at its first call.
        _lanes[_count++] = Open();
    }

    public override TResponse BlockingUnaryCall<TRequest, TResponse>(Method<TRequest, TResponse> method, string? host, CallOptions options, TRequest request)
    {
        Lease lease = Take();
        try
        {
            return lease.Invoker.BlockingUnaryCall(method, host, options, request);
        }
        finally
        {
            lease.End();
        }
    }

    /// <summary>Starts a call on a connection taken for it, given back if the start throws.</summary>
    private (TCall Call, Lease Lease) Start<TArgs, TCall>(TArgs args, Func<CallInvoker, TArgs, TCall> start)
    {
        Lease lease = Take();
        try
        {
            return (start(lease.Invoker, args), lease);
        }
        catch
        {
            lease.End();
            throw;
        }
    }

    public override AsyncUnaryCall<TResponse> AsyncUnaryCall<TRequest, TResponse>(Method<TRequest, TResponse> method, string? host, CallOptions options, TRequest request)
    {
        (AsyncUnaryCall<TResponse> call, Lease lease) = Start((method, host, options, request), static (i, a) => i.AsyncUnaryCall(a.method, a.host, a.options, a.request));
        lease.EndWith(call.ResponseAsync);
        // The state-taking constructor keeps the headers task lazy, as Grpc.Net.Client's own calls make it.
        return new AsyncUnaryCall<TResponse>(call.ResponseAsync, static s => ((Leased<AsyncUnaryCall<TResponse>>)s).Call.ResponseHeadersAsync,
            static s => ((Leased<AsyncUnaryCall<TResponse>>)s).Call.GetStatus(), static s => ((Leased<AsyncUnaryCall<TResponse>>)s).Call.GetTrailers(),
            static s => ((Leased<AsyncUnaryCall<TResponse>>)s).Dispose(), new Leased<AsyncUnaryCall<TResponse>>(call, lease));
    }

    public override AsyncServerStreamingCall<TResponse> AsyncServerStreamingCall<TRequest, TResponse>(Method<TRequest, TResponse> method, string? host,
        CallOptions options, TRequest request)
    {
        (AsyncServerStreamingCall<TResponse> call, Lease lease) = Start((method, host, options, request),
            static (i, a) => i.AsyncServerStreamingCall(a.method, a.host, a.options, a.request));
        return new AsyncServerStreamingCall<TResponse>(new EndingReader<TResponse>(call.ResponseStream, lease),
            static s => ((Leased<AsyncServerStreamingCall<TResponse>>)s).Call.ResponseHeadersAsync,
            static s => ((Leased<AsyncServerStreamingCall<TResponse>>)s).Call.GetStatus(),
            static s => ((Leased<AsyncServerStreamingCall<TResponse>>)s).Call.GetTrailers(),
            static s => ((Leased<AsyncServerStreamingCall<TResponse>>)s).Dispose(), new Leased<AsyncServerStreamingCall<TResponse>>(call, lease));
    }

    public override AsyncClientStreamingCall<TRequest, TResponse> AsyncClientStreamingCall<TRequest, TResponse>(Method<TRequest, TResponse> method, string? host,
        CallOptions options)
    {
        (AsyncClientStreamingCall<TRequest, TResponse> call, Lease lease) = Start((method, host, options),
            static (i, a) => i.AsyncClientStreamingCall(a.method, a.host, a.options));
        lease.EndWith(call.ResponseAsync);
        return new AsyncClientStreamingCall<TRequest, TResponse>(call.RequestStream, call.ResponseAsync,
            static s => ((Leased<AsyncClientStreamingCall<TRequest, TResponse>>)s).Call.ResponseHeadersAsync,
            static s => ((Leased<AsyncClientStreamingCall<TRequest, TResponse>>)s).Call.GetStatus(),
            static s => ((Leased<AsyncClientStreamingCall<TRequest, TResponse>>)s).Call.GetTrailers(),
            static s => ((Leased<AsyncClientStreamingCall<TRequest, TResponse>>)s).Dispose(), new Leased<AsyncClientStreamingCall<TRequest, TResponse>>(call, lease));
    }

    public override AsyncDuplexStreamingCall<TRequest, TResponse> AsyncDuplexStreamingCall<TRequest, TResponse>(Method<TRequest, TResponse> method, string? host,
        CallOptions options)
    {
        (AsyncDuplexStreamingCall<TRequest, TResponse> call, Lease lease) = Start((method, host, options),
            static (i, a) => i.AsyncDuplexStreamingCall(a.method, a.host, a.options));
        return new AsyncDuplexStreamingCall<TRequest, TResponse>(call.RequestStream, new EndingReader<TResponse>(call.ResponseStream, lease),
            static s => ((Leased<AsyncDuplexStreamingCall<TRequest, TResponse>>)s).Call.ResponseHeadersAsync,
            static s => ((Leased<AsyncDuplexStreamingCall<TRequest, TResponse>>)s).Call.GetStatus(),
            static s => ((Leased<AsyncDuplexStreamingCall<TRequest, TResponse>>)s).Call.GetTrailers(),
            static s => ((Leased<AsyncDuplexStreamingCall<TRequest, TResponse>>)s).Dispose(), new Leased<AsyncDuplexStreamingCall<TRequest, TResponse>>(call, lease));
    }

    /// <summary>Closes every connection: calls still open fail.</summary>
    public void Dispose()
    {
        Lane?[] lanes;
        lock (_lock)
        {
            _disposed = true;
            lanes = _lanes[.._count];
        }

        foreach (Lane? lane in lanes)
        {
            lane!.Channel.Dispose();
        }
    }

    private Lease Take()
    {
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            Lane? least = null;
            for (int i = 0; i < _count; i++)
            {
                Lane lane = _lanes[i]!;
                if (lane.Calls < StreamsPerConnection)
                {
                    lane.Calls++;
                    return new Lease(this, lane);
                }

                if (least is null || lane.Calls < least.Calls)
                {
                    least = lane;
                }
            }

            if (_count < _lanes.Length)
            {
                least = Open();
                _lanes[_count++] = least;
            }

            least!.Calls++;
            return new Lease(this, least);
        }
    }

    private Lane Open()
    {
        GrpcChannel channel = _open();
        return new Lane(channel, channel.CreateCallInvoker());
    }

    private void Return(Lane lane)
    {
        lock (_lock)
        {
            lane.Calls--;
        }
    }

    private sealed class Lane(GrpcChannel channel, CallInvoker invoker)
    {
        public GrpcChannel Channel { get; } = channel;

        public CallInvoker Invoker { get; } = invoker;

        /// <summary>Calls started on this connection and not yet ended (under the pool's lock).</summary>
        public int Calls { get; set; }
    }

    /// <summary>One call's hold on its connection, given back once, whichever of its ends comes first.</summary>
    private sealed class Lease(ConnectionPool pool, Lane lane)
    {
        private int _ended;

        public CallInvoker Invoker => lane.Invoker;

        public void End()
        {
            if (Interlocked.Exchange(ref _ended, 1) == 0)
            {
                pool.Return(lane);
            }
        }

        public void EndWith(Task response) =>
            _ = response.ContinueWith(static (_, s) => ((Lease)s!).End(), this, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
    }

    private sealed class Leased<TCall>(TCall call, Lease lease)
        where TCall : IDisposable
    {
        public TCall Call { get; } = call;

        public void Dispose()
        {
            lease.End();
            Call.Dispose();
        }
    }

    /// <summary>A response stream that ends its call's lease when it ends or fails.</summary>
    private sealed class EndingReader<T>(IAsyncStreamReader<T> inner, Lease lease) : IAsyncStreamReader<T>
    {
        public T Current => inner.Current;

        public Task<bool> MoveNext(CancellationToken cancellationToken)
        {
            Task<bool> next = inner.MoveNext(cancellationToken);
            if (next.IsCompletedSuccessfully)
            {
                if (!next.Result)
                {
                    lease.End();
                }

                return next;
            }

            return Awaited(next);
        }

        private async Task<bool> Awaited(Task<bool> next)
        {
            try
            {
                bool more = await next.ConfigureAwait(false);
                if (!more)
                {
                    lease.End();
                }

                return more;
            }
            catch
            {
                lease.End();
                throw;
            }
        }
    }
}
