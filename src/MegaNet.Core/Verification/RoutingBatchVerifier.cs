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
    private readonly AcceleratorState _state;
    private readonly bool _ownsAccelerator;

    // What VerifyCore ran on, for VerifyReporting: a call runs on its caller's thread from start to end.
    [ThreadStatic]
    private static RoutedTo t_ran;

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
        _state = new AcceleratorState();
        _ownsAccelerator = true;
    }

    private RoutingBatchVerifier(RoutingBatchVerifier sibling, IBatchVerifier cpu, IBatchVerifier accelerator)
    {
        ArgumentNullException.ThrowIfNull(cpu);
        ArgumentNullException.ThrowIfNull(accelerator);
        if (sibling.Rule != cpu.Rule || sibling.Rule != accelerator.Rule)
        {
            throw new ArgumentException($"'{accelerator.Name}' and '{cpu.Name}' apply different rules; a router must never change a verdict.");
        }

        _accelerator = accelerator;
        _cpu = cpu;
        _threshold = sibling._threshold;
        _onFault = sibling._onFault;
        _state = sibling._state;
        _ownsAccelerator = false;
    }

    /// <summary>A router over this one's accelerator, sharing its one-batch-at-a-time lock and its fault state (a fault
    /// seen by either sends both to the CPU, reported once), with another CPU backend, which the new router owns; the
    /// accelerator stays this router's to dispose. For work that must not take the node's CPU threads, such as
    /// delegated verification on one thread.</summary>
    public RoutingBatchVerifier WithCpu(IBatchVerifier cpu) => new(this, cpu, _accelerator);

    /// <summary>As <see cref="WithCpu(IBatchVerifier)"/>, reaching the accelerator through <paramref name="acceleratorView"/>:
    /// a decorator over this router's accelerator (one that records its batches apart, say), which the new router
    /// does not dispose. It must verify on this router's accelerator: the lock and the fault state shared are that
    /// device's.</summary>
    public RoutingBatchVerifier WithCpu(IBatchVerifier cpu, IBatchVerifier acceleratorView) => new(this, cpu, acceleratorView);

    /// <summary>True once the accelerator faulted and everything runs on the CPU backend.</summary>
    public bool AcceleratorFailed => _state.Failed;

    /// <summary>The accelerator's name, or the CPU backend's once the accelerator faulted: what verifies now (a node's
    /// <c>Status</c> reports it).</summary>
    public override string Name => _state.Failed ? _cpu.Name : _accelerator.Name;

    /// <inheritdoc />
    public override string Description => _state.Failed
        ? $"{_cpu.Description} (the {_accelerator.Name} backend faulted; running on {_cpu.Name})"
        : $"{_accelerator.Description} for batches of {_threshold} or more; {_cpu.Name} below";

    /// <inheritdoc />
    public override VerificationRule Rule => _cpu.Rule;

    /// <summary>As <see cref="BatchVerifierBase.Verify(SignatureBatch, int, int, Span{bool})"/>, and says which backends'
    /// verdicts <paramref name="verdicts"/> holds: the accelerator's, the CPU's (under the threshold, after a fault, and
    /// for a batch the accelerator failed on), or both (never a faulted attempt's).</summary>
    public RoutedTo VerifyReporting(SignatureBatch batch, int start, int count, Span<bool> verdicts)
    {
        t_ran = RoutedTo.None;
        Verify(batch, start, count, verdicts);
        return t_ran;
    }

    /// <summary>The names of the backends in <paramref name="ran"/>: <c>gpu</c>, <c>simd</c> or <c>gpu+simd</c>; for
    /// <see cref="RoutedTo.None"/> (nothing verified), <see cref="Name"/>.</summary>
    public string NamesOf(RoutedTo ran) => ran switch
    {
        RoutedTo.Accelerator => _accelerator.Name,
        RoutedTo.Cpu => _cpu.Name,
        RoutedTo.Accelerator | RoutedTo.Cpu => $"{_accelerator.Name}+{_cpu.Name}",
        _ => Name,
    };

    /// <inheritdoc />
    protected override void VerifyCore(SignatureBatch batch, int start, int count, Span<bool> verdicts)
    {
        if (count >= _threshold && !_state.Failed)
        {
            // One batch at a time on the accelerator (it reuses its buffers and streams), and the fault flag is read
            // again inside: a caller that waited here while another's batch faulted goes to the CPU, and the fault
            // is reported once. The arguments were checked by Verify before this point, so any exception from the
            // accelerator but its being disposed is a device fault, whatever its type.
            lock (_state.Gate)
            {
                if (!_state.Failed)
                {
                    try
                    {
                        _accelerator.Verify(batch, start, count, verdicts);
                        t_ran |= RoutedTo.Accelerator;
                        return;
                    }
                    catch (ObjectDisposedException)
                    {
                        // The node stopping under a call still running (the accelerator is released first): no device
                        // fault to log or to switch the accelerator off for; the CPU answers this one.
                    }
                    catch (Exception e)
                    {
                        _state.Failed = true;
                        _onFault?.Invoke(e);
                    }
                }
            }
        }

        _cpu.Verify(batch, start, count, verdicts);
        t_ran |= RoutedTo.Cpu;
    }

    /// <inheritdoc />
    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            if (_ownsAccelerator)
            {
                _accelerator.Dispose();
            }

            _cpu.Dispose();
        }
    }

    /// <summary>What routers over one accelerator share.</summary>
    private sealed class AcceleratorState
    {
        public Lock Gate { get; } = new();

        public volatile bool Failed;
    }
}

/// <summary>Which side of a <see cref="RoutingBatchVerifier"/> gave a call's verdicts.</summary>
[Flags]
public enum RoutedTo
{
    /// <summary>Nothing was verified.</summary>
    None = 0,

    /// <summary>The accelerator (the GPU).</summary>
    Accelerator = 1,

    /// <summary>The CPU backend.</summary>
    Cpu = 2,
}
