using FASTER.core;
using MegaNet.Store;
using Xunit.Abstractions;
using static MegaNet.Store.Tests.StoreTestKit;

namespace MegaNet.Store.Tests;

/// <summary>
/// The table's checkpoint files on devices with I/O threads of their own (<see cref="CheckpointFileFactory"/>) instead of
/// FASTER's local files, which write on the thread pool: the same files on disk, so stores written by either open with
/// the other (an upgrade, and a downgrade to an older binary).
/// </summary>
public sealed class CheckpointFileTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = NewDirectory();
    private readonly Random _random = new(23);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void Checkpoint_files_are_written_off_the_thread_pool_to_the_files_FASTERs_devices_read()
    {
        var ours = new CheckpointFileFactory();
        ours.Initialize(_dir);
        var fasters = new LocalStorageNamedDeviceFactory();
        fasters.Initialize(_dir);
        var file = new FileDescriptor(Path.Combine("index-checkpoints", Guid.NewGuid().ToString()), "ht.dat");
        const int Length = 8192;
        IntPtr buffer = Aligned(Length), back = Aligned(Length);
        try
        {
            Span<byte> data = View(buffer, Length);
            _random.NextBytes(data);
            (uint error, uint written, bool onPool, string? thread) result;
            using (IDevice device = ours.Get(file))
            {
                // Without the page cache where the file system takes direct I/O, as the table's own log.
                Assert.Equal(DirectFileDevice.DirectFlagFor(_dir) != 0, ((DirectFileDevice)device).IsDirect);
                result = Io(callback => device.WriteAsync(buffer, 0, 0, Length, callback, new object()));
            }

            output.WriteLine($"write: error {result.error}, {result.written} bytes, thread '{result.thread}', pool thread {result.onPool}");
            Assert.Equal((0u, (uint)Length), (result.error, result.written));
            Assert.False(result.onPool, "the checkpoint write completed on a thread-pool thread");
            Assert.True(File.Exists(Path.Combine(_dir, file.directoryName, "ht.dat.0")), "not under FASTER's name for the file");

            // FASTER's device reads what ours wrote, and ours what FASTER's wrote.
            using (IDevice device = fasters.Get(file))
            {
                result = Io(callback => device.ReadAsync(0, 0, back, Length, callback, new object()));
            }

            Assert.Equal((0u, (uint)Length), (result.error, result.written));
            Assert.True(data.SequenceEqual(View(back, Length)));

            var other = new FileDescriptor(file.directoryName, "ofb.dat");
            _random.NextBytes(data);
            using (IDevice device = fasters.Get(other))
            {
                Assert.Equal(0u, Io(callback => device.WriteAsync(buffer, 0, 0, Length, callback, new object())).Error);
            }

            View(back, Length).Clear();
            using (IDevice device = ours.Get(other))
            {
                result = Io(callback => device.ReadAsync(0, 0, back, Length, callback, new object()));
            }

            Assert.Equal((0u, (uint)Length), (result.error, result.written));
            Assert.False(result.onPool, "the checkpoint read completed on a thread-pool thread");
            Assert.True(data.SequenceEqual(View(back, Length)));
        }
        finally
        {
            Free(buffer);
            Free(back);
        }
    }

    [Fact]
    public async Task A_store_checkpointed_through_FASTERs_files_opens_with_these_and_the_other_way_round()
    {
        byte[] recipient = Bytes(_random, 32);
        var receipts = new List<PutReceipt>();

        // Written as a store of an earlier version wrote it; the checkpoint lets the log go, so only the table's
        // checkpoint files hold these envelopes' records afterwards.
        await PutAndCheckpoint(new LocalStorageNamedDeviceFactory(), reopenedWith: null);
        await PutAndCheckpoint(null, reopenedWith: "FASTER's local files");
        await PutAndCheckpoint(new LocalStorageNamedDeviceFactory(), reopenedWith: "CheckpointFileFactory");

        StoreOptions last = Options(_dir);
        await using FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(last);
        await ExpectAll(store);

        async Task PutAndCheckpoint(INamedDeviceFactory? files, string? reopenedWith)
        {
            StoreOptions options = Options(_dir);
            options.CheckpointInterval = TimeSpan.FromHours(1);
            options.CheckpointFilesForTests = files;
            await using FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options);
            if (reopenedWith is not null)
            {
                await ExpectAll(store);
                output.WriteLine($"{receipts.Count} envelopes back after checkpoints written by {reopenedWith}");
            }

            long walBegin = store.LogBeginAddress;
            for (int i = 0; i < 200; i++)
            {
                receipts.Add(await store.PutAsync(new PutRequest(Bytes(_random, 1000), recipient, DateTimeOffset.UtcNow.AddDays(1))));
            }

            await store.CheckpointAsync();
            Assert.True(store.LogBeginAddress > walBegin, "the checkpoint did not let the log go: the test would prove nothing");
        }

        async Task ExpectAll(FasterEnvelopeStore store)
        {
            Assert.Equal(receipts.Count, store.TreeSize);
            foreach (PutReceipt r in receipts)
            {
                PutReceipt? found = await store.FindAsync(r.EnvelopeId);
                Assert.NotNull(found);
                Assert.Equal(r.LogIndex, found.LogIndex);
            }

            MailboxPage page = await store.ListAsync(recipient, 0, receipts.Count + 1);
            Assert.Equal(receipts.Count, page.Entries.Count);
        }
    }

    [Fact]
    public async Task The_checkpoint_files_after_the_table_are_written_off_the_thread_pool()
    {
        StoreOptions options = Options(_dir);
        options.CheckpointInterval = TimeSpan.FromHours(1);
        await using FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options);
        for (int i = 0; i < 20; i++)
        {
            await store.PutAsync(new PutRequest(Bytes(_random, 1000), Bytes(_random, 32), DateTimeOffset.UtcNow.AddDays(1)));
        }

        // The hook runs where leaves.bin and the manifest are then written and flushed.
        bool? onPool = null;
        store.AfterTableCheckpointForTests = () =>
        {
            onPool = Thread.CurrentThread.IsThreadPoolThread;
            return Task.CompletedTask;
        };
        await store.CheckpointAsync();
        store.AfterTableCheckpointForTests = null;
        Assert.False(onPool ?? throw new InvalidOperationException("the checkpoint never reached its files"), "the manifest was written on a thread-pool thread");
    }

    /// <summary>Starts one request and waits for its callback: error, bytes, and whether it ran on a pool thread.</summary>
    private static (uint Error, uint Bytes, bool OnPool, string? Thread) Io(Action<DeviceIOCompletionCallback> start)
    {
        var done = new TaskCompletionSource<(uint, uint, bool, string?)>(TaskCreationOptions.RunContinuationsAsynchronously);
        start((e, n, _) => done.SetResult((e, n, Thread.CurrentThread.IsThreadPoolThread, Thread.CurrentThread.Name)));
        return done.Task.Wait(TimeSpan.FromSeconds(30)) ? done.Task.Result : throw new TimeoutException("no callback");
    }
}
