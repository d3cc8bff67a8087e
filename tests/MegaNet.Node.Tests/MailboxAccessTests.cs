using System.Text;
using Google.Protobuf;
using Grpc.Core;
using MegaNet.Api;
using MegaNet.Api.V1;
using MegaNet.Node.Services;
using MegaNet.Store;
using Xunit.Abstractions;

namespace MegaNet.Node.Tests;

/// <summary>Mailbox access that must not be abusable: single-use challenges, bounded acks, subscriptions that come and go.</summary>
public sealed class MailboxAccessTests(ITestOutputHelper output)
{
    [Fact]
    public async Task A_signed_challenge_opens_one_call_only()
    {
        await using TestNode node = await TestNode.StartAsync();
        using MegaNetClient client = node.Client();
        using Identity alice = Identity.Create(), bob = Identity.Create();
        await client.SendAsync(alice, bob.Card, Encoding.UTF8.GetBytes("hi"), "text/plain");

        MailboxAuth auth = await client.AuthenticateAsync(bob, MailboxPurpose.Fetch);
        FetchResponse first = await client.Relay.FetchAsync(new FetchRequest { Auth = auth });
        Assert.Single(first.Items);
        // Whoever saw that auth (a log, a proxy) cannot use it again: not to read, not to delete.
        RpcException again = await Assert.ThrowsAsync<RpcException>(async () => await client.Relay.FetchAsync(new FetchRequest { Auth = auth }));
        Assert.Equal(StatusCode.Unauthenticated, again.StatusCode);
        Assert.Contains("already used", again.Status.Detail, StringComparison.Ordinal);
        RpcException ack = await Assert.ThrowsAsync<RpcException>(async () => await client.Relay.AckAsync(new AckRequest { Auth = auth, Seqs = { first.Items[0].Seq } }));
        Assert.Equal(StatusCode.Unauthenticated, ack.StatusCode);
        Assert.Single((await client.FetchAsync(bob)).Messages);

        // An auth signed for a Fetch and not yet used (a proxy or a node saw it on its way) cannot be spent as an Ack:
        // a signature is good for one method, and an Ack's for the sequence numbers it names.
        MailboxAuth forFetch = await client.AuthenticateAsync(bob, MailboxPurpose.Fetch);
        RpcException asAck = await Assert.ThrowsAsync<RpcException>(async () => await client.Relay.AckAsync(new AckRequest { Auth = forFetch, Seqs = { first.Items[0].Seq } }));
        Assert.Equal(StatusCode.PermissionDenied, asAck.StatusCode);
        Assert.Contains("this call", asAck.Status.Detail, StringComparison.Ordinal);
        MailboxAuth forOther = await client.AuthenticateAsync(bob, MailboxPurpose.Ack([first.Items[0].Seq + 1]));
        RpcException otherSeqs = await Assert.ThrowsAsync<RpcException>(async () => await client.Relay.AckAsync(new AckRequest { Auth = forOther, Seqs = { first.Items[0].Seq } }));
        Assert.Equal(StatusCode.PermissionDenied, otherSeqs.StatusCode);
        MailboxAuth forSubscribe = await client.AuthenticateAsync(bob, MailboxPurpose.Subscribe);
        RpcException asFetch = await Assert.ThrowsAsync<RpcException>(async () => await client.Relay.FetchAsync(new FetchRequest { Auth = forSubscribe }));
        Assert.Equal(StatusCode.PermissionDenied, asFetch.StatusCode);
        Assert.Single((await client.FetchAsync(bob)).Messages); // nothing was deleted

        // Concurrent calls with one auth: exactly one gets in.
        MailboxAuth shared = await client.AuthenticateAsync(bob, MailboxPurpose.Fetch);
        var calls = Enumerable.Range(0, 8).Select(_ => client.Relay.FetchAsync(new FetchRequest { Auth = shared }).ResponseAsync).ToList();
        int succeeded = 0;
        foreach (Task<FetchResponse> call in calls)
        {
            try
            {
                await call;
                succeeded++;
            }
            catch (RpcException e) when (e.StatusCode == StatusCode.Unauthenticated)
            {
            }
        }

        Assert.Equal(1, succeeded);
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task A_client_signs_challenges_only_for_the_node_id_it_expects()
    {
        await using TestNode node = await TestNode.StartAsync();
        using Identity alice = Identity.Create(), bob = Identity.Create();
        byte[] nodeId;
        using (MegaNetClient first = node.Client())
        {
            await first.SendAsync(alice, bob.Card, Encoding.UTF8.GetBytes("hi"), "text/plain");
            Assert.Null(first.NodeId);
            Assert.Single((await first.FetchAsync(bob)).Messages);
            // Trusted on first use, and held to it.
            nodeId = Assert.IsType<byte[]>(first.NodeId);
        }

        using (var pinned = new MegaNetClient(node.Address, nodeId))
        {
            Assert.Single((await pinned.FetchAsync(bob)).Messages);
        }

        byte[] other = (byte[])nodeId.Clone();
        other[0] ^= 1;
        using (var wrong = new MegaNetClient(node.Address, other))
        {
            NodeIdMismatchException e = await Assert.ThrowsAsync<NodeIdMismatchException>(() => wrong.AckAsync(bob, [1]));
            Assert.Equal(other, e.Expected);
            Assert.Equal(nodeId, e.Actual);
        }

        // Nothing was signed, so nothing was deleted.
        using MegaNetClient check = node.Client();
        Assert.Single((await check.FetchAsync(bob)).Messages);
        node.AssertNoServerErrors();
    }

    /// <summary>Opens as many subscriptions of <paramref name="who"/>'s mailbox as a node keeps, each registered (the
    /// node has answered its headers); the caller disposes them.</summary>
    internal static async Task<List<AsyncServerStreamingCall<MailEvent>>> SubscribeToTheLimitAsync(MegaNetClient client, Identity who)
    {
        var calls = new List<AsyncServerStreamingCall<MailEvent>>();
        for (int i = 0; i < MailboxNotifier.MaxPerAddress; i++)
        {
            calls.Add(client.Relay.Subscribe(new SubscribeRequest { Auth = await client.AuthenticateAsync(who, MailboxPurpose.Subscribe) }));
        }

        foreach (AsyncServerStreamingCall<MailEvent> call in calls)
        {
            await call.ResponseHeadersAsync.WaitAsync(TimeSpan.FromSeconds(60));
        }

        return calls;
    }

    [Fact]
    public async Task A_mailbox_holds_a_bounded_number_of_live_subscriptions()
    {
        await using TestNode node = await TestNode.StartAsync();
        using MegaNetClient client = node.Client();
        using Identity bob = Identity.Create();
        List<AsyncServerStreamingCall<MailEvent>> calls = await SubscribeToTheLimitAsync(client, bob);
        try
        {

            // A deadline: a 17th subscription that is not refused would otherwise wait for mail forever.
            using AsyncServerStreamingCall<MailEvent> extra = client.Relay.Subscribe(new SubscribeRequest { Auth = await client.AuthenticateAsync(bob, MailboxPurpose.Subscribe) },
                deadline: DateTime.UtcNow.AddMinutes(2));
            RpcException refused = await Assert.ThrowsAsync<RpcException>(async () => await extra.ResponseStream.MoveNext(CancellationToken.None));
            Assert.Equal(StatusCode.ResourceExhausted, refused.StatusCode);
            // With a hint, so that a listen subscribing again waits for a dead connection's slot instead of giving up.
            Assert.Equal(TimeSpan.FromMilliseconds(MailboxNotifier.SubscriptionsFullRetryMs), refused.RetryAfter());

            // One closes: room for another.
            calls[0].Dispose();
            calls.RemoveAt(0);
            // The node sees the cancelled stream soon, or a minute later on a loaded machine (5 s was the bound).
            var notifier = (MailboxNotifier)node.Services.GetService(typeof(MailboxNotifier))!;
            await Poll.UntilAsync(() => notifier.Count(bob.Address) < MailboxNotifier.MaxPerAddress,
                () => $"{notifier.Count(bob.Address)} subscriptions still counted after one of {MailboxNotifier.MaxPerAddress} was disposed");
            calls.Add(client.Relay.Subscribe(new SubscribeRequest { Auth = await client.AuthenticateAsync(bob, MailboxPurpose.Subscribe) }));
            await calls[^1].ResponseHeadersAsync.WaitAsync(TimeSpan.FromSeconds(60));
        }
        finally
        {
            foreach (AsyncServerStreamingCall<MailEvent> call in calls)
            {
                call.Dispose();
            }
        }

        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task Challenges_hold_no_state_so_many_of_them_lock_nobody_out()
    {
        await using TestNode node = await TestNode.StartAsync();
        using MegaNetClient client = node.Client();
        using Identity alice = Identity.Create(), bob = Identity.Create();
        await client.SendAsync(alice, bob.Card, Encoding.UTF8.GetBytes("still reachable"), "text/plain");
        var address = ByteString.CopyFrom(new byte[32]);
        // More than the 200,000 outstanding challenges that once filled a table and locked every mailbox.
        await Parallel.ForAsync(0, 210_000, new ParallelOptions { MaxDegreeOfParallelism = 16 }, async (_, ct) =>
            await client.Relay.ChallengeAsync(new ChallengeRequest { Address = address }, cancellationToken: ct));
        Assert.Single((await client.FetchAsync(bob)).Messages);
        // A nonce is bound to its address: bob's challenge does not open alice's mailbox even when signed by alice.
        ChallengeResponse forBob = await client.Relay.ChallengeAsync(new ChallengeRequest { Address = ByteString.CopyFrom(bob.Address) });
        MailboxAuth swapped = MegaNetClient.SignChallenge(alice, forBob, alice.Address, MailboxPurpose.Fetch);
        Assert.Equal(StatusCode.PermissionDenied, (await Assert.ThrowsAsync<RpcException>(async () => await client.Relay.FetchAsync(new FetchRequest { Auth = swapped }))).StatusCode);
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task An_oversized_ack_is_refused_and_the_node_keeps_taking_mail()
    {
        await using TestNode node = await TestNode.StartAsync();
        using MegaNetClient client = node.Client();
        using Identity alice = Identity.Create(), bob = Identity.Create(), mallory = Identity.Create();
        // 1.1 million sequence numbers: one log record larger than a log page, which used to fail the commit and with
        // it every later write. Now a request that large (1.1 MB) is refused from its length prefix, before it is read.
        var huge = new AckRequest { Auth = await client.AuthenticateAsync(mallory, MailboxPurpose.Ack(new ulong[1_100_000])) };
        huge.Seqs.AddRange(new ulong[1_100_000]);
        RpcException e = await Assert.ThrowsAsync<RpcException>(async () => await client.Relay.AckAsync(huge));
        Assert.Equal(StatusCode.ResourceExhausted, e.StatusCode);
        Assert.Contains("/meganet.v1.Relay/Ack takes at most 65,536", e.Status.Detail, StringComparison.Ordinal);

        // One more than an Ack may carry, in a request of ordinary size: refused by the count.
        ulong[] oneTooMany = Enumerable.Range(1, FasterEnvelopeStore.MaxAckSeqs + 1).Select(i => (ulong)i).ToArray();
        var tooMany = new AckRequest { Auth = await client.AuthenticateAsync(mallory, MailboxPurpose.Ack(oneTooMany)) };
        tooMany.Seqs.AddRange(oneTooMany);
        e = await Assert.ThrowsAsync<RpcException>(async () => await client.Relay.AckAsync(tooMany));
        Assert.Equal(StatusCode.InvalidArgument, e.StatusCode);
        Assert.Contains($"At most {FasterEnvelopeStore.MaxAckSeqs}", e.Status.Detail, StringComparison.Ordinal);
        await client.SendAsync(alice, bob.Card, Encoding.UTF8.GetBytes("after the ack"), "text/plain");

        ulong[] allowed = Enumerable.Range(1, FasterEnvelopeStore.MaxAckSeqs).Select(i => (ulong)i).ToArray();
        var most = new AckRequest { Auth = await client.AuthenticateAsync(bob, MailboxPurpose.Ack(allowed)) };
        most.Seqs.AddRange(allowed);
        Assert.Equal(1, (await client.Relay.AckAsync(most)).Deleted);
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task Subscriptions_that_come_and_go_during_deliveries_never_fail_the_store()
    {
        await using TestNode node = await TestNode.StartAsync(TestNode.Unthrottled);
        var notifier = (MailboxNotifier)node.Services.GetService(typeof(MailboxNotifier))!;
        using MegaNetClient client = node.Client();
        using Identity alice = Identity.Create(), bob = Identity.Create();
        using var stop = new CancellationTokenSource();
        // A subscription disposed while the store signals it once threw out of the store's apply step, which took it
        // for a failed commit and refused every write after.
        Task[] churn = Enumerable.Range(0, 2).Select(_ => Task.Run(() =>
        {
            while (!stop.IsCancellationRequested)
            {
                notifier.Subscribe(bob.Address).Dispose();
            }
        })).ToArray();
        int sent = 0;
        var until = DateTime.UtcNow.AddSeconds(3);
        while (DateTime.UtcNow < until)
        {
            await Task.WhenAll(Enumerable.Range(0, 16).Select(i => client.SendAsync(alice, bob.Card, [(byte)i], "application/octet-stream")));
            sent += 16;
        }

        await stop.CancelAsync();
        await Task.WhenAll(churn);
        output.WriteLine($"{sent} sent while subscriptions came and went");
        // Every subscription left: no empty entries stay behind for addresses nobody listens to.
        Assert.Equal(0, notifier.Addresses);
        await client.SendAsync(alice, bob.Card, [1], "application/octet-stream");
        node.AssertNoServerErrors();
    }
}
