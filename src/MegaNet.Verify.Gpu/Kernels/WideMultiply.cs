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
