using MegaNet.Core.Interop;

namespace MegaNet.Core.Verification;

/// <summary>
/// Backend <c>libsodium</c>: the speed baseline, <c>crypto_sign_ed25519_verify_detached</c> in a loop. It keeps
/// libsodium's own rule (cofactorless), which differs from MegaNet's on torsion residues (docs/verification.md), so
/// <see cref="Rule"/> says <see cref="VerificationRule.Libsodium"/> and the node never selects it for admission.
/// </summary>
public sealed class LibsodiumBatchVerifier : BatchVerifierBase
{
    /// <summary>Registry name.</summary>
    public const string BackendName = "libsodium";

    /// <inheritdoc />
    public override string Name => BackendName;

    /// <inheritdoc />
    public override string Description => $"libsodium {Sodium.Version} crypto_sign_ed25519_verify_detached, one item at a time (libsodium's rule)";

    /// <inheritdoc />
    public override VerificationRule Rule => VerificationRule.Libsodium;

    /// <summary>Null when the native library loads, else why not.</summary>
    public static string? Probe()
    {
        try
        {
            _ = Sodium.Version;
            return null;
        }
        catch (PlatformNotSupportedException e)
        {
            return e.Message;
        }
    }

    /// <inheritdoc />
    protected override void VerifyCore(SignatureBatch batch, int start, int count, Span<bool> verdicts)
    {
        ReadOnlySpan<byte> keys = batch.PublicKeys;
        ReadOnlySpan<byte> signatures = batch.Signatures;
        ReadOnlySpan<byte> messages = batch.MessageData;
        ReadOnlySpan<int> offsets = batch.MessageOffsets;
        for (int j = 0; j < count; j++)
        {
            int i = start + j;
            verdicts[j] = Sodium.Verify(
                signatures.Slice(i * SignatureBatch.SignatureSize, SignatureBatch.SignatureSize),
                messages[offsets[i]..offsets[i + 1]],
                keys.Slice(i * SignatureBatch.PublicKeySize, SignatureBatch.PublicKeySize));
        }
    }
}
