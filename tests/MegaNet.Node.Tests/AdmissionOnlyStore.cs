using MegaNet.Store;

using SignedTreeHead = MegaNet.Store.SignedTreeHead;

namespace MegaNet.Node.Tests;

/// <summary>The part of <see cref="IEnvelopeStore"/> that admission uses (storing groups, finding replays, the lookup
/// mark), left to a test store standing in for the real one behind an <c>AdmissionPipeline</c>; the rest throws.</summary>
internal abstract class AdmissionOnlyStore : IEnvelopeStore
{
    public event Action<ReadOnlyMemory<byte>, ulong>? MailArrived;

    public abstract long LookupMark { get; }

    public long HeldBytes => 0;

    public abstract ValueTask<IReadOnlyList<PutResult>> PutManyAsync(IReadOnlyList<PutRequest> requests, CancellationToken cancellationToken = default);

    public abstract ValueTask<PutReceipt?> FindAsync(ReadOnlyMemory<byte> envelopeId, CancellationToken cancellationToken = default);

    /// <summary>Tells listeners that mail arrived, as the real store does after each group.</summary>
    protected void RaiseMailArrived() => MailArrived?.Invoke(ReadOnlyMemory<byte>.Empty, 0);

    public MailboxUsage ReportedUsage(ReadOnlySpan<byte> recipient) => default;

    public ValueTask<PutReceipt> PutAsync(PutRequest request, CancellationToken cancellationToken = default) => throw new NotSupportedException();

    public ValueTask<MailboxPage> ListAsync(ReadOnlyMemory<byte> recipient, ulong afterSeq, int limit, long maxBytes = long.MaxValue, CancellationToken cancellationToken = default) => throw new NotSupportedException();

    public ValueTask<int> AckAsync(ReadOnlyMemory<byte> recipient, IReadOnlyList<ulong> seqs, CancellationToken cancellationToken = default) => throw new NotSupportedException();

    public SignedTreeHead GetTreeHead() => throw new NotSupportedException();

    public IReadOnlyList<byte[]> GetInclusionProof(long leafIndex, long treeSize) => throw new NotSupportedException();

    public IReadOnlyList<byte[]> GetConsistencyProof(long firstSize, long secondSize) => throw new NotSupportedException();

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;
}
