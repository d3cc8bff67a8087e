using System.Numerics;
using MegaNet.Core.Ed25519;
using MegaNet.Verify.Simd;
using MegaNet.Verify.Simd.Curve;
using MegaNet.Verify.Simd.Field;
using Xunit.Abstractions;
using R = MegaNet.Core.Ed25519.Ed25519Reference;

namespace MegaNet.Verify.Tests;

/// <summary>The SIMD backend's field, scalar and point arithmetic against BigInteger and the reference, on seeded random values.</summary>
public sealed class SimdArithmeticTests(ITestOutputHelper output)
{
    private static readonly int Seed = TestSeed.Next();

    [SkippableFact]
    public void Points_in_lanes_double_and_add_to_the_scalar_coordinates()
    {
        Skip.IfNot(PointInLanes.IsSupported, "no AVX2 at this ISA tier: EdwardsPoint.DoubleTimes keeps the scalar formulas, which the other tests cover");

        var random = new Random(Seed);
        output.WriteLine($"seed {Seed}");
        byte[] wide = new byte[64];
        Span<byte> got = stackalloc byte[32], want = stackalloc byte[32];
        for (int trial = 0; trial < 40; trial++)
        {
            random.NextBytes(wide);
            R.Point reference = R.ScalarMultiply(R.FromLittleEndian(wide) % R.L, R.B);
            Assert.True(EdwardsPoint.TryDecode(R.Encode(reference), out EdwardsPoint p));
            if (trial % 4 == 1)
            {
                // Not affine: Z ≠ 1 and limbs as an addition leaves them.
                p = EdwardsPoint.Add(p, CachedPoint.From(EdwardsPoint.Double(p)));
                reference = R.ScalarMultiply(3, reference);
            }

            int n = 1 + (trial % 12);
            EdwardsPoint chain = p;
            for (int i = 0; i < n; i++)
            {
                chain = EdwardsPoint.Double(chain);
            }

            EdwardsPoint lanes = PointInLanes.DoubleTimes(p, n);
            foreach ((FieldElement a, FieldElement b) in new[] { (lanes.X, chain.X), (lanes.Y, chain.Y), (lanes.Z, chain.Z), (lanes.T, chain.T) })
            {
                Assert.Equal(ToBig(b), ToBig(a));
            }

            lanes.Encode(got);
            R.Encode(R.ScalarMultiply(BigInteger.One << n, reference)).CopyTo(want);
            Assert.True(want.SequenceEqual(got), $"[2^{n}]P differs from the reference (trial {trial})");

            // P ± Q for a cached Q (not affine) and an affine one, against the scalar formulas.
            CachedPoint cached = CachedPoint.From(chain);
            Assert.True(EdwardsPoint.TryDecode(R.Encode(R.ScalarMultiply(trial + 2, R.B)), out EdwardsPoint q));
            AffineNielsPoint affine = AffineNielsPoint.FromAffine(q);
            var inLanes = PointInLanes.From(p);
            var sums = new[]
            {
                (PointInLanes.Unpack(PointInLanes.Add(inLanes, PointInLanes.Cached(cached, negate: false))), EdwardsPoint.Add(p, cached)),
                (PointInLanes.Unpack(PointInLanes.Add(inLanes, PointInLanes.Cached(cached, negate: true))), EdwardsPoint.Sub(p, cached)),
                (PointInLanes.Unpack(PointInLanes.Add(inLanes, PointInLanes.Cached(affine, negate: false))), EdwardsPoint.AddAffine(p, affine)),
                (PointInLanes.Unpack(PointInLanes.Add(inLanes, PointInLanes.Cached(affine, negate: true))), EdwardsPoint.SubAffine(p, affine)),
            };
            foreach ((EdwardsPoint fromLanes, EdwardsPoint scalar) in sums)
            {
                Assert.Equal(ToBig(scalar.X), ToBig(fromLanes.X));
                Assert.Equal(ToBig(scalar.Y), ToBig(fromLanes.Y));
                Assert.Equal(ToBig(scalar.Z), ToBig(fromLanes.Z));
                Assert.Equal(ToBig(scalar.T), ToBig(fromLanes.T));
            }
        }
    }

    /// <summary>Skips a lane tier this run has not got, so that a run without AVX-512 reports its 512-bit checks as
    /// skipped rather than passed.</summary>
    private static void SkipUnlessLanes(int lanes)
    {
        if (lanes == 8)
        {
            Skip.IfNot(System.Runtime.Intrinsics.X86.Avx512F.IsSupported, "no AVX-512F at this ISA tier: the 8-lane types do not run");
        }
        else
        {
            Skip.IfNot(System.Runtime.Intrinsics.X86.Avx2.IsSupported, "no AVX2 at this ISA tier: the 4-lane types do not run");
        }
    }

    [SkippableTheory]
    [InlineData(4)]
    [InlineData(8)]
    public unsafe void Lane_row_transposes_move_each_limb_to_its_lane_and_back(int lanes)
    {
        SkipUnlessLanes(lanes);
        // The bucket method moves one 40-limb row per lane in and out of a lane point with these (LaneMultiScalar).
        const int Count = 40;
        var random = new Random(Seed);
        output.WriteLine($"seed {Seed}");
        if (lanes == 8)
        {
            Check<Avx512Lanes, System.Runtime.Intrinsics.Vector512<ulong>>(random);
        }
        else
        {
            Check<Avx2Lanes, System.Runtime.Intrinsics.Vector256<ulong>>(random);
        }

        static void Check<TOps, TVec>(Random random)
            where TOps : struct, ILaneOps<TVec>
            where TVec : struct
        {
            int lanes = TOps.Lanes;
            // Rows scattered through one buffer, out of order and unaligned, as buckets of different lanes are.
            ulong[] buffer = new ulong[(lanes * (Count + 3)) + 1];
            ulong[] vectors = new ulong[Count * lanes];
            ulong[] back = new ulong[buffer.Length];
            fixed (ulong* b = buffer, v = vectors, k = back)
            {
                ulong** rows = stackalloc ulong*[lanes];
                ulong** rowsBack = stackalloc ulong*[lanes];
                for (int j = 0; j < lanes; j++)
                {
                    int offset = 1 + (((lanes - 1 - j) * (Count + 3)) + (j % 3));
                    rows[j] = b + offset;
                    rowsBack[j] = k + offset;
                }

                for (int i = 0; i < buffer.Length; i++)
                {
                    buffer[i] = (ulong)random.NextInt64();
                }

                TOps.LoadRows(rows, v, Count);
                for (int c = 0; c < Count; c++)
                {
                    for (int j = 0; j < lanes; j++)
                    {
                        Assert.Equal(rows[j][c], vectors[(c * lanes) + j]);
                    }
                }

                TOps.StoreRows(v, rowsBack, Count);
                for (int j = 0; j < lanes; j++)
                {
                    Assert.Equal(new ReadOnlySpan<ulong>(rows[j], Count).ToArray(), new ReadOnlySpan<ulong>(rowsBack[j], Count).ToArray());
                }
            }
        }
    }

    private static BigInteger ToBig(in FieldElement f)
    {
        Span<byte> s = stackalloc byte[32];
        f.ToBytes(s);
        return R.FromLittleEndian(s);
    }

    private static FieldElement RandomElement(Random random, out BigInteger value)
    {
        byte[] bytes = new byte[32];
        random.NextBytes(bytes);
        bytes[31] &= 0x7F;
        value = R.FromLittleEndian(bytes) % R.P;
        return FieldElement.FromBytes(bytes);
    }

    [Fact]
    public void Field_operations_match_BigInteger()
    {
        output.WriteLine($"seed {Seed}");
        var random = new Random(Seed);
        for (int i = 0; i < 500; i++)
        {
            FieldElement a = RandomElement(random, out BigInteger x);
            FieldElement b = RandomElement(random, out BigInteger y);
            Assert.Equal(x * y % R.P, ToBig(FieldElement.Mul(a, b)));
            Assert.Equal(x * x % R.P, ToBig(FieldElement.Square(a)));
            Assert.Equal(R.Mod(x + y), ToBig(FieldElement.Carry(FieldElement.Add(a, b))));
            Assert.Equal(R.Mod(x - y), ToBig(FieldElement.Carry(FieldElement.Sub(a, b))));
            Assert.Equal(R.Mod(-x), ToBig(FieldElement.Carry(FieldElement.Negate(a))));
            Assert.Equal(x.IsZero ? BigInteger.Zero : R.Inverse(x), ToBig(FieldElement.Invert(a)));
            Assert.Equal(BigInteger.ModPow(x, (R.P - 5) / 8, R.P), ToBig(FieldElement.Pow22523(a)));
        }
    }

    [Fact]
    public void Mul_and_square_are_exact_at_the_documented_input_bound()
    {
        // FieldElement's remarks allow limbs up to 2^54 into Mul and Square; the three-accumulator column sums are sized
        // for exactly that, so the all-maximum limbs and random limbs near the bound must still give exact products.
        output.WriteLine($"seed {Seed}");
        var random = new Random(Seed);
        const ulong Max = (1UL << 54) - 1;
        static BigInteger Value(in FieldElement f) =>
            f.L0 + ((BigInteger)f.L1 << 51) + ((BigInteger)f.L2 << 102) + ((BigInteger)f.L3 << 153) + ((BigInteger)f.L4 << 204);
        ulong Limb(int i) => i == 0 ? Max : Max - (ulong)random.NextInt64(0, 1L << 50);
        for (int i = 0; i < 2000; i++)
        {
            var a = new FieldElement(Limb(i), Limb(i), Limb(i), Limb(i), Limb(i));
            var b = new FieldElement(Limb(i), Limb(i), Limb(i), Limb(i), Limb(i));
            BigInteger x = Value(a), y = Value(b);
            FieldElement product = FieldElement.Mul(a, b), square = FieldElement.Square(a);
            Assert.Equal(x * y % R.P, ToBig(product));
            Assert.Equal(x * x % R.P, ToBig(square));
            Assert.True(Math.Max(Math.Max(product.L0, product.L1), Math.Max(Math.Max(product.L2, product.L3), product.L4)) < (1UL << 51) + (1UL << 13));
        }
    }

    [Fact]
    public void Square_roots_of_every_tier_equal_single_ones()
    {
        output.WriteLine($"seed {Seed}");
        var random = new Random(Seed);
        for (int n = 1; n <= 8; n++)
        {
            var values = new FieldElement[n];
            var expected = new BigInteger[n];
            for (int i = 0; i < n; i++)
            {
                values[i] = RandomElement(random, out BigInteger x);
                expected[i] = BigInteger.ModPow(x, (R.P - 5) / 8, R.P);
            }

            FieldElement[] interleaved = (FieldElement[])values.Clone();
            FieldElement.Pow22523Many(values);
            Assert.Equal(expected, values.Select(v => ToBig(v)));
            FieldElement.Pow22523Scalar(interleaved);
            Assert.Equal(expected, interleaved.Select(v => ToBig(v)));
        }
    }

    [SkippableTheory]
    [InlineData(4)]
    [InlineData(8)]
    public void Lane_field_tiers_match_BigInteger_including_extreme_limbs(int lanes)
    {
        SkipUnlessLanes(lanes);
        output.WriteLine($"seed {Seed}");
        var random = new Random(Seed);
        var values = new FieldElement[8];
        var expected = new BigInteger[8];
        for (int i = 0; i < 8; i++)
        {
            values[i] = RandomElement(random, out BigInteger x);
            if (i == 0)
            {
                values[i] = new FieldElement((1UL << 51) - 1, (1UL << 51) - 1, (1UL << 51) - 1, (1UL << 51) - 1, (1UL << 51) - 1);
                x = ToBig(values[i]);
            }

            expected[i] = BigInteger.ModPow(x, (R.P - 5) / 8, R.P);
        }

        FieldElement[] results = (FieldElement[])values.Clone();
        if (lanes == 8)
        {
            LaneField<Avx512Lanes, System.Runtime.Intrinsics.Vector512<ulong>>.Pow22523(LaneField<Avx512Lanes, System.Runtime.Intrinsics.Vector512<ulong>>.Pack(results)).Unpack(results);
        }
        else
        {
            LaneField<Avx2Lanes, System.Runtime.Intrinsics.Vector256<ulong>>.Pow22523(LaneField<Avx2Lanes, System.Runtime.Intrinsics.Vector256<ulong>>.Pack(results.AsSpan(0, 4))).Unpack(results.AsSpan(0, 4));
        }

        Assert.Equal(expected[..lanes], results[..lanes].Select(v => ToBig(v)));
    }

    [Fact]
    public void Decoding_matches_the_reference_on_random_and_edge_encodings()
    {
        output.WriteLine($"seed {Seed}");
        var random = new Random(Seed);
        var encodings = new List<byte[]>();
        for (int i = 0; i < 300; i++)
        {
            byte[] e = new byte[32];
            random.NextBytes(e);
            encodings.Add(e);
        }

        encodings.AddRange(SignatureCaseGenerator.SmallOrderEncodings);
        encodings.AddRange(SignatureCaseGenerator.NonCanonicalSmallOrderEncodings);
        for (int y = 0; y < 19; y++)
        {
            // y + p (non-canonical) with both signs, and the canonical y itself.
            byte[] e = R.ToLittleEndian(R.P + y);
            encodings.Add(e);
            encodings.Add(e.Select((b, i) => i == 31 ? (byte)(b | 0x80) : b).ToArray());
            encodings.Add(R.ToLittleEndian(y));
        }

        byte[] all = encodings.SelectMany(e => e).ToArray();
        for (int g = 0; g < encodings.Count; g += 8)
        {
            int n = Math.Min(8, encodings.Count - g);
            var points = new EdwardsPoint[n];
            var ok = new bool[n];
            EdwardsPoint.TryDecodeMany(all.AsSpan(32 * g, 32 * n), points, ok);
            for (int t = 0; t < n; t++)
            {
                byte[] e = encodings[g + t];
                bool single = EdwardsPoint.TryDecode(e, out EdwardsPoint p);
                bool reference = R.TryDecode(e, out R.Point rp);
                Assert.True(reference == single, $"decode of {Convert.ToHexString(e)}: reference {reference}, simd {single}");
                Assert.Equal(single, ok[t]);
                if (reference)
                {
                    byte[] mine = new byte[32];
                    points[t].Encode(mine);
                    Assert.Equal(R.Encode(rp), mine);
                    Assert.Equal(R.IsSmallOrder(rp), EdwardsPoint.IsSmallOrderEncoding(e));
                    Assert.Equal(R.IsSmallOrder(rp), p.IsSmallOrder());
                }
            }
        }
    }

    [Fact]
    public void Scalar_reduction_and_products_match_BigInteger()
    {
        output.WriteLine($"seed {Seed}");
        var random = new Random(Seed);
        byte[] wide = new byte[64];
        for (int i = 0; i < 500; i++)
        {
            random.NextBytes(wide);
            if (i == 0)
            {
                Array.Fill(wide, (byte)0xFF);
            }

            BigInteger x = R.FromLittleEndian(wide);
            Scalar256 r = ScalarMath.ReduceBytes(wide);
            Assert.Equal(x % R.L, Big(r));

            Scalar256 a = ScalarMath.ReduceBytes(wide.AsSpan(0, 64));
            random.NextBytes(wide);
            Scalar256 b = ScalarMath.ReduceBytes(wide);
            Assert.Equal(Big(a) * Big(b) % R.L, Big(ScalarMath.MulMod(a, b)));
        }
    }

    [Fact]
    public void Non_adjacent_forms_sum_to_the_scalar_with_odd_spaced_digits_in_range()
    {
        output.WriteLine($"seed {Seed}");
        var random = new Random(Seed);
        byte[] wide = new byte[64];
        sbyte[] naf = new sbyte[ScalarMath.NafLength];
        for (int i = 0; i < 400; i++)
        {
            random.NextBytes(wide);
            Scalar256 s = ScalarMath.ReduceBytes(wide);
            if (i == 0)
            {
                s = ScalarMath.ReduceBytes(new byte[64]); // zero
            }
            else if (i == 1)
            {
                // 2^253 − 1: every bit set, so carries ripple to the top.
                s = new Scalar256 { S0 = ulong.MaxValue, S1 = ulong.MaxValue, S2 = ulong.MaxValue, S3 = (1UL << 61) - 1 };
            }
            else if (i % 4 == 2)
            {
                s.S2 = s.S3 = 0; // a 128-bit batch coefficient
            }
            else if (i % 8 == 3)
            {
                // 2^n − 1 for n up to 127: a short scalar whose carry goes past its top bit (a split single check's).
                int n = 1 + (i % 127);
                s = new Scalar256 { S0 = n >= 64 ? ulong.MaxValue : (1UL << n) - 1, S1 = n > 64 ? ulong.MaxValue >> (128 - n) : 0 };
            }

            foreach (int w in new[] { 2, 5, 8 })
            {
                ScalarMath.NonAdjacentForm(s, w, naf);
                BigInteger sum = BigInteger.Zero;
                int lastNonZero = -w;
                for (int j = 0; j < naf.Length; j++)
                {
                    if (naf[j] == 0)
                    {
                        continue;
                    }

                    Assert.True((naf[j] & 1) == 1 && Math.Abs((int)naf[j]) < 1 << (w - 1), $"digit {naf[j]} at {j}, width {w}");
                    Assert.True(j - lastNonZero >= w, $"digits at {lastNonZero} and {j}, width {w}");
                    lastNonZero = j;
                    sum += naf[j] * BigInteger.Pow(2, j);
                }

                Assert.Equal(Big(s), sum);
            }
        }
    }

    [Fact]
    public void A_split_single_check_gives_the_unsplit_check_s_verdict_and_the_reference_s_on_every_kind_of_input()
    {
        output.WriteLine($"seed {Seed}");
        int checkedItems = 0, total = 0, valid = 0;
        foreach (SignatureCaseKind kind in Enum.GetValues<SignatureCaseKind>())
        {
            var generator = new SignatureCaseGenerator(Seed ^ (int)kind ^ 0x5eed);
            for (int i = 0; i < 12; i++)
            {
                total++;
                SignatureCase c = generator.Next(kind);
                byte[] r = c.Signature[..32];
                // Rules 2 to 4 first, as the verifier applies them; the equation is what the two checks differ in.
                if (!Ed25519Constants.IsCanonicalScalar(c.Signature.AsSpan(32))
                    || !EdwardsPoint.TryDecode(c.PublicKey, out EdwardsPoint a) || EdwardsPoint.IsSmallOrderEncoding(c.PublicKey)
                    || !EdwardsPoint.TryDecode(r, out EdwardsPoint rPoint) || EdwardsPoint.IsSmallOrderEncoding(r))
                {
                    continue;
                }

                checkedItems++;
                AffineNielsPoint negA = AffineNielsPoint.FromAffine(a).Negate();
                AffineNielsPoint negR = AffineNielsPoint.FromAffine(rPoint).Negate();
                Scalar256 k = ChallengeScalar.Compute(c.Signature, c.PublicKey, c.Message);
                Scalar256 sScalar = Scalar256.FromBytes(c.Signature.AsSpan(32));
                bool expected = R.Verify(c.PublicKey, c.Signature, c.Message);
                valid += expected ? 1 : 0;
                Assert.True(LatticeSplit.TrySplit(k, out Scalar256 cs, out bool cNegative, out Scalar256 d, out bool dNegative));
                Assert.Equal(expected, SimdBatchVerifier.CheckOneSplit(negA, negR, sScalar, cs, cNegative, d, dNegative));
                Assert.Equal(expected, SimdBatchVerifier.CheckOneUnsplit(negA, negR, k, sScalar));
                Assert.Equal(expected, SimdBatchVerifier.CheckOne(negA, negR, k, sScalar));
            }
        }

        output.WriteLine($"{checkedItems} of {total} items reached the equation, {valid} of them valid");
        // Of the nineteen kinds eight reach it (S flipped past L aside), ten never do (the six refused by rules 2 to 4
        // and the four built so that only rules 3 and 4 refuse them), and bit flips in R or A about half the time.
        Assert.True(checkedItems >= total * 2 / 5, $"only {checkedItems} of {total} items reached the equation");
        Assert.True(valid > 0 && valid < checkedItems, $"{valid} of {checkedItems} valid: both verdicts must be tested");
    }

    [Fact]
    public void Lattice_split_gives_short_c_and_d_with_c_congruent_to_d_times_k()
    {
        output.WriteLine($"seed {Seed}");
        var random = new Random(Seed);
        byte[] wide = new byte[64];
        var edges = new List<BigInteger>
        {
            0, 1, 2, R.L - 1, R.L - 2, (BigInteger.One << 126) - 1, BigInteger.One << 126, (BigInteger.One << 126) + 1,
            BigInteger.One << 127, BigInteger.One << 252, (R.L - 1) / 2, (R.L + 1) / 2, R.L - (BigInteger.One << 126),
        };
        for (int i = 0; i < 2000 + edges.Count; i++)
        {
            BigInteger k;
            if (i < edges.Count)
            {
                k = edges[i];
            }
            else
            {
                random.NextBytes(wide);
                k = R.FromLittleEndian(wide) % R.L;
                if (i % 5 == 0)
                {
                    k >>= random.Next(1, 250); // short ones too
                }
            }

            byte[] kBytes = new byte[32];
            k.TryWriteBytes(kBytes, out _, isUnsigned: true);
            Assert.True(LatticeSplit.TrySplit(Scalar256.FromBytes(kBytes), out Scalar256 c, out bool cNegative, out Scalar256 d, out bool dNegative), $"k = {k}");
            BigInteger cValue = cNegative ? -Big(c) : Big(c);
            BigInteger dValue = dNegative ? -Big(d) : Big(d);
            Assert.True(BigInteger.Abs(cValue) < BigInteger.One << 127 && BigInteger.Abs(dValue) < BigInteger.One << 127, $"k = {k}: c = {cValue}, d = {dValue}");
            Assert.NotEqual(BigInteger.Zero, dValue);
            Assert.Equal(BigInteger.Zero, (cValue - dValue * k) % R.L);
        }
    }

    private static readonly int[] MultiScalarSizes = [1, 2, 3, 17, 24, 65, 200, 700];

    /// <summary>n random points and scalars, with the cases the bucket method treats apart (128-bit and zero scalars, a
    /// point twice), and their sum Σ[scalar]point by the reference.</summary>
    private static R.Point RandomTerms(Random random, int n, out AffineNielsPoint[] points, out Scalar256[] scalars)
    {
        points = new AffineNielsPoint[n];
        scalars = new Scalar256[n];
        R.Point expected = R.Identity;
        byte[] wide = new byte[64];
        for (int i = 0; i < n; i++)
        {
            random.NextBytes(wide);
            BigInteger m = R.FromLittleEndian(wide) % R.L;
            R.Point p = R.ScalarMultiply(m, R.B);
            Assert.True(EdwardsPoint.TryDecode(R.Encode(p), out EdwardsPoint mine));
            points[i] = AffineNielsPoint.FromAffine(mine);
            random.NextBytes(wide);
            scalars[i] = ScalarMath.ReduceBytes(wide);
            if (i % 3 == 1)
            {
                scalars[i].S2 = scalars[i].S3 = 0; // 128-bit coefficients as in the batch equation
            }

            if (i % 11 == 5)
            {
                scalars[i] = default;   // a zero scalar: every digit lands in the spare bucket
            }

            if (i % 13 == 7)
            {
                points[i] = points[i - 1];   // the same point twice: the same bucket is hit again
                p = PointOf(points[i - 1]);
            }

            expected = R.Add(expected, R.ScalarMultiply(Big(scalars[i]), p));
        }

        return expected;
    }

    [SkippableTheory]
    [InlineData(4)]
    [InlineData(8)]
    public void Lane_multi_scalar_multiplication_matches_a_naive_sum(int lanes)
    {
        SkipUnlessLanes(lanes);
        output.WriteLine($"seed {Seed}");
        var random = new Random(Seed);
        foreach (int n in MultiScalarSizes)
        {
            R.Point expected = RandomTerms(random, n, out AffineNielsPoint[] points, out Scalar256[] scalars);
            EdwardsPoint result = lanes == 8
                ? LaneMultiScalar<Avx512Lanes, System.Runtime.Intrinsics.Vector512<ulong>>.Compute(points, scalars)
                : LaneMultiScalar<Avx2Lanes, System.Runtime.Intrinsics.Vector256<ulong>>.Compute(points, scalars);
            byte[] got = new byte[32];
            result.Encode(got);
            Assert.True(R.Encode(expected).AsSpan().SequenceEqual(got), $"n = {n}, {lanes} lanes (seed {Seed})");
        }
    }

    [Fact]
    public void Multi_scalar_multiplication_matches_a_naive_sum()
    {
        output.WriteLine($"seed {Seed}");
        var random = new Random(Seed);
        foreach (int n in MultiScalarSizes)
        {
            R.Point expected = RandomTerms(random, n, out AffineNielsPoint[] points, out Scalar256[] scalars);
            byte[] wide = new byte[64];
            byte[] want = R.Encode(expected);
            var results = new List<EdwardsPoint> { MultiScalar.StrausNaf(default, points, scalars), MultiScalar.Pippenger(points, scalars, 5), MultiScalar.Pippenger(points, scalars, 8), MultiScalar.Compute(points, scalars) };
            // Straus with non-adjacent forms takes the base point apart, against its own table: [b]B + the rest.
            if (n <= 65)
            {
                random.NextBytes(wide);
                Scalar256 b = ScalarMath.ReduceBytes(wide);
                byte[] withBase = R.Encode(R.Add(expected, R.ScalarMultiply(Big(b), R.B)));
                byte[] got = new byte[32];
                MultiScalar.StrausNaf(b, points, scalars).Encode(got);
                Assert.Equal(withBase, got);
                MultiScalar.StrausNaf(default, points, scalars).Encode(got);
                Assert.Equal(want, got);
            }

            // The base scalar in halves against B and [2^128]B (a split single check's).
            if (n <= 65)
            {
                random.NextBytes(wide);
                Scalar256 low = ScalarMath.ReduceBytes(wide);
                random.NextBytes(wide);
                Scalar256 high = ScalarMath.ReduceBytes(wide);
                low.S2 = low.S3 = 0;
                high.S2 = high.S3 = 0;
                high.S1 >>= 3; // below 2^125, as the upper half of a scalar mod L
                BigInteger baseScalar = Big(low) + (Big(high) << 128);
                byte[] withBase = R.Encode(R.Add(expected, R.ScalarMultiply(baseScalar, R.B)));
                byte[] got = new byte[32];
                MultiScalar.StrausNafSplitBase(low, high, points, scalars).Encode(got);
                Assert.Equal(withBase, got);
            }

            // With B first, whichever method this size and tier takes.
            {
                random.NextBytes(wide);
                Scalar256 b = ScalarMath.ReduceBytes(wide);
                byte[] withBase = R.Encode(R.Add(expected, R.ScalarMultiply(Big(b), R.B)));
                byte[] got = new byte[32];
                MultiScalar.ComputeBaseFirst([BasePoint.Niels, .. points], [b, .. scalars]).Encode(got);
                Assert.Equal(withBase, got);
            }

            output.WriteLine($"n = {n}: {results.Count} methods compared");
            foreach (EdwardsPoint result in results)
            {
                byte[] got = new byte[32];
                result.Encode(got);
                Assert.Equal(want, got);
            }
        }
    }

    private static R.Point PointOf(in AffineNielsPoint p)
    {
        byte[] e = new byte[32];
        MultiScalar.FromAffineNiels(p).Encode(e);
        Assert.True(R.TryDecode(e, out R.Point point));
        return point;
    }

    private static BigInteger Big(in Scalar256 s)
    {
        byte[] b = new byte[32];
        BitConverter.TryWriteBytes(b.AsSpan(0, 8), s.S0);
        BitConverter.TryWriteBytes(b.AsSpan(8, 8), s.S1);
        BitConverter.TryWriteBytes(b.AsSpan(16, 8), s.S2);
        BitConverter.TryWriteBytes(b.AsSpan(24, 8), s.S3);
        return R.FromLittleEndian(b);
    }
}
