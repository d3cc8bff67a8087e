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
/// runs, so a second send of the same file stops at once instead of sending the missing parts twice.</para>
/// </summary>
internal sealed class SentParts : IFilePartsJournal, IDisposable
{
    private readonly Lock _lock = new();
    private readonly byte[] _recipient;
    private readonly Dictionary<int, (Receipt Receipt, long Expires)> _accepted = [];
    private readonly Dictionary<int, Envelope> _unanswered = [];
    private readonly Action<string> _warn;
    private bool _startOnNewLine, _broken, _replace;
    private FileStream? _running;

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
        var parts = new SentParts(System.IO.Path.Combine(SideFiles.Of(identityPath, SideFiles.Sending), name), recipient, warn);
        parts._running = Hold(parts.Path);
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
    private static FileStream? Hold(string path)
    {
        try
        {
            PrivateFile.CreateDirectory(System.IO.Path.GetDirectoryName(path)!);
            return new FileStream(path + ".lock", FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
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

    /// <inheritdoc/>
    public void Dispose()
    {
        // The lock file stays: deleted while held, a send that had opened it could take it once let go while another
        // created the name anew and took that one, and both would send.
        _running?.Dispose();
        _running = null;
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
        _startOnNewLine = text.Length > 0 && text[^1] != '\n';
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

                if (expires <= now)
                {
                    expired.Add(index);
                    continue;
                }

                _accepted[index] = (receipt, expires);
            }
            else if (envelope is not null && envelope.ExpiresUnixMs > now && envelope.Recipient.Span.SequenceEqual(_recipient))
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
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Left behind, it only makes the same send print these receipts again without sending.
            _warn($"could not delete {Path} ({e.Message}); delete it by hand.");
        }
    }

    private void Append(JsonObject record)
    {
        string line = record.ToJsonString() + "\n";
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
                    _replace = false;
                }

                PrivateFile.CreateDirectory(System.IO.Path.GetDirectoryName(Path)!);
                // After a line torn by a crash, a line of its own: glued to the fragment, it would be lost with it.
                PrivateFile.Append(Path, _startOnNewLine ? "\n" + line : line);
                _startOnNewLine = false;
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
