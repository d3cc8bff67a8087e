using System.Security.Cryptography;
using MegaNet.Core.Verification;

namespace MegaNet.Verify.Simd.Curve;

/// <summary>The challenge scalar of rule 5, k = SHA-512(R ‖ A ‖ M) mod L, for the SIMD and GPU backends (one copy, so
/// a fix to it reaches both).</summary>
internal static class ChallengeScalar
{
    // One hash object per thread, reused across items and batches: no allocation per item.
    [ThreadStatic]
    private static IncrementalHash? _sha512;

    /// <summary>k for <paramref name="signature"/> (64 bytes, R then S), <paramref name="publicKey"/> (32 bytes) and
    /// <paramref name="message"/>.</summary>
    public static Scalar256 Compute(ReadOnlySpan<byte> signature, ReadOnlySpan<byte> publicKey, ReadOnlySpan<byte> message)
    {
        // Every slice is made before the first append (the caller's, and R here): a throw between appends would leave
        // bytes in this thread's hash, and the next item it hashes (maybe another caller's) would get a wrong k.
        ReadOnlySpan<byte> r = signature[..32];
        IncrementalHash sha = _sha512 ??= IncrementalHash.CreateHash(HashAlgorithmName.SHA512);
        Span<byte> digest = stackalloc byte[64];
        sha.AppendData(r);
        sha.AppendData(publicKey);
        sha.AppendData(message);
        sha.GetHashAndReset(digest);
        return ScalarMath.ReduceBytes(digest);
    }
}
