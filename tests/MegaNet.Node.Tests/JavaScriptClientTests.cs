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
