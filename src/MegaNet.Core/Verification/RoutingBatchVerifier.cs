namespace MegaNet.Core.Verification;

/// <summary>
/// Sends batches of at least <c>threshold</c> items to an accelerator backend and smaller ones to a CPU backend.
/// When the accelerator throws, the fault is reported once through <c>onFault</c>, that batch is verified again on
/// the CPU, and every later batch goes to the CPU: a device fault never becomes a wrong verdict. Without an
/// <see cref="AcceleratorRetry"/> that lasts until the router is disposed; with one, the accelerator is checked again
/// after a back-off and takes large batches again only once it passes (<see cref="AcceleratorRetry"/>).
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

    /// <summary>Creates the router; it owns and disposes both backends. A fault keeps the accelerator off for good.</summary>
    public RoutingBatchVerifier(IBatchVerifier accelerator, IBatchVerifier cpu, int threshold, Action<Exception>? onFault = null)
        : this(accelerator, cpu, threshold, onFault, retry: null)
    {
    }

    /// <summary>Creates the router; it owns and disposes both backends. After a fault, <paramref name="retry"/> (if
    /// any) says when and how the accelerator is checked before it takes batches again.</summary>
    public RoutingBatchVerifier(IBatchVerifier accelerator, IBatchVerifier cpu, int threshold, Action<Exception>? onFault, AcceleratorRetry? retry)
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
        _state = new AcceleratorState(retry);
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

    /// <summary>True while the accelerator is off after a fault and everything runs on the CPU backend.</summary>
    public bool AcceleratorFailed => _state.Failed;

    /// <summary>Tests: the accelerator's check started last (null before the first), to wait for its outcome.</summary>
    internal Task? LastCheckForTests => _state.LastCheck;

    /// <summary>Faults of the accelerator so far (each sent its batch to the CPU and the accelerator off).</summary>
    public int AcceleratorFaults => Volatile.Read(ref _state.Faults);

    /// <summary>The accelerator's name, or the CPU backend's once the accelerator faulted: what verifies now (a node's
    /// <c>Status</c> reports it).</summary>
    public override string Name => _state.Failed ? _cpu.Name : _accelerator.Name;

    /// <inheritdoc />
    public override string Description => _state.Failed
        ? $"{_cpu.Description} (the {_accelerator.Name} backend faulted; running on {_cpu.Name}{(_state.Retry is null ? "" : $" until {_accelerator.Name} passes its check again")})"
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
        if (count >= _threshold && _state.Failed)
        {
            // Only a batch the accelerator would have taken looks at the clock: none is slowed by the retry, and an
            // accelerator no batch would reach is not checked.
            _state.CheckIfDue();
        }
        else if (count >= _threshold)
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
                        _state.Faulted();
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
                // A check under way ends first: the accelerator is not released under it.
                _state.StopChecks();
                _accelerator.Dispose();
            }

            _cpu.Dispose();
        }
    }

    /// <summary>What routers over one accelerator share: the lock, the fault state and its retry.</summary>
    private sealed class AcceleratorState(AcceleratorRetry? retry)
    {
        public Lock Gate { get; } = new();

        public volatile bool Failed;

        public int Faults;

        public AcceleratorRetry? Retry => retry;

        public Task? LastCheck
        {
            get
            {
                lock (Gate)
                {
                    return _check;
                }
            }
        }

        // When (the retry's clock's timestamp) the next check is due, and the back-off that set it; under Gate.
        private long _checkAt = long.MaxValue;
        private TimeSpan _delay;
        private long? _servingSince; // when (the retry's clock) the last passed check let it serve again
        private Task? _check;
        private bool _stopped;

        /// <summary>Under <see cref="Gate"/>: the accelerator faulted; it is off until a check passes (or for good).</summary>
        public void Faulted()
        {
            Failed = true;
            Interlocked.Increment(ref Faults);
            // A fault after it served MaxDelay or longer since its last passed check waits FirstDelay again: a GPU that
            // recovered and faults again days later is not kept off for the longest wait.
            if (retry is not null && _servingSince is { } since
                && retry.Clock.GetTimestamp() - since >= (long)(retry.MaxDelay.TotalSeconds * retry.Clock.TimestampFrequency))
            {
                _delay = TimeSpan.Zero;
            }

            ScheduleNext();
        }

        /// <summary>Starts the check, on a thread of its own, if one is due and none runs; cheap when none is.</summary>
        public void CheckIfDue()
        {
            if (retry is null || retry.Clock.GetTimestamp() < Volatile.Read(ref _checkAt))
            {
                return;
            }

            lock (Gate)
            {
                if (!Failed || _stopped || _check is { IsCompleted: false } || retry.Clock.GetTimestamp() < _checkAt)
                {
                    return;
                }

                _checkAt = long.MaxValue;
                _check = Task.Factory.StartNew(RunCheck, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
            }
        }

        /// <summary>No check starts from now on, and one under way is waited for.</summary>
        public void StopChecks()
        {
            Task? running;
            lock (Gate)
            {
                _stopped = true;
                running = _check;
            }

            // Its outcome is reported by the check itself, which never throws.
            running?.ContinueWith(_ => { }, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default).Wait();
        }

        private void RunCheck()
        {
            // Under the lock: no batch may reach the accelerator while it is checked (none does while it is off, and a
            // caller that waits here sees the outcome).
            lock (Gate)
            {
                if (_stopped)
                {
                    return;
                }

                string? failure;
                try
                {
                    failure = retry!.Check();
                }
                catch (Exception e)
                {
                    failure = $"{e.GetType().Name}: {e.Message}";
                }

                if (failure is null)
                {
                    // The same evidence that let it serve at start: its verdicts agree with the reference's.
                    Failed = false;
                    _servingSince = retry!.Clock.GetTimestamp();
                }
                else
                {
                    ScheduleNext();
                }

                Report(failure);
            }
        }

        // The back-off doubles at every fault and every failed check, from FirstDelay up to MaxDelay.
        private void ScheduleNext()
        {
            if (retry is null)
            {
                return;
            }

            long now = retry.Clock.GetTimestamp();
            _delay = _delay == TimeSpan.Zero ? retry.FirstDelay : TimeSpan.FromTicks(Math.Min(_delay.Ticks * 2, retry.MaxDelay.Ticks));
            Volatile.Write(ref _checkAt, now + (long)(_delay.TotalSeconds * retry.Clock.TimestampFrequency));
        }

        private void Report(string? failure)
        {
            try
            {
                retry!.Checked?.Invoke(failure, failure is null ? null : _delay);
            }
            catch (Exception)
            {
                // A listener's failure must not end the check's thread; the state above is what counts.
            }
        }
    }
}

/// <summary>
/// How a <see cref="RoutingBatchVerifier"/> tries its accelerator again after a fault (a driver reset, memory another
/// process held for a while): <see cref="FirstDelay"/> after the fault, <see cref="Check"/> runs on a thread of its
/// own while batches go to the CPU, and only if it passes does the accelerator take large batches again. Each fault
/// and each failed check doubles the wait, up to <see cref="MaxDelay"/>; a fault after the accelerator served
/// <see cref="MaxDelay"/> or longer since its last passed check waits <see cref="FirstDelay"/> again. A batch the accelerator faulted on is always
/// verified again on the CPU, so no verdict depends on the retry.
/// </summary>
public sealed record AcceleratorRetry
{
    /// <summary>Checks the accelerator (no batch runs on it meanwhile): null when it may serve again, else why not.
    /// An exception counts as a failed check.</summary>
    public required Func<string?> Check { get; init; }

    /// <summary>Wait after the first fault before the first check. Default 5 minutes.</summary>
    public TimeSpan FirstDelay { get; init; } = TimeSpan.FromMinutes(5);

    /// <summary>Longest wait between checks. Default 1 hour.</summary>
    public TimeSpan MaxDelay { get; init; } = TimeSpan.FromHours(1);

    /// <summary>Clock of the waits (tests move one by hand). Default <see cref="TimeProvider.System"/>.</summary>
    public TimeProvider Clock { get; init; } = TimeProvider.System;

    /// <summary>Told each check's outcome, on the check's thread: null when the accelerator serves again, else the
    /// reason and the wait before the next check.</summary>
    public Action<string?, TimeSpan?>? Checked { get; init; }
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
