using MegaNet.Core.Ed25519;
using MegaNet.Core.Verification;
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
