using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace MegaNet.Core.Interop;

/// <summary>
/// The narrow boundary to libsodium (shipped natively by the <c>libsodium</c> package that NSec.Cryptography brings).
/// Used for the speed baseline and as an oracle in tests; MegaNet's own rule never depends on it. Sealing calls its
/// X25519 and XChaCha20-Poly1305 here, on caller-owned buffers, for the ephemeral key only: NSec puts every key and
/// shared secret in guarded pages of its own (an mmap, mprotects and an munmap each), which for a key that lives a few
/// microseconds cost more than the cryptography and, on every core at once, stalled on the kernel's memory-map lock.
/// </summary>
internal static partial class Sodium
{
    private const string Library = "libsodium";
    private static readonly Lazy<string> Initialised = new(Initialise);

    /// <summary>libsodium's version string, after <c>sodium_init</c>; throws <see cref="PlatformNotSupportedException"/> when the native library is missing.</summary>
    public static string Version => Initialised.Value;

    public static unsafe bool Verify(ReadOnlySpan<byte> signature, ReadOnlySpan<byte> message, ReadOnlySpan<byte> publicKey)
    {
        _ = Initialised.Value;
        // libsodium reads 64 and 32 bytes through these pointers whatever the spans hold.
        Length(signature.Length, 64, nameof(signature));
        Length(publicKey.Length, 32, nameof(publicKey));
        fixed (byte* s = signature)
        fixed (byte* m = message)
        fixed (byte* k = publicKey)
        {
            return crypto_sign_ed25519_verify_detached(s, m, (ulong)message.Length, k) == 0;
        }
    }

    public static unsafe void SeedKeyPair(ReadOnlySpan<byte> seed, Span<byte> publicKey, Span<byte> secretKey)
    {
        _ = Initialised.Value;
        fixed (byte* sd = seed)
        fixed (byte* pk = publicKey)
        fixed (byte* sk = secretKey)
        {
            Check(crypto_sign_ed25519_seed_keypair(pk, sk, sd), "crypto_sign_ed25519_seed_keypair");
        }
    }

    public static unsafe void Sign(Span<byte> signature, ReadOnlySpan<byte> message, ReadOnlySpan<byte> secretKey)
    {
        _ = Initialised.Value;
        fixed (byte* s = signature)
        fixed (byte* m = message)
        fixed (byte* k = secretKey)
        {
            Check(crypto_sign_ed25519_detached(s, null, m, (ulong)message.Length, k), "crypto_sign_ed25519_detached");
        }
    }

    /// <summary>The X25519 public key of <paramref name="secret"/> (32 bytes each).</summary>
    public static unsafe void X25519PublicKey(Span<byte> publicKey, ReadOnlySpan<byte> secret)
    {
        _ = Initialised.Value;
        Length(publicKey.Length, 32, nameof(publicKey));
        Length(secret.Length, 32, nameof(secret));
        fixed (byte* q = publicKey)
        fixed (byte* n = secret)
        {
            Check(crypto_scalarmult_curve25519_base(q, n), "crypto_scalarmult_curve25519_base");
        }
    }

    /// <summary>X25519 of <paramref name="secret"/> and <paramref name="peer"/>; false when the result is all zeros (a
    /// small-order peer key), as NSec's <c>Agree</c> returns no secret then.</summary>
    public static unsafe bool X25519(Span<byte> shared, ReadOnlySpan<byte> secret, ReadOnlySpan<byte> peer)
    {
        _ = Initialised.Value;
        Length(shared.Length, 32, nameof(shared));
        Length(secret.Length, 32, nameof(secret));
        Length(peer.Length, 32, nameof(peer));
        fixed (byte* q = shared)
        fixed (byte* n = secret)
        fixed (byte* p = peer)
        {
            return crypto_scalarmult_curve25519(q, n, p) == 0;
        }
    }

    /// <summary>XChaCha20-Poly1305 (IETF): <paramref name="ciphertext"/> is the encrypted <paramref name="plaintext"/>
    /// followed by the 16-byte tag, as NSec's <c>Encrypt</c> writes it.</summary>
    public static unsafe void XChaCha20Poly1305Encrypt(Span<byte> ciphertext, ReadOnlySpan<byte> plaintext, ReadOnlySpan<byte> associatedData,
        ReadOnlySpan<byte> nonce, ReadOnlySpan<byte> key)
    {
        _ = Initialised.Value;
        Length(ciphertext.Length, plaintext.Length + 16, nameof(ciphertext));
        Length(nonce.Length, 24, nameof(nonce));
        Length(key.Length, 32, nameof(key));
        fixed (byte* c = ciphertext)
        fixed (byte* m = plaintext)
        fixed (byte* ad = associatedData)
        fixed (byte* npub = nonce)
        fixed (byte* k = key)
        {
            Check(crypto_aead_xchacha20poly1305_ietf_encrypt(c, null, m, (ulong)plaintext.Length, ad, (ulong)associatedData.Length, null, npub, k),
                "crypto_aead_xchacha20poly1305_ietf_encrypt");
        }
    }

    private static void Length(int actual, int expected, string name)
    {
        if (actual != expected)
        {
            throw new ArgumentException($"{name} must be {expected} bytes; got {actual}.", name);
        }
    }

    private static void Check(int rc, string function)
    {
        if (rc != 0)
        {
            throw new InvalidOperationException($"libsodium {function} failed ({rc}).");
        }
    }

    private static string Initialise()
    {
        try
        {
            if (sodium_init() < 0)
            {
                throw new PlatformNotSupportedException("libsodium failed to initialise (sodium_init returned −1).");
            }

            return Marshal.PtrToStringAnsi(sodium_version_string()) ?? "unknown";
        }
        catch (DllNotFoundException e)
        {
            throw new PlatformNotSupportedException("The native libsodium library was not found; it ships with NSec.Cryptography for this platform.", e);
        }
    }

    [LibraryImport(Library)]
    [UnmanagedCallConv(CallConvs = [typeof(CallConvCdecl)])]
    private static partial int sodium_init();

    [LibraryImport(Library)]
    [UnmanagedCallConv(CallConvs = [typeof(CallConvCdecl)])]
    private static partial nint sodium_version_string();

    [LibraryImport(Library)]
    [UnmanagedCallConv(CallConvs = [typeof(CallConvCdecl)])]
    private static unsafe partial int crypto_sign_ed25519_verify_detached(byte* sig, byte* m, ulong mlen, byte* pk);

    [LibraryImport(Library)]
    [UnmanagedCallConv(CallConvs = [typeof(CallConvCdecl)])]
    private static unsafe partial int crypto_sign_ed25519_seed_keypair(byte* pk, byte* sk, byte* seed);

    [LibraryImport(Library)]
    [UnmanagedCallConv(CallConvs = [typeof(CallConvCdecl)])]
    private static unsafe partial int crypto_sign_ed25519_detached(byte* sig, ulong* siglen, byte* m, ulong mlen, byte* sk);

    [LibraryImport(Library)]
    [UnmanagedCallConv(CallConvs = [typeof(CallConvCdecl)])]
    private static unsafe partial int crypto_scalarmult_curve25519_base(byte* q, byte* n);

    [LibraryImport(Library)]
    [UnmanagedCallConv(CallConvs = [typeof(CallConvCdecl)])]
    private static unsafe partial int crypto_scalarmult_curve25519(byte* q, byte* n, byte* p);

    [LibraryImport(Library)]
    [UnmanagedCallConv(CallConvs = [typeof(CallConvCdecl)])]
    private static unsafe partial int crypto_aead_xchacha20poly1305_ietf_encrypt(byte* c, ulong* clen, byte* m, ulong mlen, byte* ad, ulong adlen,
        byte* nsec, byte* npub, byte* k);
}
