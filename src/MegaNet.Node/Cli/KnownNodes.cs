using MegaNet.Api;

namespace MegaNet.Node.Cli;

/// <summary>
/// The node ids this identity's CLI has signed mailbox challenges for, one per node address, pinned on first contact
/// as SSH pins host keys: the file <c>known-nodes</c> beside the identity file, one "ADDRESS NODE-ID-HEX" line per
/// node. A challenge signature opens the mailbox at the node it names, so a node showing another id than the pinned
/// one is refused before anything is signed.
/// </summary>
internal sealed class KnownNodes
{
    // The file's last line had no newline when Entries last read it (an editor saved it so): the next pin goes on a
    // line of its own. Told by that read, which every pin follows under the file's lock, not by a read of its own.
    private bool _endsMidLine;

    private KnownNodes(string path) => Path = path;

    /// <summary>The file.</summary>
    public string Path { get; }

    /// <summary>The file's name (identity files may not have it).</summary>
    public const string FileName = "known-nodes";

    /// <summary>The known-nodes file beside <paramref name="identityPath"/>.</summary>
    public static KnownNodes Beside(string identityPath) =>
        new(System.IO.Path.Combine(System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(identityPath))!, FileName));

    /// <summary>The pinned id of <paramref name="node"/>, or null when this identity never signed for it.</summary>
    public byte[]? Find(Uri node)
    {
        string key = Key(node);
        return Entries().FirstOrDefault(e => e.Address == key).IdHex is { } hex ? Convert.FromHexString(hex) : null;
    }

    /// <summary>The node addresses <paramref name="id"/> is pinned for.</summary>
    public IReadOnlyList<string> AddressesOf(byte[] id)
    {
        string hex = Convert.ToHexStringLower(id);
        return Entries().Where(e => string.Equals(e.IdHex, hex, StringComparison.OrdinalIgnoreCase)).Select(e => e.Address).ToList();
    }

    /// <summary>The file's "ADDRESS NODE-ID-HEX" lines (none when it does not exist yet); blank lines and lines
    /// starting with <c>#</c> are skipped.</summary>
    /// <exception cref="CliException">A line is of another form: skipped, a pin lost to a hand edit (two lines glued
    /// into one, say) made the next contact a first one that pins whatever node answers.</exception>
    private List<(string Address, string IdHex)> Entries()
    {
        var entries = new List<(string, string)>();
        if (!File.Exists(Path))
        {
            _endsMidLine = false;
            return entries;
        }

        // Whole, to tell how it ends: a file of a line per node is small.
        string text = File.ReadAllText(Path);
        _endsMidLine = MegaNet.Core.Interop.PrivateFile.EndsMidLine(text);
        int number = 0;
        foreach (string raw in text.ReplaceLineEndings("\n").Split('\n'))
        {
            number++;
            string line = raw.Trim();
            if (line.Length == 0 || line.StartsWith('#'))
            {
                continue;
            }

            string[] fields = line.Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries);
            string? problem = fields.Length != 2
                ? $"2 fields expected, {fields.Length} found"
                : !Uri.TryCreate(fields[0], UriKind.Absolute, out Uri? address) || address.Scheme is not ("http" or "https") || Key(address) != fields[0]
                    ? $"'{fields[0]}' is not a node address as this file writes it (scheme, host and port, e.g. http://127.0.0.1:7700)"
                    : fields[1].Length != 64 || !fields[1].All(char.IsAsciiHexDigit)
                        ? $"'{fields[1]}' is not a node id (64 hex digits)"
                        : null;
            if (problem is not null)
            {
                throw new CliException($"{Path} line {number}: {problem}; each line is a node address, a space and the node id pinned for it. " +
                    "Fix the line (two lines run together go on lines of their own) or delete it (the next contact with that address then pins whatever node answers there).");
            }

            entries.Add((fields[0], fields[1]));
        }

        return entries;
    }

    /// <summary>The file's lock, held from reading a pin to writing one.</summary>
    private LockedFile Lock() => LockedFile.Open(Path, "another meganet command pinning a node id");

    /// <summary>Pins <paramref name="id"/> for <paramref name="node"/>; says so on standard error. Called under the
    /// file's lock after <see cref="Find"/> read the file under it.</summary>
    public void Remember(Uri node, byte[] id)
    {
        // Owner-only, as every file beside an identity: which nodes it uses is its owner's business. On a line of its
        // own after a last line an editor saved without its newline: glued to it, both pins were lost.
        MegaNet.Core.Interop.PrivateFile.AppendLine(Path, $"{Key(node)} {Convert.ToHexStringLower(id)}", _endsMidLine);
        _endsMidLine = false;
        Console.Error.WriteLine($"first contact with {Key(node)}: node id {Convert.ToHexStringLower(id)} pinned in {Path}");
    }

    /// <summary>Makes a client that signs only for the pinned (or given) node id, runs <paramref name="body"/> with it,
    /// pins the id on first contact once the node answered a challenge with it (not a --node-id the node never
    /// confirmed: a typo, or a node that could not be reached, stayed pinned for good), and turns a mismatch into an
    /// error that says what to do.</summary>
    public static Task<int> RunAsync(string identityPath, Uri node, string? nodeIdHex, Func<MegaNetClient, Task<int>> body, MegaNetClientOptions? options = null) =>
        RunAsync(identityPath, node, nodeIdHex, (client, _) => body(client), options);

    /// <summary><see cref="RunAsync(string, Uri, string?, Func{MegaNetClient, Task{int}}, MegaNetClientOptions?)"/> for a command that runs
    /// until stopped (<c>listen</c>): <paramref name="body"/> gets an action that pins the confirmed id at once, so a
    /// first contact is remembered even if the command is then killed.</summary>
    public static async Task<int> RunAsync(string identityPath, Uri node, string? nodeIdHex, Func<MegaNetClient, Action, Task<int>> body, MegaNetClientOptions? options = null)
    {
        KnownNodes known = Beside(identityPath);
        byte[]? pinned = known.Find(node);
        byte[]? expected = nodeIdHex is null ? pinned : ParseNodeId(nodeIdHex, "--node-id");
        // On first contact, an id pinned for another address is not signed for: a node that shows the id of one this
        // identity uses elsewhere would collect signatures good there (a Fetch of its sealed mail, a Subscribe). The
        // check and the pin are one step under the file's lock, before anything is signed: pinned only once the command
        // ended, a fetch at another address running meanwhile did not see this node's id as taken.
        MegaNetClientOptions checkedOptions = (options ?? new MegaNetClientOptions()).WithFirstContactCheck(id =>
        {
            using LockedFile held = known.Lock();
            string shown = Convert.ToHexStringLower(id);
            if (known.Find(node) is { } meanwhile)
            {
                // Another command of this identity made first contact with this address meanwhile.
                if (meanwhile.AsSpan().SequenceEqual(id))
                {
                    pinned = id;
                    return null;
                }

                return $"The node at {Key(node)} shows node id {shown}, but another command of this identity pinned it to node id {Convert.ToHexStringLower(meanwhile)} " +
                    $"in {known.Path} a moment ago; nothing was signed. Two nodes answered at that address: find out which is the one you mean.";
            }

            if (known.AddressesOf(id).FirstOrDefault(a => a != Key(node)) is { } other)
            {
                return $"The node at {Key(node)} shows node id {shown}, which this identity pinned for {other} in {known.Path}; nothing was signed. " +
                    $"If it is the same node at another address, pass --node-id {shown}; otherwise the node at {Key(node)} is impersonating it.";
            }

            known.Remember(node, id);
            pinned = id;
            return null;
        });
        using var client = new MegaNetClient(node, expected, options: checkedOptions);
        void PinNow()
        {
            // A --node-id the node confirmed (first contact without one pins in the check above).
            if (pinned is null && client.ConfirmedNodeId is { } seen)
            {
                using LockedFile held = known.Lock();
                if (known.Find(node) is null)
                {
                    known.Remember(node, seen);
                }

                pinned = seen;
            }
        }

        try
        {
            return await body(client, PinNow).ConfigureAwait(false);
        }
        catch (FirstContactRefusedException e)
        {
            throw new CliException(e.Message);
        }
        catch (NodeIdMismatchException e)
        {
            throw new CliException(nodeIdHex is null
                ? $"{e.Message} This identity pinned {Key(node)} to node id {Convert.ToHexStringLower(e.Expected)} in {known.Path}. " +
                  "If that node was really set up anew (a new data directory gives a new id), delete its line there; otherwise another node answers at that address."
                : $"{e.Message} (--node-id)");
        }
        finally
        {
            PinNow();
        }
    }

    /// <summary>A node address as files beside identities key it: scheme, host and port.</summary>
    internal static string Key(Uri node) => node.GetLeftPart(UriPartial.Authority);

    /// <summary>A 32-byte node id from 64 hex digits; <paramref name="where"/> names the source in the error.</summary>
    internal static byte[] ParseNodeId(string hex, string where)
    {
        try
        {
            byte[] id = Convert.FromHexString(hex);
            if (id.Length == 32)
            {
                return id;
            }
        }
        catch (FormatException)
        {
        }

        throw new CliException($"{where}: a node id is 64 hex digits; got '{hex}'.");
    }
}

/// <summary>An error the user can fix; printed as "meganet: message" with exit code 1.</summary>
internal sealed class CliException(string message) : Exception(message);
