using System.Buffers;
using System.Reflection;
using System.Runtime.CompilerServices;
using Google.Protobuf;
using Google.Protobuf.Reflection;
using MegaNet.Api.V1;

namespace MegaNet.Node.Hosting;

/// <summary>
/// What the node does with protobuf fields a request message carries that protocol version 1 does not define. The
/// generated parser keeps each one as objects: a 257 KiB <c>SubmitRequest</c> of distinct unknown varint fields became
/// 13.6 MB of them, a 64 KiB <c>Fetch</c> 3.4 MB, before any check. So requests are parsed with a parser that drops
/// them (<see cref="DiscardingParser"/>). An envelope with such fields must still be refused (docs/protocol.md promises
/// INVALID_ARGUMENT for it: no signature covers them), so a request carrying envelopes is first read on the wire for
/// them (<see cref="Find"/>: only tags and lengths, as the parser reads them; no message is made), and what is found is
/// tied to the parsed request (<see cref="Mark"/>) for admission to refuse those envelopes alone (<see cref="Take"/>).
/// </summary>
internal sealed class UndefinedFieldCheck
{
    // Parsed requests in which the scan found fields, until their handler takes them: keyed on the request object, so
    // the envelopes of a request carry nothing extra and a handler pays one lookup per request. An entry goes with its
    // request if the handler never takes it.
    private static readonly ConditionalWeakTable<object, UndefinedFields> Marked = new();

    private readonly Schema _root;
    private readonly bool _batch;

    private UndefinedFieldCheck(MessageDescriptor root, bool batch)
    {
        _root = Schema.Of(root, []);
        _batch = batch;
    }

    /// <summary><c>Submit</c> and <c>SubmitStream</c>: the request, its envelope and the envelope's stamp. A field in
    /// the request itself refuses its one submission, as one in the envelope does.</summary>
    public static UndefinedFieldCheck Submit { get; } = new(SubmitRequest.Descriptor, batch: false);

    /// <summary><c>SubmitBatchStream</c>: the request, each envelope and each stamp. A field in the request itself is
    /// no envelope's, so it refuses the whole request.</summary>
    public static UndefinedFieldCheck SubmitBatch { get; } = new(SubmitBatchRequest.Descriptor, batch: true);

    /// <summary>The check for requests of type <typeparamref name="TRequest"/>, or null for a type that carries no
    /// envelope.</summary>
    public static UndefinedFieldCheck? For<TRequest>() =>
        typeof(TRequest) == typeof(SubmitRequest) ? Submit
        : typeof(TRequest) == typeof(SubmitBatchRequest) ? SubmitBatch
        : null;

    /// <summary>The generated parser of <paramref name="requestType"/> made to drop unknown fields, or null for a type
    /// without one. Nothing on the node reads a request's unknown fields; envelopes are checked for them beforehand
    /// (<see cref="Find"/>).</summary>
    public static MessageParser? DiscardingParser(Type requestType) =>
        requestType.GetProperty("Parser", BindingFlags.Public | BindingFlags.Static)?.GetValue(null) is MessageParser generated
            ? generated.WithDiscardUnknownFields(true)
            : null;

    /// <summary>Ties what <see cref="Find"/> found in a request's bytes to the request parsed from them.</summary>
    public static void Mark(object request, UndefinedFields found) => Marked.AddOrUpdate(request, found);

    /// <summary>What <see cref="Find"/> found in <paramref name="request"/>'s bytes (null for a request without such
    /// fields, the common case), forgotten once taken.</summary>
    public static UndefinedFields? Take(object request) =>
        Marked.TryGetValue(request, out UndefinedFields? found) && Marked.Remove(request) ? found : null;

    /// <summary>The first field of <paramref name="payload"/> (in the request, an envelope or a stamp) that version 1
    /// does not define, said for the sender, or null.</summary>
    public string? Refusal(ReadOnlySequence<byte> payload) => Find(payload, "request")?.First;

    /// <summary>The fields of <paramref name="payload"/>, a request of the method <paramref name="methodName"/>, that
    /// version 1 does not define: the first in each envelope (or its stamp), and the first in the request itself, past
    /// which the scan stops; or null where there are none. Where the bytes stop being protobuf, the scan stops and the
    /// parser refuses them.</summary>
    public UndefinedFields? Find(ReadOnlySequence<byte> payload, string methodName)
    {
        var reader = new SequenceReader<byte>(payload);
        UndefinedFields? found = null;
        if (Scan(ref reader, payload.Length, _root, methodName, ref found) is { } inRequest)
        {
            (found ??= new UndefinedFields(methodName, _batch)).InRequest = inRequest.Describe(_root.Name);
        }

        return found;
    }

    /// <summary>Reads the fields of one message up to <paramref name="end"/>; the first undefined one, or null (all
    /// defined, or bytes the parser refuses). Given <paramref name="methodName"/>, the message is the request, whose
    /// message fields are envelopes: the first undefined field of each goes into <paramref name="found"/> and the scan
    /// reads on past it, so that one envelope refuses only itself.</summary>
    private Undefined? Scan(ref SequenceReader<byte> reader, long end, Schema schema, string? methodName, ref UndefinedFields? found)
    {
        int occurrence = 0; // of a repeated message field, for the index (only SubmitBatchRequest has one)
        while (reader.Consumed < end)
        {
            if (!TryReadTag(ref reader, end, out uint tag))
            {
                return null;
            }

            if (!schema.Tags.TryGetValue(tag, out Field? field))
            {
                schema.Numbers.TryGetValue((int)(tag >> 3), out Field? named);
                return new Undefined(schema, tag, named);
            }

            if (field.Message is null)
            {
                // A defined field that is no message has wire type 0, 1, 2 or 5.
                if (!RequestWireScan.TrySkipValue(ref reader, tag & 7, end))
                {
                    return null;
                }

                continue;
            }

            if (!RequestWireScan.TryReadVarint32(ref reader, out uint length) || (int)length < 0 || length > end - reader.Consumed)
            {
                return null;
            }

            long messageEnd = reader.Consumed + length;
            int index = field.Repeated ? occurrence++ : 0;
            if (Scan(ref reader, messageEnd, field.Message, null, ref found) is { } inner)
            {
                inner.Path.Add(field.Repeated ? $".{field.Name}[{index}]" : $".{field.Name}");
                if (methodName is null)
                {
                    return inner;
                }

                (found ??= new UndefinedFields(methodName, _batch)).AddEnvelope(index, inner.Describe(schema.Name));
            }

            // An envelope's rest, past its first undefined field, is passed over; a message read past its length is
            // one the parser refuses.
            if (reader.Consumed > messageEnd)
            {
                return null;
            }

            reader.Advance(messageEnd - reader.Consumed);
        }

        return null;
    }

    /// <summary>Reads a tag; false for one cut short, of field 0, or ending a group never opened (the parser refuses
    /// all three), and for one of wire type 6 or 7. No request with such a tag where this scan reads reaches it: the
    /// marshaller runs <see cref="RequestWireScan"/> first (on <see cref="RequestItemLimit"/>'s pass for a batch), which
    /// reads every tag this scan reads, and refuses the request as not protobuf.</summary>
    private static bool TryReadTag(ref SequenceReader<byte> reader, long end, out uint tag) =>
        RequestWireScan.TryReadVarint32(ref reader, out tag) && reader.Consumed <= end && tag >> 3 != 0 && (tag & 7) is not (4 or 6 or 7);

    /// <summary>A message type as the generated parser reads it: the tags it takes as fields (anything else it keeps
    /// as unknown, or refuses), and its fields by number.</summary>
    private sealed class Schema
    {
        private Schema(string name) => Name = name;

        public string Name { get; }

        public Dictionary<uint, Field> Tags { get; } = [];

        public Dictionary<int, Field> Numbers { get; } = [];

        public static Schema Of(MessageDescriptor message, Dictionary<MessageDescriptor, Schema> made)
        {
            if (made.TryGetValue(message, out Schema? known))
            {
                return known;
            }

            var schema = new Schema(message.Name);
            made[message] = schema;
            foreach (FieldDescriptor descriptor in message.Fields.InFieldNumberOrder())
            {
                int wireType = descriptor.FieldType switch
                {
                    FieldType.Double or FieldType.Fixed64 or FieldType.SFixed64 => 1,
                    FieldType.Float or FieldType.Fixed32 or FieldType.SFixed32 => 5,
                    FieldType.String or FieldType.Bytes or FieldType.Message => 2,
                    FieldType.Group => throw new InvalidOperationException($"{message.FullName}.{descriptor.Name} is a group, which {nameof(UndefinedFieldCheck)} does not read."),
                    _ => 0,
                };
                var field = new Field(descriptor.Name, wireType, descriptor.IsRepeated,
                    descriptor.FieldType == FieldType.Message ? Of(descriptor.MessageType, made) : null);
                schema.Numbers[descriptor.FieldNumber] = field;
                schema.Tags[WireFormat.MakeTag(descriptor.FieldNumber, (WireFormat.WireType)wireType)] = field;
                if (descriptor.IsRepeated && wireType != 2)
                {
                    // The generated parser takes a repeated number packed or not, whatever the .proto says.
                    schema.Tags[WireFormat.MakeTag(descriptor.FieldNumber, WireFormat.WireType.LengthDelimited)] = field;
                }
            }

            return schema;
        }
    }

    private sealed record Field(string Name, int WireType, bool Repeated, Schema? Message);

    /// <summary>A field the schema does not define: an unknown number, or a known one under another wire type.</summary>
    private sealed class Undefined(Schema schema, uint tag, Field? named)
    {
        private static readonly string[] WireTypes = ["a varint", "a 64-bit value", "a length-delimited value", "a group", "a group end", "a 32-bit value"];

        /// <summary>The fields leading to it, innermost first.</summary>
        public List<string> Path { get; } = [];

        public string Describe(string root)
        {
            Path.Reverse();
            string where = root + string.Concat(Path);
            int number = (int)(tag >> 3);
            string what = named is null
                ? $"field {number} ({WireTypes[tag & 7]}), which {schema.Name} does not define in protocol version 1"
                : $"field {number} as {WireTypes[tag & 7]}, where {schema.Name}'s field {number} ({named.Name}) is {WireTypes[named.WireType]}";
            string why = schema.Name is nameof(Envelope) or nameof(ProofOfWork)
                ? "no signature covers such a field, so relays refuse it rather than store it"
                : "relays refuse it rather than ignore it";
            return $"{where} carries {what}: {why}. Send only the fields docs/protocol.md defines";
        }
    }
}

/// <summary>What <see cref="UndefinedFieldCheck.Find"/> found in one request: the envelopes that carry fields version 1
/// does not define, and such a field in the request itself.</summary>
internal sealed class UndefinedFields(string methodName, bool batch)
{
    // Envelope index to its field's description, in the order found (rising): few, and looked up only in a marked request.
    private readonly List<KeyValuePair<int, string>> _envelopes = [];

    /// <summary>A field in the request itself, said for the sender, or null.</summary>
    public string? InRequest { get; set; }

    /// <summary>The first description found (what <see cref="UndefinedFieldCheck.Refusal"/> says).</summary>
    public string First => _envelopes.Count > 0 ? _envelopes[0].Value : InRequest ?? throw new InvalidOperationException("Nothing was found.");

    /// <summary>The refusal of a batch request as a whole, before it is parsed, for a field in the request itself (no
    /// envelope's); null otherwise. (In a <c>SubmitRequest</c> such a field refuses its one envelope in admission:
    /// <see cref="EnvelopeRefusal"/>.)</summary>
    public string? WholeRequestRefusal => batch && InRequest is not null ? RequestRefusal(InRequest) : null;

    /// <summary>The refusal of envelope <paramref name="index"/> of the request (0 for a <c>SubmitRequest</c>'s, which a
    /// field in the request itself refuses too), or null if it is to be admitted.</summary>
    public string? EnvelopeRefusal(int index)
    {
        foreach (KeyValuePair<int, string> envelope in _envelopes)
        {
            if (envelope.Key == index)
            {
                // A batch's other envelopes are admitted on their own: only this one is refused.
                return batch ? $"This envelope is refused: {envelope.Value}; nothing was done with it." : RequestRefusal(envelope.Value);
            }
        }

        return InRequest is null ? null : RequestRefusal(InRequest);
    }

    private string RequestRefusal(string field) => $"The {methodName} request is refused: {field}; nothing was done with it.";

    /// <summary>Records envelope <paramref name="index"/>'s first undefined field (the first one found, where a
    /// <c>SubmitRequest</c> repeats its envelope field and the parser merges them).</summary>
    internal void AddEnvelope(int index, string description)
    {
        if (_envelopes.Count == 0 || _envelopes[^1].Key != index)
        {
            _envelopes.Add(new(index, description));
        }
    }
}
