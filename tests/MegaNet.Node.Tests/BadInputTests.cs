using System.Text;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Core.Interceptors;
using Grpc.Net.Client;
using MegaNet.Api;
using MegaNet.Api.V1;
using Microsoft.Extensions.DependencyInjection;

namespace MegaNet.Node.Tests;

/// <summary>Each bad input gets its own gRPC status and stores nothing.</summary>
public sealed class BadInputTests
{
    private static Envelope Valid(Identity from, Identity to, string text = "x", int powBits = 0, byte[]? powSeed = null) =>
        EnvelopeFormat.Seal(from, to.Card, Encoding.UTF8.GetBytes(text), "text/plain", null, DateTimeOffset.UtcNow.AddDays(1), powBits, powSeed: powSeed);

    private static void Resign(Envelope e, Identity from) => e.Signature = ByteString.CopyFrom(from.SignWithSendingKeyFor(e.Recipient.Span, EnvelopeFormat.SigningBytes(e)));

    private static async Task<RpcException> Refused(MegaNetClient client, Envelope envelope) =>
        await Assert.ThrowsAsync<RpcException>(async () => await client.Relay.SubmitAsync(new SubmitRequest { Envelope = envelope }));

    private static async Task<long> TreeSize(MegaNetClient client) => (await client.Relay.GetTreeHeadAsync(new GetTreeHeadRequest())).TreeSize;

    [Fact]
    public async Task Envelope_level_errors_each_have_their_status_and_store_nothing()
    {
        await using TestNode node = await TestNode.StartAsync();
        using MegaNetClient client = node.Client();
        using Identity alice = Identity.Create(), bob = Identity.Create();

        // Wrong signature.
        Envelope badSig = Valid(alice, bob);
        byte[] sig = badSig.Signature.ToByteArray();
        sig[3] ^= 1;
        badSig.Signature = ByteString.CopyFrom(sig);
        Assert.Equal(StatusCode.InvalidArgument, (await Refused(client, badSig)).StatusCode);

        // Signed by a different key than the one named.
        Envelope otherKey = Valid(alice, bob);
        otherKey.SendingKey = ByteString.CopyFrom(bob.SendingPublicKeyFor(bob.Address));
        Assert.Equal(StatusCode.InvalidArgument, (await Refused(client, otherKey)).StatusCode);

        // Expired (re-signed, so only the expiry is wrong).
        Envelope expired = Valid(alice, bob);
        expired.ExpiresUnixMs = DateTimeOffset.UtcNow.AddMinutes(-1).ToUnixTimeMilliseconds();
        Resign(expired, alice);
        RpcException e = await Refused(client, expired);
        Assert.Equal(StatusCode.InvalidArgument, e.StatusCode);
        Assert.Contains("expired", e.Status.Detail);
        // Both times, to the second, so a sender can tell that its own clock is off.
        Assert.Matches(@"its expiry is \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC, the node's time \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\.", e.Status.Detail);
        Assert.Contains(DateTimeOffset.FromUnixTimeMilliseconds(expired.ExpiresUnixMs).ToString("yyyy-MM-dd HH:mm:ss", System.Globalization.CultureInfo.InvariantCulture), e.Status.Detail);
        Assert.Contains("the sender's clock is behind", e.Status.Detail);

        // Beyond the maximum TTL.
        Envelope tooLong = Valid(alice, bob);
        tooLong.ExpiresUnixMs = DateTimeOffset.UtcNow.AddDays(400).ToUnixTimeMilliseconds();
        Resign(tooLong, alice);
        string tooLongDetail = (await Refused(client, tooLong)).Status.Detail;
        Assert.Contains("maximum TTL", tooLongDetail);
        Assert.Contains(DateTimeOffset.FromUnixTimeMilliseconds(tooLong.ExpiresUnixMs).ToString("yyyy-MM-dd HH:mm:ss", System.Globalization.CultureInfo.InvariantCulture), tooLongDetail);
        Assert.Contains("the sender's clock is ahead", tooLongDetail);

        // Expiries outside any calendar (the field is any int64): refused by name, never UNKNOWN.
        foreach (long extreme in new[] { long.MaxValue, long.MinValue })
        {
            Envelope odd = Valid(alice, bob);
            odd.ExpiresUnixMs = extreme;
            Resign(odd, alice);
            RpcException refused = await Refused(client, odd);
            Assert.Equal(StatusCode.InvalidArgument, refused.StatusCode);
            Assert.Contains(extreme > 0 ? "maximum TTL" : "expired", refused.Status.Detail);
            Assert.Contains($"{extreme} ms after 1970 (outside any calendar)", refused.Status.Detail);
        }

        // Wrong padding class.
        Envelope unpadded = Valid(alice, bob);
        unpadded.SealedPayload = ByteString.CopyFrom(unpadded.SealedPayload.Span[..^1]);
        Resign(unpadded, alice);
        Assert.Contains("size class", (await Refused(client, unpadded)).Status.Detail);

        // Oversize: a legal class but over the node's envelope limit.
        Envelope big = Valid(alice, bob, new string('a', 10_000));
        Assert.Equal(16384 + EnvelopeFormat.SealOverhead, big.SealedPayload.Length);
        await using (TestNode small = await TestNode.StartAsync(o => o.MaxEnvelopeBytes = 8_000))
        {
            using MegaNetClient smallClient = small.Client();
            RpcException oversize = await Refused(smallClient, big);
            Assert.Equal(StatusCode.InvalidArgument, oversize.StatusCode);
            Assert.Contains("limit", oversize.Status.Detail);
            Assert.Equal(0, await TreeSize(smallClient));
        }

        // Fields version 1 does not define, in the envelope or in its stamp: no signature covers them (they would let
        // anyone bloat an envelope past its size class, or plant a copy under the genuine one's id).
        Envelope genuine = Valid(alice, bob);
        byte[] unknownField = [0xF8, 0x07, 0x01]; // field 127, varint 1
        Envelope extended = Envelope.Parser.ParseFrom([.. genuine.ToByteArray(), .. unknownField]);
        // Found on the request's tags before the parse, which drops it: the refusal names the field and where it is.
        RpcException unknown = await Refused(client, extended);
        Assert.Equal(StatusCode.InvalidArgument, unknown.StatusCode);
        Assert.Equal("The Submit request is refused: SubmitRequest.envelope carries field 127 (a varint), which Envelope does not define in protocol version 1: "
            + "no signature covers such a field, so relays refuse it rather than store it. Send only the fields docs/protocol.md defines; nothing was done with it.", unknown.Status.Detail);
        // A defined field under another wire type (recipient as a varint, in place of its bytes) counts as undefined, and
        // its refusal comes before the size check its absence would fail otherwise, which would name the wrong cause.
        Envelope noRecipient = genuine.Clone();
        noRecipient.Recipient = Google.Protobuf.ByteString.Empty;
        Envelope mistyped = Envelope.Parser.ParseFrom([.. noRecipient.ToByteArray(), 0x10, 0x01]); // field 2, varint 1
        RpcException mistypedRefusal = await Refused(client, mistyped);
        Assert.Equal(StatusCode.InvalidArgument, mistypedRefusal.StatusCode);
        Assert.StartsWith("The Submit request is refused: SubmitRequest.envelope carries field 2 ", mistypedRefusal.Status.Detail, StringComparison.Ordinal);
        Assert.Contains("recipient", mistypedRefusal.Status.Detail, StringComparison.Ordinal);
        Envelope stamped = Valid(alice, bob, powBits: 1, powSeed: node.PowSeed);
        stamped.Pow = ProofOfWork.Parser.ParseFrom([.. stamped.Pow.ToByteArray(), .. unknownField]);
        Assert.StartsWith("The Submit request is refused: SubmitRequest.envelope.pow carries field 127 (a varint), which ProofOfWork does not define", (await Refused(client, stamped)).Status.Detail, StringComparison.Ordinal);
        // One beside the envelope, in the request itself, is refused too (it was ignored, and the envelope stored).
        using (GrpcChannel channel = GrpcChannel.ForAddress(node.Address))
        {
            var raw = Marshallers.Create<byte[]>(b => b, b => b);
            var submit = new Method<byte[], byte[]>(MethodType.Unary, "meganet.v1.Relay", "Submit", raw, raw);
            byte[] request = [.. new SubmitRequest { Envelope = genuine }.ToByteArray(), .. unknownField];
            RpcException beside = await Assert.ThrowsAsync<RpcException>(async () => await channel.CreateCallInvoker().AsyncUnaryCall(submit, null, new CallOptions(), request));
            Assert.Equal(StatusCode.InvalidArgument, beside.StatusCode);
            Assert.StartsWith("The Submit request is refused: SubmitRequest carries field 127 (a varint), which SubmitRequest does not define in protocol version 1: relays refuse it rather than ignore it.", beside.Status.Detail, StringComparison.Ordinal);
        }

        // Missing pieces.
        Assert.Equal(StatusCode.InvalidArgument, (await Assert.ThrowsAsync<RpcException>(async () => await client.Relay.SubmitAsync(new SubmitRequest()))).StatusCode);
        Envelope v2 = Valid(alice, bob);
        v2.Version = 2;
        Assert.Contains("version", (await Refused(client, v2)).Status.Detail);

        Assert.Equal(0, await TreeSize(client));
        Assert.Empty((await client.FetchAsync(bob)).Messages);
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task A_replay_returns_the_original_receipt()
    {
        await using TestNode node = await TestNode.StartAsync();
        using MegaNetClient client = node.Client();
        using Identity alice = Identity.Create(), bob = Identity.Create();
        Envelope envelope = Valid(alice, bob);
        Receipt first = await client.Relay.SubmitAsync(new SubmitRequest { Envelope = envelope });
        Receipt again = await client.Relay.SubmitAsync(new SubmitRequest { Envelope = envelope });

        Assert.False(first.Duplicate);
        Assert.True(again.Duplicate);
        Assert.Equal(first.EnvelopeId, again.EnvelopeId);
        Assert.Equal(first.LogIndex, again.LogIndex);
        Assert.Equal(1, await TreeSize(client));
        Assert.Single((await client.FetchAsync(bob)).Messages);
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task A_stamped_envelope_signed_again_is_the_same_envelope_so_one_stamp_buys_one_envelope()
    {
        await using TestNode node = await TestNode.StartAsync(o => o.PowMinBits = 8);
        using MegaNetClient client = node.Client();
        using Identity alice = Identity.Create(), bob = Identity.Create();
        var signer = new RandomNonceSigner();
        Envelope template = Valid(alice, bob);
        template.SendingKey = ByteString.CopyFrom(signer.PublicKey);
        template.Pow = EnvelopeFormat.SolvePow(template, node.PowSeed, 8);

        // The key's holder signs the same stamped bytes three times, each time validly and differently.
        var receipts = new List<Receipt>();
        var signatures = new HashSet<string>();
        for (int i = 0; i < 3; i++)
        {
            Envelope copy = template.Clone();
            copy.Signature = ByteString.CopyFrom(signer.Sign(EnvelopeFormat.SigningBytes(copy)));
            signatures.Add(copy.Signature.ToBase64());
            receipts.Add(await client.Relay.SubmitAsync(new SubmitRequest { Envelope = copy }));
        }

        Assert.Equal(3, signatures.Count);
        Assert.False(receipts[0].Duplicate);
        Assert.All(receipts.Skip(1), r => Assert.True(r.Duplicate));
        Assert.All(receipts, r => Assert.Equal(receipts[0].EnvelopeId, r.EnvelopeId));
        Assert.Equal(1, await TreeSize(client));
        Assert.Single((await client.FetchAsync(bob)).Messages);
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task A_full_mailbox_refuses_with_a_retry_hint_stores_nothing_and_costs_the_sender_no_tokens()
    {
        // Two tokens and almost no refill: without the tokens given back, the third refusal would be the rate limit.
        await using TestNode node = await TestNode.StartAsync(o =>
        {
            o.MailboxMaxCount = 1;
            o.SubmitBurst = 2;
            o.SubmitRatePerKey = 0.001;
        });
        using MegaNetClient client = node.Client();
        using Identity alice = Identity.Create(), bob = Identity.Create();
        await client.Relay.SubmitAsync(new SubmitRequest { Envelope = Valid(alice, bob, "first") });
        for (int i = 0; i < 4; i++)
        {
            RpcException full = await Refused(client, Valid(alice, bob, $"more {i}"));
            Assert.Equal(StatusCode.ResourceExhausted, full.StatusCode);
            Assert.Contains("mailbox", full.Status.Detail, StringComparison.OrdinalIgnoreCase);
            Assert.NotNull(full.Trailers.GetValue("retry-after-ms"));
        }

        Assert.Equal(1, await TreeSize(client));
        Assert.Single((await client.FetchAsync(bob)).Messages);
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task A_mailbox_over_its_byte_quota_refuses_with_a_retry_hint_and_stores_nothing()
    {
        // Room for one 1 KiB-class envelope (1,096 sealed bytes and the envelope's other fields), not two.
        // The quota alone: with one envelope waiting the mailbox is past half of it, where stamps would be asked first.
        await using TestNode node = await TestNode.StartAsync(o =>
        {
            o.MailboxMaxBytes = 2_000;
            o.MailboxPowFromPercent = 0;
        });
        using MegaNetClient client = node.Client();
        using Identity alice = Identity.Create(), bob = Identity.Create();
        await client.Relay.SubmitAsync(new SubmitRequest { Envelope = Valid(alice, bob, "first") });
        RpcException full = await Refused(client, Valid(alice, bob, "second"));
        Assert.Equal(StatusCode.ResourceExhausted, full.StatusCode);
        Assert.Contains("2,000 bytes", full.Status.Detail, StringComparison.Ordinal);
        Assert.Equal(TimeSpan.FromSeconds(60), full.RetryAfter());
        Assert.Equal(1, await TreeSize(client));
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task A_node_short_of_disk_space_refuses_new_mail_with_a_retry_hint_and_stores_nothing()
    {
        // A free-space mark no file system reaches (2 PiB): every put is below it.
        await using TestNode node = await TestNode.StartAsync(o => o.StoreMinFreeDiskMiB = int.MaxValue);
        using MegaNetClient client = node.Client();
        using Identity alice = Identity.Create(), bob = Identity.Create();
        RpcException low = await Refused(client, Valid(alice, bob));
        Assert.Equal(StatusCode.ResourceExhausted, low.StatusCode);
        Assert.Contains("disk", low.Status.Detail, StringComparison.OrdinalIgnoreCase);
        Assert.Equal(TimeSpan.FromSeconds(60), low.RetryAfter());
        Assert.Equal(0, await TreeSize(client));
        // Reading mail goes on.
        Assert.Empty((await client.FetchAsync(bob)).Messages);
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task Malformed_protobuf_is_refused_and_stores_nothing()
    {
        await using TestNode node = await TestNode.StartAsync();
        using GrpcChannel channel = GrpcChannel.ForAddress(node.Address);
        var raw = Marshallers.Create<byte[]>(b => b, b => b);
        var submit = new Method<byte[], byte[]>(MethodType.Unary, "meganet.v1.Relay", "Submit", raw, raw);
        byte[] garbage = [0x0A, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F, 0x01, 0x02];
        RpcException e = await Assert.ThrowsAsync<RpcException>(async () => await channel.CreateCallInvoker().AsyncUnaryCall(submit, null, new CallOptions(), garbage));
        Assert.Equal(StatusCode.InvalidArgument, e.StatusCode);
        Assert.StartsWith("The Submit request is not a valid SubmitRequest message (", e.Status.Detail, StringComparison.Ordinal);
        using MegaNetClient client = node.Client();
        Assert.Equal(0, await TreeSize(client));
        node.AssertNoServerErrors();
    }

    /// <summary>Every method the node serves, whichever way it streams and whichever service it belongs to, answers a
    /// request that is not protobuf with INVALID_ARGUMENT and logs no error (Grpc.AspNetCore's answer was UNKNOWN,
    /// "Exception was thrown by handler.", and an error in the node's log). So it does a request holding a tag of wire
    /// type 6 or 7, which protobuf does not define and which the node's parser passed over: such a request was served
    /// as if the tag were not there (Status and Check answered, Subscribe refused for its missing auth).</summary>
    [Theory]
    [InlineData(MethodType.Unary, "meganet.v1.Relay", "VerifyBatch", "VerifyBatchRequest", false)]
    [InlineData(MethodType.Unary, "meganet.v1.Relay", "Challenge", "ChallengeRequest", false)]
    [InlineData(MethodType.ServerStreaming, "meganet.v1.Relay", "Subscribe", "SubscribeRequest", false)]
    [InlineData(MethodType.Unary, "grpc.health.v1.Health", "Check", "HealthCheckRequest", false)]
    [InlineData(MethodType.DuplexStreaming, "grpc.reflection.v1alpha.ServerReflection", "ServerReflectionInfo", "ServerReflectionRequest", false)]
    [InlineData(MethodType.Unary, "meganet.v1.Relay", "Status", "StatusRequest", true)]
    [InlineData(MethodType.ServerStreaming, "meganet.v1.Relay", "Subscribe", "SubscribeRequest", true)]
    [InlineData(MethodType.Unary, "grpc.health.v1.Health", "Check", "HealthCheckRequest", true)]
    [InlineData(MethodType.DuplexStreaming, "grpc.reflection.v1alpha.ServerReflection", "ServerReflectionInfo", "ServerReflectionRequest", true)]
    public async Task A_request_that_is_not_protobuf_is_invalid_argument_on_every_service(MethodType type, string service, string name, string requestType, bool wireType7)
    {
        await using TestNode node = await TestNode.StartAsync();
        using GrpcChannel channel = GrpcChannel.ForAddress(node.Address);
        var raw = Marshallers.Create<byte[]>(b => b, b => b);
        var method = new Method<byte[], byte[]>(type, service, name, raw, raw);
        // Not protobuf: a length past the end, or field 1 as a varint (an unknown field to each of these) and then a
        // tag of field 15 with wire type 7.
        byte[] garbage = wireType7 ? [0x08, 0x01, 0x7F] : [0x0A, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F, 0x01, 0x02];
        CallInvoker invoker = channel.CreateCallInvoker();
        var options = new CallOptions(deadline: DateTime.UtcNow.AddSeconds(30));
        RpcException e = await Assert.ThrowsAsync<RpcException>(async () =>
        {
            switch (type)
            {
                case MethodType.Unary:
                    await invoker.AsyncUnaryCall(method, null, options, garbage);
                    break;
                case MethodType.ServerStreaming:
                    using (AsyncServerStreamingCall<byte[]> call = invoker.AsyncServerStreamingCall(method, null, options, garbage))
                    {
                        await call.ResponseStream.MoveNext();
                    }

                    break;
                default:
                    using (AsyncDuplexStreamingCall<byte[], byte[]> call = invoker.AsyncDuplexStreamingCall(method, null, options))
                    {
                        await call.RequestStream.WriteAsync(garbage);
                        await call.RequestStream.CompleteAsync();
                        await call.ResponseStream.MoveNext();
                    }

                    break;
            }
        });

        Assert.Equal(StatusCode.InvalidArgument, e.StatusCode);
        Assert.StartsWith($"The {name} request is not a valid {requestType} message (", e.Status.Detail, StringComparison.Ordinal);
        Assert.Equal(wireType7, e.Status.Detail.Contains("carries a tag of wire type 7 (field 15, at byte 2), which protobuf does not define", StringComparison.Ordinal));
        node.AssertNoServerErrors();
    }

    // This test and the next refuse stamps of 16 bits or more: the node tries two seeds, and a stamp that does not hold
    // under one begins with exactly its claimed k zero bits under another by chance 2^-(k+1) (at 8 bits, 0.4 %).
    [Fact]
    public async Task Proof_of_work_is_demanded_when_required_and_accepted_when_given()
    {
        await using TestNode node = await TestNode.StartAsync(o => o.PowMinBits = 16);
        using MegaNetClient client = node.Client();
        using Identity alice = Identity.Create(), bob = Identity.Create();
        StatusResponse status = await client.Relay.StatusAsync(new StatusRequest());
        Assert.Equal(16u, status.PowBitsRequired);
        byte[] seed = status.PowSeed.ToByteArray();
        Assert.Equal(EnvelopeFormat.PowSeedLength, seed.Length);

        RpcException missing = await Refused(client, Valid(alice, bob));
        Assert.Equal(StatusCode.FailedPrecondition, missing.StatusCode);
        Assert.Equal("16", missing.Trailers.GetValue("pow-bits"));
        Assert.Equal(Convert.ToHexStringLower(seed), missing.Trailers.GetValue("pow-seed"));

        // A true stamp of 12 bits (its hash begins with exactly 12 zero bits), where 16 are demanded.
        Envelope weak = Valid(alice, bob);
        weak.Pow = ExactStamp.For(weak, seed, 12);
        Resign(weak, alice);
        Assert.Equal(StatusCode.FailedPrecondition, (await Refused(client, weak)).StatusCode);

        // A stamp whose hash has more zero bits than it claims: each claim from the demand up to the zeros it has
        // would be another envelope id, so one stamp would buy several envelopes. Only the exact claim is taken.
        Envelope understated = Valid(alice, bob);
        understated.Pow = ExactStamp.For(understated, seed, 17);
        understated.Pow.Bits = 16;
        Resign(understated, alice);
        RpcException understatedRefusal = await Refused(client, understated);
        Assert.Equal(StatusCode.FailedPrecondition, understatedRefusal.StatusCode);
        Assert.Contains("claims 16 bits but does not hold for this node's current seed", understatedRefusal.Status.Detail);
        Assert.Equal(0, await TreeSize(client));
        understated.Pow.Bits = 17;
        Resign(understated, alice);
        Assert.Equal(0, (await client.Relay.SubmitAsync(new SubmitRequest { Envelope = understated })).LogIndex);

        // A stamp that claims 16 bits but was not worked for.
        Envelope fake = Valid(alice, bob);
        byte[] fakeDigest = NSec.Cryptography.HashAlgorithm.Blake2b_256.Hash(EnvelopeFormat.CoreBytes(fake));
        for (ulong nonce = 0; ; nonce++)
        {
            fake.Pow = new ProofOfWork { Bits = 16, Nonce = nonce };
            if (EnvelopeFormat.PowZeroBits(seed, fakeDigest, nonce) < 16)
            {
                break;
            }
        }

        Resign(fake, alice);
        Assert.Equal(StatusCode.FailedPrecondition, (await Refused(client, fake)).StatusCode);

        // A true stamp of exactly 16 bits, but for another seed (another node's, or one this node never drew): work done
        // elsewhere or ahead of time counts for nothing here.
        Envelope elsewhere = Valid(alice, bob);
        elsewhere.Pow = ExactStamp.For(elsewhere, System.Security.Cryptography.RandomNumberGenerator.GetBytes(EnvelopeFormat.PowSeedLength), 16);
        Resign(elsewhere, alice);
        Assert.Equal(0, EnvelopeFormat.StampBits(elsewhere, seed));
        RpcException elsewhereRefusal = await Refused(client, elsewhere);
        Assert.Equal(StatusCode.FailedPrecondition, elsewhereRefusal.StatusCode);
        Assert.Contains("does not hold for this node's current seed", elsewhereRefusal.Status.Detail);
        Assert.Equal(1, await TreeSize(client)); // the exactly claimed stamp above only

        Receipt ok = await client.SendAsync(alice, bob.Card, Encoding.UTF8.GetBytes("worked"), "text/plain");
        Assert.Equal(1, ok.LogIndex);
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task A_stamp_is_taken_for_the_nodes_seed_and_the_one_before_it_not_for_an_older_one()
    {
        await using TestNode node = await TestNode.StartAsync(o => o.PowMinBits = 16);
        using MegaNetClient client = node.Client();
        using Identity alice = Identity.Create(), bob = Identity.Create();
        var seeds = node.Services.GetRequiredService<Admission.AdmissionPipeline>().PowSeeds;
        byte[] first = node.PowSeed;
        Envelope[] stamped = [.. Enumerable.Range(0, 2).Select(i => ExactStamp.Stamp(alice, Valid(alice, bob, $"early {i}"), first, 16))];

        // The seed turns (every 10 minutes): Status and refusals name the new one, and a stamp for the one before is
        // still taken, so a stamp made just before a turn is good for at least a whole turn more.
        seeds.TurnForTests();
        byte[] second = node.PowSeed;
        Assert.NotEqual(first, second);
        Assert.Equal(second, (await client.Relay.StatusAsync(new StatusRequest())).PowSeed.ToByteArray());
        Assert.Equal(0, (await client.Relay.SubmitAsync(new SubmitRequest { Envelope = stamped[0] })).LogIndex);

        // Turned again: the first seed is gone, and its stamps with it (hoarded work); the refusal names the seed to use.
        seeds.TurnForTests();
        RpcException stale = await Refused(client, stamped[1]);
        Assert.Equal(StatusCode.FailedPrecondition, stale.StatusCode);
        Assert.Equal(16, stale.RequiredPowBits());
        Assert.Equal(node.PowSeed, stale.RequiredPowSeed());
        Assert.Equal(1, await TreeSize(client));

        // Replayed, an envelope the node holds is answered with its receipt whatever its stamp now counts for.
        Receipt replay = await client.Relay.SubmitAsync(new SubmitRequest { Envelope = stamped[0] });
        Assert.True(replay.Duplicate);
        Assert.Equal(0, replay.LogIndex);

        // The client stamps again for the seed a refusal names: a send whose stamp went stale between its Status call
        // and its submit (the seed turned twice meanwhile) still goes through, with a stamp for the seed now.
        var turnBeforeSubmit = new TurnBeforeFirstSubmit(seeds);
        using var turning = new MegaNetClient(node.Address, options: new MegaNetClientOptions { Interceptors = [turnBeforeSubmit] });
        Receipt sent = await turning.SendAsync(alice, bob.Card, Encoding.UTF8.GetBytes("stamped twice"), "text/plain");
        Assert.Equal(2, turnBeforeSubmit.Submits); // refused for its stamp, stamped again, taken
        Assert.Equal(1, sent.LogIndex);
        Assert.Equal(2, await TreeSize(client));
        node.AssertNoServerErrors();
    }

    /// <summary>Turns the node's seed twice before the first <c>Submit</c> goes out, so its stamp (made for the seed of
    /// the <c>Status</c> call before it) no longer holds there.</summary>
    private sealed class TurnBeforeFirstSubmit(Admission.PowSeeds seeds) : Interceptor
    {
        public int Submits { get; private set; }

        public override AsyncUnaryCall<TResponse> AsyncUnaryCall<TRequest, TResponse>(TRequest request, ClientInterceptorContext<TRequest, TResponse> context,
            AsyncUnaryCallContinuation<TRequest, TResponse> continuation)
        {
            if (context.Method.Name == "Submit" && Submits++ == 0)
            {
                seeds.TurnForTests();
                seeds.TurnForTests();
            }

            return continuation(request, context);
        }
    }

    [Fact]
    public async Task A_stamp_counts_for_nothing_where_no_proof_of_work_is_demanded_so_a_stale_or_false_one_is_taken_as_none()
    {
        await using TestNode node = await TestNode.StartAsync();
        using MegaNetClient client = node.Client();
        using Identity alice = Identity.Create(), bob = Identity.Create();
        Assert.Equal(0u, (await client.Relay.StatusAsync(new StatusRequest())).PowBitsRequired);

        // A claim of 20 bits never worked for, as a stamp made for a seed the node has since turned looks to it: an
        // honest client resending such an envelope to an idle node must not be refused.
        Envelope claimed = Valid(alice, bob);
        byte[] digest = NSec.Cryptography.HashAlgorithm.Blake2b_256.Hash(EnvelopeFormat.CoreBytes(claimed));
        for (ulong nonce = 0; ; nonce++)
        {
            claimed.Pow = new ProofOfWork { Bits = 20, Nonce = nonce };
            if (EnvelopeFormat.PowZeroBits(node.PowSeed, digest, nonce) != 20)
            {
                break;
            }
        }

        Resign(claimed, alice);
        Assert.Equal(0, (await client.Relay.SubmitAsync(new SubmitRequest { Envelope = claimed })).LogIndex);

        // A true stamp where none is demanded is taken.
        Envelope stamped = Valid(alice, bob);
        stamped.Pow = ExactStamp.For(stamped, node.PowSeed, 3);
        Resign(stamped, alice);
        Assert.Equal(1, (await client.Relay.SubmitAsync(new SubmitRequest { Envelope = stamped })).LogIndex);

        // A stamp that claims 0 bits claims nothing: taken as none, whatever its hash begins with (a client that always
        // sends an empty pow message must not be refused half the time).
        Envelope empty = Valid(alice, bob);
        byte[] emptyDigest = NSec.Cryptography.HashAlgorithm.Blake2b_256.Hash(EnvelopeFormat.CoreBytes(empty));
        for (ulong nonce = 0; ; nonce++)
        {
            empty.Pow = new ProofOfWork { Bits = 0, Nonce = nonce };
            if (EnvelopeFormat.PowZeroBits(node.PowSeed, emptyDigest, nonce) > 0)
            {
                break;
            }
        }

        Resign(empty, alice);
        Assert.Equal(2, (await client.Relay.SubmitAsync(new SubmitRequest { Envelope = empty })).LogIndex);
        Assert.Equal(3, await TreeSize(client));
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task A_flood_beyond_the_token_bucket_is_pushed_back_with_a_retry_hint()
    {
        await using TestNode node = await TestNode.StartAsync(o =>
        {
            o.SubmitBurst = 5;
            // One token per 100 s: none comes back while the test runs, however slow the machine (the first call
            // can take seconds while the verifier is compiled).
            o.SubmitRatePerKey = 0.01;
        });
        using MegaNetClient client = node.Client();
        using Identity alice = Identity.Create(), bob = Identity.Create();
        // Envelopes forged under Alice's sending key (anyone who saw one of hers knows it) spend none of her tokens.
        for (int i = 0; i < 8; i++)
        {
            Envelope forged = Valid(alice, bob, $"forged {i}");
            byte[] signature = forged.Signature.ToByteArray();
            signature[5] ^= 0x20;
            forged.Signature = ByteString.CopyFrom(signature);
            RpcException bad = await Assert.ThrowsAsync<RpcException>(async () => await client.Relay.SubmitAsync(new SubmitRequest { Envelope = forged }));
            Assert.Equal(StatusCode.InvalidArgument, bad.StatusCode);
        }

        var statuses = new List<StatusCode>();
        RpcException? pushedBack = null;
        for (int i = 0; i < 12; i++)
        {
            try
            {
                await client.Relay.SubmitAsync(new SubmitRequest { Envelope = Valid(alice, bob, $"flood {i}") });
                statuses.Add(StatusCode.OK);
            }
            catch (RpcException e)
            {
                statuses.Add(e.StatusCode);
                pushedBack ??= e;
            }
        }

        Assert.Equal(5, statuses.Count(s => s == StatusCode.OK));
        Assert.Equal(7, statuses.Count(s => s == StatusCode.ResourceExhausted));
        Assert.NotNull(pushedBack!.Trailers.GetValue("retry-after-ms"));
        Assert.Equal(5, await TreeSize(client));

        // Another sending key is not affected.
        using Identity carol = Identity.Create();
        await client.Relay.SubmitAsync(new SubmitRequest { Envelope = Valid(carol, bob) });
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task Only_the_key_holder_reads_or_deletes_a_mailbox()
    {
        await using TestNode node = await TestNode.StartAsync();
        using MegaNetClient client = node.Client();
        using Identity alice = Identity.Create(), bob = Identity.Create(), mallory = Identity.Create();
        await client.SendAsync(alice, bob.Card, Encoding.UTF8.GetBytes("for bob only"), "text/plain");

        // No auth at all.
        RpcException none = await Assert.ThrowsAsync<RpcException>(async () => await client.Relay.FetchAsync(new FetchRequest()));
        Assert.Equal(StatusCode.Unauthenticated, none.StatusCode);

        // Mallory signs a challenge for Bob's address with her own key.
        ChallengeResponse challenge = await client.Relay.ChallengeAsync(new ChallengeRequest { Address = ByteString.CopyFrom(bob.Address) });
        MailboxAuth forged = MegaNetClient.SignChallenge(mallory, challenge, bob.Address, MailboxPurpose.Fetch);
        Assert.Equal(StatusCode.PermissionDenied, (await Assert.ThrowsAsync<RpcException>(async () => await client.Relay.FetchAsync(new FetchRequest { Auth = forged }))).StatusCode);

        // Bob's keys, but the signature is Mallory's.
        forged.IdentitySigningKey = ByteString.CopyFrom(bob.Card.SigningKey);
        forged.IdentityEncryptionKey = ByteString.CopyFrom(bob.Card.EncryptionKey);
        Assert.Equal(StatusCode.PermissionDenied, (await Assert.ThrowsAsync<RpcException>(async () => await client.Relay.AckAsync(new AckRequest { Auth = forged, Seqs = { 1 } }))).StatusCode);

        // Mallory's own valid challenge does not open Bob's mailbox either.
        MailboxAuth malloryAuth = await client.AuthenticateAsync(mallory, MailboxPurpose.Fetch);
        malloryAuth.Address = ByteString.CopyFrom(bob.Address);
        Assert.Equal(StatusCode.PermissionDenied, (await Assert.ThrowsAsync<RpcException>(async () => await client.Relay.FetchAsync(new FetchRequest { Auth = malloryAuth }))).StatusCode);

        // A made-up nonce.
        MailboxAuth bobAuth = await client.AuthenticateAsync(bob, MailboxPurpose.Fetch);
        bobAuth.Nonce = ByteString.CopyFrom(new byte[32]);
        Assert.Equal(StatusCode.Unauthenticated, (await Assert.ThrowsAsync<RpcException>(async () => await client.Relay.FetchAsync(new FetchRequest { Auth = bobAuth }))).StatusCode);

        Assert.Single((await client.FetchAsync(bob)).Messages);
        node.AssertNoServerErrors();
    }
}
