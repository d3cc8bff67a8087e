using System.Buffers.Binary;
using NSec.Cryptography;

namespace MegaNet.Api;

/// <summary>
/// A file too large for one envelope, sent as parts (docs/protocol.md, "Files larger than one envelope"): each part is
/// a sealed message of its own with content type <see cref="ContentType"/>, the file's name, and as content a
/// <see cref="HeaderLength"/>-byte header (<c>file_id (16) ‖ index (u32) ‖ count (u32) ‖ file_length (u64) ‖
/// BLAKE2b-256(file) (32)</c>, big-endian) followed by the part's slice of the file. Every part but the last fills the
/// largest size class; the recipient puts the slices together in index order and checks the length and the hash.
/// </summary>
public static class FileParts
{
    /// <summary>The content type of a part.</summary>
    public const string ContentType = "application/vnd.meganet.file-part";

    /// <summary>Bytes of the header in front of each part's slice.</summary>
    public const int HeaderLength = 16 + 4 + 4 + 8 + 32;

    /// <summary>The most parts of one file.</summary>
    public const int MaxParts = 1024;

    /// <summary>The largest file sent in parts: 32 MiB, half of a node's default mailbox quota (64 MiB), so one file
    /// cannot fill an empty mailbox (past half of the quota, mail to it needs proof of work, which the client pays).</summary>
    public const long MaxFileLength = 32L << 20;

    /// <summary>The slice of the file each part carries (the last one may carry less), for a file of this name.</summary>
    public static int SliceLength(string fileName) => EnvelopeFormat.MaxContentLength(ContentType, fileName) - HeaderLength;

    /// <summary>How many parts a file of <paramref name="length"/> bytes named <paramref name="fileName"/> is cut into.</summary>
    /// <exception cref="ArgumentException">The file is larger than <see cref="MaxFileLength"/>, or so large with such a
    /// long name that it needs more than <see cref="MaxParts"/> parts.</exception>
    public static int PartCount(long length, string fileName)
    {
        ArgumentNullException.ThrowIfNull(fileName);
        if (length > MaxFileLength)
        {
            throw new ArgumentException($"A file sent in parts holds at most {MaxFileLength:N0} bytes; this one has {length:N0}.", nameof(length));
        }

        int slice = SliceLength(fileName);
        if (slice < 1)
        {
            throw new ArgumentException("The file name is too long to leave room for any of the file in a part.", nameof(fileName));
        }

        long count = Math.Max(1, (length + slice - 1) / slice);
        return count <= MaxParts ? (int)count
            : throw new ArgumentException($"The file needs {count:N0} parts of {slice:N0} bytes; at most {MaxParts:N0} are allowed (shorten the file name).", nameof(fileName));
    }

    /// <summary>The contents of the parts of <paramref name="file"/>, named <paramref name="fileName"/>, in order.</summary>
    /// <exception cref="ArgumentException">As <see cref="PartCount"/>.</exception>
    public static IReadOnlyList<byte[]> Split(ReadOnlySpan<byte> file, string fileName)
    {
        int count = PartCount(file.Length, fileName), slice = SliceLength(fileName);
        byte[] hash = HashAlgorithm.Blake2b_256.Hash(file);
        byte[] fileId = FileId(hash, fileName, count, slice);
        var parts = new byte[count][];
        for (int index = 0; index < count; index++)
        {
            ReadOnlySpan<byte> piece = file.Slice(index * slice, Math.Min(slice, file.Length - index * slice));
            byte[] part = new byte[HeaderLength + piece.Length];
            fileId.CopyTo(part, 0);
            BinaryPrimitives.WriteUInt32BigEndian(part.AsSpan(16), (uint)index);
            BinaryPrimitives.WriteUInt32BigEndian(part.AsSpan(20), (uint)count);
            BinaryPrimitives.WriteUInt64BigEndian(part.AsSpan(24), (ulong)file.Length);
            hash.CopyTo(part, 32);
            piece.CopyTo(part.AsSpan(HeaderLength));
            parts[index] = part;
        }

        return parts;
    }

    /// <summary>The 16-byte id the parts of <paramref name="file"/>, named <paramref name="fileName"/>, carry (see
    /// <see cref="Split"/>): the same file under the same name has the same id, so a record of a send can be found again
    /// by it.</summary>
    /// <exception cref="ArgumentException">As <see cref="PartCount"/>.</exception>
    public static byte[] IdOf(ReadOnlySpan<byte> file, string fileName) =>
        FileId(HashAlgorithm.Blake2b_256.Hash(file), fileName, PartCount(file.Length, fileName), SliceLength(fileName));

    /// <summary>
    /// The id of a file: the first 16 bytes of <c>BLAKE2b-256("meganet-file-v1" ‖ BLAKE2b-256(file) ‖ count (u32) ‖
    /// slice length (u32) ‖ name)</c>. The same file cut the same way under the same name always has the same id, so
    /// sending it again after a failure half way completes the parts the recipient kept from the first try instead of
    /// starting another set; cut another way (another client), it is another set, not one whose parts disagree.
    /// </summary>
    private static byte[] FileId(byte[] fileHash, string fileName, int count, int slice)
    {
        byte[] sizes = new byte[8];
        BinaryPrimitives.WriteUInt32BigEndian(sizes, (uint)count);
        BinaryPrimitives.WriteUInt32BigEndian(sizes.AsSpan(4), (uint)slice);
        byte[] input = [.. FileIdDomain, .. fileHash, .. sizes, .. System.Text.Encoding.UTF8.GetBytes(fileName)];
        return HashAlgorithm.Blake2b_256.Hash(input)[..16];
    }

    private static readonly byte[] FileIdDomain = System.Text.Encoding.ASCII.GetBytes("meganet-file-v1");

    /// <summary>Reads a part's header; <paramref name="problem"/> says what is wrong with one that does not hold.</summary>
    public static bool TryReadHeader(ReadOnlySpan<byte> content, out FilePartHeader header, [System.Diagnostics.CodeAnalysis.NotNullWhen(false)] out string? problem)
    {
        header = default;
        if (content.Length < HeaderLength)
        {
            problem = $"a file part of {content.Length} bytes is shorter than its {HeaderLength}-byte header";
            return false;
        }

        uint index = BinaryPrimitives.ReadUInt32BigEndian(content[16..]), count = BinaryPrimitives.ReadUInt32BigEndian(content[20..]);
        ulong length = BinaryPrimitives.ReadUInt64BigEndian(content[24..]);
        int slice = content.Length - HeaderLength;
        problem = count is 0 or > MaxParts ? $"a file part says the file has {count} parts (1 to {MaxParts} are allowed)"
            : index >= count ? $"a file part says it is part {(ulong)index + 1} of {count}"
            : length > MaxFileLength ? $"a file part says the file has {length:N0} bytes (at most {MaxFileLength:N0} are allowed)"
            : (ulong)slice > length ? $"a file part holds {slice:N0} bytes of a file of {length:N0}"
            : null;
        if (problem is not null)
        {
            return false;
        }

        header = new FilePartHeader(content[..16].ToArray(), (int)index, (int)count, (long)length, content[32..HeaderLength].ToArray());
        return true;
    }

    /// <summary>
    /// Puts a file together from the contents of all its parts (each a header and its slice, as <see cref="Split"/>
    /// makes them), given in index order: the slices must make exactly the length and the hash every header announces. <paramref name="problem"/> says what is wrong when they do not.
    /// </summary>
    public static bool TryJoin(IReadOnlyList<ReadOnlyMemory<byte>> parts, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out byte[]? file, [System.Diagnostics.CodeAnalysis.NotNullWhen(false)] out string? problem)
    {
        ArgumentNullException.ThrowIfNull(parts);
        file = null;
        FilePartHeader first = default;
        long total = 0;
        for (int i = 0; i < parts.Count; i++)
        {
            if (!TryReadHeader(parts[i].Span, out FilePartHeader header, out problem))
            {
                return false;
            }

            first = i == 0 ? header : first;
            if (!header.SameFile(first) || header.Index != i || header.Count != parts.Count)
            {
                problem = $"part {i + 1} does not belong with the others (another file id, count, length or hash, or out of order)";
                return false;
            }

            total += parts[i].Length - HeaderLength;
        }

        if (parts.Count == 0 || total != first.FileLength)
        {
            problem = parts.Count == 0 ? "no parts" : $"the parts hold {total:N0} bytes, not the {first.FileLength:N0} they announce";
            return false;
        }

        // Each slice copied once, straight into the file.
        byte[] joined = new byte[total];
        int at = 0;
        foreach (ReadOnlyMemory<byte> part in parts)
        {
            part.Span[HeaderLength..].CopyTo(joined.AsSpan(at));
            at += part.Length - HeaderLength;
        }

        if (!HashAlgorithm.Blake2b_256.Hash(joined).AsSpan().SequenceEqual(first.FileHash.Span))
        {
            problem = "the parts do not make the file they announce (its hash differs)";
            return false;
        }

        file = joined;
        problem = null;
        return true;
    }
}

/// <summary>The header of a file part (<see cref="FileParts"/>). Compare headers with <see cref="SameFile"/>: they hold
/// arrays, so the type has no equality of its own.</summary>
public readonly struct FilePartHeader
{
    internal FilePartHeader(ReadOnlyMemory<byte> fileId, int index, int count, long fileLength, ReadOnlyMemory<byte> fileHash) =>
        (FileId, Index, Count, FileLength, FileHash) = (fileId, index, count, fileLength, fileHash);

    /// <summary>16 bytes naming the file (<see cref="FileParts"/>).</summary>
    public ReadOnlyMemory<byte> FileId { get; }

    /// <summary>This part's number, from 0.</summary>
    public int Index { get; }

    /// <summary>How many parts the file has.</summary>
    public int Count { get; }

    /// <summary>The whole file's length in bytes.</summary>
    public long FileLength { get; }

    /// <summary>BLAKE2b-256 of the whole file.</summary>
    public ReadOnlyMemory<byte> FileHash { get; }

    /// <summary>True when <paramref name="other"/> announces the same file (id, count, length and hash).</summary>
    public bool SameFile(FilePartHeader other) =>
        FileId.Span.SequenceEqual(other.FileId.Span) && Count == other.Count && FileLength == other.FileLength && FileHash.Span.SequenceEqual(other.FileHash.Span);
}
