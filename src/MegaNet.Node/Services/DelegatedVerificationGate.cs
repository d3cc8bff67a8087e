using MegaNet.Core.Verification;

namespace MegaNet.Node.Services;

/// <summary>
/// Delegated verification (<c>VerifyBatch</c>): the verifier it runs on, and how many calls may verify at once, half
/// the cores (at least one). Delegated verification is free to ask for and costly to answer (an all-invalid request
/// of 65,536 signatures is about 6 s of CPU), so calls beyond this are refused with RESOURCE_EXHAUSTED and a retry
/// hint instead of queueing behind each other and starving admission. On the CPU each call verifies on one thread, so
/// the slots bound the cores it takes: on the node's verifier every call fanned out over all of its threads (all the
/// cores but one), and half the cores' worth of calls could take every core.
/// </summary>
public sealed class DelegatedVerificationGate : IDisposable
{
    private readonly SemaphoreSlim _slots;
    private readonly bool _ownsVerifier;

    /// <summary>Creates a gate over <paramref name="verifier"/> with <paramref name="slots"/> slots (default: half the
    /// cores, at least one); with <paramref name="ownsVerifier"/> disposing the gate disposes the verifier.</summary>
    public DelegatedVerificationGate(IBatchVerifier verifier, bool ownsVerifier, int? slots = null)
    {
        Verifier = verifier ?? throw new ArgumentNullException(nameof(verifier));
        _ownsVerifier = ownsVerifier;
        Capacity = slots ?? Math.Max(1, Environment.ProcessorCount / 2);
        ArgumentOutOfRangeException.ThrowIfLessThan(Capacity, 1, nameof(slots));
        _slots = new SemaphoreSlim(Capacity, Capacity);
    }

    /// <summary>What delegated calls verify on.</summary>
    public IBatchVerifier Verifier { get; }

    /// <summary>Calls that may verify at once.</summary>
    public int Capacity { get; }

    /// <summary>Calls verifying now.</summary>
    public int InUse => Capacity - _slots.CurrentCount;

    /// <summary>Takes a slot if one is free; the caller must <see cref="Exit"/> after.</summary>
    public bool TryEnter() => _slots.Wait(0);

    /// <summary>Gives the slot back.</summary>
    public void Exit() => _slots.Release();

    /// <inheritdoc />
    public void Dispose()
    {
        _slots.Dispose();
        if (_ownsVerifier)
        {
            Verifier.Dispose();
        }
    }
}
