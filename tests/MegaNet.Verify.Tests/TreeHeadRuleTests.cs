using MegaNet.Core.Ed25519;
using MegaNet.Core.Transparency;
using MegaNet.Core.Verification;
using Xunit.Abstractions;

namespace MegaNet.Verify.Tests;

/// <summary>
/// A tree head is taken as signed only when both MegaNet's rule and libsodium's accept it, so the C# client and the
/// JavaScript one (libsodium) agree on every head. Before, the C# check applied the cofactored rule alone, and a head
/// whose signature leaves a torsion residue passed it while libsodium refused it.
/// </summary>
public sealed class TreeHeadRuleTests(ITestOutputHelper output)
{
    private static readonly int Seed = TestSeed.Next();

    [Fact]
    public void A_head_is_signed_only_when_both_rules_accept_it()
    {
        output.WriteLine($"seed {Seed} (replay with MEGANET_TEST_SEED={Seed})");
        var generator = new SignatureCaseGenerator(Seed);
        var libsodium = new LibsodiumBatchVerifier();
        byte[] root = new byte[MerkleTree.HashSize];
        new Random(Seed).NextBytes(root);
        int split = 0, both = 0;
        SignatureCaseKind[] kinds = [SignatureCaseKind.TorsionResidue, SignatureCaseKind.MixedOrderA, SignatureCaseKind.Valid, SignatureCaseKind.FlipS];
        for (int i = 0; i < 48; i++)
        {
            long size = 1 + i, timestamp = 1_764_000_000_000 + i;
            SignatureCase c = generator.Next(kinds[i % kinds.Length], TreeHeadSignature.SigningBytes(size, root, timestamp));
            using var batch = new SignatureBatch(1);
            batch.Add(c.PublicKey, c.Signature, c.Message);
            bool ours = Ed25519Reference.Verify(c.PublicKey, c.Signature, c.Message);
            bool theirs = libsodium.Verify(batch)[0];
            bool head = TreeHeadSignature.Verify(c.PublicKey, size, root, timestamp, c.Signature);
            Assert.True(head == (ours && theirs), $"{c.Kind} #{i}: MegaNet {ours}, libsodium {theirs}, head taken {head} (seed {Seed})");
            split += ours && !theirs ? 1 : 0;
            both += ours && theirs ? 1 : 0;
        }

        // The torsion-residue heads are the ones the cofactored rule alone took: about 7 in 8 of them split the rules.
        Assert.True(split > 0, $"no head split the two rules (seed {Seed})");
        Assert.True(both >= 24, $"only {both} heads passed both rules (seed {Seed})");
    }

    [Fact]
    public void A_head_signed_by_a_node_key_passes_and_any_changed_field_fails()
    {
        byte[] seed = new byte[32], publicKey = new byte[32], secretKey = new byte[64];
        new Random(Seed).NextBytes(seed);
        Ed25519Signer.KeyPairFromSeed(seed, publicKey, secretKey);
        byte[] root = new byte[MerkleTree.HashSize];
        byte[] signature = TreeHeadSignature.Sign(secretKey, 10, root, 1_764_000_000_000);
        Assert.True(TreeHeadSignature.Verify(publicKey, 10, root, 1_764_000_000_000, signature));
        Assert.False(TreeHeadSignature.Verify(publicKey, 11, root, 1_764_000_000_000, signature));
        Assert.False(TreeHeadSignature.Verify(publicKey, 10, root, 1_764_000_000_001, signature));
        Assert.False(TreeHeadSignature.Verify(publicKey, 10, root, 1_764_000_000_000, signature.AsSpan(0, 63)));
        Assert.False(TreeHeadSignature.Verify(publicKey.AsSpan(0, 31), 10, root, 1_764_000_000_000, signature));
        Assert.False(TreeHeadSignature.Verify(publicKey, 10, root.AsSpan(0, 31), 1_764_000_000_000, signature));
    }
}
