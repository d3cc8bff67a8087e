namespace MegaNet.Api.V1;

/// <summary>A <c>Submit</c> or <c>SubmitStream</c> request: one envelope.</summary>
// Additions to the classes protoc generates from relay.proto (partial, so they see the generated fields).
public sealed partial class SubmitRequest
{
    /// <summary>The pooled buffer the node's request parser put this request's envelope bytes in, which the envelope's
    /// byte fields point into; null for a request parsed any other way. Only the node reads it: it gives the buffer back
    /// once admission has copied what it keeps (MegaNet.Node's PooledSubmitParser).</summary>
    internal byte[]? PooledBytes;
}

/// <summary>A <c>SubmitBatchStream</c> request: up to 256 envelopes.</summary>
public sealed partial class SubmitBatchRequest
{
    /// <summary>As <see cref="SubmitRequest.PooledBytes"/>, for all the request's envelopes.</summary>
    internal byte[]? PooledBytes;
}
