using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace MegaNet.Core.Interop;

/// <summary>
/// The narrow boundary to libsodium (shipped natively by the <c>libsodium</c> package that NSec.Cryptography brings).
/// Used for the speed baseline and as an oracle in tests; MegaNet's own rule never depends on it.
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
}
