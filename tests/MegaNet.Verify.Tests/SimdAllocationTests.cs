using MegaNet.Core.Verification;
using MegaNet.Node.Benchmarking;
using MegaNet.Verify.Simd;
using Xunit.Abstractions;

namespace MegaNet.Verify.Tests;

/// <summary>The hot path allocates per batch at most, never per item (pooled buffers, stack scratch).</summary>
public sealed class SimdAllocationTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData(64)]
    [InlineData(1024)]
    public void A_warm_single_threaded_batch_allocates_nothing_per_item(int size)
    {
        using SignatureBatch batch = VerifyBenchmark.MakeBatch(size, 0);
        using var verifier = new SimdBatchVerifier(new VerifierOptions { Threads = 1, KeyCacheCapacity = 0 });
        bool[] verdicts = new bool[size];
        verifier.Verify(batch, verdicts);
        verifier.Verify(batch, verdicts);

        // Least over several warm batches: a per-item allocation shows in every batch, while a one-off (the shared
        // ArrayPool trimmed under another test's memory pressure, so one rent makes a fresh array) shows in one.
        long allocated = long.MaxValue;
        for (int round = 0; round < 5; round++)
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            verifier.Verify(batch, verdicts);
            allocated = Math.Min(allocated, GC.GetAllocatedBytesForCurrentThread() - before);
        }

        output.WriteLine($"batch {size}: {allocated} bytes allocated");
        Assert.All(verdicts, Assert.True);
        Assert.True(allocated < 4096, $"{allocated} bytes allocated for a batch of {size}");
    }
}
