using System.Net;
using System.Net.Sockets;

namespace MegaNet.Node.Tests;

/// <summary>
/// A TCP proxy on 127.0.0.1 in front of a node that can make its open connections half-open: <see cref="Freeze"/>
/// stops carrying bytes on them in both directions, and keeps their sockets open, as a peer that vanished without a FIN
/// or RST (a laptop that slept, a NAT that forgot the mapping) leaves them. Connections made later are carried again.
/// </summary>
public sealed class FreezableProxy : IAsyncDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly IPEndPoint _target;
    private readonly CancellationTokenSource _stop = new();
    private readonly List<(Socket Client, Socket Server, CancellationToken Frozen)> _sockets = [];
    private readonly Task _accepting;
    private CancellationTokenSource _frozen = new();

    public FreezableProxy(Uri target)
    {
        _target = new IPEndPoint(IPAddress.Parse(target.Host), target.Port);
        _listener.Start();
        Address = new Uri($"http://127.0.0.1:{((IPEndPoint)_listener.LocalEndpoint).Port}");
        _accepting = AcceptAsync();
    }

    /// <summary>Where clients connect.</summary>
    public Uri Address { get; }

    /// <summary>Connections accepted so far.</summary>
    public int Connections { get; private set; }

    private int _toClientReads;

    /// <summary>Reads carried from the node to its clients so far (a keepalive on an idle subscription is one).</summary>
    public int ToClientReads => Volatile.Read(ref _toClientReads);

    private long _toClientBytes;

    /// <summary>Bytes carried from the node to its clients so far (counted before they are passed on, so a client that
    /// acts on them finds them counted).</summary>
    public long ToClientBytes => Interlocked.Read(ref _toClientBytes);

    /// <summary>Stops carrying bytes on every connection open now; their sockets stay open.</summary>
    public void Freeze()
    {
        CancellationTokenSource frozen;
        lock (_sockets)
        {
            frozen = _frozen;
            _frozen = new CancellationTokenSource();
        }

        frozen.Cancel();
    }

    /// <summary>Closes the connections <see cref="Freeze"/> froze (the node's graceful stop waits for them to end, 30 s).</summary>
    public void CloseFrozen()
    {
        lock (_sockets)
        {
            foreach ((Socket client, Socket server, CancellationToken frozen) in _sockets.Where(c => c.Frozen.IsCancellationRequested))
            {
                client.Dispose();
                server.Dispose();
            }
        }
    }

    private async Task AcceptAsync()
    {
        try
        {
            while (true)
            {
                Socket client = await _listener.AcceptSocketAsync(_stop.Token);
                var server = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                try
                {
                    await server.ConnectAsync(_target, _stop.Token);
                }
                catch (SocketException)
                {
                    // The node is down: the client sees its connection closed at once, as it would without the proxy.
                    server.Dispose();
                    client.Dispose();
                    continue;
                }

                CancellationToken frozen;
                lock (_sockets)
                {
                    frozen = _frozen.Token;
                    _sockets.Add((client, server, frozen));
                    Connections++;
                }

                _ = PumpAsync(client, server, frozen, toClient: false);
                _ = PumpAsync(server, client, frozen, toClient: true);
            }
        }
        catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
        {
        }
    }

    private async Task PumpAsync(Socket from, Socket to, CancellationToken frozen, bool toClient)
    {
        byte[] buffer = new byte[64 << 10];
        try
        {
            while (!frozen.IsCancellationRequested)
            {
                int n;
                try
                {
                    n = await from.ReceiveAsync(buffer, SocketFlags.None, frozen);
                }
                catch (OperationCanceledException) when (frozen.IsCancellationRequested)
                {
                    break;
                }

                if (n == 0)
                {
                    to.Shutdown(SocketShutdown.Send);
                    return;
                }

                if (toClient)
                {
                    Interlocked.Add(ref _toClientBytes, n);
                }

                await to.SendAsync(buffer.AsMemory(0, n), SocketFlags.None, _stop.Token);
                if (toClient)
                {
                    Interlocked.Increment(ref _toClientReads);
                }
            }

            // Frozen: nothing more is carried, and nothing is closed.
            await Task.Delay(Timeout.Infinite, _stop.Token);
        }
        catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
        {
        }
    }

    public async ValueTask DisposeAsync()
    {
        _stop.Cancel();
        _listener.Stop();
        await _accepting;
        lock (_sockets)
        {
            foreach ((Socket client, Socket server, _) in _sockets)
            {
                client.Dispose();
                server.Dispose();
            }
        }

        _stop.Dispose();
    }
}
