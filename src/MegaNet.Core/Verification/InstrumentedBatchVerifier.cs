using System.Diagnostics;
using MegaNet.Core.Diagnostics;

namespace MegaNet.Core.Verification;

/// <summary>
/// Decorates an <see cref="IBatchVerifier"/> so every call records <see cref="MegaNetMetrics.Verifications"/>
/// (tags <c>backend</c>, <c>verdict</c>), <see cref="MegaNetMetrics.BatchSize"/> and <see cref="MegaNetMetrics.BatchDuration"/>.
/// </summary>
/// <remarks>Counts verdicts with one pass over the span after the call, so the cost is per batch, not per item,
/// and nothing is allocated: tags are <see cref="KeyValuePair{TKey,TValue}"/> structs passed by value.</remarks>
public sealed class InstrumentedBatchVerifier : IBatchVerifier
{
    private readonly IBatchVerifier _inner;
    private static readonly KeyValuePair<string, object?> ValidTag = new("verdict", "valid");
    private static readonly KeyValuePair<string, object?> InvalidTag = new("verdict", "invalid");

    /// <summary>Wraps <paramref name="inner"/>; disposing this disposes it.</summary>
    public InstrumentedBatchVerifier(IBatchVerifier inner)
    {
        _inner = inner ?? throw new ArgumentNullException(nameof(inner));
    }

    /// <inheritdoc />
    public string Name => _inner.Name;

    /// <inheritdoc />
    public string Description => _inner.Description;

    /// <inheritdoc />
    public VerificationRule Rule => _inner.Rule;

    /// <inheritdoc />
    public void Verify(SignatureBatch batch, int start, int count, Span<bool> verdicts)
    {
        long started = Stopwatch.GetTimestamp();
        _inner.Verify(batch, start, count, verdicts);
        double ms = Stopwatch.GetElapsedTime(started).TotalMilliseconds;

        // The inner verifier validated the arguments, so verdicts[..count] exists here.
        int valid = verdicts[..count].Count(true);
        // Read per batch: a router's name changes to its CPU backend's once its GPU faulted.
        var backendTag = new KeyValuePair<string, object?>("backend", _inner.Name);
        MegaNetMetrics.BatchDuration.Record(ms, backendTag);
        MegaNetMetrics.BatchSize.Record(count, backendTag);
        if (valid > 0)
        {
            MegaNetMetrics.Verifications.Add(valid, backendTag, ValidTag);
        }

        if (count - valid > 0)
        {
            MegaNetMetrics.Verifications.Add(count - valid, backendTag, InvalidTag);
        }
    }

    /// <inheritdoc />
    public void Dispose() => _inner.Dispose();
}
