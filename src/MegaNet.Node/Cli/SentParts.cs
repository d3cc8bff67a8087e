using System.Text.Json.Nodes;
using Google.Protobuf;
using MegaNet.Api;
using MegaNet.Api.V1;
using MegaNet.Core.Interop;

namespace MegaNet.Node.Cli;

/// <summary>
/// How far a <c>send --file</c> in parts got, kept beside the identity file so that the same send run again sends only
/// the parts the node has not acknowledged: each part sent again is another envelope against the recipient's mailbox
/// quota, and the bytes and tokens again. The directory with the extension <c>.sending</c> (<c>alice.json</c> →
/// <c>alice.sending</c>, mode 0700) holds one file (0600) per send, named after what makes two sends the same: the
/// sender's and the recipient's addresses (a part sent by another identity is in another set for the recipient, so an
/// identity replaced with <c>id new --force</c> starts over), the file id (<see cref="FileParts.IdOf"/>: the same bytes
/// under the same name) and the node id.
/// The node id, not its address: the parts are in that node's store, whichever address reached it, and another node
/// at the same address (set up anew) has none of them.
/// <para>One JSON object a line, appended: <c>{"part":I,"expires_unix_ms":T,"receipt":{...}}</c> once the node answered
/// part I with its receipt (as <c>send --json</c> prints it), never before; <c>{"part":I,"unanswered":"BASE64"}</c> for
/// the envelope of a part that had no answer when a send stopped (the node may hold it: the next try submits that
/// envelope again, not a second copy). Lines are not flushed one by one: a line lost to a crash makes the part go
/// again (a copy the recipient drops), never a part counted as sent that was not. A line that does not parse (torn by a
/// crash) is skipped. The file is deleted once the file is accepted whole. A send holds <c>RECORD.lock</c> while it
/// runs, so a second send of the same file stops at once instead of sending the missing parts twice, and deletes it
/// once the record is gone. Each send in parts first prunes what is of no more use (<see cref="Prune"/>).</para>
/// </summary>
internal sealed class SentParts : IFilePartsJournal, IDisposable
{
    private readonly Lock _lock = new();
    private readonly byte[] _recipient;
    private readonly Dictionary<int, (Receipt Receipt, long Expires)> _accepted = [];
    private readonly Dictionary<int, Envelope> _unanswered = [];
    private readonly Action<string> _warn;
    private bool _broken, _replace, _finished;

    // The record's last line has no newline (a crash cut it short): told by Read, so that appending a line does not
    // read the file again (once per part, hundreds of times a send); nothing else writes it while this send holds it.
    private bool _endsMidLine;
    private FileStream? _running;

    /// <summary>How long a record goes unwritten before a send prunes it once every part it names has expired: a
    /// month, past the node's default <c>MaxTtlDays</c> (30), so that at the defaults a record left that long has
    /// nothing left in it that counts, and one of a send with a longer <c>--ttl-days</c> is kept until its parts expire.
    /// A record named the way of versions before the sender was in the name, which no send reads now, goes once
    /// unwritten that long.</summary>
    internal static readonly TimeSpan PruneUnwrittenFor = TimeSpan.FromDays(31);

    /// <summary>The directory's own lock (<c>records.lock</c>): see <see cref="Prune"/>.</summary>
    private const string DirectoryLock = "records";

    private const string LockExtension = ".lock";

    private SentParts(string path, byte[] recipient, Action<string> warn) => (Path, _recipient, _warn) = (path, recipient, warn);

    /// <summary>The record's file.</summary>
    public string Path { get; }

    /// <summary>Parts accepted on an earlier try that count now.</summary>
    public int AcceptedCount => _accepted.Count;

    /// <summary>The parts accepted on an earlier try, with their receipts.</summary>
    public IReadOnlyList<(int Index, Receipt Receipt)> AcceptedParts
    {
        get
        {
            lock (_lock)
            {
                return [.. _accepted.OrderBy(p => p.Key).Select(p => (p.Key, p.Value.Receipt))];
            }
        }
    }

    /// <summary>A part accepted on an earlier try whose receipt no longer checks against the node: it is sent again.</summary>
    public void Distrust(int index)
    {
        lock (_lock)
        {
            _accepted.Remove(index);
        }
    }

    /// <summary>Parts left unanswered on an earlier try (and not accepted since) whose envelopes go again.</summary>
    public int UnansweredCount => _unanswered.Keys.Count(i => !_accepted.ContainsKey(i));

    /// <summary>
    /// The record of sending the file with id <paramref name="fileId"/> in <paramref name="count"/> parts to
    /// <paramref name="recipient"/> through the node <paramref name="nodeId"/>, whose log now has
    /// <paramref name="treeSize"/> leaves, by <paramref name="sender"/> (the identity at <paramref name="identityPath"/>);
    /// empty when there is none. An earlier part counts while its envelope has not expired and its receipt names that
    /// node (the caller checks the receipts against the node: <see cref="Distrust"/>); a receipt at a log index the log
    /// does not reach says the node was set up anew under the same key, and the whole record is dropped.
    /// <paramref name="warn"/> hears what is dropped, and a record that cannot be written.
    /// </summary>
    /// <exception cref="CliException">Another send of the same file holds the record.</exception>
    public static SentParts Open(string identityPath, byte[] sender, byte[] recipient, byte[] fileId, byte[] nodeId, int count, long treeSize, Action<string> warn)
    {
        string name = $"{Convert.ToHexStringLower(sender)}-{Convert.ToHexStringLower(recipient)}-{Convert.ToHexStringLower(fileId)}-{Convert.ToHexStringLower(nodeId)}";
        string directory = SideFiles.Of(identityPath, SideFiles.Sending);
        Prune(directory);
        var parts = new SentParts(System.IO.Path.Combine(directory, name), recipient, warn);
        parts._running = Hold(directory, parts.Path);
        try
        {
            parts.Read(nodeId, count, treeSize);
        }
        catch
        {
            parts.Dispose();
            throw;
        }

        return parts;
    }

    /// <summary>The lock a send holds on its record; null when it cannot be taken (no record is written then either).</summary>
    private static FileStream? Hold(string directory, string path)
    {
        try
        {
            PrivateFile.CreateDirectory(directory);
            // Under the directory's lock, which a prune holds while it holds any record's lock: a record's lock held
            // for a moment by a prune would stop this send as if another send of the file ran.
            using LockedFile records = LockedFile.Open(System.IO.Path.Combine(directory, DirectoryLock), "another send in parts pruning its records");
            return FileLock.Take(path + LockExtension, FileMode.OpenOrCreate, deletable: true);
        }
        catch (IOException e) when (FileLock.IsContention(e))
        {
            // Both would send the parts still missing, each as envelopes of its own: the recipient would get copies.
            throw new CliException($"another send of this file to this recipient through this node is running ({path}.lock is held); wait for it to end, then run this send again.");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null; // the record cannot be written either: Append warns and the send goes on without one
        }
    }

    /// <summary>Lets the record's lock go; deleted with it when the record is gone, so that no lock file is left per
    /// file ever sent (a send that stopped keeps it with its record, and <see cref="Prune"/> deletes one left by a
    /// crash). Deleted only while held: see <see cref="Prune"/> for why that loses no send its lock.</summary>
    public void Dispose()
    {
        if (_running is null)
        {
            return;
        }

        try
        {
            if (_finished)
            {
                FileLock.Delete(_running, Path + LockExtension);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Left behind, the next send in parts prunes it.
        }
        finally
        {
            _running.Dispose();
            _running = null;
        }
    }

    /// <summary>
    /// Deletes what in the <c>.sending</c> <paramref name="directory"/> is of no more use, as a send in parts starts; what
    /// cannot be deleted now (held by a send, not this user's to delete) is left for the next send:
    /// <list type="bullet">
    /// <item>a lock file whose record is gone (left by a send that crashed after its record was deleted, or by a version
    /// that kept every lock file);</item>
    /// <item>a record not written for <see cref="PruneUnwrittenFor"/> in which every part has expired (an abandoned
    /// send): read again, it counts none of them, and every part goes again anyway;</item>
    /// <item>a record named as before the sender was in the name (<c>RECIPIENT-FILEID-NODEID</c>), not written for
    /// <see cref="PruneUnwrittenFor"/>: no send reads it now.</item>
    /// </list>
    /// </summary>
    internal static void Prune(string directory)
    {
        // Why no send loses its lock or a record it uses to a prune, with any number of sends and prunes at once:
        // - A record's lock file is deleted only while held (FileLock.Take without waiting, then FileLock.Delete), and a
        //   record only while its lock is held; what decided it (the record gone; unwritten and expired) is looked at
        //   again once the lock is held. A send holds its record's lock from before it reads the record until after it
        //   deleted it, so a prune never takes a lock a send holds, nor deletes a record while a send reads or writes it.
        // - A send may open a lock file just before a prune (or a send ending) deletes it and lock it just after it was
        //   let go: it then holds a file without a name, while a later send creates the name anew and locks that, and
        //   both would send. FileLock.Take looks the name up again once locked, and takes the file it names now.
        // - A prune holds the directory's lock while it holds any record's lock, and a send takes its record's lock only
        //   under it: else a send starting while a prune held its record's lock for a moment would stop as if another
        //   send of the file ran. A prune does not wait for the directory's lock: when it is held, the next send prunes.
        // - meganet before this (whose sends take no directory lock, and do not look the name up again) can still lock
        //   a lock file just deleted: only two sends of one file started at the same moment by two versions both run.
        // - A record named the old way has no lock: only a version from before the sender was in the name reads it,
        //   and deleted under such a send, after a month unwritten, it costs that send its parts sent again at most.
        if (!Directory.Exists(directory))
        {
            return;
        }

        try
        {
            using LockedFile? records = LockedFile.TryOpen(System.IO.Path.Combine(directory, DirectoryLock));
            if (records is null)
            {
                return;
            }

            foreach (string file in Directory.GetFiles(directory))
            {
                try
                {
                    PruneOne(file);
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                    // Held by a send (IOException of contention), or deleted meanwhile: left as it is.
                }
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // A directory this user cannot write: the send goes on, and Hold says what it can.
        }
    }

    private enum Naming
    {
        None,
        Current,
        WithoutSender,
    }

    /// <summary>How a record's file name was made: four hex fields (sender, recipient, file id, node id), or three as
    /// before the sender was in it; anything else (the directory's lock) is not a record.</summary>
    private static Naming NamingOf(string name)
    {
        string[] fields = name.Split('-');
        if (!fields.All(f => f.Length > 0 && f.All(char.IsAsciiHexDigitLower)))
        {
            return Naming.None;
        }

        return fields.Length switch
        {
            4 => Naming.Current,
            3 => Naming.WithoutSender,
            _ => Naming.None,
        };
    }

    private static void PruneOne(string file)
    {
        bool isLock = file.EndsWith(LockExtension, StringComparison.Ordinal);
        string record = isLock ? file[..^LockExtension.Length] : file;
        switch (NamingOf(System.IO.Path.GetFileName(record)))
        {
            case Naming.Current when isLock:
                if (File.Exists(record))
                {
                    return; // the record's to decide
                }

                // Open, never create: pruned with its record earlier in this pass, it is gone.
                using (FileStream held = FileLock.Take(file, FileMode.Open, deletable: true))
                {
                    if (!File.Exists(record))
                    {
                        FileLock.Delete(held, file);
                    }
                }

                break;
            case Naming.Current:
                if (!UnwrittenLong(record))
                {
                    return;
                }

                // Created when missing (a record whose lock was deleted by hand): a send must not take it meanwhile.
                using (FileStream held = FileLock.Take(record + LockExtension, FileMode.OpenOrCreate, deletable: true))
                {
                    if (UnwrittenLong(record) && NoneUnexpired(record))
                    {
                        File.Delete(record);
                        FileLock.Delete(held, record + LockExtension);
                    }
                }

                break;
            case Naming.WithoutSender when !isLock && UnwrittenLong(record):
                File.Delete(record);
                break;
        }
    }

    /// <summary>True when nothing was written to <paramref name="record"/> for <see cref="PruneUnwrittenFor"/>.</summary>
    private static bool UnwrittenLong(string record) =>
        File.Exists(record) && DateTime.UtcNow - File.GetLastWriteTimeUtc(record) >= PruneUnwrittenFor;

    /// <summary>True when no line of <paramref name="record"/> would count on a send's <see cref="Read"/>: every
    /// receipt's and every unanswered envelope's expiry has passed (lines that do not parse count for nothing).</summary>
    private static bool NoneUnexpired(string record)
    {
        long now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        foreach (string line in File.ReadLines(record))
        {
            if (TryRead(line.Trim(), int.MaxValue, out _, out Receipt? receipt, out long expires, out Envelope? envelope)
                && ExpiryOf(receipt, expires, envelope) > now)
            {
                return false;
            }
        }

        return true;
    }

    private void Read(byte[] nodeId, int count, long treeSize)
    {
        if (!File.Exists(Path))
        {
            return;
        }

        if (!PrivateFile.IsOwnPrivateFile(Path))
        {
            // Anyone else's lines could make parts count as sent that never were: not read, and replaced.
            _warn($"{Path} is not a file of this user's own that only its owner may read or write; it is not used, and replaced.");
            _replace = true;
            return;
        }

        string text = File.ReadAllText(Path);
        _endsMidLine = PrivateFile.EndsMidLine(text);
        long now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        var expired = new HashSet<int>();
        foreach (string line in text.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (!TryRead(line, count, out int index, out Receipt? receipt, out long expires, out Envelope? envelope))
            {
                continue; // torn by a crash, or not ours to understand: the part goes again
            }

            if (receipt is not null)
            {
                if (!receipt.TreeHead.NodeKey.Span.SequenceEqual(nodeId))
                {
                    continue;
                }

                if (receipt.LogIndex >= treeSize)
                {
                    _warn($"the node's log has {treeSize:N0} entries, but it accepted a part of this file at log index {receipt.LogIndex:N0}: it was set up anew, " +
                        "and every part is sent again.");
                    _accepted.Clear();
                    _unanswered.Clear();
                    _replace = true;
                    return;
                }

                if (ExpiryOf(receipt, expires, envelope) <= now)
                {
                    expired.Add(index);
                    continue;
                }

                _accepted[index] = (receipt, expires);
            }
            else if (envelope is not null && ExpiryOf(receipt, expires, envelope) > now && envelope.Recipient.Span.SequenceEqual(_recipient))
            {
                _unanswered[index] = envelope;
            }
        }

        // A part that expired and was then sent again on a later try counts as accepted.
        expired.ExceptWith(_accepted.Keys);
        if (expired.Count > 0)
        {
            _warn($"{expired.Count} part(s) accepted on an earlier try have expired on the node and are sent again.");
        }
    }

    /// <summary>When a line <see cref="TryRead"/> read stops counting: its receipt's recorded expiry, or its unanswered
    /// envelope's. One rule for <see cref="Read"/> and the prune (<see cref="NoneUnexpired"/>), so the prune never
    /// deletes a record a send would still count.</summary>
    private static long ExpiryOf(Receipt? receipt, long expires, Envelope? envelope) =>
        receipt is not null ? expires : envelope!.ExpiresUnixMs;

    private static bool TryRead(string line, int count, out int index, out Receipt? receipt, out long expires, out Envelope? envelope)
    {
        (index, receipt, expires, envelope) = (-1, null, 0, null);
        try
        {
            if (JsonNode.Parse(line) is not JsonObject o || o["part"]?.GetValue<int>() is not { } part || part < 0 || part >= count)
            {
                return false;
            }

            index = part;
            if (o["receipt"] is JsonObject r && o["expires_unix_ms"]?.GetValue<long>() is { } t)
            {
                (receipt, expires) = (ClientCommands.ReceiptFromJson(r.ToJsonString()), t);
                return true;
            }

            if (o["unanswered"]?.GetValue<string>() is { } b64)
            {
                envelope = Envelope.Parser.ParseFrom(Convert.FromBase64String(b64));
                return true;
            }
        }
        catch (Exception e) when (e is System.Text.Json.JsonException or FormatException or InvalidOperationException or CliException or InvalidProtocolBufferException)
        {
        }

        return false;
    }

    /// <inheritdoc/>
    public Receipt? AcceptedEarlier(int index)
    {
        lock (_lock)
        {
            return _accepted.TryGetValue(index, out var earlier) ? earlier.Receipt : null;
        }
    }

    /// <inheritdoc/>
    public Envelope? UnansweredEarlier(int index)
    {
        lock (_lock)
        {
            return _accepted.ContainsKey(index) ? null : _unanswered.GetValueOrDefault(index);
        }
    }

    /// <inheritdoc/>
    public void Accepted(int index, Envelope envelope, Receipt receipt)
    {
        var line = new JsonObject
        {
            ["part"] = index,
            ["expires_unix_ms"] = envelope.ExpiresUnixMs,
            ["receipt"] = ClientCommands.ReceiptJson(receipt),
        };
        Append(line);
    }

    /// <inheritdoc/>
    public void Unanswered(int index, Envelope envelope)
    {
        if (!envelope.Recipient.Span.SequenceEqual(_recipient))
        {
            return;
        }

        Append(new JsonObject { ["part"] = index, ["unanswered"] = Convert.ToBase64String(envelope.ToByteArray()) });
    }

    /// <summary>The file was accepted whole: the record goes (its receipts were printed).</summary>
    public void Finish()
    {
        try
        {
            File.Delete(Path);
            _finished = true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Left behind, it only makes the same send print these receipts again without sending.
            _warn($"could not delete {Path} ({e.Message}); delete it by hand.");
        }
    }

    private void Append(JsonObject record)
    {
        string line = record.ToJsonString();
        lock (_lock)
        {
            if (_broken)
            {
                return;
            }

            try
            {
                if (_replace)
                {
                    File.Delete(Path);
                    (_replace, _endsMidLine) = (false, false);
                }

                PrivateFile.CreateDirectory(System.IO.Path.GetDirectoryName(Path)!);
                // After a line torn by a crash, a line of its own: glued to the fragment, it would be lost with it.
                PrivateFile.AppendLine(Path, line, _endsMidLine);
                _endsMidLine = false;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // The send goes on: without the record, sending the file again sends every part again, as before.
                _broken = true;
                _warn($"cannot record how far the send got in {Path} ({e.Message}); sending the file again would send every part again.");
            }
        }
    }
}
