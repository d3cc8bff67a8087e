namespace MegaNet.Api.V1;

// Additions to the classes protoc generates from envelope.proto (partial, so they see the generated fields).
public sealed partial class Envelope
{
    /// <summary>
    /// True if the envelope, or its proof-of-work stamp, carries fields this version does not know. The protobuf parser
    /// keeps such fields and re-encodes them, but no signature or id covers them: a relay that stored them would let
    /// anyone bloat an envelope past its size class, or plant a copy that wins the id before the genuine one arrives.
    /// </summary>
    public bool HasUnknownFields => _unknownFields is not null || (Pow?.HasUnknownFields ?? false);
}

public sealed partial class ProofOfWork
{
    /// <summary>True if the stamp carries fields this version does not know.</summary>
    public bool HasUnknownFields => _unknownFields is not null;
}
