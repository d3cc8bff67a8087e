using System.Buffers.Binary;
using NSec.Cryptography;

namespace MegaNet.Api;

/// <summary>
/// What a signed mailbox challenge is good for (docs/protocol.md, "Mailbox authentication"): one <c>Fetch</c>, one
/// <c>Subscribe</c>, or one <c>Ack</c> of exactly the sequence numbers it names. Without it a signature made for a
/// <c>Fetch</c>, seen by a proxy or a node before it was used, deleted the mailbox's unread mail as an <c>Ack</c>.
/// </summary>
public readonly struct MailboxPurpose
{
    private const byte FetchCode = 1, SubscribeCode = 2, AckCode = 3;

    private readonly byte[]? _bytes;

    private MailboxPurpose(byte[] bytes) => _bytes = bytes;

    /// <summary>A <c>Fetch</c> of any page.</summary>
    public static MailboxPurpose Fetch { get; } = new([FetchCode]);

    /// <summary>A <c>Subscribe</c> from any cursor.</summary>
    public static MailboxPurpose Subscribe { get; } = new([SubscribeCode]);

    /// <summary>The bytes signed after the address: the method's code, and for <c>Ack</c> the digest of its sequence
    /// numbers.</summary>
    public ReadOnlySpan<byte> Bytes => _bytes ?? throw new InvalidOperationException("A MailboxPurpose must be one of Fetch, Subscribe or Ack(...).");

    /// <summary>An <c>Ack</c> of <paramref name="seqs"/>, in this order: code 3 ‖ BLAKE2b-256 of the sequence numbers,
    /// each a u64 big-endian.</summary>
    public static MailboxPurpose Ack(IReadOnlyCollection<ulong> seqs)
    {
        ArgumentNullException.ThrowIfNull(seqs);
        byte[] numbers = new byte[8 * seqs.Count];
        int i = 0;
        foreach (ulong seq in seqs)
        {
            BinaryPrimitives.WriteUInt64BigEndian(numbers.AsSpan(8 * i++), seq);
        }

        return new([AckCode, .. HashAlgorithm.Blake2b_256.Hash(numbers)]);
    }
}
