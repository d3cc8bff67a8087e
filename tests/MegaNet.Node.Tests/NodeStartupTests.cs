using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

using Result = MegaNet.Node.Tests.MeganetProcess.Result;

namespace MegaNet.Node.Tests;

/// <summary>
/// <c>meganet node</c> as an operator starts it, with what goes wrong at start: an address it cannot bind, a data
/// directory that lost its key or cannot be written. Each ends with one line naming the option or file and what to
/// do, never a stack trace, and never with a node that runs under the wrong identity or listens where it was not told.
/// </summary>
public sealed class NodeStartupTests : IDisposable
{
    /// <summary>RFC 5737 TEST-NET-1: documentation only, never an address of this machine.</summary>
    private const string ForeignAddress = "192.0.2.1";

    private readonly string _dir = Directory.CreateTempSubdirectory("meganet-start-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string Data => Path.Combine(_dir, "data");

    private Task<Result> Node(params string[] args) => Node(null, args);

    private Task<Result> Node(IReadOnlyDictionary<string, string>? environment, params string[] args) =>
        MeganetProcess.RunAsync(_dir, environment, closeStdout: false, ["node", "--backend", "simd", .. args]);

    /// <summary>Exit code 1, <paramref name="expected"/> on stderr in one line, no stack frame.</summary>
    private static void AssertOneLineError(Result r, params string[] expected)
    {
        Assert.True(r.ExitCode == 1, $"exit code {r.ExitCode}, expected 1; stderr: {r.Stderr}");
        foreach (string part in expected)
        {
            Assert.Contains(part, r.Stderr, StringComparison.Ordinal);
        }

        Assert.Single(r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.DoesNotContain("   at ", r.Stderr + r.Stdout, StringComparison.Ordinal);
    }

    /// <summary>A self-signed certificate with its key, as a .pfx without password.</summary>
    private string Certificate()
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=meganet-test", key, HashAlgorithmName.SHA256);
        using X509Certificate2 certificate = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(1));
        string path = Path.Combine(_dir, "node.pfx");
        File.WriteAllBytes(path, certificate.Export(X509ContentType.Pkcs12));
        return path;
    }

    [Fact]
    public async Task An_address_this_machine_does_not_have_is_one_line_naming_the_option()
    {
        Assert.DoesNotContain(System.Net.NetworkInformation.NetworkInterface.GetAllNetworkInterfaces()
            .SelectMany(i => i.GetIPProperties().UnicastAddresses), a => a.Address.Equals(IPAddress.Parse(ForeignAddress)));

        AssertOneLineError(await Node("--data", Data, "--listen", $"{ForeignAddress}:7799", "--tls-cert", Certificate()),
            $"--listen {ForeignAddress}:7799: cannot listen there (Cannot assign requested address): this machine has no such address");

        Result r = await Node("--data", Data, "--listen", "127.0.0.1:0", "--metrics-listen", $"{ForeignAddress}:9799");
        AssertOneLineError(r, $"--metrics-listen {ForeignAddress}:9799: cannot listen there (Cannot assign requested address)", "give --metrics-listen one of its own addresses");
        Assert.DoesNotContain("--listen ", r.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_privileged_port_without_privileges_is_one_line_naming_the_option()
    {
        Assert.True(OperatingSystem.IsLinux(), "this test needs Linux (unshare)");
        // Below this port, binding needs CAP_NET_BIND_SERVICE in the network namespace's user namespace; a process in
        // a user namespace of its own (unshare -U) has none there, even when the test runs as root.
        int unprivileged = int.Parse(File.ReadAllText("/proc/sys/net/ipv4/ip_unprivileged_port_start").Trim(), System.Globalization.CultureInfo.InvariantCulture);
        Assert.True(unprivileged > 1, $"every port is unprivileged here (net.ipv4.ip_unprivileged_port_start = {unprivileged}); nothing to test");
        string listen = $"127.0.0.1:{unprivileged - 1}";
        var psi = new System.Diagnostics.ProcessStartInfo("unshare", ["-U", "dotnet", ExternalNode.MeganetPath(), "node", "--backend", "simd", "--data", Data, "--listen", listen])
        {
            WorkingDirectory = _dir,
        };
        AssertOneLineError(await MeganetProcess.RunAsync(psi),
            $"--listen {listen}: cannot listen there (Permission denied): this user may not listen on that port");
    }

    [Fact]
    public async Task A_store_whose_key_is_gone_does_not_start_under_a_new_identity()
    {
        await using (ExternalNode first = await ExternalNode.StartAsync(Data))
        {
            await first.KillAsync();
        }

        string key = Path.Combine(Data, "node.key");
        File.Move(key, key + ".lost");
        AssertOneLineError(await Node("--data", Data, "--listen", "127.0.0.1:0"), $"{key} is missing", "Restore node.key from a backup");
        Assert.False(File.Exists(key));
    }

    [Fact]
    public async Task A_key_whose_store_is_gone_does_not_start_a_new_log_under_its_id()
    {
        await using (ExternalNode first = await ExternalNode.StartAsync(Data))
        {
            await first.KillAsync();
        }

        // Only node.key restored (or the store deleted to "reset"): the node signed an empty log under the old id.
        string key = Path.Combine(Data, "node.key"), store = Path.Combine(Data, "store");
        Directory.Move(store, store + ".aside");
        AssertOneLineError(await Node("--data", Data, "--listen", "127.0.0.1:0"), $"{key} is from an earlier start, but {store} is missing",
            $"Restore {store} from a backup (or mount it); to start a new log deliberately, move {key} aside as well");
        Assert.False(Path.Exists(store));

        // An empty mount point where the store's file system is not mounted.
        Directory.CreateDirectory(store);
        AssertOneLineError(await Node("--data", Data, "--listen", "127.0.0.1:0"), $"{store} is empty");
        Assert.Empty(Directory.EnumerateFileSystemEntries(store));
    }

    [Fact]
    public async Task Host_configuration_outside_the_node_options_adds_no_listener()
    {
        // Kestrel reads endpoints from the host's configuration, which included every environment variable: this one
        // added a plaintext listener beside --listen, where neither the TLS rule nor the connection caps applied.
        // Held (bound, not listening) for the whole test: released, a port could be taken by another test's listener
        // before the connections below, and they would reach it. A node that took the extra endpoints would now fail
        // to start (address in use), which fails the test as a connection to them did.
        using System.Net.Sockets.Socket first = ExternalNode.HoldPort(), second = ExternalNode.HoldPort();
        int[] extra = [((IPEndPoint)first.LocalEndPoint!).Port, ((IPEndPoint)second.LocalEndPoint!).Port];
        var environment = new Dictionary<string, string>
        {
            ["Kestrel__Endpoints__Extra__Url"] = $"http://127.0.0.1:{extra[0]}",
            ["ASPNETCORE_Kestrel__Endpoints__Other__Url"] = $"http://127.0.0.1:{extra[1]}",
        };
        await using ExternalNode node = await ExternalNode.StartAsync(Data, environment);
        foreach (int port in extra)
        {
            using var client = new System.Net.Sockets.TcpClient();
            await Assert.ThrowsAsync<System.Net.Sockets.SocketException>(() => client.ConnectAsync(IPAddress.Loopback, port));
            Assert.DoesNotContain($":{port}", node.Output, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task A_data_directory_on_a_read_only_mount_is_named_as_such_not_as_in_use()
    {
        Assert.True(OperatingSystem.IsLinux(), "this test needs Linux (unshare, mount)");
        string fresh = Directory.CreateDirectory(Path.Combine(_dir, "fresh")).FullName;
        Result r = await ReadOnlyNodeAsync(fresh);
        AssertOneLineError(r, "Read-only file system", $"The data directory {Path.Combine(fresh, "data")} is on a read-only file system", "--data");

        // A store that exists: its lock file cannot be opened for writing, which is no other process holding it.
        string existing = Directory.CreateDirectory(Path.Combine(_dir, "existing")).FullName;
        await using (ExternalNode first = await ExternalNode.StartAsync(Path.Combine(existing, "data")))
        {
            await first.KillAsync();
        }

        r = await ReadOnlyNodeAsync(existing);
        AssertOneLineError(r, $"The store's lock file '{Path.Combine(existing, "data", "store", "LOCK")}' cannot be opened for writing", "Read-only file system", "--data");
        Assert.DoesNotContain("another process", r.Stderr, StringComparison.Ordinal);
    }

    /// <summary>meganet node with the data directory <c>MOUNT/data</c>, MOUNT bind-mounted read-only in a private user
    /// and mount namespace (no privileges needed, nothing left mounted).</summary>
    private async Task<Result> ReadOnlyNodeAsync(string mount)
    {
        const string Script = """
            mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" || exit 90
            exec dotnet "$2" node --backend simd --listen 127.0.0.1:0 --data "$1/data"
            """;
        var psi = new System.Diagnostics.ProcessStartInfo("unshare", ["-Urm", "sh", "-c", Script, "sh", mount, ExternalNode.MeganetPath()])
        {
            WorkingDirectory = _dir,
        };
        Result r = await MeganetProcess.RunAsync(psi);
        Assert.True(r.ExitCode != 90, $"could not bind-mount read-only in a private namespace (util-linux unshare, unprivileged user namespaces): {r.Stderr}");
        return r;
    }

    [Fact]
    public async Task Metrics_beyond_loopback_are_served_with_a_warning()
    {
        // Bound on every address, the only way to see the warning a real start gives; the test speaks to it over
        // loopback only.
        var environment = new Dictionary<string, string> { ["MEGANET_MegaNet__MetricsListen"] = "0.0.0.0:0" };
        await using ExternalNode node = await ExternalNode.StartAsync(Data, environment);
        int port = node.MetricsPort;
        Assert.Contains("reachable beyond this machine in plaintext without authentication", node.Output, StringComparison.Ordinal);
        // The warning comes from the options; that the node still serves them is asked of it.
        using var http = new HttpClient();
        Assert.Contains("# TYPE", await http.GetStringAsync(new Uri($"http://127.0.0.1:{port}/metrics")), StringComparison.Ordinal);
    }

    [Fact]
    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    public async Task A_data_directory_this_user_cannot_write_gets_the_permission_advice()
    {
        Assert.True(OperatingSystem.IsLinux(), "this test needs Linux (setpriv)");
        // An existing data directory the node's user may not write: the node key cannot be created, and the IOException
        // that says so carried no advice. Root may write anywhere, so as root the node runs as nobody (setpriv,
        // util-linux); the directories above stay open to it.
        const UnixFileMode ReadOnly = UnixFileMode.UserRead | UnixFileMode.UserExecute | UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute;
        File.SetUnixFileMode(_dir, ReadOnly | UnixFileMode.UserWrite);
        Directory.CreateDirectory(Data);
        File.SetUnixFileMode(Data, Environment.IsPrivilegedProcess ? ReadOnly | UnixFileMode.UserWrite : ReadOnly);
        string[] node = ["dotnet", ExternalNode.MeganetPath(), "node", "--backend", "simd", "--data", Data, "--listen", "127.0.0.1:0"];
        var psi = Environment.IsPrivilegedProcess
            ? new System.Diagnostics.ProcessStartInfo("setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", "env", $"HOME={_dir}", .. node])
            : new System.Diagnostics.ProcessStartInfo(node[0], node[1..]);
        psi.WorkingDirectory = _dir;
        string key = Path.Combine(Data, "node.key");
        AssertOneLineError(await MeganetProcess.RunAsync(psi), $"Access to the path '{key}' is denied.",
            $"The data directory {Data} must be readable and writable by this user: fix its permissions or choose another with --data.");
        Assert.Empty(Directory.EnumerateFileSystemEntries(Data));
    }
}
