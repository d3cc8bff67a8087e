using MegaNet.Core.Ed25519;
using MegaNet.Core.Verification;

namespace MegaNet.Node.Verification;

/// <summary>
/// A backend's verdicts against the reference rule on a seeded mix of valid and adversarial items (every
/// <see cref="SignatureCaseKind"/>: bit flips, S + L, non-canonical and small-order encodings, torsion residues). Used
/// by <c>meganet bench --check</c> and by a node before it trusts a GPU.
/// </summary>
public static class VerifierSelfCheck
{
    /// <summary>Items a node checks a GPU backend on at start (a fraction of a second of reference work).</summary>
    public const int StartupItems = 256;

    /// <summary>How many of <paramref name="size"/> seeded items <paramref name="verifier"/> judges differently from
    /// the reference.</summary>
    public static int Mismatches(IBatchVerifier verifier, int size, int seed = 2)
    {
        ArgumentNullException.ThrowIfNull(verifier);
        ArgumentOutOfRangeException.ThrowIfLessThan(size, 1);
        var generator = new SignatureCaseGenerator(seed);
        using var mixed = new SignatureBatch(size, size * 64);
        for (int i = 0; i < size; i++)
        {
            SignatureCase c = generator.NextMixed(invalidShare: 0.3);
            mixed.Add(c.PublicKey, c.Signature, c.Message);
        }

        bool[] expected = new bool[size];
        Parallel.For(0, size, i => expected[i] = Ed25519Reference.Verify(mixed.GetPublicKey(i), mixed.GetSignature(i), mixed.GetMessage(i)));
        bool[] verdicts = verifier.Verify(mixed);
        return expected.Where((e, i) => e != verdicts[i]).Count();
    }
}
