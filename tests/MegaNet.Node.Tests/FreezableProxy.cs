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

    private long _toClientDataBytes;
    private readonly List<(long Bytes, TaskCompletionSource Reached)> _dataWaiters = [];

    /// <summary>Bytes of HTTP/2 DATA frames' payloads (what flow control counts) carried from the node to its clients
    /// so far, on plaintext HTTP/2 connections (over TLS the count means nothing).</summary>
    public long ToClientDataBytes => Interlocked.Read(ref _toClientDataBytes);

    /// <summary>Completes once <see cref="ToClientDataBytes"/> reaches <paramref name="bytes"/>: with one stream on
    /// the connections and a client that reads none of it, the client's receive window for that stream is full once
    /// the window's size has come, and the node can send no more of it.</summary>
    public Task ToClientDataReachedAsync(long bytes)
    {
        lock (_dataWaiters)
        {
            if (ToClientDataBytes >= bytes)
            {
                return Task.CompletedTask;
            }

            var reached = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _dataWaiters.Add((bytes, reached));
            return reached.Task;
        }
    }

    private void CountData(long bytes)
    {
        long total = Interlocked.Add(ref _toClientDataBytes, bytes);
        lock (_dataWaiters)
        {
            foreach ((long wanted, TaskCompletionSource reached) in _dataWaiters.Where(w => w.Bytes <= total).ToArray())
            {
                reached.TrySetResult();
                _dataWaiters.Remove((wanted, reached));
            }
        }
    }

    /// <summary>Where one connection's node-to-client bytes are in HTTP/2's frames: a frame header (9 bytes: length,
    /// type, flags, stream) before each payload. The node's side sends frames from its first byte.</summary>
    private sealed class FrameReader(FreezableProxy proxy)
    {
        private readonly byte[] _header = new byte[9];
        private int _headerBytes;
        private long _payloadLeft;
        private bool _data;

        public void Read(ReadOnlySpan<byte> bytes)
        {
            while (!bytes.IsEmpty)
            {
                if (_payloadLeft > 0)
                {
                    int n = (int)Math.Min(_payloadLeft, bytes.Length);
                    if (_data)
                    {
                        proxy.CountData(n);
                    }

                    _payloadLeft -= n;
                    bytes = bytes[n..];
                    continue;
                }

                int take = Math.Min(_header.Length - _headerBytes, bytes.Length);
                bytes[..take].CopyTo(_header.AsSpan(_headerBytes));
                _headerBytes += take;
                bytes = bytes[take..];
                if (_headerBytes == _header.Length)
                {
                    _payloadLeft = (_header[0] << 16) | (_header[1] << 8) | _header[2];
                    _data = _header[3] == 0; // DATA
                    _headerBytes = 0;
                }
            }
        }
    }

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
        FrameReader? frames = toClient ? new FrameReader(this) : null;
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
                    frames!.Read(buffer.AsSpan(0, n));
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
