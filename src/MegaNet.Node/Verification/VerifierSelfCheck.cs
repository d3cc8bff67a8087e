using MegaNet.Core.Ed25519;
using MegaNet.Core.Verification;

namespace MegaNet.Node.Verification;

/// <summary>
/// A backend's verdicts against the reference rule on a seeded mix of valid and adversarial items (first one of
/// every <see cref="SignatureCaseKind"/> in order, as far as the size goes, then a seeded mix:
/// bit flips, S + L, non-canonical and small-order encodings, among them ones whose equation holds so that only rules 3
/// and 4 refuse them, torsion residues). Used by <c>meganet bench --check</c> and by a node before it trusts a GPU.
/// </summary>
public static class VerifierSelfCheck
{
    /// <summary>Items a node checks a GPU backend on at start (a fraction of a second of reference work).</summary>
    public const int StartupItems = 256;

    /// <summary>How many of <paramref name="size"/> seeded items <paramref name="verifier"/> judges differently from
    /// the reference. With <paramref name="batchSize"/> above <paramref name="size"/>, one batch of that many items
    /// repeats the seeded ones in turn, so the check reaches a backend's large-batch path (chunks, streams) at the cost
    /// of <paramref name="size"/> reference verifications; a size that does not divide the backend's chunk makes a
    /// verdict landing on the wrong item show.</summary>
    public static int Mismatches(IBatchVerifier verifier, int size, int seed = 2, int batchSize = 0)
    {
        ArgumentNullException.ThrowIfNull(verifier);
        ArgumentOutOfRangeException.ThrowIfLessThan(size, 1);
        batchSize = Math.Max(batchSize, size);
        var generator = new SignatureCaseGenerator(seed);
        // One item of every kind first, so that no kind is left to the draw (a backend that drops one rule may fail on
        // one kind only), then the seeded mix.
        SignatureCaseKind[] kinds = Enum.GetValues<SignatureCaseKind>();
        var cases = new SignatureCase[size];
        for (int i = 0; i < size; i++)
        {
            cases[i] = i < kinds.Length ? generator.Next(kinds[i]) : generator.NextMixed(invalidShare: 0.3);
        }

        bool[] expected = new bool[size];
        Parallel.For(0, size, i => expected[i] = Ed25519Reference.Verify(cases[i].PublicKey, cases[i].Signature, cases[i].Message));
        using var mixed = new SignatureBatch(batchSize, batchSize * 64);
        for (int i = 0; i < batchSize; i++)
        {
            SignatureCase c = cases[i % size];
            mixed.Add(c.PublicKey, c.Signature, c.Message);
        }

        bool[] verdicts = verifier.Verify(mixed);
        return verdicts.Where((v, i) => v != expected[i % size]).Count();
    }
}
