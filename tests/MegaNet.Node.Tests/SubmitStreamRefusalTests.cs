using System.Text;
using Grpc.Core;
using MegaNet.Api;
using MegaNet.Api.V1;

namespace MegaNet.Node.Tests;

/// <summary>A refusal on SubmitStream carries what a unary call's trailers would: the wait (retry-after-ms) and the
/// proof of work demanded (pow-bits). Before, a streaming sender got only the code and the text.</summary>
public sealed class SubmitStreamRefusalTests
{
    [Fact]
    public async Task A_rate_limited_submission_says_how_long_to_wait()
    {
        await using TestNode node = await TestNode.StartAsync(o =>
        {
            o.SubmitRatePerKey = 1;
            o.SubmitBurst = 1;
        });
        using Identity alice = Identity.Create(), bob = Identity.Create();
        // The same sender and recipient: one sending key, whose bucket holds one token.
        List<SubmitResult> results = await StreamAsync(node, [Seal(node, alice, bob, 0, 0), Seal(node, alice, bob, 1, 0)]);

        Assert.Single(results, r => r.Receipt is not null);
        SubmitResult refused = Assert.Single(results, r => r.Receipt is null);
        Assert.Equal((int)StatusCode.ResourceExhausted, refused.StatusCode);
        Assert.Equal(1000u, refused.RetryAfterMs);
        Assert.Equal(0u, refused.PowBits);
    }

    [Fact]
    public async Task A_submission_without_the_proof_of_work_demanded_says_how_many_bits()
    {
        await using TestNode node = await TestNode.StartAsync(o => o.PowMinBits = 8);
        using Identity alice = Identity.Create(), bob = Identity.Create();
        List<SubmitResult> results = await StreamAsync(node, [Seal(node, alice, bob, 0, 0), Seal(node, alice, bob, 1, 8)]);

        Assert.Equal((int)StatusCode.FailedPrecondition, results[0].StatusCode);
        Assert.Equal(8u, results[0].PowBits);
        Assert.Equal(node.PowSeed, results[0].PowSeed.ToByteArray()); // the seed to stamp for, as the pow-seed trailer
        Assert.NotNull(results[1].Receipt);
        Assert.Equal(0u, results[1].PowBits);
        Assert.True(results[1].PowSeed.IsEmpty);
    }

    [Fact]
    public async Task An_idle_stream_is_ended_once_answered_and_a_slow_one_is_not()
    {
        // An open SubmitStream that sent nothing held its connection (and a slot of MaxConnectionsPerAddress) for good.
        await using TestNode node = await TestNode.StartAsync(o => o.StreamIdleSeconds = 6);
        using Identity alice = Identity.Create(), bob = Identity.Create();
        using MegaNetClient client = node.Client();
        using var deadline = new CancellationTokenSource(TimeSpan.FromMinutes(2));

        // Slow: a request a second after each answer, for 7 s (more than the idle limit in all, with 5 s to spare
        // between requests on a loaded machine: CI runs three test assemblies at once on 2 cores) keeps the stream open.
        using (AsyncDuplexStreamingCall<SubmitRequest, SubmitResult> slow = client.Relay.SubmitStream(cancellationToken: deadline.Token))
        {
            for (int i = 0; i < 7; i++)
            {
                await slow.RequestStream.WriteAsync(new SubmitRequest { Envelope = Seal(node, alice, bob, i, 0) }, deadline.Token);
                if (!await slow.ResponseStream.MoveNext(deadline.Token))
                {
                    Assert.Fail($"the stream ended after {i} answers: {slow.GetStatus()}");
                }

                Assert.NotNull(slow.ResponseStream.Current.Receipt);
                await Task.Delay(TimeSpan.FromSeconds(1), deadline.Token);
            }

            await slow.RequestStream.CompleteAsync();
            Assert.False(await slow.ResponseStream.MoveNext(deadline.Token));
            Assert.Equal(StatusCode.OK, slow.GetStatus().StatusCode);
        }

        // Idle: one request answered, then nothing; the node ends the stream, saying why.
        using AsyncDuplexStreamingCall<SubmitRequest, SubmitResult> idle = client.Relay.SubmitStream(cancellationToken: deadline.Token);
        await idle.RequestStream.WriteAsync(new SubmitRequest { Envelope = Seal(node, alice, bob, 7, 0) }, deadline.Token);
        Assert.True(await idle.ResponseStream.MoveNext(deadline.Token));
        Assert.NotNull(idle.ResponseStream.Current.Receipt);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        RpcException ended = await Assert.ThrowsAsync<RpcException>(() => idle.ResponseStream.MoveNext(deadline.Token));
        Assert.Equal(StatusCode.DeadlineExceeded, ended.StatusCode);
        Assert.Contains("sent no request for 6 s (StreamIdleSeconds)", ended.Status.Detail, StringComparison.Ordinal);
        Assert.Contains("all 1 requests were answered", ended.Status.Detail, StringComparison.Ordinal);
        // The whole limit counts from the last answer (0.1 s allowed for the answer's trip, which the client's clock
        // starts after). Counted from the request, as before, this could be 4.5 s: three of the timer's quarter ticks.
        Assert.True(clock.Elapsed > TimeSpan.FromSeconds(5.9), $"ended {clock.Elapsed.TotalSeconds:0.00} s after its last answer (limit 6 s)");
    }

    private static async Task<List<SubmitResult>> StreamAsync(TestNode node, Envelope[] envelopes)
    {
        using MegaNetClient client = node.Client();
        List<SubmitResult> results = await client.SubmitAllAsync(envelopes);
        Assert.Equal(envelopes.Length, results.Count);
        return results;
    }

    /// <summary>A text envelope "message {i}" from <paramref name="from"/> to <paramref name="to"/>, a day to live,
    /// stamped with exactly <paramref name="powBits"/> bits of work for <paramref name="node"/>'s current seed (a stamp
    /// of more would pass a higher demand).</summary>
    internal static Envelope Seal(TestNode? node, Identity from, Identity to, int i, int powBits) =>
        ExactStamp.Stamp(from, EnvelopeFormat.Seal(from, to.Card, Encoding.UTF8.GetBytes($"message {i}"), "text/plain; charset=utf-8", null, DateTimeOffset.UtcNow.AddDays(1)), powBits > 0 ? node!.PowSeed : [], powBits);
}
