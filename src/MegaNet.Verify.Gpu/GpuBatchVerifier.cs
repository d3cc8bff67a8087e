using MegaNet.Core.Verification;

namespace MegaNet.Verify.Gpu;

/// <summary>Which ILGPU accelerator a GPU backend runs on.</summary>
public enum GpuDeviceKind
{
    /// <summary>A real GPU: CUDA when present, else OpenCL. Backend name <c>gpu</c>.</summary>
    Device,

    /// <summary>ILGPU's CPU accelerator running the same kernels; for tests only. Backend name <c>gpu-cpu</c>.</summary>
    CpuAccelerator,
}

/// <summary>Backends <c>gpu</c> and <c>gpu-cpu</c>: ILGPU kernels implementing the MegaNet rule.</summary>
public sealed class GpuBatchVerifier : BatchVerifierBase
{
    /// <summary>Registry name of the device backend.</summary>
    public const string DeviceBackendName = "gpu";

    /// <summary>Registry name of the CPU-accelerator backend.</summary>
    public const string CpuBackendName = "gpu-cpu";

    private readonly GpuDeviceKind _kind;

    /// <summary>Creates the verifier on the given accelerator kind.</summary>
    public GpuBatchVerifier(GpuDeviceKind kind, VerifierOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        _kind = kind;
        throw new BackendUnavailableException(Name, "the GPU kernels are not implemented yet.");
    }

    /// <summary>Null when the backend can run here, else why not.</summary>
    public static string? Probe(GpuDeviceKind kind) => "the GPU kernels are not implemented yet.";

    /// <inheritdoc />
    public override string Name => _kind == GpuDeviceKind.Device ? DeviceBackendName : CpuBackendName;

    /// <inheritdoc />
    public override string Description => "not implemented";

    /// <inheritdoc />
    protected override void VerifyCore(SignatureBatch batch, int start, int count, Span<bool> verdicts) =>
        throw new BackendUnavailableException(Name, "the GPU kernels are not implemented yet.");
}
