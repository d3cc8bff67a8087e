using System.Buffers;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using System.Security.Cryptography;
using MegaNet.Core.Ed25519;
using MegaNet.Core.Verification;
using MegaNet.Verify.Simd.Curve;
using MegaNet.Verify.Simd.Field;

namespace MegaNet.Verify.Simd;

/// <summary>
/// Backend <c>simd</c>: CPU batch verification under the MegaNet rule. Cheap checks (S &lt; L, strict decoding,
/// small order) run per item; the survivors are checked together with one random linear combination
/// [8]([Σzᵢsᵢ]B − Σ[zᵢ]Rᵢ − Σ[zᵢkᵢ]Aᵢ) = 𝒪 (128-bit zᵢ from a CSPRNG) by multi-scalar multiplication (Straus for small
/// inputs, Pippenger for large ones); when the combination fails the batch is bisected down to single-item
/// checks, so every verdict equals the reference's. Decoded keys are cached; batches are split across threads.
/// </summary>
public sealed class SimdBatchVerifier : BatchVerifierBase
{
    /// <summary>Registry name.</summary>
    public const string BackendName = "simd";

    /// <summary>The fewest items a thread is given: below this, another thread costs more than it saves.</summary>
    public const int MinItemsPerThread = 48;

    // At or below this size a failing group is settled item by item instead of bisected further.
    private const int SingleCheckSize = 4;

    // At or below this size a failing group whose sibling also failed is settled item by item.
    private const int DenseSingleCheckSize = 32;

    private readonly int _threads;
    private readonly KeyCache? _cache;
    private readonly int _cacheCapacity;

    /// <summary>Creates the verifier.</summary>
    public SimdBatchVerifier(VerifierOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _threads = options.Threads;
        _cacheCapacity = options.KeyCacheCapacity;
        _cache = options.KeyCacheCapacity > 0 ? new KeyCache(options.KeyCacheCapacity) : null;
    }

    /// <summary>Null: the scalar fallback runs on every machine.</summary>
    public static string? Probe() => null;

    /// <summary>The vector tier the field arithmetic runs on in this process (after the DOTNET_Enable* knobs): the
    /// same test as the field and multi-scalar code paths make.</summary>
    public static SimdTier Tier =>
        Avx512F.IsSupported && Vector512.IsHardwareAccelerated ? SimdTier.Avx512 :
        Avx2.IsSupported ? SimdTier.Avx2 :
        SimdTier.Scalar;

    /// <summary>The instruction set tier the field arithmetic runs on in this process, in words.</summary>
    public static string IsaTier => Tier switch
    {
        SimdTier.Avx512 => "AVX-512F x8 lanes (square roots, bucket sums), scalar radix 2^51 elsewhere",
        SimdTier.Avx2 => "AVX2 x4 lanes (square roots, bucket sums), scalar radix 2^51 elsewhere",
        _ => "scalar 64-bit radix 2^51",
    };

    /// <inheritdoc />
    public override string Name => BackendName;

    /// <inheritdoc />
    public override string Description =>
        $"{IsaTier}; Straus/Pippenger batch equation; {_threads} thread(s); key cache {(_cache is null ? "off" : _cacheCapacity.ToString(System.Globalization.CultureInfo.InvariantCulture))}";

    /// <summary>How many of <paramref name="threads"/> threads verify a batch of <paramref name="count"/> items.</summary>
    public static int ThreadsFor(int count, int threads) => Math.Clamp(count / MinItemsPerThread, 1, threads);

    /// <inheritdoc />
    protected override void VerifyCore(SignatureBatch batch, int start, int count, Span<bool> verdicts)
    {
        int chunks = ThreadsFor(count, _threads);
        if (chunks == 1)
        {
            VerifyChunk(batch, start, count, verdicts);
            return;
        }

        bool[] results = ArrayPool<bool>.Shared.Rent(count);
        try
        {
            Parallel.For(0, chunks, new ParallelOptions { MaxDegreeOfParallelism = chunks }, c =>
            {
                int from = (int)((long)count * c / chunks);
                int to = (int)((long)count * (c + 1) / chunks);
                VerifyChunk(batch, start + from, to - from, results.AsSpan(from, to - from));
            });
            results.AsSpan(0, count).CopyTo(verdicts);
        }
        finally
        {
            ArrayPool<bool>.Shared.Return(results);
        }
    }

    private void VerifyChunk(SignatureBatch batch, int start, int count, Span<bool> verdicts)
    {
        AffineNielsPoint[] negA = ArrayPool<AffineNielsPoint>.Shared.Rent(count);
        AffineNielsPoint[] negR = ArrayPool<AffineNielsPoint>.Shared.Rent(count);
        Scalar256[] k = ArrayPool<Scalar256>.Shared.Rent(count);
        Scalar256[] s = ArrayPool<Scalar256>.Shared.Rent(count);
        int[] pending = ArrayPool<int>.Shared.Rent(count);
        // Decode jobs: item index, and whether the job is the key (else R). Up to two per item.
        int[] jobs = ArrayPool<int>.Shared.Rent(2 * count);
        byte[] jobBytes = ArrayPool<byte>.Shared.Rent(64 * count);
        bool[] okA = ArrayPool<bool>.Shared.Rent(count);
        bool[] okR = ArrayPool<bool>.Shared.Rent(count);
        try
        {
            ReadOnlySpan<byte> keys = batch.PublicKeys;
            ReadOnlySpan<byte> signatures = batch.Signatures;

            // Pass 1: rule 2 (S < L) and the key cache; queue the square roots still needed.
            int jobCount = 0;
            for (int j = 0; j < count; j++)
            {
                int i = start + j;
                verdicts[j] = false;
                okA[j] = okR[j] = false;
                ReadOnlySpan<byte> sig = signatures.Slice(i * SignatureBatch.SignatureSize, SignatureBatch.SignatureSize);
                if (!Ed25519Constants.IsCanonicalScalar(sig[32..]))
                {
                    continue;
                }

                ReadOnlySpan<byte> pk = keys.Slice(i * SignatureBatch.PublicKeySize, SignatureBatch.PublicKeySize);
                if (_cache is not null && _cache.TryGet(pk, out bool cachedValid, out negA[j]))
                {
                    if (!cachedValid)
                    {
                        continue;
                    }

                    okA[j] = true;
                }
                else
                {
                    pk.CopyTo(jobBytes.AsSpan(32 * jobCount));
                    jobs[jobCount++] = ~j;
                }

                sig[..32].CopyTo(jobBytes.AsSpan(32 * jobCount));
                jobs[jobCount++] = j;
            }

            // Pass 2: rules 3 and 4 for the queued encodings, eight square roots at a time on vector lanes.
            Span<EdwardsPoint> decoded = stackalloc EdwardsPoint[8];
            Span<bool> decodedOk = stackalloc bool[8];
            for (int g = 0; g < jobCount; g += 8)
            {
                int n = Math.Min(8, jobCount - g);
                EdwardsPoint.TryDecodeMany(jobBytes.AsSpan(32 * g, 32 * n), decoded[..n], decodedOk[..n]);
                for (int t = 0; t < n; t++)
                {
                    int job = jobs[g + t];
                    ReadOnlySpan<byte> encoding = jobBytes.AsSpan(32 * (g + t), 32);
                    bool valid = decodedOk[t] && !EdwardsPoint.IsSmallOrderEncoding(encoding);
                    AffineNielsPoint negated = valid ? AffineNielsPoint.FromAffine(decoded[t]).Negate() : default;
                    if (job < 0)
                    {
                        negA[~job] = negated;
                        okA[~job] = valid;
                        _cache?.Add(encoding, valid, negated);
                    }
                    else
                    {
                        negR[job] = negated;
                        okR[job] = valid;
                    }
                }
            }

            // Pass 3: rule 5 for the survivors.
            ReadOnlySpan<byte> messages = batch.MessageData;
            ReadOnlySpan<int> offsets = batch.MessageOffsets;
            int pendingCount = 0;
            for (int j = 0; j < count; j++)
            {
                if (!okA[j] || !okR[j])
                {
                    continue;
                }

                int i = start + j;
                ReadOnlySpan<byte> sig = signatures.Slice(i * SignatureBatch.SignatureSize, SignatureBatch.SignatureSize);
                ReadOnlySpan<byte> key = keys.Slice(i * SignatureBatch.PublicKeySize, SignatureBatch.PublicKeySize);
                k[j] = ChallengeScalar.Compute(sig, key, messages[offsets[i]..offsets[i + 1]]);
                s[j] = Scalar256.FromBytes(sig[32..]);
                pending[pendingCount++] = j;
            }

            // Rule 6 for everything that survived, together.
            Span<int> survivors = pending.AsSpan(0, pendingCount);
            if (pendingCount > 2 && pendingCount <= SingleCheckSize)
            {
                // A whole small batch is most likely valid: one combined check costs less than its single checks
                // (settling batches of 3 and 4 item by item halved their rate).
                if (CheckCombined(survivors, negA, negR, k, s))
                {
                    SetValid(survivors, verdicts);
                }
                else
                {
                    CheckEach(survivors, negA, negR, k, s, verdicts);
                }
            }
            else if (pendingCount > 0)
            {
                Resolve(survivors, knownToFail: false, negA, negR, k, s, verdicts);
            }
        }
        finally
        {
            ArrayPool<AffineNielsPoint>.Shared.Return(negA);
            ArrayPool<AffineNielsPoint>.Shared.Return(negR);
            ArrayPool<Scalar256>.Shared.Return(k);
            ArrayPool<Scalar256>.Shared.Return(s);
            ArrayPool<int>.Shared.Return(pending);
            ArrayPool<int>.Shared.Return(jobs);
            ArrayPool<byte>.Shared.Return(jobBytes);
            ArrayPool<bool>.Shared.Return(okA);
            ArrayPool<bool>.Shared.Return(okR);
        }
    }

    /// <summary>
    /// Settles the verdicts of <paramref name="items"/> (rule 6) by bisection: a group whose combined check fails is
    /// halved and each half checked, except that when the first half passes the second is known to fail and is halved
    /// without a check of its own. That saves a quarter of the work for one bad item, the case that costs the most per
    /// bad item (about one more check of the whole batch).
    /// </summary>
    /// <remarks>
    /// Going to single checks at any size once both halves fail made an all-invalid batch cheaper (94 µs an item
    /// instead of 236, against 8.2 µs for a valid one; batch 2,048, one thread) but two bad items in different halves 4×
    /// dearer, as a single check costs about ten combined items here. So single checks take over only in groups of at
    /// most <see cref="DenseSingleCheckSize"/> whose sibling failed too; larger groups are halved further.
    /// </remarks>
    private static void Resolve(Span<int> items, bool knownToFail, AffineNielsPoint[] negA, AffineNielsPoint[] negR, Scalar256[] k, Scalar256[] s, Span<bool> verdicts)
    {
        if (items.Length <= SingleCheckSize)
        {
            CheckEach(items, negA, negR, k, s, verdicts);
            return;
        }

        if (!knownToFail && CheckCombined(items, negA, negR, k, s))
        {
            SetValid(items, verdicts);
            return;
        }

        int half = items.Length / 2;
        Span<int> first = items[..half];
        Span<int> second = items[half..];
        if (CheckGroup(first, negA, negR, k, s, verdicts))
        {
            // The group fails and its first half does not: the bad items are all in the second half.
            Resolve(second, knownToFail: true, negA, negR, k, s, verdicts);
        }
        else if (CheckGroup(second, negA, negR, k, s, verdicts))
        {
            // Only the first half holds bad items.
            ResolveFailed(first, singlesBelow: SingleCheckSize, negA, negR, k, s, verdicts);
        }
        else
        {
            // Both halves hold bad items: they are dense here, and at DenseSingleCheckSize or below single checks cost
            // less than further rounds of halving. ForgedShareBenchmarks, 1,024 items on one thread: all forged 212 ms
            // halved to the end, 152 ms so; every second 347 → 234 ms; every eighth 314 → 271 ms; every 64th and a
            // single forgery unchanged (144 → 148, 24 → 25 ms). A cut-off of 128 did better on the densest batches but
            // cost every 64th one a fifth more.
            ResolveFailed(first, singlesBelow: DenseSingleCheckSize, negA, negR, k, s, verdicts);
            ResolveFailed(second, singlesBelow: DenseSingleCheckSize, negA, negR, k, s, verdicts);
        }
    }

    /// <summary>Settles a group whose check failed: nothing left to do for one of at most
    /// <see cref="SingleCheckSize"/> (its single checks settled it), single checks at or below
    /// <paramref name="singlesBelow"/>, halving above.</summary>
    private static void ResolveFailed(Span<int> items, int singlesBelow, AffineNielsPoint[] negA, AffineNielsPoint[] negR, Scalar256[] k, Scalar256[] s, Span<bool> verdicts)
    {
        if (items.Length <= SingleCheckSize)
        {
            return;
        }

        if (items.Length <= singlesBelow)
        {
            CheckEach(items, negA, negR, k, s, verdicts);
            return;
        }

        Resolve(items, knownToFail: true, negA, negR, k, s, verdicts);
    }

    /// <summary>True when every item of the group passes: one combined check, or single checks (their verdicts
    /// then settled) for a group of at most <see cref="SingleCheckSize"/>.</summary>
    private static bool CheckGroup(Span<int> items, AffineNielsPoint[] negA, AffineNielsPoint[] negR, Scalar256[] k, Scalar256[] s, Span<bool> verdicts)
    {
        if (items.Length <= SingleCheckSize)
        {
            return CheckEach(items, negA, negR, k, s, verdicts);
        }

        if (!CheckCombined(items, negA, negR, k, s))
        {
            return false;
        }

        SetValid(items, verdicts);
        return true;
    }

    /// <summary>Checks each item on its own; true when all pass.</summary>
    private static bool CheckEach(Span<int> items, AffineNielsPoint[] negA, AffineNielsPoint[] negR, Scalar256[] k, Scalar256[] s, Span<bool> verdicts)
    {
        bool all = true;
        foreach (int j in items)
        {
            all &= verdicts[j] = CheckOne(negA[j], negR[j], k[j], s[j]);
        }

        return all;
    }

    private static void SetValid(Span<int> items, Span<bool> verdicts)
    {
        foreach (int j in items)
        {
            verdicts[j] = true;
        }
    }

    /// <summary>[8]([s]B + [k](−A) + (−R)) = 𝒪 for one item.</summary>
    private static bool CheckOne(in AffineNielsPoint negA, in AffineNielsPoint negR, in Scalar256 k, in Scalar256 s)
    {
        // −R has coefficient 1: one addition at the end instead of a Straus table of its multiples.
        ReadOnlySpan<AffineNielsPoint> points = [negA];
        ReadOnlySpan<Scalar256> scalars = [k];
        return EdwardsPoint.MulByCofactor(EdwardsPoint.AddAffine(MultiScalar.StrausNaf(s, points, scalars), negR)).IsIdentity();
    }

    /// <summary>[8]([Σ zᵢsᵢ]B + Σ[zᵢ](−Rᵢ) + Σ[zᵢkᵢ](−Aᵢ)) = 𝒪 with fresh random 128-bit zᵢ.</summary>
    private static bool CheckCombined(ReadOnlySpan<int> items, AffineNielsPoint[] negA, AffineNielsPoint[] negR, Scalar256[] k, Scalar256[] s)
    {
        int n = items.Length;
        int total = 2 * n + 1;
        AffineNielsPoint[] points = ArrayPool<AffineNielsPoint>.Shared.Rent(total);
        Scalar256[] scalars = ArrayPool<Scalar256>.Shared.Rent(total);
        byte[] random = ArrayPool<byte>.Shared.Rent(16 * n);
        try
        {
            RandomNumberGenerator.Fill(random.AsSpan(0, 16 * n));
            Span<ulong> zsSum = stackalloc ulong[8];
            zsSum.Clear();
            for (int t = 0; t < n; t++)
            {
                int j = items[t];
                var z = new Scalar256
                {
                    S0 = BitConverter.ToUInt64(random, 16 * t),
                    S1 = BitConverter.ToUInt64(random, 16 * t + 8),
                };
                ScalarMath.MulAdd(z, s[j], zsSum);
                points[1 + 2 * t] = negR[j];
                scalars[1 + 2 * t] = z;
                points[2 + 2 * t] = negA[j];
                scalars[2 + 2 * t] = ScalarMath.MulMod(z, k[j]);
            }

            points[0] = BasePoint.Niels;
            scalars[0] = ScalarMath.Reduce(zsSum);
            EdwardsPoint q = MultiScalar.ComputeBaseFirst(points.AsSpan(0, total), scalars.AsSpan(0, total));
            return EdwardsPoint.MulByCofactor(q).IsIdentity();
        }
        finally
        {
            ArrayPool<AffineNielsPoint>.Shared.Return(points);
            ArrayPool<Scalar256>.Shared.Return(scalars);
            ArrayPool<byte>.Shared.Return(random);
        }
    }
}

/// <summary>The vector instruction tier <see cref="SimdBatchVerifier"/> runs its field arithmetic on.</summary>
public enum SimdTier
{
    /// <summary>Scalar 64-bit limbs (radix 2^51) only.</summary>
    Scalar,

    /// <summary>AVX2, four lanes.</summary>
    Avx2,

    /// <summary>AVX-512F, eight lanes.</summary>
    Avx512,
}
