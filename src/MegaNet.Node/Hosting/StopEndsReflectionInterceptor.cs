using Grpc.Core;
using Grpc.Core.Interceptors;
using Microsoft.Extensions.Hosting;

namespace MegaNet.Node.Hosting;

/// <summary>
/// Ends a server-reflection stream when the node begins to stop, as if its client had finished: Grpc.Reflection's
/// <c>ServerReflectionInfo</c> reads requests until the client ends the stream and does not watch the host, so a
/// client that kept one open held every stop for the host's whole shutdown timeout (30 s), after which Kestrel aborted
/// it. The relay's own streams end on <see cref="IHostApplicationLifetime.ApplicationStopping"/> themselves, and health
/// <c>Watch</c> ends on the host's stop in Grpc.AspNetCore.HealthChecks. Registered for the reflection service alone.
/// </summary>
internal sealed class StopEndsReflectionInterceptor(IHostApplicationLifetime lifetime) : Interceptor
{
    /// <inheritdoc/>
    public override Task DuplexStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream,
        IServerStreamWriter<TResponse> responseStream, ServerCallContext context, DuplexStreamingServerMethod<TRequest, TResponse> continuation) =>
        continuation(new EndOnStop<TRequest>(requestStream, lifetime.ApplicationStopping), responseStream, context);

    /// <summary>A request stream that ends (no more requests) once <paramref name="stopping"/> is cancelled.</summary>
    private sealed class EndOnStop<T>(IAsyncStreamReader<T> inner, CancellationToken stopping) : IAsyncStreamReader<T>
    {
        public T Current => inner.Current;

        public async Task<bool> MoveNext(CancellationToken cancellationToken)
        {
            if (stopping.IsCancellationRequested)
            {
                return false;
            }

            using var either = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, stopping);
            try
            {
                return await inner.MoveNext(either.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (stopping.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
            {
                return false;
            }
        }
    }
}
