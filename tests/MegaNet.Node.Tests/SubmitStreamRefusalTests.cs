using System.Text;
using Grpc.AspNetCore.Server;
using Grpc.Core;
using Grpc.Core.Interceptors;
using MegaNet.Api;
using MegaNet.Api.V1;
using Microsoft.Extensions.DependencyInjection;

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
        var slowAnswer = new SlowFirstAnswer();
        await using TestNode node = await TestNode.StartAsync(o => o.StreamIdleSeconds = 6, services: s =>
        {
            s.AddSingleton(slowAnswer);
            s.Configure<GrpcServiceOptions>(o => o.Interceptors.Add<SlowFirstAnswer>());
        });
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

        // Idle: one request answered, then nothing; the node ends the stream, saying why. The answer is held 2 s on
        // the node, past the idle timer's first quarter tick (1.5 s), as a loaded node's can be: counted from the
        // request, as before, the stream then ended 4.5 to 6 s after its answer. The clock starts before the call, so
        // it reads at least the hold plus the limit whatever the machine's load; started once the answer was read
        // (as before), a slow trip of the answer to this test took from it what the node had given.
        var clock = System.Diagnostics.Stopwatch.StartNew();
        slowAnswer.Hold = SlowFirstAnswer.HoldFor;
        using AsyncDuplexStreamingCall<SubmitRequest, SubmitResult> idle = client.Relay.SubmitStream(cancellationToken: deadline.Token);
        await idle.RequestStream.WriteAsync(new SubmitRequest { Envelope = Seal(node, alice, bob, 7, 0) }, deadline.Token);
        Assert.True(await idle.ResponseStream.MoveNext(deadline.Token));
        Assert.NotNull(idle.ResponseStream.Current.Receipt);
        Assert.True(clock.Elapsed >= SlowFirstAnswer.HoldFor, "the answer was not held");
        RpcException ended = await Assert.ThrowsAsync<RpcException>(() => idle.ResponseStream.MoveNext(deadline.Token));
        Assert.Equal(StatusCode.DeadlineExceeded, ended.StatusCode);
        Assert.Contains("sent no request for 6 s (StreamIdleSeconds)", ended.Status.Detail, StringComparison.Ordinal);
        Assert.Contains("all 1 requests were answered", ended.Status.Detail, StringComparison.Ordinal);
        // The whole limit from the answer, which came after the hold (0.1 s allowed for a timer that fires early).
        Assert.True(clock.Elapsed > SlowFirstAnswer.HoldFor + TimeSpan.FromSeconds(5.9),
            $"ended {clock.Elapsed.TotalSeconds:0.00} s after the call began, of which {SlowFirstAnswer.HoldFor.TotalSeconds:0} s the node held its answer (limit 6 s)");
    }

    /// <summary>Holds the first answer of a SubmitStream call made once <see cref="Hold"/> is set, for that long, before
    /// the node writes it.</summary>
    private sealed class SlowFirstAnswer : Interceptor
    {
        public static readonly TimeSpan HoldFor = TimeSpan.FromSeconds(2);

        public TimeSpan Hold { get; set; }

        public override Task DuplexStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream, IServerStreamWriter<TResponse> responseStream,
            ServerCallContext context, DuplexStreamingServerMethod<TRequest, TResponse> continuation) =>
            Hold > TimeSpan.Zero && context.Method.EndsWith("/SubmitStream", StringComparison.Ordinal)
                ? continuation(requestStream, new Writer<TResponse>(responseStream, Hold), context)
                : continuation(requestStream, responseStream, context);

        private sealed class Writer<T>(IServerStreamWriter<T> inner, TimeSpan hold) : IServerStreamWriter<T>
        {
            private bool _held;

            public WriteOptions? WriteOptions
            {
                get => inner.WriteOptions;
                set => inner.WriteOptions = value;
            }

            public Task WriteAsync(T message) => WriteAsync(message, CancellationToken.None);

            public async Task WriteAsync(T message, CancellationToken cancellationToken)
            {
                if (!_held)
                {
                    _held = true;
                    await Task.Delay(hold, cancellationToken);
                }

                await inner.WriteAsync(message, cancellationToken);
            }
        }
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
