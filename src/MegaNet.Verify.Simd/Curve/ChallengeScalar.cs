using System.Runtime.CompilerServices;
using MegaNet.Core.Verification;
using NSec.Cryptography;

namespace MegaNet.Verify.Simd.Curve;

/// <summary>The challenge scalar of rule 5, k = SHA-512(R ‖ A ‖ M) mod L, for the SIMD and GPU backends (one copy, so
/// a fix to it reaches both).</summary>
/// <remarks>SHA-512 from NSec (libsodium), its state on the stack: .NET's <see cref="System.Security.Cryptography.IncrementalHash"/>
/// goes through OpenSSL, whose per-call overhead (a context per update and final, an error-queue clear each time) made
/// a 244-byte envelope challenge cost 0.71-0.86 µs against 0.61-0.70 µs here (AMD EPYC, 2026-12-01). The reference
/// (<c>Ed25519Reference</c>) keeps .NET's, so the differential tests compare two implementations.</remarks>
internal static class ChallengeScalar
{
    /// <summary>k for <paramref name="signature"/> (64 bytes, R then S), <paramref name="publicKey"/> (32 bytes) and
    /// <paramref name="message"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static Scalar256 Compute(ReadOnlySpan<byte> signature, ReadOnlySpan<byte> publicKey, ReadOnlySpan<byte> message)
    {
        Span<byte> digest = stackalloc byte[64];
        IncrementalHash.Initialize(HashAlgorithm.Sha512, out IncrementalHash sha);
        IncrementalHash.Update(ref sha, signature[..32]);
        IncrementalHash.Update(ref sha, publicKey);
        IncrementalHash.Update(ref sha, message);
        IncrementalHash.Finalize(ref sha, digest);
        return ScalarMath.ReduceBytes(digest);
    }
}
