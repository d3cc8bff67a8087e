using System.Buffers;
using MegaNet.Api.V1;
using MegaNet.Node.Services;

namespace MegaNet.Node.Hosting;

/// <summary>
/// The most items a request of a few types may hold, counted on the wire before the request is parsed. Parsed, an empty
/// item costs the node an object of 50–100 bytes for its 2 bytes on the wire: a 16 MiB <c>VerifyBatch</c> of empty
/// items became half a gigabyte of objects before the handler could count them and refuse the call. Only the request's
/// top-level tags are read, and a payload that does not scan is left for the parser to refuse.
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

    /// <summary>Why <paramref name="payload"/> holds too many items, or null (also for a payload that is not protobuf:
    /// the parser says what is wrong with it). Every tag is read, so the refusal says how many there are.</summary>
    public string? Refusal(ReadOnlySequence<byte> payload)
    {
        var reader = new SequenceReader<byte>(payload);
        long items = 0;
        while (!reader.End)
        {
            if (!TryReadVarint(ref reader, out ulong tag))
            {
                return null;
            }

            bool skipped = (tag & 7) switch
            {
                0 => TryReadVarint(ref reader, out _),
                1 => TrySkip(ref reader, 8),
                2 => TryReadVarint(ref reader, out ulong length) && TrySkip(ref reader, length),
                5 => TrySkip(ref reader, 4),
                _ => false, // groups, or not a wire type: the parser's to refuse
            };
            if (!skipped)
            {
                return null;
            }

            ulong field = tag >> 3;
            items += field < 64 && (_fieldMask & (1UL << (int)field)) != 0 ? 1 : 0;
        }

        return items > _max ? _refusal(items) : null;
    }

    private static bool TrySkip(ref SequenceReader<byte> reader, ulong count)
    {
        if (count > (ulong)reader.Remaining)
        {
            return false;
        }

        reader.Advance((long)count);
        return true;
    }

    private static bool TryReadVarint(ref SequenceReader<byte> reader, out ulong value)
    {
        value = 0;
        for (int shift = 0; shift < 64; shift += 7)
        {
            if (!reader.TryRead(out byte b))
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
