using System.Runtime.CompilerServices;
namespace MegaNet.Verify.Simd.Field;

/// <summary>Field arithmetic an addition chain needs; implemented by the scalar and the lane representations.</summary>
internal interface IFieldArithmetic<TSelf>
    where TSelf : struct, IFieldArithmetic<TSelf>
{
    static abstract TSelf Multiply(in TSelf a, in TSelf b);

    /// <summary>a^(2^n), n ≥ 1.</summary>
    static abstract TSelf SquareTimes(in TSelf a, int n);
}

/// <summary>Exponentiation chains written once for every representation of GF(2^255 − 19).</summary>
internal static class AdditionChains
{
    /// <summary>z^((p − 5) / 8) = z^(2^252 − 3), the exponent of square-root recovery (ref10's chain: 250 squarings, 11 multiplications).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static T Pow22523<T>(in T z)
        where T : struct, IFieldArithmetic<T>
    {
        T t0 = T.SquareTimes(z, 1);
        T t1 = T.SquareTimes(t0, 2);
        t1 = T.Multiply(z, t1);
        t0 = T.Multiply(t0, t1);
        t0 = T.SquareTimes(t0, 1);
        t0 = T.Multiply(t1, t0);
        t1 = T.SquareTimes(t0, 5);
        t0 = T.Multiply(t1, t0);
        t1 = T.SquareTimes(t0, 10);
        t1 = T.Multiply(t1, t0);
        T t2 = T.SquareTimes(t1, 20);
        t1 = T.Multiply(t2, t1);
        t1 = T.SquareTimes(t1, 10);
        t0 = T.Multiply(t1, t0);
        t1 = T.SquareTimes(t0, 50);
        t1 = T.Multiply(t1, t0);
        t2 = T.SquareTimes(t1, 100);
        t1 = T.Multiply(t2, t1);
        t1 = T.SquareTimes(t1, 50);
        t0 = T.Multiply(t1, t0);
        t0 = T.SquareTimes(t0, 2);
        return T.Multiply(t0, z);
    }
}
