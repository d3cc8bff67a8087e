using Google.Protobuf;
using Grpc.Core;
using MegaNet.Api.V1;

namespace MegaNet.Node.Benchmarking;

/// <summary>What the load client reads of a submission's answer: its status and, when refused, why.</summary>
internal readonly record struct SubmitOutcome(int StatusCode, string Error);

/// <summary>
/// <c>SubmitStream</c> and <c>SubmitBatchStream</c> for <c>meganet load</c>: the same calls and bytes on the wire as the
/// generated client's, with requests encoded before timing starts (as the envelopes are sealed before it) and answers
/// read for their status alone. The load client shares the node's cores, so what it spends is taken from the node:
/// encoding the requests and parsing every receipt into objects was about 40 % of its CPU (2026-12-07).
/// </summary>
internal static class PreEncodedSubmits
{
    private static readonly Marshaller<byte[]> Encoded = Marshallers.Create(static (byte[] b) => b, static b => b);

    private static readonly uint ResultsTag = WireFormat.MakeTag(SubmitBatchResult.ResultsFieldNumber, WireFormat.WireType.LengthDelimited);
    private static readonly uint StatusCodeTag = WireFormat.MakeTag(SubmitResult.StatusCodeFieldNumber, WireFormat.WireType.Varint);
    private static readonly uint ErrorTag = WireFormat.MakeTag(SubmitResult.ErrorFieldNumber, WireFormat.WireType.LengthDelimited);

    /// <summary><c>SubmitStream</c>: an encoded <see cref="SubmitRequest"/> a message, each answer one outcome.</summary>
    public static readonly Method<byte[], SubmitOutcome[]> SubmitStream = new(MethodType.DuplexStreaming, Relay.Descriptor.FullName,
        nameof(Relay.RelayClient.SubmitStream), Encoded, Marshallers.Create<SubmitOutcome[]>(NotSent, static b => [ReadResult(b)]));

    /// <summary><c>SubmitBatchStream</c>: an encoded <see cref="SubmitBatchRequest"/> a message, each answer an outcome
    /// per envelope of its request.</summary>
    public static readonly Method<byte[], SubmitOutcome[]> SubmitBatchStream = new(MethodType.DuplexStreaming, Relay.Descriptor.FullName,
        nameof(Relay.RelayClient.SubmitBatchStream), Encoded, Marshallers.Create<SubmitOutcome[]>(NotSent, ReadBatchResult));

    /// <summary>The outcomes of an encoded <see cref="SubmitBatchResult"/>, in order.</summary>
    /// <exception cref="InvalidProtocolBufferException">The bytes are not a <see cref="SubmitBatchResult"/> (or
    /// <see cref="InvalidDataException"/>, for a result's length that does not fit its fields or runs past the end).</exception>
    internal static SubmitOutcome[] ReadBatchResult(byte[] encoded)
    {
        var input = new CodedInputStream(encoded);
        var outcomes = new List<SubmitOutcome>(64);
        for (uint tag = input.ReadTag(); tag != 0; tag = input.ReadTag())
        {
            if (tag == ResultsTag)
            {
                int length = input.ReadLength();
                outcomes.Add(ReadResult(input, input.Position + length));
            }
            else
            {
                input.SkipLastField();
            }
        }

        return [.. outcomes];
    }

    /// <summary>The outcome of an encoded <see cref="SubmitResult"/>.</summary>
    /// <exception cref="InvalidProtocolBufferException">The bytes are not a <see cref="SubmitResult"/>.</exception>
    internal static SubmitOutcome ReadResult(byte[] encoded) => ReadResult(new CodedInputStream(encoded), encoded.Length);

    // Reads fields up to end, the receipt and the retry and proof-of-work hints skipped unread.
    private static SubmitOutcome ReadResult(CodedInputStream input, long end)
    {
        int code = 0;
        string error = "";
        while (input.Position < end)
        {
            uint tag = input.ReadTag();
            if (tag == 0)
            {
                throw new InvalidDataException("A submit result's length runs past the answer's end.");
            }

            if (tag == StatusCodeTag)
            {
                code = input.ReadInt32();
            }
            else if (tag == ErrorTag)
            {
                error = input.ReadString();
            }
            else
            {
                // At the end of the bytes (a length past them) this throws.
                input.SkipLastField();
            }
        }

        return input.Position == end ? new(code, error) : throw new InvalidDataException("A submit result ran past its length.");
    }

    private static byte[] NotSent(SubmitOutcome[] outcomes) => throw new NotSupportedException("Outcomes are only read.");
}
