using System.Numerics;
using System.Reflection;
using ILGPU;
using ILGPU.Backends;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using MegaNet.Core.Ed25519;
using MegaNet.Core.Verification;
using MegaNet.Verify.Gpu.Kernels;
using Xunit.Abstractions;

namespace MegaNet.Verify.Tests;

/// <summary>The GPU kernels: compiled for CUDA sm_90 without a device, and their field arithmetic against BigInteger.</summary>
public sealed class GpuKernelTests(ITestOutputHelper output)
{
    private static readonly int Seed = TestSeed.Next();

    [Fact]
    public void The_verification_kernel_compiles_to_PTX_for_sm_90_without_a_GPU()
    {
        using Context context = Context.Create(b => b.Default());
        using var backend = new PTXBackend(context, new CudaCapabilityContext(CudaArchitecture.SM_90), CudaArchitecture.SM_90, CudaInstructionSet.ISA_83, nvvmAPI: null);
        MethodInfo kernel = typeof(Ed25519Kernel).GetMethod(nameof(Ed25519Kernel.Verify), BindingFlags.Public | BindingFlags.Static)!;
        EntryPointDescription entry = EntryPointDescription.FromImplicitlyGroupedKernel(kernel);
        KernelSpecialization specialization = KernelSpecialization.Empty;
        CompiledKernel compiled = backend.Compile(entry, specialization);
        string ptx = ((PTXCompiledKernel)compiled).PTXAssembly;
        output.WriteLine($"PTX: {ptx.Length} characters; header: {ptx[..Math.Min(200, ptx.Length)]}");
        if (Environment.GetEnvironmentVariable("MEGANET_PTX_OUT") is { Length: > 0 } folder)
        {
            // For perf/gpu/device-check.sh: ptxas on a GPU machine reports registers, spills and the SASS mix.
            File.WriteAllText(Path.Combine(folder, "kernel.ptx"), ptx);
        }
        // ILGPU 1.5.3 caps the emitted target at sm_80 even when sm_90 is asked for; sm_80 PTX is JIT-compiled by the
        // driver for an H100 (sm_90). What this test guards is that the kernel compiles for CUDA at all.
        Assert.Matches(@"\.target\s+sm_[89]0", ptx);
        Assert.Contains(".entry", ptx);
    }

    [Fact]
    public void Kernel_field_arithmetic_matches_BigInteger_on_the_host()
    {
        output.WriteLine($"seed {Seed}");
        var random = new Random(Seed);
        byte[] a = new byte[32], b = new byte[32];
        for (int i = 0; i < 300; i++)
        {
            random.NextBytes(a);
            random.NextBytes(b);
            a[31] &= 0x7F;
            b[31] &= 0x7F;
            BigInteger x = Ed25519Reference.FromLittleEndian(a) % Ed25519Reference.P, y = Ed25519Reference.FromLittleEndian(b) % Ed25519Reference.P;
            Fe fa = Fe.FromBytes(a), fb = Fe.FromBytes(b);
            Assert.Equal(x * y % Ed25519Reference.P, Value(Fe.Mul(fa, fb)));
            Assert.Equal(Ed25519Reference.Mod(x - y), Value(Fe.Sub(fa, fb)));
            Assert.Equal(BigInteger.ModPow(x, (Ed25519Reference.P - 5) / 8, Ed25519Reference.P), Value(Fe.Pow22523(fa)));
            Assert.Equal(x.IsZero, Fe.IsZero(fa));
            Assert.Equal(!x.IsEven, Fe.IsOdd(fa));
        }
    }

    [Fact]
    public void Batches_cut_into_chunks_over_both_streams_agree_with_the_reference()
    {
        // GpuMaxBatch 64 cuts a batch of 300 into five launches alternating over the two streams (host hashing of one
        // chunk while the other runs), with the second slot's buffers grown from a smaller batch first.
        output.WriteLine($"seed {Seed} (replay with MEGANET_TEST_SEED={Seed})");
        using MegaNet.Verify.Gpu.GpuBatchVerifier gpu = new(MegaNet.Verify.Gpu.GpuDeviceKind.CpuAccelerator, new VerifierOptions { GpuMaxBatch = 64 });
        foreach (int size in new[] { 5, 300, 129 })
        {
            (SignatureCase[] cases, bool[] expected) = Backends.Mixed(Seed, size);
            using SignatureBatch batch = Backends.ToBatch(cases);
            bool[] verdicts = gpu.Verify(batch);
            Assert.Equal(expected, verdicts);
        }

        // The check can fail: the 300-item batch holds both verdicts (a fifth of its items are made invalid).
        Assert.Contains(false, Backends.Mixed(Seed, 300).Expected);
        Assert.Contains(true, Backends.Mixed(Seed, 300).Expected);
    }

    private static BigInteger Value(Fe f)
    {
        Fe c = Fe.Canonical(f);
        int[] limbs = [c.V0, c.V1, c.V2, c.V3, c.V4, c.V5, c.V6, c.V7, c.V8, c.V9];
        BigInteger value = 0;
        int shift = 0;
        for (int i = 0; i < 10; i++)
        {
            value += new BigInteger(limbs[i]) << shift;
            shift += i % 2 == 0 ? 26 : 25;
        }

        return value;
    }
}
