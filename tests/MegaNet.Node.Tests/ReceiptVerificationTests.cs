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

        // The key a receipt checks out under is pinned only past the first-contact check, as an id shown in a challenge
        // is: pinned unchecked, every later challenge was signed without the check.
        var refusing = new MegaNetClientOptions().WithFirstContactCheck(id => "pinned for another address");
        using var careful = new MegaNetClient(node.Address, options: refusing);
        Assert.Contains("refused on first contact: pinned for another address", await careful.VerifyReceiptAsync(real));
        Assert.Null(careful.NodeId);
        FirstContactRefusedException refused = await Assert.ThrowsAsync<FirstContactRefusedException>(() => careful.FetchAsync(bob));
        Assert.Contains("pinned for another address", refused.Message, StringComparison.Ordinal);
        // The same through a check of the log alone (audit's path).
        using var auditing = new MegaNetClient(node.Address, options: refusing);
        Assert.Contains("refused on first contact", (await auditing.CheckLogAsync(real.TreeHead)).Problem);
        Assert.Null(auditing.NodeId);
    }

    [Fact]
    public async Task A_node_that_rewrote_its_log_fails_the_receipts_it_gave_before()
    {
        string data = Directory.CreateTempSubdirectory("meganet-node-").FullName, backup = data + "-backup";
        await using TestNode node = await TestNode.StartAsync(dataDirectory: data);
        await node.BackUpAsync(backup);
        using Identity alice = Identity.Create(), bob = Identity.Create();
        Receipt before;
        using (MegaNetClient client = node.Client())
        {
            before = await client.SendAsync(alice, bob.Card, Text("first"), "text/plain");
            Assert.Null(await client.VerifyReceiptAsync(before));
        }

        // The same node key over a new log (its empty store restored from the backup): leaf 0 is another envelope now.
        await node.RestoreStoreAsync(backup);
        Directory.Delete(backup, recursive: true);
        using MegaNetClient after = node.Client();
        await after.SendAsync(alice, bob.Card, Text("a different first"), "text/plain");
        await after.SendAsync(alice, bob.Card, Text("second"), "text/plain");

        string? problem = await after.VerifyReceiptAsync(before);
        Assert.NotNull(problem);
        Assert.Contains("does not extend", problem);
    }

    [Fact]
    public async Task A_node_whose_log_shrank_below_the_receipt_fails_it_without_asking_for_a_proof()
    {
        string data = Directory.CreateTempSubdirectory("meganet-node-").FullName, backup = data + "-backup";
        await using TestNode node = await TestNode.StartAsync(dataDirectory: data);
        await node.BackUpAsync(backup);
        using Identity alice = Identity.Create(), bob = Identity.Create();
        Receipt third;
        using (MegaNetClient client = node.Client())
        {
            await client.SendAsync(alice, bob.Card, Text("one"), "text/plain");
            await client.SendAsync(alice, bob.Card, Text("two"), "text/plain");
            third = await client.SendAsync(alice, bob.Card, Text("three"), "text/plain");
            Assert.Equal(3, third.TreeHead.TreeSize);
        }

        // The same node key over a new, shorter log: the node cannot give a proof for leaf 2 of a tree of 3 (it
        // answers OUT_OF_RANGE), and that is no reason to call the receipt anything but invalid.
        await node.RestoreStoreAsync(backup);
        Directory.Delete(backup, recursive: true);
        using MegaNetClient after = node.Client();
        await after.SendAsync(alice, bob.Card, Text("a different first"), "text/plain");

        string? problem = await after.VerifyReceiptAsync(third);
        Assert.NotNull(problem);
        Assert.Contains("1 entries now, fewer than the 3", problem);
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task A_receipt_whose_log_index_lies_outside_its_tree_is_invalid()
    {
        await using TestNode node = await TestNode.StartAsync();
        using MegaNetClient client = node.Client();
        using Identity alice = Identity.Create(), bob = Identity.Create();
        Receipt real = await client.SendAsync(alice, bob.Card, Text("only"), "text/plain");
        Assert.Null(await client.VerifyReceiptAsync(real));

        // The log index is not covered by the tree head's signature: anyone can change it.
        foreach (long index in new[] { 1L, 7L, -1L, long.MaxValue })
        {
            Receipt changed = real.Clone();
            changed.LogIndex = index;
            string? problem = await client.VerifyReceiptAsync(changed);
            Assert.NotNull(problem);
            Assert.Contains($"log index {index} is outside", problem);
        }

        node.AssertNoServerErrors();
    }
}
