using System.Buffers.Binary;
using System.Globalization;
using System.Text;
using MegaNet.Core.Interop;

namespace MegaNet.Api;

/// <summary>
/// What one identity has received, so that a replay is recognised: a relay that saw a sealed payload can wrap it in a
/// new envelope (a new id), and it opens as the same signed message again (docs/protocol.md, "Replays"). A message is
/// known by its content digest, which the sender signed over the recipient, the sender, the send time and the content.
/// The same digest in another envelope is a copy; the same envelope fetched again is not, until its owner has
/// acknowledged it (<see cref="Acknowledged"/>): after that it is a copy too, since whoever kept the envelope (the node
/// that held it, a relay, a watcher on a plaintext link) can submit it unchanged to another node the owner reads from.
/// </summary>
/// <remarks>
/// Kept in a text file (one line per message: digest, envelope id prefix, send time; about 120 bytes; and once it is
/// acknowledged, the same line again ending in <c>acked</c>), appended as messages arrive and pruned of entries older than <see cref="Window"/> when opened and once a day while open (a listen runs for months), so the file stays small. A
/// message sent longer ago than the window cannot be told apart from a replay of one already forgotten, but it is
/// still shown (<see cref="IsOld"/> marks it): nodes may keep mail for years (MaxTtlDays up to 3,650), and a sender's
/// clock can be wrong, so hiding it (and deleting it under <c>--ack</c>) lost real mail. Only a message whose digest
/// is in the record, in another envelope, is reported as a copy. Processes of one identity (<c>fetch</c>, <c>listen</c>)
/// share the file: a message an instance does not know is looked up in what the others appended since, under the
/// record's lock, before it is recorded. Thread-safe.
/// </remarks>
public sealed class SeenMessages
{
    /// <summary>How long messages are remembered, counted from their send time: longer than nodes keep an envelope by
    /// default (30 days), plus a day for clocks. Messages sent before it are shown marked old (<see cref="IsOld"/>).</summary>
    public static readonly TimeSpan Window = TimeSpan.FromDays(31);

    // An envelope id prefix is enough to tell "the same envelope again" from "another envelope".
    private const int IdPrefixBytes = 16;

    private const string AckedMark = "acked";

    // How often a record held open (a listen runs for months) forgets what left the window, as an open does.
    private static readonly TimeSpan PruneEvery = TimeSpan.FromDays(1);

    private readonly Dictionary<string, Entry> _seen = new(StringComparer.Ordinal);

    // Envelope id prefix -> digest, for Acknowledged, which knows the envelope only. An entry a later line replaced may
    // be left here: checked against _seen.
    private readonly Dictionary<string, string> _digestById = new(StringComparer.Ordinal);
    private readonly TimeProvider _clock;
    private readonly Lock _lock = new();

    // Where the last complete line this instance read ends, the count of rewrites (kept in the lock file) when it read
    // it, and which file it was: lines other processes append later are read from there, and a rewrite since (another
    // process's open pruning the file into a new one, renamed over it) means reading it again from the start. Null: not
    // read yet (the identity: nothing read, or a system where it cannot be told).
    private long _offset;
    private long? _generation;
    private FileIdentity? _identity;

    // When this instance last forgot what left the window (opening is one such time); under _lock.
    private DateTimeOffset _pruned;

    private SeenMessages(string? path, TimeProvider clock)
    {
        Path = path;
        _clock = clock;
        _pruned = clock.GetUtcNow();
    }

    /// <summary>The file, or null for a set kept in memory only.</summary>
    public string? Path { get; }

    /// <summary>Messages remembered.</summary>
    public int Count
    {
        get
        {
            lock (_lock)
            {
                return _seen.Count;
            }
        }
    }

    /// <summary>A set kept in memory only (for one session).</summary>
    public static SeenMessages InMemory(TimeProvider? clock = null) => new(null, clock ?? TimeProvider.System);

    /// <summary>Loads the file at <paramref name="path"/> (created on the first message), forgetting entries older than
    /// <see cref="Window"/>. Lines that do not parse (a write cut short by a crash) are dropped.</summary>
    public static SeenMessages Open(string path, TimeProvider? clock = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var seen = new SeenMessages(System.IO.Path.GetFullPath(path), clock ?? TimeProvider.System);
        if (!File.Exists(seen.Path))
        {
            return seen;
        }

        // Read and pruned under the record's lock, which appends take too: a line another process (a listen beside
        // this fetch) appended between the read and the rewrite was lost with the old file.
        FileStream held;
        try
        {
            held = seen.LockRecord();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new IOException($"Cannot lock the record of received messages '{seen.Path}' ({seen.Path}.lock): {e.Message}", e);
        }

        using FileStream locked = held;
        seen._generation = ReadGeneration(locked);
        int lines, kept;
        bool torn;
        using (FileStream file = OpenToRead(seen.Path))
        {
            (lines, kept) = seen.ReadFrom(file, 0, opening: true);
            torn = file.Length > seen._offset;
            seen._identity = FileIdentity.Of(file.SafeFileHandle);
        }

        // A last line without its end (a crash) is rewritten whole too: a line appended after it would be glued to it.
        if (lines > kept || torn)
        {
            seen.Rewrite(locked);
        }

        return seen;
    }

    /// <summary>
    /// Remembers a message that opened and says whether to show it: null when it is new, or the same envelope seen
    /// before and not acknowledged since (<see cref="Acknowledged"/>); otherwise why it is not shown (the same signed
    /// message received before in another envelope, or this envelope again after its message was acknowledged: a copy).
    /// A message not in the record is always shown, however old (<see cref="IsOld"/> says whether to mark it).
    /// </summary>
    /// <remarks>A message this instance does not know is looked up again in the file, under its lock, before it is
    /// recorded: another process of this identity (a <c>fetch</c> beside a <c>listen</c>, or a second <c>listen</c>
    /// to another node) may have shown it since this one was opened, and a relay's copy of it must not be shown again
    /// here as new.</remarks>
    /// <param name="contentDigest">The content digest the message's signature covers.</param>
    /// <param name="envelopeId">The envelope's id.</param>
    /// <param name="sentUnixMs">When it was sent.</param>
    /// <param name="formerEnvelopeId">The same envelope's id by the rule before 2026-11-29 (signing bytes ‖ signature),
    /// which a record written then holds: a message fetched then and not acknowledged is the same envelope, not a copy
    /// (without this, <c>fetch --ack</c> after an upgrade deleted it unseen).</param>
    /// <exception cref="IOException">The file cannot be read or written; the message names it.</exception>
    public string? Check(ReadOnlySpan<byte> contentDigest, ReadOnlySpan<byte> envelopeId, long sentUnixMs, ReadOnlySpan<byte> formerEnvelopeId = default)
    {
        if (contentDigest.Length != 32 || envelopeId.Length < IdPrefixBytes)
        {
            throw new ArgumentException("A content digest is 32 bytes and an envelope id at least 16.");
        }

        string digest = Convert.ToHexStringLower(contentDigest);
        string id = Convert.ToHexStringLower(envelopeId[..IdPrefixBytes]);
        string? former = formerEnvelopeId.Length >= IdPrefixBytes ? Convert.ToHexStringLower(formerEnvelopeId[..IdPrefixBytes]) : null;
        lock (_lock)
        {
            PruneIfDue();

            // Known here: answered from memory, without touching the file, unless it is this very envelope, not yet
            // known as acknowledged: another process of this identity (a fetch --ack beside this listen) may have.
            if (_seen.TryGetValue(digest, out Entry first) && (Path is null || first.Acknowledged || !SameEnvelope(first, id, former)))
            {
                return Verdict(first, id, former);
            }

            // Remembered by its send time, but never later than a day from now: a sender's clock set to year 9999 (or
            // a sender filling the record on purpose) kept each such line, loaded on every fetch, for good.
            long recorded = Math.Min(sentUnixMs, Latest());
            if (Path is null)
            {
                Remember(digest, new Entry(id, recorded, Acknowledged: false));
                return null;
            }

            try
            {
                using FileStream held = LockRecord();
                // What other processes recorded since this one last read the file, read before deciding and recording
                // under the same lock, so that two of them cannot both take one message (or its copy) for new.
                bool torn = CatchUp(held);
                if (_seen.TryGetValue(digest, out first))
                {
                    return Verdict(first, id, former);
                }

                Remember(digest, new Entry(id, recorded, Acknowledged: false));
                // One sent before the window would be pruned at the next open anyway: remembered for this session
                // only, so the file is not rewritten on every open for it.
                if (!IsOld(recorded))
                {
                    // After a line cut short by a crash, on a line of its own: glued to the fragment, it was lost to the
                    // other processes and to the next open.
                    MegaNet.Core.Interop.PrivateFile.AppendLine(Path, Line(digest, new Entry(id, recorded, Acknowledged: false)), afterCutLine: torn, FileShare.ReadWrite);
                }
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new IOException($"Cannot record a received message in '{Path}': {e.Message}", e);
            }

            return null;
        }
    }

    /// <summary>
    /// Remembers that the message in the envelope <paramref name="envelopeId"/> was acknowledged (deleted from the node
    /// that held it): from now on that envelope, should it come again, is a copy too. Call it once the node has
    /// confirmed the deletion; before, a failed acknowledgement would hide a message the next fetch is to show again.
    /// An envelope not in the record (never checked here, or sent before the window) is passed over.
    /// </summary>
    /// <exception cref="IOException">The file cannot be read or written; the message names it.</exception>
    public void Acknowledged(ReadOnlySpan<byte> envelopeId)
    {
        if (envelopeId.Length < IdPrefixBytes)
        {
            throw new ArgumentException("An envelope id is at least 16 bytes.", nameof(envelopeId));
        }

        string id = Convert.ToHexStringLower(envelopeId[..IdPrefixBytes]);
        lock (_lock)
        {
            if (Path is null)
            {
                MarkAcknowledged(id);
                return;
            }

            try
            {
                using FileStream held = LockRecord();
                // Another process may have recorded it (or its acknowledgement) since this one last read the file.
                bool torn = CatchUp(held);
                if (MarkAcknowledged(id) is { } line)
                {
                    MegaNet.Core.Interop.PrivateFile.AppendLine(Path, line, afterCutLine: torn, FileShare.ReadWrite);
                }
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new IOException($"Cannot record an acknowledged message in '{Path}': {e.Message}", e);
            }
        }
    }

    /// <summary>Marks the entry of envelope id prefix <paramref name="id"/> acknowledged, and returns the line that says
    /// so, or null when there is nothing to record (not known, already marked, or too old to keep).</summary>
    private string? MarkAcknowledged(string id)
    {
        if (!_digestById.TryGetValue(id, out string? digest) || !_seen.TryGetValue(digest, out Entry entry) || entry.IdPrefix != id || entry.Acknowledged)
        {
            return null;
        }

        _seen[digest] = entry with { Acknowledged = true };
        return IsOld(entry.SentUnixMs) ? null : Line(digest, entry with { Acknowledged = true });
    }

    /// <summary>Under <see cref="_lock"/>. Once a day, forgets the messages sent before the window, in memory and in
    /// the file (rewritten under the record's lock, with what other processes appended), as an open does: a record held
    /// open by a listen was pruned only when the next process opened it, and until then grew by every message, in the
    /// file and in memory, for as long as the listen ran.</summary>
    private void PruneIfDue()
    {
        DateTimeOffset now = _clock.GetUtcNow();
        // Also when the clock stepped back: waiting for it to pass the old time again would put pruning off by the step.
        if (now >= _pruned && now - _pruned < PruneEvery)
        {
            return;
        }

        _pruned = now;
        if (Path is null)
        {
            Forget();
            return;
        }

        try
        {
            using FileStream held = LockRecord();
            CatchUp(held);
            if (Forget())
            {
                Rewrite(held);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new IOException($"Cannot prune the record of received messages '{Path}': {e.Message}", e);
        }
    }

    /// <summary>Under <see cref="_lock"/>. Drops the entries sent before the window; true when there were any.</summary>
    private bool Forget()
    {
        long oldest = Oldest();
        int before = _seen.Count;
        foreach ((string digest, Entry entry) in _seen)
        {
            if (entry.SentUnixMs < oldest)
            {
                _seen.Remove(digest); // allowed while enumerating a Dictionary
            }
        }

        if (_seen.Count == before)
        {
            return false;
        }

        _digestById.Clear();
        foreach ((string digest, Entry entry) in _seen)
        {
            _digestById[entry.IdPrefix] = digest;
        }

        return true;
    }

    private void Remember(string digest, Entry entry)
    {
        _seen[digest] = entry;
        _digestById[entry.IdPrefix] = digest;
    }

    private static string Line(string digest, Entry entry) =>
        $"{digest} {entry.IdPrefix} {entry.SentUnixMs.ToString(CultureInfo.InvariantCulture)}{(entry.Acknowledged ? " " + AckedMark : "")}";

    private static bool SameEnvelope(Entry first, string id, string? former) => first.IdPrefix == id || first.IdPrefix == former;

    private static string? Verdict(Entry first, string id, string? former) =>
        !SameEnvelope(first, id, former)
            ? $"not shown: a copy of the message received before in envelope {first.IdPrefix}…, wrapped in a new envelope (a relay replayed it)"
            : first.Acknowledged
                ? $"not shown: envelope {first.IdPrefix}… again, whose message was received and acknowledged before (another node's copy, or a replay by whoever kept it)"
                : null;

    /// <summary>True when a message sent at <paramref name="sentUnixMs"/> is older than <see cref="Window"/>, or dated
    /// more than a day ahead: the record no longer says (or, for one from the future, a month from now will no longer
    /// say) whether it was received before, so it may be a replay, or the sender's clock is wrong. Such a message is
    /// shown, marked. (A future date is remembered as a day from now, and forgotten a window later: unmarked, a relay
    /// could replay it as new every month.)</summary>
    public bool IsOld(long sentUnixMs) => sentUnixMs < Oldest() || sentUnixMs > Latest();

    private long Latest() => (_clock.GetUtcNow() + TimeSpan.FromDays(1)).ToUnixTimeMilliseconds();

    private long Oldest() => (_clock.GetUtcNow() - Window).ToUnixTimeMilliseconds();

    /// <summary>Takes the record's lock (the file <c>.lock</c> beside it, held exclusively; another process of this
    /// identity holds it for a moment at most), waiting up to 5 s.</summary>
    /// <exception cref="IOException">Still held after that.</exception>
    private FileStream LockRecord()
    {
        var options = new FileStreamOptions { Mode = FileMode.OpenOrCreate, Access = FileAccess.ReadWrite, Share = FileShare.None };
        if (!OperatingSystem.IsWindows())
        {
            options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        }

        for (int waited = 0; ; waited += 10)
        {
            try
            {
                return new FileStream(Path + ".lock", options);
            }
            catch (IOException e) when (MegaNet.Core.Interop.FileLock.IsContention(e) && waited < 5_000)
            {
                Thread.Sleep(10);
            }
        }
    }

    /// <summary>Reads what was appended since this instance last read the file (all of it again when it was rewritten
    /// meanwhile: counted in the lock file, or, by a version that does not count rewrites, another file under the name,
    /// or one shorter than what was read). Called with the record's lock held (<paramref name="held"/>), so no line is
    /// half-written but one a crash cut short; true when the file ends in such a line.</summary>
    private bool CatchUp(FileStream held)
    {
        long generation = ReadGeneration(held);
        FileStream file;
        try
        {
            file = OpenToRead(Path!);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            // Nothing recorded yet (or the file was deleted): the next line written starts it again.
            (_offset, _generation, _identity) = (0, generation, null);
            return false;
        }

        using (file)
        {
            // A version before rewrites were counted renames its rewrite over the file and leaves the count as it was: a
            // new file no shorter than the old one was read from the old one's offset, mid-line or past its end, and
            // what it held was never read. A file of its own has another identity. (Where none can be told, the length
            // alone tells some of those rewrites.)
            FileIdentity? identity = FileIdentity.Of(file.SafeFileHandle);
            long from = generation == _generation && identity == _identity && file.Length >= _offset ? _offset : 0;
            ReadFrom(file, from, opening: false);
            (_generation, _identity) = (generation, identity);
            return file.Length > _offset;
        }
    }

    private static FileStream OpenToRead(string path) =>
        // Others append (and, renaming a rewritten file over it, replace it) while the record is read.
        new(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete, 1, FileOptions.SequentialScan);

    /// <summary>Reads the lines of <paramref name="file"/> from <paramref name="offset"/> on into the set, dropping those
    /// that do not parse and those sent before the window, and says how many lines there were and how many were kept.
    /// Opening, a later line for a digest replaces an earlier one, and a last line without its end counts (so that the
    /// file is rewritten without it); catching up, what this instance holds stays (its verdicts do not change under it),
    /// and a last line without its end is left for the next read.</summary>
    private (int Lines, int Kept) ReadFrom(FileStream file, long offset, bool opening)
    {
        long oldest = Oldest();
        int lines = 0, kept = 0;
        // A line is about 120 bytes; a longer one is not one of ours, and is dropped without being held whole.
        byte[] line = new byte[128];
        int lineLength = 0;
        bool tooLong = false;
        byte[] chunk = new byte[64 * 1024];
        file.Position = offset;
        long position = offset;
        _offset = offset;
        int read;
        while ((read = file.Read(chunk)) > 0)
        {
            ReadOnlySpan<byte> rest = chunk.AsSpan(0, read);
            while (!rest.IsEmpty)
            {
                int end = rest.IndexOf((byte)'\n');
                ReadOnlySpan<byte> piece = end < 0 ? rest : rest[..end];
                if (lineLength + piece.Length <= line.Length)
                {
                    piece.CopyTo(line.AsSpan(lineLength));
                    lineLength += piece.Length;
                }
                else
                {
                    tooLong = true;
                }

                position += piece.Length;
                if (end < 0)
                {
                    break;
                }

                position++;
                lines++;
                kept += !tooLong && Take(line.AsSpan(0, lineLength), oldest, opening) ? 1 : 0;
                (lineLength, tooLong) = (0, false);
                _offset = position;
                rest = rest[(end + 1)..];
            }
        }

        if (opening && (lineLength > 0 || tooLong))
        {
            lines++;
            kept += !tooLong && Take(line.AsSpan(0, lineLength), oldest, opening) ? 1 : 0;
        }

        return (lines, kept);
    }

    private bool Take(ReadOnlySpan<byte> line, long oldest, bool replace)
    {
        string[] parts = Encoding.ASCII.GetString(line).Split(' ');
        if (parts.Length is not (3 or 4) || (parts.Length == 4 && parts[3] != AckedMark) || parts[0].Length != 64 || parts[1].Length != 2 * IdPrefixBytes
            || !long.TryParse(parts[2], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long sent) || sent < oldest)
        {
            return false;
        }

        var entry = new Entry(parts[1], sent, parts.Length == 4);
        if (_seen.TryGetValue(parts[0], out Entry known))
        {
            if (known.IdPrefix == entry.IdPrefix)
            {
                // An acknowledgement stays: a later line for the same envelope without the mark does not undo it.
                Remember(parts[0], known with { Acknowledged = known.Acknowledged || entry.Acknowledged });
            }
            else if (replace)
            {
                Remember(parts[0], entry);
            }

            // Catching up, what this instance holds for another envelope stays (its verdicts do not change under it).
            return true;
        }

        Remember(parts[0], entry);
        return true;
    }

    // The count of rewrites, in the first 8 bytes of the lock file (empty until the first rewrite): a process that
    // read the record before a rewrite reads it again from the start, as its offset no longer means anything. The
    // lock file stays for good (deleting it would race with the next one to take it), so the count does too.
    private static long ReadGeneration(FileStream held)
    {
        Span<byte> bytes = stackalloc byte[sizeof(long)];
        held.Position = 0;
        return held.ReadAtLeast(bytes, bytes.Length, throwOnEndOfStream: false) == bytes.Length ? BinaryPrimitives.ReadInt64LittleEndian(bytes) : 0;
    }

    private static void WriteGeneration(FileStream held, long generation)
    {
        Span<byte> bytes = stackalloc byte[sizeof(long)];
        BinaryPrimitives.WriteInt64LittleEndian(bytes, generation);
        held.Position = 0;
        held.Write(bytes);
        held.Flush();
    }

    /// <summary>Writes the set to a new file, renamed over the record, and counts the rewrite in the lock file
    /// (<paramref name="held"/>), so that other processes reading the record from an offset read it again.</summary>
    private void Rewrite(FileStream held)
    {
        // A name of its own: fetch and listen may open the record at the same time, and with one shared name the
        // second truncated the first's half-written file, or found it renamed away (FileNotFoundException).
        string temp = $"{Path}.{Guid.NewGuid():N}.tmp";
        try
        {
            long length;
            FileIdentity? identity;
            using (var stream = new FileStream(temp, PrivateFile(FileMode.CreateNew)))
            {
                using (var file = new StreamWriter(stream, Encoding.ASCII, leaveOpen: true))
                {
                    foreach ((string digest, Entry entry) in _seen)
                    {
                        file.Write(Line(digest, entry) + "\n");
                    }
                }

                length = stream.Length;
                identity = FileIdentity.Of(stream.SafeFileHandle); // the same file once renamed
            }

            File.Move(temp, Path!, overwrite: true);
            long generation = unchecked((_generation ?? 0) + 1);
            WriteGeneration(held, generation);
            (_offset, _generation, _identity) = (length, generation, identity);
        }
        catch
        {
            if (File.Exists(temp))
            {
                File.Delete(temp);
            }

            throw;
        }
    }

    /// <summary>What the record holds of one message: the first envelope it came in, its send time (as remembered), and
    /// whether its owner acknowledged it.</summary>
    private readonly record struct Entry(string IdPrefix, long SentUnixMs, bool Acknowledged);

    // Which messages an identity received is its owner's business: the file is readable by the owner only.
    private static FileStreamOptions PrivateFile(FileMode mode)
    {
        var options = new FileStreamOptions { Mode = mode, Access = FileAccess.Write, Share = FileShare.ReadWrite };
        if (!OperatingSystem.IsWindows())
        {
            options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        }

        return options;
    }
}
