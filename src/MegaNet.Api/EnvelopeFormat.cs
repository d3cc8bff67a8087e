using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using Google.Protobuf;
using MegaNet.Api.V1;
using MegaNet.Core.Interop;
using NSec.Cryptography;
using HashAlgorithm = NSec.Cryptography.HashAlgorithm;

namespace MegaNet.Api;

/// <summary>
/// Byte-exact rules of the v1 envelope (docs/protocol.md): what is signed, how the proof-of-work stamp is computed,
/// how payloads are sealed to the recipient and padded to size classes, and how the recipient opens them.
/// </summary>
public static class EnvelopeFormat
{
    /// <summary>The only envelope version.</summary>
    public const uint Version = 1;

    /// <summary>The largest of <see cref="PayloadClasses"/>: what a part of a file sent in parts fills.</summary>
    public const int LargestPayloadClass = 65536;

    // Declared before PayloadClasses, whose initializer wraps it (static fields initialize in text order).
    private static readonly int[] Classes = [1024, 4096, 16384, LargestPayloadClass];

    /// <summary>Padded plaintext sizes; a sealed payload is one of these plus <see cref="SealOverhead"/> bytes.</summary>
    public static IReadOnlyList<int> PayloadClasses { get; } = Array.AsReadOnly(Classes);

    /// <summary>Ephemeral key (32) + nonce (24) + tag (16).</summary>
    public const int SealOverhead = 32 + 24 + 16;

    private static readonly byte[] CoreDomain = Encoding.ASCII.GetBytes("meganet-envelope-v1");
    private static readonly byte[] PowDomain = Encoding.ASCII.GetBytes("meganet-pow-v2");
    private static readonly byte[] SealDomain = Encoding.ASCII.GetBytes("meganet-seal-v1");
    private static readonly byte[] ContentDomain = Encoding.ASCII.GetBytes("meganet-content-v2");
    private static readonly byte[] AuthDomain = Encoding.ASCII.GetBytes("meganet-auth-v2");

    /// <summary>The serialized length of the largest envelope whose payload is of class <paramref name="payloadClass"/>:
    /// every field present at its largest encoding (an expiry and a stamp of the most varint bytes). A node whose
    /// largest envelope is at least this takes every envelope of the class.</summary>
    /// <exception cref="ArgumentException"><paramref name="payloadClass"/> is not one of <see cref="PayloadClasses"/>.</exception>
    public static int LargestEnvelopeLength(int payloadClass) => Array.IndexOf(Classes, payloadClass) is int i and >= 0
        ? LargestLengths[i]
        : throw new ArgumentException($"{payloadClass} is not a payload class ({string.Join(", ", Classes)}).", nameof(payloadClass));

    // Computed once: each takes a zeroed payload of the class (up to 64 KiB), and Status reads them on every call.
    private static readonly int[] LargestLengths = Array.ConvertAll(Classes, LargestLength);

    private static int LargestLength(int payloadClass) => new Envelope
    {
        Version = uint.MaxValue,
        Recipient = ByteString.CopyFrom(new byte[32]),
        ExpiresUnixMs = -1, // a negative int64 takes the most varint bytes (10)
        SealedPayload = ByteString.CopyFrom(new byte[payloadClass + SealOverhead]),
        SendingKey = ByteString.CopyFrom(new byte[32]),
        Signature = ByteString.CopyFrom(new byte[64]),
        Pow = new ProofOfWork { Bits = uint.MaxValue, Nonce = ulong.MaxValue },
    }.CalculateSize();

    /// <summary>True if <paramref name="sealedLength"/> is a legal sealed payload size.</summary>
    public static bool IsPaddedSize(int sealedLength) => Array.IndexOf(Classes, sealedLength - SealOverhead) >= 0;

    /// <summary>
    /// The most content bytes <see cref="Seal"/> fits in one envelope with this content type and file name: the largest
    /// payload class less its length prefix and the other fields of the sealed content. Callers check a file's size
    /// against it before reading the file.
    /// </summary>
    public static int MaxContentLength(string contentType, string? fileName)
    {
        ArgumentNullException.ThrowIfNull(contentType);
        var fields = new SealedContent
        {
            SenderSigningKey = ByteString.CopyFrom(new byte[32]),
            SenderEncryptionKey = ByteString.CopyFrom(new byte[32]),
            // The latest time a DateTimeOffset holds: its varint is at least as long as any real send time's.
            SentUnixMs = DateTimeOffset.MaxValue.ToUnixTimeMilliseconds(),
            ContentType = contentType,
            FileName = fileName ?? string.Empty,
            ContentSignature = ByteString.CopyFrom(new byte[64]),
        };
        // Seal needs plain + 4 (length prefix) <= class; content adds a tag byte and a length varint (3 bytes for
        // 16,384 to 2,097,151, where a 65,536-byte class lands).
        return PayloadClasses[^1] - 4 - fields.CalculateSize() - 1 - 3;
    }

    /// <summary>Where the recipient address lies in the core bytes (after the domain and the version).</summary>
    public const int CoreRecipientOffset = 19 + 4; // 19 = "meganet-envelope-v1" (a string's length is not a C# constant)

    /// <summary>Length of <see cref="CoreBytes"/>.</summary>
    public const int CoreLength = CoreRecipientOffset + 32 + 8 + 32 + 32;

    /// <summary>Where the sending key lies in the core bytes: their last 32 bytes.</summary>
    public const int CoreSendingKeyOffset = CoreLength - 32;

    /// <summary>Length of <see cref="SigningBytes(Envelope)"/>.</summary>
    public const int SigningLength = CoreLength + 4 + 8;

    /// <summary>"meganet-envelope-v1" ‖ version u32 BE ‖ recipient ‖ expiry i64 BE ‖ BLAKE2b-256(sealed payload) ‖ sending key.</summary>
    public static byte[] CoreBytes(Envelope envelope)
    {
        byte[] bytes = new byte[CoreLength];
        WriteCore(envelope, bytes);
        return bytes;
    }

    /// <summary>The bytes the sending key signs: core bytes ‖ pow bits u32 BE ‖ pow nonce u64 BE (zeros without a stamp).</summary>
    public static byte[] SigningBytes(Envelope envelope)
    {
        byte[] bytes = new byte[SigningLength];
        WriteSigningBytes(envelope, bytes);
        return bytes;
    }

    /// <summary>Writes <see cref="SigningBytes(Envelope)"/> into <paramref name="destination"/> (exactly
    /// <see cref="SigningLength"/> bytes), for callers that keep it in a buffer of their own.</summary>
    public static void WriteSigningBytes(Envelope envelope, Span<byte> destination)
    {
        if (destination.Length != SigningLength)
        {
            throw new ArgumentException($"The destination must be {SigningLength} bytes.", nameof(destination));
        }

        WriteCore(envelope, destination[..CoreLength]);
        BinaryPrimitives.WriteUInt32BigEndian(destination[CoreLength..], envelope.Pow?.Bits ?? 0);
        BinaryPrimitives.WriteUInt64BigEndian(destination[(CoreLength + 4)..], envelope.Pow?.Nonce ?? 0);
    }

    /// <summary>
    /// The envelope id: BLAKE2b-256(signing bytes). A fixed layout that covers every field but the signature (the
    /// sealed payload through its hash in the core bytes), so a client in any language computes it without re-encoding
    /// protobuf, and a relay hashes the payload once per envelope, not twice.
    /// </summary>
    /// <remarks>The signature stays out because its holder can make any number of valid ones for the same bytes (any
    /// nonce gives a valid Ed25519 signature): with it in the id, one proof-of-work stamp re-signed over and over bought
    /// as many new envelopes as the sender's rate allowed. Now a re-signed copy is the same envelope, a replay.</remarks>
    public static byte[] EnvelopeId(Envelope envelope)
    {
        ArgumentNullException.ThrowIfNull(envelope);
        Span<byte> signing = stackalloc byte[SigningLength];
        WriteSigningBytes(envelope, signing);
        return HashAlgorithm.Blake2b_256.Hash(signing);
    }

    /// <summary><see cref="EnvelopeId(Envelope)"/> from the envelope's <see cref="SigningBytes(Envelope)"/>, for
    /// callers that already hold them.</summary>
    public static void EnvelopeId(ReadOnlySpan<byte> signingBytes, Span<byte> id)
    {
        if (signingBytes.Length != SigningLength || id.Length != 32)
        {
            throw new ArgumentException($"The signing bytes must be {SigningLength} bytes and the id 32.");
        }

        HashAlgorithm.Blake2b_256.Hash(signingBytes, id);
    }

    private static void WriteCore(Envelope envelope, Span<byte> bytes)
    {
        ArgumentNullException.ThrowIfNull(envelope);
        int o = 0;
        CoreDomain.CopyTo(bytes);
        o += CoreDomain.Length;
        BinaryPrimitives.WriteUInt32BigEndian(bytes[o..], envelope.Version);
        o += 4;
        CopyFixed(envelope.Recipient.Span, bytes.Slice(o, 32));
        o += 32;
        BinaryPrimitives.WriteInt64BigEndian(bytes[o..], envelope.ExpiresUnixMs);
        o += 8;
        HashAlgorithm.Blake2b_256.Hash(envelope.SealedPayload.Span, bytes.Slice(o, 32));
        o += 32;
        CopyFixed(envelope.SendingKey.Span, bytes.Slice(o, 32));
    }

    /// <summary>Bytes of a node's proof-of-work seed (<c>Status.pow_seed</c>): a stamp is made for one seed.</summary>
    public const int PowSeedLength = 16;

    /// <summary>Leading zero bits of BLAKE2b-256("meganet-pow-v2" ‖ seed (16) ‖ BLAKE2b-256(core) ‖ nonce u64 BE).</summary>
    /// <exception cref="ArgumentException"><paramref name="seed"/> is not <see cref="PowSeedLength"/> bytes, or
    /// <paramref name="coreDigest"/> not 32.</exception>
    public static int PowZeroBits(ReadOnlySpan<byte> seed, ReadOnlySpan<byte> coreDigest, ulong nonce)
    {
        if (seed.Length != PowSeedLength || coreDigest.Length != 32)
        {
            throw new ArgumentException($"A proof-of-work seed has {PowSeedLength} bytes and a core digest 32 (got {seed.Length} and {coreDigest.Length}).");
        }

        Span<byte> input = stackalloc byte[PowDomain.Length + PowSeedLength + 32 + 8];
        PowDomain.CopyTo(input);
        seed.CopyTo(input[PowDomain.Length..]);
        coreDigest.CopyTo(input[(PowDomain.Length + PowSeedLength)..]);
        BinaryPrimitives.WriteUInt64BigEndian(input[(PowDomain.Length + PowSeedLength + 32)..], nonce);
        Span<byte> hash = stackalloc byte[32];
        HashAlgorithm.Blake2b_256.Hash(input, hash);
        int bits = 0;
        foreach (byte b in hash)
        {
            if (b == 0)
            {
                bits += 8;
                continue;
            }

            bits += System.Numerics.BitOperations.LeadingZeroCount((uint)b) - 24;
            break;
        }

        return bits;
    }

    /// <summary>The bits the envelope's stamp counts for under <paramref name="seed"/>: the bits it claims when its hash
    /// under that seed begins with exactly that many zero bits, else 0 (as for no stamp). Exactly, not at least: the
    /// hash does not cover the claim, so a stamp that could claim any count up to the zeros it has would sign as several
    /// envelopes (each claim is another id). A stamp is good only at the node whose seed it was made for, and only
    /// while that node still takes the seed (docs/protocol.md), so work done in advance cannot be hoarded.</summary>
    public static int StampBits(Envelope envelope, ReadOnlySpan<byte> seed)
    {
        ArgumentNullException.ThrowIfNull(envelope);
        return envelope.Pow is { Bits: > 0 } ? StampBits(CoreBytes(envelope), envelope, seed) : 0;
    }

    /// <summary><see cref="StampBits(Envelope, ReadOnlySpan{byte})"/> for a caller that already holds the envelope's
    /// <see cref="CoreBytes"/> (<see cref="CoreLength"/> bytes), so the sealed payload is not hashed again; with
    /// <paramref name="otherSeed"/>, a stamp that does not hold under <paramref name="seed"/> is tried under it too (a
    /// node takes its current seed and the one before), from the same core digest.</summary>
    public static int StampBits(ReadOnlySpan<byte> coreBytes, Envelope envelope, ReadOnlySpan<byte> seed, ReadOnlySpan<byte> otherSeed = default)
    {
        ArgumentNullException.ThrowIfNull(envelope);
        if (envelope.Pow is null or { Bits: 0 } || envelope.Pow.Bits > 256)
        {
            // A claim of no bits proves nothing and buys nothing: taken as no stamp (a client that always sends an
            // empty pow message was refused whenever its hash began with a zero bit). No hash has over 256.
            return 0;
        }

        Span<byte> digest = stackalloc byte[32];
        HashAlgorithm.Blake2b_256.Hash(coreBytes, digest);
        (uint claim, ulong nonce) = (envelope.Pow.Bits, envelope.Pow.Nonce);
        return PowZeroBits(seed, digest, nonce) == claim || (!otherSeed.IsEmpty && PowZeroBits(otherSeed, digest, nonce) == claim)
            ? (int)claim
            : 0;
    }

    /// <summary>Finds a nonce giving at least <paramref name="bits"/> leading zero bits under <paramref name="seed"/>
    /// (expected 2^bits hashes); the stamp claims the zero bits its hash has, which may be more.</summary>
    public static ProofOfWork SolvePow(Envelope envelope, ReadOnlySpan<byte> seed, int bits, CancellationToken cancellationToken = default)
    {
        byte[] digest = HashAlgorithm.Blake2b_256.Hash(CoreBytes(envelope));
        for (ulong nonce = (ulong)RandomNumberGenerator.GetInt32(int.MaxValue); ; nonce++)
        {
            if ((nonce & 0xFFF) == 0)
            {
                cancellationToken.ThrowIfCancellationRequested();
            }

            int zeros = PowZeroBits(seed, digest, nonce);
            if (zeros >= bits)
            {
                return new ProofOfWork { Bits = (uint)zeros, Nonce = nonce };
            }
        }
    }

    /// <summary>Stamps <paramref name="envelope"/> (sealed by <paramref name="sender"/>) with a proof of work of at least
    /// <paramref name="bits"/> bits for the node's <paramref name="seed"/> (<c>Status.pow_seed</c>, or a refusal's
    /// <c>pow-seed</c> trailer; the stamp claims the zero bits its hash has) and signs it again, replacing its stamp and signature: for an envelope a node
    /// refused with <c>FAILED_PRECONDITION</c> and a <c>pow-bits</c> trailer (<see cref="NodeRefusals.RequiredPowBits"/>).
    /// The stamp changes the envelope id. Runs on the calling thread (about 2^bits hashes).</summary>
    /// <exception cref="OperationCanceledException">Cancelled before a stamp was found; the envelope is unchanged.</exception>
    /// <exception cref="ArgumentException"><paramref name="seed"/> is not <see cref="PowSeedLength"/> bytes (and
    /// <paramref name="bits"/> above 0).</exception>
    public static void Stamp(Identity sender, Envelope envelope, ReadOnlySpan<byte> seed, int bits, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(sender);
        ArgumentNullException.ThrowIfNull(envelope);
        ArgumentOutOfRangeException.ThrowIfNegative(bits);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(bits, 64);
        if (bits > 0 && seed.Length != PowSeedLength)
        {
            throw new ArgumentException($"A proof-of-work seed has {PowSeedLength} bytes, not {seed.Length}: take it from the node's Status.pow_seed or its refusal's pow-seed trailer.", nameof(seed));
        }

        ProofOfWork? pow = bits > 0 ? SolvePow(envelope, seed, bits, cancellationToken) : null;
        envelope.Pow = pow;
        envelope.Signature = ByteString.CopyFrom(sender.SignWithSendingKeyFor(envelope.Recipient.Span, SigningBytes(envelope)));
    }

    /// <summary>
    /// Builds a signed envelope carrying <paramref name="content"/> from <paramref name="sender"/> to <paramref name="recipient"/>:
    /// the content is signed by the sender's identity, sealed to the recipient's X25519 key, padded to the smallest
    /// class that fits, and the envelope is signed by the sender's sending key (after an optional stamp).
    /// </summary>
    /// <remarks>A stamp of <paramref name="powBits"/> for the node's <paramref name="powSeed"/> is computed on the
    /// calling thread and cannot be cancelled; for a cancellable one, seal with 0 and <see cref="Stamp"/>.</remarks>
    /// <exception cref="ArgumentException">The content does not fit the largest class, or <paramref name="powBits"/> is
    /// above 0 without a seed of <see cref="PowSeedLength"/> bytes.</exception>
    public static Envelope Seal(Identity sender, ContactCard recipient, ReadOnlySpan<byte> content, string contentType, string? fileName,
        DateTimeOffset expiresAt, int powBits = 0, DateTimeOffset? sentAt = null, byte[]? powSeed = null)
    {
        ArgumentNullException.ThrowIfNull(sender);
        ArgumentNullException.ThrowIfNull(recipient);
        if (powBits > 0 && powSeed?.Length != PowSeedLength)
        {
            throw new ArgumentException($"A stamp is made for a node's proof-of-work seed of {PowSeedLength} bytes (Status.pow_seed); none was given.", nameof(powSeed));
        }

        long sent = (sentAt ?? DateTimeOffset.UtcNow).ToUnixTimeMilliseconds();
        var inner = new SealedContent
        {
            SenderSigningKey = ByteString.CopyFrom(sender.Card.SigningKey),
            SenderEncryptionKey = ByteString.CopyFrom(sender.Card.EncryptionKey),
            SentUnixMs = sent,
            ContentType = contentType,
            FileName = fileName ?? string.Empty,
            Content = ByteString.CopyFrom(content),
        };
        inner.ContentSignature = ByteString.CopyFrom(sender.SignWithIdentity(ContentDigest(recipient.Address, inner)));
        byte[] plain = inner.ToByteArray();
        int size = PayloadClasses.FirstOrDefault(c => c >= plain.Length + 4);
        if (size == 0)
        {
            throw new ArgumentException($"The content is too large ({content.Length} bytes): at most {MaxContentLength(contentType, fileName)} bytes fit in one envelope.", nameof(content));
        }

        byte[] padded = new byte[size];
        BinaryPrimitives.WriteInt32LittleEndian(padded, plain.Length);
        plain.CopyTo(padded, 4);
        byte[] sealedPayload = SealPadded(recipient, padded);

        var envelope = new Envelope
        {
            Version = Version,
            Recipient = ByteString.CopyFrom(recipient.Address),
            ExpiresUnixMs = expiresAt.ToUnixTimeMilliseconds(),
            SealedPayload = UnsafeByteOperations.UnsafeWrap(sealedPayload), // fresh, and never written again
            SendingKey = ByteString.CopyFrom(sender.SendingPublicKeyFor(recipient.Address)),
        };
        if (powBits > 0)
        {
            envelope.Pow = SolvePow(envelope, powSeed, powBits);
        }

        envelope.Signature = ByteString.CopyFrom(sender.SignWithSendingKeyFor(recipient.Address, SigningBytes(envelope)));
        return envelope;
    }

    /// <summary>ephemeral X25519 public ‖ nonce ‖ XChaCha20-Poly1305 of <paramref name="padded"/> (already padded to a
    /// class) to <paramref name="recipient"/>. Tests use it to seal what a well-behaved sender never would.</summary>
    internal static byte[] SealPadded(ContactCard recipient, ReadOnlySpan<byte> padded)
    {
        Span<byte> ephemeralSecret = stackalloc byte[32];
        Span<byte> nonce = stackalloc byte[24];
        RandomNumberGenerator.Fill(ephemeralSecret);
        RandomNumberGenerator.Fill(nonce);
        try
        {
            return SealPadded(recipient, padded, ephemeralSecret, nonce);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(ephemeralSecret);
        }
    }

    /// <summary>As <see cref="SealPadded(ContactCard, ReadOnlySpan{byte})"/> with a given ephemeral secret and nonce
    /// (tests compare it with the same seal done through NSec's keys). The ephemeral secret, the shared secret and the
    /// derived key stay in caller and stack memory and are zeroed after use: NSec's guarded pages per key (an mmap,
    /// mprotects and an munmap each, three keys a seal) cost more than the cryptography here.</summary>
    internal static byte[] SealPadded(ContactCard recipient, ReadOnlySpan<byte> padded, ReadOnlySpan<byte> ephemeralSecret, ReadOnlySpan<byte> nonce)
    {
        byte[] sealedPayload = new byte[SealOverhead + padded.Length];
        Span<byte> ephemeralPublic = sealedPayload.AsSpan(0, 32);
        Sodium.X25519PublicKey(ephemeralPublic, ephemeralSecret);
        nonce.CopyTo(sealedPayload.AsSpan(32, 24));
        Span<byte> secrets = stackalloc byte[64]; // shared secret ‖ derived key
        try
        {
            if (!Sodium.X25519(secrets[..32], ephemeralSecret, recipient.EncryptionKey))
            {
                throw new CryptographicException("The X25519 key agreement produced no secret (a small-order public key).");
            }

            byte[] context = SealContext(recipient.Address);
            HKDF.DeriveKey(HashAlgorithmName.SHA256, secrets[..32], secrets[32..], SealSalt(ephemeralPublic, recipient.EncryptionKey), context);
            Sodium.XChaCha20Poly1305Encrypt(sealedPayload.AsSpan(56), padded, context, nonce, secrets[32..]);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(secrets);
        }

        return sealedPayload;
    }

    /// <summary>Opens an envelope addressed to <paramref name="recipient"/> and checks the sender's content signature.</summary>
    /// <exception cref="CryptographicException">Not for this identity, tampered with, malformed inside (anyone can seal
    /// junk to an address: a relay cannot look inside), or the content signature is wrong. Nothing else is thrown for
    /// any envelope.</exception>
    public static SealedContent Open(Identity recipient, Envelope envelope) => Open(recipient, envelope, out _);

    /// <summary>As <see cref="Open(Identity, Envelope)"/>, also giving the <see cref="ContentDigest"/> the sender's
    /// signature was checked over (what <see cref="SeenMessages"/> knows a message by).</summary>
    public static SealedContent Open(Identity recipient, Envelope envelope, out byte[] contentDigest)
    {
        ArgumentNullException.ThrowIfNull(recipient);
        ArgumentNullException.ThrowIfNull(envelope);
        ReadOnlySpan<byte> sealedPayload = envelope.SealedPayload.Span;
        if (!envelope.Recipient.Span.SequenceEqual(recipient.Address) || sealedPayload.Length < SealOverhead)
        {
            throw new CryptographicException("The envelope is not addressed to this identity.");
        }

        ReadOnlySpan<byte> ephemeralPublic = sealedPayload[..32];
        ReadOnlySpan<byte> nonce = sealedPayload.Slice(32, 24);
        using Key aeadKey = DeriveOpenKey(recipient.EncryptionKey, ephemeralPublic, recipient.Card.EncryptionKey, recipient.Address);
        byte[] padded = new byte[sealedPayload.Length - SealOverhead];
        if (!AeadAlgorithm.XChaCha20Poly1305.Decrypt(aeadKey, nonce, SealContext(recipient.Address), sealedPayload[56..], padded))
        {
            throw new CryptographicException("The sealed payload does not decrypt: it was not sealed to this identity or was altered.");
        }

        int length = padded.Length >= 4 ? BinaryPrimitives.ReadInt32LittleEndian(padded) : -1;
        if (length < 0 || length > padded.Length - 4)
        {
            throw new CryptographicException("The sealed payload's length prefix is out of range.");
        }

        if (padded.AsSpan(4 + length).ContainsAnyExcept((byte)0))
        {
            // One padding per content: the sender cannot hide anything in it.
            throw new CryptographicException("The sealed payload's padding is not zeros.");
        }

        SealedContent inner;
        try
        {
            inner = SealedContent.Parser.ParseFrom(padded, 4, length);
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new CryptographicException($"The sealed content is malformed ({e.Message}).", e);
        }

        if (inner.SenderSigningKey.Length != 32 || inner.SenderEncryptionKey.Length != 32 || inner.ContentSignature.Length != 64)
        {
            throw new CryptographicException("The sealed content has no valid sender keys or signature.");
        }

        if (inner.SentUnixMs < 0 || inner.SentUnixMs > DateTimeOffset.MaxValue.ToUnixTimeMilliseconds())
        {
            throw new CryptographicException($"The sealed content's sending time ({inner.SentUnixMs} ms) is not a date.");
        }

        var senderKey = PublicKey.Import(SignatureAlgorithm.Ed25519, inner.SenderSigningKey.Span, KeyBlobFormat.RawPublicKey);
        contentDigest = ContentDigest(recipient.Address, inner);
        if (!SignatureAlgorithm.Ed25519.Verify(senderKey, contentDigest, inner.ContentSignature.Span))
        {
            throw new CryptographicException("The sender's signature over the content does not verify.");
        }

        return inner;
    }

    /// <summary>BLAKE2b-256("meganet-content-v2" ‖ recipient ‖ sender address ‖ sent i64 BE ‖ len-prefixed content
    /// type, file name, content). The sender's address (of both its keys) is signed so nobody can present a signed
    /// message with their own encryption key in the sender's card (replies would go to them).</summary>
    public static byte[] ContentDigest(ReadOnlySpan<byte> recipientAddress, SealedContent inner)
    {
        ArgumentNullException.ThrowIfNull(inner);
        using var stream = new MemoryStream();
        stream.Write(ContentDomain);
        stream.Write(recipientAddress);
        stream.Write(ContactCard.ComputeAddress(inner.SenderSigningKey.Span, inner.SenderEncryptionKey.Span));
        Span<byte> number = stackalloc byte[8];
        BinaryPrimitives.WriteInt64BigEndian(number, inner.SentUnixMs);
        stream.Write(number);
        foreach (ReadOnlyMemory<byte> field in new ReadOnlyMemory<byte>[] { Encoding.UTF8.GetBytes(inner.ContentType), Encoding.UTF8.GetBytes(inner.FileName), inner.Content.Memory })
        {
            BinaryPrimitives.WriteInt32BigEndian(number, field.Length);
            stream.Write(number[..4]);
            stream.Write(field.Span);
        }

        return HashAlgorithm.Blake2b_256.Hash(stream.ToArray());
    }

    /// <summary>"meganet-auth-v2" ‖ nonce ‖ node id ‖ address ‖ purpose: what a mailbox owner signs, good for one call
    /// of the method (and for <c>Ack</c> the sequence numbers) <paramref name="purpose"/> names.</summary>
    public static byte[] AuthBytes(ReadOnlySpan<byte> nonce, ReadOnlySpan<byte> nodeId, ReadOnlySpan<byte> address, MailboxPurpose purpose) =>
        [.. AuthDomain, .. nonce, .. nodeId, .. address, .. purpose.Bytes];

    /// <summary>The recipient's side of the seal key: its long-term key stays in NSec's guarded memory.</summary>
    private static Key DeriveOpenKey(Key own, ReadOnlySpan<byte> ephemeralPublic, ReadOnlySpan<byte> recipientPublic, ReadOnlySpan<byte> address)
    {
        var peer = PublicKey.Import(KeyAgreementAlgorithm.X25519, ephemeralPublic, KeyBlobFormat.RawPublicKey);
        using SharedSecret shared = KeyAgreementAlgorithm.X25519.Agree(own, peer)
            ?? throw new CryptographicException("The X25519 key agreement produced no secret (a small-order public key).");
        return KeyDerivationAlgorithm.HkdfSha256.DeriveKey(shared, SealSalt(ephemeralPublic, recipientPublic), SealContext(address), AeadAlgorithm.XChaCha20Poly1305);
    }

    private static byte[] SealSalt(ReadOnlySpan<byte> ephemeralPublic, ReadOnlySpan<byte> recipientPublic) => [.. ephemeralPublic, .. recipientPublic];

    /// <summary>"meganet-seal-v1" ‖ address: the seal key's HKDF info and the AEAD's associated data.</summary>
    private static byte[] SealContext(ReadOnlySpan<byte> address) => [.. SealDomain, .. address];

    private static void CopyFixed(ReadOnlySpan<byte> source, Span<byte> destination)
    {
        // Fields of the wrong size are rejected before verification; here they only must not throw.
        source[..Math.Min(source.Length, destination.Length)].CopyTo(destination);
    }
}
