using System.Buffers;
using Google.Protobuf;
using MegaNet.Node.Hosting;

namespace MegaNet.Node.Tests;

/// <summary>The request scan's varint reader (tags and lengths) reads what protobuf's parser reads, wherever the
/// request's buffer segments split the varint, and refuses a varint cut short or longer than 10 bytes.</summary>
public sealed class RequestWireScanVarintTests
{
    public static TheoryData<ulong> Values { get; } = new()
    {
        0, 1, 0x7F, 0x80, 0x3FFF, 0x4000, 0x1F_FFFF, 0x20_0000, 0xFFF_FFFF, 0x1000_0000, uint.MaxValue, 1UL << 35, ulong.MaxValue,
    };

    [Theory]
    [MemberData(nameof(Values))]
    public void Reads_the_low_32_bits_as_protobuf_does_at_every_split_and_stops_after_the_varint(ulong value)
    {
        var bytes = new MemoryStream();
        var output = new CodedOutputStream(bytes);
        output.WriteUInt64(value);
        output.WriteRawTag(0x2A); // what follows the varint: must be left unread
        output.Flush();
        byte[] wire = bytes.ToArray();
        uint expected = new CodedInputStream(wire).ReadUInt32();
        int length = wire.Length - 1;

        for (int split = 0; split <= wire.Length; split++)
        {
            var reader = new SequenceReader<byte>(ByteSegments.SplitAt(wire, split));
            Assert.True(RequestWireScan.TryReadVarint32(ref reader, out uint read), $"split at {split}");
            Assert.Equal(expected, read);
            Assert.Equal(length, reader.Consumed);

            // Cut short anywhere: refused.
            for (int cut = 0; cut < length; cut++)
            {
                var shortReader = new SequenceReader<byte>(ByteSegments.SplitAt(wire[..cut], Math.Min(split, cut)));
                Assert.False(RequestWireScan.TryReadVarint32(ref shortReader, out _), $"{cut} of {length} bytes, split at {split}");
            }
        }
    }

    [Fact]
    public void Refuses_a_varint_of_more_than_10_bytes()
    {
        byte[] wire = [.. Enumerable.Repeat((byte)0x80, 10), 0x01];
        for (int split = 0; split <= wire.Length; split++)
        {
            var reader = new SequenceReader<byte>(ByteSegments.SplitAt(wire, split));
            Assert.False(RequestWireScan.TryReadVarint32(ref reader, out _), $"split at {split}");
        }
    }
}
