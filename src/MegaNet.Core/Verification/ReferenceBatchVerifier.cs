using MegaNet.Core.Ed25519;

namespace MegaNet.Core.Verification;

/// <summary>Backend <c>reference</c>: checks each item with <see cref="Ed25519Reference"/>. The rule in code; slow.</summary>
public sealed class ReferenceBatchVerifier : BatchVerifierBase
{
    /// <summary>Registry name.</summary>
    public const string BackendName = "reference";

    /// <inheritdoc />
    public override string Name => BackendName;

    /// <inheritdoc />
    public override string Description => "managed BigInteger reference of docs/verification.md, one item at a time";

    /// <inheritdoc />
    protected override void VerifyCore(SignatureBatch batch, int start, int count, Span<bool> verdicts)
    {
        for (int i = 0; i < count; i++)
        {
            verdicts[i] = Ed25519Reference.Verify(batch.GetPublicKey(start + i), batch.GetSignature(start + i), batch.GetMessage(start + i));
        }
    }
}
