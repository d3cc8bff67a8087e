using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using MegaNet.Api;
using MegaNet.Api.V1;
using MegaNet.Node.Cli;

using static MegaNet.Node.Tests.MeganetResults;
using Result = MegaNet.Node.Tests.MeganetProcess.Result;

namespace MegaNet.Node.Tests;

/// <summary>
/// The client commands of the built <c>meganet</c>, run as a person runs them (a child process against a real node):
/// what they print, what they leave on disk and in the mailbox, and their exit codes.
/// </summary>
public sealed class ClientCliTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("meganet-client-").FullName;

    private static readonly string NoNode = ExternalNode.NoNode;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private Task<Result> Meganet(bool closeStdout, params string[] args) => MeganetProcess.RunAsync(_dir, null, closeStdout, args);

    private Task<Result> Meganet(params string[] args) => Meganet(false, args);

    private string NewIdentity(string name) => TestIdentities.Save(_dir, name).Path;

    private static byte[] Text(string s) => Encoding.UTF8.GetBytes(s);

    [Fact]
    public async Task Send_to_a_node_demanding_more_proof_of_work_than_the_client_computes_says_so_in_one_line()
    {
        // A node that demands 25 bits (more than MegaNetClientOptions.MaxPowBits) got a stack trace from 'send'.
        await using TestNode node = await TestNode.StartAsync(o =>
        {
            o.PowMaxBits = 25;
            o.PowMinBits = 25;
        });
        string alice = NewIdentity("alice.json"), bob = NewIdentity("bob.json");
        using Identity bobId = Identity.Load(bob);
        Result r = await Meganet("send", "-i", alice, "--to", bobId.Card.ToString(), "--node", node.Address.ToString(), "--text", "hi");
        AssertExit(r, 2, "demands a proof-of-work stamp of 25 bits");
    }

    [Fact]
    public async Task Fetch_ack_deletes_nothing_when_standard_output_is_closed()
    {
        await using TestNode node = await TestNode.StartAsync();
        using MegaNetClient client = node.Client();
        string bobPath = NewIdentity("bob.json");
        using Identity alice = Identity.Create(), bob = Identity.Load(bobPath);
        for (int i = 0; i < 3; i++)
        {
            await client.SendAsync(alice, bob.Card, Text($"message {i}"), "text/plain; charset=utf-8");
        }

        // No one reads: the messages cannot have been seen, so none may be deleted.
        string address = node.Address.ToString();
        Result closed = await Meganet(closeStdout: true, "fetch", "-i", bobPath, "--node", address, "--ack");
        AssertExit(closed, 1, "cannot write to standard output");
        Assert.Contains("no message was acknowledged", closed.Stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("acknowledged 3", closed.Stderr, StringComparison.Ordinal);
        Assert.Equal(3, (await client.FetchAsync(bob)).Messages.Count);

        // Read, the same command shows all three and then deletes them.
        Result read = await Meganet("fetch", "-i", bobPath, "--node", address, "--ack");
        AssertExit(read, 0, "acknowledged 3 message(s)");
        Assert.Equal(3, read.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);
        Assert.Empty((await client.FetchAsync(bob)).Messages);
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task Send_without_ttl_days_fits_a_node_that_keeps_mail_for_less_than_a_week()
    {
        // The CLI sent 7 days whatever the node said: a node with MaxTtlDays 2 refused every plain send.
        await using TestNode node = await TestNode.StartAsync(o => o.MaxTtlDays = 2);
        string alicePath = NewIdentity("alice.json"), bobPath = NewIdentity("bob.json");
        using Identity bob = Identity.Load(bobPath);
        string address = node.Address.ToString();
        Result sent = await Meganet("send", "-i", alicePath, "--to", bob.Card.ToString(), "--node", address, "--text", "hi");
        AssertExit(sent, 0);
        Assert.StartsWith("accepted: envelope", sent.Stdout, StringComparison.Ordinal);
        // Asked for, a longer one is refused before it is sealed, naming the option (the node's refusal said only that
        // the expiry was too far away, in its protocol's words).
        Result longer = await Meganet("send", "-i", alicePath, "--to", bob.Card.ToString(), "--node", address, "--text", "hi", "--ttl-days", "3");
        AssertExit(longer, 1, "--ttl-days 3 is more than this node keeps mail (2 days, its MaxTtlDays)");
        // As given, not rounded to 2 (which read "2 is more than ... 2 days").
        AssertExit(await Meganet("send", "-i", alicePath, "--to", bob.Card.ToString(), "--node", address, "--text", "hi", "--ttl-days", "2.001"), 1,
            "--ttl-days 2.001 is more than this node keeps mail (2 days, its MaxTtlDays)");
        using MegaNetClient client = node.Client();
        Assert.Single((await client.FetchAsync(bob)).Messages);
    }

    [Fact]
    public async Task Results_that_cannot_be_written_fail_the_command_and_say_what_was_done()
    {
        await using TestNode node = await TestNode.StartAsync();
        using MegaNetClient client = node.Client();
        string alicePath = NewIdentity("alice.json"), bobPath = NewIdentity("bob.json");
        using Identity bob = Identity.Load(bobPath);
        string address = node.Address.ToString();

        // `send --json > receipt` into a reader that went away: the receipt is lost, so the exit says so (it was 0,
        // Console.Out drops EPIPE), and that the message went all the same (sending it again would be a second one).
        Result sent = await Meganet(closeStdout: true, "send", "-i", alicePath, "--to", bob.Card.ToString(), "--node", address, "--text", "hi", "--json");
        AssertExit(sent, 1, "cannot write to standard output");
        Assert.Contains("the message was sent (envelope ", sent.Stderr, StringComparison.Ordinal);
        Assert.Single((await client.FetchAsync(bob)).Messages);

        AssertExit(await Meganet(closeStdout: true, "id", "show", "-i", bobPath), 1, "cannot write to standard output");
        Result created = await Meganet(closeStdout: true, "id", "new", "-i", Path.Combine(_dir, "carol.json"));
        AssertExit(created, 1, "cannot write to standard output");
        Assert.Contains("the identity was written to", created.Stderr, StringComparison.Ordinal);
        Assert.True(File.Exists(Path.Combine(_dir, "carol.json")));
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task Fetch_tells_the_owner_when_senders_must_add_proof_of_work_for_a_mailbox_left_unacknowledged()
    {
        // Quota 8, stamps from 50 %: a mailbox nobody acknowledges fills, costs its senders work, then refuses mail.
        await using TestNode node = await TestNode.StartAsync(o => o.MailboxMaxCount = 8);
        using MegaNetClient client = node.Client();
        string bobPath = NewIdentity("bob.json");
        using Identity alice = Identity.Create(), bob = Identity.Load(bobPath);
        string address = node.Address.ToString();
        for (int i = 0; i < 3; i++)
        {
            await client.SendAsync(alice, bob.Card, Text($"message {i}"), "text/plain; charset=utf-8");
        }

        Result under = await Meganet("fetch", "-i", bobPath, "--node", address);
        AssertExit(under, 0);
        Assert.DoesNotContain("note:", under.Stderr, StringComparison.Ordinal);

        for (int i = 3; i < 6; i++)
        {
            await client.SendAsync(alice, bob.Card, Text($"message {i}"), "text/plain; charset=utf-8"); // stamped from the fifth
        }

        Result over = await Meganet("fetch", "-i", bobPath, "--node", address);
        AssertExit(over, 0, "note: your mailbox on this node holds 6 of 8 messages");
        Assert.Contains("(75 % full): from 50 % senders must add proof of work", over.Stderr, StringComparison.Ordinal);

        Result acked = await Meganet("fetch", "-i", bobPath, "--node", address, "--ack");
        AssertExit(acked, 0, "acknowledged 6 message(s)");
        Assert.DoesNotContain("note:", acked.Stderr, StringComparison.Ordinal);
        Assert.Equal(0, (await client.FetchAsync(bob)).WaitingCount);
    }

    [Fact]
    public async Task Status_says_what_the_node_is_and_demands_in_text_and_json()
    {
        await using TestNode node = await TestNode.StartAsync(o =>
        {
            o.PowMinBits = 3;
            o.MailboxMaxCount = 8;
            o.MailboxPowFromPercent = 75;
        });
        string address = node.Address.ToString();
        using MegaNetClient client = node.Client();
        string nodeId = Convert.ToHexStringLower((await client.Relay.GetTreeHeadAsync(new GetTreeHeadRequest())).NodeKey.Span);

        Result text = await Meganet("status", "--node", address);
        AssertExit(text, 0);
        Assert.Contains($"node id   {nodeId}", text.Stdout, StringComparison.Ordinal);
        Assert.Contains("verifier  simd (", text.Stdout, StringComparison.Ordinal);
        Assert.Contains("proof of work demanded now: 3 bits", text.Stdout, StringComparison.Ordinal);
        Assert.Contains("at most 8 envelopes and 67,108,864 bytes, stamps from 75 % full", text.Stdout, StringComparison.Ordinal);
        Assert.Contains("payload classes 1 KiB, 4 KiB, 16 KiB, 64 KiB", text.Stdout, StringComparison.Ordinal);

        Result json = await Meganet("status", "--node", address, "--json");
        AssertExit(json, 0);
        JsonNode o = JsonNode.Parse(json.Stdout)!;
        Assert.Equal(nodeId, (string)o["node_id"]!);
        Assert.Equal(3, (int)o["status"]!["pow_bits_required"]!);
        Assert.Equal(0, (int)o["status"]!["queue_depth"]!); // a zero is written out, not left for the reader to assume
        Assert.Equal(8, (int)o["status"]!["limits"]!["mailbox_max_count"]!);
        Assert.Equal(75, (int)o["status"]!["limits"]!["mailbox_pow_from_percent"]!);
        Assert.Equal("67108864", (string)o["status"]!["limits"]!["mailbox_max_bytes"]!); // int64: a string in the proto's JSON mapping

        AssertExit(await Meganet("status", "--node", NoNode), 2, "cannot reach the node");
    }

    [Fact]
    public async Task A_node_id_pinned_for_one_address_is_not_signed_for_at_another_without_node_id()
    {
        // A node at another address showing the id of a node this identity uses would collect signatures good there.
        await using TestNode node = await TestNode.StartAsync();
        await using var elsewhere = new FreezableProxy(node.Address); // the same node, at another address
        string bobPath = NewIdentity("bob.json");
        string pinnedAt = node.Address.GetLeftPart(UriPartial.Authority), other = elsewhere.Address.GetLeftPart(UriPartial.Authority);
        AssertExit(await Meganet("fetch", "-i", bobPath, "--node", pinnedAt), 0, "first contact with " + pinnedAt);

        Result refused = await Meganet("fetch", "-i", bobPath, "--node", other);
        AssertExit(refused, 1, $"The node at {other} shows node id");
        Assert.Contains($"which this identity pinned for {pinnedAt}", refused.Stderr, StringComparison.Ordinal);
        Assert.DoesNotContain(other, File.ReadAllText(Path.Combine(_dir, KnownNodes.FileName)), StringComparison.Ordinal);

        // Said to be the same node, it is.
        string id = File.ReadAllText(Path.Combine(_dir, KnownNodes.FileName)).Split(' ', StringSplitOptions.RemoveEmptyEntries)[1].Trim();
        AssertExit(await Meganet("fetch", "-i", bobPath, "--node", other, "--node-id", id), 0, "");
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task A_message_sent_long_ago_is_shown_marked_old_and_never_deleted_unseen()
    {
        await using TestNode node = await TestNode.StartAsync();
        using MegaNetClient client = node.Client();
        string bobPath = NewIdentity("bob.json");
        using Identity alice = Identity.Create(), bob = Identity.Load(bobPath);

        // Alice's clock is 40 days behind (or the node keeps mail that long: MaxTtlDays goes up to 3,650).
        Envelope envelope = EnvelopeFormat.Seal(alice, bob.Card, Text("from the past"), "text/plain; charset=utf-8", null,
            DateTimeOffset.UtcNow.AddDays(7), sentAt: DateTimeOffset.UtcNow.AddDays(-40));
        await client.Relay.SubmitAsync(new SubmitRequest { Envelope = envelope });
        await client.SendAsync(alice, bob.Card, Text("from today"), "text/plain; charset=utf-8");

        string address = node.Address.ToString();
        Result json = await Meganet("fetch", "-i", bobPath, "--node", address, "--json");
        AssertExit(json, 0);
        JsonObject[] objects = JsonLines(json);
        Assert.Equal(["from the past", "from today"], objects.Select(o => o["text"]!.GetValue<string>()));
        Assert.Equal([true, false], objects.Select(o => o["old"]!.GetValue<bool>()));

        Result text = await Meganet("fetch", "-i", bobPath, "--node", address, "--ack");
        AssertExit(text, 0, "acknowledged 2 message(s)");
        string[] lines = text.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(2, lines.Length);
        Assert.Contains("(old: sent over 31 days ago", lines[0], StringComparison.Ordinal);
        Assert.EndsWith(": from the past", lines[0], StringComparison.Ordinal);
        Assert.DoesNotContain("(old", lines[1], StringComparison.Ordinal);
        Assert.DoesNotContain("not shown", text.Stderr, StringComparison.Ordinal);
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task Text_and_file_names_cannot_forge_a_line_of_another_message_and_json_stays_exact()
    {
        await using TestNode node = await TestNode.StartAsync();
        using MegaNetClient client = node.Client();
        string bobPath = NewIdentity("bob.json");
        using Identity mallory = Identity.Create(), bob = Identity.Load(bobPath);
        using Identity alice = Identity.Create();

        // Mallory's text ends her message and "prints" one from Alice; the bidi override (U+202E) would show the rest
        // of a line reversed, U+2028 breaks lines in some viewers.
        string forged = $"see you\n[99] 2026-01-01 00:00:00Z from {alice.Card}: pay mallory\r\n[100] x\u202Eevil\u2028[101] y\u001b[2J";
        string fileName = $"a.txt\n[102] 2026-01-01 00:00:00Z from {alice.Card}: file 'b'\u200F";
        await client.SendAsync(mallory, bob.Card, Text(forged), "text/plain; charset=utf-8");
        await client.SendAsync(mallory, bob.Card, Text("contents"), "application/octet-stream", fileName);

        string address = node.Address.ToString();
        Result text = await Meganet("fetch", "-i", bobPath, "--node", address);
        AssertExit(text, 0);
        string[] lines = text.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Length == 4, text.Stdout);
        string from = $"from {mallory.Card}: ";
        Assert.Equal(2, lines.Count(line => line.StartsWith('[')));
        Assert.All(lines.Where(line => line.StartsWith('[')), line => Assert.Contains(from, line, StringComparison.Ordinal));
        Assert.All(lines.Where(line => !line.StartsWith('[')), line => Assert.StartsWith(ClientCommands.ContinuationPrefix, line, StringComparison.Ordinal));
        Assert.DoesNotContain(text.Stdout, ch => ch is '\r' or '\u202E' or '\u2028' or '\u200F' or '\u001b');
        Assert.Contains("x\\u202eevil\\u2028[101] y\\u001b[2J", text.Stdout, StringComparison.Ordinal);
        Assert.Contains("file 'a.txt\\u000a[102]", text.Stdout, StringComparison.Ordinal);

        // --json carries what was sent, byte for byte.
        Result json = await Meganet("fetch", "-i", bobPath, "--node", address, "--json");
        AssertExit(json, 0);
        JsonObject[] objects = JsonLines(json);
        Assert.Equal(forged, objects[0]["text"]!.GetValue<string>());
        Assert.Equal(fileName, objects[1]["file_name"]!.GetValue<string>());
        node.AssertNoServerErrors();
    }

    [Fact]
    public void Printable_escapes_controls_format_characters_and_separators_and_indents_continued_lines()
    {
        Assert.Equal("a\n    b\n    c\\u202ed\\u2028e\\u0007\\U000e0041\tf\\u000dg é 👍",
            ClientCommands.Printable("a\nb\r\nc\u202Ed\u2028e\u0007\U000E0041\tf\rg é 👍", multiline: true));
        Assert.Equal("a\\u000ab\\u0009c\\u200b", ClientCommands.Printable("a\nb\tc\u200B", multiline: false));
    }

    [Fact]
    public async Task Verify_receipt_says_invalid_with_exit_code_3_for_a_log_index_outside_the_tree()
    {
        await using TestNode node = await TestNode.StartAsync();
        using MegaNetClient client = node.Client();
        using Identity alice = Identity.Create(), bob = Identity.Create();
        Receipt receipt = await client.SendAsync(alice, bob.Card, Text("only"), "text/plain");
        receipt.LogIndex = 5;
        string file = Path.Combine(_dir, "receipt.json");
        await File.WriteAllTextAsync(file, ClientCommands.ReceiptJson(receipt).ToJsonString());

        Result r = await Meganet("verify-receipt", "--node", node.Address.ToString(), "--receipt", file, "--identity", Path.Combine(_dir, "none.json"));
        AssertExit(r, 3);
        Assert.StartsWith("INVALID: the receipt's log index 5 is outside", r.Stdout, StringComparison.Ordinal);

        // Nobody reading standard output: the verdict goes to standard error and exit code 3 stands (not 1, with the
        // bad receipt unsaid).
        Result unread = await Meganet(closeStdout: true, "verify-receipt", "--node", node.Address.ToString(), "--receipt", file, "--identity", Path.Combine(_dir, "none.json"));
        AssertExit(unread, 3, "INVALID: the receipt's log index 5 is outside");
    }

    [Theory]
    [InlineData("x.seen")]
    [InlineData("known-nodes")]
    [InlineData("Bob.SEEN")]
    [InlineData("x.contacts")]
    [InlineData("x.Parts")]
    [InlineData("x.sending")]
    [InlineData("x.seen.lock")]
    [InlineData("x.LOCK")]
    public async Task An_identity_cannot_be_named_like_the_files_kept_beside_it(string name)
    {
        // Creating one is refused, and nothing is written.
        string path = Path.Combine(_dir, name);
        AssertExit(await Meganet("id", "new", "--identity", path), 1, "cannot be named");
        Assert.Empty(Directory.EnumerateFileSystemEntries(_dir));

        // One that exists already (made before this rule) is refused before its side files are opened: fetch used to
        // rewrite x.seen as its record of received messages (an empty file: the keys were gone).
        string existing = NewIdentity(name);
        byte[] keys = await File.ReadAllBytesAsync(existing);
        AssertExit(await Meganet("fetch", "--identity", existing, "--node", NoNode), 1, "cannot be named");
        AssertExit(await Meganet("listen", "--identity", existing, "--node", NoNode), 1, "cannot be named");
        Assert.Equal(keys, await File.ReadAllBytesAsync(existing));
        Assert.Equal([name], Directory.EnumerateFileSystemEntries(_dir).Select(Path.GetFileName));
    }

    /// <summary>As the node refuses its node.key: an identity file others can read was used without a word (found in
    /// review, 2026-12-04). And the folders `id new` makes are owner-only, as the file is (they had the umask's mode, so
    /// under umask 0 anyone could replace the pinned node ids beside the identity).</summary>
    [Fact]
    public async Task An_identity_others_can_read_is_refused_and_new_folders_are_owner_only()
    {
        if (OperatingSystem.IsWindows())
        {
            return; // access lists, not modes
        }

        string path = Path.Combine(_dir, "deep", "er", "me.json");
        AssertExit(await Meganet("id", "new", "--identity", path), 0);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(Path.Combine(_dir, "deep")));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(Path.Combine(_dir, "deep", "er")));

        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
        Result loose = await Meganet("id", "show", "--identity", path);
        AssertExit(loose, 1, "is accessible to other users (mode 644)");
        Assert.Contains($"chmod 600 {path}", loose.Stderr, StringComparison.Ordinal);
        AssertExit(await Meganet("fetch", "--identity", path, "--node", NoNode), 1, "is accessible to other users");

        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        Result shown = await Meganet("id", "show", "--identity", path);
        AssertExit(shown, 0);
        Assert.StartsWith("mn1", shown.Stdout.Trim(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_contact_card_given_as_the_identity_is_named_as_one_whatever_its_mode()
    {
        // The walkthrough saves Bob's card in demo/bob.card beside demo/bob.json. Given as --identity, the card file
        // (mode 644 under the usual umask) was refused for its mode first, with advice to make a new identity.
        string card = Path.Combine(_dir, "bob.card");
        File.WriteAllText(card, TestIdentities.Save(_dir, "bob.json").Card + "\n");
        if (!OperatingSystem.IsWindows())
        {
            File.SetUnixFileMode(card, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
        }

        Result r = await Meganet("fetch", "--identity", card, "--node", NoNode);
        AssertExit(r, 1, $"{card} holds a contact card, the public half of an identity, not an identity file");
        Assert.DoesNotContain("accessible to other users", r.Stderr, StringComparison.Ordinal);
        File.WriteAllText(card, "{ not json");
        AssertExit(await Meganet("id", "show", "--identity", card), 1, "is not a MegaNet identity file (it is not the JSON 'meganet id new' writes:");
        // The card's text pasted for the file: 'id new' under that name, as suggested before, made a secret key named
        // after someone else's card. A directory: 'id new' refused the path it was told to use.
        using Identity carol = Identity.Create();
        AssertExit(await Meganet("fetch", "--identity", carol.Card.ToString(), "--node", NoNode), 1, "--identity takes an identity file, and was given a contact card's text");
        AssertExit(await Meganet("fetch", "--identity", _dir, "--node", NoNode), 1, $"--identity {_dir} is a directory; give the identity's file");
        // A file's name that merely begins as a card does is a file's name.
        AssertExit(await Meganet("fetch", "--identity", "mn1-alice.json", "--node", NoNode), 1, "No identity at mn1-alice.json; create one with 'meganet id new --identity mn1-alice.json'");
    }

    [Fact]
    public async Task The_default_identity_is_under_the_home_directory_even_before_that_exists()
    {
        if (OperatingSystem.IsWindows())
        {
            return; // HOME is not where Windows keeps the profile
        }

        // A HOME not made yet gave the default ".meganet/identity.json", relative: 'id new' wrote the secret key into
        // the directory it was run from.
        string home = Path.Combine(_dir, "home-not-made-yet");
        Result created = await MeganetProcess.RunAsync(_dir, new Dictionary<string, string> { ["HOME"] = home }, false, "id", "new");
        AssertExit(created, 0);
        Assert.True(File.Exists(Path.Combine(home, ".meganet", "identity.json")), created.Stderr);
        Assert.False(Directory.Exists(Path.Combine(_dir, ".meganet")));
    }

    [Fact]
    public async Task Only_a_node_id_the_node_answered_with_is_pinned()
    {
        await using TestNode node = await TestNode.StartAsync();
        using MegaNetClient client = node.Client();
        string realId = Convert.ToHexStringLower((await client.Relay.GetTreeHeadAsync(new GetTreeHeadRequest())).NodeKey.Span);
        string wrongId = new('a', 64);
        string bobPath = NewIdentity("bob.json");
        string knownNodes = Path.Combine(_dir, "known-nodes");
        string address = node.Address.ToString();

        // A mistyped id: the node answers as another node, nothing is signed, and nothing is pinned.
        AssertExit(await Meganet("fetch", "-i", bobPath, "--node", address, "--node-id", wrongId), 1, "answered as node id");
        Assert.False(File.Exists(knownNodes));

        // A node that cannot be reached never confirmed the id given.
        AssertExit(await Meganet("fetch", "-i", bobPath, "--node", NoNode, "--node-id", realId), 2, "cannot reach the node");
        Assert.False(File.Exists(knownNodes));

        // The node answers with the id given: pinned, and later contact needs no --node-id.
        Result r = await Meganet("fetch", "-i", bobPath, "--node", address, "--node-id", realId);
        AssertExit(r, 0, "pinned");
        Assert.Equal([$"{node.Address.GetLeftPart(UriPartial.Authority)} {realId}"], await File.ReadAllLinesAsync(knownNodes));
        AssertExit(await Meganet("fetch", "-i", bobPath, "--node", address), 0);
        Assert.Single(await File.ReadAllLinesAsync(knownNodes));
    }

    [Fact]
    public async Task First_contact_checks_and_pins_in_one_step_before_anything_is_signed()
    {
        await using TestNode node = await TestNode.StartAsync();
        string bobPath = NewIdentity("bob.json");
        using Identity bob = Identity.Load(bobPath);
        string knownNodes = Path.Combine(_dir, "known-nodes");
        string key = node.Address.GetLeftPart(UriPartial.Authority);
        string realId;
        using (MegaNetClient probe = node.Client())
        {
            realId = Convert.ToHexStringLower((await probe.Relay.GetTreeHeadAsync(new GetTreeHeadRequest())).NodeKey.Span);
        }

        // Pinned as soon as the node's id is accepted, before the command's end: a fetch at another address running
        // meanwhile sees it as taken (it was written only once the command had finished).
        await KnownNodes.RunAsync(bobPath, node.Address, null, async client =>
        {
            Assert.False(File.Exists(knownNodes));
            await client.FetchAsync(bob);
            Assert.Equal([$"{key} {realId}"], await File.ReadAllLinesAsync(knownNodes));
            return 0;
        });
        if (!OperatingSystem.IsWindows())
        {
            // Which nodes an identity uses is its owner's business, as every file beside it.
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(knownNodes));
        }

        // Another command of this identity pinned this address to another id while this one made first contact:
        // nothing is signed for the id this node shows.
        File.Delete(knownNodes);
        var e = await Assert.ThrowsAsync<CliException>(() => KnownNodes.RunAsync(bobPath, node.Address, null, async client =>
        {
            await File.WriteAllTextAsync(knownNodes, $"{key} {new string('b', 64)}\n");
            await client.FetchAsync(bob);
            return 0;
        }));
        Assert.Contains("another command of this identity pinned it to node id bbbb", e.Message, StringComparison.Ordinal);
        Assert.Single(await File.ReadAllLinesAsync(knownNodes));
    }

    [Fact]
    public async Task A_pin_after_a_last_line_saved_without_its_newline_goes_on_a_line_of_its_own()
    {
        await using TestNode node = await TestNode.StartAsync();
        string bobPath = NewIdentity("bob.json");
        using Identity bob = Identity.Load(bobPath);
        string knownNodes = Path.Combine(_dir, "known-nodes");
        // As an editor may save it after the user deleted a line by hand, as the mismatch error tells them to.
        string other = $"http://other.example:7700 {new string('c', 64)}";
        await File.WriteAllTextAsync(knownNodes, other);

        await KnownNodes.RunAsync(bobPath, node.Address, null, async client =>
        {
            await client.FetchAsync(bob);
            return 0;
        });

        // Glued to the last line, both pins were lost: the next contact with either address pinned whatever answered.
        string realId = Convert.ToHexStringLower(KnownNodes.Beside(bobPath).Find(node.Address)!);
        Assert.Equal([other, $"{node.Address.GetLeftPart(UriPartial.Authority)} {realId}"], await File.ReadAllLinesAsync(knownNodes));
        Assert.Equal(new string('c', 64), Convert.ToHexStringLower(KnownNodes.Beside(bobPath).Find(new Uri("http://other.example:7700"))!));
    }

    [Theory]
    [InlineData("{0} {1}http://other.example:7700 {1}", "2 fields expected, 3 found")]
    [InlineData("{0}", "2 fields expected, 1 found")]
    [InlineData("{0} {2}", "is not a node id")]
    [InlineData("{0}/ {1}", "is not a node address as this file writes it")]
    public async Task A_known_nodes_line_that_does_not_read_is_refused_with_its_line_before_anything_is_signed(string badLine, string problem)
    {
        await using TestNode node = await TestNode.StartAsync();
        string bobPath = NewIdentity("bob.json");
        using Identity bob = Identity.Load(bobPath);
        string knownNodes = Path.Combine(_dir, "known-nodes");
        // Comments and blank lines are fine; the third line is this node's pin, mangled by hand.
        string text = $"# pinned by hand\n\n{string.Format(CultureInfo.InvariantCulture, badLine, node.Address.GetLeftPart(UriPartial.Authority), new string('a', 64), new string('a', 63))}\n";
        await File.WriteAllTextAsync(knownNodes, text);
        bool signed = false;

        var e = await Assert.ThrowsAsync<CliException>(() => KnownNodes.RunAsync(bobPath, node.Address, null, async client =>
        {
            await client.FetchAsync(bob);
            signed = true;
            return 0;
        }));

        // Skipped, the line's pin was lost, and this contact was a first one that pinned whatever node answered.
        Assert.Contains($"{knownNodes} line 3: ", e.Message, StringComparison.Ordinal);
        Assert.Contains(problem, e.Message, StringComparison.Ordinal);
        Assert.False(signed);
        Assert.Equal(text, await File.ReadAllTextAsync(knownNodes));
    }

    [Fact]
    public async Task A_fetch_that_finds_no_mail_says_so_on_stderr_and_prints_nothing()
    {
        await using TestNode node = await TestNode.StartAsync();
        string bobPath = NewIdentity("bob.json");
        Result empty = await Meganet("fetch", "-i", bobPath, "--node", node.Address.ToString());
        AssertExit(empty, 0, "no mail waiting");
        Assert.Equal(string.Empty, empty.Stdout);
        Result json = await Meganet("fetch", "-i", bobPath, "--node", node.Address.ToString(), "--json", "--after", "5");
        AssertExit(json, 0, "no mail waiting after seq 5");
        Assert.Equal(string.Empty, json.Stdout);
    }

    [Fact]
    public async Task Listen_pins_a_first_contact_once_subscribed_so_a_kill_does_not_lose_it()
    {
        await using TestNode node = await TestNode.StartAsync();
        string bobPath = NewIdentity("bob.json");
        string knownNodes = Path.Combine(_dir, "known-nodes");
        using var listen = new RunningMeganet(_dir, "listen", "-i", bobPath, "--node", node.Address.ToString());
        await listen.WaitForAsync("pinned", stderr: true);
        // It says it listens (a first-time user saw nothing until mail came, and could not tell it had reached the node).
        await listen.WaitForAsync($"listening for mail at {node.Address} (Ctrl+C to stop)", stderr: true);

        // SIGKILL, as an OOM killer or a closed terminal might: the pin was written when the subscription began, not
        // at an exit that never came.
        listen.Process.Kill();
        await listen.Process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(60));
        using MegaNetClient client = node.Client();
        string realId = Convert.ToHexStringLower((await client.Relay.GetTreeHeadAsync(new GetTreeHeadRequest())).NodeKey.Span);
        Assert.Equal([$"{node.Address.GetLeftPart(UriPartial.Authority)} {realId}"], await File.ReadAllLinesAsync(knownNodes));
    }

    /// <summary>A node resets a stream with HTTP/2 CANCEL when it gives up on writes its client is not reading (5 s
    /// into a stop, or at a subscription's lifetime end): Grpc.Net.Client calls that CANCELLED, and `meganet listen`
    /// took it for its own Ctrl+C and ended ("meganet: interrupted.", seen with a listen held by SIGSTOP across a
    /// node's stop). It is the node's doing: listen subscribes again and goes on.</summary>
    [Fact]
    public async Task Listen_subscribes_again_after_the_node_resets_its_stream_with_cancel()
    {
        var reset = new ResetFirstSubscribe();
        await using TestNode node = await TestNode.StartAsync(services: reset.AddTo);
        string bobPath = NewIdentity("bob.json");
        using Identity alice = Identity.Create(), bob = Identity.Load(bobPath);
        using MegaNetClient client = node.Client();
        await client.SendAsync(alice, bob.Card, Text("before the reset"), "text/plain; charset=utf-8");
        using var listen = new RunningMeganet(_dir, "listen", "-i", bobPath, "--node", node.Address.ToString());
        // A message printed: subscribed. Then the reset.
        await listen.WaitForAsync("before the reset");
        reset.Now.SetResult();
        await listen.WaitForAsync("subscription lost", stderr: true);
        await client.SendAsync(alice, bob.Card, Text("after the reset"), "text/plain; charset=utf-8");
        await listen.WaitForAsync("after the reset");
        Assert.Equal(0, await listen.StopAsync());
        Assert.Contains(listen.Stderr, l => l.Contains("The node reset the stream (HTTP/2 CANCEL)", StringComparison.Ordinal));
        Assert.DoesNotContain(listen.Stderr, l => l.Contains("interrupted", StringComparison.Ordinal));
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task Listen_with_ack_deletes_what_it_wrote_out_and_without_it_deletes_nothing()
    {
        // A mailbox read only through listen filled up: its senders then paid proof of work, and a full one refused mail.
        await using TestNode node = await TestNode.StartAsync();
        string bobPath = NewIdentity("bob.json");
        using Identity alice = Identity.Create(), bob = Identity.Load(bobPath);
        using MegaNetClient client = node.Client();
        for (int i = 0; i < 3; i++)
        {
            await client.SendAsync(alice, bob.Card, Text($"waiting {i}"), "text/plain; charset=utf-8");
        }

        using (var plain = new RunningMeganet(_dir, "listen", "-i", bobPath, "--node", node.Address.ToString()))
        {
            await plain.WaitForAsync(": waiting 2");
            Assert.Equal(0, await plain.StopAsync());
            Assert.DoesNotContain(plain.Stderr, l => l.Contains("acknowledged", StringComparison.Ordinal));
        }

        Assert.Equal(3, (await client.FetchAsync(bob)).WaitingCount);

        using var acking = new RunningMeganet(_dir, "listen", "-i", bobPath, "--node", node.Address.ToString(), "--ack");
        await acking.WaitForAsync(": waiting 2"); // the three again: nothing deleted them
        await client.SendAsync(alice, bob.Card, Text("live"), "text/plain; charset=utf-8");
        await acking.WaitForAsync(": live");
        await MailboxEmptiesAsync(client, bob, acking);

        Assert.Equal(0, await acking.StopAsync());
        Assert.Contains("acknowledged 4 message(s)", acking.Stderr);
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task An_acknowledged_envelope_submitted_unchanged_to_another_node_is_reported_as_a_copy_and_deleted()
    {
        // Node A held it, and anyone who kept the envelope can submit it as it is to node B, which Bob also reads:
        // A refuses it as a duplicate, B takes it as new. Bob saw and acknowledged it at A; before, B's copy was shown
        // to him again, unmarked, as a new message (a signed "pay 100 to carol", twice).
        await using TestNode nodeA = await TestNode.StartAsync();
        await using TestNode nodeB = await TestNode.StartAsync();
        string bobPath = NewIdentity("bob.json");
        using Identity alice = Identity.Create(), bob = Identity.Load(bobPath);
        using MegaNetClient a = nodeA.Client(), b = nodeB.Client();
        await a.SendAsync(alice, bob.Card, Text("pay 100 to carol"), "text/plain; charset=utf-8");
        await a.SendAsync(alice, bob.Card, Text("and 5 to dave"), "text/plain; charset=utf-8");
        var kept = (await a.Relay.FetchAsync(new FetchRequest { Auth = await a.AuthenticateAsync(bob, MailboxPurpose.Fetch) })).Items;
        Assert.Equal(2, kept.Count);

        // The first by 'fetch --ack', the second by 'listen --ack': each records what the node confirmed deleted.
        Result fetched = await Meganet("fetch", "-i", bobPath, "--node", nodeA.Address.ToString(), "--ack");
        AssertExit(fetched, 0, "acknowledged 2 message(s)");
        Assert.Contains("pay 100 to carol", fetched.Stdout, StringComparison.Ordinal);
        Assert.True((await a.Relay.SubmitAsync(new SubmitRequest { Envelope = kept[0].Envelope })).Duplicate);

        foreach (MailItem item in kept)
        {
            Assert.False((await b.Relay.SubmitAsync(new SubmitRequest { Envelope = item.Envelope })).Duplicate);
        }

        Result atB = await Meganet("fetch", "-i", bobPath, "--node", nodeB.Address.ToString(), "--ack");
        AssertExit(atB, 0, "acknowledged 2 message(s)");
        Assert.DoesNotContain("pay 100", atB.Stdout, StringComparison.Ordinal);
        Assert.DoesNotContain("and 5", atB.Stdout, StringComparison.Ordinal);
        Assert.Equal(2, atB.Stderr.Split('\n').Count(l => l.Contains("received and acknowledged before", StringComparison.Ordinal)));
        Assert.Equal(0, (await b.FetchAsync(bob)).WaitingCount);

        // The same through listen --ack: a new message at A, kept by whoever can, acknowledged by listen, then at B.
        await a.SendAsync(alice, bob.Card, Text("live one"), "text/plain; charset=utf-8");
        MailItem live = Assert.Single((await a.Relay.FetchAsync(new FetchRequest { Auth = await a.AuthenticateAsync(bob, MailboxPurpose.Fetch) })).Items);
        using (var listen = new RunningMeganet(_dir, "listen", "-i", bobPath, "--node", nodeA.Address.ToString(), "--ack"))
        {
            await listen.WaitForAsync(": live one");
            await MailboxEmptiesAsync(a, bob, listen);
            Assert.Equal(0, await listen.StopAsync());
        }

        Assert.False((await b.Relay.SubmitAsync(new SubmitRequest { Envelope = live.Envelope })).Duplicate);
        Result liveAtB = await Meganet("fetch", "-i", bobPath, "--node", nodeB.Address.ToString());
        AssertExit(liveAtB, 0, "received and acknowledged before");
        Assert.DoesNotContain("live one", liveAtB.Stdout, StringComparison.Ordinal);
        nodeA.AssertNoServerErrors();
        nodeB.AssertNoServerErrors();
    }

    [Fact]
    public async Task Listen_names_contacts_saved_while_it_runs_and_saves_a_file_sent_in_parts()
    {
        await using TestNode node = await TestNode.StartAsync();
        string bobPath = NewIdentity("bob.json"), saveDir = Path.Combine(_dir, "received");
        using Identity alice = Identity.Create(), carol = Identity.Create(), bob = Identity.Load(bobPath);
        await Contacts.ChangeAsync(bobPath, c => c.Add("alice", alice.Card, replace: false), CancellationToken.None);
        using MegaNetClient client = node.Client();
        byte[] file = new byte[(3 * FileParts.SliceLength("pic.bin")) + 7];
        new Random(11).NextBytes(file);

        using var listen = new RunningMeganet(_dir, "listen", "-i", bobPath, "--node", node.Address.ToString(), "--ack", "--save-files", saveDir);
        await listen.WaitForAsync("first contact with", stderr: true); // said once subscribed
        await client.SendFileInPartsAsync(alice, bob.Card, file, "pic.bin");
        await listen.WaitForAsync($" from alice: file 'pic.bin' ({file.Length} bytes in 4 parts; saved as {Path.Combine(saveDir, "pic.bin")})");
        Assert.Equal(file, await File.ReadAllBytesAsync(Path.Combine(saveDir, "pic.bin")));

        // Carol, unknown, is shown by her card; saved as a contact meanwhile, by her name from her next message on.
        await client.SendAsync(carol, bob.Card, Text("before"), "text/plain; charset=utf-8");
        await listen.WaitForAsync($" from {carol.Card}: before");
        await Contacts.ChangeAsync(bobPath, c => c.Add("carol", carol.Card, replace: false), CancellationToken.None);
        await client.SendAsync(carol, bob.Card, Text("after"), "text/plain; charset=utf-8");
        await listen.WaitForAsync(" from carol: after");

        // Every part and message acknowledged: the mailbox empties.
        await MailboxEmptiesAsync(client, bob, listen);

        node.AssertNoServerErrors();
    }

    [Theory]
    [InlineData(true)] // the file made whole is saved and its parts deleted
    [InlineData(false)] // its parts are kept, now as a file whole, and everything stays on the node
    public async Task Listen_fetches_again_the_parts_it_left_on_the_node_once_a_file_coming_whole_makes_room(bool ack)
    {
        // A part beyond the parts spool's caps is left on the node for a later fetch. A listen reads each entry once, so
        // it never came back for it, however much room was made while it ran: the file waited for a fetch, or expired.
        await using TestNode node = await TestNode.StartAsync();
        string bobPath = NewIdentity("bob.json"), saveDir = Path.Combine(_dir, "received");
        using Identity alice = Identity.Create(), bob = Identity.Load(bobPath);
        using MegaNetClient client = node.Client();

        // As many files from alice begun here as the spool takes from one sender at once (one part of two each), as an
        // earlier fetch left them.
        ReceivedParts spool = ReceivedParts.Beside(bobPath);
        var begun = new List<IReadOnlyList<byte[]>>();
        for (int i = 0; i < ReceivedParts.MaxOpenFilesPerSender; i++)
        {
            string name = $"f{i:D2}.bin";
            byte[] content = new byte[FileParts.SliceLength(name) + 1];
            new Random(i).NextBytes(content);
            begun.Add(FileParts.Split(content, name));
            Assert.IsType<ReceivedParts.Waiting>(spool.Add(TestParts.Part(alice, begun[i][0], name)));
        }

        byte[] late = new byte[FileParts.SliceLength("late.bin") + 5];
        new Random(99).NextBytes(late);
        using var listen = new RunningMeganet(_dir, ["listen", "-i", bobPath, "--node", node.Address.ToString(), "--save-files", saveDir, .. ack ? ["--ack"] : Array.Empty<string>()]);
        await listen.WaitForAsync("first contact with", stderr: true); // said once subscribed
        await client.SendFileInPartsAsync(alice, bob.Card, late, "late.bin");
        // Its parts may reach the node in either order.
        await listen.WaitForAsync("part 1 of file 'late.bin' is left on the node for now", stderr: true);
        await listen.WaitForAsync("part 2 of file 'late.bin' is left on the node for now", stderr: true);

        // The last part of one of the files begun: that file is whole, which makes room among the files arriving.
        await client.SendAsync(alice, bob.Card, begun[0][1], FileParts.ContentType, "f00.bin");
        await listen.WaitForAsync($": file 'late.bin' ({late.Length} bytes in 2 parts; saved as {Path.Combine(saveDir, "late.bin")})");
        Assert.Equal(late, await File.ReadAllBytesAsync(Path.Combine(saveDir, "late.bin")));
        // Each file shown once: the mailbox fetched again from the parts left on it (and, without --ack, through the
        // last part of f00.bin still there) showed nothing else again, nor reported it as a copy.
        Assert.Single(listen.Stdout, l => l.Contains("'late.bin'", StringComparison.Ordinal));
        Assert.Single(listen.Stdout, l => l.Contains("'f00.bin'", StringComparison.Ordinal));
        Assert.Equal(2, listen.Stdout.Length);
        Assert.DoesNotContain(listen.Stderr, l => l.Contains("skipped", StringComparison.Ordinal));
        if (!ack)
        {
            Assert.Equal(3, (await client.FetchAsync(bob)).WaitingCount);
            return;
        }

        // The parts fetched again are acknowledged too: the mailbox empties.
        await MailboxEmptiesAsync(client, bob, listen);

        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task Listen_fetches_a_part_left_for_its_senders_cap_again_only_once_that_sender_makes_room_and_only_the_entries_left()
    {
        // The retry ran whenever room was made anywhere in the spool, and read the mailbox from the oldest entry left
        // on, a page of 100: a part left for its sender's cap was fetched (a mailbox open each time) and left again
        // each time another sender's file came whole, and each fetch brought every entry after it too.
        await using TestNode node = await TestNode.StartAsync();
        var authenticator = (MegaNet.Node.Admission.MailboxAuthenticator)node.Services.GetService(typeof(MegaNet.Node.Admission.MailboxAuthenticator))!;
        await using var proxy = new FreezableProxy(node.Address);
        string bobPath = NewIdentity("bob.json"), saveDir = Path.Combine(_dir, "received");
        using Identity alice = Identity.Create(), carol = Identity.Create(), bob = Identity.Load(bobPath);
        using MegaNetClient client = node.Client();

        // As many files from alice begun here as the spool takes from one sender at once.
        ReceivedParts spool = ReceivedParts.Beside(bobPath);
        var begun = new List<IReadOnlyList<byte[]>>();
        for (int i = 0; i < ReceivedParts.MaxOpenFilesPerSender; i++)
        {
            string name = $"f{i:D2}.bin";
            begun.Add(FileParts.Split(RandomNumberGenerator.GetBytes(FileParts.SliceLength(name) + 1), name));
            Assert.IsType<ReceivedParts.Waiting>(spool.Add(TestParts.Part(alice, begun[i][0], name)));
        }

        byte[] late = RandomNumberGenerator.GetBytes(FileParts.SliceLength("late.bin") + 5);
        using var listen = new RunningMeganet(_dir, "listen", "-i", bobPath, "--node", proxy.Address.ToString(), "--save-files", saveDir);
        await listen.WaitForAsync("first contact with", stderr: true);
        await client.SendFileInPartsAsync(alice, bob.Card, late, "late.bin");
        await listen.WaitForAsync("part 1 of file 'late.bin' is left on the node for now", stderr: true);
        await listen.WaitForAsync("part 2 of file 'late.bin' is left on the node for now", stderr: true);
        int opens = authenticator.UsedCount;

        // Carol's files come whole, each making room, but none among alice's files arriving: nothing is fetched.
        for (int i = 0; i < 3; i++)
        {
            await client.SendFileInPartsAsync(carol, bob.Card, RandomNumberGenerator.GetBytes(2 * FileParts.SliceLength($"c{i}.bin")), $"c{i}.bin");
            await listen.WaitForAsync($"file 'c{i}.bin'");
        }

        await client.SendAsync(carol, bob.Card, Text("after"), "text/plain; charset=utf-8"); // after any retry of c2.bin's
        await listen.WaitForAsync(": after");
        Assert.Equal(opens, authenticator.UsedCount);
        Assert.Single(listen.Stderr, l => l.Contains("part 1 of file 'late.bin' is left on the node", StringComparison.Ordinal));
        Assert.Single(listen.Stderr, l => l.Contains("part 2 of file 'late.bin' is left on the node", StringComparison.Ordinal));

        // One of alice's files comes whole: the two entries left are fetched again, with one open, and nothing after
        // them (carol's six parts of the largest size, still on the node without --ack).
        long carried = proxy.ToClientBytes;
        await client.SendAsync(alice, bob.Card, begun[0][1], FileParts.ContentType, "f00.bin");
        await listen.WaitForAsync($": file 'late.bin' ({late.Length} bytes in 2 parts; saved as {Path.Combine(saveDir, "late.bin")})");
        Assert.Equal(late, await File.ReadAllBytesAsync(Path.Combine(saveDir, "late.bin")));
        Assert.Equal(opens + 1, authenticator.UsedCount);
        // What the node sent meanwhile: f00.bin's last part (small) on the subscription, and late.bin's parts, one of
        // the largest size and one small.
        long largest = EnvelopeFormat.PayloadClasses[^1];
        Assert.True(proxy.ToClientBytes - carried < largest * 3 / 2, $"{proxy.ToClientBytes - carried:N0} bytes came for late.bin's parts, where one is {largest:N0}");
        Assert.DoesNotContain(listen.Stderr, l => l.Contains("skipped", StringComparison.Ordinal));
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task Listen_fetches_deferred_parts_again_when_room_is_made_without_any_mail_coming()
    {
        // The retry ran only after a message came on the subscription: room made by a fetch beside the listen (files
        // handed over, or come whole there) went unseen until the next mail, and with none the parts expired.
        await using TestNode node = await TestNode.StartAsync();
        string bobPath = NewIdentity("bob.json"), saveDir = Path.Combine(_dir, "received");
        using Identity alice = Identity.Create(), bob = Identity.Load(bobPath);
        using MegaNetClient client = node.Client();
        ReceivedParts spool = ReceivedParts.Beside(bobPath);
        var begun = new List<IReadOnlyList<byte[]>>();
        for (int i = 0; i < ReceivedParts.MaxOpenFilesPerSender; i++)
        {
            string name = $"f{i:D2}.bin";
            begun.Add(FileParts.Split(RandomNumberGenerator.GetBytes(FileParts.SliceLength(name) + 1), name));
            Assert.IsType<ReceivedParts.Waiting>(spool.Add(TestParts.Part(alice, begun[i][0], name)));
        }

        byte[] late = RandomNumberGenerator.GetBytes(FileParts.SliceLength("late.bin") + 5);
        using var listen = new RunningMeganet(_dir, "listen", "-i", bobPath, "--node", node.Address.ToString(), "--save-files", saveDir, "--ack");
        await listen.WaitForAsync("first contact with", stderr: true);
        await client.SendFileInPartsAsync(alice, bob.Card, late, "late.bin");
        await listen.WaitForAsync("part 1 of file 'late.bin' is left on the node for now", stderr: true);
        await listen.WaitForAsync("part 2 of file 'late.bin' is left on the node for now", stderr: true);

        // Another process (as a fetch would) makes one of alice's files whole: no mail comes to the listen.
        Assert.IsType<ReceivedParts.Whole>(spool.Add(TestParts.Part(alice, begun[0][1], "f00.bin")));
        await listen.WaitForAsync($": file 'late.bin' ({late.Length} bytes in 2 parts; saved as {Path.Combine(saveDir, "late.bin")})");
        Assert.Equal(late, await File.ReadAllBytesAsync(Path.Combine(saveDir, "late.bin")));
        await MailboxEmptiesAsync(client, bob, listen);
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task An_identity_is_never_replaced_without_force_not_even_by_a_save_racing_the_check()
    {
        // Library: a save over an existing file fails and leaves it (and no temporary copy of the keys) as it was.
        string path = NewIdentity("alice.json");
        byte[] first = await File.ReadAllBytesAsync(path);
        using (Identity other = Identity.Create())
        {
            Assert.ThrowsAny<IOException>(() => other.Save(path));
            Assert.Equal(first, await File.ReadAllBytesAsync(path));
            other.Save(path, overwrite: true);
            Assert.Equal(other.Card.ToString(), Identity.Load(path).Card.ToString());
        }

        // Four saves at once to one new name (four 'id new' that all found it free): one wins, and the file holds its
        // keys whole. Rounds, since the window is small.
        string contested = Path.Combine(_dir, "contested.json");
        Identity winner = null!;
        for (int round = 0; round < 300; round++)
        {
            File.Delete(contested);
            Identity[] ids = Enumerable.Range(0, 4).Select(_ => Identity.Create()).ToArray();
            using var start = new Barrier(ids.Length);
            bool[] saved = await Task.WhenAll(ids.Select(id => Task.Run(() =>
            {
                start.SignalAndWait();
                try
                {
                    id.Save(contested);
                    return true;
                }
                catch (IOException)
                {
                    return false;
                }
            })));
            Assert.True(saved.Count(s => s) == 1, $"round {round}: {saved.Count(s => s)} saves succeeded");
            winner = ids.Where((_, i) => saved[i]).Single();
            Assert.Equal(winner.Card.ToString(), Identity.Load(contested).Card.ToString());
            foreach (Identity id in ids.Where(id => id != winner))
            {
                id.Dispose();
            }
        }

        Assert.Empty(Directory.GetFiles(_dir, "*.tmp"));

        // The command: refused without --force (exit 1, file untouched), replaced with it.
        AssertExit(await Meganet("id", "new", "--identity", contested), 1, "already exists; use --force");
        Assert.Equal(winner.Card.ToString(), Identity.Load(contested).Card.ToString());
        Result forced = await Meganet("id", "new", "--identity", contested, "--force");
        AssertExit(forced, 0);
        Assert.Equal(forced.Stdout.Trim(), Identity.Load(contested).Card.ToString());
        winner.Dispose();
    }

    /// <summary>Waits for <paramref name="owner"/>'s mailbox to empty (a listen with <c>--ack</c> acknowledging what it
    /// showed), failing after a minute with the listen's standard error.</summary>
    private static async Task MailboxEmptiesAsync(MegaNetClient client, Identity owner, RunningMeganet listen)
    {
        var clock = Stopwatch.StartNew();
        while ((await client.FetchAsync(owner)).WaitingCount > 0)
        {
            Assert.True(clock.Elapsed < TimeSpan.FromMinutes(1), $"still waiting after a minute: {string.Join('\n', listen.Stderr)}");
            await Task.Delay(50);
        }
    }

    [Fact]
    public async Task Listen_renews_a_subscription_the_node_ended_for_its_lifetime_without_a_word()
    {
        await using TestNode node = await TestNode.StartAsync(o => o.SubscriptionLifetimeSeconds = 2);
        var authenticator = (MegaNet.Node.Admission.MailboxAuthenticator)node.Services.GetService(typeof(MegaNet.Node.Admission.MailboxAuthenticator))!;
        string bobPath = NewIdentity("bob.json");
        using Identity alice = Identity.Create(), bob = Identity.Load(bobPath);
        using MegaNetClient sender = node.Client();
        await sender.SendAsync(alice, bob.Card, Text("one"), "text/plain; charset=utf-8");
        using var listen = new RunningMeganet(_dir, "listen", "-i", bobPath, "--node", node.Address.ToString());
        await listen.WaitForAsync(": one");

        // Two lifetimes end (a subscription each, with a challenge each: a nonce used each), then mail comes.
        var clock = Stopwatch.StartNew();
        while (authenticator.UsedCount < 3)
        {
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(60) && !listen.Process.HasExited,
                $"{authenticator.UsedCount} subscription(s) in {clock.Elapsed.TotalSeconds:0} s with a lifetime of 2 s; stderr:\n{string.Join('\n', listen.Stderr)}");
            await Task.Delay(50);
        }

        await sender.SendAsync(alice, bob.Card, Text("two"), "text/plain; charset=utf-8");
        await listen.WaitForAsync(": two");
        Assert.Equal(["one", "two"], listen.Stdout.Select(line => line[(line.LastIndexOf(": ", StringComparison.Ordinal) + 2)..]));
        // The expected end is no loss: before, each printed "subscription lost (the node said Unavailable: ...)" and
        // waited a second.
        Assert.DoesNotContain(listen.Stderr, line => line.Contains("subscription lost", StringComparison.Ordinal) || line.Contains("subscribed again", StringComparison.Ordinal));
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task Listen_subscribes_again_after_a_dead_connection_and_a_node_restart_and_gives_up_after_retry_for()
    {
        await using TestNode node = await TestNode.StartAsync(o => o.KeepaliveSeconds = 1);
        // A restart keeps the port (and the data directory, so the node id).
        node.Options.Listen = $"127.0.0.1:{node.Address.Port.ToString(CultureInfo.InvariantCulture)}";
        await using var proxy = new FreezableProxy(node.Address);
        string bobPath = NewIdentity("bob.json");
        using Identity alice = Identity.Create(), bob = Identity.Load(bobPath);
        using (MegaNetClient sender = node.Client())
        {
            await sender.SendAsync(alice, bob.Card, Text("one"), "text/plain; charset=utf-8");
        }

        // --retry-for covers the node's stop and restart below (listen retries after 1, 2, 4, 8, 16 s): 15 s left a
        // slow restart on a loaded machine no attempt after it.
        using var listen = new RunningMeganet(_dir, "listen", "-i", bobPath, "--node", proxy.Address.ToString(), "--retry-for", "30s");
        await listen.WaitForAsync(": one");

        // The connection goes half-open once keepalives were seen (two in a row, one a second, tell listen the node's
        // interval; before that its watchdog does not run): the watchdog notices, listen subscribes again. The proxy
        // counts what it carried to listen: three reads (keepalives; listen's own pings come every 30 s), then a second
        // for listen to take them in. (A fixed 5 s wait failed once on a loaded machine.)
        int carried = proxy.ToClientReads;
        for (int waited = 0; waited < 600 && proxy.ToClientReads < carried + 3; waited++)
        {
            await Task.Delay(100);
        }

        Assert.True(proxy.ToClientReads >= carried + 3, $"the node sent listen {proxy.ToClientReads - carried} keepalives in a minute, not one a second");
        await Task.Delay(1000);
        proxy.Freeze();
        await listen.WaitForAsync("No mail and no keepalive", stderr: true);
        using (MegaNetClient sender = node.Client())
        {
            await sender.SendAsync(alice, bob.Card, Text("two"), "text/plain; charset=utf-8");
        }

        await listen.WaitForAsync(": two");

        // The node restarts ("subscribe again with after_seq N to resume"): before, listen ended with exit code 2.
        // (The frozen connection is closed first: the node's graceful stop would wait 30 s for it.)
        proxy.CloseFrozen();
        await node.StopAsync();
        await listen.WaitForAsync("subscribing again after seq 2", stderr: true);
        await node.RestartAsync();
        using (MegaNetClient sender = node.Client())
        {
            await sender.SendAsync(alice, bob.Card, Text("three"), "text/plain; charset=utf-8");
        }

        await listen.WaitForAsync(": three");
        await listen.WaitForAsync("subscribed again after seq", stderr: true);
        Assert.Equal(["one", "two", "three"], listen.Stdout.Select(line => line[(line.LastIndexOf(": ", StringComparison.Ordinal) + 2)..]));

        // Down for good: tries for --retry-for, then exit code 2 with one line saying so.
        await node.StopAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(180));
        try
        {
            await listen.Process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException) when (timeout.IsCancellationRequested)
        {
            Assert.Fail($"listen still running 180 s after the node stopped for good (--retry-for 30s); stderr:\n{string.Join('\n', listen.Stderr)}");
        }

        Assert.True(listen.Process.ExitCode == 2, $"exit code {listen.Process.ExitCode}; stderr:\n{string.Join('\n', listen.Stderr)}");
        Assert.True(listen.Stderr[^1].Contains("gave up after", StringComparison.Ordinal), string.Join('\n', listen.Stderr));
        Assert.DoesNotContain(listen.Stderr, line => line.Contains("   at ", StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("fetch", "-1")]
    [InlineData("listen", "x")]
    [InlineData("fetch", "18446744073709551616")]
    public async Task A_bad_cursor_is_one_line_naming_the_option(string command, string value)
    {
        string bobPath = NewIdentity("bob.json");
        Result r = await Meganet(command, "-i", bobPath, "--node", NoNode, "--after", value);
        AssertExit(r, 1, $"--after: '{value}' is not a sequence number");
        Assert.Equal([$"meganet: --after: '{value}' is not a sequence number (a whole number, 0 or more).", $"Run 'meganet {command} --help' for usage."],
            r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.DoesNotContain("System.UInt64", r.Stderr, StringComparison.Ordinal);
        Assert.Empty(r.Stdout);
    }

    [Theory]
    [InlineData("meganet: Unrecognized command or argument '--bogus'.", "Run 'meganet send --help' for usage.", "send", "--to", "mn1x", "--bogus")]
    [InlineData("meganet: Option '--to' is required.", "Run 'meganet send --help' for usage.", "send", "--text", "hi")]
    [InlineData("meganet: Required command was not provided.", "Run 'meganet id --help' for usage.", "id")]
    [InlineData("meganet: 'frobnicate' is not a command. Commands: node, id, contact, send, fetch, listen, verify-receipt, status, audit, verify, bench, load, profile.", "Run 'meganet --help' for usage.", "frobnicate")]
    [InlineData("meganet: 'neww' is not a command of 'meganet id'; did you mean 'new'? Commands: new, show.", "Run 'meganet id --help' for usage.", "id", "neww")]
    [InlineData("meganet: 'ad' is not a command of 'meganet contact'; did you mean 'add'? Commands: add, remove, list.", "Run 'meganet contact --help' for usage.", "contact", "ad", "bob", "mn1x")]
    // Values out of range, found once the line is parsed; a node setting given by a flag is named by the flag.
    [InlineData("meganet node: --threads must be 1 to 1024.", "Run 'meganet node --help' for usage.", "node", "--threads", "0")]
    [InlineData("meganet node: --listen '127.0.0.1:70000': port 70000 is out of range", "Run 'meganet node --help' for usage.", "node", "--listen", "127.0.0.1:70000")]
    [InlineData("meganet node: --listen 0.0.0.0:7700 is reachable beyond this machine", "Run 'meganet node --help' for usage.", "node", "--listen", "0.0.0.0:7700")]
    [InlineData("meganet node: --metrics-listen 127.0.0.1:7700 is the gRPC address (Listen 127.0.0.1:7700)", "Run 'meganet node --help' for usage.", "node", "--metrics-listen", "127.0.0.1:7700")]
    [InlineData("meganet node: --tls-cert 'missing.pem' does not exist.", "Run 'meganet node --help' for usage.", "node", "--tls-cert", "missing.pem")]
    [InlineData("meganet node: --tls-key 'missing.key' is given without a certificate", "Run 'meganet node --help' for usage.", "node", "--tls-key", "missing.key")]
    [InlineData("meganet: --ttl-days must be a number of days above 0", "Run 'meganet send --help' for usage.", "send", "--to", "mn1x", "--text", "hi", "--ttl-days", "0")]
    [InlineData("meganet bench: --seconds must be", "Run 'meganet bench --help' for usage.", "bench", "--seconds", "0.1")]
    [InlineData("meganet load: --clients must be at least 1 (got 0).", "Run 'meganet load --help' for usage.", "load", "--clients", "0")]
    [InlineData("meganet verify: --batch must be 1 to 1,048,576.", "Run 'meganet verify --help' for usage.", "verify", "--in", "in.jsonl", "--batch", "0")]
    [InlineData("meganet profile: --refresh must be 1 to", "Run 'meganet profile --help' for usage.", "profile", "--refresh", "0")]
    public async Task A_command_line_mistake_says_what_is_wrong_and_where_the_usage_is_on_stderr_only(string error, string hint, params string[] args)
    {
        // Not the whole help text on stdout, where a script reading --json output would get it.
        Result r = await Meganet(args);
        AssertExit(r, 1, error);
        Assert.Equal(hint, r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries)[^1]);
        Assert.Empty(r.Stdout);
    }

    [Fact]
    public async Task Bare_meganet_prints_the_overview()
    {
        Result r = await Meganet([]);
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("Commands:", r.Stdout, StringComparison.Ordinal);
        Assert.Contains("verify-receipt", r.Stdout, StringComparison.Ordinal);
    }
}
