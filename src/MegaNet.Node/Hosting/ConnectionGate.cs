using System.Diagnostics;
using System.IO.Pipelines;
using System.Net;
using MegaNet.Core.Diagnostics;
using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.Logging;

namespace MegaNet.Node.Hosting;

/// <summary>
/// Caps the gRPC listener's open connections, node-wide and per client address, and closes a connection beyond a cap
/// as soon as it is accepted: before TLS or HTTP/2 spend anything on it.
/// </summary>
/// <remarks>
/// Every connection holds a file descriptor. Without a cap, 20,000 idle TCP connections from one host (at the usual
/// limit of 20,000 descriptors) left the node unable to open a file or load an assembly, and the .NET runtime aborted
/// the process ("Out of memory."). The node-wide cap is therefore kept below the open-file limit, with
/// <see cref="ReservedDescriptors"/> left for the store, the runtime and the metrics listener. The per-address cap
/// keeps one host from taking every slot (<see cref="ClientAddress"/>: IPv6 clients are counted by /64), and the last
/// tenth of the node-wide cap is kept for sites holding fewer than <see cref="LightSiteConnections"/>, so that the
/// few dozen sites the caps let fill the node (40 IPv4 hosts, 10 IPv6 /48s, each holding its connections open with a
/// subscription) do not shut every other client out.
/// </remarks>
internal sealed partial class ConnectionGate
{
    /// <summary>Descriptors left to the rest of the process: an idle node holds about 210 (mostly mapped assemblies),
    /// the store opens its log segments and checkpoint files, and the runtime and the metrics listener need some too.</summary>
    internal const int ReservedDescriptors = 512;

    /// <summary>Sites (an IPv4 address, or an IPv6 /48) holding fewer connections than this still get one in the last
    /// tenth of the node-wide cap (<see cref="Reserve"/>): a client needs one or two, and taking the reserve too needs
    /// hundreds more sites.</summary>
    internal const int LightSiteConnections = 4;

    /// <summary>A refusal is logged at most this often; the line says how many there were in between.</summary>
    private static readonly TimeSpan LogEvery = TimeSpan.FromSeconds(10);

    private readonly Dictionary<ClientAddress, int> _perAddress = [];
    private readonly Lock _lock = new();
    private readonly ILogger _logger;
    private int _open;
    private long _lastLog = long.MinValue;
    private long _unloggedRefusals;

    /// <param name="maxConnections">The configured node-wide cap.</param>
    /// <param name="maxPerAddress">The configured cap per client address (IPv6: per /64).</param>
    /// <param name="openFileLimit">The process's open-file limit (<see cref="Core.Interop.OpenFileLimit.Current"/>: the
    /// hard limit it started with), or null for none; lowers the node-wide cap, and below
    /// <see cref="ReservedDescriptors"/> + 16 is an error.</param>
    /// <param name="logger">Where refusals and a lowered cap are reported.</param>
    public ConnectionGate(int maxConnections, int maxPerAddress, long? openFileLimit, ILogger logger)
    {
        _logger = logger;
        MaxPerAddress = maxPerAddress;
        MaxConnections = maxConnections;
        if (openFileLimit is { } limit && limit - ReservedDescriptors < maxConnections)
        {
            if (limit - ReservedDescriptors < 16)
            {
                // .NET raises the soft limit to the hard one as the process starts, so the shell's ulimit -n does not
                // matter here: only a higher hard limit helps, and the advice says how to raise that one.
                throw new ArgumentException(
                    $"The open-file limit is {limit} (the hard limit, ulimit -Hn: .NET raises the soft one to it at start): that leaves no room for client connections once the node has its {ReservedDescriptors} descriptors; " +
                    $"the node needs at least {ReservedDescriptors + 16}. Raise the hard limit (LimitNOFILE=65536 in a systemd unit, nofile in /etc/security/limits.conf, or ulimit -Hn 65536 as root) and start again.");
            }

            MaxConnections = (int)(limit - ReservedDescriptors);
            LogCapLowered(logger, limit, MaxConnections, maxConnections);
        }
    }

    /// <summary>The node-wide cap in force (the configured one, or lower to fit the open-file limit).</summary>
    public int MaxConnections { get; }

    /// <summary>The cap per client address (an IPv4 address, or an IPv6 /64).</summary>
    public int MaxPerAddress { get; }

    /// <summary>The cap per IPv6 /48: four times <see cref="MaxPerAddress"/>.</summary>
    public int MaxPerSite => 4 * MaxPerAddress;

    /// <summary>The last slots of <see cref="MaxConnections"/>, a tenth, which only sites holding fewer than
    /// <see cref="LightSiteConnections"/> may take. Within the cap, not beyond it: the cap is what the open-file limit
    /// allows.</summary>
    public int Reserve => MaxConnections / 10;

    /// <summary>Connections open now.</summary>
    public int Open => Volatile.Read(ref _open);

    /// <summary>Kestrel connection middleware: add it to the listener before TLS.</summary>
    public ConnectionDelegate Admit(ConnectionDelegate next) => async connection =>
    {
        ClientAddress? key = ClientAddress.From(connection.RemoteEndPoint);
        string? refused = TryEnter(key);
        if (refused is not null)
        {
            MegaNetMetrics.ConnectionsRefused.Add(1, new KeyValuePair<string, object?>("reason", refused));
            NoteRefusal(connection.RemoteEndPoint, refused);
            return; // Kestrel closes the connection.
        }

        MegaNetMetrics.ConnectionOpened();
        try
        {
            if (await FirstBytesAsync(connection).ConfigureAwait(false) is { } closed)
            {
                if (closed == "silent")
                {
                    MegaNetMetrics.ConnectionsRefused.Add(1, new KeyValuePair<string, object?>("reason", closed));
                }

                return; // Kestrel closes the connection.
            }

            await next(connection).ConfigureAwait(false);
        }
        finally
        {
            // Counted out before the slot is given back, so whoever sees Open fall sees the instrument fall with it.
            MegaNetMetrics.ConnectionClosed();
            Leave(key);
        }
    };

    /// <summary>
    /// Waits for the connection's first bytes (a TLS hello or the HTTP/2 preface, which clients send at once), at most
    /// <see cref="FirstBytesTimeout"/>, leaving them unread for what comes next. Null when they came; else why the
    /// connection is to be closed: <c>silent</c> (nothing within the timeout) or <c>gone</c> (the peer closed or reset
    /// it first, as health probes do). Before this a connection that sent nothing held its slot until Kestrel's
    /// keep-alive timeout (130 s): one address could hold all of its slots for nothing.
    /// </summary>
    private static async Task<string?> FirstBytesAsync(ConnectionContext connection)
    {
        using var timeout = new CancellationTokenSource(FirstBytesTimeout);
        try
        {
            ReadResult first = await connection.Transport.Input.ReadAsync(timeout.Token).ConfigureAwait(false);
            // Nothing consumed and nothing examined: the next read returns these bytes again at once.
            connection.Transport.Input.AdvanceTo(first.Buffer.Start);
            return first.Buffer.IsEmpty ? "gone" : null;
        }
        catch (OperationCanceledException) when (timeout.IsCancellationRequested)
        {
            return "silent";
        }
        catch (Exception e) when (e is IOException or OperationCanceledException)
        {
            // Reset or aborted before a byte came: nothing to log (Kestrel logged an escaping reset as an error).
            return "gone";
        }
    }

    /// <summary>How long a new connection may stay silent before it is closed: 10 s.</summary>
    public static readonly TimeSpan FirstBytesTimeout = TimeSpan.FromSeconds(10);

    /// <summary>Takes a slot, or returns which cap refused it (<c>node</c>, <c>per_address</c>, <c>per_site</c>, or
    /// <c>reserve</c>: the node is in its last tenth and the client's site is not a light one).</summary>
    internal string? TryEnter(ClientAddress? key)
    {
        lock (_lock)
        {
            if (_open >= MaxConnections)
            {
                return "node";
            }

            if (key is { } k)
            {
                if (_perAddress.GetValueOrDefault(k) >= MaxPerAddress)
                {
                    return "per_address";
                }

                // An IPv6 /48 holds 65,536 /64s: its own cap keeps one site from taking every slot /64 by /64.
                if (k.IsIPv6 && _perAddress.GetValueOrDefault(k.Site) >= MaxPerSite)
                {
                    return "per_site";
                }

                // One more lookup, and only once the node is nearly full (for IPv4 the site is the address).
                if (_open >= MaxConnections - Reserve && _perAddress.GetValueOrDefault(k.Site) >= LightSiteConnections)
                {
                    return "reserve";
                }

                _perAddress[k] = _perAddress.GetValueOrDefault(k) + 1;
                if (k.IsIPv6)
                {
                    _perAddress[k.Site] = _perAddress.GetValueOrDefault(k.Site) + 1;
                }
            }

            _open++;
            return null;
        }
    }

    internal void Leave(ClientAddress? key)
    {
        lock (_lock)
        {
            _open--;
            if (key is { } k)
            {
                Decrement(k);
                if (k.IsIPv6)
                {
                    Decrement(k.Site);
                }
            }
        }
    }

    // Under _lock. IPv6 /64s and their /48s share the table under distinct keys (ClientAddress.Site).
    private void Decrement(ClientAddress key)
    {
        if (--System.Runtime.InteropServices.CollectionsMarshal.GetValueRefOrNullRef(_perAddress, key) == 0)
        {
            _perAddress.Remove(key);
        }
    }

    private void NoteRefusal(EndPoint? remote, string cap)
    {
        long now = Stopwatch.GetTimestamp();
        long last = Interlocked.Read(ref _lastLog);
        if (last != long.MinValue && Stopwatch.GetElapsedTime(last, now) < LogEvery || Interlocked.CompareExchange(ref _lastLog, now, last) != last)
        {
            Interlocked.Increment(ref _unloggedRefusals);
            return;
        }

        long others = Interlocked.Exchange(ref _unloggedRefusals, 0);
        if (cap == "per_site")
        {
            LogSiteCap(_logger, remote?.ToString() ?? "?", MaxPerSite, others);
        }
        else if (cap == "node")
        {
            LogNodeCap(_logger, remote?.ToString() ?? "?", MaxConnections, others);
        }
        else if (cap == "reserve")
        {
            LogReserve(_logger, remote?.ToString() ?? "?", MaxConnections - Reserve, Reserve, LightSiteConnections, others);
        }
        else
        {
            LogAddressCap(_logger, remote?.ToString() ?? "?", MaxPerAddress, others);
        }
    }

    [LoggerMessage(EventId = 20, Level = LogLevel.Warning,
        Message = "The open-file limit (the hard limit, ulimit -Hn: .NET raises the soft one to it at start) is {Limit}: the node takes at most {Allowed} client connections, not MaxConnections {Configured} " +
                  "(each holds a descriptor, and a process out of descriptors is aborted). Raise the hard limit (LimitNOFILE= in a systemd unit, nofile in /etc/security/limits.conf) to allow more.")]
    private static partial void LogCapLowered(ILogger logger, long limit, int allowed, int configured);

    [LoggerMessage(EventId = 21, Level = LogLevel.Warning,
        Message = "Refused a connection from {Remote}: the node has its {Max} connections open (MaxConnections); {Others} more refused since the last such line")]
    private static partial void LogNodeCap(ILogger logger, string remote, int max, long others);

    [LoggerMessage(EventId = 24, Level = LogLevel.Warning,
        Message = "Refused a connection from {Remote}: the node has {Open} connections open or more, and its last {Reserve} (a tenth of MaxConnections) are kept for sites " +
                  "(an IPv4 address, or an IPv6 /48) holding fewer than {Light}, which this one's does not; {Others} more refused since the last such line")]
    private static partial void LogReserve(ILogger logger, string remote, int open, int reserve, int light, long others);

    [LoggerMessage(EventId = 22, Level = LogLevel.Warning,
        Message = "Refused a connection from {Remote}: that address has {Max} connections open (MaxConnectionsPerAddress; raise it if many clients share an address behind a NAT); {Others} more refused since the last such line")]
    private static partial void LogAddressCap(ILogger logger, string remote, int max, long others);

    [LoggerMessage(EventId = 23, Level = LogLevel.Warning,
        Message = "Refused a connection from {Remote}: its IPv6 /48 has {Max} connections open (4 x MaxConnectionsPerAddress); {Others} more refused since the last such line")]
    private static partial void LogSiteCap(ILogger logger, string remote, int max, long others);
}
