using MegaNet.Core.Transparency;
using MegaNet.Store;

namespace MegaNet.RelayCeiling;

/// <summary>
/// A store that keeps nothing: every put is answered at once (on the thread pool, as the real store's committer answers)
/// with a receipt whose log index and mailbox sequence number count up, and a tree head of the empty log signed by the
/// node's key. Mailboxes read empty and proofs fail. Only for measuring what the node costs without its store: its
/// receipts do not check (the head does not cover their leaves), and nothing survives anything.
/// </summary>
internal sealed class NoOpStore : IEnvelopeStore
{
    private readonly SignedTreeHead _head;
    private long _puts;

    public NoOpStore(ReadOnlySpan<byte> nodeSecretKey, byte[] nodePublicKey)
    {
        byte[] emptyRoot = MerkleTree.EmptyRoot();
        long now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        _head = new SignedTreeHead(0, emptyRoot, now, nodePublicKey, TreeHeadSignature.Sign(nodeSecretKey, 0, emptyRoot, now));
    }

    /// <summary>Raised never: nothing is stored, so nothing arrives.</summary>
    public event Action<ReadOnlyMemory<byte>, ulong>? MailArrived
    {
        add { }
        remove { }
    }

    /// <summary>Puts answered so far.</summary>
    public long Puts => Interlocked.Read(ref _puts);

    public long HeldBytes => 0;

    public long LookupMark => 0;

    public async ValueTask<IReadOnlyList<PutResult>> PutManyAsync(IReadOnlyList<PutRequest> requests, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(requests);
        await Task.Yield();
        var results = new PutResult[requests.Count];
        long first = Interlocked.Add(ref _puts, requests.Count) - requests.Count;
        for (int i = 0; i < results.Length; i++)
        {
            results[i] = new PutResult(Receipt(requests[i], first + i), null);
        }

        return results;
    }

    public async ValueTask<PutReceipt> PutAsync(PutRequest request, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        await Task.Yield();
        return Receipt(request, Interlocked.Increment(ref _puts) - 1);
    }

    private PutReceipt Receipt(PutRequest request, long index) =>
        new(request.EnvelopeId.ToArray(), index, (ulong)index + 1, _head, Duplicate: false);

    public ValueTask<PutReceipt?> FindAsync(ReadOnlyMemory<byte> envelopeId, CancellationToken cancellationToken = default) => ValueTask.FromResult<PutReceipt?>(null);

    public MailboxUsage ReportedUsage(ReadOnlySpan<byte> recipient) => default;

    public ValueTask<MailboxPage> ListAsync(ReadOnlyMemory<byte> recipient, ulong afterSeq, int limit, long maxBytes = long.MaxValue, CancellationToken cancellationToken = default) =>
        ValueTask.FromResult(new MailboxPage([], afterSeq));

    public ValueTask<int> AckAsync(ReadOnlyMemory<byte> recipient, IReadOnlyList<ulong> seqs, CancellationToken cancellationToken = default) => ValueTask.FromResult(0);

    public SignedTreeHead GetTreeHead() => _head;

    public IReadOnlyList<byte[]> GetInclusionProof(long leafIndex, long treeSize) =>
        throw new ArgumentOutOfRangeException(nameof(treeSize), "This store keeps no log: it only measures the node without one.");

    public IReadOnlyList<byte[]> GetConsistencyProof(long firstSize, long secondSize) =>
        throw new ArgumentOutOfRangeException(nameof(secondSize), "This store keeps no log: it only measures the node without one.");

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;
}
