namespace MegaNet.Node.Services;

/// <summary>
/// The token a streaming call writes its answers under: the client's, and cancelled <see cref="StopGrace"/> after the
/// node begins to stop. A client that stops reading blocks the call's writes on HTTP/2 flow control; a subscriber
/// that did made a stop wait the host's whole ShutdownTimeout (30 s), and now 5 s. A write cancelled midway resets
/// the stream; a client that still reads has had its answers, and its status, well within the grace.
/// </summary>
/// <remarks>A SubmitStream client that also stops reading its receipts has its stream reset the same way, 5 s in, but
/// Kestrel keeps that connection open (measured: a client still sending, its request not ended) until the node closes
/// what is left <see cref="Hosting.NodeHost.ServerStopDrain"/> into a stop, as it does a call whose last write went into
/// a full stream's buffer; before 2026-12-06 such stops took the host's whole 30 s.</remarks>
internal sealed class WriteDeadline : IDisposable
{
    /// <summary>How long a stop waits for a streaming call's writes.</summary>
    public static readonly TimeSpan StopGrace = TimeSpan.FromSeconds(5);

    private readonly CancellationTokenSource _writes;
    private readonly CancellationTokenRegistration _onStopping;

    /// <param name="call">The call's token (the client went).</param>
    /// <param name="stopping">Signalled when the node begins to stop.</param>
    public WriteDeadline(CancellationToken call, CancellationToken stopping)
    {
        _writes = CancellationTokenSource.CreateLinkedTokenSource(call);
        _onStopping = stopping.UnsafeRegister(static writes => ((CancellationTokenSource)writes!).CancelAfter(StopGrace), _writes);
    }

    /// <summary>The token to write under.</summary>
    public CancellationToken Token => _writes.Token;

    /// <summary>Unregisters from the stop first (waiting for a callback that runs), so the source is never used once
    /// disposed.</summary>
    public void Dispose()
    {
        _onStopping.Dispose();
        _writes.Dispose();
    }
}
