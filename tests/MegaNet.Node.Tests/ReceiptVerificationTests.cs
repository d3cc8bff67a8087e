using System.Security.Cryptography;
using System.Text;
using Google.Protobuf;
using MegaNet.Api;
using MegaNet.Api.V1;
using MegaNet.Core.Ed25519;
using MegaNet.Core.Transparency;

namespace MegaNet.Node.Tests;

/// <summary>A receipt is evidence only if the node at the address signed it and its log still extends it.</summary>
public sealed class ReceiptVerificationTests
{
    private static byte[] Text(string s) => Encoding.UTF8.GetBytes(s);

    [Fact]
    public async Task A_receipt_signed_by_any_other_key_is_invalid_even_with_a_correct_proof()
    {
        await using TestNode node = await TestNode.StartAsync();
        using MegaNetClient client = node.Client();

        // A one-leaf log of an envelope never sent, signed by a fresh key: self-consistent, and the node's proof for
        // leaf 0 of a one-leaf tree is empty, so only the key can tell.
        byte[] id = Enumerable.Repeat((byte)0xAB, 32).ToArray();
        byte[] publicKey = new byte[32], secretKey = new byte[64];
        Ed25519Signer.KeyPairFromSeed(RandomNumberGenerator.GetBytes(32), publicKey, secretKey);
        byte[] root = MerkleTree.LeafHash(id);
        long now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        var forged = new Receipt
        {
            EnvelopeId = ByteString.CopyFrom(id),
            LogIndex = 0,
            TreeHead = new SignedTreeHead
            {
                TreeSize = 1,
                RootHash = ByteString.CopyFrom(root),
                TimestampUnixMs = now,
                NodeKey = ByteString.CopyFrom(publicKey),
                Signature = ByteString.CopyFrom(TreeHeadSignature.Sign(secretKey, 1, root, now)),
            },
        };
        using Identity alice = Identity.Create(), bob = Identity.Create();
        await client.SendAsync(alice, bob.Card, Text("one real leaf"), "text/plain");

        string? problem = await client.VerifyReceiptAsync(forged);
        Assert.NotNull(problem);
        Assert.Contains("not by the node at this address", problem);

        // A real one verifies, also after the log grew (a consistency proof links the two heads), and pins the node.
        using MegaNetClient fresh = node.Client();
        Receipt real = await fresh.SendAsync(alice, bob.Card, Text("two"), "text/plain");
        for (int i = 0; i < 5; i++)
        {
            await client.SendAsync(alice, bob.Card, Text($"more {i}"), "text/plain");
        }

        Assert.Null(await fresh.VerifyReceiptAsync(real));
        Assert.Equal(real.TreeHead.NodeKey.ToByteArray(), fresh.NodeId);

        // Held to another node id, the same receipt is not this node's.
        using var pinnedElsewhere = new MegaNetClient(node.Address, publicKey);
        Assert.Contains("not by the expected node", await pinnedElsewhere.VerifyReceiptAsync(real));
    }

    [Fact]
    public async Task A_node_that_rewrote_its_log_fails_the_receipts_it_gave_before()
    {
        string data = Directory.CreateTempSubdirectory("meganet-node-").FullName;
        await using TestNode node = await TestNode.StartAsync(dataDirectory: data);
        using Identity alice = Identity.Create(), bob = Identity.Create();
        Receipt before;
        using (MegaNetClient client = node.Client())
        {
            before = await client.SendAsync(alice, bob.Card, Text("first"), "text/plain");
            Assert.Null(await client.VerifyReceiptAsync(before));
        }

        // The same node key over a new log: leaf 0 is another envelope now.
        await node.StopAsync();
        Directory.Delete(Path.Combine(data, "store"), recursive: true);
        await node.RestartAsync();
        using MegaNetClient after = node.Client();
        await after.SendAsync(alice, bob.Card, Text("a different first"), "text/plain");
        await after.SendAsync(alice, bob.Card, Text("second"), "text/plain");

        string? problem = await after.VerifyReceiptAsync(before);
        Assert.NotNull(problem);
        Assert.Contains("does not extend", problem);
    }
}
