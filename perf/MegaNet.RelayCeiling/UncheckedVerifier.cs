using MegaNet.Core.Verification;

namespace MegaNet.RelayCeiling;

/// <summary>
/// Counts every signature valid without looking at it, under the name and rule of the verifier it stands in for (so
/// admission takes it). Only for measuring what the node costs without verification.
/// </summary>
internal sealed class UncheckedVerifier(IBatchVerifier real) : IBatchVerifier
{
    public string Name => real.Name;

    public string Description => $"NOT VERIFYING (every signature counted valid), standing in for {real.Description}";

    public VerificationRule Rule => real.Rule;

    public void Verify(SignatureBatch batch, int start, int count, Span<bool> verdicts) => verdicts[..count].Fill(true);

    public void Dispose()
    {
        // The real verifier belongs to the node's NodeVerifiers, which disposes it.
    }
}
