using System.Globalization;
using System.Text;
using MegaNet.Api;

namespace MegaNet.Node.Cli;

/// <summary>
/// An identity's address book: names for contact cards, in the file beside the identity file with the extension
/// <c>.contacts</c> (<c>bob.json</c> → <c>bob.contacts</c>), one "CARD NAME" line per contact, so it can be read and
/// edited by hand. A line whose first character other than white space is <c>#</c> is a comment; comments and blank
/// lines are kept where they are when a command rewrites the file, as are contact lines it did not change.
/// <c>send --to NAME</c> finds the card by name, and <c>fetch</c> and <c>listen</c> name a sender
/// whose card (both keys, from inside the sealed payload, under the sender's signature) is in it.
/// </summary>
internal sealed class Contacts
{
    /// <summary>The longest name, in characters.</summary>
    public const int MaxNameLength = 64;

    /// <summary>The file's header, written when a command creates it.</summary>
    private const string Header = "# MegaNet contacts: one 'CARD NAME' a line; a line whose first character other than white space is # is a comment ('meganet contact add' and 'remove' keep comments, blank lines and edits by hand).";

    private readonly List<(string Name, ContactCard Card)> _entries;

    /// <summary>The file's lines in order, as they are to be written: comments and blank lines as read (a rewrite used
    /// to drop the notes people wrote there), and one per entry of <see cref="_entries"/>, in the same order.</summary>
    private readonly List<(string Text, bool IsContact)> _lines;
    private bool _changed;

    private Contacts(string identityPath, string path, List<(string Name, ContactCard Card)> entries, List<(string Text, bool IsContact)> lines) =>
        (_identityPath, Path, _entries, _lines) = (identityPath, path, entries, lines);

    private readonly string _identityPath;

    /// <summary>The file.</summary>
    public string Path { get; }

    /// <summary>The contacts, in the file's order.</summary>
    public IReadOnlyList<(string Name, ContactCard Card)> Entries => _entries;

    /// <summary>The contacts file of the identity at <paramref name="identityPath"/>.</summary>
    /// <exception cref="CliException">The identity path is named like a file kept beside identities.</exception>
    public static string PathOf(string identityPath)
    {
        // Here, where every contacts path is made, rather than in each command.
        SideFiles.CheckNotOne(identityPath);
        return SideFiles.Of(identityPath, SideFiles.Contacts);
    }

    /// <summary>The contacts of the identity at <paramref name="identityPath"/> (none when it has no file yet).</summary>
    public static Contacts Load(string identityPath)
    {
        string path = PathOf(identityPath);
        return Parse(identityPath, path, File.Exists(path) ? File.ReadAllText(path) : null);
    }

    /// <summary>Runs <paramref name="change"/> on the contacts under the file's lock and saves what it leaves.</summary>
    public static async Task ChangeAsync(string identityPath, Action<Contacts> change, CancellationToken cancellationToken)
    {
        using LockedFile file = await LockedFile.OpenAsync(PathOf(identityPath), "another 'meganet contact' command", cancellationToken);
        Contacts contacts = Parse(identityPath, file.Path, file.ReadText());
        change(contacts);
        if (contacts._changed)
        {
            file.Save(contacts.ToText());
        }
    }

    /// <summary>The name saved for <paramref name="card"/> (both keys equal), or null.</summary>
    public string? NameOf(ContactCard card) => _entries.FirstOrDefault(e => SameCard(e.Card, card)).Name;

    /// <summary>Both keys equal (the text forms are equal exactly then, without hashing and encoding each).</summary>
    private static bool SameCard(ContactCard a, ContactCard b) =>
        a.SigningKey.AsSpan().SequenceEqual(b.SigningKey) && a.EncryptionKey.AsSpan().SequenceEqual(b.EncryptionKey);

    /// <summary>The card saved as <paramref name="name"/> (case ignored), or null.</summary>
    public ContactCard? Find(string name) => _entries.FirstOrDefault(e => SameName(e.Name, name)).Card;

    /// <summary>Saves <paramref name="card"/> as <paramref name="name"/>; with <paramref name="replace"/> in place of
    /// the card of that name. A card is saved under one name only, so a sender is always shown the same way. Returns the
    /// name as saved, or null when exactly that was saved already.</summary>
    public string? Add(string name, ContactCard card, bool replace)
    {
        name = CheckName(name);
        string? other = NameOf(card);
        if (other == name)
        {
            return null;
        }

        if (other is not null && !(replace && SameName(other, name)))
        {
            throw new CliException($"That card is already saved as '{other}' in {Path}; remove it first ('meganet contact remove{ClientCommands.IdentityFlag(_identityPath)} {(other.StartsWith('-') ? "-- " : string.Empty)}{ClientCommands.ShellQuoted(other)}') to save it under another name.");
        }

        int existing = _entries.FindIndex(e => SameName(e.Name, name));
        if (existing >= 0 && !replace)
        {
            throw new CliException($"'{_entries[existing].Name}' is already a contact in {Path} (card {_entries[existing].Card}); pass --force to give that name to the new card.");
        }

        if (existing >= 0)
        {
            _entries[existing] = (name, card);
            _lines[LineOf(existing)] = (Line(name, card), true);
        }
        else
        {
            _entries.Add((name, card));
            _lines.Add((Line(name, card), true));
        }

        _changed = true;
        return name;
    }

    /// <summary>Removes the contact named <paramref name="name"/> (case ignored); returns its name as it was saved.</summary>
    public string Remove(string name)
    {
        int index = _entries.FindIndex(e => SameName(e.Name, name.Trim()));
        if (index < 0)
        {
            throw new CliException($"No contact named '{ClientCommands.Printable(name, multiline: false)}' in {Path} ('meganet contact list{ClientCommands.IdentityFlag(_identityPath)}' shows them).");
        }

        string saved = _entries[index].Name;
        _lines.RemoveAt(LineOf(index));
        _entries.RemoveAt(index);
        _changed = true;
        return saved;
    }

    /// <summary>
    /// A name as saved: trimmed, 1 to <see cref="MaxNameLength"/> characters, no control, format or line-separator
    /// characters (a name is printed in front of what others wrote, so it must not drive the terminal either), and not
    /// beginning with <c>mn1</c>, so <c>--to</c> never takes a card for a name or a name for a card.
    /// </summary>
    private static string CheckName(string name)
    {
        name = name.Trim();
        int characters = name.EnumerateRunes().Count();
        if (characters is 0 or > MaxNameLength)
        {
            throw new CliException($"A contact name has 1 to {MaxNameLength} characters (got {characters}).");
        }

        if (name.StartsWith(ContactCard.Prefix, StringComparison.OrdinalIgnoreCase))
        {
            throw new CliException($"A contact name may not begin with 'mn1', as contact cards do (got '{ClientCommands.Printable(name, multiline: false)}').");
        }

        foreach (Rune rune in name.EnumerateRunes())
        {
            if (ClientCommands.IsHidden(rune) || rune == Rune.ReplacementChar)
            {
                throw new CliException($"A contact name may not hold control or invisible characters (got '{ClientCommands.Printable(name, multiline: false)}').");
            }
        }

        return name;
    }

    private static bool SameName(string a, string b) => string.Equals(a, b, StringComparison.OrdinalIgnoreCase);

    /// <summary>The index in <see cref="_lines"/> of the line of entry <paramref name="entry"/>.</summary>
    private int LineOf(int entry)
    {
        int seen = 0;
        for (int i = 0; i < _lines.Count; i++)
        {
            if (_lines[i].IsContact && seen++ == entry)
            {
                return i;
            }
        }

        throw new InvalidOperationException($"Contact {entry} has no line.");
    }

    private static string Line(string name, ContactCard card) => string.Create(CultureInfo.InvariantCulture, $"{card} {name}");

    private static Contacts Parse(string identityPath, string path, string? text)
    {
        var entries = new List<(string Name, ContactCard Card)>();
        var kept = new List<(string Text, bool IsContact)>();
        var contacts = new Contacts(identityPath, path, entries, kept);
        if (string.IsNullOrEmpty(text))
        {
            // A new file says what it is and how to write it.
            kept.Add((Header, false));
            return contacts;
        }

        int number = 0;
        var lines = new List<int>();
        string[] raws = text.Split('\n');
        // The piece after the last line's end is not a line.
        foreach (string raw in text.EndsWith('\n') ? raws[..^1] : raws)
        {
            number++;
            string line = raw.Trim();
            if (line.Length == 0 || line.StartsWith('#'))
            {
                kept.Add((raw, false));
                continue;
            }

            int space = line.IndexOfAny([' ', '\t']);
            try
            {
                if (space < 0)
                {
                    throw new CliException("a line is a contact card, a space and a name");
                }

                string name = CheckName(line[(space + 1)..]);
                ContactCard card = ContactCard.Parse(line[..space]);
                // Each card and each name once: a second would be ignored, and which one counts would be a guess.
                int twice = entries.FindIndex(e => SameName(e.Name, name) || SameCard(e.Card, card));
                if (twice >= 0)
                {
                    throw new CliException($"{(SameName(entries[twice].Name, name) ? "the name" : "the card")} is on line {lines[twice]} too");
                }

                entries.Add((name, card));
                lines.Add(number);
                kept.Add((raw, true));
            }
            catch (Exception e) when (e is CliException or FormatException)
            {
                // Never skipped: a sender would be shown without the name, or another card used for it.
                throw new CliException($"{path} line {number}: {e.Message.TrimEnd('.')}; fix or delete that line.");
            }
        }

        return contacts;
    }

    private string ToText()
    {
        var text = new StringBuilder();
        foreach ((string line, _) in _lines)
        {
            text.Append(line).Append('\n');
        }

        return text.ToString();
    }
}

/// <summary>
/// An identity's contacts as its file is now, for naming senders: read at start (a damaged file is an error before
/// anything is fetched), and read again when the file has changed since (a contact saved while <c>listen</c> runs is
/// named from its next message on; a file damaged meanwhile is reported once and the names read before stay).
/// </summary>
internal sealed class ContactsFollower
{
    /// <summary>A file written this recently may change again within its time stamp's resolution (a second or two on
    /// some file systems) without its time moving: it is read again until it is older.</summary>
    private static readonly TimeSpan Racy = TimeSpan.FromSeconds(2);

    private readonly string _identityPath, _path;
    private Contacts _contacts;
    private (DateTime Written, long Length) _stamp;

    public ContactsFollower(string identityPath)
    {
        _identityPath = identityPath;
        _path = Contacts.PathOf(identityPath);
        _stamp = Stamp();
        _contacts = Contacts.Load(identityPath);
    }

    private (DateTime Written, long Length) Stamp()
    {
        var file = new FileInfo(_path);
        return file.Exists ? (file.LastWriteTimeUtc, file.Length) : (default, -1);
    }

    /// <summary>The name of <paramref name="card"/> in the contacts, or null.</summary>
    public string? NameOf(ContactCard card)
    {
        (DateTime Written, long Length) stamp = Stamp();
        // Read again when it changed, or was written so lately that it may change again unseen (a time in the future,
        // from a skewed clock, is not "lately": that would read it again for every message).
        DateTime now = DateTime.UtcNow;
        bool changed = stamp != _stamp;
        if (changed || (stamp.Written <= now && now - stamp.Written < Racy))
        {
            _stamp = stamp;
            try
            {
                _contacts = Contacts.Load(_identityPath);
            }
            catch (Exception e) when (e is CliException or IOException or UnauthorizedAccessException)
            {
                if (changed)
                {
                    // Once a change: a damaged file read again for each message would repeat it for each.
                    Console.Error.WriteLine($"meganet: {e.Message} (senders are named as before it changed until it is fixed)");
                }
            }
        }

        return _contacts.NameOf(card);
    }
}
