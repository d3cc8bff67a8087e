using System.Globalization;
using System.Text;
using Microsoft.Diagnostics.Tracing;
using Microsoft.Diagnostics.Tracing.Etlx;

namespace MegaNet.Node.Diagnostics;

/// <summary>One method's share of the CPU samples of a trace.</summary>
/// <param name="Method">Module-qualified method name as the runtime's rundown reports it.</param>
/// <param name="Exclusive">Samples with the method on top of the stack, as a fraction of all counted samples.</param>
/// <param name="Inclusive">Samples with the method anywhere on the stack (counted once per sample).</param>
public sealed record MethodShare(string Method, double Exclusive, double Inclusive);

/// <summary>
/// Reads a .nettrace written by <see cref="NodeProfiler.TraceAsync(int, string, TimeSpan, CancellationToken)"/> and ranks methods by their share of the samples
/// taken while a thread ran managed code (the sample profiler also samples waiting threads; those are left out, as
/// are native frames, so time inside libsodium or the OS shows only as its managed caller's inclusive share).
/// </summary>
public static class TraceSummary
{
    /// <summary>Hottest methods by exclusive and by inclusive samples.</summary>
    /// <exception cref="ProfilerException">The trace cannot be read (missing, truncated, not a .nettrace) or the index
    /// beside it cannot be written; the message says which file and why, in one line.</exception>
    public static (int Samples, IReadOnlyList<MethodShare> ByExclusive, IReadOnlyList<MethodShare> ByInclusive) Summarize(string nettrace, int top)
    {
        string etlx = Path.ChangeExtension(nettrace, ".etlx");
        try
        {
            return Summarize(nettrace, etlx, top);
        }
        catch (Exception e) when (e is not ProfilerException and not OutOfMemoryException)
        {
            // TraceEvent reports a bad file with whatever exception its parser hit (IOException, FormatException,
            // InvalidOperationException, its own Exception subclasses): all of them mean this file cannot be summarised.
            string why = e.Message.Split('\n')[0].Trim();
            throw new ProfilerException($"cannot summarise the trace {nettrace}: {why} (the trace file itself may still open in PerfView or speedscope)", e);
        }
        finally
        {
            try
            {
                File.Delete(etlx);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // A leftover index is harmless; the summary (or the error above) is what the caller needs.
            }
        }
    }

    private static (int Samples, IReadOnlyList<MethodShare> ByExclusive, IReadOnlyList<MethodShare> ByInclusive) Summarize(string nettrace, string etlxPath, int top)
    {
        string etlx = TraceLog.CreateFromEventPipeDataFile(nettrace, etlxPath);
        var exclusive = new Dictionary<string, int>(StringComparer.Ordinal);
        var inclusive = new Dictionary<string, int>(StringComparer.Ordinal);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        int samples = 0;
        using (var log = new TraceLog(etlx))
        {
            foreach (TraceEvent e in log.Events)
            {
                if (e.ProviderName != "Microsoft-DotNETCore-SampleProfiler" || !e.EventName.Contains("Sample", StringComparison.Ordinal))
                {
                    continue;
                }

                // Payload "Type": External (waiting or in native code) or Managed (running managed code).
                if (!string.Equals(e.PayloadByName("Type")?.ToString(), "Managed", StringComparison.Ordinal))
                {
                    continue;
                }

                TraceCallStack? stack = e.CallStack();
                if (stack is null)
                {
                    continue;
                }

                samples++;
                seen.Clear();
                bool first = true;
                for (TraceCallStack? frame = stack; frame is not null; frame = frame.Caller)
                {
                    string name = frame.CodeAddress.FullMethodName;
                    if (string.IsNullOrEmpty(name))
                    {
                        continue;
                    }

                    if (first)
                    {
                        exclusive[name] = exclusive.GetValueOrDefault(name) + 1;
                        first = false;
                    }

                    if (seen.Add(name))
                    {
                        inclusive[name] = inclusive.GetValueOrDefault(name) + 1;
                    }
                }
            }
        }

        double total = Math.Max(1, samples);
        MethodShare Share(string m) => new(m, exclusive.GetValueOrDefault(m) / total, inclusive.GetValueOrDefault(m) / total);
        return (
            samples,
            exclusive.OrderByDescending(p => p.Value).Take(top).Select(p => Share(p.Key)).ToList(),
            inclusive.OrderByDescending(p => p.Value).Take(top).Select(p => Share(p.Key)).ToList());
    }

    /// <summary>The summary as two plain-text tables.</summary>
    public static string Format(int samples, IReadOnlyList<MethodShare> byExclusive, IReadOnlyList<MethodShare> byInclusive)
    {
        var sb = new StringBuilder();
        sb.AppendLine(CultureInfo.InvariantCulture, $"{samples:N0} samples in managed code");
        sb.AppendLine("  excl%   incl%  hottest methods (own time)");
        foreach (MethodShare m in byExclusive)
        {
            sb.AppendLine(CultureInfo.InvariantCulture, $"  {m.Exclusive * 100,5:F1}  {m.Inclusive * 100,6:F1}  {Shorten(m.Method)}");
        }

        sb.AppendLine("  excl%   incl%  hottest methods (with callees)");
        foreach (MethodShare m in byInclusive)
        {
            sb.AppendLine(CultureInfo.InvariantCulture, $"  {m.Exclusive * 100,5:F1}  {m.Inclusive * 100,6:F1}  {Shorten(m.Method)}");
        }

        return sb.ToString();
    }

    private static string Shorten(string method) => method.Length <= 150 ? method : string.Concat(method.AsSpan(0, 147), "...");
}
