using System.Runtime.ExceptionServices;
using System.Text;
using Grpc.Core;
using MegaNet.Api;
using MegaNet.Api.V1;

namespace MegaNet.Node.Tests;

/// <summary>Refusals are the answers a saturated node gives most, so the SubmitStream writer turns a refused
/// submission into its result without rethrowing it. Alone: it counts first-chance exceptions process-wide, and other
/// tests' streams would add theirs.</summary>
[Collection(AloneCollection.Name)]
public sealed class SubmitStreamRethrowTests
{
    [Fact]
    public async Task Refused_submissions_are_answered_without_a_rethrow_in_the_stream_writer()
    {
        await using TestNode node = await TestNode.StartAsync(o => o.PowMinBits = 8);
        using Identity alice = Identity.Create(), bob = Identity.Create();
        Envelope[] refused = [.. Enumerable.Range(0, 50).Select(i => EnvelopeFormat.Seal(alice, bob.Card,
            Encoding.UTF8.GetBytes($"message {i}"), "text/plain; charset=utf-8", null, DateTimeOffset.UtcNow.AddDays(1), 0))];
        using MegaNetClient client = node.Client();
        int rethrown = 0;
        EventHandler<FirstChanceExceptionEventArgs> count = (_, e) =>
        {
            // An await rethrows through ExceptionDispatchInfo.Throw, which appends itself to the trace; admission's own
            // throw (one per refusal, for now) does not.
            if (e.Exception is RpcException && e.Exception.StackTrace?.Contains("ExceptionDispatchInfo.Throw", StringComparison.Ordinal) == true)
            {
                Interlocked.Increment(ref rethrown);
            }
        };
        AppDomain.CurrentDomain.FirstChanceException += count;
        List<SubmitResult> results;
        try
        {
            results = await client.SubmitAllAsync(refused);
        }
        finally
        {
            AppDomain.CurrentDomain.FirstChanceException -= count;
        }

        Assert.Equal(refused.Length, results.Count);
        Assert.All(results, r =>
        {
            Assert.Equal((int)StatusCode.FailedPrecondition, r.StatusCode);
            Assert.Equal(8u, r.PowBits);
            Assert.False(string.IsNullOrEmpty(r.Error));
        });
        Assert.Equal(0, rethrown);
    }
}
