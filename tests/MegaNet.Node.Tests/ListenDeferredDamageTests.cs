using System.Security.Cryptography;
using Google.Protobuf;
using Grpc.Core;
using MegaNet.Api;
using MegaNet.Api.V1;
using MegaNet.Node.Cli;

namespace MegaNet.Node.Tests;

/// <summary>
/// <c>listen</c>'s fetch of parts it left on the node for want of room (<c>ClientCommands.RetryDeferredAsync</c>)
/// against a node whose store no longer reads one of them back (<c>DATA_LOSS</c> + <c>damaged-seq</c>) or cannot read
/// it just then (<c>UNAVAILABLE</c>): as the subscription does, the damaged one is named once, passed over and never
/// acknowledged, and the parts after it still come; a passing failure is tried again later.
/// </summary>
public sealed class ListenDeferredDamageTests : IDisposable
{
    private const string Name = "late.bin";

    private readonly string _dir = Directory.CreateTempSubdirectory("meganet-deferred-damage-").FullName;
    private readonly ListenDeferredTests.SteppedClock _clock = new();

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string IdentityPath => Path.Combine(_dir, "bob.json");

    private static IReadOnlyList<byte[]> NewFile(int count) => FileParts.Split(RandomNumberGenerator.GetBytes(count * FileParts.SliceLength(Name)), Name);

    /// <summary>An inbox that took alice's part at seq 1 of a file begun and deferred the first two parts of another
    /// (seq 2 and 3: the spool takes one file of a sender at once), then had room made (the begun file came whole):
    /// the deferred parts are due to be fetched again. Returns the deferred parts' contents too.</summary>
    private (Inbox Inbox, IReadOnlyList<byte[]> Late) InboxWithDeferredParts(Identity alice)
    {
        ReceivedParts spool = ReceivedParts.Beside(IdentityPath, maxOpenFilesPerSender: 1);
        var inbox = new Inbox(json: true, new ContactsFollower(IdentityPath), spool, saveDirectory: null, Inbox.PartsRelease.WhenWritten, _clock);
        IReadOnlyList<byte[]> begun = NewFile(2), late = NewFile(3);
        Assert.True(inbox.Deliver(TestParts.Part(alice, begun[0], Name, seq: 1, RandomNumberGenerator.GetBytes(32)), null));
        Assert.False(inbox.Deliver(TestParts.Part(alice, late[0], Name, seq: 2, RandomNumberGenerator.GetBytes(32)), null));
        Assert.False(inbox.Deliver(TestParts.Part(alice, late[1], Name, seq: 3, RandomNumberGenerator.GetBytes(32)), null));
        Assert.IsType<ReceivedParts.Whole>(spool.Add(TestParts.Part(alice, begun[1], Name, seq: 1, RandomNumberGenerator.GetBytes(32))));
        return (inbox, late);
    }

    [Fact]
    public async Task A_deferred_part_the_store_no_longer_gives_is_named_once_passed_over_and_the_parts_after_it_come()
    {
        // Before, the DATA_LOSS was taken for a failed fetch: tried again 5 s, 10 s … 2 min apart for as long as the
        // store stayed damaged, a line each time, and the deferred parts after the damaged one never came.
        using Identity alice = Identity.Create(), bob = Identity.Create();
        (Inbox inbox, IReadOnlyList<byte[]> late) = InboxWithDeferredParts(alice);
        var relay = new DeferredRelay(damagedSeq: 2)
        {
            Mail = { [3] = EnvelopeFormat.Seal(alice, bob.Card, late[1], FileParts.ContentType, Name, DateTimeOffset.UtcNow.AddDays(1)) },
        };
        await using var fake = await FakeRelay<DeferredRelay>.StartAsync(relay);
        using var client = new MegaNetClient(fake.Address);
        var errors = new StringWriter();

        await ClientCommands.RetryDeferredAsync(client, bob, SeenMessages.InMemory(), inbox, acknowledger: null, errors, CancellationToken.None);

        string[] lines = errors.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        string line = Assert.Single(lines);
        Assert.StartsWith("meganet: the message at seq 2 could not be delivered: the node's store is damaged (the node said DataLoss: damaged seq 2)", line, StringComparison.Ordinal);
        // Fetched from before seq 2 (the damage), then from after it (seq 3, kept now), and never again.
        Assert.Equal([1UL, 2UL], relay.FetchedAfter);
        _clock.Advance(Inbox.MaxDeferredBackoff);
        Assert.Empty(inbox.DeferredToFetch());
        Assert.Equal(0, relay.Acks);
    }

    [Fact]
    public async Task A_deferred_part_the_node_cannot_read_just_now_is_fetched_again_after_a_wait()
    {
        // UNAVAILABLE: the store is not damaged; as the subscription does with it, listen goes on and tries again.
        using Identity alice = Identity.Create(), bob = Identity.Create();
        (Inbox inbox, _) = InboxWithDeferredParts(alice);
        var relay = new DeferredRelay(damagedSeq: null);
        await using var fake = await FakeRelay<DeferredRelay>.StartAsync(relay);
        using var client = new MegaNetClient(fake.Address);
        var errors = new StringWriter();

        await ClientCommands.RetryDeferredAsync(client, bob, SeenMessages.InMemory(), inbox, acknowledger: null, errors, CancellationToken.None);

        Assert.StartsWith("meganet: part(s) left on the node for want of room could not be fetched again (the node said Unavailable: could not read just now); tried again in 5 s",
            errors.ToString(), StringComparison.Ordinal);
        Assert.Equal([1UL], relay.FetchedAfter);
        Assert.Empty(inbox.DeferredToFetch());
        _clock.Advance(Inbox.FirstDeferredBackoff);
        Assert.Equal([[2UL, 3UL]], inbox.DeferredToFetch().Select(r => r.Seqs));
    }

    /// <summary>A node whose mailbox entry <c>damagedSeq</c> no longer reads back (each fetch that reaches it answers
    /// DATA_LOSS naming it), or, with none, whose store cannot be read just now (UNAVAILABLE); the entries of
    /// <see cref="Mail"/> come after it.</summary>
    private sealed class DeferredRelay(ulong? damagedSeq) : Relay.RelayBase
    {
        private static readonly byte[] NodeId = RandomNumberGenerator.GetBytes(32);

        public SortedDictionary<ulong, Envelope> Mail { get; } = [];

        public List<ulong> FetchedAfter { get; } = [];

        public int Acks { get; private set; }

        public override Task<ChallengeResponse> Challenge(ChallengeRequest request, ServerCallContext context) =>
            Task.FromResult(new ChallengeResponse
            {
                Nonce = ByteString.CopyFrom(RandomNumberGenerator.GetBytes(32)),
                NodeId = ByteString.CopyFrom(NodeId),
                ExpiresUnixMs = DateTimeOffset.UtcNow.AddMinutes(2).ToUnixTimeMilliseconds(),
            });

        public override Task<FetchResponse> Fetch(FetchRequest request, ServerCallContext context)
        {
            lock (FetchedAfter)
            {
                FetchedAfter.Add(request.AfterSeq);
            }

            if (damagedSeq is not { } damaged)
            {
                throw new RpcException(new Status(StatusCode.Unavailable, "could not read just now"));
            }

            if (request.AfterSeq < damaged)
            {
                throw new RpcException(new Status(StatusCode.DataLoss, $"damaged seq {damaged}"), new Metadata { { MegaNetClient.DamagedSeqTrailer, damaged.ToString(System.Globalization.CultureInfo.InvariantCulture) } });
            }

            var page = new FetchResponse { NextCursor = request.AfterSeq };
            foreach ((ulong seq, Envelope envelope) in Mail.Where(m => m.Key > request.AfterSeq).Take(request.Limit))
            {
                page.Items.Add(new MailItem { Seq = seq, EnvelopeId = ByteString.CopyFrom(EnvelopeFormat.EnvelopeId(envelope)), Envelope = envelope, LogIndex = (long)seq - 1 });
                page.NextCursor = seq;
            }

            return Task.FromResult(page);
        }

        public override Task<AckResponse> Ack(AckRequest request, ServerCallContext context)
        {
            Acks++;
            return Task.FromResult(new AckResponse { Deleted = request.Seqs.Count });
        }
    }
}
