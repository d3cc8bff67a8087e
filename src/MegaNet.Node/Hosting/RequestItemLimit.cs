using System.Buffers;
using MegaNet.Api.V1;
using MegaNet.Node.Services;

namespace MegaNet.Node.Hosting;

/// <summary>
/// The most items a request of a few types may hold, counted on the wire before the request is parsed. Parsed, an empty
/// item costs the node an object of 50–100 bytes for its 2 bytes on the wire: a 16 MiB <c>VerifyBatch</c> of empty
/// items became half a gigabyte of objects before the handler could count them and refuse the call. Only the request's
/// tags are read, as the parser reads them. (Unknown fields, which the generated parser keeps as objects too, are not
/// kept: <see cref="UndefinedFieldCheck"/>.) The same holds one level down, where an item holds a repeated field:
/// a single <c>VerifyBatch</c> inclusion item of 8,000,000 empty path hashes (16 MB) took 1.1 GB and 3 s of CPU to
/// parse, outside the gate that bounds verification, so such entries are counted too, across the request.
/// </summary>
internal sealed class RequestItemLimit
{
    private readonly ulong _fieldMask;
    private readonly int _max;
    private readonly Func<long, string> _refusal;

    // The repeated field counted inside each item of a top-level field (index: the top-level field number; 0: none),
    // the most such entries in the whole request, and the refusal beyond it.
    private readonly int[] _nestedField = new int[64];
    private readonly long _maxNested;
    private readonly Func<long, string>? _nestedRefusal;

    private RequestItemLimit(int[] fields, int max, Func<long, string> refusal, (int Item, int Entry)[]? nested = null, long maxNested = 0, Func<long, string>? nestedRefusal = null)
    {
        foreach (int field in fields)
        {
            _fieldMask |= 1UL << field;
        }

        _max = max;
        _refusal = refusal;
        foreach ((int item, int entry) in nested ?? [])
        {
            _nestedField[item] = entry;
        }

        _maxNested = maxNested;
        _nestedRefusal = nestedRefusal;
    }

    /// <summary>The limit for requests of type <typeparamref name="TRequest"/>, or null for a type without one.</summary>
    public static RequestItemLimit? For<TRequest>() =>
        typeof(TRequest) == typeof(VerifyBatchRequest) ? VerifyBatch
        : typeof(TRequest) == typeof(SubmitBatchRequest) ? SubmitBatch
        : null;

    /// <summary><c>VerifyBatch</c>: signatures, inclusion and consistency proofs together.</summary>
    public static RequestItemLimit VerifyBatch { get; } = new(
        [VerifyBatchRequest.SignaturesFieldNumber, VerifyBatchRequest.InclusionsFieldNumber, VerifyBatchRequest.ConsistenciesFieldNumber],
        RelayService.MaxVerifyItems, RelayService.TooManyVerifyItems,
        [(VerifyBatchRequest.InclusionsFieldNumber, InclusionItem.PathFieldNumber), (VerifyBatchRequest.ConsistenciesFieldNumber, ConsistencyItem.PathFieldNumber)],
        RelayService.MaxVerifyPathHashes, RelayService.TooManyVerifyPathHashes);

    /// <summary>A <c>SubmitBatchStream</c> request's envelopes.</summary>
    public static RequestItemLimit SubmitBatch { get; } = new([SubmitBatchRequest.EnvelopesFieldNumber], RelayService.MaxBatchEnvelopes, RelayService.TooManyBatchEnvelopes);

    /// <summary>Why <paramref name="payload"/> holds too many items, or null. The payload is read as Google.Protobuf's
    /// parser reads it (tags and lengths in their low 32 bits, groups skipped whole), so an item the parser would make
    /// is counted; where the scan stops on bytes the parser refuses, the items before them still count, since the
    /// parser makes them before it refuses.</summary>
    public string? Refusal(ReadOnlySequence<byte> payload)
    {
        long items = Count(payload, _fieldMask, _nestedField, out long nested);
        return items > _max ? _refusal(items)
            : _nestedRefusal is not null && nested > _maxNested ? _nestedRefusal(nested)
            : null;
    }

    /// <summary>The length-delimited entries of the fields in <paramref name="fieldMask"/> at the top of
    /// <paramref name="payload"/>, and in <paramref name="nested"/> those of the field <paramref name="nestedField"/>
    /// names inside each (none when null).</summary>
    private static long Count(ReadOnlySequence<byte> payload, ulong fieldMask, int[]? nestedField, out long nested)
    {
        var reader = new SequenceReader<byte>(payload);
        long end = payload.Length;
        long items = 0;
        nested = 0;
        int depth = 0; // inside groups (unknown fields the parser skips or keeps whole)
        while (!reader.End)
        {
            if (!TryReadVarint32(ref reader, out uint tag) || tag == 0)
            {
                break;
            }

            uint wireType = tag & 7;
            long valueStart = reader.Consumed;
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
            if (depth == 0 && wireType == 2 && field < 64 && (fieldMask & (1UL << (int)field)) != 0)
            {
                items++;
                if (nestedField is not null && nestedField[field] != 0)
                {
                    // The item's bytes, after its length: its entries are counted as its own parser would make them.
                    var item = new SequenceReader<byte>(payload.Slice(valueStart, reader.Consumed - valueStart));
                    TryReadVarint32(ref item, out _);
                    nested += Count(payload.Slice(item.Position, reader.Position), 1UL << nestedField[field], null, out _);
                }
            }
        }

        return items;
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
