using System.Collections;
using System.Security.Cryptography;
using System.Text;
using Google.Protobuf;
using Google.Protobuf.Reflection;
using Grpc.Core;
using Grpc.Net.Client;
using MegaNet.Api;
using MegaNet.Api.V1;
using Xunit.Abstractions;

namespace MegaNet.Node.Tests;

/// <summary>
/// Every Relay method, given valid requests with one field set to an edge value (empty, one byte short or long, huge,
/// negative, zero) and requests filled at random, answers with a status a client can act on (never UNKNOWN, INTERNAL
/// or DATA_LOSS, never a hang) and logs no error. The seed is printed; replay with MEGANET_TEST_SEED.
/// </summary>
public sealed class MutatedRequestTests(ITestOutputHelper output)
{
    private const int CallsPerMethod = 40;

    private static readonly StatusCode[] NotActionable = [StatusCode.Unknown, StatusCode.Internal, StatusCode.DataLoss, StatusCode.Unimplemented, StatusCode.DeadlineExceeded];

    [Fact]
    public async Task Every_method_answers_mutated_and_random_requests_with_an_actionable_status()
    {
        int seed = Environment.GetEnvironmentVariable("MEGANET_TEST_SEED") is { } s ? int.Parse(s, System.Globalization.CultureInfo.InvariantCulture) : RandomNumberGenerator.GetInt32(int.MaxValue);
        output.WriteLine($"seed {seed} (replay with MEGANET_TEST_SEED={seed})");
        var random = new Random(seed);

        await using TestNode node = await TestNode.StartAsync();
        using MegaNetClient client = node.Client();
        using Identity alice = Identity.Create(), bob = Identity.Create();
        Receipt first = await client.SendAsync(alice, bob.Card, Encoding.UTF8.GetBytes("first"), "text/plain");
        await client.SendAsync(alice, bob.Card, Encoding.UTF8.GetBytes("second"), "text/plain");
        byte[] signed = RandomNumberGenerator.GetBytes(40);

        // A valid request of each method, made fresh for each call (an auth nonce is good once).
        var seeds = new Dictionary<string, Func<Task<IMessage>>>
        {
            ["Submit"] = () => Task.FromResult<IMessage>(new SubmitRequest { Envelope = Seal(alice, bob) }),
            ["SubmitStream"] = () => Task.FromResult<IMessage>(new SubmitRequest { Envelope = Seal(alice, bob) }),
            ["SubmitBatchStream"] = () => Task.FromResult<IMessage>(new SubmitBatchRequest { Envelopes = { Seal(alice, bob), Seal(alice, bob) } }),
            ["Challenge"] = () => Task.FromResult<IMessage>(new ChallengeRequest { Address = ByteString.CopyFrom(bob.Address) }),
            ["Fetch"] = async () => new FetchRequest { Auth = await client.AuthenticateAsync(bob, MailboxPurpose.Fetch), Limit = 10 },
            ["Ack"] = async () => new AckRequest { Auth = await client.AuthenticateAsync(bob, MailboxPurpose.Ack([1])), Seqs = { 1 } },
            ["Subscribe"] = async () => new SubscribeRequest { Auth = await client.AuthenticateAsync(bob, MailboxPurpose.Subscribe) },
            ["GetTreeHead"] = () => Task.FromResult<IMessage>(new GetTreeHeadRequest()),
            ["GetInclusionProof"] = () => Task.FromResult<IMessage>(new InclusionProofRequest { LeafIndex = 0, TreeSize = 2 }),
            ["GetConsistencyProof"] = () => Task.FromResult<IMessage>(new ConsistencyProofRequest { First = 1, Second = 2 }),
            ["VerifyBatch"] = () => Task.FromResult<IMessage>(new VerifyBatchRequest
            {
                Signatures = { new SignatureItem { PublicKey = ByteString.CopyFrom(alice.Card.SigningKey), Signature = ByteString.CopyFrom(alice.SignWithIdentity(signed)), Message = ByteString.CopyFrom(signed) } },
                Inclusions = { new InclusionItem { Leaf = first.EnvelopeId, LeafIndex = first.LogIndex, TreeSize = first.TreeHead.TreeSize, RootHash = first.TreeHead.RootHash } },
            }),
            ["Status"] = () => Task.FromResult<IMessage>(new StatusRequest()),
        };

        using GrpcChannel channel = GrpcChannel.ForAddress(node.Address);
        CallInvoker invoker = channel.CreateCallInvoker();
        var raw = Marshallers.Create<byte[]>(b => b, b => b);
        var failures = new List<string>();
        var seen = new Dictionary<StatusCode, int>();
        foreach (MethodDescriptor method in Relay.Descriptor.Methods)
        {
            Assert.True(seeds.ContainsKey(method.Name), $"no valid request for {method.Name}: add one above");
            MethodType type = method.IsClientStreaming ? MethodType.DuplexStreaming : method.IsServerStreaming ? MethodType.ServerStreaming : MethodType.Unary;
            var call = new Method<byte[], byte[]>(type, "meganet.v1.Relay", method.Name, raw, raw);
            for (int i = 0; i < CallsPerMethod; i++)
            {
                IMessage request;
                if (i % 4 == 3)
                {
                    request = method.InputType.Parser.ParseFrom([]);
                    Fill(request, random, depth: 0);
                }
                else
                {
                    request = await seeds[method.Name]();
                    Mutate(request, random);
                }

                StatusCode code = await CallAsync(invoker, call, request.ToByteArray());
                seen[code] = seen.GetValueOrDefault(code) + 1;
                if (NotActionable.Contains(code))
                {
                    failures.Add($"{method.Name} {JsonFormatter.Default.Format(request)} → {code}");
                }
            }
        }

        output.WriteLine(string.Join(", ", seen.OrderBy(p => p.Key).Select(p => $"{p.Key} {p.Value}")));
        Assert.True(failures.Count == 0, $"seed {seed}:\n{string.Join('\n', failures.Take(20))}");
        // Not vacuous: valid requests went through, and mutated ones were refused for what they were.
        Assert.True(seen.GetValueOrDefault(StatusCode.OK) > 0 && seen.GetValueOrDefault(StatusCode.InvalidArgument) > 0, $"seed {seed}: {string.Join(", ", seen)}");
        node.AssertNoServerErrors();
        Assert.Equal(StatusCode.OK, await CallAsync(invoker, new Method<byte[], byte[]>(MethodType.Unary, "meganet.v1.Relay", "Status", raw, raw), []));
    }

    /// <summary>The call's status; a server stream that yields a first message is OK (a subscription then runs on).</summary>
    private static async Task<StatusCode> CallAsync(CallInvoker invoker, Method<byte[], byte[]> method, byte[] request)
    {
        var options = new CallOptions(deadline: DateTime.UtcNow.AddSeconds(20));
        try
        {
            switch (method.Type)
            {
                case MethodType.Unary:
                    await invoker.AsyncUnaryCall(method, null, options, request);
                    return StatusCode.OK;
                case MethodType.ServerStreaming:
                    using (AsyncServerStreamingCall<byte[]> call = invoker.AsyncServerStreamingCall(method, null, options, request))
                    {
                        // A subscription's first message is a keepalive; without one the stream ended with a status.
                        return await call.ResponseStream.MoveNext() ? StatusCode.OK : call.GetStatus().StatusCode;
                    }

                default:
                    using (AsyncDuplexStreamingCall<byte[], byte[]> call = invoker.AsyncDuplexStreamingCall(method, null, options))
                    {
                        await call.RequestStream.WriteAsync(request);
                        await call.RequestStream.CompleteAsync();
                        while (await call.ResponseStream.MoveNext())
                        {
                        }

                        return call.GetStatus().StatusCode;
                    }
            }
        }
        catch (RpcException e)
        {
            return e.StatusCode;
        }
    }

    /// <summary>Sets one field somewhere in <paramref name="message"/> (a nested message's too) to an edge value.</summary>
    private static void Mutate(IMessage message, Random random)
    {
        var fields = new List<(IMessage Owner, FieldDescriptor Field)>();
        Collect(message, fields);
        if (fields.Count == 0)
        {
            return;
        }

        (IMessage owner, FieldDescriptor field) = fields[random.Next(fields.Count)];
        if (field.IsRepeated)
        {
            var list = (IList)field.Accessor.GetValue(owner);
            switch (random.Next(3))
            {
                case 0:
                    list.Clear();
                    break;
                case 1 when list.Count > 0:
                    list[random.Next(list.Count)] = Edge(field, random, list[0]);
                    break;
                default:
                    for (int n = random.Next(1, 4); n > 0; n--)
                    {
                        list.Add(Edge(field, random, list.Count > 0 ? list[0] : null));
                    }

                    break;
            }
        }
        else
        {
            field.Accessor.SetValue(owner, Edge(field, random, field.Accessor.GetValue(owner)));
        }
    }

    private static void Collect(IMessage message, List<(IMessage, FieldDescriptor)> into)
    {
        foreach (FieldDescriptor field in message.Descriptor.Fields.InFieldNumberOrder())
        {
            into.Add((message, field));
            if (field.FieldType == FieldType.Message && !field.IsMap)
            {
                if (field.IsRepeated)
                {
                    foreach (IMessage item in (IList)field.Accessor.GetValue(message))
                    {
                        Collect(item, into);
                    }
                }
                else if (field.Accessor.GetValue(message) is IMessage nested)
                {
                    Collect(nested, into);
                }
            }
        }
    }

    /// <summary>An edge value for the field: for bytes, empty or the current length ±1 or far larger (or the current
    /// bytes with one bit flipped); for numbers 0, ±1, the extremes or the current value ±1.</summary>
    private static object Edge(FieldDescriptor field, Random random, object? current)
    {
        switch (field.FieldType)
        {
            case FieldType.Bytes:
                int length = current is ByteString b ? b.Length : 32;
                if (current is ByteString flip && flip.Length > 0 && random.Next(3) == 0)
                {
                    byte[] copy = flip.ToByteArray();
                    copy[random.Next(copy.Length)] ^= (byte)(1 << random.Next(8));
                    return ByteString.CopyFrom(copy);
                }

                int[] lengths = [0, 1, Math.Max(0, length - 1), length + 1, 31, 33, 63, 65, 4096];
                return ByteString.CopyFrom(RandomNumberBytes(random, lengths[random.Next(lengths.Length)]));
            case FieldType.String:
                return random.Next(2) == 0 ? string.Empty : new string('x', random.Next(1, 300));
            case FieldType.Bool:
                return random.Next(2) == 0;
            case FieldType.Int32 or FieldType.SInt32 or FieldType.SFixed32:
                return Pick(random, [0, 1, -1, int.MaxValue, int.MinValue, 1000, 1001, (current as int? ?? 0) + 1, (current as int? ?? 0) - 1]);
            case FieldType.UInt32 or FieldType.Fixed32:
                return Pick(random, [0u, 1u, uint.MaxValue, (current as uint? ?? 0) + 1]);
            case FieldType.Int64 or FieldType.SInt64 or FieldType.SFixed64:
                return Pick(random, [0L, 1L, -1L, long.MaxValue, long.MinValue, (current as long? ?? 0) + 1, (current as long? ?? 0) - 1]);
            case FieldType.UInt64 or FieldType.Fixed64:
                return Pick(random, [0UL, 1UL, ulong.MaxValue, long.MaxValue + 1UL, (current as ulong? ?? 0) + 1]);
            case FieldType.Enum:
                return Enum.ToObject(field.EnumType.ClrType, Pick(random, [0, 1, -1, int.MaxValue]));
            case FieldType.Double:
                return Pick(random, [0d, -1d, double.NaN, double.PositiveInfinity, double.MaxValue]);
            case FieldType.Float:
                return Pick(random, [0f, -1f, float.NaN, float.PositiveInfinity]);
            case FieldType.Message:
                IMessage fresh = field.MessageType.Parser.ParseFrom([]);
                if (random.Next(2) == 0)
                {
                    Fill(fresh, random, depth: 1);
                }

                return fresh;
            default:
                throw new InvalidOperationException($"no edge values for {field.FieldType}");
        }
    }

    /// <summary>Sets each field with even odds, to an edge value (nested messages two levels deep at most).</summary>
    private static void Fill(IMessage message, Random random, int depth)
    {
        foreach (FieldDescriptor field in message.Descriptor.Fields.InFieldNumberOrder())
        {
            if (random.Next(2) == 0 || (field.FieldType == FieldType.Message && depth >= 2))
            {
                continue;
            }

            if (field.IsRepeated)
            {
                var list = (IList)field.Accessor.GetValue(message);
                for (int n = random.Next(1, 4); n > 0; n--)
                {
                    list.Add(field.FieldType == FieldType.Message ? Nested(field, random, depth) : Edge(field, random, null));
                }
            }
            else
            {
                field.Accessor.SetValue(message, field.FieldType == FieldType.Message ? Nested(field, random, depth) : Edge(field, random, null));
            }
        }
    }

    private static IMessage Nested(FieldDescriptor field, Random random, int depth)
    {
        IMessage nested = field.MessageType.Parser.ParseFrom([]);
        Fill(nested, random, depth + 1);
        return nested;
    }

    private static T Pick<T>(Random random, T[] values) => values[random.Next(values.Length)];

    private static byte[] RandomNumberBytes(Random random, int length)
    {
        byte[] bytes = new byte[length];
        random.NextBytes(bytes);
        return bytes;
    }

    private static Envelope Seal(Identity from, Identity to) =>
        EnvelopeFormat.Seal(from, to.Card, Encoding.UTF8.GetBytes("mutated"), "text/plain; charset=utf-8", null, DateTimeOffset.UtcNow.AddDays(1), 0);
}
