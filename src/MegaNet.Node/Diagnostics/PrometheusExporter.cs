using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using System.Globalization;
using System.Text;
using MegaNet.Core.Diagnostics;

namespace MegaNet.Node.Diagnostics;

/// <summary>
/// Aggregates the <c>MegaNet</c> meter in-process with a <see cref="MeterListener"/> and renders it in the Prometheus
/// text format for the optional <c>/metrics</c> endpoint (off by default; <c>MetricsListen</c> turns it on).
/// Counters export their total, up-down counters their value, histograms <c>_count</c> and <c>_sum</c>, and
/// observable gauges and counters are read at scrape time.
/// </summary>
public sealed class PrometheusExporter : IDisposable
{
    private readonly MeterListener _listener = new();
    private readonly ConcurrentDictionary<(string Name, string Tags), Series> _series = new();

    public PrometheusExporter()
    {
        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (instrument.Meter.Name == MegaNetMetrics.MeterName)
            {
                listener.EnableMeasurementEvents(instrument, new InstrumentState(KindOf(instrument), instrument.Description ?? instrument.Name));
            }
        };
        _listener.SetMeasurementEventCallback<long>((i, v, tags, state) => Record(i, v, tags, (InstrumentState)state!));
        _listener.SetMeasurementEventCallback<int>((i, v, tags, state) => Record(i, v, tags, (InstrumentState)state!));
        _listener.SetMeasurementEventCallback<double>((i, v, tags, state) => Record(i, v, tags, (InstrumentState)state!));
        _listener.Start();
    }

    /// <summary>The current values in Prometheus text exposition format 0.0.4.</summary>
    public string Render()
    {
        _listener.RecordObservableInstruments();
        var sb = new StringBuilder();
        foreach (var group in _series.OrderBy(s => s.Key.Name, StringComparer.Ordinal).ThenBy(s => s.Key.Tags, StringComparer.Ordinal).GroupBy(s => s.Key.Name))
        {
            Series first = group.First().Value;
            // Counters are exposed as NAME_total (the Prometheus convention), with HELP/TYPE naming the same sample.
            bool counter = first.Kind is "counter" or "observed-counter";
            string name = Sanitize(group.Key) + (counter ? "_total" : string.Empty);
            string type = counter ? "counter" : first.Kind == "histogram" ? "summary" : "gauge";
            sb.Append(CultureInfo.InvariantCulture, $"# HELP {name} {first.Description}\n# TYPE {name} {type}\n");
            foreach (var (key, s) in group)
            {
                string labels = key.Tags.Length == 0 ? string.Empty : "{" + key.Tags + "}";
                if (s.Kind == "histogram")
                {
                    sb.Append(CultureInfo.InvariantCulture, $"{name}_count{labels} {s.Count}\n{name}_sum{labels} {s.Sum.ToString("R", CultureInfo.InvariantCulture)}\n");
                }
                else
                {
                    sb.Append(CultureInfo.InvariantCulture, $"{name}{labels} {s.Sum.ToString("R", CultureInfo.InvariantCulture)}\n");
                }
            }
        }

        return sb.ToString();
    }

    public void Dispose() => _listener.Dispose();

    private void Record(Instrument instrument, double value, ReadOnlySpan<KeyValuePair<string, object?>> tags, InstrumentState state)
    {
        // Untagged measurements (most of them, several per envelope) reach their series without building a key.
        Series series = tags.IsEmpty
            ? state.Untagged ??= _series.GetOrAdd((instrument.Name, string.Empty), static (_, s) => new Series(s.Kind, s.Description), state)
            : _series.GetOrAdd((instrument.Name, Labels(tags)), static (_, s) => new Series(s.Kind, s.Description), state);
        lock (series)
        {
            // Observable instruments report their current value (an observable counter its running total).
            if (state.Kind is "gauge" or "observed-counter")
            {
                series.Sum = value;
            }
            else
            {
                series.Sum += value;
            }

            series.Count++;
        }
    }

    private static string KindOf(Instrument instrument) => instrument switch
    {
        Counter<long> or Counter<int> or Counter<double> => "counter",
        Histogram<long> or Histogram<int> or Histogram<double> => "histogram",
        UpDownCounter<long> or UpDownCounter<int> or UpDownCounter<double> => "updown",
        ObservableCounter<long> or ObservableCounter<int> or ObservableCounter<double> => "observed-counter",
        _ => "gauge",
    };

    /// <summary>Labels sorted by name, so the same tags in another order are the same series; values escaped per the format.</summary>
    private static string Labels(ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        var labels = new List<(string Name, string Value)>(tags.Length);
        foreach (KeyValuePair<string, object?> t in tags)
        {
            labels.Add((Sanitize(t.Key), Escape(Convert.ToString(t.Value, CultureInfo.InvariantCulture) ?? string.Empty)));
        }

        labels.Sort((a, b) => string.CompareOrdinal(a.Name, b.Name));
        var sb = new StringBuilder();
        foreach ((string labelName, string labelValue) in labels)
        {
            if (sb.Length > 0)
            {
                sb.Append(',');
            }

            sb.Append(labelName).Append("=\"").Append(labelValue).Append('"');
        }

        return sb.ToString();
    }

    private static string Escape(string value) =>
        value.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\"", "\\\"", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal);

    private static string Sanitize(string name) => new(name.Select(c => char.IsAsciiLetterOrDigit(c) ? c : '_').ToArray());

    /// <summary>Per instrument, handed back with each of its measurements.</summary>
    private sealed class InstrumentState(string kind, string description)
    {
        public string Kind { get; } = kind;

        public string Description { get; } = description;

        /// <summary>The series of measurements without tags, once there has been one.</summary>
        public Series? Untagged { get; set; }
    }

    private sealed class Series(string kind, string description)
    {
        public string Kind { get; } = kind;

        public string Description { get; } = description;

        public double Sum { get; set; }

        public long Count { get; set; }
    }
}
