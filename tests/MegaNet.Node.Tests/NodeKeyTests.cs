using MegaNet.Node.Hosting;

namespace MegaNet.Node.Tests;

/// <summary>The node's identity: created once, whole, before the store exists; never silently replaced; private.</summary>
public sealed class NodeKeyTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("meganet-key-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void A_fresh_directory_gets_an_owner_only_key_that_later_starts_read_back()
    {
        NodeKey created = NodeKey.LoadOrCreate(_dir);
        NodeKey loaded = NodeKey.LoadOrCreate(_dir);
        Assert.Equal(created.PublicKey, loaded.PublicKey);
        Assert.Equal([NodeKey.FileName], Directory.EnumerateFileSystemEntries(_dir).Select(Path.GetFileName));
        if (!OperatingSystem.IsWindows())
        {
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(Path.Combine(_dir, NodeKey.FileName)));
        }
    }

    [SkippableFact]
    [System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
    public async Task A_data_directory_the_node_creates_is_owner_only_and_so_are_its_store_files()
    {
        Skip.If(OperatingSystem.IsWindows(), "Unix file modes");
        // The store holds every envelope, recipient address and sending key: the directory was made with the umask's
        // mode (world-readable) and the direct-I/O files with 0644; later the manifest, leaves.bin, the commit records,
        // store/'s own directories and the parents made for the data directory still took the umask's mode.
        string data = Path.Combine(_dir, "new", "data");
        await using TestNode node = await TestNode.StartAsync(dataDirectory: data);
        using (MegaNet.Api.MegaNetClient client = node.Client())
        {
            using MegaNet.Api.Identity alice = MegaNet.Api.Identity.Create(), bob = MegaNet.Api.Identity.Create();
            await client.SendAsync(alice, bob.Card, "x"u8.ToArray(), "text/plain");
        }

        await node.StopAsync();
        // After the stop's final checkpoint: every file and directory the node made. (The test runner's umask decides
        // whether this could fail without the modes the node sets; PrivateStoreFilesTests sets 022 for the store.)
        const UnixFileMode OwnerOnly = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;
        Assert.Equal(OwnerOnly, File.GetUnixFileMode(data));
        Assert.Equal(OwnerOnly, File.GetUnixFileMode(Path.GetDirectoryName(data)!));
        Assert.True(File.Exists(Path.Combine(data, "store", "wal.log.0")), "no write-ahead log segment was written");
        Assert.True(File.Exists(Path.Combine(data, "store", "checkpoint.manifest")), "the stop took no checkpoint");
        const UnixFileMode GroupOrOther = UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.GroupExecute
            | UnixFileMode.OtherRead | UnixFileMode.OtherWrite | UnixFileMode.OtherExecute;
        // Where the file system takes no direct I/O, FASTER's own device makes the log's segments with the umask's mode,
        // the one exception README names (the 0700 store/ keeps others out): not held to it there.
        bool walOnFastersDevice = MegaNet.Store.DirectFileDevice.DirectFlagFor(Path.Combine(data, "store")) == 0;
        Assert.Empty(Directory.EnumerateFileSystemEntries(data, "*", SearchOption.AllDirectories)
            .Where(e => !(walOnFastersDevice && Path.GetFileName(e).StartsWith("wal.log.", StringComparison.Ordinal)))
            .Where(e => (File.GetUnixFileMode(e) & GroupOrOther) != 0)
            .Select(e => $"{Path.GetRelativePath(data, e)} {Convert.ToString((int)File.GetUnixFileMode(e), 8)}"));
    }

    [Fact]
    public async Task Nodes_starting_at_once_on_a_fresh_directory_all_get_the_one_whole_key()
    {
        // Before: the key was created, then written, so a node starting meanwhile read an empty file ("must hold a
        // 32-byte seed") or failed to create it ("already exists").
        for (int round = 0; round < 40; round++)
        {
            string data = Path.Combine(_dir, $"d{round}");
            using var start = new Barrier(6);
            Task<byte[]>[] nodes = Enumerable.Range(0, 6).Select(_ => Task.Factory.StartNew(() =>
            {
                start.SignalAndWait();
                return NodeKey.LoadOrCreate(data).PublicKey;
            }, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default)).ToArray();
            byte[][] keys = await Task.WhenAll(nodes);
            Assert.All(keys, k => Assert.Equal(keys[0], k));
            // No temporary copy of the seed is left behind.
            Assert.Equal([NodeKey.FileName], Directory.EnumerateFileSystemEntries(data).Select(Path.GetFileName));
        }
    }

    [Fact]
    public void A_missing_key_beside_an_existing_store_is_refused_not_replaced()
    {
        // What a store's first open writes at once.
        Directory.CreateDirectory(Path.Combine(_dir, "store", "commits"));
        InvalidDataException e = Assert.Throws<InvalidDataException>(() => NodeKey.LoadOrCreate(_dir));
        Assert.Contains($"{Path.Combine(_dir, NodeKey.FileName)} is missing", e.Message, StringComparison.Ordinal);
        Assert.Contains("Restore node.key from a backup, or move", e.Message, StringComparison.Ordinal);
        Assert.False(File.Exists(Path.Combine(_dir, NodeKey.FileName)));
    }

    [Theory]
    [InlineData("")]
    [InlineData("lost+found")]
    public async Task A_missing_key_beside_an_empty_store_directory_is_created_and_the_node_starts(string inStore)
    {
        // An empty mount point, or a freshly made file system mounted at store/: no store was ever started there, so
        // there is no key to restore. Before, any store/ at all refused the first start.
        string data = Path.Combine(_dir, "data"); // the node's own: TestNode deletes it
        Directory.CreateDirectory(Path.Combine(data, "store", inStore));

        await using TestNode node = await TestNode.StartAsync(dataDirectory: data);
        using Api.MegaNetClient client = node.Client();
        Assert.Equal(NodeKey.LoadOrCreate(data).PublicKey, (await client.Relay.GetTreeHeadAsync(new Api.V1.GetTreeHeadRequest())).NodeKey.ToByteArray());
        node.AssertNoServerErrors();
    }

    [Theory]
    [InlineData(null)]
    [InlineData("")]
    [InlineData("lost+found")]
    public void A_key_from_an_earlier_start_whose_store_is_gone_starts_no_new_log_under_its_id(string? inStore)
    {
        // store/ deleted, an empty mount point, a new file system mounted there: the node created an empty store and
        // signed a new log under the old id, which clients' audits then reported as a fork.
        NodeKey.LoadOrCreate(_dir);
        string store = Path.Combine(_dir, "store");
        if (inStore is not null)
        {
            Directory.CreateDirectory(Path.Combine(store, inStore));
        }

        InvalidDataException e = Assert.Throws<InvalidDataException>(() => NodeKey.LoadForNode(_dir));
        Assert.Contains($"{Path.Combine(_dir, NodeKey.FileName)} is from an earlier start, but {store} {(inStore is null ? "is missing" : "is empty")}", e.Message, StringComparison.Ordinal);
        Assert.Contains($"Restore {store} from a backup", e.Message, StringComparison.Ordinal);
        Assert.Contains($"move {Path.Combine(_dir, NodeKey.FileName)} aside as well", e.Message, StringComparison.Ordinal);

        // Beside a store the key is read, and a key made by this start needs no store yet.
        File.WriteAllText(Path.Combine(Directory.CreateDirectory(Path.Combine(store, "commits")).FullName, "wal.commits"), "");
        NodeKey.LoadForNode(_dir);
        string fresh = Path.Combine(_dir, "fresh");
        NodeKey.LoadForNode(fresh);
    }

    [Fact]
    [System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
    public void A_key_others_may_read_is_refused_with_the_chmod_that_fixes_it()
    {
        NodeKey.LoadOrCreate(_dir);
        string path = Path.Combine(_dir, NodeKey.FileName);
        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
        InvalidDataException e = Assert.Throws<InvalidDataException>(() => NodeKey.LoadOrCreate(_dir));
        Assert.Contains("(mode 644)", e.Message, StringComparison.Ordinal);
        Assert.Contains($"chmod 600 {path}", e.Message, StringComparison.Ordinal);

        File.SetUnixFileMode(path, UnixFileMode.UserRead);
        NodeKey.LoadOrCreate(_dir);
    }

    [Fact]
    public void A_directory_named_node_key_is_named_as_such()
    {
        Directory.CreateDirectory(Path.Combine(_dir, NodeKey.FileName));
        InvalidDataException e = Assert.Throws<InvalidDataException>(() => NodeKey.LoadOrCreate(_dir));
        Assert.Contains($"{Path.Combine(_dir, NodeKey.FileName)} is a directory", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_key_that_cannot_be_written_gets_the_permission_advice()
    {
        // PrivateFile wraps the refused write in an IOException naming node.key (not its temporary copy); the advice
        // looked for an UnauthorizedAccessException itself and so said nothing about permissions.
        var options = new NodeOptions { DataDirectory = _dir };
        string path = Path.Combine(_dir, NodeKey.FileName);
        var refused = new IOException($"Access to the path '{path}' is denied.", new UnauthorizedAccessException($"Access to the path '{path}.1234.tmp' is denied."));
        string advice = $" The data directory {_dir} must be readable and writable by this user: fix its permissions or choose another with --data.";
        Assert.Equal(advice, MegaNet.Node.Cli.NodeCommand.Hint(refused, options));
        Assert.Equal(advice, MegaNet.Node.Cli.NodeCommand.Hint(new UnauthorizedAccessException("denied"), options));
        Assert.Equal("", MegaNet.Node.Cli.NodeCommand.Hint(new IOException("No space left on device", new IOException("inner")), options));
    }
}
