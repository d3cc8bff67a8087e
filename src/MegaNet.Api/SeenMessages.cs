using System.Globalization;
using System.Text;

namespace MegaNet.Api;

/// <summary>
/// What one identity has received, so that a replay is recognised: a relay that saw a sealed payload can wrap it in a
/// new envelope (a new id), and it opens as the same signed message again (docs/protocol.md, "Replays"). A message is
/// known by its content digest, which the sender signed over the recipient, the sender, the send time and the content.
/// The same digest in another envelope is a copy; the same envelope fetched again is not.
/// </summary>
/// <remarks>
/// Kept in a text file (one line per message: digest, envelope id prefix, send time; about 120 bytes), appended as
/// messages arrive and pruned of entries older than <see cref="Window"/> when opened, so the file stays small. A
/// message sent longer ago than the window cannot be told apart from a replay of one already forgotten, but it is
/// still shown (<see cref="IsOld"/> marks it): nodes may keep mail for years (MaxTtlDays up to 3,650), and a sender's
/// clock can be wrong, so hiding it (and deleting it under <c>--ack</c>) lost real mail. Only a message whose digest
/// is in the record, in another envelope, is reported as a copy. Thread-safe.
/// </remarks>
public sealed class SeenMessages
{
    /// <summary>How long messages are remembered, counted from their send time: longer than nodes keep an envelope by
    /// default (30 days), plus a day for clocks. Messages sent before it are shown marked old (<see cref="IsOld"/>).</summary>
    public static readonly TimeSpan Window = TimeSpan.FromDays(31);

    // An envelope id prefix is enough to tell "the same envelope again" from "another envelope".
    private const int IdPrefixBytes = 16;

    private readonly Dictionary<string, (string IdPrefix, long SentUnixMs)> _seen = new(StringComparer.Ordinal);
    private readonly TimeProvider _clock;
    private readonly Lock _lock = new();

    private SeenMessages(string? path, TimeProvider clock)
    {
        Path = path;
        _clock = clock;
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
        long oldest = seen.Oldest();
        int lines = 0;
        foreach (string line in File.ReadLines(seen.Path))
        {
            lines++;
            string[] parts = line.Split(' ');
            if (parts.Length == 3 && parts[0].Length == 64 && parts[1].Length == 2 * IdPrefixBytes
                && long.TryParse(parts[2], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long sent) && sent >= oldest)
            {
                seen._seen[parts[0]] = (parts[1], sent);
            }
        }

        if (lines > seen._seen.Count)
        {
            seen.Rewrite();
        }

        return seen;
    }

    /// <summary>
    /// Remembers a message that opened and says whether to show it: null when it is new, or the same envelope seen
    /// before; otherwise why it is not shown (the same signed message received before in another envelope: a copy).
    /// A message not in the record is always shown, however old (<see cref="IsOld"/> says whether to mark it).
    /// </summary>
    /// <param name="contentDigest">The content digest the message's signature covers.</param>
    /// <param name="envelopeId">The envelope's id.</param>
    /// <param name="sentUnixMs">When it was sent.</param>
    /// <param name="formerEnvelopeId">The same envelope's id by the rule before 2026-11-29 (signing bytes ‖ signature),
    /// which a record written then holds: a message fetched then and not acknowledged is the same envelope, not a copy
    /// (without this, <c>fetch --ack</c> after an upgrade deleted it unseen).</param>
    /// <exception cref="IOException">The file cannot be written; the message names it.</exception>
    public string? Check(ReadOnlySpan<byte> contentDigest, ReadOnlySpan<byte> envelopeId, long sentUnixMs, ReadOnlySpan<byte> formerEnvelopeId = default)
    {
        if (contentDigest.Length != 32 || envelopeId.Length < IdPrefixBytes)
        {
            throw new ArgumentException("A content digest is 32 bytes and an envelope id at least 16.");
        }

        string digest = Convert.ToHexStringLower(contentDigest);
        string id = Convert.ToHexStringLower(envelopeId[..IdPrefixBytes]);
        lock (_lock)
        {
            if (_seen.TryGetValue(digest, out var first))
            {
                return first.IdPrefix == id || (formerEnvelopeId.Length >= IdPrefixBytes && first.IdPrefix == Convert.ToHexStringLower(formerEnvelopeId[..IdPrefixBytes]))
                    ? null
                    : $"not shown: a copy of the message received before in envelope {first.IdPrefix}…, wrapped in a new envelope (a relay replayed it)";
            }

            // Remembered by its send time, but never later than a day from now: a sender's clock set to year 9999 (or
            // a sender filling the record on purpose) kept each such line, loaded on every fetch, for good.
            long recorded = Math.Min(sentUnixMs, Latest());
            _seen[digest] = (id, recorded);
            // One sent before the window would be pruned at the next open anyway: remembered for this session only,
            // so the file is not rewritten on every open for it.
            if (Path is not null && !IsOld(recorded))
            {
                Append($"{digest} {id} {recorded.ToString(CultureInfo.InvariantCulture)}\n");
            }

            return null;
        }
    }

    /// <summary>True when a message sent at <paramref name="sentUnixMs"/> is older than <see cref="Window"/>, or dated
    /// more than a day ahead: the record no longer says (or, for one from the future, a month from now will no longer
    /// say) whether it was received before, so it may be a replay, or the sender's clock is wrong. Such a message is
    /// shown, marked. (A future date is remembered as a day from now, and forgotten a window later: unmarked, a relay
    /// could replay it as new every month.)</summary>
    public bool IsOld(long sentUnixMs) => sentUnixMs < Oldest() || sentUnixMs > Latest();

    private long Latest() => (_clock.GetUtcNow() + TimeSpan.FromDays(1)).ToUnixTimeMilliseconds();

    private long Oldest() => (_clock.GetUtcNow() - Window).ToUnixTimeMilliseconds();

    private void Append(string line)
    {
        try
        {
            using FileStream held = LockRecord();
            MegaNet.Core.Interop.PrivateFile.Append(Path!, line, FileShare.ReadWrite);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new IOException($"Cannot record a received message in '{Path}': {e.Message}", e);
        }
    }

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

    private void Rewrite()
    {
        // A name of its own: fetch and listen may open the record at the same time, and with one shared name the
        // second truncated the first's half-written file, or found it renamed away (FileNotFoundException).
        string temp = $"{Path}.{Guid.NewGuid():N}.tmp";
        try
        {
            using (var file = new StreamWriter(new FileStream(temp, PrivateFile(FileMode.CreateNew)), Encoding.ASCII))
            {
                foreach ((string digest, (string id, long sent)) in _seen)
                {
                    file.Write($"{digest} {id} {sent.ToString(CultureInfo.InvariantCulture)}\n");
                }
            }

            File.Move(temp, Path!, overwrite: true);
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
