using MegaNet.Store;

using SignedTreeHead = MegaNet.Store.SignedTreeHead;

namespace MegaNet.Node.Tests;

/// <summary>A store that holds the first group it is given until <see cref="Commit"/>, as a slow commit would. What it
/// stored, a lookup finds (as a replay's receipt), and <see cref="LookupMark"/> moves once a group is stored, before it
/// is answered, as the real store's does.</summary>
internal sealed class HeldStore : AdmissionOnlyStore
{
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, PutReceipt> _stored = new();
    private long _mark;

    private readonly TaskCompletionSource _commit = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public TaskCompletionSource<IReadOnlyList<PutRequest>> Requested { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public void Commit() => _commit.TrySetResult();

    private int _puts;

    /// <summary>Envelopes handed to <see cref="PutManyAsync"/> so far.</summary>
    public int Puts => Volatile.Read(ref _puts);

    /// <summary>When set, every group (after <see cref="Commit"/>) fails with it, as a store that cannot commit.</summary>
    public Exception? FailWith { get; set; }

    /// <summary>When set, a group's last request gets no result (a store that breaks its contract), so admission's
    /// per-envelope loop over the results throws partway.</summary>
    public bool DropLastResult { get; set; }

    /// <summary>When set, <see cref="LookupMark"/> throws it: a fault injected where the batcher reads the store.</summary>
    public Exception? LookupMarkFailure { get; set; }

    public override async ValueTask<IReadOnlyList<PutResult>> PutManyAsync(IReadOnlyList<PutRequest> requests, CancellationToken cancellationToken = default)
    {
        Interlocked.Add(ref _puts, requests.Count);
        Requested.TrySetResult(requests);
        await _commit.Task;
        if (FailWith is { } failure)
        {
            throw failure;
        }

        var head = new SignedTreeHead(requests.Count, new byte[32], 0, new byte[32], new byte[64]);
        RaiseMailArrived();
        PutResult[] results = [.. requests.Select((r, i) => new PutResult(new PutReceipt(r.EnvelopeId.ToArray(), i, (ulong)i + 1, head, Duplicate: false), null))];
        if (DropLastResult)
        {
            results = results[..^1];
        }

        foreach (PutResult r in results)
        {
            _stored.TryAdd(Convert.ToHexString(r.Receipt!.EnvelopeId), r.Receipt with { Duplicate = true });
        }

        Interlocked.Increment(ref _mark);
        return results;
    }

    public override ValueTask<PutReceipt?> FindAsync(ReadOnlyMemory<byte> envelopeId, CancellationToken cancellationToken = default) =>
        ValueTask.FromResult(_stored.GetValueOrDefault(Convert.ToHexString(envelopeId.Span)));

    public override long LookupMark => LookupMarkFailure is { } failure ? throw failure : Volatile.Read(ref _mark);
}
