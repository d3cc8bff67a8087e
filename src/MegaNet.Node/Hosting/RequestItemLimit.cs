using System.Buffers;
using MegaNet.Api.V1;
using MegaNet.Node.Services;

namespace MegaNet.Node.Hosting;

/// <summary>
/// The most items a request of a few types may hold, counted on the wire before the request is parsed. Parsed, an empty
/// item costs the node an object of 50–100 bytes for its 2 bytes on the wire: a 16 MiB <c>VerifyBatch</c> of empty
/// items became half a gigabyte of objects before the handler could count them and refuse the call. Only the request's
/// tags are read, as the parser reads them. (Unknown fields, which the generated parser keeps as objects too, are not
/// kept: <see cref="UndefinedFieldCheck"/>.)
/// </summary>
internal sealed class RequestItemLimit
{
    private readonly ulong _fieldMask;
    private readonly int _max;
    private readonly Func<long, string> _refusal;

    private RequestItemLimit(int[] fields, int max, Func<long, string> refusal)
    {
        foreach (int field in fields)
        {
            _fieldMask |= 1UL << field;
        }

        _max = max;
        _refusal = refusal;
    }

    /// <summary>The limit for requests of type <typeparamref name="TRequest"/>, or null for a type without one.</summary>
    public static RequestItemLimit? For<TRequest>() =>
        typeof(TRequest) == typeof(VerifyBatchRequest) ? VerifyBatch
        : typeof(TRequest) == typeof(SubmitBatchRequest) ? SubmitBatch
        : null;

    /// <summary><c>VerifyBatch</c>: signatures, inclusion and consistency proofs together.</summary>
    public static RequestItemLimit VerifyBatch { get; } = new(
        [VerifyBatchRequest.SignaturesFieldNumber, VerifyBatchRequest.InclusionsFieldNumber, VerifyBatchRequest.ConsistenciesFieldNumber],
        RelayService.MaxVerifyItems, RelayService.TooManyVerifyItems);

    /// <summary>A <c>SubmitBatchStream</c> request's envelopes.</summary>
    public static RequestItemLimit SubmitBatch { get; } = new([SubmitBatchRequest.EnvelopesFieldNumber], RelayService.MaxBatchEnvelopes, RelayService.TooManyBatchEnvelopes);

    /// <summary>Why <paramref name="payload"/> holds too many items, or null. The payload is read as Google.Protobuf's
    /// parser reads it (tags and lengths in their low 32 bits, groups skipped whole), so an item the parser would make
    /// is counted; where the scan stops on bytes the parser refuses, the items before them still count, since the
    /// parser makes them before it refuses.</summary>
    public string? Refusal(ReadOnlySequence<byte> payload)
    {
        var reader = new SequenceReader<byte>(payload);
        long end = payload.Length;
        long items = 0;
        int depth = 0; // inside groups (unknown fields the parser skips or keeps whole)
        while (!reader.End)
        {
            if (!TryReadVarint32(ref reader, out uint tag) || tag == 0)
            {
                break;
            }

            uint wireType = tag & 7;
            bool read = wireType switch
            {
                3 => ++depth > 0,
                4 => depth-- > 0,
                6 or 7 => true, // no payload; a parser that drops unknown fields passes over them and reads on
                _ => TrySkipValue(ref reader, wireType, end),
            };
            if (!read)
            {
                break;
            }

            // A repeated message field is parsed from its length-delimited tag only; another wire type under its
            // number is an unknown field.
            uint field = tag >> 3;
            if (depth == 0 && wireType == 2 && field < 64 && (_fieldMask & (1UL << (int)field)) != 0)
            {
                items++;
            }
        }

        return items > _max ? _refusal(items) : null;
    }

    /// <summary>Passes over a value of wire type 0, 1, 2 or 5, which must end by <paramref name="end"/>; false where it
    /// is cut short or its length is one the parser refuses.</summary>
    internal static bool TrySkipValue(ref SequenceReader<byte> reader, uint wireType, long end) =>
        wireType switch
        {
            0 => TryReadVarint32(ref reader, out _),
            1 => TrySkip(ref reader, 8),
            2 => TryReadVarint32(ref reader, out uint length) && (int)length >= 0 && TrySkip(ref reader, length),
            _ => TrySkip(ref reader, 4),
        } && reader.Consumed <= end;

    private static bool TrySkip(ref SequenceReader<byte> reader, ulong count)
    {
        if (count > (ulong)reader.Remaining)
        {
            return false;
        }

        reader.Advance((long)count);
        return true;
    }

    /// <summary>A varint of up to 10 bytes, keeping its low 32 bits, as the parser reads tags and lengths.</summary>
    internal static bool TryReadVarint32(ref SequenceReader<byte> reader, out uint value)
    {
        value = 0;
        for (int i = 0; i < 10; i++)
        {
            if (!reader.TryRead(out byte b))
            {
                return false;
            }

            if (i < 5)
            {
                value |= (uint)(b & 0x7F) << (7 * i);
            }

            if (b < 0x80)
            {
                return true;
            }
        }

        return false;
    }
}
