using System.Security.Cryptography;
using MegaNet.Core.Interop;
using MegaNet.Core.Transparency;
using Xunit.Abstractions;

namespace MegaNet.Store.Tests;

/// <summary>
/// The Merkle log's SHA-256 of short inputs goes through OpenSSL's low-level calls where they load (see OpenSslSha256)
/// and libsodium elsewhere; both must give .NET's SHA-256 at every length, on both sides of the short-input limit.
/// </summary>
public sealed class MerkleHashTests(ITestOutputHelper output)
{
    [Fact]
    public void OpenSsl_sha256_is_found_on_Linux()
    {
        output.WriteLine($"OpenSSL SHA-256: {(OpenSslSha256.IsAvailable ? "available" : OpenSslSha256.WhyNot)}");
        // .NET's own cryptography loads libcrypto on Linux: where this fails, the store silently hashes 4-6 times slower.
        if (OperatingSystem.IsLinux())
        {
            Assert.True(OpenSslSha256.IsAvailable, OpenSslSha256.WhyNot);
        }
        else
        {
            Assert.False(OpenSslSha256.IsAvailable);
        }
    }

    [Fact]
    public void Short_hashes_equal_dotnet_sha256_at_every_length()
    {
        int seed = Random.Shared.Next();
        output.WriteLine($"seed {seed}");
        var random = new Random(seed);
        Span<byte> hash = stackalloc byte[32];
        for (int length = 0; length <= OpenSslSha256.MaxInput && OpenSslSha256.IsAvailable; length++)
        {
            byte[] data = new byte[length];
            random.NextBytes(data);
            OpenSslSha256.Hash(data, hash);
            Assert.Equal(SHA256.HashData(data), hash.ToArray());
        }
    }

    [Fact]
    public void Leaf_and_node_hashes_are_rfc9162_on_both_sides_of_the_short_input_limit()
    {
        int seed = Random.Shared.Next();
        output.WriteLine($"seed {seed}");
        var random = new Random(seed);
        foreach (int length in (int[])[0, 1, 32, 33, 63, 64, 65, OpenSslSha256.MaxInput - 2, OpenSslSha256.MaxInput - 1, OpenSslSha256.MaxInput, OpenSslSha256.MaxInput + 1, 4096])
        {
            byte[] leaf = new byte[length];
            random.NextBytes(leaf);
            Assert.Equal(SHA256.HashData([0x00, .. leaf]), MerkleTree.LeafHash(leaf));
        }

        byte[] left = new byte[32], right = new byte[32];
        random.NextBytes(left);
        random.NextBytes(right);
        byte[] expected = SHA256.HashData([0x01, .. left, .. right]);
        Assert.Equal(expected, MerkleTree.NodeHash(left, right));
        // The destination may be one of the inputs (the log hashes up its columns in place).
        MerkleTree.NodeHash(left, right, left);
        Assert.Equal(expected, left);
    }
}
