using System.Net;
using System.Reflection;
using Grpc.Core;
using MegaNet.Api;
using MegaNet.Api.V1;
using MegaNet.Node.Hosting;
using MegaNet.Node.Services;
using MegaNet.Store;

namespace MegaNet.Node.Tests;

/// <summary>Identities are free, so the 16 subscriptions per mailbox did not bound what one host could hold open: live
/// subscriptions are capped per client site and node-wide, with a reserve for light sites, and the connection cap keeps
/// its last tenth for sites holding few connections.</summary>
public sealed class SubscriptionCapTests
{
    private static ClientAddress Site(string address) => ClientAddress.From(IPAddress.Parse(address))!.Value;

    private static MailboxNotifier Notifier(int total, int perSite) =>
        new(DispatchProxy.Create<IEnvelopeStore, MailboxNotifierTests.EventOnlyStore>(), new NodeOptions { MaxSubscriptions = total, MaxSubscriptionsPerSite = perSite });

    private static byte[] Mailbox(int i)
    {
        byte[] address = new byte[32];
        BitConverter.TryWriteBytes(address, i);
        return address;
    }

    private static void AssertRefused(Func<MailboxNotifier.Subscription> subscribe, string option)
    {
        RpcException e = Assert.Throws<RpcException>(() => subscribe());
        Assert.Equal(StatusCode.ResourceExhausted, e.StatusCode);
        Assert.Equal(TimeSpan.FromMilliseconds(MailboxNotifier.SubscriptionsFullRetryMs), e.RetryAfter());
        Assert.Contains(option, e.Status.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public void A_site_holds_at_most_its_cap_of_subscriptions_over_any_number_of_mailboxes_and_64s()
    {
        MailboxNotifier notifier = Notifier(1_000, 3);
        var held = new List<MailboxNotifier.Subscription>
        {
            notifier.Subscribe(Mailbox(1), Site("203.0.113.9")),
            notifier.Subscribe(Mailbox(2), Site("203.0.113.9")),
            notifier.Subscribe(Mailbox(3), Site("203.0.113.9")),
        };
        AssertRefused(() => notifier.Subscribe(Mailbox(4), Site("203.0.113.9")), "MaxSubscriptionsPerSite");
        Assert.Equal(0, notifier.Count(Mailbox(4))); // a refusal leaves no entry behind
        held.Add(notifier.Subscribe(Mailbox(4), Site("203.0.113.10"))); // another address

        // An IPv6 /48 is one site, whichever of its /64s each subscription comes from.
        for (int block = 0; block < 3; block++)
        {
            held.Add(notifier.Subscribe(Mailbox(10 + block), Site($"2001:db8:1:{block}::1")));
        }

        AssertRefused(() => notifier.Subscribe(Mailbox(20), Site("2001:db8:1:7::1")), "MaxSubscriptionsPerSite");
        held.Add(notifier.Subscribe(Mailbox(20), Site("2001:db8:2::1")));
        Assert.Equal(3, notifier.CountBySite(Site("2001:db8:1:5::9")));

        // One ends: room for one more from that site; all end: nothing is left counted.
        held[0].Dispose();
        held[0] = notifier.Subscribe(Mailbox(5), Site("203.0.113.9"));
        foreach (MailboxNotifier.Subscription s in held)
        {
            s.Dispose();
        }

        Assert.Equal(0, notifier.Total);
        Assert.Equal(0, notifier.CountBySite(Site("203.0.113.9")));
        Assert.Equal(0, notifier.Addresses);
    }

    [Fact]
    public void Past_the_node_wide_cap_only_light_sites_get_in_up_to_a_tenth_more()
    {
        MailboxNotifier notifier = Notifier(20, 1_000);
        var held = new List<MailboxNotifier.Subscription>();
        for (int i = 0; i < 20; i++)
        {
            held.Add(notifier.Subscribe(Mailbox(i), Site("198.51.100.1")));
        }

        AssertRefused(() => notifier.Subscribe(Mailbox(100), Site("198.51.100.1")), "MaxSubscriptions");
        // Sites holding fewer than 8 still get in, to 22: the heavy site did not lock everyone out.
        held.Add(notifier.Subscribe(Mailbox(101), Site("198.51.100.2")));
        held.Add(notifier.Subscribe(Mailbox(102), Site("198.51.100.3")));
        AssertRefused(() => notifier.Subscribe(Mailbox(103), Site("198.51.100.4")), "MaxSubscriptions");
        // A call with no IP address (a Unix socket) counts node-wide.
        AssertRefused(() => notifier.Subscribe(Mailbox(104)), "MaxSubscriptions");
        Assert.Equal(22, notifier.Total);
        foreach (MailboxNotifier.Subscription s in held)
        {
            s.Dispose();
        }

        Assert.Equal(0, notifier.Total);
    }

    [Fact]
    public async Task A_subscription_beyond_its_sites_cap_is_refused_with_a_retry_hint()
    {
        await using TestNode node = await TestNode.StartAsync(o => o.MaxSubscriptionsPerSite = 2);
        using MegaNetClient client = node.Client();
        using Identity a = Identity.Create(), b = Identity.Create(), c = Identity.Create();
        var calls = new List<AsyncServerStreamingCall<MailEvent>>();
        try
        {
            foreach (Identity who in new[] { a, b })
            {
                calls.Add(client.Relay.Subscribe(new SubscribeRequest { Auth = await client.AuthenticateAsync(who, MailboxPurpose.Subscribe) }));
                Assert.True(await calls[^1].ResponseStream.MoveNext(CancellationToken.None)); // the keepalive: registered
            }

            // A third identity (free to make) from the same site: before, only its mailbox's 16 bounded it.
            using AsyncServerStreamingCall<MailEvent> third = client.Relay.Subscribe(new SubscribeRequest { Auth = await client.AuthenticateAsync(c, MailboxPurpose.Subscribe) },
                deadline: DateTime.UtcNow.AddMinutes(2));
            RpcException refused = await Assert.ThrowsAsync<RpcException>(async () => await third.ResponseStream.MoveNext(CancellationToken.None));
            Assert.True(refused.StatusCode == StatusCode.ResourceExhausted, $"{refused.StatusCode}: {refused.Status.Detail}");
            Assert.Equal(TimeSpan.FromMilliseconds(MailboxNotifier.SubscriptionsFullRetryMs), refused.RetryAfter());
            Assert.Contains("holds 2 live subscriptions", refused.Status.Detail, StringComparison.Ordinal);
            Assert.Contains("MaxSubscriptionsPerSite", refused.Status.Detail, StringComparison.Ordinal);
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
    public void The_last_tenth_of_the_connection_cap_is_kept_for_sites_holding_few_connections()
    {
        var gate = new ConnectionGate(20, 100, null, Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance);
        Assert.Equal(2, gate.Reserve);
        for (int i = 0; i < 18; i++)
        {
            Assert.Null(gate.TryEnter(Site("198.51.100.1")));
        }

        // Before, the heavy site took all 20 and everyone else was shut out.
        Assert.Equal("reserve", gate.TryEnter(Site("198.51.100.1")));
        Assert.Null(gate.TryEnter(Site("2001:db8:1:1::1"))); // light sites get in
        Assert.Null(gate.TryEnter(Site("198.51.100.2")));
        Assert.Equal("node", gate.TryEnter(Site("198.51.100.3"))); // and no further: the cap is the descriptors'
        Assert.Equal(20, gate.Open);

        // An IPv6 site counts by /48: holding 4 connections from as many /64s, it is heavy.
        var other = new ConnectionGate(20, 100, null, Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance);
        for (int i = 0; i < 14; i++)
        {
            Assert.Null(other.TryEnter(Site("198.51.100.1")));
        }

        for (int block = 0; block < 4; block++)
        {
            Assert.Null(other.TryEnter(Site($"2001:db8:1:{block}::1")));
        }

        Assert.Equal("reserve", other.TryEnter(Site("2001:db8:1:9::1")));
        Assert.Null(other.TryEnter(Site("203.0.113.1")));
    }
}
