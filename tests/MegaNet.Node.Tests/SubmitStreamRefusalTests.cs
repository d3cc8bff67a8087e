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
        List<SubmitResult> results = await StreamAsync(node, [Seal(alice, bob, 0, 0), Seal(alice, bob, 1, 0)]);

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
        List<SubmitResult> results = await StreamAsync(node, [Seal(alice, bob, 0, 0), Seal(alice, bob, 1, 8)]);

        Assert.Equal((int)StatusCode.FailedPrecondition, results[0].StatusCode);
        Assert.Equal(8u, results[0].PowBits);
        Assert.NotNull(results[1].Receipt);
        Assert.Equal(0u, results[1].PowBits);
    }

    private static async Task<List<SubmitResult>> StreamAsync(TestNode node, Envelope[] envelopes)
    {
        using MegaNetClient client = node.Client();
        List<SubmitResult> results = await client.SubmitAllAsync(envelopes);
        Assert.Equal(envelopes.Length, results.Count);
        return results;
    }

    private static Envelope Seal(Identity from, Identity to, int i, int powBits) =>
        EnvelopeFormat.Seal(from, to.Card, Encoding.UTF8.GetBytes($"message {i}"), "text/plain; charset=utf-8", null, DateTimeOffset.UtcNow.AddDays(1), powBits);
}
