using MegaNet.Api.V1;
using MegaNet.Node.Benchmarking;

namespace MegaNet.Node.Tests;

/// <summary><c>meganet load</c>'s generator against a real node: every envelope counted once, in both modes.</summary>
public sealed class LoadGeneratorTests
{
    [Fact]
    public async Task Streaming_and_unary_load_count_every_envelope_and_read_the_node_batches()
    {
        await using TestNode node = await TestNode.StartAsync(o =>
        {
            o.SubmitRatePerKey = 1e6;
            o.SubmitBurst = 1_000_000;
        });
        var progress = new StringWriter();
        var generator = new LoadGenerator(node.Address, clients: 4, connections: 4, progress);

        LoadReport stream = await generator.RunStreamingAsync(LoadGenerator.Prepare(400, senders: 16, recipients: 8));
        Assert.Equal((400, 400, 0), (stream.Sent, stream.Accepted, stream.Refused));
        Assert.True(stream.MeanServerBatch >= 1, $"mean verifier batch {stream.MeanServerBatch}");
        Assert.True(stream.P99Ms >= stream.P50Ms && stream.P50Ms > 0);
        // Far too short for a steady state after the warm-up: not reported rather than made up.
        Assert.True(double.IsNaN(stream.SteadyAcceptedPerSecond));

        IReadOnlyList<Envelope> unaryEnvelopes = LoadGenerator.Prepare(200, senders: 16, recipients: 8);
        // Four clients over two connections this time.
        LoadReport unary = await new LoadGenerator(node.Address, clients: 4, connections: 2, progress).RunUnaryAsync(unaryEnvelopes, targetRate: 2_000);
        Assert.Equal((200, 200, 0), (unary.Sent, unary.Accepted, unary.Refused));
        Assert.Contains("unary (open loop at", progress.ToString());
        Assert.True(unary.OfferedPerSecond > 0, $"started at {unary.OfferedPerSecond}/s");

        // Every one of them was stored once: the log holds exactly the 600 envelopes sent.
        using var client = node.Client();
        Assert.Equal(600, (await client.Relay.GetTreeHeadAsync(new GetTreeHeadRequest())).TreeSize);
        node.AssertNoServerErrors();
    }

    [Fact]
    public void Percentiles_are_nearest_rank()
    {
        double[] hundred = Enumerable.Range(1, 100).Select(i => (double)i).ToArray();
        Assert.Equal(50, LoadGenerator.Percentile(hundred, 0.50));
        Assert.Equal(99, LoadGenerator.Percentile(hundred, 0.99)); // not the maximum
        Assert.Equal(100, LoadGenerator.Percentile(hundred, 1.0));
        Assert.Equal(7, LoadGenerator.Percentile([7], 0.99));
        Assert.True(double.IsNaN(LoadGenerator.Percentile([], 0.5)));
    }
}
