namespace MegaNet.Core.Verification;

/// <summary>
/// Sends batches of at least <c>threshold</c> items to an accelerator backend and smaller ones to a CPU backend.
/// The first time the accelerator throws, the fault is reported once through <c>onFault</c>, that batch is
/// verified again on the CPU, and every later batch stays on the CPU: a device fault never becomes a wrong verdict.
/// Both backends must implement the same rule.
/// </summary>
public sealed class RoutingBatchVerifier : BatchVerifierBase
{
    private readonly IBatchVerifier _accelerator;
    private readonly IBatchVerifier _cpu;
    private readonly int _threshold;
    private readonly Action<Exception>? _onFault;
    private readonly Lock _acceleratorLock = new();
    private volatile bool _acceleratorFailed;

    /// <summary>Creates the router; it owns and disposes both backends.</summary>
    public RoutingBatchVerifier(IBatchVerifier accelerator, IBatchVerifier cpu, int threshold, Action<Exception>? onFault = null)
    {
        ArgumentNullException.ThrowIfNull(accelerator);
        ArgumentNullException.ThrowIfNull(cpu);
        ArgumentOutOfRangeException.ThrowIfLessThan(threshold, 1);
        if (accelerator.Rule != cpu.Rule)
        {
            throw new ArgumentException($"'{accelerator.Name}' and '{cpu.Name}' apply different rules; a router must never change a verdict.");
        }

        _accelerator = accelerator;
        _cpu = cpu;
        _threshold = threshold;
        _onFault = onFault;
    }

    /// <summary>True once the accelerator faulted and everything runs on the CPU backend.</summary>
    public bool AcceleratorFailed => _acceleratorFailed;

    /// <inheritdoc />
    public override string Name => _accelerator.Name;

    /// <inheritdoc />
    public override string Description => _acceleratorFailed
        ? $"{_cpu.Description} (the {_accelerator.Name} backend faulted; running on {_cpu.Name})"
        : $"{_accelerator.Description} for batches of {_threshold} or more; {_cpu.Name} below";

    /// <inheritdoc />
    public override VerificationRule Rule => _cpu.Rule;

    /// <inheritdoc />
    protected override void VerifyCore(SignatureBatch batch, int start, int count, Span<bool> verdicts)
    {
        if (count >= _threshold && !_acceleratorFailed)
        {
            // One batch at a time on the accelerator (it reuses its buffers and streams), and the fault flag is read
            // again inside: a caller that waited here while another's batch faulted goes to the CPU, and the fault
            // is reported once. The arguments were checked by Verify before this point, so any exception from the
            // accelerator is a device fault, whatever its type.
            lock (_acceleratorLock)
            {
                if (!_acceleratorFailed)
                {
                    try
                    {
                        _accelerator.Verify(batch, start, count, verdicts);
                        return;
                    }
                    catch (Exception e)
                    {
                        _acceleratorFailed = true;
                        _onFault?.Invoke(e);
                    }
                }
            }
        }

        _cpu.Verify(batch, start, count, verdicts);
    }

    /// <inheritdoc />
    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _accelerator.Dispose();
            _cpu.Dispose();
        }
    }
}
