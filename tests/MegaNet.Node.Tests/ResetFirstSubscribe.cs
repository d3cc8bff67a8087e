using MegaNet.Api.V1;
using Microsoft.Extensions.DependencyInjection;

namespace MegaNet.Node.Tests;

/// <summary>Resets the first Subscribe's stream with CANCEL (0x8) when told (<see cref="Now"/>), as the node's own stop and
/// lifetime ends do to a subscriber that is not reading.</summary>
internal sealed class ResetFirstSubscribe : Grpc.Core.Interceptors.Interceptor
{
    private int _calls;

    /// <summary>Set when the stream is to be reset.</summary>
    public TaskCompletionSource Now { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>For <see cref="TestNode.StartAsync"/>'s services: this instance as the node's innermost interceptor.</summary>
    public void AddTo(IServiceCollection services)
    {
        services.AddSingleton(this);
        services.Configure<Grpc.AspNetCore.Server.GrpcServiceOptions>(o => o.Interceptors.Add<ResetFirstSubscribe>());
    }

    public override async Task ServerStreamingServerHandler<TRequest, TResponse>(TRequest request, Grpc.Core.IServerStreamWriter<TResponse> responseStream,
        Grpc.Core.ServerCallContext context, Grpc.Core.ServerStreamingServerMethod<TRequest, TResponse> continuation)
    {
        if (request is not SubscribeRequest || Interlocked.Increment(ref _calls) > 1)
        {
            await continuation(request, responseStream, context);
            return;
        }

        // The subscription runs as the node's own until told; then its stream is reset under it, and the subscription
        // ends as one whose client went away.
        Task subscription = continuation(request, responseStream, context);
        if (await Task.WhenAny(subscription, Now.Task.WaitAsync(TimeSpan.FromMinutes(2))) != subscription)
        {
            Grpc.Core.ServerCallContextExtensions.GetHttpContext(context).Features.Get<Microsoft.AspNetCore.Http.Features.IHttpResetFeature>()!.Reset(0x8);
        }

        await subscription;
    }
}
