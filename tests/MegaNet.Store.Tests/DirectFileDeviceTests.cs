using FASTER.core;
using static MegaNet.Store.Tests.StoreTestKit;

namespace MegaNet.Store.Tests;

/// <summary>The direct-I/O device under FASTER's device contract: aligned writes land and read back, so do requests off
/// O_DIRECT's sector grid (through the page cache instead of failing), and segments are files that can be removed.</summary>
public sealed class DirectFileDeviceTests
{
    [Fact]
    public void Aligned_and_misaligned_writes_read_back()
    {
        if (!OperatingSystem.IsLinux())
        {
            Assert.Null(DirectFileDevice.TryCreate(Path.Combine(Path.GetTempPath(), "x.log")));
            return;
        }

        string dir = StoreTestKit.NewDirectory();
        using DirectFileDevice device = DirectFileDevice.TryCreate(Path.Combine(dir, "d.log"))
            ?? throw new InvalidOperationException($"direct I/O refused in {dir}: the store would fall back to FASTER's managed device");
        device.Initialize(1L << 20);

        IntPtr buffer = Aligned(8192);
        IntPtr back = Aligned(8192);
        try
        {
            Span<byte> data = View(buffer, 8192);
            new Random(7).NextBytes(data);
            (uint error, uint bytes) = Write(device, buffer, 0, 4096, 8192);
            Assert.Equal((0u, 8192u), (error, bytes));

            (error, bytes) = Read(device, 0, 4096, back, 8192);
            Assert.Equal((0u, 8192u), (error, bytes));
            Assert.True(data.SequenceEqual(View(back, 8192)));
            Assert.Equal(4096 + 8192, new FileInfo(Path.Combine(dir, "d.log.0")).Length);

            // O_DIRECT refuses a buffer, length or offset off the sector grid (EINVAL); such a request goes through the
            // page cache, and what it wrote over a directly written range reads back either way.
            (error, bytes) = Write(device, buffer + 3, 0, 4096 + 100, 700);
            Assert.Equal((0u, 700u), (error, bytes));
            (error, bytes) = Read(device, 0, 4096, back, 8192);
            Assert.Equal((0u, 8192u), (error, bytes));
            byte[] expected = data.ToArray();
            data.Slice(3, 700).CopyTo(expected.AsSpan(100));
            Assert.True(expected.AsSpan().SequenceEqual(View(back, 8192)), "an aligned read missed the unaligned write");
            (error, bytes) = Read(device, 0, 4096 + 99, back + 1, 702);
            Assert.Equal((0u, 702u), (error, bytes));
            Assert.True(expected.AsSpan(99, 702).SequenceEqual(View(back + 1, 702)), "an unaligned read differs");

            device.RemoveSegment(0);
            Assert.False(File.Exists(Path.Combine(dir, "d.log.0")));
        }
        finally
        {
            Free(buffer);
            Free(back);
            Directory.Delete(dir, recursive: true);
        }
    }

    [SkippableFact]
    public void Concurrent_requests_each_complete_once_and_dispose_ends_the_io_threads()
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "direct I/O is Linux only (elsewhere the store uses buffered files)");

        string dir = StoreTestKit.NewDirectory();
        DirectFileDevice device = DirectFileDevice.TryCreate(Path.Combine(dir, "d.log"))
            ?? throw new InvalidOperationException($"direct I/O refused in {dir}");
        device.Initialize(1L << 24);
        const int Writers = 4, PerWriter = 64, Block = 4096;
        IntPtr buffer = Aligned(Writers * PerWriter * Block);
        IntPtr back = Aligned(Block);
        try
        {
            Span<byte> data = View(buffer, Writers * PerWriter * Block);
            new Random(11).NextBytes(data);
            int[] calls = new int[Writers * PerWriter];
            var results = new (uint Error, uint Bytes)[calls.Length];
            using var allDone = new CountdownEvent(calls.Length);
            Parallel.For(0, Writers, w =>
            {
                for (int i = 0; i < PerWriter; i++)
                {
                    int n = w * PerWriter + i;
                    device.WriteAsync(buffer + n * Block, 0, (ulong)(n * Block), Block, (e, bytes, _) =>
                    {
                        // Checked on the test thread: an assertion failing on an I/O thread would end the process.
                        results[n] = (e, bytes);
                        Interlocked.Increment(ref calls[n]);
                        allDone.Signal();
                    }, new object());
                }
            });

            Assert.True(allDone.Wait(TimeSpan.FromSeconds(60)), "not every write called back");
            Assert.All(calls, c => Assert.Equal(1, c));
            Assert.All(results, r => Assert.Equal((0u, (uint)Block), r));
            Assert.True(device.TryComplete());
            for (int n = 0; n < calls.Length; n += 37)
            {
                Assert.Equal((0u, (uint)Block), Read(device, 0, (ulong)(n * Block), back, Block));
                Assert.True(data.Slice(n * Block, Block).SequenceEqual(View(back, Block)), $"block {n} differs");
            }

            // Dispose returns only after its I/O threads ended; a request after it is refused, not lost silently.
            device.Dispose();
            Assert.Throws<ObjectDisposedException>(() => device.WriteAsync(buffer, 0, 0, Block, (_, _, _) => { }, new object()));
            Assert.True(device.TryComplete(), "a refused request still counts as pending");
        }
        finally
        {
            device.Dispose();
            Free(buffer);
            Free(back);
            Directory.Delete(dir, recursive: true);
        }
    }

    private static (uint Error, uint Bytes) Write(DirectFileDevice device, IntPtr source, int segment, ulong offset, uint length)
    {
        var done = new TaskCompletionSource<(uint, uint)>();
        device.WriteAsync(source, segment, offset, length, (e, n, _) => done.SetResult((e, n)), new object());
        return done.Task.Wait(TimeSpan.FromSeconds(30)) ? done.Task.Result : throw new TimeoutException("no write callback");
    }

    private static (uint Error, uint Bytes) Read(DirectFileDevice device, int segment, ulong offset, IntPtr destination, uint length)
    {
        var done = new TaskCompletionSource<(uint, uint)>();
        device.ReadAsync(segment, offset, destination, length, (e, n, _) => done.SetResult((e, n)), new object());
        return done.Task.Wait(TimeSpan.FromSeconds(30)) ? done.Task.Result : throw new TimeoutException("no read callback");
    }

}
