using System.Numerics;
using ILGPU;

namespace MegaNet.Verify.Gpu.Kernels;

/// <summary>
/// Rules 2 and 5 on the device, one thread per item: S &lt; L, and k = SHA-512(R ‖ A ‖ M) mod L, written where
/// <see cref="Ed25519Kernel.Verify"/> reads them. The host then only copies the batch's flat buffers (keys,
/// signatures, messages and their offsets) and does no work per item.
/// </summary>
/// <remarks>
/// Why on the device: on an H200's host (16 vCPUs) hashing on the CPU took 140–186 ns per item, 5.4–7.2 million items/s,
/// while the verification kernel alone did 17 million/s (perf/gpu/results). SHA-512 follows FIPS 180-4; its constants
/// are derived from the primes at start (<see cref="Constants"/>), not typed in. The reduction mod L is the ref10
/// one (21-bit signed limbs, 2^252 ≡ −c folded in with c's digits), in 64-bit integers only.
/// </remarks>
internal static class ChallengeKernel
{
    /// <summary>Entries of the constants buffer: the 80 round constants, then the 8 initial hash words.</summary>
    public const int ConstantCount = 88;

    /// <summary>
    /// One thread per item, count items. signatures: 64·n bytes (R then S); keys: 32·n bytes; messages: the items'
    /// messages back to back, offsets: n + 1 ints into them, less <paramref name="messageBase"/>; sha:
    /// <see cref="Constants"/>. Writes rs (32·n bytes: R), scalars (16 uints per item: S, then k; k zero where S
    /// ≥ L) and pre (1 where S &lt; L, else 0). With <paramref name="hostChallenges"/> not 0, an item whose pre is 1
    /// on entry had its k computed by the host (a long message, not copied here): its k is already in scalars, and only
    /// R, S and the S check are written for it.
    /// </summary>
    public static void Prepare(int count, ArrayView<byte> signatures, ArrayView<byte> keys, ArrayView<byte> messages, ArrayView<int> offsets,
        int messageBase, int hostChallenges, ArrayView<ulong> sha, ArrayView<byte> rs, ArrayView<uint> scalars, ArrayView<byte> pre)
    {
        int i = Grid.GlobalIndex.X;
        if (i >= count)
        {
            return;
        }

        int so = 64 * i;
        for (int b = 0; b < 32; b++)
        {
            rs[32 * i + b] = signatures[so + b];
        }

        for (int w = 0; w < 8; w++)
        {
            scalars[16 * i + w] = Le32(signatures, so + 32 + 4 * w);
        }

        bool canonical = IsBelowL(signatures, so + 32);
        bool hashedOnHost = hostChallenges != 0 && pre[i] != 0; // read before pre is overwritten with the S check
        pre[i] = canonical ? (byte)1 : (byte)0;
        if (!canonical)
        {
            for (int w = 8; w < 16; w++)
            {
                scalars[16 * i + w] = 0;
            }

            return;
        }

        if (hashedOnHost)
        {
            return;
        }

        int messageStart = offsets[i] - messageBase;
        // In 32 bits: SignatureBatch holds a message to 1 GiB (MaxMessageLength), so the length, the padded block count
        // and every byte position below stay far from overflow (within 208 bytes of 2 GiB they wrapped, and hashed nothing).
        int length = 64 + offsets[i + 1] - offsets[i];
        ArrayView<ulong> h = LocalMemory.Allocate<ulong>(8);
        ArrayView<ulong> schedule = LocalMemory.Allocate<ulong>(16);
        for (int w = 0; w < 8; w++)
        {
            h[w] = sha[80 + w];
        }

        // Padding: 0x80, zeros, then the length in bits as a 128-bit big-endian number in the last 16 bytes.
        int blocks = (length + 17 + 127) / 128;
        for (int block = 0; block < blocks; block++)
        {
            for (int t = 0; t < 16; t++)
            {
                ulong word = 0;
                for (int b = 0; b < 8; b++)
                {
                    int p = 128 * block + 8 * t + b;
                    word = (word << 8) | PaddedByte(p, length, blocks, signatures, so, keys, 32 * i, messages, messageStart);
                }

                schedule[t] = word;
            }

            Compress(h, schedule, sha);
        }

        // The digest is read as a little-endian 512-bit number: its 64-bit limbs are the hash words byte-swapped.
        ulong x0 = Swap(h[0]), x1 = Swap(h[1]), x2 = Swap(h[2]), x3 = Swap(h[3]);
        ulong x4 = Swap(h[4]), x5 = Swap(h[5]), x6 = Swap(h[6]), x7 = Swap(h[7]);
        Reduce(x0, x1, x2, x3, x4, x5, x6, x7, out ulong k0, out ulong k1, out ulong k2, out ulong k3);
        int o = 16 * i + 8;
        scalars[o] = (uint)k0;
        scalars[o + 1] = (uint)(k0 >> 32);
        scalars[o + 2] = (uint)k1;
        scalars[o + 3] = (uint)(k1 >> 32);
        scalars[o + 4] = (uint)k2;
        scalars[o + 5] = (uint)(k2 >> 32);
        scalars[o + 6] = (uint)k3;
        scalars[o + 7] = (uint)(k3 >> 32);
    }

    /// <summary>The 80 round constants (cube roots of the first 80 primes) and the 8 initial words (square roots of the
    /// first 8), each the first 64 bits of the fractional part, computed exactly with integer roots.</summary>
    public static ulong[] Constants()
    {
        var result = new ulong[ConstantCount];
        int found = 0;
        for (int candidate = 2; found < 80; candidate++)
        {
            if (!IsPrime(candidate))
            {
                continue;
            }

            // floor(cbrt(p) · 2^64) = floor(cbrt(p · 2^192)); its low 64 bits are the fractional part's first 64.
            result[found] = (ulong)(IntegerRoot(new BigInteger(candidate) << 192, 3) & ulong.MaxValue);
            if (found < 8)
            {
                result[80 + found] = (ulong)(IntegerRoot(new BigInteger(candidate) << 128, 2) & ulong.MaxValue);
            }

            found++;
        }

        return result;
    }

    /// <summary>
    /// x mod L for the 512-bit little-endian x = x0 + x1·2^64 + …, as four 64-bit limbs (ref10's sc_reduce: 21-bit
    /// limbs, each fold of limb j ≥ 12 adds its product with −c's six signed digits to limbs j − 12 … j − 7).
    /// </summary>
    public static void Reduce(ulong x0, ulong x1, ulong x2, ulong x3, ulong x4, ulong x5, ulong x6, ulong x7,
        out ulong k0, out ulong k1, out ulong k2, out ulong k3)
    {
        long s0 = Limb(x0, x1, 0), s1 = Limb(x0, x1, 21), s2 = Limb(x0, x1, 42), s3 = Limb(x0, x1, 63);
        long s4 = Limb(x1, x2, 20), s5 = Limb(x1, x2, 41), s6 = Limb(x1, x2, 62), s7 = Limb(x2, x3, 19);
        long s8 = Limb(x2, x3, 40), s9 = Limb(x2, x3, 61), s10 = Limb(x3, x4, 18), s11 = Limb(x3, x4, 39);
        long s12 = Limb(x3, x4, 60), s13 = Limb(x4, x5, 17), s14 = Limb(x4, x5, 38), s15 = Limb(x4, x5, 59);
        long s16 = Limb(x5, x6, 16), s17 = Limb(x5, x6, 37), s18 = Limb(x5, x6, 58), s19 = Limb(x6, x7, 15);
        long s20 = Limb(x6, x7, 36), s21 = Limb(x6, x7, 57), s22 = Limb(x7, 0, 14), s23 = (long)(x7 >> 35);
        long carry;

        s11 += s23 * 666643; s12 += s23 * 470296; s13 += s23 * 654183; s14 -= s23 * 997805; s15 += s23 * 136657; s16 -= s23 * 683901;
        s10 += s22 * 666643; s11 += s22 * 470296; s12 += s22 * 654183; s13 -= s22 * 997805; s14 += s22 * 136657; s15 -= s22 * 683901;
        s9 += s21 * 666643; s10 += s21 * 470296; s11 += s21 * 654183; s12 -= s21 * 997805; s13 += s21 * 136657; s14 -= s21 * 683901;
        s8 += s20 * 666643; s9 += s20 * 470296; s10 += s20 * 654183; s11 -= s20 * 997805; s12 += s20 * 136657; s13 -= s20 * 683901;
        s7 += s19 * 666643; s8 += s19 * 470296; s9 += s19 * 654183; s10 -= s19 * 997805; s11 += s19 * 136657; s12 -= s19 * 683901;
        s6 += s18 * 666643; s7 += s18 * 470296; s8 += s18 * 654183; s9 -= s18 * 997805; s10 += s18 * 136657; s11 -= s18 * 683901;

        carry = (s6 + (1L << 20)) >> 21; s7 += carry; s6 -= carry << 21;
        carry = (s8 + (1L << 20)) >> 21; s9 += carry; s8 -= carry << 21;
        carry = (s10 + (1L << 20)) >> 21; s11 += carry; s10 -= carry << 21;
        carry = (s12 + (1L << 20)) >> 21; s13 += carry; s12 -= carry << 21;
        carry = (s14 + (1L << 20)) >> 21; s15 += carry; s14 -= carry << 21;
        carry = (s16 + (1L << 20)) >> 21; s17 += carry; s16 -= carry << 21;
        carry = (s7 + (1L << 20)) >> 21; s8 += carry; s7 -= carry << 21;
        carry = (s9 + (1L << 20)) >> 21; s10 += carry; s9 -= carry << 21;
        carry = (s11 + (1L << 20)) >> 21; s12 += carry; s11 -= carry << 21;
        carry = (s13 + (1L << 20)) >> 21; s14 += carry; s13 -= carry << 21;
        carry = (s15 + (1L << 20)) >> 21; s16 += carry; s15 -= carry << 21;

        s5 += s17 * 666643; s6 += s17 * 470296; s7 += s17 * 654183; s8 -= s17 * 997805; s9 += s17 * 136657; s10 -= s17 * 683901;
        s4 += s16 * 666643; s5 += s16 * 470296; s6 += s16 * 654183; s7 -= s16 * 997805; s8 += s16 * 136657; s9 -= s16 * 683901;
        s3 += s15 * 666643; s4 += s15 * 470296; s5 += s15 * 654183; s6 -= s15 * 997805; s7 += s15 * 136657; s8 -= s15 * 683901;
        s2 += s14 * 666643; s3 += s14 * 470296; s4 += s14 * 654183; s5 -= s14 * 997805; s6 += s14 * 136657; s7 -= s14 * 683901;
        s1 += s13 * 666643; s2 += s13 * 470296; s3 += s13 * 654183; s4 -= s13 * 997805; s5 += s13 * 136657; s6 -= s13 * 683901;
        s0 += s12 * 666643; s1 += s12 * 470296; s2 += s12 * 654183; s3 -= s12 * 997805; s4 += s12 * 136657; s5 -= s12 * 683901;
        s12 = 0;

        carry = (s0 + (1L << 20)) >> 21; s1 += carry; s0 -= carry << 21;
        carry = (s2 + (1L << 20)) >> 21; s3 += carry; s2 -= carry << 21;
        carry = (s4 + (1L << 20)) >> 21; s5 += carry; s4 -= carry << 21;
        carry = (s6 + (1L << 20)) >> 21; s7 += carry; s6 -= carry << 21;
        carry = (s8 + (1L << 20)) >> 21; s9 += carry; s8 -= carry << 21;
        carry = (s10 + (1L << 20)) >> 21; s11 += carry; s10 -= carry << 21;
        carry = (s1 + (1L << 20)) >> 21; s2 += carry; s1 -= carry << 21;
        carry = (s3 + (1L << 20)) >> 21; s4 += carry; s3 -= carry << 21;
        carry = (s5 + (1L << 20)) >> 21; s6 += carry; s5 -= carry << 21;
        carry = (s7 + (1L << 20)) >> 21; s8 += carry; s7 -= carry << 21;
        carry = (s9 + (1L << 20)) >> 21; s10 += carry; s9 -= carry << 21;
        carry = (s11 + (1L << 20)) >> 21; s12 += carry; s11 -= carry << 21;

        s0 += s12 * 666643; s1 += s12 * 470296; s2 += s12 * 654183; s3 -= s12 * 997805; s4 += s12 * 136657; s5 -= s12 * 683901;
        s12 = 0;

        carry = s0 >> 21; s1 += carry; s0 -= carry << 21;
        carry = s1 >> 21; s2 += carry; s1 -= carry << 21;
        carry = s2 >> 21; s3 += carry; s2 -= carry << 21;
        carry = s3 >> 21; s4 += carry; s3 -= carry << 21;
        carry = s4 >> 21; s5 += carry; s4 -= carry << 21;
        carry = s5 >> 21; s6 += carry; s5 -= carry << 21;
        carry = s6 >> 21; s7 += carry; s6 -= carry << 21;
        carry = s7 >> 21; s8 += carry; s7 -= carry << 21;
        carry = s8 >> 21; s9 += carry; s8 -= carry << 21;
        carry = s9 >> 21; s10 += carry; s9 -= carry << 21;
        carry = s10 >> 21; s11 += carry; s10 -= carry << 21;
        carry = s11 >> 21; s12 += carry; s11 -= carry << 21;

        s0 += s12 * 666643; s1 += s12 * 470296; s2 += s12 * 654183; s3 -= s12 * 997805; s4 += s12 * 136657; s5 -= s12 * 683901;

        carry = s0 >> 21; s1 += carry; s0 -= carry << 21;
        carry = s1 >> 21; s2 += carry; s1 -= carry << 21;
        carry = s2 >> 21; s3 += carry; s2 -= carry << 21;
        carry = s3 >> 21; s4 += carry; s3 -= carry << 21;
        carry = s4 >> 21; s5 += carry; s4 -= carry << 21;
        carry = s5 >> 21; s6 += carry; s5 -= carry << 21;
        carry = s6 >> 21; s7 += carry; s6 -= carry << 21;
        carry = s7 >> 21; s8 += carry; s7 -= carry << 21;
        carry = s8 >> 21; s9 += carry; s8 -= carry << 21;
        carry = s9 >> 21; s10 += carry; s9 -= carry << 21;
        carry = s10 >> 21; s11 += carry; s10 -= carry << 21;

        // Every limb is now in [0, 2^21): pack the twelve into 252 bits.
        k0 = (ulong)s0 | ((ulong)s1 << 21) | ((ulong)s2 << 42) | ((ulong)s3 << 63);
        k1 = ((ulong)s3 >> 1) | ((ulong)s4 << 20) | ((ulong)s5 << 41) | ((ulong)s6 << 62);
        k2 = ((ulong)s6 >> 2) | ((ulong)s7 << 19) | ((ulong)s8 << 40) | ((ulong)s9 << 61);
        k3 = ((ulong)s9 >> 3) | ((ulong)s10 << 18) | ((ulong)s11 << 39);
    }

    private static void Compress(ArrayView<ulong> h, ArrayView<ulong> w, ArrayView<ulong> k)
    {
        ulong a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
        for (int t = 0; t < 80; t++)
        {
            ulong wt;
            if (t < 16)
            {
                wt = w[t];
            }
            else
            {
                // The schedule kept as a ring of 16: W[t] overwrites W[t − 16].
                ulong w15 = w[(t - 15) & 15], w2 = w[(t - 2) & 15];
                ulong s0 = Rotr(w15, 1) ^ Rotr(w15, 8) ^ (w15 >> 7);
                ulong s1 = Rotr(w2, 19) ^ Rotr(w2, 61) ^ (w2 >> 6);
                wt = w[t & 15] + s0 + w[(t - 7) & 15] + s1;
                w[t & 15] = wt;
            }

            ulong t1 = hh + (Rotr(e, 14) ^ Rotr(e, 18) ^ Rotr(e, 41)) + ((e & f) ^ (~e & g)) + k[t] + wt;
            ulong t2 = (Rotr(a, 28) ^ Rotr(a, 34) ^ Rotr(a, 39)) + ((a & b) ^ (a & c) ^ (b & c));
            hh = g;
            g = f;
            f = e;
            e = d + t1;
            d = c;
            c = b;
            b = a;
            a = t1 + t2;
        }

        h[0] += a;
        h[1] += b;
        h[2] += c;
        h[3] += d;
        h[4] += e;
        h[5] += f;
        h[6] += g;
        h[7] += hh;
    }

    // Byte p of R ‖ A ‖ M padded to whole blocks.
    private static ulong PaddedByte(int p, int length, int blocks, ArrayView<byte> signatures, int so, ArrayView<byte> keys, int ko,
        ArrayView<byte> messages, int mo)
    {
        if (p < 32)
        {
            return signatures[so + p];
        }

        if (p < 64)
        {
            return keys[ko + p - 32];
        }

        if (p < length)
        {
            return messages[mo + p - 64];
        }

        if (p == length)
        {
            return 0x80;
        }

        // The last 8 bytes: the bit length (below 2^34 here), big-endian; the 8 before them are zero.
        int fromEnd = (128 * blocks) - 1 - p;
        return fromEnd < 8 ? (((ulong)length << 3) >> (8 * fromEnd)) & 0xFF : 0;
    }

    private static bool IsBelowL(ArrayView<byte> s, int o)
    {
        // L = 2^252 + 27742317777372353535851937790883648493, little-endian; compared from the top byte down.
        for (int b = 31; b >= 0; b--)
        {
            int l = LByte(b);
            if (s[o + b] != l)
            {
                return s[o + b] < l;
            }
        }

        return false;
    }

    private static int LByte(int b) => b switch
    {
        0 => 0xed,
        1 => 0xd3,
        2 => 0xf5,
        3 => 0x5c,
        4 => 0x1a,
        5 => 0x63,
        6 => 0x12,
        7 => 0x58,
        8 => 0xd6,
        9 => 0x9c,
        10 => 0xf7,
        11 => 0xa2,
        12 => 0xde,
        13 => 0xf9,
        14 => 0xde,
        15 => 0x14,
        31 => 0x10,
        _ => 0,
    };

    private static uint Le32(ArrayView<byte> s, int o) => s[o] | ((uint)s[o + 1] << 8) | ((uint)s[o + 2] << 16) | ((uint)s[o + 3] << 24);

    private static long Limb(ulong lo, ulong hi, int off) => (long)(((lo >> off) | (off > 43 ? hi << (64 - off) : 0)) & 0x1FFFFF);

    private static ulong Rotr(ulong x, int n) => (x >> n) | (x << (64 - n));

    private static ulong Swap(ulong x)
    {
        x = ((x & 0x00FF00FF00FF00FFUL) << 8) | ((x >> 8) & 0x00FF00FF00FF00FFUL);
        x = ((x & 0x0000FFFF0000FFFFUL) << 16) | ((x >> 16) & 0x0000FFFF0000FFFFUL);
        return (x << 32) | (x >> 32);
    }

    private static bool IsPrime(int n)
    {
        for (int d = 2; d * d <= n; d++)
        {
            if (n % d == 0)
            {
                return false;
            }
        }

        return true;
    }

    // floor(value^(1/degree)) by Newton's method from above.
    private static BigInteger IntegerRoot(BigInteger value, int degree)
    {
        BigInteger x = BigInteger.One << (int)((value.GetBitLength() / degree) + 1);
        while (true)
        {
            BigInteger next = (((degree - 1) * x) + (value / BigInteger.Pow(x, degree - 1))) / degree;
            if (next >= x)
            {
                return x;
            }

            x = next;
        }
    }
}
