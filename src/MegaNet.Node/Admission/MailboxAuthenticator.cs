using System.Collections.Concurrent;
using System.Security.Cryptography;
using Grpc.Core;
using MegaNet.Api;
using MegaNet.Api.V1;
using MegaNet.Core.Verification;
using MegaNet.Node.Hosting;

namespace MegaNet.Node.Admission;

/// <summary>
/// Mailbox access without accounts: the node hands out a nonce for an address; the owner proves it holds the
/// identity key behind the address by signing "meganet-auth-v1" ‖ nonce ‖ node id ‖ address. Nonces live five
/// minutes and only for the address they were issued for.
/// </summary>
public sealed class MailboxAuthenticator(NodeKey nodeKey, IBatchVerifier verifier, TimeProvider clock)
{
    private static readonly TimeSpan Lifetime = TimeSpan.FromMinutes(5);
    private const int MaxOutstanding = 200_000;
    private readonly ConcurrentDictionary<ByteKey, (byte[] Address, DateTimeOffset Expires)> _nonces = new();

    /// <summary>Issues a challenge for <paramref name="address"/>.</summary>
    public ChallengeResponse Challenge(ReadOnlySpan<byte> address)
    {
        if (address.Length != 32)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, "An address is 32 bytes."));
        }

        DateTimeOffset now = clock.GetUtcNow();
        if (_nonces.Count >= MaxOutstanding)
        {
            foreach (var entry in _nonces.Where(e => e.Value.Expires <= now).ToList())
            {
                _nonces.TryRemove(entry.Key, out _);
            }

            if (_nonces.Count >= MaxOutstanding)
            {
                throw new RpcException(new Status(StatusCode.ResourceExhausted, "Too many outstanding challenges; retry shortly."));
            }
        }

        byte[] nonce = RandomNumberGenerator.GetBytes(32);
        DateTimeOffset expires = now + Lifetime;
        _nonces[new ByteKey(nonce)] = (address.ToArray(), expires);
        return new ChallengeResponse
        {
            Nonce = Google.Protobuf.ByteString.CopyFrom(nonce),
            NodeId = Google.Protobuf.ByteString.CopyFrom(nodeKey.PublicKey),
            ExpiresUnixMs = expires.ToUnixTimeMilliseconds(),
        };
    }

    /// <summary>Returns the authenticated address or throws UNAUTHENTICATED / PERMISSION_DENIED saying why.</summary>
    public byte[] Authenticate(MailboxAuth? auth)
    {
        if (auth is null || auth.Nonce.IsEmpty || auth.Signature.IsEmpty)
        {
            throw new RpcException(new Status(StatusCode.Unauthenticated, "Mailbox access needs a signed challenge: call Challenge, sign it with the identity key, and send it as auth."));
        }

        if (auth.Address.Length != 32 || auth.IdentitySigningKey.Length != 32 || auth.IdentityEncryptionKey.Length != 32 || auth.Signature.Length != 64)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, "auth: address and keys must be 32 bytes, signature 64 bytes."));
        }

        if (!_nonces.TryGetValue(new ByteKey(auth.Nonce.ToByteArray()), out var issued) || issued.Expires <= clock.GetUtcNow())
        {
            throw new RpcException(new Status(StatusCode.Unauthenticated, "Unknown or expired challenge nonce; call Challenge again."));
        }

        byte[] address = auth.Address.ToByteArray();
        if (!issued.Address.AsSpan().SequenceEqual(address))
        {
            throw new RpcException(new Status(StatusCode.PermissionDenied, "This challenge was issued for another address."));
        }

        if (!ContactCard.ComputeAddress(auth.IdentitySigningKey.Span, auth.IdentityEncryptionKey.Span).AsSpan().SequenceEqual(address))
        {
            throw new RpcException(new Status(StatusCode.PermissionDenied, "These identity keys do not own this address."));
        }

        using var batch = new SignatureBatch(1);
        batch.Add(auth.IdentitySigningKey.Span, auth.Signature.Span, EnvelopeFormat.AuthBytes(auth.Nonce.Span, nodeKey.PublicKey, address));
        if (!verifier.Verify(batch)[0])
        {
            throw new RpcException(new Status(StatusCode.PermissionDenied, "The challenge signature does not verify for this identity key."));
        }

        return address;
    }
}
