using MegaNet.Core.Transparency;
using Xunit.Abstractions;
using static MegaNet.Store.Tests.StoreTestKit;

namespace MegaNet.Store.Tests;

/// <summary>
/// level8.bin: each checkpoint saves the Merkle tree's level-8 hashes (one per 256 leaves) before the manifest, and an
/// open reads them instead of hashing every leaf of leaves.bin again, only when they make the manifest's root; a file
/// that is missing, short or changed costs the full hash of leaves.bin and is written whole at the next checkpoint.
/// </summary>
public sealed class SavedLevelsTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = NewDirectory();
    private readonly Random _random = new(23);
    private readonly byte[] _recipient = Bytes(new Random(5), 32);
    private readonly List<PutReceipt> _receipts = [];
    private readonly Dictionary<long, byte[]> _roots = [];

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string StoreDirectory => Path.Combine(_dir, "store");

    private string LevelsFile => Path.Combine(StoreDirectory, "level8.bin");

    private static StoreOptions Quiet(string dir)
    {
        StoreOptions options = Options(dir);
        options.CheckpointInterval = TimeSpan.FromDays(1);
        return options;
    }

    private async Task PutAsync(FasterEnvelopeStore store, int count)
    {
        var puts = Enumerable.Range(0, count).Select(_ => new PutRequest(Bytes(_random, 64), _recipient, DateTimeOffset.UtcNow.AddDays(1))).ToList();
        _receipts.AddRange((await store.PutManyAsync(puts)).Select(r => r.Receipt!));
    }

    /// <summary>Two checkpoints (1,000 and 2,000 leaves) and a clean close (3,000), noting the roots of a few sizes.</summary>
    private async Task<StoreOptions> ClosedStoreAsync()
    {
        StoreOptions options = Quiet(_dir);
        await using FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options);
        for (int checkpoint = 0; checkpoint < 3; checkpoint++)
        {
            await PutAsync(store, 500);
            await PutAsync(store, 500);
            if (checkpoint < 2)
            {
                await store.CheckpointAsync();
            }
        }

        NoteRoots(store);
        return options;
    }

    private void NoteRoots(FasterEnvelopeStore store)
    {
        foreach (long size in new long[] { 1, 255, 256, 257, 767, 768, 1000, 2047, 2048, 2049, store.TreeSize - 1, store.TreeSize }.Where(s => s <= store.TreeSize))
        {
            _roots[size] = store.GetRootHash(size);
        }
    }

    /// <summary>Every noted root, and inclusion proofs (of old leaves in saved blocks, and of the last ones) and
    /// consistency proofs to the whole tree that verify against them.</summary>
    private void ExpectProofs(FasterEnvelopeStore store)
    {
        Assert.Equal(_receipts.Count, store.TreeSize);
        byte[] whole = store.GetRootHash(store.TreeSize);
        foreach ((long size, byte[] root) in _roots)
        {
            Assert.Equal(root, store.GetRootHash(size));
            foreach (PutReceipt r in new[] { _receipts[0], _receipts[(int)(size / 3)], _receipts[(int)size - 1] })
            {
                Assert.True(MerkleTree.VerifyInclusion(MerkleTree.LeafHash(r.EnvelopeId), r.LogIndex, size, store.GetInclusionProof(r.LogIndex, size), root), $"leaf {r.LogIndex} in {size}");
            }

            Assert.True(MerkleTree.VerifyConsistency(size, store.TreeSize, root, whole, store.GetConsistencyProof(size, store.TreeSize)), $"{size} → {store.TreeSize}");
        }
    }

    [Fact]
    public async Task An_open_reads_the_saved_level_hashes_instead_of_hashing_every_leaf()
    {
        StoreOptions options = await ClosedStoreAsync();
        // Appended at each checkpoint: one hash per whole 256-leaf block the last manifest counts.
        Assert.Equal((3000 >> 8) * 32, new FileInfo(LevelsFile).Length);
        var heard = new List<StoreRecoveryProgress>();
        options.RecoveryProgress = new Listener(heard.Add);

        await using FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options);

        Assert.Equal(StoreTreeLoad.SavedLevels, store.TreeLoad);
        // Only the leaves after the last whole block (3,000 = 11 × 256 + 184).
        Assert.Equal(3000 % 256, store.LeavesHashedAtOpen);
        StoreRecoveryProgress loaded = heard.Single(p => p.Stage == StoreRecoveryStage.Loaded);
        Assert.Equal((StoreTreeLoad.SavedLevels, 3000L % 256), (loaded.TreeLoad, loaded.LeavesHashed));
        Assert.True(store.MerkleLowerBlocksHeld <= MerkleLog.KeptLevel, $"{store.MerkleLowerBlocksHeld} lower-level blocks held after the open");
        ExpectProofs(store);
    }

    public enum Damage
    {
        Missing,
        Truncated,
        Changed,
    }

    [Theory]
    [InlineData(Damage.Missing, StoreTreeLoad.LevelsMissing)]
    [InlineData(Damage.Truncated, StoreTreeLoad.LevelsShort)]
    [InlineData(Damage.Changed, StoreTreeLoad.LevelsMismatch)]
    public async Task A_missing_short_or_changed_file_costs_the_full_hash_and_is_written_again_at_the_next_checkpoint(Damage damage, StoreTreeLoad expected)
    {
        StoreOptions options = await ClosedStoreAsync();
        switch (damage)
        {
            case Damage.Missing: // a store an older build wrote
                File.Delete(LevelsFile);
                break;
            case Damage.Truncated:
                using (var file = new FileStream(LevelsFile, FileMode.Open))
                {
                    file.SetLength(file.Length - 1);
                }

                break;
            case Damage.Changed:
                byte[] bytes = File.ReadAllBytes(LevelsFile);
                bytes[40] ^= 0x01;
                File.WriteAllBytes(LevelsFile, bytes);
                break;
        }

        await using (FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options))
        {
            Assert.Equal(expected, store.TreeLoad);
            Assert.True(store.LeavesHashedAtOpen >= 3000, $"{store.LeavesHashedAtOpen} leaves hashed");
            ExpectProofs(store);
            await PutAsync(store, 100);
            await store.CheckpointAsync();
        }

        Assert.Equal((3100 >> 8) * 32, new FileInfo(LevelsFile).Length);
        await using FasterEnvelopeStore reopened = await FasterEnvelopeStore.OpenAsync(options);
        Assert.Equal(StoreTreeLoad.SavedLevels, reopened.TreeLoad);
        Assert.Equal(3100 % 256, reopened.LeavesHashedAtOpen);
        ExpectProofs(reopened);
    }

    /// <summary>The open no longer hashes leaves.bin whole, so damage to it in a saved block is found by the proof that
    /// reads the block back (checked against its level-8 hash): an error naming the file, never a wrong proof.</summary>
    [Fact]
    public async Task Damage_to_leaves_bin_the_open_does_not_read_is_found_by_the_proof_that_needs_it()
    {
        StoreOptions options = await ClosedStoreAsync();
        string leaves = Path.Combine(StoreDirectory, "leaves.bin");
        byte[] bytes = File.ReadAllBytes(leaves);
        bytes[(300 * 32) + 5] ^= 0x01; // leaf 300, in the second 256-leaf block
        File.WriteAllBytes(leaves, bytes);

        await using FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options);
        Assert.Equal(StoreTreeLoad.SavedLevels, store.TreeLoad);

        StoreCorruptException e = Assert.Throws<StoreCorruptException>(() => store.GetInclusionProof(300, store.TreeSize));
        Assert.Contains(leaves, e.Message, StringComparison.Ordinal);
        Assert.Throws<StoreCorruptException>(() => store.GetConsistencyProof(257, store.TreeSize));
        // Proofs that need no hash of that block still verify.
        byte[] root = store.GetRootHash(store.TreeSize);
        PutReceipt last = _receipts[^1];
        Assert.True(MerkleTree.VerifyInclusion(MerkleTree.LeafHash(last.EnvelopeId), last.LogIndex, store.TreeSize, store.GetInclusionProof(last.LogIndex, store.TreeSize), root));
        PutReceipt first = _receipts[0];
        Assert.True(MerkleTree.VerifyInclusion(MerkleTree.LeafHash(first.EnvelopeId), 0, store.TreeSize, store.GetInclusionProof(0, store.TreeSize), root));
    }

    /// <summary>A crash after level8.bin was extended and flushed, before the manifest that counts it: the open takes the
    /// hashes the old manifest counts (the rest are ignored), replays the log after it, and the next checkpoint writes
    /// on from there.</summary>
    [Fact]
    public async Task A_crash_between_the_saved_levels_and_the_manifest_opens_from_the_old_manifest()
    {
        string copy = NewDirectory();
        try
        {
            StoreOptions options = Quiet(_dir);
            await using (FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options))
            {
                await PutAsync(store, 1000);
                await store.CheckpointAsync();
                await PutAsync(store, 700);
                NoteRoots(store);
                long before = 0;
                store.BeforeManifestForTests = () =>
                {
                    before = new FileInfo(LevelsFile).Length;
                    CopyStoreFiles(store.StoreDirectory, Path.Combine(copy, "store"));
                };
                await store.CheckpointAsync();
                store.BeforeManifestForTests = null;
                Assert.Equal((1700 >> 8) * 32, before);
            }

            // The image's manifest counts 1,000 leaves (3 blocks); its level8.bin holds 6.
            Assert.Equal(1000, Checkpoint.Read(Path.Combine(copy, "store"))!.LeafCount);
            StoreOptions crashed = Quiet(copy);
            await using (FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(crashed))
            {
                Assert.Equal(StoreTreeLoad.SavedLevels, store.TreeLoad);
                Assert.Equal(1000 % 256, store.LeavesHashedAtOpen);
                output.WriteLine($"crash image: {store.TreeSize} leaves, {store.LeavesHashedAtOpen} hashed at the open");
                ExpectProofs(store);
                await PutAsync(store, 100);
                await store.CheckpointAsync();
            }

            Assert.Equal((1800 >> 8) * 32, new FileInfo(Path.Combine(copy, "store", "level8.bin")).Length);
            await using FasterEnvelopeStore reopened = await FasterEnvelopeStore.OpenAsync(crashed);
            Assert.Equal(StoreTreeLoad.SavedLevels, reopened.TreeLoad);
            ExpectProofs(reopened);
        }
        finally
        {
            Directory.Delete(copy, recursive: true);
        }
    }

    private sealed class Listener(Action<StoreRecoveryProgress> heard) : IProgress<StoreRecoveryProgress>
    {
        public void Report(StoreRecoveryProgress value) => heard(value);
    }
}
