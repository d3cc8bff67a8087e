using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace MegaNet.Node.Tests;

/// <summary>
/// The node binary in a process of its own, started as an operator starts it (<c>meganet node</c>), so a test can
/// kill it with SIGKILL. With <c>tmpfsMiB</c> the data directory lies on a tmpfs of that size, mounted in a private
/// user and mount namespace (<c>unshare -Urm</c>; no privileges needed, no mount left behind): a disk that really
/// fills. The tmpfs goes away with the namespace, so when the node exits its data directory is copied to
/// <c>copyTo</c> first.
/// </summary>
public sealed class ExternalNode : IAsyncDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _output = new();
    private readonly TaskCompletionSource<int> _pid = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _listening = new(TaskCreationOptions.RunContinuationsAsynchronously);

    private ExternalNode(Process process, Uri address)
    {
        _process = process;
        Address = address;
    }

    /// <summary>http://127.0.0.1:PORT</summary>
    public Uri Address { get; }

    /// <summary>The node's own process id (not a wrapper's).</summary>
    public int ProcessId => _pid.Task.IsCompletedSuccessfully ? _pid.Task.Result : throw new InvalidOperationException("The node's process id is not known yet.");

    /// <summary>What the node (and the wrapper) printed so far.</summary>
    public string Output
    {
        get
        {
            lock (_output)
            {
                return _output.ToString();
            }
        }
    }

    /// <summary>The port of the node's metrics listener, from its start line ("Metrics served at ..."): started with
    /// <c>MetricsListen</c> ADDRESS:0, the kernel's choice shows only there. A port taken by the test beforehand and
    /// released for the node (<see cref="FreePort"/>) could be given to another test's listener meanwhile.</summary>
    public int MetricsPort
    {
        get
        {
            System.Text.RegularExpressions.Match served = System.Text.RegularExpressions.Regex.Match(Output, @"Metrics served at http://\S+:([0-9]+)/metrics");
            Assert.True(served.Success, $"the node did not say where it serves metrics: {Output}");
            return int.Parse(served.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
        }
    }

    /// <summary>The built <c>meganet.dll</c> beside this test project's output.</summary>
    public static string MeganetPath()
    {
        string meganet = Path.Combine(AppContext.BaseDirectory.Replace(Path.Combine("tests", "MegaNet.Node.Tests"), Path.Combine("src", "MegaNet.Node"), StringComparison.Ordinal), "meganet.dll");
        Assert.True(File.Exists(meganet), $"{meganet} is missing; build the solution first");
        return meganet;
    }

    /// <summary>An address where nothing listens: a command that contacted a node there would say so. The port stays
    /// bound (not listening) by this process for the whole run, so no node another test starts on port 0 can be given
    /// it meanwhile (a port merely taken and released could be); a connection to it is refused at once.</summary>
    public static readonly string NoNode = $"http://127.0.0.1:{ReservedPort.Port}";

    private static class ReservedPort
    {
        private static readonly Socket Holder = HoldPort();

        public static int Port => ((IPEndPoint)Holder.LocalEndPoint!).Port;
    }

    /// <summary>A loopback port bound, not listening, for as long as the socket is kept: a connection to it is refused,
    /// and no listener another test opens on port 0 meanwhile is given it (as one may be a port that
    /// <see cref="FreePort"/> took and released).</summary>
    public static Socket HoldPort()
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return socket;
    }

    /// <summary>A loopback port nothing listens on right now.</summary>
    public static int FreePort()
    {
        using var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }

    /// <summary>The data directory made for this node by <see cref="StartTemporaryAsync"/> (deleted when the node is
    /// disposed); null when the caller gave one.</summary>
    public string? TemporaryDirectory { get; private set; }

    /// <summary><see cref="StartAsync"/> on a new temporary data directory (name starting <paramref name="prefix"/>),
    /// deleted when the node is disposed.</summary>
    public static async Task<ExternalNode> StartTemporaryAsync(string prefix, int? openFileLimit = null)
    {
        string data = Directory.CreateTempSubdirectory(prefix).FullName;
        try
        {
            ExternalNode node = await StartAsync(data, openFileLimit: openFileLimit);
            node.TemporaryDirectory = data;
            return node;
        }
        catch
        {
            Directory.Delete(data, recursive: true);
            throw;
        }
    }

    /// <summary>Starts <c>meganet node</c> on a free loopback port with the SIMD verifier and waits until it listens;
    /// with <c>openFileLimit</c> under that open-file limit (<c>prlimit --nofile</c>, util-linux).</summary>
    public static async Task<ExternalNode> StartAsync(string dataDirectory, IReadOnlyDictionary<string, string>? environment = null, int? tmpfsMiB = null, string? copyTo = null,
        int? openFileLimit = null)
    {
        // FreePort's port is released before the node binds it, so another test's listener (port 0) may take it in
        // between: the start is tried again on another port then (only then, and not on a tmpfs, whose data directory
        // was already copied out), at most three times.
        for (int attempt = 1; ; attempt++)
        {
            ExternalNode? node = await TryStartAsync(dataDirectory, environment, tmpfsMiB, copyTo, openFileLimit, lastAttempt: attempt == 3);
            if (node is not null)
            {
                return node;
            }
        }
    }

    private static async Task<ExternalNode?> TryStartAsync(string dataDirectory, IReadOnlyDictionary<string, string>? environment, int? tmpfsMiB, string? copyTo,
        int? openFileLimit, bool lastAttempt)
    {
        int port = FreePort();
        string listen = $"127.0.0.1:{port}";
        ProcessStartInfo psi;
        if (tmpfsMiB is { } size)
        {
            ArgumentNullException.ThrowIfNull(copyTo);
            const string Script = """
                mount -t tmpfs -o size="$1"m meganet-node "$2" || exit 90
                dotnet "$3" node --data "$2/data" --listen "$4" --backend simd &
                echo "NODEPID $!"
                wait $!
                rc=$?
                cp -a "$2/data" "$5" || exit 91
                exit $rc
                """;
            psi = new ProcessStartInfo("unshare", ["-Urm", "sh", "-c", Script, "sh", size.ToString(System.Globalization.CultureInfo.InvariantCulture), dataDirectory, MeganetPath(), listen, copyTo]);
        }
        else if (openFileLimit is { } limit)
        {
            // prlimit execs the node, so the process it starts is the node itself.
            psi = new ProcessStartInfo("prlimit", [$"--nofile={limit}:{limit}", "dotnet", MeganetPath(), "node", "--data", dataDirectory, "--listen", listen, "--backend", "simd"]);
        }
        else
        {
            psi = new ProcessStartInfo("dotnet", [MeganetPath(), "node", "--data", dataDirectory, "--listen", listen, "--backend", "simd"]);
        }

        psi.RedirectStandardOutput = true;
        psi.RedirectStandardError = true;
        foreach ((string name, string value) in environment ?? new Dictionary<string, string>())
        {
            psi.Environment[name] = value;
        }

        var node = new ExternalNode(Process.Start(psi)!, new Uri($"http://{listen}"));
        if (tmpfsMiB is null)
        {
            node._pid.SetResult(node._process.Id);
        }

        node._process.OutputDataReceived += node.OnLine;
        node._process.ErrorDataReceived += node.OnLine;
        node._process.BeginOutputReadLine();
        node._process.BeginErrorReadLine();
        Task exited = node._process.WaitForExitAsync();
        // Two minutes: a node's start (runtime start-up, JIT, store recovery) is slow on a loaded two-core CI machine.
        if (await Task.WhenAny(node._listening.Task, exited, Task.Delay(TimeSpan.FromMinutes(2))) != node._listening.Task)
        {
            bool hasExited = node._process.HasExited;
            await node.DisposeAsync();
            if (!lastAttempt && tmpfsMiB is null && hasExited && node.Output.Contains($"{listen}: cannot listen there (Address already in use)", StringComparison.Ordinal))
            {
                return null;
            }

            Assert.Fail(hasExited && node._process.ExitCode == 90
                ? $"could not mount a tmpfs in a private namespace (util-linux unshare, unprivileged user namespaces): {node.Output}"
                : $"the node did not start listening within 2 minutes (exited: {hasExited}): {node.Output}");
        }

        return node;
    }

    /// <summary>SIGKILL to the node itself (not a wrapper), then waits until the process (and any copy) is done.</summary>
    public async Task<int> KillAsync()
    {
        if (!_pid.Task.IsCompleted)
        {
            // The wrapper never said which process is the node: end them all.
            _process.Kill(entireProcessTree: true);
        }
        else
        {
            try
            {
                using Process node = Process.GetProcessById(_pid.Task.Result);
                node.Kill();
            }
            catch (ArgumentException)
            {
                // Already gone.
            }
        }

        // Bounded, so a process that outlives SIGKILL (or a copy off the tmpfs that never ends) fails the test
        // instead of hanging the run.
        using (var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2)))
        {
            try
            {
                await _process.WaitForExitAsync(timeout.Token);
            }
            catch (OperationCanceledException) when (timeout.IsCancellationRequested)
            {
                _process.Kill(entireProcessTree: true);
                Assert.Fail($"the node's process {_process.Id} had not exited 2 minutes after SIGKILL (killed with its tree now); output: {Output}");
            }
        }

        Assert.True(_process.ExitCode != 91, $"could not copy the data directory off the tmpfs: {Output}");
        return _process.ExitCode;
    }

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            await KillAsync();
        }

        _process.Dispose();
        if (TemporaryDirectory is not null)
        {
            Directory.Delete(TemporaryDirectory, recursive: true);
        }
    }

    private void OnLine(object sender, DataReceivedEventArgs e)
    {
        if (e.Data is not { } line)
        {
            return;
        }

        lock (_output)
        {
            _output.AppendLine(line);
        }

        if (line.StartsWith("NODEPID ", StringComparison.Ordinal))
        {
            _pid.TrySetResult(int.Parse(line.AsSpan(8), System.Globalization.CultureInfo.InvariantCulture));
        }
        else if (line.Contains("MegaNet node listening", StringComparison.Ordinal))
        {
            _listening.TrySetResult();
        }
    }
}
