namespace MegaNet.Core.Ed25519;

/// <summary>Fixed encodings shared by the backends and tests.</summary>
public static class Ed25519Constants
{
    /// <summary>L = 2^252 + 27742317777372353535851937790883648493, little-endian.</summary>
    public static ReadOnlySpan<byte> GroupOrder =>
    [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10,
    ];

    /// <summary>True if the 32-byte little-endian scalar is below L (S must be, under the rule).</summary>
    public static bool IsCanonicalScalar(ReadOnlySpan<byte> s)
    {
        ReadOnlySpan<byte> l = GroupOrder;
        for (int i = 31; i >= 0; i--)
        {
            if (s[i] != l[i])
            {
                return s[i] < l[i];
            }
        }

        return false;
    }
}
