using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using MegaNet.Verify.Simd.Field;
using F = MegaNet.Verify.Simd.Field.FieldElement;
using V = MegaNet.Verify.Simd.Field.LaneField<MegaNet.Verify.Simd.Field.Avx2Lanes, System.Runtime.Intrinsics.Vector256<ulong>>;

namespace MegaNet.Verify.Simd.Curve;

/// <summary>
/// One point of edwards25519 in four AVX2 lanes, (X, Y, Z, T) in lanes 0–3, for the chains of doublings and
/// additions that no batch shares: Straus's single chain and the combination of Pippenger's window sums, which
/// dominate small batches. A doubling's four squarings are one lane squaring and its four multiplications one lane
/// multiplication (the parallel form of dbl-2008-hwcd); an addition's eight multiplications are two lane
/// multiplications. Even a single doubling packed into the lanes and out again beat the scalar formulas (2026-12-01,
/// AMD EPYC with AVX-512F, one thread, key cache off: batch 1 at 0.89× libsodium with scalar doublings, 0.97–1.01×
/// sending runs of two or more to the lanes, 1.02× sending every run; batch 4 1.31×, 1.33–1.37×, 1.41–1.42×).
/// </summary>
/// <remarks>The formulas of <see cref="EdwardsPoint.Double"/> and <see cref="EdwardsPoint.Add"/>, so the same
/// coordinates as the scalar ones (tests compare them). Needs AVX2 (<see cref="IsSupported"/>); callers keep the scalar
/// formulas otherwise.</remarks>
internal static class PointInLanes
{
    /// <summary>True where the lanes run (AVX2).</summary>
    public static bool IsSupported => Avx2.IsSupported;

    /// <summary>The identity (0 : 1 : 1 : 0).</summary>
    public static readonly V Identity = Pack(F.Zero, F.One, F.One, F.Zero);

    // 2Z of an affine point.
    private static readonly F Two = F.Carry(F.Add(F.One, F.One));

    /// <summary>[2^n]P, n ≥ 1, T included.</summary>
    public static EdwardsPoint DoubleTimes(in EdwardsPoint p, int n) => Unpack(DoubleTimes(From(p), n));

    /// <summary>[2^n]P in lanes, n ≥ 1.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static V DoubleTimes(V p, int n)
    {
        for (int i = 0; i < n; i++)
        {
            p = Double(p);
        }

        return p;
    }

    /// <summary>P in lanes (X, Y, Z, T).</summary>
    public static V From(in EdwardsPoint p) => Pack(F.Carry(p.X), F.Carry(p.Y), F.Carry(p.Z), F.Carry(p.T));

    /// <summary>A cached Q as the second factor of <see cref="Add"/>: (Y−X, Y+X, 2dT, 2Z), or for −Q
    /// (Y+X, Y−X, −2dT, 2Z).</summary>
    public static V Cached(in CachedPoint q, bool negate) => negate
        ? Pack(F.Carry(q.YplusX), F.Carry(q.YminusX), F.Carry(F.Negate(q.T2d)), F.Carry(q.Z2))
        : Pack(F.Carry(q.YminusX), F.Carry(q.YplusX), F.Carry(q.T2d), F.Carry(q.Z2));

    /// <summary>An affine Q (Z = 1) the same way, with 2Z = 2.</summary>
    public static V Cached(in AffineNielsPoint q, bool negate) => negate
        ? Pack(F.Carry(q.YplusX), F.Carry(q.YminusX), F.Carry(F.Negate(q.XY2d)), Two)
        : Pack(F.Carry(q.YminusX), F.Carry(q.YplusX), F.Carry(q.XY2d), Two);

    /// <summary>Back to a scalar point, carried.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static EdwardsPoint Unpack(in V v)
    {
        // Limb k of lane j is even + odd·2^26 of that lane's pair.
        Vector256<ulong> l0 = v.L0 + (v.L1 << 26), l1 = v.L2 + (v.L3 << 26), l2 = v.L4 + (v.L5 << 26);
        Vector256<ulong> l3 = v.L6 + (v.L7 << 26), l4 = v.L8 + (v.L9 << 26);
        EdwardsPoint r;
        r.X = F.Carry(new F(l0.GetElement(0), l1.GetElement(0), l2.GetElement(0), l3.GetElement(0), l4.GetElement(0)));
        r.Y = F.Carry(new F(l0.GetElement(1), l1.GetElement(1), l2.GetElement(1), l3.GetElement(1), l4.GetElement(1)));
        r.Z = F.Carry(new F(l0.GetElement(2), l1.GetElement(2), l2.GetElement(2), l3.GetElement(2), l4.GetElement(2)));
        r.T = F.Carry(new F(l0.GetElement(3), l1.GetElement(3), l2.GetElement(3), l3.GetElement(3), l4.GetElement(3)));
        return r;
    }

    /// <summary>P + Q for P in lanes and Q from <see cref="Cached(in CachedPoint, bool)"/>: (a, b, c, d) =
    /// (Y1−X1, Y1+X1, T1, Z1)·(Y2−X2, Y2+X2, 2dT2, 2Z2) in one lane multiplication, then e = b − a, f = d − c,
    /// g = d + c, h = b + a and (e·f, g·h, f·g, e·h) in another.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    [SkipLocalsInit]
    public static V Add(in V p, in V q)
    {
        V yyTz = Permute(p, 0b10_11_01_01);                  // (Y, Y, T, Z)
        V xx = Permute(p, 0b00_00_00_00);                    // X in every lane; only lanes 0 and 1 are used
        V u = Blend(Blend(yyTz, V.Sub(yyTz, xx), LaneZero), V.Add(yyTz, xx), LaneOne);
        V m = V.Mul(u, q);                                   // (a, b, c, d), carried

        V swapped = Permute(m, 0b10_11_00_01);               // (b, a, d, c)
        V sums = V.Add(m, swapped);                          // (h, h, g, g)
        V differences = V.Sub(swapped, m);                   // (e, −e, f, −f)
        V left = Blend(Permute(differences, 0b00_10_00_00), Permute(sums, 0b10_10_10_10), LaneOne);    // (e, g, f, e)
        V right = Blend(Permute(sums, 0b00_10_00_00), Permute(differences, 0b10_10_10_10), LaneZero);  // (f, h, g, h)
        return V.Mul(left, right);
    }

    // Radix 2^51 → 2^25.5 for four carried elements at once (LaneField.Pack carries every element once per limb).
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static V Pack(in F x, in F y, in F z, in F t)
    {
        const ulong Mask26 = (1UL << 26) - 1;
        V r;
        r.L0 = Vector256.Create(x.L0 & Mask26, y.L0 & Mask26, z.L0 & Mask26, t.L0 & Mask26);
        r.L1 = Vector256.Create(x.L0 >> 26, y.L0 >> 26, z.L0 >> 26, t.L0 >> 26);
        r.L2 = Vector256.Create(x.L1 & Mask26, y.L1 & Mask26, z.L1 & Mask26, t.L1 & Mask26);
        r.L3 = Vector256.Create(x.L1 >> 26, y.L1 >> 26, z.L1 >> 26, t.L1 >> 26);
        r.L4 = Vector256.Create(x.L2 & Mask26, y.L2 & Mask26, z.L2 & Mask26, t.L2 & Mask26);
        r.L5 = Vector256.Create(x.L2 >> 26, y.L2 >> 26, z.L2 >> 26, t.L2 >> 26);
        r.L6 = Vector256.Create(x.L3 & Mask26, y.L3 & Mask26, z.L3 & Mask26, t.L3 & Mask26);
        r.L7 = Vector256.Create(x.L3 >> 26, y.L3 >> 26, z.L3 >> 26, t.L3 >> 26);
        r.L8 = Vector256.Create(x.L4 & Mask26, y.L4 & Mask26, z.L4 & Mask26, t.L4 & Mask26);
        r.L9 = Vector256.Create(x.L4 >> 26, y.L4 >> 26, z.L4 >> 26, t.L4 >> 26);
        return r;
    }

    /// <summary>2P for P = (X, Y, Z, ·) in lanes 0–2 (carried limbs); the result has T in lane 3.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    [SkipLocalsInit]
    public static V Double(in V p)
    {
        // (X, Y, Z, X + Y), squared at once: (A, B, C, S) = (X², Y², Z², (X + Y)²), carried.
        V s = V.Add(Permute(p, 0b00_10_01_00), Blend(default, Permute(p, 0b01_01_01_01), LaneThree));
        V q = V.Square(s);

        // As EdwardsPoint.Double: h = A + B, g = A − B, f = 2C + g (carried), e = h − S (a Sub of carried values).
        V a = Permute(q, 0b00_00_00_00), b = Permute(q, 0b01_01_01_01);
        V c = Permute(q, 0b10_10_10_10), sq = Permute(q, 0b11_11_11_11);
        V h = V.Reduce(V.Add(a, b));
        V g = V.Reduce(V.Sub(a, b));
        V f = V.Reduce(V.Add(g, V.Add(c, c)));
        V e = V.Sub(h, sq);

        // (X3, Y3, Z3, T3) = (e·f, g·h, f·g, e·h): one lane multiplication of (e, g, f, e) by (f, h, g, h).
        V left = Blend(Blend(e, g, LaneOne), f, LaneTwo);
        V right = Blend(Blend(h, f, LaneZero), g, LaneTwo);
        return V.Mul(left, right);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static V Permute(in V x, [ConstantExpected] byte control)
    {
        V r;
        r.L0 = Avx2.Permute4x64(x.L0, control);
        r.L1 = Avx2.Permute4x64(x.L1, control);
        r.L2 = Avx2.Permute4x64(x.L2, control);
        r.L3 = Avx2.Permute4x64(x.L3, control);
        r.L4 = Avx2.Permute4x64(x.L4, control);
        r.L5 = Avx2.Permute4x64(x.L5, control);
        r.L6 = Avx2.Permute4x64(x.L6, control);
        r.L7 = Avx2.Permute4x64(x.L7, control);
        r.L8 = Avx2.Permute4x64(x.L8, control);
        r.L9 = Avx2.Permute4x64(x.L9, control);
        return r;
    }

    // vpblendd immediates: the two 32-bit halves of one 64-bit lane.
    private const byte LaneZero = 0b0000_0011, LaneOne = 0b0000_1100, LaneTwo = 0b0011_0000, LaneThree = 0b1100_0000;

    /// <summary>Per limb: the lanes named in <paramref name="lanes"/> from <paramref name="y"/>, the others from <paramref name="x"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static V Blend(in V x, in V y, [ConstantExpected] byte lanes)
    {
        V r;
        r.L0 = Avx2.Blend(x.L0.AsUInt32(), y.L0.AsUInt32(), lanes).AsUInt64();
        r.L1 = Avx2.Blend(x.L1.AsUInt32(), y.L1.AsUInt32(), lanes).AsUInt64();
        r.L2 = Avx2.Blend(x.L2.AsUInt32(), y.L2.AsUInt32(), lanes).AsUInt64();
        r.L3 = Avx2.Blend(x.L3.AsUInt32(), y.L3.AsUInt32(), lanes).AsUInt64();
        r.L4 = Avx2.Blend(x.L4.AsUInt32(), y.L4.AsUInt32(), lanes).AsUInt64();
        r.L5 = Avx2.Blend(x.L5.AsUInt32(), y.L5.AsUInt32(), lanes).AsUInt64();
        r.L6 = Avx2.Blend(x.L6.AsUInt32(), y.L6.AsUInt32(), lanes).AsUInt64();
        r.L7 = Avx2.Blend(x.L7.AsUInt32(), y.L7.AsUInt32(), lanes).AsUInt64();
        r.L8 = Avx2.Blend(x.L8.AsUInt32(), y.L8.AsUInt32(), lanes).AsUInt64();
        r.L9 = Avx2.Blend(x.L9.AsUInt32(), y.L9.AsUInt32(), lanes).AsUInt64();
        return r;
    }
}
