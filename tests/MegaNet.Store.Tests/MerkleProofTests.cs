using System.Security.Cryptography;
using MegaNet.Core.Transparency;
using Xunit.Abstractions;

namespace MegaNet.Store.Tests;

/// <summary>Proofs from the store's tree against a deliberately naive RFC 9162 implementation (recursive, from the RFC text).</summary>
public sealed class MerkleProofTests(ITestOutputHelper output)
{
    private static byte[] Mth(List<byte[]> d)
    {
        if (d.Count == 0)
        {
            return SHA256.HashData([]);
        }

        if (d.Count == 1)
        {
            return SHA256.HashData([0x00, .. d[0]]);
        }

        int k = 1;
        while (k * 2 < d.Count)
        {
            k *= 2;
        }

        return SHA256.HashData([0x01, .. Mth(d[..k]), .. Mth(d[k..])]);
    }

    private static List<byte[]> NaivePath(int m, List<byte[]> d)
    {
        if (d.Count <= 1)
        {
            return [];
        }

        int k = 1;
        while (k * 2 < d.Count)
        {
            k *= 2;
        }

        return m < k ? [.. NaivePath(m, d[..k]), Mth(d[k..])] : [.. NaivePath(m - k, d[k..]), Mth(d[..k])];
    }

    private static List<byte[]> NaiveSubProof(int m, List<byte[]> d, bool b)
    {
        if (m == d.Count)
        {
            return b ? [] : [Mth(d)];
        }

        int k = 1;
        while (k * 2 < d.Count)
        {
            k *= 2;
        }

        return m <= k ? [.. NaiveSubProof(m, d[..k], b), Mth(d[k..])] : [.. NaiveSubProof(m - k, d[k..], false), Mth(d[..k])];
    }

    [Theory]
    [InlineData(2L, 1L)]
    [InlineData(3L, 2L)]
    [InlineData(4L, 2L)]
    [InlineData(257L, 256L)]
    [InlineData((1L << 62) + 1, 1L << 62)] // rounded up to 2^63, a negative long when cast before the shift
    [InlineData(long.MaxValue, 1L << 62)]
    public void The_split_point_is_the_largest_power_of_two_below_the_size(long size, long expected) =>
        Assert.Equal(expected, MerkleTree.SplitPoint(size));

    /// <summary>The test vectors Certificate Transparency's own suites use (leaves d0..d7 and the roots, audit paths and
    /// consistency proofs published with them), so the tree is anchored to the ecosystem's, not only to a naive
    /// implementation written here from the same reading of the RFC.</summary>
    [Fact]
    public void The_certificate_transparency_test_vectors_hold()
    {
        string[] leaves = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"];
        string[] roots =
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
        ];
        var log = new MegaNet.Store.MerkleLog();
        Assert.Equal("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", Convert.ToHexStringLower(MerkleTree.EmptyRoot()));
        for (int size = 1; size <= leaves.Length; size++)
        {
            log.Append(Convert.FromHexString(leaves[size - 1]));
            Assert.Equal(roots[size - 1], Convert.ToHexStringLower(log.Root(size)));
        }

        byte[] Root(int size) => Convert.FromHexString(roots[size - 1]);
        static byte[][] Hashes(params string[] hex) => [.. hex.Select(Convert.FromHexString)];
        byte[][] path0 = Hashes("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7", "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4");
        byte[][] path5 = Hashes("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b", "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7");
        Assert.Equal(path0, log.InclusionProof(0, 8));
        Assert.Equal(path5, log.InclusionProof(5, 8));
        Assert.True(MerkleTree.VerifyInclusion(MerkleTree.LeafHash(Convert.FromHexString(leaves[0])), 0, 8, path0, Root(8)));
        Assert.True(MerkleTree.VerifyInclusion(MerkleTree.LeafHash(Convert.FromHexString(leaves[5])), 5, 8, path5, Root(8)));

        // From size 1 the consistency proof is leaf 0's audit path.
        (int From, int To, byte[][] Proof)[] consistency =
        [
            (1, 8, path0),
            (6, 8, Hashes("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a", "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")),
            (2, 5, Hashes("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e", "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b")),
        ];
        foreach ((int from, int to, byte[][] proof) in consistency)
        {
            Assert.Equal(proof, log.ConsistencyProof(from, to));
            Assert.True(MerkleTree.VerifyConsistency(from, to, Root(from), Root(to), proof), $"consistency {from} → {to}");
        }
    }

    [Fact]
    public void Roots_and_proofs_match_the_naive_rfc9162_on_random_sizes()
    {
        int seed = StoreTestKit.Seed();
        output.WriteLine($"seed {seed} (replay with MEGANET_TEST_SEED={seed})");
        var random = new Random(seed);
        var log = new MegaNet.Store.MerkleLog();
        var leaves = new List<byte[]>();
        var sizes = new SortedSet<int> { 1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 1023, 1024, 1025, 2000 };
        while (sizes.Count < 40)
        {
            sizes.Add(random.Next(1, 2001));
        }

        foreach (int size in sizes)
        {
            while (leaves.Count < size)
            {
                byte[] leaf = new byte[32];
                random.NextBytes(leaf);
                leaves.Add(leaf);
                log.Append(leaf);
            }

            List<byte[]> d = leaves[..size];
            byte[] root = Mth(d);
            Assert.Equal(root, log.Root(size));
            foreach (int m in new[] { 0, size - 1, random.Next(size), random.Next(size) })
            {
                List<byte[]> proof = log.InclusionProof(m, size);
                Assert.Equal(NaivePath(m, d), proof);
                Assert.True(MerkleTree.VerifyInclusion(MerkleTree.LeafHash(d[m]), m, size, proof, root));
                Assert.True(MerkleTree.VerifyInclusion(MerkleTree.LeafHash(d[m]), m, size, Concatenated(proof), root));
                Assert.False(MerkleTree.VerifyInclusion(MerkleTree.LeafHash(d[(m + 1) % size]), m, size, proof, root) && size > 1);
            }

            foreach (int first in new[] { 1, size, random.Next(1, size + 1) })
            {
                List<byte[]> proof = log.ConsistencyProof(first, size);
                Assert.Equal(first == size ? [] : NaiveSubProof(first, d, true), proof);
                Assert.True(MerkleTree.VerifyConsistency(first, size, Mth(leaves[..first]), root, proof), $"consistency {first} → {size}");
                Assert.True(MerkleTree.VerifyConsistency(first, size, Mth(leaves[..first]), root, Concatenated(proof)), $"consistency {first} → {size}, concatenated");
                if (first < size && first > 0)
                {
                    byte[] wrong = (byte[])root.Clone();
                    wrong[0] ^= 1;
                    Assert.False(MerkleTree.VerifyConsistency(first, size, Mth(leaves[..first]), wrong, proof));
                }
            }

            // Every tree extends the empty one, but only a size-0 head with the empty tree's root is that one.
            byte[] notEmpty = MerkleTree.EmptyRoot();
            notEmpty[0] ^= 1;
            Assert.True(MerkleTree.VerifyConsistency(0, size, MerkleTree.EmptyRoot(), root, Array.Empty<byte[]>()));
            Assert.False(MerkleTree.VerifyConsistency(0, size, notEmpty, root, Array.Empty<byte[]>()));
            Assert.False(MerkleTree.VerifyConsistency(0, 0, notEmpty, notEmpty, ReadOnlySpan<byte>.Empty));
        }
    }

    /// <summary>Every byte of a proof counts: a flipped bit anywhere, a hash dropped, added or cut short, a path that is
    /// not whole hashes or longer than any tree allows, each gives false (and no exception), in both forms of the path.</summary>
    [Fact]
    public void Any_change_to_a_proof_makes_it_false()
    {
        int seed = StoreTestKit.Seed();
        output.WriteLine($"seed {seed} (replay with MEGANET_TEST_SEED={seed})");
        var random = new Random(seed);
        var log = new MerkleLog();
        var leaves = new List<byte[]>();
        for (int i = 0; i < 1_500; i++)
        {
            byte[] leaf = new byte[32];
            random.NextBytes(leaf);
            leaves.Add(leaf);
            log.Append(leaf);
        }

        for (int round = 0; round < 20; round++)
        {
            int size = random.Next(2, leaves.Count + 1), m = random.Next(size), first = random.Next(1, size);
            byte[] root = log.Root(size), firstRoot = log.Root(first), leafHash = MerkleTree.LeafHash(leaves[m]);
            List<byte[]> inclusion = log.InclusionProof(m, size), consistency = log.ConsistencyProof(first, size);
            bool Includes(List<byte[]> proof) =>
                MerkleTree.VerifyInclusion(leafHash, m, size, proof, root) | MerkleTree.VerifyInclusion(leafHash, m, size, Concatenated(proof), root);
            bool Extends(List<byte[]> proof) =>
                MerkleTree.VerifyConsistency(first, size, firstRoot, root, proof) | MerkleTree.VerifyConsistency(first, size, firstRoot, root, Concatenated(proof));

            Assert.True(Includes(inclusion) & Extends(consistency), $"leaf {m}, heads {first} → {size}");
            foreach ((List<byte[]> proof, Func<List<byte[]>, bool> holds) in new[] { (inclusion, (Func<List<byte[]>, bool>)Includes), (consistency, Extends) })
            {
                int at = random.Next(proof.Count), bit = random.Next(8 * MerkleTree.HashSize);
                List<byte[]> flipped = [.. proof.Select(h => (byte[])h.Clone())];
                flipped[at][bit / 8] ^= (byte)(1 << (bit % 8));
                Assert.False(holds(flipped), $"bit {bit} of hash {at} flipped");
                Assert.False(holds(proof[..^1]), "last hash dropped");
                Assert.False(holds([.. proof, proof[0]]), "a hash added");
                Assert.False(holds([.. proof[..at], proof[at][..31], .. proof[(at + 1)..]]), $"hash {at} cut short");
                Assert.False(holds([.. proof[..at], null!, .. proof[(at + 1)..]]), $"hash {at} missing");
                Assert.False(holds([.. proof, .. Enumerable.Repeat(proof[0], MerkleTree.MaxPathHashes + 1 - proof.Count)]), "longer than any tree allows");
            }

            Assert.False(MerkleTree.VerifyInclusion(leafHash, m, size, [.. Concatenated(inclusion), 0], root), "a path of whole hashes and a byte");
            Assert.False(MerkleTree.VerifyConsistency(first, size, firstRoot, root, Concatenated(consistency)[..^1]), "a path a byte short of whole hashes");
        }
    }

    private static byte[] Concatenated(List<byte[]> proof) => [.. proof.SelectMany(hash => hash ?? [])];

    [Fact]
    public async Task Proofs_read_without_the_writers_lock_verify_while_leaves_are_appended()
    {
        // The store's contract (FasterEnvelopeStore.CheckCompleteTreeSize): the writer appends under a lock, readers
        // read the size under it and compute roots and proofs without it.
        var log = new MerkleLog();
        var gate = new object();
        var leaves = new List<byte[]>();
        // Two seconds, then on until the readers checked more than 100 proofs (a loaded machine may give them little
        // of those two seconds), at most two minutes.
        using var stop = new CancellationTokenSource();
        Task writer = Task.Run(() =>
        {
            var random = new Random(5);
            while (!stop.IsCancellationRequested && leaves.Count < 3_000_000)
            {
                byte[] leaf = new byte[32];
                random.NextBytes(leaf);
                lock (gate)
                {
                    leaves.Add(leaf);
                    log.Append(leaf);
                }
            }
        });
        long proofs = 0;
        Task[] readers = Enumerable.Range(0, 2).Select(r => Task.Run(() =>
        {
            var random = new Random(r);
            while (!stop.IsCancellationRequested)
            {
                long size;
                byte[] leaf;
                int m;
                lock (gate)
                {
                    size = log.Size;
                    if (size < 2)
                    {
                        continue;
                    }

                    m = random.Next((int)size);
                    leaf = leaves[m];
                }

                long first = random.NextInt64(1, size + 1);
                byte[] root = log.Root(size);
                Assert.True(MerkleTree.VerifyInclusion(MerkleTree.LeafHash(leaf), m, size, log.InclusionProof(m, size), root), $"inclusion {m} in {size}");
                Assert.True(MerkleTree.VerifyConsistency(first, size, log.Root(first), root, log.ConsistencyProof(first, size)), $"consistency {first} → {size}");
                Interlocked.Increment(ref proofs);
            }
        })).ToArray();
        await Task.Delay(TimeSpan.FromSeconds(2));
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (Interlocked.Read(ref proofs) <= 100 && clock.Elapsed < TimeSpan.FromMinutes(2) && !readers.Any(r => r.IsCompleted))
        {
            await Task.Delay(50);
        }

        await stop.CancelAsync();
        await Task.WhenAll([writer, .. readers]);
        output.WriteLine($"{proofs} proofs checked against {leaves.Count} leaves appended meanwhile");
        Assert.True(proofs > 100, $"only {proofs} proofs were checked");
    }

    [Fact]
    public void SpanHashesMatchTheArrayOnesAndAppendsAllocateNoArrayPerHash()
    {
        byte[] leaf = RandomNumberGenerator.GetBytes(300), left = RandomNumberGenerator.GetBytes(32), right = RandomNumberGenerator.GetBytes(32);
        Span<byte> hash = stackalloc byte[MerkleTree.HashSize];
        foreach (int length in new[] { 0, 32, 256, 257, 300 })
        {
            MerkleTree.LeafHash(leaf.AsSpan(0, length), hash);
            Assert.Equal(SHA256.HashData([0x00, .. leaf.AsSpan(0, length)]), hash.ToArray());
            Assert.Equal(hash.ToArray(), MerkleTree.LeafHash(leaf.AsSpan(0, length)));
        }

        MerkleTree.NodeHash(left, right, hash);
        Assert.Equal(SHA256.HashData([0x01, .. left, .. right]), hash.ToArray());
        Assert.Equal(hash.ToArray(), MerkleTree.NodeHash(left, right));
        Assert.Throws<ArgumentException>(() => MerkleTree.NodeHash(left, right, new byte[31]));

        // Appends write hashes into the log's 64 KiB blocks: 84 bytes per leaf here (42 blocks for 2^15 leaves, the upper
        // levels' mostly empty), against about 110 more when each leaf and inner node hash was an array of its own.
        var log = new MerkleLog();
        byte[] id = RandomNumberGenerator.GetBytes(32);
        log.Append(id);
        const int Leaves = 1 << 15;
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < Leaves; i++)
        {
            id[0] = (byte)i;
            log.Append(id);
        }

        long perLeaf = (GC.GetAllocatedBytesForCurrentThread() - before) / Leaves;
        output.WriteLine($"{perLeaf} B allocated per append");
        Assert.True(perLeaf < 100, $"{perLeaf} B allocated per append");
    }

    // A log of 3,000 random leaf hashes (seeded) whose lower levels a checkpoint to directory's leaves.bin released.
    private static (MerkleLog Log, byte[] LeafHashes) ReleasedLog(string directory, int seed)
    {
        var log = new MerkleLog(directory);
        byte[] leafHashes = new byte[3000 * MerkleTree.HashSize];
        new Random(seed).NextBytes(leafHashes);
        for (int i = 0; i < 3000; i++)
        {
            log.AppendLeafHash(leafHashes.AsSpan(i * MerkleTree.HashSize, MerkleTree.HashSize));
        }

        Checkpointed(log, directory, leafHashes, 0, 3000);
        return (log, leafHashes);
    }

    /// <summary>Saves leaves <paramref name="from"/> to <paramref name="to"/> to leaves.bin as a checkpoint does, then lets
    /// the log release their lower levels.</summary>
    private static void Checkpointed(MerkleLog log, string directory, byte[] leafHashes, long from, long to)
    {
        Checkpoint.AppendLeaves(directory, from, to, (hashes, first) => leafHashes.AsSpan((int)(first * MerkleTree.HashSize), hashes.Length).CopyTo(hashes));
        log.ReleaseSaved(to);
    }

    /// <summary>leaves.bin is written a chunk at a time (a checkpoint after more than 67 million leaves could not make
    /// the one array it was written from): what reads back is what was given, across chunk edges, after a torn tail.</summary>
    [Fact]
    public void Leaf_hashes_appended_in_chunks_read_back_whole()
    {
        int seed = StoreTestKit.Seed();
        output.WriteLine($"seed {seed} (replay with MEGANET_TEST_SEED={seed})");
        string directory = StoreTestKit.NewDirectory();
        try
        {
            long total = Checkpoint.AppendChunkLeaves * 2 + Checkpoint.AppendChunkLeaves / 2 + 7;
            byte[] leafHashes = new byte[total * MerkleTree.HashSize];
            new Random(seed).NextBytes(leafHashes);
            var asked = new List<(long First, int Leaves)>();
            void Append(long from, long to) => Checkpoint.AppendLeaves(directory, from, to, (hashes, first) =>
            {
                asked.Add((first, hashes.Length / MerkleTree.HashSize));
                leafHashes.AsSpan((int)(first * MerkleTree.HashSize), hashes.Length).CopyTo(hashes);
            });

            Append(0, 100);
            // A torn append past the count the next checkpoint starts from: overwritten.
            File.AppendAllBytes(Path.Combine(directory, "leaves.bin"), new byte[1000]);
            Append(100, total);
            Assert.Equal([(0L, 100), (100L, Checkpoint.AppendChunkLeaves), (100L + Checkpoint.AppendChunkLeaves, Checkpoint.AppendChunkLeaves),
                (100L + 2 * Checkpoint.AppendChunkLeaves, (int)(total - 100 - 2 * Checkpoint.AppendChunkLeaves))], asked);
            Assert.Equal(total * MerkleTree.HashSize, new FileInfo(Path.Combine(directory, "leaves.bin")).Length);
            byte[] read = new byte[leafHashes.Length];
            Checkpoint.ReadLeafHashes(directory, 0, read);
            Assert.Equal(leafHashes, read);
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    /// <summary>A log rebuilt as an open does from level8.bin (whole 256-leaf blocks by their level-8 hashes, in two
    /// calls, lower levels never held) and the leaves after them gives the roots and proofs of one that holds every level,
    /// reading the left-out hashes back from leaves.bin (checked against the level-8 hashes), and takes appends and
    /// releases after that; cut at 1, 8 and 9 blocks (inside and at the end of a level-0 block of 2048 leaves), 16, and at
    /// random.</summary>
    [Fact]
    public void A_log_rebuilt_from_saved_level_hashes_gives_the_same_roots_and_proofs()
    {
        int seed = StoreTestKit.Seed();
        output.WriteLine($"seed {seed} (replay with MEGANET_TEST_SEED={seed})");
        var random = new Random(seed);
        string directory = StoreTestKit.NewDirectory();
        try
        {
            int total = 9000 + random.Next(0, 4000);
            var reference = new MerkleLog();
            byte[] leafHashes = new byte[total * MerkleTree.HashSize];
            random.NextBytes(leafHashes);
            for (int i = 0; i < total; i++)
            {
                reference.AppendLeafHash(leafHashes.AsSpan(i * MerkleTree.HashSize, MerkleTree.HashSize));
            }

            Checkpoint.AppendLeaves(directory, 0, total, (hashes, first) => leafHashes.AsSpan((int)(first * MerkleTree.HashSize), hashes.Length).CopyTo(hashes));
            byte[] kept = new byte[(total >> MerkleLog.KeptLevel) * MerkleTree.HashSize];
            reference.CopyKeptHashes(0, kept);
            foreach (int blocks in new[] { 1, 8, 9, 16, random.Next(2, total >> MerkleLog.KeptLevel) })
            {
                var log = new MerkleLog(directory);
                int split = random.Next(0, blocks + 1);
                log.AppendSavedBlocks(kept.AsSpan(0, split * MerkleTree.HashSize));
                log.AppendSavedBlocks(kept.AsSpan(split * MerkleTree.HashSize, (blocks - split) * MerkleTree.HashSize));
                Assert.Equal(blocks << MerkleLog.KeptLevel, log.Size);
                // The leaves after the saved blocks, as an open hashes them, a checkpoint's release, and later appends.
                int opened = Math.Min(total, (blocks << MerkleLog.KeptLevel) + random.Next(0, 3000));
                for (int i = (int)log.Size; i < total; i++)
                {
                    log.AppendLeafHash(leafHashes.AsSpan(i * MerkleTree.HashSize, MerkleTree.HashSize));
                    if (i + 1 == opened)
                    {
                        log.ReleaseSaved(opened);
                    }
                }

                var sizes = new SortedSet<long> { 1, 2, 255, 256, 257, (blocks << MerkleLog.KeptLevel) - 1, blocks << MerkleLog.KeptLevel, opened, total };
                while (sizes.Count < 30)
                {
                    sizes.Add(random.NextInt64(1, total + 1));
                }

                foreach (long treeSize in sizes)
                {
                    byte[] root = reference.Root(treeSize);
                    Assert.Equal(root, log.Root(treeSize));
                    foreach (long m in new[] { 0, treeSize - 1, random.NextInt64(treeSize), random.NextInt64(Math.Min(treeSize, blocks << MerkleLog.KeptLevel)) })
                    {
                        Assert.Equal(reference.InclusionProof(m, treeSize), log.InclusionProof(m, treeSize));
                    }

                    foreach (long first in new[] { 1, treeSize, random.NextInt64(1, treeSize + 1) })
                    {
                        Assert.Equal(reference.ConsistencyProof(first, treeSize), log.ConsistencyProof(first, treeSize));
                    }
                }

                Assert.True(log.BlocksReadBack > 0, "no left-out hash was read back from leaves.bin");
            }
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    /// <summary>A log whose lower levels were released after checkpoints (read back from leaves.bin) against one that
    /// holds them all and the naive RFC 9162: roots, inclusion and consistency proofs at 0, 1, powers of two and their
    /// neighbours, around each checkpoint's edge, and at random sizes; checkpoints on and beside the block edges of every
    /// released level (2048 × 2^h leaves) and at random.</summary>
    [Fact]
    public void Roots_and_proofs_match_with_the_lower_levels_read_back_from_leaves_bin()
    {
        int seed = StoreTestKit.Seed();
        output.WriteLine($"seed {seed} (replay with MEGANET_TEST_SEED={seed})");
        var random = new Random(seed);
        string directory = StoreTestKit.NewDirectory();
        try
        {
            var log = new MerkleLog(directory);
            var reference = new MerkleLog();
            int total = (2048 << (MerkleLog.KeptLevel - 1)) + 2048 + random.Next(1, 3000);
            var leaves = new List<byte[]>(total);
            byte[] leafHashes = new byte[total * MerkleTree.HashSize];
            var checkpoints = new SortedSet<long> { 1, 255, 256, 257, 2047, 2048, 2049, 4097, 8192, (2048 << 6) + 1, (2048 << 7) - 1, 2048 << 7, total };
            while (checkpoints.Count < 22)
            {
                checkpoints.Add(random.Next(1, total));
            }

            long saved = 0;
            void AppendUpTo(long size)
            {
                while (leaves.Count < size)
                {
                    byte[] leaf = new byte[32];
                    random.NextBytes(leaf);
                    MerkleTree.LeafHash(leaf, leafHashes.AsSpan(leaves.Count * MerkleTree.HashSize, MerkleTree.HashSize));
                    leaves.Add(leaf);
                    log.Append(leaf);
                    reference.Append(leaf);
                }
            }

            foreach (long checkpoint in checkpoints)
            {
                AppendUpTo(Math.Max(checkpoint, leaves.Count));
                Checkpointed(log, directory, leafHashes, saved, checkpoint);
                saved = checkpoint;
                // Leaves after the checkpoint, not saved yet: held in memory only.
                AppendUpTo(Math.Min(total, leaves.Count + random.Next(0, 700)));
                long size = log.Size;
                var sizes = new SortedSet<long> { 0, 1, 2, 3, saved - 1, saved, saved + 1, size - 1, size };
                for (long power = 1; power <= size; power *= 2)
                {
                    sizes.UnionWith([power - 1, power, power + 1]);
                }

                // Out-of-range sizes go first, and the set is filled to at most every size there is: a log of fewer
                // than 50 leaves (a few draws in 16 after the first checkpoint, at 1) looped here forever before.
                sizes.RemoveWhere(s => s < 0 || s > size);
                while (sizes.Count < Math.Min(50, size + 1))
                {
                    sizes.Add(random.NextInt64(0, size + 1));
                }

                foreach (long treeSize in sizes)
                {
                    byte[] root = reference.Root(treeSize);
                    Assert.Equal(root, log.Root(treeSize));
                    if (treeSize <= 3000)
                    {
                        Assert.Equal(Mth(leaves[..(int)treeSize]), root);
                    }

                    if (treeSize == 0)
                    {
                        continue;
                    }

                    foreach (long m in new[] { 0, treeSize - 1, random.NextInt64(treeSize), Math.Max(0, Math.Min(treeSize, saved) - 1 - random.Next(256)) })
                    {
                        List<byte[]> proof = log.InclusionProof(m, treeSize);
                        Assert.Equal(reference.InclusionProof(m, treeSize), proof);
                        Assert.True(MerkleTree.VerifyInclusion(leafHashes.AsSpan((int)m * MerkleTree.HashSize, MerkleTree.HashSize), m, treeSize, proof, root), $"inclusion {m} in {treeSize}");
                    }

                    foreach (long first in new[] { 1, treeSize, random.NextInt64(1, treeSize + 1), Math.Clamp(saved, 1, treeSize) })
                    {
                        List<byte[]> proof = log.ConsistencyProof(first, treeSize);
                        Assert.Equal(reference.ConsistencyProof(first, treeSize), proof);
                        Assert.True(MerkleTree.VerifyConsistency(first, treeSize, reference.Root(first), root, proof), $"consistency {first} → {treeSize}");
                    }
                }
            }

            output.WriteLine($"{log.BlocksReadBack} blocks of 256 leaves read back; lower-level blocks held {log.LowerBlocksHeld}, {reference.LowerBlocksHeld} without releases");
            Assert.True(log.BlocksReadBack > 0, "no hash was read back from leaves.bin");
            Assert.True(log.LowerBlocksHeld <= MerkleLog.KeptLevel + 1, $"{log.LowerBlocksHeld} lower-level blocks held");
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    /// <summary>The levels below the kept one take memory only for the leaves since the last checkpoint (at most one
    /// partly filled 64 KiB block per level right after it), however many leaves were saved before: without the
    /// release, a million leaves held 1,000 blocks.</summary>
    [Fact]
    public void Lower_levels_held_stay_bounded_as_checkpoints_save_the_leaves()
    {
        string directory = StoreTestKit.NewDirectory();
        try
        {
            var log = new MerkleLog(directory);
            var random = new Random(11);
            const int PerCheckpoint = 10_000, Checkpoints = 100;
            byte[] leafHashes = new byte[PerCheckpoint * Checkpoints * MerkleTree.HashSize];
            random.NextBytes(leafHashes);
            int mostHeld = 0;
            for (int c = 0; c < Checkpoints; c++)
            {
                for (int i = c * PerCheckpoint; i < (c + 1) * PerCheckpoint; i++)
                {
                    log.AppendLeafHash(leafHashes.AsSpan(i * MerkleTree.HashSize, MerkleTree.HashSize));
                }

                Checkpointed(log, directory, leafHashes, (long)c * PerCheckpoint, (long)(c + 1) * PerCheckpoint);
                mostHeld = Math.Max(mostHeld, log.LowerBlocksHeld);
            }

            output.WriteLine($"at most {mostHeld} lower-level blocks held after a checkpoint, for {log.Size} leaves");
            Assert.True(mostHeld <= MerkleLog.KeptLevel, $"{mostHeld} lower-level blocks held after a checkpoint");

            // And what was released still proves: an old leaf against the newest root.
            long m = 123_457, size = log.Size;
            Assert.True(MerkleTree.VerifyInclusion(leafHashes.AsSpan((int)m * MerkleTree.HashSize, MerkleTree.HashSize), m, size, log.InclusionProof(m, size), log.Root(size)));
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    /// <summary>A released hash read back from a leaves.bin that was changed, cut short or removed since it was saved is
    /// an error naming the file, never a wrong proof.</summary>
    [Fact]
    public void A_damaged_or_missing_leaves_bin_makes_proofs_of_released_leaves_an_error_naming_it()
    {
        string directory = StoreTestKit.NewDirectory();
        try
        {
            (MerkleLog log, byte[] leafHashes) = ReleasedLog(directory, seed: 3);
            string path = Checkpoint.LeavesPath(directory);
            byte[] intact = File.ReadAllBytes(path);
            Assert.True(MerkleTree.VerifyInclusion(leafHashes.AsSpan(5 * MerkleTree.HashSize, MerkleTree.HashSize), 5, 3000, log.InclusionProof(5, 3000), log.Root(3000)));

            byte[] changed = (byte[])intact.Clone();
            changed[(10 * MerkleTree.HashSize) + 7] ^= 0x20;
            File.WriteAllBytes(path, changed);
            StoreCorruptException e = Assert.Throws<StoreCorruptException>(() => log.InclusionProof(5, 3000));
            Assert.Contains(path, e.Message, StringComparison.Ordinal);
            Assert.Contains("leaf hashes 0 to 255 do not make the Merkle hash held for them", e.Message, StringComparison.Ordinal);
            Assert.Throws<StoreCorruptException>(() => log.ConsistencyProof(101, 3000)); // leaf 100's hash is released too

            File.WriteAllBytes(path, intact[..(100 * MerkleTree.HashSize)]);
            e = Assert.Throws<StoreCorruptException>(() => log.InclusionProof(5, 3000));
            Assert.Contains(path, e.Message, StringComparison.Ordinal);
            Assert.Contains("it ends at leaf 100", e.Message, StringComparison.Ordinal);

            File.Delete(path);
            e = Assert.Throws<StoreCorruptException>(() => log.InclusionProof(5, 3000));
            Assert.Contains(path, e.Message, StringComparison.Ordinal);

            // The newest root needs nothing released (the right edge stays in memory).
            Assert.Equal(Mth(leafHashes, 3000), log.Root(3000));
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    /// <summary>A read of leaves.bin that fails for a reason that may pass (EMFILE here; ENOMEM or EIO alike) is no
    /// damage: the proof fails with <see cref="StoreUnavailableException"/> naming the file and the error, and the next
    /// one reads the file again and is given. At open the same failure still refuses the store, saying it may pass.</summary>
    [Fact]
    public void A_failed_read_of_leaves_bin_is_unavailability_and_a_later_proof_is_given()
    {
        string directory = StoreTestKit.NewDirectory();
        try
        {
            (MerkleLog log, byte[] leafHashes) = ReleasedLog(directory, seed: 4);
            string path = Checkpoint.LeavesPath(directory);
            int failures = 1;
            // What File.OpenHandle throws when the process is out of descriptors.
            log.BeforeLeavesReadForTests = leaves =>
            {
                if (failures-- > 0)
                {
                    throw new IOException($"Too many open files : '{leaves}'", 24);
                }
            };

            StoreUnavailableException e = Assert.Throws<StoreUnavailableException>(() => log.InclusionProof(5, 3000));
            Assert.Contains(path, e.Message, StringComparison.Ordinal);
            Assert.Contains("Too many open files", e.Message, StringComparison.Ordinal);
            Assert.Contains("no sign of damage", e.Message, StringComparison.Ordinal);
            Assert.IsType<IOException>(e.InnerException);

            Assert.True(MerkleTree.VerifyInclusion(leafHashes.AsSpan(5 * MerkleTree.HashSize, MerkleTree.HashSize), 5, 3000, log.InclusionProof(5, 3000), log.Root(3000)));
            Assert.Equal(Mth(leafHashes, 1000), log.Root(1000));

            // At open nothing can be served without the hashes: still refused, but not called damaged.
            byte[] hashes = new byte[256 * MerkleTree.HashSize];
            StoreCorruptException atOpen = Assert.Throws<StoreCorruptException>(() => Checkpoint.ReadLeafHashes(directory, 0, hashes, whileOpen: false,
                leaves => throw new IOException($"Too many open files : '{leaves}'", 24)));
            Assert.Contains($"The store's checkpoint file '{path}' could not be read", atOpen.Message, StringComparison.Ordinal);
            Assert.Contains("If that error passes", atOpen.Message, StringComparison.Ordinal);
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    // MTH over leaf hashes already made.
    private static byte[] Mth(byte[] leafHashes, int count)
    {
        var reference = new MerkleLog();
        for (int i = 0; i < count; i++)
        {
            reference.AppendLeafHash(leafHashes.AsSpan(i * MerkleTree.HashSize, MerkleTree.HashSize));
        }

        return reference.Root(count);
    }

    /// <summary>The store's contract with releases: the writer appends, saves to leaves.bin and releases under its lock;
    /// readers take a size under it and compute without it, so a release lands while they read. Each round waits for the
    /// readers to finish proofs after its release.</summary>
    [Fact]
    public async Task Proofs_read_without_the_writers_lock_verify_while_checkpoints_release_levels()
    {
        string directory = StoreTestKit.NewDirectory();
        try
        {
            var log = new MerkleLog(directory);
            var gate = new object();
            const int Rounds = 60, PerRound = 3_001;
            byte[] leafHashes = new byte[Rounds * PerRound * MerkleTree.HashSize];
            new Random(5).NextBytes(leafHashes);
            long proofs = 0;
            using var done = new CancellationTokenSource();
            Task[] readers = Enumerable.Range(0, 2).Select(r => Task.Run(() =>
            {
                var random = new Random(r);
                while (!done.IsCancellationRequested)
                {
                    long size;
                    lock (gate)
                    {
                        size = log.Size;
                    }

                    if (size < 2)
                    {
                        Thread.Sleep(1);
                        continue;
                    }

                    long m = random.NextInt64(size), first = random.NextInt64(1, size + 1);
                    byte[] root = log.Root(size);
                    Assert.True(MerkleTree.VerifyInclusion(leafHashes.AsSpan((int)m * MerkleTree.HashSize, MerkleTree.HashSize), m, size, log.InclusionProof(m, size), root), $"inclusion {m} in {size}");
                    Assert.True(MerkleTree.VerifyConsistency(first, size, log.Root(first), root, log.ConsistencyProof(first, size)), $"consistency {first} → {size}");
                    Interlocked.Increment(ref proofs);
                }
            })).ToArray();

            for (int round = 0; round < Rounds; round++)
            {
                lock (gate)
                {
                    for (int i = round * PerRound; i < (round + 1) * PerRound; i++)
                    {
                        log.AppendLeafHash(leafHashes.AsSpan(i * MerkleTree.HashSize, MerkleTree.HashSize));
                    }

                    Checkpointed(log, directory, leafHashes, (long)round * PerRound, (long)(round + 1) * PerRound);
                }

                // Waited for with sleeps and a deadline, not a Thread.Yield spin: the spin ran on one of xunit's two
                // worker threads and took a core from the readers it waited for on a loaded two-core machine, and had no
                // end if they never ran (CI once found a test thread of this project spinning for 16 minutes).
                long before = Interlocked.Read(ref proofs);
                bool progressed = SpinWait.SpinUntil(() => Interlocked.Read(ref proofs) >= before + 4 || readers.Any(r => r.IsCompleted), TimeSpan.FromMinutes(2));
                Assert.True(progressed, $"round {round}: the readers checked {Interlocked.Read(ref proofs) - before} proofs in 2 minutes (pool threads {ThreadPool.ThreadCount}, queued work items {ThreadPool.PendingWorkItemCount})");
            }

            await done.CancelAsync();
            await Task.WhenAll(readers);
            output.WriteLine($"{proofs} proofs checked, {log.BlocksReadBack} blocks read back");
            Assert.True(log.BlocksReadBack > 0, "no hash was read back from leaves.bin");
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }
    /// <summary>The store releases the lower levels once a checkpoint saved their leaves, and a reopened store, which
    /// streams leaves.bin, holds no more than that and gives the same roots and proofs that verify against them.</summary>
    [Fact]
    public async Task A_store_releases_saved_lower_levels_and_reopens_with_the_same_roots()
    {
        string directory = StoreTestKit.NewDirectory();
        try
        {
            StoreOptions options = StoreTestKit.Options(directory);
            options.CheckpointInterval = TimeSpan.FromDays(1);
            var random = new Random(17);
            byte[] recipient = StoreTestKit.Bytes(random, 32);
            var receipts = new List<PutReceipt>();
            var roots = new Dictionary<long, byte[]>();
            await using (FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options))
            {
                for (int checkpoint = 0; checkpoint < 3; checkpoint++)
                {
                    for (int group = 0; group < 4; group++)
                    {
                        var puts = Enumerable.Range(0, 750).Select(_ => new PutRequest(StoreTestKit.Bytes(random, 64), recipient, DateTimeOffset.UtcNow.AddDays(1))).ToList();
                        receipts.AddRange((await store.PutManyAsync(puts)).Select(r => r.Receipt!));
                    }

                    await store.CheckpointAsync();
                    output.WriteLine($"{store.TreeSize} leaves, {store.MerkleLowerBlocksHeld} lower-level blocks held");
                    Assert.True(store.MerkleLowerBlocksHeld <= MerkleLog.KeptLevel, $"{store.MerkleLowerBlocksHeld} lower-level blocks held after a checkpoint");
                }

                foreach (long size in new long[] { 1, 255, 256, 2047, 2048, 2049, 4097, 5000, store.TreeSize - 1, store.TreeSize })
                {
                    roots[size] = store.GetRootHash(size);
                }
            }

            await using (FasterEnvelopeStore reopened = await FasterEnvelopeStore.OpenAsync(options))
            {
                Assert.Equal(receipts.Count, reopened.TreeSize);
                output.WriteLine($"reopened: {reopened.MerkleLowerBlocksHeld} lower-level blocks held");
                Assert.True(reopened.MerkleLowerBlocksHeld <= MerkleLog.KeptLevel, $"{reopened.MerkleLowerBlocksHeld} lower-level blocks held after the open");
                foreach ((long size, byte[] root) in roots)
                {
                    Assert.Equal(root, reopened.GetRootHash(size));
                    PutReceipt old = receipts[(int)(size / 3)];
                    Assert.True(MerkleTree.VerifyInclusion(MerkleTree.LeafHash(old.EnvelopeId), old.LogIndex, size, reopened.GetInclusionProof(old.LogIndex, size), root), $"leaf {old.LogIndex} in {size}");
                    Assert.True(MerkleTree.VerifyConsistency(size, reopened.TreeSize, root, reopened.GetRootHash(reopened.TreeSize), reopened.GetConsistencyProof(size, reopened.TreeSize)), $"{size} → {reopened.TreeSize}");
                }
            }
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }
}
