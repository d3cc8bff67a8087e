using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using System.Globalization;
using System.Text;
using MegaNet.Core.Diagnostics;

namespace MegaNet.Node.Diagnostics;

/// <summary>
/// Aggregates the <c>MegaNet</c> meter in-process with a <see cref="MeterListener"/> and renders it in the Prometheus
/// text format for the optional <c>/metrics</c> endpoint (off by default; <c>MetricsListen</c> turns it on).
/// Counters export their total (<c>NAME_total</c>), up-down counters their value, and observable gauges and counters are
/// read at scrape time. Histograms are Prometheus histograms: cumulative <c>NAME_bucket{le="..."}</c> (bounds from the
/// instrument's advice, <see cref="MegaNetMetrics.MillisecondBuckets"/>; <c>+Inf</c> last), <c>NAME_sum</c> and
/// <c>NAME_count</c>, so Prometheus can compute quantiles (<c>histogram_quantile</c>). Millisecond instruments are
/// exported in seconds, the Prometheus base unit, with <c>_seconds</c> in the name and the HELP. Counters and histograms
/// are listed at 0 before their first measurement where <see cref="MegaNetMetrics.InitialSeries"/> knows their series.
/// </summary>
public sealed class PrometheusExporter : IDisposable
{
    private readonly MeterListener _listener = new();
    private readonly ConcurrentDictionary<(string Name, string Tags), Series> _series = new();

    /// <summary>Starts listening to the <c>MegaNet</c> meter; measurements before this are not counted. The series
    /// <see cref="MegaNetMetrics.InitialSeries"/> names are listed at 0 from the first scrape.</summary>
    public PrometheusExporter()
    {
        // Every MegaNet instrument exists before the listener starts, so the first scrape lists them all.
        _ = MegaNetMetrics.Meter;
        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (instrument.Meter.Name == MegaNetMetrics.MeterName)
            {
                var state = InstrumentState.For(instrument);
                AddInitialSeries(instrument, state);
                listener.EnableMeasurementEvents(instrument, state);
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
            InstrumentState family = group.First().Value.State;
            string name = family.ExportName;
            sb.Append(CultureInfo.InvariantCulture, $"# HELP {name} {family.Help}\n# TYPE {name} {family.ExportType}\n");
            foreach (var (key, s) in group)
            {
                string labels = key.Tags.Length == 0 ? string.Empty : "{" + key.Tags + "}";
                if (family.Bounds is { } bounds)
                {
                    long[] buckets;
                    double sum;
                    long count;
                    lock (s)
                    {
                        // One consistent snapshot: the +Inf bucket must equal _count.
                        buckets = (long[])s.Buckets!.Clone();
                        sum = s.Sum;
                        count = s.Count;
                    }

                    string prefix = key.Tags.Length == 0 ? string.Empty : key.Tags + ",";
                    long cumulative = 0;
                    for (int b = 0; b < bounds.Length; b++)
                    {
                        cumulative += buckets[b];
                        sb.Append(CultureInfo.InvariantCulture, $"{name}_bucket{{{prefix}le=\"{Number(bounds[b])}\"}} {cumulative}\n");
                    }

                    sb.Append(CultureInfo.InvariantCulture, $"{name}_bucket{{{prefix}le=\"+Inf\"}} {count}\n");
                    sb.Append(CultureInfo.InvariantCulture, $"{name}_sum{labels} {Number(sum)}\n{name}_count{labels} {count}\n");
                }
                else
                {
                    sb.Append(CultureInfo.InvariantCulture, $"{name}{labels} {Number(s.Sum)}\n");
                }
            }
        }

        return sb.ToString();
    }

    private static string Number(double value) => value.ToString("R", CultureInfo.InvariantCulture);

    /// <summary>Stops listening.</summary>
    public void Dispose() => _listener.Dispose();

    /// <summary>Lists at 0, before anything is recorded in them, the series a rare event would otherwise create at 1:
    /// Prometheus reads a counter's first sample as its baseline, so that first event never showed in increase() or rate().</summary>
    private void AddInitialSeries(Instrument instrument, InstrumentState state)
    {
        foreach (KeyValuePair<string, object?>[] tags in MegaNetMetrics.InitialSeries(instrument))
        {
            _ = SeriesFor(instrument, tags, state);
        }
    }

    // Untagged measurements (most of them, several per envelope) reach their series without building a key; tagged ones
    // (a rejected envelope's reason, a batch's backend and verdict) through the instrument's cache of the tag values
    // seen, so the label string is built once per combination, not once per measurement.
    private Series SeriesFor(Instrument instrument, ReadOnlySpan<KeyValuePair<string, object?>> tags, InstrumentState state) => tags.IsEmpty
        ? state.Untagged ??= _series.GetOrAdd((instrument.Name, string.Empty), static (_, s) => new Series(s), state)
        : state.Find(tags) ?? state.Remember(tags, _series.GetOrAdd((instrument.Name, Labels(tags)), static (_, s) => new Series(s), state));

    private void Record(Instrument instrument, double value, ReadOnlySpan<KeyValuePair<string, object?>> tags, InstrumentState state)
    {
        Series series = SeriesFor(instrument, tags, state);
        value /= state.Divisor;
        lock (series)
        {
            // Observable instruments report their current value (an observable counter its running total).
            if (state.Kind is Kind.Gauge or Kind.ObservedCounter)
            {
                series.Sum = value;
            }
            else
            {
                series.Sum += value;
            }

            series.Count++;
            if (state.Bounds is { } bounds)
            {
                // The first bound at or above the value (le is inclusive); past the last one, the +Inf slot.
                int b = Array.BinarySearch(bounds, value);
                series.Buckets![b >= 0 ? b : ~b]++;
            }
        }
    }

    private static Kind KindOf(Instrument instrument) => instrument switch
    {
        Counter<long> or Counter<int> or Counter<double> => Kind.Counter,
        Histogram<long> or Histogram<int> or Histogram<double> => Kind.Histogram,
        UpDownCounter<long> or UpDownCounter<int> or UpDownCounter<double> => Kind.UpDown,
        ObservableCounter<long> or ObservableCounter<int> or ObservableCounter<double> => Kind.ObservedCounter,
        _ => Kind.Gauge,
    };

    /// <summary>What an instrument is, which decides how its measurements add up and how it is exported.</summary>
    private enum Kind
    {
        Counter,
        Histogram,
        UpDown,
        ObservedCounter,
        Gauge,
    }

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

    /// <summary>Per instrument, handed back with each of its measurements: how it is exported.</summary>
    private sealed class InstrumentState
    {
        /// <summary>Tag combinations kept per instrument; past this (tags with unbounded values) a measurement builds its
        /// label string again, as it did before the cache, rather than letting the cache grow.</summary>
        private const int MaxCachedTagSets = 64;

        // Copy-on-write, so a lookup takes no lock: written under this state's lock, read lock-free.
        private volatile TaggedSeries[] _tagged = [];

        public required Kind Kind { get; init; }

        /// <summary>The Prometheus metric family name: the instrument's, sanitised, with its unit (<c>_seconds</c>) and, for
        /// counters, <c>_total</c>.</summary>
        public required string ExportName { get; init; }

        public required string ExportType { get; init; }

        public required string Help { get; init; }

        /// <summary>Divides each measurement into the exported unit (1,000 from milliseconds to seconds; a division, so
        /// that bounds such as 0.1 ms come out as 0.0001, not 0.00010000000000000002).</summary>
        public required double Divisor { get; init; }

        /// <summary>Histogram bucket upper bounds in the exported unit, ascending; null for other kinds.</summary>
        public required double[]? Bounds { get; init; }

        /// <summary>The series of measurements without tags, once there has been one.</summary>
        public Series? Untagged { get; set; }

        /// <summary>The series of these tags (same names and values in the same order) if they were seen before; no allocation.</summary>
        public Series? Find(ReadOnlySpan<KeyValuePair<string, object?>> tags)
        {
            foreach (TaggedSeries t in _tagged)
            {
                if (t.Matches(tags))
                {
                    return t.Series;
                }
            }

            return null;
        }

        /// <summary>Remembers that <paramref name="tags"/> go to <paramref name="series"/> (while there is room) and returns it.</summary>
        public Series Remember(ReadOnlySpan<KeyValuePair<string, object?>> tags, Series series)
        {
            lock (this)
            {
                TaggedSeries[] tagged = _tagged;
                if (tagged.Length < MaxCachedTagSets && Find(tags) is null)
                {
                    _tagged = [.. tagged, new TaggedSeries(tags, series)];
                }
            }

            return series;
        }

        public static InstrumentState For(Instrument instrument)
        {
            Kind kind = KindOf(instrument);
            // Prometheus names carry the base unit: milliseconds are exported as seconds. Units in braces ({envelope})
            // are annotations, not units, and add nothing to the name.
            (string suffix, double divisor, string? unitText) = instrument.Unit switch
            {
                "ms" => ("_seconds", 1_000.0, "seconds"),
                "s" => ("_seconds", 1.0, "seconds"),
                "By" => ("_bytes", 1.0, "bytes"),
                _ => (string.Empty, 1.0, null),
            };
            bool counter = kind is Kind.Counter or Kind.ObservedCounter;
            double[]? bounds = kind == Kind.Histogram ? (AdvisedBounds(instrument) ?? DefaultBounds).Select(b => b / divisor).Order().ToArray() : null;
            string description = instrument.Description ?? instrument.Name;
            return new InstrumentState
            {
                Kind = kind,
                ExportName = Sanitize(instrument.Name) + suffix + (counter ? "_total" : string.Empty),
                ExportType = counter ? "counter" : kind == Kind.Histogram ? "histogram" : "gauge",
                Help = EscapeHelp(unitText is null ? description : $"{description} ({unitText})"),
                Divisor = divisor,
                Bounds = bounds,
            };
        }

        /// <summary>For a histogram created without advice: powers of ten and their halves, 0.001 to 100,000.</summary>
        private static readonly double[] DefaultBounds = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 50, 100, 500, 1_000, 5_000, 10_000, 50_000, 100_000];

        private static IEnumerable<double>? AdvisedBounds(Instrument instrument) => instrument switch
        {
            Histogram<int> h => h.Advice?.HistogramBucketBoundaries?.Select(b => (double)b),
            Histogram<long> h => h.Advice?.HistogramBucketBoundaries?.Select(b => (double)b),
            Histogram<double> h => h.Advice?.HistogramBucketBoundaries,
            _ => null,
        };

        private static string EscapeHelp(string text) => text.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal);
    }

    /// <summary>One tag combination of an instrument and its series. Values compare with <see cref="object.Equals(object?, object?)"/>,
    /// so equal strings match whether or not they are the same instance, and a boxed number matches an equal one.</summary>
    private sealed class TaggedSeries
    {
        private readonly string[] _names;
        private readonly object?[] _values;

        public TaggedSeries(ReadOnlySpan<KeyValuePair<string, object?>> tags, Series series)
        {
            _names = new string[tags.Length];
            _values = new object?[tags.Length];
            for (int i = 0; i < tags.Length; i++)
            {
                (_names[i], _values[i]) = (tags[i].Key, tags[i].Value);
            }

            Series = series;
        }

        public Series Series { get; }

        public bool Matches(ReadOnlySpan<KeyValuePair<string, object?>> tags)
        {
            if (tags.Length != _names.Length)
            {
                return false;
            }

            for (int i = 0; i < tags.Length; i++)
            {
                if (!string.Equals(_names[i], tags[i].Key, StringComparison.Ordinal) || !Equals(_values[i], tags[i].Value))
                {
                    return false;
                }
            }

            return true;
        }
    }

    private sealed class Series(InstrumentState state)
    {
        public InstrumentState State { get; } = state;

        public double Sum { get; set; }

        public long Count { get; set; }

        /// <summary>Per bucket (not cumulative), the last slot past the highest bound; null for other kinds.</summary>
        public long[]? Buckets { get; } = state.Bounds is { } b ? new long[b.Length + 1] : null;
    }
}
