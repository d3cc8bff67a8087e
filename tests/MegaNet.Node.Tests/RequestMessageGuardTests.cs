using System.Buffers.Binary;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Sockets;
using MegaNet.Node.Hosting;
using Microsoft.Extensions.DependencyInjection;

namespace MegaNet.Node.Tests;

/// <summary>
/// A request message still arriving is held to its method's size limit, a deadline and a memory budget, all decided
/// from its 5-byte prefix. Before, every method took 16 MiB messages, and a client that sent all but the last byte held
/// that memory in the node for good: 1.8 GB for one connection of 100 such streams.
/// </summary>
public sealed class RequestMessageGuardTests
{
    [Theory]
    [InlineData("Submit", (257 << 10) + 1, "takes at most 263,168.")]
    [InlineData("SubmitStream", (257 << 10) + 1, "takes at most 263,168.")]
    [InlineData("Fetch", (64 << 10) + 1, "takes at most 65,536.")]
    [InlineData("VerifyBatch", (16 << 20) + 1, "takes at most 16,777,216.")]
    public async Task A_message_over_its_methods_limit_is_refused_from_its_prefix(string method, int declared, string expected)
    {
        await using TestNode node = await TestNode.StartAsync();
        using HttpClient http = Http(node);
        await using StalledCall call = await StalledCall.StartAsync(http, method, declared, sent: 16);

        (string status, string message) = await call.StatusAsync();
        Assert.Equal("8", status); // RESOURCE_EXHAUSTED, as gRPC answers a message over its limit
        Assert.Contains($"The request message is {declared:N0} bytes; /meganet.v1.Relay/{method} {expected}", message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_refusal_found_ahead_waits_until_the_messages_before_it_are_answered()
    {
        // Three whole SubmitStream requests and an oversize prefix, in one write: the node saw the fourth's prefix while
        // parsing the first and ended the stream at "Request 1".
        await using TestNode node = await TestNode.StartAsync();
        using HttpClient http = Http(node);
        using var stream = new MemoryStream();
        foreach (Api.V1.Envelope e in AdmissionBatchingTests.Seal(3))
        {
            byte[] request = Google.Protobuf.MessageExtensions.ToByteArray(new Api.V1.SubmitRequest { Envelope = e });
            byte[] prefix = new byte[5];
            BinaryPrimitives.WriteUInt32BigEndian(prefix.AsSpan(1), (uint)request.Length);
            stream.Write(prefix);
            stream.Write(request);
        }

        await using StalledCall call = await StalledCall.StartAsync(http, "SubmitStream", (257 << 10) + 1, sent: 16, before: stream.ToArray());
        Assert.Equal(3, await call.ResponseMessagesAsync());
        (string status, string message) = await call.StatusAsync();
        Assert.Equal("8", status);
        Assert.Contains("Request 4 of this stream could not be read: The request message is 263,169 bytes", message, StringComparison.Ordinal);
        Assert.Contains("The 3 before it were answered", message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_message_that_stops_arriving_midway_ends_its_call_and_frees_its_budget()
    {
        await using TestNode node = await TestNode.StartAsync();
        RequestMessageGuard guard = node.Services.GetRequiredService<RequestMessageGuard>();
        using HttpClient http = Http(node);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        // Half of it at once: enough that Kestrel's minimum request rate (240 B/s on average) would not end the call for
        // minutes, as a client that sends all but the last byte of a message at once is not ended for hours.
        await using StalledCall call = await StalledCall.StartAsync(http, "VerifyBatch", 200_000, sent: 100_000);

        (string status, string message) = await call.StatusAsync();
        Assert.Equal("4", status); // DEADLINE_EXCEEDED
        Assert.Contains("A request message of 200,000 bytes began to arrive but was not whole within 10 s plus 1 s per 64 KiB", message, StringComparison.Ordinal);
        // 10 s plus 3 s for its size; never before.
        Assert.True(clock.Elapsed > TimeSpan.FromSeconds(12.9), $"ended after {clock.Elapsed.TotalSeconds:0.0} s");
        await Poll.UntilAsync(() => guard.Arriving == 0, () => "the stalled message's budget to be released");
    }

    [Fact]
    public async Task Messages_still_arriving_from_one_address_are_held_to_a_quarter_of_the_budget()
    {
        // 128 MiB in all: 32 MiB a site, counted by the bytes received. Two 16 MiB messages of which 12 MiB came fit;
        // a third from the same address does not, and is refused as it arrives.
        await using TestNode node = await TestNode.StartAsync(o => o.ArrivingMessageMiB = 128);
        RequestMessageGuard guard = node.Services.GetRequiredService<RequestMessageGuard>();
        using HttpClient http = Http(node);
        const int Declared = 16 << 20, Sent = 12 << 20, Held = 5 + Sent;

        StalledCall first = await StalledCall.StartAsync(http, "VerifyBatch", Declared, Sent);
        await Poll.UntilAsync(() => guard.Arriving == Held, () => $"the first message to be charged {Held:N0} bytes (charged: {guard.Arriving:N0})");
        await using StalledCall second = await StalledCall.StartAsync(http, "VerifyBatch", Declared, Sent);
        try
        {
            await Poll.UntilAsync(() => guard.Arriving == 2 * Held, () => $"the second message to be charged (charged: {guard.Arriving:N0})");
            await using StalledCall third = await StalledCall.StartAsync(http, "VerifyBatch", Declared, Sent);
            (string status, string message) = await third.StatusAsync();
            Assert.Equal("8", status);
            Assert.Contains("The node is receiving too many large messages at once (ArrivingMessageMiB 128, a quarter of it per network address, three quarters of it for VerifyBatch)", message, StringComparison.Ordinal);
            Assert.Equal("1000", third.Header("retry-after-ms"));
            await Poll.UntilAsync(() => guard.Arriving == 2 * Held, () => $"the refused message's bytes to be given back (charged: {guard.Arriving:N0}; first: {first.Describe()}; second: {second.Describe()})");
        }
        finally
        {
            await first.DisposeAsync();
        }

        // The first call gone (its client reset the stream), its bytes are free for the next.
        await Poll.UntilAsync(() => guard.Arriving == Held, () => $"the first message's bytes to be given back (charged: {guard.Arriving:N0})");
        await using StalledCall fourth = await StalledCall.StartAsync(http, "VerifyBatch", Declared, Sent);
        await Poll.UntilAsync(() => guard.Arriving == 2 * Held, () => $"the fourth message to be charged (charged: {guard.Arriving:N0})");
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task Large_messages_stalled_from_many_sites_leave_a_quarter_of_the_budget_to_submissions()
    {
        // 128 MiB: 32 MiB a site, 96 MiB for VerifyBatch messages in all. Three sites each stall two 16 MiB messages
        // of which nearly all came (94.5 MiB); 2 MiB of a fourth site's VerifyBatch message no longer fit (they would
        // in the whole budget: the refusal is what this test shows), while a submission still arriving is taken.
        await using TestNode node = await TestNode.StartAsync(o => o.ArrivingMessageMiB = 128);
        RequestMessageGuard guard = node.Services.GetRequiredService<RequestMessageGuard>();
        const int Declared = 16 << 20, Sent = Declared - (256 << 10), Held = 5 + Sent;
        var clients = new List<HttpClient>();
        var calls = new List<StalledCall>();
        try
        {
            for (int site = 2; site <= 4; site++)
            {
                HttpClient http = Http(node, IPAddress.Parse($"127.0.0.{site}"));
                clients.Add(http);
                for (int i = 0; i < 2; i++)
                {
                    calls.Add(await StalledCall.StartAsync(http, "VerifyBatch", Declared, Sent));
                    int expected = calls.Count;
                    await Poll.UntilAsync(() => guard.Arriving == expected * (long)Held, () => $"message {expected} to be charged (charged: {guard.Arriving:N0})");
                }
            }

            HttpClient fourth = Http(node, IPAddress.Parse("127.0.0.5"));
            clients.Add(fourth);
            await using (StalledCall refused = await StalledCall.StartAsync(fourth, "VerifyBatch", Declared, 2 << 20))
            {
                (string status, string message) = await refused.StatusAsync();
                Assert.Equal("8", status);
                Assert.Contains("three quarters of it for VerifyBatch", message, StringComparison.Ordinal);
            }

            HttpClient submitter = Http(node, IPAddress.Parse("127.0.0.6"));
            clients.Add(submitter);
            await using StalledCall submission = await StalledCall.StartAsync(submitter, "SubmitStream", 200_000, 150_000);
            await Poll.UntilAsync(() => guard.Arriving == (6L * Held) + 5 + 150_000, () => $"the submission to be charged, not refused (charged: {guard.Arriving:N0}; {submission.Describe()})");
        }
        finally
        {
            foreach (StalledCall call in calls)
            {
                await call.DisposeAsync();
            }

            clients.ForEach(c => c.Dispose());
        }
    }

    [Fact]
    public async Task A_submit_stream_ended_for_the_budget_keeps_its_retry_hint()
    {
        // A site's quarter of 128 MiB nearly taken by two stalled 16 MiB messages; then a submit stream's message does
        // not fit. The refusal ends the stream (after the requests before it are answered) with the unary call's hint:
        // the stream's own status kept the code and dropped the trailer.
        await using TestNode node = await TestNode.StartAsync(o => o.ArrivingMessageMiB = 128);
        RequestMessageGuard guard = node.Services.GetRequiredService<RequestMessageGuard>();
        using HttpClient http = Http(node);
        const int Declared = 16 << 20, Sent = Declared - (64 << 10), Held = 5 + Sent;
        await using StalledCall first = await StalledCall.StartAsync(http, "VerifyBatch", Declared, Sent);
        await Poll.UntilAsync(() => guard.Arriving == Held, () => $"the first message to be charged (charged: {guard.Arriving:N0})");
        await using StalledCall second = await StalledCall.StartAsync(http, "VerifyBatch", Declared, Sent);
        await Poll.UntilAsync(() => guard.Arriving == 2 * Held, () => $"the second message to be charged (charged: {guard.Arriving:N0})");

        await using StalledCall streamed = await StalledCall.StartAsync(http, "SubmitStream", 200_000, 199_000);
        (string status, string message) = await streamed.StatusAsync();
        Assert.Equal("8", status);
        Assert.Contains("Request 1 of this stream could not be read: The node is receiving too many large messages at once", message, StringComparison.Ordinal);
        Assert.Equal("1000", streamed.Header("retry-after-ms"));
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task A_compressed_request_is_refused()
    {
        // The size limits are read on the wire: a 64 KiB gzip Ack could inflate to 16 MiB inside the node.
        await using TestNode node = await TestNode.StartAsync();
        using HttpClient http = Http(node);
        using var zipped = new MemoryStream();
        using (var gzip = new System.IO.Compression.GZipStream(zipped, System.IO.Compression.CompressionLevel.Fastest, leaveOpen: true))
        {
            gzip.Write(new byte[1 << 20]); // a megabyte of zeros: about a kilobyte on the wire
        }

        byte[] body = new byte[5 + zipped.Length];
        body[0] = 1; // compressed
        BinaryPrimitives.WriteUInt32BigEndian(body.AsSpan(1), (uint)zipped.Length);
        zipped.ToArray().CopyTo(body, 5);
        var request = new HttpRequestMessage(HttpMethod.Post, "/meganet.v1.Relay/Ack")
        {
            Version = HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
            Content = new ByteArrayContent(body),
        };
        request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/grpc");
        request.Headers.TE.Add(new TransferCodingWithQualityHeaderValue("trailers"));
        request.Headers.Add("grpc-encoding", "gzip");
        using HttpResponseMessage response = await http.SendAsync(request).WaitAsync(TimeSpan.FromMinutes(1));
        string? status = response.Headers.TryGetValues("grpc-status", out IEnumerable<string>? values) || response.TrailingHeaders.TryGetValues("grpc-status", out values) ? values.First() : null;
        string? grpcMessage = response.Headers.TryGetValues("grpc-message", out IEnumerable<string>? m) || response.TrailingHeaders.TryGetValues("grpc-message", out m) ? m.First() : null;
        Assert.True(status == "12", $"grpc-status {status}: {grpcMessage}"); // UNIMPLEMENTED: no compression is supported
        Assert.Contains("Compressed request messages are not accepted", Uri.UnescapeDataString(grpcMessage!), StringComparison.Ordinal);
        node.AssertNoServerErrors();
    }

    /// <summary>A method that takes one request message, given a body without one, with more than one, or ending inside
    /// one (its prefix or its bytes), answers INVALID_ARGUMENT saying so, as it answers a message that is not protobuf.
    /// Grpc.AspNetCore answered INTERNAL ("Incomplete message.", "Additional data after the message received."), which
    /// tells a client the node failed inside and to send the same bytes again; a stream's last message cut short is
    /// INVALID_ARGUMENT too, after the requests before it.</summary>
    [Theory]
    [InlineData("/meganet.v1.Relay/Status", "", "The request carries no message; /meganet.v1.Relay/Status takes exactly one.")]
    [InlineData("/meganet.v1.Relay/Submit", "", "The request carries no message; /meganet.v1.Relay/Submit takes exactly one.")]
    [InlineData("/meganet.v1.Relay/Subscribe", "", "The request carries no message; /meganet.v1.Relay/Subscribe takes exactly one.")]
    [InlineData("/grpc.health.v1.Health/Check", "", "The request carries no message; /grpc.health.v1.Health/Check takes exactly one.")]
    [InlineData("/meganet.v1.Relay/Status", "0000000000" + "0000000000", "The request carries more than one message; /meganet.v1.Relay/Status takes exactly one.")]
    [InlineData("/meganet.v1.Relay/VerifyBatch", "0000000000" + "01", "The request carries more than one message; /meganet.v1.Relay/VerifyBatch takes exactly one.")]
    [InlineData("/meganet.v1.Relay/Subscribe", "0000000000" + "0000000000", "The request carries more than one message; /meganet.v1.Relay/Subscribe takes exactly one.")]
    [InlineData("/meganet.v1.Relay/Fetch", "0000000064" + "00", "The request ended inside a message: its prefix declares 100 bytes, and 1 came.")]
    [InlineData("/meganet.v1.Relay/Submit", "0000", "The request ended inside a message's 5-byte prefix (2 of its bytes came).")]
    [InlineData("/meganet.v1.Relay/SubmitStream", "0000000000" + "0000000003" + "0A00", "Request 2 of this stream could not be read: The request ended inside a message: its prefix declares 3 bytes, and 2 came.")]
    [InlineData("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", "000000", "The request ended inside a message's 5-byte prefix (3 of its bytes came).")]
    public async Task A_body_without_its_one_message_or_ending_inside_a_message_is_invalid_argument(string path, string bodyHex, string expected)
    {
        await using TestNode node = await TestNode.StartAsync();
        using HttpClient http = Http(node);
        var request = new HttpRequestMessage(HttpMethod.Post, path)
        {
            Version = HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
            Content = new ByteArrayContent(Convert.FromHexString(bodyHex)),
        };
        request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/grpc");
        request.Headers.TE.Add(new TransferCodingWithQualityHeaderValue("trailers"));
        using HttpResponseMessage response = await http.SendAsync(request).WaitAsync(TimeSpan.FromMinutes(1));
        await response.Content.ReadAsByteArrayAsync().WaitAsync(TimeSpan.FromMinutes(1));
        string? status = response.Headers.TryGetValues("grpc-status", out IEnumerable<string>? values) || response.TrailingHeaders.TryGetValues("grpc-status", out values) ? values.First() : null;
        string? grpcMessage = response.Headers.TryGetValues("grpc-message", out IEnumerable<string>? m) || response.TrailingHeaders.TryGetValues("grpc-message", out m) ? Uri.UnescapeDataString(m.First()) : null;
        Assert.True(status == "3", $"grpc-status {status}: {grpcMessage}"); // INVALID_ARGUMENT
        Assert.StartsWith(expected, grpcMessage, StringComparison.Ordinal);
        RequestMessageGuard guard = node.Services.GetRequiredService<RequestMessageGuard>();
        await Poll.UntilAsync(() => guard.Arriving == 0, () => "the cut message's budget to be released");
        node.AssertNoServerErrors();
    }

    /// <summary>A gRPC method's request whose Content-Type is not gRPC's gets HTTP 415, as gRPC asks, with
    /// INVALID_ARGUMENT: Grpc.AspNetCore's status was INTERNAL, which tells a client the node failed inside.</summary>
    [Theory]
    [InlineData("application/json")]
    [InlineData("text/plain")]
    [InlineData("application/grpc-web")]
    [InlineData(null)]
    public async Task A_request_that_is_not_grpc_is_invalid_argument(string? contentType)
    {
        await using TestNode node = await TestNode.StartAsync();
        using HttpClient http = Http(node);
        var request = new HttpRequestMessage(HttpMethod.Post, "/meganet.v1.Relay/Status")
        {
            Version = HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
            Content = new ByteArrayContent(new byte[5]),
        };
        request.Content.Headers.ContentType = contentType is null ? null : MediaTypeHeaderValue.Parse(contentType);
        request.Headers.TE.Add(new TransferCodingWithQualityHeaderValue("trailers"));
        using HttpResponseMessage response = await http.SendAsync(request).WaitAsync(TimeSpan.FromMinutes(1));
        Assert.Equal(HttpStatusCode.UnsupportedMediaType, response.StatusCode);
        Assert.Equal("3", response.Headers.GetValues("grpc-status").Single());
        Assert.Equal(RequestMessageGuard.NotGrpcContentType, response.Headers.GetValues("grpc-message").Single());

        // gRPC's own content types still reach the method.
        var grpc = new HttpRequestMessage(HttpMethod.Post, "/meganet.v1.Relay/Status")
        {
            Version = HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
            Content = new ByteArrayContent(new byte[5]),
        };
        grpc.Content.Headers.ContentType = MediaTypeHeaderValue.Parse("application/grpc+proto");
        grpc.Headers.TE.Add(new TransferCodingWithQualityHeaderValue("trailers"));
        using HttpResponseMessage answered = await http.SendAsync(grpc).WaitAsync(TimeSpan.FromMinutes(1));
        await answered.Content.ReadAsByteArrayAsync();
        Assert.Equal("0", answered.TrailingHeaders.GetValues("grpc-status").Single());
        node.AssertNoServerErrors();
    }

    private static HttpClient Http(TestNode node, IPAddress? from = null) =>
        new(new SocketsHttpHandler
        {
            EnableMultipleHttp2Connections = true,
            // From another loopback address: another site to the node.
            ConnectCallback = from is null ? null : async (context, ct) =>
            {
                var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
                try
                {
                    socket.Bind(new IPEndPoint(from, 0));
                    await socket.ConnectAsync(context.DnsEndPoint, ct);
                    return new NetworkStream(socket, ownsSocket: true);
                }
                catch
                {
                    socket.Dispose();
                    throw;
                }
            },
        })
        { BaseAddress = node.Address, Timeout = TimeSpan.FromMinutes(2) };

    /// <summary>A gRPC call whose request declares a message of some size, sends part of it, then waits.</summary>
    private sealed class StalledCall : IAsyncDisposable
    {
        private readonly CancellationTokenSource _end = new();
        private readonly Task<HttpResponseMessage> _response;

        private StalledCall(HttpClient http, string method, int declared, int sent, byte[]? before)
        {
            var request = new HttpRequestMessage(HttpMethod.Post, $"/meganet.v1.Relay/{method}")
            {
                Version = HttpVersion.Version20,
                VersionPolicy = HttpVersionPolicy.RequestVersionExact,
                Content = new PartialContent(before ?? [], declared, sent, _end.Token),
            };
            request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/grpc");
            request.Headers.TE.Add(new TransferCodingWithQualityHeaderValue("trailers"));
            _response = http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, _end.Token);
        }

        /// <summary>Sends <paramref name="before"/> (whole messages, framed), then the prefix of a message of
        /// <paramref name="declared"/> bytes and <paramref name="sent"/> bytes of it, in one write, and waits.</summary>
        public static Task<StalledCall> StartAsync(HttpClient http, string method, int declared, int sent, byte[]? before = null) =>
            Task.FromResult(new StalledCall(http, method, declared, sent, before));

        /// <summary>The response's messages (gRPC frames), read to the end of the response.</summary>
        public async Task<int> ResponseMessagesAsync()
        {
            HttpResponseMessage response = await _response.WaitAsync(TimeSpan.FromMinutes(1));
            byte[] body = await response.Content.ReadAsByteArrayAsync().WaitAsync(TimeSpan.FromMinutes(1));
            int count = 0;
            for (int at = 0; at + 5 <= body.Length; at += 5 + (int)BinaryPrimitives.ReadUInt32BigEndian(body.AsSpan(at + 1)))
            {
                count++;
            }

            return count;
        }

        /// <summary>grpc-status and grpc-message, from the headers of a trailers-only answer or from the trailers.</summary>
        public async Task<(string Status, string Message)> StatusAsync()
        {
            HttpResponseMessage response = await _response.WaitAsync(TimeSpan.FromMinutes(1));
            if (Header("grpc-status") is null)
            {
                await response.Content.ReadAsByteArrayAsync().WaitAsync(TimeSpan.FromMinutes(1));
            }

            return (Header("grpc-status") ?? "(none)", Uri.UnescapeDataString(Header("grpc-message") ?? string.Empty));
        }

        public string Describe() => _response.IsCompleted ? (_response.IsCompletedSuccessfully ? $"answered {(int)_response.Result.StatusCode} grpc-status {Header("grpc-status")} {Header("grpc-message")}" : $"failed {_response.Exception?.InnerException?.Message}") : "waiting";

        public string? Header(string name)
        {
            HttpResponseMessage response = _response.Result;
            return response.Headers.TryGetValues(name, out IEnumerable<string>? values) || response.TrailingHeaders.TryGetValues(name, out values)
                ? values.First()
                : null;
        }

        public async ValueTask DisposeAsync()
        {
            // Cleanup of a call stalled on purpose: however its client gives up on it (a cancelled send, a reset
            // stream, a connection the node has closed), that is not what a test is about.
            try
            {
                await _end.CancelAsync();
                (await _response).Dispose();
            }
            catch (Exception e) when (e is OperationCanceledException or HttpRequestException or IOException or AggregateException)
            {
            }

            _end.Dispose();
        }

        private sealed class PartialContent(byte[] before, int declared, int sent, CancellationToken end) : HttpContent
        {
            protected override Task SerializeToStreamAsync(Stream stream, TransportContext? context) => SerializeToStreamAsync(stream, context, CancellationToken.None);

            protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context, CancellationToken cancellationToken)
            {
                byte[] prefix = new byte[before.Length + 5 + sent];
                before.CopyTo(prefix, 0);
                BinaryPrimitives.WriteUInt32BigEndian(prefix.AsSpan(before.Length + 1), (uint)declared);
                await stream.WriteAsync(prefix, cancellationToken);
                await stream.FlushAsync(cancellationToken);
                using var both = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, end);
                await Task.Delay(Timeout.Infinite, both.Token);
            }

            protected override bool TryComputeLength(out long length)
            {
                length = 0;
                return false;
            }
        }
    }
}
