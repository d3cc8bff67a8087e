using Grpc.Core;
using Grpc.Core.Interceptors;
using MegaNet.Api;

namespace MegaNet.Node.Tests;

/// <summary>
/// A call its caller cancels can fail, when the cancellation races the read of the response, with Grpc.Net.Client's
/// INTERNAL "Error starting gRPC call. ObjectDisposedException: ... 'HttpConnectionResponseContent'" (seen in
/// ClientChurnTests, 2026-12-04; grpc/grpc-dotnet#1547), or, racing the sending of the request, with its UNAVAILABLE
/// "IOException: The request was aborted.": MegaNetClient reports either as the CANCELLED it is, and only then.
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

    private static async Task<RpcException> CancelledCallAsync(RpcException failure)
    {
        using var cancelled = new CancellationTokenSource();
        await cancelled.CancelAsync();
        return await CallAsync(failure, cancelled.Token);
    }

    [Fact]
    public async Task A_cancelled_call_that_failed_on_a_disposed_response_is_cancelled()
    {
        RpcException e = await CancelledCallAsync(Race());
        Assert.Equal(StatusCode.Cancelled, e.StatusCode);
        Assert.IsType<ObjectDisposedException>(e.Status.DebugException);
    }

    /// <summary>What Grpc.Net.Client made of a Fetch cancelled while its request was being sent (1 of 5,400 cancelled at
    /// random moments against a live node; 24 in a 47-minute soak): the stream the cancellation aborted, as
    /// UNAVAILABLE, which a caller takes for the node failing.</summary>
    private static RpcException Aborted() => new(new Status(StatusCode.Unavailable, "Error starting gRPC call. IOException: The request was aborted.",
        new IOException("The request was aborted.")));

    [Fact]
    public async Task A_cancelled_call_that_failed_on_the_stream_its_cancellation_aborted_is_cancelled()
    {
        RpcException e = await CancelledCallAsync(Aborted());
        Assert.Equal(StatusCode.Cancelled, e.StatusCode);
        Assert.IsType<IOException>(e.Status.DebugException);

        // The same for an HTTP/2 reset that came after the cancellation (Kestrel refuses new streams with
        // ENHANCE_YOUR_CALM while those of cancelled calls still run).
        var calm = new RpcException(new Status(StatusCode.ResourceExhausted, "Error starting gRPC call.",
            new HttpRequestException("The HTTP/2 server reset the stream.", new HttpProtocolException(0xb, "ENHANCE_YOUR_CALM", null))));
        Assert.Equal(StatusCode.Cancelled, (await CancelledCallAsync(calm)).StatusCode);

        // Not cancelled: the connection or the node failed, and the call says so.
        Assert.Equal(StatusCode.Unavailable, (await CallAsync(Aborted(), CancellationToken.None)).StatusCode);

        // The node's own UNAVAILABLE (from its trailers: no exception behind it) stays, cancelled or not.
        var fromNode = new RpcException(new Status(StatusCode.Unavailable, "The node is shutting down"));
        Assert.Same(fromNode, await CancelledCallAsync(fromNode));
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

    /// <summary>What Grpc.Net.Client makes of the node's RST_STREAM with CANCEL (its stop, or a subscription's lifetime
    /// end, giving up on writes the client did not read): CANCELLED, as if the caller had cancelled.</summary>
    private static RpcException NodeCancel() => new(new Status(StatusCode.Cancelled,
        "Error reading next message. HttpProtocolException: The HTTP/2 server reset the stream. HTTP/2 error code 'CANCEL' (0x8).",
        new HttpProtocolException(0x8, "The HTTP/2 server reset the stream. HTTP/2 error code 'CANCEL' (0x8).", null)));

    [Fact]
    public async Task The_nodes_cancel_reset_is_unavailable_unless_the_caller_cancelled()
    {
        RpcException e = await CallAsync(NodeCancel(), CancellationToken.None);
        Assert.Equal(StatusCode.Unavailable, e.StatusCode);
        Assert.StartsWith("The node reset the stream (HTTP/2 CANCEL)", e.Status.Detail, StringComparison.Ordinal);
        Assert.IsType<HttpProtocolException>(e.Status.DebugException);

        // The caller cancelled too: its cancellation is what it sees.
        Assert.Equal(StatusCode.Cancelled, (await CancelledCallAsync(NodeCancel())).StatusCode);

        // A CANCELLED status with another reset code behind it is left as it is.
        var other = new RpcException(new Status(StatusCode.Cancelled, "reset", new HttpProtocolException(0x2, "INTERNAL_ERROR", null)));
        Assert.Same(other, await CallAsync(other, CancellationToken.None));
    }
}
