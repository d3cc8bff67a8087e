using System.Globalization;
using System.Text;

namespace MegaNet.Node.Benchmarking;

/// <summary>
/// Every measured call of a <c>meganet load</c> run as a CSV row (<c>--timeline</c>): when it completed by the wall
/// clock, and its latency. A p99 says how long the slowest calls took, not when: with the completion times, a slow
/// stretch can be lined up with what the node did then (a checkpoint in its log or metrics, a collection). The file is
/// flushed after each phase, so an interrupted run keeps the phases it finished.
/// </summary>
internal sealed class LoadTimeline : IDisposable
{
    /// <summary>The columns: the phase (stream, unary, floor or mixed) and the call's kind within it (stream, unary,
    /// status); completion in Unix milliseconds; start, in seconds since the phase began; latency; the client's own start
    /// lateness (empty without a schedule); 1 accepted, 0 refused.</summary>
    public const string Header = "phase,kind,completed_unix_ms,started_s,latency_ms,late_ms,ok";

    private readonly TextWriter _writer;

    private LoadTimeline(TextWriter writer)
    {
        _writer = writer;
        _writer.WriteLine(Header);
    }

    /// <summary>Creates (or replaces) the file at <paramref name="path"/> and writes the header; throws IOException or
    /// UnauthorizedAccessException when it cannot be written, before any load is sent.</summary>
    public static LoadTimeline Create(string path) =>
        new(new StreamWriter(new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.Read), new UTF8Encoding(false)) { NewLine = "\n" });

    /// <summary>Over a writer of the caller's (tests).</summary>
    internal static LoadTimeline Over(TextWriter writer) => new(writer);

    /// <summary>Writes a phase's calls, one row each (a streamed request's envelopes each get a row, with the request's
    /// times), in call order; <paramref name="began"/> is the wall-clock time of the phase's start, which the samples'
    /// times count from.</summary>
    public void Add(string phase, string kind, DateTimeOffset began, LoadGenerator.CallSamples calls)
    {
        double origin = (began.UtcTicks - DateTimeOffset.UnixEpoch.UtcTicks) / (double)TimeSpan.TicksPerMillisecond;
        var row = new StringBuilder(96);
        for (int i = 0; i < calls.Ok.Length; i++)
        {
            row.Clear();
            double late = calls.LateMs[i];
            row.Append(CultureInfo.InvariantCulture,
                $"{phase},{kind},{origin + (calls.CompletedAt[i] * 1000):F3},{calls.StartedAt[i]:F6},{calls.LatencyMs[i]:F3},");
            if (!double.IsNaN(late))
            {
                row.Append(CultureInfo.InvariantCulture, $"{late:F3}");
            }

            row.Append(calls.Ok[i] ? ",1" : ",0");
            _writer.WriteLine(row);
        }

        _writer.Flush();
    }

    /// <inheritdoc/>
    public void Dispose() => _writer.Dispose();
}
