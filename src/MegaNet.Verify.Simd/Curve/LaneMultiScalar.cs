using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using MegaNet.Verify.Simd.Field;
using F = MegaNet.Verify.Simd.Field.FieldElement;

namespace MegaNet.Verify.Simd.Curve;

/// <summary>
/// Pippenger's bucket method with the windows spread over vector lanes: lane j of group g accumulates window
/// g·Lanes + j, so one vector point addition adds a point into <c>Lanes</c> different buckets (one per window) at once
/// and lanes never contend for a bucket. The point is the same in every lane (broadcast, negated per lane by the digit's
/// sign); each lane's bucket is moved in and out of the vector registers by a transpose of whole bucket rows (no AVX-512
/// gather/scatter in .NET 10). The window sums are then combined with scalar doublings.
/// </summary>
/// <remarks>
/// Every addition is the complete extended-coordinates formula, so buckets start at the identity, empty buckets need
/// no flag and a digit of zero adds into a spare bucket 0 that is never read. The result equals
/// <see cref="MultiScalar.Pippenger"/> as a group element (tests compare them); representations may differ.
/// </remarks>
internal static class LaneMultiScalar<TOps, TVec>
    where TOps : struct, ILaneOps<TVec>
    where TVec : struct
{
    private const int Coordinates = 40;   // X, Y, Z, T × 10 limbs
    private const int NielsLimbs = 40;    // y+x, y−x, 2dxy, −2dxy × 10 limbs

    private static readonly ulong[] D2Limbs = Limbs(F.D2);

    /// <summary>Σ [sᵢ]Pᵢ; scalars &lt; 2^253.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static EdwardsPoint Compute(ReadOnlySpan<AffineNielsPoint> points, ReadOnlySpan<Scalar256> scalars)
    {
        int n = points.Length;
        int lanes = TOps.Lanes;
        int shortCount = 0;
        foreach (ref readonly Scalar256 s in scalars)
        {
            if (s.S2 == 0 && s.S3 == 0)
            {
                shortCount++;
            }
        }

        int w = WindowFor(n - shortCount, shortCount, lanes);
        int windows = (254 + w - 1) / w;
        int groups = (windows + lanes - 1) / lanes;
        int slots = groups * lanes;
        int bucketCount = 1 << (w - 1);

        short[] digits = ArrayPool<short>.Shared.Rent(n * slots);
        ulong[] niels = ArrayPool<ulong>.Shared.Rent(n * NielsLimbs);
        ulong[] store = ArrayPool<ulong>.Shared.Rent((bucketCount + 1) * Coordinates * lanes);
        EdwardsPoint[] windowSums = ArrayPool<EdwardsPoint>.Shared.Rent(slots);
        try
        {
            for (int i = 0; i < n; i++)
            {
                Span<short> d = digits.AsSpan(i * slots, slots);
                ScalarMath.SignedDigits(scalars[i], w, d[..windows]);
                d[windows..].Clear();
                Span<ulong> limbs = niels.AsSpan(i * NielsLimbs, NielsLimbs);
                LaneField<TOps, TVec>.ToLimbs(points[i].YplusX, limbs[..10]);
                LaneField<TOps, TVec>.ToLimbs(points[i].YminusX, limbs[10..20]);
                LaneField<TOps, TVec>.ToLimbs(points[i].XY2d, limbs[20..30]);
                LaneField<TOps, TVec>.ToLimbs(F.Carry(F.Negate(points[i].XY2d)), limbs[30..40]);
            }

            for (int g = 0; g < groups; g++)
            {
                AccumulateGroup(g, n, slots, digits, niels, store, bucketCount, windowSums.AsSpan(g * lanes, lanes));
            }

            // Σ_j 2^(w·j)·S_j, Horner from the top window down.
            // In four AVX2 lanes (PointInLanes; every tier with these vector lanes has AVX2), the same formulas.
            LaneField<Avx2Lanes, Vector256<ulong>> q = PointInLanes.From(windowSums[windows - 1]);
            for (int j = windows - 2; j >= 0; j--)
            {
                q = PointInLanes.DoubleTimes(q, w);
                q = PointInLanes.Add(q, PointInLanes.Cached(CachedPoint.From(windowSums[j]), negate: false));
            }

            return PointInLanes.Unpack(q);
        }
        finally
        {
            ArrayPool<short>.Shared.Return(digits);
            ArrayPool<ulong>.Shared.Return(niels);
            ArrayPool<ulong>.Shared.Return(store);
            ArrayPool<EdwardsPoint>.Shared.Return(windowSums);
        }
    }

    /// <summary>
    /// Bucket width minimising estimated vector additions: every long (253-bit) scalar costs one per lane group, every
    /// short (≤ 128-bit, the random coefficients of the batch equation) one per group its digits reach, and each group
    /// sums its 2^(w−1) buckets with two full additions each (about 1.3 mixed additions).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static int WindowFor(int longScalars, int shortScalars, int lanes)
    {
        int best = 4;
        double bestCost = double.MaxValue;
        for (int w = 4; w <= 14; w++)
        {
            int groups = ((254 + w - 1) / w + lanes - 1) / lanes;
            int shortGroups = ((129 + w - 1) / w + lanes - 1) / lanes;
            double cost = ((double)longScalars * groups) + ((double)shortScalars * shortGroups) + (2.6 * groups * (1 << (w - 1)));
            if (cost < bestCost)
            {
                bestCost = cost;
                best = w;
            }
        }

        return best;
    }

    [SkipLocalsInit]
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static unsafe void AccumulateGroup(int g, int n, int slots, short[] digits, ulong[] niels, ulong[] store, int bucketCount, Span<EdwardsPoint> sums)
    {
        int lanes = TOps.Lanes;
        // Each lane's buckets lie together, a row of 40 limbs each, so that moving one bucket per lane in or out of the
        // vector point is a transpose of whole rows (see ILaneOps.LoadRows), not 40 strided copies per lane.
        int laneStride = (bucketCount + 1) * Coordinates;

        // Every bucket (and each lane's spare bucket 0) starts at the identity (0 : 1 : 1 : 0).
        Span<ulong> all = store.AsSpan(0, lanes * laneStride);
        all.Clear();
        for (int row = 0; row < lanes * (bucketCount + 1); row++)
        {
            all[(row * Coordinates) + 10] = 1;   // Y limb 0
            all[(row * Coordinates) + 20] = 1;   // Z limb 0
        }

        ulong** rows = stackalloc ulong*[lanes];
        Span<ulong> signs = stackalloc ulong[lanes];
        LanePoint p = default;
        LaneNiels q;
        LaneField<TOps, TVec> d2 = LaneField<TOps, TVec>.Broadcast(D2Limbs);
        LanePoint running = Identity(), sum = Identity();
        LaneCached cached;
        fixed (ulong* buckets = store)
        {
            ulong* point = (ulong*)Unsafe.AsPointer(ref p);
            for (int i = 0; i < n; i++)
            {
                ReadOnlySpan<short> d = digits.AsSpan((i * slots) + (g * lanes), lanes);
                if (d.IndexOfAnyExcept((short)0) < 0)
                {
                    continue;
                }

                // |digit| ≤ bucketCount (SignedDigits), so every row lies inside its lane's buckets.
                for (int j = 0; j < lanes; j++)
                {
                    int digit = d[j];
                    rows[j] = buckets + (j * laneStride) + ((digit < 0 ? -digit : digit) * Coordinates);
                    signs[j] = digit < 0 ? ulong.MaxValue : 0;
                }

                TOps.LoadRows(rows, point, Coordinates);
                ReadOnlySpan<ulong> limbs = niels.AsSpan(i * NielsLimbs, NielsLimbs);
                TVec negative = TOps.Load(signs);
                LaneField<TOps, TVec> yPlusX = LaneField<TOps, TVec>.Broadcast(limbs[..10]);
                LaneField<TOps, TVec> yMinusX = LaneField<TOps, TVec>.Broadcast(limbs[10..20]);
                // −(x, y) = (−x, y): y+x and y−x swap, 2dxy changes sign.
                q.YplusX = LaneField<TOps, TVec>.Select(negative, yMinusX, yPlusX);
                q.YminusX = LaneField<TOps, TVec>.Select(negative, yPlusX, yMinusX);
                q.XY2d = LaneField<TOps, TVec>.Select(negative, LaneField<TOps, TVec>.Broadcast(limbs[30..40]), LaneField<TOps, TVec>.Broadcast(limbs[20..30]));
                AddNiels(ref p, q);
                TOps.StoreRows(point, rows, Coordinates);
            }

            // Per lane Σ b·bucket[b] with a running sum from the top bucket down.
            for (int b = bucketCount; b >= 1; b--)
            {
                for (int j = 0; j < lanes; j++)
                {
                    rows[j] = buckets + (j * laneStride) + (b * Coordinates);
                }

                TOps.LoadRows(rows, point, Coordinates);
                ToCached(p, d2, out cached);
                AddCached(ref running, cached);
                ToCached(running, d2, out cached);
                AddCached(ref sum, cached);
            }
        }

        Span<F> lane = stackalloc F[lanes];
        for (int coordinate = 0; coordinate < 4; coordinate++)
        {
            // X, Y, Z, T: the LanePoint's four fields in order.
            MemoryMarshal.CreateSpan(ref sum.X, 4)[coordinate].Unpack(lane);
            for (int j = 0; j < lanes; j++)
            {
                MemoryMarshal.CreateSpan(ref sums[j].X, 4)[coordinate] = lane[j];
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static LanePoint Identity()
    {
        Span<ulong> one = stackalloc ulong[10];
        one.Clear();
        one[0] = 1;
        LanePoint p = default;
        p.Y = LaneField<TOps, TVec>.Broadcast(one);
        p.Z = p.Y;
        return p;
    }

    /// <summary>P + Q for an affine Q as (y+x, y−x, 2dxy): 7 multiplications per lane (as <see cref="EdwardsPoint.AddAffine"/>).</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    [SkipLocalsInit]
    private static void AddNiels(ref LanePoint p, in LaneNiels q)
    {
        LaneField<TOps, TVec>.MulInto(LaneField<TOps, TVec>.Sub(p.Y, p.X), q.YminusX, out LaneField<TOps, TVec> a);
        LaneField<TOps, TVec>.MulInto(LaneField<TOps, TVec>.Add(p.Y, p.X), q.YplusX, out LaneField<TOps, TVec> b);
        LaneField<TOps, TVec>.MulInto(p.T, q.XY2d, out LaneField<TOps, TVec> c);
        // Carried so that d − c below starts from carried limbs (the Sub bound).
        LaneField<TOps, TVec> d = LaneField<TOps, TVec>.Reduce(LaneField<TOps, TVec>.Add(p.Z, p.Z));
        Finish(ref p, a, b, c, d);
    }

    /// <summary>P + Q for a cached Q: 8 multiplications per lane (as <see cref="EdwardsPoint.Add"/>).</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    [SkipLocalsInit]
    private static void AddCached(ref LanePoint p, in LaneCached q)
    {
        LaneField<TOps, TVec>.MulInto(LaneField<TOps, TVec>.Sub(p.Y, p.X), q.YminusX, out LaneField<TOps, TVec> a);
        LaneField<TOps, TVec>.MulInto(LaneField<TOps, TVec>.Add(p.Y, p.X), q.YplusX, out LaneField<TOps, TVec> b);
        LaneField<TOps, TVec>.MulInto(p.T, q.T2d, out LaneField<TOps, TVec> c);
        LaneField<TOps, TVec>.MulInto(p.Z, q.Z2, out LaneField<TOps, TVec> d);
        Finish(ref p, a, b, c, d);
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    [SkipLocalsInit]
    private static void Finish(ref LanePoint r, in LaneField<TOps, TVec> a, in LaneField<TOps, TVec> b, in LaneField<TOps, TVec> c, in LaneField<TOps, TVec> d)
    {
        LaneField<TOps, TVec> e = LaneField<TOps, TVec>.Sub(b, a);
        LaneField<TOps, TVec> f = LaneField<TOps, TVec>.Sub(d, c);
        LaneField<TOps, TVec> g = LaneField<TOps, TVec>.Add(d, c);
        LaneField<TOps, TVec> h = LaneField<TOps, TVec>.Add(b, a);
        LaneField<TOps, TVec>.MulInto(e, f, out r.X);
        LaneField<TOps, TVec>.MulInto(g, h, out r.Y);
        LaneField<TOps, TVec>.MulInto(e, h, out r.T);
        LaneField<TOps, TVec>.MulInto(f, g, out r.Z);
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    [SkipLocalsInit]
    private static void ToCached(in LanePoint p, in LaneField<TOps, TVec> d2, out LaneCached r)
    {
        r.YplusX = LaneField<TOps, TVec>.Reduce(LaneField<TOps, TVec>.Add(p.Y, p.X));
        r.YminusX = LaneField<TOps, TVec>.Reduce(LaneField<TOps, TVec>.Sub(p.Y, p.X));
        r.Z2 = LaneField<TOps, TVec>.Reduce(LaneField<TOps, TVec>.Add(p.Z, p.Z));
        LaneField<TOps, TVec>.MulInto(p.T, d2, out r.T2d);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static ulong[] Limbs(in F value)
    {
        ulong[] limbs = new ulong[10];
        LaneField<TOps, TVec>.ToLimbs(value, limbs);
        return limbs;
    }

    /// <summary>Extended coordinates, one point per lane; 40 vectors laid out limb-major (the bucket row layout).</summary>
    [StructLayout(LayoutKind.Sequential)]
    private struct LanePoint
    {
        public LaneField<TOps, TVec> X, Y, Z, T;
    }

    private struct LaneNiels
    {
        public LaneField<TOps, TVec> YplusX, YminusX, XY2d;
    }

    private struct LaneCached
    {
        public LaneField<TOps, TVec> YplusX, YminusX, Z2, T2d;
    }
}
