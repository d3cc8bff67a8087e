using System.Diagnostics;
using System.Globalization;
using System.Text;
using MegaNet.Api;
using MegaNet.Node.Cli;

namespace MegaNet.Node.Tests;

/// <summary><c>listen --ack</c>'s acknowledger: a batch that fails while the node is away is sent again until the node is
/// back, and a refusal that would come again stops acknowledging without failing listen.</summary>
public sealed class ListenAcknowledgerTests
{
    [Fact]
    public async Task A_batch_sent_while_the_node_is_down_is_acknowledged_once_it_is_back()
    {
        await using TestNode node = await TestNode.StartAsync();
        node.Options.Listen = $"127.0.0.1:{node.Address.Port.ToString(CultureInfo.InvariantCulture)}"; // a restart keeps the port
        using Identity alice = Identity.Create(), bob = Identity.Create();
        ulong[] seqs;
        byte[] nodeId;
        using (MegaNetClient client = node.Client())
        {
            for (int i = 0; i < 2; i++)
            {
                await client.SendAsync(alice, bob.Card, Encoding.UTF8.GetBytes($"m{i}"), "text/plain; charset=utf-8");
            }

            seqs = [.. (await client.FetchAsync(bob)).Messages.Select(m => m.Seq)];
            nodeId = client.NodeId!;
        }

        await node.StopAsync();
        Uri address = node.Address;
        var acknowledger = new ListenAcknowledger(bob, () => new MegaNetClient(address, nodeId));
        await using (acknowledger)
        {
            foreach (ulong seq in seqs)
            {
                acknowledger.Add(seq);
            }

            await Task.Delay(1_500); // at least one try meets no node (the acknowledger waits 1 s, then 2 s, to try again)
            Assert.Equal(0, acknowledger.Acknowledged);
            await node.RestartAsync();
            var clock = Stopwatch.StartNew();
            while (acknowledger.Acknowledged < 2)
            {
                Assert.True(clock.Elapsed < TimeSpan.FromMinutes(1), $"{acknowledger.Acknowledged} of 2 acknowledged a minute after the node came back");
                await Task.Delay(50);
            }
        }

        using MegaNetClient again = node.Client();
        Assert.Equal(0, (await again.FetchAsync(bob)).WaitingCount);
    }

    [Fact]
    public async Task A_refusal_stops_acknowledging_without_failing()
    {
        await using TestNode node = await TestNode.StartAsync();
        using Identity alice = Identity.Create(), bob = Identity.Create();
        using MegaNetClient client = node.Client();
        await client.SendAsync(alice, bob.Card, Encoding.UTF8.GetBytes("kept"), "text/plain; charset=utf-8");
        ulong seq = (await client.FetchAsync(bob)).Messages.Single().Seq;

        // Held to another node's id: the client refuses to sign for this one, every time.
        var acknowledger = new ListenAcknowledger(bob, () => new MegaNetClient(node.Address, new byte[32]));
        await using (acknowledger)
        {
            acknowledger.Add(seq);
            var clock = Stopwatch.StartNew();
            while (!acknowledger.Stopped)
            {
                Assert.True(clock.Elapsed < TimeSpan.FromMinutes(1), "acknowledging never stopped");
                await Task.Delay(50);
            }

            acknowledger.Add(seq); // ignored from now on
        }

        Assert.Equal(0, acknowledger.Acknowledged);
        Assert.Equal(1, (await client.FetchAsync(bob)).WaitingCount);
    }
}
