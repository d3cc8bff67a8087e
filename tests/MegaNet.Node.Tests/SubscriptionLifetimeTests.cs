using System.Diagnostics;
using System.Text;
using Grpc.Core;
using MegaNet.Api;
using MegaNet.Api.V1;
using MegaNet.Node.Admission;
using MegaNet.Node.Services;

namespace MegaNet.Node.Tests;

/// <summary>A subscription's auth is checked once, when it opens: the node ends every subscription after its lifetime,
/// so an auth captured before it was used does not watch the mailbox for good, and the client renews it unseen.</summary>
public sealed class SubscriptionLifetimeTests
{
    private static byte[] Text(string s) => Encoding.UTF8.GetBytes(s);

    [Fact]
    public void A_subscription_lasts_between_nine_tenths_and_all_of_its_lifetime()
    {
        Assert.Equal(TimeSpan.FromSeconds(3_600), RelayService.SubscriptionLife(3_600, 0));
        Assert.Equal(TimeSpan.FromSeconds(3_240), RelayService.SubscriptionLife(3_600, 1));
        Assert.InRange(RelayService.SubscriptionLife(3_600, Random.Shared.NextDouble()), TimeSpan.FromSeconds(3_240), TimeSpan.FromSeconds(3_600));
    }

    [Fact]
    public async Task The_node_ends_a_subscription_after_its_lifetime_saying_where_to_resume()
    {
        await using TestNode node = await TestNode.StartAsync(o => o.SubscriptionLifetimeSeconds = 2);
        using MegaNetClient client = node.Client();
        using Identity alice = Identity.Create(), bob = Identity.Create();
        await client.SendAsync(alice, bob.Card, Text("one"), "text/plain");

        // Bounded: before the fix the stream went on (a keepalive every 15 s) for as long as the client held it.
        var clock = Stopwatch.StartNew();
        using AsyncServerStreamingCall<MailEvent> call = client.Relay.Subscribe(new SubscribeRequest { Auth = await client.AuthenticateAsync(bob, MailboxPurpose.Subscribe) },
            deadline: DateTime.UtcNow.AddSeconds(60));
        var items = new List<ulong>();
        RpcException ended = await Assert.ThrowsAsync<RpcException>(async () =>
        {
            while (await call.ResponseStream.MoveNext(CancellationToken.None))
            {
                if (call.ResponseStream.Current.KindCase == MailEvent.KindOneofCase.Item)
                {
                    items.Add(call.ResponseStream.Current.Item.Seq);
                }
            }
        });

        Assert.True(ended.StatusCode == StatusCode.Unavailable, $"{ended.StatusCode}: {ended.Status.Detail}");
        Assert.True(MegaNetClient.IsSubscriptionLifetimeEnd(ended), $"no '{MegaNetClient.SubscriptionEndedTrailer}: {MegaNetClient.SubscriptionLifetimeEnded}' trailer: {ended.Status.Detail}");
        Assert.Contains($"after_seq {items.Single()} to resume", ended.Status.Detail, StringComparison.Ordinal);
        Assert.Contains("SubscriptionLifetimeSeconds", ended.Status.Detail, StringComparison.Ordinal);
        // 90 % of the lifetime at the least; far less than the deadline.
        Assert.InRange(clock.Elapsed, TimeSpan.FromSeconds(1.7), TimeSpan.FromSeconds(45));

        // Its slot is let go.
        var notifier = (MailboxNotifier)node.Services.GetService(typeof(MailboxNotifier))!;
        await Poll.UntilAsync(() => notifier.Count(bob.Address) == 0, () => $"{notifier.Count(bob.Address)} subscription(s) of the ended one's mailbox still counted");
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task ListenAsync_renews_an_ended_subscription_with_a_fresh_challenge_and_misses_nothing()
    {
        await using TestNode node = await TestNode.StartAsync(o => o.SubscriptionLifetimeSeconds = 2);
        using MegaNetClient sender = node.Client(), client = node.Client();
        using Identity alice = Identity.Create(), bob = Identity.Create();
        var authenticator = (MailboxAuthenticator)node.Services.GetService(typeof(MailboxAuthenticator))!;
        await sender.SendAsync(alice, bob.Card, Text("before"), "text/plain");

        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        await using IAsyncEnumerator<ReceivedMessage> inbox = client.ListenAsync(bob, 0, cts.Token).GetAsyncEnumerator(cts.Token);
        Assert.True(await inbox.MoveNextAsync());
        Assert.Equal("before", inbox.Current.Content.Content.ToStringUtf8());

        // Two lifetimes pass while the caller waits for mail: each end is renewed with a new challenge (a nonce used
        // each), and the caller sees none of it.
        Task<bool> next = inbox.MoveNextAsync().AsTask();
        var clock = Stopwatch.StartNew();
        while (authenticator.UsedCount < 3 && !next.IsCompleted)
        {
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(60), $"{authenticator.UsedCount} subscription(s) in 60 s with a lifetime of 2 s");
            await Task.Delay(50);
        }

        Assert.False(next.IsCompleted, $"the listen ended at a subscription's lifetime: {next.Exception?.InnerException?.Message}");
        await sender.SendAsync(alice, bob.Card, Text("after renewals"), "text/plain");
        Assert.True(await next);
        Assert.Equal("after renewals", inbox.Current.Content.Content.ToStringUtf8());
        Assert.Equal(2UL, inbox.Current.Seq);

        // One live subscription at a time: the ended ones were let go.
        var notifier = (MailboxNotifier)node.Services.GetService(typeof(MailboxNotifier))!;
        // (Waited for: a renewal may be between the node's end of one and the client's next Subscribe.)
        await Poll.UntilAsync(() => notifier.Count(bob.Address) == 1, () => $"{notifier.Count(bob.Address)} live subscriptions of the mailbox, not 1");
        Assert.False(cts.IsCancellationRequested);
        node.AssertNoServerErrors();
    }
}
