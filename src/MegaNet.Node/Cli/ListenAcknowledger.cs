using System.Threading.Channels;
using Grpc.Core;
using MegaNet.Api;

namespace MegaNet.Node.Cli;

/// <summary>
/// Deletes from the node, for <c>listen --ack</c>, the messages listen has written out: in batches of whatever gathered
/// while the previous acknowledgement was under way (a backlog goes in few calls, live mail at once), on a connection of
/// its own, so an acknowledgement never holds up the messages behind it. A mailbox read only through <c>listen</c>
/// otherwise fills: its senders then pay proof of work, and a full one refuses mail.
/// </summary>
internal sealed class ListenAcknowledger : IAsyncDisposable
{
    /// <summary>How long acknowledgements still under way may take once listening has ended.</summary>
    private static readonly TimeSpan Grace = TimeSpan.FromSeconds(3);

    private readonly Channel<ulong> _seqs = Channel.CreateUnbounded<ulong>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
    private readonly CancellationTokenSource _stop = new();
    private readonly Identity _identity;
    private readonly Func<MegaNetClient> _connect;
    private readonly Task _loop;
    private int _acknowledged;

    /// <param name="identity">The mailbox's owner, who signs each acknowledgement.</param>
    /// <param name="connect">A client for the node listen subscribed to, held to the node id it signed for.</param>
    public ListenAcknowledger(Identity identity, Func<MegaNetClient> connect)
    {
        _identity = identity;
        _connect = connect;
        _loop = Task.Run(LoopAsync);
    }

    /// <summary>Messages the node confirmed deleted so far.</summary>
    public int Acknowledged => Volatile.Read(ref _acknowledged);

    /// <summary>Queues a message that has been written out (and flushed) for deletion.</summary>
    public void Add(ulong seq) => _seqs.Writer.TryWrite(seq);

    /// <summary>Acknowledges what is still queued, waiting at most <see cref="Grace"/>, and says on stderr what was left.</summary>
    public async ValueTask DisposeAsync()
    {
        _seqs.Writer.TryComplete();
        _stop.CancelAfter(Grace);
        await _loop.ConfigureAwait(false);
        _stop.Dispose();
    }

    private async Task LoopAsync()
    {
        MegaNetClient? client = null;
        var batch = new List<ulong>();
        try
        {
            while (await _seqs.Reader.WaitToReadAsync(_stop.Token).ConfigureAwait(false))
            {
                batch.Clear();
                while (batch.Count < MaxPerCall && _seqs.Reader.TryRead(out ulong seq))
                {
                    batch.Add(seq);
                }

                try
                {
                    client ??= _connect();
                    Interlocked.Add(ref _acknowledged, await client.AckAsync(_identity, batch, _stop.Token).ConfigureAwait(false));
                    batch.Clear();
                }
                catch (Exception e) when (!_stop.IsCancellationRequested && e is RpcException or NodeSilentException)
                {
                    // The messages stay on the node; the next fetch or listen recognises them (.seen) and says so.
                    Console.Error.WriteLine($"meganet: could not acknowledge {batch.Count} message(s) ({ClientCommands.Describe(e)}); " +
                        "they stay on the node, and the next fetch or listen reports them as already received.");
                    client?.Dispose();
                    client = null;
                }
            }
        }
        catch (Exception e) when (_stop.IsCancellationRequested && e is OperationCanceledException or RpcException)
        {
            int left = batch.Count;
            while (_seqs.Reader.TryRead(out _))
            {
                left++;
            }

            if (left > 0)
            {
                Console.Error.WriteLine($"meganet: {left} message(s) shown were not acknowledged before listen ended; they stay on the node.");
            }
        }
        finally
        {
            client?.Dispose();
        }
    }

    /// <summary>The most sequence numbers a node takes in one Ack (docs/protocol.md).</summary>
    private const int MaxPerCall = 1_000;
}
