using Google.Protobuf;
using MegaNet.Api.V1;
using MegaNet.Node.Benchmarking;

namespace MegaNet.Node.Tests;

/// <summary>The load client's reading of submit answers for their status alone, against the generated encoder.</summary>
public sealed class PreEncodedSubmitsTests
{
    private static SubmitResult Accepted(long index) => new()
    {
        Receipt = new Receipt
        {
            EnvelopeId = ByteString.CopyFrom(new byte[32]),
            LogIndex = index,
            TreeHead = new SignedTreeHead { TreeSize = index + 1, RootHash = ByteString.CopyFrom(new byte[32]), TimestampUnixMs = 1, NodeKey = ByteString.CopyFrom(new byte[32]), Signature = ByteString.CopyFrom(new byte[64]) },
        },
    };

    [Fact]
    public void A_batch_answer_gives_each_results_status_and_reason_in_order_past_receipts_hints_and_unknown_fields()
    {
        var batch = new SubmitBatchResult
        {
            Results =
            {
                Accepted(7),
                new SubmitResult { StatusCode = 8, Error = "Too many submissions from this sending key", RetryAfterMs = 250 },
                new SubmitResult { StatusCode = 9, Error = "proof of work needed", PowBits = 12, PowSeed = ByteString.CopyFrom(new byte[16]) },
                Accepted(8),
                new SubmitResult { StatusCode = 3, Error = "é, not ASCII" },
            },
        };
        // A field this build does not know, after the results and inside the last one, as a newer node may send.
        byte[] encoded = [.. batch.ToByteArray(), .. Unknown()];
        byte[] last = [.. batch.Results[4].ToByteArray(), .. Unknown()];
        var firstFour = new SubmitBatchResult { Results = { batch.Results.Take(4) } };
        byte[] inner = [.. firstFour.ToByteArray(), .. LengthDelimited(SubmitBatchResult.ResultsFieldNumber, last)];

        SubmitOutcome[] expected = [new(0, ""), new(8, "Too many submissions from this sending key"), new(9, "proof of work needed"), new(0, ""), new(3, "é, not ASCII")];
        Assert.Equal(expected, PreEncodedSubmits.ReadBatchResult(encoded));
        Assert.Equal(expected, PreEncodedSubmits.ReadBatchResult(inner));
        Assert.Empty(PreEncodedSubmits.ReadBatchResult([]));
        Assert.Equal(new SubmitOutcome(8, "Too many submissions from this sending key"), PreEncodedSubmits.ReadResult(batch.Results[1].ToByteArray()));
        Assert.Equal(new SubmitOutcome(0, ""), PreEncodedSubmits.ReadResult(Accepted(3).ToByteArray()));
    }

    [Fact]
    public void Bytes_that_are_no_answer_are_refused_not_read_as_outcomes()
    {
        byte[] result = new SubmitResult { StatusCode = 8, Error = "slow down" }.ToByteArray();
        // A result whose length runs past the answer's end, cut inside its error text or between two of its fields,
        // and a result cut short inside its error text.
        Assert.ThrowsAny<InvalidProtocolBufferException>(() => PreEncodedSubmits.ReadBatchResult(LengthDelimited(1, result)[..^3]));
        Assert.Throws<InvalidDataException>(() => PreEncodedSubmits.ReadBatchResult(LengthDelimited(1, result)[..4]));
        Assert.ThrowsAny<InvalidProtocolBufferException>(() => PreEncodedSubmits.ReadResult(result[..^2]));
        // A result whose length ends inside its last field: the field is read past it.
        byte[] overrun = LengthDelimited(1, result);
        overrun[1]--;
        Assert.Throws<InvalidDataException>(() => PreEncodedSubmits.ReadBatchResult(overrun));
    }

    [Fact]
    public void The_calls_are_the_relays_own_methods()
    {
        Assert.Equal("/meganet.v1.Relay/SubmitStream", PreEncodedSubmits.SubmitStream.FullName);
        Assert.Equal("/meganet.v1.Relay/SubmitBatchStream", PreEncodedSubmits.SubmitBatchStream.FullName);
        Assert.Equal(Grpc.Core.MethodType.DuplexStreaming, PreEncodedSubmits.SubmitBatchStream.Type);
    }

    private static byte[] Unknown()
    {
        using var bytes = new MemoryStream();
        var output = new CodedOutputStream(bytes);
        output.WriteTag(99, WireFormat.WireType.Varint);
        output.WriteUInt64(123_456_789);
        output.Flush();
        return bytes.ToArray();
    }

    private static byte[] LengthDelimited(int field, byte[] value)
    {
        using var bytes = new MemoryStream();
        var output = new CodedOutputStream(bytes);
        output.WriteTag(field, WireFormat.WireType.LengthDelimited);
        output.WriteBytes(ByteString.CopyFrom(value));
        output.Flush();
        return bytes.ToArray();
    }
}
