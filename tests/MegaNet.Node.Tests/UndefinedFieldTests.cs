using System.Buffers;
using System.Reflection;
using Google.Protobuf;
using Grpc.Core;
using MegaNet.Api.V1;
using MegaNet.Node.Hosting;
using MegaNet.Node.Services;

namespace MegaNet.Node.Tests;

/// <summary>
/// Fields a request carries that protocol version 1 does not define cost the node no more than their bytes: dropped as
/// the request is parsed, and where they are in an envelope, found from the request's tags before it is parsed so that
/// admission refuses that envelope. The generated parser kept each as objects, about 50 times their size on the wire, before any check.
/// </summary>
public sealed class UndefinedFieldTests
{
    /// <summary>The methods whose requests carry no envelope, by request type.</summary>
    public static TheoryData<Type, string> WithoutEnvelopes { get; } = new()
    {
        { typeof(FetchRequest), "Fetch" },
        { typeof(AckRequest), "Ack" },
        { typeof(SubscribeRequest), "Subscribe" },
        { typeof(ChallengeRequest), "Challenge" },
        { typeof(StatusRequest), "Status" },
        { typeof(GetTreeHeadRequest), "GetTreeHead" },
        { typeof(InclusionProofRequest), "GetInclusionProof" },
        { typeof(ConsistencyProofRequest), "GetConsistencyProof" },
        { typeof(VerifyBatchRequest), "VerifyBatch" },
    };

    [Theory]
    [MemberData(nameof(WithoutEnvelopes))]
    public void A_request_of_unknown_fields_costs_about_its_size_to_parse(Type requestType, string method) =>
        typeof(UndefinedFieldTests).GetMethod(nameof(ParsesLean), BindingFlags.NonPublic | BindingFlags.Static)!.MakeGenericMethod(requestType).Invoke(null, [method]);

    [Fact]
    public void A_submit_request_whose_envelope_carries_undefined_fields_is_parsed_without_them_and_marked_for_refusal()
    {
        // 257 KiB, the most a submit request may hold: an envelope of nothing but distinct unknown fields (13.6 MB of
        // objects when the node parsed them).
        byte[] envelope = UnknownFields((257 << 10) - 4);
        byte[] payload = [0x0A, .. Varint((uint)envelope.Length), .. envelope];
        Marshaller<SubmitRequest> marshaller = Marshaller<SubmitRequest>("Submit");
        SubmitRequest plain = marshaller.ContextualDeserializer(new RequestPayload(new SubmitRequest { Envelope = new Envelope { Version = 1 } }.ToByteArray()));
        Assert.Null(UndefinedFieldCheck.Take(plain));

        long before = GC.GetAllocatedBytesForCurrentThread();
        SubmitRequest request = marshaller.ContextualDeserializer(new RequestPayload(payload));
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;

        Assert.True(allocated < 4L * payload.Length, $"Parsing a {payload.Length:N0}-byte request of unknown fields allocated {allocated:N0} bytes.");
        Assert.Equal(0, request.Envelope.CalculateSize()); // dropped
        Assert.Equal("The Submit request is refused: SubmitRequest.envelope carries field 2048 (a varint), which Envelope does not define in protocol version 1: "
            + "no signature covers such a field, so relays refuse it rather than store it. Send only the fields docs/protocol.md defines; nothing was done with it.",
            UndefinedFieldCheck.Take(request)?.EnvelopeRefusal(0));
        Assert.Null(UndefinedFieldCheck.Take(request)); // taken once
    }

    [Fact]
    public void A_batch_marks_each_envelope_carrying_undefined_fields_and_a_field_of_the_batch_itself_refuses_it_whole()
    {
        var envelope = new Envelope { Version = 1, Recipient = ByteString.CopyFrom(new byte[32]) };
        Envelope extended = Envelope.Parser.ParseFrom([.. envelope.ToByteArray(), 0xF8, 0x07, 0x01]); // field 127, varint 1
        Envelope extendedStamp = new() { Version = 1, Pow = ProofOfWork.Parser.ParseFrom([0x08, 0x01, 0x18, 0x01]) }; // field 3 in the stamp
        var batch = new SubmitBatchRequest { Envelopes = { envelope, extended, envelope, extendedStamp, envelope } };
        Marshaller<SubmitBatchRequest> marshaller = Marshaller<SubmitBatchRequest>("SubmitBatchStream");

        SubmitBatchRequest parsed = marshaller.ContextualDeserializer(new RequestPayload(batch.ToByteArray()));

        Assert.Equal(5, parsed.Envelopes.Count);
        Assert.All(parsed.Envelopes, e => Assert.False(e.HasUnknownFields));
        UndefinedFields marks = Assert.IsType<UndefinedFields>(UndefinedFieldCheck.Take(parsed));
        Assert.Equal([null, "field 127", null, "field 3", null], Enumerable.Range(0, 5).Select(i => marks.EnvelopeRefusal(i) is { } refusal ? refusal.Split(" (")[0].Split("carries ")[1] : null));
        Assert.StartsWith("This envelope is refused: SubmitBatchRequest.envelopes[3].pow carries field 3 (a varint), which ProofOfWork does not define", marks.EnvelopeRefusal(3), StringComparison.Ordinal);

        byte[] besides = [.. batch.ToByteArray(), 0x10, 0x01]; // field 2, varint 1, in the batch itself
        Assert.Equal("The SubmitBatchStream request is refused: SubmitBatchRequest carries field 2 (a varint), which SubmitBatchRequest does not define in protocol version 1: "
            + "relays refuse it rather than ignore it. Send only the fields docs/protocol.md defines; nothing was done with it.", Refusal(marshaller, besides));
    }

    [Fact]
    public void The_scan_finds_what_the_parser_would_keep_wherever_it_is_and_leaves_what_the_parser_refuses_to_it()
    {
        var stamp = new ProofOfWork { Bits = 3, Nonce = ulong.MaxValue };
        var envelope = new Envelope
        {
            Version = 1,
            Recipient = ByteString.CopyFrom(new byte[32]),
            ExpiresUnixMs = -1,
            SealedPayload = ByteString.CopyFrom(new byte[1096]),
            SendingKey = ByteString.CopyFrom(new byte[32]),
            Pow = stamp,
            Signature = ByteString.CopyFrom(new byte[64]),
        };
        byte[] submit = new SubmitRequest { Envelope = envelope }.ToByteArray();
        Assert.Null(UndefinedFieldCheck.Submit.Refusal(new ReadOnlySequence<byte>(submit)));
        Assert.Null(UndefinedFieldCheck.Submit.Refusal(ByteSegments.InPieces(submit)));
        var batch = new SubmitBatchRequest { Envelopes = { envelope, new Envelope(), envelope } };
        Assert.Null(UndefinedFieldCheck.SubmitBatch.Refusal(new ReadOnlySequence<byte>(batch.ToByteArray())));

        // In the third envelope's stamp, read in pieces: the path names it.
        byte[] extendedStamp = [.. stamp.ToByteArray(), 0x18, 0x01];
        var extended = new Envelope { Version = 1, Pow = ProofOfWork.Parser.ParseFrom(extendedStamp) };
        batch.Envelopes[2] = extended;
        Assert.StartsWith("SubmitBatchRequest.envelopes[2].pow carries field 3 (a varint), which ProofOfWork does not define in protocol version 1: no signature covers",
            UndefinedFieldCheck.SubmitBatch.Refusal(ByteSegments.InPieces(batch.ToByteArray())), StringComparison.Ordinal);

        // A defined number under another wire type, a group, a second envelope field (the parser merges the two), and
        // the request's own fields.
        Assert.StartsWith("SubmitRequest.envelope carries field 2 as a varint, where Envelope's field 2 (recipient) is a length-delimited value:",
            UndefinedFieldCheck.Submit.Refusal(new ReadOnlySequence<byte>([0x0A, 0x02, 0x10, 0x01])), StringComparison.Ordinal);
        Assert.StartsWith("SubmitRequest.envelope.pow carries field 1 as a group, where ProofOfWork's field 1 (bits) is a varint:",
            UndefinedFieldCheck.Submit.Refusal(new ReadOnlySequence<byte>([0x0A, 0x04, 0x32, 0x02, 0x0B, 0x0C])), StringComparison.Ordinal);
        Assert.StartsWith("SubmitRequest.envelope carries field 127 (a varint)",
            UndefinedFieldCheck.Submit.Refusal(new ReadOnlySequence<byte>([.. submit, 0x0A, 0x03, 0xF8, 0x07, 0x01])), StringComparison.Ordinal);
        Assert.Equal("SubmitRequest carries field 2 (a 64-bit value), which SubmitRequest does not define in protocol version 1: relays refuse it rather than ignore it. Send only the fields docs/protocol.md defines",
            UndefinedFieldCheck.Submit.Refusal(new ReadOnlySequence<byte>([.. submit, 0x11, 1, 2, 3, 4, 5, 6, 7, 8])));
        Assert.StartsWith("SubmitBatchRequest carries field 1 as a varint, where SubmitBatchRequest's field 1 (envelopes) is a length-delimited value",
            UndefinedFieldCheck.SubmitBatch.Refusal(new ReadOnlySequence<byte>([0x08, 0x01])), StringComparison.Ordinal);

        // Bytes the parser refuses before any such field: left to it (cut short, a length past the envelope's end, a
        // tag of field 0, a group end without a group), so the request is refused as not protobuf.
        byte[][] unreadable = [submit[..^1], [0x0A, 0x02, 0x12, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00], [0x0A, 0x01, 0x00], [0x0A, 0x01, 0x0C], [0x0C, 0xF8, 0x07, 0x01]];
        foreach (byte[] bytes in unreadable)
        {
            Assert.Null(UndefinedFieldCheck.Submit.Refusal(new ReadOnlySequence<byte>(bytes)));
            Assert.Throws<InvalidProtocolBufferException>(() => SubmitRequest.Parser.ParseFrom(bytes));
            Assert.StartsWith("The Submit request is not a valid SubmitRequest message (", Refusal(Marshaller<SubmitRequest>("Submit"), bytes), StringComparison.Ordinal);
        }

        // What the scan takes the parser reads without an unknown field; what it refuses, the parser kept.
        Assert.False(SubmitRequest.Parser.ParseFrom(submit).Envelope.HasUnknownFields);
        Assert.True(SubmitRequest.Parser.ParseFrom([0x0A, 0x02, 0x10, 0x01]).Envelope.HasUnknownFields);
        Assert.True(SubmitRequest.Parser.ParseFrom([0x0A, 0x04, 0x32, 0x02, 0x0B, 0x0C]).Envelope.HasUnknownFields);
    }

    /// <summary>Wire types 6 and 7 do not exist in protobuf. The parser the node uses, which drops unknown fields,
    /// passed over such a tag as if it held nothing, so a request carrying one was served as if the field were absent;
    /// every method refuses it, wherever the parser would read it.</summary>
    [Theory]
    [MemberData(nameof(WithoutEnvelopes))]
    [InlineData(typeof(SubmitRequest), "Submit")]
    [InlineData(typeof(SubmitBatchRequest), "SubmitBatchStream")]
    public void A_tag_of_wire_type_6_or_7_is_refused_as_not_protobuf_on_every_method(Type requestType, string method) =>
        typeof(UndefinedFieldTests).GetMethod(nameof(RefusesWireTypes6And7), BindingFlags.NonPublic | BindingFlags.Static)!.MakeGenericMethod(requestType).Invoke(null, [method]);

    [Fact]
    public void Wire_types_6_and_7_are_found_inside_the_messages_and_groups_the_parser_reads()
    {
        // Fetch: in its auth; VerifyBatch: in an item of each kind, and in a group at the top; Submit and
        // SubmitBatchStream: in an envelope's stamp, which refuses the whole request (it is not protobuf), not just
        // the envelope as an undefined field would.
        byte[] auth = new MailboxAuth { Address = ByteString.CopyFrom(new byte[32]) }.ToByteArray();
        Assert.Equal("The Fetch request is not a valid FetchRequest message (FetchRequest.auth carries a tag of wire type 6 (field 9, at byte 36), which protobuf does not define); nothing was done with it.",
            Refusal(Marshaller<FetchRequest>("Fetch"), [0x0A, (byte)(auth.Length + 1), .. auth, 0x4E, 0x10, 0x05]));
        Assert.Contains("(VerifyBatchRequest.signatures carries a tag of wire type 7 (field 4, at byte 4)",
            Refusal(Marshaller<VerifyBatchRequest>("VerifyBatch"), [0x0A, 0x00, 0x0A, 0x01, 0x27]), StringComparison.Ordinal);
        Assert.Contains("(VerifyBatchRequest.inclusions carries a tag of wire type 6",
            Refusal(Marshaller<VerifyBatchRequest>("VerifyBatch"), [0x12, 0x04, 0x22, 0x00, 0x0E, 0x00]), StringComparison.Ordinal);
        Assert.Contains("(VerifyBatchRequest.consistencies carries a tag of wire type 6",
            Refusal(Marshaller<VerifyBatchRequest>("VerifyBatch"), [0x1A, 0x03, 0x2A, 0x00, 0x0E]), StringComparison.Ordinal);
        Assert.Contains("(VerifyBatchRequest carries a tag of wire type 7 (field 2, at byte 2)",
            Refusal(Marshaller<VerifyBatchRequest>("VerifyBatch"), [0x7B, 0x0B, 0x17, 0x0C, 0x7C]), StringComparison.Ordinal);
        byte[] stamp = [0x08, 0x01, 0x16];
        byte[] envelope = [0x08, 0x01, 0x32, (byte)stamp.Length, .. stamp];
        Assert.Contains("(SubmitRequest.envelope.pow carries a tag of wire type 6 (field 2, at byte 8)",
            Refusal(Marshaller<SubmitRequest>("Submit"), [0x0A, (byte)envelope.Length, .. envelope]), StringComparison.Ordinal);
        Assert.StartsWith("The SubmitBatchStream request is not a valid SubmitBatchRequest message (SubmitBatchRequest.envelopes.pow carries a tag of wire type 6",
            Refusal(Marshaller<SubmitBatchRequest>("SubmitBatchStream"), [0x0A, 0x00, 0x0A, (byte)envelope.Length, .. envelope]), StringComparison.Ordinal);

        // So the undefined-field scan, which runs after that refusal, never describes such a tag: it stops there.
        Assert.Null(UndefinedFieldCheck.Submit.Refusal(new ReadOnlySequence<byte>([0x0A, (byte)envelope.Length, .. envelope])));

        // Bytes the parser skips whole are not read: an unknown length-delimited field and a packed repeated field hold
        // values, not tags.
        Assert.Null(Refusal(Marshaller<FetchRequest>("Fetch"), [0x52, 0x02, 0x0E, 0x0F]));
        Assert.Null(Refusal(Marshaller<AckRequest>("Ack"), [0x12, 0x02, 0x0E, 0x0F]));
        Assert.Equal([14UL, 15UL], Marshaller<AckRequest>("Ack").ContextualDeserializer(new RequestPayload([0x12, 0x02, 0x0E, 0x0F])).Seqs);
    }

    /// <summary>When a request breaks several rules, the refusal is the first check's: too many envelopes first, then a
    /// tag of wire type 6 or 7 anywhere the parser reads (past an envelope's undefined field too, where no more such
    /// fields are looked for), then a field of the batch itself; and the first undefined field of a request ends the
    /// search in it.</summary>
    [Fact]
    public void Refusals_of_a_request_that_breaks_several_rules_come_in_the_order_of_their_checks()
    {
        byte[] undefined = [0xF8, 0x07, 0x01]; // field 127, varint 1
        byte[] envelope = [0x08, 0x01, .. undefined];
        Marshaller<SubmitBatchRequest> batch = Marshaller<SubmitBatchRequest>("SubmitBatchStream");
        byte[] many = [.. Enumerable.Repeat<byte[]>([0x0A, (byte)envelope.Length, .. envelope], RelayService.MaxBatchEnvelopes + 1).SelectMany(b => b)];
        Assert.Equal(RelayService.TooManyBatchEnvelopes(RelayService.MaxBatchEnvelopes + 1), Refusal(batch, [.. many, 0x10, 0x01, 0x0E]));

        byte[] invalidAfterUndefined = [0x08, 0x01, .. undefined, 0x16];
        Assert.StartsWith("The SubmitBatchStream request is not a valid SubmitBatchRequest message (SubmitBatchRequest.envelopes carries a tag of wire type 6 (field 2, at byte 7)",
            Refusal(batch, [0x0A, (byte)invalidAfterUndefined.Length, .. invalidAfterUndefined, 0x10, 0x01]), StringComparison.Ordinal);
        Assert.StartsWith("The SubmitBatchStream request is refused: SubmitBatchRequest carries field 2 (a varint)",
            Refusal(batch, [0x0A, (byte)envelope.Length, .. envelope, 0x10, 0x01]), StringComparison.Ordinal);

        // In a SubmitRequest: its own field, before the envelope's, is the refusal; after it, the envelope's is.
        Marshaller<SubmitRequest> submit = Marshaller<SubmitRequest>("Submit");
        byte[] fieldFirst = [0x10, 0x01, 0x0A, (byte)envelope.Length, .. envelope];
        Assert.StartsWith("The Submit request is refused: SubmitRequest carries field 2 (a varint)",
            UndefinedFieldCheck.Take(submit.ContextualDeserializer(new RequestPayload(fieldFirst)))?.EnvelopeRefusal(0), StringComparison.Ordinal);
        byte[] envelopeFirst = [0x0A, (byte)envelope.Length, .. envelope, 0x10, 0x01];
        Assert.StartsWith("The Submit request is refused: SubmitRequest.envelope carries field 127 (a varint)",
            UndefinedFieldCheck.Take(submit.ContextualDeserializer(new RequestPayload(envelopeFirst)))?.EnvelopeRefusal(0), StringComparison.Ordinal);
    }

    [Fact]
    public void Groups_on_the_methods_without_envelopes_are_dropped_like_other_unknown_fields_and_a_stray_group_end_is_refused()
    {
        // A whole group (field 15, holding a varint and a nested group) is an unknown field: dropped, the rest read.
        Marshaller<InclusionProofRequest> marshaller = Marshaller<InclusionProofRequest>("GetInclusionProof");
        InclusionProofRequest read = marshaller.ContextualDeserializer(new RequestPayload([0x08, 0x03, 0x7B, 0x08, 0x01, 0x83, 0x01, 0x84, 0x01, 0x7C, 0x10, 0x07]));
        Assert.Equal(new InclusionProofRequest { LeafIndex = 3, TreeSize = 7 }, read);

        // A group end without its start, at the top or inside a message, one that ends another group, and a group
        // left open: not protobuf, on every method alike.
        byte[][] unreadable = [[0x08, 0x03, 0x7C], [0x0A, 0x01, 0x0C], [0x7B, 0x84, 0x01], [0x7B, 0x08, 0x01]];
        foreach (byte[] bytes in unreadable)
        {
            if (bytes[0] != 0x0A)
            {
                // (Its field 1 is no message: there those bytes are an unknown field, skipped whole.)
                Assert.StartsWith("The GetInclusionProof request is not a valid InclusionProofRequest message (", Refusal(marshaller, bytes), StringComparison.Ordinal);
            }

            Assert.StartsWith("The Fetch request is not a valid FetchRequest message (", Refusal(Marshaller<FetchRequest>("Fetch"), bytes), StringComparison.Ordinal);
            Assert.StartsWith("The VerifyBatch request is not a valid VerifyBatchRequest message (", Refusal(Marshaller<VerifyBatchRequest>("VerifyBatch"), bytes), StringComparison.Ordinal);
            Assert.StartsWith("The Submit request is not a valid SubmitRequest message (", Refusal(Marshaller<SubmitRequest>("Submit"), bytes), StringComparison.Ordinal);
        }
    }

    private static void RefusesWireTypes6And7<T>(string method)
        where T : IMessage<T>, new()
    {
        Marshaller<T> marshaller = Marshaller<T>(method);
        foreach (byte tag in (byte[])[0x7E, 0x7F]) // field 15, wire types 6 and 7, after a field the message holds or not
        {
            byte[] payload = [0x08, 0x01, tag];
            string? refusal = Refusal(marshaller, payload);
            Assert.Equal($"The {method} request is not a valid {typeof(T).Name} message ({typeof(T).Name} carries a tag of wire type {tag & 7} (field 15, at byte 2), "
                + "which protobuf does not define); nothing was done with it.", refusal);
        }
    }

    private static void ParsesLean<T>(string method)
        where T : IMessage<T>, new()
    {
        // 64 KiB less the 5-byte message prefix and a little: about the most these methods take (RequestMessageGuard).
        byte[] payload = UnknownFields(65_528);
        Marshaller<T> marshaller = Marshaller<T>(method);
        marshaller.ContextualDeserializer(new RequestPayload(payload)); // once first, so what runs once per type is not counted

        long before = GC.GetAllocatedBytesForCurrentThread();
        T request = marshaller.ContextualDeserializer(new RequestPayload(payload));
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;

        Assert.True(allocated < 4L * payload.Length, $"Parsing a {payload.Length:N0}-byte {typeof(T).Name} of unknown fields allocated {allocated:N0} bytes.");
        Assert.Equal(0, request.CalculateSize()); // dropped
    }

    /// <summary>The node's request marshaller for <paramref name="method"/>, given the generated one.</summary>
    private static Marshaller<T> Marshaller<T>(string method)
        where T : IMessage<T>, new() =>
        MalformedRequestMethodProvider<RelayService>.RefusingMarshaller(Marshallers.Create(m => m.ToByteArray(), new MessageParser<T>(() => new T()).ParseFrom), method);

    /// <summary>The status detail a request of <paramref name="payload"/> is refused with, or null if it was read.</summary>
    private static string? Refusal<T>(Marshaller<T> marshaller, byte[] payload)
    {
        try
        {
            marshaller.ContextualDeserializer(new RequestPayload(payload));
            return null;
        }
        catch (RpcException e)
        {
            Assert.Equal(StatusCode.InvalidArgument, e.StatusCode);
            return e.Status.Detail;
        }
    }

    /// <summary>Distinct unknown varint fields (numbers from 2,048, 4 bytes each) filling <paramref name="size"/>
    /// bytes, less up to 3.</summary>
    private static byte[] UnknownFields(int size)
    {
        var bytes = new List<byte>(size);
        for (uint number = 2048; bytes.Count + 4 <= size; number++)
        {
            bytes.AddRange(Varint(number << 3));
            bytes.Add(0);
        }

        return [.. bytes];
    }

    private static byte[] Varint(uint value)
    {
        var bytes = new List<byte>();
        for (; value >= 0x80; value >>= 7)
        {
            bytes.Add((byte)(value | 0x80));
        }

        bytes.Add((byte)value);
        return [.. bytes];
    }
}
