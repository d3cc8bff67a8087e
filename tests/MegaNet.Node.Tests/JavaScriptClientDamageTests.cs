using System.Text;
using System.Text.Json.Nodes;
using MegaNet.Api;
using static MegaNet.Node.Tests.MeganetProcess;

namespace MegaNet.Node.Tests;

/// <summary>
/// The JavaScript client against a node whose store no longer reads a mailbox entry back (DATA_LOSS with the trailer
/// <c>damaged-seq</c>, docs/protocol.md): as <c>meganet fetch</c> and <c>listen</c>, it names the seq once, goes on
/// after it, never acknowledges it, and <c>fetch</c> exits 2; a trailer that names no entry after the cursor is
/// refused as a protocol error instead of fetching the same mail again.
/// </summary>
public sealed partial class JavaScriptClientTests
{
    /// <summary>Bob's identity file in the test's directory, with mail from alice at each of <paramref name="mail"/>
    /// (text "mail SEQ") in <paramref name="relay"/>'s mailbox, entries the store no longer gives at each of
    /// <paramref name="damaged"/> (named truly), and a keepalive for a subscription.</summary>
    private string MailboxWith(ScriptedRelay relay, Identity alice, Identity bob, ulong[] mail, ulong[] damaged)
    {
        string bobPath = Path.Combine(_dir, "bob.json");
        bob.Save(bobPath);
        foreach (ulong seq in mail)
        {
            relay.Mail.Add(ScriptedRelay.Item(seq, EnvelopeFormat.Seal(alice, bob.Card, Encoding.UTF8.GetBytes($"mail {seq}"), "text/plain; charset=utf-8", null, DateTimeOffset.UtcNow.AddDays(1))));
        }

        foreach (ulong seq in damaged)
        {
            relay.Damaged[seq] = seq.ToString(System.Globalization.CultureInfo.InvariantCulture);
        }

        relay.KeepaliveStamps.Add(1_800_000_000_000);
        return bobPath;
    }

    /// <summary>Asserts that <paramref name="result"/>'s stderr names each of <paramref name="seqs"/> once as mail the
    /// node's store no longer gives (the node's words from <see cref="ScriptedRelay.Damaged"/>), followed by
    /// <paramref name="then"/>.</summary>
    private static void AssertNamedOnce(Result result, ulong[] seqs, string then)
    {
        foreach (ulong seq in seqs)
        {
            Assert.Single(result.Stderr.Split('\n'), l => l == $"meganet.mjs: the message at seq {seq} could not be delivered: the node's store is damaged " +
                $"(the store no longer reads seq {seq} back (gRPC DATA_LOSS)); it stays on the node, not acknowledged; {then}.");
        }
    }

    private static string[] Texts(Result result) =>
        [.. result.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => (string)JsonNode.Parse(l)!["text"]!)];

    [Fact]
    public async Task The_javascript_fetch_goes_on_past_entries_the_store_no_longer_gives_names_each_once_acks_none_of_them_and_exits_2()
    {
        // Before, the first DATA_LOSS ended the fetch with nothing shown or acknowledged, and every later message
        // waited behind the damaged one until the store was restored.
        var relay = new ScriptedRelay();
        await using var fake = await FakeRelay<ScriptedRelay>.StartAsync(relay);
        using Identity alice = Identity.Create(), bob = Identity.Create();
        string bobPath = MailboxWith(relay, alice, bob, mail: [1, 2, 4, 6], damaged: [3, 5]);
        Result fetched = await RunAsync(Psi("fetch", "-i", bobPath, "--node", fake.Address.ToString(), "--node-id", ScriptedRelay.NodeId, "--ack"));
        Assert.True(fetched.ExitCode == 2, $"exit code {fetched.ExitCode}: {fetched.Stderr}");
        Assert.Equal(["mail 1", "mail 2", "mail 4", "mail 6"], Texts(fetched));
        AssertNamedOnce(fetched, [3, 5], "fetching the mail after it");
        Assert.Equal([1UL, 2, 4, 6], relay.Acked.ToArray());
        Assert.Contains("meganet.mjs: 2 message(s) could not be delivered because the node's store is damaged (seq 3, 5); they stay on the node", fetched.Stderr, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("1e3", "'1e3'")]
    [InlineData("2", "'2'")] // the cursor it asked from: going on from there fetches the same page again
    [InlineData("18446744073709551616", "'18446744073709551616'")] // past the largest seq
    public async Task The_javascript_fetch_and_listen_refuse_a_damaged_seq_that_names_no_entry_after_the_cursor(string trailer, string shown)
    {
        var relay = new ScriptedRelay();
        await using var fake = await FakeRelay<ScriptedRelay>.StartAsync(relay);
        using Identity alice = Identity.Create(), bob = Identity.Create();
        string bobPath = MailboxWith(relay, alice, bob, mail: [1, 2, 4], damaged: [3]);
        relay.Damaged[3] = trailer;

        foreach (string command in (string[])["fetch", "listen"])
        {
            string[] args = [command, "-i", bobPath, "--node", fake.Address.ToString(), "--node-id", ScriptedRelay.NodeId];
            Result refused = await RunAsync(Psi(command == "fetch" ? [.. args, "--ack"] : args));
            Assert.True(refused.ExitCode == 2, $"{command}: exit code {refused.ExitCode}: {refused.Stderr}");
            Assert.Contains($"meganet.mjs: the node answered DATA_LOSS (the store no longer reads seq 3 back (gRPC DATA_LOSS)) naming as the damaged entry {shown}, " +
                "which is no mailbox sequence number after 2, the one asked from: a protocol error", refused.Stderr, StringComparison.Ordinal);
            Assert.DoesNotContain("could not be delivered", refused.Stderr, StringComparison.Ordinal);
            // fetch shows nothing of a fetch it cannot finish (as for any failure), listen what came before.
            Assert.Equal(command == "fetch" ? [] : ["mail 1", "mail 2"], Texts(refused));
        }

        Assert.Empty(relay.Acked);
    }

    [Fact]
    public async Task The_javascript_listen_names_an_entry_the_store_no_longer_gives_once_and_goes_on_after_it()
    {
        // Before, the DATA_LOSS ended listen, and no mail after the damaged entry ever came through it.
        var relay = new ScriptedRelay();
        await using var fake = await FakeRelay<ScriptedRelay>.StartAsync(relay);
        using Identity alice = Identity.Create(), bob = Identity.Create();
        string bobPath = MailboxWith(relay, alice, bob, mail: [1, 2, 4, 6], damaged: [3, 5]);
        Result listened = await Js("listen", "-i", bobPath, "--node", fake.Address.ToString(), "--node-id", ScriptedRelay.NodeId, "--count", "4");
        Assert.Equal(["mail 1", "mail 2", "mail 4", "mail 6"], Texts(listened));
        AssertNamedOnce(listened, [3, 5], "listening goes on after it");
        Assert.Empty(relay.Acked);
    }
}
