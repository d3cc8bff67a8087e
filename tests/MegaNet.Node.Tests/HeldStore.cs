using MegaNet.Store;

using SignedTreeHead = MegaNet.Store.SignedTreeHead;

namespace MegaNet.Node.Tests;

/// <summary>A store that holds the first group it is given until <see cref="Commit"/>, as a slow commit would.</summary>
internal sealed class HeldStore : IEnvelopeStore
{
    private readonly TaskCompletionSource _commit = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public event Action<ReadOnlyMemory<byte>, ulong>? MailArrived;

    public TaskCompletionSource<IReadOnlyList<PutRequest>> Requested { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public void Commit() => _commit.TrySetResult();

    private int _puts;

    /// <summary>Envelopes handed to <see cref="PutManyAsync"/> so far.</summary>
    public int Puts => Volatile.Read(ref _puts);

    /// <summary>When set, every group (after <see cref="Commit"/>) fails with it, as a store that cannot commit.</summary>
    public Exception? FailWith { get; set; }

    public async ValueTask<IReadOnlyList<PutResult>> PutManyAsync(IReadOnlyList<PutRequest> requests, CancellationToken cancellationToken = default)
    {
        Interlocked.Add(ref _puts, requests.Count);
        Requested.TrySetResult(requests);
        await _commit.Task;
        if (FailWith is { } failure)
        {
            throw failure;
        }

        var head = new SignedTreeHead(requests.Count, new byte[32], 0, new byte[32], new byte[64]);
        MailArrived?.Invoke(ReadOnlyMemory<byte>.Empty, 0);
        return requests.Select((r, i) => new PutResult(new PutReceipt(r.EnvelopeId.ToArray(), i, (ulong)i + 1, head, Duplicate: false), null)).ToArray();
    }

    public ValueTask<PutReceipt?> FindAsync(ReadOnlyMemory<byte> envelopeId, CancellationToken cancellationToken = default) => ValueTask.FromResult<PutReceipt?>(null);

    public long LookupMark => 0;

    public MailboxUsage ReportedUsage(ReadOnlySpan<byte> recipient) => default;

    public long HeldBytes => 0;

    public ValueTask<PutReceipt> PutAsync(PutRequest request, CancellationToken cancellationToken = default) => throw new NotSupportedException();

    public ValueTask<MailboxPage> ListAsync(ReadOnlyMemory<byte> recipient, ulong afterSeq, int limit, long maxBytes = long.MaxValue, CancellationToken cancellationToken = default) => throw new NotSupportedException();

    public ValueTask<int> AckAsync(ReadOnlyMemory<byte> recipient, IReadOnlyList<ulong> seqs, CancellationToken cancellationToken = default) => throw new NotSupportedException();

    public SignedTreeHead GetTreeHead() => throw new NotSupportedException();

    public IReadOnlyList<byte[]> GetInclusionProof(long leafIndex, long treeSize) => throw new NotSupportedException();

    public IReadOnlyList<byte[]> GetConsistencyProof(long firstSize, long secondSize) => throw new NotSupportedException();

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;
}
