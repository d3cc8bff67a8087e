using MegaNet.Core.Interop;

namespace MegaNet.Core.Ed25519;

/// <summary>Ed25519 key generation and signing (libsodium). Verification goes through an <c>IBatchVerifier</c>.</summary>
public static class Ed25519Signer
{
    /// <summary>Seed size in bytes.</summary>
    public const int SeedSize = 32;

    /// <summary>Expanded secret key size in bytes (seed ‖ public key), libsodium's layout.</summary>
    public const int SecretKeySize = 64;

    /// <summary>Derives the public key and 64-byte secret key from a 32-byte seed.</summary>
    public static void KeyPairFromSeed(ReadOnlySpan<byte> seed, Span<byte> publicKey, Span<byte> secretKey)
    {
        if (seed.Length != SeedSize || publicKey.Length != 32 || secretKey.Length != SecretKeySize)
        {
            throw new ArgumentException("Seed must be 32 bytes, public key 32 bytes and secret key 64 bytes.");
        }

        Sodium.SeedKeyPair(seed, publicKey, secretKey);
    }

    /// <summary>Signs <paramref name="message"/> with a 64-byte secret key, writing 64 bytes to <paramref name="signature"/>.</summary>
    public static void Sign(ReadOnlySpan<byte> secretKey, ReadOnlySpan<byte> message, Span<byte> signature)
    {
        if (secretKey.Length != SecretKeySize || signature.Length != 64)
        {
            throw new ArgumentException("Secret key must be 64 bytes and the signature span 64 bytes.");
        }

        Sodium.Sign(signature, message, secretKey);
    }

    /// <summary>The version of the native libsodium in use.</summary>
    public static string LibsodiumVersion => Sodium.Version;
}
