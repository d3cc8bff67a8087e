using Google.Protobuf;
using MegaNet.Api;
using MegaNet.Api.V1;

namespace MegaNet.Node.Tests;

/// <summary>The envelope id of docs/protocol.md: BLAKE2b-256(signing bytes), over every field but the signature.</summary>
public sealed class EnvelopeIdTests
{
    private static Envelope Sample()
    {
        using Identity alice = Identity.Create(), bob = Identity.Create();
        return EnvelopeFormat.Seal(alice, bob.Card, "hello"u8.ToArray(), "text/plain", null, DateTimeOffset.UtcNow.AddDays(1));
    }

    // The test vector of docs/protocol.md ("Test vectors"), computed outside this code base (Python's hashlib.blake2b
    // over the bytes concatenated by hand), so a change of layout, byte order or domain string fails here.
    private const string VectorPayloadHash = "1857e8573a4693833918682056fae27d32f399b3fffeff2b800e147f361fea6d";
    private const string VectorCoreDigest = "3c5f40cc0d880eaa3f2a78cf4cd6d9175a92b9ff2eeb7fe022690306f53302b9";
    private const string VectorId = "d60090a6d1f646ff24076b20eb5451ac27df72818cf2c478d92b71eed2bbd1e1";
    private const string VectorIdUnstamped = "1e0846003a450e0acf116bd3cc08f22cc84a27777b616db28b0ffaffa64ad650";
    private const string VectorPowHash = "0034d69dd67bd74b9d61d769118a7c3746905c842a0fad114997b1cdf80e3812";
    private const string VectorSenderAddress = "71fcb02eb7805403e1c341cec69d788e037112875051cebedae094080ee65190";
    private const string VectorContentDigest = "a6fabce6dd85a54ddf0e8de112f4ab96572073fc233841dad8603806f4650f0f";
    private const string VectorAckDigest = "a562a35b55def5fdf6d13e6a7ca1e08234f843453ec9923c00df1e7b11c7f8f4";

    private static byte[] Range(int start, int count) => Enumerable.Range(start, count).Select(i => (byte)i).ToArray();

    /// <summary>The vector's envelope: recipient 00..1f, sending key 20..3f, expiry 1893456000000, payload byte i =
    /// i mod 251 over 1 KiB + 72, stamp 10 bits with nonce 819 for the seed 80..8f, signature zeros (outside the id).</summary>
    private static Envelope Vector() => new()
    {
        Version = 1,
        Recipient = ByteString.CopyFrom(Range(0, 32)),
        ExpiresUnixMs = 1_893_456_000_000,
        SealedPayload = ByteString.CopyFrom(Enumerable.Range(0, 1024 + EnvelopeFormat.SealOverhead).Select(i => (byte)(i % 251)).ToArray()),
        SendingKey = ByteString.CopyFrom(Range(32, 32)),
        Pow = new ProofOfWork { Bits = 10, Nonce = 819 },
        Signature = ByteString.CopyFrom(new byte[64]),
    };

    [Fact]
    public void The_signing_bytes_id_and_stamp_match_the_protocol_documents_test_vector()
    {
        Envelope envelope = Vector();
        byte[] expectedCore =
        [
            .. "meganet-envelope-v1"u8, 0, 0, 0, 1, .. Range(0, 32),
            0x00, 0x00, 0x01, 0xB8, 0xDA, 0xC5, 0xB4, 0x00, // 1,893,456,000,000 big-endian
            .. Convert.FromHexString(VectorPayloadHash), .. Range(32, 32),
        ];
        byte[] core = EnvelopeFormat.CoreBytes(envelope);
        Assert.Equal(Convert.ToHexStringLower(expectedCore), Convert.ToHexStringLower(core));
        Assert.Equal(VectorCoreDigest, Convert.ToHexStringLower(NSec.Cryptography.HashAlgorithm.Blake2b_256.Hash(core)));
        Assert.Equal(Convert.ToHexStringLower([.. expectedCore, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0x03, 0x33]), Convert.ToHexStringLower(EnvelopeFormat.SigningBytes(envelope)));
        Assert.Equal(VectorId, Convert.ToHexStringLower(EnvelopeFormat.EnvelopeId(envelope)));

        // The stamp, for the seed 80 81 .. 8f: BLAKE2b-256("meganet-pow-v2" ‖ seed ‖ core digest ‖ nonce) = 00 34 ..:
        // 10 leading zero bits. The seed is in the hash, not in the envelope or its id.
        byte[] seed = Range(128, EnvelopeFormat.PowSeedLength);
        Assert.Equal(VectorPowHash, Convert.ToHexStringLower(NSec.Cryptography.HashAlgorithm.Blake2b_256.Hash([.. "meganet-pow-v2"u8, .. seed, .. Convert.FromHexString(VectorCoreDigest), 0, 0, 0, 0, 0, 0, 0x03, 0x33])));
        Assert.Equal(10, EnvelopeFormat.PowZeroBits(seed, Convert.FromHexString(VectorCoreDigest), 819));
        Assert.Equal(10, EnvelopeFormat.StampBits(envelope, seed));
        Assert.Equal(0, EnvelopeFormat.StampBits(envelope, Range(129, EnvelopeFormat.PowSeedLength))); // another seed: nothing
        envelope.Pow.Bits = 8; // a claim below the zeros the hash has counts for nothing, else one stamp would be three envelopes
        Assert.Equal(0, EnvelopeFormat.StampBits(envelope, seed));
        envelope.Pow.Bits = 10;
        envelope.Pow.Nonce = 818; // the nonce before it has another count
        Assert.NotEqual(10, EnvelopeFormat.PowZeroBits(seed, Convert.FromHexString(VectorCoreDigest), 818));
        Assert.Equal(0, EnvelopeFormat.StampBits(envelope, seed));

        // Without a stamp the signing bytes end in twelve zero bytes.
        envelope.Pow = null;
        Assert.Equal(VectorIdUnstamped, Convert.ToHexStringLower(EnvelopeFormat.EnvelopeId(envelope)));
    }

    [Fact]
    public void The_address_and_content_digest_match_the_protocol_documents_test_vector()
    {
        byte[] address = ContactCard.ComputeAddress(Range(64, 32), Range(96, 32));
        Assert.Equal(VectorSenderAddress, Convert.ToHexStringLower(address));
        var inner = new SealedContent
        {
            SenderSigningKey = ByteString.CopyFrom(Range(64, 32)),
            SenderEncryptionKey = ByteString.CopyFrom(Range(96, 32)),
            SentUnixMs = 1_767_225_600_000,
            ContentType = "text/plain",
            Content = ByteString.CopyFromUtf8("h\u00e9llo, MegaNet"),
        };
        Assert.Equal(VectorContentDigest, Convert.ToHexStringLower(EnvelopeFormat.ContentDigest(Range(0, 32), inner)));
    }

    [Fact]
    public void The_mailbox_auth_bytes_name_their_purpose_as_the_protocol_document_says()
    {
        Assert.Equal("03" + VectorAckDigest, Convert.ToHexStringLower(MailboxPurpose.Ack([1, 2]).Bytes));
        Assert.Equal("01", Convert.ToHexStringLower(MailboxPurpose.Fetch.Bytes));
        Assert.Equal("02", Convert.ToHexStringLower(MailboxPurpose.Subscribe.Bytes));
        byte[] nonce = Range(0, 32), nodeId = Range(32, 32), address = Range(64, 32);
        Assert.Equal([.. "meganet-auth-v2"u8, .. nonce, .. nodeId, .. address, 1], EnvelopeFormat.AuthBytes(nonce, nodeId, address, MailboxPurpose.Fetch));
    }

    [Fact]
    public void The_protocol_document_carries_the_vector_this_test_checks()
    {
        string doc = File.ReadAllText(Checkout.Path("docs/protocol.md"));
        foreach (string hex in new[] { VectorPayloadHash, VectorCoreDigest, VectorId, VectorIdUnstamped, VectorPowHash, VectorSenderAddress, VectorContentDigest, VectorAckDigest })
        {
            Assert.Contains(hex, doc, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void The_id_hashes_the_signing_bytes()
    {
        Envelope envelope = Sample();
        byte[] signing = EnvelopeFormat.SigningBytes(envelope);
        Assert.Equal(NSec.Cryptography.HashAlgorithm.Blake2b_256.Hash(signing), EnvelopeFormat.EnvelopeId(envelope));
        byte[] id = new byte[32];
        EnvelopeFormat.EnvelopeId(signing, id);
        Assert.Equal(EnvelopeFormat.EnvelopeId(envelope), id);
    }

    [Fact]
    public void Every_field_but_the_signature_changes_the_id_and_the_protobuf_encoding_does_not()
    {
        Envelope envelope = Sample();
        byte[] id = EnvelopeFormat.EnvelopeId(envelope);
        var changes = new Action<Envelope>[]
        {
            e => e.Version = 2,
            e => e.Recipient = Flip(e.Recipient, 0),
            e => e.ExpiresUnixMs++,
            e => e.SealedPayload = Flip(e.SealedPayload, 500),
            e => e.SendingKey = Flip(e.SendingKey, 31),
            e => e.Pow = new ProofOfWork { Bits = 0, Nonce = 1 },
        };
        foreach (Action<Envelope> change in changes)
        {
            Envelope changed = envelope.Clone();
            change(changed);
            Assert.NotEqual(id, EnvelopeFormat.EnvelopeId(changed));
        }

        // Another signature over the same bytes (its key's holder can make any number): the same envelope.
        Envelope resigned = envelope.Clone();
        resigned.Signature = Flip(resigned.Signature, 63);
        Assert.Equal(id, EnvelopeFormat.EnvelopeId(resigned));

        // The same envelope with an unknown field appended: other bytes on the wire, the same id (relays refuse it,
        // BadInputTests).
        byte[] wire = [.. envelope.ToByteArray(), 0xF8, 0x07, 0x01]; // field 127, varint 1
        Envelope parsed = Envelope.Parser.ParseFrom(wire);
        Assert.NotEqual(envelope.ToByteArray(), parsed.ToByteArray());
        Assert.True(parsed.HasUnknownFields);
        Assert.False(envelope.HasUnknownFields);
        Assert.Equal(id, EnvelopeFormat.EnvelopeId(parsed));
    }

    private static ByteString Flip(ByteString bytes, int index)
    {
        byte[] copy = bytes.ToByteArray();
        copy[index] ^= 1;
        return ByteString.CopyFrom(copy);
    }
}
