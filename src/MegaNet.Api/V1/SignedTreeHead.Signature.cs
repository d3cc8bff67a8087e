using MegaNet.Core.Transparency;

namespace MegaNet.Api.V1;

/// <summary>A node's signed statement of its log's size and root (docs/protocol.md, "Receipts and tree heads").</summary>
// Additions to the class protoc generates from relay.proto (partial, so it sees the generated fields).
public sealed partial class SignedTreeHead
{
    /// <summary>True if <see cref="Signature"/> verifies with <see cref="NodeKey"/> over the head's fields. Whose key
    /// that is, is the caller's to check: anyone can sign a head over a log of their own.</summary>
    public bool SignatureVerifies => TreeHeadSignature.Verify(NodeKey.Span, TreeSize, RootHash.Span, TimestampUnixMs, Signature.Span);
}
