using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using Google.Protobuf;
using MegaNet.Api;
using MegaNet.Api.V1;
using static MegaNet.Node.Tests.MeganetProcess;

namespace MegaNet.Node.Tests;

/// <summary>
/// The JavaScript client in examples/javascript, written from docs/protocol.md and the unmodified .proto files (with
/// libsodium and gRPC's own Node.js libraries), exchanges mail with the C# client through a real node on 127.0.0.1: the
/// protocol document is checked by a second implementation in another language, byte for byte (signing bytes,
/// envelope ids, proof of work, sealing, content signatures, mailbox challenges, tree heads and inclusion proofs).
/// Needs Node.js 18 or later and <c>npm ci</c> in examples/javascript, which <c>.ci/run</c> does.
/// </summary>
public sealed class JavaScriptClientTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("meganet-js-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public async Task The_javascript_client_and_the_csharp_client_exchange_mail_through_a_node()
    {
        // A quota of 4: alice's mailbox asks for a stamp once 2 messages wait (MailboxPowFromPercent 50), which the
        // JavaScript client learns only from the refusal's pow-bits trailer.
        await using TestNode node = await TestNode.StartAsync(o => o.MailboxMaxCount = 4);
        using MegaNetClient client = node.Client();
        using Identity alice = Identity.Create();
        string url = node.Address.ToString();
        string nodeId = Convert.ToHexString((await client.Relay.ChallengeAsync(new ChallengeRequest { Address = ByteString.CopyFrom(alice.Address) })).NodeId.Span).ToLowerInvariant();
        JsonNode status = JsonNode.Parse(Line(await Js("status", "--node", url)))!;
        Assert.Equal(nodeId, (string)status["node_id"]!);
        Assert.Equal(4, (int)status["status"]!["limits"]!["mailbox_max_count"]!);

        // Identity files are one format: each client reads the other's.
        string alicePath = Path.Combine(_dir, "alice.json"), bobPath = Path.Combine(_dir, "bob.json");
        alice.Save(alicePath);
        Assert.Equal(alice.Card.ToString(), Line(await Js("id", "show", alicePath)));
        string bobCard = Line(await Js("id", "new", bobPath));
        using Identity bob = Identity.Load(bobPath);
        Assert.Equal(bobCard, bob.Card.ToString());

        // JavaScript → C#: three texts; the third needs the mailbox's stamp.
        string[] texts = ["hello from JavaScript", "Grüße ✓ — 🎉", "the third, stamped"];
        var receipts = new List<JsonObject>();
        foreach (string message in texts)
        {
            receipts.Add(JsonNode.Parse(Line(await Js("send", "-i", bobPath, "--to", alice.Card.ToString(), "--text", message, "--node", url, "--node-id", nodeId)))!.AsObject());
        }

        Assert.Equal([0, 0], receipts.Take(2).Select(r => (int)r["pow_bits"]!));
        Assert.True((int)receipts[2]["pow_bits"]! > 0, receipts[2].ToJsonString());
        IReadOnlyList<ReceivedMessage> received = (await client.FetchAsync(alice)).Messages;
        Assert.Equal(texts, received.Select(m => m.Content.Content.ToStringUtf8()));
        Assert.All(received, m => Assert.Equal(bobCard, m.Sender.ToString()));
        Assert.Equal(receipts.Select(r => (string)r["envelope_id"]!), received.Select(m => Convert.ToHexString(m.EnvelopeId).ToLowerInvariant()));
        Assert.Equal(receipts.Select(r => (long)r["log_index"]!), received.Select(m => m.LogIndex));

        // C# → JavaScript: a text and a file, read and acknowledged by the JavaScript client.
        byte[] file = [0, 1, 2, 250, 255];
        Receipt text = await client.SendAsync(alice, bob.Card, Encoding.UTF8.GetBytes("hello from C# ✓"), "text/plain; charset=utf-8");
        Receipt attachment = await client.SendAsync(alice, bob.Card, file, "application/octet-stream", "data.bin");
        Result fetched = await Js("fetch", "-i", bobPath, "--node", url, "--node-id", nodeId, "--ack");
        JsonObject[] lines = MeganetResults.JsonLines(fetched);
        Assert.Equal(2, lines.Length);
        Assert.Equal("hello from C# ✓", (string)lines[0]["text"]!);
        Assert.Equal(("data.bin", Convert.ToBase64String(file)), ((string)lines[1]["file_name"]!, (string)lines[1]["file_base64"]!));
        Assert.All(lines, l => Assert.Equal(alice.Card.ToString(), (string)l["sender"]!));
        Assert.Equal([text.EnvelopeId, attachment.EnvelopeId], lines.Select(l => ByteString.CopyFrom(Convert.FromHexString((string)l["id"]!))));
        Assert.Contains("acknowledged 2 message(s)", fetched.Stderr, StringComparison.Ordinal);
        Assert.Empty((await Js("fetch", "-i", bobPath, "--node", url, "--node-id", nodeId)).Stdout.Trim());

        // A file in parts (docs/protocol.md): the parts of a file not yet whole stay on the node; once the last one has
        // come, the file shows once, whole, and all its parts are acknowledged.
        byte[] large = new byte[(2 * FileParts.SliceLength("big.bin")) + 3];
        new Random(5).NextBytes(large);
        IReadOnlyList<byte[]> parts = FileParts.Split(large, "big.bin");
        await client.SendAsync(alice, bob.Card, parts[0], FileParts.ContentType, "big.bin");
        await client.SendAsync(alice, bob.Card, parts[2], FileParts.ContentType, "big.bin");
        Result partial = await Js("fetch", "-i", bobPath, "--node", url, "--node-id", nodeId, "--ack");
        Assert.Empty(partial.Stdout.Trim());
        Assert.Contains("2 of 3 parts of file 'big.bin' here; left on the node until the rest come", partial.Stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("acknowledged", partial.Stderr, StringComparison.Ordinal);
        await client.SendAsync(alice, bob.Card, parts[1], FileParts.ContentType, "big.bin");
        Result whole = await Js("fetch", "-i", bobPath, "--node", url, "--node-id", nodeId, "--ack");
        JsonNode joined = JsonNode.Parse(Line(whole))!;
        Assert.Equal(("big.bin", 3, Convert.ToBase64String(large)), ((string)joined["file_name"]!, (int)joined["parts"]!, (string)joined["file_base64"]!));
        Assert.Contains("acknowledged 3 message(s)", whole.Stderr, StringComparison.Ordinal);

        // A part sent twice goes with its file; a set whose slices do not make the file it announces (changed by its
        // sender: a relay cannot) is one unreadable line, and every part of it is acknowledged.
        IReadOnlyList<byte[]> spoilt = FileParts.Split(large, "bad.bin");
        byte[] altered = spoilt[1].ToArray();
        altered[^1] ^= 1;
        foreach (byte[] part in new[] { spoilt[0], spoilt[0], altered, spoilt[2] })
        {
            await client.SendAsync(alice, bob.Card, part, FileParts.ContentType, "bad.bin");
        }

        Result bad = await Js("fetch", "-i", bobPath, "--node", url, "--node-id", nodeId, "--ack");
        Assert.Contains("the parts do not make the file they announce", (string)JsonNode.Parse(Line(bad))!["unreadable"]!, StringComparison.Ordinal);
        Assert.Contains("acknowledged 4 message(s)", bad.Stderr, StringComparison.Ordinal);
        Assert.Equal(0, (await client.FetchAsync(bob)).WaitingCount);

        // Subscribe: one message waiting, one sent once the subscription is registered (the first keepalive).
        await client.SendAsync(alice, bob.Card, Encoding.UTF8.GetBytes("waiting"), "text/plain; charset=utf-8");
        ProcessStartInfo listening = Psi("listen", "-i", bobPath, "--node", url, "--node-id", nodeId, "--after", lines[1]["seq"]!.ToString(), "--count", "2");
        listening.RedirectStandardOutput = listening.RedirectStandardError = true;
        using (Process listen = Process.Start(listening)!)
        {
            try
            {
                Task<string> output = listen.StandardOutput.ReadToEndAsync();
                // Read up to that line (a warning from Node.js itself may come first).
                using var subscribing = new CancellationTokenSource(TimeSpan.FromMinutes(1));
                var before = new StringBuilder();
                string? line;
                while ((line = await listen.StandardError.ReadLineAsync(subscribing.Token)) is not null && line != "subscribed")
                {
                    before.AppendLine(line);
                }

                Assert.True(line is not null, $"listen ended its stderr before subscribing: {before}");
                await client.SendAsync(alice, bob.Card, Encoding.UTF8.GetBytes("live"), "text/plain; charset=utf-8");
                await listen.WaitForExitAsync().WaitAsync(TimeSpan.FromMinutes(1));
                Assert.True(listen.ExitCode == 0, await listen.StandardError.ReadToEndAsync());
                Assert.Equal(["waiting", "live"], (await output).Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => (string)JsonNode.Parse(l)!["text"]!));
            }
            finally
            {
                if (!listen.HasExited)
                {
                    listen.Kill(entireProcessTree: true);
                }
            }
        }

        Assert.Equal(2, (await client.FetchAsync(bob)).Messages.Count);
        await client.AckAsync(bob, [.. (await client.FetchAsync(bob)).Messages.Select(m => m.Seq)]);

        // The JavaScript client signs a challenge only for the node it was told of.
        await client.SendAsync(alice, bob.Card, Encoding.UTF8.GetBytes("unread"), "text/plain; charset=utf-8");
        string otherNode = new('0', 64);
        Result refused = await RunAsync(Psi("fetch", "-i", bobPath, "--node", url, "--node-id", otherNode));
        Assert.Equal(1, refused.ExitCode);
        Assert.Contains("not the one given with --node-id", refused.Stderr, StringComparison.Ordinal);
        Assert.Equal("unread", Assert.Single((await client.FetchAsync(bob)).Messages).Content.Content.ToStringUtf8());

        // fetch starts after --after; an option a command has no use for is refused, not ignored.
        ulong unread = Assert.Single((await client.FetchAsync(bob)).Messages).Seq;
        Assert.Equal("unread", (string)JsonNode.Parse(Line(await Js("fetch", "-i", bobPath, "--node", url, "--node-id", nodeId, "--after", (unread - 1).ToString(CultureInfo.InvariantCulture))))!["text"]!);
        Assert.Equal(string.Empty, (await Js("fetch", "-i", bobPath, "--node", url, "--node-id", nodeId, "--after", unread.ToString(CultureInfo.InvariantCulture))).Stdout.Trim());

        // fetch --ack into a reader that went away (a broken pipe) deletes nothing: console.log had dropped the error.
        Result gone = await RunAsync(Psi("fetch", "-i", bobPath, "--node", url, "--node-id", nodeId, "--ack"), closeStdout: true);
        Assert.Equal(1, gone.ExitCode);
        Assert.Contains("cannot write to standard output", gone.Stderr, StringComparison.Ordinal);
        Assert.Contains("no message was acknowledged", gone.Stderr, StringComparison.Ordinal);
        Assert.Equal(unread, Assert.Single((await client.FetchAsync(bob)).Messages).Seq);
        Result stray = await RunAsync(Psi("status", "--node", url, "--count", "3"));
        Assert.Equal(1, stray.ExitCode);
        Assert.Contains("status does not take --count", stray.Stderr, StringComparison.Ordinal);

        // And takes a receipt only from the node it was told of (after submitting: a receipt comes with the answer).
        Result foreign = await RunAsync(Psi("send", "-i", bobPath, "--to", alice.Card.ToString(), "--text", "x", "--node", url, "--node-id", otherNode));
        Assert.Equal(1, foreign.ExitCode);
        Assert.Contains("signed by another key than the node id given", foreign.Stderr, StringComparison.Ordinal);
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task The_javascript_client_reaches_a_self_signed_node_only_given_its_certificate()
    {
        (string certificate, string key) = TlsNodeTests.SelfSigned(_dir, "node");
        (string impostor, _) = TlsNodeTests.SelfSigned(_dir, "impostor");
        await using TestNode node = await TestNode.StartAsync(o =>
        {
            o.TlsCertificate = certificate;
            o.TlsKey = key;
        });
        string url = node.Address.ToString();
        JsonNode status = JsonNode.Parse(Line(await Js("status", "--node", url, "--tls-cert", certificate)))!;
        Assert.Equal(64, ((string)status["node_id"]!).Length);
        foreach (string[] refused in new[] { new[] { "status", "--node", url }, ["status", "--node", url, "--tls-cert", impostor] })
        {
            Result r = await RunAsync(Psi(refused));
            Assert.True(r.ExitCode == 2, $"{string.Join(' ', refused)} exited {r.ExitCode}: {r.Stderr}{r.Stdout}");
            Assert.Contains("UNAVAILABLE", r.Stderr, StringComparison.Ordinal);
        }

        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task The_javascript_client_takes_a_card_only_in_the_text_the_csharp_client_takes()
    {
        await using TestNode node = await TestNode.StartAsync();
        using MegaNetClient client = node.Client();
        // A card with a '-' or '_' in it, to spell them the way base64 does ('+', '/').
        Identity alice = Identity.Create();
        while (!alice.Card.ToString().AsSpan(3).ContainsAny('-', '_'))
        {
            alice.Dispose();
            alice = Identity.Create();
        }

        using (alice)
        {
            string url = node.Address.ToString(), card = alice.Card.ToString(), bobPath = Path.Combine(_dir, "bob.json");
            await Js("id", "new", bobPath);
            const string Alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            (string Text, bool Taken)[] cases =
            [
                (card, true),
                // Whitespace anywhere is no part of a card (wrapped by a chat or a mail), as .NET's char.IsWhiteSpace
                // has it: U+0085 and U+2028 are whitespace, U+FEFF is not.
                ($" {card[..40]}\n  {card[40..70]}\u0085{card[70..]}\u2028", true),
                ($"{card[..40]}\uFEFF{card[40..]}", false),
                // Node's base64url decoder skips what is not in its alphabet, stops at '=' and takes base64's '+' and '/'.
                ($"{card[..40]}!{card[40..]}", false),
                ($"{card}=", false),
                ($"{card}=AAAA", false),
                ("mn1" + card[3..].Replace('-', '+').Replace('_', '/'), false),
                // The last character's spare bits set: the same 68 bytes, another text.
                (card[..^1] + Alphabet[Alphabet.IndexOf(card[^1], StringComparison.Ordinal) ^ 1], false),
            ];
            foreach ((string text, bool taken) in cases)
            {
                bool csharp = true;
                try
                {
                    ContactCard.Parse(text);
                }
                catch (FormatException)
                {
                    csharp = false;
                }

                Assert.True(csharp == taken, $"ContactCard.Parse {(csharp ? "takes" : "refuses")} '{text}'");
                Result r = await RunAsync(Psi("send", "-i", bobPath, "--to", text, "--text", "hi", "--node", url));
                Assert.True(r.ExitCode == (taken ? 0 : 1), $"send --to '{text}' exited {r.ExitCode}: {r.Stderr}{r.Stdout}");
                if (!taken)
                {
                    Assert.Contains("contact card", r.Stderr, StringComparison.Ordinal);
                }
            }

            Assert.Equal(cases.Count(c => c.Taken), (await client.FetchAsync(alice)).Messages.Count);
            node.AssertNoServerErrors();
        }
    }

    [Fact]
    public async Task The_javascript_client_refuses_a_damaged_identity_file_as_the_csharp_client_does_naming_the_field()
    {
        using Identity alice = Identity.Create();
        string path = Path.Combine(_dir, "alice.json");
        alice.Save(path);
        JsonObject saved = JsonNode.Parse(await File.ReadAllTextAsync(path))!.AsObject();
        string Field(string name) => (string)saved[name]!;
        // Uppercase hex is hex to both.
        string upper = Path.Combine(_dir, "upper.json");
        await File.WriteAllTextAsync(upper, new JsonObject
        {
            ["version"] = 1,
            ["signing_seed"] = Field("signing_seed").ToUpperInvariant(),
            ["encryption_key"] = Field("encryption_key").ToUpperInvariant(),
            ["sending_seed"] = Field("sending_seed").ToUpperInvariant(),
        }.ToJsonString());
        using (Identity read = Identity.Load(upper))
        {
            Assert.Equal(alice.Card.ToString(), read.Card.ToString());
        }

        Assert.Equal(alice.Card.ToString(), Line(await Js("id", "show", upper)));

        // Buffer.from(hex, 'hex') stops at the first character that is not hex: each of these made some identity (a
        // sending seed cut short or grown even showed the card, and would have signed).
        (string Field, JsonNode? Value, string Error)[] damaged =
        [
            ("signing_seed", Field("signing_seed")[..62], "holds a damaged key: its signing_seed is not 64 hex digits (32 bytes)"),
            ("sending_seed", Field("sending_seed") + "00", "holds a damaged key: its sending_seed is not 64 hex digits (32 bytes)"),
            ("sending_seed", Field("sending_seed")[..60] + "zz00", "holds a damaged key: its sending_seed is not 64 hex digits (32 bytes)"),
            ("encryption_key", 42, "holds a damaged key: its encryption_key is not 64 hex digits (32 bytes)"),
            ("encryption_key", null, "is not a version 1 MegaNet identity file: it has no encryption_key"),
            // One digit changed: still 32 bytes of hex, and any 32 bytes are a key; the card saved with them says whose.
            ("encryption_key", Field("encryption_key")[..63] + (Field("encryption_key")[63] == '0' ? "1" : "0"), "holds a damaged key: its keys do not make the card saved with them"),
        ];
        string bad = Path.Combine(_dir, "damaged.json");
        foreach ((string field, JsonNode? value, string error) in damaged)
        {
            JsonObject file = saved.DeepClone().AsObject();
            if (value is null)
            {
                file.Remove(field);
            }
            else
            {
                file[field] = value;
            }

            await File.WriteAllTextAsync(bad, file.ToJsonString());
            Assert.Throws<InvalidDataException>(() => Identity.Load(bad));
            Result r = await RunAsync(Psi("id", "show", bad));
            Assert.True(r.ExitCode == 1, $"id show with {field} = {value?.ToJsonString() ?? "(none)"} exited {r.ExitCode}: {r.Stderr}{r.Stdout}");
            // One line, naming the file and the field (no stack trace).
            Assert.Contains($"meganet.mjs: {bad} {error}\n", r.Stderr, StringComparison.Ordinal);
            Assert.DoesNotContain("    at ", r.Stderr, StringComparison.Ordinal);
            Assert.Empty(r.Stdout);
        }
    }

    [Fact]
    public async Task The_javascript_client_reads_a_sending_time_up_to_the_year_9999_as_the_csharp_client_does()
    {
        await using TestNode node = await TestNode.StartAsync();
        using MegaNetClient client = node.Client();
        using Identity alice = Identity.Create(), bob = Identity.Create();
        string bobPath = Path.Combine(_dir, "bob.json");
        bob.Save(bobPath);
        // Properly signed by alice: the last millisecond .NET's DateTimeOffset holds (9999-12-31T23:59:59.999Z), and
        // the one after it, which JavaScript's Date still holds (up to the year 275760).
        long last = DateTimeOffset.MaxValue.ToUnixTimeMilliseconds();
        foreach (long sent in new[] { last, last + 1 })
        {
            SealedContent inner = SealedContentTests.Inner(alice, $"sent at {sent}");
            inner.SentUnixMs = sent;
            byte[] padded = SealedContentTests.Padded(inner, bob.Card, alice);
            await client.Relay.SubmitAsync(new SubmitRequest { Envelope = SealedContentTests.Wrap(alice, bob.Card, EnvelopeFormat.SealPadded(bob.Card, padded)) });
        }

        FetchResult csharp = await client.FetchAsync(bob);
        Assert.Equal(last, Assert.Single(csharp.Messages).Content.SentUnixMs);
        Assert.Contains("is not a date", Assert.Single(csharp.Unreadable).Reason, StringComparison.Ordinal);

        JsonObject[] lines = MeganetResults.JsonLines(await Js("fetch", "-i", bobPath, "--node", node.Address.ToString(), "--node-id", await NodeId(client, bob)));
        Assert.Equal(2, lines.Length);
        Assert.Equal((last, $"sent at {last}"), ((long)lines[0]["timestamp_unix_ms"]!, (string)lines[0]["text"]!));
        Assert.Equal(csharp.Unreadable[0].Seq, (ulong)lines[1]["seq"]!);
        Assert.Contains("is not a date", (string)lines[1]["unreadable"]!, StringComparison.Ordinal);
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task The_javascript_client_fails_when_its_output_cannot_be_written_and_listen_stops()
    {
        await using TestNode node = await TestNode.StartAsync();
        using MegaNetClient client = node.Client();
        using Identity alice = Identity.Create(), bob = Identity.Create();
        string url = node.Address.ToString(), bobPath = Path.Combine(_dir, "bob.json");
        bob.Save(bobPath);
        string nodeId = await NodeId(client, bob);

        // A reader that went away (| head -1, a broken pipe): console.log had dropped the error, and each exited 0.
        foreach (string[] args in new[] { new[] { "id", "show", bobPath }, ["status", "--node", url] })
        {
            Result r = await RunAsync(Psi(args), closeStdout: true);
            Assert.True(r.ExitCode == 1, $"{string.Join(' ', args)} exited {r.ExitCode}: {r.Stderr}");
            Assert.Contains("meganet.mjs: cannot write to standard output (", r.Stderr, StringComparison.Ordinal);
        }

        // send: the receipt is lost, the message went; the error says so.
        Result sent = await RunAsync(Psi("send", "-i", bobPath, "--to", alice.Card.ToString(), "--text", "unseen receipt", "--node", url, "--node-id", nodeId), closeStdout: true);
        Assert.True(sent.ExitCode == 1, $"send exited {sent.ExitCode}: {sent.Stderr}");
        ReceivedMessage arrived = Assert.Single((await client.FetchAsync(alice)).Messages);
        Assert.Contains("cannot write to standard output (", sent.Stderr, StringComparison.Ordinal);
        Assert.Contains($"; the message was sent (envelope {Convert.ToHexString(arrived.EnvelopeId).ToLowerInvariant()})", sent.Stderr, StringComparison.Ordinal);

        // listen, without --count: its first line cannot be written, so it cancels the subscription and fails (it had
        // gone on listening, for nobody, until killed).
        await client.SendAsync(alice, bob.Card, Encoding.UTF8.GetBytes("waiting"), "text/plain; charset=utf-8");
        Result listened = await RunAsync(Psi("listen", "-i", bobPath, "--node", url, "--node-id", nodeId), closeStdout: true);
        Assert.True(listened.ExitCode == 1, $"listen exited {listened.ExitCode}: {listened.Stderr}");
        Assert.Contains("cannot write to standard output (", listened.Stderr, StringComparison.Ordinal);
        Assert.Contains("; stopped listening", listened.Stderr, StringComparison.Ordinal);
        Assert.Equal("waiting", Assert.Single((await client.FetchAsync(bob)).Messages).Content.Content.ToStringUtf8());
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task The_javascript_client_renews_a_subscription_the_node_ended_for_its_lifetime()
    {
        await using TestNode node = await TestNode.StartAsync(o => o.SubscriptionLifetimeSeconds = 2);
        var authenticator = (MegaNet.Node.Admission.MailboxAuthenticator)node.Services.GetService(typeof(MegaNet.Node.Admission.MailboxAuthenticator))!;
        using MegaNetClient client = node.Client();
        using Identity alice = Identity.Create(), bob = Identity.Create();
        string url = node.Address.ToString(), bobPath = Path.Combine(_dir, "bob.json");
        bob.Save(bobPath);
        string nodeId = await NodeId(client, bob);
        await client.SendAsync(alice, bob.Card, Encoding.UTF8.GetBytes("one"), "text/plain; charset=utf-8");

        ProcessStartInfo listening = Psi("listen", "-i", bobPath, "--node", url, "--node-id", nodeId, "--count", "2");
        listening.RedirectStandardOutput = listening.RedirectStandardError = true;
        using Process listen = Process.Start(listening)!;
        try
        {
            Task<string> output = listen.StandardOutput.ReadToEndAsync();
            Task<string> errors = listen.StandardError.ReadToEndAsync();
            // Two lifetimes end (a challenge used for each new subscription), then the second message comes: before,
            // listen failed at the first end ("exited 2: ... UNAVAILABLE").
            var clock = Stopwatch.StartNew();
            while (authenticator.UsedCount < 3)
            {
                Assert.True(clock.Elapsed < TimeSpan.FromSeconds(60) && !listen.HasExited,
                    $"{authenticator.UsedCount} subscription(s) in {clock.Elapsed.TotalSeconds:0} s with a lifetime of 2 s (exited: {listen.HasExited})" +
                    (listen.HasExited ? $": {await errors}" : ""));
                await Task.Delay(50);
            }

            await client.SendAsync(alice, bob.Card, Encoding.UTF8.GetBytes("two"), "text/plain; charset=utf-8");
            await listen.WaitForExitAsync().WaitAsync(TimeSpan.FromMinutes(1));
            Assert.True(listen.ExitCode == 0, await errors);
            Assert.Equal(["one", "two"], (await output).Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => (string)JsonNode.Parse(l)!["text"]!));
            // "subscribed" once: the renewals say nothing.
            Assert.Equal(["subscribed"], (await errors).Split('\n', StringSplitOptions.RemoveEmptyEntries).Where(l => l.Contains("subscri", StringComparison.Ordinal)));
        }
        finally
        {
            if (!listen.HasExited)
            {
                listen.Kill(entireProcessTree: true);
            }
        }

        node.AssertNoServerErrors();
    }

    /// <summary>The node's id, as its challenge to <paramref name="identity"/> names it, in hex.</summary>
    private static async Task<string> NodeId(MegaNetClient client, Identity identity) =>
        Convert.ToHexString((await client.Relay.ChallengeAsync(new ChallengeRequest { Address = ByteString.CopyFrom(identity.Address) })).NodeId.Span).ToLowerInvariant();

    private static string Line(Result result) => result.Stdout.Trim();

    /// <summary>Runs the JavaScript client to a successful end.</summary>
    private async Task<Result> Js(params string[] args)
    {
        Result result = await RunAsync(Psi(args));
        Assert.True(result.ExitCode == 0, $"meganet.mjs {string.Join(' ', args)} exited {result.ExitCode}: {result.Stderr}{result.Stdout}");
        return result;
    }

    private ProcessStartInfo Psi(params string[] args)
    {
        string client = Path.Combine(Example(), "meganet.mjs");
        if (!Environment.GetEnvironmentVariable("PATH")!.Split(':').Any(d => File.Exists(Path.Combine(d, "node"))))
        {
            throw new InvalidOperationException("Node.js ('node') is not on PATH: install Node.js 18 or later with npm; .ci/run then installs the client's packages.");
        }

        if (!Directory.Exists(Path.Combine(Example(), "node_modules")))
        {
            throw new InvalidOperationException($"{Example()}/node_modules is missing: run 'npm ci --prefix examples/javascript' (the README's test command, .ci/run, does).");
        }

        return new ProcessStartInfo("node", [client, .. args]) { WorkingDirectory = _dir };
    }

    private static string Example() => Checkout.Path("examples/javascript");
}
