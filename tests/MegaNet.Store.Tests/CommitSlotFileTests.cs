using System.Buffers.Binary;
using System.Diagnostics;
using FASTER.core;
using MegaNet.Store;
using static MegaNet.Store.Tests.StoreTestKit;

namespace MegaNet.Store.Tests;

/// <summary>The write-ahead log's commit records: a file of a few slots, each commit overwriting the oldest.</summary>
public sealed class CommitSlotFileTests : IDisposable
{
    private readonly string _dir = NewDirectory();
    private readonly Random _random = new(7);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string CommitDir => Path.Combine(_dir, "store", "commits");

    private string SlotFilePath => Path.Combine(CommitDir, CommitSlotFile.FileName);

    [Fact]
    public void The_newest_records_are_kept_and_a_torn_one_reads_as_none()
    {
        Directory.CreateDirectory(_dir);
        using (CommitSlotFile file = CommitSlotFile.Open(_dir, walBytes: 0))
        {
            Assert.Empty(file.Commits);
            for (long n = 1; n <= 20; n++)
            {
                file.Commit(0, n * 100, Metadata(n), n, forceWriteMetadata: false);
                Assert.True(file.Wrote(n));
                Assert.False(file.Wrote(n + 1));
            }
        }

        using (CommitSlotFile file = CommitSlotFile.Open(_dir, walBytes: 1))
        {
            Assert.Equal(Enumerable.Range(13, 8).Reverse().Select(n => (long)n), file.Commits);
            Assert.Equal(Metadata(17), file.GetCommitMetadata(17));
            Assert.Null(file.GetCommitMetadata(12)); // overwritten
        }

        // A crash in the middle of writing record 20: its checksum fails, and the 7 before it are what recovery has.
        TearSlotOf(Path.Combine(_dir, CommitSlotFile.FileName), 20);
        using (CommitSlotFile file = CommitSlotFile.Open(_dir, walBytes: 1))
        {
            Assert.Equal(Enumerable.Range(13, 7).Reverse().Select(n => (long)n), file.Commits);

            // The next commit takes the torn slot, never the newest good record's.
            file.Commit(0, 2100, Metadata(21), 21, forceWriteMetadata: false);
            Assert.Equal(Enumerable.Range(13, 7).Append(21).OrderDescending().Select(n => (long)n), file.Commits);
        }
    }

    [Fact]
    public void A_commit_number_given_again_after_a_recovery_replaces_the_records_from_it_on()
    {
        Directory.CreateDirectory(_dir);
        using (CommitSlotFile file = CommitSlotFile.Open(_dir, walBytes: 0))
        {
            for (long n = 1; n <= 6; n++)
            {
                file.Commit(0, n * 100, Metadata(n), n, forceWriteMetadata: false);
            }

            // Recovered from 4 (5 and 6 did not do): nothing goes until the log numbers its next commit 5 again, which
            // drops the old 5 and 6.
            file.OnRecovery(4);
            Assert.Equal([6L, 5, 4, 3, 2, 1], file.Commits);
            file.Commit(0, 555, Metadata(55), 5, forceWriteMetadata: false);
            Assert.Equal([5L, 4, 3, 2, 1], file.Commits);
            Assert.Equal(Metadata(55), file.GetCommitMetadata(5));

            file.Commit(0, 600, Metadata(6), 6, forceWriteMetadata: false);
            file.Commit(0, 700, Metadata(7), 7, forceWriteMetadata: false);
            file.Commit(0, 666, Metadata(66), 6, forceWriteMetadata: false);
            Assert.Equal([6L, 5, 4, 3, 2, 1], file.Commits);
            Assert.Equal(Metadata(66), file.GetCommitMetadata(6));
        }

        using CommitSlotFile reopened = CommitSlotFile.Open(_dir, walBytes: 1);
        Assert.Equal([6L, 5, 4, 3, 2, 1], reopened.Commits);
        Assert.Equal(Metadata(66), reopened.GetCommitMetadata(6));
        Assert.Equal(Metadata(55), reopened.GetCommitMetadata(5));
    }

    [Fact]
    public void With_the_commits_in_the_log_only_the_first_record_and_those_FASTER_asks_for_are_written()
    {
        Directory.CreateDirectory(_dir);
        using CommitSlotFile file = CommitSlotFile.Open(_dir, walBytes: 0);
        file.CommitsInLog = true;
        file.RecordEvery = TimeSpan.FromHours(1); // no commit below comes a whole interval after a record
        Assert.False(file.Wrote(1)); // nothing to scan from yet
        file.Commit(0, 100, Metadata(1), 1, forceWriteMetadata: false);
        file.Commit(0, 200, Metadata(2), 2, forceWriteMetadata: false);
        file.Commit(100, 300, Metadata(3), 3, forceWriteMetadata: true); // the begin address moved
        file.Commit(100, 400, Metadata(4), 4, forceWriteMetadata: false);
        Assert.Equal([3L, 1], file.Commits);
        Assert.True(file.Wrote(4)); // recovery finds 4 by scanning the log from 3

        // And one at least every RecordInterval: recovery's forward scan starts at the newest, so it covers at most that long.
        file.RecordEvery = TimeSpan.FromMilliseconds(20);
        Thread.Sleep(100);
        file.Commit(100, 500, Metadata(5), 5, forceWriteMetadata: false);
        file.RecordEvery = TimeSpan.FromHours(1);
        file.Commit(100, 600, Metadata(6), 6, forceWriteMetadata: false);
        Assert.Equal([5L, 3, 1], file.Commits);
    }

    [Fact]
    public void The_newest_records_until_address_is_where_a_recovery_scan_starts()
    {
        Directory.CreateDirectory(_dir);
        static byte[] Real(long begin, long until) => new FasterLogRecoveryInfo { BeginAddress = begin, UntilAddress = until }.ToByteArray();
        using (CommitSlotFile file = CommitSlotFile.Open(_dir, walBytes: 0))
        {
            file.CommitsInLog = true;
            file.RecordEvery = TimeSpan.FromHours(1);
            Assert.Null(file.NewestUntil);
            file.Commit(64, 1_000, Real(64, 1_000), 1, forceWriteMetadata: false);
            file.Commit(64, 2_000, Real(64, 2_000), 2, forceWriteMetadata: false); // no record: recovery scans from 1,000
            Assert.Equal(1_000, file.NewestUntil);
            file.Commit(1_500, 3_000, Real(1_500, 3_000), 3, forceWriteMetadata: true);
            Assert.Equal(3_000, file.NewestUntil);
        }

        using CommitSlotFile reopened = CommitSlotFile.Open(_dir, walBytes: 3_000);
        Assert.Equal(3_000, reopened.NewestUntil);
    }

    [Fact]
    public async Task With_the_commits_in_the_log_a_crash_keeps_every_acknowledged_put_while_the_file_holds_one_record()
    {
        StoreOptions options = Options(_dir);
        byte[] recipient = Bytes(_random, 32);
        string copy = NewDirectory();
        try
        {
            List<PutReceipt> receipts;
            TimeSpan putting;
            await using (FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options))
            {
                long start = Stopwatch.GetTimestamp();
                receipts = await PutAsync(store, recipient, 20);
                putting = Stopwatch.GetElapsedTime(start);

                // What a kill -9 leaves: the table starts over and the log replays from its start.
                string from = store.StoreDirectory;
                CopyStoreFiles(from, Path.Combine(copy, "store"), f => !f.StartsWith(Path.Combine(from, "kv"), StringComparison.Ordinal));
            }

            Assert.Equal("log", File.ReadAllText(Path.Combine(copy, "store", "wal.commit-mode")).Trim());
            using (CommitSlotFile file = CommitSlotFile.Open(Path.Combine(copy, "store", "commits"), walBytes: 1))
            {
                // Each put was its own commit (20 of them, well within a second here); only the first wrote a record,
                // and at most one more per RecordInterval.
                Assert.InRange(file.Commits.Length, 1, 1 + (int)(putting / CommitSlotFile.RecordInterval));
            }

            await using FasterEnvelopeStore recovered = await FasterEnvelopeStore.OpenAsync(Options(copy));
            await AssertHoldsAsync(recovered, receipts);
            receipts.AddRange(await PutAsync(recovered, recipient, 1));
            Assert.Equal(20, receipts[^1].LogIndex);
        }
        finally
        {
            Directory.Delete(copy, recursive: true);
        }
    }

    [Fact]
    public async Task A_store_from_before_commits_in_the_log_keeps_them_in_the_file_until_a_clean_shutdown_empties_its_log()
    {
        StoreOptions options = Options(_dir);
        byte[] recipient = Bytes(_random, 32);
        var receipts = new List<PutReceipt>();
        string crashed = NewDirectory(), again = NewDirectory();
        try
        {
            CreateWithCommitsInFile();
            await using (FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options))
            {
                receipts.AddRange(await PutAsync(store, recipient, 5));
                using (CommitSlotFile file = CommitSlotFile.Open(CommitDir, walBytes: 1))
                {
                    Assert.Equal(5, file.Commits.Length); // a record per commit
                }

                // What a kill -9 leaves (the table starts over), from a store written before the mode file existed.
                CopyStoreFiles(store.StoreDirectory, Path.Combine(crashed, "store"), f => !f.StartsWith(store.TableDirectory, StringComparison.Ordinal));
            }

            // Its log holds entries without checksums: the commits stay in the file.
            string mode = Path.Combine(crashed, "store", "wal.commit-mode");
            File.Delete(mode);
            await using (FasterEnvelopeStore reopened = await FasterEnvelopeStore.OpenAsync(Options(crashed)))
            {
                Assert.Equal("file", File.ReadAllText(mode).Trim());
                await AssertHoldsAsync(reopened, receipts);
                receipts.AddRange(await PutAsync(reopened, recipient, 2));
                using CommitSlotFile file = CommitSlotFile.Open(Path.Combine(crashed, "store", "commits"), walBytes: 1);
                Assert.Equal(7, file.Commits.Length);
            }

            // The clean shutdown's checkpoint emptied the log: the next open goes on with the commits in the log.
            await using (FasterEnvelopeStore emptied = await FasterEnvelopeStore.OpenAsync(Options(crashed)))
            {
                Assert.Equal("log", File.ReadAllText(mode).Trim());
                await AssertHoldsAsync(emptied, receipts);
                long[] before;
                using (CommitSlotFile file = CommitSlotFile.Open(Path.Combine(crashed, "store", "commits"), walBytes: 1))
                {
                    before = file.Commits;
                }

                long start = Stopwatch.GetTimestamp();
                receipts.AddRange(await PutAsync(emptied, recipient, 6));
                TimeSpan putting = Stopwatch.GetElapsedTime(start);
                using (CommitSlotFile file = CommitSlotFile.Open(Path.Combine(crashed, "store", "commits"), walBytes: 1))
                {
                    // Six commits, and at most one record a RecordInterval (the file keeps 8: count the new numbers).
                    Assert.InRange(file.Commits.Count(c => c > before.Max()), 0, 1 + (int)(putting / CommitSlotFile.RecordInterval));
                }

                // (The table with it this time: the clean shutdown's checkpoint of it is what the truncated log follows.)
                CopyStoreFiles(emptied.StoreDirectory, Path.Combine(again, "store"));
            }

            // A crash now: recovery scans the log forward from the newest record, across the entries in the new format.
            await using FasterEnvelopeStore recovered = await FasterEnvelopeStore.OpenAsync(Options(again));
            await AssertHoldsAsync(recovered, receipts);
        }
        finally
        {
            Directory.Delete(crashed, recursive: true);
            Directory.Delete(again, recursive: true);
        }
    }

    [Fact]
    public async Task A_mode_file_that_says_neither_is_an_error_naming_it()
    {
        StoreOptions options = Options(_dir);
        await using (FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options))
        {
            await PutAsync(store, Bytes(_random, 32), 1);
        }

        string mode = Path.Combine(_dir, "store", "wal.commit-mode");
        File.WriteAllText(mode, "fast\n");
        StoreCorruptException e = await Assert.ThrowsAsync<StoreCorruptException>(async () => await FasterEnvelopeStore.OpenAsync(options));
        Assert.Contains(mode, e.Message, StringComparison.Ordinal);
        Assert.Contains("'fast'", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Clean_restarts_in_a_row_keep_everything()
    {
        StoreOptions options = Options(_dir);
        byte[] recipient = Bytes(_random, 32);
        var receipts = new List<PutReceipt>();
        for (int restart = 0; restart < 12; restart++)
        {
            long newest = -1;
            if (restart > 0)
            {
                using CommitSlotFile file = CommitSlotFile.Open(CommitDir, walBytes: 1);
                Assert.Equal(file.Commits.Distinct(), file.Commits);
                newest = file.Commits[0];
            }

            // The newest record, although the shutdown checkpoint left the log empty (truncated to its tail).
            await using FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options);
            Assert.Equal(newest, store.RecoveredCommit);
            await AssertHoldsAsync(store, receipts);
            receipts.AddRange(await PutAsync(store, recipient, 3));
        }
    }

    [Fact]
    public async Task A_newest_record_that_does_not_read_back_falls_back_to_the_one_before_and_loses_nothing()
    {
        StoreOptions options = Options(_dir);
        var receipts = new List<PutReceipt>();
        await using (FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options))
        {
            receipts.AddRange(await PutAsync(store, Bytes(_random, 32), 12));
        }

        long newest;
        using (CommitSlotFile file = CommitSlotFile.Open(CommitDir, walBytes: 1))
        {
            newest = file.Commits[0];
        }

        TearSlotOf(SlotFilePath, newest);
        await using FasterEnvelopeStore reopened = await FasterEnvelopeStore.OpenAsync(options);
        await AssertHoldsAsync(reopened, receipts);
    }

    [Fact]
    public async Task A_store_with_FASTERs_per_commit_files_is_migrated_and_loses_nothing()
    {
        StoreOptions options = Options(_dir);
        byte[] recipient = Bytes(_random, 32);
        var receipts = new List<PutReceipt>();
        CreateWithCommitsInFile(); // as every store was when it had those files
        await using (FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options))
        {
            receipts.AddRange(await PutAsync(store, recipient, 6));
        }

        // The records as FASTER's own commit manager keeps them (a file per commit under log-commits), written by it.
        using (CommitSlotFile file = CommitSlotFile.Open(CommitDir, walBytes: 1))
        using (var legacy = new DeviceLogCommitCheckpointManager(new LocalStorageNamedDeviceFactory(), new DefaultCheckpointNamingScheme(CommitDir), removeOutdated: false))
        {
            foreach (long n in file.Commits.Order())
            {
                legacy.Commit(0, 0, file.GetCommitMetadata(n), n, forceWriteMetadata: false);
            }
        }

        File.Delete(SlotFilePath);
        Assert.NotEmpty(Directory.EnumerateFiles(Path.Combine(CommitDir, "log-commits"), "commit.*"));

        await using (FasterEnvelopeStore migrated = await FasterEnvelopeStore.OpenAsync(options))
        {
            Assert.True(File.Exists(SlotFilePath));
            Assert.False(Directory.Exists(Path.Combine(CommitDir, "log-commits")));
            Assert.Equal(receipts.Count, migrated.TreeSize);
            receipts.AddRange(await PutAsync(migrated, recipient, 1));
        }

        await using FasterEnvelopeStore reopened = await FasterEnvelopeStore.OpenAsync(options);
        await AssertHoldsAsync(reopened, receipts);
    }

    [Fact]
    public async Task A_log_with_data_and_no_commit_records_is_an_error_naming_the_file()
    {
        StoreOptions options = Options(_dir);
        await using (FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options))
        {
            await store.PutAsync(new PutRequest(Bytes(_random, 200), Bytes(_random, 32), DateTimeOffset.UtcNow.AddDays(1)));
        }

        File.Delete(SlotFilePath);
        StoreCorruptException e = await Assert.ThrowsAsync<StoreCorruptException>(async () => await FasterEnvelopeStore.OpenAsync(options));
        Assert.Contains(SlotFilePath, e.Message, StringComparison.Ordinal);
        Assert.Contains("missing", e.Message, StringComparison.Ordinal);
    }

    private async Task<List<PutReceipt>> PutAsync(FasterEnvelopeStore store, byte[] recipient, int count)
    {
        var receipts = new List<PutReceipt>();
        for (int i = 0; i < count; i++)
        {
            receipts.Add(await store.PutAsync(new PutRequest(Bytes(_random, 300), recipient, DateTimeOffset.UtcNow.AddDays(1))));
        }

        return receipts;
    }

    private static async Task AssertHoldsAsync(FasterEnvelopeStore store, List<PutReceipt> receipts)
    {
        Assert.Equal(receipts.Count, store.TreeSize);
        foreach (PutReceipt receipt in receipts)
        {
            Assert.Equal(receipt.LogIndex, (await store.FindAsync(receipt.EnvelopeId))?.LogIndex);
        }
    }

    // A new store as stores were before their logs held their commits (wal.commit-mode 'file').
    private void CreateWithCommitsInFile()
    {
        Directory.CreateDirectory(Path.Combine(_dir, "store"));
        File.WriteAllText(Path.Combine(_dir, "store", "wal.commit-mode"), "file\n");
    }

    private static byte[] Metadata(long n) => [.. BitConverter.GetBytes(n), .. Enumerable.Repeat((byte)n, 40)];

    // Zeroes the second half of the slot holding commitNum's record (the slot layout: magic, length, commit number at
    // offset 8, payload, checksum; 4 KiB slots), as a write cut short by a crash would leave it.
    private static void TearSlotOf(string path, long commitNum)
    {
        byte[] content = File.ReadAllBytes(path);
        for (int offset = 0; offset < content.Length; offset += 4096)
        {
            if (BinaryPrimitives.ReadInt64LittleEndian(content.AsSpan(offset + 8)) == commitNum)
            {
                int length = BinaryPrimitives.ReadInt32LittleEndian(content.AsSpan(offset + 4));
                content.AsSpan(offset + 16 + (length / 2), 4096 - 16 - (length / 2)).Clear();
                File.WriteAllBytes(path, content);
                return;
            }
        }

        Assert.Fail($"no slot holds commit {commitNum}");
    }
}
