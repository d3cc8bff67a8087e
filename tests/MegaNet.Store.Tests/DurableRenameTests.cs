using MegaNet.Core.Interop;
using MegaNet.Store;

namespace MegaNet.Store.Tests;

public sealed class DurableRenameTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("meganet-rename-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void Replace_puts_the_new_file_in_place_of_the_old_and_leaves_no_temporary()
    {
        string path = Path.Combine(_dir, "manifest"), temp = path + ".tmp";
        File.WriteAllText(path, "old");
        File.WriteAllText(temp, "new");

        DurableRename.Replace(temp, path);

        Assert.Equal("new", File.ReadAllText(path));
        Assert.False(File.Exists(temp));
    }

    [Fact]
    public void A_missing_temporary_file_is_an_error_and_the_old_file_stays()
    {
        string path = Path.Combine(_dir, "manifest");
        File.WriteAllText(path, "old");

        Assert.ThrowsAny<IOException>(() => DurableRename.Replace(path + ".tmp", path));
        Assert.Equal("old", File.ReadAllText(path));
    }

    [Fact]
    public void Directories_are_created_with_their_missing_parents_and_a_file_in_the_way_is_an_error()
    {
        string nested = Path.Combine(_dir, "store", "kv", "checkpoints");
        DirectoryFlush.CreateDirectory(nested);
        Assert.True(Directory.Exists(nested));
        File.WriteAllText(Path.Combine(nested, "kept"), "x");
        DirectoryFlush.CreateDirectory(nested);
        Assert.True(File.Exists(Path.Combine(nested, "kept")));

        string blocked = Path.Combine(_dir, "file");
        File.WriteAllText(blocked, "not a directory");
        Assert.ThrowsAny<IOException>(() => DirectoryFlush.CreateDirectory(Path.Combine(blocked, "below")));
    }
}
