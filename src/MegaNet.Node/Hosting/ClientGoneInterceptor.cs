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
/// <remarks>Kestrel poisons an HTTP/2 stream's body as soon as its client resets it, but cancels the request's abort
/// token a moment later, on the thread pool: a read that failed with the reset (an IOException, or Kestrel's
/// ConnectionAbortedException, an OperationCanceledException) may reach this handler before the token says the client
/// went, and Grpc.AspNetCore, which reads the same token, then logs it as a server error (a reflection stream, once
/// under load). So a call that ended so waits up to <see cref="AbortLag"/> for the token before its exception is
/// taken for a server error.</remarks>
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
        catch (Exception e) when (FailsAsReset(e))
        {
            if (!await GoneAsync(context).ConfigureAwait(false))
            {
                throw;
            }

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
        catch (Exception e) when (FailsAsReset(e))
        {
            if (!await GoneAsync(context).ConfigureAwait(false))
            {
                throw;
            }

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
        catch (Exception e) when (FailsAsReset(e))
        {
            if (!await GoneAsync(context).ConfigureAwait(false))
            {
                throw;
            }

            throw Cancelled();
        }
    }

    /// <summary>Whether <paramref name="e"/> is what a read or write of a stream its client reset (or left) throws:
    /// Grpc.AspNetCore's InvalidOperationException, an IOException, or Kestrel's ConnectionAbortedException (an
    /// OperationCanceledException).</summary>
    internal static bool FailsAsReset(Exception e) => e is InvalidOperationException or IOException or OperationCanceledException;

    /// <summary>How long a call whose stream failed as a reset one does waits for Kestrel's word that its client went.
    /// Only calls that failed wait, and only those whose client is still there, by the token, wait it all.</summary>
    internal static readonly TimeSpan AbortLag = TimeSpan.FromSeconds(2);

    /// <summary>Whether the client went, once Kestrel has said so (up to <see cref="AbortLag"/> after the call failed).</summary>
    private static async Task<bool> GoneAsync(ServerCallContext context)
    {
        if (!ClientGone(context))
        {
            await Task.Delay(AbortLag, context.GetHttpContext().RequestAborted).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        }

        return ClientGone(context);
    }

    /// <summary>True once the client has gone (reset the stream or closed the connection) or the call's deadline has
    /// passed (Grpc.AspNetCore has then answered DEADLINE_EXCEEDED itself). The request's abort token is read as well as
    /// the call's, which is linked to it and may be cancelled a moment later.</summary>
    internal static bool ClientGone(ServerCallContext context) =>
        context.CancellationToken.IsCancellationRequested || context.GetHttpContext().RequestAborted.IsCancellationRequested;

    private static RpcException Cancelled() => new(new Status(StatusCode.Cancelled, "The client went away during the call."));
}
