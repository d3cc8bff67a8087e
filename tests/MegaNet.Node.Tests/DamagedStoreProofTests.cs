using System.Text;
using Grpc.Core;
using Grpc.Health.V1;
using Grpc.Net.Client;
using MegaNet.Api;
using MegaNet.Api.V1;
using MegaNet.Core.Transparency;
using MegaNet.Node.Cli;
using MegaNet.Node.Hosting;
using MegaNet.Store;
using Microsoft.Extensions.DependencyInjection;
using static MegaNet.Node.Tests.MeganetProcess;

namespace MegaNet.Node.Tests;

/// <summary>
/// A node whose leaves.bin is damaged after a checkpoint released the lower levels of the log it saved: a proof that
/// needs those hashes answers DATA_LOSS saying the node's store is damaged (no file path), the damage is logged once
/// in full however often it is asked for, the health check turns NOT_SERVING, and verify-receipt prints a line that says
/// so. Before, the StoreCorruptException reached clients as UNKNOWN, which they took for an outage, with an error and a
/// stack trace logged per request. A read of leaves.bin that fails for a reason that may pass (too many open files) is
/// no damage: UNAVAILABLE, the health check still serving, and the proof given once the read works again.
/// </summary>
public sealed class DamagedStoreProofTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("meganet-damaged-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public async Task Proofs_a_damaged_leaves_bin_cannot_back_answer_data_loss_logged_once_and_verify_receipt_says_so()
    {
        string data = Path.Combine(_dir, "data");
        await using TestNode node = await TestNode.StartAsync(dataDirectory: data);
        Receipt first = await StartWithReleasedLeavesAsync(node);
        string leaves = Path.Combine(data, "store", "leaves.bin");
        byte[] bytes = await File.ReadAllBytesAsync(leaves);
        bytes[(3 * 32) + 1] ^= 0x01;
        await File.WriteAllBytesAsync(leaves, bytes);

        using GrpcChannel channel = GrpcChannel.ForAddress(node.Address);
        var relay = new Relay.RelayClient(channel);
        long size = (await relay.GetTreeHeadAsync(new GetTreeHeadRequest())).TreeSize;
        Assert.Equal(2_101, size);
        for (int i = 0; i < 3; i++)
        {
            RpcException inclusion = await Assert.ThrowsAsync<RpcException>(async () => await relay.GetInclusionProofAsync(new InclusionProofRequest { LeafIndex = 2, TreeSize = size }));
            Assert.Equal(StatusCode.DataLoss, inclusion.StatusCode);
            Assert.Equal(StoreDamage.ClientText, inclusion.Status.Detail);
            RpcException consistency = await Assert.ThrowsAsync<RpcException>(async () => await relay.GetConsistencyProofAsync(new ConsistencyProofRequest { First = 5, Second = size }));
            Assert.Equal(StatusCode.DataLoss, consistency.StatusCode);
            Assert.DoesNotContain(data, consistency.Status.Detail, StringComparison.Ordinal);
        }

        // Leaves past the released block still prove.
        Assert.NotEmpty((await relay.GetInclusionProofAsync(new InclusionProofRequest { LeafIndex = 2_100, TreeSize = size })).Path);

        string error = Assert.Single(node.Errors);
        Assert.Contains(leaves, error, StringComparison.Ordinal);
        Assert.Contains("stop the node, then restore the store directory from a backup", error, StringComparison.Ordinal);
        Assert.DoesNotContain("Nothing was changed. Restore", error, StringComparison.Ordinal);

        HealthCheckResponse health = await new Health.HealthClient(channel).CheckAsync(new HealthCheckRequest());
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.NotServing, health.Status);

        // The receipt of leaf 0 (tree of 1) is held to the node's current head by a consistency proof it cannot give.
        string receipt = Path.Combine(_dir, "receipt.json");
        await File.WriteAllTextAsync(receipt, ClientCommands.ReceiptJson(first).ToJsonString());
        Result verified = await RunAsync(_dir, null, false, "verify-receipt", "--node", node.Address.ToString(), "--receipt", receipt, "--identity", Path.Combine(_dir, "none.json"));
        Assert.True(verified.ExitCode == 3, verified.Stderr + verified.Stdout);
        Assert.StartsWith($"INVALID: the node cannot give a consistency proof between two sizes it signed, 1 and {size}: it says its store is damaged", verified.Stdout, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_read_of_leaves_bin_that_fails_for_a_passing_reason_answers_unavailable_and_the_node_stays_serving()
    {
        string data = Path.Combine(_dir, "data");
        await using TestNode node = await TestNode.StartAsync(dataDirectory: data);
        Receipt first = await StartWithReleasedLeavesAsync(node);
        var store = (FasterEnvelopeStore)node.Services.GetRequiredService<IEnvelopeStore>();
        bool failing = true;
        // What File.OpenHandle throws when the process is out of descriptors (EMFILE).
        store.BeforeLeavesReadForTests = path =>
        {
            if (Volatile.Read(ref failing))
            {
                throw new IOException($"Too many open files : '{path}'", 24);
            }
        };

        using GrpcChannel channel = GrpcChannel.ForAddress(node.Address);
        var relay = new Relay.RelayClient(channel);
        var head = await relay.GetTreeHeadAsync(new GetTreeHeadRequest());
        for (int i = 0; i < 2; i++)
        {
            RpcException inclusion = await Assert.ThrowsAsync<RpcException>(async () => await relay.GetInclusionProofAsync(new InclusionProofRequest { LeafIndex = 0, TreeSize = head.TreeSize }));
            Assert.Equal(StatusCode.Unavailable, inclusion.StatusCode);
            Assert.Equal("The node could not read the log hashes this proof needs from its store just now (Too many open files : 'leaves.bin'). Its store is not damaged: ask for the proof again later.", inclusion.Status.Detail);
            RpcException consistency = await Assert.ThrowsAsync<RpcException>(async () => await relay.GetConsistencyProofAsync(new ConsistencyProofRequest { First = 5, Second = head.TreeSize }));
            Assert.Equal(StatusCode.Unavailable, consistency.StatusCode);
            Assert.DoesNotContain(data, consistency.Status.Detail, StringComparison.Ordinal);
        }

        // No damage: nothing logged as an error, the health check still serves, and the client calls it an outage
        // (exit code 2, retry), not an INVALID receipt.
        Assert.True(node.Errors.IsEmpty, string.Join("\n", node.Errors));
        Assert.Equal(4, node.Services.GetRequiredService<StoreDamage>().UnreadableCount);
        HealthCheckResponse health = await new Health.HealthClient(channel).CheckAsync(new HealthCheckRequest());
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, health.Status);
        string receipt = Path.Combine(_dir, "receipt.json");
        await File.WriteAllTextAsync(receipt, ClientCommands.ReceiptJson(first).ToJsonString());
        Result verified = await RunAsync(_dir, null, false, "verify-receipt", "--node", node.Address.ToString(), "--receipt", receipt, "--identity", Path.Combine(_dir, "none.json"));
        Assert.True(verified.ExitCode == 2, verified.Stderr + verified.Stdout);
        Assert.Contains("the node said Unavailable: The node could not read the log hashes this proof needs from its store just now", verified.Stderr, StringComparison.Ordinal);
        Assert.Contains("ask for the proof again later", verified.Stderr, StringComparison.Ordinal);

        // Once the cause passes the same proofs are given, and verify.
        Volatile.Write(ref failing, false);
        InclusionProof proof = await relay.GetInclusionProofAsync(new InclusionProofRequest { LeafIndex = 0, TreeSize = head.TreeSize });
        Assert.True(MerkleTree.VerifyInclusion(MerkleTree.LeafHash(first.EnvelopeId.Span), 0, head.TreeSize, proof.Path, static hash => hash.Memory, head.RootHash.Span));
        ConsistencyProof extension = await relay.GetConsistencyProofAsync(new ConsistencyProofRequest { First = 1, Second = head.TreeSize });
        Assert.True(MerkleTree.VerifyConsistency(1, head.TreeSize, first.TreeHead.RootHash.Span, head.RootHash.Span, extension.Path, static hash => hash.Memory));
        node.AssertNoServerErrors();
    }

    /// <summary>Sends one message through <paramref name="node"/> (its receipt is returned: leaf 0, in a tree of 1), then
    /// adds 2,100 leaves past the 2,048 of a lower level's first block, saved by a checkpoint, and restarts the node: it
    /// streams leaves.bin and releases that block, so proofs about the first leaves read it back.</summary>
    private static async Task<Receipt> StartWithReleasedLeavesAsync(TestNode node)
    {
        string data = node.Options.DataDirectory;
        Receipt first;
        using (MegaNetClient client = node.Client())
        using (Identity alice = Identity.Create(), bob = Identity.Create())
        {
            first = await client.SendAsync(alice, bob.Card, Encoding.UTF8.GetBytes("first"), "text/plain");
        }

        await node.StopAsync();
        var random = new Random(5);
        byte[] recipient = new byte[32];
        random.NextBytes(recipient);
        await using (FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(new StoreOptions
        {
            DataDirectory = data,
            NodeSecretKey = NodeKey.LoadOrCreate(data).SecretKey,
            MemoryBudgetBytes = 8 << 20,
        }))
        {
            var puts = Enumerable.Range(0, 2_100).Select(_ =>
            {
                byte[] envelope = new byte[64];
                random.NextBytes(envelope);
                return new PutRequest(envelope, recipient, DateTimeOffset.UtcNow.AddDays(1));
            }).ToList();
            Assert.All(await store.PutManyAsync(puts), r => Assert.NotNull(r.Receipt));
            await store.CheckpointAsync();
        }

        await node.RestartAsync();
        return first;
    }
}
