using Grpc.Core;
using Grpc.Health.V1;
using Grpc.Net.Client;
using Grpc.Reflection.V1Alpha;
using MegaNet.Api;
using MegaNet.Node.Hosting;
using Microsoft.Extensions.DependencyInjection;

namespace MegaNet.Node.Tests;

/// <summary>Reflection and health Watch streams, which nothing ended, are capped per site, end when idle (reflection)
/// and end after their lifetime (both); the relay's own streams are not counted among them.</summary>
public sealed class ServiceStreamLimitsTests
{
    [Fact]
    public async Task A_reflection_stream_that_sends_nothing_ends_after_the_idle_limit_and_a_watch_after_its_lifetime()
    {
        await using TestNode node = await TestNode.StartAsync(o =>
        {
            o.StreamIdleSeconds = 3;
            o.SubscriptionLifetimeSeconds = 6;
        });
        using var channel = GrpcChannel.ForAddress(node.Address);

        // Reflection: a request answered, then nothing sent: ended as if the client had finished (OK), after the idle
        // limit, not at once.
        var reflection = new ServerReflection.ServerReflectionClient(channel);
        // The clocks here start before what the node counts from (the request, the call), so a loaded machine only adds
        // to what they measure: started once the first answer was read, a slow trip of it ate the margin.
        using AsyncDuplexStreamingCall<ServerReflectionRequest, ServerReflectionResponse> idle = reflection.ServerReflectionInfo();
        var quiet = System.Diagnostics.Stopwatch.StartNew();
        await idle.RequestStream.WriteAsync(new ServerReflectionRequest { ListServices = string.Empty });
        Assert.True(await idle.ResponseStream.MoveNext(CancellationToken.None));
        Assert.False(await idle.ResponseStream.MoveNext(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.True(quiet.Elapsed > TimeSpan.FromSeconds(2.9), $"ended {quiet.Elapsed.TotalSeconds:F1} s after its request was sent (idle limit 3 s)");
        Assert.Equal(StatusCode.OK, idle.GetStatus().StatusCode);

        // A reflection stream that keeps asking goes on past the idle limit, and ends at its lifetime.
        using AsyncDuplexStreamingCall<ServerReflectionRequest, ServerReflectionResponse> busy = reflection.ServerReflectionInfo();
        var lived = System.Diagnostics.Stopwatch.StartNew();
        bool open = true;
        while (open && lived.Elapsed < TimeSpan.FromSeconds(30))
        {
            try
            {
                await busy.RequestStream.WriteAsync(new ServerReflectionRequest { ListServices = string.Empty });
                open = await busy.ResponseStream.MoveNext(CancellationToken.None);
            }
            catch (Exception e) when (e is InvalidOperationException or RpcException)
            {
                open = false; // the call ended before this request could be written
            }

            await Task.Delay(500);
        }

        Assert.False(open);
        Assert.InRange(lived.Elapsed.TotalSeconds, 4, 30);
        // Ended by the node, as if the client had finished: its responses end, with OK.
        while (await busy.ResponseStream.MoveNext(CancellationToken.None))
        {
        }

        Assert.Equal(StatusCode.OK, busy.GetStatus().StatusCode);

        // Watch: the current status at once, then the stream ends at its lifetime with UNAVAILABLE and the trailer
        // health clients and MegaNet's own read as "watch again".
        var health = new Health.HealthClient(channel);
        var watched = System.Diagnostics.Stopwatch.StartNew();
        using AsyncServerStreamingCall<HealthCheckResponse> watch = health.Watch(new HealthCheckRequest());
        Assert.True(await watch.ResponseStream.MoveNext(CancellationToken.None));
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, watch.ResponseStream.Current.Status);
        RpcException ended = await Assert.ThrowsAsync<RpcException>(() => watch.ResponseStream.MoveNext(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.True(watched.Elapsed > TimeSpan.FromSeconds(5.9), $"ended {watched.Elapsed.TotalSeconds:F1} s after the call began (lifetime 6 s)");
        Assert.Equal(StatusCode.Unavailable, ended.StatusCode);
        Assert.Contains("SubscriptionLifetimeSeconds", ended.Status.Detail, StringComparison.Ordinal);
        Assert.Equal(MegaNetClient.SubscriptionLifetimeEnded, ended.Trailers.GetValue(MegaNetClient.SubscriptionEndedTrailer));
        Assert.Equal(0, node.Services.GetRequiredService<ServiceStreamLimits>().Open);
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task One_site_holds_at_most_sixteen_open_reflection_and_watch_streams_and_a_closed_one_frees_its_place()
    {
        await using TestNode node = await TestNode.StartAsync();
        using var channel = GrpcChannel.ForAddress(node.Address);
        var health = new Health.HealthClient(channel);
        var reflection = new ServerReflection.ServerReflectionClient(channel);
        var calls = new List<IDisposable>();
        try
        {
            for (int i = 0; i < ServiceStreamLimits.MaxPerSite; i++)
            {
                if (i % 2 == 0)
                {
                    AsyncServerStreamingCall<HealthCheckResponse> watch = health.Watch(new HealthCheckRequest());
                    calls.Add(watch);
                    Assert.True(await watch.ResponseStream.MoveNext(CancellationToken.None)); // admitted: its first status came
                }
                else
                {
                    AsyncDuplexStreamingCall<ServerReflectionRequest, ServerReflectionResponse> info = reflection.ServerReflectionInfo();
                    calls.Add(info);
                    await info.RequestStream.WriteAsync(new ServerReflectionRequest { ListServices = string.Empty });
                    Assert.True(await info.ResponseStream.MoveNext(CancellationToken.None));
                }
            }

            ServiceStreamLimits limits = node.Services.GetRequiredService<ServiceStreamLimits>();
            Assert.Equal(ServiceStreamLimits.MaxPerSite, limits.Open);

            // One more of either kind is refused, with a hint; health Check and the relay's calls still answer.
            using AsyncServerStreamingCall<HealthCheckResponse> refused = health.Watch(new HealthCheckRequest());
            RpcException e = await Assert.ThrowsAsync<RpcException>(() => refused.ResponseStream.MoveNext(CancellationToken.None));
            Assert.Equal(StatusCode.ResourceExhausted, e.StatusCode);
            Assert.Contains($"holds {ServiceStreamLimits.MaxPerSite} open reflection and health Watch streams", e.Status.Detail, StringComparison.Ordinal);
            Assert.NotNull(e.Trailers.GetValue(NodeRefusals.RetryAfterTrailer));
            using AsyncDuplexStreamingCall<ServerReflectionRequest, ServerReflectionResponse> refusedInfo = reflection.ServerReflectionInfo();
            Assert.Equal(StatusCode.ResourceExhausted, (await Assert.ThrowsAsync<RpcException>(() => refusedInfo.ResponseStream.MoveNext(CancellationToken.None))).StatusCode);
            Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, (await health.CheckAsync(new HealthCheckRequest())).Status);
            using MegaNetClient client = node.Client();
            await client.Relay.StatusAsync(new MegaNet.Api.V1.StatusRequest());

            // A stream closed by its client frees its place.
            calls[0].Dispose();
            calls.RemoveAt(0);
            var clock = System.Diagnostics.Stopwatch.StartNew();
            while (limits.Open >= ServiceStreamLimits.MaxPerSite && clock.Elapsed < TimeSpan.FromSeconds(30))
            {
                await Task.Delay(20);
            }

            using AsyncServerStreamingCall<HealthCheckResponse> again = health.Watch(new HealthCheckRequest());
            Assert.True(await again.ResponseStream.MoveNext(CancellationToken.None));
        }
        finally
        {
            calls.ForEach(c => c.Dispose());
        }

        node.AssertNoServerErrors();
    }
}
