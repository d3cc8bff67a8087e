using System.Diagnostics.Metrics;
using MegaNet.Core.Diagnostics;

namespace MegaNet.Node.Benchmarking;

/// <summary>
/// Sums the GPU backend's per-launch host, copy and kernel times (the <c>meganet.gpu.*</c> histograms) while a point
/// is timed, so the sweep can say where a batch's time went. Listens to nothing until <see cref="Start"/>.
/// </summary>
internal sealed class GpuTimeListener : IDisposable
{
    private readonly MeterListener _listener = new();
    private double _host, _copy, _kernel;
    private long _launches;
    private bool _started;
    private int _thread;

    public GpuTimeListener()
    {
        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (ReferenceEquals(instrument, MegaNetMetrics.GpuHostTime) || ReferenceEquals(instrument, MegaNetMetrics.GpuTransferTime)
                || ReferenceEquals(instrument, MegaNetMetrics.GpuKernelTime))
            {
                listener.EnableMeasurementEvents(instrument);
            }
        };
        _listener.SetMeasurementEventCallback<double>((instrument, value, _, _) =>
        {
            // The GPU backend records on the thread that calls Verify; anything else in the process using a GPU
            // backend at the same time (tests run side by side) records on other threads and is not this point's.
            if (Environment.CurrentManagedThreadId != _thread)
            {
                return;
            }

            if (ReferenceEquals(instrument, MegaNetMetrics.GpuHostTime))
            {
                _host += value;
            }
            else if (ReferenceEquals(instrument, MegaNetMetrics.GpuTransferTime))
            {
                _copy += value;
            }
            else
            {
                _kernel += value;
                _launches++;
            }
        });
    }

    /// <summary>Batches verified while listening (the caller counts them).</summary>
    public long Batches { get; set; }

    /// <summary>Starts listening to the GPU backend's records made on the calling thread (the one that times).</summary>
    public void Start()
    {
        if (!_started)
        {
            _started = true;
            _thread = Environment.CurrentManagedThreadId;
            _listener.Start();
        }
    }

    /// <summary>Mean times per batch, or null when no GPU launch was seen.</summary>
    public GpuBreakdown? PerBatch() =>
        _launches == 0 || Batches == 0 ? null : new GpuBreakdown(_host / Batches, _copy / Batches, _kernel / Batches, (double)_launches / Batches);

    public void Dispose() => _listener.Dispose();
}
