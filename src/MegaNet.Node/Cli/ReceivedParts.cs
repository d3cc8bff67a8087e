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
/// file, on the disk), its parts are deleted here (<see cref="Forget(Whole)"/>), and the envelope ids that brought them are
/// remembered (<c>KEY.done</c>), so those envelopes, fetched again, are copies of a file shown already rather than the
/// start of another. Without <c>--ack</c> they are kept, and the next fetch shows the file again. Parts of a file that never becomes whole, and those records, are
/// deleted <see cref="SeenMessages.Window"/> after they were last written (checked at start and hourly). A
/// <c>fetch</c> and a <c>listen</c> of the same identity take turns through a lock beside the directory.
/// </summary>
/// <remarks>
/// What is kept is capped in two accounts (docs/protocol.md): files still arriving, whose caps (bytes and files, per
/// sender and in all) defer new parts; and files whole here already (shown, kept until a fetch or listen with
/// <c>--ack</c> hands their bytes over), whose caps (bytes) defer only a part that would make another file whole, so a
/// file shown and not yet saved never keeps a later one from arriving. Each part is charged its length, at least a block
/// (<see cref="MinPartCost"/>), and each file a directory's worth more (<see cref="SetCost"/>), and a part must be cut as
/// the protocol says (every slice but the last a full one), so the caps bound what the directory takes on disk. The
/// totals are kept in memory, counted again from the disk only when another process changed the directory (it rewrites
/// a token there with each change): counting them for each part made a page of parts quadratic in the files kept.
/// </remarks>
internal sealed class ReceivedParts
{
    /// <summary>Bytes charged for each file's directory and its list of envelopes, a block each, beside its parts:
    /// charged for the parts alone, a stranger's parts of a few hundred bytes each opened hundreds of thousands of
    /// directories within the caps.</summary>
    public const long SetCost = 8192;

    /// <summary>Bytes charged for a part at least: a file takes a block on disk, however short.</summary>
    public const long MinPartCost = 4096;

    /// <summary>Bytes of files still arriving kept for one sender at most, and as much again of files whole here: what
    /// two files of the most parts hold back (<see cref="Reservation"/>), so two of 32 MiB fit whatever their names. A
    /// long name takes room from every part's slice, so a 32 MiB file takes more parts (up to
    /// <see cref="FileParts.MaxParts"/>), each as large as any: a cap of two files' bytes plus 1 KiB a part let two in
    /// only under names up to about 1,700 UTF-8 bytes. Identities cost nothing, so this alone does not bound the
    /// directory; <see cref="MaxBytes"/> does.</summary>
    public const long MaxBytesPerSender = 2 * (SetCost + (FileParts.MaxParts * (long)EnvelopeFormat.LargestPayloadClass));

    /// <summary>Bytes of files still arriving kept in all at most, and as much again of files whole here: eight files
    /// of 32 MiB under names up to about 1,700 UTF-8 bytes (each part with up to 1 KiB of its sealed content's other
    /// fields), four of the most parts. It counts what is on disk, not what files hold back.</summary>
    public const long MaxBytes = 8 * (FileParts.MaxFileLength + (FileParts.MaxParts * 1024L) + SetCost);

    /// <summary>Files still arriving from one sender at once at most: a sender sends one file after another, and each
    /// set waiting costs a directory however small its parts.</summary>
    public const int MaxOpenFilesPerSender = 16;

    /// <summary>Files still arriving at once at most, from senders not in the contacts.</summary>
    public const int MaxOpenFiles = 256;

    private const string PartExtension = ".part";

    /// <summary>Beside each file's parts: "INDEX ENVELOPE-ID" a line; appended to KEY.done once the file is forgotten.</summary>
    private const string IdsFile = "envelopes";

    private const string DoneExtension = ".done";

    /// <summary>In the directory: 16 random bytes, rewritten by every change to what it holds, so that another process
    /// knows its totals are out of date.</summary>
    private const string TokenFile = "changed";

    private static readonly TimeSpan PruneInterval = TimeSpan.FromHours(1);

    private readonly long _maxBytesPerSender, _maxBytes;
    private readonly int _maxOpenFilesPerSender, _maxOpenFiles;

    // What each file's directory holds and is charged, by its path, and the totals per sender and in all: the name of a
    // file's directory fixes the file (its sender and id, which is derived from its length, hash and slice), hence each
    // part's length, and parts are only ever added to it or deleted with it, so the same number of parts is the same
    // bytes; a count that differs is summed again. Current while _indexed, as of the token _token.
    private readonly Dictionary<string, FileSet> _files = new(StringComparer.Ordinal);
    private readonly Dictionary<string, SenderTotals> _senders = new(StringComparer.Ordinal);
    private long _openBytes, _wholeBytes;
    private int _openFiles;
    private bool _indexed;
    private Guid _token;
    private DateTime _pruned;

    private ReceivedParts(string directory, long maxBytesPerSender, long maxBytes, int maxOpenFilesPerSender, int maxOpenFiles) =>
        (Directory, _maxBytesPerSender, _maxBytes, _maxOpenFilesPerSender, _maxOpenFiles) = (directory, maxBytesPerSender, maxBytes, maxOpenFilesPerSender, maxOpenFiles);

    /// <summary>The directory.</summary>
    public string Directory { get; }

    /// <summary>The clock parts are pruned by (tests set their own).</summary>
    internal TimeProvider Clock { get; set; } = TimeProvider.System;

    /// <summary>How many times this process saw room made: a file came whole (out of the account of files arriving),
    /// a file's parts were deleted (forgotten once handed over, pruned, dropped), or the totals counted again after
    /// another process changed the directory were lower than before. A part <see cref="Deferred"/> can fit only once it
    /// changed (whether it does, for that part's sender and caps, <see cref="WouldFit"/> says).</summary>
    public long RoomMade { get; private set; }

    /// <summary>How many times the totals were counted from the disk (for tests: once, and again only after another
    /// process changed the directory).</summary>
    internal int Recounts { get; private set; }

    /// <summary>How many times a file of several parts was put together from its parts (for tests: once a run for a file
    /// whose parts all come again, not once a part).</summary>
    internal int Joins { get; private set; }

    /// <summary>Senders whose totals are kept (for tests: those with files here).</summary>
    internal int SendersCounted => _senders.Count;

    /// <summary>The parts directory of the identity at <paramref name="identityPath"/>, pruned of parts waiting too long;
    /// the caps are <see cref="MaxBytesPerSender"/>, <see cref="MaxBytes"/>, <see cref="MaxOpenFilesPerSender"/> and
    /// <see cref="MaxOpenFiles"/> unless a test sets smaller ones.</summary>
    public static ReceivedParts Beside(string identityPath, long maxBytesPerSender = MaxBytesPerSender, long maxBytes = MaxBytes,
        int maxOpenFilesPerSender = MaxOpenFilesPerSender, int maxOpenFiles = MaxOpenFiles)
    {
        var parts = new ReceivedParts(SideFiles.Of(identityPath, SideFiles.Parts), maxBytesPerSender, maxBytes, maxOpenFilesPerSender, maxOpenFiles);
        if (System.IO.Directory.Exists(parts.Directory))
        {
            // Not counted here: a fetch that gets no parts need not read the directory.
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
    /// parts stay here until <see cref="Forget(Whole)"/>, so a file that could not be shown or saved is put together again when
    /// one of its parts comes again. (A file of one part is never kept: <paramref name="Directory"/> does not exist.)
    /// <paramref name="FileId"/> is the id its parts carry (lower-case hex): with the sender it names the file whichever
    /// part made it whole, where the message's seq, envelope id and time are that part's.</summary>
    public sealed record Whole(ReceivedMessage File, int Count, string Directory, string FileId) : Outcome;

    /// <summary>Not a part that can be used (said why); like junk, it is reported and may be acknowledged.</summary>
    public sealed record Refused(string Reason) : Outcome;

    /// <summary>A part of a file shown already, fetched again before it was acknowledged (<paramref name="File"/> names
    /// the file's parts directory, so copies of one file can be reported once): a copy, to be acknowledged.</summary>
    public sealed record ShownAlready(string File) : Outcome;

    /// <summary>A part kept here already of a file whole here that the caller has shown in this run (its directory,
    /// <paramref name="File"/>, was among those passed to <see cref="Add"/> as shown): a copy, checked against the part
    /// kept but not put together into the file again.</summary>
    public sealed record ShownThisRun(string File) : Outcome;

    /// <summary>Not kept for now (the caps are reached; said why, and what makes room): reported, and left on the node,
    /// not acknowledged, so a later fetch gets it once room is made (and a running listen, once <see cref="WouldFit"/>
    /// says <paramref name="Part"/> fits).</summary>
    public sealed record Deferred(string Reason, Pending Part) : Outcome;

    /// <summary>What a deferred part needs of the caps, remembered so that <see cref="WouldFit"/> can tell without the
    /// part itself whether room was made for it: its sender's and file's directory, where it goes in the file, what
    /// it is charged, and whether its sender is in the contacts (held to the caps per sender only; as when it was
    /// deferred, and a caller that knows the contacts now passes it as they are now).</summary>
    public sealed record Pending(string SenderHex, string File, int Index, int Count, long Charge, bool FromContact);

    /// <summary>Keeps <paramref name="part"/> (a message of content type <see cref="FileParts.ContentType"/>), and puts
    /// its file together once every part is here. A part <paramref name="fromContact"/> (its sender is in the
    /// identity's contacts) is held only to the caps per sender: strangers filling the directory cannot stop the files of
    /// people one knows. A part kept already of a file whose directory is in <paramref name="shown"/> (the caller showed
    /// it whole in this run) is <see cref="ShownThisRun"/>, not put together again: every part of a file left on the node
    /// comes again with each fetch, and putting a file of 307 parts together for each of them read and hashed 6 GB.</summary>
    public Outcome Add(ReceivedMessage part, bool fromContact = false, IReadOnlySet<string>? shown = null)
    {
        SealedContent content = part.Content;
        if (!FileParts.TryReadHeader(content.Content.Span, out FilePartHeader header, out string? problem))
        {
            return new Refused(problem);
        }

        string name = ClientCommands.Printable(content.FileName, multiline: false);
        if (CutProblem(header, content.Content.Length - FileParts.HeaderLength, content.FileName) is { } cut)
        {
            return new Refused($"part {header.Index + 1} of file '{name}' is not cut as the protocol says: {cut}");
        }

        // Keyed by the sender too: a part from anyone else cannot join (or spoil) this sender's file.
        string senderHex = Convert.ToHexStringLower(part.Sender.Address);
        string fileId = Convert.ToHexStringLower(header.FileId.Span);
        string file = Path.Combine(Directory, $"{senderHex}-{fileId}");
        if (header.Count == 1)
        {
            // Whole as it comes: nothing to wait for, so nothing kept (a directory for it would be one more that each
            // envelope could open).
            return FileParts.TryJoin([content.Content.Memory], out byte[]? single, out problem)
                ? new Whole(part with { Content = Opened(content, single) }, 1, file, fileId)
                : new Refused($"file '{name}' in 1 part: {problem}");
        }

        string envelope = Convert.ToHexStringLower(part.EnvelopeId);
        using LockedFile held = Lock();
        Count();
        // Also when the clock stepped back (NTP correcting a clock that ran ahead): waiting for it to pass the last
        // prune's time again put pruning off by as long as the step.
        TimeSpan sincePrune = Clock.GetUtcNow().UtcDateTime - _pruned;
        if (sincePrune > PruneInterval || sincePrune < TimeSpan.Zero)
        {
            Prune();
        }

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
            if (have == header.Count && shown is not null && shown.Contains(file))
            {
                return new ShownThisRun(file);
            }
        }
        else
        {
            _files.TryGetValue(file, out FileSet? set);
            if (set is null ? kept.Length > 0 : set.Parts != kept.Length)
            {
                // Out of step with the disk (a process of an older version changed it, or one died half way): this
                // file counted again.
                set = Recount(file, kept, header.Count);
            }

            byte[] bytes = content.ToByteArray();
            long charge = Math.Max(bytes.Length, MinPartCost);
            if (Full(set, senderHex, charge, Reservation(header.Count), completes: have + 1 == header.Count, fromContact) is { } full)
            {
                return new Deferred($"part {header.Index + 1} of file '{name}' is left on the node for now: {full}",
                    new Pending(senderHex, file, header.Index, header.Count, charge, fromContact));
            }

            bool counted = Changing();
            PrivateFile.CreateDirectory(Directory);
            PrivateFile.CreateDirectory(file);
            PrivateFile.Write(path, stream => stream.Write(bytes), replace: true);
            RememberEnvelope(file, header.Index, envelope, known: false);
            if (set is null)
            {
                _files[file] = set = new FileSet(SenderOf(file), 0, SetCost, header.Count);
                Account(set, +1);
            }

            Account(set, -1);
            set.Parts++;
            set.Bytes += charge;
            set.Count = header.Count;
            Account(set, +1);
            _indexed = counted;
            have++;
            RoomMade += set.Whole ? 1 : 0;
        }

        // Counted under the lock: a listen and a fetch storing the last two parts at once see the file whole in
        // whichever takes the lock second.
        if (have < header.Count)
        {
            return new Waiting(header.Index, have, header.Count);
        }

        Joins++;
        var slices = new ReadOnlyMemory<byte>[header.Count];
        for (int i = 0; i < header.Count; i++)
        {
            slices[i] = SealedContent.Parser.ParseFrom(File.ReadAllBytes(Path.Combine(file, i.ToString(CultureInfo.InvariantCulture) + PartExtension))).Content.Memory;
        }

        if (!FileParts.TryJoin(slices, out byte[]? whole, out problem))
        {
            Delete(file);
            return new Refused($"file '{name}' in {header.Count} parts: {problem}; its parts were dropped");
        }

        return new Whole(part with { Content = Opened(content, whole) }, header.Count, file, fileId);
    }

    /// <summary>The message of a whole file: the part's, with the file as its content.</summary>
    private static SealedContent Opened(SealedContent part, byte[] file) =>
        new(part) { ContentType = "application/octet-stream", Content = UnsafeByteOperations.UnsafeWrap(file) };

    /// <summary>What is wrong with a part whose slice is <paramref name="slice"/> bytes, when its file of that name is not
    /// cut as docs/protocol.md says (as <see cref="FileParts.Split"/> cuts it: every slice but the last a full
    /// <see cref="FileParts.SliceLength"/>), or null. A header that merely holds (FileParts.TryReadHeader) let a part of
    /// a few bytes claim a set of its own: two parts of an empty file.</summary>
    private static string? CutProblem(FilePartHeader header, int slice, string fileName)
    {
        long full = FileParts.SliceLength(fileName);
        if (full < 1)
        {
            return "its name leaves no room for any of the file";
        }

        long count = Math.Max(1, (header.FileLength + full - 1) / full);
        long expected = header.Index < header.Count - 1 ? full : header.FileLength - ((header.Count - 1) * full);
        return count != header.Count ? $"a file of {header.FileLength:N0} bytes under that name is cut into {count:N0} part(s) of {full:N0} bytes, not {header.Count:N0}"
            : slice != expected ? $"it holds {slice:N0} bytes of the file, where part {header.Index + 1} of {header.Count} holds {expected:N0}"
            : null;
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

    /// <summary>Whether each of <paramref name="parts"/>, deferred before, would be kept now: the caps that deferred it
    /// checked again against the totals now, counted again if another process changed the directory. A running listen
    /// asks this before it fetches a part again: room made for another sender, or in an account the part is not held
    /// to, does not make it fit, and fetching it only to defer it again cost a mailbox open each time. Parts are
    /// judged each against the totals now, not what the others would take: so at most one file not begun here yet is
    /// said to fit a call (all its parts), or every deferred file would be judged against the one room made, all
    /// fetched, and all but one deferred again.</summary>
    public bool[] WouldFit(IReadOnlyList<Pending> parts)
    {
        ArgumentNullException.ThrowIfNull(parts);
        var fits = new bool[parts.Count];
        if (parts.Count == 0)
        {
            return fits;
        }

        using LockedFile held = Lock();
        Count();
        string? begun = null;
        for (int i = 0; i < parts.Count; i++)
        {
            Pending part = parts[i];
            _files.TryGetValue(part.File, out FileSet? set);
            int have = set?.Parts ?? 0;
            // A part kept already (brought meanwhile by another envelope) is not charged again.
            if (File.Exists(Path.Combine(part.File, part.Index.ToString(CultureInfo.InvariantCulture) + PartExtension)))
            {
                fits[i] = true;
                continue;
            }

            if (set is null && begun is not null && begun != part.File)
            {
                continue; // another file would begin in this call: its room is judged once that one is counted
            }

            fits[i] = Full(set, part.SenderHex, part.Charge, Reservation(part.Count), completes: have + 1 == part.Count, part.FromContact) is null;
            if (fits[i] && set is null)
            {
                begun = part.File;
            }
        }

        return fits;
    }

    /// <summary>Deletes the parts of a file that has been shown (and saved) for good, remembering the envelopes that
    /// brought them beside those of the times it was made whole before.</summary>
    public void Forget(Whole whole)
    {
        ArgumentNullException.ThrowIfNull(whole);
        if (whole.Count > 1)
        {
            Forget(whole.Directory); // a file of one part was never kept
        }
    }

    /// <summary><see cref="Forget(Whole)"/> by the file's directory (<see cref="Whole.Directory"/>) alone: a caller that
    /// forgets later need not hold the file's bytes until then.</summary>
    public void Forget(string directory)
    {
        using LockedFile held = Lock();
        if (!System.IO.Directory.Exists(directory))
        {
            return;
        }

        Count();
        string ids = Path.Combine(directory, IdsFile);
        if (File.Exists(ids))
        {
            PrivateFile.Append(directory + DoneExtension, File.ReadAllText(ids));
        }

        Delete(directory);
    }

    /// <summary>Whether the spool still remembers the file whose parts directory is <paramref name="directory"/>
    /// (<see cref="Whole.Directory"/>): its parts are kept, or, once it was forgotten, the envelopes that brought them
    /// are (<c>KEY.done</c>, written before the parts go), until the prune deletes them. Read without the lock: at
    /// any moment one of the two is there while either is meant to be.</summary>
    public static bool Remembers(string directory) => System.IO.Directory.Exists(directory) || File.Exists(directory + DoneExtension);

    private LockedFile Lock() => LockedFile.Open(Directory, "another 'meganet fetch' or 'listen' of this identity");

    /// <summary>What a file still arriving holds back of its sender's cap: each of its parts as the largest payload an
    /// envelope carries (a full part's sealed content fits it, whatever the name), and its directory; from the header's
    /// count alone, so a file holds back the same from its first part on and when counted again from the disk. A file
    /// is let begin only when the whole of it fits its sender's cap, and no part of a file begun is put off for that
    /// cap: files from one sender begun together and charged part by part could fill it with none of them whole, and
    /// then every part still missing waited for room that only a whole file would make.</summary>
    internal static long Reservation(int count) => SetCost + (count * (long)EnvelopeFormat.LargestPayloadClass);

    /// <summary>Why keeping a part charged <paramref name="adding"/> bytes of the file <paramref name="set"/> (null: a
    /// file not begun here, which holds back <paramref name="reservation"/> of its sender's cap once begun) from the
    /// sender <paramref name="senderHex"/> would pass a cap, and what makes room; or null. A part that
    /// <paramref name="completes"/> its file moves the file to the account of whole files, and is held to that
    /// account's caps alone; any other part of a file begun is within what the file holds back of its sender's cap, and
    /// a stranger's part is held to the bytes here in all (strangers' files can fill that with none whole: they then
    /// wait for the prune, where a contact's never do).</summary>
    private string? Full(FileSet? set, string senderHex, long adding, long reservation, bool completes, bool fromContact)
    {
        SenderTotals sender = _senders.GetValueOrDefault(senderHex) ?? SenderTotals.None;
        if (completes)
        {
            long file = (set?.Bytes ?? SetCost) + adding;
            const string Frees = ": 'meganet fetch --ack --save-files DIR' (or --json --ack) hands them over and frees the room";
            return sender.WholeBytes + file > _maxBytesPerSender
                    ? $"files from this sender whole here already (shown, kept until they are handed over) take {sender.WholeBytes:N0} bytes, and this one would take {file:N0} more; the most kept for one sender is {_maxBytesPerSender:N0}{Frees}"
                : _wholeBytes + file > _maxBytes && !fromContact
                    ? $"files whole in {Directory} already (shown, kept until they are handed over) take {_wholeBytes:N0} bytes, and this one would take {file:N0} more; the most kept is {_maxBytes:N0}{Frees}"
                : null;
        }

        bool begins = set is null;
        string frees = $"; room is made as those files come whole, or {SeenMessages.Window.TotalDays:0} days after their latest part";
        return begins && sender.OpenFiles >= _maxOpenFilesPerSender ? $"{sender.OpenFiles} files from this sender are arriving here already (the most at once for one sender){frees}"
            : begins && sender.OpenBytes + reservation > _maxBytesPerSender ? $"files still arriving from this sender hold {sender.OpenBytes:N0} bytes here already (each the whole of its parts), and this one would hold {reservation:N0} more; the most kept for one sender is {_maxBytesPerSender:N0}{frees}"
            : fromContact ? null
            : begins && _openFiles >= _maxOpenFiles ? $"{_openFiles} files are arriving in {Directory} already (the most at once){frees}"
            : _openBytes + adding + (begins ? SetCost : 0) > _maxBytes ? $"parts of files still arriving in {Directory} take {_openBytes:N0} bytes already, the most kept is {_maxBytes:N0}{frees}"
            : null;
    }

    /// <summary>Brings the totals up to date with the directory, counting it again only when it changed since this
    /// process last counted or changed it (the token another process rewrote).</summary>
    private void Count()
    {
        Guid token = ReadToken();
        if (_indexed && token == _token)
        {
            return;
        }

        Recounts++;
        var present = new HashSet<string>(StringComparer.Ordinal);
        if (System.IO.Directory.Exists(Directory))
        {
            foreach (string file in System.IO.Directory.GetDirectories(Directory))
            {
                present.Add(file);
                string[] parts = System.IO.Directory.GetFiles(file, "*" + PartExtension);
                if (!_files.TryGetValue(file, out FileSet? set) || set.Parts != parts.Length)
                {
                    _files[file] = Measure(file, parts, count: 0);
                }
            }
        }

        foreach (string gone in _files.Keys.Where(f => !present.Contains(f)).ToList())
        {
            _files.Remove(gone);
        }

        (int openFiles, long openBytes, long wholeBytes) = (_openFiles, _openBytes, _wholeBytes);
        _senders.Clear();
        (_openFiles, _openBytes, _wholeBytes) = (0, 0, 0);
        foreach (FileSet set in _files.Values)
        {
            Account(set, +1);
        }

        // Another process (a fetch --ack beside a listen) forgot or finished files.
        RoomMade += _openFiles < openFiles || _openBytes < openBytes || _wholeBytes < wholeBytes ? 1 : 0;

        (_indexed, _token) = (true, token);
    }

    /// <summary><paramref name="file"/>, whose <paramref name="parts"/> are listed, counted again in the totals.</summary>
    private FileSet Recount(string file, string[] parts, int count)
    {
        if (_files.TryGetValue(file, out FileSet? old))
        {
            Account(old, -1);
        }

        FileSet set = _files[file] = Measure(file, parts, count);
        Account(set, +1);
        return set;
    }

    /// <summary>What a file's directory holding <paramref name="parts"/> is charged, and how many parts it has
    /// (<paramref name="count"/> when known, else read from a part).</summary>
    private static FileSet Measure(string file, string[] parts, int count)
    {
        long bytes = SetCost;
        foreach (string part in parts)
        {
            bytes += Math.Max(new FileInfo(part).Length, MinPartCost);
        }

        return new FileSet(SenderOf(file), parts.Length, bytes, count > 0 || parts.Length == 0 ? count : ReadCount(parts[0]));
    }

    /// <summary>The number of parts a kept part's header announces (0 when it does not read), from its first 4 KiB
    /// where the header lies there (as it does but under a very long name): counting the directory again need not read
    /// every file whole.</summary>
    private static int ReadCount(string part)
    {
        byte[] start = new byte[4096];
        int read;
        using (var stream = new FileStream(part, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 0))
        {
            read = stream.ReadAtLeast(start, start.Length, throwOnEndOfStream: false);
        }

        FilePartHeader header;
        try
        {
            var input = new CodedInputStream(start, 0, read);
            for (uint tag; (tag = input.ReadTag()) != 0;)
            {
                if (tag != WireFormat.MakeTag(SealedContent.ContentFieldNumber, WireFormat.WireType.LengthDelimited))
                {
                    input.SkipLastField();
                    continue;
                }

                int length = input.ReadLength(), at = (int)input.Position;
                if (length >= FileParts.HeaderLength && read - at >= FileParts.HeaderLength)
                {
                    return FileParts.TryReadHeader(start.AsSpan(at, FileParts.HeaderLength), out header, out _) ? header.Count : 0;
                }

                break;
            }
        }
        catch (InvalidProtocolBufferException)
        {
            // Past the first 4 KiB (a long name): read whole below.
        }

        try
        {
            return FileParts.TryReadHeader(SealedContent.Parser.ParseFrom(File.ReadAllBytes(part)).Content.Span, out header, out _) ? header.Count : 0;
        }
        catch (InvalidProtocolBufferException)
        {
            return 0;
        }
    }

    private static string SenderOf(string file)
    {
        string name = Path.GetFileName(file);
        int dash = name.IndexOf('-', StringComparison.Ordinal);
        return dash < 0 ? name : name[..dash];
    }

    /// <summary>Adds <paramref name="set"/> to the totals (<paramref name="sign"/> +1), or takes it out (-1).</summary>
    private void Account(FileSet set, int sign)
    {
        if (!_senders.TryGetValue(set.Sender, out SenderTotals? sender))
        {
            _senders[set.Sender] = sender = new SenderTotals();
        }

        if (set.Whole)
        {
            sender.WholeBytes += sign * set.Bytes;
            _wholeBytes += sign * set.Bytes;
        }
        else
        {
            // The sender's cap counts what its files hold back; the cap in all counts what is here: eight forged
            // parts each claiming a file of 32 MiB would otherwise hold back all of it, for every stranger, a month.
            sender.OpenFiles += sign;
            sender.OpenBytes += sign * Math.Max(set.Bytes, Reservation(set.Count));
            _openFiles += sign;
            _openBytes += sign * set.Bytes;
        }

        // A sender with nothing here any more goes: identities cost nothing to make, and a listen kept totals of zero
        // for every sender whose parts it ever kept, until another process changed the directory (a recount).
        if (sender is { OpenFiles: 0, OpenBytes: 0, WholeBytes: 0 })
        {
            _senders.Remove(set.Sender);
        }
    }

    /// <summary>Deletes a file's directory and takes it out of the totals.</summary>
    private void Delete(string file)
    {
        bool counted = Changing();
        if (System.IO.Directory.Exists(file))
        {
            System.IO.Directory.Delete(file, recursive: true);
        }

        if (_files.Remove(file, out FileSet? set))
        {
            Account(set, -1);
        }

        _indexed = counted;
        RoomMade++;
    }

    /// <summary>Before a change to the directory: rewrites the token, so other processes count again, and marks the
    /// totals out of date until the caller has brought them along (it sets <see cref="_indexed"/> back to what this
    /// returns; a change that throws half way leaves them to be counted again).</summary>
    private bool Changing()
    {
        bool counted = _indexed;
        _indexed = false;
        PrivateFile.CreateDirectory(Directory);
        _token = Guid.NewGuid();
        var options = new FileStreamOptions { Mode = FileMode.OpenOrCreate, Access = FileAccess.Write, Share = FileShare.Read };
        if (!OperatingSystem.IsWindows())
        {
            options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        }

        Span<byte> bytes = stackalloc byte[16];
        _token.TryWriteBytes(bytes);
        using (var stream = new FileStream(Path.Combine(Directory, TokenFile), options))
        {
            stream.Write(bytes);
        }

        return counted;
    }

    private Guid ReadToken()
    {
        Span<byte> bytes = stackalloc byte[16];
        try
        {
            using var stream = new FileStream(Path.Combine(Directory, TokenFile), FileMode.Open, FileAccess.Read, FileShare.ReadWrite, bufferSize: 0);
            return stream.ReadAtLeast(bytes, 16, throwOnEndOfStream: false) == 16 ? new Guid(bytes) : Guid.Empty;
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            return Guid.Empty;
        }
    }

    /// <summary>Deletes the parts of files whose latest part came longer than <see cref="SeenMessages.Window"/> ago.</summary>
    private void Prune()
    {
        _pruned = Clock.GetUtcNow().UtcDateTime;
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
                Delete(file);
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

    /// <summary>A file's directory: its sender, parts and the bytes they are charged (<see cref="SetCost"/> included),
    /// and how many parts the file has (0 while unknown: counted as still arriving).</summary>
    private sealed class FileSet(string sender, int parts, long bytes, int count)
    {
        public string Sender { get; } = sender;

        public int Parts { get; set; } = parts;

        public long Bytes { get; set; } = bytes;

        public int Count { get; set; } = count;

        public bool Whole => Count > 0 && Parts >= Count;
    }

    /// <summary>One sender's totals: files still arriving and their bytes, and bytes of files whole here.</summary>
    private sealed class SenderTotals
    {
        public static readonly SenderTotals None = new();

        public int OpenFiles { get; set; }

        public long OpenBytes { get; set; }

        public long WholeBytes { get; set; }
    }
}
