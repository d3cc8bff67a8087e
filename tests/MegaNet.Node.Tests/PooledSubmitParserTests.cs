using System.Buffers;
using System.Security.Cryptography;
using System.Text;
using Google.Protobuf;
using Grpc.Core;
using MegaNet.Api;
using MegaNet.Api.V1;
using MegaNet.Node.Hosting;
using MegaNet.Node.Services;
using Xunit.Abstractions;

namespace MegaNet.Node.Tests;

/// <summary>
/// The node's parser of submit requests into a pooled buffer (<see cref="PooledSubmitParser"/>) against the generated
/// parser the node used before it (dropping unknown fields): every request it takes comes out equal, everything else it
/// leaves to the generated parser, and a node taking mail through it on all three submit methods at once stores every
/// envelope as sent. Random requests print their seed; replay with MEGANET_TEST_SEED.
/// </summary>
public sealed class PooledSubmitParserTests(ITestOutputHelper output)
{
    private static readonly MessageParser<SubmitRequest> GeneratedSubmit = SubmitRequest.Parser.WithDiscardUnknownFields(true);
    private static readonly MessageParser<SubmitBatchRequest> GeneratedBatch = SubmitBatchRequest.Parser.WithDiscardUnknownFields(true);

    [Fact]
    public void Requests_as_encoders_write_them_parse_equal_to_the_generated_parser()
    {
        var random = Seeded();
        for (int i = 0; i < 500; i++)
        {
            var one = new SubmitRequest { Envelope = RandomEnvelope(random) };
            SubmitRequest parsed = PooledSubmitParser.TryParseSubmit(new ReadOnlySequence<byte>(one.ToByteArray()))
                ?? throw new Xunit.Sdk.XunitException($"request {i} was left to the generated parser: {one}");
            Assert.Equal(one, parsed);
            Assert.NotNull(parsed.PooledBytes);

            var batch = new SubmitBatchRequest();
            for (int n = random.Next(0, 9); n > 0; n--)
            {
                batch.Envelopes.Add(RandomEnvelope(random));
            }

            SubmitBatchRequest parsedBatch = PooledSubmitParser.TryParseBatch(InPieces(batch.ToByteArray()))
                ?? throw new Xunit.Sdk.XunitException($"batch {i} was left to the generated parser: {batch}");
            Assert.Equal(batch, parsedBatch);
        }
    }

    [Fact]
    public void Mutated_requests_parse_equal_to_the_generated_parser_or_are_left_to_it()
    {
        var random = Seeded();
        int taken = 0, left = 0;
        for (int i = 0; i < 4_000; i++)
        {
            bool batch = random.Next(2) == 0;
            IMessage valid = batch
                ? new SubmitBatchRequest { Envelopes = { RandomEnvelope(random), RandomEnvelope(random) } }
                : new SubmitRequest { Envelope = RandomEnvelope(random) };
            byte[] wire = Mutate(valid.ToByteArray(), random);
            IMessage? pooled = batch ? PooledSubmitParser.TryParseBatch(new ReadOnlySequence<byte>(wire)) : PooledSubmitParser.TryParseSubmit(new ReadOnlySequence<byte>(wire));
            IMessage? generated;
            try
            {
                generated = batch ? GeneratedBatch.ParseFrom(wire) : GeneratedSubmit.ParseFrom(wire);
            }
            catch (InvalidProtocolBufferException)
            {
                generated = null;
            }

            if (pooled is null)
            {
                left++;
                continue;
            }

            taken++;
            Assert.True(generated is not null, $"mutation {i} ({Convert.ToHexString(wire)}) was taken, but the generated parser refuses it");
            Assert.True(generated.Equals(pooled), $"mutation {i} ({Convert.ToHexString(wire)}): {pooled} against the generated parser's {generated}");
        }

        output.WriteLine($"taken {taken}, left to the generated parser {left}");
        // Both outcomes must occur for the comparison to have tested anything.
        Assert.InRange(taken, 100, 3_900);
    }

    [Theory]
    [InlineData("unknown field", "0a04" + "4801" + "0801")] // field 9 in the envelope
    [InlineData("repeated scalar", "0a04" + "0801" + "0801")]
    [InlineData("repeated bytes", "0a06" + "1201aa" + "1201bb")]
    [InlineData("repeated stamp", "0a08" + "32020801" + "32020802")]
    [InlineData("known field, other wire type", "0a03" + "0a0100")] // version as bytes
    [InlineData("uint32 varint of six bytes", "0a07" + "08818080808000")]
    [InlineData("uint32 beyond 32 bits", "0a06" + "08ffffffff1f")]
    [InlineData("length past the envelope", "0a03" + "1205aa")]
    [InlineData("truncated varint", "0a02" + "0880")]
    [InlineData("unknown field in the stamp", "0a04" + "32021801")]
    [InlineData("field in the request", "1001")]
    public void Forms_other_than_an_encoders_are_left_to_the_generated_parser(string what, string hex)
    {
        byte[] wire = Convert.FromHexString(hex);
        Assert.True(PooledSubmitParser.TryParseSubmit(new ReadOnlySequence<byte>(wire)) is null, what);
        Assert.True(PooledSubmitParser.TryParseBatch(new ReadOnlySequence<byte>(wire)) is null, what);
    }

    [Fact]
    public void A_second_envelope_in_a_submit_request_is_left_to_the_generated_parser_which_merges_them()
    {
        byte[] wire = Convert.FromHexString("0a020801" + "0a021802");
        Assert.Null(PooledSubmitParser.TryParseSubmit(new ReadOnlySequence<byte>(wire)));
        Assert.Equal(2, PooledSubmitParser.TryParseBatch(new ReadOnlySequence<byte>(wire))!.Envelopes.Count);
    }

    [Fact]
    public void Fields_in_another_order_and_an_empty_request_are_taken()
    {
        // signature, then version: encoders write field order, but protobuf takes any.
        byte[] reordered = Convert.FromHexString("0a05" + "3a01aa" + "0801");
        SubmitRequest parsed = PooledSubmitParser.TryParseSubmit(new ReadOnlySequence<byte>(reordered))!;
        Assert.Equal(GeneratedSubmit.ParseFrom(reordered), parsed);
        Assert.Equal(1u, parsed.Envelope.Version);

        Assert.Equal(new SubmitRequest(), PooledSubmitParser.TryParseSubmit(ReadOnlySequence<byte>.Empty));
        Assert.Equal(new SubmitBatchRequest(), PooledSubmitParser.TryParseBatch(ReadOnlySequence<byte>.Empty));
    }

    [Fact]
    public void Returning_the_buffer_takes_the_envelopes_off_the_request_and_leaves_a_generated_request_alone()
    {
        var random = Seeded();
        var one = new SubmitRequest { Envelope = RandomEnvelope(random) };
        SubmitRequest pooled = PooledSubmitParser.TryParseSubmit(new ReadOnlySequence<byte>(one.ToByteArray()))!;
        PooledSubmitParser.Return(pooled);
        Assert.Null(pooled.PooledBytes);
        Assert.Null(pooled.Envelope);
        PooledSubmitParser.Return(pooled); // a second return does nothing

        var batch = new SubmitBatchRequest { Envelopes = { RandomEnvelope(random), RandomEnvelope(random) } };
        SubmitBatchRequest pooledBatch = PooledSubmitParser.TryParseBatch(new ReadOnlySequence<byte>(batch.ToByteArray()))!;
        PooledSubmitParser.Return(pooledBatch);
        Assert.Null(pooledBatch.PooledBytes);
        Assert.Empty(pooledBatch.Envelopes);

        SubmitRequest generated = GeneratedSubmit.ParseFrom(one.ToByteArray());
        PooledSubmitParser.Return(generated);
        Assert.Equal(one, generated);
    }

    [Fact]
    public void The_nodes_request_marshaller_parses_a_batch_into_a_pooled_buffer_and_allocates_a_fraction_of_its_size()
    {
        var random = Seeded();
        var batch = new SubmitBatchRequest();
        for (int i = 0; i < 64; i++)
        {
            batch.Envelopes.Add(new Envelope { Version = 1, Recipient = Bytes(random, 32, exactly: true), ExpiresUnixMs = 1, SealedPayload = Bytes(random, 1024 + 72, exactly: true), SendingKey = Bytes(random, 32, exactly: true), Signature = Bytes(random, 64, exactly: true) });
        }

        byte[] payload = batch.ToByteArray();
        Marshaller<SubmitBatchRequest> marshaller = MalformedRequestMethodProvider<RelayService>.RefusingMarshaller(Marshallers.Create(m => m.ToByteArray(), SubmitBatchRequest.Parser.ParseFrom), "SubmitBatchStream");
        PooledSubmitParser.Return(marshaller.ContextualDeserializer(new RequestPayload(payload))); // once first: what runs once is not counted

        long before = GC.GetAllocatedBytesForCurrentThread();
        SubmitBatchRequest parsed = marshaller.ContextualDeserializer(new RequestPayload(payload));
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;

        Assert.Equal(batch, parsed);
        Assert.NotNull(parsed.PooledBytes);
        // The generated parser allocates more than the payload (an array per byte field); pooled, the envelopes' objects.
        long generated = GC.GetAllocatedBytesForCurrentThread();
        SubmitBatchRequest.Parser.ParseFrom(payload);
        generated = GC.GetAllocatedBytesForCurrentThread() - generated;
        output.WriteLine($"{payload.Length:N0}-byte request: {allocated:N0} bytes allocated pooled, {generated:N0} by the generated parser");
        Assert.True(allocated < payload.Length / 4, $"Parsing a {payload.Length:N0}-byte batch allocated {allocated:N0} bytes.");
        PooledSubmitParser.Return(parsed);
    }

    [Fact]
    public async Task Mail_submitted_on_all_three_methods_at_once_is_stored_as_sent()
    {
        // Each request's buffer goes back to the pool while other requests are parsed into pooled buffers: an envelope
        // read after its buffer went back would be stored with another's bytes, and fail to open or to match its id.
        const int PerMethod = 150;
        await using TestNode node = await TestNode.StartAsync(o => o.SubmitBurst = 3 * PerMethod); // one sender
        using Identity alice = Identity.Create(), bob = Identity.Create();
        using MegaNetClient unary = node.Client(), stream = node.Client(), batches = node.Client();
        Envelope Seal(string text) => EnvelopeFormat.Seal(alice, bob.Card, Encoding.UTF8.GetBytes(text), "text/plain; charset=utf-8", null, DateTimeOffset.UtcNow.AddDays(1));
        Envelope[] streamed = [.. Enumerable.Range(0, PerMethod).Select(i => Seal($"stream {i}"))];
        Envelope[] batched = [.. Enumerable.Range(0, PerMethod).Select(i => Seal($"batch {i} " + new string('x', i * 7)))];

        Task<Receipt[]> sent = Task.WhenAll(Enumerable.Range(0, PerMethod).Select(i => unary.SendAsync(alice, bob.Card, Encoding.UTF8.GetBytes($"unary {i}"), "text/plain; charset=utf-8")));
        Task<List<SubmitResult>> streamedResults = stream.SubmitAllAsync(streamed);
        var batchResults = new List<SubmitResult>();
        await foreach (SubmitResult result in batches.SubmitBatchesAsync(batched, perRequest: 16))
        {
            batchResults.Add(result);
        }

        await sent;
        foreach ((Envelope envelope, SubmitResult result) in streamed.Zip(await streamedResults).Concat(batched.Zip(batchResults)))
        {
            Assert.True(result.Receipt is not null, result.Error);
            Assert.Equal(EnvelopeFormat.EnvelopeId(envelope), result.Receipt.EnvelopeId.ToByteArray());
        }

        var texts = new List<string>();
        ulong cursor = 0;
        while (true)
        {
            FetchResult page = await unary.FetchAsync(bob, cursor, limit: 100);
            Assert.Empty(page.Unreadable);
            texts.AddRange(page.Messages.Select(m => m.Content.Content.ToStringUtf8()));
            if (page.Messages.Count == 0)
            {
                break;
            }

            cursor = page.NextCursor;
        }

        string[] expected = [
            .. Enumerable.Range(0, PerMethod).Select(i => $"unary {i}"),
            .. Enumerable.Range(0, PerMethod).Select(i => $"stream {i}"),
            .. Enumerable.Range(0, PerMethod).Select(i => $"batch {i} " + new string('x', i * 7))];
        Assert.Equal(expected.Order(StringComparer.Ordinal), texts.Order(StringComparer.Ordinal));
        node.AssertNoServerErrors();
    }

    // Split as a pipe may hand over a message that spans its buffers.
    private static ReadOnlySequence<byte> InPieces(byte[] wire) => wire.Length == 0 ? ReadOnlySequence<byte>.Empty : ByteSegments.InPieces(wire);

    private Random Seeded()
    {
        int seed = Environment.GetEnvironmentVariable("MEGANET_TEST_SEED") is { } s ? int.Parse(s, System.Globalization.CultureInfo.InvariantCulture) : RandomNumberGenerator.GetInt32(int.MaxValue);
        output.WriteLine($"seed {seed} (replay with MEGANET_TEST_SEED={seed})");
        return new Random(seed);
    }

    // Each field present or not, with random values: the parser must not depend on what a valid envelope holds.
    private static Envelope RandomEnvelope(Random random)
    {
        var envelope = new Envelope();
        if (random.Next(4) != 0)
        {
            envelope.Version = random.Next(3) switch { 0 => 1, 1 => (uint)random.Next(), _ => uint.MaxValue };
        }

        if (random.Next(4) != 0)
        {
            envelope.ExpiresUnixMs = random.Next(3) switch { 0 => random.NextInt64(), 1 => -random.NextInt64(), _ => long.MinValue };
        }

        if (random.Next(4) != 0)
        {
            envelope.Recipient = Bytes(random, 32);
        }

        if (random.Next(4) != 0)
        {
            envelope.SealedPayload = Bytes(random, random.Next(2) == 0 ? 1024 + 72 : 300);
        }

        if (random.Next(4) != 0)
        {
            envelope.SendingKey = Bytes(random, 32);
        }

        if (random.Next(3) == 0)
        {
            envelope.Pow = new ProofOfWork { Bits = (uint)random.Next(300), Nonce = (ulong)random.NextInt64() * 2 };
        }

        if (random.Next(4) != 0)
        {
            envelope.Signature = Bytes(random, 64);
        }

        return envelope;
    }

    private static ByteString Bytes(Random random, int maxLength, bool exactly = false)
    {
        byte[] bytes = new byte[exactly ? maxLength : random.Next(maxLength + 1)];
        random.NextBytes(bytes);
        return ByteString.CopyFrom(bytes);
    }

    private static byte[] Mutate(byte[] wire, Random random)
    {
        var bytes = new List<byte>(wire);
        for (int n = random.Next(1, 4); n > 0 && bytes.Count > 0; n--)
        {
            int at = random.Next(bytes.Count);
            switch (random.Next(5))
            {
                case 0:
                    bytes[at] = (byte)random.Next(256);
                    break;
                case 1:
                    bytes[at] ^= (byte)(1 << random.Next(8));
                    break;
                case 2:
                    bytes.RemoveRange(at, random.Next(1, Math.Min(8, bytes.Count - at) + 1));
                    break;
                case 3:
                    bytes.InsertRange(at, Enumerable.Range(0, random.Next(1, 6)).Select(_ => (byte)random.Next(256)));
                    break;
                default:
                    // A copy of a run of bytes: a field repeated, a tag where a value was.
                    int length = random.Next(1, Math.Min(40, bytes.Count - at) + 1);
                    bytes.InsertRange(random.Next(bytes.Count + 1), bytes.GetRange(at, length));
                    break;
            }
        }

        return [.. bytes];
    }
}
