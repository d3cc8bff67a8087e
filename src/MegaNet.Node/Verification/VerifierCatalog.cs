using MegaNet.Core.Verification;
using MegaNet.Verify.Gpu;
using MegaNet.Verify.Simd;

namespace MegaNet.Node.Verification;

/// <summary>Composes the registry of every verifier backend this build ships.</summary>
public static class VerifierCatalog
{
    /// <summary>All backend names in the order listings show them.</summary>
    public static IReadOnlyList<string> Names { get; } =
        [ReferenceBatchVerifier.BackendName, SimdBatchVerifier.BackendName, GpuBatchVerifier.DeviceBackendName,
         GpuBatchVerifier.CpuBackendName, LibsodiumBatchVerifier.BackendName];

    /// <summary>A registry with reference, simd, gpu, gpu-cpu and libsodium. <c>auto</c> prefers a real GPU, then SIMD,
    /// then the reference; it never picks gpu-cpu (a test device) or libsodium (a different rule).</summary>
    public static BatchVerifierRegistry Create()
    {
        var registry = new BatchVerifierRegistry();
        registry.Register(new BackendDescriptor(
            ReferenceBatchVerifier.BackendName,
            "the rule in plain managed code (BigInteger); slow, the spec every backend is tested against",
            AutoPriority: 0,
            Probe: () => null,
            Create: _ => new ReferenceBatchVerifier()));
        registry.Register(new BackendDescriptor(
            SimdBatchVerifier.BackendName,
            "vectorised CPU batch verification (AVX-512F / AVX2 / scalar), multi-threaded",
            AutoPriority: 10,
            Probe: SimdBatchVerifier.Probe,
            Create: o => new SimdBatchVerifier(o)));
        registry.Register(new BackendDescriptor(
            GpuBatchVerifier.DeviceBackendName,
            "ILGPU kernels on a CUDA or OpenCL GPU",
            AutoPriority: 20,
            Probe: () => GpuBatchVerifier.Probe(GpuDeviceKind.Device),
            Create: o => new GpuBatchVerifier(GpuDeviceKind.Device, o)));
        registry.Register(new BackendDescriptor(
            GpuBatchVerifier.CpuBackendName,
            "the GPU kernels on ILGPU's CPU accelerator (tests and debugging only)",
            AutoPriority: -1,
            Probe: () => GpuBatchVerifier.Probe(GpuDeviceKind.CpuAccelerator),
            Create: o => new GpuBatchVerifier(GpuDeviceKind.CpuAccelerator, o)));
        registry.Register(new BackendDescriptor(
            LibsodiumBatchVerifier.BackendName,
            "libsodium one at a time: the speed baseline; keeps libsodium's cofactorless rule",
            AutoPriority: -1,
            Probe: LibsodiumBatchVerifier.Probe,
            Create: _ => new LibsodiumBatchVerifier()));
        return registry;
    }
}
