using System.Runtime.CompilerServices;
using MegaNet.Verify.Simd.Field;
using F = MegaNet.Verify.Simd.Field.FieldElement;

namespace MegaNet.Verify.Simd.Curve;

/// <summary>A point of edwards25519 in extended coordinates (X : Y : Z : T), x = X/Z, y = Y/Z, x·y = T/Z.</summary>
internal struct EdwardsPoint
{
    public F X, Y, Z, T;

    public static EdwardsPoint Identity => new() { X = F.Zero, Y = F.One, Z = F.One, T = F.Zero };

    /// <summary>
    /// Strict decoding (docs/verification.md rule 3): y &lt; p, x² = (y² − 1)/(d·y² + 1) has a root, and not x = 0 with
    /// the sign bit set. The result is affine (Z = 1).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static bool TryDecode(ReadOnlySpan<byte> s, out EdwardsPoint p)
    {
        p = Identity;
        if (!F.IsCanonicalEncoding(s))
        {
            return false;
        }

        F y = F.FromBytes(s);
        F y2 = F.Square(y);
        F u = F.Carry(F.Sub(y2, F.One));
        F v = F.Carry(F.Add(F.Mul(y2, F.D), F.One));
        F v3 = F.Mul(F.Square(v), v);
        F v7 = F.Mul(F.Square(v3), v);
        F x = F.Mul(F.Mul(u, v3), F.Pow22523(F.Mul(u, v7)));
        F vxx = F.Mul(v, F.Square(x));
        if (!F.AreEqual(vxx, u))
        {
            if (!F.AreEqual(vxx, F.Negate(u)))
            {
                return false;
            }

            x = F.Mul(x, F.SqrtM1);
        }

        bool sign = (s[31] & 0x80) != 0;
        if (sign && x.IsZero())
        {
            return false;
        }

        if (x.IsOdd() != sign)
        {
            x = F.Carry(F.Negate(x));
        }

        p.X = x;
        p.Y = y;
        p.Z = F.One;
        p.T = F.Mul(x, y);
        return true;
    }

    /// <summary>
    /// <see cref="TryDecode"/> for up to 8 encodings (32 bytes each, back to back) with the square-root exponentiations
    /// computed together (<see cref="F.Pow22523Many"/>: AVX-512F/AVX2 lanes); verdicts and points are identical to decoding one at a time.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void TryDecodeMany(ReadOnlySpan<byte> encodings, Span<EdwardsPoint> points, Span<bool> ok)
    {
        int n = points.Length;
        System.Diagnostics.Debug.Assert(n <= 8 && encodings.Length == 32 * n && ok.Length == n);
        Span<F> u = stackalloc F[n];
        Span<F> v3 = stackalloc F[n];
        Span<F> v = stackalloc F[n];
        Span<F> pow = stackalloc F[n];
        for (int i = 0; i < n; i++)
        {
            ReadOnlySpan<byte> s = encodings.Slice(32 * i, 32);
            ok[i] = F.IsCanonicalEncoding(s);
            F y = F.FromBytes(s);
            points[i].Y = y;
            F y2 = F.Square(y);
            u[i] = F.Carry(F.Sub(y2, F.One));
            v[i] = F.Carry(F.Add(F.Mul(y2, F.D), F.One));
            v3[i] = F.Mul(F.Square(v[i]), v[i]);
            F v7 = F.Mul(F.Square(v3[i]), v[i]);
            pow[i] = F.Mul(u[i], v7);
        }

        F.Pow22523Many(pow);
        for (int i = 0; i < n; i++)
        {
            ReadOnlySpan<byte> s = encodings.Slice(32 * i, 32);
            F x = F.Mul(F.Mul(u[i], v3[i]), pow[i]);
            F vxx = F.Mul(v[i], F.Square(x));
            if (!F.AreEqual(vxx, u[i]))
            {
                if (!F.AreEqual(vxx, F.Negate(u[i])))
                {
                    ok[i] = false;
                    continue;
                }

                x = F.Mul(x, F.SqrtM1);
            }

            bool sign = (s[31] & 0x80) != 0;
            if (sign && x.IsZero())
            {
                ok[i] = false;
                continue;
            }

            if (x.IsOdd() != sign)
            {
                x = F.Carry(F.Negate(x));
            }

            points[i].X = x;
            points[i].Z = F.One;
            points[i].T = F.Mul(x, points[i].Y);
        }
    }

    /// <summary>The canonical encoding (for tests and diagnostics; verification never encodes).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public readonly void Encode(Span<byte> s)
    {
        F zInv = F.Invert(Z);
        F x = F.Mul(X, zInv);
        F y = F.Mul(Y, zInv);
        y.ToBytes(s);
        if (x.IsOdd())
        {
            s[31] |= 0x80;
        }
    }

    /// <summary>True if this is the neutral element: X = 0 and Y = Z.</summary>
    public readonly bool IsIdentity() => X.IsZero() && F.AreEqual(Y, Z);

    /// <summary>2P (dbl-2008-hwcd with a = −1); 4 squarings and 4 multiplications.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static EdwardsPoint Double(in EdwardsPoint p)
    {
        F a = F.Square(p.X);
        F b = F.Square(p.Y);
        F c = F.Square(p.Z);
        c = F.Add(c, c);
        F h = F.Add(a, b);                          // < 2^52.01
        F xy = F.Add(p.X, p.Y);
        F e = F.Sub(h, F.Square(xy));               // (X+Y)² − A − B
        F g = F.Sub(a, b);                          // A − B
        F f = F.Carry(F.Add(c, g));                 // C + (A − B), carried: two sums deep
        // hwcd's E, G, F, H for a = −1 are −e, −g, −f, −h here; every output is a product of two of them, so the
        // signs cancel: X3 = E·F = e·f, Y3 = G·H = g·h, T3 = E·H = e·h, Z3 = F·G = f·g.
        EdwardsPoint r;
        r.X = F.Mul(e, f);
        r.Y = F.Mul(g, h);
        r.T = F.Mul(e, h);
        r.Z = F.Mul(f, g);
        return r;
    }

    /// <summary>2P without T (3M + 4S): for doublings followed by another doubling, which reads only X, Y, Z.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static EdwardsPoint DoubleNoT(in EdwardsPoint p)
    {
        F a = F.Square(p.X);
        F b = F.Square(p.Y);
        F c = F.Square(p.Z);
        c = F.Add(c, c);
        F h = F.Add(a, b);
        F xy = F.Add(p.X, p.Y);
        F e = F.Sub(h, F.Square(xy));
        F g = F.Sub(a, b);
        F f = F.Carry(F.Add(c, g));
        EdwardsPoint r;
        r.X = F.Mul(e, f);
        r.Y = F.Mul(g, h);
        r.T = default;
        r.Z = F.Mul(f, g);
        return r;
    }

    /// <summary>[2^n]P in AVX2 lanes where there are some (<see cref="PointInLanes"/>), else with scalar formulas of which
    /// only the last doubling computes T.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static EdwardsPoint DoubleTimes(in EdwardsPoint p, int n)
    {
        if (n >= 1 && PointInLanes.IsSupported)
        {
            return PointInLanes.DoubleTimes(p, n);
        }

        EdwardsPoint r = p;
        for (int i = 1; i < n; i++)
        {
            r = DoubleNoT(r);
        }

        return Double(r);
    }

    /// <summary>−P.</summary>
    public static EdwardsPoint Negate(in EdwardsPoint p) =>
        new() { X = F.Carry(F.Negate(p.X)), Y = p.Y, Z = p.Z, T = F.Carry(F.Negate(p.T)) };

    /// <summary>P + Q for a cached Q (Y+X, Y−X, 2Z, 2dT): 8 multiplications (7 when Q is affine, <see cref="AddAffine"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static EdwardsPoint Add(in EdwardsPoint p, in CachedPoint q)
    {
        F a = F.Mul(F.Sub(p.Y, p.X), q.YminusX);
        F b = F.Mul(F.Add(p.Y, p.X), q.YplusX);
        F c = F.Mul(p.T, q.T2d);
        F d = F.Mul(p.Z, q.Z2);
        F e = F.Sub(b, a);
        F f = F.Sub(d, c);
        F g = F.Add(d, c);
        F h = F.Add(b, a);
        EdwardsPoint r;
        r.X = F.Mul(e, f);
        r.Y = F.Mul(g, h);
        r.T = F.Mul(e, h);
        r.Z = F.Mul(f, g);
        return r;
    }

    /// <summary>P − Q for a cached Q.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static EdwardsPoint Sub(in EdwardsPoint p, in CachedPoint q)
    {
        F a = F.Mul(F.Sub(p.Y, p.X), q.YplusX);
        F b = F.Mul(F.Add(p.Y, p.X), q.YminusX);
        F c = F.Mul(p.T, q.T2d);
        F d = F.Mul(p.Z, q.Z2);
        F e = F.Sub(b, a);
        F f = F.Add(d, c);
        F g = F.Sub(d, c);
        F h = F.Add(b, a);
        EdwardsPoint r;
        r.X = F.Mul(e, f);
        r.Y = F.Mul(g, h);
        r.T = F.Mul(e, h);
        r.Z = F.Mul(f, g);
        return r;
    }

    /// <summary>P + Q for an affine Q given as (y+x, y−x, 2dxy): 7 multiplications.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static EdwardsPoint AddAffine(in EdwardsPoint p, in AffineNielsPoint q)
    {
        F a = F.Mul(F.Sub(p.Y, p.X), q.YminusX);
        F b = F.Mul(F.Add(p.Y, p.X), q.YplusX);
        F c = F.Mul(p.T, q.XY2d);
        F d = F.Add(p.Z, p.Z);
        F e = F.Sub(b, a);
        F f = F.Sub(d, c);
        F g = F.Add(d, c);
        F h = F.Add(b, a);
        EdwardsPoint r;
        r.X = F.Mul(e, f);
        r.Y = F.Mul(g, h);
        r.T = F.Mul(e, h);
        r.Z = F.Mul(f, g);
        return r;
    }

    /// <summary>P − Q for an affine Q given as (y+x, y−x, 2dxy).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static EdwardsPoint SubAffine(in EdwardsPoint p, in AffineNielsPoint q)
    {
        F a = F.Mul(F.Sub(p.Y, p.X), q.YplusX);
        F b = F.Mul(F.Add(p.Y, p.X), q.YminusX);
        F c = F.Mul(p.T, q.XY2d);
        F d = F.Add(p.Z, p.Z);
        F e = F.Sub(b, a);
        F f = F.Add(d, c);
        F g = F.Sub(d, c);
        F h = F.Add(b, a);
        EdwardsPoint r;
        r.X = F.Mul(e, f);
        r.Y = F.Mul(g, h);
        r.T = F.Mul(e, h);
        r.Z = F.Mul(f, g);
        return r;
    }

    /// <summary>[8]P.</summary>
    public static EdwardsPoint MulByCofactor(in EdwardsPoint p) => DoubleTimes(p, 3);

    /// <summary>True if [8]P is the identity (P has small order).</summary>
    public readonly bool IsSmallOrder() => MulByCofactor(this).IsIdentity();

    /// <summary>
    /// True if a canonical encoding that decoded is one of the eight small-order points. The torsion subgroup has
    /// exactly eight elements and each has one canonical encoding, so for canonical input this equals
    /// <see cref="IsSmallOrder"/> at the cost of a few comparisons instead of three doublings.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static bool IsSmallOrderEncoding(ReadOnlySpan<byte> canonicalEncoding)
    {
        foreach (byte[] e in SmallOrderEncodings)
        {
            if (canonicalEncoding.SequenceEqual(e))
            {
                return true;
            }
        }

        return false;
    }

    // [i]T8 for i = 0..7, T8 of order 8; computed with this type's own arithmetic and checked by the tests against
    // the reference's torsion points.
    private static readonly byte[][] SmallOrderEncodings = BuildSmallOrderEncodings();

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static byte[][] BuildSmallOrderEncodings()
    {
        if (!TryDecode(Convert.FromHexString("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"), out EdwardsPoint t8))
        {
            throw new InvalidOperationException("The order-8 point failed to decode.");
        }

        var result = new byte[8][];
        EdwardsPoint p = Identity;
        CachedPoint step = CachedPoint.From(t8);
        for (int i = 0; i < 8; i++)
        {
            result[i] = new byte[32];
            p.Encode(result[i]);
            p = Add(p, step);
        }

        return result;
    }
}

/// <summary>A point prepared for repeated addition: (Y+X, Y−X, 2Z, 2d·T).</summary>
internal struct CachedPoint
{
    public F YplusX, YminusX, Z2, T2d;

    public static CachedPoint From(in EdwardsPoint p) => new()
    {
        YplusX = F.Carry(F.Add(p.Y, p.X)),
        YminusX = F.Carry(F.Sub(p.Y, p.X)),
        Z2 = F.Carry(F.Add(p.Z, p.Z)),
        T2d = F.Mul(p.T, F.D2),
    };

    /// <summary>−Q in cached form: swap Y+X and Y−X, negate 2dT.</summary>
    public readonly CachedPoint Negate() => new() { YplusX = YminusX, YminusX = YplusX, Z2 = Z2, T2d = F.Carry(F.Negate(T2d)) };
}

/// <summary>An affine point prepared for mixed addition: (y+x, y−x, 2d·x·y).</summary>
internal struct AffineNielsPoint
{
    public F YplusX, YminusX, XY2d;

    /// <summary>From an affine point (Z = 1, as <see cref="EdwardsPoint.TryDecode"/> returns).</summary>
    public static AffineNielsPoint FromAffine(in EdwardsPoint p) => new()
    {
        YplusX = F.Carry(F.Add(p.Y, p.X)),
        YminusX = F.Carry(F.Sub(p.Y, p.X)),
        XY2d = F.Mul(p.T, F.D2),
    };

    public readonly AffineNielsPoint Negate() => new() { YplusX = YminusX, YminusX = YplusX, XY2d = F.Carry(F.Negate(XY2d)) };
}
