using System.Buffers;
using System.Reflection;
using Google.Protobuf.Reflection;

namespace MegaNet.Node.Hosting;

/// <summary>
/// Reads a request message's tags on the wire as Google.Protobuf's parser reads them (tags and lengths in their low 32
/// bits; into each message field it parses, and through each group it skips), before the request is parsed, for what
/// that parser lets through: a tag of wire type 6 or 7, which protobuf does not define, the parser that drops unknown
/// fields (<see cref="UndefinedFieldCheck.DiscardingParser"/>) passes over as if it held nothing, so a request carrying
/// one would be served as if the field were absent. On the same pass it counts entries of the fields
/// <see cref="RequestItemLimit"/> limits. Nothing is allocated unless such a tag is found.
/// </summary>
internal sealed class RequestWireScan
{
    // The parser's default recursion limit (CodedInputStream.DefaultRecursionLimit): it refuses messages nested deeper.
    private const int RecursionLimit = 100;

    private readonly Schema _root;

    private RequestWireScan(MessageDescriptor root, (MessageDescriptor Message, int Field, int Counter)[] counted)
    {
        var made = new Dictionary<MessageDescriptor, Schema>();
        _root = Schema.Of(root, made);
        foreach ((MessageDescriptor message, int field, int counter) in counted)
        {
            Schema schema = made[message];
            schema.Fields[field] = schema.Fields.TryGetValue(field, out Field? known)
                ? known with { Counter = counter }
                : new Field(message.FindFieldByNumber(field).Name, null, counter);
        }
    }

    /// <summary>The scan of <paramref name="root"/>, which also counts the length-delimited entries of each field in
    /// <paramref name="counted"/> (in the message named, wherever the parser reads one) into its counter.</summary>
    public static RequestWireScan Of(MessageDescriptor root, params (MessageDescriptor Message, int Field, int Counter)[] counted) => new(root, counted);

    /// <summary>The scan of the generated message type <paramref name="requestType"/>, or null for a type that is no
    /// generated message.</summary>
    public static RequestWireScan? For(Type requestType) =>
        requestType.GetProperty("Descriptor", BindingFlags.Public | BindingFlags.Static)?.GetValue(null) is MessageDescriptor descriptor ? new(descriptor, []) : null;

    /// <summary>The first tag of wire type 6 or 7 in <paramref name="payload"/> that the parser would read, said for
    /// the sender, or null. Entries of the counted fields up to it, or up to bytes the parser refuses (where the scan
    /// stops and leaves them to the parser), are added to <paramref name="counts"/>.</summary>
    public string? InvalidWireType(ReadOnlySequence<byte> payload, Span<long> counts)
    {
        var reader = new SequenceReader<byte>(payload);
        InvalidTag? found = null;
        Scan(ref reader, payload.Length, _root, 0, counts, ref found);
        return found?.Describe(_root.Name);
    }

    /// <summary>Reads one message's fields up to <paramref name="end"/>; false where the scan stops: at a tag of wire
    /// type 6 or 7 (<paramref name="found"/>, which ends the whole scan) or at bytes the parser refuses.</summary>
    private static bool Scan(ref SequenceReader<byte> reader, long end, Schema schema, int depth, Span<long> counts, ref InvalidTag? found)
    {
        int groups = 0; // open groups: unknown fields the parser skips, reading each tag in them
        while (reader.Consumed < end)
        {
            long at = reader.Consumed;
            if (!TryReadVarint32(ref reader, out uint tag) || reader.Consumed > end || tag >> 3 == 0)
            {
                return false;
            }

            uint wireType = tag & 7;
            if (wireType >= 6)
            {
                found = new InvalidTag(tag, at);
                return false;
            }

            if (wireType == 3)
            {
                groups++;
                continue;
            }

            if (wireType == 4)
            {
                // The parser refuses a group end without its start (and one of another field, which is left to it).
                if (groups-- == 0)
                {
                    return false;
                }

                continue;
            }

            // Only a field the message defines, under its length-delimited tag and outside any group, is parsed as a
            // message or made an entry; anything else is skipped whole.
            if (groups == 0 && wireType == 2 && schema.Fields.TryGetValue((int)(tag >> 3), out Field? field))
            {
                if (!TryReadVarint32(ref reader, out uint length) || (int)length < 0 || length > end - reader.Consumed)
                {
                    return false;
                }

                if (field.Counter >= 0)
                {
                    counts[field.Counter]++;
                }

                if (field.Message is null)
                {
                    reader.Advance(length);
                    continue;
                }

                long messageEnd = reader.Consumed + length;
                if (depth < RecursionLimit && !Scan(ref reader, messageEnd, field.Message, depth + 1, counts, ref found) && found is not null)
                {
                    found.Path.Add(field.Name);
                    return false;
                }

                // Past a message whose bytes the parser refuses, the scan reads on (its length says where it ends), so
                // that the items after it are counted as they were before this scan read inside items: the refusal
                // for too many of them then shows that nothing was parsed.
                if (reader.Consumed > messageEnd)
                {
                    reader.Rewind(reader.Consumed - messageEnd);
                }

                reader.Advance(messageEnd - reader.Consumed);
                continue;
            }

            if (!TrySkipValue(ref reader, wireType, end))
            {
                return false;
            }
        }

        // A group still open where the message ends is one the parser refuses.
        return groups == 0;
    }

    /// <summary>Passes over a value of wire type 0, 1, 2 or 5, which must end by <paramref name="end"/>; false where it
    /// is cut short or its length is one the parser refuses.</summary>
    internal static bool TrySkipValue(ref SequenceReader<byte> reader, uint wireType, long end) =>
        wireType switch
        {
            0 => TryReadVarint32(ref reader, out _),
            1 => TrySkip(ref reader, 8),
            2 => TryReadVarint32(ref reader, out uint length) && (int)length >= 0 && TrySkip(ref reader, length),
            _ => TrySkip(ref reader, 4),
        } && reader.Consumed <= end;

    /// <summary>A varint of up to 10 bytes, keeping its low 32 bits, as the parser reads tags and lengths.</summary>
    internal static bool TryReadVarint32(ref SequenceReader<byte> reader, out uint value)
    {
        // Nearly every tag and length is one or two bytes inside the current segment: read there without TryRead's
        // per-byte bookkeeping (the byte-wise loop was 1 % of a streaming node's CPU samples).
        ReadOnlySpan<byte> unread = reader.UnreadSpan;
        if (unread.Length >= 2)
        {
            if (unread[0] < 0x80)
            {
                value = unread[0];
                reader.Advance(1);
                return true;
            }

            if (unread[1] < 0x80)
            {
                value = (uint)(unread[0] & 0x7F) | ((uint)unread[1] << 7);
                reader.Advance(2);
                return true;
            }
        }

        value = 0;
        for (int i = 0; i < 10; i++)
        {
            if (!reader.TryRead(out byte b))
            {
                return false;
            }

            if (i < 5)
            {
                value |= (uint)(b & 0x7F) << (7 * i);
            }

            if (b < 0x80)
            {
                return true;
            }
        }

        return false;
    }

    private static bool TrySkip(ref SequenceReader<byte> reader, ulong count)
    {
        if (count > (ulong)reader.Remaining)
        {
            return false;
        }

        reader.Advance((long)count);
        return true;
    }

    /// <summary>A message type as the scan reads it: the length-delimited fields it descends into or counts, by
    /// number.</summary>
    private sealed class Schema
    {
        private Schema(string name) => Name = name;

        public string Name { get; }

        public Dictionary<int, Field> Fields { get; } = [];

        public static Schema Of(MessageDescriptor message, Dictionary<MessageDescriptor, Schema> made)
        {
            if (!made.TryGetValue(message, out Schema? schema))
            {
                // Made before its fields, so that a message type that holds itself ends the recursion here.
                made[message] = schema = new Schema(message.Name);
                // A map field is parsed as messages of its entry type too.
                foreach (FieldDescriptor field in message.Fields.InDeclarationOrder().Where(f => f.FieldType == FieldType.Message))
                {
                    schema.Fields[field.FieldNumber] = new Field(field.Name, Of(field.MessageType, made), -1);
                }
            }

            return schema;
        }
    }

    private sealed record Field(string Name, Schema? Message, int Counter);

    /// <summary>A tag of wire type 6 or 7, and the message fields leading to it (innermost first).</summary>
    private sealed class InvalidTag(uint tag, long offset)
    {
        public List<string> Path { get; } = [];

        public string Describe(string root)
        {
            Path.Reverse();
            string where = Path.Count == 0 ? root : $"{root}.{string.Join('.', Path)}";
            return $"{where} carries a tag of wire type {tag & 7} (field {tag >> 3}, at byte {offset}), which protobuf does not define";
        }
    }
}
