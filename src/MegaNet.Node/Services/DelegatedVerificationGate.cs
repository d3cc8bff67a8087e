namespace MegaNet.Node.Services;

/// <summary>
/// How many <c>VerifyBatch</c> calls may verify at once: half the cores (at least one). Delegated verification is
/// free to ask for and costly to answer (an invalid signature costs a single check, ~60 µs here, and a call may hold
/// 65,536 of them: seconds of CPU for a 7 MB request), so calls beyond this are refused with RESOURCE_EXHAUSTED and a
/// retry hint instead of queueing behind each other and starving admission.
/// </summary>
public sealed class DelegatedVerificationGate : IDisposable
{
    private readonly SemaphoreSlim _slots;

    /// <summary>Creates a gate with <paramref name="slots"/> slots (default: half the cores, at least one).</summary>
    public DelegatedVerificationGate(int? slots = null)
    {
        Capacity = slots ?? Math.Max(1, Environment.ProcessorCount / 2);
        ArgumentOutOfRangeException.ThrowIfLessThan(Capacity, 1, nameof(slots));
        _slots = new SemaphoreSlim(Capacity, Capacity);
    }

    /// <summary>Calls that may verify at once.</summary>
    public int Capacity { get; }

    /// <summary>Calls verifying now.</summary>
    public int InUse => Capacity - _slots.CurrentCount;

    /// <summary>Takes a slot if one is free; the caller must <see cref="Exit"/> after.</summary>
    public bool TryEnter() => _slots.Wait(0);

    /// <summary>Gives the slot back.</summary>
    public void Exit() => _slots.Release();

    /// <inheritdoc />
    public void Dispose() => _slots.Dispose();
}
