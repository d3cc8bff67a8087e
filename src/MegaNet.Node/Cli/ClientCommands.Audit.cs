using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using MegaNet.Api;
using MegaNet.Core.Transparency;
using SignedTreeHead = MegaNet.Api.V1.SignedTreeHead;

namespace MegaNet.Node.Cli;

/// <summary><c>meganet audit</c>: the transparency log's monitor.</summary>
internal static partial class ClientCommands
{

    // A property: static fields of the two halves of this class initialise in no set order.
    private static string DefaultHeads => Path.Combine(Path.GetDirectoryName(DefaultIdentity)!, "tree-heads.json");

    private static Command AuditCommand()
    {
        var node = NodeOption();
        var nodeId = new Option<string?>("--node-id")
        {
            Description = "The node id (64 hex digits, printed when the node starts) its tree heads must be signed by. " +
                "Default: the key of the head remembered for this node address (so later audits stay pinned to the first), " +
                "else (first audit) the key the node signs with now. This pin is audit's own, apart from known-nodes.",
        };
        var heads = new Option<string>("--heads")
        {
            Description = "The file of remembered tree heads, one per node address (JSON, rewritten whole after each consistent audit). " +
                "A node set up anew (a new data directory gives a new id) is refused until its entry is deleted from this file. " +
                "A node is also held to the heads remembered for its key at other addresses.",
            DefaultValueFactory = _ => DefaultHeads,
        };
        var head = new Option<string?>("--head")
        {
            Description = "Check this signed head instead of the remembered one, and remember nothing: a receipt as 'send --json' prints it, " +
                "the current head of a report 'audit --json' printed, or a bare head (for example one somebody else was given: comparing " +
                "heads is how a node showing different logs to different people is caught); '-' reads standard input.",
        };
        var json = JsonOption("Print one JSON object: node, node_id, consistent, problem, the earlier and current signed heads (the evidence, should they disagree), " +
            "earlier_node (the address the earlier head was remembered for), also_consistent_with (other addresses whose heads of this node key were checked), " +
            "and remembered (whether the current head was saved).");
        var timeout = TimeoutOption();
        var tlsCert = TlsCertOption();
        var command = new Command("audit",
            "Check that a node's transparency log only grows: its current signed tree head must extend, by a consistency proof, the head " +
            $"remembered from the last audit of that node address (in --heads, {DefaultHeads} by default), which it then replaces, and every " +
            "head remembered for the same node key at another address (one node showing different logs at two addresses is a fork). The first " +
            "audit of an address remembers its head. A log that shrank, forked or was rewritten exits 3 and keeps the old head as evidence. " +
            "Run it now and then, e.g. from cron.")
            { node, nodeId, heads, head, json, timeout, tlsCert };
        command.SetAction((parse, ct) => Run(async () =>
        {
            Uri address = parse.GetValue(node)!;
            string key = KnownNodes.Key(address);
            string headsPath = parse.GetValue(heads)!;
            string? headPath = parse.GetValue(head);
            string? idHex = parse.GetValue(nodeId);
            byte[]? given = idHex is not null ? KnownNodes.ParseNodeId(idHex, "--node-id") : null;
            bool asJson = parse.GetValue(json);
            MegaNetClientOptions connection = ClientOptions(address, parse.GetValue(timeout), parse.GetValue(tlsCert));

            // A head given is checked and forgotten.
            if (headPath is not null)
            {
                SignedTreeHead other = CheckedHead(await ReadHeadAsync(headPath, ct), $"--head {headPath}");
                return PrintAudit(await AuditAsync(address, key, other, given, "given", connection, ct), asJson, given is not null, headsPath, Remembering.NotAsked);
            }

            (AuditResult result, Remembering outcome, IOException? failure) = await AuditAndRememberAsync(address, key, headsPath, given, connection, beforeSaving: null, ct);
            int exit = PrintAudit(result, asJson, given is not null, headsPath, outcome);
            return failure is null ? exit : throw new CliException($"the head could not be remembered in {headsPath}: {failure.Message}");
        }, parse.GetValue(node)));
        return command;
    }

    /// <summary>Tries of one audit that finds, each time it would save, that another audit saved since it read the
    /// heads file; then it gives up remembering (and says so). Each retry follows another audit's save, so overlapping
    /// audits (two cron lines started the same minute) end after a retry or two.</summary>
    internal const int RememberTries = 3;

    /// <summary>
    /// Audits the node at <paramref name="address"/> (<paramref name="key"/>) against the heads remembered in
    /// <paramref name="headsPath"/>, and remembers its current head when it is consistent with them. Each try reads the
    /// heads under the file's lock, held for that only and not while the node answers (a slow node would hold up the
    /// audits of every other), asks the node, and saves under the lock again (<see cref="RememberAsync"/>). When another
    /// audit saved in between (one of this address, or of this node key at another address: two cron lines started the
    /// same minute overlap on every run, and the later one was never remembered), the try is made again from the heads
    /// saved now and a new head from the node, up to <see cref="RememberTries"/> times. A retry checks as the first try
    /// does, so a fork it finds is the finding, with its evidence, and nothing is saved over it. <paramref name="beforeSaving"/>,
    /// when given, runs with the try's number (from 1) between its checks and its save, where another audit may save:
    /// a seam for tests.
    /// </summary>
    /// <returns>The last try's finding, what became of its head, and the error that kept it from the disk.</returns>
    internal static async Task<(AuditResult Result, Remembering Outcome, IOException? Failure)> AuditAndRememberAsync(Uri address, string key, string headsPath, byte[]? given,
        MegaNetClientOptions connection, Func<int, Task>? beforeSaving, CancellationToken ct)
    {
        for (int attempt = 1; ; attempt++)
        {
            // Read before the node is asked: each head read was saved before the node signed its current head, which
            // must then be no smaller (asked first, a head another audit fetched later and saved before it was read
            // made an honest node look as if its log shrank). Heads saved after the read are caught at the save.
            using HeadsFile saved = await HeadsFile.ReadAsync(headsPath, ct);
            SignedTreeHead? remembered = saved.Find(key);
            AuditResult result = await AuditAsync(address, key, remembered, given, "remembered", connection, ct);
            if (result.Problem is not null)
            {
                return (result, Remembering.NotAsked, null);
            }

            // Heads are remembered by address, so one node (one key) showing log A at one address and log B at
            // another passed both audits: the current head must extend what its key signed elsewhere too.
            IReadOnlyList<(string Address, SignedTreeHead Head)> elsewhere = saved.SignedByElsewhere(result.Current!.NodeKey, key);
            result = await HeldToElsewhereAsync(address, result, elsewhere, connection, ct);
            if (result.Problem is not null)
            {
                return (result, Remembering.NotAsked, null);
            }

            if (beforeSaving is not null)
            {
                await beforeSaving(attempt);
            }

            (Remembering outcome, IOException? failure) = await RememberAsync(headsPath, key, remembered, result.Current!, elsewhere, ct);
            if (outcome is not (Remembering.Overtaken or Remembering.OvertakenElsewhere) || attempt == RememberTries)
            {
                return (result, outcome, failure);
            }
        }
    }

    /// <summary>
    /// Remembers <paramref name="current"/> for <paramref name="key"/> once it was held to <paramref name="remembered"/>
    /// (this address's head when the audit read the file) and to <paramref name="checkedElsewhere"/> (the heads of its
    /// key at other addresses it was checked against), all under the heads file's lock: unless another audit changed
    /// this address's head meanwhile, or remembered a head of this key at another address that this audit did not check
    /// (two audits at once of one key at two addresses, one of them a fork, each read the other's head before either
    /// saved and both passed). Then nothing is written, and <see cref="AuditAndRememberAsync"/> checks again against
    /// what is there now.
    /// </summary>
    /// <returns>What became of the head, and the error that kept it from the disk (the finding stands regardless).</returns>
    internal static async Task<(Remembering Outcome, IOException? Failure)> RememberAsync(string headsPath, string key, SignedTreeHead? remembered, SignedTreeHead current,
        IReadOnlyList<(string Address, SignedTreeHead Head)> checkedElsewhere, CancellationToken ct)
    {
        using HeadsFile file = await HeadsFile.OpenAsync(headsPath, ct);
        if (!Equals(file.Find(key), remembered))
        {
            // Another audit of this address got there first: its head stays (this one proved nothing against it).
            return (Remembering.Overtaken, null);
        }

        if (file.SignedByElsewhere(current.NodeKey, key).Any(h => !checkedElsewhere.Contains(h)))
        {
            return (Remembering.OvertakenElsewhere, null);
        }

        file.Remember(key, current);
        try
        {
            file.Save();
            return (Remembering.Saved, null);
        }
        catch (IOException e)
        {
            // Reported after the finding, which stands whatever the disk does.
            return (Remembering.NotAsked, e);
        }
    }

    /// <summary>What became of a consistent head: not to be remembered (a head given), remembered, or not written
    /// because another audit changed the remembered head of this address, or of this node key at another address,
    /// meanwhile (on every try, from <see cref="AuditAndRememberAsync"/>).</summary>
    internal enum Remembering
    {
        NotAsked,
        Saved,
        Overtaken,
        OvertakenElsewhere,
    }

    /// <summary>What one audit found: the earlier head (null on a first audit), the node's current head (null when
    /// the node could not be held to it), and what failed. <see cref="EarlierNode"/> is the address the earlier head
    /// was remembered for when that is another than <see cref="Node"/>; <see cref="AlsoConsistentWith"/> the other
    /// addresses whose heads of the same key the current head extends.</summary>
    internal sealed record AuditResult(string Node, SignedTreeHead? Earlier, string EarlierWhat, SignedTreeHead? Current, string? Problem)
    {
        public string? EarlierNode { get; init; }

        public IReadOnlyList<string> AlsoConsistentWith { get; init; } = [];
    }

    /// <summary>Holds the current head of a consistent <paramref name="result"/> to the heads its key signed at other
    /// addresses (<paramref name="elsewhere"/>, largest first): it must extend each (the largest first: a log smaller
    /// than one its key signed elsewhere fails without a proof). The first it does not extend is the finding, with
    /// that head as the evidence.</summary>
    private static async Task<AuditResult> HeldToElsewhereAsync(Uri address, AuditResult result, IReadOnlyList<(string Address, SignedTreeHead Head)> elsewhere, MegaNetClientOptions connection, CancellationToken ct)
    {
        if (elsewhere.Count == 0)
        {
            return result;
        }

        SignedTreeHead current = result.Current!;
        using var client = new MegaNetClient(address, current.NodeKey.ToByteArray(), options: connection);
        var consistent = new List<string>();
        foreach ((string other, SignedTreeHead head) in elsewhere)
        {
            (_, string? problem) = await client.CheckLogAsync(head, current, ct);
            if (problem is not null)
            {
                return new AuditResult(result.Node, head, "remembered", current,
                    $"the node at {result.Node} and the node at {other} sign with one key ({Hex(current.NodeKey)}) but show different logs: {problem} " +
                    $"(the earlier head is the one remembered for {other})")
                { EarlierNode = other };
            }

            consistent.Add(other);
        }

        return result with { AlsoConsistentWith = consistent };
    }

    private static async Task<AuditResult> AuditAsync(Uri address, string key, SignedTreeHead? earlier, byte[]? given, string earlierWhat, MegaNetClientOptions connection, CancellationToken ct)
    {
        // Which node this is, settled before any log is compared: another id is a matter of who answers at this
        // address (a node set up anew, a head from another node, or a typo), not evidence about one node's log, so it
        // is an error to fix.
        if (earlier is not null && given is not null && !earlier.NodeKey.Span.SequenceEqual(given))
        {
            throw new CliException($"The {earlierWhat} head for {key} is signed by {Hex(earlier.NodeKey)}, not by the node id given ({Convert.ToHexStringLower(given)}); nothing was compared.");
        }

        // Pinned to the id given, else to the earlier head's key: the client holds the node's heads to it.
        byte[]? pin = given ?? earlier?.NodeKey.ToByteArray();
        using var client = new MegaNetClient(address, pin, options: connection);
        SignedTreeHead current = await client.Relay.GetTreeHeadAsync(new MegaNet.Api.V1.GetTreeHeadRequest(), cancellationToken: ct);
        if (pin is not null && !current.NodeKey.Span.SequenceEqual(pin))
        {
            throw new CliException(
                given is not null ? $"The node at {key} signs its log with {Hex(current.NodeKey)}, not with the node id given ({Convert.ToHexStringLower(given)}); nothing was compared."
                : earlierWhat == "given" ? $"The head given is signed by {Convert.ToHexStringLower(pin)}, but the node at {key} signs its log with {Hex(current.NodeKey)}: the head is another node's (or this node was set up anew); nothing was compared."
                : $"The node at {key} signs its log with {Hex(current.NodeKey)}, not with {Convert.ToHexStringLower(pin)}, the key of the {earlierWhat} head. " +
                  "If that node was really set up anew (a new data directory gives a new id), delete its entry from the heads file; otherwise another node answers at that address.");
        }

        if (!current.SignatureVerifies)
        {
            return new AuditResult(key, earlier, earlierWhat, current, "the node's current tree head does not verify with its own key");
        }

        if (earlier is null)
        {
            return new AuditResult(key, null, earlierWhat, current, null);
        }

        // The head just fetched is the one held to the earlier: one answer, one verdict.
        (SignedTreeHead? checkedCurrent, string? problem) = await client.CheckLogAsync(earlier, current, ct);
        return new AuditResult(key, earlier, earlierWhat, checkedCurrent ?? current, problem);
    }

    private static int PrintAudit(AuditResult r, bool json, bool idGiven, string headsPath, Remembering remembering)
    {
        if (json)
        {
            var report = new JsonObject
            {
                ["node"] = r.Node,
                ["node_id"] = r.Current is not null ? Hex(r.Current.NodeKey) : null,
                ["consistent"] = r.Problem is null,
                ["problem"] = r.Problem,
                ["earlier"] = r.Earlier is not null ? HeadJson(r.Earlier) : null,
                ["earlier_node"] = r.EarlierNode ?? (r.Earlier is not null && r.EarlierWhat == "remembered" ? r.Node : null),
                ["current"] = r.Current is not null ? HeadJson(r.Current) : null,
                ["also_consistent_with"] = new JsonArray([.. r.AlsoConsistentWith.Select(a => (JsonNode?)a)]),
                ["remembered"] = remembering == Remembering.Saved,
            };
            if (r.Problem is null)
            {
                PrintLine(report.ToJsonString());
                return 0;
            }

            PrintVerdict(report.ToJsonString());
            return Invalid;
        }

        if (r.Problem is not null)
        {
            // It can quote the node's refusal: a carriage return and escapes in it made a failed check look consistent.
            PrintVerdict($"INVALID: {Printable(r.Problem, multiline: false)}");
            // The earlier head verifies with the node's key (checked when it was read); the current one is shown as the
            // node gave it. Two heads of different sizes prove a fork only with the node's answer about them, so a
            // node that refuses the proof between them is reported as such (MegaNetClient.CheckLogAsync).
            if (r.Earlier is not null)
            {
                string which = r.EarlierNode is { } other ? $"head remembered for {other}" : $"{r.EarlierWhat} head";
                PrintVerdict($"{which}, signed by the node: {HeadJson(r.Earlier).ToJsonString()}");
            }

            if (r.Current is not null)
            {
                PrintVerdict($"current head, as the node gave it: {HeadJson(r.Current).ToJsonString()}");
            }

            if (r.EarlierWhat == "remembered" && r.Earlier is not null)
            {
                PrintVerdict(r.EarlierNode is null ? $"The remembered head stays in {headsPath}." : $"The remembered heads stay in {headsPath}.");
            }

            return Invalid;
        }

        SignedTreeHead current = r.Current!;
        string id = Hex(current.NodeKey);
        string when = Date(current.TimestampUnixMs);
        if (r.Earlier is null)
        {
            string whose = idGiven ? "the node id given" : "not pinned: pass --node-id to check it against an id you know";
            PrintLine($"first audit of {r.Node}: its log of {Entries(current.TreeSize)}, signed {when} by node {id} ({whose}){Kept(remembering, headsPath)}");
            PrintAlsoConsistent(r);
            return 0;
        }

        string since = Date(r.Earlier.TimestampUnixMs);
        string change = current.TreeSize == r.Earlier.TreeSize
            // The node signs a head when its log grows and when it starts; in between it hands out the same one.
            ? $"is unchanged at {Entries(current.TreeSize)} ({(current.TimestampUnixMs == r.Earlier.TimestampUnixMs ? $"the same head, signed {when}" : $"signed {since} and {when}")})"
            : $"grew from {Entries(r.Earlier.TreeSize)} (signed {since}) to {Entries(current.TreeSize)} (signed {when})";
        PrintLine($"consistent: the log of {r.Node} (node {id}) {change}{Kept(remembering, headsPath)}");
        PrintAlsoConsistent(r);
        if (current.TimestampUnixMs < r.Earlier.TimestampUnixMs)
        {
            // Not proof of anything (the node's clock may have been set back), but worth a look.
            Console.Error.WriteLine($"note: the current head is dated earlier than the {r.EarlierWhat} one ({when} < {since})");
        }

        return 0;
    }

    private static void PrintAlsoConsistent(AuditResult r)
    {
        if (r.AlsoConsistentWith.Count > 0)
        {
            PrintLine($"and it extends the heads this node key signed at {string.Join(", ", r.AlsoConsistentWith)}");
        }
    }

    private static string Kept(Remembering remembering, string headsPath) => remembering switch
    {
        Remembering.Saved => $", remembered in {headsPath}",
        Remembering.Overtaken => $"; not remembered: on each of {RememberTries} tries another audit changed this address's head in {headsPath} " +
            "before this one could save (the next audit is held to the head saved there)",
        Remembering.OvertakenElsewhere => $"; not remembered: on each of {RememberTries} tries another audit remembered a head of this node key at another " +
            $"address in {headsPath} before this one could save (audit again to check against it)",
        _ => string.Empty,
    };

    private static string Entries(long count) => count == 1 ? "1 entry" : $"{count:N0} entries";

    /// <summary>A head's time as a date, or as milliseconds when it is none (it is the node's word, signed or not).</summary>
    private static string Date(long unixMs) =>
        unixMs >= 0 && unixMs <= DateTimeOffset.MaxValue.ToUnixTimeMilliseconds()
            ? DateTimeOffset.FromUnixTimeMilliseconds(unixMs).ToString("u", CultureInfo.InvariantCulture)
            : $"at {unixMs} ms (not a date)";

    /// <summary>A head read from a file, refused unless it verifies with the key it names: a head whose signature
    /// fails is a damaged file, not evidence about any node.</summary>
    private static SignedTreeHead CheckedHead(SignedTreeHead head, string where) =>
        head.SignatureVerifies
            ? head
            : throw new CliException($"{where}: the tree head's signature does not verify with its node key ({Hex(head.NodeKey)}); the file is damaged or the head was altered.");

    private static async Task<SignedTreeHead> ReadHeadAsync(string path, CancellationToken cancellationToken)
    {
        string text = await ReadInputAsync("--head", path, leftOut: false, "give a receipt or tree head file", cancellationToken);
        string[] lines = text.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (lines.Length > 1 && lines.All(line => line.StartsWith('{') && line.EndsWith('}')))
        {
            // send --json prints a receipt a line for a file sent in parts; one head is audited at a time.
            throw new CliException($"--head {path} holds {lines.Length} JSON objects, one a line (the receipts of a file sent in parts); audit one head at a time, e.g. the last: 'tail -n 1 {path} | meganet audit --head -'.");
        }

        JsonObject node;
        try
        {
            node = JsonNode.Parse(text) as JsonObject ?? throw new CliException($"--head {path} is not a JSON object.");
        }
        catch (JsonException e)
        {
            throw new CliException($"--head {path} is not JSON ({e.Message}).");
        }

        // A receipt carries its head under tree_head, an audit's report under current; a head stands alone.
        return HeadFrom(node["tree_head"] ?? node["current"] ?? node, $"--head {path}");
    }

    private static SignedTreeHead HeadFrom(JsonNode? node, string where)
    {
        try
        {
            return HeadFromJson(node ?? throw new CliException($"{where} is empty."));
        }
        catch (FormatException e)
        {
            throw new CliException($"{where} is not a signed tree head as 'send --json' or 'audit --json' print them ({e.Message}).");
        }
    }

    /// <summary>The remembered heads, held under an exclusive lock file beside them from reading to saving; or, from
    /// <see cref="ReadAsync"/>, as read under it, not to be saved.</summary>
    private sealed class HeadsFile : IDisposable
    {
        private readonly LockedFile? _file;
        private readonly string _path;
        private readonly JsonObject _heads;

        private HeadsFile(LockedFile? file, string path, JsonObject heads) => (_file, _path, _heads) = (file, path, heads);

        /// <summary>The heads as they are now, read under the lock, which is let go at once.</summary>
        public static async Task<HeadsFile> ReadAsync(string path, CancellationToken cancellationToken)
        {
            using HeadsFile locked = await OpenAsync(path, cancellationToken);
            return new HeadsFile(null, locked._path, locked._heads);
        }

        public static async Task<HeadsFile> OpenAsync(string path, CancellationToken cancellationToken)
        {
            if (Directory.Exists(path))
            {
                throw new CliException($"--heads {path} is a directory; give a file (it is created on the first audit).");
            }

            LockedFile held = await LockedFile.OpenAsync(path, "another 'meganet audit'", cancellationToken);
            try
            {
                return new HeadsFile(held, held.Path, Read(held, path));
            }
            catch
            {
                held.Dispose();
                throw;
            }
        }

        private static JsonObject Read(LockedFile file, string path)
        {
            if (file.ReadText() is not { } text)
            {
                return [];
            }

            try
            {
                return JsonNode.Parse(text) as JsonObject
                    ?? throw new CliException($"{path} is not a file of tree heads (a JSON object by node address); move it aside.");
            }
            catch (JsonException e)
            {
                throw new CliException($"{path} is not a file of tree heads ({e.Message}); move it aside.");
            }
        }

        /// <summary>The head remembered for <paramref name="key"/>, checked to verify with its key; null when none.</summary>
        public SignedTreeHead? Find(string key)
        {
            if (!_heads.TryGetPropertyValue(key, out JsonNode? entry))
            {
                return null;
            }

            // An entry that is not a head is a damaged file: treating it as none would make this a first audit and
            // accept whatever log the node shows now.
            string where = $"{_path} ({key})";
            return entry is JsonObject head
                ? CheckedHead(HeadFrom(head, where), where)
                : throw new CliException($"{where} is not a tree head; move the file aside (or delete that entry to start this node's audits anew).");
        }

        /// <summary>The heads remembered for other addresses than <paramref name="except"/> that
        /// <paramref name="nodeKey"/> signed, checked as <see cref="Find"/> checks them, largest first. An entry whose
        /// key cannot be read may be this node's, so it is refused as <see cref="Find"/> refuses it.</summary>
        public IReadOnlyList<(string Address, SignedTreeHead Head)> SignedByElsewhere(Google.Protobuf.ByteString nodeKey, string except)
        {
            string hex = Hex(nodeKey);
            var heads = new List<(string Address, SignedTreeHead Head)>();
            foreach ((string address, JsonNode? entry) in _heads)
            {
                if (address == except)
                {
                    continue;
                }

                string? key = entry is JsonObject head && head["node_key"] is JsonValue value && value.TryGetValue(out string? text) ? text : null;
                if (key is not null && !string.Equals(key, hex, StringComparison.OrdinalIgnoreCase))
                {
                    continue;
                }

                SignedTreeHead found = Find(address)!;
                if (found.NodeKey == nodeKey)
                {
                    heads.Add((address, found));
                }
            }

            return [.. heads.OrderByDescending(h => h.Head.TreeSize)];
        }

        public void Remember(string key, SignedTreeHead head)
        {
            JsonObject entry = HeadJson(head);
            entry["audited_unix_ms"] = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
            _heads[key] = entry;
        }

        /// <summary>Writes the file whole (<see cref="LockedFile.Save"/>): a crash leaves the old file or the new, never
        /// one cut short that would lose every node's head.</summary>
        public void Save() => (_file ?? throw new InvalidOperationException("Heads read without the lock are not saved.")).Save(_heads.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));

        public void Dispose() => _file?.Dispose();
    }
}
