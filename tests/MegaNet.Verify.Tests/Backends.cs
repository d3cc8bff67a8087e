using System.Collections.Concurrent;
using MegaNet.Core.Ed25519;
using MegaNet.Core.Verification;
using MegaNet.Node.Verification;

namespace MegaNet.Verify.Tests;

/// <summary>Every backend under test, created once per process and shared (GPU kernels compile once).</summary>
public static class Backends
{
    private static readonly ConcurrentDictionary<string, IBatchVerifier> Instances = new(StringComparer.OrdinalIgnoreCase);
    private static readonly ConcurrentDictionary<(int Seed, int Size), (SignatureCase[] Cases, bool[] Expected)> Expectations = new();

    public static BatchVerifierRegistry Registry { get; } = VerifierCatalog.Create();

    /// <summary>Backends that implement MegaNet's rule and can run here: reference, simd, gpu-cpu, and gpu when a device exists.</summary>
    public static IReadOnlyList<string> RuleBackends =>
        Registry.Backends.Where(b => b.Probe() is null && b.Name != LibsodiumBatchVerifier.BackendName).Select(b => b.Name).ToList();

    public static TheoryData<string> All()
    {
        var data = new TheoryData<string>();
        foreach (string name in RuleBackends)
        {
            data.Add(name);
        }

        return data;
    }

    public static IBatchVerifier Get(string name) => Instances.GetOrAdd(name, n => Registry.Create(n));

    /// <summary>Largest differential batch a backend runs in the suite (the reference and the CPU-accelerated
    /// kernels are slow; the fast backends take the full sizes).</summary>
    public static int MaxSuiteBatch(string name) => name switch
    {
        ReferenceBatchVerifier.BackendName => 1000,
        "gpu-cpu" => 1000,
        _ => int.MaxValue,
    };

    public static SignatureBatch ToBatch(IEnumerable<SignatureCase> cases)
    {
        var batch = new SignatureBatch();
        foreach (SignatureCase c in cases)
        {
            batch.Add(c.PublicKey, c.Signature, c.Message);
        }

        return batch;
    }

    /// <summary>A seeded mixed batch and the reference's verdicts for it, computed once per (seed, size) and shared by all backends.</summary>
    public static (SignatureCase[] Cases, bool[] Expected) Mixed(int seed, int size) => Expectations.GetOrAdd((seed, size), key =>
    {
        var generator = new SignatureCaseGenerator(key.Seed);
        SignatureCase[] cases = new SignatureCase[key.Size];
        for (int i = 0; i < cases.Length; i++)
        {
            cases[i] = generator.NextMixed(invalidShare: 0.2);
        }

        bool[] expected = new bool[cases.Length];
        Parallel.For(0, cases.Length, i => expected[i] = Ed25519Reference.Verify(cases[i].PublicKey, cases[i].Signature, cases[i].Message));
        return (cases, expected);
    });
}
