using System.Buffers;
using System.Numerics;
using System.Runtime.CompilerServices;
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
/// inputs, Pippenger for large ones), in which the items of one key share a single term [Σzᵢkᵢ]A; when the combination
/// fails the batch is bisected down to single-item checks, so every verdict equals the reference's. Decoded keys are
/// cached; batches are split across threads.
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
    private long _combinedChecks;
    private long _singleChecks;

    // The verifier's methods are compiled fully optimized at their first call (AggressiveOptimization), not first as
    // quick unoptimized code that is replaced after some 30 calls: a process verifies at full speed from its first batch
    // (a fresh one ran its first 20 batches of 512 at 18-38 ms each instead of 1.2 ms, with AVX-512 helpers as calls).
    // The JIT folds a static readonly field into a constant only when its type is initialised by then, so the types
    // with such fields are initialised here, before anything is compiled (without this, batches of 64 and 1,024 ran
    // 4-6 % slower than after tiering).
    static SimdBatchVerifier()
    {
        RuntimeHelpers.RunClassConstructor(typeof(FieldElement).TypeHandle);
        RuntimeHelpers.RunClassConstructor(typeof(EdwardsPoint).TypeHandle);
        RuntimeHelpers.RunClassConstructor(typeof(BasePoint).TypeHandle);
        if (PointInLanes.IsSupported)
        {
            RuntimeHelpers.RunClassConstructor(typeof(PointInLanes).TypeHandle);
        }

        RuntimeHelpers.RunClassConstructor(typeof(MultiScalar).TypeHandle);
        if (Avx512F.IsSupported && Vector512.IsHardwareAccelerated)
        {
            RuntimeHelpers.RunClassConstructor(typeof(Avx512Lanes).TypeHandle);
            RuntimeHelpers.RunClassConstructor(typeof(LaneMultiScalar<Avx512Lanes, Vector512<ulong>>).TypeHandle);
        }

        if (Avx2.IsSupported)
        {
            RuntimeHelpers.RunClassConstructor(typeof(LaneMultiScalar<Avx2Lanes, Vector256<ulong>>).TypeHandle);
        }
    }

    /// <summary>Creates the verifier.</summary>
    public SimdBatchVerifier(VerifierOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _threads = options.Threads;
        _cacheCapacity = options.KeyCacheCapacity;
        _cache = options.KeyCacheCapacity > 0 ? new KeyCache(options.KeyCacheCapacity) : null;
    }

    /// <summary>Combined checks (one random linear combination of a group of items) made so far.</summary>
    internal long CombinedChecks => Interlocked.Read(ref _combinedChecks);

    /// <summary>Items checked on their own so far (small groups, and bisection's last steps).</summary>
    internal long SingleChecks => Interlocked.Read(ref _singleChecks);

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
        SimdTier.Avx512 => "AVX-512F x8 lanes (square roots, bucket sums), AVX2 x4 lanes for one point's chain (X, Y, Z, T), scalar radix 2^51 elsewhere",
        SimdTier.Avx2 => "AVX2 x4 lanes (square roots, bucket sums; one point's chain as X, Y, Z, T), scalar radix 2^51 elsewhere",
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
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
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

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void VerifyChunk(SignatureBatch batch, int start, int count, Span<bool> verdicts)
    {
        var items = new ChunkItems(count);
        // Decode jobs: item index, and whether the job is the key (else R). Up to two per item.
        int[] jobs = ArrayPool<int>.Shared.Rent(2 * count);
        byte[] jobBytes = ArrayPool<byte>.Shared.Rent(64 * count);
        bool[] okA = ArrayPool<bool>.Shared.Rent(count);
        bool[] okR = ArrayPool<bool>.Shared.Rent(count);
        var keys = new ChunkKeys(count);
        try
        {
            ReadOnlySpan<byte> publicKeys = batch.PublicKeys;
            ReadOnlySpan<byte> signatures = batch.Signatures;
            AffineNielsPoint[] negA = items.NegA;
            AffineNielsPoint[] negR = items.NegR;
            int[] firstWithKey = items.FirstWithKey;

            // Pass 1: rule 2 (S < L), the chunk's earlier items with the same key, then the key cache; queue the
            // square roots still needed.
            int jobCount = 0;
            for (int j = 0; j < count; j++)
            {
                int i = start + j;
                verdicts[j] = false;
                okA[j] = okR[j] = false;
                firstWithKey[j] = j;
                ReadOnlySpan<byte> sig = signatures.Slice(i * SignatureBatch.SignatureSize, SignatureBatch.SignatureSize);
                if (!Ed25519Constants.IsCanonicalScalar(sig[32..]))
                {
                    continue;
                }

                ReadOnlySpan<byte> pk = publicKeys.Slice(i * SignatureBatch.PublicKeySize, SignatureBatch.PublicKeySize);
                int first = keys.FirstWith(pk, j, publicKeys, start);
                if (first != j)
                {
                    // Decoded (or refused) with its first item, after pass 2.
                    firstWithKey[j] = first;
                }
                else if (_cache is not null && _cache.TryGet(pk, out bool cachedValid, out negA[j]))
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

            // Pass 3: rule 5 for the survivors (an item whose key an earlier item decoded takes that verdict and point).
            ReadOnlySpan<byte> messages = batch.MessageData;
            ReadOnlySpan<int> offsets = batch.MessageOffsets;
            int[] pending = items.Pending;
            int pendingCount = 0;
            for (int j = 0; j < count; j++)
            {
                int first = firstWithKey[j];
                if (first != j)
                {
                    okA[j] = okA[first];
                    negA[j] = negA[first];
                }

                if (!okA[j] || !okR[j])
                {
                    continue;
                }

                int i = start + j;
                ReadOnlySpan<byte> sig = signatures.Slice(i * SignatureBatch.SignatureSize, SignatureBatch.SignatureSize);
                ReadOnlySpan<byte> key = publicKeys.Slice(i * SignatureBatch.PublicKeySize, SignatureBatch.PublicKeySize);
                items.K[j] = ChallengeScalar.Compute(sig, key, messages[offsets[i]..offsets[i + 1]]);
                items.S[j] = Scalar256.FromBytes(sig[32..]);
                pending[pendingCount++] = j;
            }

            // Rule 6 for everything that survived, together.
            Span<int> survivors = pending.AsSpan(0, pendingCount);
            if (pendingCount > 2 && pendingCount <= SingleCheckSize)
            {
                // A whole small batch is most likely valid: one combined check costs less than its single checks
                // (settling batches of 3 and 4 item by item halved their rate).
                if (CheckCombined(survivors, items))
                {
                    SetValid(survivors, verdicts);
                }
                else
                {
                    CheckEach(survivors, items, verdicts);
                }
            }
            else if (pendingCount > 0)
            {
                Resolve(survivors, knownToFail: false, items, verdicts);
            }
        }
        finally
        {
            items.Return();
            keys.Return();
            ArrayPool<int>.Shared.Return(jobs);
            ArrayPool<byte>.Shared.Return(jobBytes);
            ArrayPool<bool>.Shared.Return(okA);
            ArrayPool<bool>.Shared.Return(okR);
        }
    }

    /// <summary>
    /// Settles the verdicts of <paramref name="group"/> (rule 6) by bisection: a group whose combined check fails is
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
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void Resolve(Span<int> group, bool knownToFail, in ChunkItems items, Span<bool> verdicts)
    {
        if (group.Length <= SingleCheckSize)
        {
            CheckEach(group, items, verdicts);
            return;
        }

        if (!knownToFail && CheckCombined(group, items))
        {
            SetValid(group, verdicts);
            return;
        }

        int half = group.Length / 2;
        Span<int> first = group[..half];
        Span<int> second = group[half..];
        if (CheckGroup(first, items, verdicts))
        {
            // The group fails and its first half does not: the bad items are all in the second half.
            Resolve(second, knownToFail: true, items, verdicts);
        }
        else if (CheckGroup(second, items, verdicts))
        {
            // Only the first half holds bad items.
            ResolveFailed(first, singlesBelow: SingleCheckSize, items, verdicts);
        }
        else
        {
            // Both halves hold bad items: they are dense here, and at DenseSingleCheckSize or below single checks cost
            // less than further rounds of halving. ForgedShareBenchmarks, 1,024 items on one thread: all forged 212 ms
            // halved to the end, 152 ms so; every second 347 → 234 ms; every eighth 314 → 271 ms; every 64th and a
            // single forgery unchanged (144 → 148, 24 → 25 ms). A cut-off of 128 did better on the densest batches but
            // cost every 64th one a fifth more.
            ResolveFailed(first, singlesBelow: DenseSingleCheckSize, items, verdicts);
            ResolveFailed(second, singlesBelow: DenseSingleCheckSize, items, verdicts);
        }
    }

    /// <summary>Settles a group whose check failed: nothing left to do for one of at most
    /// <see cref="SingleCheckSize"/> (its single checks settled it), single checks at or below
    /// <paramref name="singlesBelow"/>, halving above.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void ResolveFailed(Span<int> group, int singlesBelow, in ChunkItems items, Span<bool> verdicts)
    {
        if (group.Length <= SingleCheckSize)
        {
            return;
        }

        if (group.Length <= singlesBelow)
        {
            CheckEach(group, items, verdicts);
            return;
        }

        Resolve(group, knownToFail: true, items, verdicts);
    }

    /// <summary>True when every item of the group passes: one combined check, or single checks (their verdicts
    /// then settled) for a group of at most <see cref="SingleCheckSize"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private bool CheckGroup(Span<int> group, in ChunkItems items, Span<bool> verdicts)
    {
        if (group.Length <= SingleCheckSize)
        {
            return CheckEach(group, items, verdicts);
        }

        if (!CheckCombined(group, items))
        {
            return false;
        }

        SetValid(group, verdicts);
        return true;
    }

    /// <summary>Checks each item on its own; true when all pass.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private bool CheckEach(Span<int> group, in ChunkItems items, Span<bool> verdicts)
    {
        bool all = true;
        Interlocked.Add(ref _singleChecks, group.Length);
        foreach (int j in group)
        {
            all &= verdicts[j] = CheckOne(items.NegA[j], items.NegR[j], items.K[j], items.S[j]);
        }

        return all;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void SetValid(Span<int> group, Span<bool> verdicts)
    {
        foreach (int j in group)
        {
            verdicts[j] = true;
        }
    }

    /// <summary>[8]([s]B + [k](−A) + (−R)) = 𝒪 for one item, checked as [8]([d·s]B + [c](−A) + [d](−R)) = 𝒪 with
    /// c ≡ d·k (mod L) both below 2^127 (<see cref="LatticeSplit"/>): the same verdict, half the doublings.</summary>
    internal static bool CheckOne(in AffineNielsPoint negA, in AffineNielsPoint negR, in Scalar256 k, in Scalar256 s) =>
        LatticeSplit.TrySplit(k, out Scalar256 c, out bool cNegative, out Scalar256 d, out bool dNegative)
            ? CheckOneSplit(negA, negR, s, c, cNegative, d, dNegative)
            : CheckOneUnsplit(negA, negR, k, s);

    /// <summary>[8]([d·s mod L]B + [c](−A) + [d](−R)) = 𝒪 for a split of k (c ≡ d·k mod L).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static bool CheckOneSplit(in AffineNielsPoint negA, in AffineNielsPoint negR, in Scalar256 s, in Scalar256 c, bool cNegative, in Scalar256 d, bool dNegative)
    {
        // A negative coefficient goes on the point: [−c](−A) = [c]A.
        Scalar256 ds = ScalarMath.MulMod(d, s);
        if (dNegative)
        {
            ds = ScalarMath.NegateMod(ds);
        }

        ReadOnlySpan<AffineNielsPoint> points = [cNegative ? negA.Negate() : negA, dNegative ? negR.Negate() : negR];
        ReadOnlySpan<Scalar256> scalars = [c, d];
        var low = new Scalar256 { S0 = ds.S0, S1 = ds.S1 };
        var high = new Scalar256 { S0 = ds.S2, S1 = ds.S3 };
        return EdwardsPoint.MulByCofactor(MultiScalar.StrausNafSplitBase(low, high, points, scalars)).IsIdentity();
    }

    /// <summary>The equation as written, for a k whose split failed its check (not seen; kept so that such a k still
    /// gets its verdict).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static bool CheckOneUnsplit(in AffineNielsPoint negA, in AffineNielsPoint negR, in Scalar256 k, in Scalar256 s)
    {
        // −R has coefficient 1: one addition at the end instead of a Straus table of its multiples.
        ReadOnlySpan<AffineNielsPoint> point = [negA];
        ReadOnlySpan<Scalar256> scalar = [k];
        return EdwardsPoint.MulByCofactor(EdwardsPoint.AddAffine(MultiScalar.StrausNaf(s, point, scalar), negR)).IsIdentity();
    }

    /// <summary>
    /// [8]([Σ zᵢsᵢ]B + Σ[zᵢ](−Rᵢ) + Σ[zᵢkᵢ](−Aᵢ)) = 𝒪 with fresh random 128-bit zᵢ, the items of one key summed into
    /// one term [Σ zᵢkᵢ mod L](−A).
    /// </summary>
    /// <remarks>
    /// The merged sum is the same group element up to [L·m](−A) for some integer m, a point of small order (−A may have
    /// a torsion component), which the cofactor removes: the verdict is the one the unmerged equation gives. A repeat
    /// sender's items then cost one full-length scalar between them, where each item costs one (kᵢ, 253 bits) and a
    /// half (zᵢ, 128 bits) unmerged: a node's batches hold many items of few keys.
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private bool CheckCombined(ReadOnlySpan<int> group, in ChunkItems items)
    {
        int n = group.Length;
        Interlocked.Increment(ref _combinedChecks);
        AffineNielsPoint[] points = ArrayPool<AffineNielsPoint>.Shared.Rent(2 * n + 1);
        Scalar256[] scalars = ArrayPool<Scalar256>.Shared.Rent(2 * n + 1);
        byte[] random = ArrayPool<byte>.Shared.Rent(16 * n);
        // Per distinct key, Σ zᵢkᵢ unreduced, reduced once: fewer than 2^31 products below 2^381 each stay below 2^412,
        // far inside 8 limbs (as zsSum does).
        ulong[] keySums = ArrayPool<ulong>.Shared.Rent(8 * n);
        try
        {
            RandomNumberGenerator.Fill(random.AsSpan(0, 16 * n));
            int[] termOf = items.TermOfKey;
            foreach (int j in group)
            {
                termOf[items.FirstWithKey[j]] = -1;
            }

            Span<ulong> zsSum = stackalloc ulong[8];
            zsSum.Clear();
            int distinct = 0;
            for (int t = 0; t < n; t++)
            {
                int j = group[t];
                var z = new Scalar256
                {
                    S0 = BitConverter.ToUInt64(random, 16 * t),
                    S1 = BitConverter.ToUInt64(random, 16 * t + 8),
                };
                ScalarMath.MulAdd(z, items.S[j], zsSum);
                points[1 + t] = items.NegR[j];
                scalars[1 + t] = z;

                ref int term = ref termOf[items.FirstWithKey[j]];
                if (term < 0)
                {
                    term = distinct++;
                    points[1 + n + term] = items.NegA[j];
                    keySums.AsSpan(8 * term, 8).Clear();
                }

                ScalarMath.MulAdd(z, items.K[j], keySums.AsSpan(8 * term, 8));
            }

            for (int term = 0; term < distinct; term++)
            {
                scalars[1 + n + term] = ScalarMath.Reduce(keySums.AsSpan(8 * term, 8));
            }

            int total = 1 + n + distinct;
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
            ArrayPool<ulong>.Shared.Return(keySums);
        }
    }

    /// <summary>What the checks of one chunk read, indexed by the item's position in the chunk (pooled arrays).</summary>
    private readonly struct ChunkItems
    {
        public ChunkItems(int count)
        {
            NegA = ArrayPool<AffineNielsPoint>.Shared.Rent(count);
            NegR = ArrayPool<AffineNielsPoint>.Shared.Rent(count);
            K = ArrayPool<Scalar256>.Shared.Rent(count);
            S = ArrayPool<Scalar256>.Shared.Rent(count);
            Pending = ArrayPool<int>.Shared.Rent(count);
            FirstWithKey = ArrayPool<int>.Shared.Rent(count);
            TermOfKey = ArrayPool<int>.Shared.Rent(count);
        }

        /// <summary>−A and −R in mixed-addition form.</summary>
        public AffineNielsPoint[] NegA { get; }

        public AffineNielsPoint[] NegR { get; }

        /// <summary>k = SHA-512(R ‖ A ‖ M) mod L, and S.</summary>
        public Scalar256[] K { get; }

        public Scalar256[] S { get; }

        /// <summary>The items left for rule 6.</summary>
        public int[] Pending { get; }

        /// <summary>The first item of the chunk with the same key bytes (the item itself when it is the first, or when
        /// its key's slot in <see cref="ChunkKeys"/> was taken by another key).</summary>
        public int[] FirstWithKey { get; }

        /// <summary>Scratch of <see cref="CheckCombined"/>: the term of a key (by its first item) in the combination.</summary>
        public int[] TermOfKey { get; }

        public void Return()
        {
            ArrayPool<AffineNielsPoint>.Shared.Return(NegA);
            ArrayPool<AffineNielsPoint>.Shared.Return(NegR);
            ArrayPool<Scalar256>.Shared.Return(K);
            ArrayPool<Scalar256>.Shared.Return(S);
            ArrayPool<int>.Shared.Return(Pending);
            ArrayPool<int>.Shared.Return(FirstWithKey);
            ArrayPool<int>.Shared.Return(TermOfKey);
        }
    }

    /// <summary>
    /// Finds the first item of a chunk with the same key bytes: a direct-mapped table of twice the chunk's size, its
    /// slot from <see cref="KeyCache.Hash(ReadOnlySpan{byte})"/> (seeded per process, so attacker-chosen keys cannot be
    /// made to share slots offline). A key whose slot another key holds is simply not merged: slower, never a different verdict.
    /// </summary>
    private readonly struct ChunkKeys
    {
        private readonly int[] _slots;
        private readonly int _mask;

        public ChunkKeys(int count)
        {
            int size = (int)BitOperations.RoundUpToPowerOf2((uint)Math.Max(16, 2 * count));
            _slots = ArrayPool<int>.Shared.Rent(size);
            _slots.AsSpan(0, size).Fill(-1);
            _mask = size - 1;
        }

        /// <summary>The first item (chunk position) seen with <paramref name="key"/>; <paramref name="item"/> itself when
        /// none was, and then it is recorded when its slot is free.</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public int FirstWith(ReadOnlySpan<byte> key, int item, ReadOnlySpan<byte> publicKeys, int start)
        {
            ref int slot = ref _slots[KeyCache.Hash(key) & _mask];
            if (slot < 0)
            {
                slot = item;
                return item;
            }

            ReadOnlySpan<byte> other = publicKeys.Slice((start + slot) * SignatureBatch.PublicKeySize, SignatureBatch.PublicKeySize);
            return other.SequenceEqual(key) ? slot : item;
        }

        public void Return() => ArrayPool<int>.Shared.Return(_slots);
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
