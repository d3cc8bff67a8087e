namespace MegaNet.Core.Verification;

/// <summary>
/// Verifies many Ed25519 signatures at once and gives one exact verdict per item.
/// </summary>
/// <remarks>
/// <para>Input: items <c>start .. start + count - 1</c> of a <see cref="SignatureBatch"/> (flat buffers: 32-byte keys,
/// 64-byte signatures R ‖ S, concatenated messages with an offset table).</para>
/// <para>Output: <c>verdicts[j]</c> is true iff item <c>start + j</c> satisfies the backend's <see cref="Rule"/>.
/// Exactly <c>count</c> verdicts are written; nothing outside <c>verdicts[..count]</c> is touched.</para>
/// <para>A bad signature, key or encoding is a false verdict, never an exception. Implementations that verify
/// algebraically (random linear combinations) must still give per-item verdicts identical to checking each item
/// alone: when a combined equation fails they locate the failing items.</para>
/// <para>Exceptions: <see cref="ArgumentException"/> and <see cref="ArgumentOutOfRangeException"/> for a range outside the
/// batch or a verdict span shorter than <c>count</c>; <see cref="ObjectDisposedException"/> after disposal.
/// A verifier instance may be called from several threads at once unless its documentation says otherwise.</para>
/// </remarks>
public interface IBatchVerifier : IDisposable
{
    /// <summary>The backend's registry name (<c>reference</c>, <c>simd</c>, <c>gpu</c>, <c>gpu-cpu</c>, <c>libsodium</c>).</summary>
    string Name { get; }

    /// <summary>What runs underneath, for logs and reports (ISA tier, device, threads).</summary>
    string Description { get; }

    /// <summary>The verification rule this backend implements.</summary>
    VerificationRule Rule { get; }

    /// <summary>Verifies items <paramref name="start"/> .. <paramref name="start"/> + <paramref name="count"/> − 1 of
    /// <paramref name="batch"/>, writing one verdict per item to <paramref name="verdicts"/>.</summary>
    void Verify(SignatureBatch batch, int start, int count, Span<bool> verdicts);
}

/// <summary>Which acceptance rule a backend implements.</summary>
public enum VerificationRule
{
    /// <summary>MegaNet's rule: cofactored, strict (docs/verification.md). Every backend except the baseline.</summary>
    MegaNet,

    /// <summary>libsodium's own rule (cofactorless equation); used only as the speed baseline and as an oracle.</summary>
    Libsodium,
}

/// <summary>Helpers over <see cref="IBatchVerifier"/>.</summary>
public static class BatchVerifierExtensions
{
    /// <summary>Verifies every item of <paramref name="batch"/>.</summary>
    public static void Verify(this IBatchVerifier verifier, SignatureBatch batch, Span<bool> verdicts)
    {
        ArgumentNullException.ThrowIfNull(verifier);
        ArgumentNullException.ThrowIfNull(batch);
        verifier.Verify(batch, 0, batch.Count, verdicts);
    }

    /// <summary>Verifies every item of <paramref name="batch"/> and returns a new verdict array.</summary>
    public static bool[] Verify(this IBatchVerifier verifier, SignatureBatch batch)
    {
        ArgumentNullException.ThrowIfNull(batch);
        var verdicts = new bool[batch.Count];
        verifier.Verify(batch, verdicts);
        return verdicts;
    }
}
