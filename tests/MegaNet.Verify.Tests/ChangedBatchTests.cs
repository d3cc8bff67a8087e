using MegaNet.Core.Ed25519;
using MegaNet.Core.Verification;

namespace MegaNet.Verify.Tests;

/// <summary>A batch changed while it is being verified breaks the batch's contract, but must not make a verifier read
/// outside the batch's messages. (The verifiers hash each item in a state of its own, ChallengeScalar's, so no hash
/// state outlives an item; the host reads messages through bounds-checked spans.)</summary>
public sealed class ChangedBatchTests
{
    [Fact]
    public void A_message_table_out_of_order_is_refused_before_the_gpu_kernel_reads_by_it()
    {
        // The device's hashing reads each message by the offsets it is sent, unchecked: the host checks their order
        // while it copies them (GpuBatchVerifier.CopyOnHost). ILGPU's CPU accelerator runs the same code as a device.
        using var gpu = new MegaNet.Verify.Gpu.GpuBatchVerifier(MegaNet.Verify.Gpu.GpuDeviceKind.CpuAccelerator, new VerifierOptions { GpuHashOnHost = false });
        var generator = new SignatureCaseGenerator(19);
        SignatureCase[] cases = Enumerable.Range(0, 8).Select(_ => generator.Next(SignatureCaseKind.Valid)).ToArray();

        // Item 1's message ends before it starts; the chunk's first and last offsets, all the copy itself reads, are
        // untouched.
        using (SignatureBatch changed = Backends.ToBatch(cases))
        {
            var offsets = (int[])typeof(SignatureBatch).GetField("_offsets", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance)!.GetValue(changed)!;
            offsets[2] = -5;
            Exception thrown = Assert.ThrowsAny<Exception>(() => gpu.Verify(changed));
            Exception? refused = Flatten(thrown).FirstOrDefault(e => e is ArgumentException);
            Assert.True(refused is not null, $"not refused as an ArgumentException: {thrown}");
            Assert.Contains("message table is inconsistent at item 1", refused.Message, StringComparison.Ordinal);
        }

        // The chunk refused, nothing of it is left in the verifier's buffers for the next batch.
        using SignatureBatch clean = Backends.ToBatch(cases);
        Assert.All(gpu.Verify(clean), Assert.True);
    }

    private static IEnumerable<Exception> Flatten(Exception e) =>
        e is AggregateException a ? a.Flatten().InnerExceptions.Prepend(e) : [e];
}
