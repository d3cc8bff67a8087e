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

/// <summary>The hottest methods of a trace, by the samples of busy threads.</summary>
/// <param name="Samples">Samples of busy threads (waits left out) that the shares are fractions of.</param>
/// <param name="Sampled">From the trace's first CPU sample to its last, of any thread.</param>
/// <param name="Processors">The traced machine's processors, as the trace records them (0: not recorded).</param>
/// <param name="ByExclusive">Hottest by own time.</param>
/// <param name="ByInclusive">Hottest with callees.</param>
public sealed record HotMethods(int Samples, TimeSpan Sampled, int Processors, IReadOnlyList<MethodShare> ByExclusive, IReadOnlyList<MethodShare> ByInclusive);

/// <summary>
/// Reads a .nettrace written by <see cref="NodeProfiler.TraceAsync(int, string, TimeSpan, CancellationToken)"/> and ranks
/// methods by their share of the samples taken while a thread was busy. The runtime's sample profiler marks each sample
/// Managed (running managed code) or External (outside it: in native code such as libsodium or a system call, or
/// waiting). A sample counts when its innermost managed method is not a wait (<see cref="IsWait"/>: a lock, event,
/// semaphore, sleep, spin-wait, the socket or thread-pool idle loop, a blocking read or write), whichever its type: a
/// thread spinning in SpinWait or Monitor's slow path is Managed yet waiting, and once ranked as the hottest code
/// (LowLevelSpinWaiter.Wait 30 %). External samples also need a managed caller, and go to it: native time is the own
/// (exclusive) time of the managed method that called into it (a P/Invoke such as libsodium's verify), and the
/// inclusive time of its callers. Leaving External samples out, as before, undercounted native-heavy threads (a thread
/// verifying with libsodium read 20-25 % against 29-37 % for an equally busy managed loop). Native frames themselves
/// are not named (the trace has no native symbols). A wait the JIT inlined into its caller is seen as that caller, and
/// counts: the node's own waits are methods of their own, never inlined, with Wait in their names (the store's I/O
/// threads, waiting in an inlined Monitor.Wait in IoQueue.Take, were once 99 % of a summary), and a summary with more
/// busy samples than the machine's processors could run says so (<see cref="ImpossibleCountWarning"/>).
/// </summary>
public static class TraceSummary
{
    /// <summary>Hottest methods by exclusive and by inclusive samples.</summary>
    /// <exception cref="ProfilerException">The trace cannot be read (missing, truncated, not a .nettrace) or its temporary
    /// index cannot be written; the message says which file and why, in one line.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled; the temporary
    /// index is removed.</exception>
    public static HotMethods Summarize(string nettrace, int top, CancellationToken cancellationToken = default) =>
        // An index of its own, not the trace's name with .etlx: a trace named x.etlx was its own index, overwritten and
        // then deleted, and a sibling x.etlx the user kept went the same way.
        Summarize(nettrace, top, Path.Combine(Path.GetTempPath(), $"meganet-trace-{Guid.NewGuid():N}.etlx"), cancellationToken);

    /// <summary><see cref="Summarize(string, int, CancellationToken)"/> with its temporary index at
    /// <paramref name="etlx"/>.</summary>
    internal static HotMethods Summarize(string nettrace, int top, string etlx, CancellationToken cancellationToken)
    {
        // Ctrl+C leaves the command a few seconds (MeganetCommand's grace period) before the process is ended, and
        // TraceEvent's conversion of a long trace cannot be stopped and can take longer, so the finally below might
        // never run: the index is removed at once instead (Linux and macOS remove a file still being written; the
        // conversion goes on writing to no name, and fails renaming it), and the sample loop stops at the token.
        using CancellationTokenRegistration removeIndex = cancellationToken.Register(() => Delete(etlx));
        try
        {
            cancellationToken.ThrowIfCancellationRequested();
            return Summarize(nettrace, etlx, top, cancellationToken);
        }
        catch (Exception e) when (e is not ProfilerException and not OutOfMemoryException)
        {
            // Cancelled: whatever the conversion hit once its index was removed is the cancellation's doing.
            cancellationToken.ThrowIfCancellationRequested();
            // TraceEvent reports a bad file with whatever exception its parser hit (IOException, FormatException,
            // InvalidOperationException, its own Exception subclasses): all of them mean this file cannot be summarised.
            string why = e.Message.Split('\n')[0].Trim();
            throw new ProfilerException($"cannot summarise the trace {nettrace}: {why} (the trace file itself may still open in PerfView or speedscope)", e);
        }
        finally
        {
            Delete(etlx);
        }
    }

    /// <summary>Removes the index, and the file TraceEvent writes it to before renaming it (<c>.etlx.new</c>).</summary>
    private static void Delete(string etlx)
    {
        try
        {
            File.Delete(etlx + ".new");
            File.Delete(etlx);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // A leftover index is harmless (Windows refuses to remove one still being written); the summary (or the
            // error that ended it) is what the caller needs.
        }
    }

    private static HotMethods Summarize(string nettrace, string etlxPath, int top, CancellationToken cancellationToken)
    {
        string etlx = TraceLog.CreateFromEventPipeDataFile(nettrace, etlxPath);
        cancellationToken.ThrowIfCancellationRequested();
        var exclusive = new Dictionary<string, int>(StringComparer.Ordinal);
        var inclusive = new Dictionary<string, int>(StringComparer.Ordinal);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        int samples = 0;
        double firstSampleMs = double.NaN, lastSampleMs = double.NaN;
        int processors;
        using (var log = new TraceLog(etlx))
        {
            processors = log.NumberOfProcessors;
            foreach (TraceEvent e in log.Events)
            {
                cancellationToken.ThrowIfCancellationRequested();
                if (e.ProviderName != "Microsoft-DotNETCore-SampleProfiler" || !e.EventName.Contains("Sample", StringComparison.Ordinal))
                {
                    continue;
                }

                if (double.IsNaN(firstSampleMs))
                {
                    firstSampleMs = e.TimeStampRelativeMSec;
                }

                lastSampleMs = e.TimeStampRelativeMSec;

                // Payload "Type": External (waiting or in native code) or Managed (running managed code).
                string? type = e.PayloadByName("Type")?.ToString();
                if (type is not ("Managed" or "External"))
                {
                    continue;
                }

                TraceCallStack? stack = e.CallStack();
                if (stack is null || !Counts(type, InnermostMethod(stack)))
                {
                    continue; // a thread waiting, or native code with no managed caller to charge it to
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
        TimeSpan sampled = double.IsNaN(firstSampleMs) ? TimeSpan.Zero : TimeSpan.FromMilliseconds(lastSampleMs - firstSampleMs);
        return new HotMethods(
            samples,
            sampled,
            processors,
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

    /// <summary>Whether a sample of <paramref name="type"/> (Managed or External) whose innermost managed method is
    /// <paramref name="innermostMethod"/> (null: none) counts as a busy thread. Before, the wait filter applied to
    /// External samples only, so Managed samples of spinning and blocked threads were ranked as work.</summary>
    internal static bool Counts(string type, string? innermostMethod) => type switch
    {
        "Managed" => innermostMethod is null || !IsWait(innermostMethod),
        "External" => innermostMethod is not null && !IsWait(innermostMethod),
        _ => false,
    };

    /// <summary>True when a sample whose innermost managed frame is <paramref name="method"/> is a thread waiting rather
    /// than working: found by the method's own name (the part before the parameters, after the type), as the runtime's
    /// stacks of idle threads show them (Monitor.Wait, WaitHandle.WaitOneNoCheck, LowLevelLifoSemaphore.WaitNative,
    /// LowLevelSpinWaiter.Wait, Thread.Sleep, Thread.Join, ShortSleep.Sleep, SpinWait.SpinOnceCore, Monitor.Enter_Slowpath,
    /// SocketAsyncEngine.EventLoop, PortableThreadPool+WorkerThread.WorkerThreadStart) and the blocking file system calls
    /// (Interop+Sys.Read, PWrite, ..., and RandomAccess.WriteAtOffset and the like, whose P/Invoke frame the trace may
    /// not name: waiting for a device or an event, not computing). The words match by case, so "Await" (async
    /// plumbing, work) is not "Wait"; "Join" counts only as Thread.Join, not string or path joining.</summary>
    internal static bool IsWait(string method)
    {
        int end = method.IndexOf('(', StringComparison.Ordinal);
        string qualified = end < 0 ? method : method[..end];
        string name = qualified[(qualified.LastIndexOf('.') + 1)..];
        foreach (string wait in WaitWords)
        {
            if (name.Contains(wait, StringComparison.Ordinal))
            {
                return true;
            }
        }

        return (qualified.StartsWith("Interop+Sys.", StringComparison.Ordinal) && BlockingCalls.Contains(name)) || QualifiedWaits.Contains(qualified);
    }

    /// <summary>The runtime's sample profiler samples each managed thread once a millisecond (its default, which
    /// <see cref="NodeProfiler"/> keeps), so no more busy samples than this per second and processor can be real.</summary>
    internal const int SamplesPerSecond = 1_000;

    /// <summary>A warning when <paramref name="samples"/> busy samples are more than <paramref name="processors"/> could
    /// hold over <paramref name="sampled"/>: threads that were waiting in a way <see cref="IsWait"/> does not recognise
    /// were counted as busy, and the ranking is skewed towards them (idle store I/O threads once read 99 %, 241,120
    /// busy samples in 30 s on 2 processors). Null when the count is possible.</summary>
    internal static string? ImpossibleCountWarning(int samples, TimeSpan sampled, int processors)
    {
        double most = processors * sampled.TotalSeconds * SamplesPerSecond;
        return processors <= 0 || sampled <= TimeSpan.Zero || samples <= most
            ? null
            : string.Create(CultureInfo.InvariantCulture, $"warning: {samples:N0} busy samples in {sampled.TotalSeconds:0.0} s is more than {processors} processors can run ") +
              string.Create(CultureInfo.InvariantCulture, $"(at most {most:N0} at {SamplesPerSecond:N0} samples a second per thread): threads that were waiting were counted ") +
              "as busy, so the methods they waited in are ranked too high; open the trace in PerfView or speedscope to see which";
    }

    private static readonly string[] WaitWords = ["Wait", "Sleep", "Yield", "SpinOnce", "Enter_Slowpath", "EventLoop", "WorkerThreadStart", "Poll"];

    /// <summary>Waits whose own name alone says too little (Join is also String.Join).</summary>
    private static readonly HashSet<string> QualifiedWaits = new(StringComparer.Ordinal)
    {
        "System.Threading.Thread.Join",
        "System.IO.RandomAccess.ReadAtOffset", "System.IO.RandomAccess.WriteAtOffset",
        "System.IO.RandomAccess.ReadScatterAtOffset", "System.IO.RandomAccess.WriteGatherAtOffset",
        "System.IO.RandomAccess.FlushToDisk",
    };

    private static readonly HashSet<string> BlockingCalls = new(StringComparer.Ordinal)
    {
        "Read", "ReadV", "PRead", "PReadV", "Write", "WriteV", "PWrite", "PWriteV", "FSync", "FLock", "Accept", "Connect",
    };

    /// <summary>The summary as two plain-text tables.</summary>
    public static string Format(HotMethods summary)
    {
        var sb = new StringBuilder();
        if (ImpossibleCountWarning(summary.Samples, summary.Sampled, summary.Processors) is { } warning)
        {
            sb.AppendLine(warning);
        }

        sb.AppendLine(CultureInfo.InvariantCulture, $"{summary.Samples:N0} samples of busy threads in {summary.Sampled.TotalSeconds:0.0} s (managed code, and native code charged to its managed caller; waits left out)");
        sb.AppendLine("  excl%   incl%  hottest methods (own time)");
        foreach (MethodShare m in summary.ByExclusive)
        {
            sb.AppendLine(CultureInfo.InvariantCulture, $"  {m.Exclusive * 100,5:F1}  {m.Inclusive * 100,6:F1}  {Shorten(m.Method)}");
        }

        sb.AppendLine("  excl%   incl%  hottest methods (with callees)");
        foreach (MethodShare m in summary.ByInclusive)
        {
            sb.AppendLine(CultureInfo.InvariantCulture, $"  {m.Exclusive * 100,5:F1}  {m.Inclusive * 100,6:F1}  {Shorten(m.Method)}");
        }

        return sb.ToString();
    }

    private static string Shorten(string method) => method.Length <= 150 ? method : string.Concat(method.AsSpan(0, 147), "...");
}
