using System.Diagnostics;
using System.Text;
using Grpc.Core;
using MegaNet.Api;
using MegaNet.Api.V1;
using Microsoft.Extensions.DependencyInjection;

namespace MegaNet.Node.Tests;

/// <summary>A subscription whose connection died without a word ends, instead of waiting for mail forever.</summary>
public sealed class ListenTests
{
    private static byte[] Text(string s) => Encoding.UTF8.GetBytes(s);

    [Fact]
    public async Task Listen_ends_when_no_event_comes_for_three_keepalive_intervals_on_a_half_open_connection()
    {
        await using TestNode node = await TestNode.StartAsync(o => o.KeepaliveSeconds = 1);
        await using var proxy = new FreezableProxy(node.Address);
        using MegaNetClient sender = node.Client(), client = new(proxy.Address);
        using Identity alice = Identity.Create(), bob = Identity.Create();
        await sender.SendAsync(alice, bob.Card, Text("before"), "text/plain");

        // The whole test must end: before the watchdog, the frozen connection was waited on forever.
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        int events = 0; // mail and keepalives the client read
        await using IAsyncEnumerator<ReceivedMessage> inbox = client.ListenAsync(bob, 0, cts.Token, alive: () => Interlocked.Increment(ref events)).GetAsyncEnumerator(cts.Token);
        Assert.True(await inbox.MoveNextAsync());
        Assert.Equal("before", inbox.Current.Content.Content.ToStringUtf8());

        // Keepalives flow (one a second) while the client waits; a message after them still arrives. The client knows
        // the node's interval once it read two keepalives in a row (before that its watchdog does not run), so the
        // test waits for two, not for a fixed time: on a loaded machine 2.5 s did not always bring them.
        int atBefore = Volatile.Read(ref events);
        Task<bool> next = inbox.MoveNextAsync().AsTask();
        var keepalives = Stopwatch.StartNew();
        while (Volatile.Read(ref events) < atBefore + 2 && !next.IsCompleted)
        {
            Assert.True(keepalives.Elapsed < TimeSpan.FromSeconds(60), $"only {Volatile.Read(ref events) - atBefore} keepalive(s) in 60 s from a node that sends one a second");
            await Task.Delay(50);
        }

        Assert.False(next.IsCompleted, $"the subscription ended before any new mail: {next.Exception?.InnerException?.Message}");
        await sender.SendAsync(alice, bob.Card, Text("after keepalives"), "text/plain");
        Assert.True(await next);
        Assert.Equal("after keepalives", inbox.Current.Content.Content.ToStringUtf8());

        // Then the connection goes half-open: no byte either way, no FIN, no RST.
        proxy.Freeze();
        var waited = Stopwatch.StartNew();
        NodeSilentException e = await Assert.ThrowsAsync<NodeSilentException>(async () => await inbox.MoveNextAsync());
        // Three intervals and 2 s after the last keepalive read (an interval the node stretched under load counts):
        // 30 s is far beyond that, and far below the HTTP/2 ping's 50 s, the only other end of a half-open connection.
        Assert.InRange(waited.Elapsed, TimeSpan.FromSeconds(3), TimeSpan.FromSeconds(30));
        Assert.Contains("the connection or the node is dead", e.Message, StringComparison.Ordinal);
        Assert.False(cts.IsCancellationRequested);
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task A_reader_slow_with_its_first_message_does_not_make_the_watchdog_take_a_live_node_for_dead()
    {
        // The node sends a keepalive 3 s after the message. A reader busy 2.8 s with the message then sees it 0.2 s
        // after asking: measured here, that made the interval 0.2 s and the watchdog gave up 2.6 s later, before
        // the next keepalive came. The node's own stamps give 3 s.
        await using TestNode node = await TestNode.StartAsync(o => o.KeepaliveSeconds = 3);
        using MegaNetClient sender = node.Client(), client = node.Client();
        using Identity alice = Identity.Create(), bob = Identity.Create();
        await sender.SendAsync(alice, bob.Card, Text("first"), "text/plain");
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        await using IAsyncEnumerator<ReceivedMessage> inbox = client.ListenAsync(bob, 0, cts.Token).GetAsyncEnumerator(cts.Token);
        Assert.True(await inbox.MoveNextAsync());
        await Task.Delay(2800);

        // Four keepalive intervals of quiet, then mail: it must arrive, not a NodeSilentException.
        Task<bool> next = inbox.MoveNextAsync().AsTask();
        await Task.Delay(12_000);
        Assert.False(next.IsFaulted, next.Exception?.InnerException?.Message);
        await sender.SendAsync(alice, bob.Card, Text("second"), "text/plain");
        Assert.True(await next);
        Assert.Equal("second", inbox.Current.Content.Content.ToStringUtf8());
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task A_refused_subscription_is_not_reported_alive()
    {
        await using TestNode node = await TestNode.StartAsync();
        using MegaNetClient client = node.Client();
        using Identity bob = Identity.Create();
        List<AsyncServerStreamingCall<MailEvent>> calls = await MailboxAccessTests.SubscribeToTheLimitAsync(client, bob);
        try
        {
            // The 17th is refused; its refusal comes as response headers too, which once counted as "subscribed".
            bool alive = false;
            // Bounded: a 17th subscription that is not refused would wait for mail (and skip keepalives) forever.
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(120));
            RpcException refused = await Assert.ThrowsAsync<RpcException>(async () =>
            {
                await foreach (ReceivedMessage _ in client.ListenAsync(bob, cancellationToken: cts.Token, alive: () => alive = true))
                {
                }
            });
            Assert.False(cts.IsCancellationRequested, $"the 17th subscription was neither refused nor ended within 120 s (alive: {alive}); it ended with {refused.StatusCode}");
            Assert.Equal(StatusCode.ResourceExhausted, refused.StatusCode);
            Assert.False(alive);
        }
        finally
        {
            foreach (AsyncServerStreamingCall<MailEvent> call in calls)
            {
                call.Dispose();
            }
        }
    }

    [Fact]
    public async Task Keepalives_stay_one_interval_apart_when_the_node_s_wall_clock_steps_forward()
    {
        // Clients learn the node's keepalive interval from the gap between two keepalives, by the stamps in them: a
        // node clock stepped forward an hour between two made that gap an hour, and a client's watchdog three hours.
        var clock = new SteppedWallClock();
        await using TestNode node = await TestNode.StartAsync(o => o.KeepaliveSeconds = 1, services: s => s.AddSingleton<TimeProvider>(clock));
        using MegaNetClient client = node.Client();
        using Identity bob = Identity.Create();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        using AsyncServerStreamingCall<MailEvent> call = client.Relay.Subscribe(
            new SubscribeRequest { Auth = await client.AuthenticateAsync(bob, MailboxPurpose.Subscribe) }, cancellationToken: cts.Token);
        Assert.True(await call.ResponseStream.MoveNext(cts.Token));
        long first = call.ResponseStream.Current.KeepaliveUnixMs;

        clock.Step = TimeSpan.FromHours(1);
        Assert.True(await call.ResponseStream.MoveNext(cts.Token));
        Assert.Equal(MailEvent.KindOneofCase.KeepaliveUnixMs, call.ResponseStream.Current.KindCase);
        // One interval (a second) by the node's monotonic clock, however late the machine ran it; never the step.
        Assert.InRange(call.ResponseStream.Current.KeepaliveUnixMs - first, 1, (long)TimeSpan.FromMinutes(1).TotalMilliseconds);
    }

    /// <summary>The system's clock, whose wall time a test steps (NTP stepping it); the monotonic clock runs on.</summary>
    private sealed class SteppedWallClock : TimeProvider
    {
        public TimeSpan Step { get; set; }

        public override DateTimeOffset GetUtcNow() => base.GetUtcNow() + Step;
    }
}
