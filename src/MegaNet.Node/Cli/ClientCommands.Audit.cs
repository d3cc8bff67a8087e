using System.CommandLine;
using System.Text.Json;
using System.Text.Json.Nodes;
using MegaNet.Api;
using SignedTreeHead = MegaNet.Api.V1.SignedTreeHead;

namespace MegaNet.Node.Cli;

/// <summary><c>meganet audit</c>: the transparency log's monitor.</summary>
internal static partial class ClientCommands
{
    // A property: static fields of the two halves of this class initialise in no set order.
    private static string DefaultHeads => Path.Combine(Path.GetDirectoryName(DefaultIdentity)!, "tree-heads.json");

    // Exit code of a log that does not extend a head its node signed (as verify-receipt's INVALID).
    private const int Forked = 3;

    private static Command AuditCommand()
    {
        var node = NodeOption();
        var nodeId = new Option<string?>("--node-id")
        {
            Description = "The node id (64 hex digits, printed when the node starts) its tree heads must be signed by. " +
                "Default: the key of the head remembered for this node address, else (first audit) the key the node signs with now.",
        };
        var heads = new Option<string>("--heads")
        {
            Description = "The file of remembered tree heads, one per node address (JSON, written anew after each consistent audit).",
            DefaultValueFactory = _ => DefaultHeads,
        };
        var head = new Option<string?>("--head")
        {
            Description = "Check this signed head instead of the remembered one, and remember nothing: a receipt as 'send --json' prints it, " +
                "or the current head of a report 'audit --json' printed, or a bare head (for example one somebody else was given: comparing heads is how a node showing " +
                "different logs to different people is caught); '-' reads standard input.",
        };
        var json = JsonOption("Print one JSON object: node, node_id, consistent, problem, and the earlier and current signed heads (the evidence, should they disagree).");
        var timeout = TimeoutOption();
        var command = new Command("audit",
            "Check that a node's transparency log only grows: its current signed tree head must extend, by a consistency proof, the head " +
            $"remembered from the last audit of that node address (in --heads, {DefaultHeads} by default), which it then replaces. The first " +
            "audit of an address remembers its head. A log that shrank, forked or was rewritten exits 3 and keeps the old head as evidence. " +
            "Run it now and then, e.g. from cron.")
            { node, nodeId, heads, head, json, timeout };
        command.SetAction((parse, ct) => Run(async () =>
        {
            Uri address = parse.GetValue(node)!;
            string key = address.GetLeftPart(UriPartial.Authority);
            string headsPath = parse.GetValue(heads)!;
            string? headPath = parse.GetValue(head);
            JsonObject remembered = ReadHeads(headsPath);
            SignedTreeHead? earlier = headPath is not null
                ? await ReadHeadAsync(headPath, ct)
                : remembered[key] is JsonObject stored ? HeadFrom(stored, $"{headsPath} ({key})") : null;
            string? idHex = parse.GetValue(nodeId);
            byte[]? expected = idHex is not null ? KnownNodes.ParseNodeId(idHex, "--node-id") : earlier?.NodeKey.ToByteArray();
            using var client = new MegaNetClient(address, expected, options: ClientOptions(parse.GetValue(timeout)));

            SignedTreeHead? current;
            string? problem;
            if (earlier is null)
            {
                // First audit: nothing to compare yet; the head is checked against the node id (given, or its own).
                current = await client.Relay.GetTreeHeadAsync(new MegaNet.Api.V1.GetTreeHeadRequest(), cancellationToken: ct);
                problem = expected is not null && !current.NodeKey.Span.SequenceEqual(expected)
                    ? $"the node's tree head is signed by key {Hex(current.NodeKey)}, not by the node id given ({Convert.ToHexStringLower(expected)})"
                    : !Core.Transparency.TreeHeadSignature.Verify(current.NodeKey.Span, current.TreeSize, current.RootHash.Span, current.TimestampUnixMs, current.Signature.Span)
                        ? "the node's tree head does not verify with its own key"
                        : null;
            }
            else
            {
                (current, problem) = await client.CheckLogAsync(earlier, ct);
            }

            if (problem is null && headPath is null)
            {
                // Only a head that extends the one remembered replaces it; a failed audit keeps the evidence.
                JsonObject entry = HeadJson(current!);
                entry["audited_unix_ms"] = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
                remembered[key] = entry;
                WriteHeads(headsPath, remembered);
            }

            if (parse.GetValue(json))
            {
                var report = new JsonObject
                {
                    ["node"] = key,
                    ["node_id"] = current is not null ? Hex(current.NodeKey) : earlier is not null ? Hex(earlier.NodeKey) : null,
                    ["consistent"] = problem is null,
                    ["problem"] = problem,
                    ["earlier"] = earlier is not null ? HeadJson(earlier) : null,
                    ["current"] = current is not null ? HeadJson(current) : null,
                };
                Console.WriteLine(report.ToJsonString());
                return problem is null ? 0 : Forked;
            }

            if (problem is not null)
            {
                Console.WriteLine($"INVALID: {problem}.");
                Console.WriteLine($"evidence (signed by the node; anyone can check both against its id): earlier {HeadJson(earlier ?? current!).ToJsonString()}" +
                    (current is not null && earlier is not null ? $" current {HeadJson(current).ToJsonString()}" : string.Empty));
                if (headPath is null && earlier is not null)
                {
                    Console.WriteLine($"The remembered head stays in {headsPath}.");
                }

                return Forked;
            }

            string id = Hex(current!.NodeKey);
            string when = DateTimeOffset.FromUnixTimeMilliseconds(current.TimestampUnixMs).ToString("u", System.Globalization.CultureInfo.InvariantCulture);
            if (earlier is null)
            {
                string whose = idHex is not null ? "the node id given" : "not pinned: pass --node-id to check it against an id you know";
                Console.WriteLine($"first audit of {key}: its log of {Entries(current.TreeSize)}, signed {when} by node {id} ({whose}), remembered in {headsPath}");
                return 0;
            }

            string since = DateTimeOffset.FromUnixTimeMilliseconds(earlier.TimestampUnixMs).ToString("u", System.Globalization.CultureInfo.InvariantCulture);
            Console.WriteLine($"consistent: the log of {key} (node {id}) grew from {Entries(earlier.TreeSize)} (signed {since}) to {Entries(current.TreeSize)} (signed {when})" +
                (headPath is null ? $"; remembered in {headsPath}" : string.Empty));
            if (current.TimestampUnixMs < earlier.TimestampUnixMs)
            {
                // Not proof of anything (the node's clock may have been set back), but worth a look.
                Console.Error.WriteLine($"note: the current head is dated before the earlier one ({when} < {since}): the node's clock went back");
            }

            return 0;
        }));
        return command;
    }

    private static string Entries(long count) => count == 1 ? "1 entry" : $"{count:N0} entries";

    private static JsonObject ReadHeads(string path)
    {
        if (Directory.Exists(path))
        {
            throw new CliException($"--heads {path} is a directory; give a file (it is created on the first audit).");
        }

        if (!File.Exists(path))
        {
            return [];
        }

        try
        {
            return JsonNode.Parse(File.ReadAllText(path)) as JsonObject
                ?? throw new CliException($"{path} is not a file of tree heads (a JSON object by node address); move it aside.");
        }
        catch (JsonException e)
        {
            throw new CliException($"{path} is not a file of tree heads ({e.Message}); move it aside.");
        }
    }

    private static void WriteHeads(string path, JsonObject heads)
    {
        // Whole or not at all: a file cut short by a crash would lose every node's remembered head.
        string full = Path.GetFullPath(path);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        string temporary = $"{full}.{Environment.ProcessId}.tmp";
        File.WriteAllText(temporary, heads.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        File.Move(temporary, full, overwrite: true);
    }

    private static async Task<SignedTreeHead> ReadHeadAsync(string path, CancellationToken cancellationToken)
    {
        if (path != "-" && Directory.Exists(path))
        {
            throw new CliException($"--head {path} is a directory; give a receipt or tree head file.");
        }

        string text = path == "-" ? await Console.In.ReadToEndAsync(cancellationToken) : await File.ReadAllTextAsync(path, cancellationToken);
        JsonNode? node;
        try
        {
            node = JsonNode.Parse(text);
        }
        catch (JsonException e)
        {
            throw new CliException($"--head {path} is not JSON ({e.Message}).");
        }

        // A receipt carries its head under tree_head, an audit's report under current; a head stands alone.
        return HeadFrom(node?["tree_head"] ?? node?["current"] ?? node, $"--head {path}");
    }

    private static SignedTreeHead HeadFrom(JsonNode? node, string where)
    {
        try
        {
            return HeadFromJson(node ?? throw new CliException($"{where} is empty."));
        }
        catch (Exception e) when (e is FormatException or InvalidOperationException or NullReferenceException)
        {
            throw new CliException($"{where} is not a signed tree head as 'send --json' or 'audit --json' print them ({e.Message}).");
        }
    }
}
