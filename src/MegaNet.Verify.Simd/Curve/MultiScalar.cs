using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using MegaNet.Verify.Simd.Field;
using F = MegaNet.Verify.Simd.Field.FieldElement;
using V = MegaNet.Verify.Simd.Field.LaneField<MegaNet.Verify.Simd.Field.Avx2Lanes, System.Runtime.Intrinsics.Vector256<ulong>>;

namespace MegaNet.Verify.Simd.Curve;

/// <summary>
/// Multi-scalar multiplication Σ [sᵢ]Pᵢ over affine points: Straus (interleaved non-adjacent forms, one shared
/// doubling chain) for a few points, Pippenger (signed-digit buckets) for many — on vector lanes (one window per lane) where
/// AVX-512F or AVX2 exists, else scalar. Scalars are &lt; 2^253.
/// </summary>
internal static class MultiScalar
{
    /// <summary>Below this many points Straus is cheaper than Pippenger (measured: bucket aggregation dominates small inputs).</summary>
    public const int PippengerThreshold = 190;

    /// <summary>From this many points the lane-parallel bucket method (<see cref="LaneMultiScalar{TOps, TVec}"/>) on AVX2 beats
    /// <see cref="StrausNaf"/>. Measured with <c>meganet bench</c> on one thread, key cache off, at the AVX2 tier of an AMD
    /// EPYC (2026-12-01, once Straus's chain ran in four lanes, <see cref="PointInLanes"/>), against the previous threshold
    /// of 18 in turn: as a ratio to libsodium, Straus did 1.90–1.93× against the lanes' 1.75–1.87× at batch 8 (17
    /// points), 2.06–2.09× against 1.92× at batch 12, and the two were even at batch 16 (33 points: 2.14–2.17× and
    /// 2.09–2.19×). (Before the lane chain the lanes won from batch 9; before their row transposes, from batch 24.)</summary>
    public const int Avx2LaneThreshold = 34;

    /// <summary>The same for AVX-512F's eight lanes. Measured with <c>meganet bench</c> on one thread, key cache off
    /// (2026-12-01, AMD EPYC with AVX-512F, once Straus's chain ran in four lanes), against thresholds of 10 and 34 in
    /// turn: Straus did 2.00–2.04× libsodium against the lanes' 1.72–1.74× at batch 5 (11 points), the two were even at
    /// batch 8 (17 points, 2.37× and 2.36–2.39×), and the lanes did 2.88–2.90× against Straus's 2.52× at batch 12 and
    /// 3.26–3.28× against 2.67–2.81× at 16. (The threshold was 10 points before the lane chain, when Straus was scalar.)</summary>
    public const int Avx512LaneThreshold = 18;

    /// <summary>The lane threshold of this process's ISA tier; <see cref="int.MaxValue"/> without vector lanes.</summary>
    public static int LaneThreshold { get; } =
        Avx512F.IsSupported && Vector512.IsHardwareAccelerated ? Avx512LaneThreshold :
        Avx2.IsSupported ? Avx2LaneThreshold :
        int.MaxValue;

    /// <summary>Σ [sᵢ]Pᵢ by the fastest method for this size and ISA tier; every method gives the same group element.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static EdwardsPoint Compute(ReadOnlySpan<AffineNielsPoint> points, ReadOnlySpan<Scalar256> scalars)
    {
        if (UsesStraus(points.Length))
        {
            return StrausNaf(default, points, scalars);
        }

        if (points.Length >= LaneThreshold)
        {
            if (Avx512F.IsSupported && Vector512.IsHardwareAccelerated)
            {
                return LaneMultiScalar<Avx512Lanes, Vector512<ulong>>.Compute(points, scalars);
            }

            if (Avx2.IsSupported)
            {
                return LaneMultiScalar<Avx2Lanes, Vector256<ulong>>.Compute(points, scalars);
            }
        }

        return Pippenger(points, scalars, WindowFor(points.Length));
    }

    /// <summary><see cref="Compute"/> for points whose first is B: where that takes Straus, B's scalar goes apart to
    /// <see cref="StrausNaf"/>, against B's table computed once.</summary>
    public static EdwardsPoint ComputeBaseFirst(ReadOnlySpan<AffineNielsPoint> points, ReadOnlySpan<Scalar256> scalars) =>
        UsesStraus(points.Length) ? StrausNaf(scalars[0], points[1..], scalars[1..]) : Compute(points, scalars);

    /// <summary>True when Straus is the fastest method for <paramref name="n"/> points on this ISA tier.</summary>
    private static bool UsesStraus(int n) => n < Math.Min(LaneThreshold, PippengerThreshold);

    /// <summary>Bucket width for n points: about log2(n) − 2, which balances n additions per window against 2^w bucket sums.</summary>
    public static int WindowFor(int n) => n switch
    {
        < 500 => 6,
        < 1500 => 7,
        < 4000 => 8,
        < 10000 => 9,
        < 30000 => 10,
        < 80000 => 11,
        _ => 12,
    };

    /// <summary>NAF width for the points of <see cref="StrausNaf"/>: a table of 8 odd multiples each.</summary>
    private const int NafWidth = 5;
    private const int NafTable = 1 << (NafWidth - 2);

    /// <summary>Straus's digit rows: B, then [2^128]B (all zero unless split), then the points.</summary>
    private const int FirstPoint = 2;

    /// <summary>NAF width for the base point, whose 64 odd multiples are computed once: about one addition in 9 bits.</summary>
    private const int BaseNafWidth = 8;

    // Before BaseOddMultiples: static fields are initialised in textual order, and that table's computation reads it.
    private static readonly F Half = F.Invert(F.Add(F.One, F.One));

    /// <summary>[1]B, [3]B, …, [127]B, affine.</summary>
    private static readonly AffineNielsPoint[] BaseOddMultiples = OddMultiples(BasePoint.Niels, 1 << (BaseNafWidth - 2));

    /// <summary>The same for B' = [2^128]B, the base of the upper half of a split single check's base scalar.</summary>
    private static readonly AffineNielsPoint[] HighBaseOddMultiples =
        OddMultiples(ToAffineNiels(EdwardsPoint.DoubleTimes(FromAffineNiels(BasePoint.Niels), 128)), 1 << (BaseNafWidth - 2));

    /// <summary>Both tables for <see cref="PointInLanes.Add"/>: entry k at 2k, its negation at 2k + 1.</summary>
    private static readonly V[] BaseOddMultiplesInLanes = InLanes(BaseOddMultiples);

    private static readonly V[] HighBaseOddMultiplesInLanes = InLanes(HighBaseOddMultiples);

    /// <summary>
    /// [<paramref name="baseScalar"/>]B + Σ [sᵢ]Pᵢ by Straus with width-5 non-adjacent forms (a table of 8 odd multiples
    /// per point, about one addition per 6 bits) and a width-8 form for the base point against a table computed once
    /// (about one per 9 bits), the additions placed by one shared doubling chain. For a handful of points: the smallest
    /// batches (a single signature takes <see cref="StrausNafSplitBase"/>). Scalars &lt; 2^253.
    /// </summary>
    public static EdwardsPoint StrausNaf(in Scalar256 baseScalar, ReadOnlySpan<AffineNielsPoint> points, ReadOnlySpan<Scalar256> scalars) =>
        Straus(baseScalar, default, split: false, points, scalars);

    /// <summary>
    /// [<paramref name="baseLow"/>]B + [<paramref name="baseHigh"/>][2^128]B + Σ [sᵢ]Pᵢ: <see cref="StrausNaf"/> for a base
    /// scalar cut in halves (each &lt; 2^128), both against tables computed once, so that a chain of short scalars stays
    /// short (<see cref="LatticeSplit"/>).
    /// </summary>
    public static EdwardsPoint StrausNafSplitBase(in Scalar256 baseLow, in Scalar256 baseHigh, ReadOnlySpan<AffineNielsPoint> points, ReadOnlySpan<Scalar256> scalars) =>
        Straus(baseLow, baseHigh, split: true, points, scalars);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static EdwardsPoint Straus(in Scalar256 baseScalar, in Scalar256 highBaseScalar, bool split, ReadOnlySpan<AffineNielsPoint> points, ReadOnlySpan<Scalar256> scalars)
    {
        const int Length = ScalarMath.NafLength;
        int n = points.Length;
        sbyte[] digits = ArrayPool<sbyte>.Shared.Rent((n + FirstPoint) * Length);
        CachedPoint[] table = ArrayPool<CachedPoint>.Shared.Rent(Math.Max(1, n * NafTable));
        V[]? lanes = null;
        try
        {
            ScalarMath.NonAdjacentForm(baseScalar, BaseNafWidth, digits.AsSpan(0, Length));
            if (split)
            {
                ScalarMath.NonAdjacentForm(highBaseScalar, BaseNafWidth, digits.AsSpan(Length, Length));
            }
            else
            {
                digits.AsSpan(Length, Length).Clear();
            }

            for (int i = 0; i < n; i++)
            {
                ScalarMath.NonAdjacentForm(scalars[i], NafWidth, digits.AsSpan((i + FirstPoint) * Length, Length));

                // table[k] = [2k + 1]P for k = 0 .. 7.
                Span<CachedPoint> t = table.AsSpan(i * NafTable, NafTable);
                EdwardsPoint p = FromAffineNiels(points[i]);
                t[0] = CachedPoint.From(p);
                CachedPoint p2 = CachedPoint.From(EdwardsPoint.Double(p));
                for (int k = 1; k < NafTable; k++)
                {
                    p = EdwardsPoint.Add(p, p2);
                    t[k] = CachedPoint.From(p);
                }
            }

            // The same additions in the same order on either representation of the running point.
            if (!PointInLanes.IsSupported)
            {
                return Chain(new ScalarChain(table), digits, n + FirstPoint);
            }

            lanes = ArrayPool<V>.Shared.Rent(Math.Max(1, 2 * n * NafTable));
            for (int k = 0; k < n * NafTable; k++)
            {
                lanes[2 * k] = PointInLanes.Cached(table[k], negate: false);
                lanes[(2 * k) + 1] = PointInLanes.Cached(table[k], negate: true);
            }

            return Chain(new LaneChain(lanes), digits, n + FirstPoint);
        }
        finally
        {
            ArrayPool<sbyte>.Shared.Return(digits);
            ArrayPool<CachedPoint>.Shared.Return(table);
            if (lanes is not null)
            {
                ArrayPool<V>.Shared.Return(lanes);
            }
        }
    }

    /// <summary>Straus's doublings and additions from the top digit down: a run of doublings at once before the first
    /// addition at each digit position that has any, and the doublings below the last at the end.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static EdwardsPoint Chain<TChain>(TChain chain, sbyte[] digits, int rows)
        where TChain : struct, IStrausChain
    {
        const int Length = ScalarMath.NafLength;
        int last = -1; // the bit position of the last additions, −1 before the first
        for (int j = Length - 1; j >= 0; j--)
        {
            bool any = false;
            for (int i = 0; i < rows; i++)
            {
                int d = digits[(i * Length) + j];
                if (d == 0)
                {
                    continue;
                }

                if (!any && last >= 0)
                {
                    chain.DoubleTimes(last - j);
                }

                any = true;
                if (i < FirstPoint)
                {
                    chain.AddBase(high: i == 1, d);
                }
                else
                {
                    chain.AddPoint(i - FirstPoint, d);
                }
            }

            if (any)
            {
                last = j;
            }
        }

        if (last > 0)
        {
            chain.DoubleTimes(last);
        }

        return chain.Result;
    }

    /// <summary>The running point of a Straus chain and the additions it takes (digits odd, of either sign).</summary>
    private interface IStrausChain
    {
        EdwardsPoint Result { get; }

        void DoubleTimes(int n);

        /// <summary>± [|d|]B, or [|d|]B' for <paramref name="high"/>, from the odd multiples computed once.</summary>
        void AddBase(bool high, int d);

        /// <summary>± [|d|]Pᵢ from point i's table.</summary>
        void AddPoint(int i, int d);
    }

    /// <summary>Scalar formulas: where there are no AVX2 lanes.</summary>
    private struct ScalarChain(CachedPoint[] table) : IStrausChain
    {
        private EdwardsPoint _q = EdwardsPoint.Identity;

        public readonly EdwardsPoint Result => _q;

        public void DoubleTimes(int n) => _q = EdwardsPoint.DoubleTimes(_q, n);

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void AddBase(bool high, int d)
        {
            AffineNielsPoint[] odd = high ? HighBaseOddMultiples : BaseOddMultiples;
            _q = d > 0 ? EdwardsPoint.AddAffine(_q, odd[d >> 1]) : EdwardsPoint.SubAffine(_q, odd[-d >> 1]);
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void AddPoint(int i, int d)
        {
            int row = i * NafTable;
            _q = d > 0 ? EdwardsPoint.Add(_q, table[row + (d >> 1)]) : EdwardsPoint.Sub(_q, table[row + (-d >> 1)]);
        }
    }

    /// <summary>The running point in four AVX2 lanes (<see cref="PointInLanes"/>); each table entry twice, + then −.</summary>
    private struct LaneChain(V[] table) : IStrausChain
    {
        private V _q = PointInLanes.Identity;

        public readonly EdwardsPoint Result => PointInLanes.Unpack(_q);

        public void DoubleTimes(int n) => _q = PointInLanes.DoubleTimes(_q, n);

        public void AddBase(bool high, int d) =>
            _q = PointInLanes.Add(_q, (high ? HighBaseOddMultiplesInLanes : BaseOddMultiplesInLanes)[Signed(d)]);

        public void AddPoint(int i, int d) => _q = PointInLanes.Add(_q, table[(2 * i * NafTable) + Signed(d)]);

        // Entry k (for ±(2k + 1)) at 2k, its negation at 2k + 1.
        private static int Signed(int d) => d > 0 ? d & ~1 : (-d & ~1) + 1;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static V[] InLanes(AffineNielsPoint[] points)
    {
        var result = new V[2 * points.Length];
        for (int k = 0; k < points.Length; k++)
        {
            result[2 * k] = PointInLanes.Cached(points[k], negate: false);
            result[(2 * k) + 1] = PointInLanes.Cached(points[k], negate: true);
        }

        return result;
    }

    /// <summary>[1]P, [3]P, …, [2·count − 1]P as affine points (one inversion each: for tables computed once).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static AffineNielsPoint[] OddMultiples(in AffineNielsPoint point, int count)
    {
        var result = new AffineNielsPoint[count];
        EdwardsPoint p = FromAffineNiels(point);
        CachedPoint p2 = CachedPoint.From(EdwardsPoint.Double(p));
        for (int k = 0; k < count; k++)
        {
            if (k > 0)
            {
                p = EdwardsPoint.Add(p, p2);
            }

            result[k] = ToAffineNiels(p);
        }

        return result;
    }

    /// <summary>P prepared for mixed addition (one inversion: for points computed once).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static AffineNielsPoint ToAffineNiels(in EdwardsPoint p)
    {
        F zInverse = F.Invert(p.Z);
        F x = F.Mul(p.X, zInverse), y = F.Mul(p.Y, zInverse);
        return AffineNielsPoint.FromAffine(new EdwardsPoint { X = x, Y = y, Z = F.One, T = F.Mul(x, y) });
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static EdwardsPoint Pippenger(ReadOnlySpan<AffineNielsPoint> points, ReadOnlySpan<Scalar256> scalars, int w)
    {
        int n = points.Length;
        int windows = 252 / w + 2;
        int bucketCount = 1 << (w - 1);
        short[] digits = ArrayPool<short>.Shared.Rent(n * windows);
        EdwardsPoint[] buckets = ArrayPool<EdwardsPoint>.Shared.Rent(bucketCount);
        bool[] used = ArrayPool<bool>.Shared.Rent(bucketCount);
        try
        {
            int top = 0;
            for (int i = 0; i < n; i++)
            {
                Span<short> d = digits.AsSpan(i * windows, windows);
                ScalarMath.SignedDigits(scalars[i], w, d);
                top = Math.Max(top, d.LastIndexOfAnyExcept((short)0));
            }

            EdwardsPoint q = EdwardsPoint.Identity;
            for (int j = top; j >= 0; j--)
            {
                if (j != top)
                {
                    q = EdwardsPoint.DoubleTimes(q, w);
                }

                Array.Clear(used, 0, bucketCount);
                for (int i = 0; i < n; i++)
                {
                    int d = digits[i * windows + j];
                    if (d == 0)
                    {
                        continue;
                    }

                    int b = (d > 0 ? d : -d) - 1;
                    if (!used[b])
                    {
                        buckets[b] = d > 0 ? FromAffineNiels(points[i]) : FromAffineNiels(points[i].Negate());
                        used[b] = true;
                    }
                    else
                    {
                        buckets[b] = d > 0 ? EdwardsPoint.AddAffine(buckets[b], points[i]) : EdwardsPoint.SubAffine(buckets[b], points[i]);
                    }
                }

                // Σ (b + 1)·bucket[b] with two running sums, from the top bucket down.
                EdwardsPoint running = EdwardsPoint.Identity, sum = EdwardsPoint.Identity;
                bool any = false;
                for (int b = bucketCount - 1; b >= 0; b--)
                {
                    if (used[b])
                    {
                        running = any ? EdwardsPoint.Add(running, CachedPoint.From(buckets[b])) : buckets[b];
                        any = true;
                    }

                    if (any)
                    {
                        sum = EdwardsPoint.Add(sum, CachedPoint.From(running));
                    }
                }

                if (any)
                {
                    q = EdwardsPoint.Add(q, CachedPoint.From(sum));
                }
            }

            return q;
        }
        finally
        {
            ArrayPool<short>.Shared.Return(digits);
            ArrayPool<EdwardsPoint>.Shared.Return(buckets);
            ArrayPool<bool>.Shared.Return(used);
        }
    }

    /// <summary>Recovers the extended point from (y+x, y−x, 2dxy): x = ((y+x) − (y−x))/2, y = ((y+x) + (y−x))/2, computed
    /// projectively as X = (y+x) − (y−x), Y = (y+x) + (y−x), Z = 2, T = X·Y/2.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static EdwardsPoint FromAffineNiels(in AffineNielsPoint p)
    {
        F x2 = F.Carry(F.Sub(p.YplusX, p.YminusX));   // 2x
        F y2 = F.Carry(F.Add(p.YplusX, p.YminusX));   // 2y
        // (2x : 2y : 2 : 2xy) since T/Z = xy ⇒ T = 2xy = (2x·2y)/2.
        F two = F.Add(F.One, F.One);
        F t = F.Mul(F.Mul(x2, y2), Half);
        return new EdwardsPoint { X = x2, Y = y2, Z = two, T = t };
    }
}
