using System.Net;
using System.Net.Sockets;
using Grpc.Core;
using MegaNet.Api;
using MegaNet.Api.V1;

namespace MegaNet.Node.Tests;

/// <summary>
/// A node that closes a connection on purpose (HTTP/2 GOAWAY with NO_ERROR: it is stopping or restarting) before it
/// takes a call: <see cref="MegaNetClient"/> reports the call <c>UNAVAILABLE</c>, which says "retry", not the
/// <c>INTERNAL</c> Grpc.Net.Client makes of the GOAWAY's error code. A graceful stop of the real node shows the same
/// race only now and then (<see cref="NodeDurabilityTests"/>); this server closes every connection that way, so the
/// HTTP client's own retries run out every time.
/// </summary>
public sealed class GracefulCloseTests
{
    [Fact]
    public async Task A_call_the_node_closed_the_connection_on_gracefully_ends_unavailable_on_every_kind_of_call()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        using var stop = new CancellationTokenSource();
        var server = new ClosingServer();
        Task serving = server.ServeAsync(listener, stop.Token);
        using var client = new MegaNetClient(new Uri($"http://127.0.0.1:{((IPEndPoint)listener.LocalEndpoint).Port}"),
            options: new MegaNetClientOptions { DefaultDeadline = TimeSpan.FromSeconds(30) });

        using AsyncUnaryCall<StatusResponse> unary = client.Relay.StatusAsync(new StatusRequest());
        AssertGracefulClose(await Assert.ThrowsAsync<RpcException>(() => unary.ResponseAsync));
        AssertGracefulClose(await Assert.ThrowsAsync<RpcException>(() => unary.ResponseHeadersAsync));
        Assert.Equal(StatusCode.Unavailable, unary.GetStatus().StatusCode);
        // The HTTP client did send the call and retry it on new connections before giving up: the status comes from
        // the GOAWAYs, not from a connection that never opened.
        Assert.True(server.HeadersSeen >= 2, $"the server saw {server.HeadersSeen} requests");

        using AsyncServerStreamingCall<MailEvent> subscription = client.Relay.Subscribe(new SubscribeRequest());
        AssertGracefulClose(await Assert.ThrowsAsync<RpcException>(() => subscription.ResponseStream.MoveNext(CancellationToken.None)));
        Assert.Equal(StatusCode.Unavailable, subscription.GetStatus().StatusCode);

        using AsyncDuplexStreamingCall<SubmitRequest, SubmitResult> bulk = client.Relay.SubmitStream();
        AssertGracefulClose(await Assert.ThrowsAsync<RpcException>(() => bulk.ResponseStream.MoveNext(CancellationToken.None)));
        Assert.Equal(StatusCode.Unavailable, bulk.GetStatus().StatusCode);

        await stop.CancelAsync();
        listener.Stop();
        await serving;
    }

    private static void AssertGracefulClose(RpcException e)
    {
        Assert.True(e.StatusCode == StatusCode.Unavailable, $"{e.StatusCode}: {e.Status.Detail}");
        Assert.Contains("graceful close", e.Status.Detail, StringComparison.Ordinal);
        // The original cause stays for whoever debugs it.
        Assert.Contains("NO_ERROR", e.Status.Detail, StringComparison.Ordinal);
    }

    /// <summary>Speaks just enough HTTP/2 to take a request's headers, then says GOAWAY (last stream 0, NO_ERROR) and
    /// closes: the request was not taken, as a stopping node says of a stream that crossed its GOAWAY.</summary>
    private sealed class ClosingServer
    {
        private int _headersSeen;

        public int HeadersSeen => Volatile.Read(ref _headersSeen);

        public async Task ServeAsync(TcpListener listener, CancellationToken cancellationToken)
        {
            var connections = new List<Task>();
            try
            {
                while (true)
                {
                    TcpClient connection = await listener.AcceptTcpClientAsync(cancellationToken);
                    connections.Add(HandleAsync(connection));
                }
            }
            catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException or InvalidOperationException)
            {
                // Stopped (InvalidOperationException: the listener stopped before the next accept began).
            }

            await Task.WhenAll(connections);
        }

        private async Task HandleAsync(TcpClient connection)
        {
            using (connection)
            {
                try
                {
                    NetworkStream stream = connection.GetStream();
                    await stream.ReadExactlyAsync(new byte[24]); // the client's preface
                    await stream.WriteAsync(new byte[] { 0, 0, 0, 4, 0, 0, 0, 0, 0 }); // SETTINGS, none changed
                    byte[] header = new byte[9];
                    while (true)
                    {
                        await stream.ReadExactlyAsync(header);
                        await stream.ReadExactlyAsync(new byte[(header[0] << 16) | (header[1] << 8) | header[2]]);
                        if (header[3] == 1) // HEADERS: a request
                        {
                            break;
                        }
                    }

                    Interlocked.Increment(ref _headersSeen);
                    // GOAWAY: last stream id 0 (none taken), error code NO_ERROR; then the end of what the server sends.
                    await stream.WriteAsync(new byte[] { 0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 });
                    connection.Client.Shutdown(SocketShutdown.Send);
                    byte[] rest = new byte[4096];
                    while (await stream.ReadAsync(rest) > 0)
                    {
                    }
                }
                catch (Exception e) when (e is IOException or SocketException or EndOfStreamException)
                {
                    // The client went away: a connection the gRPC client opened to test reachability, or one it gave up.
                }
            }
        }
    }
}
