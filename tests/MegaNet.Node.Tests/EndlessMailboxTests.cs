using System.Security.Cryptography;
using Google.Protobuf;
using Grpc.Core;
using MegaNet.Api;
using MegaNet.Api.V1;

namespace MegaNet.Node.Tests;

/// <summary><c>meganet fetch</c> against a node that lies: one whose mailbox pages are empty but name a later cursor
/// each time had the command sign a fresh challenge for every page, without end (a signature the node could spend
/// elsewhere, at the node it is pinned to, each time).</summary>
public sealed class EndlessMailboxTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("meganet-endless-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public async Task Fetch_stops_at_an_empty_page_whatever_cursor_comes_with_it()
    {
        var relay = new EmptyPagesRelay();
        await using var fake = await FakeRelay<EmptyPagesRelay>.StartAsync(relay);
        string address = fake.Address.ToString();

        string bob = Path.Combine(_dir, "bob.json");
        using (Identity id = Identity.Create())
        {
            id.Save(bob);
        }

        MeganetProcess.Result r = await MeganetProcess.RunAsync(_dir, null, false, "fetch", "--identity", bob, "--node", address, "--timeout", "30s")
            .WaitAsync(TimeSpan.FromMinutes(2));
        Assert.True(r.ExitCode == 0, $"exit code {r.ExitCode}; stderr: {r.Stderr}");
        Assert.Equal(1, relay.Fetches);
        Assert.Equal(1, relay.Challenges);
    }

    /// <summary>Challenges for any address, then Fetch pages that hold nothing and always move the cursor on.</summary>
    private sealed class EmptyPagesRelay : Relay.RelayBase
    {
        private static readonly byte[] NodeId = RandomNumberGenerator.GetBytes(32);
        private int _fetches, _challenges;

        public int Fetches => Volatile.Read(ref _fetches);

        public int Challenges => Volatile.Read(ref _challenges);

        public override Task<ChallengeResponse> Challenge(ChallengeRequest request, ServerCallContext context)
        {
            Interlocked.Increment(ref _challenges);
            return Task.FromResult(new ChallengeResponse { Nonce = ByteString.CopyFrom(RandomNumberGenerator.GetBytes(32)), NodeId = ByteString.CopyFrom(NodeId), ExpiresUnixMs = DateTimeOffset.UtcNow.AddMinutes(2).ToUnixTimeMilliseconds() });
        }

        public override Task<FetchResponse> Fetch(FetchRequest request, ServerCallContext context)
        {
            // A real node ends a mailbox with an empty page; this one never would, by the cursor alone.
            return Interlocked.Increment(ref _fetches) > 50
                ? throw new RpcException(new Status(StatusCode.ResourceExhausted, "enough"))
                : Task.FromResult(new FetchResponse { NextCursor = request.AfterSeq + 100 });
        }
    }
}
