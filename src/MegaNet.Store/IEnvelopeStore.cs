namespace MegaNet.Store;

/// <summary>
/// The node's durable store: envelopes by id, per-recipient mailboxes, and the transparency log over accepted
/// envelope ids. A completed <see cref="PutAsync"/> means the envelope, its mailbox entry and its log leaf are
/// committed and survive <c>kill -9</c>. Thread-safe.
/// </summary>
public interface IEnvelopeStore : IAsyncDisposable
{
    /// <summary>Stores an envelope for <see cref="PutRequest.Recipient"/> and appends its id to the log. Idempotent: the same
    /// envelope bytes again return the original receipt with <see cref="PutReceipt.Duplicate"/> set and change nothing.</summary>
    /// <exception cref="QuotaExceededException">The recipient's mailbox is over its count or byte quota, or
    /// (<see cref="DiskSpaceLowException"/>) the store's disk is below its free-space mark; nothing was written.</exception>
    /// <exception cref="ArgumentException">Bad request (address not 32 bytes, expiry in the past or beyond the node's maximum TTL, envelope empty or too large).</exception>
    ValueTask<PutReceipt> PutAsync(PutRequest request, CancellationToken cancellationToken = default);

    /// <summary>Stores many envelopes with one group commit (a large call with a few); one result per request, in order
    /// (a receipt, or the exception for that item). A commit that failed after another of the call's commits succeeded
    /// is the exception of each put it carried; the call throws only when none of its commits succeeded.</summary>
    ValueTask<IReadOnlyList<PutResult>> PutManyAsync(IReadOnlyList<PutRequest> requests, CancellationToken cancellationToken = default);

    /// <summary>The receipt of an envelope already stored, or null (replay detection). Also null while the envelope's
    /// group is still being applied, so every receipt handed out has a tree head that covers its leaf.</summary>
    ValueTask<PutReceipt?> FindAsync(ReadOnlyMemory<byte> envelopeId, CancellationToken cancellationToken = default);

    /// <summary>A hint that <see cref="FindAsync"/> of <paramref name="envelopeId"/> follows shortly: the store may start
    /// bringing what that lookup reads into the cache. It changes nothing.</summary>
    void PrefetchFind(ReadOnlySpan<byte> envelopeId)
    {
    }

    /// <summary>Envelope bytes waiting in all mailboxes, as the mailbox quotas and <see cref="StoreOptions.MaxHeldBytes"/>
    /// count them (expired mail until the next sweep). As of the last applied group; lock-free.</summary>
    long HeldBytes { get; }

    /// <summary>What <paramref name="recipient"/>'s mailbox holds, as its quotas count it, once that is at least
    /// <see cref="StoreOptions.MailboxReportedFromPercent"/> of either quota; (0, 0) below that. As of the last applied
    /// group, and expired mail counts until the next sweep; the quota check itself is exact. Cheap and lock-free, for a
    /// decision per envelope before one is stored.</summary>
    MailboxUsage ReportedUsage(ReadOnlySpan<byte> recipient);

    /// <summary>A point in the store's history for <see cref="PutRequest.NotFoundAtMark"/>: read it just before a
    /// <see cref="FindAsync"/>; when that finds nothing, a put of the same id carrying the mark lets the store skip its
    /// own lookup of the id.</summary>
    long LookupMark { get; }

    /// <summary>Mailbox entries of <paramref name="recipient"/> with sequence number greater than <paramref name="afterSeq"/>,
    /// oldest first, at most <paramref name="limit"/> and, past the first, at most <paramref name="maxBytes"/> of
    /// envelopes in all. Expired entries are never returned. An entry whose envelope cannot be read ends the page before
    /// it, with the cursor there; a page that would begin with it throws.</summary>
    /// <exception cref="StoreCorruptException">The first entry's envelope no longer reads back from the store's files while
    /// the mailbox still holds it (damage; <see cref="StoreCorruptException.MailboxSeq"/> names the entry).</exception>
    /// <exception cref="StoreUnavailableException">Reading the first entry's envelope failed for a reason that may pass (an
    /// I/O error, too many open files); listing again may succeed. The message names the error.</exception>
    ValueTask<MailboxPage> ListAsync(ReadOnlyMemory<byte> recipient, ulong afterSeq, int limit, long maxBytes = long.MaxValue, CancellationToken cancellationToken = default);

    /// <summary>Deletes the given entries of the recipient's mailbox (the owner acknowledged them); returns how many existed.
    /// Durable on return.</summary>
    ValueTask<int> AckAsync(ReadOnlyMemory<byte> recipient, IReadOnlyList<ulong> seqs, CancellationToken cancellationToken = default);

    /// <summary>The current signed tree head of the transparency log.</summary>
    SignedTreeHead GetTreeHead();

    /// <summary>Audit path for leaf <paramref name="leafIndex"/> in the tree of size <paramref name="treeSize"/> (RFC 9162 §2.1.3).</summary>
    /// <exception cref="StoreCorruptException">A hash the proof needs had to be read back from the store's files, which
    /// are missing, short or no longer match (a damaged leaves.bin); the message names the file.</exception>
    /// <exception cref="StoreUnavailableException">Such a read failed for a reason that may pass (too many open files, a
    /// device error); asking again may succeed. The message names the file and the error.</exception>
    IReadOnlyList<byte[]> GetInclusionProof(long leafIndex, long treeSize);

    /// <summary>Consistency proof between tree sizes <paramref name="firstSize"/> and <paramref name="secondSize"/> (RFC 9162 §2.1.4).</summary>
    /// <exception cref="StoreCorruptException">A hash the proof needs had to be read back from the store's files, which
    /// are missing, short or no longer match (a damaged leaves.bin); the message names the file.</exception>
    /// <exception cref="StoreUnavailableException">Such a read failed for a reason that may pass (too many open files, a
    /// device error); asking again may succeed. The message names the file and the error.</exception>
    IReadOnlyList<byte[]> GetConsistencyProof(long firstSize, long secondSize);

    /// <summary>Raised after a put commits, with the recipient address and the new entry's sequence number
    /// (live delivery to subscribers). The address's memory is lent for the call only: a handler that keeps it must copy
    /// it (the store reuses it for the next put). Handlers must be quick and must not throw: an exception does not fail
    /// the put, but the handlers after the thrower miss that mail, and it is counted in
    /// <c>meganet.store.mail_listener_failures</c>.</summary>
    event Action<ReadOnlyMemory<byte>, ulong>? MailArrived;
}

/// <summary>An envelope to store.</summary>
/// <param name="Envelope">The serialized envelope exactly as received; its id is <see cref="PutReceipt.EnvelopeId"/>.</param>
/// <param name="Recipient">The 32-byte recipient address.</param>
/// <param name="ExpiresAt">When the envelope may be dropped; within the node's maximum TTL.</param>
public sealed record PutRequest(ReadOnlyMemory<byte> Envelope, ReadOnlyMemory<byte> Recipient, DateTimeOffset ExpiresAt)
{
    /// <summary>The envelope's 32-byte id as its format defines it (for MegaNet envelopes BLAKE2b-256 of the signing bytes,
    /// docs/protocol.md; admission computes it for the replay check). Trusted as given: a wrong id would file the
    /// envelope under another name. Empty (the default): the store uses BLAKE2b-256 of <see cref="Envelope"/>.</summary>
    public ReadOnlyMemory<byte> EnvelopeId { get; init; }

    /// <summary>The <see cref="IEnvelopeStore.LookupMark"/> its caller read just before a <see cref="IEnvelopeStore.FindAsync"/>
    /// of <see cref="EnvelopeId"/> that found nothing. The store then decides whether the id is a duplicate from what it
    /// wrote since the mark, without reading its table, where it still remembers all of that (and no lookup since read
    /// the table's disk and found nothing, which a damaged record can cause too). Trusted as given, like the
    /// id: a wrong mark could store a replay twice. Null (the default): the store looks the id up itself.</summary>
    public long? NotFoundAtMark { get; init; }
}

/// <summary>Proof that the node accepted an envelope.</summary>
/// <param name="EnvelopeId">The 32-byte envelope id (<see cref="PutRequest.EnvelopeId"/>).</param>
/// <param name="LogIndex">Index of the envelope's leaf in the transparency log.</param>
/// <param name="MailboxSeq">Sequence number of the entry in the recipient's mailbox.</param>
/// <param name="TreeHead">A signed tree head that includes the leaf.</param>
/// <param name="Duplicate">True when the envelope was already stored (replay); the other fields are the original ones.</param>
public sealed record PutReceipt(byte[] EnvelopeId, long LogIndex, ulong MailboxSeq, SignedTreeHead TreeHead, bool Duplicate);

/// <summary>One result of <see cref="IEnvelopeStore.PutManyAsync"/>: a receipt or the reason for refusal.</summary>
public readonly record struct PutResult(PutReceipt? Receipt, Exception? Error);

/// <summary>A signed tree head: the node's Ed25519 signature over (size, root hash, timestamp).</summary>
/// <param name="TreeSize">Number of leaves.</param>
/// <param name="RootHash">32-byte RFC 9162 root hash (SHA-256).</param>
/// <param name="TimestampUnixMs">When the head was signed.</param>
/// <param name="NodePublicKey">The node's 32-byte Ed25519 public key.</param>
/// <param name="Signature">64-byte Ed25519 signature over the tree head bytes documented in docs/protocol.md.</param>
public sealed record SignedTreeHead(long TreeSize, byte[] RootHash, long TimestampUnixMs, byte[] NodePublicKey, byte[] Signature);

/// <summary>Envelopes waiting in a mailbox and their bytes, as its quotas count them.</summary>
public readonly record struct MailboxUsage(int Count, long Bytes);

/// <summary>A page of mailbox entries and the cursor to continue from.</summary>
public sealed record MailboxPage(IReadOnlyList<MailboxEntry> Entries, ulong NextCursor)
{
    /// <summary>Envelopes in the whole mailbox when the page was read, as its count quota counts them (expired mail
    /// may count until the next sweep, except near a limit, where the quota check leaves it out too).</summary>
    public int WaitingCount { get; init; }

    /// <summary>Their bytes, as the byte quota counts them.</summary>
    public long WaitingBytes { get; init; }
}

/// <summary>One message waiting in a mailbox. Its arrays are the caller's: the store keeps no reference to them and
/// never changes them after handing them out.</summary>
public sealed record MailboxEntry(ulong Seq, byte[] EnvelopeId, byte[] Envelope, DateTimeOffset ExpiresAt, long LogIndex);

/// <summary>A limit is reached: the recipient's mailbox is full, or (<see cref="DiskSpaceLowException"/>) the node's
/// disk nearly is; nothing was written.</summary>
public class QuotaExceededException(string message) : Exception(message);

/// <summary>The file system of the store has less free space than <see cref="StoreOptions.MinFreeDiskBytes"/>: no new
/// envelope is stored until space is freed (the store notices by itself). Nothing was written; retry later. A
/// <see cref="QuotaExceededException"/>, so the node answers <c>RESOURCE_EXHAUSTED</c> with a retry delay.</summary>
public sealed class DiskSpaceLowException(string message) : QuotaExceededException(message);

/// <summary>The store holds <see cref="StoreOptions.MaxHeldBytes"/> of mail: no new envelope is stored until owners
/// acknowledge mail or it expires. Nothing was written; retry later. A <see cref="QuotaExceededException"/>, so the node
/// answers <c>RESOURCE_EXHAUSTED</c> with a retry delay.</summary>
public sealed class StoreFullException(string message) : QuotaExceededException(message);
