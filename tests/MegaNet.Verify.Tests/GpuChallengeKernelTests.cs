using System.Numerics;
using System.Reflection;
using System.Security.Cryptography;
using ILGPU;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using MegaNet.Core.Ed25519;
using MegaNet.Core.Verification;
using MegaNet.Verify.Gpu;
using MegaNet.Verify.Gpu.Kernels;
using Xunit.Abstractions;

namespace MegaNet.Verify.Tests;

/// <summary>Rules 2 and 5 on the device (<see cref="ChallengeKernel"/>): SHA-512, the reduction mod L and S &lt; L,
/// against .NET's SHA-512 and BigInteger, run on ILGPU's CPU accelerator.</summary>
public sealed class GpuChallengeKernelTests(ITestOutputHelper output)
{
    private static readonly int Seed = TestSeed.Next();

    [Fact]
    public void SHA_512_constants_derived_from_the_primes_match_FIPS_180_4()
    {
        ulong[] c = ChallengeKernel.Constants();
        Assert.Equal(0x428a2f98d728ae22UL, c[0]);
        Assert.Equal(0x7137449123ef65cdUL, c[1]);
        Assert.Equal(0x6c44198c4a475817UL, c[79]);
        Assert.Equal(0x6a09e667f3bcc908UL, c[80]);
        Assert.Equal(0x5be0cd19137e2179UL, c[87]);
    }

    [Fact]
    public void Reduction_mod_L_matches_BigInteger()
    {
        output.WriteLine($"seed {Seed} (replay with MEGANET_TEST_SEED={Seed})");
        var random = new Random(Seed);
        byte[] x = new byte[64];
        var inputs = new List<byte[]> { new byte[64], Enumerable.Repeat((byte)0xFF, 64).ToArray() };
        byte[] l = Ed25519Reference.ToLittleEndian(Ed25519Reference.L);
        inputs.Add([.. l, .. new byte[32]]); // L itself
        inputs.Add([.. Ed25519Reference.ToLittleEndian(Ed25519Reference.L - 1), .. new byte[32]]);
        for (int i = 0; i < 5000; i++)
        {
            random.NextBytes(x);
            inputs.Add((byte[])x.Clone());
        }

        foreach (byte[] input in inputs)
        {
            ulong[] w = Enumerable.Range(0, 8).Select(j => BitConverter.ToUInt64(input, 8 * j)).ToArray();
            ChallengeKernel.Reduce(w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7], out ulong k0, out ulong k1, out ulong k2, out ulong k3);
            BigInteger got = new BigInteger(k0) | (new BigInteger(k1) << 64) | (new BigInteger(k2) << 128) | (new BigInteger(k3) << 192);
            Assert.Equal(Ed25519Reference.FromLittleEndian(input) % Ed25519Reference.L, got);
        }
    }

    [Fact]
    public void The_kernel_hashes_R_A_M_of_every_length_and_checks_S_like_the_host()
    {
        output.WriteLine($"seed {Seed} (replay with MEGANET_TEST_SEED={Seed})");
        var random = new Random(Seed);

        // Lengths around every padding boundary of R ‖ A ‖ M (64 + m bytes: one block up to 111, two up to 239, …).
        var lengths = new List<int> { 0, 1, 46, 47, 48, 49, 63, 64, 65, 111, 127, 128, 174, 175, 176, 177, 300, 1000 };
        lengths.AddRange(Enumerable.Range(0, 40).Select(_ => random.Next(0, 600)));
        using var batch = new SignatureBatch();
        byte[] key = new byte[32], signature = new byte[64];
        BigInteger l = Ed25519Reference.L;
        for (int i = 0; i < lengths.Count; i++)
        {
            byte[] message = new byte[lengths[i]];
            random.NextBytes(message);
            random.NextBytes(key);
            random.NextBytes(signature);

            // S: canonical mostly; L − 1, L, L + 1 and 2^256 − 1 at fixed places.
            BigInteger s = i switch
            {
                3 => l - 1,
                4 => l,
                5 => l + 1,
                6 => (BigInteger.One << 256) - 1,
                _ => Ed25519Reference.FromLittleEndian(signature.AsSpan(32).ToArray()) % (i % 7 == 0 ? BigInteger.One << 256 : l),
            };
            byte[] sBytes = s.ToByteArray(isUnsigned: true);
            Array.Clear(signature, 32, 32);
            sBytes.AsSpan(0, Math.Min(32, sBytes.Length)).CopyTo(signature.AsSpan(32));
            batch.Add(key, signature, message);
        }

        int n = batch.Count;
        using Context context = Context.Create(b => b.CPU());
        using Accelerator accelerator = context.GetPreferredDevice(preferCPU: true).CreateAccelerator(context);
        var prepare = accelerator.LoadKernel<int, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<int>, int, int, ArrayView<ulong>, ArrayView<byte>, ArrayView<uint>, ArrayView<byte>>(ChallengeKernel.Prepare);

        // Offsets start past a base, as for a chunk in the middle of a batch.
        int[] offsets = batch.MessageOffsets.ToArray().Select(o => o + 1000).ToArray();
        using var signatures = accelerator.Allocate1D(batch.Signatures.ToArray());
        using var keys = accelerator.Allocate1D(batch.PublicKeys.ToArray());
        using var messages = accelerator.Allocate1D(batch.MessageData.Length == 0 ? new byte[1] : batch.MessageData.ToArray());
        using var deviceOffsets = accelerator.Allocate1D(offsets);
        using var sha = accelerator.Allocate1D(ChallengeKernel.Constants());
        using var rs = accelerator.Allocate1D<byte>(32 * n);
        using var scalars = accelerator.Allocate1D<uint>(16 * n);
        using var pre = accelerator.Allocate1D<byte>(n);
        int group = Math.Min(16, accelerator.MaxNumThreadsPerGroup);
        prepare(accelerator.DefaultStream, new KernelConfig((n + group - 1) / group, group), n, signatures.View, keys.View, messages.View, deviceOffsets.View, 1000, 0,
            sha.View, rs.View, scalars.View, pre.View);
        accelerator.Synchronize();
        byte[] gotRs = rs.GetAsArray1D();
        uint[] gotScalars = scalars.GetAsArray1D();
        byte[] gotPre = pre.GetAsArray1D();

        int canonical = 0;
        for (int i = 0; i < n; i++)
        {
            ReadOnlySpan<byte> sig = batch.GetSignature(i);
            Assert.Equal(sig[..32].ToArray(), gotRs.AsSpan(32 * i, 32).ToArray());
            BigInteger s = Ed25519Reference.FromLittleEndian(sig[32..].ToArray());
            Assert.Equal(s, Words(gotScalars, 16 * i));
            bool below = s < l;
            Assert.True(below == (gotPre[i] == 1), $"item {i}: S < L is {below}, the kernel says {gotPre[i]}");
            if (!below)
            {
                Assert.Equal(BigInteger.Zero, Words(gotScalars, 16 * i + 8));
                continue;
            }

            canonical++;
            byte[] digest = SHA512.HashData([.. sig[..32], .. batch.GetPublicKey(i), .. batch.GetMessage(i)]);
            Assert.True(Ed25519Reference.FromLittleEndian(digest) % l == Words(gotScalars, 16 * i + 8), $"item {i}: k differs for a {batch.GetMessage(i).Length}-byte message");
        }

        // Both outcomes of the S check occurred.
        Assert.InRange(canonical, 1, n - 3);
    }

    [Fact]
    public void The_challenge_kernel_compiles_to_PTX_for_sm_90_without_a_GPU()
    {
        PTXCompiledKernel compiled = GpuKernelTests.CompileToPtx(typeof(ChallengeKernel).GetMethod(nameof(ChallengeKernel.Prepare), BindingFlags.Public | BindingFlags.Static)!);
        output.WriteLine($"PTX: {compiled.PTXAssembly.Length} characters");
        Assert.Contains(".entry", compiled.PTXAssembly);
        GpuKernelTests.WriteForDeviceCheck("challenge.ptx", compiled.PTXAssembly);
    }

    [Fact]
    public void Host_and_device_hashing_give_the_reference_verdicts_and_long_messages_cut_chunks()
    {
        output.WriteLine($"seed {Seed} (replay with MEGANET_TEST_SEED={Seed})");
        (SignatureCase[] cases, bool[] expected) = Backends.Mixed(Seed, 200);
        using var onHost = new GpuBatchVerifier(GpuDeviceKind.CpuAccelerator, new VerifierOptions { GpuMaxBatch = 64, GpuHashOnHost = true });
        using var onDevice = new GpuBatchVerifier(GpuDeviceKind.CpuAccelerator, new VerifierOptions { GpuMaxBatch = 64, GpuHashOnHost = false });
        Assert.Contains("SHA-512 on the host", onHost.Description);
        Assert.Contains("SHA-512 on the device up to 16 KiB a message, on the host (", onDevice.Description);
        using SignatureBatch batch = Backends.ToBatch(cases);
        Assert.Equal(expected, onHost.Verify(batch));
        Assert.Equal(expected, onDevice.Verify(batch));

        // A cap of 500 message bytes per chunk: chunks of 64 items are halved until they fit, and a 3,000-byte message
        // goes alone into a buffer grown for it.
        onDevice.ChunkMessageBytes = 500;
        var random = new Random(Seed);
        byte[] seed = new byte[32], pk = new byte[32], sk = new byte[64];
        random.NextBytes(seed);
        Ed25519Signer.KeyPairFromSeed(seed, pk, sk);
        using var longBatch = new SignatureBatch();
        var want = new List<bool>();
        byte[] signature = new byte[64];
        foreach (int length in new[] { 100, 3000, 5, 0, 700, 64, 64, 64, 64, 64, 64, 64, 64, 64 })
        {
            byte[] message = new byte[length];
            random.NextBytes(message);
            Ed25519Signer.Sign(sk, message, signature);
            bool valid = random.Next(3) != 0;
            if (!valid)
            {
                signature[random.Next(64)] ^= 1;
            }

            longBatch.Add(pk, signature, message);
            want.Add(Ed25519Reference.Verify(pk, signature, message));
        }

        Assert.Equal(want, onDevice.Verify(longBatch));
        Assert.Contains(true, want);
    }

    [Fact]
    public void Long_messages_are_hashed_on_the_host_with_the_reference_verdicts_and_never_copied_to_the_device()
    {
        // A device thread hashed a long message alone, byte by byte, and held up its whole launch: 150 items in chunks
        // of 64, short messages among ones just over the device's limit, up to 200 KB and one of 3 MiB, valid and
        // invalid (a flipped message bit, S + L, S = 2^256 − 1, a flipped bit of R), some chunks with several.
        output.WriteLine($"seed {Seed} (replay with MEGANET_TEST_SEED={Seed})");
        var random = new Random(Seed);
        byte[] seed = new byte[32], pk = new byte[32], sk = new byte[64], signature = new byte[64];
        random.NextBytes(seed);
        Ed25519Signer.KeyPairFromSeed(seed, pk, sk);
        const int Limit = GpuBatchVerifier.MaxDeviceHashedMessageBytes;
        using var batch = new SignatureBatch();
        var want = new List<bool>();
        var wantLong = new List<bool>();
        for (int i = 0; i < 150; i++)
        {
            int length = i == 100 ? 3 << 20 : (i % 9) switch
            {
                3 => Limit + 1,
                5 => Limit,
                7 or 8 => random.Next(Limit + 2, 200_000),
                _ => random.Next(0, 2000),
            };
            byte[] message = new byte[length];
            random.NextBytes(message);
            Ed25519Signer.Sign(sk, message, signature);
            BigInteger s = Ed25519Reference.FromLittleEndian(signature.AsSpan(32).ToArray());
            switch (i % 5)
            {
                case 1 when length > 0:
                    message[random.Next(length)] ^= 1;
                    break;
                case 2:
                    Ed25519Reference.ToLittleEndian(s + Ed25519Reference.L).CopyTo(signature, 32);
                    break;
                case 3:
                    signature[random.Next(32)] ^= 2;
                    break;
                case 4 when i % 3 == 0:
                    Array.Fill(signature, (byte)0xFF, 32, 32);
                    break;
            }

            batch.Add(pk, signature, message);
            bool valid = Ed25519Reference.Verify(pk, signature, message);
            want.Add(valid);
            if (length > Limit)
            {
                wantLong.Add(valid);
            }
        }

        using var gpu = new GpuBatchVerifier(GpuDeviceKind.CpuAccelerator, new VerifierOptions { GpuMaxBatch = 64, GpuHashOnHost = false });
        Assert.Equal(want, gpu.Verify(batch));
        Assert.Equal(wantLong.Count, gpu.LongMessagesHashedOnHost);
        Assert.Contains(true, wantLong);
        Assert.Contains(false, wantLong);

        // Only the short messages were copied: the 3 MiB one did not grow the slots' buffers to its size.
        output.WriteLine($"message buffers: {gpu.MessageBufferBytes:N0} bytes");
        Assert.InRange(gpu.MessageBufferBytes, 1, 256 << 10);
    }

    private static BigInteger Words(uint[] words, int offset)
    {
        BigInteger value = BigInteger.Zero;
        for (int w = 7; w >= 0; w--)
        {
            value = (value << 32) | words[offset + w];
        }

        return value;
    }
}
