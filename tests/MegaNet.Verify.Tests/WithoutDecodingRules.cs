using System.Numerics;
using MegaNet.Core.Ed25519;
using MegaNet.Core.Verification;
using static MegaNet.Core.Ed25519.Ed25519Reference;

namespace MegaNet.Verify.Tests;

/// <summary>
/// The reference rule with rules 3 and 4 left out, as a backend that lost them would judge: y is read mod p, x = 0 takes
/// either sign bit, and small-order points pass. Items it accepts and the reference refuses are refused by the decoding
/// rules alone, so a backend that breaks either of them accepts them.
/// </summary>
internal sealed class WithoutDecodingRules : BatchVerifierBase
{
    public override string Name => "reference-without-rules-3-and-4";

    public override string Description => "the reference with loose decoding and no small-order check (a test oracle)";

    public static bool Verify(ReadOnlySpan<byte> publicKey, ReadOnlySpan<byte> signature, ReadOnlySpan<byte> message)
    {
        if (publicKey.Length != 32 || signature.Length != 64)
        {
            return false;
        }

        BigInteger s = FromLittleEndian(signature[32..]);
        return s < L && TryDecodeLoosely(publicKey, out Point a) && TryDecodeLoosely(signature[..32], out Point r)
            && CofactoredEquationHolds(s, r, ComputeK(signature[..32], publicKey, message), a);
    }

    /// <summary>Decodes y mod p, and x = 0 whatever the sign bit says: the point a non-canonical encoding names.</summary>
    public static bool TryDecodeLoosely(ReadOnlySpan<byte> encoding, out Point point)
    {
        byte[] canonical = encoding.ToArray();
        byte sign = (byte)(canonical[31] & 0x80);
        canonical[31] &= 0x7F;
        canonical = ToLittleEndian(FromLittleEndian(canonical) % P);
        canonical[31] |= sign;
        if (TryDecode(canonical, out point))
        {
            return true;
        }

        // Refused either for want of a square root or as −0; only the latter decodes without the sign.
        canonical[31] &= 0x7F;
        return TryDecode(canonical, out point) && point.X.IsZero;
    }

    protected override void VerifyCore(SignatureBatch batch, int start, int count, Span<bool> verdicts)
    {
        for (int i = 0; i < count; i++)
        {
            verdicts[i] = Verify(batch.GetPublicKey(start + i), batch.GetSignature(start + i), batch.GetMessage(start + i));
        }
    }
}
