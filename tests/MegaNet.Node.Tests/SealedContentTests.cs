using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using Google.Protobuf;
using MegaNet.Api;
using MegaNet.Api.V1;
using NSec.Cryptography;

namespace MegaNet.Node.Tests;

/// <summary>What a recipient accepts from inside a sealed payload, which no relay can check for it.</summary>
public sealed class SealedContentTests
{
    /// <summary>An envelope around <paramref name="sealedPayload"/>, correctly signed by <paramref name="sendingAs"/>'s
    /// sending key: what anyone can submit to any address.</summary>
    internal static Envelope Wrap(Identity sendingAs, ContactCard to, byte[] sealedPayload)
    {
        var envelope = new Envelope
        {
            Version = EnvelopeFormat.Version,
            Recipient = ByteString.CopyFrom(to.Address),
            ExpiresUnixMs = DateTimeOffset.UtcNow.AddDays(1).ToUnixTimeMilliseconds(),
            SealedPayload = ByteString.CopyFrom(sealedPayload),
            SendingKey = ByteString.CopyFrom(sendingAs.SendingPublicKeyFor(to.Address)),
        };
        envelope.Signature = ByteString.CopyFrom(sendingAs.SignWithSendingKeyFor(to.Address, EnvelopeFormat.SigningBytes(envelope)));
        return envelope;
    }

    /// <summary><paramref name="inner"/> as a padded 1 KiB plaintext, signed by <paramref name="signer"/> (or left as is).</summary>
    internal static byte[] Padded(SealedContent inner, ContactCard to, Identity? signer, byte fill = 0)
    {
        if (signer is not null)
        {
            inner.ContentSignature = ByteString.CopyFrom(signer.SignWithIdentity(EnvelopeFormat.ContentDigest(to.Address, inner)));
        }

        byte[] plain = inner.ToByteArray();
        byte[] padded = new byte[1024];
        padded.AsSpan().Fill(fill);
        BinaryPrimitives.WriteInt32LittleEndian(padded, plain.Length);
        plain.CopyTo(padded, 4);
        return padded;
    }

    internal static SealedContent Inner(Identity from, string text) => new()
    {
        SenderSigningKey = ByteString.CopyFrom(from.Card.SigningKey),
        SenderEncryptionKey = ByteString.CopyFrom(from.Card.EncryptionKey),
        SentUnixMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds(),
        ContentType = "text/plain",
        Content = ByteString.CopyFromUtf8(text),
    };

    [Fact]
    public async Task Junk_sealed_to_an_address_is_reported_and_skipped_not_a_wall_in_front_of_the_mailbox()
    {
        await using TestNode node = await TestNode.StartAsync();
        using MegaNetClient client = node.Client();
        using Identity alice = Identity.Create(), bob = Identity.Create(), mallory = Identity.Create();
        // Random bytes sealed to Bob: the relay cannot tell, so it stores them like any mail.
        await client.Relay.SubmitAsync(new SubmitRequest { Envelope = Wrap(mallory, bob.Card, EnvelopeFormat.SealPadded(bob.Card, RandomNumberGenerator.GetBytes(1024))) });
        await client.SendAsync(alice, bob.Card, Encoding.UTF8.GetBytes("the real one"), "text/plain");

        FetchResult page = await client.FetchAsync(bob);
        Assert.Equal("the real one", Assert.Single(page.Messages).Content.Content.ToStringUtf8());
        UnreadableMessage junk = Assert.Single(page.Unreadable);
        Assert.Equal(1UL, junk.Seq);
        Assert.NotEmpty(junk.Reason);

        // Live delivery goes past it too, and says so.
        var skipped = new List<UnreadableMessage>();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await foreach (ReceivedMessage m in client.ListenAsync(bob, 0, cts.Token, skipped.Add))
        {
            Assert.Equal("the real one", m.Content.Content.ToStringUtf8());
            break;
        }

        Assert.Equal(1UL, Assert.Single(skipped).Seq);

        // And it can be deleted like any mail.
        Assert.Equal(1, await client.AckAsync(bob, [junk.Seq]));
        Assert.Empty((await client.FetchAsync(bob)).Unreadable);
        node.AssertNoServerErrors();
    }

    [Fact]
    public void Every_malformed_inside_is_a_CryptographicException_naming_the_fault()
    {
        using Identity alice = Identity.Create(), bob = Identity.Create();
        Envelope Sealed(byte[] padded) => Wrap(alice, bob.Card, EnvelopeFormat.SealPadded(bob.Card, padded));
        string Refusal(byte[] padded) => Assert.Throws<CryptographicException>(() => EnvelopeFormat.Open(bob, Sealed(padded))).Message;

        // Sound, as a baseline.
        Assert.Equal("hi", EnvelopeFormat.Open(bob, Sealed(Padded(Inner(alice, "hi"), bob.Card, alice))).Content.ToStringUtf8());

        // Not protobuf inside.
        byte[] garbage = new byte[1024];
        BinaryPrimitives.WriteInt32LittleEndian(garbage, 100);
        garbage.AsSpan(4, 100).Fill(0xFF);
        Assert.Contains("malformed", Refusal(garbage));
        // A length prefix beyond the payload.
        byte[] longPrefix = new byte[1024];
        BinaryPrimitives.WriteInt32LittleEndian(longPrefix, 5000);
        Assert.Contains("length prefix", Refusal(longPrefix));
        // Padding that carries something.
        Assert.Contains("padding", Refusal(Padded(Inner(alice, "hi"), bob.Card, alice, fill: 0x41)));
        // A sender encryption key of the wrong size.
        SealedContent shortKey = Inner(alice, "hi");
        shortKey.SenderEncryptionKey = ByteString.CopyFrom(new byte[5]);
        Assert.Contains("sender keys", Refusal(Padded(shortKey, bob.Card, alice)));
        // A properly signed sending time that no calendar has.
        SealedContent never = Inner(alice, "hi");
        never.SentUnixMs = long.MaxValue;
        Assert.Contains("not a date", Refusal(Padded(never, bob.Card, alice)));
    }

    [Fact]
    public void Envelopes_to_different_recipients_carry_sending_keys_a_relay_cannot_link()
    {
        using Identity alice = Identity.Create(), bob = Identity.Create(), carol = Identity.Create();
        DateTimeOffset expires = DateTimeOffset.UtcNow.AddDays(1);
        Envelope toBob = EnvelopeFormat.Seal(alice, bob.Card, [1], "text/plain", null, expires);
        Envelope toBobAgain = EnvelopeFormat.Seal(alice, bob.Card, [2], "text/plain", null, expires);
        Envelope toCarol = EnvelopeFormat.Seal(alice, carol.Card, [3], "text/plain", null, expires);
        Assert.Equal(toBob.SendingKey, toBobAgain.SendingKey);
        Assert.NotEqual(toBob.SendingKey, toCarol.SendingKey);

        // Derived from the saved seed: the same pseudonym after a restart of the client.
        string path = Path.Combine(Directory.CreateTempSubdirectory("meganet-id-").FullName, "alice.json");
        alice.Save(path);
        using Identity reloaded = Identity.Load(path);
        Assert.Equal(toBob.SendingKey.ToByteArray(), reloaded.SendingPublicKeyFor(bob.Address));
        Directory.Delete(Path.GetDirectoryName(path)!, recursive: true);
    }

    [Fact]
    public void A_contact_card_round_trips_survives_line_wrapping_and_refuses_damage()
    {
        using Identity alice = Identity.Create();
        string card = alice.Card.ToString();
        Assert.Equal(alice.Address, ContactCard.Parse(card).Address);
        // Wrapped by a mail client, indented, with a trailing newline: still the same card.
        string wrapped = $"  {card[..40]}\r\n  {card[40..]}\n";
        Assert.Equal(alice.Address, ContactCard.Parse(wrapped).Address);

        // One character changed anywhere: refused, never a different key.
        for (int i = 3; i < card.Length; i += 7)
        {
            char other = card[i] == 'A' ? 'B' : 'A';
            string damaged = card[..i] + other + card[(i + 1)..];
            Assert.Throws<FormatException>(() => ContactCard.Parse(damaged));
        }

        Assert.Contains("mn1", Assert.Throws<FormatException>(() => ContactCard.Parse("xx" + card[2..])).Message);
    }

    [Fact]
    public void The_sender_signature_covers_both_sender_keys()
    {
        using Identity alice = Identity.Create(), bob = Identity.Create(), mallory = Identity.Create();
        // Mallory has a message Alice signed for Bob and re-seals it with her own encryption key in the sender card, so
        // that Bob's replies would be sealed to her.
        SealedContent signed = Inner(alice, "meet at noon");
        byte[] padded = Padded(signed, bob.Card, alice);
        SealedContent swapped = signed.Clone();
        swapped.SenderEncryptionKey = ByteString.CopyFrom(mallory.Card.EncryptionKey);
        byte[] resealed = Padded(swapped, bob.Card, signer: null);
        Assert.Equal("meet at noon", EnvelopeFormat.Open(bob, Wrap(mallory, bob.Card, EnvelopeFormat.SealPadded(bob.Card, padded))).Content.ToStringUtf8());
        CryptographicException e = Assert.Throws<CryptographicException>(() => EnvelopeFormat.Open(bob, Wrap(mallory, bob.Card, EnvelopeFormat.SealPadded(bob.Card, resealed))));
        Assert.Contains("signature", e.Message);
    }

    [Fact]
    public void Sealing_outside_NSec_keys_gives_the_bytes_NSec_gives()
    {
        // The sender's seal runs libsodium on stack buffers; the recipient opens with NSec's keys. Both must be the one
        // construction of docs/protocol.md, byte for byte.
        using Identity bob = Identity.Create();
        int seed = Environment.TickCount;
        var random = new Random(seed);
        byte[] context = [.. Encoding.ASCII.GetBytes("meganet-seal-v1"), .. bob.Card.Address];
        for (int i = 0; i < 16; i++)
        {
            byte[] secret = new byte[32], nonce = new byte[24], padded = new byte[EnvelopeFormat.PayloadClasses[i % 2]];
            random.NextBytes(secret);
            random.NextBytes(nonce);
            random.NextBytes(padded);

            using Key ephemeral = Key.Import(KeyAgreementAlgorithm.X25519, secret, KeyBlobFormat.RawPrivateKey);
            byte[] ephemeralPublic = ephemeral.PublicKey.Export(KeyBlobFormat.RawPublicKey);
            var recipient = PublicKey.Import(KeyAgreementAlgorithm.X25519, bob.Card.EncryptionKey, KeyBlobFormat.RawPublicKey);
            using SharedSecret shared = KeyAgreementAlgorithm.X25519.Agree(ephemeral, recipient)!;
            using Key key = KeyDerivationAlgorithm.HkdfSha256.DeriveKey(shared, [.. ephemeralPublic, .. bob.Card.EncryptionKey], context, AeadAlgorithm.XChaCha20Poly1305);
            byte[] expected = [.. ephemeralPublic, .. nonce, .. AeadAlgorithm.XChaCha20Poly1305.Encrypt(key, nonce, context, padded)];

            byte[] actual = EnvelopeFormat.SealPadded(bob.Card, padded, secret, nonce);
            Assert.True(expected.AsSpan().SequenceEqual(actual), $"seed {seed}, case {i}: the seal differs from NSec's");
        }
    }

    [Fact]
    public void Sealing_to_a_small_order_encryption_key_is_refused()
    {
        using Identity alice = Identity.Create();
        // 0 and 1 are small-order u-coordinates: the shared secret would be all zeros, readable by anyone.
        foreach (byte[] point in new[] { new byte[32], [1, .. new byte[31]] })
        {
            var card = new ContactCard(alice.Card.SigningKey, point);
            CryptographicException e = Assert.Throws<CryptographicException>(() => EnvelopeFormat.Seal(alice, card, "hi"u8, "text/plain", null, DateTimeOffset.UtcNow.AddDays(1)));
            Assert.Contains("small-order", e.Message);
        }
    }
}
