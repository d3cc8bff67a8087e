using MegaNet.Core.Ed25519;
using MegaNet.Core.Verification;
using MegaNet.Node.Verification;
using MegaNet.Verify.Gpu;

namespace MegaNet.Verify.Tests;

/// <summary>Every backend under test, created once per process and shared (GPU kernels compile once).</summary>
public static class Backends
{
    private static readonly OncePerKey<string, IBatchVerifier> Instances = new(StringComparer.OrdinalIgnoreCase);
    private static readonly OncePerKey<(int Seed, int Size), (SignatureCase[] Cases, bool[] Expected)> Expectations = new();

    public static BatchVerifierRegistry Registry { get; } = VerifierCatalog.Create();

    /// <summary>gpu-cpu with SHA-512 on the host (<see cref="VerifierOptions.GpuHashOnHost"/>,
    /// <c>MEGANET_GPU_HOST_HASH=1</c>): the operator's switch runs other host code and skips the challenge kernel.</summary>
    public const string GpuCpuHostHash = "gpu-cpu-hosthash";

    /// <summary>Backends that implement MegaNet's rule and can run here: reference, simd, gpu-cpu in both hashing
    /// modes, and gpu when a device exists.</summary>
    public static IReadOnlyList<string> RuleBackends =>
        Registry.Backends.Where(b => b.Probe() is null && b.Name != LibsodiumBatchVerifier.BackendName)
            .SelectMany(b => b.Name == GpuBatchVerifier.CpuBackendName ? [b.Name, GpuCpuHostHash] : new[] { b.Name }).ToList();

    public static TheoryData<string> All()
    {
        var data = new TheoryData<string>();
        foreach (string name in RuleBackends)
        {
            data.Add(name);
        }

        return data;
    }

    public static IBatchVerifier Get(string name) => Instances.Get(name, n => n == GpuCpuHostHash
        ? new GpuBatchVerifier(GpuDeviceKind.CpuAccelerator, new VerifierOptions { GpuHashOnHost = true })
        : Registry.Create(n));

    /// <summary>Largest differential batch a backend runs in the suite (the reference and the CPU-accelerated
    /// kernels are slow; the fast backends take the full sizes).</summary>
    public static int MaxSuiteBatch(string name) => name switch
    {
        ReferenceBatchVerifier.BackendName => 1000,
        "gpu-cpu" or GpuCpuHostHash => 1000,
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
    public static (SignatureCase[] Cases, bool[] Expected) Mixed(int seed, int size) => Expectations.Get((seed, size), key =>
    {
        var generator = new SignatureCaseGenerator(key.Seed);
        SignatureCase[] cases = new SignatureCase[key.Size];
        for (int i = 0; i < cases.Length; i++)
        {
            cases[i] = generator.NextMixed(invalidShare: 0.2);
        }

        return (cases, ReferenceVerdicts(cases));
    });

    /// <summary>
    /// A seeded batch whose items come from three keys of the generator and one shared mixed-order key, four in ten of
    /// them invalid (a flipped bit of S or of the message, S + L, a wrong signature by the first key), with the
    /// reference's verdicts: batch equations that give the items of one key a single term meet every combination of
    /// valid and invalid items of a key, and bisection splits the keys' items across groups.
    /// </summary>
    public static (SignatureCase[] Cases, bool[] Expected) FewKeys(int seed, int size) => FewKeyExpectations.Get((seed, size), key =>
    {
        var generator = new SignatureCaseGenerator(key.Seed, distinctKeys: 3);
        SignatureCaseKind[] pattern =
        [
            SignatureCaseKind.SPlusL, SignatureCaseKind.Valid, SignatureCaseKind.SharedMixedOrderA, SignatureCaseKind.Valid,
            SignatureCaseKind.FlipS, SignatureCaseKind.DuplicateKeyValid, SignatureCaseKind.Valid, SignatureCaseKind.FlipM,
            SignatureCaseKind.SharedMixedOrderA, SignatureCaseKind.DuplicateKeyInvalid,
        ];
        SignatureCase[] cases = Enumerable.Range(0, key.Size).Select(i => generator.Next(pattern[i % pattern.Length])).ToArray();
        return (cases, ReferenceVerdicts(cases));
    });

    private static readonly OncePerKey<(int Seed, int Size), (SignatureCase[] Cases, bool[] Expected)> FewKeyExpectations = new();

    private static bool[] ReferenceVerdicts(SignatureCase[] cases)
    {
        bool[] expected = new bool[cases.Length];
        Parallel.For(0, cases.Length, i => expected[i] = Ed25519Reference.Verify(cases[i].PublicKey, cases[i].Signature, cases[i].Message));
        return expected;
    }
}
