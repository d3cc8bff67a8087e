using System.Text;
using System.Text.Json.Nodes;
using MegaNet.Api;
using MegaNet.Api.V1;
using MegaNet.Core.Transparency;
using MegaNet.Node.Cli;
using static MegaNet.Node.Tests.MeganetProcess;

namespace MegaNet.Node.Tests;

/// <summary><c>meganet audit</c> against real nodes: a log that grows passes and is remembered; a node that rewrote its
/// log under the same key (an older backup of its store restored) is caught, and the remembered head stays as
/// evidence, as is one node key showing another log at another address; another key at the address, or a damaged
/// heads file, is an error that says what to do.</summary>
public sealed class AuditCommandTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("meganet-audit-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string Heads => Path.Combine(_dir, "heads.json");

    private Task<Result> Audit(Uri node, params string[] args) => RunAsync(_dir, null, false, ["audit", "--node", node.ToString(), "--heads", Heads, .. args]);

    private static string Key(Uri node) => node.GetLeftPart(UriPartial.Authority);

    [Fact]
    public async Task A_growing_log_passes_and_a_rewritten_one_is_caught_with_the_evidence_kept()
    {
        string firstData = Path.Combine(_dir, "first"), secondData = Path.Combine(_dir, "second"), thirdData = Path.Combine(_dir, "third");
        Uri address;
        await using (TestNode node = await TestNode.StartAsync(dataDirectory: firstData))
        {
            // The key and the empty store, for the nodes below, as a backup taken before any envelope (a test node's
            // data directory goes with it).
            await node.BackUpAsync(secondData);
            TestNode.CopyDirectory(secondData, thirdData);
            address = node.Address;

            Result first = await Audit(address);
            Assert.True(first.ExitCode == 0, first.Stderr + first.Stdout);
            Assert.Contains("first audit of", first.Stdout, StringComparison.Ordinal);
            Assert.Equal(0, (long)Remembered(address)["tree_size"]!);

            using MegaNetClient client = node.Client();
            using Identity alice = Identity.Create(), bob = Identity.Create();
            Receipt firstReceipt = await client.SendAsync(alice, bob.Card, Encoding.UTF8.GetBytes("one"), "text/plain");
            await client.SendAsync(alice, bob.Card, Encoding.UTF8.GetBytes("two"), "text/plain");
            Result grown = await Audit(address);
            Assert.True(grown.ExitCode == 0, grown.Stderr + grown.Stdout);
            Assert.Contains("grew from 0 entries", grown.Stdout, StringComparison.Ordinal);
            Assert.Contains("to 2 entries", grown.Stdout, StringComparison.Ordinal);
            Assert.Equal(2, (long)Remembered(address)["tree_size"]!);
            Result again = await Audit(address);
            Assert.Contains("is unchanged at 2 entries (the same head, signed ", again.Stdout, StringComparison.Ordinal);

            // A head somebody else was given (here a receipt's) is checked, and nothing is remembered from it.
            string receiptPath = Path.Combine(_dir, "receipt.json");
            await File.WriteAllTextAsync(receiptPath, ClientCommands.ReceiptJson(firstReceipt).ToJsonString());
            string before = await File.ReadAllTextAsync(Heads);
            Result given = await Audit(address, "--head", receiptPath);
            Assert.True(given.ExitCode == 0, given.Stderr + given.Stdout);
            Assert.Contains("grew from 1 entry", given.Stdout, StringComparison.Ordinal);
            Assert.Equal(before, await File.ReadAllTextAsync(Heads));
        }

        // The same node key over a new log of three other envelopes (its address moves: the heads file follows it).
        await using (TestNode node = await TestNode.StartAsync(dataDirectory: secondData))
        {
            MoveEntry(address, address = node.Address);
            using MegaNetClient client = node.Client();
            using Identity carol = Identity.Create(), dave = Identity.Create();
            foreach (string text in new[] { "x", "y", "z" })
            {
                await client.SendAsync(carol, dave.Card, Encoding.UTF8.GetBytes(text), "text/plain");
            }

            string before = await File.ReadAllTextAsync(Heads);
            Result forked = await Audit(address);
            Assert.Equal(3, forked.ExitCode);
            Assert.Contains("INVALID: the node's current log (size 3) does not extend the log of the earlier head (size 2)", forked.Stdout, StringComparison.Ordinal);
            Assert.Contains("The remembered head stays in", forked.Stdout, StringComparison.Ordinal);
            Assert.Equal(before, await File.ReadAllTextAsync(Heads));

            // The JSON report carries both signed heads, the remembered one and the node's new one, under one key.
            Result report = await Audit(address, "--json");
            Assert.Equal(3, report.ExitCode);
            JsonNode json = JsonNode.Parse(report.Stdout)!;
            Assert.False((bool)json["consistent"]!);
            Assert.Equal(Remembered(address)["root_hash"]!.ToString(), (string)json["earlier"]!["root_hash"]!);
            Assert.Equal((2L, 3L), ((long)json["earlier"]!["tree_size"]!, (long)json["current"]!["tree_size"]!));
            Assert.Equal((string)json["earlier"]!["node_key"]!, (string)json["current"]!["node_key"]!);
            foreach (string which in new[] { "earlier", "current" })
            {
                JsonNode head = json[which]!;
                Assert.True(TreeHeadSignature.Verify(Convert.FromHexString((string)head["node_key"]!), (long)head["tree_size"]!,
                    Convert.FromHexString((string)head["root_hash"]!), (long)head["timestamp_unix_ms"]!, Convert.FromHexString((string)head["signature"]!)), which);
            }

            // The receipt's head too: the node no longer holds the envelope it signed for. And a report's current head
            // (someone else's audit, handed over) agrees with the node that signed it.
            Result receipt = await Audit(address, "--head", Path.Combine(_dir, "receipt.json"));
            Assert.Equal(3, receipt.ExitCode);
            Assert.Contains("does not extend the log of the earlier head (size 1)", receipt.Stdout, StringComparison.Ordinal);
            string reportPath = Path.Combine(_dir, "report.json");
            await File.WriteAllTextAsync(reportPath, report.Stdout);
            Result handed = await Audit(address, "--head", reportPath);
            Assert.True(handed.ExitCode == 0, handed.Stderr + handed.Stdout);
            Assert.Contains("is unchanged at 3 entries", handed.Stdout, StringComparison.Ordinal);
        }

        // A log that shrank, under the same key, is refused before any proof is asked for.
        await using (TestNode node = await TestNode.StartAsync(dataDirectory: thirdData))
        {
            MoveEntry(address, address = node.Address);
            Result shrunk = await Audit(address);
            Assert.Equal(3, shrunk.ExitCode);
            Assert.Contains("the node's log has 0 entries now, fewer than the 2 it signed in the earlier head", shrunk.Stdout, StringComparison.Ordinal);
        }

        // Every rewrite of the heads file went through a temporary file renamed over it, and none is left behind.
        Assert.Empty(Directory.GetFiles(_dir, "heads.json.*.tmp"));
    }

    [Fact]
    public async Task One_node_key_showing_another_log_at_another_address_is_caught()
    {
        // Heads were remembered by address alone: one node key serving log A at one address and a fork of it at
        // another (two host names or ports) passed both audits, each a first audit of its address.
        (TestNode started, TestNode startedFork) = await StartNodeAndForkAsync();
        await using TestNode node = started;
        await using TestNode fork = startedFork;

        Result first = await Audit(node.Address);
        Assert.True(first.ExitCode == 0, first.Stderr + first.Stdout);

        string before = await File.ReadAllTextAsync(Heads);
        Result forked = await Audit(fork.Address);
        Assert.Equal(3, forked.ExitCode);
        Assert.Contains($"INVALID: the node at {Key(fork.Address)} and the node at {Key(node.Address)} sign with one key", forked.Stdout, StringComparison.Ordinal);
        Assert.Contains("the node's current log (size 3) does not extend the log of the earlier head (size 2)", forked.Stdout, StringComparison.Ordinal);
        Assert.Contains($"head remembered for {Key(node.Address)}, signed by the node:", forked.Stdout, StringComparison.Ordinal);
        Assert.Equal(before, await File.ReadAllTextAsync(Heads));

        // The JSON report names the address the evidence was remembered for.
        Result report = await Audit(fork.Address, "--json");
        Assert.Equal(3, report.ExitCode);
        JsonNode json = JsonNode.Parse(report.Stdout)!;
        Assert.Equal(Key(node.Address), (string)json["earlier_node"]!);
        Assert.Equal((2L, 3L), ((long)json["earlier"]!["tree_size"]!, (long)json["current"]!["tree_size"]!));

        // The same node under another name: the same log, consistent with the head remembered for the first name.
        Uri alias = new UriBuilder(node.Address) { Host = "localhost" }.Uri;
        Result aliased = await Audit(alias);
        Assert.True(aliased.ExitCode == 0, aliased.Stderr + aliased.Stdout);
        Assert.Contains($"and it extends the heads this node key signed at {Key(node.Address)}", aliased.Stdout, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Another_node_id_or_a_damaged_file_is_an_error_that_says_what_to_do()
    {
        await using TestNode node = await TestNode.StartAsync();
        string other = new('a', 64);
        Result wrongId = await Audit(node.Address, "--node-id", other);
        Assert.Equal(1, wrongId.ExitCode);
        Assert.Contains("not with the node id given", wrongId.Stderr, StringComparison.Ordinal);
        Assert.False(File.Exists(Heads));

        // A node set up anew at the address: another key than the remembered head's.
        Assert.Equal(0, (await Audit(node.Address)).ExitCode);
        await using (TestNode renewed = await TestNode.StartAsync())
        {
            MoveEntry(node.Address, renewed.Address);
            string before = await File.ReadAllTextAsync(Heads);
            Result rekeyed = await Audit(renewed.Address);
            Assert.Equal(1, rekeyed.ExitCode);
            Assert.Contains("If that node was really set up anew", rekeyed.Stderr, StringComparison.Ordinal);
            Assert.Equal(before, await File.ReadAllTextAsync(Heads));
            Result pinnedElsewhere = await Audit(renewed.Address, "--node-id", Convert.ToHexStringLower(await NodeIdOf(renewed)));
            Assert.Equal(1, pinnedElsewhere.ExitCode);
            Assert.Contains("remembered head for", pinnedElsewhere.Stderr, StringComparison.Ordinal);
            MoveEntry(renewed.Address, node.Address);
        }

        // A remembered head altered (its signature fails), or an entry that is no head: the file is named, not trusted.
        JsonObject heads = JsonNode.Parse(await File.ReadAllTextAsync(Heads))!.AsObject();
        heads[Key(node.Address)]!["tree_size"] = 7;
        await File.WriteAllTextAsync(Heads, heads.ToJsonString());
        Result altered = await Audit(node.Address);
        Assert.Equal(1, altered.ExitCode);
        Assert.Contains("signature does not verify", altered.Stderr, StringComparison.Ordinal);
        heads[Key(node.Address)] = "gone";
        await File.WriteAllTextAsync(Heads, heads.ToJsonString());
        Result notAHead = await Audit(node.Address);
        Assert.Equal(1, notAHead.ExitCode);
        Assert.Contains("is not a tree head", notAHead.Stderr, StringComparison.Ordinal);

        await File.WriteAllTextAsync(Heads, "[1, 2]");
        Result badHeads = await Audit(node.Address);
        Assert.Equal(1, badHeads.ExitCode);
        Assert.Contains($"{Heads} is not a file of tree heads", badHeads.Stderr, StringComparison.Ordinal);

        string garbage = Path.Combine(_dir, "garbage.json");
        foreach (string text in new[] { "{\"tree_size\": \"many\"}", "[1, 2]" })
        {
            await File.WriteAllTextAsync(garbage, text);
            Result badHead = await Audit(node.Address, "--head", garbage);
            Assert.Equal(1, badHead.ExitCode);
            Assert.Contains($"--head {garbage} is not", badHead.Stderr, StringComparison.Ordinal);
        }

        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task An_audit_is_not_remembered_when_its_key_got_a_head_at_another_address_it_was_not_held_to()
    {
        // Two audits at once of one node key at two addresses, A honest and B a fork: each read the heads of the key
        // at other addresses (none) before either saved, so each passed, and both were remembered.
        byte[] publicKey = new byte[32], secretKey = new byte[64];
        MegaNet.Core.Ed25519.Ed25519Signer.KeyPairFromSeed(new byte[32], publicKey, secretKey);
        SignedTreeHead Head(byte rootByte)
        {
            byte[] root = Enumerable.Repeat(rootByte, 32).ToArray();
            return new SignedTreeHead
            {
                TreeSize = 3,
                RootHash = Google.Protobuf.ByteString.CopyFrom(root),
                TimestampUnixMs = 1_800_000_000_000,
                NodeKey = Google.Protobuf.ByteString.CopyFrom(publicKey),
                Signature = Google.Protobuf.ByteString.CopyFrom(TreeHeadSignature.Sign(secretKey, 3, root, 1_800_000_000_000)),
            };
        }

        SignedTreeHead honest = Head(1), fork = Head(2);
        const string A = "http://127.0.0.1:1", B = "http://127.0.0.1:2";
        Assert.Equal((ClientCommands.Remembering.Saved, null), await ClientCommands.RememberAsync(Heads, A, null, honest, [], CancellationToken.None));
        Assert.Equal((ClientCommands.Remembering.OvertakenElsewhere, null), await ClientCommands.RememberAsync(Heads, B, null, fork, [], CancellationToken.None));
        Assert.False(JsonNode.Parse(File.ReadAllText(Heads))!.AsObject().ContainsKey(B));

        // Held to A's head (as the next audit of B is, which then finds the fork), it would be remembered.
        Assert.Equal((ClientCommands.Remembering.Saved, null), await ClientCommands.RememberAsync(Heads, B, null, fork, [(A, honest)], CancellationToken.None));
    }

    [Fact]
    public async Task An_audit_overtaken_by_an_audit_of_its_key_at_another_address_checks_again_and_is_remembered()
    {
        // Two cron lines started the same minute, auditing one node at two addresses: the one that saved second found
        // the other's head saved since it read the file and gave up ("not remembered"), on every run, so its address was
        // never remembered. The other audit runs here between this one's check and its save, after more mail, so the
        // head it saves is newer than the one this audit checked: the retry asks the node again, not just the file.
        await using TestNode node = await TestNode.StartAsync();
        Uri alias = new UriBuilder(node.Address) { Host = "localhost" }.Uri;
        using MegaNetClient client = node.Client();
        using Identity alice = Identity.Create(), bob = Identity.Create();
        var tries = new List<int>();
        async Task OtherAuditSaves(int attempt)
        {
            tries.Add(attempt);
            if (attempt == 1)
            {
                await client.SendAsync(alice, bob.Card, Encoding.UTF8.GetBytes("meanwhile"), "text/plain");
                Assert.Equal(ClientCommands.Remembering.Saved, (await AuditInProcess(node.Address, null)).Outcome);
            }
        }

        (ClientCommands.AuditResult result, ClientCommands.Remembering outcome, IOException? failure) = await AuditInProcess(alias, OtherAuditSaves);
        Assert.Null(result.Problem);
        Assert.Equal((ClientCommands.Remembering.Saved, (IOException?)null), (outcome, failure));
        Assert.Equal([1, 2], tries);
        Assert.Equal([Key(node.Address)], result.AlsoConsistentWith);
        Assert.Equal(1, (long)Remembered(alias)["tree_size"]!);
        Assert.Equal(1, (long)Remembered(node.Address)["tree_size"]!);

        // Overtaken on every try, it gives up after a few, and says so rather than saving a head it was not held to.
        tries.Clear();
        async Task OtherAuditSavesEachTime(int attempt)
        {
            tries.Add(attempt);
            await client.SendAsync(alice, bob.Card, Encoding.UTF8.GetBytes($"meanwhile {attempt}"), "text/plain");
            Assert.Equal(ClientCommands.Remembering.Saved, (await AuditInProcess(node.Address, null)).Outcome);
        }

        (result, outcome, failure) = await AuditInProcess(alias, OtherAuditSavesEachTime);
        Assert.Null(result.Problem);
        Assert.Equal((ClientCommands.Remembering.OvertakenElsewhere, (IOException?)null), (outcome, failure));
        Assert.Equal(Enumerable.Range(1, ClientCommands.RememberTries), tries);
        Assert.Equal(1, (long)Remembered(alias)["tree_size"]!);
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task A_fork_found_when_an_overtaken_audit_checks_again_is_reported_and_not_remembered()
    {
        // The retry of an audit overtaken by another audit of its key holds the node to the head that audit saved: a
        // node key showing a fork at this address is caught there, as on a first try, and nothing is saved over it.
        (TestNode started, TestNode startedFork) = await StartNodeAndForkAsync();
        await using TestNode node = started;
        await using TestNode fork = startedFork;

        string? savedMeanwhile = null;
        async Task HonestAuditSaves(int attempt)
        {
            if (attempt == 1)
            {
                Assert.Equal(ClientCommands.Remembering.Saved, (await AuditInProcess(node.Address, null)).Outcome);
                savedMeanwhile = await File.ReadAllTextAsync(Heads);
            }
        }

        (ClientCommands.AuditResult result, ClientCommands.Remembering outcome, _) = await AuditInProcess(fork.Address, HonestAuditSaves);
        Assert.Equal(ClientCommands.Remembering.NotAsked, outcome);
        Assert.Equal($"the node at {Key(fork.Address)} and the node at {Key(node.Address)} sign with one key ({Convert.ToHexStringLower(result.Current!.NodeKey.Span)}) but show different logs: " +
            $"the node's current log (size 3) does not extend the log of the earlier head (size 2): it forked or rewrote its log (the earlier head is the one remembered for {Key(node.Address)})", result.Problem);
        Assert.Equal(Key(node.Address), result.EarlierNode);
        Assert.Equal(Remembered(node.Address)["root_hash"]!.ToString(), Convert.ToHexStringLower(result.Earlier!.RootHash.Span));
        Assert.Equal(savedMeanwhile, await File.ReadAllTextAsync(Heads));
    }

    /// <summary>The audit as the command runs it, in this process, with <paramref name="beforeSaving"/> run between
    /// each try's checks and its save.</summary>
    private Task<(ClientCommands.AuditResult Result, ClientCommands.Remembering Outcome, IOException? Failure)> AuditInProcess(Uri node, Func<int, Task>? beforeSaving) =>
        ClientCommands.AuditAndRememberAsync(node, Key(node), Heads, given: null, new MegaNetClientOptions(), beforeSaving, CancellationToken.None);

    private JsonObject Remembered(Uri node) => JsonNode.Parse(File.ReadAllText(Heads))![Key(node)]!.AsObject();

    /// <summary>Files the head remembered for one address under another (a test node listens on a port of its own).</summary>
    private void MoveEntry(Uri from, Uri to)
    {
        JsonObject heads = JsonNode.Parse(File.ReadAllText(Heads))!.AsObject();
        JsonNode entry = heads[Key(from)]!;
        heads.Remove(Key(from));
        heads[Key(to)] = entry;
        File.WriteAllText(Heads, heads.ToJsonString());
    }

    private static async Task<byte[]> NodeIdOf(TestNode node)
    {
        using MegaNetClient client = node.Client();
        return (await client.Relay.GetTreeHeadAsync(new GetTreeHeadRequest())).NodeKey.ToByteArray();
    }

    /// <summary>A node, and a fork of it started from a backup of its key and empty store, whose logs then take other
    /// envelopes (two and three): one node key showing two histories.</summary>
    private async Task<(TestNode Node, TestNode Fork)> StartNodeAndForkAsync()
    {
        TestNode node = await TestNode.StartAsync(dataDirectory: Path.Combine(_dir, "first"));
        TestNode? fork = null;
        try
        {
            await node.BackUpAsync(Path.Combine(_dir, "fork"));
            fork = await TestNode.StartAsync(dataDirectory: Path.Combine(_dir, "fork"));
            using Identity alice = Identity.Create(), bob = Identity.Create();
            foreach ((TestNode at, string[] texts) in new[] { (node, new[] { "one", "two" }), (fork, new[] { "x", "y", "z" }) })
            {
                using MegaNetClient client = at.Client();
                foreach (string text in texts)
                {
                    await client.SendAsync(alice, bob.Card, Encoding.UTF8.GetBytes(text), "text/plain");
                }
            }

            return (node, fork);
        }
        catch
        {
            if (fork is not null)
            {
                await fork.DisposeAsync();
            }

            await node.DisposeAsync();
            throw;
        }
    }
}
