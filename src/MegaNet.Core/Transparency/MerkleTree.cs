using System.Numerics;
using System.Security.Cryptography;
using MegaNet.Core.Interop;

namespace MegaNet.Core.Transparency;

/// <summary>
/// RFC 9162 (Certificate Transparency v2) Merkle tree hashing and proof verification. Everything here works without
/// the store, so a thin client or a peer can check a node's receipts and tree heads on its own.
/// </summary>
public static class MerkleTree
{
    private static readonly NSec.Cryptography.HashAlgorithm Sha256 = NSec.Cryptography.HashAlgorithm.Sha256;

    private static readonly byte[] EmptyRootHash = SHA256.HashData(ReadOnlySpan<byte>.Empty);

    /// <summary>Hash size (SHA-256).</summary>
    public const int HashSize = 32;

    /// <summary>SHA-256(0x00 ‖ leaf).</summary>
    public static byte[] LeafHash(ReadOnlySpan<byte> leaf)
    {
        byte[] hash = new byte[HashSize];
        LeafHash(leaf, hash);
        return hash;
    }

    /// <summary>SHA-256(0x00 ‖ leaf) written into <paramref name="destination"/> (<see cref="HashSize"/> bytes), so a
    /// caller that keeps hashes in storage of its own (the store's Merkle log) allocates nothing per leaf.</summary>
    public static void LeafHash(ReadOnlySpan<byte> leaf, Span<byte> destination)
    {
        CheckDestination(destination);
        if (leaf.Length < OpenSslSha256.MaxInput)
        {
            Span<byte> buffer = stackalloc byte[1 + leaf.Length];
            buffer[0] = 0x00;
            leaf.CopyTo(buffer[1..]);
            ShortHash(buffer, destination);
            return;
        }

        byte[] rented = System.Buffers.ArrayPool<byte>.Shared.Rent(1 + leaf.Length);
        try
        {
            rented[0] = 0x00;
            leaf.CopyTo(rented.AsSpan(1));
            Sha256.Hash(rented.AsSpan(0, 1 + leaf.Length), destination[..HashSize]);
        }
        finally
        {
            System.Buffers.ArrayPool<byte>.Shared.Return(rented);
        }
    }

    /// <summary>SHA-256(0x01 ‖ left ‖ right).</summary>
    public static byte[] NodeHash(ReadOnlySpan<byte> left, ReadOnlySpan<byte> right)
    {
        byte[] hash = new byte[HashSize];
        NodeHash(left, right, hash);
        return hash;
    }

    /// <summary>SHA-256(0x01 ‖ left ‖ right) written into <paramref name="destination"/> (<see cref="HashSize"/> bytes;
    /// it may overlap <paramref name="left"/> or <paramref name="right"/>: both are copied before it is written).</summary>
    public static void NodeHash(ReadOnlySpan<byte> left, ReadOnlySpan<byte> right, Span<byte> destination)
    {
        CheckDestination(destination);
        Span<byte> buffer = stackalloc byte[1 + 2 * HashSize];
        buffer[0] = 0x01;
        left.CopyTo(buffer[1..]);
        right.CopyTo(buffer[(1 + HashSize)..]);
        ShortHash(buffer, destination);
    }

    /// <summary>Which SHA-256 hashes leaves and nodes in this process, and why not the faster one where it is not, for the
    /// node's start log: the slower one costs about a microsecond more per stored envelope, so an operator comparing
    /// machines should be able to see it.</summary>
    public static string HashImplementation => OpenSslSha256.IsAvailable
        ? $"SHA-256 through OpenSSL's low-level calls ({OpenSslSha256.Library}; the CPU's SHA extensions where it has them)"
        : $"SHA-256 through libsodium's portable code, the slower one (OpenSSL's calls are not used: {OpenSslSha256.WhyNot?.TrimEnd('.')})";

    // SHA-256 of at most OpenSslSha256.MaxInput bytes. The store hashes a leaf and about a node per envelope and a proof
    // check a dozen nodes: for inputs this short the call is the cost. OpenSSL's low-level calls with the CPU's SHA
    // extensions where the process has them (see OpenSslSha256), otherwise libsodium's one-shot (NSec: 556 ns per node
    // against 771 ns for .NET's SHA256.HashData, whose per-call OpenSSL context dominates such short inputs).
    private static void ShortHash(ReadOnlySpan<byte> input, Span<byte> destination)
    {
        if (OpenSslSha256.IsAvailable)
        {
            OpenSslSha256.Hash(input, destination);
        }
        else
        {
            Sha256.Hash(input, destination[..HashSize]);
        }
    }

    private static void CheckDestination(Span<byte> destination)
    {
        if (destination.Length < HashSize)
        {
            throw new ArgumentException($"The destination holds {destination.Length} bytes; a hash is {HashSize}.", nameof(destination));
        }
    }

    /// <summary>The root of the empty tree, SHA-256 of nothing.</summary>
    public static byte[] EmptyRoot() => EmptyRootHash.ToArray();

    /// <summary>Largest power of two strictly below <paramref name="n"/> (n ≥ 2).</summary>
    /// <remarks>Shifted before the cast: above 2^62 the power rounded up is 2^63, which as a long is negative.</remarks>
    public static long SplitPoint(long n) => (long)(BitOperations.RoundUpToPowerOf2((ulong)n) >> 1);

    /// <summary>Most hashes in a proof for any tree a signed size (below 2^63) can describe: each hash of an inclusion
    /// or consistency path at least halves what is left of the tree, so a longer path is wrong whatever it holds.</summary>
    public const int MaxPathHashes = 64;

    /// <summary>RFC 9162 §2.1.3.2: checks that <paramref name="leafHash"/> is leaf <paramref name="index"/> of the tree
    /// of size <paramref name="treeSize"/> whose root is <paramref name="root"/>.</summary>
    public static bool VerifyInclusion(ReadOnlySpan<byte> leafHash, long index, long treeSize, IReadOnlyList<byte[]> proof, ReadOnlySpan<byte> root) =>
        VerifyInclusion(leafHash, index, treeSize, proof, static hash => hash, root);

    /// <summary>RFC 9162 §2.1.3.2 over a proof whose hashes <paramref name="bytes"/> reads (a protobuf message's
    /// repeated bytes, say), copied into a stack buffer rather than into arrays.</summary>
    public static bool VerifyInclusion<THash>(ReadOnlySpan<byte> leafHash, long index, long treeSize, IReadOnlyList<THash> proof, Func<THash, ReadOnlyMemory<byte>> bytes, ReadOnlySpan<byte> root)
    {
        Span<byte> path = stackalloc byte[MaxPathHashes * HashSize];
        return TryConcatenate(proof, bytes, path, out int length) && VerifyInclusion(leafHash, index, treeSize, path[..length], root);
    }

    /// <summary>RFC 9162 §2.1.3.2, with the proof's hashes one after another in <paramref name="path"/> (see
    /// <see cref="TryConcatenate"/>); allocates nothing, for callers that check proofs by the thousand.</summary>
    public static bool VerifyInclusion(ReadOnlySpan<byte> leafHash, long index, long treeSize, ReadOnlySpan<byte> path, ReadOnlySpan<byte> root)
    {
        if (index < 0 || index >= treeSize || leafHash.Length != HashSize || root.Length != HashSize || !IsPath(path))
        {
            return false;
        }

        long fn = index, sn = treeSize - 1;
        Span<byte> r = stackalloc byte[HashSize];
        leafHash.CopyTo(r);
        for (int offset = 0; offset < path.Length; offset += HashSize)
        {
            if (sn == 0)
            {
                return false;
            }

            ReadOnlySpan<byte> p = path.Slice(offset, HashSize);
            if ((fn & 1) == 1 || fn == sn)
            {
                NodeHash(p, r, r);
                if ((fn & 1) == 0)
                {
                    while ((fn & 1) == 0 && fn != 0)
                    {
                        fn >>= 1;
                        sn >>= 1;
                    }
                }
            }
            else
            {
                NodeHash(r, p, r);
            }

            fn >>= 1;
            sn >>= 1;
        }

        return sn == 0 && r.SequenceEqual(root);
    }

    /// <summary>RFC 9162 §2.1.4.2: checks that the tree of size <paramref name="size2"/> with root <paramref name="root2"/>
    /// extends the tree of size <paramref name="size1"/> with root <paramref name="root1"/>. Two heads of one size
    /// are consistent with an empty proof when their roots are equal (the RFC's step 1 fails every empty path; the
    /// node answers such a request with one, as other RFC 9162 logs do).</summary>
    public static bool VerifyConsistency(long size1, long size2, ReadOnlySpan<byte> root1, ReadOnlySpan<byte> root2, IReadOnlyList<byte[]> proof) =>
        VerifyConsistency(size1, size2, root1, root2, proof, static hash => hash);

    /// <summary>RFC 9162 §2.1.4.2 over a proof whose hashes <paramref name="bytes"/> reads, copied into a stack buffer
    /// rather than into arrays.</summary>
    public static bool VerifyConsistency<THash>(long size1, long size2, ReadOnlySpan<byte> root1, ReadOnlySpan<byte> root2, IReadOnlyList<THash> proof, Func<THash, ReadOnlyMemory<byte>> bytes)
    {
        Span<byte> path = stackalloc byte[MaxPathHashes * HashSize];
        return TryConcatenate(proof, bytes, path, out int length) && VerifyConsistency(size1, size2, root1, root2, path[..length]);
    }

    /// <summary>RFC 9162 §2.1.4.2, with the proof's hashes one after another in <paramref name="path"/> (see
    /// <see cref="TryConcatenate"/>); allocates nothing, for callers that check proofs by the thousand.</summary>
    public static bool VerifyConsistency(long size1, long size2, ReadOnlySpan<byte> root1, ReadOnlySpan<byte> root2, ReadOnlySpan<byte> path)
    {
        if (size1 < 0 || size2 < size1 || root1.Length != HashSize || root2.Length != HashSize || !IsPath(path))
        {
            return false;
        }

        if (size1 == 0 && !root1.SequenceEqual(EmptyRootHash))
        {
            // A size-0 head with another root than the empty tree's is no head of this log.
            return false;
        }

        if (size1 == size2)
        {
            return path.IsEmpty && root1.SequenceEqual(root2);
        }

        if (size1 == 0)
        {
            // Every tree extends the empty one.
            return path.IsEmpty;
        }

        if (path.IsEmpty)
        {
            return false;
        }

        // The RFC prepends root1 to the path when size1 is a power of two and starts both running hashes from the
        // path's first entry: here that entry seeds them without being copied in front.
        int offset = 0;
        ReadOnlySpan<byte> seed = root1;
        if (!BitOperations.IsPow2(size1))
        {
            seed = path[..HashSize];
            offset = HashSize;
        }

        Span<byte> fr = stackalloc byte[HashSize], sr = stackalloc byte[HashSize];
        seed.CopyTo(fr);
        seed.CopyTo(sr);
        long fn = size1 - 1, sn = size2 - 1;
        while ((fn & 1) == 1)
        {
            fn >>= 1;
            sn >>= 1;
        }

        for (; offset < path.Length; offset += HashSize)
        {
            if (sn == 0)
            {
                return false;
            }

            ReadOnlySpan<byte> c = path.Slice(offset, HashSize);
            if ((fn & 1) == 1 || fn == sn)
            {
                NodeHash(c, fr, fr);
                NodeHash(c, sr, sr);
                if ((fn & 1) == 0)
                {
                    while ((fn & 1) == 0 && fn != 0)
                    {
                        fn >>= 1;
                        sn >>= 1;
                    }
                }
            }
            else
            {
                NodeHash(sr, c, sr);
            }

            fn >>= 1;
            sn >>= 1;
        }

        return sn == 0 && fr.SequenceEqual(root1) && sr.SequenceEqual(root2);
    }

    /// <summary>Writes a proof's hashes one after another into <paramref name="destination"/> (room for
    /// <see cref="MaxPathHashes"/> hashes suffices), reading each through <paramref name="bytes"/>. False, with nothing
    /// to verify, when a hash is not <see cref="HashSize"/> bytes or there are more than <see cref="MaxPathHashes"/>:
    /// no such proof verifies.</summary>
    public static bool TryConcatenate<THash>(IReadOnlyList<THash> proof, Func<THash, ReadOnlyMemory<byte>> bytes, Span<byte> destination, out int length)
    {
        ArgumentNullException.ThrowIfNull(proof);
        ArgumentNullException.ThrowIfNull(bytes);
        length = 0;
        int count = proof.Count;
        if (count > MaxPathHashes)
        {
            return false;
        }

        if (count * HashSize > destination.Length)
        {
            throw new ArgumentException($"The destination holds {destination.Length} bytes; this proof needs {count * HashSize}.", nameof(destination));
        }

        for (int i = 0; i < count; i++)
        {
            ReadOnlySpan<byte> hash = bytes(proof[i]).Span;
            if (hash.Length != HashSize)
            {
                length = 0;
                return false;
            }

            hash.CopyTo(destination[length..]);
            length += HashSize;
        }

        return true;
    }

    private static bool IsPath(ReadOnlySpan<byte> path) => path.Length % HashSize == 0 && path.Length <= MaxPathHashes * HashSize;
}
