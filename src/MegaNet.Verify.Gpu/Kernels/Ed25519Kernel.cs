using ILGPU;

namespace MegaNet.Verify.Gpu.Kernels;

/// <summary>Extended coordinates (X : Y : Z : T).</summary>
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

/// <summary>Curve constants handed to the kernel (computed on the host with the same code).</summary>
internal struct CurveConstants
{
    public Fe D, D2, SqrtM1;
    public Ge B;
}

/// <summary>
/// The MegaNet rule as one GPU thread per signature (docs/verification.md): strict decoding of A and R with the
/// canonical and small-order checks, then [8]([S]B + [k](−A) − R) = 𝒪 by a double-and-add over the 253 bits of S
/// and k. S &lt; L and k = SHA-512(R ‖ A ‖ M) mod L come from the host: messages vary in length, so hashing them on
/// the CPU in parallel keeps the kernel free of variable-length loops and the transfers small (32 bytes per item).
/// Plain C#: ILGPU compiles it for CUDA/OpenCL and runs it unchanged on its CPU accelerator in tests.
/// </summary>
internal static class Ed25519Kernel
{
    /// <summary>
    /// keys: 32·n bytes; rs: 32·n bytes (R); scalars: 16 uints per item (S then k, little-endian words);
    /// pre: 1 where the host checks passed (S &lt; L), else 0; smallOrder: the 8 small-order encodings (256 bytes);
    /// verdicts: 1 valid, 0 invalid.
    /// </summary>
    public static void Verify(Index1D i, ArrayView<byte> keys, ArrayView<byte> rs, ArrayView<uint> scalars, ArrayView<int> pre,
        ArrayView<byte> smallOrder, CurveConstants c, ArrayView<int> verdicts)
    {
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

        // −A and −R: negate the points (never the scalar k mod L).
        a.X = Fe.Neg(a.X);
        a.T = Fe.Neg(a.T);
        r.X = Fe.Neg(r.X);
        r.T = Fe.Neg(r.T);

        Ge q = Ge.Identity();
        int s = i * 16;
        for (int bit = 252; bit >= 0; bit--)
        {
            q = Double(q);
            if (((scalars[s + (bit >> 5)] >> (bit & 31)) & 1) != 0)
            {
                q = Add(q, c.B, c);
            }

            if (((scalars[s + 8 + (bit >> 5)] >> (bit & 31)) & 1) != 0)
            {
                q = Add(q, a, c);
            }
        }

        q = Add(q, r, c);
        q = Double(Double(Double(q)));
        verdicts[i] = Fe.IsZero(q.X) && Fe.Equal(q.Y, q.Z) ? 1 : 0;
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

    /// <summary>2P (dbl-2008-hwcd, a = −1; signs of E, F, G, H folded as in the SIMD backend).</summary>
    public static Ge Double(Ge p)
    {
        Fe a = Fe.Square(p.X);
        Fe b = Fe.Square(p.Y);
        Fe zz = Fe.Square(p.Z);
        Fe cc = Fe.Add(zz, zz);
        Fe h = Fe.Add(a, b);
        Fe e = Fe.Sub(h, Fe.Square(Fe.Add(p.X, p.Y)));
        Fe g = Fe.Sub(a, b);
        Fe f = Fe.Reduce(Fe.Add(cc, g));
        Ge r;
        r.X = Fe.Mul(e, f);
        r.Y = Fe.Mul(g, h);
        r.T = Fe.Mul(e, h);
        r.Z = Fe.Mul(f, g);
        return r;
    }

    /// <summary>P + Q, complete for a = −1 (add-2008-hwcd-3).</summary>
    public static Ge Add(Ge p, Ge q, CurveConstants c)
    {
        Fe a = Fe.Mul(Fe.Sub(p.Y, p.X), Fe.Sub(q.Y, q.X));
        Fe b = Fe.Mul(Fe.Add(p.Y, p.X), Fe.Add(q.Y, q.X));
        Fe cc = Fe.Mul(Fe.Mul(p.T, c.D2), q.T);
        Fe zz = Fe.Mul(p.Z, q.Z);
        Fe d = Fe.Add(zz, zz);
        Fe e = Fe.Sub(b, a);
        Fe f = Fe.Sub(d, cc);
        Fe g = Fe.Add(d, cc);
        Fe h = Fe.Add(b, a);
        Ge r;
        r.X = Fe.Mul(e, f);
        r.Y = Fe.Mul(g, h);
        r.T = Fe.Mul(e, h);
        r.Z = Fe.Mul(f, g);
        return r;
    }
}
