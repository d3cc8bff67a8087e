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
    private readonly TextWriter _errors;
    private readonly Task _loop;

    // A long: listen prints it when it ends, after running for as long as it is left to (a bridge runs for months).
    private long _acknowledged;

    /// <param name="identity">The mailbox's owner, who signs each acknowledgement.</param>
    /// <param name="connect">A client for the node listen subscribed to, held to the node id it signed for.</param>
    /// <param name="seen">The identity's record of received messages, told which envelopes the node deleted.</param>
    /// <param name="errors">Where failures are reported (standard error unless a test reads them).</param>
    public ListenAcknowledger(Identity identity, Func<MegaNetClient> connect, SeenMessages? seen = null, TextWriter? errors = null)
    {
        _identity = identity;
        _connect = connect;
        _seen = seen;
        _errors = errors ?? Console.Error;
        _loop = Task.Run(LoopAsync);
    }

    /// <summary>Messages the node confirmed deleted so far: those it said it deleted, and all of a batch sent again
    /// after a try whose answer did not come (that try may have deleted them; the node, asked again, has none of them
    /// and cannot say which).</summary>
    public long Acknowledged => Interlocked.Read(ref _acknowledged);

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
        // Whether the batch was sent and no answer came (a connection lost after the node applied it, a deadline): the
        // node may have deleted it.
        bool unanswered = false;
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
                    bool again = unanswered;
                    unanswered = true; // until the answer comes
                    int deleted = await client.AckAsync(_identity, batch.Select(b => b.Seq), _stop.Token).ConfigureAwait(false);
                    // Sent again after a lost answer, the node finds gone what the first try deleted: counted by its
                    // answer alone, listen ended saying "acknowledged 0 message(s)" of messages it had deleted.
                    Interlocked.Add(ref _acknowledged, again ? batch.Count : deleted);
                    if (_seen is not null)
                    {
                        ClientCommands.RecordAcknowledged(_seen, batch.Select(b => b.Envelope), _errors);
                    }

                    batch.Clear();
                    unanswered = false;
                    delay = ClientCommands.FirstRetryDelay;
                }
                catch (Exception e) when (!_stop.IsCancellationRequested && ClientCommands.IsPassing(e))
                {
                    // The node restarting, the connection gone (listen itself subscribes again meanwhile): the same
                    // messages again, on a fresh connection, after a wait.
                    TimeSpan wait = ClientCommands.WaitBefore(e, delay);
                    _errors.WriteLine($"meganet: acknowledging {batch.Count} message(s) failed ({ClientCommands.Describe(e)}); trying again in {wait.TotalSeconds:0} s.");
                    client?.Dispose();
                    client = null;
                    await Task.Delay(wait, _stop.Token).ConfigureAwait(false);
                    delay = ClientCommands.NextRetryDelay(delay);
                }
            }
        }
        catch (Exception e) when (_stop.IsCancellationRequested && e is OperationCanceledException or RpcException)
        {
            // A batch sent without an answer may be gone from the node: said to stay there, it was not (the node had
            // applied the acknowledgement whose answer the connection lost), and the next fetch showed nothing.
            int maybe = unanswered ? batch.Count : 0;
            int left = (unanswered ? 0 : batch.Count) + Drain();
            if (maybe > 0)
            {
                _errors.WriteLine($"meganet: no answer came to the acknowledgement of {maybe} message(s) shown before listen ended; the node may have deleted them, and the next fetch or listen shows again those it did not.");
            }

            if (left > 0)
            {
                _errors.WriteLine($"meganet: {left} message(s) shown were not acknowledged before listen ended; they stay on the node, and the next fetch or listen shows them again.");
            }
        }
        catch (Exception e)
        {
            // A refusal that trying again would meet again (the node does not take this identity's signature, another
            // node answers at the address): acknowledging stops, listening goes on.
            Volatile.Write(ref _stopped, true);
            int left = batch.Count + Drain();
            _errors.WriteLine($"meganet: acknowledging stopped ({ClientCommands.Describe(e)}); {left} message(s) shown stay on the node, " +
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
