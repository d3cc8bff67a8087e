using System.Diagnostics;
using MegaNet.Core.Diagnostics;

namespace MegaNet.Core.Verification;

/// <summary>
/// Decorates an <see cref="IBatchVerifier"/> so every call records <see cref="MegaNetMetrics.Verifications"/>
/// (tags <c>backend</c>, <c>verdict</c>, and <c>purpose</c> when given), <see cref="MegaNetMetrics.BatchSize"/> and
/// <see cref="MegaNetMetrics.BatchDuration"/> (tags <c>backend</c>, and <c>purpose</c> when given).
/// </summary>
/// <remarks>Counts verdicts with one pass over the span after the call, so the cost is per batch, not per item,
/// and nothing is allocated: tags are <see cref="KeyValuePair{TKey,TValue}"/> structs passed by value.</remarks>
public sealed class InstrumentedBatchVerifier : IBatchVerifier
{
    private readonly IBatchVerifier _inner;
    private readonly string? _purpose;
    private readonly bool _ownsInner;
    private static readonly KeyValuePair<string, object?> ValidTag = new("verdict", "valid");
    private static readonly KeyValuePair<string, object?> InvalidTag = new("verdict", "invalid");

    /// <summary>Wraps <paramref name="inner"/>; disposing this disposes it. With <paramref name="purpose"/> (one of
    /// <see cref="VerificationPurpose"/>'s) every measurement is tagged <c>purpose</c> with it.</summary>
    public InstrumentedBatchVerifier(IBatchVerifier inner, string? purpose = null)
        : this(inner ?? throw new ArgumentNullException(nameof(inner)), purpose, ownsInner: true)
    {
    }

    private InstrumentedBatchVerifier(IBatchVerifier inner, string? purpose, bool ownsInner)
    {
        _inner = inner;
        _purpose = purpose;
        _ownsInner = ownsInner;
    }

    /// <summary>A wrapper over the same verifier that tags its measurements <paramref name="purpose"/>: for another use
    /// of a shared backend, counted apart. Disposing it leaves the verifier alone (this wrapper's owner disposes it).</summary>
    public InstrumentedBatchVerifier ForPurpose(string purpose)
    {
        ArgumentException.ThrowIfNullOrEmpty(purpose);
        return new InstrumentedBatchVerifier(_inner, purpose, ownsInner: false);
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
        var tags = new TagList { { "backend", _inner.Name } };
        if (_purpose is not null)
        {
            tags.Add("purpose", _purpose);
        }

        MegaNetMetrics.BatchDuration.Record(ms, tags);
        MegaNetMetrics.BatchSize.Record(count, tags);
        // Both verdicts, 0 included: a series appears when first added to, and Prometheus takes its first sample as the
        // baseline, so an invalid series that first appeared holding a burst of forgeries hid that burst from
        // increase(), which an alert on forged envelopes reads (found in review, 2026-12-04).
        TagList validTags = tags;
        validTags.Add(ValidTag);
        MegaNetMetrics.Verifications.Add(valid, validTags);
        TagList invalidTags = tags;
        invalidTags.Add(InvalidTag);
        MegaNetMetrics.Verifications.Add(count - valid, invalidTags);
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (_ownsInner)
        {
            _inner.Dispose();
        }
    }
}

/// <summary>The <c>purpose</c> tag values of a node's verification metrics: what a batch was verified for.</summary>
public static class VerificationPurpose
{
    /// <summary>Envelopes submitted to the node (a forged one counts as an invalid signature here).</summary>
    public const string Admission = "admission";

    /// <summary>Mailbox logins: a client's signed challenge answer (Fetch, Ack, Subscribe), one item a batch.</summary>
    public const string Auth = "auth";

    /// <summary>Clients' VerifyBatch calls: verdicts the node gives as an answer, invalid ones included.</summary>
    public const string Delegated = "delegated";
}
