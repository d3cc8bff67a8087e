using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Security.Cryptography;

namespace MegaNet.Core.Interop;

/// <summary>
/// SHA-256 of short inputs through OpenSSL's low-level calls (<c>SHA256_Init</c>, <c>_Update</c>, <c>_Final</c>) where
/// the process can load libcrypto (Linux, where .NET's own cryptography loads it too): they run the CPU's SHA extensions
/// where it has them. The Merkle log hashes one leaf (33 bytes) and about one node (65 bytes) per stored envelope, and
/// for inputs that short the library call is the cost: on an Intel Xeon with SHA extensions (2026-12-06, C loop)
/// 96 and 136 ns here against 531 and 806 ns for libsodium's portable code (NSec) and 201-219 ns for OpenSSL's EVP
/// interface with a reused context (.NET's <see cref="SHA256.HashData(ReadOnlySpan{byte}, Span{byte})"/> adds a context
/// per call: 620-680 ns). Deprecated in OpenSSL 3 but exported; where they are missing, or answer a known input wrongly
/// when loaded, <see cref="IsAvailable"/> is false and callers keep libsodium.
/// </summary>
internal static unsafe class OpenSslSha256
{
    /// <summary>Longest input <see cref="Hash"/> takes: the calls skip the runtime's GC transition, which is only right
    /// for calls that end in well under a microsecond.</summary>
    public const int MaxInput = 256;

    // sizeof(SHA256_CTX) is 112 (eight state words, two counters, a 64-byte block, two ints); room to spare.
    private const int ContextBytes = 256;

    private static readonly delegate* unmanaged[Cdecl, SuppressGCTransition]<void*, int> Init;
    private static readonly delegate* unmanaged[Cdecl, SuppressGCTransition]<void*, byte*, nuint, int> Update;
    private static readonly delegate* unmanaged[Cdecl, SuppressGCTransition]<byte*, void*, int> Final;

    static OpenSslSha256()
    {
        if (!OperatingSystem.IsLinux())
        {
            WhyNot = "libcrypto is loaded only on Linux";
            return;
        }

        WhyNot = "no libcrypto.so.3 or libcrypto.so.1.1 with SHA256_Init, SHA256_Update and SHA256_Final";
        foreach (string name in (ReadOnlySpan<string>)["libcrypto.so.3", "libcrypto.so.1.1"])
        {
            if (NativeLibrary.TryLoad(name, out nint library)
                && NativeLibrary.TryGetExport(library, "SHA256_Init", out nint init)
                && NativeLibrary.TryGetExport(library, "SHA256_Update", out nint update)
                && NativeLibrary.TryGetExport(library, "SHA256_Final", out nint final))
            {
                Init = (delegate* unmanaged[Cdecl, SuppressGCTransition]<void*, int>)init;
                Update = (delegate* unmanaged[Cdecl, SuppressGCTransition]<void*, byte*, nuint, int>)update;
                Final = (delegate* unmanaged[Cdecl, SuppressGCTransition]<byte*, void*, int>)final;
                WhyNot = KnownAnswerFails(name);
                Library = name;
                break;
            }
        }

        if (WhyNot is not null)
        {
            Final = null;
            Library = null;
        }
    }

    /// <summary>True when <see cref="Hash"/> may be called.</summary>
    public static bool IsAvailable => Final != null;

    /// <summary>The library whose calls <see cref="Hash"/> makes (<c>libcrypto.so.3</c>, say); null when
    /// <see cref="IsAvailable"/> is false.</summary>
    public static string? Library { get; }

    /// <summary>Why <see cref="IsAvailable"/> is false; null when it is true.</summary>
    public static string? WhyNot { get; }

    /// <summary>SHA-256 of <paramref name="data"/> (at most <see cref="MaxInput"/> bytes) into the first 32 bytes of
    /// <paramref name="hash"/>. Only when <see cref="IsAvailable"/>.</summary>
    /// <remarks>The context is not zeroed (SHA256_Init sets all of it): zeroing 256 bytes of stack before the calls
    /// more than doubled their time (about 300 against 125 ns for 65 bytes, 2026-12-06).</remarks>
    [SkipLocalsInit]
    public static void Hash(ReadOnlySpan<byte> data, Span<byte> hash)
    {
        // The callers' contract (MerkleTree checks its destinations); a wrong length here would write past the span.
        Debug.Assert(data.Length <= MaxInput && hash.Length >= 32 && IsAvailable);
        byte* context = stackalloc byte[ContextBytes];
        fixed (byte* d = data)
        fixed (byte* h = hash)
        {
            if (Init(context) != 1 || Update(context, d, (nuint)data.Length) != 1 || Final(h, context) != 1)
            {
                throw new CryptographicException("OpenSSL's SHA256_Init, SHA256_Update or SHA256_Final failed.");
            }
        }
    }

    // Checks the loaded functions against .NET's SHA-256 on inputs of the lengths the Merkle log hashes.
    private static string? KnownAnswerFails(string library)
    {
        Span<byte> input = stackalloc byte[MaxInput], ours = stackalloc byte[32], expected = stackalloc byte[32];
        for (int i = 0; i < input.Length; i++)
        {
            input[i] = (byte)(i * 7 + 1);
        }

        foreach (int length in (ReadOnlySpan<int>)[0, 33, 65, MaxInput])
        {
            try
            {
                Hash(input[..length], ours);
            }
            catch (CryptographicException e)
            {
                // A library that refuses the low-level calls (a FIPS-only build) leaves the hashing to libsodium.
                return $"{library}: {e.Message}";
            }

            SHA256.HashData(input[..length], expected);
            if (!ours.SequenceEqual(expected))
            {
                return $"{library}'s SHA256_Final gave a wrong hash of {length} bytes";
            }
        }

        return null;
    }
}
