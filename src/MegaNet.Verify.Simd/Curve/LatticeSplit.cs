using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace MegaNet.Verify.Simd.Curve;

/// <summary>
/// Writes a scalar k mod L as a quotient of two short integers: c ≡ d·k (mod L) with 0 ≤ c &lt; 2^126, 0 &lt; |d| &lt; 2^127,
/// by the extended Euclidean algorithm on (L, k) stopped at the first remainder below 2^126 (as in GLV's decomposition;
/// T. Pornin, "Optimized lattice basis reduction in dimension 2, and fast Schnorr and EdDSA signature verification", 2020,
/// uses it for EdDSA). Each remainder rᵢ = sᵢ·L + tᵢ·k, so rᵢ ≡ tᵢ·k; with the remainder before it at least 2^126,
/// |tᵢ| ≤ L / 2^126 &lt; 2^127. Quotients come bit by bit from shifts and subtractions, no division.
/// </summary>
/// <remarks>
/// A single check [8]([s]B − R − [k]A) = 𝒪 multiplied by d is [8]([d·s mod L]B − [d]R − [c]A) = 𝒪 and holds exactly
/// when the first does: d is invertible mod L, B has order L, and [d·k]A and [c]A differ by a multiple of [L]A, a point
/// of small order that the cofactor removes. Its scalars are half as long (d·s mod L goes in two halves against B and
/// [2^128]B), so the shared doubling chain is half as long: about 128 doublings instead of 253.
/// </remarks>
internal static class LatticeSplit
{
    /// <summary>The remainder bound: the first remainder below 2^126 ends the algorithm.</summary>
    private const int RemainderBits = 126;

    /// <summary>
    /// Finds c and d with c ≡ d·k (mod L), both below 2^127 in size and d ≠ 0, returned as magnitudes and signs. Always
    /// true for k &lt; L; false, for the caller to check the unsplit equation, only if the result failed its own check.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static bool TrySplit(in Scalar256 k, out Scalar256 c, out bool cNegative, out Scalar256 d, out bool dNegative)
    {
        // Two rows (r, |t|): r in 4 limbs at offset 0 or 6, |t| (below 2^127) in 2 limbs right after it. The rows swap
        // by offset. Remainders only shrink, so their arithmetic runs on the limbs the larger one still needs.
        Span<ulong> rows = stackalloc ulong[12];
        ScalarMath.LLimbs[..4].CopyTo(rows);
        rows[6] = k.S0;
        rows[7] = k.S1;
        rows[8] = k.S2;
        rows[9] = k.S3;
        rows[10] = 1;
        int previous = 0, current = 6;
        bool currentNegative = false; // tᵢ alternate in sign: tᵢ₊₁ = tᵢ₋₁ − q·tᵢ, so |tᵢ₊₁| = |tᵢ₋₁| + q·|tᵢ|
        int limbs = 4;
        int currentBits = BitLength(rows.Slice(current, 4));
        while (currentBits > RemainderBits)
        {
            // rᵢ₋₁ ← rᵢ₋₁ mod rᵢ and |tᵢ₋₁| ← |tᵢ₋₁| + q·|tᵢ|, q's bits from the top: subtract rᵢ·2^s where the lengths
            // say it fits, or rᵢ·2^(s−1) where it did not.
            limbs = (BitLength(rows.Slice(previous, limbs)) + 63) / 64;
            Span<ulong> r = rows.Slice(previous, limbs);
            ReadOnlySpan<ulong> divisor = rows.Slice(current, limbs);
            Span<ulong> t = rows.Slice(previous + 4, 2);
            ReadOnlySpan<ulong> tCurrent = rows.Slice(current + 4, 2);
            ulong divisorTop = Top64(divisor, currentBits);
            while (true)
            {
                int bits = BitLength(r);
                int s = bits - currentBits;
                if (s < 0)
                {
                    break;
                }

                // Aligned at their top bits, the leading 64 bits settle whether rᵢ·2^s fits under r, except when they are
                // equal; then the subtraction's borrow does.
                if (Top64(r, bits) < divisorTop)
                {
                    if (s == 0)
                    {
                        break;
                    }

                    s--;
                    AddShifted(r, divisor, s, subtract: true);
                }
                else if (AddShifted(r, divisor, s, subtract: true) != 0)
                {
                    if (s == 0)
                    {
                        AddShifted(r, divisor, 0, subtract: false); // r was below the divisor after all
                        break;
                    }

                    s--;
                    AddShifted(r, divisor, s, subtract: false); // r − 2^(s+1)·rᵢ + 2^s·rᵢ: at least 0 by the lengths
                }

                AddShifted(t, tCurrent, s, subtract: false);
            }

            (previous, current) = (current, previous);
            currentNegative = !currentNegative;
            currentBits = BitLength(rows.Slice(current, limbs));
        }

        c = new Scalar256 { S0 = rows[current], S1 = rows[current + 1] };
        cNegative = false;
        d = new Scalar256 { S0 = rows[current + 4], S1 = rows[current + 5] };
        dNegative = currentNegative;
        return Holds(k, c, cNegative, d, dNegative);
    }

    /// <summary>x ± (y &lt;&lt; shift) modulo 2^(64·x.Length), y no longer than x; returns the carry (or borrow) out.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static ulong AddShifted(Span<ulong> x, ReadOnlySpan<ulong> y, int shift, bool subtract)
    {
        int words = shift >> 6, bits = shift & 63;
        ref ulong xs = ref MemoryMarshal.GetReference(x);
        ref ulong ys = ref MemoryMarshal.GetReference(y);
        ulong previous = 0, carry = 0;
        // Branch-free carries: the carry (or borrow) out of a + b (a − b) is the top bit of the majority function of a,
        // b and the sum's complement (of ~a, b and the difference).
        for (int i = words; i < x.Length; i++)
        {
            ulong current = i - words < y.Length ? Unsafe.Add(ref ys, i - words) : 0;
            // previous >> (64 − bits), and 0 when bits is 0, without a branch or a shift by 64.
            ulong shifted = (current << bits) | ((previous >> 1) >> (63 - bits));
            previous = current;
            ref ulong xi = ref Unsafe.Add(ref xs, i);
            ulong a = xi;
            if (subtract)
            {
                ulong r = a - shifted - carry;
                carry = ((~a & shifted) | (~(a ^ shifted) & r)) >> 63;
                xi = r;
            }
            else
            {
                ulong r = a + shifted + carry;
                carry = ((a & shifted) | ((a | shifted) & ~r)) >> 63;
                xi = r;
            }
        }

        return carry;
    }

    /// <summary>The 64 bits of x from bit <paramref name="bits"/> − 1 down (its top bits, for its bit length).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static ulong Top64(ReadOnlySpan<ulong> x, int bits)
    {
        if (bits <= 64)
        {
            return x[0] << (64 - bits);
        }

        int shift = bits - 64;
        int limb = shift >> 6, offset = shift & 63;
        ulong top = x[limb] >> offset;
        if (offset != 0)
        {
            top |= x[limb + 1] << (64 - offset);
        }

        return top;
    }

    /// <summary>The bit length of an unsigned x.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static int BitLength(ReadOnlySpan<ulong> x)
    {
        for (int i = x.Length - 1; i >= 0; i--)
        {
            if (x[i] != 0)
            {
                return 64 * i + 64 - BitOperations.LeadingZeroCount(x[i]);
            }
        }

        return 0;
    }

    /// <summary>
    /// c ≡ d·k (mod L) and d ≠ 0, checked on the result rather than trusted from the reduction: any such pair (both
    /// below 2^128, so d is not a multiple of L) gives an equation with the same verdict, so a split that passes this
    /// can make a check slower but never wrong.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static bool Holds(in Scalar256 k, in Scalar256 c, bool cNegative, in Scalar256 d, bool dNegative)
    {
        if (d.IsZero)
        {
            return false;
        }

        Scalar256 dk = ScalarMath.MulMod(d, k);
        Scalar256 cModL = c; // below 2^128 < L
        if (cNegative != dNegative)
        {
            cModL = ScalarMath.NegateMod(cModL);
        }

        return dk.S0 == cModL.S0 && dk.S1 == cModL.S1 && dk.S2 == cModL.S2 && dk.S3 == cModL.S3;
    }
}
