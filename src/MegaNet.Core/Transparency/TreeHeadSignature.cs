using System.Buffers.Binary;
using System.Text;
using MegaNet.Core.Ed25519;

namespace MegaNet.Core.Transparency;

/// <summary>
/// The bytes a node signs for a tree head: <c>"meganet-sth-v1" ‖ tree_size (u64 BE) ‖ root_hash (32) ‖ timestamp_ms (u64 BE)</c>.
/// Documented in docs/protocol.md; any client can rebuild them and check the node's Ed25519 signature.
/// </summary>
public static class TreeHeadSignature
{
    private static readonly byte[] Domain = Encoding.ASCII.GetBytes("meganet-sth-v1");

    /// <summary>The signed bytes.</summary>
    public static byte[] SigningBytes(long treeSize, ReadOnlySpan<byte> rootHash, long timestampUnixMs)
    {
        if (rootHash.Length != MerkleTree.HashSize)
        {
            throw new ArgumentException("A root hash is 32 bytes.", nameof(rootHash));
        }

        byte[] bytes = new byte[Domain.Length + 8 + 32 + 8];
        Domain.CopyTo(bytes, 0);
        BinaryPrimitives.WriteInt64BigEndian(bytes.AsSpan(Domain.Length), treeSize);
        rootHash.CopyTo(bytes.AsSpan(Domain.Length + 8));
        BinaryPrimitives.WriteInt64BigEndian(bytes.AsSpan(Domain.Length + 40), timestampUnixMs);
        return bytes;
    }

    /// <summary>Signs a tree head with the node's 64-byte secret key.</summary>
    public static byte[] Sign(ReadOnlySpan<byte> secretKey, long treeSize, ReadOnlySpan<byte> rootHash, long timestampUnixMs)
    {
        byte[] signature = new byte[64];
        Ed25519Signer.Sign(secretKey, SigningBytes(treeSize, rootHash, timestampUnixMs), signature);
        return signature;
    }

    /// <summary>
    /// Checks a tree head signature under MegaNet's rule (the reference implementation: one signature, no batch) and
    /// under libsodium's, which the JavaScript client and most other Ed25519 libraries apply. A head is something every
    /// client compares with every other (consistency, gossip), so all must take the same heads as signed: a node key or
    /// signature with a torsion component can pass the cofactored rule and fail the cofactorless one, and a node could
    /// show such a head to C# clients as valid that a JS client refuses. An honest node's heads pass both.
    /// </summary>
    public static bool Verify(ReadOnlySpan<byte> nodePublicKey, long treeSize, ReadOnlySpan<byte> rootHash, long timestampUnixMs, ReadOnlySpan<byte> signature)
    {
        if (rootHash.Length != MerkleTree.HashSize || nodePublicKey.Length != 32 || signature.Length != 64)
        {
            return false;
        }

        byte[] signed = SigningBytes(treeSize, rootHash, timestampUnixMs);
        return Ed25519Reference.Verify(nodePublicKey, signature, signed) && Interop.Sodium.Verify(signature, signed, nodePublicKey);
    }
}
