using FASTER.core;
using MegaNet.Core.Interop;
using static MegaNet.Store.Tests.StoreTestKit;

namespace MegaNet.Store.Tests;

/// <summary>
/// The writes nobody waits on (the envelope table's page flushes, a checkpoint's files) run on threads of a lower
/// priority, so that on a busy machine the log's commits and the answers to requests go first; the write-ahead log's
/// own device keeps the normal priority.
/// </summary>
public sealed class BackgroundPriorityTests : IDisposable
{
    private readonly string _dir = NewDirectory();

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void A_lowered_thread_runs_at_nice_10_on_Linux()
    {
        int? mine = BackgroundPriority.CurrentThreadNice();
        (bool lowered, int? before, int? after) result = default;
        var thread = new Thread(() =>
        {
            int? before = BackgroundPriority.CurrentThreadNice();
            bool lowered = BackgroundPriority.LowerCurrentThread();
            result = (lowered, before, BackgroundPriority.CurrentThreadNice());
        });
        thread.Start();
        thread.Join();

        if (OperatingSystem.IsLinux())
        {
            Assert.True(result.lowered, "setpriority refused to lower the thread");
            // A new thread starts at its creator's nice value; lowered, at Nice (or where it was, if lower still).
            Assert.Equal(mine, result.before);
            Assert.Equal(Math.Max(BackgroundPriority.Nice, mine!.Value), result.after);
            // Only that thread: this one keeps its priority.
            Assert.Equal(mine, BackgroundPriority.CurrentThreadNice());
        }
        else
        {
            Assert.Null(result.after);
        }
    }

    [Fact]
    public void The_tables_device_and_the_checkpoint_files_lower_their_IO_threads_and_a_plain_device_does_not()
    {
        using var kv = new EnvelopeKv(Path.Combine(_dir, "kv"), 8L << 20, 1L << 20);
        Assert.True(kv.DeviceForTests.Background);

        var files = new CheckpointFileFactory();
        files.Initialize(Path.Combine(_dir, "checkpoints"));
        using IDevice checkpointFile = files.Get(new FileDescriptor("index-checkpoints", "ht.dat"));
        Assert.True(((DirectFileDevice)checkpointFile).Background);

        using DirectFileDevice plain = DirectFileDevice.CreateBuffered(Path.Combine(_dir, "plain", "wal.log"));
        Assert.False(plain.Background);

        if (OperatingSystem.IsLinux())
        {
            // The threads lower themselves as they start.
            Assert.True(SpinWait.SpinUntil(() => kv.DeviceForTests.LoweredThreads == 8 && ((DirectFileDevice)checkpointFile).LoweredThreads == DirectFileDevice.CheckpointIoThreads, TimeSpan.FromSeconds(10)),
                $"lowered: table {kv.DeviceForTests.LoweredThreads} of 8, checkpoint file {((DirectFileDevice)checkpointFile).LoweredThreads} of {DirectFileDevice.CheckpointIoThreads}");
        }

        Assert.Equal(0, plain.LoweredThreads);
    }
}
