using System.Diagnostics.Metrics;
using MegaNet.Core.Diagnostics;

namespace MegaNet.Node.Tests;

/// <summary>An observable instrument reads from the component that registered last, until that one lets go. Before,
/// the source was a static delegate: a disposed pipeline or store went on being reported, and kept alive, for good.
/// (The peers gauge is used because nothing else in the process sets its source.)</summary>
public sealed class ObservedSourceTests
{
    [Fact]
    public void A_disposed_registration_stops_being_read_unless_a_newer_one_took_over()
    {
        Assert.Equal(0, Read());
        IDisposable first = MegaNetMetrics.ObservePeers(() => 3);
        Assert.Equal(3, Read());

        IDisposable second = MegaNetMetrics.ObservePeers(() => 5);
        first.Dispose(); // the older one letting go leaves the newer one in place
        Assert.Equal(5, Read());

        second.Dispose();
        Assert.Equal(0, Read());
    }

    [Fact]
    public void A_disposed_registration_does_not_keep_its_component_alive()
    {
        WeakReference component = RegisterAndDispose();
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        Assert.False(component.IsAlive, "the instrument still holds the disposed component");
    }

    private static WeakReference RegisterAndDispose()
    {
        var component = new object();
        using (MegaNetMetrics.ObservePeers(() => component.GetHashCode()))
        {
        }

        return new WeakReference(component);
    }

    private static long Read()
    {
        long value = -1;
        ObservableGauge<long> peers = MegaNetMetrics.ConnectedPeers; // created before the listener starts looking
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (ReferenceEquals(instrument, peers))
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((_, measurement, _, _) => value = measurement);
        listener.Start();
        listener.RecordObservableInstruments();
        return value;
    }
}
