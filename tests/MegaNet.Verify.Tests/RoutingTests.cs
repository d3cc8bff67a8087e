using MegaNet.Core.Ed25519;
using MegaNet.Core.Verification;
using Microsoft.Extensions.Logging.Abstractions;

namespace MegaNet.Verify.Tests;

public sealed class RoutingTests
{
    private sealed class Recording(string name, bool fault = false) : BatchVerifierBase
    {
        public int Calls { get; private set; }

        public override string Name => name;

        public override string Description => name;

        protected override void VerifyCore(SignatureBatch batch, int start, int count, Span<bool> verdicts)
        {
            Calls++;
            if (fault)
            {
                // A device fault can leave garbage behind: the router must not trust any of it.
                verdicts.Fill(true);
                throw new InvalidOperationException("device lost");
            }

            new ReferenceBatchVerifier().Verify(batch, start, count, verdicts);
        }
    }

    [Fact]
    public void Large_batches_go_to_the_accelerator_and_small_ones_to_the_cpu()
    {
        var gpu = new Recording("gpu");
        var cpu = new Recording("simd");
        using var router = new RoutingBatchVerifier(gpu, cpu, threshold: 8);
        (SignatureCase[] cases, bool[] expected) = Backends.Mixed(11, 9);
        using SignatureBatch batch = Backends.ToBatch(cases);

        Assert.Equal(expected, router.Verify(batch));
        Assert.Equal((1, 0), (gpu.Calls, cpu.Calls));
        bool[] few = new bool[3];
        router.Verify(batch, 0, 3, few);
        Assert.Equal(expected[..3], few);
        Assert.Equal((1, 1), (gpu.Calls, cpu.Calls));
    }

    [Fact]
    public void The_first_accelerator_fault_is_reported_once_and_the_cpu_takes_over_with_exact_verdicts()
    {
        var gpu = new Recording("gpu", fault: true);
        var cpu = new Recording("simd");
        var faults = new List<Exception>();
        using var router = new RoutingBatchVerifier(gpu, cpu, threshold: 2, faults.Add);
        (SignatureCase[] cases, bool[] expected) = Backends.Mixed(12, 16);
        using SignatureBatch batch = Backends.ToBatch(cases);

        Assert.Equal(expected, router.Verify(batch));
        Assert.Equal(expected, router.Verify(batch));
        Assert.Single(faults);
        Assert.True(router.AcceleratorFailed);
        Assert.Equal(1, gpu.Calls);
        Assert.Equal(2, cpu.Calls);
        Assert.Contains("faulted", router.Description);
    }

    [Fact]
    public void Backends_with_different_rules_cannot_be_routed_together()
    {
        Assert.Throws<ArgumentException>(() => new RoutingBatchVerifier(new LibsodiumBatchVerifier(), new ReferenceBatchVerifier(), 4));
    }

    /// <summary>Reports a backend's name over another backend's verdicts (a stand-in for a GPU on a machine without one).</summary>
    private sealed class Named(string name, IBatchVerifier inner) : BatchVerifierBase
    {
        public bool Disposed { get; private set; }

        public override string Name => name;

        public override string Description => $"{inner.Name} posing as {name}";

        protected override void VerifyCore(SignatureBatch batch, int start, int count, Span<bool> verdicts) => inner.Verify(batch, start, count, verdicts);

        protected override void Dispose(bool disposing) => Disposed = true;
    }

    [Fact]
    public void A_gpu_that_disagrees_with_the_reference_at_start_is_refused_or_replaced_under_auto()
    {
        // libsodium's cofactorless rule differs from ours on torsion residues, which the start-up check contains.
        using var libsodium = new LibsodiumBatchVerifier();
        var wrong = new Named("gpu", libsodium);
        var e = Assert.Throws<BackendUnavailableException>(() =>
            MegaNet.Node.Hosting.NodeServiceCollectionExtensions.CheckGpu(wrong, "gpu", () => throw new InvalidOperationException("no fallback when asked by name"), NullLogger.Instance));
        Assert.Contains("differ from the reference rule", e.Message);
        Assert.Contains("--backend simd", e.Message);
        Assert.True(wrong.Disposed);

        var wrongUnderAuto = new Named("gpu", libsodium);
        var simd = Backends.Get("simd");
        IBatchVerifier chosen = MegaNet.Node.Hosting.NodeServiceCollectionExtensions.CheckGpu(wrongUnderAuto, "auto", () => simd, NullLogger.Instance);
        Assert.Same(simd, chosen);

        // A GPU that agrees is kept as it is.
        var right = new Named("gpu", Backends.Get("simd"));
        Assert.Same(right, MegaNet.Node.Hosting.NodeServiceCollectionExtensions.CheckGpu(right, "gpu", () => throw new InvalidOperationException("kept"), NullLogger.Instance));
        Assert.False(right.Disposed);
    }
}
