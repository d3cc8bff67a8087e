using System.Reflection;
using MegaNet.Core.Ed25519;
using MegaNet.Core.Verification;
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
        Assert.Same(simd, MegaNet.Node.Hosting.NodeServiceCollectionExtensions.CheckGpu(underAuto, "auto", () => simd, NullLogger.Instance));
        Assert.True(underAuto.Disposed);

        var byName = new FailingGpu();
        var e = Assert.Throws<BackendUnavailableException>(() => MegaNet.Node.Hosting.NodeServiceCollectionExtensions.CheckGpu(
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
            BlockedOnTheGate(caller);
            disposer = new Thread(gpu.Dispose);
            disposer.Start();
            BlockedOnTheGate(disposer);
        }
        finally
        {
            Monitor.Exit(gate);
        }

        caller.Join();
        disposer.Join();
        Assert.IsType<ObjectDisposedException>(error);
    }

    /// <summary>Waits until <paramref name="thread"/> blocks (on the launch lock the test holds): a fixed sleep could
    /// let the test go on before the caller was past its entry check, and cover nothing.</summary>
    private static void BlockedOnTheGate(Thread thread)
    {
        var waited = System.Diagnostics.Stopwatch.StartNew();
        while ((thread.ThreadState & ThreadState.WaitSleepJoin) == 0)
        {
            Assert.True(waited.Elapsed < TimeSpan.FromMinutes(1), $"thread {thread.ManagedThreadId} never blocked on the launch lock ({thread.ThreadState})");
            Thread.Sleep(1);
        }
    }
}
