using System.Text;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Net.Client;
using MegaNet.Api;
using MegaNet.Api.V1;

namespace MegaNet.Node.Tests;

/// <summary>
/// A SubmitStream request the node cannot read (over the message size limit, or not protobuf) ends the stream with a
/// status that says which request and how many were answered, after the answers to every request before it: those may
/// be stored, and a receipt is the client's only word of that. The stream used to end at once, its queued answers lost
/// (200 written, 0 or 1 receipts back, and 98 or 200 of them stored), and garbage ended it UNKNOWN with a logged error.
/// </summary>
public sealed class SubmitStreamReadFailureTests
{
    [Fact]
    public async Task An_oversize_request_ends_the_stream_after_every_earlier_one_is_answered()
    {
        await using TestNode node = await TestNode.StartAsync();
        using MegaNetClient client = node.Client();
        using Identity alice = Identity.Create(), bob = Identity.Create();
        const int Before = 100;
        var receipts = new List<SubmitResult>();
        RpcException? ended = null;
        // Every wait is bounded, so a node that never ends the stream fails the test with what it got instead of
        // hanging the run (CI once sat here until its 15-minute hang timeout).
        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        using (AsyncDuplexStreamingCall<SubmitRequest, SubmitResult> call = client.Relay.SubmitStream(cancellationToken: deadline.Token))
        {
            Task reader = Task.Run(async () =>
            {
                try
                {
                    await foreach (SubmitResult r in call.ResponseStream.ReadAllAsync())
                    {
                        receipts.Add(r);
                    }
                }
                catch (RpcException e)
                {
                    ended = e;
                }
            });
            for (int i = 0; i < Before; i++)
            {
                await call.RequestStream.WriteAsync(new SubmitRequest { Envelope = Seal(alice, bob, i) }, deadline.Token);
            }

            Envelope huge = Seal(alice, bob, -1);
            huge.SealedPayload = ByteString.CopyFrom(new byte[17 << 20]);

            // Not awaited before the answer: the node stops reading at the oversize message's length prefix, so the
            // write waits on HTTP/2 flow control until the node's reset reaches the client, or the call is disposed.
            Task hugeWrite = call.RequestStream.WriteAsync(new SubmitRequest { Envelope = huge }, deadline.Token);
            bool answered = await Task.WhenAny(reader, Task.Delay(TimeSpan.FromSeconds(60))) == reader;
            Assert.True(answered, $"The node did not end the stream within 60 s of the oversize request; {receipts.Count} of {Before} receipts had come back.");
            await reader;
            try
            {
                await hugeWrite.WaitAsync(TimeSpan.FromSeconds(10));
            }
            catch (Exception e) when (e is RpcException or IOException or InvalidOperationException or OperationCanceledException or TimeoutException)
            {
                // The node ended the call while the message was still going out (or it is still queued: disposing
                // the call below cancels it).
            }
        }

        Assert.NotNull(ended);
        Assert.Equal(StatusCode.ResourceExhausted, ended.StatusCode);
        Assert.Contains($"Request {Before + 1} of this stream could not be read", ended.Status.Detail, StringComparison.Ordinal);
        Assert.Contains($"The {Before} before it were answered", ended.Status.Detail, StringComparison.Ordinal);
        Assert.Equal(Before, receipts.Count);
        Assert.All(receipts, r => Assert.NotNull(r.Receipt));
        Assert.Equal(Before, (await client.Relay.GetTreeHeadAsync(new GetTreeHeadRequest())).TreeSize);
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task A_request_that_is_not_protobuf_is_invalid_argument_and_logs_no_error()
    {
        await using TestNode node = await TestNode.StartAsync();
        using Identity alice = Identity.Create(), bob = Identity.Create();
        using GrpcChannel channel = GrpcChannel.ForAddress(node.Address);
        var raw = new Marshaller<byte[]>(b => b, b => b);
        var method = new Method<byte[], byte[]>(MethodType.DuplexStreaming, "meganet.v1.Relay", "SubmitStream", raw, raw);
        using AsyncDuplexStreamingCall<byte[], byte[]> call = channel.CreateCallInvoker().AsyncDuplexStreamingCall(method, null, new CallOptions(deadline: DateTime.UtcNow.AddMinutes(2)));
        await call.RequestStream.WriteAsync(new SubmitRequest { Envelope = Seal(alice, bob, 0) }.ToByteArray());
        await call.RequestStream.WriteAsync([0xFF, 0xFF, 0xFF]);
        await call.RequestStream.CompleteAsync();
        var answers = new List<SubmitResult>();
        RpcException e = await Assert.ThrowsAsync<RpcException>(async () =>
        {
            await foreach (byte[] answer in call.ResponseStream.ReadAllAsync())
            {
                answers.Add(SubmitResult.Parser.ParseFrom(answer));
            }
        });

        Assert.Equal(StatusCode.InvalidArgument, e.StatusCode);
        Assert.Contains("Request 2 of this stream could not be read", e.Status.Detail, StringComparison.Ordinal);
        Assert.NotNull(Assert.Single(answers).Receipt);
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task A_request_carrying_a_field_version_1_does_not_define_gets_a_refusal_of_its_own_and_the_stream_goes_on()
    {
        await using TestNode node = await TestNode.StartAsync();
        using MegaNetClient client = node.Client();
        using Identity alice = Identity.Create(), bob = Identity.Create();
        // A newer client's field, in the envelope or beside it: found on the wire and dropped in the parse (parsed, such
        // fields cost the node some 50 times their bytes), then refused as any bad envelope is, with a result of its own.
        Envelope extended = Envelope.Parser.ParseFrom([.. Seal(alice, bob, 1).ToByteArray(), 0xF8, 0x07, 0x01]); // field 127, varint 1
        SubmitRequest beside = SubmitRequest.Parser.ParseFrom([.. new SubmitRequest { Envelope = Seal(alice, bob, 2) }.ToByteArray(), 0xF8, 0x07, 0x01]);
        using var deadline = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        using AsyncDuplexStreamingCall<SubmitRequest, SubmitResult> call = client.Relay.SubmitStream(cancellationToken: deadline.Token);
        foreach (SubmitRequest request in new[] { new SubmitRequest { Envelope = Seal(alice, bob, 0) }, new SubmitRequest { Envelope = extended }, beside, new SubmitRequest { Envelope = Seal(alice, bob, 3) } })
        {
            await call.RequestStream.WriteAsync(request, deadline.Token);
        }

        await call.RequestStream.CompleteAsync();
        var answers = new List<SubmitResult>();
        await foreach (SubmitResult answer in call.ResponseStream.ReadAllAsync(deadline.Token))
        {
            answers.Add(answer);
        }

        Assert.Equal(4, answers.Count);
        Assert.NotNull(answers[0].Receipt);
        Assert.Equal((int)StatusCode.InvalidArgument, answers[1].StatusCode);
        Assert.Equal("The SubmitStream request is refused: SubmitRequest.envelope carries field 127 (a varint), which Envelope does not define in protocol version 1: "
            + "no signature covers such a field, so relays refuse it rather than store it. Send only the fields docs/protocol.md defines; nothing was done with it.", answers[1].Error);
        Assert.Equal((int)StatusCode.InvalidArgument, answers[2].StatusCode);
        Assert.StartsWith("The SubmitStream request is refused: SubmitRequest carries field 127 (a varint), which SubmitRequest does not define in protocol version 1: relays refuse it",
            answers[2].Error, StringComparison.Ordinal);
        Assert.NotNull(answers[3].Receipt);
        Assert.Equal(2, (await client.Relay.GetTreeHeadAsync(new GetTreeHeadRequest())).TreeSize);
        node.AssertNoServerErrors();
    }

    private static Envelope Seal(Identity from, Identity to, int i) =>
        EnvelopeFormat.Seal(from, to.Card, Encoding.UTF8.GetBytes($"message {i}"), "text/plain; charset=utf-8", null, DateTimeOffset.UtcNow.AddDays(1), 0);
}
