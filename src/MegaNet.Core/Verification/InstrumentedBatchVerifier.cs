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
    private readonly KeyValuePair<string, object?> _backendTag;
    private static readonly KeyValuePair<string, object?> ValidTag = new("verdict", "valid");
    private static readonly KeyValuePair<string, object?> InvalidTag = new("verdict", "invalid");

    /// <summary>Wraps <paramref name="inner"/>; disposing this disposes it.</summary>
    public InstrumentedBatchVerifier(IBatchVerifier inner)
    {
        _inner = inner ?? throw new ArgumentNullException(nameof(inner));
        _backendTag = new("backend", inner.Name);
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
        MegaNetMetrics.BatchDuration.Record(ms, _backendTag);
        MegaNetMetrics.BatchSize.Record(count, _backendTag);
        if (valid > 0)
        {
            MegaNetMetrics.Verifications.Add(valid, _backendTag, ValidTag);
        }

        if (count - valid > 0)
        {
            MegaNetMetrics.Verifications.Add(count - valid, _backendTag, InvalidTag);
        }
    }

    /// <inheritdoc />
    public void Dispose() => _inner.Dispose();
}
