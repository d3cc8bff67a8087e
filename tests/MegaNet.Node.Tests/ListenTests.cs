using System.Diagnostics;
using System.Text;
using MegaNet.Api;

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
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await using IAsyncEnumerator<ReceivedMessage> inbox = client.ListenAsync(bob, 0, cts.Token).GetAsyncEnumerator(cts.Token);
        Assert.True(await inbox.MoveNextAsync());
        Assert.Equal("before", inbox.Current.Content.Content.ToStringUtf8());

        // Keepalives flow (one a second) while the client waits; a message after them still arrives.
        Task<bool> next = inbox.MoveNextAsync().AsTask();
        await Task.Delay(2500);
        await sender.SendAsync(alice, bob.Card, Text("after keepalives"), "text/plain");
        Assert.True(await next);
        Assert.Equal("after keepalives", inbox.Current.Content.Content.ToStringUtf8());

        // Then the connection goes half-open: no byte either way, no FIN, no RST.
        proxy.Freeze();
        var waited = Stopwatch.StartNew();
        NodeSilentException e = await Assert.ThrowsAsync<NodeSilentException>(async () => await inbox.MoveNextAsync());
        Assert.InRange(waited.Elapsed, TimeSpan.FromSeconds(3), TimeSpan.FromSeconds(30));
        Assert.Contains("the connection or the node is dead", e.Message, StringComparison.Ordinal);
        Assert.False(cts.IsCancellationRequested);
        node.AssertNoServerErrors();
    }
}
