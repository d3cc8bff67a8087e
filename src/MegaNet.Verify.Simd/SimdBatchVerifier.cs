using MegaNet.Core.Verification;

namespace MegaNet.Verify.Simd;

/// <summary>Backend <c>simd</c>: vectorised CPU batch verification under the MegaNet rule.</summary>
public sealed class SimdBatchVerifier : BatchVerifierBase
{
    /// <summary>Registry name.</summary>
    public const string BackendName = "simd";

    /// <summary>Creates the verifier.</summary>
    public SimdBatchVerifier(VerifierOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        throw new BackendUnavailableException(BackendName, "the SIMD backend is not implemented yet.");
    }

    /// <summary>Null when the backend can run here, else why not.</summary>
    public static string? Probe() => "the SIMD backend is not implemented yet.";

    /// <inheritdoc />
    public override string Name => BackendName;

    /// <inheritdoc />
    public override string Description => "not implemented";

    /// <inheritdoc />
    protected override void VerifyCore(SignatureBatch batch, int start, int count, Span<bool> verdicts) =>
        throw new BackendUnavailableException(BackendName, "the SIMD backend is not implemented yet.");
}
