using System.Runtime.CompilerServices;
namespace MegaNet.Verify.Simd.Curve;

/// <summary>The Ed25519 base point B (RFC 8032), decoded once.</summary>
internal static class BasePoint
{
    /// <summary>B prepared for mixed addition.</summary>
    public static readonly AffineNielsPoint Niels = Decode();

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static AffineNielsPoint Decode()
    {
        byte[] encoding = Convert.FromHexString("5866666666666666666666666666666666666666666666666666666666666666");
        if (!EdwardsPoint.TryDecode(encoding, out EdwardsPoint b))
        {
            throw new InvalidOperationException("The base point failed to decode.");
        }

        return AffineNielsPoint.FromAffine(b);
    }
}
