using System.Numerics;
using System.Security.Cryptography;
using MegaNet.Core.Ed25519;

namespace MegaNet.Node.Tests;

/// <summary>Ed25519 signing with a fresh random nonce each time (not RFC 8032's deterministic one): what any holder of a
/// key can do, giving any number of different valid signatures over the same bytes.</summary>
internal sealed class RandomNonceSigner
{
    private readonly BigInteger _secretScalar;

    public RandomNonceSigner()
    {
        byte[] h = SHA512.HashData(RandomNumberGenerator.GetBytes(32));
        h[0] &= 248;
        h[31] &= 127;
        h[31] |= 64;
        _secretScalar = Ed25519Reference.FromLittleEndian(h.AsSpan(0, 32));
        PublicKey = Ed25519Reference.Encode(Ed25519Reference.ScalarMultiply(_secretScalar, Ed25519Reference.B));
    }

    public byte[] PublicKey { get; }

    public byte[] Sign(byte[] message)
    {
        BigInteger r = Ed25519Reference.FromLittleEndian(RandomNumberGenerator.GetBytes(64)) % Ed25519Reference.L;
        byte[] encodedR = Ed25519Reference.Encode(Ed25519Reference.ScalarMultiply(r, Ed25519Reference.B));
        BigInteger k = Ed25519Reference.ComputeK(encodedR, PublicKey, message);
        BigInteger s = (r + (k * _secretScalar)) % Ed25519Reference.L;
        byte[] signature = new byte[64];
        encodedR.CopyTo(signature, 0);
        s.ToByteArray(isUnsigned: true, isBigEndian: false).CopyTo(signature, 32);
        return signature;
    }
}
