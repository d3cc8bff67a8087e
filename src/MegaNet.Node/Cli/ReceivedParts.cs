using System.Globalization;
using Google.Protobuf;
using MegaNet.Api;
using MegaNet.Api.V1;
using MegaNet.Core.Interop;

namespace MegaNet.Node.Cli;

/// <summary>
/// Parts of files sent in several envelopes (<see cref="FileParts"/>), kept beside the identity file until each file is
/// whole: the directory with the extension <c>.parts</c> (<c>bob.json</c> → <c>bob.parts</c>, mode 0700), one
/// directory per file (sender address and file id), each part's opened content in a file of its own. A part is on disk
/// (flushed, and its directory entry too) before <see cref="Add"/> returns, so <c>--ack</c> may delete it from the
/// node; once the file is whole, checked and shown by a fetch or listen with <c>--ack</c> (and, when standard output is a
/// file, on the disk), its parts are deleted here (<see cref="Forget"/>), and the envelope ids that brought them are
/// remembered (<c>KEY.done</c>), so those envelopes, fetched again, are copies of a file shown already rather than the
/// start of another. Without <c>--ack</c> they are kept, and the next fetch shows the file again. Parts of a file that never becomes whole, and those records, are
/// deleted <see cref="SeenMessages.Window"/> after they were last written (checked at start and hourly). A
/// <c>fetch</c> and a <c>listen</c> of the same identity take turns through a lock beside the directory.
/// </summary>
internal sealed class ReceivedParts
{
    /// <summary>Bytes of parts kept for one sender at most: two files of the largest size, each part with up to 1 KiB
    /// of its sealed content's other fields. Identities cost nothing, so this alone does not bound the directory;
    /// <see cref="MaxBytes"/> does.</summary>
    public const long MaxBytesPerSender = 2 * (FileParts.MaxFileLength + (FileParts.MaxParts * 1024L));

    /// <summary>Bytes of parts kept in all at most: eight files of the largest size.</summary>
    public const long MaxBytes = 4 * MaxBytesPerSender;

    private const string PartExtension = ".part";

    /// <summary>Beside each file's parts: "INDEX ENVELOPE-ID" a line; appended to KEY.done once the file is forgotten.</summary>
    private const string IdsFile = "envelopes";

    private const string DoneExtension = ".done";

    private static readonly TimeSpan PruneInterval = TimeSpan.FromHours(1);

    private readonly long _maxBytesPerSender, _maxBytes;

    // Bytes of parts in each file's directory, with how many parts there were: summing every part's length for each part
    // added made a file of 1,024 parts cost half a million stat calls. The name of a file's directory fixes the file
    // (its sender and id, which is derived from its length, hash and slice), hence each part's length, and parts are only
    // ever added to it or deleted with it, so the same number of parts is the same bytes, whichever fetch or listen wrote
    // them; a count that differs is summed again.
    private readonly Dictionary<string, (int Parts, long Bytes)> _sizes = new(StringComparer.Ordinal);
    private DateTime _pruned;

    private ReceivedParts(string directory, long maxBytesPerSender, long maxBytes) =>
        (Directory, _maxBytesPerSender, _maxBytes) = (directory, maxBytesPerSender, maxBytes);

    /// <summary>The directory.</summary>
    public string Directory { get; }

    /// <summary>The parts directory of the identity at <paramref name="identityPath"/>, pruned of parts waiting too long;
    /// the caps are <see cref="MaxBytesPerSender"/> and <see cref="MaxBytes"/> unless a test sets smaller ones.</summary>
    public static ReceivedParts Beside(string identityPath, long maxBytesPerSender = MaxBytesPerSender, long maxBytes = MaxBytes)
    {
        var parts = new ReceivedParts(SideFiles.Of(identityPath, SideFiles.Parts), maxBytesPerSender, maxBytes);
        if (System.IO.Directory.Exists(parts.Directory))
        {
            using LockedFile held = parts.Lock();
            parts.Prune();
        }

        return parts;
    }

    /// <summary>What became of a part.</summary>
    public abstract record Outcome;

    /// <summary>Kept; the file is not whole yet (<paramref name="Index"/> counts from 0).</summary>
    public sealed record Waiting(int Index, int Have, int Count) : Outcome;

    /// <summary>The file is whole: <paramref name="File"/> is the part's message with the whole file as its content. Its
    /// parts stay here until <see cref="Forget"/>, so a file that could not be shown or saved is put together again when
    /// one of its parts comes again.</summary>
    public sealed record Whole(ReceivedMessage File, int Count, string Directory) : Outcome;

    /// <summary>Not a part that can be used (said why); like junk, it is reported and may be acknowledged.</summary>
    public sealed record Refused(string Reason) : Outcome;

    /// <summary>A part of a file shown already, fetched again before it was acknowledged (<paramref name="File"/> names
    /// the file's parts directory, so copies of one file can be reported once): a copy, to be acknowledged.</summary>
    public sealed record ShownAlready(string File) : Outcome;

    /// <summary>Not kept for now (the caps are reached; said why): reported, and left on the node, not acknowledged, so
    /// a later fetch gets it once room is made.</summary>
    public sealed record Deferred(string Reason) : Outcome;

    /// <summary>Keeps <paramref name="part"/> (a message of content type <see cref="FileParts.ContentType"/>), and puts
    /// its file together once every part is here. A part <paramref name="fromContact"/> (its sender is in the
    /// identity's contacts) is held only to the cap per sender: strangers filling the directory cannot stop the files of
    /// people one knows.</summary>
    public Outcome Add(ReceivedMessage part, bool fromContact = false)
    {
        SealedContent content = part.Content;
        if (!FileParts.TryReadHeader(content.Content.Span, out FilePartHeader header, out string? problem))
        {
            return new Refused(problem);
        }

        string name = ClientCommands.Printable(content.FileName, multiline: false);
        using LockedFile held = Lock();
        if (DateTime.UtcNow - _pruned > PruneInterval)
        {
            Prune();
        }

        // Keyed by the sender too: a part from anyone else cannot join (or spoil) this sender's file.
        string senderHex = Convert.ToHexStringLower(part.Sender.Address);
        string file = Path.Combine(Directory, $"{senderHex}-{Convert.ToHexStringLower(header.FileId.Span)}");
        string envelope = Convert.ToHexStringLower(part.EnvelopeId);
        if (File.Exists(file + DoneExtension) && File.ReadLines(file + DoneExtension).Any(line => line.EndsWith(" " + envelope, StringComparison.Ordinal)))
        {
            return new ShownAlready(file);
        }

        string path = Path.Combine(file, header.Index.ToString(CultureInfo.InvariantCulture) + PartExtension);
        string[] kept = System.IO.Directory.Exists(file) ? System.IO.Directory.GetFiles(file, "*" + PartExtension) : [];
        if (kept.Length > 0)
        {
            SealedContent earlier = SealedContent.Parser.ParseFrom(File.ReadAllBytes(kept[0]));
            if (!FileParts.TryReadHeader(earlier.Content.Span, out FilePartHeader first, out _) || !first.SameFile(header) || earlier.FileName != content.FileName)
            {
                return new Refused($"part {header.Index + 1} of file '{name}' does not match the parts of that file received before (another count, length, hash or name)");
            }
        }

        int have = kept.Length;
        if (File.Exists(path))
        {
            // The same part again (fetched again before it was acknowledged): the same slice, or two parts claim it.
            if (!SealedContent.Parser.ParseFrom(File.ReadAllBytes(path)).Content.Equals(content.Content))
            {
                return new Refused($"part {header.Index + 1} of file '{name}' came twice with different contents");
            }

            // Another envelope with the same part (the file sent again after a send that stopped part-way) is remembered
            // too: otherwise, once the file is forgotten, it would start the same file over as a set never whole.
            RememberEnvelope(file, header.Index, envelope, known: true);
        }
        else
        {
            byte[] bytes = content.ToByteArray();
            if (Full(senderHex, bytes.Length, fromContact) is { } full)
            {
                return new Deferred($"part {header.Index + 1} of file '{name}' is left on the node for now: {full}");
            }

            PrivateFile.CreateDirectory(Directory);
            PrivateFile.CreateDirectory(file);
            long before = BytesIn(file, kept);
            PrivateFile.Write(path, stream => stream.Write(bytes), replace: true);
            _sizes[file] = (kept.Length + 1, before + bytes.Length);
            RememberEnvelope(file, header.Index, envelope, known: false);
            have++;
        }

        // Counted under the lock: a listen and a fetch storing the last two parts at once see the file whole in
        // whichever takes the lock second.
        if (have < header.Count)
        {
            return new Waiting(header.Index, have, header.Count);
        }

        var slices = new ReadOnlyMemory<byte>[header.Count];
        for (int i = 0; i < header.Count; i++)
        {
            slices[i] = SealedContent.Parser.ParseFrom(File.ReadAllBytes(Path.Combine(file, i.ToString(CultureInfo.InvariantCulture) + PartExtension))).Content.Memory;
        }

        if (!FileParts.TryJoin(slices, out byte[]? whole, out problem))
        {
            System.IO.Directory.Delete(file, recursive: true);
            _sizes.Remove(file);
            return new Refused($"file '{name}' in {header.Count} parts: {problem}; its parts were dropped");
        }

        var opened = new SealedContent(content) { ContentType = "application/octet-stream", Content = UnsafeByteOperations.UnsafeWrap(whole) };
        return new Whole(part with { Content = opened }, header.Count, file);
    }

    /// <summary>Notes which envelope brought part <paramref name="index"/> of <paramref name="file"/> (not flushed: losing
    /// a line costs only the recognition of a copy). A part new here came in a new envelope; one kept already may have
    /// come in the same envelope before (<paramref name="known"/>: looked up first).</summary>
    private static void RememberEnvelope(string file, int index, string envelope, bool known)
    {
        string ids = Path.Combine(file, IdsFile);
        if (!known || !File.Exists(ids) || !File.ReadLines(ids).Any(line => line.EndsWith(" " + envelope, StringComparison.Ordinal)))
        {
            PrivateFile.Append(ids, $"{index} {envelope}\n");
        }
    }

    /// <summary>Deletes the parts of a file that has been shown (and saved) for good, remembering the envelopes that
    /// brought them beside those of the times it was made whole before.</summary>
    public void Forget(Whole whole)
    {
        using LockedFile held = Lock();
        string ids = Path.Combine(whole.Directory, IdsFile);
        if (File.Exists(ids))
        {
            PrivateFile.Append(whole.Directory + DoneExtension, File.ReadAllText(ids));
        }

        if (System.IO.Directory.Exists(whole.Directory))
        {
            System.IO.Directory.Delete(whole.Directory, recursive: true);
        }

        _sizes.Remove(whole.Directory);
    }

    private LockedFile Lock() => LockedFile.Open(Directory, "another 'meganet fetch' or 'listen' of this identity");

    /// <summary>Why <paramref name="adding"/> more bytes from the sender <paramref name="senderHex"/> would pass a cap,
    /// or null.</summary>
    private string? Full(string senderHex, long adding, bool fromContact)
    {
        if (!System.IO.Directory.Exists(Directory))
        {
            return null;
        }

        long sender = 0, all = 0;
        foreach (string file in System.IO.Directory.GetDirectories(Directory))
        {
            long bytes = BytesIn(file);
            all += bytes;
            sender += Path.GetFileName(file).StartsWith(senderHex, StringComparison.Ordinal) ? bytes : 0;
        }

        return sender + adding > _maxBytesPerSender ? $"parts of files from this sender waiting here already take {sender:N0} bytes, the most kept for one sender is {_maxBytesPerSender:N0}"
            : all + adding > _maxBytes && !fromContact ? $"parts of files waiting in {Directory} already take {all:N0} bytes, the most kept is {_maxBytes:N0}"
            : null;
    }

    /// <summary>Bytes of the parts in the file directory <paramref name="file"/>, summed again only when their number
    /// changed.</summary>
    private long BytesIn(string file) => BytesIn(file, System.IO.Directory.GetFiles(file, "*" + PartExtension));

    /// <summary><see cref="BytesIn(string)"/> with the directory's <paramref name="parts"/> listed already.</summary>
    private long BytesIn(string file, string[] parts)
    {
        if (_sizes.TryGetValue(file, out (int Parts, long Bytes) known) && known.Parts == parts.Length)
        {
            return known.Bytes;
        }

        long bytes = parts.Sum(f => new FileInfo(f).Length);
        _sizes[file] = (parts.Length, bytes);
        return bytes;
    }

    /// <summary>Deletes the parts of files whose latest part came longer than <see cref="SeenMessages.Window"/> ago.</summary>
    private void Prune()
    {
        _pruned = DateTime.UtcNow;
        if (!System.IO.Directory.Exists(Directory))
        {
            return;
        }

        DateTime before = _pruned - SeenMessages.Window;
        foreach (string file in System.IO.Directory.GetDirectories(Directory))
        {
            string[] parts = System.IO.Directory.GetFiles(file);
            if (parts.Length == 0 || parts.Max(File.GetLastWriteTimeUtc) < before)
            {
                System.IO.Directory.Delete(file, recursive: true);
                _sizes.Remove(file);
            }
        }

        foreach (string done in System.IO.Directory.GetFiles(Directory, "*" + DoneExtension))
        {
            if (File.GetLastWriteTimeUtc(done) < before)
            {
                File.Delete(done);
            }
        }
    }
}
