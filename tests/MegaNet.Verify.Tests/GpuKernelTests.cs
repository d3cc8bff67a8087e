using System.Numerics;
using System.Reflection;
using System.Text.RegularExpressions;
using ILGPU;
using ILGPU.Backends;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.OpenCL;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using ILGPU.Runtime.OpenCL;
using MegaNet.Core.Ed25519;
using MegaNet.Core.Verification;
using MegaNet.Verify.Gpu.Kernels;
using Xunit.Abstractions;

namespace MegaNet.Verify.Tests;

/// <summary>The GPU kernels: compiled for CUDA sm_90 and OpenCL C without a device, and their field and point arithmetic against the reference.</summary>
public sealed class GpuKernelTests(ITestOutputHelper output)
{
    private static readonly int Seed = TestSeed.Next();

    [Fact]
    public void The_verification_kernel_compiles_to_PTX_for_sm_90_without_a_GPU()
    {
        PTXCompiledKernel compiled = CompileToPtx();
        string ptx = compiled.PTXAssembly;
        output.WriteLine($"PTX: {ptx.Length} characters; header: {ptx[..Math.Min(200, ptx.Length)]}");
        WriteForDeviceCheck("kernel.ptx", ptx);

        // ILGPU 1.5.3 caps the emitted target at sm_80 even when sm_90 is asked for; sm_80 PTX is JIT-compiled by the
        // driver for an H100 (sm_90). What this test guards is that the kernel compiles for CUDA at all.
        Assert.Matches(@"\.target\s+sm_[89]0", ptx);
        Assert.Contains(".entry", ptx);
        Assert.DoesNotContain("mul.wide.s32", ptx, StringComparison.Ordinal);
    }

    [Fact]
    public void The_widening_rewrite_turns_every_limb_product_of_the_kernel_into_mul_wide_s32()
    {
        // The GpuInlinePtx path end to end short of the driver: ILGPU's PTX, rewritten, in a kernel object ILGPU loads.
        PTXCompiledKernel compiled = CompileToPtx();
        PTXCompiledKernel widened = PtxWidening.Rewrite(compiled, out int rewritten);
        string ptx = widened.PTXAssembly;
        WriteForDeviceCheck("kernel-wide.ptx", ptx);
        int before = Regex.Matches(compiled.PTXAssembly, @"mul\.lo\.s64").Count;
        int wide = Regex.Matches(ptx, @"mul\.wide\.s32").Count;
        var left = Regex.Matches(ptx, @"^\s*mul\.lo\.s64\s+[^;]*;", RegexOptions.Multiline).Select(m => m.Value.Trim()).ToList();
        output.WriteLine($"mul.lo.s64 before: {before}; rewritten: {rewritten}; mul.wide.s32 after: {wide}; mul.lo.s64 left: {left.Count}, such as {string.Join(" | ", left.Take(3))}");
        Assert.Equal(rewritten, wide);
        Assert.Equal(before, rewritten + left.Count);
        Assert.Equal(compiled.Name, widened.Name);

        // Each field product has 100 limb products and each square 55: thousands in all. What stays 64-bit is the ×19 of
        // the wrapped sums and carries (a constant operand), and products whose registers ILGPU reuses (it names
        // registers per value but recycles some), which the rewrite cannot prove sign-extended.
        Assert.True(rewritten > 5 * left.Count, $"{rewritten} rewritten against {left.Count} left");
        foreach (string line in left.Where(l => !Regex.IsMatch(l, @",\s*-?\d+;$")))
        {
            string[] operands = line[(line.IndexOf('%') + 0)..].TrimEnd(';').Split(',', StringSplitOptions.TrimEntries);
            bool unproven = operands.Skip(1).Any(r =>
            {
                var definitions = Regex.Matches(ptx, $@"^\s*(\S+)\s+{Regex.Escape(r)},", RegexOptions.Multiline);
                return definitions.Count != 1 || definitions[0].Groups[1].Value != "cvt.s64.s32";
            });
            Assert.True(unproven, $"left alone although both operands are single cvt.s64.s32 results: {line}");
        }
    }

    [Fact]
    public void The_widening_rewrite_leaves_alone_what_it_cannot_prove()
    {
        const string ptx = """
            .visible .entry k(
            )
            {
            	.reg .b32 	%r<9>;
            	.reg .b64 	%rd<19>;
            	cvt.s64.s32	%rd1, %r1;
            	cvt.s64.s32	%rd2, %r2;
            	mul.lo.s64	%rd3, %rd1, %rd2;
            	cvt.s64.s32	%rd4, %r3;
            	mov.u64	%rd4, %rd9;
            	mul.lo.s64	%rd5, %rd4, %rd2;
            	mul.lo.s64	%rd6, %rd1, %rd9;
            @%p1	mul.lo.s64	%rd7, %rd1, %rd2;
            	mul.lo.s64	%rd8, %rd1, 19;
            	mul.lo.s64	%rd10, %rd1, %rd1; // a square
            	cvt.s64.s32	%rd11, %r4;
            	{ .reg .b32 t; mov.b32 t, 0; mov.b64 %rd11, 5; }
            	mul.lo.s64	%rd12, %rd11, %rd1;
            }
            .func f(
            )
            {
            	mul.lo.s64	%rd3, %rd1, %rd2;
            	cvt.s64.s32	%rd1, %r1;
            	cvt.s64.s32	%rd2, %r2;
            	mul.lo.s64	%rd4, %rd1, %rd2;
            }
            """;
        string widened = PtxWidening.Rewrite(ptx, out int rewritten);
        output.WriteLine(widened);
        string[] lines = widened.Split('\n');

        // Rewritten: both operands are cvt.s64.s32 results defined once in their function, in .entry and .func alike.
        Assert.Contains(lines, l => l.Contains("mul.wide.s32 %rd3, %mnw0, %mnw1;") && l.Contains("cvt.u32.u64 %mnw0, %rd1;") && l.Contains("cvt.u32.u64 %mnw1, %rd2;"));
        Assert.Contains(lines, l => l.Contains("mul.wide.s32 %rd10, %mnw0, %mnw1;"));
        Assert.Contains(lines, l => l.Contains("mul.wide.s32 %rd4, %mnw0, %mnw1;"));

        // Left alone: an operand defined twice, one never sign-extended, a predicated multiply, a constant, and a
        // register an inline-assembly block writes.
        Assert.Contains(lines, l => l.Trim() == "mul.lo.s64\t%rd5, %rd4, %rd2;");
        Assert.Contains(lines, l => l.Trim() == "mul.lo.s64\t%rd6, %rd1, %rd9;");
        Assert.Contains(lines, l => l.Trim() == "@%p1\tmul.lo.s64\t%rd7, %rd1, %rd2;");
        Assert.Contains(lines, l => l.Trim() == "mul.lo.s64\t%rd8, %rd1, 19;");
        Assert.Contains(lines, l => l.Trim() == "mul.lo.s64\t%rd12, %rd11, %rd1;");

        // Registers are per function. The .func's first multiply comes before the definitions in the text and still
        // qualifies: the only value each of those registers can ever hold is a sign extension.
        Assert.Equal(4, rewritten);
        Assert.Equal(ptx.Split('\n').Length, lines.Length);
    }

    [Fact]
    public void The_verification_kernel_compiles_to_OpenCL_C_without_a_device()
    {
        // The gpu backend falls back to OpenCL where there is no CUDA; ILGPU needs OpenCL 2.0's generic address space.
        using Context context = Context.Create(b => b.Default().Optimize(OptimizationLevel.O2));
        using var backend = new CLBackend(context, new CLCapabilityContext(float16: false, float64: true, genericAddressSpace: true, int64_Atomics: true, subGroups: false),
            CLDeviceVendor.Other, CLCVersion.CL20);
        MethodInfo kernel = typeof(Ed25519Kernel).GetMethod(nameof(Ed25519Kernel.Verify), BindingFlags.Public | BindingFlags.Static)!;
        CompiledKernel compiled = backend.Compile(EntryPointDescription.FromExplicitlyGroupedKernel(kernel), KernelSpecialization.Empty);
        string source = ((CLCompiledKernel)compiled).Source;
        output.WriteLine($"OpenCL C: {source.Length} characters");
        Assert.Contains("kernel void", source);
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
            Assert.Equal(x * x % Ed25519Reference.P, Value(Fe.Square(fa)));
            // Inputs at the documented bound: sums and differences of four carried elements.
            Fe wideA = Fe.Sub(Fe.Add(fa, fa), Fe.Add(fb, fb)), wideB = Fe.Add(Fe.Add(fb, fa), Fe.Sub(fb, fa));
            BigInteger wa = Ed25519Reference.Mod(2 * x - 2 * y), wb = Ed25519Reference.Mod(2 * y);
            Assert.Equal(wa * wb % Ed25519Reference.P, Value(Fe.Mul(wideA, wideB)));
            Assert.Equal(wa * wa % Ed25519Reference.P, Value(Fe.Square(wideA)));
            Assert.Equal(Ed25519Reference.Mod(x - y), Value(Fe.Sub(fa, fb)));
            Assert.Equal(BigInteger.ModPow(x, (Ed25519Reference.P - 5) / 8, Ed25519Reference.P), Value(Fe.Pow22523(fa)));
            Assert.Equal(x.IsZero, Fe.IsZero(fa));
            Assert.Equal(!x.IsEven, Fe.IsOdd(fa));
        }
    }

    [Fact]
    public void Kernel_point_arithmetic_matches_the_reference_on_the_host()
    {
        output.WriteLine($"seed {Seed}");
        var random = new Random(Seed);
        CurveConstants c = MegaNet.Verify.Gpu.GpuBatchVerifier.BuildConstants();
        int[] baseTable = MegaNet.Verify.Gpu.GpuBatchVerifier.BaseTable(c);
        for (int i = 0; i < 40; i++)
        {
            Ed25519Reference.Point p = RandomPoint(random), q = RandomPoint(random);
            Ge gp = FromReference(p), gq = FromReference(q);
            AssertSame(Ed25519Reference.Add(p, p), Ed25519Kernel.ToP3(Ed25519Kernel.Double(Ed25519Kernel.ToP2(gp))));
            AssertSame(Ed25519Reference.Add(p, q), Ed25519Kernel.ToP3(Ed25519Kernel.AddCached(gp, Ed25519Kernel.ToCached(gq, c), false)));
            AssertSame(Ed25519Reference.Add(p, Negate(q)), Ed25519Kernel.ToP3(Ed25519Kernel.AddCached(gp, Ed25519Kernel.ToCached(gq, c), true)));

            // The base table's entries, added and subtracted as the kernel does.
            int m = random.Next(Ed25519Kernel.BaseTableEntries);
            GePrecomp entry = new()
            {
                YPlusX = Fe.Load(baseTable, m * Ed25519Kernel.BaseTableStride),
                YMinusX = Fe.Load(baseTable, m * Ed25519Kernel.BaseTableStride + 10),
                XY2d = Fe.Load(baseTable, m * Ed25519Kernel.BaseTableStride + 20),
            };
            Ed25519Reference.Point mB = Ed25519Reference.ScalarMultiply(m + 1, Ed25519Reference.B);
            AssertSame(Ed25519Reference.Add(p, mB), Ed25519Kernel.ToP3(Ed25519Kernel.AddPrecomp(gp, entry, false)));
            AssertSame(Ed25519Reference.Add(p, Negate(mB)), Ed25519Kernel.ToP3(Ed25519Kernel.AddPrecomp(gp, entry, true)));
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

    [Theory]
    [InlineData(1, 1 << 20, 0, 1)]
    [InlineData(33_792, 1 << 20, 0, 33_792)] // one launch up to what the device holds (an H200's 33,792)
    [InlineData(33_793, 1 << 20, 0, 16_897)] // then the fewest launches of equal size (the last one an item smaller)
    [InlineData(49_152, 1 << 20, 0, 24_576)] // not 33,792 and a last launch of 15,360
    [InlineData(65_536, 1 << 20, 0, 32_768)]
    [InlineData(131_072, 1 << 20, 0, 32_768)]
    [InlineData(262_144, 1 << 20, 0, 65_536)] // or quarters, when they are larger
    [InlineData(1 << 20, 1 << 20, 0, 262_144)]
    [InlineData(65_536, 1 << 20, 16_384, 16_384)] // GpuChunkItems set
    [InlineData(1_000, 1 << 20, 32_768, 32_768)] // a chunk larger than the batch: one launch
    [InlineData(65_536, 1_000, 0, 1_000)] // never beyond GpuMaxBatch
    [InlineData(65_536, 1_000, 4_000, 1_000)]
    public void Chunk_size_follows_the_batch_the_setting_and_the_cap(int count, int maxBatch, int configured, int expected) =>
        Assert.Equal(expected, MegaNet.Verify.Gpu.GpuBatchVerifier.ChunkItems(count, maxBatch, configured, 33_792));

    [Fact]
    public void The_single_launch_size_is_what_the_device_holds_and_never_under_the_floor()
    {
        using MegaNet.Verify.Gpu.GpuBatchVerifier gpu = new(MegaNet.Verify.Gpu.GpuDeviceKind.CpuAccelerator, new VerifierOptions());
        output.WriteLine(gpu.Description);
        Assert.True(gpu.ResidentThreads > 0, $"{gpu.ResidentThreads} resident threads");
        Assert.Equal(Math.Max(MegaNet.Verify.Gpu.GpuBatchVerifier.MinSingleLaunchItems, gpu.ResidentThreads), gpu.SingleLaunchItems);
        Assert.Contains($"batches over {gpu.SingleLaunchItems:N0} items cut into launches", gpu.Description);
    }

    [Fact]
    public void A_configured_chunk_size_cuts_batches_and_keeps_the_reference_verdicts()
    {
        output.WriteLine($"seed {Seed} (replay with MEGANET_TEST_SEED={Seed})");
        using MegaNet.Verify.Gpu.GpuBatchVerifier gpu = new(MegaNet.Verify.Gpu.GpuDeviceKind.CpuAccelerator, new VerifierOptions { GpuChunkItems = 50 });
        Assert.Contains("50 items per launch", gpu.Description);
        (SignatureCase[] cases, bool[] expected) = Backends.Mixed(Seed, 301); // seven launches, the last of one item
        using SignatureBatch batch = Backends.ToBatch(cases);
        Assert.Equal(expected, gpu.Verify(batch));
        Assert.Contains(false, expected);
    }

    [Theory]
    [InlineData(32, 132, 256)] // an H100 SXM, with a kernel whose occupancy group is 256
    [InlineData(32, 132, 1024)]
    [InlineData(4, 2, 16)] // ILGPU's CPU accelerator here
    public void Launches_cover_every_item_and_spread_small_batches_over_every_multiprocessor(int warp, int multiprocessors, int occupancyGroup)
    {
        foreach (int n in new[] { 1, 3, warp, warp + 1, multiprocessors * warp, 4096, 65_536, 1 << 20 })
        {
            KernelConfig shape = MegaNet.Verify.Gpu.GpuBatchVerifier.LaunchShape(n, warp, multiprocessors, occupancyGroup);
            int group = shape.GroupDim.X, grid = shape.GridDim.X;
            Assert.True(group % warp == 0 && occupancyGroup % group == 0, $"n={n}: group {group} is not whole warps dividing {occupancyGroup}");
            Assert.True((long)group * grid >= n, $"n={n}: {grid} groups of {group} miss items");
            Assert.True((long)group * (grid - 1) < n, $"n={n}: a whole group of {group} would have no item");
            // Every multiprocessor gets a group whenever there are enough warps of items.
            Assert.True(grid >= Math.Min(multiprocessors, (n + warp - 1) / warp), $"n={n}: {grid} groups leave multiprocessors idle");
        }

        // Large launches take the occupancy group; 4,096 items on an H100 take groups of one warp on 128 multiprocessors.
        Assert.Equal(occupancyGroup, MegaNet.Verify.Gpu.GpuBatchVerifier.LaunchShape(1 << 20, warp, multiprocessors, occupancyGroup).GroupDim.X);
        if (multiprocessors == 132)
        {
            Assert.Equal(128, MegaNet.Verify.Gpu.GpuBatchVerifier.LaunchShape(4096, warp, multiprocessors, occupancyGroup).GridDim.X);
        }

        if (occupancyGroup == 256)
        {
            // A launch of 16,384 items (a batch of that size; 65,536 went in four such before 2026-12-04): 124 items a
            // multiprocessor, groups of 2 of its 8 warps (4 fit), not 3 (2 fit, a quarter idle); 32,768 items (each half
            // of a 65,536-item batch) take 4 warps, not 7 (one fits, an eighth idle).
            Assert.Equal(64, MegaNet.Verify.Gpu.GpuBatchVerifier.LaunchShape(16_384, warp, multiprocessors, occupancyGroup).GroupDim.X);
            Assert.Equal(128, MegaNet.Verify.Gpu.GpuBatchVerifier.LaunchShape(32_768, warp, multiprocessors, occupancyGroup).GroupDim.X);
        }
    }

    [Fact]
    public void A_group_size_set_shapes_every_launch_and_keeps_the_reference_verdicts_and_a_bad_one_is_refused_by_name()
    {
        output.WriteLine($"seed {Seed} (replay with MEGANET_TEST_SEED={Seed})");
        // ILGPU's CPU accelerator: warps of 4.
        using (MegaNet.Verify.Gpu.GpuBatchVerifier gpu = new(MegaNet.Verify.Gpu.GpuDeviceKind.CpuAccelerator, new VerifierOptions { GpuGroupThreads = 12 }))
        {
            Assert.Contains("groups of 12 set", gpu.Description);
            KernelConfig shape = gpu.LaunchShape(301);
            Assert.Equal((12, 26), (shape.GroupDim.X, shape.GridDim.X));
            (SignatureCase[] cases, bool[] expected) = Backends.Mixed(Seed, 301);
            using SignatureBatch batch = Backends.ToBatch(cases);
            Assert.Equal(expected, gpu.Verify(batch));
            Assert.Contains(false, expected);
        }

        foreach (int bad in new[] { -1, 6, 1 << 20 })
        {
            var e = Assert.Throws<ArgumentOutOfRangeException>(() => new MegaNet.Verify.Gpu.GpuBatchVerifier(MegaNet.Verify.Gpu.GpuDeviceKind.CpuAccelerator, new VerifierOptions { GpuGroupThreads = bad }));
            Assert.StartsWith("MEGANET_GPU_GROUP (VerifierOptions.GpuGroupThreads) must be 0 (the backend chooses) or a multiple of 4 (the warp size of", e.Message, StringComparison.Ordinal);
        }
    }

    [Theory]
    // An H200 runs the kernel's 242-255 registers a thread in groups of up to 256: a group of 512 fits no multiprocessor.
    [InlineData(512, 0, true)]
    [InlineData(256, 1, false)]
    [InlineData(128, 3, false)]
    public void A_group_size_the_kernel_cannot_run_is_refused_by_name_not_blamed_on_the_gpu(int group, int maxActiveGroups, bool refused)
    {
        string? problem = MegaNet.Verify.Gpu.GpuBatchVerifier.GroupTooLarge(group, maxActiveGroups, occupancyGroup: 256, "NVIDIA H200");
        Assert.Equal(refused, problem is not null);
        if (refused)
        {
            Assert.StartsWith("MEGANET_GPU_GROUP (VerifierOptions.GpuGroupThreads) is 512, more threads than a group of the verification kernel can have on 'NVIDIA H200'", problem, StringComparison.Ordinal);
            Assert.Contains("the backend's own choice here is 256", problem, StringComparison.Ordinal);
        }
    }

    /// <summary>A kernel (by default the verification kernel) compiled for sm_90 by ILGPU's PTX backend, no GPU needed.</summary>
    internal static PTXCompiledKernel CompileToPtx(MethodInfo? kernel = null)
    {
        using Context context = Context.Create(b => b.Default().Optimize(OptimizationLevel.O2));
        using var backend = new PTXBackend(context, new CudaCapabilityContext(CudaArchitecture.SM_90), CudaArchitecture.SM_90, CudaInstructionSet.ISA_83, nvvmAPI: null);
        kernel ??= typeof(Ed25519Kernel).GetMethod(nameof(Ed25519Kernel.Verify), BindingFlags.Public | BindingFlags.Static)!;
        EntryPointDescription entry = EntryPointDescription.FromExplicitlyGroupedKernel(kernel);
        return (PTXCompiledKernel)backend.Compile(entry, KernelSpecialization.Empty);
    }

    /// <summary>For perf/gpu/device-check.sh: ptxas on a GPU machine reports registers, spills and the SASS mix.</summary>
    internal static void WriteForDeviceCheck(string file, string ptx)
    {
        if (Environment.GetEnvironmentVariable("MEGANET_PTX_OUT") is { Length: > 0 } folder)
        {
            File.WriteAllText(Path.Combine(folder, file), ptx);
        }
    }

    private static Ed25519Reference.Point RandomPoint(Random random)
    {
        byte[] scalar = new byte[32];
        random.NextBytes(scalar);
        return Ed25519Reference.ScalarMultiply(Ed25519Reference.FromLittleEndian(scalar) % Ed25519Reference.L, Ed25519Reference.B);
    }

    private static Ed25519Reference.Point Negate(Ed25519Reference.Point p) => p with { X = Ed25519Reference.Mod(-p.X), T = Ed25519Reference.Mod(-p.T) };

    private static Ge FromReference(Ed25519Reference.Point p)
    {
        BigInteger zInverse = Ed25519Reference.Inverse(p.Z);
        BigInteger x = Ed25519Reference.Mod(p.X * zInverse), y = Ed25519Reference.Mod(p.Y * zInverse);
        Ge g;
        g.X = Fe.FromBytes(Ed25519Reference.ToLittleEndian(x));
        g.Y = Fe.FromBytes(Ed25519Reference.ToLittleEndian(y));
        g.Z = Fe.One();
        g.T = Fe.FromBytes(Ed25519Reference.ToLittleEndian(x * y % Ed25519Reference.P));
        return g;
    }

    private static void AssertSame(Ed25519Reference.Point expected, Ge actual)
    {
        BigInteger zInverse = Ed25519Reference.Inverse(expected.Z);
        BigInteger x = Ed25519Reference.Mod(expected.X * zInverse), y = Ed25519Reference.Mod(expected.Y * zInverse);
        BigInteger z = Value(actual.Z);
        Assert.NotEqual(BigInteger.Zero, z);
        // Projective equality: X = x·Z, Y = y·Z, and T·Z = X·Y.
        Assert.Equal(x * z % Ed25519Reference.P, Value(actual.X));
        Assert.Equal(y * z % Ed25519Reference.P, Value(actual.Y));
        Assert.Equal(Value(actual.X) * Value(actual.Y) % Ed25519Reference.P, Value(actual.T) * z % Ed25519Reference.P);
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
