using MegaNet.Core.Ed25519;
using MegaNet.Core.Verification;
using MegaNet.Verify.Simd;

namespace MegaNet.Verify.Tests;

/// <summary>The SIMD verifier keeps one SHA-512 object per thread: a batch that fails midway must not leave bytes in it
/// for the next item that thread hashes, which may be another caller's.</summary>
public sealed class SimdHashStateTests
{
    [Fact]
    public void A_batch_that_throws_while_hashing_leaves_the_next_verification_on_that_thread_exact()
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
}
