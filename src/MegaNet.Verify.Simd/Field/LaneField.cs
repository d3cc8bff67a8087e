using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace MegaNet.Verify.Simd.Field;

/// <summary>The few vector operations the lane field needs; one implementation per ISA tier.</summary>
internal interface ILaneOps<TVec>
    where TVec : struct
{
    /// <summary>Lanes per vector.</summary>
    static abstract int Lanes { get; }

    /// <summary>Low 32 bits of each 64-bit lane multiplied, 64-bit products (vpmuludq).</summary>
    static abstract TVec Mul32(TVec a, TVec b);

    static abstract TVec Add(TVec a, TVec b);

    static abstract TVec Subtract(TVec a, TVec b);

    /// <summary>Per lane: <paramref name="mask"/> all ones selects <paramref name="a"/>, all zeros <paramref name="b"/>.</summary>
    static abstract TVec Select(TVec mask, TVec a, TVec b);

    static abstract TVec ShiftRight(TVec a, byte n);

    static abstract TVec ShiftLeft(TVec a, byte n);

    static abstract TVec And(TVec a, TVec b);

    static abstract TVec Create(ulong value);

    static abstract TVec Load(ReadOnlySpan<ulong> values);

    static abstract void Store(TVec value, Span<ulong> destination);

    /// <summary>
    /// A transpose from rows to lanes: limb c of row j (<c>rows[j][c]</c>, <c>c &lt; count</c>) goes to lane j of vector c
    /// at <paramref name="vectors"/> (<paramref name="count"/> vectors, limb-major, as a lane field lays them out).
    /// <paramref name="count"/> is a multiple of <see cref="Lanes"/>; rows need no alignment.
    /// </summary>
    static abstract unsafe void LoadRows(ulong** rows, ulong* vectors, int count);

    /// <summary>The inverse of <see cref="LoadRows"/>: lane j of vector c goes to <c>rows[j][c]</c>.</summary>
    static abstract unsafe void StoreRows(ulong* vectors, ulong** rows, int count);
}

/// <summary>AVX-512F: 8 lanes of <c>Avx512F.Multiply</c>.</summary>
internal readonly struct Avx512Lanes : ILaneOps<Vector512<ulong>>
{
    public static int Lanes => 8;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<ulong> Mul32(Vector512<ulong> a, Vector512<ulong> b) => Avx512F.Multiply(a.AsUInt32(), b.AsUInt32());

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<ulong> Add(Vector512<ulong> a, Vector512<ulong> b) => a + b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<ulong> Subtract(Vector512<ulong> a, Vector512<ulong> b) => a - b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<ulong> Select(Vector512<ulong> mask, Vector512<ulong> a, Vector512<ulong> b) => Vector512.ConditionalSelect(mask, a, b);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<ulong> ShiftRight(Vector512<ulong> a, byte n) => Vector512.ShiftRightLogical(a, n);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<ulong> ShiftLeft(Vector512<ulong> a, byte n) => Vector512.ShiftLeft(a, n);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<ulong> And(Vector512<ulong> a, Vector512<ulong> b) => a & b;

    public static Vector512<ulong> Create(ulong value) => Vector512.Create(value);

    public static Vector512<ulong> Load(ReadOnlySpan<ulong> values) => Vector512.Create(values);

    public static void Store(Vector512<ulong> value, Span<ulong> destination) => value.CopyTo(destination);

    // Second and third stages of an 8×8 transpose (vpermt2q): pairs of elements, then halves.
    private static readonly Vector512<ulong> PairsLow = Vector512.Create(0UL, 1, 8, 9, 4, 5, 12, 13);
    private static readonly Vector512<ulong> PairsHigh = Vector512.Create(2UL, 3, 10, 11, 6, 7, 14, 15);
    private static readonly Vector512<ulong> HalvesLow = Vector512.Create(0UL, 1, 2, 3, 8, 9, 10, 11);
    private static readonly Vector512<ulong> HalvesHigh = Vector512.Create(4UL, 5, 6, 7, 12, 13, 14, 15);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static unsafe void LoadRows(ulong** rows, ulong* vectors, int count)
    {
        for (int k = 0; k < count; k += 8)
        {
            Transpose(
                Vector512.Load(rows[0] + k), Vector512.Load(rows[1] + k), Vector512.Load(rows[2] + k), Vector512.Load(rows[3] + k),
                Vector512.Load(rows[4] + k), Vector512.Load(rows[5] + k), Vector512.Load(rows[6] + k), Vector512.Load(rows[7] + k),
                vectors + (k * 8), vectors + ((k + 1) * 8), vectors + ((k + 2) * 8), vectors + ((k + 3) * 8),
                vectors + ((k + 4) * 8), vectors + ((k + 5) * 8), vectors + ((k + 6) * 8), vectors + ((k + 7) * 8));
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static unsafe void StoreRows(ulong* vectors, ulong** rows, int count)
    {
        for (int k = 0; k < count; k += 8)
        {
            Transpose(
                Vector512.Load(vectors + (k * 8)), Vector512.Load(vectors + ((k + 1) * 8)), Vector512.Load(vectors + ((k + 2) * 8)), Vector512.Load(vectors + ((k + 3) * 8)),
                Vector512.Load(vectors + ((k + 4) * 8)), Vector512.Load(vectors + ((k + 5) * 8)), Vector512.Load(vectors + ((k + 6) * 8)), Vector512.Load(vectors + ((k + 7) * 8)),
                rows[0] + k, rows[1] + k, rows[2] + k, rows[3] + k, rows[4] + k, rows[5] + k, rows[6] + k, rows[7] + k);
        }
    }

    // out_c[r] = a_r[c]: 24 shuffles instead of 64 scalar loads and stores per 8×8 block (and no store-to-load
    // forwarding stall from eight narrow stores read back as one vector).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void Transpose(
        Vector512<ulong> a0, Vector512<ulong> a1, Vector512<ulong> a2, Vector512<ulong> a3,
        Vector512<ulong> a4, Vector512<ulong> a5, Vector512<ulong> a6, Vector512<ulong> a7,
        ulong* o0, ulong* o1, ulong* o2, ulong* o3, ulong* o4, ulong* o5, ulong* o6, ulong* o7)
    {
        // s0 = a0[0] a1[0] a0[2] a1[2] …, s1 = a0[1] a1[1] a0[3] a1[3] …
        Vector512<ulong> s0 = Avx512F.UnpackLow(a0, a1), s1 = Avx512F.UnpackHigh(a0, a1);
        Vector512<ulong> s2 = Avx512F.UnpackLow(a2, a3), s3 = Avx512F.UnpackHigh(a2, a3);
        Vector512<ulong> s4 = Avx512F.UnpackLow(a4, a5), s5 = Avx512F.UnpackHigh(a4, a5);
        Vector512<ulong> s6 = Avx512F.UnpackLow(a6, a7), s7 = Avx512F.UnpackHigh(a6, a7);

        // u0 = column 0 of rows 0–3, then column 4 of rows 0–3; u2 columns 2 and 6; u1 columns 1 and 5; u3 columns 3 and 7.
        Vector512<ulong> u0 = Avx512F.PermuteVar8x64x2(s0, PairsLow, s2), u2 = Avx512F.PermuteVar8x64x2(s0, PairsHigh, s2);
        Vector512<ulong> u1 = Avx512F.PermuteVar8x64x2(s1, PairsLow, s3), u3 = Avx512F.PermuteVar8x64x2(s1, PairsHigh, s3);
        Vector512<ulong> u4 = Avx512F.PermuteVar8x64x2(s4, PairsLow, s6), u6 = Avx512F.PermuteVar8x64x2(s4, PairsHigh, s6);
        Vector512<ulong> u5 = Avx512F.PermuteVar8x64x2(s5, PairsLow, s7), u7 = Avx512F.PermuteVar8x64x2(s5, PairsHigh, s7);

        Avx512F.PermuteVar8x64x2(u0, HalvesLow, u4).Store(o0);
        Avx512F.PermuteVar8x64x2(u1, HalvesLow, u5).Store(o1);
        Avx512F.PermuteVar8x64x2(u2, HalvesLow, u6).Store(o2);
        Avx512F.PermuteVar8x64x2(u3, HalvesLow, u7).Store(o3);
        Avx512F.PermuteVar8x64x2(u0, HalvesHigh, u4).Store(o4);
        Avx512F.PermuteVar8x64x2(u1, HalvesHigh, u5).Store(o5);
        Avx512F.PermuteVar8x64x2(u2, HalvesHigh, u6).Store(o6);
        Avx512F.PermuteVar8x64x2(u3, HalvesHigh, u7).Store(o7);
    }
}

/// <summary>AVX2: 4 lanes of <c>Avx2.Multiply</c>.</summary>
internal readonly struct Avx2Lanes : ILaneOps<Vector256<ulong>>
{
    public static int Lanes => 4;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<ulong> Mul32(Vector256<ulong> a, Vector256<ulong> b) => Avx2.Multiply(a.AsUInt32(), b.AsUInt32());

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<ulong> Add(Vector256<ulong> a, Vector256<ulong> b) => a + b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<ulong> Subtract(Vector256<ulong> a, Vector256<ulong> b) => a - b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<ulong> Select(Vector256<ulong> mask, Vector256<ulong> a, Vector256<ulong> b) => Vector256.ConditionalSelect(mask, a, b);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<ulong> ShiftRight(Vector256<ulong> a, byte n) => Vector256.ShiftRightLogical(a, n);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<ulong> ShiftLeft(Vector256<ulong> a, byte n) => Vector256.ShiftLeft(a, n);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<ulong> And(Vector256<ulong> a, Vector256<ulong> b) => a & b;

    public static Vector256<ulong> Create(ulong value) => Vector256.Create(value);

    public static Vector256<ulong> Load(ReadOnlySpan<ulong> values) => Vector256.Create(values);

    public static void Store(Vector256<ulong> value, Span<ulong> destination) => value.CopyTo(destination);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static unsafe void LoadRows(ulong** rows, ulong* vectors, int count)
    {
        for (int k = 0; k < count; k += 4)
        {
            Transpose(
                Vector256.Load(rows[0] + k), Vector256.Load(rows[1] + k), Vector256.Load(rows[2] + k), Vector256.Load(rows[3] + k),
                vectors + (k * 4), vectors + ((k + 1) * 4), vectors + ((k + 2) * 4), vectors + ((k + 3) * 4));
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static unsafe void StoreRows(ulong* vectors, ulong** rows, int count)
    {
        for (int k = 0; k < count; k += 4)
        {
            Transpose(
                Vector256.Load(vectors + (k * 4)), Vector256.Load(vectors + ((k + 1) * 4)), Vector256.Load(vectors + ((k + 2) * 4)), Vector256.Load(vectors + ((k + 3) * 4)),
                rows[0] + k, rows[1] + k, rows[2] + k, rows[3] + k);
        }
    }

    // out_c[r] = a_r[c] for a 4×4 block: 8 shuffles.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void Transpose(Vector256<ulong> a0, Vector256<ulong> a1, Vector256<ulong> a2, Vector256<ulong> a3,
        ulong* o0, ulong* o1, ulong* o2, ulong* o3)
    {
        // s0 = a0[0] a1[0] a0[2] a1[2], s1 = a0[1] a1[1] a0[3] a1[3]; the same for rows 2 and 3.
        Vector256<ulong> s0 = Avx2.UnpackLow(a0, a1), s1 = Avx2.UnpackHigh(a0, a1);
        Vector256<ulong> s2 = Avx2.UnpackLow(a2, a3), s3 = Avx2.UnpackHigh(a2, a3);
        Avx2.Permute2x128(s0, s2, 0x20).Store(o0);
        Avx2.Permute2x128(s1, s3, 0x20).Store(o1);
        Avx2.Permute2x128(s0, s2, 0x31).Store(o2);
        Avx2.Permute2x128(s1, s3, 0x31).Store(o3);
    }
}

/// <summary>
/// GF(2^255 − 19) for several independent elements at once, one per vector lane, in unsigned radix 2^25.5
/// (limbs of 26, 25, 26, … bits). Used for the square-root exponentiation of point decompression, the same
/// uniform work for every signature.
/// </summary>
/// <remarks>
/// Bounds: carried limbs are &lt; 2^26 (even) and &lt; 2^25 + 2^15 (odd). In <see cref="Mul"/> the doubled odd limbs are
/// &lt; 2^26.1 and 19·b &lt; 2^30.3, so every 32×32 product fits and each 64-bit column sum of ten is &lt; 2^61. The final
/// carry from limb 9 is &lt; 2^36, times 19 &lt; 2^41, absorbed by limb 0 and carried once more.
/// </remarks>
internal struct LaneField<TOps, TVec> : IFieldArithmetic<LaneField<TOps, TVec>>
    where TOps : struct, ILaneOps<TVec>
    where TVec : struct
{
    public TVec L0, L1, L2, L3, L4, L5, L6, L7, L8, L9;

    /// <summary>Packs up to <c>TOps.Lanes</c> radix-2^51 elements (carried) into lanes; missing lanes are zero.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static LaneField<TOps, TVec> Pack(ReadOnlySpan<FieldElement> values)
    {
        int lanes = TOps.Lanes;
        Span<ulong> column = stackalloc ulong[lanes];
        var r = default(LaneField<TOps, TVec>);
        const ulong Mask26 = (1UL << 26) - 1;
        for (int limb = 0; limb < 5; limb++)
        {
            for (int lane = 0; lane < lanes; lane++)
            {
                column[lane] = lane < values.Length ? Limb(FieldElement.Carry(values[lane]), limb) & Mask26 : 0;
            }

            r.Set(2 * limb, TOps.Load(column));
            for (int lane = 0; lane < lanes; lane++)
            {
                column[lane] = lane < values.Length ? Limb(FieldElement.Carry(values[lane]), limb) >> 26 : 0;
            }

            r.Set(2 * limb + 1, TOps.Load(column));
        }

        return r;
    }

    /// <summary>Writes the lanes back as radix-2^51 elements (carried).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public readonly void Unpack(Span<FieldElement> values)
    {
        int lanes = TOps.Lanes;
        Span<ulong> even = stackalloc ulong[lanes];
        Span<ulong> odd = stackalloc ulong[lanes];
        Span<ulong> limbs = stackalloc ulong[5 * lanes];
        for (int limb = 0; limb < 5; limb++)
        {
            TOps.Store(Get(2 * limb), even);
            TOps.Store(Get(2 * limb + 1), odd);
            for (int lane = 0; lane < lanes; lane++)
            {
                limbs[limb * lanes + lane] = even[lane] + (odd[lane] << 26);
            }
        }

        for (int lane = 0; lane < values.Length; lane++)
        {
            values[lane] = FieldElement.Carry(new FieldElement(limbs[lane], limbs[lanes + lane], limbs[2 * lanes + lane], limbs[3 * lanes + lane], limbs[4 * lanes + lane]));
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    [SkipLocalsInit]
    public static LaneField<TOps, TVec> Mul(in LaneField<TOps, TVec> a, in LaneField<TOps, TVec> b)
    {
        // The product is built in the return buffer itself (MulCore inlined): a wrapper around MulInto made callers
        // that keep the result in a local zero a temporary and copy it (twice the memmoves in the square-root chain).
        MulCore(a, b, out LaneField<TOps, TVec> r);
        return r;
    }

    /// <summary>a·b into <paramref name="r"/>, which may be a field of a point behind a reference: the JIT copies a
    /// returned value into such a place through a temporary (a 320-byte memmove per product with AVX2: 1.5 % of a
    /// batch-1,024 profile, 0.24 % with this). <paramref name="r"/> may alias an operand: it is written only after
    /// both are read.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    [SkipLocalsInit]
    public static void MulInto(in LaneField<TOps, TVec> a, in LaneField<TOps, TVec> b, out LaneField<TOps, TVec> r) => MulCore(a, b, out r);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void MulCore(in LaneField<TOps, TVec> a, in LaneField<TOps, TVec> b, out LaneField<TOps, TVec> r)
    {
        // Operand scanning: ten column sums stay in registers while each limb of a in turn is multiplied into them,
        // b and 19·b read from memory. The column-by-column form kept ~35 vectors live, which AVX2's 16 registers
        // could not hold (265 stack accesses per call, 85 now).
        LaneField<TOps, TVec> b19 = default;
        b19.L1 = Times19(b.L1);
        b19.L2 = Times19(b.L2);
        b19.L3 = Times19(b.L3);
        b19.L4 = Times19(b.L4);
        b19.L5 = Times19(b.L5);
        b19.L6 = Times19(b.L6);
        b19.L7 = Times19(b.L7);
        b19.L8 = Times19(b.L8);
        b19.L9 = Times19(b.L9);
        TVec ai, ai2;
        ai = a.L0;
        TVec h0 = TOps.Mul32(ai, b.L0);
        TVec h1 = TOps.Mul32(ai, b.L1);
        TVec h2 = TOps.Mul32(ai, b.L2);
        TVec h3 = TOps.Mul32(ai, b.L3);
        TVec h4 = TOps.Mul32(ai, b.L4);
        TVec h5 = TOps.Mul32(ai, b.L5);
        TVec h6 = TOps.Mul32(ai, b.L6);
        TVec h7 = TOps.Mul32(ai, b.L7);
        TVec h8 = TOps.Mul32(ai, b.L8);
        TVec h9 = TOps.Mul32(ai, b.L9);
        ai = a.L1;
        ai2 = TOps.Add(ai, ai);
        h1 = TOps.Add(h1, TOps.Mul32(ai, b.L0));
        h2 = TOps.Add(h2, TOps.Mul32(ai2, b.L1));
        h3 = TOps.Add(h3, TOps.Mul32(ai, b.L2));
        h4 = TOps.Add(h4, TOps.Mul32(ai2, b.L3));
        h5 = TOps.Add(h5, TOps.Mul32(ai, b.L4));
        h6 = TOps.Add(h6, TOps.Mul32(ai2, b.L5));
        h7 = TOps.Add(h7, TOps.Mul32(ai, b.L6));
        h8 = TOps.Add(h8, TOps.Mul32(ai2, b.L7));
        h9 = TOps.Add(h9, TOps.Mul32(ai, b.L8));
        h0 = TOps.Add(h0, TOps.Mul32(ai2, b19.L9));
        ai = a.L2;
        h2 = TOps.Add(h2, TOps.Mul32(ai, b.L0));
        h3 = TOps.Add(h3, TOps.Mul32(ai, b.L1));
        h4 = TOps.Add(h4, TOps.Mul32(ai, b.L2));
        h5 = TOps.Add(h5, TOps.Mul32(ai, b.L3));
        h6 = TOps.Add(h6, TOps.Mul32(ai, b.L4));
        h7 = TOps.Add(h7, TOps.Mul32(ai, b.L5));
        h8 = TOps.Add(h8, TOps.Mul32(ai, b.L6));
        h9 = TOps.Add(h9, TOps.Mul32(ai, b.L7));
        h0 = TOps.Add(h0, TOps.Mul32(ai, b19.L8));
        h1 = TOps.Add(h1, TOps.Mul32(ai, b19.L9));
        ai = a.L3;
        ai2 = TOps.Add(ai, ai);
        h3 = TOps.Add(h3, TOps.Mul32(ai, b.L0));
        h4 = TOps.Add(h4, TOps.Mul32(ai2, b.L1));
        h5 = TOps.Add(h5, TOps.Mul32(ai, b.L2));
        h6 = TOps.Add(h6, TOps.Mul32(ai2, b.L3));
        h7 = TOps.Add(h7, TOps.Mul32(ai, b.L4));
        h8 = TOps.Add(h8, TOps.Mul32(ai2, b.L5));
        h9 = TOps.Add(h9, TOps.Mul32(ai, b.L6));
        h0 = TOps.Add(h0, TOps.Mul32(ai2, b19.L7));
        h1 = TOps.Add(h1, TOps.Mul32(ai, b19.L8));
        h2 = TOps.Add(h2, TOps.Mul32(ai2, b19.L9));
        ai = a.L4;
        h4 = TOps.Add(h4, TOps.Mul32(ai, b.L0));
        h5 = TOps.Add(h5, TOps.Mul32(ai, b.L1));
        h6 = TOps.Add(h6, TOps.Mul32(ai, b.L2));
        h7 = TOps.Add(h7, TOps.Mul32(ai, b.L3));
        h8 = TOps.Add(h8, TOps.Mul32(ai, b.L4));
        h9 = TOps.Add(h9, TOps.Mul32(ai, b.L5));
        h0 = TOps.Add(h0, TOps.Mul32(ai, b19.L6));
        h1 = TOps.Add(h1, TOps.Mul32(ai, b19.L7));
        h2 = TOps.Add(h2, TOps.Mul32(ai, b19.L8));
        h3 = TOps.Add(h3, TOps.Mul32(ai, b19.L9));
        ai = a.L5;
        ai2 = TOps.Add(ai, ai);
        h5 = TOps.Add(h5, TOps.Mul32(ai, b.L0));
        h6 = TOps.Add(h6, TOps.Mul32(ai2, b.L1));
        h7 = TOps.Add(h7, TOps.Mul32(ai, b.L2));
        h8 = TOps.Add(h8, TOps.Mul32(ai2, b.L3));
        h9 = TOps.Add(h9, TOps.Mul32(ai, b.L4));
        h0 = TOps.Add(h0, TOps.Mul32(ai2, b19.L5));
        h1 = TOps.Add(h1, TOps.Mul32(ai, b19.L6));
        h2 = TOps.Add(h2, TOps.Mul32(ai2, b19.L7));
        h3 = TOps.Add(h3, TOps.Mul32(ai, b19.L8));
        h4 = TOps.Add(h4, TOps.Mul32(ai2, b19.L9));
        ai = a.L6;
        h6 = TOps.Add(h6, TOps.Mul32(ai, b.L0));
        h7 = TOps.Add(h7, TOps.Mul32(ai, b.L1));
        h8 = TOps.Add(h8, TOps.Mul32(ai, b.L2));
        h9 = TOps.Add(h9, TOps.Mul32(ai, b.L3));
        h0 = TOps.Add(h0, TOps.Mul32(ai, b19.L4));
        h1 = TOps.Add(h1, TOps.Mul32(ai, b19.L5));
        h2 = TOps.Add(h2, TOps.Mul32(ai, b19.L6));
        h3 = TOps.Add(h3, TOps.Mul32(ai, b19.L7));
        h4 = TOps.Add(h4, TOps.Mul32(ai, b19.L8));
        h5 = TOps.Add(h5, TOps.Mul32(ai, b19.L9));
        ai = a.L7;
        ai2 = TOps.Add(ai, ai);
        h7 = TOps.Add(h7, TOps.Mul32(ai, b.L0));
        h8 = TOps.Add(h8, TOps.Mul32(ai2, b.L1));
        h9 = TOps.Add(h9, TOps.Mul32(ai, b.L2));
        h0 = TOps.Add(h0, TOps.Mul32(ai2, b19.L3));
        h1 = TOps.Add(h1, TOps.Mul32(ai, b19.L4));
        h2 = TOps.Add(h2, TOps.Mul32(ai2, b19.L5));
        h3 = TOps.Add(h3, TOps.Mul32(ai, b19.L6));
        h4 = TOps.Add(h4, TOps.Mul32(ai2, b19.L7));
        h5 = TOps.Add(h5, TOps.Mul32(ai, b19.L8));
        h6 = TOps.Add(h6, TOps.Mul32(ai2, b19.L9));
        ai = a.L8;
        h8 = TOps.Add(h8, TOps.Mul32(ai, b.L0));
        h9 = TOps.Add(h9, TOps.Mul32(ai, b.L1));
        h0 = TOps.Add(h0, TOps.Mul32(ai, b19.L2));
        h1 = TOps.Add(h1, TOps.Mul32(ai, b19.L3));
        h2 = TOps.Add(h2, TOps.Mul32(ai, b19.L4));
        h3 = TOps.Add(h3, TOps.Mul32(ai, b19.L5));
        h4 = TOps.Add(h4, TOps.Mul32(ai, b19.L6));
        h5 = TOps.Add(h5, TOps.Mul32(ai, b19.L7));
        h6 = TOps.Add(h6, TOps.Mul32(ai, b19.L8));
        h7 = TOps.Add(h7, TOps.Mul32(ai, b19.L9));
        ai = a.L9;
        ai2 = TOps.Add(ai, ai);
        h9 = TOps.Add(h9, TOps.Mul32(ai, b.L0));
        h0 = TOps.Add(h0, TOps.Mul32(ai2, b19.L1));
        h1 = TOps.Add(h1, TOps.Mul32(ai, b19.L2));
        h2 = TOps.Add(h2, TOps.Mul32(ai2, b19.L3));
        h3 = TOps.Add(h3, TOps.Mul32(ai, b19.L4));
        h4 = TOps.Add(h4, TOps.Mul32(ai2, b19.L5));
        h5 = TOps.Add(h5, TOps.Mul32(ai, b19.L6));
        h6 = TOps.Add(h6, TOps.Mul32(ai2, b19.L7));
        h7 = TOps.Add(h7, TOps.Mul32(ai, b19.L8));
        h8 = TOps.Add(h8, TOps.Mul32(ai2, b19.L9));
        Carry(h0, h1, h2, h3, h4, h5, h6, h7, h8, h9, out r);
    }

    /// <summary>a² in every lane (ref10's 55-product schoolbook square; inputs as for <see cref="Mul"/>).</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    [SkipLocalsInit]
    public static LaneField<TOps, TVec> Square(in LaneField<TOps, TVec> a)
    {
        // Operand scanning, as in Mul: the ten column sums stay in registers while each limb of a is multiplied into
        // them by the limbs at or above it (doubled off the diagonal). The scaled limbs are computed once; those that
        // do not fit in the registers left are read from the stack, one load each per use, not spilled and reloaded.
        TVec f2_1 = TOps.Add(a.L1, a.L1);
        TVec f2_3 = TOps.Add(a.L3, a.L3);
        TVec f2_5 = TOps.Add(a.L5, a.L5);
        TVec f38_5 = TOps.Add(Times19(a.L5), Times19(a.L5));
        TVec f19_6 = Times19(a.L6);
        TVec f2_7 = TOps.Add(a.L7, a.L7);
        TVec f19_7 = Times19(a.L7);
        TVec f38_7 = TOps.Add(Times19(a.L7), Times19(a.L7));
        TVec f19_8 = Times19(a.L8);
        TVec f19_9 = Times19(a.L9);
        TVec f38_9 = TOps.Add(Times19(a.L9), Times19(a.L9));
        TVec ai, ai2;
        ai = a.L0;
        ai2 = TOps.Add(ai, ai);
        TVec h0 = TOps.Mul32(ai, a.L0);
        TVec h1 = TOps.Mul32(ai2, a.L1);
        TVec h2 = TOps.Mul32(ai2, a.L2);
        TVec h3 = TOps.Mul32(ai2, a.L3);
        TVec h4 = TOps.Mul32(ai2, a.L4);
        TVec h5 = TOps.Mul32(ai2, a.L5);
        TVec h6 = TOps.Mul32(ai2, a.L6);
        TVec h7 = TOps.Mul32(ai2, a.L7);
        TVec h8 = TOps.Mul32(ai2, a.L8);
        TVec h9 = TOps.Mul32(ai2, a.L9);
        ai = a.L1;
        ai2 = TOps.Add(ai, ai);
        h2 = TOps.Add(h2, TOps.Mul32(ai, f2_1));
        h3 = TOps.Add(h3, TOps.Mul32(ai2, a.L2));
        h4 = TOps.Add(h4, TOps.Mul32(ai2, f2_3));
        h5 = TOps.Add(h5, TOps.Mul32(ai2, a.L4));
        h6 = TOps.Add(h6, TOps.Mul32(ai2, f2_5));
        h7 = TOps.Add(h7, TOps.Mul32(ai2, a.L6));
        h8 = TOps.Add(h8, TOps.Mul32(ai2, f2_7));
        h9 = TOps.Add(h9, TOps.Mul32(ai2, a.L8));
        h0 = TOps.Add(h0, TOps.Mul32(ai2, f38_9));
        ai = a.L2;
        ai2 = TOps.Add(ai, ai);
        h4 = TOps.Add(h4, TOps.Mul32(ai, a.L2));
        h5 = TOps.Add(h5, TOps.Mul32(ai2, a.L3));
        h6 = TOps.Add(h6, TOps.Mul32(ai2, a.L4));
        h7 = TOps.Add(h7, TOps.Mul32(ai2, a.L5));
        h8 = TOps.Add(h8, TOps.Mul32(ai2, a.L6));
        h9 = TOps.Add(h9, TOps.Mul32(ai2, a.L7));
        h0 = TOps.Add(h0, TOps.Mul32(ai2, f19_8));
        h1 = TOps.Add(h1, TOps.Mul32(ai2, f19_9));
        ai = a.L3;
        ai2 = TOps.Add(ai, ai);
        h6 = TOps.Add(h6, TOps.Mul32(ai, f2_3));
        h7 = TOps.Add(h7, TOps.Mul32(ai2, a.L4));
        h8 = TOps.Add(h8, TOps.Mul32(ai2, f2_5));
        h9 = TOps.Add(h9, TOps.Mul32(ai2, a.L6));
        h0 = TOps.Add(h0, TOps.Mul32(ai2, f38_7));
        h1 = TOps.Add(h1, TOps.Mul32(ai2, f19_8));
        h2 = TOps.Add(h2, TOps.Mul32(ai2, f38_9));
        ai = a.L4;
        ai2 = TOps.Add(ai, ai);
        h8 = TOps.Add(h8, TOps.Mul32(ai, a.L4));
        h9 = TOps.Add(h9, TOps.Mul32(ai2, a.L5));
        h0 = TOps.Add(h0, TOps.Mul32(ai2, f19_6));
        h1 = TOps.Add(h1, TOps.Mul32(ai2, f19_7));
        h2 = TOps.Add(h2, TOps.Mul32(ai2, f19_8));
        h3 = TOps.Add(h3, TOps.Mul32(ai2, f19_9));
        ai = a.L5;
        ai2 = TOps.Add(ai, ai);
        h0 = TOps.Add(h0, TOps.Mul32(ai, f38_5));
        h1 = TOps.Add(h1, TOps.Mul32(ai2, f19_6));
        h2 = TOps.Add(h2, TOps.Mul32(ai2, f38_7));
        h3 = TOps.Add(h3, TOps.Mul32(ai2, f19_8));
        h4 = TOps.Add(h4, TOps.Mul32(ai2, f38_9));
        ai = a.L6;
        ai2 = TOps.Add(ai, ai);
        h2 = TOps.Add(h2, TOps.Mul32(ai, f19_6));
        h3 = TOps.Add(h3, TOps.Mul32(ai2, f19_7));
        h4 = TOps.Add(h4, TOps.Mul32(ai2, f19_8));
        h5 = TOps.Add(h5, TOps.Mul32(ai2, f19_9));
        ai = a.L7;
        ai2 = TOps.Add(ai, ai);
        h4 = TOps.Add(h4, TOps.Mul32(ai, f38_7));
        h5 = TOps.Add(h5, TOps.Mul32(ai2, f19_8));
        h6 = TOps.Add(h6, TOps.Mul32(ai2, f38_9));
        ai = a.L8;
        ai2 = TOps.Add(ai, ai);
        h6 = TOps.Add(h6, TOps.Mul32(ai, f19_8));
        h7 = TOps.Add(h7, TOps.Mul32(ai2, f19_9));
        ai = a.L9;
        h8 = TOps.Add(h8, TOps.Mul32(ai, f38_9));
        Carry(h0, h1, h2, h3, h4, h5, h6, h7, h8, h9, out LaneField<TOps, TVec> r);
        return r;
    }

    /// <summary>a + b of two carried elements: limbs &lt; 2^27 (even) / 2^26.01 (odd), a valid <see cref="Mul"/> input.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static LaneField<TOps, TVec> Add(in LaneField<TOps, TVec> a, in LaneField<TOps, TVec> b)
    {
        LaneField<TOps, TVec> r;
        r.L0 = TOps.Add(a.L0, b.L0);
        r.L1 = TOps.Add(a.L1, b.L1);
        r.L2 = TOps.Add(a.L2, b.L2);
        r.L3 = TOps.Add(a.L3, b.L3);
        r.L4 = TOps.Add(a.L4, b.L4);
        r.L5 = TOps.Add(a.L5, b.L5);
        r.L6 = TOps.Add(a.L6, b.L6);
        r.L7 = TOps.Add(a.L7, b.L7);
        r.L8 = TOps.Add(a.L8, b.L8);
        r.L9 = TOps.Add(a.L9, b.L9);
        return r;
    }

    /// <summary>
    /// a − b as a + 2p − b for carried a and b (b's limbs are below 2p's, so no lane goes negative); limbs stay
    /// &lt; 2^27.58 (even) / 2^26.58 (odd), a valid <see cref="Mul"/> input.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static LaneField<TOps, TVec> Sub(in LaneField<TOps, TVec> a, in LaneField<TOps, TVec> b)
    {
        TVec even = TOps.Create((1UL << 27) - 2), odd = TOps.Create((1UL << 26) - 2);
        LaneField<TOps, TVec> r;
        r.L0 = TOps.Subtract(TOps.Add(a.L0, TOps.Create((1UL << 27) - 38)), b.L0);
        r.L1 = TOps.Subtract(TOps.Add(a.L1, odd), b.L1);
        r.L2 = TOps.Subtract(TOps.Add(a.L2, even), b.L2);
        r.L3 = TOps.Subtract(TOps.Add(a.L3, odd), b.L3);
        r.L4 = TOps.Subtract(TOps.Add(a.L4, even), b.L4);
        r.L5 = TOps.Subtract(TOps.Add(a.L5, odd), b.L5);
        r.L6 = TOps.Subtract(TOps.Add(a.L6, even), b.L6);
        r.L7 = TOps.Subtract(TOps.Add(a.L7, odd), b.L7);
        r.L8 = TOps.Subtract(TOps.Add(a.L8, even), b.L8);
        r.L9 = TOps.Subtract(TOps.Add(a.L9, odd), b.L9);
        return r;
    }

    /// <summary>Carries an <see cref="Add"/> or <see cref="Sub"/> result back to carried limbs.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static LaneField<TOps, TVec> Reduce(in LaneField<TOps, TVec> a)
    {
        Carry(a.L0, a.L1, a.L2, a.L3, a.L4, a.L5, a.L6, a.L7, a.L8, a.L9, out LaneField<TOps, TVec> r);
        return r;
    }

    /// <summary>Per lane: where <paramref name="mask"/> is all ones <paramref name="a"/>, else <paramref name="b"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static LaneField<TOps, TVec> Select(TVec mask, in LaneField<TOps, TVec> a, in LaneField<TOps, TVec> b)
    {
        LaneField<TOps, TVec> r;
        r.L0 = TOps.Select(mask, a.L0, b.L0);
        r.L1 = TOps.Select(mask, a.L1, b.L1);
        r.L2 = TOps.Select(mask, a.L2, b.L2);
        r.L3 = TOps.Select(mask, a.L3, b.L3);
        r.L4 = TOps.Select(mask, a.L4, b.L4);
        r.L5 = TOps.Select(mask, a.L5, b.L5);
        r.L6 = TOps.Select(mask, a.L6, b.L6);
        r.L7 = TOps.Select(mask, a.L7, b.L7);
        r.L8 = TOps.Select(mask, a.L8, b.L8);
        r.L9 = TOps.Select(mask, a.L9, b.L9);
        return r;
    }

    /// <summary>The same element in every lane, from its ten radix-2^25.5 limbs (<see cref="ToLimbs"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static LaneField<TOps, TVec> Broadcast(ReadOnlySpan<ulong> limbs)
    {
        LaneField<TOps, TVec> r;
        r.L0 = TOps.Create(limbs[0]);
        r.L1 = TOps.Create(limbs[1]);
        r.L2 = TOps.Create(limbs[2]);
        r.L3 = TOps.Create(limbs[3]);
        r.L4 = TOps.Create(limbs[4]);
        r.L5 = TOps.Create(limbs[5]);
        r.L6 = TOps.Create(limbs[6]);
        r.L7 = TOps.Create(limbs[7]);
        r.L8 = TOps.Create(limbs[8]);
        r.L9 = TOps.Create(limbs[9]);
        return r;
    }

    /// <summary>Ten carried radix-2^25.5 limbs of a radix-2^51 element (the layout of one lane).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void ToLimbs(in FieldElement value, Span<ulong> limbs)
    {
        const ulong Mask26 = (1UL << 26) - 1;
        FieldElement c = FieldElement.Carry(value);
        for (int limb = 0; limb < 5; limb++)
        {
            ulong l = Limb(c, limb);
            limbs[2 * limb] = l & Mask26;
            limbs[2 * limb + 1] = l >> 26;
        }
    }

    /// <summary>z^(2^252 − 3) in every lane.</summary>
    public static LaneField<TOps, TVec> Pow22523(in LaneField<TOps, TVec> z) => AdditionChains.Pow22523(z);

    static LaneField<TOps, TVec> IFieldArithmetic<LaneField<TOps, TVec>>.Multiply(in LaneField<TOps, TVec> a, in LaneField<TOps, TVec> b) => Mul(a, b);

    static LaneField<TOps, TVec> IFieldArithmetic<LaneField<TOps, TVec>>.SquareTimes(in LaneField<TOps, TVec> a, int n)
    {
        LaneField<TOps, TVec> r = Square(a);
        for (int i = 1; i < n; i++)
        {
            r = Square(r);
        }

        return r;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static TVec Times19(TVec x) => TOps.Add(TOps.Add(TOps.ShiftLeft(x, 4), TOps.ShiftLeft(x, 1)), x);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Carry(TVec h0, TVec h1, TVec h2, TVec h3, TVec h4, TVec h5, TVec h6, TVec h7, TVec h8, TVec h9, out LaneField<TOps, TVec> r)
    {
        TVec m26 = TOps.Create((1UL << 26) - 1);
        TVec m25 = TOps.Create((1UL << 25) - 1);
        h1 = TOps.Add(h1, TOps.ShiftRight(h0, 26)); h0 = TOps.And(h0, m26);
        h5 = TOps.Add(h5, TOps.ShiftRight(h4, 26)); h4 = TOps.And(h4, m26);
        h2 = TOps.Add(h2, TOps.ShiftRight(h1, 25)); h1 = TOps.And(h1, m25);
        h6 = TOps.Add(h6, TOps.ShiftRight(h5, 25)); h5 = TOps.And(h5, m25);
        h3 = TOps.Add(h3, TOps.ShiftRight(h2, 26)); h2 = TOps.And(h2, m26);
        h7 = TOps.Add(h7, TOps.ShiftRight(h6, 26)); h6 = TOps.And(h6, m26);
        h4 = TOps.Add(h4, TOps.ShiftRight(h3, 25)); h3 = TOps.And(h3, m25);
        h8 = TOps.Add(h8, TOps.ShiftRight(h7, 25)); h7 = TOps.And(h7, m25);
        h5 = TOps.Add(h5, TOps.ShiftRight(h4, 26)); h4 = TOps.And(h4, m26);
        h9 = TOps.Add(h9, TOps.ShiftRight(h8, 26)); h8 = TOps.And(h8, m26);
        h0 = TOps.Add(h0, Times19(TOps.ShiftRight(h9, 25))); h9 = TOps.And(h9, m25);
        h1 = TOps.Add(h1, TOps.ShiftRight(h0, 26)); h0 = TOps.And(h0, m26);
        r.L0 = h0;
        r.L1 = h1;
        r.L2 = h2;
        r.L3 = h3;
        r.L4 = h4;
        r.L5 = h5;
        r.L6 = h6;
        r.L7 = h7;
        r.L8 = h8;
        r.L9 = h9;
    }

    private static ulong Limb(in FieldElement f, int i) => i switch { 0 => f.L0, 1 => f.L1, 2 => f.L2, 3 => f.L3, _ => f.L4 };

    private readonly TVec Get(int i) => i switch { 0 => L0, 1 => L1, 2 => L2, 3 => L3, 4 => L4, 5 => L5, 6 => L6, 7 => L7, 8 => L8, _ => L9 };

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void Set(int i, TVec v)
    {
        switch (i)
        {
            case 0: L0 = v; break;
            case 1: L1 = v; break;
            case 2: L2 = v; break;
            case 3: L3 = v; break;
            case 4: L4 = v; break;
            case 5: L5 = v; break;
            case 6: L6 = v; break;
            case 7: L7 = v; break;
            case 8: L8 = v; break;
            default: L9 = v; break;
        }
    }
}
