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
    // What Mismatches adds with longMessages: valid items, a flipped message bit and S + L (the host leaves its challenge
    // zero for the kernel's S check to refuse), over messages of 20 and 70 KiB.
    private static readonly (SignatureCaseKind Kind, int Bytes)[] LongMessageItems =
    [
        (SignatureCaseKind.Valid, 20 << 10), (SignatureCaseKind.FlipM, 70 << 10),
        (SignatureCaseKind.SPlusL, 20 << 10), (SignatureCaseKind.Valid, 70 << 10),
    ];

    /// <summary>Items a node checks a GPU backend on at start (a fraction of a second of reference work).</summary>
    public const int StartupItems = 256;

    /// <summary>How many of <paramref name="size"/> seeded items <paramref name="verifier"/> judges differently from
    /// the reference. With <paramref name="batchSize"/> above <paramref name="size"/>, one batch of that many items
    /// repeats the seeded ones in turn, so the check reaches a backend's large-batch path (chunks, streams) at the cost
    /// of <paramref name="size"/> reference verifications; a size that does not divide the backend's chunk makes a
    /// verdict landing on the wrong item show. With <paramref name="longMessages"/>, four items with messages of 20 and
    /// 70 KiB (valid, a flipped message bit, S + L) replace items spread evenly over the batch, so over its chunks: the
    /// GPU backend hashes messages over <c>GpuBatchVerifier.MaxDeviceHashedMessageBytes</c> on the host and hands the
    /// device their challenges, around items the device hashes itself. <paramref name="cancellationToken"/> stops the
    /// signing and the reference's verdicts, which take most of the time (a few hundred items a second per core).</summary>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled.</exception>
    public static int Mismatches(IBatchVerifier verifier, int size, int seed = 2, int batchSize = 0, bool longMessages = false,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(verifier);
        ArgumentOutOfRangeException.ThrowIfLessThan(size, 1);
        batchSize = Math.Max(batchSize, size);
        var generator = new SignatureCaseGenerator(seed);
        // One item of every kind first, so that no kind is left to the draw (a backend that drops one rule may fail on
        // one kind only), then the seeded mix.
        SignatureCaseKind[] kinds = Enum.GetValues<SignatureCaseKind>();
        var cases = new List<SignatureCase>(size + LongMessageItems.Length);
        for (int i = 0; i < size; i++)
        {
            // `bench --check-items` may ask for many: Ctrl+C must not wait for all of them to be signed.
            cancellationToken.ThrowIfCancellationRequested();
            cases.Add(i < kinds.Length ? generator.Next(kinds[i]) : generator.NextMixed(invalidShare: 0.3));
        }

        // Which case each item of the batch is: the seeded ones in turn, the long ones in their places.
        int[] caseOf = new int[batchSize];
        for (int i = 0; i < batchSize; i++)
        {
            caseOf[i] = i % size;
        }

        if (longMessages)
        {
            for (int j = 0; j < LongMessageItems.Length; j++)
            {
                caseOf[(int)((j + 1L) * batchSize / (LongMessageItems.Length + 1))] = cases.Count;
                cases.Add(generator.Next(LongMessageItems[j].Kind, LongMessageItems[j].Bytes));
            }
        }

        bool[] expected = new bool[cases.Count];
        // The reference, at a few milliseconds an item, is what a large check spends its time on.
        var parallel = new ParallelOptions { CancellationToken = cancellationToken };
        Parallel.For(0, cases.Count, parallel, i => expected[i] = Ed25519Reference.Verify(cases[i].PublicKey, cases[i].Signature, cases[i].Message));
        using var mixed = new SignatureBatch(batchSize, batchSize * 64);
        foreach (int c in caseOf)
        {
            mixed.Add(cases[c].PublicKey, cases[c].Signature, cases[c].Message);
        }

        bool[] verdicts = verifier.Verify(mixed);
        return verdicts.Where((v, i) => v != expected[caseOf[i]]).Count();
    }
}
