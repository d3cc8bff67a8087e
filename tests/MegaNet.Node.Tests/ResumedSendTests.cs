using System.Security.Cryptography;
using System.Text.Json.Nodes;
using Google.Protobuf;
using Grpc.AspNetCore.Server;
using Grpc.Core;
using Grpc.Core.Interceptors;
using MegaNet.Api;
using MegaNet.Api.V1;
using Microsoft.Extensions.DependencyInjection;
using Xunit.Abstractions;

using static MegaNet.Node.Tests.MeganetResults;
using Result = MegaNet.Node.Tests.MeganetProcess.Result;

namespace MegaNet.Node.Tests;

/// <summary>
/// <c>send --file</c> in parts run again after it stopped part way: only the parts the node has not acknowledged go
/// (each part sent again would be another envelope against the recipient's mailbox quota), an envelope left unanswered
/// goes again as itself, and the receipts printed are all of them.
/// </summary>
public sealed class ResumedSendTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("meganet-resume-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private Task<Result> Meganet(params string[] args) => MeganetProcess.RunAsync(_dir, null, false, args);

    private byte[] RandomFile(int length) => TestFiles.Random(output, length);

    /// <summary>Envelopes waiting in <paramref name="recipient"/>'s mailbox (a page holds a few parts: all pages).</summary>
    private static async Task<int> WaitingFor(MegaNetClient client, Identity recipient)
    {
        int waiting = 0;
        for (ulong after = 0; ;)
        {
            FetchResult page = await client.FetchAsync(recipient, after);
            if (page.Messages.Count + page.Unreadable.Count == 0)
            {
                return waiting;
            }

            waiting += page.Messages.Count + page.Unreadable.Count;
            after = page.NextCursor;
        }
    }

    [Fact]
    public async Task A_send_that_stopped_part_way_sends_only_the_parts_the_node_did_not_acknowledge_when_run_again()
    {
        // A mailbox that takes three envelopes: the fourth part is refused (RESOURCE_EXHAUSTED, retry in a minute), and
        // the send stops there. No proof of work near full, so every part costs the same.
        await using TestNode node = await TestNode.StartAsync(o =>
        {
            o.MailboxMaxCount = 3;
            o.MailboxPowFromPercent = 0;
        });
        using Identity alice = Identity.Create(), bob = Identity.Create();
        string alicePath = Path.Combine(_dir, "alice.json"), bobPath = Path.Combine(_dir, "bob.json");
        alice.Save(alicePath);
        bob.Save(bobPath);
        const string Name = "six.bin";
        byte[] file = RandomFile((5 * FileParts.SliceLength(Name)) + 1);
        string filePath = Path.Combine(_dir, Name);
        await File.WriteAllBytesAsync(filePath, file);

        Result stopped = await Meganet("send", "-i", alicePath, "--to", bob.Card.ToString(), "--file", filePath, "--node", node.Address.ToString(), "--json");
        output.WriteLine(stopped.Stderr);
        // Three, or fewer where the refusal cancelled a part whose receipt was on its way (which the record has as
        // unanswered, so it is not stored twice).
        AssertExit(stopped, 2, "of 6 parts were accepted");
        Assert.Contains("run the same send again", stopped.Stderr, StringComparison.Ordinal);
        Assert.Equal(string.Empty, stopped.Stdout);
        string record = Assert.Single(Records());
        if (!OperatingSystem.IsWindows())
        {
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(record));
        }

        JsonNode[] lines = [.. File.ReadAllLines(record).Select(l => JsonNode.Parse(l)!)];
        int[] accepted = [.. lines.Where(l => l["receipt"] is not null).Select(l => l["part"]!.GetValue<int>())];
        int[] inFlight = [.. lines.Where(l => l["unanswered"] is not null).Select(l => l["part"]!.GetValue<int>())];
        Assert.InRange(accepted.Distinct().Count(), 1, 3);

        // Through another node, the record is not this one's: every part goes, and the first node's record stays.
        await using (TestNode other = await TestNode.StartAsync())
        {
            Result elsewhere = await Meganet("send", "-i", alicePath, "--to", bob.Card.ToString(), "--file", filePath, "--node", other.Address.ToString(), "--json");
            AssertExit(elsewhere, 0, "sent 6 of 6 parts");
            Assert.DoesNotContain("earlier try", elsewhere.Stderr, StringComparison.Ordinal);
            using MegaNetClient otherClient = other.Client();
            Assert.Equal(6, await WaitingFor(otherClient, bob));
            Assert.Equal(record, Assert.Single(Records()));
        }

        // Room is made, and the node comes back at another address (the same node id: the record is found by it).
        node.Options.MailboxMaxCount = 100;
        await node.RestartAsync();
        string url = node.Address.ToString();
        using MegaNetClient client = node.Client();
        Assert.Equal(3, await WaitingFor(client, bob));

        // A part of the three missing was submitted when the send stopped, stored, and its answer lost: the record names
        // its envelope, and the run again submits that one (the node answers with its receipt), not a second copy.
        int unanswered = Enumerable.Range(0, 6).First(i => !accepted.Contains(i) && !inFlight.Contains(i));
        Envelope stored = EnvelopeFormat.Seal(alice, bob.Card, FileParts.Split(file, Name)[unanswered], FileParts.ContentType, Name, DateTimeOffset.UtcNow.AddDays(1));
        Receipt storedReceipt = await client.Relay.SubmitAsync(new SubmitRequest { Envelope = stored });
        // Then a line torn by a crash, last.
        await File.AppendAllTextAsync(record, new JsonObject { ["part"] = unanswered, ["unanswered"] = Convert.ToBase64String(stored.ToByteArray()) }.ToJsonString() + "\n" + "{\"part\":5,\"expires_un");

        Result resumed = await Meganet("send", "-i", alicePath, "--to", bob.Card.ToString(), "--file", filePath, "--node", url, "--json");
        output.WriteLine(resumed.Stderr);
        AssertExit(resumed, 0, $"{accepted.Distinct().Count()} of 6 parts were accepted by this node on an earlier try");
        // (With the parts the first try had in flight when it stopped, which it recorded as unanswered too.)
        Assert.Contains("part(s) had no answer then, and go again as the same envelopes", resumed.Stderr, StringComparison.Ordinal);
        Assert.Contains("sent 6 of 6 parts", resumed.Stderr, StringComparison.Ordinal);
        // Six envelopes in all: three from the first try, the one stored meanwhile, and two new (sending all again made
        // ten, and a new envelope for the unanswered part seven).
        Assert.Equal(6, await WaitingFor(client, bob));

        // Every part's receipt, in part order, as a send in one go prints them: verify-receipt checks each.
        JsonObject[] receipts = JsonLines(resumed);
        Assert.Equal(6, receipts.Length);
        Assert.Equal(Convert.ToHexStringLower(storedReceipt.EnvelopeId.Span), receipts[unanswered]["envelope_id"]!.GetValue<string>());
        Assert.Equal(storedReceipt.LogIndex, receipts[unanswered]["log_index"]!.GetValue<long>());
        Assert.All(receipts, r => Assert.False(r["duplicate"]!.GetValue<bool>()));
        Assert.Equal(6, receipts.Select(r => r["envelope_id"]!.GetValue<string>()).Distinct().Count());
        string receiptsPath = Path.Combine(_dir, "receipts.jsonl");
        await File.WriteAllTextAsync(receiptsPath, resumed.Stdout);
        Result verified = await Meganet("verify-receipt", "-i", alicePath, "--receipt", receiptsPath, "--node", url);
        AssertExit(verified, 0);
        Assert.Equal(6, verified.Stdout.Split('\n').Count(l => l.StartsWith("valid: envelope ", StringComparison.Ordinal)));

        // Accepted whole: the record is gone.
        Assert.Empty(Records());

        Result fetched = await Meganet("fetch", "-i", bobPath, "--node", url, "--json", "--ack");
        AssertExit(fetched, 0);
        JsonObject message = Assert.Single(JsonLines(fetched));
        Assert.Equal(6, message["parts"]!.GetValue<int>());
        Assert.Equal(file, Convert.FromBase64String(message["file_base64"]!.GetValue<string>()));
        node.AssertNoServerErrors();
    }

    /// <summary>The records in alice's <c>.sending</c> directory (not the lock a send holds beside its record).</summary>
    private string[] Records() => [.. Directory.GetFiles(Path.Combine(_dir, "alice.sending")).Where(f => !f.EndsWith(".lock", StringComparison.Ordinal))];

    /// <summary>A node whose mailboxes take three envelopes, and a six-part send by alice to bob it stopped (its record
    /// has at least one part accepted); then the node restarted with room.</summary>
    private async Task<(TestNode Node, string Alice, string FilePath, string Record)> StopPartWay(Identity bob, Action<IServiceCollection>? services = null)
    {
        TestNode node = await TestNode.StartAsync(o =>
        {
            o.MailboxMaxCount = 3;
            o.MailboxPowFromPercent = 0;
        }, services: services);
        try
        {
            using Identity alice = Identity.Create();
            string alicePath = Path.Combine(_dir, "alice.json");
            alice.Save(alicePath);
            const string Name = "six.bin";
            string filePath = Path.Combine(_dir, Name);
            await File.WriteAllBytesAsync(filePath, RandomFile((5 * FileParts.SliceLength(Name)) + 1));
            Result stopped = await Meganet("send", "-i", alicePath, "--to", bob.Card.ToString(), "--file", filePath, "--node", node.Address.ToString(), "--json");
            AssertExit(stopped, 2, "of 6 parts were accepted");
            string record = Assert.Single(Records());
            Assert.Contains(File.ReadAllLines(record), l => JsonNode.Parse(l)!["receipt"] is not null);
            node.Options.MailboxMaxCount = 100;
            await node.RestartAsync();
            return (node, alicePath, filePath, record);
        }
        catch
        {
            await node.DisposeAsync();
            throw;
        }
    }

    [Fact]
    public async Task A_kept_receipt_that_does_not_check_against_the_node_is_sent_again()
    {
        using Identity bob = Identity.Create();
        (TestNode started, string alice, string filePath, string record) = await StopPartWay(bob);
        await using TestNode node = started;
        using MegaNetClient client = node.Client();
        int before = await WaitingFor(client, bob);

        // One kept receipt names an envelope the node's log does not hold at that index, as after the node was restored
        // under its key from a backup older than the part and its log grew past the index since: its inclusion proof
        // fails. Before, the receipt was taken on trust, and the part was never sent.
        string[] lines = await File.ReadAllLinesAsync(record);
        int spoilt = Array.FindIndex(lines, l => l.Contains("\"receipt\"", StringComparison.Ordinal));
        var line = JsonNode.Parse(lines[spoilt])!.AsObject();
        line["receipt"]!["envelope_id"] = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(32));
        lines[spoilt] = line.ToJsonString();
        await File.WriteAllLinesAsync(record, lines);

        Result resumed = await Meganet("send", "-i", alice, "--to", bob.Card.ToString(), "--file", filePath, "--node", node.Address.ToString(), "--json");
        output.WriteLine(resumed.Stderr);
        AssertExit(resumed, 0, "its receipt does not check against the node now");
        // The parts the mailbox lacked, and the spoilt one again: seven (six when the spoilt receipt was trusted).
        Assert.Equal(3, before);
        Assert.Equal(7, await WaitingFor(client, bob));
        Assert.Empty(Records());
    }

    [Fact]
    public async Task A_nodes_refusal_of_a_kept_receipts_proof_is_shown_with_its_control_characters_escaped()
    {
        // The node chooses the text of its refusal: printed raw, a carriage return and an erase-line rewrote the
        // warning on a terminal.
        using Identity bob = Identity.Create();
        (TestNode started, string alice, string filePath, _) = await StopPartWay(bob, s => s.Configure<GrpcServiceOptions>(o => o.Interceptors.Add<RefusedInclusionProofs>()));
        await using TestNode node = started;

        Result resumed = await Meganet("send", "-i", alice, "--to", bob.Card.ToString(), "--file", filePath, "--node", node.Address.ToString(), "--json");
        AssertExit(resumed, 0, "its receipt does not check against the node now");
        Assert.DoesNotContain('\u001b', resumed.Stderr);
        Assert.DoesNotContain('\r', resumed.Stderr);
        Assert.Contains("(NotFound: x)\\u000d\\u001b[2Kall parts sent", resumed.Stderr, StringComparison.Ordinal);
    }

    /// <summary>Refuses every inclusion proof, with terminal escapes in its words.</summary>
    private sealed class RefusedInclusionProofs : Interceptor
    {
        public override Task<TResponse> UnaryServerHandler<TRequest, TResponse>(TRequest request, ServerCallContext context, UnaryServerMethod<TRequest, TResponse> continuation) =>
            request is InclusionProofRequest
                ? throw new RpcException(new Status(StatusCode.NotFound, "x)\r\u001b[2Kall parts sent\u001b[8m"))
                : continuation(request, context);
    }

    [Fact]
    public async Task A_record_is_the_sending_identitys_own_and_one_send_of_a_file_runs_at_a_time()
    {
        using Identity bob = Identity.Create();
        (TestNode started, string alice, string filePath, string record) = await StopPartWay(bob);
        await using TestNode node = started;
        using MegaNetClient client = node.Client();
        int before = await WaitingFor(client, bob);
        string[] send = ["send", "-i", alice, "--to", bob.Card.ToString(), "--file", filePath, "--node", node.Address.ToString(), "--json"];

        // While another send of the file holds the record, a second one stops before sending anything: both would send
        // the missing parts, each as envelopes of its own.
        using (new FileStream(record + ".lock", FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None))
        {
            AssertExit(await Meganet(send), 1, "another send of this file to this recipient through this node is running");
        }

        Assert.Equal(before, await WaitingFor(client, bob));

        // The identity replaced under the same file name: its parts are another set for bob (his spool keeps sets by
        // sender), so the old identity's receipts must not count. Before, they did, and bob got half a file from each.
        AssertExit(await Meganet("id", "new", "--identity", alice, "--force"), 0);
        Result fresh = await Meganet(send);
        output.WriteLine(fresh.Stderr);
        AssertExit(fresh, 0, "sent 6 of 6 parts");
        Assert.DoesNotContain("earlier try", fresh.Stderr, StringComparison.Ordinal);
        Assert.Equal(before + 6, await WaitingFor(client, bob));
        Assert.Equal(record, Assert.Single(Records())); // the old identity's record is left alone
    }

    [Fact]
    public async Task An_earlier_envelope_the_node_refuses_is_sealed_anew()
    {
        await using TestNode node = await TestNode.StartAsync();
        using MegaNetClient client = node.Client();
        using Identity alice = Identity.Create(), bob = Identity.Create();
        byte[] file = RandomFile((2 * FileParts.SliceLength("f.bin")) + 5);
        IReadOnlyList<byte[]> parts = FileParts.Split(file, "f.bin");
        // Part 1's earlier envelope was stored; part 2's has expired since (the node refuses it, whether it held it or not).
        Envelope stored = EnvelopeFormat.Seal(alice, bob.Card, parts[1], FileParts.ContentType, "f.bin", DateTimeOffset.UtcNow.AddDays(1));
        Receipt first = await client.Relay.SubmitAsync(new SubmitRequest { Envelope = stored });
        Envelope expired = EnvelopeFormat.Seal(alice, bob.Card, parts[2], FileParts.ContentType, "f.bin", DateTimeOffset.UtcNow.AddMinutes(-1));
        var journal = new Journal(new() { [1] = stored, [2] = expired });

        IReadOnlyList<Receipt> receipts = await client.SendFileInPartsAsync(alice, bob.Card, file, "f.bin", journal);

        Assert.Equal(first.EnvelopeId, receipts[1].EnvelopeId);
        Assert.Equal(first.LogIndex, receipts[1].LogIndex);
        Assert.False(receipts[1].Duplicate); // the node had it from this sender's own earlier submit
        Assert.NotEqual(EnvelopeFormat.EnvelopeId(expired), receipts[2].EnvelopeId.ToByteArray());
        Assert.Equal(new[] { 0, 1, 2 }, journal.Recorded.Keys.Order());
        Assert.Equal(3, await WaitingFor(client, bob));
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task An_earlier_envelope_whose_stamp_the_node_no_longer_takes_gets_its_receipt_if_stored_and_is_sealed_anew_if_not()
    {
        // Work demanded of every envelope; the earlier try stamped both parts for the seed of its time, and the node's
        // seed has turned twice since (20 minutes or more, or a restart), so neither stamp counts there now. 16 bits:
        // a stamp for one seed holds under another only by chance 2^-17.
        await using TestNode node = await TestNode.StartAsync(o => o.PowMinBits = 16);
        using MegaNetClient client = node.Client();
        using Identity alice = Identity.Create(), bob = Identity.Create();
        byte[] file = RandomFile((2 * FileParts.SliceLength("f.bin")) + 5);
        IReadOnlyList<byte[]> parts = FileParts.Split(file, "f.bin");
        byte[] then = node.PowSeed;
        Envelope stored = EnvelopeFormat.Seal(alice, bob.Card, parts[1], FileParts.ContentType, "f.bin", DateTimeOffset.UtcNow.AddDays(1), 16, powSeed: then);
        Receipt first = await client.Relay.SubmitAsync(new SubmitRequest { Envelope = stored });
        Envelope unsent = EnvelopeFormat.Seal(alice, bob.Card, parts[2], FileParts.ContentType, "f.bin", DateTimeOffset.UtcNow.AddDays(1), 16, powSeed: then);
        var seeds = node.Services.GetRequiredService<Admission.AdmissionPipeline>().PowSeeds;
        seeds.TurnForTests();
        seeds.TurnForTests();
        var journal = new Journal(new() { [1] = stored, [2] = unsent });

        IReadOnlyList<Receipt> receipts = await client.SendFileInPartsAsync(alice, bob.Card, file, "f.bin", journal);

        // The stored one is answered with its receipt before its stamp is looked at; the other is refused for its stamp
        // and sealed anew with one for the node's seed now.
        Assert.Equal(first.EnvelopeId, receipts[1].EnvelopeId);
        Assert.Equal(first.LogIndex, receipts[1].LogIndex);
        Assert.NotEqual(EnvelopeFormat.EnvelopeId(unsent), receipts[2].EnvelopeId.ToByteArray());
        Assert.Equal(new[] { 0, 1, 2 }, journal.Recorded.Keys.Order());
        Assert.Equal(3, await WaitingFor(client, bob));
        node.AssertNoServerErrors();
    }

    /// <summary>A journal in memory: the earlier try's unanswered envelopes, and what this try recorded.</summary>
    private sealed class Journal(Dictionary<int, Envelope> unanswered) : IFilePartsJournal
    {
        public System.Collections.Concurrent.ConcurrentDictionary<int, Receipt> Recorded { get; } = new();

        public Receipt? AcceptedEarlier(int index) => null;

        public Envelope? UnansweredEarlier(int index) => unanswered.GetValueOrDefault(index);

        public void Accepted(int index, Envelope envelope, Receipt receipt) => Assert.True(Recorded.TryAdd(index, receipt));

        public void Unanswered(int index, Envelope envelope) => Assert.Fail($"part {index} went unanswered");
    }
}
