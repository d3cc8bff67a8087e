using System.Runtime.CompilerServices;

namespace MegaNet.Verify.Gpu.Kernels;

/// <summary>
/// GF(2^255 − 19) in ten signed limbs of radix 2^25.5 (26, 25, 26, … bits), the representation that needs no
/// 64×64→128 multiply: every product is a 32×32-bit value held in 64 bits. ILGPU has no widening multiply or
/// <c>UInt128</c> in kernels, so this is what runs on the GPU, on ILGPU's CPU accelerator, and on the host.
/// </summary>
/// <remarks>
/// Bounds: after <see cref="Carry"/> |limb| ≤ 2^25 (odd limbs 2^24) plus a small excess, so sums and differences of
/// up to four carried elements stay within 2^27. <see cref="Mul"/> and <see cref="Square"/> accept such
/// inputs: an operand scaled by at most 4 stays within 32 bits (2^29), and each 64-bit sum is at most
/// (1 + 19·14)·2^54 &lt; 2^63. The point formulas of <see cref="Ed25519Kernel"/> never feed a multiply more than four.
/// </remarks>
internal struct Fe
{
    public int V0, V1, V2, V3, V4, V5, V6, V7, V8, V9;

    public static Fe Zero() => default;

    /// <summary>
    /// a·b exactly. ILGPU 1.5.3 has no widening multiply: this becomes <c>cvt.s64.s32</c> of each operand and a
    /// <c>mul.lo.s64</c>, which <see cref="PtxWidening"/> turns into <c>mul.wide.s32</c> on CUDA.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static long Wide(int a, int b) => (long)a * b;

    public static Fe One()
    {
        Fe r = default;
        r.V0 = 1;
        return r;
    }

    public static Fe Add(Fe f, Fe g)
    {
        Fe h;
        h.V0 = f.V0 + g.V0;
        h.V1 = f.V1 + g.V1;
        h.V2 = f.V2 + g.V2;
        h.V3 = f.V3 + g.V3;
        h.V4 = f.V4 + g.V4;
        h.V5 = f.V5 + g.V5;
        h.V6 = f.V6 + g.V6;
        h.V7 = f.V7 + g.V7;
        h.V8 = f.V8 + g.V8;
        h.V9 = f.V9 + g.V9;
        return h;
    }

    public static Fe Sub(Fe f, Fe g)
    {
        Fe h;
        h.V0 = f.V0 - g.V0;
        h.V1 = f.V1 - g.V1;
        h.V2 = f.V2 - g.V2;
        h.V3 = f.V3 - g.V3;
        h.V4 = f.V4 - g.V4;
        h.V5 = f.V5 - g.V5;
        h.V6 = f.V6 - g.V6;
        h.V7 = f.V7 - g.V7;
        h.V8 = f.V8 - g.V8;
        h.V9 = f.V9 - g.V9;
        return h;
    }

    public static Fe Neg(Fe f) => Sub(Zero(), f);

    /// <summary>f·g. Every product is 32×32 → 64 bits through <see cref="Wide"/>; the factor 19 of the wrapped
    /// terms multiplies their 64-bit sum, so no operand leaves 32 bits (19·2^27 would not fit).</summary>
    public static Fe Mul(Fe f, Fe g)
    {
        int f0 = f.V0, f1 = f.V1, f2 = f.V2, f3 = f.V3, f4 = f.V4, f5 = f.V5, f6 = f.V6, f7 = f.V7, f8 = f.V8, f9 = f.V9;
        int g0 = g.V0, g1 = g.V1, g2 = g.V2, g3 = g.V3, g4 = g.V4, g5 = g.V5, g6 = g.V6, g7 = g.V7, g8 = g.V8, g9 = g.V9;
        int f1_2 = 2 * f1;
        int f3_2 = 2 * f3;
        int f5_2 = 2 * f5;
        int f7_2 = 2 * f7;
        int f9_2 = 2 * f9;
        long h0 = Wide(f0, g0) + 19 * (Wide(f1_2, g9) + Wide(f2, g8) + Wide(f3_2, g7) + Wide(f4, g6) + Wide(f5_2, g5) + Wide(f6, g4) + Wide(f7_2, g3) + Wide(f8, g2) + Wide(f9_2, g1));
        long h1 = Wide(f0, g1) + Wide(f1, g0) + 19 * (Wide(f2, g9) + Wide(f3, g8) + Wide(f4, g7) + Wide(f5, g6) + Wide(f6, g5) + Wide(f7, g4) + Wide(f8, g3) + Wide(f9, g2));
        long h2 = Wide(f0, g2) + Wide(f1_2, g1) + Wide(f2, g0) + 19 * (Wide(f3_2, g9) + Wide(f4, g8) + Wide(f5_2, g7) + Wide(f6, g6) + Wide(f7_2, g5) + Wide(f8, g4) + Wide(f9_2, g3));
        long h3 = Wide(f0, g3) + Wide(f1, g2) + Wide(f2, g1) + Wide(f3, g0) + 19 * (Wide(f4, g9) + Wide(f5, g8) + Wide(f6, g7) + Wide(f7, g6) + Wide(f8, g5) + Wide(f9, g4));
        long h4 = Wide(f0, g4) + Wide(f1_2, g3) + Wide(f2, g2) + Wide(f3_2, g1) + Wide(f4, g0) + 19 * (Wide(f5_2, g9) + Wide(f6, g8) + Wide(f7_2, g7) + Wide(f8, g6) + Wide(f9_2, g5));
        long h5 = Wide(f0, g5) + Wide(f1, g4) + Wide(f2, g3) + Wide(f3, g2) + Wide(f4, g1) + Wide(f5, g0) + 19 * (Wide(f6, g9) + Wide(f7, g8) + Wide(f8, g7) + Wide(f9, g6));
        long h6 = Wide(f0, g6) + Wide(f1_2, g5) + Wide(f2, g4) + Wide(f3_2, g3) + Wide(f4, g2) + Wide(f5_2, g1) + Wide(f6, g0) + 19 * (Wide(f7_2, g9) + Wide(f8, g8) + Wide(f9_2, g7));
        long h7 = Wide(f0, g7) + Wide(f1, g6) + Wide(f2, g5) + Wide(f3, g4) + Wide(f4, g3) + Wide(f5, g2) + Wide(f6, g1) + Wide(f7, g0) + 19 * (Wide(f8, g9) + Wide(f9, g8));
        long h8 = Wide(f0, g8) + Wide(f1_2, g7) + Wide(f2, g6) + Wide(f3_2, g5) + Wide(f4, g4) + Wide(f5_2, g3) + Wide(f6, g2) + Wide(f7_2, g1) + Wide(f8, g0) + 19 * (Wide(f9_2, g9));
        long h9 = Wide(f0, g9) + Wide(f1, g8) + Wide(f2, g7) + Wide(f3, g6) + Wide(f4, g5) + Wide(f5, g4) + Wide(f6, g3) + Wide(f7, g2) + Wide(f8, g1) + Wide(f9, g0);
        return Carry(h0, h1, h2, h3, h4, h5, h6, h7, h8, h9);
    }

    /// <summary>f² with the 55 distinct products of the symmetric square (doublings folded into an operand).</summary>
    public static Fe Square(Fe f)
    {
        int f0 = f.V0, f1 = f.V1, f2 = f.V2, f3 = f.V3, f4 = f.V4, f5 = f.V5, f6 = f.V6, f7 = f.V7, f8 = f.V8, f9 = f.V9;
        int f0_2 = 2 * f0;
        int f1_2 = 2 * f1;
        int f1_4 = 4 * f1;
        int f2_2 = 2 * f2;
        int f3_2 = 2 * f3;
        int f3_4 = 4 * f3;
        int f4_2 = 2 * f4;
        int f5_2 = 2 * f5;
        int f5_4 = 4 * f5;
        int f6_2 = 2 * f6;
        int f7_2 = 2 * f7;
        int f7_4 = 4 * f7;
        int f8_2 = 2 * f8;
        int f9_2 = 2 * f9;
        long h0 = Wide(f0, f0) + 19 * (Wide(f1_4, f9) + Wide(f2_2, f8) + Wide(f3_4, f7) + Wide(f4_2, f6) + Wide(f5_2, f5));
        long h1 = Wide(f0_2, f1) + 19 * (Wide(f2_2, f9) + Wide(f3_2, f8) + Wide(f4_2, f7) + Wide(f5_2, f6));
        long h2 = Wide(f0_2, f2) + Wide(f1_2, f1) + 19 * (Wide(f3_4, f9) + Wide(f4_2, f8) + Wide(f5_4, f7) + Wide(f6, f6));
        long h3 = Wide(f0_2, f3) + Wide(f1_2, f2) + 19 * (Wide(f4_2, f9) + Wide(f5_2, f8) + Wide(f6_2, f7));
        long h4 = Wide(f0_2, f4) + Wide(f1_4, f3) + Wide(f2, f2) + 19 * (Wide(f5_4, f9) + Wide(f6_2, f8) + Wide(f7_2, f7));
        long h5 = Wide(f0_2, f5) + Wide(f1_2, f4) + Wide(f2_2, f3) + 19 * (Wide(f6_2, f9) + Wide(f7_2, f8));
        long h6 = Wide(f0_2, f6) + Wide(f1_4, f5) + Wide(f2_2, f4) + Wide(f3_2, f3) + 19 * (Wide(f7_4, f9) + Wide(f8, f8));
        long h7 = Wide(f0_2, f7) + Wide(f1_2, f6) + Wide(f2_2, f5) + Wide(f3_2, f4) + 19 * (Wide(f8_2, f9));
        long h8 = Wide(f0_2, f8) + Wide(f1_4, f7) + Wide(f2_2, f6) + Wide(f3_4, f5) + Wide(f4, f4) + 19 * (Wide(f9_2, f9));
        long h9 = Wide(f0_2, f9) + Wide(f1_2, f8) + Wide(f2_2, f7) + Wide(f3_2, f6) + Wide(f4_2, f5);
        return Carry(h0, h1, h2, h3, h4, h5, h6, h7, h8, h9);
    }

    public static Fe Carry(long h0, long h1, long h2, long h3, long h4, long h5, long h6, long h7, long h8, long h9)
    {
        long c;
        c = (h0 + (1L << 25)) >> 26; h1 += c; h0 -= c << 26;
        c = (h4 + (1L << 25)) >> 26; h5 += c; h4 -= c << 26;
        c = (h1 + (1L << 24)) >> 25; h2 += c; h1 -= c << 25;
        c = (h5 + (1L << 24)) >> 25; h6 += c; h5 -= c << 25;
        c = (h2 + (1L << 25)) >> 26; h3 += c; h2 -= c << 26;
        c = (h6 + (1L << 25)) >> 26; h7 += c; h6 -= c << 26;
        c = (h3 + (1L << 24)) >> 25; h4 += c; h3 -= c << 25;
        c = (h7 + (1L << 24)) >> 25; h8 += c; h7 -= c << 25;
        c = (h4 + (1L << 25)) >> 26; h5 += c; h4 -= c << 26;
        c = (h8 + (1L << 25)) >> 26; h9 += c; h8 -= c << 26;
        c = (h9 + (1L << 24)) >> 25; h0 += c * 19; h9 -= c << 25;
        c = (h0 + (1L << 25)) >> 26; h1 += c; h0 -= c << 26;
        Fe r;
        r.V0 = (int)h0;
        r.V1 = (int)h1;
        r.V2 = (int)h2;
        r.V3 = (int)h3;
        r.V4 = (int)h4;
        r.V5 = (int)h5;
        r.V6 = (int)h6;
        r.V7 = (int)h7;
        r.V8 = (int)h8;
        r.V9 = (int)h9;
        return r;
    }

    /// <summary>Reduces sums of a few additions back into carried form.</summary>
    public static Fe Reduce(Fe f) => Carry(f.V0, f.V1, f.V2, f.V3, f.V4, f.V5, f.V6, f.V7, f.V8, f.V9);

    /// <summary>Reads 32 little-endian bytes at <paramref name="o"/>, ignoring the top bit.</summary>
    public static Fe FromBytes(ILGPU.ArrayView<byte> s, int o)
    {
        long h0 = Load4(s, o);
        long h1 = Load3(s, o + 4) << 6;
        long h2 = Load3(s, o + 7) << 5;
        long h3 = Load3(s, o + 10) << 3;
        long h4 = Load3(s, o + 13) << 2;
        long h5 = Load4(s, o + 16);
        long h6 = Load3(s, o + 20) << 7;
        long h7 = Load3(s, o + 23) << 5;
        long h8 = Load3(s, o + 26) << 4;
        long h9 = (Load3(s, o + 29) & 8388607) << 2;
        return Carry(h0, h1, h2, h3, h4, h5, h6, h7, h8, h9);
    }

    /// <summary>Ten limbs at <paramref name="o"/> (a table written by <see cref="Store"/>).</summary>
    public static Fe Load(ILGPU.ArrayView<int> s, int o)
    {
        Fe r;
        r.V0 = s[o];
        r.V1 = s[o + 1];
        r.V2 = s[o + 2];
        r.V3 = s[o + 3];
        r.V4 = s[o + 4];
        r.V5 = s[o + 5];
        r.V6 = s[o + 6];
        r.V7 = s[o + 7];
        r.V8 = s[o + 8];
        r.V9 = s[o + 9];
        return r;
    }

    /// <summary>Host-side twin of <see cref="Load(ILGPU.ArrayView{int}, int)"/>.</summary>
    public static Fe Load(ReadOnlySpan<int> s, int o)
    {
        Fe r;
        r.V0 = s[o];
        r.V1 = s[o + 1];
        r.V2 = s[o + 2];
        r.V3 = s[o + 3];
        r.V4 = s[o + 4];
        r.V5 = s[o + 5];
        r.V6 = s[o + 6];
        r.V7 = s[o + 7];
        r.V8 = s[o + 8];
        r.V9 = s[o + 9];
        return r;
    }

    /// <summary>Writes the ten limbs at <paramref name="o"/> (host side).</summary>
    public static void Store(Fe f, Span<int> d, int o)
    {
        d[o] = f.V0;
        d[o + 1] = f.V1;
        d[o + 2] = f.V2;
        d[o + 3] = f.V3;
        d[o + 4] = f.V4;
        d[o + 5] = f.V5;
        d[o + 6] = f.V6;
        d[o + 7] = f.V7;
        d[o + 8] = f.V8;
        d[o + 9] = f.V9;
    }

    /// <summary>Host-side twin of <see cref="FromBytes(ILGPU.ArrayView{byte}, int)"/> for constants.</summary>
    public static Fe FromBytes(ReadOnlySpan<byte> s)
    {
        static long L3(ReadOnlySpan<byte> b, int o) => b[o] | ((long)b[o + 1] << 8) | ((long)b[o + 2] << 16);
        static long L4(ReadOnlySpan<byte> b, int o) => L3(b, o) | ((long)b[o + 3] << 24);
        return Carry(L4(s, 0), L3(s, 4) << 6, L3(s, 7) << 5, L3(s, 10) << 3, L3(s, 13) << 2, L4(s, 16), L3(s, 20) << 7,
            L3(s, 23) << 5, L3(s, 26) << 4, (L3(s, 29) & 8388607) << 2);
    }

    /// <summary>The unique limbs of the value mod p (each limb in [0, 2^26) or [0, 2^25)).</summary>
    public static Fe Canonical(Fe f)
    {
        f = Reduce(f);
        long h0 = f.V0, h1 = f.V1, h2 = f.V2, h3 = f.V3, h4 = f.V4, h5 = f.V5, h6 = f.V6, h7 = f.V7, h8 = f.V8, h9 = f.V9;
        long q = (19 * h9 + (1L << 24)) >> 25;
        q = (h0 + q) >> 26;
        q = (h1 + q) >> 25;
        q = (h2 + q) >> 26;
        q = (h3 + q) >> 25;
        q = (h4 + q) >> 26;
        q = (h5 + q) >> 25;
        q = (h6 + q) >> 26;
        q = (h7 + q) >> 25;
        q = (h8 + q) >> 26;
        q = (h9 + q) >> 25;
        h0 += 19 * q;
        long c;
        c = h0 >> 26; h1 += c; h0 -= c << 26;
        c = h1 >> 25; h2 += c; h1 -= c << 25;
        c = h2 >> 26; h3 += c; h2 -= c << 26;
        c = h3 >> 25; h4 += c; h3 -= c << 25;
        c = h4 >> 26; h5 += c; h4 -= c << 26;
        c = h5 >> 25; h6 += c; h5 -= c << 25;
        c = h6 >> 26; h7 += c; h6 -= c << 26;
        c = h7 >> 25; h8 += c; h7 -= c << 25;
        c = h8 >> 26; h9 += c; h8 -= c << 26;
        c = h9 >> 25; h9 -= c << 25;
        Fe r;
        r.V0 = (int)h0;
        r.V1 = (int)h1;
        r.V2 = (int)h2;
        r.V3 = (int)h3;
        r.V4 = (int)h4;
        r.V5 = (int)h5;
        r.V6 = (int)h6;
        r.V7 = (int)h7;
        r.V8 = (int)h8;
        r.V9 = (int)h9;
        return r;
    }

    public static bool IsZero(Fe f)
    {
        Fe c = Canonical(f);
        return (c.V0 | c.V1 | c.V2 | c.V3 | c.V4 | c.V5 | c.V6 | c.V7 | c.V8 | c.V9) == 0;
    }

    /// <summary>True if the canonical value is odd.</summary>
    public static bool IsOdd(Fe f) => (Canonical(f).V0 & 1) == 1;

    public static bool Equal(Fe f, Fe g) => IsZero(Sub(f, g));

    public static Fe SquareTimes(Fe f, int n)
    {
        Fe r = f;
        for (int i = 0; i < n; i++)
        {
            r = Square(r);
        }

        return r;
    }

    /// <summary>z^(2^252 − 3).</summary>
    public static Fe Pow22523(Fe z)
    {
        Fe t0 = Square(z);
        Fe t1 = SquareTimes(t0, 2);
        t1 = Mul(z, t1);
        t0 = Mul(t0, t1);
        t0 = Square(t0);
        t0 = Mul(t1, t0);
        t1 = SquareTimes(t0, 5);
        t0 = Mul(t1, t0);
        t1 = SquareTimes(t0, 10);
        t1 = Mul(t1, t0);
        Fe t2 = SquareTimes(t1, 20);
        t1 = Mul(t2, t1);
        t1 = SquareTimes(t1, 10);
        t0 = Mul(t1, t0);
        t1 = SquareTimes(t0, 50);
        t1 = Mul(t1, t0);
        t2 = SquareTimes(t1, 100);
        t1 = Mul(t2, t1);
        t1 = SquareTimes(t1, 50);
        t0 = Mul(t1, t0);
        t0 = SquareTimes(t0, 2);
        return Mul(t0, z);
    }

    private static long Load3(ILGPU.ArrayView<byte> s, int o) => s[o] | ((long)s[o + 1] << 8) | ((long)s[o + 2] << 16);

    private static long Load4(ILGPU.ArrayView<byte> s, int o) => s[o] | ((long)s[o + 1] << 8) | ((long)s[o + 2] << 16) | ((long)s[o + 3] << 24);
}
