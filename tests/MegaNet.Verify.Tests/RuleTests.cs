using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using MegaNet.Core.Ed25519;
using MegaNet.Core.Verification;
using MegaNet.Verify.Simd;
using Xunit.Abstractions;

namespace MegaNet.Verify.Tests;

/// <summary>The rule itself: libsodium as an oracle outside the documented class, the class itself, and the registry.</summary>
public sealed class RuleTests(ITestOutputHelper output)
{
    private static readonly int Seed = TestSeed.Next();

    [Fact]
    public void Libsodium_agrees_with_the_reference_outside_the_torsion_residue_class()
    {
        output.WriteLine($"seed {Seed} (replay with MEGANET_TEST_SEED={Seed})");
        var generator = new SignatureCaseGenerator(Seed);
        var libsodium = new LibsodiumBatchVerifier();
        int checkedCount = 0;
        foreach (SignatureCaseKind kind in Enum.GetValues<SignatureCaseKind>().Where(k => k is not SignatureCaseKind.TorsionResidue and not SignatureCaseKind.MixedOrderA and not SignatureCaseKind.SharedMixedOrderA))
        {
            for (int i = 0; i < 12; i++)
            {
                SignatureCase c = generator.Next(kind);
                using var batch = new SignatureBatch(1);
                batch.Add(c.PublicKey, c.Signature, c.Message);
                bool reference = Ed25519Reference.Verify(c.PublicKey, c.Signature, c.Message);
                Assert.True(reference == libsodium.Verify(batch)[0], $"{kind} #{i}: reference {reference}, libsodium disagrees (seed {Seed})");
                checkedCount++;
            }
        }

        Assert.Equal(17 * 12, checkedCount);
    }

    [Fact]
    public void Torsion_residues_are_accepted_by_our_rule_and_differ_from_libsodium_only_in_that_direction()
    {
        output.WriteLine($"seed {Seed} (replay with MEGANET_TEST_SEED={Seed})");
        var generator = new SignatureCaseGenerator(Seed);
        var libsodium = new LibsodiumBatchVerifier();
        int differ = 0;
        SignatureCaseKind[] kinds = [SignatureCaseKind.TorsionResidue, SignatureCaseKind.MixedOrderA, SignatureCaseKind.SharedMixedOrderA];
        for (int i = 0; i < 36; i++)
        {
            SignatureCase c = generator.Next(kinds[i % kinds.Length]);
            using var batch = new SignatureBatch(1);
            batch.Add(c.PublicKey, c.Signature, c.Message);
            bool ours = Ed25519Reference.Verify(c.PublicKey, c.Signature, c.Message);
            bool theirs = libsodium.Verify(batch)[0];
            // The documented class: the cofactored equation holds, the cofactorless one need not.
            Assert.True(ours, $"{c.Kind} #{i} must be accepted under the cofactored rule (seed {Seed})");
            if (ours != theirs)
            {
                differ++;
            }

            if (c.Kind == SignatureCaseKind.MixedOrderA)
            {
                // Built so that R = [S]B − [k]A exactly: libsodium accepts too.
                Assert.True(theirs, $"MixedOrderA #{i}: libsodium must accept an exact equation (seed {Seed})");
            }
        }

        Assert.True(differ > 0, "The torsion-residue cases never separated the two rules; the generator is not producing the class.");
    }

    /// <summary>
    /// The kinds built so that the cofactored equation holds are refused by rules 3 and 4 alone: a backend that breaks
    /// either rule accepts them, where the kinds that swap an encoding into a valid signature also fail the equation.
    /// </summary>
    [Theory]
    [InlineData(SignatureCaseKind.SmallOrderAEquationHolds, false)]
    [InlineData(SignatureCaseKind.SmallOrderREquationHolds, false)]
    [InlineData(SignatureCaseKind.NonCanonicalAEquationHolds, true)]
    [InlineData(SignatureCaseKind.NonCanonicalREquationHolds, true)]
    public void Equation_holding_kinds_are_refused_by_the_decoding_rules_alone(SignatureCaseKind kind, bool nonCanonical)
    {
        output.WriteLine($"seed {Seed} (replay with MEGANET_TEST_SEED={Seed})");
        var generator = new SignatureCaseGenerator(Seed);
        var encodings = new HashSet<string>();
        for (int i = 0; i < 12; i++)
        {
            SignatureCase c = generator.Next(kind);
            byte[] encoding = kind is SignatureCaseKind.SmallOrderAEquationHolds or SignatureCaseKind.NonCanonicalAEquationHolds ? c.PublicKey : c.Signature[..32];
            encodings.Add(Convert.ToHexString(encoding));
            Assert.False(Ed25519Reference.Verify(c.PublicKey, c.Signature, c.Message), $"{kind} #{i}: the reference accepts it");
            Assert.True(WithoutDecodingRules.Verify(c.PublicKey, c.Signature, c.Message), $"{kind} #{i}: the equation does not hold, so rule 6 refuses it too");
            Assert.Equal(!nonCanonical, Ed25519Reference.TryDecode(encoding, out _));
            Assert.True(WithoutDecodingRules.TryDecodeLoosely(encoding, out Ed25519Reference.Point point));
            Assert.True(Ed25519Reference.IsSmallOrder(point));
        }

        // Every encoding of the kind's list, in turn.
        Assert.Equal(nonCanonical ? 6 : 8, encodings.Count);
    }

    [Fact]
    public void Small_order_points_are_the_eight_torsion_encodings()
    {
        byte[][] encodings = SignatureCaseGenerator.SmallOrderEncodings.ToArray();
        Assert.Equal(8, encodings.Select(Convert.ToHexString).Distinct().Count());
        foreach (byte[] e in encodings)
        {
            Assert.True(Ed25519Reference.TryDecode(e, out Ed25519Reference.Point p));
            Assert.True(Ed25519Reference.IsSmallOrder(p));
        }

        Assert.True(Ed25519Reference.TryDecode(Ed25519Reference.Encode(Ed25519Reference.B), out Ed25519Reference.Point b));
        Assert.False(Ed25519Reference.IsSmallOrder(b));
    }

    [Fact]
    public void Zero_x_with_the_sign_bit_set_is_not_canonical()
    {
        // y = 1 gives x = 0 (the identity); with the sign bit set the encoding is refused.
        byte[] enc = new byte[32];
        enc[0] = 1;
        Assert.True(Ed25519Reference.TryDecode(enc, out _));
        enc[31] = 0x80;
        Assert.False(Ed25519Reference.TryDecode(enc, out _));
    }

    [Fact]
    public void The_registry_names_every_backend_and_auto_never_picks_a_test_or_baseline_backend()
    {
        var registry = Backends.Registry;
        Assert.Equal(["reference", "simd", "gpu", "gpu-cpu", "libsodium"], registry.Backends.Select(b => b.Name));
        string auto = registry.Resolve("auto");
        Assert.NotEqual("libsodium", auto);
        Assert.NotEqual("gpu-cpu", auto);
        ArgumentException unknown = Assert.Throws<ArgumentException>(() => registry.Create("quantum"));
        Assert.Contains("simd", unknown.Message);
    }

    [Fact]
    public void The_cpu_backends_can_run_on_every_machine()
    {
        // simd has a scalar fallback and gpu-cpu is ILGPU's CPU accelerator: neither may be missing.
        foreach (string name in new[] { "reference", "simd", "gpu-cpu", "libsodium" })
        {
            string? reason = Backends.Registry.Find(name)!.Probe();
            Assert.True(reason is null, $"{name} is unavailable: {reason}");
        }
    }

    [Fact]
    public void A_backend_that_cannot_run_says_why()
    {
        string? reason = Backends.Registry.Find("gpu")!.Probe();
        if (reason is null)
        {
            output.WriteLine("A GPU is present; creating it must work.");
            using IBatchVerifier gpu = Backends.Registry.Create("gpu");
            Assert.Equal("gpu", gpu.Name);
            return;
        }

        BackendUnavailableException e = Assert.Throws<BackendUnavailableException>(() => Backends.Registry.Create("gpu"));
        Assert.Equal("gpu", e.Backend);
        Assert.False(string.IsNullOrWhiteSpace(e.Reason));
    }

    [SkippableFact]
    public void The_gpu_backend_is_in_the_suite_where_a_device_is()
    {
        // RuleBackends leaves out a backend that cannot run here, so without a GPU no gpu case is generated at all: this
        // is where that shows, as a skip with its reason, instead of as nothing. MEGANET_EXPECT_GPU=1 (a run on a GPU
        // machine) turns the skip into a failure.
        string? reason = Backends.Registry.Find("gpu")!.Probe();
        if (Environment.GetEnvironmentVariable("MEGANET_EXPECT_GPU") == "1")
        {
            Assert.True(reason is null, $"MEGANET_EXPECT_GPU=1, but the gpu backend cannot run: {reason}");
        }

        Skip.If(reason is not null, $"the gpu backend is not in this run's verifier suite (its cases are run by gpu-cpu, the same kernels on ILGPU's CPU accelerator): {reason}");
        Assert.Contains("gpu", Backends.RuleBackends);
    }

    [Fact]
    public void The_isa_knobs_of_this_run_took_effect()
    {
        // CI runs the suite once per ISA tier; a knob that silently did nothing would make those runs meaningless, and
        // so would a verifier that picked its tier by another test than the one the run is for.
        output.WriteLine($"verifier tier in effect: {SimdBatchVerifier.Tier} (AVX-512F {Avx512F.IsSupported}, 512-bit vectors accelerated {Vector512.IsHardwareAccelerated}, AVX2 {Avx2.IsSupported}, SSE2 {Sse2.IsSupported})");
        bool intrinsicsOff = Environment.GetEnvironmentVariable("DOTNET_EnableHWIntrinsic") == "0";
        bool avx2Off = Environment.GetEnvironmentVariable("DOTNET_EnableAVX2") == "0";
        bool avx512Off = Environment.GetEnvironmentVariable("DOTNET_EnableAVX512") == "0" || Environment.GetEnvironmentVariable("DOTNET_EnableAVX512F") == "0";
        if (intrinsicsOff)
        {
            Assert.False(Sse2.IsSupported);
            Assert.False(Vector128.IsHardwareAccelerated);
        }

        if (avx2Off)
        {
            Assert.False(Avx2.IsSupported);
        }

        if (avx512Off)
        {
            Assert.False(Avx512F.IsSupported);
        }

        // .ci/run names the tier each of its runs is for; without a name, the tier the CPU's flags and the knobs imply.
        string? named = Environment.GetEnvironmentVariable("MEGANET_EXPECT_TIER");
        if (!string.IsNullOrEmpty(named))
        {
            Assert.True(Enum.TryParse(named, ignoreCase: true, out SimdTier expected) && Enum.IsDefined(expected),
                $"MEGANET_EXPECT_TIER={named} names no tier: use one of {string.Join(", ", Enum.GetNames<SimdTier>())}");
            Assert.Equal(expected, SimdBatchVerifier.Tier);
            return;
        }

        string? flags = OperatingSystem.IsLinux() && File.Exists("/proc/cpuinfo")
            ? File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("flags", StringComparison.Ordinal))
            : null;
        if (flags is null)
        {
            output.WriteLine("no x86 CPU flags to compare with (not Linux, or not x86): the tier is checked only where MEGANET_EXPECT_TIER names it");
            return;
        }

        string[] has = flags[(flags.IndexOf(':', StringComparison.Ordinal) + 1)..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        // .NET 10 reports the ISAs in groups: Avx2 only with the rest of x86-64-v3 (avx, bmi1, bmi2, f16c, fma, lzcnt, movbe),
        // Avx512F only with BW, CD, DQ and VL; one flag alone (avx2 where a VM hides movbe) is not what it reports.
        // lzcnt is left out: Linux shows it as "abm", which one VM here left out while .NET found Lzcnt.
        bool cpuAvx2 = new[] { "avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "movbe" }.All(has.Contains);
        bool cpuAvx512 = cpuAvx2 && new[] { "avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl" }.All(has.Contains);
        output.WriteLine($"CPU: x86-64-v3 group {cpuAvx2}, AVX-512 F/BW/CD/DQ/VL group {cpuAvx512}");
        if (!intrinsicsOff && !avx2Off && !avx512Off)
        {
            // No knob: the runtime uses what the CPU has (so the default run is the top tier, as CI assumes).
            Assert.Equal(cpuAvx2, Avx2.IsSupported);
            Assert.Equal(cpuAvx512, Avx512F.IsSupported);
        }

        SimdTier implied = intrinsicsOff || avx2Off || !cpuAvx2 ? SimdTier.Scalar : avx512Off || !cpuAvx512 ? SimdTier.Avx2 : SimdTier.Avx512;
        if (implied == SimdTier.Avx512 && !Vector512.IsHardwareAccelerated)
        {
            // The runtime declines 512-bit vectors on CPUs that slow down under them (DOTNET_PreferredVectorBitWidth
            // overrides it); the verifier's lanes then stay at AVX2, as its field and multi-scalar code do.
            output.WriteLine("512-bit vectors are not accelerated on this CPU: the verifier is to stay at AVX2");
            implied = SimdTier.Avx2;
        }

        Assert.Equal(implied, SimdBatchVerifier.Tier);
    }
}
