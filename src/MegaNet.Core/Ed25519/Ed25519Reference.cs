using System.Numerics;
using System.Security.Cryptography;

namespace MegaNet.Core.Ed25519;

/// <summary>
/// The MegaNet verification rule in code: a deliberately plain implementation over <see cref="BigInteger"/> that
/// follows docs/verification.md line by line. It is the specification every fast backend is tested against, not a
/// production path (it is slow and not constant-time; verification handles only public data).
/// </summary>
public static class Ed25519Reference
{
    /// <summary>The field prime p = 2^255 − 19.</summary>
    public static readonly BigInteger P = BigInteger.Pow(2, 255) - 19;

    /// <summary>The prime order of the base point, L = 2^252 + 27742317777372353535851937790883648493.</summary>
    public static readonly BigInteger L = BigInteger.Pow(2, 252) + BigInteger.Parse("27742317777372353535851937790883648493");

    /// <summary>The curve constant d = −121665 / 121666 mod p.</summary>
    public static readonly BigInteger D = Mod(-121665 * Inverse(121666));

    /// <summary>sqrt(−1) mod p = 2^((p − 1) / 4).</summary>
    public static readonly BigInteger SqrtM1 = BigInteger.ModPow(2, (P - 1) / 4, P);

    /// <summary>The base point B (y = 4/5, x even).</summary>
    public static readonly Point B = DecodeBase();

    /// <summary>The neutral element.</summary>
    public static readonly Point Identity = new(0, 1, 1, 0);

    /// <summary>A point in extended twisted Edwards coordinates (X : Y : Z : T), x = X/Z, y = Y/Z, xy = T/Z.</summary>
    public readonly record struct Point(BigInteger X, BigInteger Y, BigInteger Z, BigInteger T);

    /// <summary>Verifies one signature under the MegaNet rule (cofactored, strict).</summary>
    public static bool Verify(ReadOnlySpan<byte> publicKey, ReadOnlySpan<byte> signature, ReadOnlySpan<byte> message)
    {
        // Rule 1: sizes.
        if (publicKey.Length != 32 || signature.Length != 64)
        {
            return false;
        }

        ReadOnlySpan<byte> rBytes = signature[..32];
        ReadOnlySpan<byte> sBytes = signature[32..];

        // Rule 2: S < L (no reduction of S, ever).
        BigInteger s = FromLittleEndian(sBytes);
        if (s >= L)
        {
            return false;
        }

        // Rule 3: A and R are canonical encodings of curve points.
        if (!TryDecode(publicKey, out Point a) || !TryDecode(rBytes, out Point r))
        {
            return false;
        }

        // Rule 4: neither A nor R has small order.
        if (IsSmallOrder(a) || IsSmallOrder(r))
        {
            return false;
        }

        // Rule 5: k = SHA-512(R ‖ A ‖ M) mod L over the bytes as given.
        BigInteger k = ComputeK(rBytes, publicKey, message);

        // Rule 6.
        return CofactoredEquationHolds(s, r, k, a);
    }

    /// <summary>Rule 6 alone, on decoded points: whether [8]([S]B − R − [k]A) is the identity.</summary>
    public static bool CofactoredEquationHolds(BigInteger s, Point r, BigInteger k, Point a)
    {
        // Written as the rule reads (negating k mod L instead would give the same verdict: the difference is small-order
        // and [8] removes it; see docs/verification.md).
        Point sum = Add(Add(ScalarMultiply(s, B), Negate(r)), Negate(ScalarMultiply(k, a)));
        return IsIdentity(MultiplyByCofactor(sum));
    }

    /// <summary>k = SHA-512(R ‖ A ‖ M) interpreted little-endian, reduced mod L.</summary>
    public static BigInteger ComputeK(ReadOnlySpan<byte> r, ReadOnlySpan<byte> a, ReadOnlySpan<byte> message)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA512);
        hash.AppendData(r);
        hash.AppendData(a);
        hash.AppendData(message);
        Span<byte> digest = stackalloc byte[64];
        hash.GetHashAndReset(digest);
        return FromLittleEndian(digest) % L;
    }

    /// <summary>Decodes a 32-byte point encoding strictly: y &lt; p, x recoverable, and not x = 0 with the sign bit set.</summary>
    public static bool TryDecode(ReadOnlySpan<byte> encoding, out Point point)
    {
        point = Identity;
        if (encoding.Length != 32)
        {
            return false;
        }

        Span<byte> yBytes = stackalloc byte[32];
        encoding.CopyTo(yBytes);
        int sign = yBytes[31] >> 7;
        yBytes[31] &= 0x7F;
        BigInteger y = FromLittleEndian(yBytes);
        if (y >= P)
        {
            return false;
        }

        // x^2 = (y^2 − 1) / (d y^2 + 1)
        BigInteger u = Mod(y * y - 1);
        BigInteger v = Mod(D * y * y + 1);
        BigInteger x = Mod(u * BigInteger.ModPow(v, 3, P) * BigInteger.ModPow(Mod(u * BigInteger.ModPow(v, 7, P)), (P - 5) / 8, P));
        BigInteger vx2 = Mod(v * x * x);
        if (vx2 == u)
        {
            // x is a root.
        }
        else if (vx2 == Mod(-u))
        {
            x = Mod(x * SqrtM1);
        }
        else
        {
            return false;
        }

        if (x.IsZero && sign == 1)
        {
            return false;
        }

        if ((int)(x % 2) != sign)
        {
            x = P - x;
        }

        point = new Point(x, y, 1, Mod(x * y));
        return true;
    }

    /// <summary>Encodes a point as 32 bytes (y with the sign of x in the top bit).</summary>
    public static byte[] Encode(Point p)
    {
        BigInteger zInv = Inverse(p.Z);
        BigInteger x = Mod(p.X * zInv);
        BigInteger y = Mod(p.Y * zInv);
        byte[] result = ToLittleEndian(y);
        if (!x.IsEven)
        {
            result[31] |= 0x80;
        }

        return result;
    }

    /// <summary>True if [8]P is the identity (P is one of the eight small-order points).</summary>
    public static bool IsSmallOrder(Point p) => IsIdentity(MultiplyByCofactor(p));

    /// <summary>True if P is the neutral element.</summary>
    public static bool IsIdentity(Point p) => Mod(p.X).IsZero && Mod(p.Y - p.Z).IsZero;

    /// <summary>P + Q (complete addition for a = −1).</summary>
    public static Point Add(Point p, Point q)
    {
        BigInteger a = Mod((p.Y - p.X) * (q.Y - q.X));
        BigInteger b = Mod((p.Y + p.X) * (q.Y + q.X));
        BigInteger c = Mod(p.T * 2 * D * q.T);
        BigInteger d = Mod(p.Z * 2 * q.Z);
        BigInteger e = b - a, f = d - c, g = d + c, h = b + a;
        return new Point(Mod(e * f), Mod(g * h), Mod(f * g), Mod(e * h));
    }

    /// <summary>−P.</summary>
    public static Point Negate(Point p) => new(Mod(-p.X), p.Y, p.Z, Mod(-p.T));

    /// <summary>[n]P by double-and-add over the bits of n (n ≥ 0).</summary>
    public static Point ScalarMultiply(BigInteger n, Point p)
    {
        if (n.Sign < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(n), "Scalar must be non-negative.");
        }

        Point result = Identity;
        Point addend = p;
        while (!n.IsZero)
        {
            if (!n.IsEven)
            {
                result = Add(result, addend);
            }

            addend = Add(addend, addend);
            n >>= 1;
        }

        return result;
    }

    /// <summary>[8]P.</summary>
    public static Point MultiplyByCofactor(Point p)
    {
        Point r = Add(p, p);
        r = Add(r, r);
        return Add(r, r);
    }

    /// <summary>Reads an unsigned little-endian integer.</summary>
    public static BigInteger FromLittleEndian(ReadOnlySpan<byte> bytes) => new(bytes, isUnsigned: true, isBigEndian: false);

    /// <summary>Writes a non-negative integer below 2^256 as 32 little-endian bytes.</summary>
    public static byte[] ToLittleEndian(BigInteger value)
    {
        byte[] result = new byte[32];
        if (!value.TryWriteBytes(result, out _, isUnsigned: true, isBigEndian: false))
        {
            throw new ArgumentOutOfRangeException(nameof(value), "Value does not fit in 32 bytes.");
        }

        return result;
    }

    /// <summary>x mod p in [0, p).</summary>
    public static BigInteger Mod(BigInteger x)
    {
        BigInteger r = x % P;
        return r.Sign < 0 ? r + P : r;
    }

    /// <summary>x^−1 mod p.</summary>
    public static BigInteger Inverse(BigInteger x) => BigInteger.ModPow(Mod(x), P - 2, P);

    private static Point DecodeBase()
    {
        BigInteger y = Mod(4 * Inverse(5));
        if (!TryDecode(ToLittleEndian(y), out Point b))
        {
            throw new InvalidOperationException("Base point failed to decode.");
        }

        return b;
    }
}
