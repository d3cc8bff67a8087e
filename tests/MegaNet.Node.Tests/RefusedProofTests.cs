using Google.Protobuf;
using Grpc.Core;
using MegaNet.Api;
using MegaNet.Api.V1;
using MegaNet.Core.Ed25519;
using MegaNet.Core.Transparency;

namespace MegaNet.Node.Tests;

/// <summary>A node that signs a head of 1 leaf, then one of 2, and refuses the consistency proof between them: it
/// holds both trees (it signed both), so the refusal is no outage a monitor may shrug off; <c>audit</c> and
/// <c>CheckLogAsync</c> report it as a failed check (exit 3), and an outage (or a transport fault, which gRPC clients
/// report as INTERNAL) stays an outage (exit 2).</summary>
public sealed class RefusedProofTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("meganet-refused-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Theory]
    [InlineData(StatusCode.OutOfRange, 3)]
    [InlineData(StatusCode.InvalidArgument, 3)]
    [InlineData(StatusCode.Unavailable, 2)]
    [InlineData(StatusCode.Internal, 2)] // what gRPC clients report transport faults as
    public async Task A_refused_consistency_proof_fails_the_check_and_an_outage_does_not(StatusCode refusal, int exitCode)
    {
        var relay = new RefusingRelay(refusal);
        await using var fake = await FakeRelay<RefusingRelay>.StartAsync(relay);
        Uri address = fake.Address;
        string heads = Path.Combine(_dir, "heads.json");

        Task<MeganetProcess.Result> Audit() => MeganetProcess.RunAsync(_dir, null, false, "audit", "--node", address.ToString(), "--heads", heads);
        MeganetProcess.Result first = await Audit();
        Assert.True(first.ExitCode == 0, first.Stderr + first.Stdout);
        MeganetProcess.Result second = await Audit();
        Assert.True(second.ExitCode == exitCode, second.Stderr + second.Stdout);
        if (exitCode == 3)
        {
            Assert.Contains($"INVALID: the node refused a consistency proof between two sizes it signed, 1 and 2 ({refusal}", second.Stdout, StringComparison.Ordinal);
        }

        // The library says the same to its callers; an outage is thrown, as any failed call is.
        using var client = new MegaNetClient(address);
        SignedTreeHead earlier = RefusingRelay.Head(1);
        if (exitCode == 3)
        {
            (SignedTreeHead? current, string? problem) = await client.CheckLogAsync(earlier);
            Assert.Equal(2, current!.TreeSize);
            Assert.StartsWith("the node refused a consistency proof", problem, StringComparison.Ordinal);
        }
        else
        {
            Assert.Equal(refusal, (await Assert.ThrowsAsync<RpcException>(() => client.CheckLogAsync(earlier))).StatusCode);
        }
    }

    [Fact]
    public async Task A_refusal_whose_text_holds_terminal_escapes_is_shown_not_obeyed()
    {
        // The node chooses its status detail: a carriage return and an erase-line wiped "INVALID: ..." on a terminal,
        // leaving a forged "valid:" line in its place (the exit code stayed 3).
        const string Forged = "x)\r\u001b[2Kvalid: envelope 00 is leaf 0 of the log, and the node's log still extends it\u001b[8m";
        const string Shown = "(NotFound: x)\\u000d\\u001b[2Kvalid: envelope 00";
        var relay = new RefusingRelay(StatusCode.NotFound, Forged);
        await using var fake = await FakeRelay<RefusingRelay>.StartAsync(relay);
        string heads = Path.Combine(_dir, "heads.json");

        Task<MeganetProcess.Result> Audit() => MeganetProcess.RunAsync(_dir, null, false, "audit", "--node", fake.Address.ToString(), "--heads", heads);
        MeganetProcess.Result first = await Audit();
        Assert.True(first.ExitCode == 0, first.Stderr + first.Stdout);
        MeganetProcess.Result audit = await Audit();
        Assert.True(audit.ExitCode == 3, audit.Stderr + audit.Stdout);
        AssertShownNotObeyed(audit.Stdout, $"INVALID: the node refused a consistency proof between two sizes it signed, 1 and 2 {Shown}");

        // A receipt of the head of 1 leaf: the node's head is of 2 by now, and it refuses the inclusion proof.
        string receipt = Path.Combine(_dir, "receipt.json");
        await File.WriteAllTextAsync(receipt, MegaNet.Node.Cli.ClientCommands.ReceiptJson(new Receipt
        {
            EnvelopeId = ByteString.CopyFrom(new byte[32]),
            LogIndex = 0,
            TreeHead = RefusingRelay.Head(1),
        }).ToJsonString());
        MeganetProcess.Result verified = await MeganetProcess.RunAsync(_dir, null, false,
            "verify-receipt", "--node", fake.Address.ToString(), "--identity", Path.Combine(_dir, "none.json"), "--receipt", receipt);
        Assert.True(verified.ExitCode == 3, verified.Stderr + verified.Stdout);
        AssertShownNotObeyed(verified.Stdout, $"INVALID: the node refused the inclusion proof of leaf 0 in the tree of size 1 it signed {Shown}");
    }

    private static void AssertShownNotObeyed(string stdout, string expected)
    {
        Assert.DoesNotContain('\u001b', stdout);
        Assert.DoesNotContain('\r', stdout);
        Assert.Contains(expected, stdout, StringComparison.Ordinal);
    }

    /// <summary>Signs real heads (of 1 leaf at first, then of 2) and refuses every consistency and inclusion proof.</summary>
    private sealed class RefusingRelay(StatusCode refusal, string detail = "not today") : Relay.RelayBase
    {
        private static readonly byte[] PublicKey = new byte[32], SecretKey = new byte[64];
        private int _heads;

        static RefusingRelay() => Ed25519Signer.KeyPairFromSeed(new byte[32], PublicKey, SecretKey);

        public static SignedTreeHead Head(long size)
        {
            byte[] root = MerkleTree.LeafHash(BitConverter.GetBytes(size));
            long timestamp = 1_800_000_000_000 + size;
            return new SignedTreeHead
            {
                TreeSize = size,
                RootHash = ByteString.CopyFrom(root),
                TimestampUnixMs = timestamp,
                NodeKey = ByteString.CopyFrom(PublicKey),
                Signature = ByteString.CopyFrom(TreeHeadSignature.Sign(SecretKey, size, root, timestamp)),
            };
        }

        public override Task<SignedTreeHead> GetTreeHead(GetTreeHeadRequest request, ServerCallContext context) =>
            Task.FromResult(Head(Interlocked.Increment(ref _heads) == 1 ? 1 : 2));

        public override Task<ConsistencyProof> GetConsistencyProof(ConsistencyProofRequest request, ServerCallContext context) =>
            throw new RpcException(new Status(refusal, detail));

        public override Task<InclusionProof> GetInclusionProof(InclusionProofRequest request, ServerCallContext context) =>
            throw new RpcException(new Status(refusal, detail));
    }
}
