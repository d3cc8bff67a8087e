using System.Diagnostics;
using System.Net;
using Grpc.Core;
using MegaNet.Api;
using MegaNet.Api.V1;

namespace MegaNet.Node.Benchmarking;

/// <summary>What a <see cref="ForgedLoad"/> sent and how the node answered.</summary>
/// <param name="Sent">Forged submissions started.</param>
/// <param name="Refused">Refused as bad signatures (INVALID_ARGUMENT): the right answer.</param>
/// <param name="Other">Refused with another status (queue full, rate limit), or not answered (the phase ended first).</param>
/// <param name="Accepted">Accepted: never right; a node that accepts one has a verifier bug.</param>
/// <param name="Seconds">How long it ran.</param>
public sealed record ForgedReport(int Sent, int Refused, int Other, int Accepted, double Seconds);

/// <summary>
/// Submits envelopes whose signatures do not verify, at a steady rate on a connection of its own, beside a load phase:
/// what one careless or hostile client costs the honest ones. Each forged envelope is well-formed (a valid sending key, a
/// canonical signature) and differs from a signed one only in its expiry, so it passes every cheap check and fails only
/// the signature equation, inside a verification batch, where it is dearest.
/// </summary>
public sealed class ForgedLoad : IAsyncDisposable
{
    // More forged calls than this unanswered and the sender skips its turn: a stalled node must not pile up calls here.
    private const int MaxInFlight = 1_000;

    private readonly MegaNetClient _client;
    private readonly IReadOnlyList<Envelope> _forged;
    private readonly double _rate;
    private readonly CancellationTokenSource _stop = new();
    private readonly Stopwatch _watch = new();
    private Task<List<Task>>? _pacer;
    private int _sent, _refused, _other, _accepted, _inFlight;

    private ForgedLoad(Uri node, IReadOnlyList<Envelope> forged, double rate, IPAddress? from, MegaNetClientOptions? options)
    {
        _client = new MegaNetClient(node, localAddress: from, options: options);
        _forged = forged;
        _rate = rate;
    }

    /// <summary>Seals <paramref name="count"/> envelopes and spoils each one's signature by moving its expiry a millisecond.</summary>
    public static List<Envelope> Prepare(int count)
    {
        List<Envelope> envelopes = LoadGenerator.Prepare(count, senders: 16, recipients: 16);
        foreach (Envelope e in envelopes)
        {
            e.ExpiresUnixMs += 1;
        }

        return envelopes;
    }

    /// <summary>Starts sending <paramref name="forged"/> (round and round) at <paramref name="rate"/> per second, from
    /// the local address <paramref name="from"/> (default: the one the operating system picks), with the honest clients' <paramref name="options"/>.</summary>
    public static async Task<ForgedLoad> StartAsync(Uri node, IReadOnlyList<Envelope> forged, double rate, IPAddress? from, MegaNetClientOptions? options, CancellationToken ct)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(rate);
        ArgumentOutOfRangeException.ThrowIfZero(forged.Count);
        var load = new ForgedLoad(node, forged, rate, from, options);
        // Connected before the clock starts, like the honest clients.
        await load._client.Relay.StatusAsync(new StatusRequest(), cancellationToken: ct);
        CancellationToken stop = load._stop.Token;
        load._watch.Start();
        load._pacer = Task.Factory.StartNew(load.Pace, stop, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        return load;
    }

    /// <summary>Where forged envelopes come from by default: a node on IPv4 loopback sees them from 127.0.0.2, another
    /// address than the honest clients' 127.0.0.1, as a hostile client would be (Linux answers on all of 127/8; other
    /// systems have only 127.0.0.1 unless configured); elsewhere the system's choice.</summary>
    public static IPAddress? DefaultFrom(Uri node) =>
        OperatingSystem.IsLinux() && IPAddress.TryParse(node.Host, out IPAddress? host) && host.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork && IPAddress.IsLoopback(host)
            ? IPAddress.Parse("127.0.0.2")
            : null;

    /// <summary>Stops sending, waits briefly for the answers still due, and reports.</summary>
    public async Task<ForgedReport> StopAsync()
    {
        double seconds = _watch.Elapsed.TotalSeconds;
        await _stop.CancelAsync();
        List<Task> calls = _pacer is null ? [] : await _pacer.ConfigureAwait(false);
        await Task.WhenAll(calls).WaitAsync(TimeSpan.FromSeconds(10)).ContinueWith(_ => { }, TaskScheduler.Default).ConfigureAwait(false);
        int answered = Volatile.Read(ref _refused) + Volatile.Read(ref _accepted) + Volatile.Read(ref _other);
        return new ForgedReport(_sent, _refused, _other + (_sent - answered), _accepted, seconds);
    }

    /// <summary>The printed line.</summary>
    public static string Describe(ForgedReport r) =>
        $"forged: {r.Sent:N0} sent ({(r.Seconds > 0 ? $"{r.Sent / r.Seconds:N0}" : "-")}/s), {r.Refused:N0} refused as bad signatures, {r.Other:N0} otherwise refused or unanswered" +
        (r.Accepted > 0 ? $", {r.Accepted:N0} ACCEPTED (a verifier bug)" : "");

    /// <summary>Stops sending forgeries and waits for the sender to finish.</summary>
    public async ValueTask DisposeAsync()
    {
        if (!_stop.IsCancellationRequested)
        {
            await StopAsync().ConfigureAwait(false);
        }

        _client.Dispose();
        _stop.Dispose();
    }

    private List<Task> Pace()
    {
        var calls = new List<Task>();
        try
        {
            for (long i = 0; ; i++)
            {
                LoadGenerator.WaitUntil(_watch, i / _rate, _stop.Token);
                if (Volatile.Read(ref _inFlight) >= MaxInFlight)
                {
                    continue;
                }

                calls.RemoveAll(t => t.IsCompleted);
                calls.Add(SubmitAsync(_forged[(int)(i % _forged.Count)]));
            }
        }
        catch (OperationCanceledException)
        {
            return calls;
        }
    }

    private async Task SubmitAsync(Envelope envelope)
    {
        Interlocked.Increment(ref _sent);
        Interlocked.Increment(ref _inFlight);
        try
        {
            await _client.Relay.SubmitAsync(new SubmitRequest { Envelope = envelope }).ConfigureAwait(false);
            Interlocked.Increment(ref _accepted);
        }
        catch (RpcException e)
        {
            Interlocked.Increment(ref e.StatusCode == StatusCode.InvalidArgument ? ref _refused : ref _other);
        }
        finally
        {
            Interlocked.Decrement(ref _inFlight);
        }
    }
}
