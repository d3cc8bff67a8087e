using System.Text;
using Google.Protobuf;
using Grpc.Core;
using MegaNet.Api;
using MegaNet.Api.V1;
using MegaNet.Node.Services;

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
        // A keepalive period longer than the test: after its first drain a subscription that is not woken by the mail
        // (no push) would list the mailbox again only a period later, so only a push delivers within the bound.
        await using TestNode node = await TestNode.StartAsync(o => o.KeepaliveSeconds = 3_600);
        using MegaNetClient aliceClient = node.Client(), bobClient = node.Client();
        using Identity alice = Identity.Create(), bob = Identity.Create();
        // The whole exchange is bounded; 30 s was short for two subscriptions and two sends on a loaded machine.
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(120));

        // The node writes its first keepalive before its first drain of the mailbox, so mail sent as soon as it comes
        // can be found as backlog with push broken; sent once both streams are parked after that drain, it can reach
        // them only by a push.
        var notifier = (MailboxNotifier)node.Services.GetService(typeof(MailboxNotifier))!;
        var bobSubscribed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var aliceSubscribed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using IAsyncEnumerator<ReceivedMessage> bobInbox = bobClient.ListenAsync(bob, 0, cts.Token, alive: () => bobSubscribed.TrySetResult()).GetAsyncEnumerator(cts.Token);
        await using IAsyncEnumerator<ReceivedMessage> aliceInbox = aliceClient.ListenAsync(alice, 0, cts.Token, alive: () => aliceSubscribed.TrySetResult()).GetAsyncEnumerator(cts.Token);
        Task<bool> bobNext = bobInbox.MoveNextAsync().AsTask();
        Task<bool> aliceNext = aliceInbox.MoveNextAsync().AsTask();
        await Task.WhenAll(bobSubscribed.Task, aliceSubscribed.Task).WaitAsync(cts.Token);
        while (notifier.Waiting < 2)
        {
            await Task.Delay(10, cts.Token);
        }

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
        using Identity alice = Identity.Create(), carol = Identity.Create(), bob = Identity.Create();

        // Two streams at once, so submissions share batches and the node reuses its pooled envelope buffers.
        const int PerStream = 200;
        List<Envelope> Make(Identity from, string tag) => Enumerable.Range(0, PerStream)
            .Select(i => EnvelopeFormat.Seal(from, bob.Card, Text($"{tag} {i}"), "text/plain", null, DateTimeOffset.UtcNow.AddDays(1))).ToList();
        List<Envelope> fromAlice = Make(alice, "alice"), fromCarol = Make(carol, "carol");
        fromAlice[7].Signature = ByteString.CopyFrom(new byte[64]);
        // An expiry outside the calendar once ended the whole stream unanswered; it is one refused item.
        fromCarol[11].ExpiresUnixMs = long.MaxValue;

        List<SubmitResult>[] both = await Task.WhenAll(client.SubmitAllAsync(fromAlice), client.SubmitAllAsync(fromCarol));
        Assert.All(both, r => Assert.Equal(PerStream, r.Count));
        Assert.Equal((int)StatusCode.InvalidArgument, both[0][7].StatusCode);
        Assert.Equal((int)StatusCode.InvalidArgument, both[1][11].StatusCode);

        // Each receipt, in request order, names the envelope sent at that position.
        foreach ((List<Envelope> sent, List<SubmitResult> results) in new[] { (fromAlice, both[0]), (fromCarol, both[1]) })
        {
            for (int i = 0; i < PerStream; i++)
            {
                if ((ReferenceEquals(sent, fromAlice) && i == 7) || (ReferenceEquals(sent, fromCarol) && i == 11))
                {
                    continue;
                }

                Assert.Equal(0, results[i].StatusCode);
                Assert.Equal(EnvelopeFormat.EnvelopeId(sent[i]), results[i].Receipt.EnvelopeId.ToByteArray());
            }
        }

        Assert.Null(await client.VerifyReceiptAsync(both[1][PerStream - 1].Receipt));

        // What the node stored is byte for byte what was sent: every message opens and says what it said.
        var expected = Enumerable.Range(0, PerStream).Where(i => i != 7).Select(i => $"alice {i}")
            .Concat(Enumerable.Range(0, PerStream).Where(i => i != 11).Select(i => $"carol {i}")).Order(StringComparer.Ordinal);
        var messages = new List<ReceivedMessage>();
        for (ulong cursor = 0; ;)
        {
            // Pages are cut at RelayService.FetchPageBytes: follow the cursor until a page is empty.
            (IReadOnlyList<ReceivedMessage> page, ulong next) = await client.FetchAsync(bob, cursor, 1000);
            if (page.Count == 0)
            {
                break;
            }

            messages.AddRange(page);
            cursor = next;
        }

        Assert.Equal(expected, messages.Select(m => m.Content.Content.ToStringUtf8()).Order(StringComparer.Ordinal));
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task VerifyBatch_names_the_backend_that_gave_its_verdicts_on_a_gpu_node()
    {
        // gpu-cpu behind the router as gpu is: a call under GpuThreshold runs on SIMD and was answered with the
        // router's name; a call of two steps, the first at the threshold and the second under it, ran on both.
        await using TestNode node = await TestNode.StartAsync(o =>
        {
            o.Backend = "gpu-cpu";
            o.GpuThreshold = MegaNet.Node.Hosting.NodeOptions.VerifyBatchChunk;
        });
        using MegaNetClient client = node.Client();
        using Identity alice = Identity.Create();
        byte[] message = Text("signed by alice");
        var item = new SignatureItem { PublicKey = ByteString.CopyFrom(alice.Card.SigningKey), Signature = ByteString.CopyFrom(alice.SignWithIdentity(message)), Message = ByteString.CopyFrom(message) };

        var small = new VerifyBatchRequest();
        small.Signatures.Add(item);
        VerifyBatchResponse response = await client.Relay.VerifyBatchAsync(small);
        Assert.Equal([true], response.SignatureValid);
        Assert.Equal("simd", response.Backend);

        var twoSteps = new VerifyBatchRequest();
        twoSteps.Signatures.Add(Enumerable.Repeat(item, MegaNet.Node.Hosting.NodeOptions.VerifyBatchChunk + 1));
        response = await client.Relay.VerifyBatchAsync(twoSteps);
        Assert.All(response.SignatureValid, Assert.True);
        Assert.Equal("gpu-cpu+simd", response.Backend);
        node.AssertNoServerErrors();
    }

    /// <summary>Every backend a node runs on a machine without a GPU: the node's own admission, mailbox checks and
    /// delegated verification on each, end to end (the verifier suite covers each backend's verdicts in depth). gpu-cpu
    /// sits behind the router like gpu, so its threshold is 1 here: every batch reaches the kernels.</summary>
    [Theory]
    [InlineData("simd")]
    [InlineData("reference")]
    [InlineData("gpu-cpu")]
    public async Task VerifyBatch_gives_a_verdict_per_item(string backend)
    {
        await using TestNode node = await TestNode.StartAsync(o =>
        {
            o.Backend = backend;
            o.GpuThreshold = 1;
        });
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

        // The receipt's head against a later one: the log grew by bob's reply.
        await client.SendAsync(bob, alice.Card, Text("y"), "text/plain");
        SignedTreeHead later = await client.Relay.GetTreeHeadAsync(new GetTreeHeadRequest());
        ConsistencyProof consistency = await client.Relay.GetConsistencyProofAsync(new ConsistencyProofRequest { First = receipt.TreeHead.TreeSize, Second = later.TreeSize });
        var extends = new ConsistencyItem { FirstSize = receipt.TreeHead.TreeSize, FirstRoot = receipt.TreeHead.RootHash, SecondSize = later.TreeSize, SecondRoot = later.RootHash };
        extends.Path.AddRange(consistency.Path);
        request.Consistencies.Add(extends);
        ConsistencyItem swapped = extends.Clone();
        (swapped.FirstRoot, swapped.SecondRoot) = (extends.SecondRoot, extends.FirstRoot);
        request.Consistencies.Add(swapped);
        ConsistencyItem shortHash = extends.Clone();
        shortHash.Path[0] = ByteString.CopyFrom(shortHash.Path[0].Span[1..]);
        request.Consistencies.Add(shortHash);

        VerifyBatchResponse response = await client.Relay.VerifyBatchAsync(request);
        Assert.Equal([true, false, false], response.SignatureValid);
        Assert.Equal([true, false], response.InclusionValid);
        Assert.Equal([true, false, false], response.ConsistencyValid);
        Assert.Equal(backend, response.Backend);
        // The receipt's mailbox side: bob reads the envelope alice sent, signing a challenge the same backend checks.
        Assert.Single((await client.FetchAsync(bob)).Messages);
        node.AssertNoServerErrors();
    }
}
