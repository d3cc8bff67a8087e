using System.Buffers;
using System.Buffers.Binary;
using System.Security.Cryptography;
using MegaNet.Core.Interop;
using Microsoft.Win32.SafeHandles;

namespace MegaNet.Store;

/// <summary>
/// The store's checkpoint files beside the envelope table's own FASTER checkpoint: <c>checkpoint.manifest</c> (which
/// table checkpoint, the write-ahead-log address it covers, the mailbox indexes, the leaf count; SHA-256 at the end so a
/// torn or damaged file is an error, never a silent partial load; replaced atomically) and <c>leaves.bin</c> (the
/// Merkle tree's leaf hashes, 32 bytes each, appended at every checkpoint and read back for proofs of older leaves; bytes
/// past the manifest's count are ignored) and <c>level8.bin</c> (the tree's hashes at <see cref="MerkleLog.KeptLevel"/>,
/// one per whole 256-leaf block the manifest counts, appended alike: an open reads them instead of hashing every leaf
/// again, and takes them only when they make the manifest's root, so the file may be missing, short or stale).
/// </summary>
internal static class Checkpoint
{
    private const uint Magic = 0x4B43_4E4D; // "MNCK"
    private const int Version = 3;

    // Version 3's flags.
    private const int SeparateEnvelopeRecordsFlag = 1;

    /// <summary>A parsed manifest. <paramref name="IndexBytes"/> is the size of the envelope table's hash index, which a
    /// FASTER checkpoint can only be recovered into (version 1 manifests predate the field: their index was 4 MiB).
    /// <paramref name="SeparateEnvelopeRecords"/>: the table may hold envelope bytes in records of their own (see
    /// <see cref="EnvelopeKv.SeparateEnvelopeRecords"/>); always so before version 3, and kept from then on.
    /// Each mailbox's <c>NextSeq</c> is no longer used (sequence numbers come from log indexes since 2026-11-29): written
    /// as 0 and ignored on reading, so manifests of either age read the same. <paramref name="LeavesRoot"/>: the Merkle
    /// root of the first <paramref name="LeafCount"/> leaves, which the leaf hashes read back from leaves.bin must make
    /// (that file has no checksum of its own); after the mailboxes, where builds before 2026-12-01 stop reading, so it
    /// needs no new version, and null in the manifests they wrote.</summary>
    public sealed record Manifest(Guid Token, long WalAddress, long LeafCount, long IndexBytes, bool SeparateEnvelopeRecords,
        List<(byte[] Address, ulong NextSeq, ReadOnlySequence<IndexEntry> Entries)> Mailboxes, byte[]? LeavesRoot = null);

    public static string ManifestPath(string storeDirectory) => Path.Combine(storeDirectory, "checkpoint.manifest");

    public static string LeavesPath(string storeDirectory) => Path.Combine(storeDirectory, "leaves.bin");

    /// <summary>The saved hashes at <see cref="MerkleLog.KeptLevel"/>: level8.bin.</summary>
    public static string LevelsPath(string storeDirectory) => Path.Combine(storeDirectory, $"level{MerkleLog.KeptLevel}.bin");

    /// <summary>The manifest, or null when the store was never checkpointed.</summary>
    /// <exception cref="StoreCorruptException">The manifest is damaged; the message names it.</exception>
    public static Manifest? Read(string storeDirectory)
    {
        string path = ManifestPath(storeDirectory);
        if (!File.Exists(path))
        {
            return null;
        }

        byte[] bytes = File.ReadAllBytes(path);
        if (bytes.Length < 48 || !SHA256.HashData(bytes.AsSpan(0, bytes.Length - 32)).AsSpan().SequenceEqual(bytes.AsSpan(bytes.Length - 32)))
        {
            throw Damaged(path, "its checksum does not match");
        }

        var r = new Reader(bytes.AsMemory(0, bytes.Length - 32));
        int version = r.U32() == Magic ? r.I32() : 0;
        if (version > Version)
        {
            // Intact (the checksum held), only newer: not damage, and restoring a backup is not the fix.
            throw new StoreCorruptException(
                $"The store in '{storeDirectory}' was written by a newer MegaNet build (checkpoint manifest version {version}; this build reads versions 1 to {Version}). " +
                "Nothing was changed. Run that build or a newer one on it; an older build cannot open it.");
        }

        if (version < 1)
        {
            throw Damaged(path, $"it is not a MegaNet checkpoint manifest of versions 1 to {Version}");
        }

        var token = new Guid(r.Bytes(16));
        long wal = r.I64();
        long leaves = r.I64();
        long indexBytes = version == 1 ? EnvelopeKv.Version1IndexBytes : r.I64();
        if (!EnvelopeKv.IsValidIndexSize(indexBytes))
        {
            throw Damaged(path, $"it gives {indexBytes} bytes for the table's hash index, not a power of two from 64 bytes to 1 GiB");
        }

        bool separateEnvelopeRecords = version < 3 || (r.I32() & SeparateEnvelopeRecordsFlag) != 0;

        int boxes = r.I32();
        var mailboxes = new List<(byte[], ulong, ReadOnlySequence<IndexEntry>)>(boxes);
        for (int b = 0; b < boxes; b++)
        {
            byte[] address = r.Bytes(32).ToArray();
            ulong next = r.U64();
            int n = r.I32();
            var entries = new IndexEntry[n];
            for (int i = 0; i < n; i++)
            {
                ulong seq = r.U64();
                var id = new FasterEnvelopeStore.Key32(r.Bytes(32));
                long expires = r.I64();
                long logIndex = r.I64();
                int length = r.I32();
                entries[i] = new IndexEntry(seq, id, expires, logIndex, length);
            }

            mailboxes.Add((address, next, new ReadOnlySequence<IndexEntry>(entries)));
        }

        byte[]? root = r.Remaining >= 32 ? r.Bytes(32).ToArray() : null;
        return new Manifest(token, wal, leaves, indexBytes, separateEnvelopeRecords, mailboxes, root);
    }

    /// <summary>Writes the manifest to a temporary file, flushes it and renames it over the old one; returns its size in
    /// bytes.</summary>
    /// <remarks>Streamed through a buffer and hashed as it goes: the manifest grows with the waiting mail (about 60
    /// bytes per envelope), so building it in memory first cost a copy of it twice per checkpoint.</remarks>
    public static long Write(string storeDirectory, Manifest manifest)
    {
        long written;
        string path = ManifestPath(storeDirectory);
        string temp = path + ".tmp";
        using (FileStream file = PrivateFile.Open(temp, FileMode.Create, FileAccess.Write, FileShare.None, bufferSize: 1 << 16))
        using (var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256))
        {
            byte[] buffer = new byte[1 << 16];
            int used = 0;
            void Reserve(int n)
            {
                if (used + n > buffer.Length)
                {
                    sha.AppendData(buffer, 0, used);
                    file.Write(buffer, 0, used);
                    used = 0;
                }
            }

            void U32(uint v) { Reserve(4); BinaryPrimitives.WriteUInt32LittleEndian(buffer.AsSpan(used), v); used += 4; }
            void I32(int v) { Reserve(4); BinaryPrimitives.WriteInt32LittleEndian(buffer.AsSpan(used), v); used += 4; }
            void I64(long v) { Reserve(8); BinaryPrimitives.WriteInt64LittleEndian(buffer.AsSpan(used), v); used += 8; }
            void U64(ulong v) { Reserve(8); BinaryPrimitives.WriteUInt64LittleEndian(buffer.AsSpan(used), v); used += 8; }
            void Raw(ReadOnlySpan<byte> v) { Reserve(v.Length); v.CopyTo(buffer.AsSpan(used)); used += v.Length; }

            U32(Magic);
            I32(Version);
            Raw(manifest.Token.ToByteArray());
            I64(manifest.WalAddress);
            I64(manifest.LeafCount);
            I64(manifest.IndexBytes);
            I32(manifest.SeparateEnvelopeRecords ? SeparateEnvelopeRecordsFlag : 0);
            I32(manifest.Mailboxes.Count);
            Span<byte> id = stackalloc byte[32];
            foreach ((byte[] address, ulong next, ReadOnlySequence<IndexEntry> entries) in manifest.Mailboxes)
            {
                Raw(address);
                U64(next);
                I32(checked((int)entries.Length));
                foreach (ReadOnlyMemory<IndexEntry> run in entries)
                {
                    foreach (IndexEntry e in run.Span)
                    {
                        U64(e.Seq);
                        e.Id.CopyTo(id);
                        Raw(id);
                        I64(e.ExpiresUnixMs);
                        I64(e.LogIndex);
                        I32(e.Length);
                    }
                }
            }

            if (manifest.LeavesRoot is { } root)
            {
                Raw(root);
            }

            sha.AppendData(buffer, 0, used);
            file.Write(buffer, 0, used);
            file.Write(sha.GetHashAndReset());
            file.Flush(flushToDisk: true);
            written = file.Length;
        }

        DurableRename.Replace(temp, path);
        return written;
    }

    /// <summary>Leaf hashes a checkpoint copies and writes at a time (1 MiB).</summary>
    internal const int AppendChunkLeaves = 1 << 15;

    /// <summary>Writes the hashes of leaves <paramref name="from"/> to <paramref name="to"/> (exclusive) to leaves.bin,
    /// <see cref="AppendChunkLeaves"/> at a time, each chunk filled by <paramref name="fill"/> (its first leaf, the
    /// span to fill), and flushes them. In chunks: a checkpoint after more than 67 million leaves (2 GiB of hashes) could
    /// not make the one array it was written from, so it and every later one failed.</summary>
    public static void AppendLeaves(string storeDirectory, long from, long to, SpanAction<byte, long> fill) =>
        AppendHashes(LeavesPath(storeDirectory), from, to, fill);

    /// <summary>Writes the hashes at <see cref="MerkleLog.KeptLevel"/> from index <paramref name="from"/> to
    /// <paramref name="to"/> (exclusive) to level8.bin as <see cref="AppendLeaves"/> does (from 0 rewrites it whole), and
    /// flushes them; before the manifest that counts them, so that a crash leaves at most hashes past its count, which
    /// are ignored.</summary>
    public static void AppendKeptHashes(string storeDirectory, long from, long to, SpanAction<byte, long> fill) =>
        AppendHashes(LevelsPath(storeDirectory), from, to, fill);

    private static void AppendHashes(string path, long from, long to, SpanAction<byte, long> fill)
    {
        // Shared with readers: proofs read released hashes back (ReadLeafHashes) while a checkpoint appends, and an
        // exclusive lock here would make that checkpoint fail. Only hashes past the manifest's count are written.
        using FileStream file = PrivateFile.Open(path, FileMode.OpenOrCreate, FileAccess.Write, FileShare.Read);
        // Bytes past the last manifest's count (a torn append) are overwritten.
        file.SetLength(from * 32);
        file.Position = from * 32;
        byte[] chunk = ArrayPool<byte>.Shared.Rent((int)Math.Min(to - from, AppendChunkLeaves) * 32);
        try
        {
            for (long start = from; start < to; start += AppendChunkLeaves)
            {
                Span<byte> hashes = chunk.AsSpan(0, (int)Math.Min(to - start, AppendChunkLeaves) * 32);
                fill(hashes, start);
                file.Write(hashes);
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(chunk);
        }

        file.Flush(flushToDisk: true);
    }

    /// <summary>Checks that leaves.bin holds at least the manifest's <paramref name="count"/> leaf hashes.</summary>
    /// <exception cref="StoreCorruptException">leaves.bin is shorter than the manifest says.</exception>
    public static void CheckLeavesLength(string storeDirectory, long count)
    {
        string path = LeavesPath(storeDirectory);
        long length = File.Exists(path) ? new FileInfo(path).Length : 0;
        if (length < count * 32)
        {
            throw Damaged(path, $"it holds {length / 32} leaf hashes but the checkpoint manifest counts {count}");
        }
    }

    /// <summary>Reads <paramref name="destination"/> from <paramref name="file"/> at <paramref name="offset"/>, as far as
    /// the file goes; returns the bytes read (fewer than asked only at its end).</summary>
    public static int ReadFully(SafeFileHandle file, Span<byte> destination, long offset)
    {
        int done = 0;
        while (done < destination.Length && RandomAccess.Read(file, destination[done..], offset + done) is int read and > 0)
        {
            done += read;
        }

        return done;
    }

    /// <summary>Reads the leaf hashes from leaf <paramref name="first"/> on into <paramref name="destination"/> (32 bytes
    /// each), which leaves.bin must hold (a manifest counted them).</summary>
    /// <param name="storeDirectory">The store's directory.</param>
    /// <param name="first">The first leaf to read.</param>
    /// <param name="destination">Where the hashes go; its length says how many.</param>
    /// <param name="whileOpen">Read for an open store (a proof), not while opening it: damage's advice says to stop the
    /// node first (<see cref="StoreCorruptException.RunTimeAdvice"/>), and a failed read is no damage.</param>
    /// <param name="beforeReadForTests">Called with leaves.bin's path before it is opened; what it throws is taken as
    /// the read's own failure (tests).</param>
    /// <exception cref="StoreCorruptException">leaves.bin is missing or shorter; at open, also when it could not be read
    /// at all; the message names it.</exception>
    /// <exception cref="StoreUnavailableException">While open: leaves.bin could not be read (too many open files, out of
    /// memory, a device error), which says nothing about its hashes; a later read may succeed. The message names the
    /// file and the error.</exception>
    public static void ReadLeafHashes(string storeDirectory, long first, Span<byte> destination, bool whileOpen = false, Action<string>? beforeReadForTests = null)
    {
        string advice = whileOpen ? StoreCorruptException.RunTimeAdvice : StoreCorruptException.Advice;
        string path = LeavesPath(storeDirectory);
        long offset = first * 32;
        long last = first + (destination.Length / 32) - 1;
        try
        {
            beforeReadForTests?.Invoke(path);
            using SafeFileHandle file = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
            if (ReadFully(file, destination, offset) is int done && done < destination.Length)
            {
                throw Damaged(path, $"it ends at leaf {(offset + done) / 32}, before leaf {last}, which the checkpoint manifest counts", advice: advice);
            }
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            // A manifest counted these hashes, so the file was there: gone is damage, whoever removed it.
            throw Damaged(path, $"it is missing, while the checkpoint manifest counts leaf hashes up to {last}", e, advice);
        }
        catch (Exception e) when (whileOpen && e is IOException or UnauthorizedAccessException)
        {
            // EMFILE, ENOMEM, EIO and the like say nothing about the hashes, and the next proof may read them: taken for
            // damage, they made every later proof of these leaves DATA_LOSS and the node NOT_SERVING until a restart.
            throw new StoreUnavailableException(
                $"Reading leaf hashes {first} to {last} back from the store's checkpoint file '{path}' for a proof failed ({e.Message}). " +
                "This is no sign of damage and nothing was changed: the proof can be asked for again, and is given once the cause passes. " +
                "If it keeps failing, check the node's open-file limit, its memory and the device.", e);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // At open the store cannot do without the hashes either way, so it is refused; the error may pass, though.
            throw new StoreCorruptException(
                $"The store's checkpoint file '{path}' could not be read: reading leaf hashes {first} to {last} failed ({e.Message}). {StoreCorruptException.UnreadableAdvice}", e);
        }
    }

    /// <summary>The error for leaf hashes read back from leaves.bin that do not make the hash the Merkle log holds for
    /// them (the file changed after they were saved), found while the store is open.</summary>
    public static StoreCorruptException LeavesDamagedAt(string storeDirectory, long first, long count) =>
        Damaged(LeavesPath(storeDirectory), $"its leaf hashes {first} to {first + count - 1} do not make the Merkle hash held for them since they were saved",
            advice: StoreCorruptException.RunTimeAdvice);

    /// <summary>The error for a leaves.bin whose first <paramref name="count"/> hashes do not make the manifest's root.</summary>
    public static StoreCorruptException LeavesDamaged(string storeDirectory, long count) =>
        Damaged(LeavesPath(storeDirectory), $"its first {count} leaf hashes do not make the Merkle root the checkpoint manifest recorded for them");

    private static StoreCorruptException Damaged(string path, string why, Exception? inner = null, string advice = StoreCorruptException.Advice) => new(
        $"The store's checkpoint file '{path}' is damaged: {why}. {advice}", inner);

    private ref struct Reader(Memory<byte> data)
    {
        private readonly ReadOnlySpan<byte> _data = data.Span;
        private int _at;

        public ReadOnlySpan<byte> Bytes(int n)
        {
            if (_at + n > _data.Length)
            {
                throw new StoreCorruptException($"The store's checkpoint manifest is truncated. {StoreCorruptException.Advice}");
            }

            ReadOnlySpan<byte> s = _data.Slice(_at, n);
            _at += n;
            return s;
        }

        public readonly int Remaining => _data.Length - _at;

        public uint U32() => BinaryPrimitives.ReadUInt32LittleEndian(Bytes(4));

        public int I32() => BinaryPrimitives.ReadInt32LittleEndian(Bytes(4));

        public long I64() => BinaryPrimitives.ReadInt64LittleEndian(Bytes(8));

        public ulong U64() => BinaryPrimitives.ReadUInt64LittleEndian(Bytes(8));
    }
}
