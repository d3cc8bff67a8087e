using ILGPU.Runtime.Cuda;

namespace MegaNet.Verify.Gpu.Kernels;

/// <summary>
/// A signed 32×32 → 64-bit multiply, chosen per kernel instantiation (a struct type argument, so ILGPU inlines it).
/// ILGPU 1.5.3 has no widening-multiply intrinsic: <c>(long)a * b</c> becomes a PTX <c>mul.lo.s64</c> of two
/// sign-extended values, which ptxas may or may not shrink to one widening IMAD.
/// </summary>
internal interface IWideMultiply
{
    /// <summary>a·b exactly.</summary>
    long Wide(int a, int b);
}

/// <summary>Plain C#: what runs on ILGPU's CPU accelerator and, by default, on the GPU.</summary>
internal struct PlainMultiply : IWideMultiply
{
    public readonly long Wide(int a, int b) => (long)a * b;
}

/// <summary>
/// PTX <c>mul.wide.s32</c>: only for CUDA accelerators (<see cref="GpuBatchVerifier"/> picks this instantiation there
/// alone; ILGPU's CPU accelerator always runs <see cref="PlainMultiply"/>). Off unless
/// <see cref="Core.Verification.VerifierOptions.GpuInlinePtx"/> asks for it, until a GPU run has checked it. No
/// <c>CudaAsm.IsSupported</c> branch here: ILGPU 1.5.3 keeps both arms of it in the PTX it emits.
/// </summary>
internal struct PtxMultiply : IWideMultiply
{
    public readonly long Wide(int a, int b)
    {
        CudaAsm.Emit("mul.wide.s32 %0, %1, %2;", out long product, a, b);
        return product;
    }
}
