using System.Buffers;
using System.Reflection;
using Google.Protobuf;
using Google.Protobuf.Reflection;
using MegaNet.Api.V1;

namespace MegaNet.Node.Hosting;

/// <summary>
/// What the node does with protobuf fields a request message carries that protocol version 1 does not define. The
/// generated parser keeps each one as objects: a 257 KiB <c>SubmitRequest</c> of distinct unknown varint fields became
/// 13.6 MB of them, a 64 KiB <c>Fetch</c> 3.4 MB, before any check. So requests are parsed with a parser that drops
/// them (<see cref="DiscardingParser"/>), except that a request carrying envelopes is first read on the wire for them
/// and refused (docs/protocol.md promises INVALID_ARGUMENT for an envelope with fields it does not define: no signature
/// covers them). Only tags and lengths are read, as the parser reads them; no message is made.
/// </summary>
internal sealed class UndefinedFieldCheck
{
    private readonly Schema _root;

    private UndefinedFieldCheck(MessageDescriptor root) => _root = Schema.Of(root, []);

    /// <summary><c>Submit</c> and <c>SubmitStream</c>: the request, its envelope and the envelope's stamp.</summary>
    public static UndefinedFieldCheck Submit { get; } = new(SubmitRequest.Descriptor);

    /// <summary><c>SubmitBatchStream</c>: the request, each envelope and each stamp.</summary>
    public static UndefinedFieldCheck SubmitBatch { get; } = new(SubmitBatchRequest.Descriptor);

    /// <summary>The check for requests of type <typeparamref name="TRequest"/>, or null for a type that carries no
    /// envelope.</summary>
    public static UndefinedFieldCheck? For<TRequest>() =>
        typeof(TRequest) == typeof(SubmitRequest) ? Submit
        : typeof(TRequest) == typeof(SubmitBatchRequest) ? SubmitBatch
        : null;

    /// <summary>The generated parser of <paramref name="requestType"/> made to drop unknown fields, or null for a type
    /// without one. Nothing on the node reads a request's unknown fields; envelopes are checked for them beforehand
    /// (<see cref="Refusal"/>).</summary>
    public static MessageParser? DiscardingParser(Type requestType) =>
        requestType.GetProperty("Parser", BindingFlags.Public | BindingFlags.Static)?.GetValue(null) is MessageParser generated
            ? generated.WithDiscardUnknownFields(true)
            : null;

    /// <summary>The first field of <paramref name="payload"/> (in the request, an envelope or a stamp) that version 1
    /// does not define, said for the sender, or null. Where the bytes stop being protobuf before such a field, the
    /// scan stops and the parser refuses them.</summary>
    public string? Refusal(ReadOnlySequence<byte> payload)
    {
        var reader = new SequenceReader<byte>(payload);
        return Scan(ref reader, payload.Length, _root) is { } undefined ? undefined.Describe(_root.Name) : null;
    }

    /// <summary>Reads the fields of one message up to <paramref name="end"/>; the first undefined one, or null (all
    /// defined, or bytes the parser refuses).</summary>
    private static Undefined? Scan(ref SequenceReader<byte> reader, long end, Schema schema)
    {
        int repeated = 0; // occurrences of repeated message fields, for the path (only SubmitBatchRequest has one)
        while (reader.Consumed < end)
        {
            // A tag cut short, of field 0, or ending a group never opened: the parser refuses all three.
            if (!RequestItemLimit.TryReadVarint32(ref reader, out uint tag) || reader.Consumed > end || tag >> 3 == 0 || (tag & 7) == 4)
            {
                return null;
            }

            if (!schema.Tags.TryGetValue(tag, out Field? field))
            {
                schema.Numbers.TryGetValue((int)(tag >> 3), out Field? named);
                return new Undefined(schema, tag, named);
            }

            switch (tag & 7)
            {
                case 0:
                    if (!RequestItemLimit.TryReadVarint32(ref reader, out _))
                    {
                        return null;
                    }

                    break;
                case 1:
                    reader.Advance(Math.Min(8, reader.Remaining));
                    break;
                case 5:
                    reader.Advance(Math.Min(4, reader.Remaining));
                    break;
                default: // 2: the only other wire type a defined field has here
                    if (!RequestItemLimit.TryReadVarint32(ref reader, out uint length) || (int)length < 0 || length > end - reader.Consumed)
                    {
                        return null;
                    }

                    if (field.Message is null)
                    {
                        reader.Advance(length);
                        break;
                    }

                    int index = field.Repeated ? repeated++ : -1;
                    if (Scan(ref reader, reader.Consumed + length, field.Message) is { } inner)
                    {
                        inner.Path.Add(index < 0 ? $".{field.Name}" : $".{field.Name}[{index}]");
                        return inner;
                    }

                    break;
            }

            if (reader.Consumed > end)
            {
                return null;
            }
        }

        return null;
    }

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
        private static readonly string[] WireTypes = ["a varint", "a 64-bit value", "a length-delimited value", "a group", "a group end", "a 32-bit value", "wire type 6", "wire type 7"];

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
