using MegaNet.Api;
using MegaNet.Api.V1;

namespace MegaNet.Node.Tests;

/// <summary>Stamps whose hash begins with exactly the bits asked for: a stamp claims the zero bits its hash has
/// (docs/protocol.md), so one solved for "at least b" may claim more and pass a demand a test means it to fail.</summary>
internal static class ExactStamp
{
    /// <summary>A stamp for <paramref name="envelope"/> whose hash under the node's <paramref name="seed"/> begins with
    /// exactly <paramref name="bits"/> zero bits.</summary>
    public static ProofOfWork For(Envelope envelope, byte[] seed, int bits)
    {
        byte[] digest = NSec.Cryptography.HashAlgorithm.Blake2b_256.Hash(EnvelopeFormat.CoreBytes(envelope));
        for (ulong nonce = 0; ; nonce++)
        {
            if (EnvelopeFormat.PowZeroBits(seed, digest, nonce) == bits)
            {
                return new ProofOfWork { Bits = (uint)bits, Nonce = nonce };
            }
        }
    }

    /// <summary>Stamps <paramref name="envelope"/> (sealed by <paramref name="sender"/>) with exactly
    /// <paramref name="bits"/> bits (none for 0) for the node's <paramref name="seed"/> and signs it again.</summary>
    public static Envelope Stamp(Identity sender, Envelope envelope, byte[] seed, int bits)
    {
        envelope.Pow = bits > 0 ? For(envelope, seed, bits) : null;
        envelope.Signature = Google.Protobuf.ByteString.CopyFrom(sender.SignWithSendingKeyFor(envelope.Recipient.Span, EnvelopeFormat.SigningBytes(envelope)));
        return envelope;
    }
}
