using ILGPU;

namespace MegaNet.Verify.Gpu.Kernels;

/// <summary>Extended coordinates (X : Y : Z : T) with T = XY/Z.</summary>
internal struct Ge
{
    public Fe X, Y, Z, T;

    public static Ge Identity()
    {
        Ge p;
        p.X = Fe.Zero();
        p.Y = Fe.One();
        p.Z = Fe.One();
        p.T = Fe.Zero();
        return p;
    }
}

/// <summary>Projective (X : Y : Z), what a doubling needs.</summary>
internal struct GeP2
{
    public Fe X, Y, Z;
}

/// <summary>A sum or double before its final products: the point is (X·T : Y·Z : Z·T : X·Y) in extended coordinates.</summary>
internal struct GeP1P1
{
    public Fe X, Y, Z, T;

    public static GeP1P1 Identity()
    {
        GeP1P1 p;
        p.X = Fe.Zero();
        p.Y = Fe.One();
        p.Z = Fe.One();
        p.T = Fe.One();
        return p;
    }
}

/// <summary>A point ready to be added: (Y + X, Y − X, Z, 2d·T).</summary>
internal struct GeCached
{
    public Fe YPlusX, YMinusX, Z, T2d;
}

/// <summary>An affine point ready to be added: (y + x, y − x, 2d·x·y); Z = 1.</summary>
internal struct GePrecomp
{
    public Fe YPlusX, YMinusX, XY2d;
}

/// <summary>Curve constants handed to the kernel (computed on the host with the same code).</summary>
internal struct CurveConstants
{
    public Fe D, D2, SqrtM1;
}

/// <summary>
/// The MegaNet rule as one GPU thread per signature (docs/verification.md): strict decoding of A and R with the
/// canonical and small-order checks, then [8]([S]B + [k](−A) − R) = 𝒪. S &lt; L and k = SHA-512(R ‖ A ‖ M) mod L come
/// from <see cref="ChallengeKernel"/> (or the host), launched before it on the same stream: the message loop stays
/// out of this kernel, whose registers are spent on the curve arithmetic.
/// </summary>
/// <remarks>
/// One pass of 252 doublings serves both scalars (Straus). k is read in 64 signed radix-16 digits (−8..7) against a
/// per-thread table of [1..8](−A); S in 32 signed radix-256 digits (−128..127) against a shared table of [1..128]B in
/// affine form, so the pass adds about 64 + 32 points instead of one per set bit (about 250). Signed digits need no
/// recoding loop: adding 0x88…8 (or 0x80…80) to the scalar makes each nibble (byte) its digit plus 8 (plus 128),
/// and both scalars are below 2^253, so the sum still fits in 256 bits. Formulas are those of the ref10 family
/// (extended coordinates, completed intermediate points), so a doubling costs 4 squarings and 3 or 4 products.
/// Plain C#: ILGPU compiles it for CUDA/OpenCL and runs it unchanged on its CPU accelerator in tests.
/// </remarks>
internal static class Ed25519Kernel
{
    /// <summary>Entries of the base-point table: [1..128]B.</summary>
    public const int BaseTableEntries = 128;

    /// <summary>Ints per base-point table entry: three field elements of ten limbs.</summary>
    public const int BaseTableStride = 30;

    /// <summary>
    /// One thread per item, count items. keys: 32·n bytes; rs: 32·n bytes (R); scalars: 16 uints per item (S then k, little-endian words);
    /// pre: one byte per item, 1 where the host checks passed (S &lt; L), else 0; smallOrder: the 8 small-order encodings (256 bytes);
    /// baseTable: [1..128]B as <see cref="GePrecomp"/>, <see cref="BaseTableStride"/> ints each; verdicts: one byte per item, 1 valid, 0 invalid.
    /// </summary>
    public static void Verify(int count, ArrayView<byte> keys, ArrayView<byte> rs, ArrayView<uint> scalars, ArrayView<byte> pre,
        ArrayView<byte> smallOrder, ArrayView<int> baseTable, CurveConstants c, ArrayView<byte> verdicts)
    {
        // Explicitly grouped, so the host picks the group size per launch; the last group may run past the batch.
        int i = Grid.GlobalIndex.X;
        if (i >= count)
        {
            return;
        }

        if (pre[i] == 0)
        {
            verdicts[i] = 0;
            return;
        }

        int o = i * 32;
        Ge a;
        Ge r;
        if (IsSmallOrderEncoding(keys, o, smallOrder) || IsSmallOrderEncoding(rs, o, smallOrder)
            || !Decode(keys, o, c, out a) || !Decode(rs, o, c, out r))
        {
            verdicts[i] = 0;
            return;
        }

        // [1..8](−A): negate the point (never the scalar k mod L).
        a.X = Fe.Neg(a.X);
        a.T = Fe.Neg(a.T);
        ArrayView<GeCached> table = LocalMemory.Allocate<GeCached>(8);
        GeCached minusA = ToCached(a, c);
        table[0] = minusA;
        Ge multiple = ToP3(Double(ToP2(a)));
        table[1] = ToCached(multiple, c);
        for (int m = 2; m < 8; m++)
        {
            multiple = ToP3(AddCached(multiple, minusA, false));
            table[m] = ToCached(multiple, c);
        }

        // Digits plus offset: nibble j of k + 0x88…8 is k's signed digit j plus 8; byte j of S + 0x80…80 is S's
        // signed radix-256 digit j plus 128.
        ArrayView<uint> digits = LocalMemory.Allocate<uint>(16);
        int s = i * 16;
        ulong carryS = 0, carryK = 0;
        for (int w = 0; w < 8; w++)
        {
            carryS += (ulong)scalars[s + w] + 0x80808080u;
            digits[w] = (uint)carryS;
            carryS >>= 32;
            carryK += (ulong)scalars[s + 8 + w] + 0x88888888u;
            digits[8 + w] = (uint)carryK;
            carryK >>= 32;
        }

        GeP1P1 q = GeP1P1.Identity();
        for (int j = 63; j >= 0; j--)
        {
            if (j != 63)
            {
                q = Double(ToP2(q));
                q = Double(ToP2(q));
                q = Double(ToP2(q));
                q = Double(ToP2(q));
            }

            int shift = (j & 7) * 4;
            int dk = (int)((digits[8 + (j >> 3)] >> shift) & 15) - 8;
            if (dk != 0)
            {
                q = AddCached(ToP3(q), table[(dk < 0 ? -dk : dk) - 1], dk < 0);
            }

            if ((j & 1) == 0)
            {
                // Byte j/2 of S: this point of the pass is 8·(j/2) doublings from the end.
                int ds = (int)((digits[j >> 3] >> shift) & 255) - 128;
                if (ds != 0)
                {
                    q = AddPrecomp(ToP3(q), LoadBase(baseTable, (ds < 0 ? -ds : ds) - 1), ds < 0);
                }
            }
        }

        // − R, then the cofactor: [8]Q = 𝒪 iff X = 0 and Y = Z.
        q = AddCached(ToP3(q), ToCached(r, c), true);
        q = Double(ToP2(q));
        q = Double(ToP2(q));
        q = Double(ToP2(q));
        GeP2 result = ToP2(q);
        verdicts[i] = Fe.IsZero(result.X) && Fe.Equal(result.Y, result.Z) ? (byte)1 : (byte)0;
    }

    public static bool IsSmallOrderEncoding(ArrayView<byte> s, int o, ArrayView<byte> smallOrder)
    {
        for (int e = 0; e < 8; e++)
        {
            bool same = true;
            for (int b = 0; b < 32; b++)
            {
                if (s[o + b] != smallOrder[e * 32 + b])
                {
                    same = false;
                    break;
                }
            }

            if (same)
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>Strict decoding: y &lt; p, a square root exists, and not x = 0 with the sign bit set.</summary>
    public static bool Decode(ArrayView<byte> s, int o, CurveConstants c, out Ge p)
    {
        p = Ge.Identity();

        // y ≥ p iff the low 255 bits are 2^255 − 19 .. 2^255 − 1.
        bool high = (s[o + 31] & 0x7F) == 0x7F && s[o] >= 0xED;
        for (int b = 1; b < 31 && high; b++)
        {
            high = s[o + b] == 0xFF;
        }

        if (high)
        {
            return false;
        }

        Fe y = Fe.FromBytes(s, o);
        Fe y2 = Fe.Square(y);
        Fe u = Fe.Reduce(Fe.Sub(y2, Fe.One()));
        Fe v = Fe.Reduce(Fe.Add(Fe.Mul(y2, c.D), Fe.One()));
        Fe v3 = Fe.Mul(Fe.Square(v), v);
        Fe x = Fe.Mul(Fe.Mul(Fe.Square(v3), v), u);
        x = Fe.Pow22523(x);
        x = Fe.Mul(Fe.Mul(x, v3), u);
        Fe vxx = Fe.Mul(Fe.Square(x), v);
        if (!Fe.Equal(vxx, u))
        {
            if (!Fe.IsZero(Fe.Add(vxx, u)))
            {
                return false;
            }

            x = Fe.Mul(x, c.SqrtM1);
        }

        bool sign = (s[o + 31] & 0x80) != 0;
        if (sign && Fe.IsZero(x))
        {
            return false;
        }

        if (Fe.IsOdd(x) != sign)
        {
            x = Fe.Reduce(Fe.Neg(x));
        }

        p.X = x;
        p.Y = y;
        p.Z = Fe.One();
        p.T = Fe.Mul(x, y);
        return true;
    }

    public static GeP2 ToP2(Ge p)
    {
        GeP2 r;
        r.X = p.X;
        r.Y = p.Y;
        r.Z = p.Z;
        return r;
    }

    public static GeP2 ToP2(GeP1P1 p)
    {
        GeP2 r;
        r.X = Fe.Mul(p.X, p.T);
        r.Y = Fe.Mul(p.Y, p.Z);
        r.Z = Fe.Mul(p.Z, p.T);
        return r;
    }

    public static Ge ToP3(GeP1P1 p)
    {
        Ge r;
        r.X = Fe.Mul(p.X, p.T);
        r.Y = Fe.Mul(p.Y, p.Z);
        r.Z = Fe.Mul(p.Z, p.T);
        r.T = Fe.Mul(p.X, p.Y);
        return r;
    }

    public static GeCached ToCached(Ge p, CurveConstants c)
    {
        GeCached r;
        r.YPlusX = Fe.Add(p.Y, p.X);
        r.YMinusX = Fe.Sub(p.Y, p.X);
        r.Z = p.Z;
        r.T2d = Fe.Mul(p.T, c.D2);
        return r;
    }

    /// <summary>2P for a = −1 (dbl-2008-hwcd): four squarings; every output limb sums at most four carried values.</summary>
    public static GeP1P1 Double(GeP2 p)
    {
        Fe xx = Fe.Square(p.X);
        Fe yy = Fe.Square(p.Y);
        Fe zz = Fe.Square(p.Z);
        Fe sum = Fe.Square(Fe.Add(p.X, p.Y));
        GeP1P1 r;
        r.Y = Fe.Add(yy, xx);
        r.Z = Fe.Sub(yy, xx);
        r.X = Fe.Sub(sum, r.Y);
        r.T = Fe.Sub(Fe.Add(zz, zz), r.Z);
        return r;
    }

    /// <summary>P ± Q (add-2008-hwcd-3, complete for a = −1); −Q swaps Y + X with Y − X and negates 2d·T.</summary>
    public static GeP1P1 AddCached(Ge p, GeCached q, bool negate)
    {
        Fe a = Fe.Mul(Fe.Add(p.Y, p.X), negate ? q.YMinusX : q.YPlusX);
        Fe b = Fe.Mul(Fe.Sub(p.Y, p.X), negate ? q.YPlusX : q.YMinusX);
        Fe cc = Fe.Mul(q.T2d, p.T);
        Fe zz = Fe.Mul(p.Z, q.Z);
        Fe d = Fe.Add(zz, zz);
        GeP1P1 r;
        r.X = Fe.Sub(a, b);
        r.Y = Fe.Add(a, b);
        r.Z = negate ? Fe.Sub(d, cc) : Fe.Add(d, cc);
        r.T = negate ? Fe.Add(d, cc) : Fe.Sub(d, cc);
        return r;
    }

    /// <summary>P ± Q for an affine Q (Z = 1): one product fewer than <see cref="AddCached"/>.</summary>
    public static GeP1P1 AddPrecomp(Ge p, GePrecomp q, bool negate)
    {
        Fe a = Fe.Mul(Fe.Add(p.Y, p.X), negate ? q.YMinusX : q.YPlusX);
        Fe b = Fe.Mul(Fe.Sub(p.Y, p.X), negate ? q.YPlusX : q.YMinusX);
        Fe cc = Fe.Mul(q.XY2d, p.T);
        Fe d = Fe.Add(p.Z, p.Z);
        GeP1P1 r;
        r.X = Fe.Sub(a, b);
        r.Y = Fe.Add(a, b);
        r.Z = negate ? Fe.Sub(d, cc) : Fe.Add(d, cc);
        r.T = negate ? Fe.Add(d, cc) : Fe.Sub(d, cc);
        return r;
    }

    private static GePrecomp LoadBase(ArrayView<int> table, int entry)
    {
        int o = entry * BaseTableStride;
        GePrecomp p;
        p.YPlusX = Fe.Load(table, o);
        p.YMinusX = Fe.Load(table, o + 10);
        p.XY2d = Fe.Load(table, o + 20);
        return p;
    }
}
