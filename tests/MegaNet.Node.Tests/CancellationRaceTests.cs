using Grpc.Core;
using Grpc.Core.Interceptors;
using MegaNet.Api;

namespace MegaNet.Node.Tests;

/// <summary>
/// A call its caller cancels can fail, when the cancellation races the read of the response, with Grpc.Net.Client's
/// INTERNAL "Error starting gRPC call. ObjectDisposedException: ... 'HttpConnectionResponseContent'" (seen in
/// ClientChurnTests, 2026-12-04; grpc/grpc-dotnet#1547): MegaNetClient reports it as the CANCELLED it is, and only then.
/// </summary>
public sealed class CancellationRaceTests
{
    private static readonly Marshaller<string> Text = Marshallers.Create(s => System.Text.Encoding.UTF8.GetBytes(s), b => System.Text.Encoding.UTF8.GetString(b));
    private static readonly Method<string, string> Unary = new(MethodType.Unary, "test", "Unary", Text, Text);

    private static RpcException Race() => new(new Status(StatusCode.Internal, "Error starting gRPC call. ObjectDisposedException: Cannot access a disposed object.",
        new ObjectDisposedException("System.Net.Http.HttpConnectionResponseContent")));

    private static async Task<RpcException> CallAsync(RpcException failure, CancellationToken cancellation)
    {
        var interceptor = new GracefulCloseInterceptor();
        AsyncUnaryCall<string> call = interceptor.AsyncUnaryCall("request", new ClientInterceptorContext<string, string>(Unary, null, new CallOptions(cancellationToken: cancellation)),
            (_, _) => new AsyncUnaryCall<string>(Task.FromException<string>(failure), Task.FromResult(new Metadata()), () => Status.DefaultSuccess, () => [], () => { }));
        return await Assert.ThrowsAsync<RpcException>(() => call.ResponseAsync);
    }

    [Fact]
    public async Task A_cancelled_call_that_failed_on_a_disposed_response_is_cancelled()
    {
        using var cancelled = new CancellationTokenSource();
        await cancelled.CancelAsync();
        RpcException e = await CallAsync(Race(), cancelled.Token);
        Assert.Equal(StatusCode.Cancelled, e.StatusCode);
        Assert.IsType<ObjectDisposedException>(e.Status.DebugException);
    }

    [Fact]
    public async Task Without_the_callers_cancellation_or_that_cause_the_status_stays()
    {
        // Not cancelled: a disposed object is a fault, and says so.
        Assert.Equal(StatusCode.Internal, (await CallAsync(Race(), CancellationToken.None)).StatusCode);

        // Cancelled, but another cause: not this race.
        using var cancelled = new CancellationTokenSource();
        await cancelled.CancelAsync();
        var other = new RpcException(new Status(StatusCode.Internal, "something else", new InvalidOperationException("other")));
        Assert.Same(other, await CallAsync(other, cancelled.Token));
    }
}
