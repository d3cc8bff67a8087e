using System.Collections.Concurrent;
using MegaNet.Core.Interop;
using MegaNet.Store;
using Xunit.Abstractions;
using static MegaNet.Store.Tests.StoreTestKit;

namespace MegaNet.Store.Tests;

/// <summary>
/// What makes an acknowledged envelope survive a crash of the machine, not only of the process: a kill -9 leaves the
/// page cache to the kernel, so the crash tests pass with every write left in it, and only the way the files are
/// opened tells the two apart.
/// </summary>
public sealed class WriteThroughTests(ITestOutputHelper output) : IDisposable
{
    // Linux's open(2) flags in /proc/self/fdinfo (octal there): O_ACCMODE, and O_DSYNC, which O_SYNC includes.
    private const int AccessMode = 3;
    private const int ODsync = 0x1000;

    private readonly string _dir = NewDirectory();

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [SkippableFact]
    public async Task Every_file_the_store_holds_open_for_writing_is_written_through()
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "reads open flags from /proc/self/fdinfo");
        var random = new Random(11);
        await using FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(Options(_dir));
        for (int i = 0; i < 4; i++)
        {
            await store.PutAsync(new PutRequest(Bytes(random, 700), Bytes(random, 32), DateTimeOffset.UtcNow.AddDays(1)));
            await store.CheckpointAsync();
        }

        string storeDirectory = Path.GetFullPath(store.StoreDirectory) + Path.DirectorySeparatorChar;
        var writable = new List<(string Path, int Flags)>();
        foreach (string fd in Directory.EnumerateFiles("/proc/self/fd"))
        {
            string? target;
            string info;
            try
            {
                target = new FileInfo(fd).LinkTarget;
                info = File.ReadAllText($"/proc/self/fdinfo/{Path.GetFileName(fd)}");
            }
            catch (IOException)
            {
                continue; // closed since it was listed (another test's, as likely as not)
            }

            if (target is null || !target.StartsWith(storeDirectory, StringComparison.Ordinal))
            {
                continue;
            }

            string flagsLine = info.Split('\n').Single(l => l.StartsWith("flags:", StringComparison.Ordinal));
            int flags = Convert.ToInt32(flagsLine["flags:".Length..].Trim(), 8);
            // LOCK holds no data: it is opened for writing only to take the lock that keeps a second node out.
            if ((flags & AccessMode) != 0 && target[storeDirectory.Length..] != "LOCK")
            {
                writable.Add((target[storeDirectory.Length..], flags));
            }
        }

        foreach ((string path, int flags) in writable)
        {
            output.WriteLine($"{path} flags 0{Convert.ToString(flags, 8)}");
        }

        // The write-ahead log, the table's log and the commit records at least: a test that found nothing checked nothing.
        Assert.Contains(writable, f => f.Path.StartsWith("wal.log.", StringComparison.Ordinal));
        Assert.Contains(writable, f => f.Path.StartsWith("commits" + Path.DirectorySeparatorChar, StringComparison.Ordinal));
        Assert.Contains(writable, f => f.Path.StartsWith("kv" + Path.DirectorySeparatorChar, StringComparison.Ordinal));
        Assert.Empty(writable.Where(f => (f.Flags & ODsync) == 0).Select(f => f.Path));
    }

    [SkippableFact]
    public async Task Every_name_the_store_makes_is_in_its_directory_when_that_is_flushed()
    {
        // A file's contents written through are on the disk, but its name only once its directory is flushed after the
        // name was made: a log segment, a checkpoint file or the manifest's rename could otherwise be gone after a power
        // cut. Each flush notes the names its directory held; every name left at the end must be among them.
        Skip.If(OperatingSystem.IsWindows(), "Windows has no directory flush");
        string root = Path.TrimEndingDirectorySeparator(Path.GetFullPath(_dir));
        var durable = new ConcurrentDictionary<string, byte>(StringComparer.Ordinal);
        var flushes = new ConcurrentDictionary<string, int>(StringComparer.Ordinal);
        void Record(string directory)
        {
            string full = Path.TrimEndingDirectorySeparator(Path.GetFullPath(directory));
            if (full.StartsWith(root, StringComparison.Ordinal))
            {
                flushes.AddOrUpdate(full, 1, (_, n) => n + 1);
                foreach (string name in Directory.EnumerateFileSystemEntries(full))
                {
                    durable.TryAdd(name, 0);
                }
            }
        }

        DirectoryFlush.Flushed += Record;
        string[] names;
        try
        {
            var random = new Random(12);
            await using (FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(Options(Path.Combine(_dir, "data"))))
            {
                for (int i = 0; i < 4; i++)
                {
                    await store.PutAsync(new PutRequest(Bytes(random, 700), Bytes(random, 32), DateTimeOffset.UtcNow.AddDays(1)));
                    await store.CheckpointAsync();
                }

                // Before the stop's final checkpoint: the names the puts and checkpoints made.
                names = Directory.EnumerateFileSystemEntries(root, "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal).ToArray();
            }
        }
        finally
        {
            DirectoryFlush.Flushed -= Record;
        }

        foreach (string name in names)
        {
            output.WriteLine($"{Path.GetRelativePath(root, name)}: {(durable.ContainsKey(name) ? "flushed" : "NOT flushed")} (its directory flushed {flushes.GetValueOrDefault(Path.GetDirectoryName(name)!)} times)");
        }

        // The log segments, the commit records and a checkpoint's files at least: a test that found none checked little.
        Assert.Contains(names, n => n.EndsWith(Path.Combine("store", "wal.log.0"), StringComparison.Ordinal));
        Assert.Contains(names, n => n.EndsWith(Path.Combine("kv", "hlog.log.0"), StringComparison.Ordinal));
        Assert.Contains(names, n => n.EndsWith(Path.Combine("store", "checkpoint.manifest"), StringComparison.Ordinal));
        // The test's own directory (made by the test, not the store) is left out.
        Assert.Empty(names.Where(n => !durable.ContainsKey(n) && n != Path.Combine(root, "data")).Select(n => Path.GetRelativePath(root, n)));
    }
}
