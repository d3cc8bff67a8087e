using System.Buffers;
using Grpc.Core;

namespace MegaNet.Node.Tests;

/// <summary>A request message's bytes as Grpc.AspNetCore hands them to a request marshaller.</summary>
internal sealed class RequestPayload(byte[] bytes) : DeserializationContext
{
    public override int PayloadLength => bytes.Length;

    public override byte[] PayloadAsNewBuffer() => bytes.ToArray();

    public override ReadOnlySequence<byte> PayloadAsReadOnlySequence() => new(bytes);
}
