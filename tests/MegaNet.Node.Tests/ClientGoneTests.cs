using System.Text;
using Grpc.Core;
using MegaNet.Api;
using MegaNet.Api.V1;
using MegaNet.Node.Services;

namespace MegaNet.Node.Tests;

/// <summary>A client that goes away in the middle of a stream is routine (a phone loses its network): the node ends the
/// call quietly, with no error in its log.</summary>
public sealed class ClientGoneTests
{
    [Fact]
    public async Task A_subscriber_that_leaves_while_its_mail_is_written_logs_no_error()
    {
        await using TestNode node = await TestNode.StartAsync();
        using MegaNetClient client = node.Client();
        using Identity alice = Identity.Create(), bob = Identity.Create();
        for (int i = 0; i < 200; i++)
        {
            await client.SendAsync(alice, bob.Card, Encoding.UTF8.GetBytes(new string('x', 2_000)), "text/plain");
        }

        // Each round leaves after the first event, while the node writes the 200 waiting messages; a write that found
        // the request aborted threw InvalidOperationException, logged as "Error when executing service method".
        for (int round = 0; round < 20; round++)
        {
            using var leave = new CancellationTokenSource();
            using (AsyncServerStreamingCall<MailEvent> call = client.Relay.Subscribe(new SubscribeRequest { Auth = await client.AuthenticateAsync(bob, MailboxPurpose.Subscribe) }, cancellationToken: leave.Token))
            {
                Assert.True(await call.ResponseStream.MoveNext());
                Assert.Equal(MailEvent.KindOneofCase.KeepaliveUnixMs, call.ResponseStream.Current.KindCase);
                await leave.CancelAsync();
            }

            await Task.Delay(round % 5);
        }

        Assert.Equal(200, (await client.Relay.GetTreeHeadAsync(new GetTreeHeadRequest())).TreeSize);
        Assert.NotEmpty((await client.FetchAsync(bob)).Messages); // the mail is still there for the next reader
        // Stopping waits for every call the node still runs, the left subscriptions' included, so whatever they log is
        // in the log before it is read (a fixed wait could read it too early and pass).
        await node.StopAsync();
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task A_subscription_woken_without_mail_still_gets_its_keepalive_each_period()
    {
        await using TestNode node = await TestNode.StartAsync(o => o.KeepaliveSeconds = 1);
        using MegaNetClient client = node.Client();
        using Identity bob = Identity.Create();
        var notifier = (MailboxNotifier)node.Services.GetService(typeof(MailboxNotifier))!;
        using var leave = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        using AsyncServerStreamingCall<MailEvent> call = client.Relay.Subscribe(new SubscribeRequest { Auth = await client.AuthenticateAsync(bob, MailboxPurpose.Subscribe) }, cancellationToken: leave.Token);
        Assert.True(await call.ResponseStream.MoveNext(leave.Token)); // the first keepalive: registered
        long registered = call.ResponseStream.Current.KeepaliveUnixMs;

        // Woken every 300 ms by mail that is gone by the time it is listed (acknowledged by another device, or expired):
        // each wake-up used to start the keepalive's period again, so none came while they went on.
        using var waking = new CancellationTokenSource();
        Task wake = Task.Run(async () =>
        {
            while (!waking.IsCancellationRequested)
            {
                notifier.OnMail(bob.Address, 0);
                await Task.Delay(300);
            }
        });
        try
        {
            for (int i = 0; i < 3; i++)
            {
                Assert.True(await call.ResponseStream.MoveNext(leave.Token));
                Assert.Equal(MailEvent.KindOneofCase.KeepaliveUnixMs, call.ResponseStream.Current.KindCase);
            }

            // Three periods of 1 s by the node's own clock, as it wrote them into the keepalives: a test process that
            // stalled after the first read finds the rest already waiting, so the time it measures itself could be
            // short (a keepalive at 1.3 s after each wake-up would still pass; none at all, as before, hangs until the
            // 60 s above; one at each wake-up is 0.9 s).
            Assert.InRange(call.ResponseStream.Current.KeepaliveUnixMs - registered, 1_500, 30_000);
        }
        finally
        {
            await waking.CancelAsync();
            await wake;
        }
    }

    [Fact]
    public async Task Reflection_and_health_streams_left_by_their_clients_log_no_error()
    {
        await using TestNode node = await TestNode.StartAsync();
        using Grpc.Net.Client.GrpcChannel channel = Grpc.Net.Client.GrpcChannel.ForAddress(node.Address);
        var health = new Grpc.Health.V1.Health.HealthClient(channel);
        var reflection = new Grpc.Reflection.V1Alpha.ServerReflection.ServerReflectionClient(channel);
        var random = new Random(1);
        int answered = 0;
        for (int i = 0; i < 150; i++)
        {
            // Each call is left 0-30 ms in: Grpc's reflection service logged "Can't read messages after the request is
            // complete" as a server error for some of them (2 of 3 runs of this loop).
            using var leave = new CancellationTokenSource(TimeSpan.FromMilliseconds(random.Next(0, 30)));
            try
            {
                if (i % 2 == 0)
                {
                    using AsyncServerStreamingCall<Grpc.Health.V1.HealthCheckResponse> watch = health.Watch(new Grpc.Health.V1.HealthCheckRequest(), cancellationToken: leave.Token);
                    while (await watch.ResponseStream.MoveNext())
                    {
                        answered++;
                    }
                }
                else
                {
                    using AsyncDuplexStreamingCall<Grpc.Reflection.V1Alpha.ServerReflectionRequest, Grpc.Reflection.V1Alpha.ServerReflectionResponse> info = reflection.ServerReflectionInfo(cancellationToken: leave.Token);
                    for (int k = 0; k < 20; k++)
                    {
                        await info.RequestStream.WriteAsync(new Grpc.Reflection.V1Alpha.ServerReflectionRequest { ListServices = string.Empty });
                    }

                    while (await info.ResponseStream.MoveNext())
                    {
                        answered++;
                    }
                }
            }
            catch (Exception e) when (e is OperationCanceledException || (e is RpcException r && r.StatusCode is StatusCode.Cancelled or StatusCode.Unavailable))
            {
                // The client left (UNAVAILABLE: its own cancellation caught .NET's HTTP/2 reading).
            }
        }

        Assert.True(answered > 0, "no call got an answer before it was left: the loop tested nothing");
        await node.StopAsync(); // waits for the left calls: what they log is in the log before it is read
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task A_streaming_sender_that_leaves_with_answers_unread_logs_no_error()
    {
        await using TestNode node = await TestNode.StartAsync();
        using MegaNetClient client = node.Client();
        using Identity alice = Identity.Create(), bob = Identity.Create();
        for (int round = 0; round < 40; round++)
        {
            using var leave = new CancellationTokenSource();
            using (AsyncDuplexStreamingCall<SubmitRequest, SubmitResult> call = client.Relay.SubmitStream(cancellationToken: leave.Token))
            {
                for (int i = 0; i < 100; i++)
                {
                    await call.RequestStream.WriteAsync(new SubmitRequest
                    {
                        Envelope = EnvelopeFormat.Seal(alice, bob.Card, Encoding.UTF8.GetBytes($"{round}/{i}"), "text/plain; charset=utf-8", null, DateTimeOffset.UtcNow.AddDays(1), 0),
                    });
                }

                // Every other round half-closes first: the node has read everything and is only answering when the
                // client goes.
                if (round % 2 == 1)
                {
                    await call.RequestStream.CompleteAsync();
                }

                Assert.True(await call.ResponseStream.MoveNext());
                await leave.CancelAsync();
            }
        }

        // Whatever was taken is stored whole (each round read one answer at least, a receipt); nothing the node did for
        // the gone clients was an error, as the log says once stopping has waited for their calls.
        Assert.InRange((await client.Relay.GetTreeHeadAsync(new GetTreeHeadRequest())).TreeSize, 40, 4_000);
        await node.StopAsync();
        node.AssertNoServerErrors();
    }
}
