using System.Buffers;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Net.Client;
using MegaNet.Api.V1;
using MegaNet.Node.Hosting;
using MegaNet.Node.Services;

namespace MegaNet.Node.Tests;

/// <summary>Requests of too many items are refused from their tags, before they are parsed into objects.</summary>
public sealed class RequestItemLimitTests
{
    [Fact]
    public void Items_are_counted_on_the_wire_whatever_their_kind_and_other_fields_are_not()
    {
        var request = new VerifyBatchRequest();
        request.Signatures.Add(Enumerable.Range(0, 65_000).Select(_ => new SignatureItem()));
        request.Inclusions.Add(Enumerable.Range(0, 500).Select(_ => new InclusionItem { LeafIndex = 3, Path = { ByteString.CopyFrom(new byte[32]) } }));
        request.Consistencies.Add(Enumerable.Range(0, 36).Select(_ => new ConsistencyItem { FirstSize = 1 }));
        byte[] bytes = request.ToByteArray();
        Assert.Null(RequestItemLimit.VerifyBatch.Refusal(new ReadOnlySequence<byte>(bytes))); // 65,536: the limit

        // Fields the message does not define (each wire type) are skipped, not counted.
        byte[] unknown = [0x20, 0x96, 0x01, 0x29, 1, 2, 3, 4, 5, 6, 7, 8, 0x32, 0x02, 0x0A, 0x00, 0x3D, 1, 2, 3, 4];
        Assert.Null(RequestItemLimit.VerifyBatch.Refusal(new ReadOnlySequence<byte>([.. bytes, .. unknown])));

        request.Consistencies.Add(new ConsistencyItem());
        bytes = [.. request.ToByteArray(), .. unknown];
        Assert.Equal("This VerifyBatch call has 65,537 items; at most 65,536 (signatures, inclusion and consistency proofs together, Status.limits.max_verify_batch) are taken in one call.",
            RequestItemLimit.VerifyBatch.Refusal(new ReadOnlySequence<byte>(bytes)));
        // The same, read from a payload in pieces of 1 to 7 bytes (as HTTP/2 frames may leave it): tags and lengths
        // that straddle pieces are read whole.
        Assert.Contains("has 65,537 items", RequestItemLimit.VerifyBatch.Refusal(ByteSegments.InPieces(bytes)), StringComparison.Ordinal);

        // Bytes the parser refuses end the scan; the items before them count, since the parser makes them before it
        // refuses (cut short, or a tag of field 0 after them).
        Assert.Contains("has 65,537 items", RequestItemLimit.VerifyBatch.Refusal(new ReadOnlySequence<byte>(bytes[..^3])), StringComparison.Ordinal);
        Assert.Contains("has 65,537 items", RequestItemLimit.VerifyBatch.Refusal(new ReadOnlySequence<byte>([.. bytes, 0x07])), StringComparison.Ordinal);
        Assert.Null(RequestItemLimit.VerifyBatch.Refusal(new ReadOnlySequence<byte>([0x0B, 0x00])));

        // Read as the parser reads them: a length or a tag in more than 32 bits keeps its low 32 (0x10 << 28 is 0
        // there: a length of 0, field 1), and a group it skips whole, items inside it not counted.
        byte[] empties = [.. Enumerable.Repeat<byte[]>([0x0A, 0x00], 65_536).SelectMany(b => b)];
        Assert.Contains("has 65,537 items", RequestItemLimit.VerifyBatch.Refusal(new ReadOnlySequence<byte>([0x0A, 0x80, 0x80, 0x80, 0x80, 0x10, .. empties])), StringComparison.Ordinal);
        Assert.Contains("has 65,537 items", RequestItemLimit.VerifyBatch.Refusal(new ReadOnlySequence<byte>([0x8A, 0x80, 0x80, 0x80, 0x10, 0x00, .. empties])), StringComparison.Ordinal);
        Assert.Contains("has 65,537 items", RequestItemLimit.VerifyBatch.Refusal(new ReadOnlySequence<byte>([0x7B, 0x0A, 0x00, 0x7C, 0x0A, 0x00, .. empties])), StringComparison.Ordinal);
        Assert.Null(RequestItemLimit.VerifyBatch.Refusal(new ReadOnlySequence<byte>([0x7B, 0x0A, 0x00, 0x7C, .. empties])));
        // Each of those, parsed, is what the count says (the parser agrees with the scan).
        Assert.Equal(65_537, VerifyBatchRequest.Parser.ParseFrom([0x0A, 0x80, 0x80, 0x80, 0x80, 0x10, .. empties]).Signatures.Count);
        Assert.Equal(65_537, VerifyBatchRequest.Parser.ParseFrom([0x8A, 0x80, 0x80, 0x80, 0x10, 0x00, .. empties]).Signatures.Count);
        Assert.Equal(65_536, VerifyBatchRequest.Parser.ParseFrom([0x7B, 0x0A, 0x00, 0x7C, .. empties]).Signatures.Count);
        // A tag of wire type 6 or 7 has no payload: the node's parser, which drops unknown fields, passes over it, so
        // the scan finds it (and stops there: the request is refused as not protobuf).
        byte[] afterWireType6 = [0x0E, .. empties, 0x0A, 0x00];
        MessageParser lean = UndefinedFieldCheck.DiscardingParser(typeof(VerifyBatchRequest))!;
        Assert.Equal(65_537, ((VerifyBatchRequest)lean.ParseFrom(afterWireType6)).Signatures.Count);
        Assert.Null(RequestItemLimit.VerifyBatch.Refusal(new ReadOnlySequence<byte>(afterWireType6), out string? invalid));
        Assert.Equal("VerifyBatchRequest carries a tag of wire type 6 (field 1, at byte 0), which protobuf does not define", invalid);
        Assert.Contains("has 65,537 items", RequestItemLimit.VerifyBatch.Refusal(new ReadOnlySequence<byte>([.. empties, 0x0A, 0x00, 0x0E]), out invalid), StringComparison.Ordinal);
        Assert.NotNull(invalid);

        // The node parses VerifyBatch without keeping unknown fields, at the top or inside an item.
        var parsed = (VerifyBatchRequest)lean.ParseFrom([0x0A, 0x03, 0x20, 0x96, 0x01, .. unknown]);
        Assert.Equal([0x0A, 0x00], parsed.ToByteArray());
        Assert.NotEmpty(VerifyBatchRequest.Parser.ParseFrom([0x0A, 0x03, 0x20, 0x96, 0x01]).Signatures[0].ToByteArray());

        var batch = new SubmitBatchRequest();
        batch.Envelopes.Add(Enumerable.Range(0, 256).Select(_ => new Envelope()));
        Assert.Null(RequestItemLimit.SubmitBatch.Refusal(new ReadOnlySequence<byte>(batch.ToByteArray())));
        batch.Envelopes.Add(new Envelope());
        Assert.Equal("it holds 257 envelopes, and a SubmitBatchRequest may hold at most 256 (Status.limits.max_batch_envelopes)",
            RequestItemLimit.SubmitBatch.Refusal(new ReadOnlySequence<byte>(batch.ToByteArray())));
        Assert.Null(RequestItemLimit.For<SubmitRequest>());
    }

    [Fact]
    public void Path_hashes_inside_proofs_are_counted_across_the_request()
    {
        // 2^19 in all, split between inclusion and consistency items, empty or not: the limit, taken.
        var request = new VerifyBatchRequest();
        int half = RelayService.MaxVerifyPathHashes / 2;
        request.Inclusions.Add(new InclusionItem { LeafIndex = 1, Path = { Enumerable.Repeat(ByteString.Empty, half - 64) } });
        request.Inclusions.Add(new InclusionItem { Path = { Enumerable.Repeat(ByteString.CopyFrom(new byte[32]), 64) } });
        request.Consistencies.Add(new ConsistencyItem { FirstSize = 1, Path = { Enumerable.Repeat(ByteString.Empty, half) } });
        request.Signatures.Add(new SignatureItem());
        byte[] bytes = request.ToByteArray();
        Assert.Null(RequestItemLimit.VerifyBatch.Refusal(new ReadOnlySequence<byte>(bytes)));
        Assert.Null(RequestItemLimit.VerifyBatch.Refusal(ByteSegments.InPieces(bytes)));

        // One more anywhere is refused, read whole or in pieces; fields of the items other than their paths, and a
        // path field at the top of the request (an unknown field there), are not counted.
        request.Consistencies[0].Path.Add(ByteString.Empty);
        bytes = request.ToByteArray();
        string expected = RelayService.TooManyVerifyPathHashes(RelayService.MaxVerifyPathHashes + 1);
        Assert.Equal(expected, RequestItemLimit.VerifyBatch.Refusal(new ReadOnlySequence<byte>(bytes)));
        Assert.Equal(expected, RequestItemLimit.VerifyBatch.Refusal(ByteSegments.InPieces(bytes)));
        Assert.Contains("path hashes; at most 524,288", expected, StringComparison.Ordinal);
        request.Consistencies[0].Path.RemoveAt(0);
        byte[] topLevelPaths = [.. Enumerable.Repeat<byte[]>([0x22, 0x00, 0x2A, 0x00], 8).SelectMany(b => b)];
        Assert.Null(RequestItemLimit.VerifyBatch.Refusal(new ReadOnlySequence<byte>([.. request.ToByteArray(), .. topLevelPaths])));

        // The parser makes as many entries as were counted.
        Assert.Equal(RelayService.MaxVerifyPathHashes + 1, VerifyBatchRequest.Parser.ParseFrom(bytes).Inclusions.Sum(i => i.Path.Count)
            + VerifyBatchRequest.Parser.ParseFrom(bytes).Consistencies.Sum(c => c.Path.Count));

        // Real proofs never reach it: a request as large as the method takes, all 32-byte hashes, holds fewer.
        int hashes = (16 << 20) / 34;
        Assert.True(hashes < RelayService.MaxVerifyPathHashes);
    }

    [Fact]
    public async Task A_verify_batch_of_millions_of_empty_items_is_refused_before_it_is_parsed()
    {
        await using TestNode node = await TestNode.StartAsync();
        using GrpcChannel channel = GrpcChannel.ForAddress(node.Address, new GrpcChannelOptions { MaxSendMessageSize = null });
        var raw = Marshallers.Create<byte[]>(b => b, b => b);
        var verify = new Method<byte[], byte[]>(MethodType.Unary, "meganet.v1.Relay", "VerifyBatch", raw, raw);
        // 16 MiB less a little (the method's limit) of inclusion items of one byte each, 3 bytes on the wire: parsed,
        // each one an object and a path list, half a gigabyte or more of them. The byte, 0, is no protobuf tag, so a
        // parser would have refused the request as not protobuf: the count's refusal shows that nothing was parsed.
        byte[] request = new byte[(16 << 20) - 64];
        for (int i = 0; i + 3 <= request.Length; i += 3)
        {
            request[i] = (VerifyBatchRequest.InclusionsFieldNumber << 3) | 2;
            request[i + 1] = 1;
        }

        request = request[..(request.Length / 3 * 3)];
        RpcException e = await Assert.ThrowsAsync<RpcException>(async () => await channel.CreateCallInvoker().AsyncUnaryCall(verify, null, new CallOptions(), request));
        Assert.Equal(StatusCode.InvalidArgument, e.StatusCode);
        Assert.Equal(RelayService.TooManyVerifyItems(request.Length / 3), e.Status.Detail);

        // One inclusion item of 8,000,000 empty path hashes (16 MB): 1.1 GB and seconds of CPU to parse, before the
        // gate that bounds verification was asked. Refused from its tags, as the top-level items are.
        byte[] paths = new byte[(16 << 20) - 64];
        int entries = (paths.Length - 6) / 2;
        paths[0] = (VerifyBatchRequest.InclusionsFieldNumber << 3) | 2;
        int length = entries * 2, at = 1;
        for (uint v = (uint)length; ; v >>= 7)
        {
            paths[at++] = (byte)(v < 0x80 ? v : (v & 0x7F) | 0x80);
            if (v < 0x80)
            {
                break;
            }
        }

        for (int i = 0; i < entries; i++)
        {
            paths[at + (2 * i)] = (InclusionItem.PathFieldNumber << 3) | 2;
        }

        paths = paths[..(at + length)];
        e = await Assert.ThrowsAsync<RpcException>(async () => await channel.CreateCallInvoker().AsyncUnaryCall(verify, null, new CallOptions(), paths));
        Assert.Equal(StatusCode.InvalidArgument, e.StatusCode);
        Assert.Equal(RelayService.TooManyVerifyPathHashes(entries), e.Status.Detail);

        // One such item alone is refused by the parser, as not protobuf.
        e = await Assert.ThrowsAsync<RpcException>(async () => await channel.CreateCallInvoker().AsyncUnaryCall(verify, null, new CallOptions(), request[..3]));
        Assert.StartsWith("The VerifyBatch request is not a valid VerifyBatchRequest message (", e.Status.Detail, StringComparison.Ordinal);
        node.AssertNoServerErrors();
    }
}
