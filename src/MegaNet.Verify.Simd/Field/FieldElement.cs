using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace MegaNet.Verify.Simd.Field;

/// <summary>
/// An element of GF(2^255 − 19) in radix 2^51: value = L0 + L1·2^51 + L2·2^102 + L3·2^153 + L4·2^204.
/// </summary>
/// <remarks>
/// Bounds (why the code is allowed to skip carries): a "reduced" element has every limb &lt; 2^51 + 2^13 (output of
/// <see cref="Mul"/>, <see cref="Square"/>, <see cref="Carry"/>). <see cref="Add"/> of two reduced elements gives limbs
/// &lt; 2^52.01 and <see cref="Sub"/> adds 4p first so its limbs stay positive and &lt; 2^53.01. <see cref="Mul"/> and
/// <see cref="Square"/> accept inputs with limbs up to 2^54: then 19·b &lt; 2^58.3, every product is &lt; 2^112.3, and the
/// output is reduced again. Every public operation therefore takes reduced or once-added/subtracted inputs, never a
/// chain of two additions without a multiply or carry in between.
/// <para>
/// Why no <see cref="UInt128"/>: the JIT sends the low half of <c>Math.BigMul</c> through the stack and carries 128-bit
/// sums with <c>setb</c>, which doubled the cost of a multiplication. Each product is instead taken as its low word
/// (<c>imul</c>) and high word (<c>mulx</c>), and a column is kept in three 64-bit sums: s (bits 0..50 of each
/// product, plus the carry in), m (bits 51..63) and h (bits 64 and up). The column's carry out is h·2^13 + m + s/2^51:
/// h &lt; 5·2^48.3 so h·2^13 &lt; 2^63.6, the carry in stays &lt; 2^63.7 and s &lt; 2^63.7 + 5·2^51 &lt; 2^64; no sum
/// overflows. (Squaring doubles a factor first: products &lt; 2^113.3 but only three per column.)
/// </para>
/// </remarks>
internal struct FieldElement : IFieldArithmetic<FieldElement>
{
    public ulong L0, L1, L2, L3, L4;

    private const ulong Mask = (1UL << 51) - 1;

    public FieldElement(ulong l0, ulong l1, ulong l2, ulong l3, ulong l4)
    {
        L0 = l0;
        L1 = l1;
        L2 = l2;
        L3 = l3;
        L4 = l4;
    }

    public static FieldElement Zero => default;

    public static FieldElement One => new(1, 0, 0, 0, 0);

    /// <summary>d = −121665/121666.</summary>
    public static readonly FieldElement D = FromHex("a3785913ca4deb75abd841414d0a700098e879777940c78c73fe6f2bee6c0352");

    /// <summary>2d.</summary>
    public static readonly FieldElement D2 = Carry(Add(D, D));

    /// <summary>sqrt(−1).</summary>
    public static readonly FieldElement SqrtM1 = FromHex("b0a00e4a271beec478e42fad0618432fa7d7fb3d99004d2b0bdfc14f8024832b");

    /// <summary>Reads 32 little-endian bytes, ignoring the top bit (the caller handles sign and canonicity).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static FieldElement FromBytes(ReadOnlySpan<byte> s)
    {
        ulong w0 = BinaryPrimitives.ReadUInt64LittleEndian(s);
        ulong w1 = BinaryPrimitives.ReadUInt64LittleEndian(s[8..]);
        ulong w2 = BinaryPrimitives.ReadUInt64LittleEndian(s[16..]);
        ulong w3 = BinaryPrimitives.ReadUInt64LittleEndian(s[24..]);
        return new FieldElement(
            w0 & Mask,
            ((w0 >> 51) | (w1 << 13)) & Mask,
            ((w1 >> 38) | (w2 << 26)) & Mask,
            ((w2 >> 25) | (w3 << 39)) & Mask,
            (w3 >> 12) & Mask);
    }

    /// <summary>True if the 255-bit little-endian value in <paramref name="s"/> (top bit ignored) is below p.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static bool IsCanonicalEncoding(ReadOnlySpan<byte> s)
    {
        // y ≥ p iff y ∈ [2^255 − 19, 2^255 − 1]: bytes 1..30 are 0xFF, byte 31 (without sign) is 0x7F, byte 0 ≥ 0xED.
        if ((s[31] & 0x7F) != 0x7F || s[0] < 0xED)
        {
            return true;
        }

        for (int i = 1; i < 31; i++)
        {
            if (s[i] != 0xFF)
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>Writes the canonical 32-byte encoding (fully reduced mod p).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public readonly void ToBytes(Span<byte> s)
    {
        FieldElement t = Carry(this);
        // Now t < 2^255 + small; subtract p if t ≥ p: compute q = (t + 19) >> 255.
        ulong q = (t.L0 + 19) >> 51;
        q = (t.L1 + q) >> 51;
        q = (t.L2 + q) >> 51;
        q = (t.L3 + q) >> 51;
        q = (t.L4 + q) >> 51;
        ulong l0 = t.L0 + 19 * q;
        ulong l1 = t.L1 + (l0 >> 51);
        l0 &= Mask;
        ulong l2 = t.L2 + (l1 >> 51);
        l1 &= Mask;
        ulong l3 = t.L3 + (l2 >> 51);
        l2 &= Mask;
        ulong l4 = t.L4 + (l3 >> 51);
        l3 &= Mask;
        l4 &= Mask;
        BinaryPrimitives.WriteUInt64LittleEndian(s, l0 | (l1 << 51));
        BinaryPrimitives.WriteUInt64LittleEndian(s[8..], (l1 >> 13) | (l2 << 38));
        BinaryPrimitives.WriteUInt64LittleEndian(s[16..], (l2 >> 26) | (l3 << 25));
        BinaryPrimitives.WriteUInt64LittleEndian(s[24..], (l3 >> 39) | (l4 << 12));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static FieldElement Add(in FieldElement a, in FieldElement b) =>
        new(a.L0 + b.L0, a.L1 + b.L1, a.L2 + b.L2, a.L3 + b.L3, a.L4 + b.L4);

    /// <summary>a − b computed as a + 4p − b so limbs never go negative (b's limbs must be &lt; 2^53).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static FieldElement Sub(in FieldElement a, in FieldElement b) =>
        new(
            a.L0 + 0x1FFFFFFFFFFFB4UL - b.L0,
            a.L1 + 0x1FFFFFFFFFFFFCUL - b.L1,
            a.L2 + 0x1FFFFFFFFFFFFCUL - b.L2,
            a.L3 + 0x1FFFFFFFFFFFFCUL - b.L3,
            a.L4 + 0x1FFFFFFFFFFFFCUL - b.L4);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static FieldElement Negate(in FieldElement a) => Sub(Zero, a);

    /// <summary>Propagates carries so every limb is &lt; 2^51 + 2^13.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static FieldElement Carry(in FieldElement a)
    {
        ulong l0 = a.L0, l1 = a.L1, l2 = a.L2, l3 = a.L3, l4 = a.L4;
        l1 += l0 >> 51;
        l0 &= Mask;
        l2 += l1 >> 51;
        l1 &= Mask;
        l3 += l2 >> 51;
        l2 &= Mask;
        l4 += l3 >> 51;
        l3 &= Mask;
        l0 += 19 * (l4 >> 51);
        l4 &= Mask;
        l1 += l0 >> 51;
        l0 &= Mask;
        return new FieldElement(l0, l1, l2, l3, l4);
    }

    // Not inlined: inlined into the point formulas, a doubling's seven multiplications and squarings shared one register
    // allocation over ~40 live limbs, about 700 stack accesses a doubling; called, each allocates its own 16 registers
    // (a single signature 0.53-0.54x -> 0.68-0.72x libsodium, measured alternately, AVX2 machine, 2026-11-30).
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    public static FieldElement Mul(in FieldElement a, in FieldElement b)
    {
        ulong a0 = a.L0, a1 = a.L1, a2 = a.L2, a3 = a.L3, a4 = a.L4;
        ulong b0 = b.L0, b1 = b.L1, b2 = b.L2, b3 = b.L3, b4 = b.L4;
        ulong b1_19 = b1 * 19, b2_19 = b2 * 19, b3_19 = b3 * 19, b4_19 = b4 * 19;
        ulong p, s, h, m, c;
        p = a0 * b0; h = Hi(a0, b0); s = (p & Mask); m = p >> 51;
        p = a1 * b4_19; h += Hi(a1, b4_19); s += p & Mask; m += p >> 51;
        p = a2 * b3_19; h += Hi(a2, b3_19); s += p & Mask; m += p >> 51;
        p = a3 * b2_19; h += Hi(a3, b2_19); s += p & Mask; m += p >> 51;
        p = a4 * b1_19; h += Hi(a4, b1_19); s += p & Mask; m += p >> 51;
        ulong l0 = s & Mask;
        c = (h << 13) + m + (s >> 51);
        p = a0 * b1; h = Hi(a0, b1); s = (p & Mask) + c; m = p >> 51;
        p = a1 * b0; h += Hi(a1, b0); s += p & Mask; m += p >> 51;
        p = a2 * b4_19; h += Hi(a2, b4_19); s += p & Mask; m += p >> 51;
        p = a3 * b3_19; h += Hi(a3, b3_19); s += p & Mask; m += p >> 51;
        p = a4 * b2_19; h += Hi(a4, b2_19); s += p & Mask; m += p >> 51;
        ulong l1 = s & Mask;
        c = (h << 13) + m + (s >> 51);
        p = a0 * b2; h = Hi(a0, b2); s = (p & Mask) + c; m = p >> 51;
        p = a1 * b1; h += Hi(a1, b1); s += p & Mask; m += p >> 51;
        p = a2 * b0; h += Hi(a2, b0); s += p & Mask; m += p >> 51;
        p = a3 * b4_19; h += Hi(a3, b4_19); s += p & Mask; m += p >> 51;
        p = a4 * b3_19; h += Hi(a4, b3_19); s += p & Mask; m += p >> 51;
        ulong l2 = s & Mask;
        c = (h << 13) + m + (s >> 51);
        p = a0 * b3; h = Hi(a0, b3); s = (p & Mask) + c; m = p >> 51;
        p = a1 * b2; h += Hi(a1, b2); s += p & Mask; m += p >> 51;
        p = a2 * b1; h += Hi(a2, b1); s += p & Mask; m += p >> 51;
        p = a3 * b0; h += Hi(a3, b0); s += p & Mask; m += p >> 51;
        p = a4 * b4_19; h += Hi(a4, b4_19); s += p & Mask; m += p >> 51;
        ulong l3 = s & Mask;
        c = (h << 13) + m + (s >> 51);
        p = a0 * b4; h = Hi(a0, b4); s = (p & Mask) + c; m = p >> 51;
        p = a1 * b3; h += Hi(a1, b3); s += p & Mask; m += p >> 51;
        p = a2 * b2; h += Hi(a2, b2); s += p & Mask; m += p >> 51;
        p = a3 * b1; h += Hi(a3, b1); s += p & Mask; m += p >> 51;
        p = a4 * b0; h += Hi(a4, b0); s += p & Mask; m += p >> 51;
        ulong l4 = s & Mask;
        c = (h << 13) + m + (s >> 51);
        return Fold(l0, l1, l2, l3, l4, c);
    }

    // Not inlined, as Mul.
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    public static FieldElement Square(in FieldElement a)
    {
        ulong a0 = a.L0, a1 = a.L1, a2 = a.L2, a3 = a.L3, a4 = a.L4;
        ulong d0 = a0 * 2, d1 = a1 * 2, d2 = a2 * 2, d3 = a3 * 2;
        ulong a3_19 = a3 * 19, a4_19 = a4 * 19;
        ulong p, s, h, m, c;
        p = a0 * a0; h = Hi(a0, a0); s = (p & Mask); m = p >> 51;
        p = d1 * a4_19; h += Hi(d1, a4_19); s += p & Mask; m += p >> 51;
        p = d2 * a3_19; h += Hi(d2, a3_19); s += p & Mask; m += p >> 51;
        ulong l0 = s & Mask;
        c = (h << 13) + m + (s >> 51);
        p = d0 * a1; h = Hi(d0, a1); s = (p & Mask) + c; m = p >> 51;
        p = d2 * a4_19; h += Hi(d2, a4_19); s += p & Mask; m += p >> 51;
        p = a3 * a3_19; h += Hi(a3, a3_19); s += p & Mask; m += p >> 51;
        ulong l1 = s & Mask;
        c = (h << 13) + m + (s >> 51);
        p = d0 * a2; h = Hi(d0, a2); s = (p & Mask) + c; m = p >> 51;
        p = a1 * a1; h += Hi(a1, a1); s += p & Mask; m += p >> 51;
        p = d3 * a4_19; h += Hi(d3, a4_19); s += p & Mask; m += p >> 51;
        ulong l2 = s & Mask;
        c = (h << 13) + m + (s >> 51);
        p = d0 * a3; h = Hi(d0, a3); s = (p & Mask) + c; m = p >> 51;
        p = d1 * a2; h += Hi(d1, a2); s += p & Mask; m += p >> 51;
        p = a4 * a4_19; h += Hi(a4, a4_19); s += p & Mask; m += p >> 51;
        ulong l3 = s & Mask;
        c = (h << 13) + m + (s >> 51);
        p = d0 * a4; h = Hi(d0, a4); s = (p & Mask) + c; m = p >> 51;
        p = d1 * a3; h += Hi(d1, a3); s += p & Mask; m += p >> 51;
        p = a2 * a2; h += Hi(a2, a2); s += p & Mask; m += p >> 51;
        ulong l4 = s & Mask;
        c = (h << 13) + m + (s >> 51);
        return Fold(l0, l1, l2, l3, l4, c);
    }

    /// <summary>High 64 bits of a·b: <c>mulx</c> with BMI2, a portable widening multiply otherwise.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong Hi(ulong a, ulong b) => Bmi2.X64.IsSupported ? Bmi2.X64.MultiplyNoFlags(a, b) : Math.BigMul(a, b, out _);

    /// <summary>Folds the carry out of the top column (c &lt; 2^64, weight 2^255 ≡ 19) back into the low limbs.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static FieldElement Fold(ulong l0, ulong l1, ulong l2, ulong l3, ulong l4, ulong c)
    {
        // 19·c can exceed 64 bits, so fold its two 51-bit halves separately.
        ulong t = l0 + (19 * (c & Mask));
        ulong u = l1 + (19 * (c >> 51)) + (t >> 51);
        return new FieldElement(t & Mask, u & Mask, l2 + (u >> 51), l3, l4);
    }

    /// <summary>a^(2^n) by repeated squaring.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static FieldElement SquareTimes(in FieldElement a, int n)
    {
        FieldElement r = Square(a);
        for (int i = 1; i < n; i++)
        {
            r = Square(r);
        }

        return r;
    }

    /// <summary>a^((p − 5) / 8) = a^(2^252 − 3), the exponent used by square-root recovery.</summary>
    public static FieldElement Pow22523(in FieldElement z) => AdditionChains.Pow22523(z);

    static FieldElement IFieldArithmetic<FieldElement>.Multiply(in FieldElement a, in FieldElement b) => Mul(a, b);

    static FieldElement IFieldArithmetic<FieldElement>.SquareTimes(in FieldElement a, int n) => SquareTimes(a, n);

    /// <summary>
    /// <see cref="Pow22523"/> for many independent elements: eight per AVX-512F vector, four per AVX2 vector, else one
    /// at a time. Results are identical on every tier.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Pow22523Many(Span<FieldElement> z)
    {
        if (Avx512F.IsSupported && Vector512.IsHardwareAccelerated)
        {
            for (int i = 0; i < z.Length; i += 8)
            {
                Span<FieldElement> group = z.Slice(i, Math.Min(8, z.Length - i));
                LaneField<Avx512Lanes, Vector512<ulong>>.Pow22523(LaneField<Avx512Lanes, Vector512<ulong>>.Pack(group)).Unpack(group);
            }

            return;
        }

        if (Avx2.IsSupported)
        {
            for (int i = 0; i < z.Length; i += 4)
            {
                Span<FieldElement> group = z.Slice(i, Math.Min(4, z.Length - i));
                LaneField<Avx2Lanes, Vector256<ulong>>.Pow22523(LaneField<Avx2Lanes, Vector256<ulong>>.Pack(group)).Unpack(group);
            }

            return;
        }

        Pow22523Scalar(z);
    }

    /// <summary>The scalar tier of <see cref="Pow22523Many"/>: one chain per element.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void Pow22523Scalar(Span<FieldElement> z)
    {
        for (int i = 0; i < z.Length; i++)
        {
            z[i] = Pow22523(z[i]);
        }
    }

    /// <summary>a^(p − 2) = a^−1 (0 maps to 0).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static FieldElement Invert(in FieldElement z)
    {
        FieldElement t0 = Square(z);
        FieldElement t1 = SquareTimes(t0, 2);
        t1 = Mul(z, t1);
        t0 = Mul(t0, t1);
        FieldElement t2 = Square(t0);
        t1 = Mul(t1, t2);
        t2 = SquareTimes(t1, 5);
        t1 = Mul(t2, t1);
        t2 = SquareTimes(t1, 10);
        t2 = Mul(t2, t1);
        FieldElement t3 = SquareTimes(t2, 20);
        t2 = Mul(t3, t2);
        t2 = SquareTimes(t2, 10);
        t1 = Mul(t2, t1);
        t2 = SquareTimes(t1, 50);
        t2 = Mul(t2, t1);
        t3 = SquareTimes(t2, 100);
        t2 = Mul(t3, t2);
        t2 = SquareTimes(t2, 50);
        t1 = Mul(t2, t1);
        t1 = SquareTimes(t1, 5);
        return Mul(t1, t0);
    }

    /// <summary>True if the element is 0 mod p.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public readonly bool IsZero()
    {
        Span<byte> s = stackalloc byte[32];
        ToBytes(s);
        return s.IndexOfAnyExcept((byte)0) < 0;
    }

    /// <summary>True if the canonical value is odd (the "negative" root).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public readonly bool IsOdd()
    {
        Span<byte> s = stackalloc byte[32];
        ToBytes(s);
        return (s[0] & 1) == 1;
    }

    /// <summary>True if a ≡ b mod p.</summary>
    public static bool AreEqual(in FieldElement a, in FieldElement b) => Sub(a, b).IsZero();

    private static FieldElement FromHex(string hex) => FromBytes(Convert.FromHexString(hex));
}
