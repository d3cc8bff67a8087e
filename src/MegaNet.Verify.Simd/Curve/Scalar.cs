using System.Buffers.Binary;
using System.Numerics;
using System.Runtime.CompilerServices;

namespace MegaNet.Verify.Simd.Curve;

/// <summary>A 256-bit little-endian integer in four 64-bit limbs; scalars mod L are kept fully reduced (&lt; L).</summary>
internal struct Scalar256
{
    public ulong S0, S1, S2, S3;

    public static Scalar256 FromBytes(ReadOnlySpan<byte> s) => new()
    {
        S0 = BinaryPrimitives.ReadUInt64LittleEndian(s),
        S1 = BinaryPrimitives.ReadUInt64LittleEndian(s[8..]),
        S2 = BinaryPrimitives.ReadUInt64LittleEndian(s[16..]),
        S3 = BinaryPrimitives.ReadUInt64LittleEndian(s[24..]),
    };

    public readonly ulong this[int i] => i switch { 0 => S0, 1 => S1, 2 => S2, _ => S3 };

    public readonly bool IsZero => (S0 | S1 | S2 | S3) == 0;
}

/// <summary>Arithmetic mod L = 2^252 + c, c = 27742317777372353535851937790883648493, on 64-bit limbs.</summary>
internal static class ScalarMath
{
    // c = L − 2^252 (125 bits).
    private const ulong C0 = 0x5812631a5cf5d3edUL;
    private const ulong C1 = 0x14def9dea2f79cd6UL;
    private const ulong Mask60 = (1UL << 60) - 1;

    /// <summary>L in five limbs (the fifth, zero, for sums past 2^256).</summary>
    internal static ReadOnlySpan<ulong> LLimbs => [C0, C1, 0, 1UL << 60, 0];

    /// <summary>x mod L for a 512-bit little-endian <paramref name="x"/> (8 limbs).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static Scalar256 Reduce(ReadOnlySpan<ulong> x)
    {
        // 2^252 ≡ −c (mod L). Write x = a0 + b0·2^252 ⇒ x ≡ a0 − b0·c; fold b0·c the same way twice more:
        // x ≡ a0 − a1 + a2 − b2·c with a0, a1, a2 < 2^252 and b2·c < 2^131, then add 2L to stay non-negative.
        Span<ulong> b = stackalloc ulong[5];
        Span<ulong> t = stackalloc ulong[8];
        Span<ulong> r = stackalloc ulong[5];
        Span<ulong> cLimbs = [C0, C1];

        // a0 and b0.
        r[0] = x[0];
        r[1] = x[1];
        r[2] = x[2];
        r[3] = x[3] & Mask60;
        r[4] = 0;
        ShiftRight252(x, b);                          // b0 < 2^260
        Multiply(b, cLimbs, t[..7]);                  // t1 = b0·c < 2^385
        Span<ulong> a1 = stackalloc ulong[5];
        Low252(t[..7], a1);
        ShiftRight252(t[..7], b);                     // b1 < 2^133
        t.Clear();
        Multiply(b[..3], cLimbs, t[..5]);             // t2 = b1·c < 2^258
        Span<ulong> a2 = stackalloc ulong[5];
        Low252(t[..5], a2);
        ulong b2 = (t[3] >> 60) | (t[4] << 4);        // < 2^6
        Span<ulong> t3 = stackalloc ulong[5];
        UInt128 p0 = Math.BigMul(b2, C0);
        UInt128 p1 = Math.BigMul(b2, C1) + (ulong)(p0 >> 64);
        t3[0] = (ulong)p0;
        t3[1] = (ulong)p1;
        t3[2] = (ulong)(p1 >> 64);

        // r = a0 + a2 + 2L − a1 − t3 (all in 5 limbs; the result is positive and < 6L).
        AddInPlace(r, a2);
        AddInPlace(r, LLimbs);
        AddInPlace(r, LLimbs);
        SubInPlace(r, a1);
        SubInPlace(r, t3);
        while (!LessThan(r, LLimbs))
        {
            SubInPlace(r, LLimbs);
        }

        return new Scalar256 { S0 = r[0], S1 = r[1], S2 = r[2], S3 = r[3] };
    }

    /// <summary>(L − a) mod L for a fully reduced a.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static Scalar256 NegateMod(in Scalar256 a)
    {
        if (a.IsZero)
        {
            return a;
        }

        Span<ulong> r = stackalloc ulong[5];
        LLimbs.CopyTo(r);
        SubInPlace(r, [a.S0, a.S1, a.S2, a.S3]);
        return new Scalar256 { S0 = r[0], S1 = r[1], S2 = r[2], S3 = r[3] };
    }

    /// <summary>(a · b) mod L where a has up to 4 limbs.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static Scalar256 MulMod(in Scalar256 a, in Scalar256 b)
    {
        Span<ulong> x = stackalloc ulong[8];
        MulAdd(a, b, x);
        return Reduce(x);
    }

    /// <summary>acc += a · b (full 512-bit product, no reduction); acc has 8 limbs and must not overflow.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void MulAdd(in Scalar256 a, in Scalar256 b, Span<ulong> acc)
    {
        Span<ulong> av = [a.S0, a.S1, a.S2, a.S3];
        Span<ulong> bv = [b.S0, b.S1, b.S2, b.S3];
        Span<ulong> prod = stackalloc ulong[8];
        Multiply(av, bv, prod);
        AddInPlace(acc, prod);
    }

    /// <summary>Reads 64 little-endian bytes (a SHA-512 digest) and reduces mod L.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static Scalar256 ReduceBytes(ReadOnlySpan<byte> digest64)
    {
        Span<ulong> x = stackalloc ulong[8];
        for (int i = 0; i < 8; i++)
        {
            x[i] = BinaryPrimitives.ReadUInt64LittleEndian(digest64[(8 * i)..]);
        }

        return Reduce(x);
    }

    /// <summary>
    /// Signed radix-2^w digits d_j ∈ [−2^(w−1), 2^(w−1)] with s = Σ d_j·2^(w·j); fills <paramref name="digits"/>.
    /// s must be &lt; 2^(w·digits.Length − 1).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void SignedDigits(in Scalar256 s, int w, Span<short> digits)
    {
        int windows = digits.Length;
        int carry = 0;
        int half = 1 << (w - 1);
        int mask = (1 << w) - 1;
        for (int j = 0; j < windows; j++)
        {
            int bit = j * w;
            int value = bit < 256 ? (int)(ExtractBits(s, bit, w) & (uint)mask) : 0;
            value += carry;
            // Digits in [−half, half]: a value above half borrows 2^w from the next window.
            carry = value > half ? 1 : 0;
            digits[j] = (short)(value - (carry << w));
        }

        System.Diagnostics.Debug.Assert(carry == 0, "scalar too large for the window count");
    }

    /// <summary>Length of a <see cref="NonAdjacentForm"/> digit array: a scalar &lt; 2^253 has no digit above bit 253.</summary>
    public const int NafLength = 256;

    /// <summary>
    /// Width-<paramref name="w"/> non-adjacent form: digits d_j, each 0 or odd with |d_j| &lt; 2^(w−1), at least w − 1 zeros
    /// after every non-zero one, and s = Σ d_j·2^j. About one digit in w + 1 is non-zero, against one in w for
    /// <see cref="SignedDigits"/>, and only odd multiples need a table. s must be &lt; 2^253; 2 ≤ w ≤ 8.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void NonAdjacentForm(in Scalar256 s, int w, Span<sbyte> naf)
    {
        naf[..NafLength].Clear();
        int width = 1 << w;
        ulong mask = (ulong)width - 1;
        int carry = 0;
        int pos = 0;
        // Above the scalar's top bit only a pending carry can still place a digit: half-length scalars (the batch
        // equation's zᵢ, a split single check's) stop half way.
        int bits = s.S3 != 0 ? 256 - BitOperations.LeadingZeroCount(s.S3) :
            s.S2 != 0 ? 192 - BitOperations.LeadingZeroCount(s.S2) :
            s.S1 != 0 ? 128 - BitOperations.LeadingZeroCount(s.S1) :
            64 - BitOperations.LeadingZeroCount(s.S0);
        while (pos < NafLength && (pos < bits || carry != 0))
        {
            // The w bits from pos, plus the carry a negative digit below left at pos.
            int window = carry + (int)(ExtractBits(s, pos, w) & mask);
            if ((window & 1) == 0)
            {
                // No digit here. The carry stays: it is 1 only when it met a set bit, and then it moves up with pos.
                pos++;
                continue;
            }

            if (window < width / 2)
            {
                carry = 0;
                naf[pos] = (sbyte)window;
            }
            else
            {
                carry = 1;
                naf[pos] = (sbyte)(window - width);
            }

            pos += w;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong ExtractBits(in Scalar256 s, int bit, int count)
    {
        int limb = bit >> 6;
        int shift = bit & 63;
        ulong lo = s[limb] >> shift;
        if (shift + count > 64 && limb < 3)
        {
            lo |= s[limb + 1] << (64 - shift);
        }

        return lo;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ShiftRight252(ReadOnlySpan<ulong> x, Span<ulong> result)
    {
        result.Clear();
        for (int i = 0; i < result.Length; i++)
        {
            int lo = i + 3, hi = i + 4;
            ulong v = lo < x.Length ? x[lo] >> 60 : 0;
            if (hi < x.Length)
            {
                v |= x[hi] << 4;
            }

            result[i] = v;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Low252(ReadOnlySpan<ulong> x, Span<ulong> result)
    {
        result.Clear();
        result[0] = x[0];
        result[1] = x[1];
        result[2] = x[2];
        result[3] = x[3] & Mask60;
    }

    /// <summary>r = a · b (schoolbook); r.Length ≥ a.Length + b.Length is cleared first.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Multiply(ReadOnlySpan<ulong> a, ReadOnlySpan<ulong> b, Span<ulong> r)
    {
        r.Clear();
        for (int i = 0; i < a.Length; i++)
        {
            ulong carry = 0;
            for (int j = 0; j < b.Length; j++)
            {
                UInt128 p = Math.BigMul(a[i], b[j]) + r[i + j] + carry;
                r[i + j] = (ulong)p;
                carry = (ulong)(p >> 64);
            }

            if (i + b.Length < r.Length)
            {
                r[i + b.Length] = carry;
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void AddInPlace(Span<ulong> r, ReadOnlySpan<ulong> a)
    {
        ulong carry = 0;
        for (int i = 0; i < r.Length; i++)
        {
            ulong ai = i < a.Length ? a[i] : 0;
            UInt128 s = (UInt128)r[i] + ai + carry;
            r[i] = (ulong)s;
            carry = (ulong)(s >> 64);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void SubInPlace(Span<ulong> r, ReadOnlySpan<ulong> a)
    {
        ulong borrow = 0;
        for (int i = 0; i < r.Length; i++)
        {
            ulong ai = i < a.Length ? a[i] : 0;
            ulong d = r[i] - ai - borrow;
            borrow = (r[i] < ai || (r[i] - ai) < borrow) ? 1UL : 0UL;
            r[i] = d;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static bool LessThan(ReadOnlySpan<ulong> a, ReadOnlySpan<ulong> b)
    {
        for (int i = a.Length - 1; i >= 0; i--)
        {
            if (a[i] != b[i])
            {
                return a[i] < b[i];
            }
        }

        return false;
    }
}
