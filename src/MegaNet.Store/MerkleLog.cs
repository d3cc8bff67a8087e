using MegaNet.Core.Transparency;

namespace MegaNet.Store;

/// <summary>
/// The transparency log's Merkle tree kept as its perfect subtrees: level h holds the hash of every complete,
/// aligned block of 2^h leaves. Appends cost O(log n); roots and proofs read O(log n) stored hashes and never rescan
/// the log. Rebuilt at start from the checkpoint's leaf hashes and the write-ahead log after it.
/// </summary>
/// <remarks>
/// One writer at a time (the store appends under its index lock). Readers may compute roots and proofs without that lock
/// for any size they read under it: nothing is ever changed or removed, an append writes every hash of the new size
/// before the lock is released, and reading an existing element of a <see cref="List{T}"/> that another thread grows is
/// safe (the old and the new backing array hold the same references). A size read without the lock is not enough:
/// <see cref="Size"/> grows before the new leaf's parent hashes are written.
/// <para>Hashes live in 64 KiB blocks, not one array per hash: a node holding millions of leaves keeps a few thousand
/// objects for the garbage collector to trace instead of two per leaf (profiled: background GCs tracing the
/// long-lived per-leaf and per-envelope objects took a third of a loaded relay's CPU).</para>
/// </remarks>
internal sealed class MerkleLog
{
    private readonly List<HashColumn> _levels = [new()];

    public long Size => _levels[0].Count;

    public void Append(ReadOnlySpan<byte> leaf)
    {
        Span<byte> hash = stackalloc byte[MerkleTree.HashSize];
        MerkleTree.LeafHash(leaf, hash);
        AppendLeafHash(hash);
    }

    /// <summary>The RFC 9162 leaf hash of leaf <paramref name="index"/> (what a checkpoint saves).</summary>
    public ReadOnlySpan<byte> LeafHashAt(long index) => _levels[0][index];

    /// <summary>Appends a leaf by its leaf hash (a checkpoint's saved leaves); the inner nodes are recomputed.</summary>
    public void AppendLeafHash(ReadOnlySpan<byte> hash)
    {
        _levels[0].Add(hash);
        Span<byte> node = stackalloc byte[MerkleTree.HashSize];
        long index = _levels[0].Count - 1;
        for (int h = 0; (index & 1) == 1; h++)
        {
            if (_levels.Count == h + 1)
            {
                _levels.Add(new HashColumn());
            }

            // Hashed on the stack and copied in: no array per inner node (about one per append).
            HashColumn level = _levels[h];
            MerkleTree.NodeHash(level[level.Count - 2], level[level.Count - 1], node);
            _levels[h + 1].Add(node);
            index >>= 1;
        }
    }

    /// <summary>RFC 9162 MTH of the first <paramref name="size"/> leaves.</summary>
    public byte[] Root(long size)
    {
        CheckSize(size);
        return size == 0 ? MerkleTree.EmptyRoot() : Hash(0, size);
    }

    /// <summary>RFC 9162 inclusion path of leaf <paramref name="index"/> in the tree of size <paramref name="size"/>.</summary>
    public List<byte[]> InclusionProof(long index, long size)
    {
        CheckSize(size);
        if (index < 0 || index >= size)
        {
            throw new ArgumentOutOfRangeException(nameof(index), index, $"Leaf {index} is not in a tree of size {size}.");
        }

        var proof = new List<byte[]>();
        Path(index, 0, size, proof);
        return proof;
    }

    /// <summary>RFC 9162 consistency proof between sizes <paramref name="size1"/> ≤ <paramref name="size2"/>.</summary>
    public List<byte[]> ConsistencyProof(long size1, long size2)
    {
        CheckSize(size2);
        if (size1 < 0 || size1 > size2)
        {
            throw new ArgumentOutOfRangeException(nameof(size1), size1, $"The first size must be between 0 and {size2}.");
        }

        var proof = new List<byte[]>();
        if (size1 > 0 && size1 < size2)
        {
            SubProof(size1, 0, size2, true, proof);
        }

        return proof;
    }

    // MTH(D[start : start + n]); start is always aligned to the largest power of two ≤ n in RFC 9162's recursion.
    private byte[] Hash(long start, long n)
    {
        if ((n & (n - 1)) == 0)
        {
            int h = System.Numerics.BitOperations.Log2((ulong)n);
            return _levels[h][start >> h].ToArray();
        }

        long k = MerkleTree.SplitPoint(n);
        return MerkleTree.NodeHash(Hash(start, k), Hash(start + k, n - k));
    }

    private void Path(long m, long start, long n, List<byte[]> proof)
    {
        if (n == 1)
        {
            return;
        }

        long k = MerkleTree.SplitPoint(n);
        if (m < k)
        {
            Path(m, start, k, proof);
            proof.Add(Hash(start + k, n - k));
        }
        else
        {
            Path(m - k, start + k, n - k, proof);
            proof.Add(Hash(start, k));
        }
    }

    private void SubProof(long m, long start, long n, bool complete, List<byte[]> proof)
    {
        if (m == n)
        {
            if (!complete)
            {
                proof.Add(Hash(start, n));
            }

            return;
        }

        long k = MerkleTree.SplitPoint(n);
        if (m <= k)
        {
            SubProof(m, start, k, complete, proof);
            proof.Add(Hash(start + k, n - k));
        }
        else
        {
            SubProof(m - k, start + k, n - k, false, proof);
            proof.Add(Hash(start, k));
        }
    }

    private void CheckSize(long size)
    {
        if (size < 0 || size > Size)
        {
            throw new ArgumentOutOfRangeException(nameof(size), size, $"The log holds {Size} leaves.");
        }
    }

    /// <summary>32-byte hashes appended in order, stored in fixed blocks.</summary>
    private sealed class HashColumn
    {
        private const int PerBlock = 2048;
        private readonly List<byte[]> _blocks = [];

        public long Count { get; private set; }

        public ReadOnlySpan<byte> this[long index] => _blocks[(int)(index / PerBlock)].AsSpan((int)(index % PerBlock) * 32, 32);

        public void Add(ReadOnlySpan<byte> hash)
        {
            int slot = (int)(Count % PerBlock);
            if (slot == 0)
            {
                _blocks.Add(new byte[PerBlock * 32]);
            }

            hash.CopyTo(_blocks[^1].AsSpan(slot * 32, 32));
            Count++;
        }
    }
}
