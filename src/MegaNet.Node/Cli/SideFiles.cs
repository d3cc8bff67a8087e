namespace MegaNet.Node.Cli;

/// <summary>
/// What the CLI keeps beside an identity file <c>NAME.json</c>: <c>NAME.seen</c> (the messages it received, so replays
/// show once; <c>NAME.seen.lock</c> serialises its writers and counts its rewrites), <c>NAME.contacts</c> (names for cards), <c>NAME.parts/</c> (parts of files still arriving), <c>NAME.sending/</c> (how far sends of files in parts got) and the
/// directory's <c>known-nodes</c> (pinned node ids). One list, so a side file added later is also one an identity file
/// may not be named after.
/// </summary>
internal static class SideFiles
{
    /// <summary>The received-message record.</summary>
    public const string Seen = ".seen";

    /// <summary>The contacts.</summary>
    public const string Contacts = ".contacts";

    /// <summary>The parts of files being received (a directory).</summary>
    public const string Parts = ".parts";

    /// <summary>The records of files being sent in parts (a directory, <see cref="SentParts"/>).</summary>
    public const string Sending = ".sending";

    /// <summary>What serialises the record's writers (<c>NAME.seen.lock</c>, which also holds its rewrite count).</summary>
    public const string Lock = ".lock";

    private static readonly string[] Extensions = [Seen, Contacts, Parts, Sending, Lock];

    /// <summary>Whether <paramref name="name"/>, a file name in an identity's directory, is one the CLI keeps there (or
    /// would, for an identity of that directory): <c>known-nodes</c>, or a name ending in one of the side files'
    /// extensions. Case is ignored.</summary>
    public static bool IsSideFileName(string name) =>
        name.Equals(KnownNodes.FileName, StringComparison.OrdinalIgnoreCase) || Extensions.Contains(Path.GetExtension(name), StringComparer.OrdinalIgnoreCase);

    /// <summary>The side file with <paramref name="extension"/> of the identity at <paramref name="identityPath"/>:
    /// its extension replaced (<c>bob.json</c> → <c>bob.seen</c>), or, for a name that is all extension (<c>.alice</c>,
    /// <c>..alice</c>), added to it (<c>.alice.seen</c>).</summary>
    public static string Of(string identityPath, string extension)
    {
        string full = Path.GetFullPath(identityPath);
        // Path.ChangeExtension takes all of ".alice" for the extension: ~/.alice and ~/.bob both had ~/.seen, ~/.contacts
        // and ~/.parts, so each saw the other's records, contacts and parts.
        return Path.GetFileNameWithoutExtension(full).Trim('.').Length == 0 ? full + extension : Path.ChangeExtension(full, extension);
    }

    /// <summary>
    /// Refuses an identity path named like a side file (of the identity NAME.*, or of this one if it were named so): fetch
    /// rewrote an identity named <c>x.seen</c> as its record, and pins were appended to one named <c>known-nodes</c>: the
    /// keys were lost. Case is ignored, for file systems that ignore it.
    /// </summary>
    public static void CheckNotOne(string path)
    {
        string name = Path.GetFileName(path);
        if (IsSideFileName(name))
        {
            throw new CliException(
                $"--identity {path}: an identity file cannot be named '{KnownNodes.FileName}' or end in {string.Join(", ", Extensions[..^1].Select(e => $"'{e}'"))} or '{Extensions[^1]}'; those names are " +
                $"the pinned node ids, the received-message records, the contacts, the parts of files being received, the records of files being sent and the record's lock kept beside identity files, and writing them " +
                $"would destroy the keys. Rename it (e.g. to {Path.ChangeExtension(name, ".json")}).");
        }
    }
}
