using System.Buffers;
using System.Text.Json;
using MegaNet.Api;
using MegaNet.Api.V1;
using MegaNet.Core.Interop;

namespace MegaNet.Node.Cli;

/// <summary>
/// What <c>fetch</c> and <c>listen</c> do with each message: print it on standard output (text, or a JSON object a
/// line), naming a sender that is in the contacts; keep a file part until its file is whole; and with
/// <c>--save-files</c> write each file into a directory. When <see cref="Deliver"/> returns, what it printed has reached
/// the reader and what it kept or saved is on disk, so the message may be acknowledged. The waits before deferred
/// parts are tried again are measured on <c>clock</c> (the system's unless a test steps one).
/// </summary>
internal sealed class Inbox(bool json, ContactsFollower contacts, ReceivedParts parts, string? saveDirectory, Inbox.PartsRelease release, TimeProvider? clock = null)
{
    /// <summary>When the kept parts of a file shown go.</summary>
    public enum PartsRelease
    {
        /// <summary>Never (no <c>--ack</c>): the output may go nowhere (a fetch piped into a reader that drops it),
        /// and the parts an earlier run acknowledged are nowhere else; the next fetch shows the file again, as it
        /// shows a message of one envelope again.</summary>
        Never,

        /// <summary><c>listen --ack</c>: once the file is written out (on the disk when standard output is a file),
        /// the point from which listen acknowledges what it wrote.</summary>
        WhenWritten,

        /// <summary><c>fetch --ack</c>: after the acknowledgement (<see cref="ForgetShown"/>), which comes only once
        /// everything fetched was written out; a fetch that fails before it acknowledges nothing, and the next shows
        /// the file again.</summary>
        WhenAcknowledged,
    }

    // Files of several parts shown whose parts are still kept, by parts directory: fetched again in the same run, each
    // of their other parts would make them whole again. (A file of one part is never kept, so it has nothing to come
    // again: another message holding it is one sent again, or a replay SeenMessages has reported already. Noted here,
    // such a file sent again was reported as a copy, and a listen noted one entry for each for as long as it ran.)
    private readonly HashSet<string> _shownFiles = new(StringComparer.Ordinal);

    // Under WhenAcknowledged, the files to forget once the fetch has acknowledged: their parts directory and name only,
    // and the sequence numbers of their parts this run delivered. The Whole itself holds the file's bytes (up to 32 MiB),
    // which a fetch of many files held all of until it ended.
    private readonly List<(string Directory, string FileName, ulong[] Seqs)> _toForget = [];

    // Under WhenAcknowledged, the sequence numbers of the parts delivered so far of each file not yet whole, by sender
    // and file id: a file is forgotten only once the node has deleted all of them (see ForgetShown).
    private readonly Dictionary<string, List<ulong>> _partSeqs = new(StringComparer.Ordinal);

    /// <summary>Attempts at a free name in <c>--save-files</c> ("name (2).ext", ...).</summary>
    private const int MaxNameAttempts = 1_000;

    /// <summary>UTF-8 bytes of a saved file's name at most: file systems allow 255, and the name may get " (1000)" or
    /// the envelope id (67 bytes) added, and the temporary file beside it ".{32 hex digits}.tmp" (37 bytes) more.
    /// Counted in characters (80), a name of Chinese characters came to 240 bytes, and its temporary file's name was
    /// refused as too long: every fetch with --save-files stopped at that message.</summary>
    internal const int MaxSavedNameBytes = 140;

    // Files whose parts came again after the file was shown: reported once a run, not once a part (hundreds).
    private readonly HashSet<string> _copiesReported = [];

    // Entries of _shownFiles and _copiesReported at which they are next checked against the spool (ForgetFilesGone).
    private int _filesCheckAt;

    /// <summary>Entries of the files shown and copies reported at which they are first checked against the spool
    /// (<see cref="ForgetFilesGone"/>); tests set fewer.</summary>
    internal int FilesCheckFrom { get; init; } = 1024;

    /// <summary>Files this run remembers as shown, or as having had their copies reported (for tests).</summary>
    internal int FilesRemembered => _shownFiles.Count + _copiesReported.Count;

    // Parts this run left on the node for want of room in the spool, by sequence number, with what each needs of the
    // caps, its sender (whose place in the contacts is looked up again at each check) and the entry delivered just
    // before it (sequence numbers are the node's log's, so the mailbox's entries are
    // not numbered one after another: this says which deferred entries lie next to each other there); the spool's
    // RoomMade when they were last checked against it; after a fetch of them failed, when to try again and how long the
    // next wait is; and when they are next checked of this run's own accord, and the wait after that. A listen reads
    // each entry once: without these it came back for none of them.
    private readonly SortedDictionary<ulong, (ReceivedParts.Pending Part, ContactCard Sender, long Ordinal)> _deferred = [];
    private long _delivered;
    private long _deferredCheckedAt;
    private bool _deferredDue;
    private int _deferredOffered;
    private long _deferredNotBefore;
    private TimeSpan _deferredBackoff = FirstDeferredBackoff;
    private long _deferredCheckAt;
    private TimeSpan _deferredCheckWait = FirstDeferredBackoff;
    private readonly TimeProvider _clock = clock ?? TimeProvider.System;

    /// <summary>The first wait after a fetch of deferred parts failed; it doubles up to <see cref="MaxDeferredBackoff"/>.</summary>
    internal static readonly TimeSpan FirstDeferredBackoff = TimeSpan.FromSeconds(5);

    /// <summary>The longest wait between two failed fetches of deferred parts: the node's window for a mailbox's opens.</summary>
    internal static readonly TimeSpan MaxDeferredBackoff = TimeSpan.FromMinutes(2);

    // Not disposed: disposing flushes, and after a failed write that would throw again over the clear error.
    private readonly StreamWriter _output = ClientCommands.StandardOutput();

    /// <summary>The directory of <c>--save-files</c>, created if missing; null without the option.</summary>
    public static string? SaveDirectory(string? path)
    {
        if (path is null)
        {
            return null;
        }

        if (File.Exists(path))
        {
            throw new CliException($"--save-files {path} is a file; give a directory (it is created if missing).");
        }

        PrivateFile.CreateDirectory(path);
        return Path.GetFullPath(path);
    }

    /// <summary>Prints <paramref name="m"/>, or keeps it if it is a file part and prints its file once whole; a part that
    /// cannot be used is reported like junk. <paramref name="consequence"/> says, in an error, what became of the mail.
    /// Returns false for mail that must stay on the node, not to be acknowledged: a part there was no room to keep, and
    /// a file whose bytes went nowhere (text output without <c>--save-files</c> only says it came).</summary>
    public bool Deliver(ReceivedMessage m, string? consequence)
    {
        // Delivered again (fetched again by a listen): what becomes of it now counts, and it keeps its place (its
        // ordinal: how many entries this run was handed before it, so how far apart two deferred ones lie, at most).
        long ordinal = _deferred.Remove(m.Seq, out var before) ? before.Ordinal : ++_delivered;
        // Looked up once: it reads the contacts file's time stamp, and re-reads a file written within 2 s.
        string? senderName = contacts.NameOf(m.Sender);
        if (m.Content.ContentType != FileParts.ContentType)
        {
            Show(m, senderName, consequence, parts: 1);
            return KeepsFiles || m.Content.ContentType.StartsWith("text/", StringComparison.Ordinal);
        }

        ForgetFilesGone();
        ReceivedParts.Outcome outcome = parts.Add(m, fromContact: senderName is not null, _shownFiles);
        // A part kept, or the one that made a file of parts whole (not another part of a file shown already, a copy).
        bool adds = outcome is ReceivedParts.Waiting || (outcome is ReceivedParts.Whole { Count: > 1 } made && !_shownFiles.Contains(made.Directory));
        List<ulong>? seqs = release == PartsRelease.WhenAcknowledged && adds ? PartSeqs(m) : null;
        seqs?.Add(m.Seq);
        switch (outcome)
        {
            case ReceivedParts.ShownThisRun again:
                // Another part of a file this run has shown (all its parts came again): a copy, acknowledged or left
                // on the node as the file itself was.
                ReportCopy(m, senderName, again.File);
                return KeepsFiles;
            case ReceivedParts.Whole whole when _shownFiles.Contains(whole.Directory):
                // The same, where the spool had to keep the part anew (another fetch or listen of this identity
                // forgot the file meanwhile and its parts are coming back).
                ReportCopy(m, senderName, whole.Directory);
                return KeepsFiles;
            case ReceivedParts.Whole whole:
                Show(whole.File, senderName, consequence, whole.Count, whole.FileId);
                if (KeepsFiles && release == PartsRelease.WhenWritten)
                {
                    // A crash before the output reached the disk lost a file whose other parts were acknowledged.
                    ClientCommands.FlushStandardOutputToDisk(consequence);
                    parts.Forget(whole);
                    break;
                }

                if (whole.Count > 1)
                {
                    _shownFiles.Add(whole.Directory); // its parts stay for now
                }

                if (!KeepsFiles)
                {
                    // Its parts stay in the spool and its last part on the node, so that a fetch with --json or
                    // --save-files puts it together again: forgotten, its parts fetched again were copies of a file
                    // "shown already", and its bytes were lost.
                    return false;
                }

                if (release == PartsRelease.WhenAcknowledged && whole.Count > 1)
                {
                    _toForget.Add((whole.Directory, whole.File.Content.FileName, [.. seqs ?? []]));
                    _partSeqs.Remove(PartsKey(m));
                }

                break;
            case ReceivedParts.ShownAlready copy:
                ReportCopy(m, senderName, copy.File);
                break;
            case ReceivedParts.Deferred d:
                Console.Error.WriteLine($"[{m.Seq}] {d.Reason}");
                if (_deferred.Count == 0)
                {
                    // Checked against the room there is now (after any prune this part's own Add made).
                    _deferredCheckedAt = parts.RoomMade;
                    ScheduleDeferredCheck(restart: true);
                }

                _deferred[m.Seq] = (d.Part, m.Sender, ordinal);
                return false;
            case ReceivedParts.Waiting w when w.Have == 1 || ClientCommands.CrossesStep(w.Have, w.Count, 4):
                // A few lines for a file of any size: at its first part and at each quarter.
                Console.Error.WriteLine($"[{m.Seq}] part {w.Index + 1} of file '{ClientCommands.Printable(m.Content.FileName, multiline: false)}' from {Shown(senderName, m.Sender)}: " +
                    $"{w.Have} of {w.Count} parts here, kept in {parts.Directory} until the file is whole");
                break;
            case ReceivedParts.Refused r:
                Warn(new UnreadableMessage(m.Seq, m.EnvelopeId, r.Reason));
                break;
        }

        return true;
    }

    /// <summary>Entries of the mailbox, as <see cref="DeferredRun.Seqs"/> and what lies between them, that one
    /// <c>Fetch</c> of deferred parts reads at most (a page, as <c>fetch</c> asks).</summary>
    internal const int DeferredPage = 100;

    /// <summary>Deferred entries to fetch together (ascending), and how many entries of the mailbox they span at most as
    /// this run saw it (their own and those between): one <c>Fetch</c> reads them when the span fits a page.</summary>
    internal readonly record struct DeferredRun(ulong[] Seqs, int Span);

    /// <summary>The parts this run left on the node for want of room that would be kept now
    /// (<see cref="ReceivedParts.WouldFit"/>), to be fetched again (each goes through <see cref="Deliver"/> again): in
    /// runs, oldest first, each of entries that lie within a page of each other in the mailbox as far as this run saw
    /// it, so a retry costs a mailbox open a page of the span, not one an entry. Empty unless room was made in the
    /// spool since they were last checked (a file came whole, parts were handed over or pruned, another process freed
    /// some), a fetch of them failed and its wait is over, or the time for a check of this run's own accord has come
    /// (<see cref="NextDeferredCheck"/>: room made where this process does not see it, another process handing files
    /// over); checked against the caps that deferred each, so room made for another sender, or in an account a part is
    /// not held to, fetches nothing.</summary>
    public List<DeferredRun> DeferredToFetch()
    {
        var runs = new List<DeferredRun>();
        long now = _clock.GetTimestamp();
        if (_deferred.Count == 0 || now < _deferredNotBefore || (parts.RoomMade == _deferredCheckedAt && !_deferredDue && now < _deferredCheckAt))
        {
            return runs;
        }

        // Judged as Deliver would judge each part fetched again: by whether its sender is in the contacts now, not when
        // it was deferred (a sender saved as a contact since is held to the caps per sender alone, and a part the
        // contact's caps let in waited for room made among strangers' files). Looked up once a sender a check.
        var isContact = new Dictionary<string, bool>(StringComparer.Ordinal);
        bool[] fits = parts.WouldFit([.. _deferred.Values.Select(d => d.Part with { FromContact = IsContact(d.Part.SenderHex, d.Sender) })]);
        // After the check: a recount it made that found room was taken into account by it.
        (_deferredCheckedAt, _deferredDue) = (parts.RoomMade, false);
        var run = new List<ulong>();
        (long first, long last) = (0, 0);
        int i = 0;
        foreach ((ulong seq, (_, _, long ordinal)) in _deferred)
        {
            if (!fits[i++])
            {
                continue; // read with the page if it lies in one, and left alone there
            }

            if (run.Count > 0 && ordinal - first >= DeferredPage)
            {
                runs.Add(new DeferredRun([.. run], (int)(last - first + 1)));
                run.Clear();
            }

            if (run.Count == 0)
            {
                first = ordinal;
            }

            run.Add(seq);
            last = ordinal;
        }

        if (run.Count > 0)
        {
            runs.Add(new DeferredRun([.. run], (int)(last - first + 1)));
        }

        _deferredOffered = runs.Count > 0 ? _deferred.Count : 0;
        ScheduleDeferredCheck(restart: runs.Count > 0);
        return runs;

        bool IsContact(string senderHex, ContactCard sender)
        {
            if (!isContact.TryGetValue(senderHex, out bool known))
            {
                isContact[senderHex] = known = contacts.NameOf(sender) is not null;
            }

            return known;
        }
    }

    /// <summary>How long until <see cref="DeferredToFetch"/> checks the deferred parts again of its own accord, whether
    /// or not this process saw room made (zero: now); null when none are deferred, so a listen then waits for mail
    /// alone. Checks that find nothing to fetch come 5 s, 10 s … 2 min apart (a check costs the node nothing: it reads
    /// the spool's totals, and recounts them only after another process changed it), starting over once parts are
    /// deferred anew or fetched; never before the wait after a failed fetch.</summary>
    public TimeSpan? NextDeferredCheck()
    {
        if (_deferred.Count == 0)
        {
            return null;
        }

        long at = Math.Max(_deferredCheckAt, _deferredNotBefore), now = _clock.GetTimestamp();
        // In whole milliseconds, rounded up: a timer that fires a fraction early would find no check due yet.
        return at <= now ? TimeSpan.Zero : TimeSpan.FromMilliseconds(Math.Ceiling((at - now) * 1000.0 / _clock.TimestampFrequency));
    }

    /// <summary>Sets the next check of <see cref="NextDeferredCheck"/>: <see cref="FirstDeferredBackoff"/> from now when
    /// <paramref name="restart"/>, else the next of the growing waits.</summary>
    private void ScheduleDeferredCheck(bool restart)
    {
        if (restart)
        {
            _deferredCheckWait = FirstDeferredBackoff;
        }

        _deferredCheckAt = Later(_deferredCheckWait);
        _deferredCheckWait = TimeSpan.FromTicks(Math.Min(2 * _deferredCheckWait.Ticks, MaxDeferredBackoff.Ticks));
    }

    /// <summary>The deferred parts were fetched again (those still deferred wait for more room). When some of them
    /// were kept (or found gone), the next <see cref="DeferredToFetch"/> checks the rest again whether or not that
    /// made room: of files not begun, one is offered a check (<see cref="ReceivedParts.WouldFit"/>), and a file begun
    /// makes no room, so with room made for two the second waited for room made again, however long that took. A
    /// fetch that kept none (each deferred again) does not, so the check cannot go round fetching the same parts.</summary>
    public void DeferredFetched()
    {
        (_deferredNotBefore, _deferredBackoff) = (0, FirstDeferredBackoff);
        _deferredDue |= _deferred.Count < _deferredOffered;
    }

    /// <summary>A fetch of the deferred parts failed: <see cref="DeferredToFetch"/> offers them again once
    /// <paramref name="retryAfter"/> (the node's <c>retry-after-ms</c>) or a growing wait has passed, whichever is
    /// longer (<see cref="NextDeferredCheck"/> says when), not at the next message: a node that refused the mailbox for opens too many would be asked again at
    /// once, and refused opens count against the address. Returns the wait.</summary>
    public TimeSpan DeferredNotFetched(TimeSpan? retryAfter)
    {
        TimeSpan wait = retryAfter is { } hint && hint > _deferredBackoff ? hint : _deferredBackoff;
        _deferredBackoff = TimeSpan.FromTicks(Math.Min(2 * _deferredBackoff.Ticks, MaxDeferredBackoff.Ticks));
        (_deferredNotBefore, _deferredDue) = (Later(wait), true);
        return wait;
    }

    /// <summary>The clock's timestamp <paramref name="wait"/> from now.</summary>
    private long Later(TimeSpan wait) => _clock.GetTimestamp() + (long)(wait.TotalSeconds * _clock.TimestampFrequency);

    /// <summary>A deferred part that is no longer on the node (acknowledged by another process, or expired).</summary>
    public void DeferredGone(ulong seq) => _deferred.Remove(seq);

    /// <summary><c>fetch --ack</c>, once the node confirmed the acknowledgement: deletes the kept parts of the files
    /// shown. A failure only leaves them behind, to be pruned: the file was shown and acknowledged.</summary>
    /// <param name="acknowledged">Which sequence numbers the node confirmed, when an acknowledgement failed part-way;
    /// null when it confirmed them all. A file with a part not among them keeps its parts: that part is still on the
    /// node, and the next fetch puts the file together again and shows it again, as it shows again any message not
    /// acknowledged. (Left out, the parts of the files acknowledged whole stayed in the spool for a month, counted
    /// against its room.)</param>
    public void ForgetShown(Func<ulong, bool>? acknowledged = null)
    {
        foreach ((string directory, string fileName, ulong[] seqs) in _toForget)
        {
            if (acknowledged is not null && !seqs.All(acknowledged))
            {
                continue;
            }

            try
            {
                parts.Forget(directory);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or CliException)
            {
                Console.Error.WriteLine($"meganet: the parts of file '{ClientCommands.Printable(fileName, multiline: false)}' (shown and acknowledged) could not be deleted from {directory} ({e.Message}); they are deleted {SeenMessages.Window.TotalDays:0} days after they came.");
            }
        }

        _toForget.Clear();
    }

    /// <summary>The sequence numbers of the parts of <paramref name="part"/>'s file delivered so far in this run.</summary>
    private List<ulong> PartSeqs(ReceivedMessage part)
    {
        string key = PartsKey(part);
        if (!_partSeqs.TryGetValue(key, out List<ulong>? seqs))
        {
            _partSeqs[key] = seqs = [];
        }

        return seqs;
    }

    /// <summary>A file in parts, as ReceivedParts keeps it apart from others: by its sender and its file id (a part
    /// that reached the spool has a header that reads).</summary>
    private static string PartsKey(ReceivedMessage part) =>
        FileParts.TryReadHeader(part.Content.Content.Span, out FilePartHeader header, out _)
            ? $"{Convert.ToHexStringLower(part.Sender.Address)}-{Convert.ToHexStringLower(header.FileId.Span)}"
            : string.Empty;

    /// <summary>Drops the files shown and copies reported that the spool no longer remembers
    /// (<see cref="ReceivedParts.Remembers"/>: their parts and the record of the envelopes that brought them are gone,
    /// pruned <see cref="SeenMessages.Window"/> after they were last written), once the entries have doubled since they
    /// were last checked (at least <see cref="FilesCheckFrom"/>): a part of such a file starts it anew here, as it
    /// would in a fetch or listen started now, so what is shown does not change; and a listen that runs for months
    /// holds an entry for each file the spool holds, not for each it ever showed.</summary>
    private void ForgetFilesGone()
    {
        if (FilesRemembered < Math.Max(_filesCheckAt, FilesCheckFrom))
        {
            return;
        }

        _shownFiles.RemoveWhere(file => !ReceivedParts.Remembers(file));
        _copiesReported.RemoveWhere(file => !ReceivedParts.Remembers(file));
        _filesCheckAt = 2 * FilesRemembered;
    }

    private void ReportCopy(ReceivedMessage m, string? senderName, string file)
    {
        if (_copiesReported.Add(file))
        {
            Console.Error.WriteLine($"[{m.Seq}] skipped: parts of file '{ClientCommands.Printable(m.Content.FileName, multiline: false)}' from {Shown(senderName, m.Sender)}, " +
                "which was shown already: copies until they are acknowledged (the others of this file are not listed)");
        }
    }

    /// <summary>Whether a file's bytes reach the user: in the JSON (base64) or in <c>--save-files</c>' directory.</summary>
    private bool KeepsFiles => json || saveDirectory is not null;

    /// <summary>Reports mail that is not shown (junk, a copy, an unusable part) on standard error.</summary>
    public static void Warn(UnreadableMessage m) =>
        Console.Error.WriteLine($"[{m.Seq}] skipped (envelope {Convert.ToHexStringLower(m.EnvelopeId)}): {m.Reason}");

    /// <summary>Writes out what is buffered; a failure becomes a one-line error that says what happened to the mail.</summary>
    public void Flush(string? consequence) => ClientCommands.Flush(_output, consequence);

    private void Show(ReceivedMessage m, string? senderName, string? consequence, int parts, string? fileId = null)
    {
        bool isText = m.Content.ContentType.StartsWith("text/", StringComparison.Ordinal);
        (string Path, bool There)? saved = null;
        if (!isText && saveDirectory is not null)
        {
            try
            {
                saved = Save(saveDirectory, m);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw ClientCommands.MailError($"cannot save file '{ClientCommands.Printable(m.Content.FileName, multiline: false)}' in {saveDirectory} ({e.Message})", consequence);
            }
        }

        try
        {
            Print(m, isText, senderName, parts, fileId, saved);
        }
        catch (IOException e)
        {
            throw ClientCommands.MailError($"cannot write to standard output ({e.Message})", consequence);
        }

        Flush(consequence);
    }

    /// <summary>A sender as shown: the name its card has in the contacts, else the card. A name only for a card in the
    /// contacts: the card came sealed, under the sender's signature (unknown senders are shown by their card, which no
    /// one else can sign for).</summary>
    private static string Shown(string? name, ContactCard sender) => name is not null ? ClientCommands.Printable(name, multiline: false) : sender.ToString();

    private void Print(ReceivedMessage m, bool isText, string? senderName, int parts, string? fileId, (string Path, bool There)? saved)
    {
        SealedContent c = m.Content;
        if (json)
        {
            // Encoded once as UTF-8, the file's base64 too, and written in one write(2) with its newline (so a line on
            // stderr from another thread cannot land inside it): building the line as a string first took about 450 MB
            // of memory for a file of 32 MiB. The escaping is JavaScriptEncoder.Default's as before, but base64 is no
            // longer escaped ('+' was written \u002B): the same JSON, fewer bytes.
            var line = new ArrayBufferWriter<byte>(1024);
            using (var writer = new Utf8JsonWriter(line))
            {
                writer.WriteStartObject();
                writer.WriteNumber("seq", m.Seq);
                writer.WriteString("id", Convert.ToHexStringLower(m.EnvelopeId));
                writer.WriteString("sender", m.Sender.ToString());
                writer.WriteNumber("timestamp_unix_ms", c.SentUnixMs);
                writer.WriteNumber("log_index", m.LogIndex);
                writer.WriteBoolean("old", m.Old);
                if (isText)
                {
                    writer.WriteString("text", c.Content.ToStringUtf8());
                }
                else
                {
                    writer.WriteString("file_name", c.FileName);
                    writer.WriteNumber("file_length", c.Content.Length);
                    if (saved is { } s)
                    {
                        writer.WriteString("saved_as", s.Path);
                        if (s.There)
                        {
                            writer.WriteBoolean("saved_before", true);
                        }
                    }
                    else
                    {
                        writer.WriteBase64String("file_base64", c.Content.Span);
                    }

                    if (parts > 1)
                    {
                        writer.WriteNumber("parts", parts);
                        writer.WriteString("file_id", fileId);
                    }
                }

                if (senderName is not null)
                {
                    writer.WriteString("sender_name", senderName);
                }

                writer.WriteEndObject();
            }

            line.Write("\n"u8);
            _output.Flush();
            _output.BaseStream.Write(line.WrittenSpan);
            return;
        }

        string when = DateTimeOffset.FromUnixTimeMilliseconds(c.SentUnixMs).ToString("u", System.Globalization.CultureInfo.InvariantCulture);
        if (m.Old)
        {
            when += c.SentUnixMs > DateTimeOffset.UtcNow.ToUnixTimeMilliseconds()
                ? " (dated in the future: the sender's clock is wrong, or this is a replay of a message received before, which a future date keeps from being recognised)"
                : $" (old: sent over {SeenMessages.Window.TotalDays:0} days ago, so possibly a replay of a message received before, or the sender's clock is wrong)";
        }

        string from = Shown(senderName, m.Sender);
        string inParts = parts > 1 ? $" in {parts} parts" : string.Empty;
        string where = saved switch
        {
            { There: true } s => $"saved as {ClientCommands.Printable(s.Path, multiline: false)} before: the same bytes are there",
            { } s => $"saved as {ClientCommands.Printable(s.Path, multiline: false)}",
            null => "left on the node: use --json or --save-files DIR to get its contents",
        };
        _output.WriteLine(isText
            ? $"[{m.Seq}] {when} from {from}: {ClientCommands.Printable(c.Content.ToStringUtf8(), multiline: true)}"
            : $"[{m.Seq}] {when} from {from}: file '{ClientCommands.Printable(c.FileName, multiline: false)}' ({c.Content.Length} bytes{inParts}; {where})");
    }

    /// <summary>
    /// Writes a received file into <paramref name="directory"/> under <see cref="SavedName"/>, owner-only, through
    /// <see cref="PrivateFile.Write"/> (a temporary file, flushed, then linked under the name, never over a file or a link
    /// that is there, and the directory flushed: a write cut short never stands under the name), taking the first free
    /// name: "name (2).ext" and so on, and after that many the envelope id, so no name stops the mailbox. A plain file
    /// under one of those names that holds the same bytes already is the file saved before (a fetch without --ack gets
    /// the same mail again): it is not written again. Returns the path, and whether the file was there before.
    /// </summary>
    private static (string Path, bool There) Save(string directory, ReceivedMessage m)
    {
        string name = SavedName(m.Content.FileName);
        string stem = Path.GetFileNameWithoutExtension(name), extension = Path.GetExtension(name);
        string id = Convert.ToHexStringLower(m.EnvelopeId);
        for (int attempt = 1; attempt <= MaxNameAttempts + 2; attempt++)
        {
            // After that many, the envelope id: a name no other envelope's file takes (its first 16 digits, then all).
            string path = Path.Combine(directory, attempt switch
            {
                1 => name,
                <= MaxNameAttempts => $"{stem} ({attempt}){extension}",
                MaxNameAttempts + 1 => $"{stem} ({id[..16]}){extension}",
                _ => $"{stem} ({id}){extension}",
            });
            if (Path.Exists(path))
            {
                if (HoldsAlready(path, m.Content.Content.Span))
                {
                    return (path, true);
                }

                // Taken: not worth writing (and flushing) the whole file to learn it; the race is caught below.
                continue;
            }

            try
            {
                PrivateFile.Write(path, stream => stream.Write(m.Content.Content.Span), replace: false);
                return (path, false);
            }
            catch (IOException e) when (e.HResult == PrivateFile.AlreadyExists || Path.Exists(path))
            {
            }
        }

        throw new IOException($"no free name for it: '{name}' and {MaxNameAttempts + 1:N0} more are taken by other files");
    }

    /// <summary>Whether <paramref name="path"/> is this user's own private file (regular, not a link, which could name any
    /// file, nor a pipe, whose open would wait for a writer; owner-only, as saved files are, so nobody else can have put
    /// it there or change it after) holding exactly <paramref name="content"/>.</summary>
    internal static bool HoldsAlready(string path, ReadOnlySpan<byte> content)
    {
        var info = new FileInfo(path);
        if (!info.Exists || info.Length != content.Length || !PrivateFile.IsOwnPrivateFile(path))
        {
            return false;
        }

        FileStream stream;
        try
        {
            stream = new(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, bufferSize: 0);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Unreadable (not ours, or gone): another name is taken instead.
            return false;
        }

        using FileStream read = stream;
        byte[] buffer = ArrayPool<byte>.Shared.Rent(81_920);
        try
        {
            for (int at = 0; at < content.Length;)
            {
                int got = read.Read(buffer, 0, Math.Min(buffer.Length, content.Length - at));
                if (got == 0 || !buffer.AsSpan(0, got).SequenceEqual(content.Slice(at, got)))
                {
                    return false;
                }

                at += got;
            }

            // Grown since it was measured: not the same file.
            return read.Read(buffer, 0, 1) == 0;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>
    /// The name a received file is saved under: the sender chose it, so it is made one plain name in the directory: path
    /// separators, drive colons and characters Windows refuses become '_', as do control, format and separator
    /// characters (which could hide what the name is) and a leading '.' or '-' (no hidden files such as .bashrc, no name
    /// a command would take for an option); "", "." and ".." become "file"; a long name is cut, keeping its extension; and a
    /// name the CLI keeps beside identity files (<see cref="SideFiles.IsSideFileName"/>) gets a '_' at its end.
    /// </summary>
    internal static string SavedName(string fileName)
    {
        var b = new System.Text.StringBuilder(fileName.Length);
        foreach (System.Text.Rune rune in fileName.EnumerateRunes())
        {
            bool replace = rune.Value is '/' or '\\' or ':' or '<' or '>' or '"' or '|' or '?' or '*'
                || ClientCommands.IsHidden(rune) || rune == System.Text.Rune.ReplacementChar;
            b.Append(replace ? "_" : rune.ToString());
        }

        string name = b.ToString().Trim().TrimEnd('.');
        if (name.Length == 0)
        {
            return "file";
        }

        if (name[0] is '.' or '-')
        {
            name = "_" + name[1..];
        }

        if (System.Text.Encoding.UTF8.GetByteCount(name) > MaxSavedNameBytes)
        {
            string extension = Path.GetExtension(name);
            extension = System.Text.Encoding.UTF8.GetByteCount(extension) <= 24 ? extension : string.Empty;
            int room = MaxSavedNameBytes - System.Text.Encoding.UTF8.GetByteCount(extension);
            // Cut between whole characters: half of one is no character, and no file system name.
            var cut = new System.Text.StringBuilder();
            foreach (System.Text.Rune rune in name.EnumerateRunes())
            {
                if ((room -= rune.Utf8SequenceLength) < 0)
                {
                    break;
                }

                cut.Append(rune.ToString());
            }

            name = cut + extension;
        }

        // Not a name the CLI keeps beside identities (bob.contacts, bob.seen, known-nodes, ...): saved into an identity's
        // directory where that file was missing, a stranger's file became the contacts, the received-message record or
        // the pinned node ids the next command read (found in review, 2026-12-04). The file is kept, its name marked.
        return SideFiles.IsSideFileName(name) ? name + "_" : name;
    }
}
