namespace MegaNet.Core.Verification;

/// <summary>
/// Base for backends: validates the caller's arguments once at the public boundary, then calls
/// <see cref="VerifyCore"/> with a range known to be inside the batch and a verdict span of exactly that length.
/// </summary>
public abstract class BatchVerifierBase : IBatchVerifier
{
    private volatile bool _disposed;

    /// <inheritdoc />
    public abstract string Name { get; }

    /// <inheritdoc />
    public abstract string Description { get; }

    /// <inheritdoc />
    public virtual VerificationRule Rule => VerificationRule.MegaNet;

    /// <summary>True once <see cref="Dispose()"/> ran.</summary>
    protected bool IsDisposed => _disposed;

    /// <inheritdoc />
    public void Verify(SignatureBatch batch, int start, int count, Span<bool> verdicts)
    {
        ArgumentNullException.ThrowIfNull(batch);
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentOutOfRangeException.ThrowIfNegative(start);
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        if (start > batch.Count - count)
        {
            throw new ArgumentOutOfRangeException(nameof(count), $"Items {start}..{start + count - 1} are outside a batch of {batch.Count}.");
        }

        if (verdicts.Length < count)
        {
            throw new ArgumentException($"The verdict span holds {verdicts.Length} entries; {count} are needed.", nameof(verdicts));
        }

        if (count == 0)
        {
            return;
        }

        VerifyCore(batch, start, count, verdicts[..count]);
        if (batch.MalformedCount > 0)
        {
            for (int i = 0; i < count; i++)
            {
                if (batch.IsMalformed(start + i))
                {
                    verdicts[i] = false;
                }
            }
        }
    }

    /// <summary>Verifies a range already validated: <c>0 ≤ start</c>, <c>start + count ≤ batch.Count</c>,
    /// <c>count ≥ 1</c>, <c>verdicts.Length == count</c>.</summary>
    protected abstract void VerifyCore(SignatureBatch batch, int start, int count, Span<bool> verdicts);

    /// <inheritdoc />
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        Dispose(true);
        GC.SuppressFinalize(this);
    }

    /// <summary>Releases backend resources.</summary>
    protected virtual void Dispose(bool disposing)
    {
    }
}
