using System.Buffers;
using Google.Protobuf;
using MegaNet.Api.V1;

namespace MegaNet.Node.Hosting;

/// <summary>
/// Parses <c>Submit</c>, <c>SubmitStream</c> and <c>SubmitBatchStream</c> requests without a new array per byte field:
/// the request's bytes are copied once into a buffer rented from <see cref="ArrayPool{T}.Shared"/>, and each envelope's
/// byte fields point into it (<see cref="UnsafeByteOperations.UnsafeWrap"/>). The generated parser copies every byte
/// field into an array of its own, all of it garbage once admission has re-encoded the envelope into its own buffer: a
/// streaming node allocated 3.4 KB an envelope with it, 2.0 KB with this (docs/performance-log.md, 2026-12-07).
/// The buffer goes back to the pool when the handler is done with the request (<see cref="Return(SubmitRequest)"/>).
/// <para>Only the form every encoder writes is parsed here: each field known to protocol version 1, at most once, in
/// any order, with varints of at most their type's width. Anything else (a repeated or unknown field, an overlong
/// varint, a wire type or length the parser would refuse) gives null, and the caller parses the request with the
/// generated parser, whose result and errors are the protocol's. Where this parser gives a request, the generated
/// parser that drops unknown fields gives an equal one (PooledSubmitParserTests compares them).</para>
/// </summary>
internal static class PooledSubmitParser
{
    // Tags (field number << 3 | wire type): length-delimited 2, varint 0.
    private const uint EnvelopeTag = 1 << 3 | 2;
    private const uint VersionTag = 1 << 3;
    private const uint RecipientTag = 2 << 3 | 2;
    private const uint ExpiresTag = 3 << 3;
    private const uint SealedPayloadTag = 4 << 3 | 2;
    private const uint SendingKeyTag = 5 << 3 | 2;
    private const uint PowTag = 6 << 3 | 2;
    private const uint SignatureTag = 7 << 3 | 2;
    private const uint PowBitsTag = 1 << 3;
    private const uint PowNonceTag = 2 << 3;

    /// <summary>The pooled parser of requests of type <typeparamref name="TRequest"/> (a request of that type, or null
    /// where only the generated parser may parse it), or null for a type it does not parse.</summary>
    public static Func<ReadOnlySequence<byte>, object?>? For<TRequest>() =>
        typeof(TRequest) == typeof(SubmitRequest) ? TryParseSubmit
        : typeof(TRequest) == typeof(SubmitBatchRequest) ? TryParseBatch
        : null;

    /// <summary>The request parsed into a pooled buffer, or null where only the generated parser may parse it.</summary>
    public static SubmitRequest? TryParseSubmit(ReadOnlySequence<byte> payload)
    {
        var request = new SubmitRequest();
        // A second envelope is merged into the first by the generated parser: not this parser's.
        request.PooledBytes = ParseEnvelopes(payload, request, static (r, envelope) =>
        {
            if (r.Envelope is not null)
            {
                return false;
            }

            r.Envelope = envelope;
            return true;
        });
        return request.PooledBytes is null ? null : request;
    }

    /// <summary>The batch request parsed into a pooled buffer, or null where only the generated parser may parse it.</summary>
    public static SubmitBatchRequest? TryParseBatch(ReadOnlySequence<byte> payload)
    {
        var request = new SubmitBatchRequest();
        request.PooledBytes = ParseEnvelopes(payload, request, static (r, envelope) =>
        {
            r.Envelopes.Add(envelope);
            return true;
        });
        return request.PooledBytes is null ? null : request;
    }

    // A request's envelopes (its field 1, the only one either request has), each handed to add, parsed in a buffer
    // rented for them and returned; null where the request is not in the form this parser takes, or add refuses one.
    private static byte[]? ParseEnvelopes<TRequest>(ReadOnlySequence<byte> payload, TRequest request, Func<TRequest, Envelope, bool> add)
    {
        // Submit requests are bounded far below this (RequestMessageGuard); a larger one is the generated parser's.
        if (payload.Length > RequestMessageGuard.EnvelopeMessageBytes)
        {
            return null;
        }

        byte[] wire = ArrayPool<byte>.Shared.Rent((int)payload.Length);
        payload.CopyTo(wire);
        int at = 0;
        int end = (int)payload.Length;
        while (at < end)
        {
            if (!TryReadVarint32(wire, ref at, end, out uint tag) || tag != EnvelopeTag || !TryReadLength(wire, ref at, end, out int length)
                || ParseEnvelope(wire, at, length) is not { } envelope || !add(request, envelope))
            {
                GiveBack(wire);
                return null;
            }

            at += length;
        }

        return wire;
    }

    /// <summary>Gives the request's buffer back to the pool, once nothing reads its envelope's byte fields any more
    /// (admission copies what it keeps before it queues a submission). The envelope is taken off the request, so a
    /// later read finds none rather than another request's bytes. Does nothing for a request parsed otherwise.</summary>
    public static void Return(SubmitRequest request)
    {
        if (request.PooledBytes is { } wire)
        {
            request.PooledBytes = null;
            request.Envelope = null;
            GiveBack(wire);
        }
    }

    /// <summary>As <see cref="Return(SubmitRequest)"/>, for a batch request's envelopes.</summary>
    public static void Return(SubmitBatchRequest request)
    {
        if (request.PooledBytes is { } wire)
        {
            request.PooledBytes = null;
            request.Envelopes.Clear();
            GiveBack(wire);
        }
    }

    // An empty request rented no array (the pool hands out Array.Empty), so there is none to give back.
    private static void GiveBack(byte[] wire)
    {
        if (wire.Length > 0)
        {
            ArrayPool<byte>.Shared.Return(wire);
        }
    }

    // One envelope in wire[start..start + length), or null.
    private static Envelope? ParseEnvelope(byte[] wire, int start, int length)
    {
        var envelope = new Envelope();
        int at = start;
        int end = start + length;
        int seen = 0; // a bit per field number
        while (at < end)
        {
            if (!TryReadVarint32(wire, ref at, end, out uint tag))
            {
                return null;
            }

            int field = (int)(tag >> 3);
            if (field is < 1 or > 7 || (seen & (1 << field)) != 0)
            {
                return null;
            }

            seen |= 1 << field;
            switch (tag)
            {
                case VersionTag:
                    if (!TryReadVarint32(wire, ref at, end, out uint version))
                    {
                        return null;
                    }

                    envelope.Version = version;
                    break;
                case ExpiresTag:
                    if (!TryReadVarint64(wire, ref at, end, out ulong expires))
                    {
                        return null;
                    }

                    envelope.ExpiresUnixMs = (long)expires;
                    break;
                case RecipientTag or SealedPayloadTag or SendingKeyTag or SignatureTag:
                    if (!TryReadLength(wire, ref at, end, out int size))
                    {
                        return null;
                    }

                    ByteString bytes = size == 0 ? ByteString.Empty : UnsafeByteOperations.UnsafeWrap(wire.AsMemory(at, size));
                    at += size;
                    switch (tag)
                    {
                        case RecipientTag:
                            envelope.Recipient = bytes;
                            break;
                        case SealedPayloadTag:
                            envelope.SealedPayload = bytes;
                            break;
                        case SendingKeyTag:
                            envelope.SendingKey = bytes;
                            break;
                        default:
                            envelope.Signature = bytes;
                            break;
                    }

                    break;
                case PowTag:
                    if (!TryReadLength(wire, ref at, end, out int powLength) || ParsePow(wire, at, powLength) is not { } pow)
                    {
                        return null;
                    }

                    envelope.Pow = pow;
                    at += powLength;
                    break;
                default:
                    return null; // a known field number with another wire type
            }
        }

        return envelope;
    }

    private static ProofOfWork? ParsePow(byte[] wire, int start, int length)
    {
        var pow = new ProofOfWork();
        int at = start;
        int end = start + length;
        int seen = 0;
        while (at < end)
        {
            if (!TryReadVarint32(wire, ref at, end, out uint tag))
            {
                return null;
            }

            switch (tag)
            {
                case PowBitsTag when (seen & 1) == 0:
                    seen |= 1;
                    if (!TryReadVarint32(wire, ref at, end, out uint bits))
                    {
                        return null;
                    }

                    pow.Bits = bits;
                    break;
                case PowNonceTag when (seen & 2) == 0:
                    seen |= 2;
                    if (!TryReadVarint64(wire, ref at, end, out ulong nonce))
                    {
                        return null;
                    }

                    pow.Nonce = nonce;
                    break;
                default:
                    return null;
            }
        }

        return pow;
    }

    // A length-delimited field's length: within what is left of the enclosing message.
    private static bool TryReadLength(byte[] wire, ref int at, int end, out int length)
    {
        if (!TryReadVarint32(wire, ref at, end, out uint value) || value > (uint)(end - at))
        {
            length = 0;
            return false;
        }

        length = (int)value;
        return true;
    }

    // A varint of at most five bytes whose value fits 32 bits (longer ones, which the generated parser truncates, are
    // left to it).
    private static bool TryReadVarint32(byte[] wire, ref int at, int end, out uint value)
    {
        int start = at;
        bool read = TryReadVarint64(wire, ref at, end, out ulong wide) && at - start <= 5 && wide <= uint.MaxValue;
        value = read ? (uint)wide : 0;
        return read;
    }

    // A varint of at most ten bytes whose value fits 64 bits.
    private static bool TryReadVarint64(byte[] wire, ref int at, int end, out ulong value)
    {
        value = 0;
        for (int shift = 0; shift < 70; shift += 7)
        {
            if (at >= end)
            {
                return false;
            }

            byte b = wire[at++];
            if (shift == 63 && b > 0x01)
            {
                return false;
            }

            value |= (ulong)(b & 0x7F) << shift;
            if (b < 0x80)
            {
                return true;
            }
        }

        return false;
    }
}
