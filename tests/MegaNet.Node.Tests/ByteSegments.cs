using System.Buffers;

namespace MegaNet.Node.Tests;

/// <summary>Bytes as a sequence of several segments, as a request's body may come from Kestrel's pipe.</summary>
internal static class ByteSegments
{
    /// <summary><paramref name="bytes"/> in pieces of 1, 2, ... 7 bytes, over and over.</summary>
    public static ReadOnlySequence<byte> InPieces(byte[] bytes)
    {
        Segment first = new(bytes.AsMemory(0, 1)), last = first;
        for (int at = 1, size = 2; at < bytes.Length; at += size, size = (size % 7) + 1)
        {
            last = last.Append(bytes.AsMemory(at, Math.Min(size, bytes.Length - at)));
        }

        return new ReadOnlySequence<byte>(first, 0, last, last.Memory.Length);
    }

    /// <summary><paramref name="bytes"/> as two segments, the first <paramref name="at"/> bytes long.</summary>
    public static ReadOnlySequence<byte> SplitAt(byte[] bytes, int at)
    {
        Segment first = new(bytes.AsMemory(0, at)), last = first.Append(bytes.AsMemory(at));
        return new ReadOnlySequence<byte>(first, 0, last, last.Memory.Length);
    }

    private sealed class Segment : ReadOnlySequenceSegment<byte>
    {
        public Segment(ReadOnlyMemory<byte> memory) => Memory = memory;

        public Segment Append(ReadOnlyMemory<byte> memory)
        {
            var next = new Segment(memory) { RunningIndex = RunningIndex + Memory.Length };
            Next = next;
            return next;
        }
    }
}
