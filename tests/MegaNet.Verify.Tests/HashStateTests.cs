using MegaNet.Core.Ed25519;
using MegaNet.Core.Verification;
using MegaNet.Verify.Simd;

namespace MegaNet.Verify.Tests;

/// <summary>The SIMD and GPU verifiers keep one SHA-512 object per thread: a batch that fails midway must not leave
/// bytes in it for the next item that thread hashes, which may be another caller's.</summary>
public sealed class HashStateTests
{
    [Fact]
    public void A_simd_batch_that_throws_while_hashing_leaves_the_next_verification_on_that_thread_exact()
    {
        // One thread and a small batch: the work runs on this thread, so both calls share its hash object.
        using var simd = new SimdBatchVerifier(new VerifierOptions { Threads = 1, KeyCacheCapacity = 0 });
        var generator = new SignatureCaseGenerator(17);
        SignatureCase[] cases = Enumerable.Range(0, 8).Select(_ => generator.Next(SignatureCaseKind.Valid)).ToArray();

        // A batch whose message table was corrupted under the verifier (a caller writing a batch while it is being
        // verified, which breaks the contract): item 0's message slice ends before it starts.
        using (SignatureBatch broken = Backends.ToBatch(cases))
        {
            var offsets = (int[])typeof(SignatureBatch).GetField("_offsets", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance)!.GetValue(broken)!;
            offsets[1] = -5;
            Assert.ThrowsAny<ArgumentException>(() => simd.Verify(broken));
        }

        using SignatureBatch clean = Backends.ToBatch(cases);
        Assert.All(simd.Verify(clean), Assert.True);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void A_gpu_batch_that_throws_while_hashing_leaves_the_next_verification_exact(bool hashOnHost)
    {
        // On the host the GPU backend hashes in a parallel loop; a batch of one 256-item block runs it on this thread,
        // so both calls share its hash object. On the device the offsets are checked before anything is sent: a
        // kernel must never read outside the chunk's messages. ILGPU's CPU accelerator runs the same code as a device.
        using var gpu = new MegaNet.Verify.Gpu.GpuBatchVerifier(MegaNet.Verify.Gpu.GpuDeviceKind.CpuAccelerator, new VerifierOptions { GpuHashOnHost = hashOnHost });
        var generator = new SignatureCaseGenerator(19);
        SignatureCase[] cases = Enumerable.Range(0, 8).Select(_ => generator.Next(SignatureCaseKind.Valid)).ToArray();

        // Item 1's message slice ends before it starts: item 0 is hashed, then item 1 throws after its R and key
        // would have been appended had the slices not been taken first.
        using (SignatureBatch broken = Backends.ToBatch(cases))
        {
            var offsets = (int[])typeof(SignatureBatch).GetField("_offsets", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance)!.GetValue(broken)!;
            offsets[2] = -5;
            Exception thrown = Assert.ThrowsAny<Exception>(() => gpu.Verify(broken));
            Assert.Contains(Flatten(thrown), e => e is ArgumentException);
        }

        using SignatureBatch clean = Backends.ToBatch(cases);
        Assert.All(gpu.Verify(clean), Assert.True);
    }

    private static IEnumerable<Exception> Flatten(Exception e) =>
        e is AggregateException a ? a.Flatten().InnerExceptions.Prepend(e) : [e];
}
