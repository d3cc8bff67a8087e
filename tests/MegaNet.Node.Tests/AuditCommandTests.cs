using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json.Nodes;
using MegaNet.Api;
using MegaNet.Api.V1;
using MegaNet.Core.Transparency;
using MegaNet.Node.Cli;
using MegaNet.Node.Hosting;
using static MegaNet.Node.Tests.MeganetProcess;

namespace MegaNet.Node.Tests;

/// <summary><c>meganet audit</c> against real nodes on one loopback address: a log that grows passes and is
/// remembered; a node that rewrote its log under the same key (its data directory replaced, its key kept) is caught,
/// and the remembered head stays as evidence.</summary>
public sealed class AuditCommandTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("meganet-audit-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string Heads => Path.Combine(_dir, "heads.json");

    private Task<Result> Audit(Uri node, params string[] args) => RunAsync(_dir, null, false, ["audit", "--node", node.ToString(), "--heads", Heads, .. args]);

    [Fact]
    public async Task A_growing_log_passes_and_a_rewritten_one_is_caught_with_the_evidence_kept()
    {
        int port = FreePort();
        string firstData = Path.Combine(_dir, "first"), secondData = Path.Combine(_dir, "second"), thirdData = Path.Combine(_dir, "third");
        // Heads are remembered by node address: every node here listens on the same port.
        await using (TestNode node = await TestNode.StartAsync(o => o.Listen = $"127.0.0.1:{port}", firstData))
        {
            Uri address = node.Address;
            // The key, for the nodes below (a test node's data directory goes with it).
            foreach (string data in new[] { secondData, thirdData })
            {
                Directory.CreateDirectory(data);
                File.Copy(Path.Combine(firstData, NodeKey.FileName), Path.Combine(data, NodeKey.FileName));
            }

            Result first = await Audit(address);
            Assert.True(first.ExitCode == 0, first.Stderr + first.Stdout);
            Assert.Contains("first audit of", first.Stdout, StringComparison.Ordinal);
            Assert.Equal(0, (long)Remembered()["tree_size"]!);

            using MegaNetClient client = node.Client();
            using Identity alice = Identity.Create(), bob = Identity.Create();
            Receipt firstReceipt = await client.SendAsync(alice, bob.Card, Encoding.UTF8.GetBytes("one"), "text/plain");
            await client.SendAsync(alice, bob.Card, Encoding.UTF8.GetBytes("two"), "text/plain");
            Result grown = await Audit(address);
            Assert.True(grown.ExitCode == 0, grown.Stderr + grown.Stdout);
            Assert.Contains("grew from 0 entries", grown.Stdout, StringComparison.Ordinal);
            Assert.Contains("to 2 entries", grown.Stdout, StringComparison.Ordinal);
            Assert.Equal(2, (long)Remembered()["tree_size"]!);

            // A head somebody else was given (here a receipt's) is checked, and nothing is remembered from it.
            string receiptPath = Path.Combine(_dir, "receipt.json");
            await File.WriteAllTextAsync(receiptPath, ClientCommands.ReceiptJson(firstReceipt).ToJsonString());
            string before = await File.ReadAllTextAsync(Heads);
            Result given = await Audit(address, "--head", receiptPath);
            Assert.True(given.ExitCode == 0, given.Stderr + given.Stdout);
            Assert.Contains("grew from 1 entry", given.Stdout, StringComparison.Ordinal);
            Assert.Equal(before, await File.ReadAllTextAsync(Heads));
        }

        // The same node key over a new log of three other envelopes, at the same address.
        await using (TestNode node = await TestNode.StartAsync(o => o.Listen = $"127.0.0.1:{port}", secondData))
        {
            using MegaNetClient client = node.Client();
            using Identity carol = Identity.Create(), dave = Identity.Create();
            foreach (string text in new[] { "x", "y", "z" })
            {
                await client.SendAsync(carol, dave.Card, Encoding.UTF8.GetBytes(text), "text/plain");
            }

            string before = await File.ReadAllTextAsync(Heads);
            Result forked = await Audit(node.Address);
            Assert.Equal(3, forked.ExitCode);
            Assert.Contains("INVALID: the node's current log (size 3) does not extend the log of the earlier head (size 2)", forked.Stdout, StringComparison.Ordinal);
            Assert.Equal(before, await File.ReadAllTextAsync(Heads));

            // The JSON report carries both signed heads: each verifies with the node's key, so together they prove it.
            Result report = await Audit(node.Address, "--json");
            Assert.Equal(3, report.ExitCode);
            JsonNode json = JsonNode.Parse(report.Stdout)!;
            Assert.False((bool)json["consistent"]!);
            foreach (string which in new[] { "earlier", "current" })
            {
                JsonNode head = json[which]!;
                Assert.True(TreeHeadSignature.Verify(Convert.FromHexString((string)head["node_key"]!), (long)head["tree_size"]!,
                    Convert.FromHexString((string)head["root_hash"]!), (long)head["timestamp_unix_ms"]!, Convert.FromHexString((string)head["signature"]!)), which);
            }

            // The receipt's head too: the node no longer holds the envelope it signed for. And a report's current head
            // (someone else's audit, handed over) agrees with the node that signed it.
            Result receipt = await Audit(node.Address, "--head", Path.Combine(_dir, "receipt.json"));
            Assert.Equal(3, receipt.ExitCode);
            string reportPath = Path.Combine(_dir, "report.json");
            await File.WriteAllTextAsync(reportPath, report.Stdout);
            Result handed = await Audit(node.Address, "--head", reportPath);
            Assert.True(handed.ExitCode == 0, handed.Stderr + handed.Stdout);
            Assert.Contains("grew from 3 entries (signed", handed.Stdout, StringComparison.Ordinal);
        }

        // A log that shrank, under the same key, is refused before any proof is asked for.
        await using (TestNode node = await TestNode.StartAsync(o => o.Listen = $"127.0.0.1:{port}", thirdData))
        {
            Result shrunk = await Audit(node.Address);
            Assert.Equal(3, shrunk.ExitCode);
            Assert.Contains("the node's log has 0 entries now, fewer than the 2 it signed in the earlier head", shrunk.Stdout, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task A_first_audit_checks_the_node_id_given_and_bad_files_are_named()
    {
        await using TestNode node = await TestNode.StartAsync();
        Result wrongId = await Audit(node.Address, "--node-id", new string('a', 64));
        Assert.Equal(3, wrongId.ExitCode);
        Assert.Contains("not by the node id given", wrongId.Stdout, StringComparison.Ordinal);
        Assert.False(File.Exists(Heads));

        await File.WriteAllTextAsync(Heads, "[1, 2]");
        Result badHeads = await Audit(node.Address);
        Assert.Equal(1, badHeads.ExitCode);
        Assert.Contains($"{Heads} is not a file of tree heads", badHeads.Stderr, StringComparison.Ordinal);

        File.Delete(Heads);
        string garbage = Path.Combine(_dir, "garbage.json");
        await File.WriteAllTextAsync(garbage, "{\"tree_size\": \"many\"}");
        Result badHead = await Audit(node.Address, "--head", garbage);
        Assert.Equal(1, badHead.ExitCode);
        Assert.Contains($"--head {garbage} is not a signed tree head", badHead.Stderr, StringComparison.Ordinal);
        node.AssertNoServerErrors();
    }

    private JsonObject Remembered() => (JsonObject)JsonNode.Parse(File.ReadAllText(Heads))!.AsObject().Single().Value!;

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}
