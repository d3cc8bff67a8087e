using System.Security.Cryptography;
using MegaNet.Store;
using static MegaNet.Store.Tests.StoreTestKit;

namespace MegaNet.Store.Tests;

/// <summary>Damage a bad disk or a hand can leave in the store's files (a kill -9 leaves none: CrashTests): an open
/// that cannot trust what it reads stops with an error naming the file and changes nothing; damage where the log's
/// end is looked for costs at most what came after the newest commit record (docs/store.md).</summary>
public sealed class StoreDamageTests : IDisposable
{
    private readonly string _dir = NewDirectory();
    private readonly Random _random = new(7);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>What a crash leaves after 1,100 acknowledged puts in 11 groups, no checkpoint: the store writes a commit
    /// record to its commit file at the log's start and again at the sixth group's commit, so recovery starts from the
    /// sixth group's end. Which commits write one is set here, not left to the clock: a record is due a second after the
    /// one before, and a loaded machine's groups seven to eleven took longer than that, so that one of theirs wrote a
    /// record past the damage the test below places after the newest record (it then failed as if that damage had been
    /// before it).</summary>
    private async Task<(string Copy, List<PutReceipt> Receipts)> CrashImageAsync()
    {
        StoreOptions options = Options(_dir);
        options.CheckpointInterval = TimeSpan.FromDays(1);
        options.CheckpointLogBytes = 1L << 30;
        byte[] recipient = Bytes(_random, 32);
        var receipts = new List<PutReceipt>();
        string copy = NewDirectory();
        await using FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options);
        store.CommitRecordEveryForTests = TimeSpan.FromDays(1);
        for (int group = 0; group < 11; group++)
        {
            // The sixth group's commits are each a record's due; the others' are not (the first commit writes one anyway).
            store.CommitRecordEveryForTests = group == 5 ? TimeSpan.Zero : TimeSpan.FromDays(1);
            var puts = Enumerable.Range(0, 100).Select(_ => new PutRequest(Bytes(_random, 1000), recipient, DateTimeOffset.UtcNow.AddDays(1))).ToList();
            receipts.AddRange((await store.PutManyAsync(puts)).Select(r => r.Receipt!));
        }

        CopyStoreFiles(store.StoreDirectory, Path.Combine(copy, "store"));
        return (copy, receipts);
    }

    private void Garble(string file, long at)
    {
        using var stream = new FileStream(file, FileMode.Open);
        stream.Position = at;
        stream.Write(Bytes(_random, 64));
    }

    [Fact]
    public async Task Damage_in_the_log_before_its_newest_commit_record_stops_the_open_naming_the_log()
    {
        (string copy, _) = await CrashImageAsync();
        try
        {
            // Inside the first group, long before the sixth group's record: replay reads that page from disk and checks
            // every entry's checksum.
            string wal = Path.Combine(copy, "store", "wal.log.0");
            Garble(wal, 100_000);
            byte[] before = SHA256.HashData(File.ReadAllBytes(wal));

            StoreCorruptException e = await Assert.ThrowsAsync<StoreCorruptException>(async () => await FasterEnvelopeStore.OpenAsync(Options(copy)));
            Assert.Contains($"'{Path.Combine(copy, "store", "wal.log")}' is corrupt", e.Message, StringComparison.Ordinal);
            Assert.Contains("checksum", e.Message, StringComparison.Ordinal);
            Assert.Contains("Nothing was changed", e.Message, StringComparison.Ordinal);
            Assert.Equal(before, SHA256.HashData(File.ReadAllBytes(wal)));
        }
        finally
        {
            Directory.Delete(copy, recursive: true);
        }
    }

    [Fact]
    public async Task Damage_after_the_newest_commit_record_loses_at_most_what_came_after_that_record()
    {
        (string copy, List<PutReceipt> receipts) = await CrashImageAsync();
        try
        {
            // Inside the ninth or tenth group, after the sixth group's record: recovery's forward scan from that record
            // takes the damaged entry for the log's end.
            string wal = Path.Combine(copy, "store", "wal.log.0");
            Assert.True(new FileInfo(wal).Length > 1_000_064, "the log should reach past the damage");
            using (CommitSlotFile file = CommitSlotFile.Open(Path.Combine(copy, "store", "commits"), new FileInfo(wal).Length))
            {
                Assert.InRange(file.NewestUntil!.Value, 500_000, 1_000_000 - 1); // the sixth group's end
            }

            Garble(wal, 1_000_000);

            await using FasterEnvelopeStore reopened = await FasterEnvelopeStore.OpenAsync(Options(copy));
            Assert.InRange(reopened.TreeSize, 600, receipts.Count - 1);
            foreach (PutReceipt receipt in receipts.Take((int)reopened.TreeSize))
            {
                Assert.Equal(receipt.LogIndex, (await reopened.FindAsync(receipt.EnvelopeId))!.LogIndex);
            }
        }
        finally
        {
            Directory.Delete(copy, recursive: true);
        }
    }

    [Fact]
    public async Task A_log_that_ends_before_the_checkpoint_it_should_reach_stops_the_open()
    {
        // The log as it was after the first group (a backup taken then, or recovery stopping at damage), beside a
        // checkpoint that covers three: opened, new puts would go below the checkpoint's address and never be replayed.
        StoreOptions options = Options(_dir);
        byte[] recipient = Bytes(_random, 32);
        string early = NewDirectory();
        try
        {
            await using (FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options))
            {
                for (int group = 0; group < 3; group++)
                {
                    await store.PutManyAsync(Enumerable.Range(0, 50).Select(_ => new PutRequest(Bytes(_random, 1000), recipient, DateTimeOffset.UtcNow.AddDays(1))).ToList());
                    if (group == 0)
                    {
                        CopyStoreFiles(store.StoreDirectory, early, file => IsLog(Path.GetRelativePath(store.StoreDirectory, file)));
                    }
                }
            }

            string storeDirectory = Path.Combine(_dir, "store");
            foreach (string file in Directory.EnumerateFiles(storeDirectory, "*", SearchOption.AllDirectories).Where(f => IsLog(Path.GetRelativePath(storeDirectory, f))))
            {
                File.Delete(file);
            }

            CopyStoreFiles(early, storeDirectory);
            StoreCorruptException e = await Assert.ThrowsAsync<StoreCorruptException>(async () => await FasterEnvelopeStore.OpenAsync(options));
            Assert.Contains("which the checkpoint says was committed", e.Message, StringComparison.Ordinal);
        }
        finally
        {
            Directory.Delete(early, recursive: true);
        }

        static bool IsLog(string relative) => relative.StartsWith("wal.", StringComparison.Ordinal) || relative.StartsWith("commits", StringComparison.Ordinal);
    }

    /// <summary>A store with one envelope, closed (so its shutdown checkpoint wrote every file); its options.</summary>
    private async Task<StoreOptions> ClosedStoreAsync()
    {
        StoreOptions options = Options(_dir);
        await using (FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options))
        {
            await store.PutAsync(new PutRequest(Bytes(_random, 200), Bytes(_random, 32), DateTimeOffset.UtcNow.AddDays(1)));
        }

        return options;
    }

    [Theory]
    [InlineData("wal.page-bits", "19", "the write-ahead log's")] // an 8 MiB budget's 512 KiB pages
    [InlineData("table.page-bits", "20", "the envelope table's")] // and its table's 1 MiB pages
    public async Task A_damaged_page_size_file_is_refused_naming_it_and_left_as_it_was(string file, string written, string whose)
    {
        StoreOptions options = await ClosedStoreAsync();
        string path = Path.Combine(_dir, "store", file);
        Assert.Equal(written, File.ReadAllText(path).Trim());
        File.WriteAllText(path, "nineteen\n");

        StoreCorruptException e = await Assert.ThrowsAsync<StoreCorruptException>(async () => await FasterEnvelopeStore.OpenAsync(options));
        Assert.Contains($"'{path}' should hold {whose} page size", e.Message, StringComparison.Ordinal);
        Assert.Contains("holds 'nineteen'", e.Message, StringComparison.Ordinal);
        Assert.Equal("nineteen\n", File.ReadAllText(path));
    }

    [Fact]
    public async Task A_damaged_table_checkpoint_is_refused_naming_it()
    {
        // The close took a checkpoint; its table half is FASTER's: garble the description of its log.
        StoreOptions options = await ClosedStoreAsync();
        string kv = Path.Combine(_dir, "store", "kv");
        string info = Assert.Single(Directory.GetFiles(Path.Combine(kv, "checkpoints", "cpr-checkpoints"), "info.dat*", SearchOption.AllDirectories));
        File.WriteAllBytes(info, Bytes(_random, (int)new FileInfo(info).Length));

        StoreCorruptException e = await Assert.ThrowsAsync<StoreCorruptException>(async () => await FasterEnvelopeStore.OpenAsync(options));
        Assert.Contains($"in '{kv}'", e.Message, StringComparison.Ordinal);
        Assert.Contains("cannot be recovered", e.Message, StringComparison.Ordinal);
        Assert.Contains("Nothing was changed", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_damaged_checkpoint_manifest_is_an_error_naming_it()
    {
        StoreOptions options = await ClosedStoreAsync();
        string manifest = Path.Combine(_dir, "store", "checkpoint.manifest");
        byte[] bytes = File.ReadAllBytes(manifest);
        bytes[bytes.Length / 2] ^= 0xFF;
        File.WriteAllBytes(manifest, bytes);

        StoreCorruptException e = await Assert.ThrowsAsync<StoreCorruptException>(async () => await FasterEnvelopeStore.OpenAsync(options));
        Assert.Contains(manifest, e.Message);
    }

    [Fact]
    public async Task Damaged_leaf_hashes_are_an_error_naming_leaves_bin()
    {
        // leaves.bin has no checksum of its own: the manifest's root is what catches a changed hash, which would
        // otherwise be signed into a tree head contradicting the ones handed out.
        StoreOptions options = await ClosedStoreAsync();
        string leaves = Path.Combine(_dir, "store", "leaves.bin");
        byte[] bytes = File.ReadAllBytes(leaves);
        bytes[5] ^= 0x01;
        File.WriteAllBytes(leaves, bytes);

        StoreCorruptException e = await Assert.ThrowsAsync<StoreCorruptException>(async () => await FasterEnvelopeStore.OpenAsync(options));
        Assert.Contains(leaves, e.Message, StringComparison.Ordinal);
        Assert.Contains("do not make the Merkle root", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_manifest_from_before_the_leaves_root_opens_as_before()
    {
        StoreOptions options = await ClosedStoreAsync();
        string storeDirectory = Path.Combine(_dir, "store");
        Checkpoint.Manifest manifest = Checkpoint.Read(storeDirectory)!;
        Assert.NotNull(manifest.LeavesRoot);
        Checkpoint.Write(storeDirectory, manifest with { LeavesRoot = null });
        Assert.Null(Checkpoint.Read(storeDirectory)!.LeavesRoot);

        await using FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options);
        Assert.Equal(1, store.TreeSize);
    }

    [Fact]
    public async Task A_corrupt_commit_directory_is_an_error_naming_the_store()
    {
        StoreOptions options = await ClosedStoreAsync();
        foreach (string file in Directory.EnumerateFiles(Path.Combine(_dir, "store", "commits"), "*", SearchOption.AllDirectories))
        {
            File.WriteAllBytes(file, Bytes(_random, (int)Math.Max(8, new FileInfo(file).Length)));
        }

        StoreCorruptException e = await Assert.ThrowsAsync<StoreCorruptException>(async () => await FasterEnvelopeStore.OpenAsync(options));
        Assert.Contains(Path.Combine(_dir, "store"), e.Message);
    }
}
