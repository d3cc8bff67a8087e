using System.Security.Cryptography;
using System.Text;
using Google.Protobuf;
using Grpc.Core;
using MegaNet.Api;
using MegaNet.Api.V1;

using static MegaNet.Node.Tests.MeganetResults;

namespace MegaNet.Node.Tests;

/// <summary>
/// An acknowledgement of more than 1,000 messages goes in several calls; when a later one fails, the messages the
/// earlier ones deleted are gone from the node. The count of them was lost with the error: <c>fetch --ack</c> said only
/// the error (so the user could not tell that some mail was gone), and kept the parts of every file it had shown,
/// those acknowledged whole included, in the spool for a month.
/// </summary>
public sealed class AckChunkFailureTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("meganet-ackchunk-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public async Task A_later_call_that_fails_says_what_the_earlier_ones_deleted()
    {
        var relay = new FailingAcksRelay(fails: [2]);
        await using var fake = await FakeRelay<FailingAcksRelay>.StartAsync(relay);
        using var client = new MegaNetClient(fake.Address);
        using Identity bob = Identity.Create();
        ulong[] seqs = [.. Enumerable.Range(1, 1500).Select(i => (ulong)i)];

        AckIncompleteException e = await Assert.ThrowsAsync<AckIncompleteException>(() => client.AckAsync(bob, seqs));
        Assert.Equal(999, e.Acknowledged); // as the node said: one of the first thousand was gone already
        Assert.Equal(1000, e.Settled);
        Assert.Equal(1500, e.Requested);
        Assert.Equal(StatusCode.Unavailable, Assert.IsType<RpcException>(e.InnerException).StatusCode);
        Assert.Contains("999 of 1500", e.Message, StringComparison.Ordinal);

        // The first call failing confirmed nothing: its error as it is.
        var refusing = new FailingAcksRelay(fails: [1]);
        await using var other = await FakeRelay<FailingAcksRelay>.StartAsync(refusing);
        using var second = new MegaNetClient(other.Address);
        Assert.Equal(StatusCode.Unavailable, (await Assert.ThrowsAsync<RpcException>(() => second.AckAsync(bob, seqs))).StatusCode);
    }

    [Fact]
    public async Task Fetch_ack_says_how_many_were_acknowledged_and_forgets_only_files_acknowledged_whole()
    {
        await using TestNode node = await TestNode.StartAsync(TestNode.Unthrottled);
        using MegaNetClient client = node.Client();
        using Identity alice = Identity.Create(), bob = Identity.Create();
        string bobPath = Path.Combine(_dir, "bob.json");
        bob.Save(bobPath);

        // A file of four parts, 994 messages, another file of four: 1,002 to acknowledge, the second file's parts in
        // both calls (the 999th to the 1,002nd).
        byte[] first = RandomNumberGenerator.GetBytes((3 * FileParts.SliceLength("first.bin")) + 100);
        byte[] second = RandomNumberGenerator.GetBytes((3 * FileParts.SliceLength("second.bin")) + 100);
        Assert.Equal(4, (await client.SendFileInPartsAsync(alice, bob.Card, first, "first.bin")).Count);
        for (int i = 0; i < 994; i++)
        {
            await client.SendAsync(alice, bob.Card, Encoding.UTF8.GetBytes($"message {i}"), "text/plain");
        }

        Assert.Equal(4, (await client.SendFileInPartsAsync(alice, bob.Card, second, "second.bin")).Count);

        // Through a relay in front of the node that fails the second acknowledgement call.
        var relay = new FailingAcksRelay(fails: [2], forwardTo: client.Relay);
        await using var fake = await FakeRelay<FailingAcksRelay>.StartAsync(relay);
        string saved = Path.Combine(_dir, "saved");
        MeganetProcess.Result r = await MeganetProcess.RunAsync(_dir, null, false, "fetch", "-i", bobPath, "--node", fake.Address.ToString(), "--ack", "--save-files", saved, "--timeout", "60s")
            .WaitAsync(TimeSpan.FromMinutes(3));
        AssertExit(r, 2, "acknowledged 1000 of 1002 message(s) before the acknowledgement failed; the rest may still be on the node");
        Assert.Contains("meganet: ", r.Stderr, StringComparison.Ordinal); // and the error itself, as before
        Assert.Equal(first, await File.ReadAllBytesAsync(Path.Combine(saved, "first.bin")));
        Assert.Equal(second, await File.ReadAllBytesAsync(Path.Combine(saved, "second.bin")));

        // The first file went whole with the first call: its parts are gone from the spool. The second's last two
        // parts are still on the node: its parts stay, so the next fetch puts it together and shows it again.
        string spool = Path.Combine(_dir, "bob.parts");
        Assert.Single(Directory.GetDirectories(spool));
        Assert.Equal(2, (await client.FetchAsync(bob)).Messages.Count);
        MeganetProcess.Result again = await MeganetProcess.RunAsync(_dir, null, false, "fetch", "-i", bobPath, "--node", node.Address.ToString(),
            "--node-id", Convert.ToHexStringLower(client.NodeId!), "--ack", "--json", "--timeout", "60s")
            .WaitAsync(TimeSpan.FromMinutes(2));
        AssertExit(again, 0, "acknowledged 2 message(s)");
        Assert.Equal(second, Convert.FromBase64String(Assert.Single(JsonLines(again))["file_base64"]!.GetValue<string>()));
        Assert.Empty(Directory.GetDirectories(spool));
        node.AssertNoServerErrors();
    }

    /// <summary>A relay whose acknowledgement calls numbered in <c>fails</c> (from 1) fail as a node gone away would;
    /// the others are passed to the node behind it (<c>forwardTo</c>), or, without one, answered with one fewer deleted
    /// than asked. Challenges and fetches are passed on too.</summary>
    private sealed class FailingAcksRelay(int[] fails, Relay.RelayClient? forwardTo = null) : Relay.RelayBase
    {
        private static readonly byte[] NodeId = RandomNumberGenerator.GetBytes(32);
        private int _acks;

        public override async Task<ChallengeResponse> Challenge(ChallengeRequest request, ServerCallContext context) =>
            forwardTo is not null
                ? await forwardTo.ChallengeAsync(request, cancellationToken: context.CancellationToken)
                : new ChallengeResponse { Nonce = ByteString.CopyFrom(RandomNumberGenerator.GetBytes(32)), NodeId = ByteString.CopyFrom(NodeId), ExpiresUnixMs = DateTimeOffset.UtcNow.AddMinutes(2).ToUnixTimeMilliseconds() };

        public override async Task<FetchResponse> Fetch(FetchRequest request, ServerCallContext context) =>
            await (forwardTo ?? throw new RpcException(new Status(StatusCode.Unimplemented, "no node behind"))).FetchAsync(request, cancellationToken: context.CancellationToken);

        public override async Task<StatusResponse> Status(StatusRequest request, ServerCallContext context) =>
            await (forwardTo ?? throw new RpcException(new Status(StatusCode.Unimplemented, "no node behind"))).StatusAsync(request, cancellationToken: context.CancellationToken);

        public override async Task<AckResponse> Ack(AckRequest request, ServerCallContext context)
        {
            if (fails.Contains(Interlocked.Increment(ref _acks)))
            {
                throw new RpcException(new Status(StatusCode.Unavailable, "the node went away"));
            }

            return forwardTo is not null
                ? await forwardTo.AckAsync(request, cancellationToken: context.CancellationToken)
                : new AckResponse { Deleted = request.Seqs.Count - 1 };
        }
    }
}
