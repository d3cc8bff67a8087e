using MegaNet.Core.Ed25519;

namespace MegaNet.Verify.Tests;

/// <summary>The reference implementation gives the documented verdict on every shared vector.</summary>
public sealed class ReferenceRuleTests
{
    public static TheoryData<string> VectorFiles() => new(TestVectors.Files);

    [Theory]
    [MemberData(nameof(VectorFiles))]
    public void Reference_matches_expected_verdicts(string file)
    {
        IReadOnlyList<Vector> vectors = TestVectors.Load(file);
        var wrong = vectors.Where(v => Ed25519Reference.Verify(v.PublicKey, v.Signature, v.Message) != v.Meganet).Select(v => v.ToString()).ToList();
        Assert.True(wrong.Count == 0, $"Reference disagrees with the expected verdict on: {string.Join(", ", wrong)}");
    }
}
