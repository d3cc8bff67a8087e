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

    // Two writers: listen's retry of deferred parts (ClientCommands.NextMessageAsync) runs while the subscription
    // reports skipped mail.
    private readonly Channel<(ulong Seq, byte[]? Envelope)> _seqs = Channel.CreateUnbounded<(ulong, byte[]?)>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = false });
    private readonly CancellationTokenSource _stop = new();
    private readonly Identity _identity;
    private readonly Func<MegaNetClient> _connect;
    private readonly SeenMessages? _seen;
    private readonly Task _loop;
    private int _acknowledged;

    /// <param name="identity">The mailbox's owner, who signs each acknowledgement.</param>
    /// <param name="connect">A client for the node listen subscribed to, held to the node id it signed for.</param>
    /// <param name="seen">The identity's record of received messages, told which envelopes the node deleted.</param>
    public ListenAcknowledger(Identity identity, Func<MegaNetClient> connect, SeenMessages? seen = null)
    {
        _identity = identity;
        _connect = connect;
        _seen = seen;
        _loop = Task.Run(LoopAsync);
    }

    /// <summary>Messages the node confirmed deleted so far.</summary>
    public int Acknowledged => Volatile.Read(ref _acknowledged);

    /// <summary>Queues a message that has been written out (and flushed) for deletion (nothing, once acknowledging has
    /// stopped on a refusal); <paramref name="envelopeId"/>, a message shown, is recorded as acknowledged once the node
    /// has deleted it (junk and copies need no record).</summary>
    public void Add(ulong seq, byte[]? envelopeId = null)
    {
        if (!Volatile.Read(ref _stopped))
        {
            _seqs.Writer.TryWrite((seq, envelopeId));
        }
    }

    /// <summary>Acknowledges what is still queued, waiting at most <see cref="Grace"/>, and says on stderr what was left.</summary>
    public async ValueTask DisposeAsync()
    {
        _seqs.Writer.TryComplete();
        _stop.CancelAfter(Grace);
        await _loop.ConfigureAwait(false);
        _stop.Dispose();
    }

    private bool _stopped;

    /// <summary>Whether acknowledging stopped on a refusal that trying again would meet again.</summary>
    public bool Stopped => Volatile.Read(ref _stopped);

    private async Task LoopAsync()
    {
        MegaNetClient? client = null;
        var batch = new List<(ulong Seq, byte[]? Envelope)>();
        TimeSpan delay = ClientCommands.FirstRetryDelay;
        try
        {
            while (true)
            {
                // A batch that failed on a passing fault is sent again before any new one is taken.
                if (batch.Count == 0)
                {
                    if (!await _seqs.Reader.WaitToReadAsync(_stop.Token).ConfigureAwait(false))
                    {
                        break;
                    }

                    // At most what one Ack call carries (MegaNetClient.AckAsync sends 1,000 a call, the node's limit):
                    // a batch is one call, which the node applies whole, as one record, or not at all. So no batch is
                    // acknowledged in part (the AckIncompleteException that fetch --ack handles), and once the call
                    // answers every message in it is recorded as acknowledged (those the node found gone already were
                    // deleted by this owner's other reader, by this batch's own try whose answer was lost, or expired).
                    while (batch.Count < MegaNet.Store.FasterEnvelopeStore.MaxAckSeqs && _seqs.Reader.TryRead(out var item))
                    {
                        batch.Add(item);
                    }
                }

                try
                {
                    client ??= _connect();
                    // Shown is written, not yet durable when standard output is a file: flushed before the node deletes.
                    ClientCommands.FlushStandardOutputToDisk(null);
                    Interlocked.Add(ref _acknowledged, await client.AckAsync(_identity, batch.Select(b => b.Seq), _stop.Token).ConfigureAwait(false));
                    if (_seen is not null)
                    {
                        ClientCommands.RecordAcknowledged(_seen, batch.Select(b => b.Envelope), Console.Error);
                    }

                    batch.Clear();
                    delay = ClientCommands.FirstRetryDelay;
                }
                catch (Exception e) when (!_stop.IsCancellationRequested && ClientCommands.IsPassing(e))
                {
                    // The node restarting, the connection gone (listen itself subscribes again meanwhile): the same
                    // messages again, on a fresh connection, after a wait.
                    TimeSpan wait = ClientCommands.WaitBefore(e, delay);
                    Console.Error.WriteLine($"meganet: acknowledging {batch.Count} message(s) failed ({ClientCommands.Describe(e)}); trying again in {wait.TotalSeconds:0} s.");
                    client?.Dispose();
                    client = null;
                    await Task.Delay(wait, _stop.Token).ConfigureAwait(false);
                    delay = ClientCommands.NextRetryDelay(delay);
                }
            }
        }
        catch (Exception e) when (_stop.IsCancellationRequested && e is OperationCanceledException or RpcException)
        {
            int left = batch.Count + Drain();
            if (left > 0)
            {
                Console.Error.WriteLine($"meganet: {left} message(s) shown were not acknowledged before listen ended; they stay on the node, and the next fetch or listen shows them again.");
            }
        }
        catch (Exception e)
        {
            // A refusal that trying again would meet again (the node does not take this identity's signature, another
            // node answers at the address): acknowledging stops, listening goes on.
            Volatile.Write(ref _stopped, true);
            int left = batch.Count + Drain();
            Console.Error.WriteLine($"meganet: acknowledging stopped ({ClientCommands.Describe(e)}); {left} message(s) shown stay on the node, " +
                "and so will the ones shown from now on: the next fetch or listen shows them again.");
        }
        finally
        {
            client?.Dispose();
        }
    }

    private int Drain()
    {
        int count = 0;
        while (_seqs.Reader.TryRead(out _))
        {
            count++;
        }

        return count;
    }

}
