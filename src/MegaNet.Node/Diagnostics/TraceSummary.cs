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
/// Reads a .nettrace written by <see cref="NodeProfiler.TraceAsync(int, string, TimeSpan, CancellationToken)"/> and ranks
/// methods by their share of the samples taken while a thread was busy. The runtime's sample profiler marks each sample
/// Managed (running managed code) or External (outside it: in native code such as libsodium or a system call, or
/// waiting). Managed samples all count. External ones count when they have a managed caller and are not a wait
/// (<see cref="IsWait"/>: a lock, event, semaphore, sleep, the socket or thread-pool idle loop, a blocking read or
/// write), and go to that caller: native time is the own (exclusive) time of the managed method that called into it
/// (a P/Invoke such as libsodium's verify), and the inclusive time of its callers. Leaving External samples out, as
/// before, undercounted native-heavy threads (a thread verifying with libsodium read 20-25 % against 29-37 % for an
/// equally busy managed loop). Native frames themselves are not named (the trace has no native symbols).
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
                string? type = e.PayloadByName("Type")?.ToString();
                if (type is not ("Managed" or "External"))
                {
                    continue;
                }

                TraceCallStack? stack = e.CallStack();
                if (stack is null || (type == "External" && (InnermostMethod(stack) is not { } caller || IsWait(caller))))
                {
                    continue; // no managed caller to charge it to, or a thread waiting
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

    /// <summary>The innermost frame of <paramref name="stack"/> with a method name (the managed code that was running, or
    /// that called into native code), or null.</summary>
    private static string? InnermostMethod(TraceCallStack stack)
    {
        for (TraceCallStack? frame = stack; frame is not null; frame = frame.Caller)
        {
            if (!string.IsNullOrEmpty(frame.CodeAddress.FullMethodName))
            {
                return frame.CodeAddress.FullMethodName;
            }
        }

        return null;
    }

    /// <summary>True when an External sample whose innermost managed frame is <paramref name="method"/> is a thread
    /// waiting rather than working: found by the method's own name (the part before the parameters, after the type), as
    /// the runtime's stacks of idle threads show them (Monitor.Wait, WaitHandle.WaitOneNoCheck,
    /// LowLevelLifoSemaphore.WaitNative, Thread.Sleep, ShortSleep.Sleep, SpinWait.SpinOnceCore, Monitor.Enter_Slowpath,
    /// SocketAsyncEngine.EventLoop, PortableThreadPool+WorkerThread.WorkerThreadStart) and the blocking file system calls
    /// (Interop+Sys.Read, PWrite, ...: waiting for a device or an event, not computing).</summary>
    internal static bool IsWait(string method)
    {
        int end = method.IndexOf('(', StringComparison.Ordinal);
        string qualified = end < 0 ? method : method[..end];
        string name = qualified[(qualified.LastIndexOf('.') + 1)..];
        foreach (string wait in WaitWords)
        {
            if (name.Contains(wait, StringComparison.OrdinalIgnoreCase))
            {
                return true;
            }
        }

        return qualified.StartsWith("Interop+Sys.", StringComparison.Ordinal) && BlockingCalls.Contains(name);
    }

    private static readonly string[] WaitWords = ["Wait", "Sleep", "Yield", "SpinOnce", "Join", "Enter_Slowpath", "EventLoop", "WorkerThreadStart", "Poll"];

    private static readonly HashSet<string> BlockingCalls = new(StringComparer.Ordinal)
    {
        "Read", "ReadV", "PRead", "PReadV", "Write", "WriteV", "PWrite", "PWriteV", "FSync", "FLock", "Accept", "Connect",
    };

    /// <summary>The summary as two plain-text tables.</summary>
    public static string Format(int samples, IReadOnlyList<MethodShare> byExclusive, IReadOnlyList<MethodShare> byInclusive)
    {
        var sb = new StringBuilder();
        sb.AppendLine(CultureInfo.InvariantCulture, $"{samples:N0} samples of busy threads (managed code, and native code charged to its managed caller; waits left out)");
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
