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

    [Fact]
    public void Roots_and_proofs_match_the_naive_rfc9162_on_random_sizes()
    {
        int seed = RandomNumberGenerator.GetInt32(int.MaxValue);
        output.WriteLine($"seed {seed}");
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
        int seed = RandomNumberGenerator.GetInt32(int.MaxValue);
        output.WriteLine($"seed {seed}");
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
}
