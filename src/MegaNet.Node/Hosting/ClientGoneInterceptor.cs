using Grpc.Core;
using Grpc.Core.Interceptors;

namespace MegaNet.Node.Hosting;

/// <summary>
/// Ends a streaming call whose client has gone with CANCELLED (an information line) instead of the exception the
/// stream threw: Grpc.AspNetCore refuses reads and writes of an aborted request with InvalidOperationException ("Can't
/// read messages after the request is complete") or IOException, and logs those as server errors unless the request's
/// abort token is already cancelled, which Kestrel does on the thread pool. It covers every service the node maps:
/// the relay's Subscribe (a write to a subscriber that left), Grpc's reflection (logged in 2 of 3 probe runs of 150
/// cancelled calls) and health Watch. SubmitStream also catches it itself, since it still answers what it had read.
/// </summary>
internal sealed class ClientGoneInterceptor : Interceptor
{
    /// <inheritdoc/>
    public override async Task ServerStreamingServerHandler<TRequest, TResponse>(TRequest request, IServerStreamWriter<TResponse> responseStream,
        ServerCallContext context, ServerStreamingServerMethod<TRequest, TResponse> continuation)
    {
        try
        {
            await continuation(request, responseStream, context).ConfigureAwait(false);
        }
        catch (Exception e) when (Gone(e, context))
        {
            throw Cancelled();
        }
    }

    /// <inheritdoc/>
    public override async Task<TResponse> ClientStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream,
        ServerCallContext context, ClientStreamingServerMethod<TRequest, TResponse> continuation)
    {
        try
        {
            return await continuation(requestStream, context).ConfigureAwait(false);
        }
        catch (Exception e) when (Gone(e, context))
        {
            throw Cancelled();
        }
    }

    /// <inheritdoc/>
    public override async Task DuplexStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream,
        IServerStreamWriter<TResponse> responseStream, ServerCallContext context, DuplexStreamingServerMethod<TRequest, TResponse> continuation)
    {
        try
        {
            await continuation(requestStream, responseStream, context).ConfigureAwait(false);
        }
        catch (Exception e) when (Gone(e, context))
        {
            throw Cancelled();
        }
    }

    private static bool Gone(Exception e, ServerCallContext context) => e is InvalidOperationException or IOException && ClientGone(context);

    /// <summary>True once the client has gone (reset the stream or closed the connection) or the call's deadline has
    /// passed (Grpc.AspNetCore has then answered DEADLINE_EXCEEDED itself). The request's abort token is read as well as
    /// the call's, which is linked to it and may be cancelled a moment later.</summary>
    internal static bool ClientGone(ServerCallContext context) =>
        context.CancellationToken.IsCancellationRequested || context.GetHttpContext().RequestAborted.IsCancellationRequested;

    private static RpcException Cancelled() => new(new Status(StatusCode.Cancelled, "The client went away during the call."));
}
