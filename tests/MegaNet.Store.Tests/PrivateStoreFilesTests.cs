using System.Runtime.InteropServices;
using System.Runtime.Versioning;
using MegaNet.Store;
using static MegaNet.Store.Tests.StoreTestKit;

namespace MegaNet.Store.Tests;

/// <summary>The store holds every envelope, recipient address and sending key: nothing it makes may be open to other
/// local users, whatever the umask and the mode of a data directory someone made beforehand.</summary>
public sealed partial class PrivateStoreFilesTests : IDisposable
{
    private const UnixFileMode GroupOrOther = UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.GroupExecute
        | UnixFileMode.OtherRead | UnixFileMode.OtherWrite | UnixFileMode.OtherExecute;

    private readonly string _dir = NewDirectory();

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [SkippableFact]
    [UnsupportedOSPlatform("windows")]
    public async Task Every_file_and_directory_the_store_makes_is_owner_only_in_a_data_directory_open_to_all()
    {
        Skip.If(OperatingSystem.IsWindows(), "Unix file modes");
        // Before: only the log's and the table's segments were created 0600. The checkpoint manifest (every mailbox
        // address with its entries), leaves.bin, the commit records, the table's checkpoint files written through the
        // page cache, and store/, store/kv/, store/commits/ took the umask's mode: readable by anyone on the machine.
        string data = Path.Combine(_dir, "data");
        Directory.CreateDirectory(data, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute
            | UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute);
        // The usual umask (the test runner's may be stricter, which would hide the modes the store leaves to it).
        int umask = Umask(Convert.ToInt32("022", 8));
        try
        {
            var random = new Random(7);
            await using FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(Options(data));
            await store.PutAsync(new PutRequest(Bytes(random, 700), Bytes(random, 32), DateTimeOffset.UtcNow.AddDays(1)));
            await store.CheckpointAsync();
            await store.PutAsync(new PutRequest(Bytes(random, 700), Bytes(random, 32), DateTimeOffset.UtcNow.AddDays(1)));
            // (the stop takes a final checkpoint)
        }
        finally
        {
            _ = Umask(umask);
        }

        string storeDirectory = Path.Combine(data, "store");
        // Where the file system takes no direct I/O (tmpfs), the write-ahead log is on FASTER's own device, which
        // creates its segments with the umask's mode: the owner-only store directory is what keeps them private.
        bool walOnFastersDevice = DirectFileDevice.DirectFlagFor(storeDirectory) == 0;
        string[] entries = Directory.EnumerateFileSystemEntries(storeDirectory, "*", SearchOption.AllDirectories)
            .Where(e => !(walOnFastersDevice && Path.GetFileName(e).StartsWith("wal.log.", StringComparison.Ordinal)))
            .Prepend(storeDirectory)
            .ToArray();
        Assert.Contains(Path.Combine(storeDirectory, "checkpoint.manifest"), entries);
        Assert.Contains(Path.Combine(storeDirectory, "leaves.bin"), entries);
        Assert.Contains(entries, e => e.Contains($"{Path.DirectorySeparatorChar}cpr-checkpoints{Path.DirectorySeparatorChar}", StringComparison.Ordinal));
        Assert.Empty(entries.Where(e => (File.GetUnixFileMode(e) & GroupOrOther) != 0)
            .Select(e => $"{Path.GetRelativePath(data, e)} {Convert.ToString((int)File.GetUnixFileMode(e), 8)}"));
    }

    [SkippableFact]
    [UnsupportedOSPlatform("windows")]
    public async Task A_segment_written_through_the_page_cache_is_owner_only()
    {
        Skip.If(OperatingSystem.IsWindows(), "Unix file modes");
        // The table's and its checkpoints' files where the file system takes no direct I/O (and the second handle that
        // takes unaligned writes beside direct ones): File.OpenHandle created them with the umask's mode.
        string path = Path.Combine(_dir, "buffered.log");
        int umask = Umask(Convert.ToInt32("022", 8));
        IntPtr buffer = Aligned(4096);
        try
        {
            using DirectFileDevice device = DirectFileDevice.CreateBuffered(path);
            device.Initialize(1L << 20);
            var written = new TaskCompletionSource<uint>(TaskCreationOptions.RunContinuationsAsynchronously);
            device.WriteAsync(buffer, 0, 0, 4096, (error, _, _) => written.SetResult(error), new object());
            Assert.Equal(0u, await written.Task.WaitAsync(TimeSpan.FromSeconds(30)));
        }
        finally
        {
            _ = Umask(umask);
            Free(buffer);
        }

        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(path + ".0"));
    }

    [LibraryImport("libc", EntryPoint = "umask")]
    private static partial int Umask(int mask);
}
