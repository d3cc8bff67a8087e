using MegaNet.Core.Transparency;

namespace MegaNet.Store;

/// <summary>
/// The transparency log's Merkle tree kept as its perfect subtrees: level h holds the hash of every complete,
/// aligned block of 2^h leaves. Appends cost O(log n); roots and proofs read O(log n) stored hashes and never rescan
/// the log. Rebuilt at start from the checkpoint's saved hashes (level8.bin, else every leaf hash of leaves.bin) and the
/// write-ahead log after it.
/// </summary>
/// <remarks>
/// One writer at a time (the store appends and releases under its index lock). Readers may compute roots and proofs
/// without that lock for any size they read under it: no hash is ever changed, an append writes every hash of the new
/// size before the lock is released, and a released block is only dropped, never reused, so a reader that took its
/// reference before the release reads it whole, and one that finds it gone recomputes the same hashes from leaves.bin
/// (which holds them before they are released). A size read without the lock is not enough: <see cref="Size"/> grows
/// before the new leaf's parent hashes are written.
/// <para>Hashes live in 64 KiB blocks, not one array per hash: a node holding millions of leaves keeps a few thousand
/// objects for the garbage collector to trace instead of two per leaf (profiled: background GCs tracing the
/// long-lived per-leaf and per-envelope objects took a third of a loaded relay's CPU).</para>
/// <para>Levels from <see cref="KeptLevel"/> up are held for the whole tree (one hash per 256 leaves and its parents:
/// about 0.25 byte per leaf). The levels below are held only for the leaves that leaves.bin does not hold yet: once a
/// checkpoint has saved them, <see cref="ReleaseSaved"/> drops their blocks (64 bytes per leaf, which grew without
/// bound: 550 MB a day at 100 envelopes/s, and as much again at every start). A proof that needs a dropped hash reads
/// the 256 leaf hashes of its aligned block (8 KiB) and hashes them up, about 255 SHA-256 hashes, and checks the
/// block's hash against the one held at <see cref="KeptLevel"/>, so a damaged leaves.bin is an error, never a wrong
/// proof. A read that fails for a reason that may pass (too many open files, a device error) is no damage: it is
/// <see cref="StoreUnavailableException"/>, and the next proof reads the file again.</para>
/// </remarks>
internal sealed class MerkleLog
{
    /// <summary>The lowest level held for the whole tree; each of its hashes covers 2^KeptLevel leaves.</summary>
    internal const int KeptLevel = 8;

    private const int BlockLeaves = 1 << KeptLevel;

    // Hashes of a recomputed block: levels 0 to KeptLevel, 2^(KeptLevel+1) - 1 in all.
    private const int BlockTreeHashes = (2 << KeptLevel) - 1;

    // Every level a tree below 2^63 leaves can have, made up front: readers index it while the writer appends, and a
    // List grown under them could, on a weakly ordered CPU (ARM), be seen with its new count and its old array.
    private readonly HashColumn[] _levels = NewLevels();
    private readonly string? _storeDirectory;
    private long _blocksReadBack;

    /// <summary>A log whose levels below <see cref="KeptLevel"/> stay in memory (nothing to read them back from).</summary>
    public MerkleLog()
    {
    }

    /// <summary>A log that may drop the lower levels of the leaves saved in <paramref name="storeDirectory"/>'s
    /// leaves.bin (see <see cref="ReleaseSaved"/>) and reads them back from there when a proof needs them.</summary>
    public MerkleLog(string storeDirectory) => _storeDirectory = storeDirectory;

    public long Size => _levels[0].Count;

    /// <summary>Blocks of 64 KiB held for the levels below <see cref="KeptLevel"/> (what <see cref="ReleaseSaved"/>
    /// bounds; tests).</summary>
    internal int LowerBlocksHeld
    {
        get
        {
            int held = 0;
            for (int h = 0; h < KeptLevel; h++)
            {
                held += _levels[h].BlocksHeld;
            }

            return held;
        }
    }

    /// <summary>256-leaf blocks read back from leaves.bin for roots and proofs (tests).</summary>
    internal long BlocksReadBack => Interlocked.Read(ref _blocksReadBack);

    public void Append(ReadOnlySpan<byte> leaf)
    {
        Span<byte> hash = stackalloc byte[MerkleTree.HashSize];
        MerkleTree.LeafHash(leaf, hash);
        AppendLeafHash(hash);
    }

    /// <summary>The RFC 9162 leaf hash of leaf <paramref name="index"/> (what a checkpoint saves); writer only, and
    /// only for a leaf not yet released.</summary>
    public ReadOnlySpan<byte> LeafHashAt(long index) => _levels[0][index];

    /// <summary>Appends a leaf by its leaf hash (a checkpoint's saved leaves); the inner nodes are recomputed.</summary>
    public void AppendLeafHash(ReadOnlySpan<byte> hash) => AppendAt(0, hash);

    // Appends a hash at level `at` and the parents it completes above it.
    private void AppendAt(int at, ReadOnlySpan<byte> hash)
    {
        _levels[at].Add(hash);
        Span<byte> node = stackalloc byte[MerkleTree.HashSize];
        long index = _levels[at].Count - 1;
        for (int h = at; (index & 1) == 1; h++)
        {
            // Hashed on the stack and copied in: no array per inner node (about one per append). The two children
            // share a block (an even number of hashes each), which is not released while a hash is still to go in.
            HashColumn level = _levels[h];
            MerkleTree.NodeHash(level[level.Count - 2], level[level.Count - 1], node);
            _levels[h + 1].Add(node);
            index >>= 1;
        }
    }

    /// <summary>
    /// Appends whole 256-leaf blocks by their hashes at <see cref="KeptLevel"/> (32 bytes each, as a checkpoint saved them
    /// to level8.bin): the levels above are recomputed (one hash per 512 leaves and fewer), the levels below are left
    /// out, as if released, and read back from leaves.bin when a proof needs them. Open only, before any leaf is appended
    /// by its own hash. Costs about 1/256 of appending the leaves: a store of 100 million leaves hashed them all at every
    /// start, about a minute.
    /// </summary>
    public void AppendSavedBlocks(ReadOnlySpan<byte> keptHashes)
    {
        if (_storeDirectory is null)
        {
            throw new InvalidOperationException("This Merkle log has no leaves.bin to read the leaves of saved blocks back from.");
        }

        if (Size != _levels[KeptLevel].Count << KeptLevel)
        {
            throw new InvalidOperationException("Saved blocks are appended only before any leaf is appended by its hash.");
        }

        int count = keptHashes.Length / MerkleTree.HashSize;
        for (int i = 0; i < count; i++)
        {
            AppendAt(KeptLevel, keptHashes.Slice(i * MerkleTree.HashSize, MerkleTree.HashSize));
        }

        for (int h = 0; h < KeptLevel; h++)
        {
            _levels[h].AddAbsent((long)count << (KeptLevel - h));
        }
    }

    /// <summary>Copies the hashes at <see cref="KeptLevel"/> from index <paramref name="first"/> on into
    /// <paramref name="destination"/> (32 bytes each; what a checkpoint saves to level8.bin). Writer's lock.</summary>
    public void CopyKeptHashes(long first, Span<byte> destination)
    {
        for (int i = 0; i < destination.Length / MerkleTree.HashSize; i++)
        {
            _levels[KeptLevel][first + i].CopyTo(destination[(i * MerkleTree.HashSize)..]);
        }
    }

    /// <summary>Empties the log (an open that found level8.bin's hashes wrong starts again from leaves.bin). Open only:
    /// no reader may hold a size.</summary>
    public void Clear()
    {
        for (int h = 0; h < _levels.Length; h++)
        {
            _levels[h] = new HashColumn();
        }
    }

    /// <summary>
    /// Drops the blocks of the levels below <see cref="KeptLevel"/> whose leaves all lie among the first
    /// <paramref name="savedLeaves"/>, which leaves.bin must hold, flushed, for good (a checkpoint's manifest counts
    /// them: no later checkpoint rewrites them). Writer only.
    /// </summary>
    public void ReleaseSaved(long savedLeaves)
    {
        if (_storeDirectory is null)
        {
            throw new InvalidOperationException("This Merkle log has no leaves.bin to read released hashes back from.");
        }

        ArgumentOutOfRangeException.ThrowIfGreaterThan(savedLeaves, Size);
        for (int h = 0; h < KeptLevel; h++)
        {
            // A block of a level below KeptLevel spans a whole number of 256-leaf blocks (2048 × 2^h leaves), so every
            // hash dropped can be recomputed from 256 saved leaves.
            _levels[h].ReleaseBelow(savedLeaves >> h);
        }
    }

    /// <summary>Called with leaves.bin's path before a released block is read back from it; what it throws is taken as
    /// the read's own failure (tests).</summary>
    internal Action<string>? BeforeLeavesReadForTests { get; set; }

    /// <summary>RFC 9162 MTH of the first <paramref name="size"/> leaves.</summary>
    /// <exception cref="StoreCorruptException">A released hash was needed and leaves.bin is missing, short or does not
    /// make the hashes held for it.</exception>
    /// <exception cref="StoreUnavailableException">A released hash was needed and leaves.bin could not be read just then
    /// (too many open files, a device error); a later call may succeed.</exception>
    public byte[] Root(long size)
    {
        CheckSize(size);
        SavedBlocks? saved = null;
        return size == 0 ? MerkleTree.EmptyRoot() : Hash(0, size, ref saved);
    }

    /// <summary>RFC 9162 inclusion path of leaf <paramref name="index"/> in the tree of size <paramref name="size"/>.</summary>
    /// <exception cref="StoreCorruptException">As for <see cref="Root"/>.</exception>
    /// <exception cref="StoreUnavailableException">As for <see cref="Root"/>.</exception>
    public List<byte[]> InclusionProof(long index, long size)
    {
        CheckSize(size);
        if (index < 0 || index >= size)
        {
            throw new ArgumentOutOfRangeException(nameof(index), index, $"Leaf {index} is not in a tree of size {size}.");
        }

        var proof = new List<byte[]>();
        SavedBlocks? saved = null;
        Path(index, 0, size, proof, ref saved);
        return proof;
    }

    /// <summary>RFC 9162 consistency proof between sizes <paramref name="size1"/> ≤ <paramref name="size2"/>.</summary>
    /// <exception cref="StoreCorruptException">As for <see cref="Root"/>.</exception>
    /// <exception cref="StoreUnavailableException">As for <see cref="Root"/>.</exception>
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
            SavedBlocks? saved = null;
            SubProof(size1, 0, size2, true, proof, ref saved);
        }

        return proof;
    }

    // MTH(D[start : start + n]); start is always aligned to the largest power of two ≤ n in RFC 9162's recursion.
    private byte[] Hash(long start, long n, ref SavedBlocks? saved)
    {
        if ((n & (n - 1)) == 0)
        {
            int h = System.Numerics.BitOperations.Log2((ulong)n);
            byte[] hash = new byte[MerkleTree.HashSize];
            if (!_levels[h].TryRead(start >> h, hash))
            {
                // Released since the size was read, or before: the same hash, from leaves.bin.
                saved ??= new SavedBlocks(this);
                saved.Read(h, start >> h, hash);
            }

            return hash;
        }

        long k = MerkleTree.SplitPoint(n);
        return MerkleTree.NodeHash(Hash(start, k, ref saved), Hash(start + k, n - k, ref saved));
    }

    private void Path(long m, long start, long n, List<byte[]> proof, ref SavedBlocks? saved)
    {
        if (n == 1)
        {
            return;
        }

        long k = MerkleTree.SplitPoint(n);
        if (m < k)
        {
            Path(m, start, k, proof, ref saved);
            proof.Add(Hash(start + k, n - k, ref saved));
        }
        else
        {
            Path(m - k, start + k, n - k, proof, ref saved);
            proof.Add(Hash(start, k, ref saved));
        }
    }

    private void SubProof(long m, long start, long n, bool complete, List<byte[]> proof, ref SavedBlocks? saved)
    {
        if (m == n)
        {
            if (!complete)
            {
                proof.Add(Hash(start, n, ref saved));
            }

            return;
        }

        long k = MerkleTree.SplitPoint(n);
        if (m <= k)
        {
            SubProof(m, start, k, complete, proof, ref saved);
            proof.Add(Hash(start + k, n - k, ref saved));
        }
        else
        {
            SubProof(m - k, start + k, n - k, false, proof, ref saved);
            proof.Add(Hash(start, k, ref saved));
        }
    }

    private void CheckSize(long size)
    {
        if (size < 0 || size > Size)
        {
            throw new ArgumentOutOfRangeException(nameof(size), size, $"The log holds {Size} leaves.");
        }
    }

    /// <summary>
    /// One root or proof's recomputed 256-leaf blocks: the lower hashes of a proof lie in at most a few such blocks
    /// (around the leaf and around each size's right edge), so the last two read are kept for the call.
    /// </summary>
    private sealed class SavedBlocks(MerkleLog log)
    {
        private long _newestBlock = -1, _olderBlock = -1;
        private byte[]? _newest, _older;

        /// <summary>The hash at level <paramref name="h"/> (below <see cref="KeptLevel"/>), index <paramref name="index"/>,
        /// recomputed from leaves.bin.</summary>
        public void Read(int h, long index, Span<byte> destination)
        {
            long block = (index << h) >> KeptLevel;
            byte[] tree;
            if (block == _newestBlock)
            {
                tree = _newest!;
            }
            else if (block == _olderBlock)
            {
                tree = _older!;
            }
            else
            {
                tree = Recompute(block);
                (_older, _olderBlock) = (_newest, _newestBlock);
                (_newest, _newestBlock) = (tree, block);
            }

            // Level h of the block's tree starts after the 2^KeptLevel + ... + 2^(KeptLevel-h+1) hashes of the levels below.
            int levelStart = (2 << KeptLevel) - (2 << (KeptLevel - h));
            int at = levelStart + (int)(index - (block << (KeptLevel - h)));
            tree.AsSpan(at * MerkleTree.HashSize, MerkleTree.HashSize).CopyTo(destination);
        }

        private byte[] Recompute(long block)
        {
            if (log._storeDirectory is not { } directory)
            {
                throw new InvalidOperationException("A hash was released from a Merkle log without leaves.bin.");
            }

            Interlocked.Increment(ref log._blocksReadBack);
            byte[] tree = new byte[BlockTreeHashes * MerkleTree.HashSize];
            Checkpoint.ReadLeafHashes(directory, block << KeptLevel, tree.AsSpan(0, BlockLeaves * MerkleTree.HashSize), whileOpen: true, log.BeforeLeavesReadForTests);
            int from = 0, to = BlockLeaves;
            for (int count = BlockLeaves / 2; count >= 1; count /= 2)
            {
                for (int i = 0; i < count; i++)
                {
                    MerkleTree.NodeHash(
                        tree.AsSpan((from + (2 * i)) * MerkleTree.HashSize, MerkleTree.HashSize),
                        tree.AsSpan((from + (2 * i) + 1) * MerkleTree.HashSize, MerkleTree.HashSize),
                        tree.AsSpan((to + i) * MerkleTree.HashSize, MerkleTree.HashSize));
                }

                from = to;
                to += count;
            }

            // Its hash was made from the same leaves when they were appended and is held for good: a leaves.bin damaged
            // since (a bad disk, a hand) would otherwise give proofs that do not verify, without a word.
            Span<byte> held = stackalloc byte[MerkleTree.HashSize];
            if (!log._levels[KeptLevel].TryRead(block, held) || !held.SequenceEqual(tree.AsSpan(from * MerkleTree.HashSize, MerkleTree.HashSize)))
            {
                throw Checkpoint.LeavesDamagedAt(directory, block << KeptLevel, BlockLeaves);
            }

            return tree;
        }
    }

    private static HashColumn[] NewLevels()
    {
        var levels = new HashColumn[MerkleTree.MaxPathHashes];
        for (int h = 0; h < levels.Length; h++)
        {
            levels[h] = new HashColumn();
        }

        return levels;
    }

    /// <summary>32-byte hashes appended in order, stored in fixed blocks; the oldest blocks may be released.</summary>
    private sealed class HashColumn
    {
        private const int PerBlock = 2048;

        // Replaced, never resized in place, when full: a reader holding the old array finds the same blocks in it, or
        // a block since released, whose hashes it then recomputes. A released block leaves its null slot (8 bytes per
        // 2048 hashes).
        private byte[]?[] _blocks = new byte[]?[4];
        private int _blockCount;
        private int _firstHeld;

        // Hashes below this were never held (AddAbsent at open): readers recompute them as they do released ones. Set
        // only before the store serves a reader.
        private long _absentBelow;

        public long Count { get; private set; }

        public int BlocksHeld => Volatile.Read(ref _blockCount) - Volatile.Read(ref _firstHeld);

        /// <summary>Writer only: a hash not released.</summary>
        public ReadOnlySpan<byte> this[long index] =>
            (index >= _absentBelow ? _blocks[(int)(index / PerBlock)] : null) is { } block
                ? block.AsSpan((int)(index % PerBlock) * 32, 32)
                : throw new InvalidOperationException($"Hash {index} was released.");

        /// <summary>Copies hash <paramref name="index"/> (below <see cref="Count"/>) out, or returns false if its block
        /// was released.</summary>
        public bool TryRead(long index, Span<byte> destination)
        {
            // The block reference is read once: a release after that drops it from the column, not from this reader.
            byte[]? block = Volatile.Read(ref Volatile.Read(ref _blocks)[(int)(index / PerBlock)]);
            if (block is null || index < _absentBelow)
            {
                return false;
            }

            block.AsSpan((int)(index % PerBlock) * 32, 32).CopyTo(destination);
            return true;
        }

        public void Add(ReadOnlySpan<byte> hash)
        {
            int slot = (int)(Count % PerBlock);
            if (slot == 0)
            {
                if (_blockCount == _blocks.Length)
                {
                    byte[]?[] grown = new byte[]?[_blocks.Length * 2];
                    Array.Copy(_blocks, grown, _blockCount);
                    Volatile.Write(ref _blocks, grown);
                }

                Volatile.Write(ref _blocks[_blockCount], new byte[PerBlock * 32]);
                Volatile.Write(ref _blockCount, _blockCount + 1);
            }

            hash.CopyTo(_blocks[_blockCount - 1]!.AsSpan(slot * 32, 32));
            Count++;
        }

        /// <summary>Counts <paramref name="n"/> more hashes without holding them (saved blocks at open): whole blocks stay
        /// null, as released ones; a block they end inside is made, for the hashes appended after them. Only while no
        /// hash is held yet.</summary>
        public void AddAbsent(long n)
        {
            if (Count != _absentBelow)
            {
                throw new InvalidOperationException("Hashes are left out only before any is held.");
            }

            long end = Count + n;
            int whole = (int)(end / PerBlock), blocks = (int)((end + PerBlock - 1) / PerBlock);
            if (blocks > _blocks.Length)
            {
                byte[]?[] grown = new byte[]?[Math.Max(blocks, _blocks.Length * 2)];
                Array.Copy(_blocks, grown, _blockCount);
                _blocks = grown;
            }

            Array.Clear(_blocks, 0, whole);
            if (blocks > whole)
            {
                _blocks[whole] ??= new byte[PerBlock * 32];
            }

            _blockCount = blocks;
            _firstHeld = whole;
            Count = end;
            _absentBelow = end;
        }

        /// <summary>Releases every block whose hashes all lie below index <paramref name="hashes"/>.</summary>
        public void ReleaseBelow(long hashes)
        {
            int end = (int)Math.Min(hashes / PerBlock, _blockCount);
            for (; _firstHeld < end; _firstHeld++)
            {
                Volatile.Write(ref _blocks[_firstHeld], null);
            }
        }
    }
}
