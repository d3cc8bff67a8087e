using System.Text;
using Google.Protobuf;
using Grpc.Core;
using MegaNet.Api;
using MegaNet.Api.V1;
using MegaNet.Node.Services;

namespace MegaNet.Node.Tests;

/// <summary>
/// <c>SubmitBatchStream</c>: many envelopes per request, a result per envelope in the request's order, requests
/// answered in order; each envelope is admitted as a <c>Submit</c> of its own would be (its signature, expiry, replay
/// and token bucket), and a request the node will not take ends the stream after every request before it is answered.
/// </summary>
public sealed class SubmitBatchStreamTests
{
    [Fact]
    public async Task Every_envelope_gets_its_own_answer_in_order_and_only_the_good_ones_are_stored()
    {
        await using TestNode node = await TestNode.StartAsync();
        using MegaNetClient client = node.Client();
        using Identity alice = Identity.Create(), bob = Identity.Create();

        Envelope good0 = Seal(alice, bob, 0), good1 = Seal(alice, bob, 1), good2 = Seal(alice, bob, 2);
        Envelope badSignature = Seal(alice, bob, 3);
        byte[] signature = badSignature.Signature.ToByteArray();
        signature[5] ^= 1;
        badSignature.Signature = ByteString.CopyFrom(signature);
        Envelope expired = Seal(alice, bob, 4);
        expired.ExpiresUnixMs = DateTimeOffset.UtcNow.AddMinutes(-1).ToUnixTimeMilliseconds();
        expired.Signature = ByteString.CopyFrom(alice.SignWithSendingKeyFor(expired.Recipient.Span, EnvelopeFormat.SigningBytes(expired)));

        // Three requests: a mixed one, an empty one, and one that replays the first request's first envelope.
        List<SubmitBatchResult> answers = await StreamRequestsAsync(client, [[good0, badSignature, good1, expired], [], [good2, good0]]);

        Assert.Equal([4, 0, 2], answers.Select(a => a.Results.Count));
        SubmitResult[] first = [.. answers[0].Results];
        Assert.NotNull(first[0].Receipt);
        Assert.Equal(EnvelopeFormat.EnvelopeId(good0), first[0].Receipt.EnvelopeId.ToByteArray());
        Assert.Equal((int)StatusCode.InvalidArgument, first[1].StatusCode);
        Assert.Null(first[1].Receipt);
        Assert.Equal(EnvelopeFormat.EnvelopeId(good1), first[2].Receipt.EnvelopeId.ToByteArray());
        Assert.Equal((int)StatusCode.InvalidArgument, first[3].StatusCode);
        Assert.Contains("expired", first[3].Error, StringComparison.Ordinal);

        SubmitResult[] third = [.. answers[2].Results];
        Assert.Equal(EnvelopeFormat.EnvelopeId(good2), third[0].Receipt.EnvelopeId.ToByteArray());
        Assert.False(third[0].Receipt.Duplicate);
        Assert.True(third[1].Receipt.Duplicate);
        Assert.Equal(first[0].Receipt.LogIndex, third[1].Receipt.LogIndex);

        // Three envelopes stored, each once.
        Assert.Equal(3, (await client.Relay.GetTreeHeadAsync(new GetTreeHeadRequest())).TreeSize);
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task Batches_larger_than_the_stream_window_are_all_answered()
    {
        // A window of 4 envelopes and requests of 10: each request alone is over it, and the stream must still move
        // (one request at a time) rather than wait for room that never comes.
        await using TestNode node = await TestNode.StartAsync(o => o.StreamWindow = 4);
        using MegaNetClient client = node.Client();
        using Identity alice = Identity.Create(), bob = Identity.Create();
        List<List<Envelope>> requests = [.. Enumerable.Range(0, 6).Select(r => Enumerable.Range(0, 10).Select(i => Seal(alice, bob, (r * 10) + i)).ToList())];

        List<SubmitBatchResult> answers = await StreamRequestsAsync(client, requests);

        Assert.Equal(6, answers.Count);
        Assert.All(answers.SelectMany(a => a.Results), r => Assert.NotNull(r.Receipt));
        Assert.Equal(
            requests.SelectMany(r => r).Select(e => Convert.ToHexString(EnvelopeFormat.EnvelopeId(e))),
            answers.SelectMany(a => a.Results).Select(r => Convert.ToHexString(r.Receipt.EnvelopeId.Span)));
        Assert.Equal(60, (await client.Relay.GetTreeHeadAsync(new GetTreeHeadRequest())).TreeSize);
    }

    /// <summary>Empty batch requests (five bytes each on the wire) count against the stream window: while the client
    /// leaves the answers unread, the node stops reading them once the answers' flow-control window and its own are
    /// full, instead of queueing an answer for every five bytes without end.</summary>
    [Fact]
    public async Task Empty_requests_count_against_the_stream_window()
    {
        await using TestNode node = await TestNode.StartAsync(o => o.StreamWindow = 4);
        // The answers' window stays at its first 64 KiB: this client never reads them.
        using var http = new HttpClient(new SocketsHttpHandler { EnableMultipleHttp2Connections = false, InitialHttp2StreamWindowSize = 65_535 }) { BaseAddress = node.Address };
        var body = new System.IO.Pipelines.Pipe();
        var request = new HttpRequestMessage(HttpMethod.Post, "/meganet.v1.Relay/SubmitBatchStream")
        {
            Version = System.Net.HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
            Content = new StreamContent(body.Reader.AsStream()),
        };
        request.Content.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/grpc");
        request.Headers.TE.Add(new System.Net.Http.Headers.TransferCodingWithQualityHeaderValue("trailers"));
        using var cancel = new CancellationTokenSource();
        Task<HttpResponseMessage> call = http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancel.Token);

        // 13,107 empty requests a chunk (gRPC framing: not compressed, length 0). Answered without end, 4 MiB of them
        // would all be read; held to the window, the writes stop after about 1 MiB (the answers' 64 KiB, then what
        // Kestrel buffers of the request, 768 KiB, and the pipe's 64 KiB).
        byte[] chunk = new byte[13_107 * 5];
        int written = 0;
        bool stalled = false;
        for (; written < 64 && !stalled; written++)
        {
            ValueTask<System.IO.Pipelines.FlushResult> write = body.Writer.WriteAsync(chunk);
            stalled = !write.IsCompleted && await Task.WhenAny(write.AsTask(), Task.Delay(TimeSpan.FromSeconds(5))) is not Task<System.IO.Pipelines.FlushResult>;
        }

        Assert.True(stalled, $"all {written * chunk.Length:N0} bytes of empty requests were read while none of their answers was");
        Assert.InRange(written * chunk.Length, 64 * 1024, 2 << 20);

        // The node serves others meanwhile, and lets the stream go without a server error.
        using MegaNetClient client = node.Client();
        Assert.Equal(0L, (await client.Relay.GetTreeHeadAsync(new GetTreeHeadRequest())).TreeSize);
        await cancel.CancelAsync();
        await body.Writer.CompleteAsync();
        try
        {
            (await call).Dispose();
        }
        catch (OperationCanceledException)
        {
        }

        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task A_request_over_the_envelope_limit_ends_the_stream_after_the_earlier_ones_and_stores_none_of_it()
    {
        await using TestNode node = await TestNode.StartAsync(TestNode.Unthrottled);
        using MegaNetClient client = node.Client();
        Assert.Equal(RelayService.MaxBatchEnvelopes, (await client.Relay.StatusAsync(new StatusRequest())).Limits.MaxBatchEnvelopes);
        using Identity alice = Identity.Create(), bob = Identity.Create();
        List<Envelope> fine = [.. Enumerable.Range(0, 3).Select(i => Seal(alice, bob, i))];
        // Real envelopes are at least 1 KiB, so the byte limit stops a request long before this many; the count
        // limit is for small junk, which would otherwise cost an admission each. One over it, of empty envelopes.
        List<Envelope> tooMany = [.. Enumerable.Range(0, RelayService.MaxBatchEnvelopes + 1).Select(_ => new Envelope { Version = 1 })];

        var answers = new List<SubmitBatchResult>();
        RpcException ended = await Assert.ThrowsAsync<RpcException>(() => StreamRequestsAsync(client, [fine, tooMany, fine], answers));

        Assert.Equal(StatusCode.InvalidArgument, ended.StatusCode);
        Assert.Contains("Request 2 of this stream could not be read", ended.Status.Detail, StringComparison.Ordinal);
        Assert.Contains($"at most {RelayService.MaxBatchEnvelopes}", ended.Status.Detail, StringComparison.Ordinal);
        Assert.Contains("The 1 before it were answered", ended.Status.Detail, StringComparison.Ordinal);
        SubmitBatchResult answered = Assert.Single(answers);
        Assert.All(answered.Results, r => Assert.NotNull(r.Receipt));
        Assert.Equal(3, (await client.Relay.GetTreeHeadAsync(new GetTreeHeadRequest())).TreeSize);
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task An_envelope_carrying_a_field_version_1_does_not_define_costs_only_its_own_result_and_the_stream_goes_on()
    {
        await using TestNode node = await TestNode.StartAsync();
        using MegaNetClient client = node.Client();
        using Identity alice = Identity.Create(), bob = Identity.Create();
        // A newer client's envelope with a field this node does not know: found on the wire and dropped in the parse, so
        // it costs the node no more than its bytes, and refused on its own, as any bad envelope is.
        Envelope stamped = EnvelopeFormat.Seal(alice, bob.Card, Encoding.UTF8.GetBytes("stamped"), "text/plain; charset=utf-8", null, DateTimeOffset.UtcNow.AddDays(1), 1, powSeed: node.PowSeed);
        stamped.Pow = ProofOfWork.Parser.ParseFrom([.. stamped.Pow.ToByteArray(), 0x18, 0x01]); // field 3, varint 1
        Envelope extended = Envelope.Parser.ParseFrom([.. Seal(alice, bob, 3).ToByteArray(), 0xF8, 0x07, 0x01]); // field 127, varint 1
        // A field in the request itself is no envelope's: that request is refused whole, and it ends the stream.
        SubmitBatchRequest extendedRequest = SubmitBatchRequest.Parser.ParseFrom([.. new SubmitBatchRequest { Envelopes = { Seal(alice, bob, 5) } }.ToByteArray(), 0xF8, 0x07, 0x01]);

        using var deadline = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        using AsyncDuplexStreamingCall<SubmitBatchRequest, SubmitBatchResult> call = client.Relay.SubmitBatchStream(cancellationToken: deadline.Token);
        var answers = new List<SubmitBatchResult>();
        Task<RpcException> ended = Assert.ThrowsAsync<RpcException>(async () =>
        {
            await foreach (SubmitBatchResult answer in call.ResponseStream.ReadAllAsync(deadline.Token))
            {
                answers.Add(answer);
            }
        });
        try
        {
            SubmitBatchRequest[] requests =
            [
                new() { Envelopes = { Seal(alice, bob, 0) } },
                new() { Envelopes = { Seal(alice, bob, 1), stamped, Seal(alice, bob, 2), extended } },
                new() { Envelopes = { Seal(alice, bob, 4) } },
                extendedRequest,
            ];
            foreach (SubmitBatchRequest request in requests)
            {
                await call.RequestStream.WriteAsync(request, deadline.Token);
            }

            await call.RequestStream.CompleteAsync();
        }
        catch (Exception e) when (e is RpcException or IOException or InvalidOperationException)
        {
            // The node ended the call while requests were still going out: the reader has its status.
        }

        RpcException refusal = await ended;
        Assert.Equal(3, answers.Count);
        Assert.NotNull(Assert.Single(answers[0].Results).Receipt);
        SubmitResult[] batch = [.. answers[1].Results];
        Assert.Equal(4, batch.Length);
        Assert.NotNull(batch[0].Receipt);
        Assert.Equal((int)StatusCode.InvalidArgument, batch[1].StatusCode);
        Assert.Equal("This envelope is refused: SubmitBatchRequest.envelopes[1].pow carries field 3 (a varint), which ProofOfWork does not define in protocol version 1: "
            + "no signature covers such a field, so relays refuse it rather than store it. Send only the fields docs/protocol.md defines; nothing was done with it.", batch[1].Error);
        Assert.NotNull(batch[2].Receipt);
        Assert.Equal((int)StatusCode.InvalidArgument, batch[3].StatusCode);
        Assert.StartsWith("This envelope is refused: SubmitBatchRequest.envelopes[3] carries field 127 (a varint), which Envelope does not define", batch[3].Error, StringComparison.Ordinal);
        Assert.NotNull(Assert.Single(answers[2].Results).Receipt);

        Assert.Equal(StatusCode.InvalidArgument, refusal.StatusCode);
        Assert.Equal("Request 4 of this stream could not be read: The SubmitBatchStream request is refused: SubmitBatchRequest carries field 127 (a varint), "
            + "which SubmitBatchRequest does not define in protocol version 1: relays refuse it rather than ignore it. Send only the fields docs/protocol.md defines; "
            + "nothing was done with it. The 3 before it were answered; send the rest on a new stream.", refusal.Status.Detail);
        Assert.Equal(4, (await client.Relay.GetTreeHeadAsync(new GetTreeHeadRequest())).TreeSize);
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task A_request_over_the_byte_limit_is_refused_before_it_is_buffered()
    {
        await using TestNode node = await TestNode.StartAsync();
        using MegaNetClient client = node.Client();
        using Identity alice = Identity.Create(), bob = Identity.Create();
        // Five envelopes of the 64 KiB class: about 320 KiB, over the 257 KiB a submit request may hold.
        byte[] big = new byte[60_000];
        List<Envelope> heavy = [.. Enumerable.Range(0, 5).Select(i => EnvelopeFormat.Seal(alice, bob.Card, big, "application/octet-stream", null, DateTimeOffset.UtcNow.AddDays(1), 0))];
        List<Envelope> fine = [Seal(alice, bob, 0)];

        var answers = new List<SubmitBatchResult>();
        RpcException ended = await Assert.ThrowsAsync<RpcException>(() => StreamRequestsAsync(client, [fine, heavy], answers));

        Assert.Equal(StatusCode.ResourceExhausted, ended.StatusCode);
        Assert.Contains("Request 2 of this stream could not be read", ended.Status.Detail, StringComparison.Ordinal);
        Assert.NotNull(Assert.Single(Assert.Single(answers).Results).Receipt);
        Assert.Equal(1, (await client.Relay.GetTreeHeadAsync(new GetTreeHeadRequest())).TreeSize);
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task The_client_library_submits_in_batches_and_yields_a_result_per_envelope_in_order()
    {
        await using TestNode node = await TestNode.StartAsync(TestNode.Unthrottled);
        using MegaNetClient client = node.Client();
        using Identity alice = Identity.Create(), bob = Identity.Create();
        List<Envelope> envelopes = [.. Enumerable.Range(0, 300).Select(i => Seal(alice, bob, i))];
        Envelope forged = Seal(alice, bob, 1000);
        forged.Signature = ByteString.CopyFrom(new byte[64]);
        envelopes.Insert(150, forged);
        using var deadline = new CancellationTokenSource(TimeSpan.FromMinutes(2));

        var results = new List<SubmitResult>();
        await foreach (SubmitResult r in client.SubmitBatchesAsync(envelopes, perRequest: 64, deadline.Token))
        {
            results.Add(r);
        }

        Assert.Equal(envelopes.Count, results.Count);
        Assert.Equal((int)StatusCode.InvalidArgument, results[150].StatusCode);
        Assert.Equal(
            envelopes.Where((_, i) => i != 150).Select(e => Convert.ToHexString(EnvelopeFormat.EnvelopeId(e))),
            results.Where((_, i) => i != 150).Select(r => Convert.ToHexString(r.Receipt.EnvelopeId.Span)));
        Assert.Equal(300, (await client.Relay.GetTreeHeadAsync(new GetTreeHeadRequest())).TreeSize);

        // A caller that stops reading early ends the call; nothing hangs, and the client stays usable.
        await foreach (SubmitResult r in client.SubmitBatchesAsync(envelopes.Take(10), perRequest: 4, deadline.Token))
        {
            Assert.True(r.Receipt.Duplicate);
            break;
        }

        // A sequence that fails (here: a null envelope) ends the call and surfaces its own exception, not a hang.
        await Assert.ThrowsAsync<ArgumentNullException>(async () =>
        {
            await foreach (SubmitResult _ in client.SubmitBatchesAsync([envelopes[0], null!], perRequest: 1, deadline.Token))
            {
            }
        });
        // Even when what it throws looks like a call that ended (it is then reported as the cancelled call).
        Exception failed = await Assert.ThrowsAnyAsync<Exception>(async () =>
        {
            await foreach (SubmitResult _ in client.SubmitBatchesAsync(Failing(envelopes[0]), perRequest: 1, deadline.Token))
            {
            }
        });
        Assert.False(deadline.IsCancellationRequested, $"the call hung until the test's deadline: {failed}");
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(async () =>
        {
            await foreach (SubmitResult _ in client.SubmitBatchesAsync(envelopes, perRequest: MegaNetClient.MaxBatchEnvelopes + 1, deadline.Token))
            {
            }
        });
        Assert.Equal(RelayService.MaxBatchEnvelopes, MegaNetClient.MaxBatchEnvelopes);
        node.AssertNoServerErrors();
    }

    [Fact]
    public void Requests_are_cut_by_count_and_by_bytes_in_order()
    {
        using Identity alice = Identity.Create(), bob = Identity.Create();
        List<Envelope> small = [.. Enumerable.Range(0, 10).Select(i => Seal(alice, bob, i))];
        Assert.Equal([4, 4, 2], MegaNetClient.BatchRequests(small, 4).Select(r => r.Envelopes.Count));

        // 60 KB payloads, padded to the 64 KiB class: three fit under 256 KiB with their framing, a fourth would not.
        byte[] big = new byte[60_000];
        List<Envelope> heavy = [.. Enumerable.Range(0, 9).Select(_ => EnvelopeFormat.Seal(alice, bob.Card, big, "application/octet-stream", null, DateTimeOffset.UtcNow.AddDays(1), 0))];
        List<SubmitBatchRequest> cut = [.. MegaNetClient.BatchRequests(heavy, 64)];
        Assert.Equal([3, 3, 3], cut.Select(r => r.Envelopes.Count));
        Assert.All(cut, r => Assert.True(r.CalculateSize() <= MegaNetClient.MaxBatchRequestBytes, $"{r.CalculateSize()} bytes"));
        Assert.Equal(heavy, cut.SelectMany(r => r.Envelopes));

        Assert.Throws<ArgumentNullException>(() => MegaNetClient.BatchRequests([small[0], null!], 4).ToList());
        Assert.Throws<ArgumentOutOfRangeException>(() => MegaNetClient.BatchRequests(small, 0));
    }

    /// <summary>Writes each request on one stream and reads every answer; <paramref name="answers"/> collects them as
    /// they come, so a test sees what arrived before the stream failed.</summary>
    private static async Task<List<SubmitBatchResult>> StreamRequestsAsync(MegaNetClient client, IEnumerable<IEnumerable<Envelope>> requests, List<SubmitBatchResult>? answers = null)
    {
        answers ??= [];
        using var deadline = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        using AsyncDuplexStreamingCall<SubmitBatchRequest, SubmitBatchResult> call = client.Relay.SubmitBatchStream(cancellationToken: deadline.Token);
        List<SubmitBatchResult> collected = answers;
        Task reader = Task.Run(async () =>
        {
            await foreach (SubmitBatchResult answer in call.ResponseStream.ReadAllAsync(deadline.Token))
            {
                collected.Add(answer);
            }
        });
        try
        {
            foreach (IEnumerable<Envelope> envelopes in requests)
            {
                await call.RequestStream.WriteAsync(new SubmitBatchRequest { Envelopes = { envelopes } }, deadline.Token);
            }

            await call.RequestStream.CompleteAsync();
        }
        catch (Exception e) when (e is RpcException or IOException or InvalidOperationException)
        {
            // The node ended the call while requests were still going out: the reader has its status.
        }

        await reader;
        return answers;
    }

    /// <summary>A node that answers wrongly (per <see cref="Lie"/>): the client library must not pass its answers on as
    /// results for the envelopes in their places.</summary>
    [Theory]
    [InlineData(Lie.OneResultShort, "with 2 result(s)")]
    [InlineData(Lie.SwappedReceipts, "not the one in its place")]
    [InlineData(Lie.EndsEarly, "request(s) unanswered")]
    public async Task Answers_that_do_not_match_the_requests_are_an_error(Lie lie, string says)
    {
        await using var fake = await FakeRelay<LyingRelay>.StartAsync(new LyingRelay(lie));
        using var client = new MegaNetClient(fake.Address);
        using Identity alice = Identity.Create(), bob = Identity.Create();
        List<Envelope> envelopes = [.. Enumerable.Range(0, 6).Select(i => Seal(alice, bob, i))];
        var results = new List<SubmitResult>();
        NodeMisbehavedException e = await Assert.ThrowsAsync<NodeMisbehavedException>(async () =>
        {
            await foreach (SubmitResult r in client.SubmitBatchesAsync(envelopes, perRequest: 3))
            {
                results.Add(r);
            }
        });
        Assert.Contains(says, e.Message, StringComparison.Ordinal);
        // What came before the lie stands (the first request's three), matched to its envelopes.
        Assert.Equal(3, results.Count);
        Assert.All(results, (r, i) => Assert.Equal(EnvelopeFormat.EnvelopeId(envelopes[i]), r.Receipt.EnvelopeId.ToByteArray()));
    }

    public enum Lie
    {
        OneResultShort,
        SwappedReceipts,
        EndsEarly,
    }

    /// <summary>Answers the first request of a stream truly; then lies.</summary>
    private sealed class LyingRelay(Lie lie) : Relay.RelayBase
    {
        public override async Task SubmitBatchStream(IAsyncStreamReader<SubmitBatchRequest> requestStream, IServerStreamWriter<SubmitBatchResult> responseStream, ServerCallContext context)
        {
            int request = 0;
            await foreach (SubmitBatchRequest batch in requestStream.ReadAllAsync(context.CancellationToken))
            {
                List<SubmitResult> results = [.. batch.Envelopes.Select(e => new SubmitResult { Receipt = new Receipt { EnvelopeId = ByteString.CopyFrom(EnvelopeFormat.EnvelopeId(e)) } })];
                if (request++ == 1)
                {
                    switch (lie)
                    {
                        case Lie.OneResultShort:
                            results.RemoveAt(2);
                            break;
                        case Lie.SwappedReceipts:
                            (results[0], results[1]) = (results[1], results[0]);
                            break;
                        case Lie.EndsEarly:
                            // Reads the rest without answering it, then ends the call as if all went well.
                            await foreach (SubmitBatchRequest _ in requestStream.ReadAllAsync(context.CancellationToken))
                            {
                            }

                            return;
                    }
                }

                await responseStream.WriteAsync(new SubmitBatchResult { Results = { results } });
            }
        }
    }

    private static IEnumerable<Envelope> Failing(Envelope first)
    {
        yield return first;
        throw new InvalidOperationException("the sender's own source failed");
    }

    private static Envelope Seal(Identity from, Identity to, int i) =>
        EnvelopeFormat.Seal(from, to.Card, Encoding.UTF8.GetBytes($"message {i}"), "text/plain; charset=utf-8", null, DateTimeOffset.UtcNow.AddDays(1), 0);
}
