using System.Text;
using Google.Protobuf;
using Grpc.Core;
using MegaNet.Api;
using MegaNet.Api.V1;

namespace MegaNet.Node.Tests;

/// <summary>Two clients and a real node on 127.0.0.1 exchanging mail.</summary>
public sealed class RelayEndToEndTests
{
    private static byte[] Text(string s) => Encoding.UTF8.GetBytes(s);

    [Fact]
    public async Task Offline_mail_waits_and_receipts_verify()
    {
        await using TestNode node = await TestNode.StartAsync();
        using MegaNetClient client = node.Client();
        using Identity alice = Identity.Create(), bob = Identity.Create();

        Receipt receipt = await client.SendAsync(alice, bob.Card, Text("hello bob"), "text/plain; charset=utf-8");
        Assert.Null(await client.VerifyReceiptAsync(receipt));

        (IReadOnlyList<ReceivedMessage> messages, _) = await client.FetchAsync(bob);
        ReceivedMessage m = Assert.Single(messages);
        Assert.Equal("hello bob", m.Content.Content.ToStringUtf8());
        Assert.Equal(alice.Card.ToString(), m.Sender.ToString());
        Assert.Equal(receipt.EnvelopeId.ToByteArray(), m.EnvelopeId);

        Assert.Equal(1, await client.AckAsync(bob, [m.Seq]));
        Assert.Empty((await client.FetchAsync(bob)).Messages);
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task Live_mail_is_pushed_to_a_subscriber_both_ways()
    {
        await using TestNode node = await TestNode.StartAsync();
        using MegaNetClient aliceClient = node.Client(), bobClient = node.Client();
        using Identity alice = Identity.Create(), bob = Identity.Create();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));

        await using IAsyncEnumerator<ReceivedMessage> bobInbox = bobClient.ListenAsync(bob, 0, cts.Token).GetAsyncEnumerator(cts.Token);
        await using IAsyncEnumerator<ReceivedMessage> aliceInbox = aliceClient.ListenAsync(alice, 0, cts.Token).GetAsyncEnumerator(cts.Token);
        Task<bool> bobNext = bobInbox.MoveNextAsync().AsTask();
        Task<bool> aliceNext = aliceInbox.MoveNextAsync().AsTask();
        await Task.Delay(300);

        await aliceClient.SendAsync(alice, bob.Card, Text("ping"), "text/plain; charset=utf-8");
        Assert.True(await bobNext);
        Assert.Equal("ping", bobInbox.Current.Content.Content.ToStringUtf8());

        await bobClient.SendAsync(bob, bobInbox.Current.Sender, Text("pong"), "text/plain; charset=utf-8");
        Assert.True(await aliceNext);
        Assert.Equal("pong", aliceInbox.Current.Content.Content.ToStringUtf8());
        Assert.Equal(bob.Card.ToString(), aliceInbox.Current.Sender.ToString());
        cts.Cancel();
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task A_restart_keeps_acknowledged_mail_and_the_log()
    {
        await using TestNode node = await TestNode.StartAsync();
        using Identity alice = Identity.Create(), bob = Identity.Create();
        Receipt receipt;
        using (MegaNetClient client = node.Client())
        {
            receipt = await client.SendAsync(alice, bob.Card, Text("survive"), "text/plain; charset=utf-8");
        }

        await node.RestartAsync();
        using MegaNetClient after = node.Client();
        ReceivedMessage m = Assert.Single((await after.FetchAsync(bob)).Messages);
        Assert.Equal("survive", m.Content.Content.ToStringUtf8());
        Assert.Null(await after.VerifyReceiptAsync(receipt));
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task Bulk_streaming_submit_returns_a_receipt_per_envelope_in_order()
    {
        await using TestNode node = await TestNode.StartAsync();
        using MegaNetClient client = node.Client();
        using Identity alice = Identity.Create(), bob = Identity.Create();
        var envelopes = Enumerable.Range(0, 50).Select(i => EnvelopeFormat.Seal(alice, bob.Card, Text($"bulk {i}"), "text/plain", null, DateTimeOffset.UtcNow.AddDays(1))).ToList();
        envelopes[7].Signature = ByteString.CopyFrom(new byte[64]);

        using AsyncDuplexStreamingCall<SubmitRequest, SubmitResult> call = client.Relay.SubmitStream();
        foreach (Envelope e in envelopes)
        {
            await call.RequestStream.WriteAsync(new SubmitRequest { Envelope = e });
        }

        await call.RequestStream.CompleteAsync();
        var results = new List<SubmitResult>();
        await foreach (SubmitResult r in call.ResponseStream.ReadAllAsync())
        {
            results.Add(r);
        }

        Assert.Equal(50, results.Count);
        Assert.Equal((int)StatusCode.InvalidArgument, results[7].StatusCode);
        Assert.Equal(49, results.Count(r => r.StatusCode == 0 && r.Receipt is not null));
        Assert.Equal(49, (await client.FetchAsync(bob, 0, 1000)).Messages.Count);
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task VerifyBatch_gives_a_verdict_per_item()
    {
        await using TestNode node = await TestNode.StartAsync();
        using MegaNetClient client = node.Client();
        using Identity alice = Identity.Create(), bob = Identity.Create();
        Receipt receipt = await client.SendAsync(alice, bob.Card, Text("x"), "text/plain");
        InclusionProof proof = await client.Relay.GetInclusionProofAsync(new InclusionProofRequest { LeafIndex = receipt.LogIndex, TreeSize = receipt.TreeHead.TreeSize });

        byte[] message = Text("signed by alice");
        var request = new VerifyBatchRequest();
        request.Signatures.Add(new SignatureItem { PublicKey = ByteString.CopyFrom(alice.Card.SigningKey), Signature = ByteString.CopyFrom(alice.SignWithIdentity(message)), Message = ByteString.CopyFrom(message) });
        request.Signatures.Add(new SignatureItem { PublicKey = ByteString.CopyFrom(bob.Card.SigningKey), Signature = ByteString.CopyFrom(alice.SignWithIdentity(message)), Message = ByteString.CopyFrom(message) });
        request.Signatures.Add(new SignatureItem { PublicKey = ByteString.CopyFrom(new byte[5]), Signature = ByteString.CopyFrom(new byte[64]), Message = ByteString.Empty });
        var good = new InclusionItem { Leaf = receipt.EnvelopeId, LeafIndex = receipt.LogIndex, TreeSize = receipt.TreeHead.TreeSize, RootHash = receipt.TreeHead.RootHash };
        good.Path.AddRange(proof.Path);
        request.Inclusions.Add(good);
        InclusionItem bad = good.Clone();
        bad.Leaf = ByteString.CopyFrom(new byte[32]);
        request.Inclusions.Add(bad);

        VerifyBatchResponse response = await client.Relay.VerifyBatchAsync(request);
        Assert.Equal([true, false, false], response.SignatureValid);
        Assert.Equal([true, false], response.InclusionValid);
        Assert.Equal("simd", response.Backend);
        node.AssertNoServerErrors();
    }
}
