using MegaNet.Core.Ed25519;
using MegaNet.Core.Verification;
using MegaNet.Verify.Simd;
using Xunit.Abstractions;

namespace MegaNet.Verify.Tests;

/// <summary>
/// The verifier suite, written once and run against every backend that implements MegaNet's rule. CI runs this
/// project again under DOTNET_EnableAVX512=0, DOTNET_EnableAVX2=0 and DOTNET_EnableHWIntrinsic=0.
/// </summary>
public sealed class BackendSuiteTests(ITestOutputHelper output)
{
    // One seed per test process, printed by every test that uses it; MEGANET_TEST_SEED replays a run.
    private static readonly int Seed = TestSeed.Next();

    public static TheoryData<string> Backends_() => Backends.All();

    public static TheoryData<string, string> BackendsAndFiles()
    {
        var data = new TheoryData<string, string>();
        foreach (string backend in Backends.RuleBackends)
        {
            foreach (string file in TestVectors.Files)
            {
                data.Add(backend, file);
            }
        }

        return data;
    }

    public static TheoryData<string, int> BackendsAndSizes()
    {
        var data = new TheoryData<string, int>();
        foreach (string backend in Backends.RuleBackends)
        {
            foreach (int size in new[] { 0, 1, 2, 7, 8, 9, 63, 64, 65, 1000, 16384 })
            {
                if (size <= Backends.MaxSuiteBatch(backend))
                {
                    data.Add(backend, size);
                }
            }
        }

        return data;
    }

    // Straus, vector-lane buckets and Pippenger take the combined checks of these sizes (at most four keys: up to 29, 105 and 405 points).
    public static TheoryData<string, int> BackendsAndFewKeySizes()
    {
        var data = new TheoryData<string, int>();
        foreach (string backend in Backends.RuleBackends)
        {
            foreach (int size in new[] { 24, 100, 400 })
            {
                data.Add(backend, size);
            }
        }

        return data;
    }

    public static TheoryData<string, SignatureCaseKind> BackendsAndKinds()
    {
        var data = new TheoryData<string, SignatureCaseKind>();
        foreach (string backend in Backends.RuleBackends)
        {
            foreach (SignatureCaseKind kind in Enum.GetValues<SignatureCaseKind>())
            {
                data.Add(backend, kind);
            }
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(BackendsAndFiles))]
    public void Shared_vectors_in_one_batch_give_the_expected_verdicts(string backend, string file)
    {
        IReadOnlyList<Vector> vectors = TestVectors.Load(file);
        using var batch = new SignatureBatch();
        foreach (Vector v in vectors)
        {
            batch.Add(v.PublicKey, v.Signature, v.Message);
        }

        bool[] verdicts = Backends.Get(backend).Verify(batch);
        var wrong = vectors.Where((v, i) => verdicts[i] != v.Meganet).Select(v => $"{v} (expected {v.Meganet})").ToList();
        Assert.True(wrong.Count == 0, $"{backend} on {file}: {wrong.Count} wrong verdicts: {string.Join(", ", wrong.Take(20))}");
    }

    [Theory]
    [MemberData(nameof(Backends_))]
    public void Shared_vectors_one_at_a_time_give_the_expected_verdicts(string backend)
    {
        IBatchVerifier verifier = Backends.Get(backend);
        var wrong = new List<string>();
        foreach (Vector v in TestVectors.Load("wycheproof_v1.jsonl").Concat(TestVectors.Load("rfc8032_7_1.jsonl")))
        {
            using var batch = new SignatureBatch(1);
            batch.Add(v.PublicKey, v.Signature, v.Message);
            if (verifier.Verify(batch)[0] != v.Meganet)
            {
                wrong.Add(v.ToString());
            }
        }

        Assert.True(wrong.Count == 0, $"{backend}: wrong verdicts on {string.Join(", ", wrong)}");
    }

    [Theory]
    [MemberData(nameof(BackendsAndSizes))]
    public void Mixed_batches_agree_with_the_reference(string backend, int size)
    {
        output.WriteLine($"seed {Seed} (replay with MEGANET_TEST_SEED={Seed}), backend {backend}, batch {size}");
        (SignatureCase[] cases, bool[] expected) = Backends.Mixed(Seed, size);
        using SignatureBatch batch = Backends.ToBatch(cases);
        bool[] verdicts = Backends.Get(backend).Verify(batch);
        AssertSame(backend, cases, expected, verdicts);
    }

    [Theory]
    [MemberData(nameof(BackendsAndFewKeySizes))]
    public void Batches_of_few_keys_agree_with_the_reference(string backend, int size)
    {
        output.WriteLine($"seed {Seed} (replay with MEGANET_TEST_SEED={Seed}), backend {backend}, batch {size}");
        (SignatureCase[] cases, bool[] expected) = Backends.FewKeys(Seed, size);
        Assert.InRange(cases.Select(c => Convert.ToHexString(c.PublicKey)).Distinct().Count(), 2, 4);
        Assert.Contains(false, expected);
        Assert.Contains(true, expected);
        using SignatureBatch batch = Backends.ToBatch(cases);
        AssertSame(backend, cases, expected, Backends.Get(backend).Verify(batch));
    }

    [Theory]
    [InlineData(0, 1)]
    [InlineData(0, 2)]
    [InlineData(65_536, 1)]
    public void Simd_settles_few_key_batches_with_a_cold_cache_a_warm_one_or_none(int keyCacheCapacity, int threads)
    {
        output.WriteLine($"seed {Seed} (replay with MEGANET_TEST_SEED={Seed}), key cache {keyCacheCapacity}, {threads} thread(s)");
        (SignatureCase[] cases, bool[] expected) = Backends.FewKeys(Seed, 400);
        using SignatureBatch batch = Backends.ToBatch(cases);
        using var verifier = new SimdBatchVerifier(new VerifierOptions { Threads = threads, KeyCacheCapacity = keyCacheCapacity });
        AssertSame(SimdBatchVerifier.BackendName, cases, expected, verifier.Verify(batch));
        AssertSame(SimdBatchVerifier.BackendName, cases, expected, verifier.Verify(batch));
    }

    /// <summary>
    /// The items of one key share a term of the combination, its scalar Σzᵢkᵢ reduced mod L: a valid batch of few keys,
    /// one of them of mixed order (where that reduction moves the term by a torsion point, which the cofactor removes),
    /// must pass its one combined check. A wrong merged term would still give the reference's verdicts, through
    /// bisection and single checks, so the test counts the checks.
    /// </summary>
    [Theory]
    [InlineData(24)]
    [InlineData(100)]
    [InlineData(400)]
    public void Simd_passes_a_valid_batch_of_few_keys_in_one_combined_check(int size)
    {
        output.WriteLine($"seed {Seed} (replay with MEGANET_TEST_SEED={Seed}), batch {size}");
        var generator = new SignatureCaseGenerator(Seed, distinctKeys: 2);
        SignatureCaseKind[] pattern = [SignatureCaseKind.Valid, SignatureCaseKind.SharedMixedOrderA, SignatureCaseKind.DuplicateKeyValid];
        SignatureCase[] cases = Enumerable.Range(0, size).Select(i => generator.Next(pattern[i % pattern.Length])).ToArray();
        Assert.InRange(cases.Select(c => Convert.ToHexString(c.PublicKey)).Distinct().Count(), 2, 3);
        using SignatureBatch batch = Backends.ToBatch(cases);
        foreach (int cache in new[] { 0, 65_536 })
        {
            using var verifier = new SimdBatchVerifier(new VerifierOptions { Threads = 1, KeyCacheCapacity = cache });
            Assert.All(verifier.Verify(batch), Assert.True);
            Assert.Equal(1, verifier.CombinedChecks);
            Assert.Equal(0, verifier.SingleChecks);
        }
    }

    [Theory]
    [MemberData(nameof(BackendsAndKinds))]
    public void Each_kind_of_input_agrees_with_the_reference(string backend, SignatureCaseKind kind)
    {
        output.WriteLine($"seed {Seed} (replay with MEGANET_TEST_SEED={Seed}), backend {backend}, kind {kind}");
        var generator = new SignatureCaseGenerator(Seed ^ (int)kind);
        // Interleave the kind under test with valid items so batch equations see both.
        SignatureCase[] cases = Enumerable.Range(0, 24).Select(i => generator.Next(i % 2 == 0 ? kind : SignatureCaseKind.Valid)).ToArray();
        bool[] expected = cases.Select(c => Ed25519Reference.Verify(c.PublicKey, c.Signature, c.Message)).ToArray();
        using SignatureBatch batch = Backends.ToBatch(cases);
        AssertSame(backend, cases, expected, Backends.Get(backend).Verify(batch));
    }

    [Theory]
    [MemberData(nameof(BackendsAndKinds))]
    public void Each_kind_of_input_alone_agrees_with_the_reference(string backend, SignatureCaseKind kind)
    {
        // Batches of one take the single check (on simd: split scalars, LatticeSplit), not a batch equation.
        output.WriteLine($"seed {Seed} (replay with MEGANET_TEST_SEED={Seed}), backend {backend}, kind {kind}");
        var generator = new SignatureCaseGenerator(Seed ^ (int)kind ^ 0x51);
        IBatchVerifier verifier = Backends.Get(backend);
        for (int i = 0; i < 6; i++)
        {
            SignatureCase c = generator.Next(i % 3 == 2 ? SignatureCaseKind.Valid : kind);
            bool expected = Ed25519Reference.Verify(c.PublicKey, c.Signature, c.Message);
            using SignatureBatch batch = Backends.ToBatch([c]);
            AssertSame(backend, [c], [expected], verifier.Verify(batch));
        }
    }

    [Theory]
    [MemberData(nameof(Backends_))]
    public void A_sub_range_writes_only_its_own_verdicts(string backend)
    {
        output.WriteLine($"seed {Seed}, backend {backend}");
        (SignatureCase[] cases, bool[] expected) = Backends.Mixed(Seed, 65);
        using SignatureBatch batch = Backends.ToBatch(cases);
        const int Guard = 37;
        foreach (bool marker in new[] { true, false })
        {
            foreach ((int start, int count) in new[] { (0, 65), (1, 63), (9, 8), (64, 1), (3, 0) })
            {
                bool[] buffer = new bool[Guard + count + Guard];
                Array.Fill(buffer, marker);
                Backends.Get(backend).Verify(batch, start, count, buffer.AsSpan(Guard, count + Guard));
                Assert.All(buffer[..Guard], b => Assert.Equal(marker, b));
                Assert.All(buffer[(Guard + count)..], b => Assert.Equal(marker, b));
                Assert.Equal(expected.AsSpan(start, count).ToArray(), buffer[Guard..(Guard + count)]);
            }
        }
    }

    [Theory]
    [MemberData(nameof(Backends_))]
    public void The_same_batch_twice_gives_the_same_verdicts(string backend)
    {
        output.WriteLine($"seed {Seed}, backend {backend}");
        (SignatureCase[] cases, bool[] expected) = Backends.Mixed(Seed, 64);
        using SignatureBatch batch = Backends.ToBatch(cases);
        IBatchVerifier verifier = Backends.Get(backend);
        bool[] first = verifier.Verify(batch);
        bool[] second = verifier.Verify(batch);
        Assert.Equal(first, second);
        Assert.Equal(expected, first);
    }

    [Theory]
    [MemberData(nameof(Backends_))]
    public void Arguments_outside_the_batch_are_refused(string backend)
    {
        IBatchVerifier verifier = Backends.Get(backend);
        using SignatureBatch batch = Backends.ToBatch(Backends.Mixed(Seed, 8).Cases);
        bool[] verdicts = new bool[16];
        Assert.Throws<ArgumentOutOfRangeException>(() => verifier.Verify(batch, 4, 5, verdicts));
        Assert.Throws<ArgumentOutOfRangeException>(() => verifier.Verify(batch, -1, 2, verdicts));
        Assert.Throws<ArgumentException>(() => verifier.Verify(batch, 0, 8, new bool[7]));
        Assert.Throws<ArgumentNullException>(() => verifier.Verify(null!, 0, 0, verdicts));
    }

    private void AssertSame(string backend, SignatureCase[] cases, bool[] expected, bool[] verdicts)
    {
        Assert.Equal(cases.Length, verdicts.Length);
        var wrong = Enumerable.Range(0, cases.Length).Where(i => verdicts[i] != expected[i])
            .Select(i => $"#{i} {cases[i].Kind}: got {verdicts[i]}, reference {expected[i]}").ToList();
        if (wrong.Count > 0)
        {
            output.WriteLine(string.Join(Environment.NewLine, wrong));
        }

        Assert.True(wrong.Count == 0, $"{backend} disagrees with the reference on {wrong.Count} of {cases.Length} items (seed {Seed}): {string.Join("; ", wrong.Take(10))}");
    }
}
