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
/// parse, outside the gate that bounds verification, so such entries are counted too, across the request. The count is
/// taken on <see cref="RequestWireScan"/>'s pass over the request, which also finds a tag the parser would let through.
/// </summary>
internal sealed class RequestItemLimit
{
    private readonly RequestWireScan _scan;
    private readonly int _max;
    private readonly Func<long, string> _refusal;
    private readonly long _maxNested;
    private readonly Func<long, string>? _nestedRefusal;

    private RequestItemLimit(RequestWireScan scan, int max, Func<long, string> refusal, long maxNested = 0, Func<long, string>? nestedRefusal = null)
    {
        _scan = scan;
        _max = max;
        _refusal = refusal;
        _maxNested = maxNested;
        _nestedRefusal = nestedRefusal;
    }

    /// <summary>The limit for requests of type <typeparamref name="TRequest"/>, or null for a type without one.</summary>
    public static RequestItemLimit? For<TRequest>() =>
        typeof(TRequest) == typeof(VerifyBatchRequest) ? VerifyBatch
        : typeof(TRequest) == typeof(SubmitBatchRequest) ? SubmitBatch
        : null;

    /// <summary><c>VerifyBatch</c>: signatures, inclusion and consistency proofs together (counter 0), and the path
    /// hashes of the proofs (counter 1).</summary>
    public static RequestItemLimit VerifyBatch { get; } = new(
        RequestWireScan.Of(VerifyBatchRequest.Descriptor,
            (VerifyBatchRequest.Descriptor, VerifyBatchRequest.SignaturesFieldNumber, 0),
            (VerifyBatchRequest.Descriptor, VerifyBatchRequest.InclusionsFieldNumber, 0),
            (VerifyBatchRequest.Descriptor, VerifyBatchRequest.ConsistenciesFieldNumber, 0),
            (InclusionItem.Descriptor, InclusionItem.PathFieldNumber, 1),
            (ConsistencyItem.Descriptor, ConsistencyItem.PathFieldNumber, 1)),
        RelayService.MaxVerifyItems, RelayService.TooManyVerifyItems, RelayService.MaxVerifyPathHashes, RelayService.TooManyVerifyPathHashes);

    /// <summary>A <c>SubmitBatchStream</c> request's envelopes.</summary>
    public static RequestItemLimit SubmitBatch { get; } = new(
        RequestWireScan.Of(SubmitBatchRequest.Descriptor, (SubmitBatchRequest.Descriptor, SubmitBatchRequest.EnvelopesFieldNumber, 0)),
        RelayService.MaxBatchEnvelopes, RelayService.TooManyBatchEnvelopes);

    /// <summary>Why <paramref name="payload"/> holds too many items, or null.</summary>
    public string? Refusal(ReadOnlySequence<byte> payload) => Refusal(payload, out _);

    /// <summary>Why <paramref name="payload"/> holds too many items, or null; and in <paramref name="invalidWireType"/>
    /// what <see cref="RequestWireScan.InvalidWireType"/> found on the same pass. The payload is read as
    /// Google.Protobuf's parser reads it, so an item the parser would make is counted; where the scan stops on bytes
    /// the parser refuses, the items before them still count, since the parser makes them before it refuses.</summary>
    public string? Refusal(ReadOnlySequence<byte> payload, out string? invalidWireType)
    {
        Span<long> counts = [0, 0];
        invalidWireType = _scan.InvalidWireType(payload, counts);
        return counts[0] > _max ? _refusal(counts[0])
            : _nestedRefusal is not null && counts[1] > _maxNested ? _nestedRefusal(counts[1])
            : null;
    }
}
