using MegaNet.Core.Diagnostics;
using MegaNet.Core.Verification;
using MegaNet.Verify.Gpu;
using MegaNet.Verify.Simd;
using Microsoft.Extensions.Logging;

namespace MegaNet.Node.Verification;

/// <summary>
/// How a backend asked for by name (or <c>auto</c>) is started, for the node and for <c>meganet verify</c> and
/// <c>meganet bench</c> alike: a GPU that fails to start, or whose verdicts differ from the reference on a start-up
/// check, is replaced by SIMD under <c>auto</c> and refused with a <see cref="BackendUnavailableException"/> when named
/// (a driver's compiler is not ours, and a wrong verdict must never go out unflagged).
/// </summary>
internal static partial class VerifierStartup
{
    // Log event ids are unique across the node (LoggerEventIdTests checks): 200-299 are the verifiers'. Alerts and
    // filters key on them, so an id once given keeps its meaning.
    [LoggerMessage(EventId = 201, Level = LogLevel.Error, Message = "The GPU verifier was not used: {Reason}; auto chose SIMD instead")]
    private static partial void LogGpuRefused(ILogger logger, string reason);

    [LoggerMessage(EventId = 202, Level = LogLevel.Warning, Message = "Releasing the GPU verifier that failed its start-up check failed too ({Error})")]
    private static partial void LogGpuReleaseFailed(ILogger logger, string error);

    /// <summary>Whether <paramref name="verifier"/> is one of the GPU backends (<c>gpu</c>, or <c>gpu-cpu</c>, its
    /// kernels on ILGPU's CPU accelerator), which run behind a router over SIMD.</summary>
    public static bool IsGpu(IBatchVerifier verifier)
    {
        ArgumentNullException.ThrowIfNull(verifier);
        return IsGpuName(verifier.Name);
    }

    /// <summary>Whether <paramref name="backend"/> names one of the GPU backends (see <see cref="IsGpu"/>): the one
    /// list of them that start-up, routing, verify and bench go by.</summary>
    public static bool IsGpuName(string? backend) => backend is GpuBatchVerifier.DeviceBackendName or GpuBatchVerifier.CpuBackendName;

    /// <summary>Whether <paramref name="requested"/> asks for <c>auto</c> (as the registry reads it: case ignored).</summary>
    public static bool IsAuto(string requested) => string.Equals(requested, BatchVerifierRegistry.Auto, StringComparison.OrdinalIgnoreCase);

    /// <summary>
    /// Creates <paramref name="requested"/> (<see cref="CreateBackend"/>), lets <paramref name="accept"/> refuse it (it
    /// throws; the backend is released), then holds a GPU to the reference (<see cref="CheckGpu"/>). The backend
    /// returned is the caller's to route (<see cref="RouteGpu"/>) and dispose.
    /// </summary>
    public static IBatchVerifier CreateChecked(BatchVerifierRegistry registry, string requested, VerifierOptions options, ILogger logger, Action<IBatchVerifier>? accept = null)
    {
        ArgumentNullException.ThrowIfNull(registry);
        ArgumentNullException.ThrowIfNull(options);
        IBatchVerifier verifier = CreateBackend(registry, requested, options, logger);
        if (accept is not null)
        {
            try
            {
                accept(verifier);
            }
            catch
            {
                verifier.Dispose();
                throw;
            }
        }

        return CheckGpu(verifier, requested, () => registry.Create(SimdBatchVerifier.BackendName, options), logger);
    }

    /// <summary>
    /// <paramref name="verifier"/> as a node runs it: a GPU backend behind a <see cref="RoutingBatchVerifier"/> that
    /// sends batches under <see cref="VerifierOptions.GpuThreshold"/> to SIMD (made by <paramref name="create"/>) and
    /// verifies a batch again on SIMD, and every later one there, when the GPU throws (reported through
    /// <paramref name="onGpuFault"/>): for good, or until <paramref name="retry"/>'s check passes; any other backend as
    /// it is. The result owns <paramref name="verifier"/>.
    /// </summary>
    public static IBatchVerifier RouteGpu(IBatchVerifier verifier, VerifierOptions options, Func<string, VerifierOptions, IBatchVerifier> create, Action<Exception> onGpuFault,
        AcceleratorRetry? retry = null)
    {
        ArgumentNullException.ThrowIfNull(verifier);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(create);
        if (!IsGpu(verifier))
        {
            return verifier;
        }

        IBatchVerifier simd;
        try
        {
            simd = create(SimdBatchVerifier.BackendName, options);
        }
        catch
        {
            verifier.Dispose();
            throw;
        }

        return new RoutingBatchVerifier(verifier, simd, options.GpuThreshold, onGpuFault, retry);
    }

    /// <summary>
    /// A GPU backend must agree with the reference on <see cref="VerifierSelfCheck.StartupItems"/> seeded adversarial
    /// items before it is trusted (a driver's compiler is not ours). Asked for by name, a GPU that disagrees is refused
    /// with a <see cref="BackendUnavailableException"/> saying so; chosen by <c>auto</c>, it is logged and
    /// <paramref name="fallback"/> serves instead. Not <c>gpu-cpu</c>: no driver compiles its kernels (ILGPU runs
    /// their IL on .NET), and the check's batch of 16,385 items or more would take the CPU accelerator about half a minute.
    /// </summary>
    public static IBatchVerifier CheckGpu(IBatchVerifier verifier, string requested, Func<IBatchVerifier> fallback, ILogger logger)
    {
        ArgumentNullException.ThrowIfNull(verifier);
        ArgumentNullException.ThrowIfNull(fallback);
        if (verifier.Name != GpuBatchVerifier.DeviceBackendName)
        {
            return verifier;
        }

        if (SelfCheckFailure(verifier) is not { } reason)
        {
            return verifier;
        }

        try
        {
            verifier.Dispose();
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // A faulted device may fail its release too (GpuBatchVerifier releases quietly; this guards any other): the
            // refusal, and under auto the fallback, still stands.
            LogGpuReleaseFailed(logger, e.GetType().Name);
        }

        if (!IsAuto(requested))
        {
            throw new BackendUnavailableException(GpuBatchVerifier.DeviceBackendName, reason + ", or start with --backend simd.");
        }

        LogGpuRefused(logger, reason);
        return fallback();
    }

    /// <summary>
    /// Runs the start-up check on <paramref name="verifier"/> (a GPU backend): null when it agrees with the reference,
    /// else why not (a launch that threw counts as a failure). Also what a node runs before it lets a GPU that faulted
    /// serve again (<see cref="AcceleratorRetry"/>).
    /// </summary>
    public static string? SelfCheckFailure(IBatchVerifier verifier)
    {
        ArgumentNullException.ThrowIfNull(verifier);

        // One small launch, then one batch cut into chunks on both streams (what the router sends a GPU in real work):
        // 257 seeded items, repeated, so a verdict written to the wrong chunk or item shows, and four with messages over
        // 16 KiB spread among them, whose challenges the host computes (a path only batches with such messages take).
        int large = ((verifier as GpuBatchVerifier)?.SingleLaunchItems ?? GpuBatchVerifier.MinSingleLaunchItems) + 1;
        int mismatches;
        int checkedItems = VerifierSelfCheck.StartupItems;
        string? failure = null;
        try
        {
            // Known answers for nobody: kept out of the GPU's launch timings (the verification counters are the
            // router's, composed after this), so a node that has verified nothing reports nothing.
            using IDisposable uncounted = MegaNetMetrics.SuspendGpuTimings();
            mismatches = VerifierSelfCheck.Mismatches(verifier, VerifierSelfCheck.StartupItems);
            if (mismatches == 0)
            {
                checkedItems = large;
                mismatches = VerifierSelfCheck.Mismatches(verifier, VerifierSelfCheck.StartupItems + 1, batchSize: large, longMessages: true);
            }
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // A launch, copy or allocation that fails here is the GPU failing, like a wrong verdict: same handling.
            mismatches = -1;
            failure = $"{e.GetType().Name}: {e.Message}";
        }

        return mismatches == 0 ? null
            : failure is not null
            ? $"it failed its start-up check on {checkedItems} items ({failure}; {verifier.Description}); report the GPU and driver"
            : $"its verdicts differ from the reference rule on {mismatches} of {checkedItems} start-up check items " +
              $"({verifier.Description}); run `meganet bench --backend gpu --check` for details and report the GPU and driver";
    }

    /// <summary>Creates the backend <paramref name="requested"/>. Under <c>auto</c>, a GPU that is present but fails to
    /// start (driver, kernel compilation, memory) is logged and SIMD runs instead; a GPU asked for by name fails with a
    /// <see cref="BackendUnavailableException"/> saying why. A setting out of range is an <see cref="ArgumentException"/>
    /// naming it either way.</summary>
    public static IBatchVerifier CreateBackend(BatchVerifierRegistry registry, string requested, VerifierOptions options, ILogger logger)
    {
        ArgumentNullException.ThrowIfNull(registry);
        bool auto = IsAuto(requested);
        string resolved = registry.Resolve(requested);
        bool gpu = IsGpuName(resolved);
        try
        {
            return registry.Create(requested, options);
        }
        catch (Exception e) when (gpu && e is not (BackendUnavailableException or ArgumentException))
        {
            // ILGPU's and the driver's own exceptions (a CUDA error, a kernel that does not compile) name neither the
            // backend nor what to do; a BackendUnavailableException is "this backend cannot run here", and an
            // ArgumentException a bad setting (MEGANET_GPU_CHUNK), said as it is: neither the GPU's fault nor one that
            // SIMD under auto would hide.
            string failure = $"it failed to start ({e.GetType().Name}: {e.Message})";
            if (!auto)
            {
                throw new BackendUnavailableException(resolved, $"{failure}; check the GPU and its driver, or start with --backend simd.", e);
            }

            LogGpuRefused(logger, failure);
            return registry.Create(SimdBatchVerifier.BackendName, options);
        }
    }
}
