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
