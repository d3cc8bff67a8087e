using System.Text.Json;
using System.Text.Json.Serialization;
using NSec.Cryptography;

namespace MegaNet.Api;

/// <summary>
/// A person's MegaNet identity: an Ed25519 signing key and an X25519 encryption key, plus a separate Ed25519
/// <em>sending</em> seed from which the keys that sign envelopes are derived, one per recipient (pseudonymous: relays
/// see them, never the identity, and cannot tell that envelopes to two recipients come from one sender). The address
/// is BLAKE2b-256(signing public key ‖ encryption public key).
/// </summary>
public sealed class Identity : IDisposable
{
    private static KeyCreationParameters Exportable => new() { ExportPolicy = KeyExportPolicies.AllowPlaintextExport };

    private Identity(Key signing, Key encryption, Key sending)
    {
        SigningKey = signing;
        EncryptionKey = encryption;
        SendingKey = sending;
        Card = new ContactCard(
            signing.PublicKey.Export(KeyBlobFormat.RawPublicKey),
            encryption.PublicKey.Export(KeyBlobFormat.RawPublicKey));
    }

    /// <summary>The identity signing key (signs content and mailbox challenges).</summary>
    internal Key SigningKey { get; }

    /// <summary>The X25519 key sealed payloads are opened with.</summary>
    internal Key EncryptionKey { get; }

    /// <summary>The sending seed, kept as a key (envelopes are signed by keys derived from it per recipient).</summary>
    internal Key SendingKey { get; }

    private static readonly byte[] SendingDomain = "meganet-sending-v1"u8.ToArray();
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, Key> _sendingKeys = new();

    /// <summary>The public half others send to.</summary>
    public ContactCard Card { get; }

    /// <summary>The sending key envelopes to <paramref name="recipientAddress"/> carry.</summary>
    public byte[] SendingPublicKeyFor(ReadOnlySpan<byte> recipientAddress) =>
        SendingKeyFor(recipientAddress).PublicKey.Export(KeyBlobFormat.RawPublicKey);

    /// <summary>Signs <paramref name="data"/> with the sending key for <paramref name="recipientAddress"/>.</summary>
    public byte[] SignWithSendingKeyFor(ReadOnlySpan<byte> recipientAddress, ReadOnlySpan<byte> data) =>
        SignatureAlgorithm.Ed25519.Sign(SendingKeyFor(recipientAddress), data);

    /// <summary>
    /// Ed25519 seed = HKDF-SHA256(sending seed, info = "meganet-sending-v1" ‖ recipient address): one pseudonym per
    /// recipient, so relays cannot link a sender's envelopes to different recipients (a contact graph), while envelopes
    /// to one recipient share a key the relay's rate limit and verification key cache can hold on to.
    /// </summary>
    private Key SendingKeyFor(ReadOnlySpan<byte> recipientAddress)
    {
        string id = Convert.ToHexString(recipientAddress);
        if (_sendingKeys.TryGetValue(id, out Key? key))
        {
            return key;
        }

        byte[] seed = SendingKey.Export(KeyBlobFormat.RawPrivateKey);
        // The extracted key is as good as the seed (it derives every sending key): zeroed with it.
        byte[] extracted = System.Security.Cryptography.HKDF.Extract(System.Security.Cryptography.HashAlgorithmName.SHA256, seed);
        byte[] derived = System.Security.Cryptography.HKDF.Expand(System.Security.Cryptography.HashAlgorithmName.SHA256, extracted, 32, [.. SendingDomain, .. recipientAddress]);
        System.Security.Cryptography.CryptographicOperations.ZeroMemory(seed);
        System.Security.Cryptography.CryptographicOperations.ZeroMemory(extracted);
        key = Key.Import(SignatureAlgorithm.Ed25519, derived, KeyBlobFormat.RawPrivateKey);
        System.Security.Cryptography.CryptographicOperations.ZeroMemory(derived);
        if (!_sendingKeys.TryAdd(id, key))
        {
            key.Dispose();
            key = _sendingKeys[id];
        }

        return key;
    }

    /// <summary>This identity's 32-byte address.</summary>
    public byte[] Address => Card.Address;

    /// <summary>A fresh identity from the operating system's CSPRNG.</summary>
    public static Identity Create() => new(
        Key.Create(SignatureAlgorithm.Ed25519, Exportable),
        Key.Create(KeyAgreementAlgorithm.X25519, Exportable),
        Key.Create(SignatureAlgorithm.Ed25519, Exportable));

    /// <summary>Signs <paramref name="data"/> with the identity key.</summary>
    public byte[] SignWithIdentity(ReadOnlySpan<byte> data) => SignatureAlgorithm.Ed25519.Sign(SigningKey, data);


    /// <summary>
    /// Writes the identity (private keys) to <paramref name="path"/>, readable by the owner only, durably: the file's
    /// data is flushed to disk before it takes its name, and the directory after (a crash of the machine must not
    /// leave an empty or missing key file after the command said it was written).
    /// </summary>
    /// <param name="path">The identity file.</param>
    /// <param name="overwrite">Replace a file that exists (its keys are lost). Without it an existing file is never
    /// replaced, not even one created after the caller checked (the new name is taken atomically, see
    /// <see cref="MegaNet.Core.Interop.PrivateFile"/>).</param>
    /// <exception cref="IOException">The file exists (without <paramref name="overwrite"/>), or cannot be written.</exception>
    public void Save(string path, bool overwrite = false)
    {
        var file = new IdentityFile
        {
            Version = 1,
            SigningSeed = Convert.ToHexString(SigningKey.Export(KeyBlobFormat.RawPrivateKey)).ToLowerInvariant(),
            EncryptionKey = Convert.ToHexString(EncryptionKey.Export(KeyBlobFormat.RawPrivateKey)).ToLowerInvariant(),
            SendingSeed = Convert.ToHexString(SendingKey.Export(KeyBlobFormat.RawPrivateKey)).ToLowerInvariant(),
            Card = Card.ToString(),
        };
        MegaNet.Core.Interop.PrivateFile.Write(path, stream => JsonSerializer.Serialize(stream, file, IdentityJson.Default.IdentityFile), replace: overwrite);
    }

    /// <summary>Reads an identity written by <see cref="Save"/>.</summary>
    /// <exception cref="InvalidDataException">The file is not a MegaNet identity; the message says what is wrong.</exception>
    public static Identity Load(string path)
    {
        IdentityFile? file;
        string text = File.ReadAllText(path);
        try
        {
            file = JsonSerializer.Deserialize(text, IdentityJson.Default.IdentityFile);
        }
        catch (JsonException e)
        {
            // A card file passed for the identity is the likely mistake (the walkthrough saves Bob's card beside it).
            throw new InvalidDataException(text.TrimStart().StartsWith(ContactCard.Prefix, StringComparison.Ordinal)
                ? $"{path} holds a contact card, the public half of an identity, not an identity file: give the file 'meganet id new' wrote."
                : $"{path} is not a MegaNet identity file (it is not the JSON 'meganet id new' writes: {e.Message}).", e);
        }

        if (file is null || file.Version != 1 || file.SigningSeed is null || file.EncryptionKey is null || file.SendingSeed is null)
        {
            throw new InvalidDataException($"{path} is not a version 1 MegaNet identity file; create one with 'meganet id new'.");
        }

        Identity identity;
        try
        {
            identity = new Identity(
                Key.Import(SignatureAlgorithm.Ed25519, Convert.FromHexString(file.SigningSeed), KeyBlobFormat.RawPrivateKey, Exportable),
                Key.Import(KeyAgreementAlgorithm.X25519, Convert.FromHexString(file.EncryptionKey), KeyBlobFormat.RawPrivateKey, Exportable),
                Key.Import(SignatureAlgorithm.Ed25519, Convert.FromHexString(file.SendingSeed), KeyBlobFormat.RawPrivateKey, Exportable));
        }
        catch (Exception e) when (e is FormatException or ArgumentException)
        {
            throw new InvalidDataException($"{path} holds a damaged key ({e.Message}).", e);
        }

        // Any 32 bytes are a key: a changed digit made another identity, whose card nobody has, without a word. The
        // card saved beside the keys says whose they were.
        if (file.Card is not null && file.Card != identity.Card.ToString())
        {
            identity.Dispose();
            throw new InvalidDataException($"{path} holds a damaged key: its keys do not make the card saved with them ({file.Card}). Restore the file from a copy.");
        }

        return identity;
    }

    /// <inheritdoc />
    public void Dispose()
    {
        SigningKey.Dispose();
        EncryptionKey.Dispose();
        SendingKey.Dispose();
        foreach (Key key in _sendingKeys.Values)
        {
            key.Dispose();
        }
    }
}

/// <summary>The on-disk identity (hex keys).</summary>
public sealed class IdentityFile
{
    /// <summary>File format version (1).</summary>
    [JsonPropertyName("version")]
    public int Version { get; set; }

    /// <summary>Identity signing key seed, hex.</summary>
    [JsonPropertyName("signing_seed")]
    public string? SigningSeed { get; set; }

    /// <summary>X25519 private key, hex.</summary>
    [JsonPropertyName("encryption_key")]
    public string? EncryptionKey { get; set; }

    /// <summary>Sending seed, hex.</summary>
    [JsonPropertyName("sending_seed")]
    public string? SendingSeed { get; set; }

    /// <summary>The contact card (text form), for reading the file.</summary>
    [JsonPropertyName("card")]
    public string? Card { get; set; }
}

[JsonSerializable(typeof(IdentityFile))]
[JsonSourceGenerationOptions(WriteIndented = true)]
internal sealed partial class IdentityJson : JsonSerializerContext;

/// <summary>
/// The public half of an identity, shareable as text (<c>mn1</c> + base64url of signing key ‖ encryption key ‖
/// 4-byte checksum) for copy/paste and QR codes.
/// </summary>
public sealed class ContactCard
{
    /// <summary>What the text form of every card begins with.</summary>
    public const string Prefix = "mn1";

    /// <summary>Creates a card from the two public keys.</summary>
    public ContactCard(byte[] signingKey, byte[] encryptionKey)
    {
        if (signingKey is not { Length: 32 } || encryptionKey is not { Length: 32 })
        {
            throw new ArgumentException("A contact card holds two 32-byte public keys.");
        }

        SigningKey = signingKey;
        EncryptionKey = encryptionKey;
        Address = ComputeAddress(signingKey, encryptionKey);
    }

    /// <summary>Ed25519 identity public key.</summary>
    public byte[] SigningKey { get; }

    /// <summary>X25519 public key.</summary>
    public byte[] EncryptionKey { get; }

    /// <summary>BLAKE2b-256(signing key ‖ encryption key).</summary>
    public byte[] Address { get; }

    /// <summary>The address for two public keys.</summary>
    public static byte[] ComputeAddress(ReadOnlySpan<byte> signingKey, ReadOnlySpan<byte> encryptionKey)
    {
        Span<byte> both = stackalloc byte[64];
        signingKey.CopyTo(both);
        encryptionKey.CopyTo(both[32..]);
        return HashAlgorithm.Blake2b_256.Hash(both);
    }

    /// <summary>The text form.</summary>
    public override string ToString()
    {
        byte[] raw = new byte[68];
        SigningKey.CopyTo(raw, 0);
        EncryptionKey.CopyTo(raw, 32);
        HashAlgorithm.Blake2b_256.Hash(raw.AsSpan(0, 64)).AsSpan(0, 4).CopyTo(raw.AsSpan(64));
        return Prefix + Convert.ToBase64String(raw).TrimEnd('=').Replace('+', '-').Replace('/', '_');
    }

    /// <summary>Parses the text form.</summary>
    /// <exception cref="FormatException">Not a card, or a typo (the checksum does not match).</exception>
    public static ContactCard Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        // Cards travel through chat, mail and QR codes, which wrap long words: whitespace anywhere is not part of it.
        text = string.Concat(text.Where(ch => !char.IsWhiteSpace(ch)));
        if (!text.StartsWith(Prefix, StringComparison.Ordinal))
        {
            throw new FormatException($"A MegaNet contact card starts with '{Prefix}'.");
        }

        string b64 = text[Prefix.Length..].Replace('-', '+').Replace('_', '/');
        b64 += new string('=', (4 - b64.Length % 4) % 4);
        byte[] raw;
        try
        {
            raw = Convert.FromBase64String(b64);
        }
        catch (FormatException)
        {
            throw new FormatException("The contact card is not valid base64url.");
        }

        if (raw.Length != 68 || !HashAlgorithm.Blake2b_256.Hash(raw.AsSpan(0, 64)).AsSpan(0, 4).SequenceEqual(raw.AsSpan(64)))
        {
            throw new FormatException("The contact card is damaged (wrong length or checksum); copy it again.");
        }

        var card = new ContactCard(raw[..32], raw[32..64]);
        if (card.ToString() != text)
        {
            // base64url leaves spare bits in the last character: one card, one text.
            throw new FormatException("The contact card is not in its canonical form (its last character is off); copy it again.");
        }

        return card;
    }
}

