using System.Diagnostics.Metrics;
using System.Reflection;
using MegaNet.Core.Diagnostics;
using MegaNet.Core.Ed25519;
using MegaNet.Core.Verification;
using MegaNet.Node.Verification;
using MegaNet.Verify.Gpu;
using Microsoft.Extensions.Logging.Abstractions;

namespace MegaNet.Verify.Tests;

/// <summary>The GPU backend's life around its work: a GPU that fails its start-up check by throwing is handled like one
/// that gives wrong verdicts, and a caller queued behind <c>Dispose</c> gets <see cref="ObjectDisposedException"/>
/// instead of launching on freed buffers (ILGPU's bounds assertion then ended the process).</summary>
public sealed class GpuLifecycleTests
{
    /// <summary>A GPU whose every launch fails, as one out of resources would.</summary>
    private sealed class FailingGpu : BatchVerifierBase
    {
        public bool Disposed { get; private set; }

        public override string Name => GpuBatchVerifier.DeviceBackendName;

        public override string Description => "a GPU whose launches fail";

        protected override void VerifyCore(SignatureBatch batch, int start, int count, Span<bool> verdicts) =>
            throw new InvalidOperationException("CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES");

        protected override void Dispose(bool disposing) => Disposed = true;
    }

    [Fact]
    public void A_gpu_whose_start_up_check_throws_is_replaced_under_auto_and_refused_by_name()
    {
        var underAuto = new FailingGpu();
        IBatchVerifier simd = Backends.Get("simd");
        Assert.Same(simd, MegaNet.Node.Verification.VerifierStartup.CheckGpu(underAuto, "auto", () => simd, NullLogger.Instance));
        Assert.True(underAuto.Disposed);

        var byName = new FailingGpu();
        var e = Assert.Throws<BackendUnavailableException>(() => MegaNet.Node.Verification.VerifierStartup.CheckGpu(
            byName, "gpu", () => throw new InvalidOperationException("no fallback when asked by name"), NullLogger.Instance));
        Assert.Contains("failed its start-up check", e.Message, StringComparison.Ordinal);
        Assert.Contains("CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES", e.Message, StringComparison.Ordinal);
        Assert.Contains("--backend simd", e.Message, StringComparison.Ordinal);
        Assert.True(byName.Disposed);
    }

    [Fact]
    public void A_caller_waiting_while_the_verifier_is_disposed_gets_ObjectDisposedException()
    {
        var gpu = new GpuBatchVerifier(GpuDeviceKind.CpuAccelerator, new VerifierOptions { GpuMaxBatch = 64 });
        using var batch = new SignatureBatch(100);
        var generator = new SignatureCaseGenerator(31);
        for (int i = 0; i < 100; i++)
        {
            SignatureCase c = generator.NextMixed(invalidShare: 0.3);
            batch.Add(c.PublicKey, c.Signature, c.Message);
        }

        gpu.Verify(batch); // its buffers exist now

        // Hold the launch lock, so a caller past the entry check and Dispose (past its flag) both wait for it.
        object gate = typeof(GpuBatchVerifier).GetField("_gate", BindingFlags.NonPublic | BindingFlags.Instance)!.GetValue(gpu)!;
        Exception? error = null;
        Thread caller;
        Thread disposer;
        Monitor.Enter(gate);
        try
        {
            caller = new Thread(() => error = Record.Exception(() => gpu.Verify(batch)));
            caller.Start();
            BlockedThread.WaitUntilBlocked(caller, "the launch lock");
            disposer = new Thread(gpu.Dispose);
            disposer.Start();
            BlockedThread.WaitUntilBlocked(disposer, "the launch lock");
        }
        finally
        {
            Monitor.Exit(gate);
        }

        caller.Join();
        disposer.Join();
        Assert.IsType<ObjectDisposedException>(error);
    }

    /// <summary>The GPU kernels on ILGPU's CPU accelerator for small batches, under the name <c>gpu</c> (so a node's
    /// start-up check runs on it); the start-up check's large batch, 16,385 items that would take the CPU accelerator
    /// half a minute, goes to SIMD instead.</summary>
    private sealed class SmallBatchesOnKernels(GpuBatchVerifier kernels, IBatchVerifier large) : BatchVerifierBase
    {
        public override string Name => GpuBatchVerifier.DeviceBackendName;

        public override string Description => kernels.Description;

        protected override void VerifyCore(SignatureBatch batch, int start, int count, Span<bool> verdicts) =>
            (count <= VerifierSelfCheck.StartupItems ? kernels : large).Verify(batch, start, count, verdicts);
    }

    [Fact]
    public void The_start_up_check_is_not_counted_in_the_gpu_or_verification_metrics()
    {
        using var kernels = new GpuBatchVerifier(GpuDeviceKind.CpuAccelerator, new VerifierOptions());
        using var gpu = new SmallBatchesOnKernels(kernels, Backends.Get("simd"));
        // The meter is process-wide and other tests verify on other threads at the same time: only what this thread
        // records counts (the GPU backend records its launches on the calling thread).
        int thread = Environment.CurrentManagedThreadId;
        var recorded = new List<string>();
        using var listener = new MeterListener
        {
            InstrumentPublished = (instrument, l) =>
            {
                if (instrument.Meter.Name == MegaNetMetrics.MeterName && (instrument.Name.StartsWith("meganet.gpu.", StringComparison.Ordinal)
                    || instrument.Name.StartsWith("meganet.verify.", StringComparison.Ordinal)))
                {
                    l.EnableMeasurementEvents(instrument);
                }
            },
        };
        void Record(Instrument instrument)
        {
            if (Environment.CurrentManagedThreadId == thread)
            {
                lock (recorded)
                {
                    recorded.Add(instrument.Name);
                }
            }
        }

        listener.SetMeasurementEventCallback<double>((instrument, _, _, _) => Record(instrument));
        listener.SetMeasurementEventCallback<long>((instrument, _, _, _) => Record(instrument));
        listener.SetMeasurementEventCallback<int>((instrument, _, _, _) => Record(instrument));
        listener.Start();

        Assert.Same(gpu, MegaNet.Node.Verification.VerifierStartup.CheckGpu(gpu, "gpu", () => throw new InvalidOperationException("the check passes"), NullLogger.Instance));
        Assert.Empty(recorded);
        Assert.False(MegaNetMetrics.GpuTimingsSuspended); // the check's scope ended with it

        // The same backend's work afterwards is counted: one launch, its host, copy and kernel times.
        (SignatureCase[] cases, bool[] expected) = Backends.Mixed(3, 16);
        using SignatureBatch batch = Backends.ToBatch(cases);
        Assert.Equal(expected, gpu.Verify(batch));
        Assert.Equal(["meganet.gpu.host_time", "meganet.gpu.kernel_time", "meganet.gpu.transfer_time"], recorded.Order(StringComparer.Ordinal));
    }

    /// <summary>Refuses to start the <paramref name="failOn"/>th parallel loop given to it and runs the others, each
    /// task on a thread of its own: with one host thread, the host's share of each chunk is one loop, so the fault
    /// comes while the chunk before it is launched and not yet read back. A loop is told by its task's state
    /// (<c>Parallel.For</c>'s replica), which its every task shares.</summary>
    private sealed class FailingScheduler(int failOn) : TaskScheduler
    {
        private readonly HashSet<object> _loops = new(ReferenceEqualityComparer.Instance);

        protected override void QueueTask(Task task)
        {
            Admit(task);
            new Thread(() => TryExecuteTask(task)) { IsBackground = true }.Start();
        }

        protected override bool TryExecuteTaskInline(Task task, bool taskWasPreviouslyQueued)
        {
            Admit(task);
            return TryExecuteTask(task);
        }

        private void Admit(Task task)
        {
            lock (_loops)
            {
                if (_loops.Add(task.AsyncState ?? task) && _loops.Count == failOn)
                {
                    throw new InvalidOperationException("injected host fault");
                }
            }
        }

        protected override IEnumerable<Task> GetScheduledTasks() => [];
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_fault_in_a_later_chunk_while_an_earlier_one_is_in_flight_leaves_the_verifier_usable(bool hashOnHost)
    {
        // 200 items in chunks of 64: the host's share of the second chunk fails after the first was launched.
        (SignatureCase[] cases, bool[] expected) = Backends.Mixed(7, 200);
        using SignatureBatch batch = Backends.ToBatch(cases);
        using var gpu = new GpuBatchVerifier(GpuDeviceKind.CpuAccelerator, new VerifierOptions { GpuMaxBatch = 64, Threads = 1, GpuHashOnHost = hashOnHost });
        gpu.HostParallelism.TaskScheduler = new FailingScheduler(failOn: 2);
        Exception fault = Assert.ThrowsAny<Exception>(() => gpu.Verify(batch));
        Assert.Contains("injected host fault", fault.ToString(), StringComparison.Ordinal);

        // The first chunk, left in flight, is not read back into the next call: a batch smaller than it (its verdicts
        // would not fit) and the whole batch again give their own verdicts.
        gpu.HostParallelism.TaskScheduler = TaskScheduler.Default;
        using SignatureBatch small = Backends.ToBatch(cases.Skip(64).Take(16));
        Assert.Equal(expected.Skip(64).Take(16), gpu.Verify(small));
        Assert.Equal(expected, gpu.Verify(batch));
    }
}
