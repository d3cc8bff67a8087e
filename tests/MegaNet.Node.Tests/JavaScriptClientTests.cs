using System.Buffers.Binary;
using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Google.Protobuf;
using Grpc.Core;
using MegaNet.Api;
using MegaNet.Api.V1;
using MegaNet.Core.Transparency;
using MegaNet.Store;
using static MegaNet.Node.Tests.MeganetProcess;

namespace MegaNet.Node.Tests;

/// <summary>
/// The JavaScript client in examples/javascript, written from docs/protocol.md and the unmodified .proto files (with
/// libsodium and gRPC's own Node.js libraries), exchanges mail with the C# client through a real node on 127.0.0.1: the
/// protocol document is checked by a second implementation in another language, byte for byte (signing bytes,
/// envelope ids, proof of work, sealing, content signatures, mailbox challenges, tree heads and inclusion proofs).
/// Needs Node.js 18 or later and <c>npm ci</c> in examples/javascript, which <c>.ci/run</c> does.
/// </summary>
public sealed partial class JavaScriptClientTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("meganet-js-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public async Task The_javascript_client_stamps_for_the_seed_the_nodes_status_gives()
    {
        // Work demanded of every envelope: the stamp is made for the seed in Status.pow_seed (or, refused, for the one
        // in the pow-seed trailer), and the node takes it.
        await using TestNode node = await TestNode.StartAsync(o => o.PowMinBits = 6);
        using MegaNetClient client = node.Client();
        using Identity alice = Identity.Create();
        string bobPath = Path.Combine(_dir, "bob.json");
        Line(await Js("id", "new", bobPath));
        JsonObject receipt = JsonNode.Parse(Line(await Js("send", "-i", bobPath, "--to", alice.Card.ToString(), "--text", "stamped from the start", "--node", node.Address.ToString())))!.AsObject();
        Assert.True((int)receipt["pow_bits"]! >= 6, receipt.ToJsonString());
        ReceivedMessage received = Assert.Single((await client.FetchAsync(alice)).Messages);
        Assert.Equal("stamped from the start", received.Content.Content.ToStringUtf8());
        Assert.Equal((string)receipt["envelope_id"]!, Convert.ToHexStringLower(received.EnvelopeId));
        node.AssertNoServerErrors();
    }

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
        Assert.Equal(Convert.ToHexStringLower(FileParts.IdOf(large, "big.bin")), (string)joined["file_id"]!); // as meganet prints it
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

        // Sets not cut as the protocol says, whose headers, lengths and hashes hold: a file of 3 bytes in two parts
        // (one part holds it), and a file one byte longer than a part holds, cut one byte short of a full first part.
        // Each part is refused like junk, and acknowledged, as by the C# client (ReceivedParts): both files were shown.
        int full = FileParts.SliceLength("cut.bin");
        foreach (byte[] miscutFile in new[] { new byte[] { 7, 8, 9 }, large[..(full + 1)] })
        {
            byte[] header = FileParts.Split(miscutFile, "cut.bin")[0][..FileParts.HeaderLength];
            foreach ((int index, byte[] slice) in new[] { (0, miscutFile[..^2]), (1, miscutFile[^2..]) })
            {
                byte[] part = [.. header, .. slice];
                BinaryPrimitives.WriteUInt32BigEndian(part.AsSpan(16), (uint)index);
                BinaryPrimitives.WriteUInt32BigEndian(part.AsSpan(20), 2);
                await client.SendAsync(alice, bob.Card, part, FileParts.ContentType, "cut.bin");
            }
        }

        Result miscut = await Js("fetch", "-i", bobPath, "--node", url, "--node-id", nodeId, "--ack");
        string[] cuts = [.. MeganetResults.JsonLines(miscut).Select(l => (string)l["unreadable"]!)];
        string[] because =
        [
            string.Create(CultureInfo.InvariantCulture, $"part 1 of file 'cut.bin' is not cut as the protocol says: a file of 3 bytes under that name is cut into 1 part(s) of {full:N0} bytes, not 2"),
            string.Create(CultureInfo.InvariantCulture, $"part 2 of file 'cut.bin' is not cut as the protocol says: a file of 3 bytes under that name is cut into 1 part(s) of {full:N0} bytes, not 2"),
            string.Create(CultureInfo.InvariantCulture, $"part 1 of file 'cut.bin' is not cut as the protocol says: it holds {full - 1:N0} bytes of the file, where part 1 of 2 holds {full:N0}"),
            "part 2 of file 'cut.bin' is not cut as the protocol says: it holds 2 bytes of the file, where part 2 of 2 holds 1",
        ];
        Assert.Equal(because, cuts);
        Assert.Contains("acknowledged 4 message(s)", miscut.Stderr, StringComparison.Ordinal);
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
                await SubscribedAsync(listen);
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

    /// <summary>The node resets a subscription whose mail the client is not reading with HTTP/2 CANCEL (its lifetime's
    /// end, a stop): the JavaScript client's listen took that CANCELLED for its own cancel and ended, exit 0, as if
    /// done. It renews the subscription and goes on.</summary>
    [Fact]
    public async Task The_javascript_client_renews_a_subscription_the_node_reset_with_cancel()
    {
        var reset = new ResetFirstSubscribe();
        await using TestNode node = await TestNode.StartAsync(services: reset.AddTo);
        using MegaNetClient client = node.Client();
        using Identity alice = Identity.Create(), bob = Identity.Create();
        string url = node.Address.ToString(), bobPath = Path.Combine(_dir, "bob.json");
        bob.Save(bobPath);
        string nodeId = await NodeId(client, bob);

        ProcessStartInfo listening = Psi("listen", "-i", bobPath, "--node", url, "--node-id", nodeId, "--count", "1");
        listening.RedirectStandardOutput = listening.RedirectStandardError = true;
        using Process listen = Process.Start(listening)!;
        try
        {
            Task<string> output = listen.StandardOutput.ReadToEndAsync();
            string errors = await SubscribedAsync(listen);
            reset.Now.SetResult();
            Task<string> rest = listen.StandardError.ReadToEndAsync();
            // Sent once the subscription was renewed (a second challenge used), so the renewed one brings it.
            var authenticator = (MegaNet.Node.Admission.MailboxAuthenticator)node.Services.GetService(typeof(MegaNet.Node.Admission.MailboxAuthenticator))!;
            await Poll.UntilAsync(() => authenticator.UsedCount >= 2 || listen.HasExited, () => $"{authenticator.UsedCount} subscription(s)");
            await client.SendAsync(alice, bob.Card, Encoding.UTF8.GetBytes("after the reset"), "text/plain; charset=utf-8");
            await listen.WaitForExitAsync().WaitAsync(TimeSpan.FromMinutes(1));
            Assert.True(listen.ExitCode == 0, $"exited {listen.ExitCode}: {errors}{await rest}");
            Assert.Equal(["after the reset"], (await output).Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => (string)JsonNode.Parse(l)!["text"]!));
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

    [Fact]
    public async Task The_javascript_client_audits_a_growing_log_and_reports_a_fork_under_the_same_key_with_exit_code_3()
    {
        // A second node under the same key, from a backup of the first one's key and empty store, whose log then
        // takes other envelopes: one node showing two histories.
        string firstData = Path.Combine(_dir, "first"), forkData = Path.Combine(_dir, "fork");
        await using TestNode node = await TestNode.StartAsync(dataDirectory: firstData);
        await node.BackUpAsync(forkData);
        await using TestNode fork = await TestNode.StartAsync(dataDirectory: forkData);
        using Identity alice = Identity.Create(), bob = Identity.Create();
        string heads = Path.Combine(_dir, "heads.json"), nodeId;
        using (MegaNetClient client = node.Client())
        {
            nodeId = Convert.ToHexStringLower((await client.Relay.GetTreeHeadAsync(new GetTreeHeadRequest())).NodeKey.Span);
        }

        async Task Send(TestNode at, int count)
        {
            using MegaNetClient client = at.Client();
            for (int i = 0; i < count; i++)
            {
                await client.SendAsync(alice, bob.Card, Encoding.UTF8.GetBytes($"message {i}"), "text/plain");
            }
        }

        string[] Audit(TestNode at) => ["audit", "--node", at.Address.ToString(), "--node-id", nodeId, "--heads", heads];
        JsonObject Remembered() => JsonNode.Parse(File.ReadAllText(heads))![nodeId]!.AsObject();

        // The first audit remembers the head; after more mail the next one holds the node to it by a consistency proof
        // (3 to 5: not a power of two, so the proof's first hash starts both roots), then remembers the newer head.
        await Send(node, 3);
        JsonNode first = JsonNode.Parse(Line(await Js(Audit(node))))!;
        Assert.Equal((true, null, 3L, true), ((bool)first["consistent"]!, first["earlier"], (long)first["current"]!["tree_size"]!, (bool)first["remembered"]!));
        Assert.Equal(3, (long)Remembered()["tree_size"]!);
        await Send(node, 2);
        JsonNode grown = JsonNode.Parse(Line(await Js(Audit(node))))!;
        Assert.Equal((true, 3L, 5L, true), ((bool)grown["consistent"]!, (long)grown["earlier"]!["tree_size"]!, (long)grown["current"]!["tree_size"]!, (bool)grown["remembered"]!));
        Assert.Equal(((long)grown["current"]!["tree_size"]!, (string)grown["current"]!["root_hash"]!), ((long)Remembered()["tree_size"]!, (string)Remembered()["root_hash"]!));

        // The fork, audited against the head remembered from the first node, at three sizes: smaller (a rewind), the
        // same with another root, and larger without a proof that leads from the remembered root. Each is reported,
        // with both signed heads, exit code 3, and the remembered head kept.
        string before = await File.ReadAllTextAsync(heads);
        (int Add, long Size, string Problem)[] forks =
        [
            (2, 2, "the node's log has 2 entries now, fewer than the 5 it signed in the earlier head: it lost or rewrote its log"),
            (3, 5, "the node's current log (size 5) does not extend the log of the earlier head (size 5): it forked or rewrote its log"),
            (2, 7, "the node's current log (size 7) does not extend the log of the earlier head (size 5): it forked or rewrote its log"),
        ];
        foreach ((int add, long size, string problem) in forks)
        {
            await Send(fork, add);
            Result forked = await RunAsync(Psi(Audit(fork)));
            Assert.True(forked.ExitCode == 3, $"audit of the fork at size {size} exited {forked.ExitCode}: {forked.Stderr}{forked.Stdout}");
            JsonNode report = JsonNode.Parse(forked.Stdout)!;
            Assert.Equal((false, problem, false), ((bool)report["consistent"]!, (string)report["problem"]!, (bool)report["remembered"]!));
            Assert.Contains($"meganet.mjs: INVALID: {problem}. The remembered head stays in {heads}", forked.Stderr, StringComparison.Ordinal);
            Assert.Equal((5L, size), ((long)report["earlier"]!["tree_size"]!, (long)report["current"]!["tree_size"]!));
            Assert.Equal(Remembered()["root_hash"]!.ToString(), (string)report["earlier"]!["root_hash"]!);
            foreach (string which in new[] { "earlier", "current" })
            {
                // The evidence: both heads signed by the one node key.
                JsonNode head = report[which]!;
                Assert.Equal(nodeId, (string)head["node_key"]!);
                Assert.True(TreeHeadSignature.Verify(Convert.FromHexString(nodeId), (long)head["tree_size"]!, Convert.FromHexString((string)head["root_hash"]!),
                    (long)head["timestamp_unix_ms"]!, Convert.FromHexString((string)head["signature"]!)), which);
            }

            Assert.Equal(before, await File.ReadAllTextAsync(heads));
        }

        // The honest node still extends the remembered head; every save went through a temporary file renamed over it.
        JsonNode again = JsonNode.Parse(Line(await Js(Audit(node))))!;
        Assert.Equal((true, 5L, 5L), ((bool)again["consistent"]!, (long)again["earlier"]!["tree_size"]!, (long)again["current"]!["tree_size"]!));
        Assert.Empty(Directory.GetFiles(_dir, "heads.json.*.tmp"));

        // Without --heads the file is kept beside the identity file.
        string bobPath = Path.Combine(_dir, "bob.json");
        bob.Save(bobPath);
        Result beside = await Js("audit", "-i", bobPath, "--node", node.Address.ToString());
        Assert.Contains($"note: first audit of node {nodeId}", beside.Stderr, StringComparison.Ordinal);
        Assert.Equal(5, (long)JsonNode.Parse(File.ReadAllText(Path.Combine(_dir, "tree-heads-by-node-id.json")))![nodeId]!["tree_size"]!);
        node.AssertNoServerErrors();
        fork.AssertNoServerErrors();
    }

    [Fact]
    public async Task The_javascript_consistency_check_agrees_with_the_csharp_one_and_refuses_a_proof_with_a_byte_flipped()
    {
        // Every pair of sizes up to 17 leaves, as the node's log proves them, then each proof spoilt: a byte flipped
        // in each of its hashes or in either root, its last hash left off, a hash added, the first size off by one.
        var log = new MerkleLog();
        for (int i = 0; i < 17; i++)
        {
            log.Append(SHA256.HashData([(byte)i]));
        }

        var cases = new List<(long Size1, long Size2, byte[] Root1, byte[] Root2, List<byte[]> Path, bool Genuine)>();
        static byte[] Flipped(byte[] hash, int at)
        {
            byte[] copy = [.. hash];
            copy[at % copy.Length] ^= 1;
            return copy;
        }

        for (long size2 = 1; size2 <= log.Size; size2++)
        {
            for (long size1 = 0; size1 <= size2; size1++)
            {
                byte[] root1 = log.Root(size1), root2 = log.Root(size2);
                List<byte[]> path = log.ConsistencyProof(size1, size2);
                cases.Add((size1, size2, root1, root2, path, true));
                for (int h = 0; h < path.Count; h++)
                {
                    cases.Add((size1, size2, root1, root2, [.. path.Select((p, i) => i == h ? Flipped(p, h + (int)size2) : p)], false));
                }

                cases.Add((size1, size2, Flipped(root1, (int)size1), root2, path, false));
                if (size1 > 0)
                {
                    // Every tree extends the empty one: its proof says nothing about the second root.
                    cases.Add((size1, size2, root1, Flipped(root2, (int)size2), path, false));
                }

                cases.Add((size1, size2, root1, root2, [.. path, root1], false));
                if (path.Count > 0)
                {
                    cases.Add((size1, size2, root1, root2, path[..^1], false));
                    cases.Add((size1 + 1, size2, root1, root2, path, false));
                }
            }
        }

        string casesPath = Path.Combine(_dir, "cases.json");
        await File.WriteAllTextAsync(casesPath, new JsonArray([.. cases.Select(c => (JsonNode)new JsonObject
        {
            ["size1"] = c.Size1,
            ["size2"] = c.Size2,
            ["root1"] = Convert.ToHexStringLower(c.Root1),
            ["root2"] = Convert.ToHexStringLower(c.Root2),
            ["path"] = new JsonArray([.. c.Path.Select(p => (JsonNode)Convert.ToHexStringLower(p))]),
        })]).ToJsonString());
        string script = $$"""
            import { readFileSync } from 'node:fs';
            import { verifyConsistency } from '{{ModuleUri()}}';
            const hex = (h) => Buffer.from(h, 'hex');
            const cases = JSON.parse(readFileSync(process.env.CONSISTENCY_CASES, 'utf8'));
            console.log(JSON.stringify(cases.map((c) => verifyConsistency(c.size1, c.size2, hex(c.root1), hex(c.root2), c.path.map(hex)))));
            """;
        ProcessStartInfo psi = InlinePsi(script);
        psi.Environment["CONSISTENCY_CASES"] = casesPath;
        Result result = await RunAsync(psi);
        Assert.True(result.ExitCode == 0, result.Stderr);
        bool[] verdicts = JsonNode.Parse(result.Stdout)!.AsArray().Select(v => (bool)v!).ToArray();
        Assert.Equal(cases.Count, verdicts.Length);
        for (int i = 0; i < cases.Count; i++)
        {
            var c = cases[i];
            bool csharp = MerkleTree.VerifyConsistency(c.Size1, c.Size2, c.Root1, c.Root2, c.Path);
            Assert.True(csharp == c.Genuine, $"C#: {c.Size1} to {c.Size2}, case {i}");
            Assert.True(verdicts[i] == c.Genuine, $"JavaScript says {verdicts[i]} for {(c.Genuine ? "the proof" : "a spoilt proof")} from {c.Size1} to {c.Size2} (case {i})");
        }
    }

    [Fact]
    public async Task The_javascript_module_imports_from_node_e_given_an_argument_that_names_no_file()
    {
        // Imported from `node -e CODE ARG`, process.argv[1] is ARG: the module's check whether it runs as a program
        // took it for its own path and threw ENOENT on import.
        string script = $"const client = await import('{ModuleUri()}'); console.log(typeof client.verifyConsistency);";
        Result result = await RunAsync(InlinePsi(script, "no-such-file"));
        Assert.True(result.ExitCode == 0, result.Stderr);
        Assert.Equal("function", Line(result));
    }

    [Fact]
    public async Task The_javascript_audit_says_a_node_that_cannot_prove_for_a_damaged_store_needs_its_store_restored()
    {
        // DATA_LOSS is the node saying its store is damaged, which meganet audit tells apart from a refused proof.
        var relay = new ScriptedRelay();
        await using var fake = await FakeRelay<ScriptedRelay>.StartAsync(relay);
        string heads = Path.Combine(_dir, "heads.json");
        string[] audit = ["audit", "--node", fake.Address.ToString(), "--node-id", ScriptedRelay.NodeId, "--heads", heads];
        await Js(audit);
        relay.Size = 2;
        relay.ProofRefusal = new Status(StatusCode.DataLoss, "the store is damaged");
        Result damaged = await RunAsync(Psi(audit));
        Assert.True(damaged.ExitCode == 3, $"exit code {damaged.ExitCode}: {damaged.Stderr}{damaged.Stdout}");
        Assert.Equal("the node cannot give a consistency proof between two sizes it signed, 1 and 2: it says its store is damaged, " +
            "so its log cannot be checked until its operator restores the store (DATA_LOSS: the store is damaged)", (string)JsonNode.Parse(damaged.Stdout)!["problem"]!);
    }

    [Fact]
    public async Task The_javascript_audit_keeps_a_larger_head_another_audit_saved_meanwhile()
    {
        // Another audit of the node saves its head of 3 while this one checks its head of 2 against the 1 it read: both
        // proofs hold, but nothing relates 2 and 3, and the head of 2 saved over the 3 let the next audit pass a node
        // that shows a log of 2 not in the log of 3.
        var relay = new ScriptedRelay();
        await using var fake = await FakeRelay<ScriptedRelay>.StartAsync(relay);
        string heads = Path.Combine(_dir, "heads.json");
        string[] audit = ["audit", "--node", fake.Address.ToString(), "--node-id", ScriptedRelay.NodeId, "--heads", heads];
        await Js(audit);
        relay.Size = 2;
        relay.BeforeProof = () => File.WriteAllText(heads, new JsonObject { [ScriptedRelay.NodeId] = ScriptedRelay.HeadJson(3) }.ToJsonString());
        JsonNode report = JsonNode.Parse(Line(await Js(audit)))!;
        Assert.Equal((true, 1L, 2L, false), ((bool)report["consistent"]!, (long)report["earlier"]!["tree_size"]!, (long)report["current"]!["tree_size"]!, (bool)report["remembered"]!));
        Assert.Equal(3, (long)JsonNode.Parse(File.ReadAllText(heads))![ScriptedRelay.NodeId]!["tree_size"]!);
    }

    [Theory]
    [InlineData(2, true)]
    [InlineData(3, true)]
    [InlineData(2, false)]
    public async Task The_javascript_audit_saves_over_a_head_another_audit_saved_meanwhile_only_once_its_head_extends_it(long savedSize, bool forked)
    {
        // Another audit saves a head of 2 or 3 while this one proves its head of 3 extends the 1 it read. Only a
        // larger head was kept: a head of another log (a fork) of no larger size was written over, erasing the
        // evidence. It must be held to the head saved meanwhile like the head it read.
        var relay = new ScriptedRelay();
        await using var fake = await FakeRelay<ScriptedRelay>.StartAsync(relay);
        string heads = Path.Combine(_dir, "heads.json");
        string[] audit = ["audit", "--node", fake.Address.ToString(), "--node-id", ScriptedRelay.NodeId, "--heads", heads];
        await Js(audit);
        relay.Size = 3;
        JsonObject savedMeanwhile = ScriptedRelay.HeadJson(savedSize, forked);
        relay.BeforeProof = () =>
        {
            relay.BeforeProof = null;
            File.WriteAllText(heads, new JsonObject { [ScriptedRelay.NodeId] = savedMeanwhile.DeepClone() }.ToJsonString());
        };
        Result result = await RunAsync(Psi(audit));
        JsonNode report = JsonNode.Parse(result.Stdout)!;
        JsonNode remembered = JsonNode.Parse(File.ReadAllText(heads))![ScriptedRelay.NodeId]!;
        if (forked)
        {
            Assert.True(result.ExitCode == 3, $"exit code {result.ExitCode}: {result.Stderr}{result.Stdout}");
            Assert.Equal((false, false), ((bool)report["consistent"]!, (bool)report["remembered"]!));
            Assert.Equal($"the node's current log (size 3) does not extend the log of the earlier head (size {savedSize}): it forked or rewrote its log " +
                $"(the earlier head is the one another audit remembered in {heads} meanwhile)", (string)report["problem"]!);
            Assert.Equal((string)savedMeanwhile["signature"]!, (string)report["earlier"]!["signature"]!);
            Assert.Equal((string)savedMeanwhile["signature"]!, (string)remembered["signature"]!);
        }
        else
        {
            Assert.True(result.ExitCode == 0, $"exit code {result.ExitCode}: {result.Stderr}{result.Stdout}");
            Assert.Equal((true, true), ((bool)report["consistent"]!, (bool)report["remembered"]!));
            Assert.Equal(3, (long)remembered["tree_size"]!);
        }
    }

    [Fact]
    public async Task The_javascript_audit_prints_its_report_before_failing_on_a_heads_file_it_cannot_write()
    {
        // As meganet audit: the finding stands whatever the disk does. The save threw before the report was printed.
        var relay = new ScriptedRelay();
        await using var fake = await FakeRelay<ScriptedRelay>.StartAsync(relay);
        string heads = Path.Combine(_dir, "missing", "heads.json");
        Result result = await RunAsync(Psi("audit", "--node", fake.Address.ToString(), "--node-id", ScriptedRelay.NodeId, "--heads", heads));
        Assert.True(result.ExitCode == 1, $"exit code {result.ExitCode}: {result.Stderr}{result.Stdout}");
        JsonNode report = JsonNode.Parse(result.Stdout)!;
        Assert.Equal((true, 1L, false), ((bool)report["consistent"]!, (long)report["current"]!["tree_size"]!, (bool)report["remembered"]!));
        Assert.Contains($"meganet.mjs: the head could not be remembered in {heads}: ENOENT", result.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_javascript_client_shows_what_the_node_chose_with_control_and_format_characters_escaped()
    {
        // The node's words drive no terminal: "\r\e[2K" erased the line and wrote a verdict of the node's choosing
        // over it, as meganet's Printable shows them escaped.
        const string Forged = "\r\u001b[2Kvalid: all good";
        var relay = new ScriptedRelay { TreeHeadRefusal = new Status(StatusCode.PermissionDenied, Forged) };
        await using var fake = await FakeRelay<ScriptedRelay>.StartAsync(relay);
        string url = fake.Address.ToString();
        Result refused = await RunAsync(Psi("status", "--node", url));
        Assert.True(refused.ExitCode == 2, $"exit code {refused.ExitCode}: {refused.Stderr}");
        Assert.Contains(@"meganet.mjs: \u000d\u001b[2Kvalid: all good (gRPC PERMISSION_DENIED)", refused.Stderr, StringComparison.Ordinal);
        AssertPrintable(refused);

        // Status as JSON: the same strings once parsed, each hidden character written as a JSON escape (a C1 control
        // and a right-to-left override passed JSON.stringify as they were).
        relay.TreeHeadRefusal = null;
        relay.Version = "1.0\u009b2J\u202egnp.exe";
        Result status = await Js("status", "--node", url);
        Assert.Equal(relay.Version, (string)JsonNode.Parse(status.Stdout)!["status"]!["version"]!);
        AssertPrintable(status);

        // audit: a refused proof, in the report and in the verdict line on stderr.
        string heads = Path.Combine(_dir, "heads.json");
        string[] audit = ["audit", "--node", url, "--node-id", ScriptedRelay.NodeId, "--heads", heads];
        await Js(audit);
        relay.Size = 2;
        relay.ProofRefusal = new Status(StatusCode.FailedPrecondition, Forged);
        Result audited = await RunAsync(Psi(audit));
        Assert.True(audited.ExitCode == 3, $"exit code {audited.ExitCode}: {audited.Stderr}{audited.Stdout}");
        Assert.EndsWith(@"(FAILED_PRECONDITION: \u000d\u001b[2Kvalid: all good)", (string)JsonNode.Parse(audited.Stdout)!["problem"]!, StringComparison.Ordinal);
        AssertPrintable(audited);

        // fetch: a file's name is its sender's choice, shown in the line about the parts still to come.
        const string Name = "a\u001b[2Jb\u202e.bin";
        using Identity alice = Identity.Create(), bob = Identity.Create();
        string bobPath = Path.Combine(_dir, "bob.json");
        bob.Save(bobPath);
        byte[] firstPart = FileParts.Split(new byte[FileParts.SliceLength(Name) + 1], Name)[0];
        relay.Mail.Add(ScriptedRelay.Item(1, EnvelopeFormat.Seal(alice, bob.Card, firstPart, FileParts.ContentType, Name, DateTimeOffset.UtcNow.AddDays(1))));
        Result fetched = await Js("fetch", "-i", bobPath, "--node", url, "--node-id", ScriptedRelay.NodeId);
        Assert.Contains(@"1 of 2 parts of file 'a\u001b[2Jb\u202e.bin' here", fetched.Stderr, StringComparison.Ordinal);
        AssertPrintable(fetched);
    }

    [Fact]
    public async Task The_javascript_send_names_the_envelope_the_node_took_and_submits_it_again_when_no_answer_came()
    {
        // The node stores the message, then cannot give its inclusion proof: send failed with the node's words alone,
        // and a second send sealed a second copy (a new sending time: the recipient's copy detection cannot catch it).
        var relay = new ScriptedRelay { InclusionRefusal = new Grpc.Core.Status(StatusCode.Unavailable, "going down") };
        await using var fake = await FakeRelay<ScriptedRelay>.StartAsync(relay);
        using Identity alice = Identity.Create(), bob = Identity.Create();
        string bobPath = Path.Combine(_dir, "bob.json");
        bob.Save(bobPath);
        string[] send = ["send", "-i", bobPath, "--to", alice.Card.ToString(), "--text", "once", "--node", fake.Address.ToString(), "--node-id", ScriptedRelay.NodeId];
        Result unverified = await RunAsync(Psi(send));
        Assert.True(unverified.ExitCode == 2, $"exit code {unverified.ExitCode}: {unverified.Stderr}");
        Assert.Contains($"meganet.mjs: sent as envelope {Assert.Single(relay.Submitted)}, but its receipt could not be checked (going down (gRPC UNAVAILABLE)); " +
            "the node accepted the message, so sending it again would deliver it twice", unverified.Stderr, StringComparison.Ordinal);

        // A submit the node does not answer: the same envelope again, twice (a node that stored it answers with the
        // original receipt), and then the envelope is named. It was thrown at once.
        relay.Submitted.Clear();
        foreach (int _ in Enumerable.Range(0, 3))
        {
            relay.SubmitRefusals.Enqueue(new Grpc.Core.Status(StatusCode.Unavailable, "no answer"));
        }

        Result unanswered = await RunAsync(Psi(send));
        Assert.True(unanswered.ExitCode == 2, $"exit code {unanswered.ExitCode}: {unanswered.Stderr}");
        Assert.Equal(3, relay.Submitted.Count);
        Assert.Contains($"meganet.mjs: no answer (a submit of this message got no answer: the node may have stored it as envelope {Assert.Single(relay.Submitted.Distinct())}, " +
            "so sending it again may deliver it twice) (gRPC UNAVAILABLE)", unanswered.Stderr, StringComparison.Ordinal);

        // Answered the second time: the receipt of that one envelope, whose copy the node holds is this send's own.
        relay.Submitted.Clear();
        relay.SubmitRefusals.Enqueue(new Grpc.Core.Status(StatusCode.Unavailable, "no answer"));
        relay.InclusionRefusal = null;
        relay.Duplicate = true;
        JsonNode receipt = JsonNode.Parse(Line(await Js(send)))!;
        Assert.Equal(2, relay.Submitted.Count);
        Assert.Equal((Assert.Single(relay.Submitted.Distinct()), false), ((string)receipt["envelope_id"]!, (bool)receipt["duplicate"]!));
    }

    [Fact]
    public async Task The_javascript_listen_ends_when_the_node_goes_silent_past_three_keepalive_intervals()
    {
        // A connection that died without a word: listen waited for ever. The node's keepalives are stamped 200 ms apart
        // (its interval, as the C# client reads it), a message comes between, and then nothing: 3 intervals and 2 s.
        var relay = new ScriptedRelay();
        await using var fake = await FakeRelay<ScriptedRelay>.StartAsync(relay);
        using Identity alice = Identity.Create(), bob = Identity.Create();
        string bobPath = Path.Combine(_dir, "bob.json");
        bob.Save(bobPath);
        relay.Mail.Add(ScriptedRelay.Item(5, EnvelopeFormat.Seal(alice, bob.Card, Encoding.UTF8.GetBytes("before the silence"), "text/plain; charset=utf-8", null, DateTimeOffset.UtcNow.AddDays(1))));
        relay.KeepaliveStamps.AddRange([1_800_000_000_000, 1_800_000_000_200, 1_800_000_000_400]);
        Result listened = await RunAsync(Psi("listen", "-i", bobPath, "--node", fake.Address.ToString(), "--node-id", ScriptedRelay.NodeId));
        Assert.True(listened.ExitCode == 2, $"exit code {listened.ExitCode}: {listened.Stderr}");
        Assert.Equal("before the silence", (string)JsonNode.Parse(Line(listened))!["text"]!);
        Assert.Contains("meganet.mjs: no mail and no keepalive from the node for 2.6 s, though it sends a keepalive about every 0.2 s when idle: " +
            "the connection or the node is dead; nothing was lost: listen again with --after 5", listened.Stderr, StringComparison.Ordinal);
    }

    /// <summary>Asserts that neither output of <paramref name="result"/> holds a character that drives a terminal or
    /// reorders or hides text (control, format, line and paragraph separators), line feeds aside.</summary>
    private static void AssertPrintable(Result result)
    {
        foreach (string output in (string[])[result.Stdout, result.Stderr])
        {
            Assert.DoesNotMatch(@"[\p{Cc}\p{Cf}\p{Zl}\p{Zp}-[\n]]", output);
        }
    }

    /// <summary>A node that signs heads of one log of 3 leaves, at <see cref="Size"/>, and proves their consistency,
    /// or refuses with <see cref="ProofRefusal"/>; <see cref="BeforeProof"/> runs before a proof is answered.</summary>
    private sealed class ScriptedRelay : Relay.RelayBase
    {
        private static readonly byte[] PublicKey = new byte[32], SecretKey = new byte[64];
        private static readonly MerkleLog Log = new(), ForkedLog = new();

        static ScriptedRelay()
        {
            MegaNet.Core.Ed25519.Ed25519Signer.KeyPairFromSeed(new byte[32], PublicKey, SecretKey);
            for (int i = 0; i < 3; i++)
            {
                Log.Append([(byte)i]);
                ForkedLog.Append([(byte)(i + 100)]);
            }
        }

        public static string NodeId => Convert.ToHexStringLower(PublicKey);

        public long Size { get; set; } = 1;

        public Grpc.Core.Status? ProofRefusal { get; set; }

        public Action? BeforeProof { get; set; }

        /// <summary>When set, GetTreeHead fails with it.</summary>
        public Grpc.Core.Status? TreeHeadRefusal { get; set; }

        /// <summary>When set, GetTreeHead never answers (until the call is cancelled).</summary>
        public bool TreeHeadHangs { get; set; }

        /// <summary>The version Status gives.</summary>
        public string Version { get; set; } = "scripted";

        /// <summary>The ids (hex) of the envelopes submitted, in order.</summary>
        public System.Collections.Concurrent.ConcurrentQueue<string> Submitted { get; } = new();

        /// <summary>Refusals the next submits fail with, one each (after noting the envelope); once none is left,
        /// Submit answers with a receipt whose head is of a log of that one envelope.</summary>
        public System.Collections.Concurrent.ConcurrentQueue<Grpc.Core.Status> SubmitRefusals { get; } = new();

        /// <summary>What the receipts say of <see cref="Receipt.Duplicate"/>.</summary>
        public bool Duplicate { get; set; }

        /// <summary>When set, GetInclusionProof fails with it.</summary>
        public Grpc.Core.Status? InclusionRefusal { get; set; }

        /// <summary>The mailbox Fetch pages through, whoever asks.</summary>
        public List<MailItem> Mail { get; } = [];

        /// <summary>Mailbox entries the node's store no longer reads back, by seq, with the <c>damaged-seq</c> trailer
        /// the node names each with (its seq in decimal, unless a test makes it lie): Fetch and Subscribe deliver the
        /// mail before the first after the cursor, then answer DATA_LOSS with it.</summary>
        public SortedDictionary<ulong, string> Damaged { get; } = [];

        /// <summary>The seqs acknowledged, in order.</summary>
        public System.Collections.Concurrent.ConcurrentQueue<ulong> Acked { get; } = new();

        /// <summary>The stamps of the keepalives Subscribe sends, the mail after the first one; then it is silent
        /// until the call ends.</summary>
        public List<long> KeepaliveStamps { get; } = [];

        /// <summary>A mailbox entry of <paramref name="envelope"/>.</summary>
        public static MailItem Item(ulong seq, Envelope envelope) =>
            new() { Seq = seq, EnvelopeId = ByteString.CopyFrom(EnvelopeFormat.EnvelopeId(envelope)), Envelope = envelope, LogIndex = (long)seq - 1 };

        /// <summary>A head of the node's log, or, <paramref name="forked"/>, of another log of as many leaves that
        /// the same key signs (a fork).</summary>
        public static MegaNet.Api.V1.SignedTreeHead Head(long size, bool forked = false) => Head(size, (forked ? ForkedLog : Log).Root(size));

        /// <summary>A head of a log of <paramref name="size"/> leaves with that <paramref name="root"/>, signed by the node.</summary>
        private static MegaNet.Api.V1.SignedTreeHead Head(long size, byte[] root)
        {
            long timestamp = 1_800_000_000_000 + size;
            return new MegaNet.Api.V1.SignedTreeHead
            {
                TreeSize = size,
                RootHash = ByteString.CopyFrom(root),
                TimestampUnixMs = timestamp,
                NodeKey = ByteString.CopyFrom(PublicKey),
                Signature = ByteString.CopyFrom(TreeHeadSignature.Sign(SecretKey, size, root, timestamp)),
            };
        }

        /// <summary>The head as the heads file holds it.</summary>
        public static JsonObject HeadJson(long size, bool forked = false)
        {
            MegaNet.Api.V1.SignedTreeHead head = Head(size, forked);
            return new JsonObject
            {
                ["tree_size"] = head.TreeSize,
                ["root_hash"] = Convert.ToHexStringLower(head.RootHash.Span),
                ["timestamp_unix_ms"] = head.TimestampUnixMs,
                ["node_key"] = NodeId,
                ["signature"] = Convert.ToHexStringLower(head.Signature.Span),
            };
        }

        public override async Task<MegaNet.Api.V1.SignedTreeHead> GetTreeHead(GetTreeHeadRequest request, ServerCallContext context)
        {
            if (TreeHeadHangs)
            {
                await Task.Delay(Timeout.Infinite, context.CancellationToken);
            }

            return TreeHeadRefusal is { } refusal ? throw new RpcException(refusal) : Head(Size);
        }

        public override Task<Receipt> Submit(SubmitRequest request, ServerCallContext context)
        {
            byte[] id = EnvelopeFormat.EnvelopeId(request.Envelope);
            Submitted.Enqueue(Convert.ToHexStringLower(id));
            if (SubmitRefusals.TryDequeue(out Grpc.Core.Status refusal))
            {
                throw new RpcException(refusal);
            }

            var log = new MerkleLog();
            log.Append(id);
            return Task.FromResult(new Receipt { EnvelopeId = ByteString.CopyFrom(id), LogIndex = 0, TreeHead = Head(1, log.Root(1)), Duplicate = Duplicate });
        }

        /// <summary>The proof for the receipts Submit gives: in a log of one leaf, none is needed.</summary>
        public override Task<InclusionProof> GetInclusionProof(InclusionProofRequest request, ServerCallContext context) =>
            InclusionRefusal is { } refusal ? throw new RpcException(refusal) : Task.FromResult(new InclusionProof { LeafIndex = request.LeafIndex });

        public override Task<ChallengeResponse> Challenge(ChallengeRequest request, ServerCallContext context) =>
            Task.FromResult(new ChallengeResponse { Nonce = ByteString.CopyFrom(new byte[32]), NodeId = ByteString.CopyFrom(PublicKey) });

        public override async Task Subscribe(SubscribeRequest request, IServerStreamWriter<MailEvent> responseStream, ServerCallContext context)
        {
            for (int i = 0; i < KeepaliveStamps.Count; i++)
            {
                await responseStream.WriteAsync(new MailEvent { KeepaliveUnixMs = KeepaliveStamps[i] });
                foreach (MailItem item in i == 0 ? MailAfter(request.AfterSeq) : [])
                {
                    await responseStream.WriteAsync(new MailEvent { Item = item });
                }

                if (i == 0 && DamageAfter(request.AfterSeq) is { } damage)
                {
                    throw damage;
                }
            }

            await Task.Delay(Timeout.Infinite, context.CancellationToken);
        }

        public override Task<FetchResponse> Fetch(FetchRequest request, ServerCallContext context)
        {
            var page = new FetchResponse();
            page.Items.AddRange(MailAfter(request.AfterSeq));
            if (page.Items.Count == 0 && DamageAfter(request.AfterSeq) is { } damage)
            {
                throw damage;
            }

            page.NextCursor = page.Items.Count > 0 ? page.Items[^1].Seq : request.AfterSeq;
            return Task.FromResult(page);
        }

        public override Task<AckResponse> Ack(AckRequest request, ServerCallContext context)
        {
            foreach (ulong seq in request.Seqs)
            {
                Acked.Enqueue(seq);
            }

            return Task.FromResult(new AckResponse { Deleted = request.Seqs.Count });
        }

        /// <summary>The mail after <paramref name="afterSeq"/> up to the first damaged entry after it.</summary>
        private IEnumerable<MailItem> MailAfter(ulong afterSeq)
        {
            ulong? damaged = Damaged.Keys.Where(d => d > afterSeq).Cast<ulong?>().FirstOrDefault();
            return Mail.Where(m => m.Seq > afterSeq && (damaged is null || m.Seq < damaged));
        }

        /// <summary>The DATA_LOSS for the first damaged entry after <paramref name="afterSeq"/>, null for none.</summary>
        private RpcException? DamageAfter(ulong afterSeq) =>
            Damaged.FirstOrDefault(d => d.Key > afterSeq) is { Value: { } trailer } d
                ? new RpcException(new Status(StatusCode.DataLoss, $"the store no longer reads seq {d.Key} back"), new Metadata { { MegaNetClient.DamagedSeqTrailer, trailer } })
                : null;

        public override Task<StatusResponse> Status(StatusRequest request, ServerCallContext context) =>
            Task.FromResult(new StatusResponse { Version = Version, TreeSize = Size, Limits = new Limits { MaxTtlSeconds = 30 * 86_400 } });

        public override Task<ConsistencyProof> GetConsistencyProof(ConsistencyProofRequest request, ServerCallContext context)
        {
            BeforeProof?.Invoke();
            if (ProofRefusal is { } refusal)
            {
                throw new RpcException(refusal);
            }

            var proof = new ConsistencyProof { First = request.First, Second = request.Second };
            proof.Path.AddRange(Log.ConsistencyProof(request.First, request.Second).Select(ByteString.CopyFrom));
            return Task.FromResult(proof);
        }
    }

    /// <summary>The node's id, as its challenge to <paramref name="identity"/> names it, in hex.</summary>
    private static async Task<string> NodeId(MegaNetClient client, Identity identity) =>
        Convert.ToHexString((await client.Relay.ChallengeAsync(new ChallengeRequest { Address = ByteString.CopyFrom(identity.Address) })).NodeId.Span).ToLowerInvariant();

    private static string Line(Result result) => result.Stdout.Trim();

    /// <summary>Reads a running listen's standard error up to its "subscribed" line (a warning from Node.js itself may
    /// come first), and returns what came before it.</summary>
    private static async Task<string> SubscribedAsync(Process listen)
    {
        using var subscribing = new CancellationTokenSource(TimeSpan.FromMinutes(1));
        var before = new StringBuilder();
        string? line;
        while ((line = await listen.StandardError.ReadLineAsync(subscribing.Token)) is not null && line != "subscribed")
        {
            before.AppendLine(line);
        }

        Assert.True(line is not null, $"listen ended its stderr before subscribing: {before}");
        return before.ToString();
    }

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

    /// <summary>Runs <paramref name="script"/>, an ES module, with <c>node -e</c> and <paramref name="args"/> after it.</summary>
    private ProcessStartInfo InlinePsi(string script, params string[] args)
    {
        ProcessStartInfo psi = Psi();
        psi.ArgumentList.Clear();
        foreach (string arg in (string[])["--input-type=module", "-e", script, .. args])
        {
            psi.ArgumentList.Add(arg);
        }

        return psi;
    }

    private static string ModuleUri() => new Uri(Path.Combine(Example(), "meganet.mjs")).AbsoluteUri;

    private static string Example() => Checkout.Path("examples/javascript");
}
