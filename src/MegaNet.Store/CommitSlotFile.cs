using System.Buffers.Binary;
using System.Diagnostics;
using System.Security.Cryptography;
using FASTER.core;
using Microsoft.Win32.SafeHandles;

namespace MegaNet.Store;

/// <summary>
/// The write-ahead log's commit records, in one preallocated file of a few fixed slots that each commit overwrites in
/// turn (the oldest), written through to the disk. FASTER's own commit manager creates a new file per commit: each
/// commit paid a file creation with its journal flush (0.5 ms here against 0.2 ms for an overwrite), and deleting the
/// old files, 64 at a time, held the committer 8-9 ms every 64 commits, which at 1,000 unary submissions/s was every
/// 90 ms and the whole of the node's latency tail.
/// </summary>
/// <remarks>
/// A slot holds magic, payload length, commit number, FASTER's commit metadata and a SHA-256 prefix over all of it, so a
/// write torn by a crash reads as no record and recovery falls back to an older slot (whose commit covers everything
/// acknowledged: a commit is acknowledged only after its record is written; with <see cref="CommitsInLog"/>, from
/// which recovery scans the log forward to its newest commit). <see cref="Commit"/> never throws (FASTER
/// calls it on its flush-completion path, which has no way to report an exception): a failed write is kept, and
/// <see cref="Wrote"/> tells the store before it acknowledges anything.
/// </remarks>
internal sealed class CommitSlotFile : ILogCommitManager
{
    /// <summary>Name of the file in the store's commit directory.</summary>
    public const string FileName = "wal.commits";

    /// <summary>Records kept: the newest is never overwritten, so recovery can fall back this many commits.</summary>
    public const int Slots = 8;

    private const int SlotSize = 4096;
    private const int HeaderSize = 16;
    private const int HashSize = 16;
    private const int MaxPayload = SlotSize - HeaderSize - HashSize;
    private const uint Magic = 0x3143_4E4D; // "MNC1", little-endian

    // FASTER's commit manager before this file: commit.N.0 files under {commitDir}/log-commits.
    private const string LegacyDirectory = "log-commits";

    private readonly SafeFileHandle _file;
    private readonly Lock _lock = new();
    private readonly long[] _numbers = new long[Slots];
    private readonly byte[]?[] _payloads = new byte[Slots][];
    private readonly byte[] _slot = new byte[SlotSize];
    private long _newestWritten = -1;
    private long _lastWrite;
    private Exception? _failure;

    private CommitSlotFile(string path, SafeFileHandle file)
    {
        Path = path;
        _file = file;
        Array.Fill(_numbers, -1);
    }

    /// <summary>Full path of the file.</summary>
    public string Path { get; }

    /// <summary>
    /// Whether the log holds every commit itself (FASTER's fast commit mode, set by the store before the log opens).
    /// Then this file only gives recovery its starting point for a forward scan over the log's commit records, and a
    /// commit writes a record here only when FASTER asks for one (the log's begin address moved: a checkpoint
    /// truncated it, and the scan must not start in deleted segments), when the file holds none yet, or when the last
    /// was written <see cref="RecordInterval"/> ago: the other commits skip the second synchronous write that used to
    /// follow every log write.
    /// </summary>
    public bool CommitsInLog { get; set; }

    /// <summary>
    /// With <see cref="CommitsInLog"/>, the longest a commit goes without a record here. Recovery's forward scan
    /// starts at the newest record and stops at the first entry that fails its checksum: it cannot tell a damaged
    /// entry from the log's end, so the commits after one would be cut off without a word. A record at least this
    /// often keeps what the scan covers, and so what such damage could cut off, to the last interval's commits. One
    /// more synchronous write a second is nothing to the committer.
    /// </summary>
    public static readonly TimeSpan RecordInterval = TimeSpan.FromSeconds(1);

    /// <summary><see cref="RecordInterval"/>, which tests set so that which commit writes a record does not depend on
    /// how fast the machine runs.</summary>
    internal TimeSpan RecordEvery { get; set; } = RecordInterval;

    /// <summary>The commit metadata's begin and until addresses of record <paramref name="commitNum"/>, or null when there is none.</summary>
    public (long Begin, long Until)? Range(long commitNum)
    {
        byte[]? metadata = GetCommitMetadata(commitNum);
        return metadata is null ? null : RangeOf(metadata);
    }

    private static (long Begin, long Until) RangeOf(byte[] metadata)
    {
        var info = new FasterLogRecoveryInfo();
        using var reader = new BinaryReader(new MemoryStream(metadata));
        info.Initialize(reader);
        return (info.BeginAddress, info.UntilAddress);
    }

    /// <summary>The until address of the newest record written or read (with <see cref="CommitsInLog"/>: where a
    /// recovery's forward scan starts), or null when there is none.</summary>
    public long? NewestUntil
    {
        get
        {
            byte[]? metadata;
            lock (_lock)
            {
                // The newest record the file holds now, read with its number under one lock.
                long newest = _numbers.Max();
                metadata = newest >= 0 ? _payloads[Array.IndexOf(_numbers, newest)] : null;
            }

            return metadata is null ? null : RangeOf(metadata).Until;
        }
    }

    /// <summary>Commit numbers of the readable records, newest first.</summary>
    public long[] Commits
    {
        get
        {
            lock (_lock)
            {
                return _numbers.Where(n => n >= 0).OrderDescending().ToArray();
            }
        }
    }

    /// <summary>
    /// Opens the file in <paramref name="commitDirectory"/>, creating it (with the records of FASTER's older per-commit
    /// files, if the store has them) when it is not there.
    /// </summary>
    /// <param name="commitDirectory">The store's commit directory.</param>
    /// <param name="walBytes">Bytes in the write-ahead log: a log with data and no commit record file lost it.</param>
    /// <exception cref="StoreCorruptException">The file is missing or none of its slots reads back, while the log holds
    /// data (or a slot was written and none verifies).</exception>
    public static CommitSlotFile Open(string commitDirectory, long walBytes)
    {
        string path = System.IO.Path.Combine(commitDirectory, FileName);
        string legacy = System.IO.Path.Combine(commitDirectory, LegacyDirectory);
        if (!File.Exists(path))
        {
            List<(long Number, byte[] Metadata)> records = ReadLegacy(commitDirectory);
            if (records.Count == 0 && walBytes > 0)
            {
                throw new StoreCorruptException(Directory.Exists(legacy)
                    ? $"None of the write-ahead log's commit records in '{legacy}' reads back, while the log holds {walBytes} bytes. {StoreCorruptException.Advice}"
                    : $"The write-ahead log's commit records '{path}' are missing while the log holds {walBytes} bytes, so nothing says how much of it was committed. {StoreCorruptException.Advice}");
            }

            Create(path, records);
        }

        var file = new CommitSlotFile(path, File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite, FileShare.Read, FileOptions.WriteThrough));
        try
        {
            bool written = file.Load();
            if (written && file.Commits.Length == 0)
            {
                throw new StoreCorruptException(
                    $"None of the write-ahead log's commit records in '{path}' reads back (each fails its checksum). " + StoreCorruptException.Advice);
            }
        }
        catch
        {
            file.Dispose();
            throw;
        }

        return file;
    }

    /// <summary>Removes FASTER's older per-commit files once the records in this file have recovered the log (they were
    /// migrated into it by <see cref="Open"/>, now or by an open that stopped before this): an open that fails keeps
    /// them.</summary>
    public void DropMigratedRecords()
    {
        string legacy = System.IO.Path.Combine(System.IO.Path.GetDirectoryName(Path)!, LegacyDirectory);
        if (Directory.Exists(legacy))
        {
            Directory.Delete(legacy, recursive: true);
        }
    }

    /// <summary>Whether recovery can find the commit <paramref name="commitNum"/> (and no write failed since the file
    /// opened): its record was written, or with <see cref="CommitsInLog"/> the file holds any record to scan from.</summary>
    /// <exception cref="IOException">A record write failed; the message has the reason.</exception>
    public bool Wrote(long commitNum)
    {
        lock (_lock)
        {
            if (_failure is { } failure)
            {
                throw new IOException($"writing the commit record to '{Path}' failed ({failure.Message})", failure);
            }

            return CommitsInLog ? _newestWritten >= 0 : commitNum <= _newestWritten;
        }
    }

    /// <inheritdoc />
    public void Commit(long beginAddress, long untilAddress, byte[] commitMetadata, long commitNum, bool forceWriteMetadata)
    {
        lock (_lock)
        {
            try
            {
                if (CommitsInLog && !forceWriteMetadata && _newestWritten >= 0 && Stopwatch.GetElapsedTime(_lastWrite) < RecordEvery)
                {
                    return;
                }

                if (commitMetadata.Length > MaxPayload)
                {
                    throw new InvalidOperationException($"commit metadata of {commitMetadata.Length} bytes exceeds a slot's {MaxPayload}");
                }

                // Records numbered from this one on belong to commits a recovery did not use (it fell back past them, and
                // the log numbers its commits on from the one it recovered): they go first, so that no number is ever
                // held twice and a recovery never takes a record of the abandoned commits.
                ClearFrom(commitNum);
                int slot = Array.IndexOf(_numbers, _numbers.Min());
                int length = Encode(_slot, commitNum, commitMetadata);
                RandomAccess.Write(_file, _slot.AsSpan(0, length), (long)slot * SlotSize);
                _numbers[slot] = commitNum;
                _payloads[slot] = commitMetadata;
                _newestWritten = Math.Max(_newestWritten, commitNum);
                _lastWrite = Stopwatch.GetTimestamp();
            }
            catch (Exception e)
            {
                _failure ??= e;
            }
        }
    }

    /// <inheritdoc />
    public byte[] GetCommitMetadata(long commitNum)
    {
        lock (_lock)
        {
            int slot = Array.IndexOf(_numbers, commitNum);
            return commitNum >= 0 && slot >= 0 ? _payloads[slot]! : null!;
        }
    }

    /// <inheritdoc />
    public IEnumerable<long> ListCommits() => Commits;

    /// <inheritdoc />
    public void RemoveCommit(long commitNum)
    {
        lock (_lock)
        {
            int slot = Array.IndexOf(_numbers, commitNum);
            if (commitNum >= 0 && slot >= 0)
            {
                Clear(slot);
            }
        }
    }

    /// <inheritdoc />
    public void RemoveAllCommits()
    {
        lock (_lock)
        {
            for (int slot = 0; slot < Slots; slot++)
            {
                Clear(slot);
            }
        }
    }

    /// <inheritdoc />
    public void OnRecovery(long commitNum)
    {
        // Nothing goes yet: the store may still reject this recovery and try an older record, or give up and leave
        // every file as it found it. Records of commits the log did not use go at its next commit (see Commit).
    }

    /// <inheritdoc />
    public void Dispose() => _file.Dispose();

    private void ClearFrom(long commitNum)
    {
        for (int slot = 0; slot < Slots; slot++)
        {
            if (_numbers[slot] >= commitNum)
            {
                Clear(slot);
            }
        }

        _newestWritten = Math.Min(_newestWritten, commitNum - 1);
    }

    private void Clear(int slot)
    {
        Array.Clear(_slot);
        RandomAccess.Write(_file, _slot.AsSpan(0, HeaderSize + HashSize), (long)slot * SlotSize);
        _numbers[slot] = -1;
        _payloads[slot] = null;
    }

    /// <summary>Reads every slot; returns whether any was ever written (is not all zeros).</summary>
    private bool Load()
    {
        bool written = false;
        byte[] slot = new byte[SlotSize];
        for (int i = 0; i < Slots; i++)
        {
            int read = RandomAccess.Read(_file, slot, (long)i * SlotSize);
            written |= slot.AsSpan(0, read).ContainsAnyExcept((byte)0);
            if (read == SlotSize && Decode(slot, out long number, out byte[]? payload))
            {
                _numbers[i] = number;
                _payloads[i] = payload;
                _newestWritten = Math.Max(_newestWritten, number);
            }
        }

        return written;
    }

    private static int Encode(Span<byte> slot, long commitNum, ReadOnlySpan<byte> payload)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(slot, Magic);
        BinaryPrimitives.WriteInt32LittleEndian(slot[4..], payload.Length);
        BinaryPrimitives.WriteInt64LittleEndian(slot[8..], commitNum);
        payload.CopyTo(slot[HeaderSize..]);
        int body = HeaderSize + payload.Length;
        Span<byte> hash = stackalloc byte[SHA256.HashSizeInBytes];
        SHA256.HashData(slot[..body], hash);
        hash[..HashSize].CopyTo(slot[body..]);
        return body + HashSize;
    }

    private static bool Decode(ReadOnlySpan<byte> slot, out long commitNum, out byte[]? payload)
    {
        commitNum = -1;
        payload = null;
        int length = BinaryPrimitives.ReadInt32LittleEndian(slot[4..]);
        if (BinaryPrimitives.ReadUInt32LittleEndian(slot) != Magic || length is < 0 or > MaxPayload)
        {
            return false;
        }

        int body = HeaderSize + length;
        Span<byte> hash = stackalloc byte[SHA256.HashSizeInBytes];
        SHA256.HashData(slot[..body], hash);
        if (!hash[..HashSize].SequenceEqual(slot.Slice(body, HashSize)))
        {
            return false;
        }

        commitNum = BinaryPrimitives.ReadInt64LittleEndian(slot[8..]);
        payload = slot.Slice(HeaderSize, length).ToArray();
        return commitNum >= 0;
    }

    /// <summary>Creates the file whole (a temporary file, flushed, renamed into place) with the newest
    /// <see cref="Slots"/> of <paramref name="records"/>.</summary>
    private static void Create(string path, List<(long Number, byte[] Metadata)> records)
    {
        byte[] content = new byte[Slots * SlotSize];
        int slot = 0;
        foreach ((long number, byte[] metadata) in records.OrderDescending().Take(Slots))
        {
            if (metadata.Length <= MaxPayload)
            {
                Encode(content.AsSpan(slot++ * SlotSize, SlotSize), number, metadata);
            }
        }

        DurableRename.WriteAllBytes(path, content);
    }

    /// <summary>The records FASTER's own commit manager left (files commit.N.0), read with that manager; a record it
    /// cannot read is left out.</summary>
    private static List<(long Number, byte[] Metadata)> ReadLegacy(string commitDirectory)
    {
        var records = new List<(long, byte[])>();
        if (!Directory.Exists(System.IO.Path.Combine(commitDirectory, LegacyDirectory)))
        {
            return records;
        }

        using var legacy = new DeviceLogCommitCheckpointManager(new LocalStorageNamedDeviceFactory(), new DefaultCheckpointNamingScheme(commitDirectory), removeOutdated: false);
        foreach (long number in legacy.ListCommits())
        {
            try
            {
                if (legacy.GetCommitMetadata(number) is { Length: > 0 } metadata)
                {
                    records.Add((number, metadata));
                }
            }
            catch (Exception e) when (e is IOException or FasterException or InvalidDataException or OverflowException or ArgumentException)
            {
                // Unreadable: recovery falls back to an older record, as it would have with the file.
            }
        }

        return records;
    }
}
