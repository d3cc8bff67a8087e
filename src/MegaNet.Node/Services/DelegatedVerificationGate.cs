using System.Collections.Concurrent;
using MegaNet.Core.Verification;

namespace MegaNet.Node.Services;

/// <summary>
/// Delegated verification (<c>VerifyBatch</c>): the verifier it runs on, and how many calls may verify at once, half
/// the cores (at least one). Delegated verification is free to ask for and costly to answer (an all-invalid request
/// of 65,536 signatures is about 6 s of CPU), so calls beyond this are refused with RESOURCE_EXHAUSTED and a retry
/// hint instead of queueing behind each other and starving admission. On the CPU each call verifies on one thread, so
/// the slots bound the cores it takes: on the node's verifier every call fanned out over all of its threads (all the
/// cores but one), and half the cores' worth of calls could take every core. The calls verify on the gate's own
/// threads (<see cref="RunAsync{T}"/>), one per slot, not on thread-pool threads: seconds of CPU on one of the pool's
/// few threads (two on a 2-core node) left store reads, admission and Kestrel waiting for the pool to grow.
/// </summary>
public sealed class DelegatedVerificationGate : IDisposable
{
    private readonly SemaphoreSlim _slots;
    private readonly bool _ownsVerifier;
    private readonly SlotScheduler _scheduler;

    /// <summary>Creates a gate over <paramref name="verifier"/> with <paramref name="slots"/> slots (default: half the
    /// cores, at least one); with <paramref name="ownsVerifier"/> disposing the gate disposes the verifier.</summary>
    public DelegatedVerificationGate(IBatchVerifier verifier, bool ownsVerifier, int? slots = null)
    {
        Verifier = verifier ?? throw new ArgumentNullException(nameof(verifier));
        _ownsVerifier = ownsVerifier;
        Capacity = slots ?? Math.Max(1, Environment.ProcessorCount / 2);
        ArgumentOutOfRangeException.ThrowIfLessThan(Capacity, 1, nameof(slots));
        _slots = new SemaphoreSlim(Capacity, Capacity);
        _scheduler = new SlotScheduler(Capacity);
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

    /// <summary>Runs <paramref name="work"/> on one of the gate's threads (call it while holding a slot, so one is
    /// free) and completes with its result; cancelled without running if <paramref name="cancellationToken"/> fires
    /// first, and cancelled if <paramref name="work"/> throws <see cref="OperationCanceledException"/> for that token.</summary>
    public Task<T> RunAsync<T>(Func<T> work, CancellationToken cancellationToken) =>
        Task.Factory.StartNew(work, cancellationToken, TaskCreationOptions.DenyChildAttach, _scheduler);

    /// <inheritdoc />
    public void Dispose()
    {
        _slots.Dispose();
        _scheduler.Dispose();
        if (_ownsVerifier)
        {
            Verifier.Dispose();
        }
    }

    /// <summary>Runs tasks on up to <c>threads</c> dedicated background threads, each started the first time it is
    /// needed (most nodes never answer VerifyBatch) and kept after, so a call costs no thread creation.</summary>
    private sealed class SlotScheduler(int threads) : TaskScheduler, IDisposable
    {
        private readonly BlockingCollection<Task> _queue = [];
        private int _started;

        public override int MaximumConcurrencyLevel => threads;

        protected override void QueueTask(Task task)
        {
            _queue.Add(task);
            // Each caller holds a slot, so queued tasks never outnumber the slots: a thread per task until every slot
            // has one means none waits behind another call. (The increment may overshoot; the check keeps the bound.)
            if (Volatile.Read(ref _started) < threads && Interlocked.Increment(ref _started) <= threads)
            {
                new Thread(Run) { IsBackground = true, Name = "meganet-verify-batch" }.Start();
            }
        }

        // Never inline: the caller is a thread-pool thread, which is what this scheduler keeps the work off.
        protected override bool TryExecuteTaskInline(Task task, bool taskWasPreviouslyQueued) => false;

        protected override IEnumerable<Task> GetScheduledTasks() => _queue.ToArray();

        private void Run()
        {
            foreach (Task task in _queue.GetConsumingEnumerable())
            {
                TryExecuteTask(task);
            }
        }

        public void Dispose() => _queue.CompleteAdding();
    }
}
