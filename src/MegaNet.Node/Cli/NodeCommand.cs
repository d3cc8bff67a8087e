using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using MegaNet.Core.Verification;
using MegaNet.Node.Hosting;
using MegaNet.Store;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Configuration.EnvironmentVariables;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace MegaNet.Node.Cli;

/// <summary><c>meganet node</c>: runs the relay node until Ctrl+C / SIGTERM, then drains admission and commits.</summary>
internal static partial class NodeCommand
{
    public static Command Build()
    {
        var defaults = new NodeOptions();
        var data = new Option<string?>("--data") { Description = $"Data directory (node key, store). Default {defaults.DataDirectory}." };
        var listen = new Option<string?>("--listen") { Description = $"ADDRESS:PORT for gRPC over HTTP/2 (port 0: a free one). Default {defaults.Listen}; a non-loopback address needs --tls-cert." };
        var backend = new Option<string?>("--backend", "-b") { Description = "Verifier backend: auto (default), simd, gpu, reference, gpu-cpu (the GPU kernels on ILGPU's CPU accelerator, routed like gpu: for testing a GPU node without a GPU; slow, never for serving)." };
        var threads = new Option<int?>("--threads", "-t")
        {
            Description = "Verifier threads. Default: all cores but one (at least one), leaving a core to the network and the store.",
            CustomParser = CliParsers.OptionalInt32,
        };
        var tlsCert = new Option<string?>("--tls-cert") { Description = "TLS certificate (PEM, or PFX/P12 without a password): gRPC is served over TLS, on loopback too; required for a non-loopback --listen." };
        var tlsKey = new Option<string?>("--tls-key") { Description = "PEM private key for a PEM --tls-cert whose file does not hold it." };
        var metrics = new Option<string?>("--metrics-listen") { Description = "ADDRESS:PORT serving Prometheus text at /metrics over HTTP/1.1. Default: off." };
        var config = new Option<string>("--config") { Description = "Settings file (section \"MegaNet\"); relative paths in it (DataDirectory, TlsCertificate, TlsKey) are read from its directory. Default meganet.json if present; a file named here must exist.", DefaultValueFactory = _ => "meganet.json" };
        var command = new Command("node",
            "Run the relay node. Settings come from meganet.json (section MegaNet), then MEGANET_MegaNet__<Option> environment variables, then these flags; " +
            "every option and its default is listed in README.")
        {
            data, listen, backend, threads, tlsCert, tlsKey, metrics, config,
        };
        command.SetAction(async (parse, ct) =>
        {
            NodeOptions options;
            try
            {
                if (string.IsNullOrWhiteSpace(parse.GetValue(config)))
                {
                    // Path.GetFullPath's own words ("The value cannot be an empty string.") named no option.
                    throw new UsageException("node", "--config is empty; give a settings file (or leave --config out to read meganet.json if present).");
                }

                string configPath = Path.GetFullPath(parse.GetValue(config)!);
                // The default meganet.json is optional; a file named with --config must be there.
                if (parse.GetResult(config) is { Implicit: false } && !File.Exists(configPath))
                {
                    throw new ArgumentException(Directory.Exists(configPath)
                        ? $"--config {configPath} is a directory; give a settings file."
                        : $"--config {configPath} does not exist.");
                }

                IConfigurationRoot configuration;
                try
                {
                    configuration = new ConfigurationBuilder()
                        .AddJsonFile(configPath, optional: true)
                        .AddEnvironmentVariables("MEGANET_")
                        .Build();
                }
                catch (UnauthorizedAccessException e)
                {
                    // "Access to the path '…' is denied." said neither that it is the settings file nor what to do.
                    throw new ArgumentException($"The settings file {configPath} cannot be read by this user ({e.Message}): give the user the node runs as read access to it, or name another with --config.", e);
                }

                RejectUnknownSettings(configuration, configPath);
                options = new NodeOptions();
                configuration.GetSection(Section).Bind(options);
                ResolvePathsAgainst(configuration, configPath, options);
                options.DataDirectory = parse.GetValue(data) ?? options.DataDirectory;
                options.Listen = parse.GetValue(listen) ?? options.Listen;
                options.Backend = parse.GetValue(backend) ?? options.Backend;
                options.Threads = parse.GetValue(threads) ?? options.Threads;
                options.TlsCertificate = parse.GetValue(tlsCert) ?? options.TlsCertificate;
                options.TlsKey = parse.GetValue(tlsKey) ?? options.TlsKey;
                options.MetricsListen = parse.GetValue(metrics) ?? options.MetricsListen;
                options.Flags = new (string Setting, Option Flag)[]
                {
                    (nameof(NodeOptions.Listen), listen), (nameof(NodeOptions.Backend), backend), (nameof(NodeOptions.Threads), threads),
                    (nameof(NodeOptions.MetricsListen), metrics), (nameof(NodeOptions.DataDirectory), data),
                    (nameof(NodeOptions.TlsCertificate), tlsCert), (nameof(NodeOptions.TlsKey), tlsKey),
                }.Where(f => parse.GetResult(f.Flag) is { Implicit: false }).ToDictionary(f => f.Setting, f => f.Flag.Name);
                options.Origins = Origins(configuration, configPath);
                options.Validate();
            }
            catch (Exception e) when (e is ArgumentException or InvalidOperationException or FormatException or InvalidDataException
                or UnauthorizedAccessException or IOException)
            {
                // A malformed settings file: "Failed to load configuration from file '…'." says where; its inner
                // exceptions say what ("Could not parse the JSON file.") and at which line and byte.
                string detail = "";
                for (Exception? inner = e is InvalidDataException ? e.InnerException : null; inner is not null; inner = inner.InnerException)
                {
                    detail += $" {Message(inner)}";
                }

                Console.Error.WriteLine($"meganet node: {Message(e)}{detail}");
                if (e is UsageException usage)
                {
                    Console.Error.WriteLine(usage.Hint);
                }

                return 1;
            }

            // Before the data directory is touched: a first start on a taken port left a new node key and store behind.
            foreach ((IPEndPoint? endpoint, string option) in new[] { ((IPEndPoint?)options.ListenEndPoint, "--listen"), (options.MetricsEndPoint, "--metrics-listen") })
            {
                if (endpoint is { Port: not 0 } && BindProblem(endpoint) is { } problem)
                {
                    Console.Error.WriteLine(problem.SocketErrorCode == SocketError.AddressAlreadyInUse
                        ? $"meganet node: {option} {endpoint}: address already in use. {InUseAdvice(metrics: option == "--metrics-listen")}"
                        : $"meganet node: {BindFailure(problem, options, option == "--metrics-listen")}");
                    return 1;
                }
            }

            bool started = false;
            // Until the host handles the signals (from app.StartAsync on), a signal stops the start here: unhandled, it
            // ended the process during the verifier's start (a GPU kernel compile), the key or the store's replay.
            using var interruption = new StartInterruption(ct);
            try
            {
                // The host's own "Hosting failed to start" error repeats, with a stack trace, the start failure this
                // command reports below in one line. Its other errors are the node's to report: a failed background
                // service (NodeHost logs it and ExitCode says so).
                await using WebApplication app = NodeHost.Build(options, logging: l => l.AddFilter(HostCategory, LogLevel.None));
                await NodeHost.StartAsync(app, interruption.Token);
                started = true;
                interruption.Dispose();
                // The host's console lifetime handles Ctrl+C / SIGTERM (MeganetCommand leaves those signals to it):
                // this returns once admission has drained and the store has taken its final checkpoint.
                await app.WaitForShutdownAsync(CancellationToken.None);
                // Non-zero when draining admission failed, the store could not shut down cleanly or a background
                // service failed (each logged). Returned from here, the process's exit code: the stop records it for
                // this node only, so a node embedded elsewhere (tests, `meganet load`) leaves its process's alone.
                int exitCode = NodeHost.ExitCode(app);
                if (exitCode == 0)
                {
                    LogStoppedCleanly(app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("MegaNet.Node"));
                }

                return exitCode;
            }
            catch (SocketException e)
            {
                // Not an IOException: an address this machine does not have, or a port below 1024 without privileges.
                Console.Error.WriteLine($"meganet node: {BindFailure(e, options)}");
                return 1;
            }
            catch (Exception e) when (e is BackendUnavailableException or StoreCorruptException or StoreInUseException or StoreUnavailableException or InvalidDataException or ArgumentException
                or IOException or UnauthorizedAccessException or CryptographicException)
            {
                Console.Error.WriteLine($"meganet node: {Message(e)}{Hint(e, options)}");
                return 1;
            }
            catch (OperationCanceledException) when (!started)
            {
                // Ctrl+C (or SIGTERM) while the node was still starting: StartInterruption, or the host's stop, cancelled
                // its start, and disposing the app has released what was opened (the verifier, the store and its lock).
                // 130 or 143, as a shell reports a process that signal ended, and as every other command exits.
                Console.Error.WriteLine("meganet node: interrupted while starting; nothing was served.");
                return interruption.ExitCode;
            }
            catch (Exception e)
            {
                // Anything else (a library's exception nobody foresaw): still one line, never a stack trace, and the
                // exception's type, which its message alone may not name.
                string inner = e.InnerException is { } cause && cause.Message != e.Message ? $" ({Message(cause)})" : "";
                Console.Error.WriteLine($"meganet node: {Message(e)}{inner} [{e.GetType().FullName}]");
                return 1;
            }
        });
        return command;
    }

    /// <summary>
    /// SIGINT and SIGTERM while the node starts, before its host handles them: the first cancels <see cref="Token"/>,
    /// which stops the start after the step under way (a GPU backend's kernel compile ends first); a second, from
    /// <see cref="Interruption.SecondSignalAfter"/> on, is left to end the process at once, as it would by default.
    /// </summary>
    private sealed class StartInterruption : IDisposable
    {
        private readonly CancellationTokenSource _cancel;
        private readonly PosixSignalRegistration _interrupt;
        private readonly PosixSignalRegistration _terminate;
        private long _firstSignalAt;
        private int _firstSignal; // 0 until a signal arrives
        private int _disposed;

        public StartInterruption(CancellationToken outer)
        {
            _cancel = CancellationTokenSource.CreateLinkedTokenSource(outer);
            _interrupt = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);
            _terminate = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
        }

        /// <summary>128 + the number of the first signal: 143 for SIGTERM, else 130 (SIGINT, or none seen here).</summary>
        public int ExitCode => Interruption.ExitCodeFor(terminated: Volatile.Read(ref _firstSignal) == (int)PosixSignal.SIGTERM);

        /// <summary>Cancelled by the first signal (or by the command's own token).</summary>
        public CancellationToken Token => _cancel.Token;

        /// <summary>Leaves the signals to the host; safe to call twice.</summary>
        public void Dispose()
        {
            if (Interlocked.Exchange(ref _disposed, 1) == 0)
            {
                _interrupt.Dispose();
                _terminate.Dispose();
                _cancel.Dispose();
            }
        }

        private void OnSignal(PosixSignalContext context)
        {
            long first = Interlocked.CompareExchange(ref _firstSignalAt, Stopwatch.GetTimestamp(), 0);
            if (first != 0)
            {
                // `timeout` signals the command and then its process group: one signal arrives twice at once.
                if (Stopwatch.GetElapsedTime(first) >= Interruption.SecondSignalAfter)
                {
                    Console.Error.WriteLine("meganet node: interrupted again while starting; ended at once.");
                    return; // context.Cancel stays false: the signal ends the process
                }

                context.Cancel = true;
                return;
            }

            context.Cancel = true;
            Volatile.Write(ref _firstSignal, (int)context.Signal);
            Console.Error.WriteLine("meganet node: interrupted while starting; stopping once the current step is done (interrupt again to end it at once).");
            try
            {
                _cancel.Cancel();
            }
            catch (ObjectDisposedException)
            {
                // The start had finished and Dispose ran while this handler was on its way; the host has the signal.
            }
        }
    }

    /// <summary>The configuration section that holds the node's settings.</summary>
    internal const string Section = "MegaNet";

    private const string HostCategory = "Microsoft.Extensions.Hosting.Internal.Host";

    [LoggerMessage(EventId = 3, Level = LogLevel.Information, Message = "MegaNet node stopped cleanly (store checkpointed)")]
    private static partial void LogStoppedCleanly(ILogger logger);

    /// <summary>The settings that name files or directories: a relative one from the settings file is read from that
    /// file's directory.</summary>
    private static readonly string[] PathSettings = [nameof(NodeOptions.DataDirectory), nameof(NodeOptions.TlsCertificate), nameof(NodeOptions.TlsKey)];

    /// <summary>
    /// Makes the relative paths <paramref name="configPath"/> gave (<see cref="PathSettings"/>) relative to its
    /// directory, as nginx and systemd units read theirs: <c>--config /etc/meganet/meganet.json</c> with
    /// <c>"TlsCertificate": "node.pem"</c> means /etc/meganet/node.pem wherever the node is started. Paths from the
    /// environment or a flag stay the current directory's, as a shell reads them.
    /// </summary>
    internal static void ResolvePathsAgainst(IConfiguration configuration, string configPath, NodeOptions options)
    {
        string directory = Path.GetDirectoryName(Path.GetFullPath(configPath))!;
        foreach (string setting in PathSettings)
        {
            if (configuration.GetSection(Section)[setting] is { Length: > 0 } value && !Path.IsPathRooted(value)
                && !FromEnvironment(configuration, Section, setting))
            {
                string resolved = Path.GetFullPath(value, directory);
                switch (setting)
                {
                    case nameof(NodeOptions.DataDirectory):
                        options.DataDirectory = resolved;
                        break;
                    case nameof(NodeOptions.TlsCertificate):
                        options.TlsCertificate = resolved;
                        break;
                    default:
                        options.TlsKey = resolved;
                        break;
                }
            }
        }
    }

    /// <summary>MEGANET_ variables that are no node setting but are read elsewhere (the GPU backend, tests, perf scripts).</summary>
    private static readonly string[] OtherVariables = ["GPU_INLINE_PTX", "GPU_HOST_HASH", "GPU_CHUNK", "GPU_GROUP", "PTX_OUT", "TEST_SEED", "EXPECT_TIER", "EXPECT_GPU"];

    /// <summary>
    /// Refuses a key in the "MegaNet" section that no setting has, and anything outside that section (a misspelt
    /// section, settings at the top of the file, <c>MEGANET_MEGANET_THREADS</c> with one underscore): the binder would
    /// ignore it, so a misspelt setting would silently keep its default.
    /// </summary>
    internal static void RejectUnknownSettings(IConfiguration configuration, string configPath)
    {
        foreach (IConfigurationSection top in configuration.GetChildren())
        {
            if (string.Equals(top.Key, Section, StringComparison.OrdinalIgnoreCase))
            {
                continue;
            }

            bool fromEnvironment = FromEnvironment(configuration, null, top.Key);
            if (fromEnvironment && OtherVariables.Contains(top.Key, StringComparer.OrdinalIgnoreCase))
            {
                continue;
            }

            throw new ArgumentException(fromEnvironment
                ? $"Unknown environment variable MEGANET_{top.Key}: a node setting is MEGANET_{Section}__<Option>, with two underscores before the option (e.g. MEGANET_{Section}__Threads)."
                : $"Unknown key \"{top.Key}\" at the top of {configPath}: node settings go in the \"{Section}\" section, e.g. {{ \"{Section}\": {{ \"Threads\": 2 }} }}.");
        }

        string[] known = typeof(NodeOptions).GetProperties(BindingFlags.Public | BindingFlags.Instance)
            .Where(p => p.CanWrite)
            .Select(p => p.Name)
            .Order(StringComparer.Ordinal)
            .ToArray();
        // Binding skips what has the wrong shape without a word: {"MegaNet": 5}, or "Threads": [1, 2], started the node
        // on its defaults.
        IConfigurationSection section = configuration.GetSection(Section);
        if (section.Value is not null)
        {
            string source = configuration is IConfigurationRoot sources && sources.Providers.OfType<EnvironmentVariablesConfigurationProvider>().Any(p => p.TryGet(Section, out _))
                ? $"the environment variable MEGANET_{Section}"
                : configPath;
            throw new ArgumentException($"\"{Section}\" in {source} must be an object of settings, e.g. {{ \"{Section}\": {{ \"Threads\": 2 }} }}, not a single value.");
        }

        foreach (IConfigurationSection setting in section.GetChildren())
        {
            // Where a bad setting came from, worked out only for the error (it walks every provider).
            string Where() => FromEnvironment(configuration, Section, setting.Key) ? $"environment variable MEGANET_{Section}__{setting.Key}" : configPath;
            if (!known.Contains(setting.Key, StringComparer.OrdinalIgnoreCase))
            {
                throw new ArgumentException($"Unknown setting {Section}:{setting.Key} (from {Where()}). Settings: {string.Join(", ", known)}.");
            }

            if (setting.Value is null)
            {
                // The JSON provider gives null and {} alike a null value and no children: "not a list or an object" read
                // as wrong for "Threads": null.
                throw new ArgumentException(setting.GetChildren().Any()
                    ? $"Setting {Section}:{setting.Key} (from {Where()}) must be a single value (a number, a string, true or false), not a list or an object."
                    : $"Setting {Section}:{setting.Key} (from {Where()}) is null (or an empty object): give it a value (a number, a string, true or false), or remove the key to keep its default.");
            }

            // The binder's own words ("Failed to convert configuration value at 'MegaNet:Threads' to type
            // 'System.Int32'") name neither the file nor the variable, nor what would do.
            Type type = typeof(NodeOptions).GetProperty(setting.Key, BindingFlags.Public | BindingFlags.Instance | BindingFlags.IgnoreCase)!.PropertyType;
            if (ValidValue(Nullable.GetUnderlyingType(type) ?? type) is { } valid && !Converts(type, setting.Value))
            {
                // A whole number too large for the setting's type is one, so "not a whole number" read as wrong.
                if (valid.What == "a whole number" && System.Numerics.BigInteger.TryParse(setting.Value.Trim(), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out System.Numerics.BigInteger big))
                {
                    bool wide = (Nullable.GetUnderlyingType(type) ?? type) == typeof(long);
                    string bound = big.Sign < 0
                        ? (wide ? long.MinValue : int.MinValue).ToString("N0", CultureInfo.InvariantCulture)
                        : (wide ? long.MaxValue : int.MaxValue).ToString("N0", CultureInfo.InvariantCulture);
                    throw new ArgumentException($"Setting {Section}:{setting.Key} (from {Where()}) is '{setting.Value}', {(big.Sign < 0 ? "less" : "more")} than it can hold ({(big.Sign < 0 ? "at least" : "at most")} {bound}; README gives each option's range): give a value in its range.");
                }

                throw new ArgumentException($"Setting {Section}:{setting.Key} (from {Where()}) is '{setting.Value}', not {valid.What}: give {valid.Example}.");
            }
        }
    }

    /// <summary>What a value of a setting of <paramref name="type"/> is, and an example; null for strings (any will
    /// bind; what they mean is checked by <see cref="NodeOptions.Validate"/>).</summary>
    private static (string What, string Example)? ValidValue(Type type) =>
        type == typeof(int) || type == typeof(long) ? ("a whole number", "one such as 2")
        : type == typeof(double) ? ("a number", "one such as 200 or 0.5")
        : type == typeof(bool) ? ("true or false", "true or false")
        : null;

    /// <summary>Whether the configuration binder can convert <paramref name="value"/> to <paramref name="type"/> (it
    /// uses the type's converter, invariant culture).</summary>
    private static bool Converts(Type type, string value)
    {
        try
        {
            _ = System.ComponentModel.TypeDescriptor.GetConverter(type).ConvertFromInvariantString(value);
            return true;
        }
        catch (Exception e) when (e is FormatException or ArgumentException or NotSupportedException || e.InnerException is FormatException or OverflowException)
        {
            return false;
        }
    }

    /// <summary>Where each setting the file or the environment gave came from, for <see cref="NodeOptions.Validate"/>'s
    /// words: "the environment variable MEGANET_MegaNet__Threads" or the settings file's path.</summary>
    internal static Dictionary<string, string> Origins(IConfiguration configuration, string configPath)
    {
        var origins = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        foreach (IConfigurationSection setting in configuration.GetSection(Section).GetChildren())
        {
            origins[setting.Key] = FromEnvironment(configuration, Section, setting.Key) ? $"the environment variable MEGANET_{Section}__{setting.Key}" : configPath;
        }

        return origins;
    }

    /// <summary>Whether an environment variable gave <paramref name="key"/> under <paramref name="parentPath"/> (null:
    /// the top level).</summary>
    private static bool FromEnvironment(IConfiguration configuration, string? parentPath, string key) =>
        configuration is IConfigurationRoot root
        && root.Providers.Any(p => p is EnvironmentVariablesConfigurationProvider && p.GetChildKeys([], parentPath).Contains(key, StringComparer.OrdinalIgnoreCase));

    private static string Message(Exception e) => ErrorText.Plain(e);

    // EROFS, the same on Linux and macOS; .NET passes an errno it has no exception type for on as the HResult.
    private const int ReadOnlyFileSystem = 30;

    /// <summary>
    /// One line for a listener the OS would not bind. Kestrel's <see cref="SocketException"/> names neither the address
    /// nor the option; it binds <c>--listen</c> first, so if that address can be bound here the metrics listener failed.
    /// </summary>
    internal static string BindFailure(SocketException e, NodeOptions options, bool? metricsListener = null)
    {
        bool metrics = metricsListener ?? (!string.IsNullOrEmpty(options.MetricsListen) && BindProblem(options.ListenEndPoint) is null);
        string option = metrics ? "--metrics-listen" : "--listen";
        string address = metrics ? options.MetricsListen! : options.Listen;
        string fix = e.SocketErrorCode switch
        {
            SocketError.AddressNotAvailable => $"this machine has no such address; give {option} one of its own addresses (`ip address` lists them) or 0.0.0.0",
            SocketError.AccessDenied => $"this user may not listen on that port (ports below 1024 need CAP_NET_BIND_SERVICE); give {option} a port from 1024 up",
            _ => $"give {option} another address",
        };
        return $"{option} {address}: cannot listen there ({e.Message}): {fix}.";
    }

    /// <summary>Why <paramref name="endpoint"/> cannot be listened on now, or null when it can (checked by binding a
    /// socket and closing it).</summary>
    private static SocketException? BindProblem(IPEndPoint endpoint)
    {
        try
        {
            using var socket = new Socket(endpoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
            // As Kestrel binds: connections of a node that just stopped (TIME_WAIT) do not hold the port, a listener does.
            socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
            socket.Bind(endpoint);
            return null;
        }
        catch (SocketException e)
        {
            return e;
        }
    }

    /// <summary>What to do about a taken address, for the option that chose it.</summary>
    private static string InUseAdvice(bool metrics) => metrics
        ? "Another program listens there: stop it, or choose another metrics address with --metrics-listen."
        : "Another node (or program) listens there: stop it, or choose another address with --listen.";

    /// <summary>What to do about a start failure whose message alone does not say.</summary>
    internal static string Hint(Exception e, NodeOptions options)
    {
        if (e.InnerException is Microsoft.AspNetCore.Connections.AddressInUseException || e is Microsoft.AspNetCore.Connections.AddressInUseException)
        {
            // Kestrel's message names the address that is taken; name the option that chose it.
            bool metrics = options.MetricsEndPoint is { } metricsEndPoint && e.Message.Contains(metricsEndPoint.ToString(), StringComparison.Ordinal)
                && !e.Message.Contains(options.ListenEndPoint.ToString(), StringComparison.Ordinal);
            return " " + InUseAdvice(metrics);
        }

        if (e is IOException { HResult: ReadOnlyFileSystem } || e.InnerException is IOException { HResult: ReadOnlyFileSystem })
        {
            return $" The data directory {Path.GetFullPath(options.DataDirectory)} is on a read-only file system: mount it read-write, or choose another with --data.";
        }

        if (e is DataDirectoryException)
        {
            return " Choose another with --data (or DataDirectory in meganet.json).";
        }

        // PrivateFile (the node key) wraps a refused write in an IOException that names the file, not the temporary copy.
        if (e is UnauthorizedAccessException || e.InnerException is UnauthorizedAccessException)
        {
            return $" The data directory {Path.GetFullPath(options.DataDirectory)} must be readable and writable by this user: fix its permissions or choose another with --data.";
        }

        return "";
    }
}
