using System.Buffers;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using MegaNet.Verify.Simd.Field;
using F = MegaNet.Verify.Simd.Field.FieldElement;

namespace MegaNet.Verify.Simd.Curve;

/// <summary>
/// Multi-scalar multiplication Σ [sᵢ]Pᵢ over affine points: Straus (interleaved signed windows, one shared doubling
/// chain) for a few points, Pippenger (signed-digit buckets) for many — on vector lanes (one window per lane) where
/// AVX-512F or AVX2 exists, else scalar. Scalars are &lt; 2^253.
/// </summary>
internal static class MultiScalar
{
    private const int StrausWindow = 5;
    private const int StrausWindows = 252 / StrausWindow + 2;
    private const int StrausTable = 1 << (StrausWindow - 1);

    /// <summary>Below this many points Straus is cheaper than Pippenger (measured: bucket aggregation dominates small inputs).</summary>
    public const int PippengerThreshold = 190;

    /// <summary>From this many points the lane-parallel bucket method (<see cref="LaneMultiScalar{TOps, TVec}"/>) beats
    /// Straus where vector lanes exist (measured per signature: 17 points 29 µs on AVX-512 and 36 µs on AVX2 against
    /// 55 µs for Straus; 9 points 53 and 61 against 55).</summary>
    public const int LaneThreshold = 12;

    /// <summary>Σ [sᵢ]Pᵢ by the fastest method for this size and ISA tier; every method gives the same group element.</summary>
    public static EdwardsPoint Compute(ReadOnlySpan<AffineNielsPoint> points, ReadOnlySpan<Scalar256> scalars)
    {
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

        return points.Length < PippengerThreshold ? Straus(points, scalars) : Pippenger(points, scalars, WindowFor(points.Length));
    }

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

    public static EdwardsPoint Straus(ReadOnlySpan<AffineNielsPoint> points, ReadOnlySpan<Scalar256> scalars)
    {
        int n = points.Length;
        CachedPoint[] table = ArrayPool<CachedPoint>.Shared.Rent(n * StrausTable);
        short[] digits = ArrayPool<short>.Shared.Rent(n * StrausWindows);
        try
        {
            int top = 0;
            for (int i = 0; i < n; i++)
            {
                Span<short> d = digits.AsSpan(i * StrausWindows, StrausWindows);
                ScalarMath.SignedDigits(scalars[i], StrausWindow, d);
                int last = d.LastIndexOfAnyExcept((short)0);
                top = Math.Max(top, last);

                // table[k − 1] = [k]P for k = 1 .. 16.
                Span<CachedPoint> t = table.AsSpan(i * StrausTable, StrausTable);
                EdwardsPoint p = FromAffineNiels(points[i]);
                t[0] = CachedPoint.From(p);
                EdwardsPoint p2 = EdwardsPoint.Double(p);
                t[1] = CachedPoint.From(p2);
                EdwardsPoint acc = p2;
                for (int k = 2; k < StrausTable; k++)
                {
                    acc = EdwardsPoint.Add(acc, t[0]);
                    t[k] = CachedPoint.From(acc);
                }
            }

            EdwardsPoint q = EdwardsPoint.Identity;
            for (int j = top; j >= 0; j--)
            {
                if (j != top)
                {
                    q = EdwardsPoint.DoubleTimes(q, StrausWindow);
                }

                for (int i = 0; i < n; i++)
                {
                    int d = digits[i * StrausWindows + j];
                    if (d > 0)
                    {
                        q = EdwardsPoint.Add(q, table[i * StrausTable + d - 1]);
                    }
                    else if (d < 0)
                    {
                        q = EdwardsPoint.Sub(q, table[i * StrausTable - d - 1]);
                    }
                }
            }

            return q;
        }
        finally
        {
            ArrayPool<CachedPoint>.Shared.Return(table);
            ArrayPool<short>.Shared.Return(digits);
        }
    }

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
    public static EdwardsPoint FromAffineNiels(in AffineNielsPoint p)
    {
        F x2 = F.Carry(F.Sub(p.YplusX, p.YminusX));   // 2x
        F y2 = F.Carry(F.Add(p.YplusX, p.YminusX));   // 2y
        // (2x : 2y : 2 : 2xy) since T/Z = xy ⇒ T = 2xy = (2x·2y)/2.
        F two = F.Add(F.One, F.One);
        F t = F.Mul(F.Mul(x2, y2), Half);
        return new EdwardsPoint { X = x2, Y = y2, Z = two, T = t };
    }

    private static readonly F Half = F.Invert(F.Add(F.One, F.One));
}
