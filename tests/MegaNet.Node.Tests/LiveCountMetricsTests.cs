using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using Grpc.Core;
using MegaNet.Api;
using MegaNet.Api.V1;
using MegaNet.Core.Diagnostics;
using MegaNet.Node.Hosting;
using Microsoft.Extensions.DependencyInjection;

namespace MegaNet.Node.Tests;

/// <summary>
/// <c>meganet profile</c> and dotnet-counters attach to a node that has been running: the open connections and live
/// subscriptions they show must be the counts now. Both were plain up-down counters, of which a listener sees only the
/// changes made after it attached, so the tools showed 0 for a busy node and -1 once a connection closed. Alone: the
/// counts are the whole process's, which other tests' nodes would change meanwhile.
/// </summary>
[Collection(AloneCollection.Name)]
public sealed class LiveCountMetricsTests
{
    private const string Connections = "meganet.connections.open", Subscriptions = "meganet.relay.subscriptions";

    [Fact]
    public async Task A_listener_that_attaches_late_reads_the_connections_and_subscriptions_open_now()
    {
        await using TestNode node = await TestNode.StartAsync();
        ConnectionGate gate = node.Services.GetRequiredService<ConnectionGate>();
        long connectionsBefore, subscriptionsBefore;
        using (var before = new LateListener())
        {
            connectionsBefore = before.Read(Connections);
            subscriptionsBefore = before.Read(Subscriptions);
        }

        using MegaNetClient first = node.Client(), second = node.Client(), third = node.Client();
        foreach (MegaNetClient client in new[] { first, second, third })
        {
            await client.Relay.StatusAsync(new StatusRequest());
        }

        using Identity bob = Identity.Create();
        using var end = new CancellationTokenSource();
        using AsyncServerStreamingCall<MailEvent> firstSubscription = await SubscribeAsync(first, bob, end.Token);
        using AsyncServerStreamingCall<MailEvent> secondSubscription = await SubscribeAsync(second, bob, end.Token);
        Assert.Equal(3, gate.Open);

        using var late = new LateListener();
        Assert.Equal(connectionsBefore + 3, late.Read(Connections));
        Assert.Equal(subscriptionsBefore + 2, late.Read(Subscriptions));

        // A connection that closes after the listener attached: the count falls by one (it read -1 before).
        third.Dispose();
        await Poll.UntilAsync(() => gate.Open == 2, () => $"{gate.Open} connections open after the third client closed its own");
        Assert.Equal(connectionsBefore + 2, late.Read(Connections));
        Assert.Equal(subscriptionsBefore + 2, late.Read(Subscriptions));
        await end.CancelAsync();
    }

    /// <summary>Subscribes, and returns once the node's first keepalive has come: the subscription is live.</summary>
    private static async Task<AsyncServerStreamingCall<MailEvent>> SubscribeAsync(MegaNetClient client, Identity who, CancellationToken end)
    {
        AsyncServerStreamingCall<MailEvent> call = client.Relay.Subscribe(new SubscribeRequest { Auth = await client.AuthenticateAsync(who, MailboxPurpose.Subscribe) }, cancellationToken: end);
        Assert.True(await call.ResponseStream.MoveNext(end));
        Assert.Equal(MailEvent.KindOneofCase.KeepaliveUnixMs, call.ResponseStream.Current.KindCase);
        return call;
    }

    /// <summary>Reads the MegaNet instruments as the runtime's metrics session does for <c>meganet profile</c> and
    /// dotnet-counters: from the moment it attaches, a counter or up-down counter by adding up the changes it is told
    /// of, an observable instrument by what it reports when read.</summary>
    private sealed class LateListener : IDisposable
    {
        private readonly MeterListener _listener = new();
        private readonly ConcurrentDictionary<string, long> _values = new();

        public LateListener()
        {
            _listener.InstrumentPublished = (instrument, listener) =>
            {
                if (ReferenceEquals(instrument.Meter, MegaNetMetrics.Meter))
                {
                    listener.EnableMeasurementEvents(instrument);
                }
            };
            _listener.SetMeasurementEventCallback<long>((instrument, measurement, _, _) =>
                _values.AddOrUpdate(instrument.Name, measurement, (_, value) => instrument.IsObservable ? measurement : value + measurement));
            _listener.Start();
        }

        public long Read(string instrument)
        {
            _listener.RecordObservableInstruments();
            return _values.GetValueOrDefault(instrument);
        }

        public void Dispose() => _listener.Dispose();
    }
}
