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
}
