using MegaNet.Core.Ed25519;
using MegaNet.Core.Verification;
using MegaNet.Verify.Gpu;
using MegaNet.Verify.Simd;
using Microsoft.Extensions.Logging.Abstractions;

namespace MegaNet.Verify.Tests;

public sealed class RoutingTests
{
    private sealed class Recording(string name, bool fault = false) : BatchVerifierBase
    {
        public int Calls { get; private set; }

        public override string Name => name;

        public override string Description => name;

        protected override void VerifyCore(SignatureBatch batch, int start, int count, Span<bool> verdicts)
        {
            Calls++;
            if (fault)
            {
                // A device fault can leave garbage behind: the router must not trust any of it.
                verdicts.Fill(true);
                throw new InvalidOperationException("device lost");
            }

            new ReferenceBatchVerifier().Verify(batch, start, count, verdicts);
        }
    }

    [Fact]
    public void Large_batches_go_to_the_accelerator_and_small_ones_to_the_cpu()
    {
        var gpu = new Recording("gpu");
        var cpu = new Recording("simd");
        using var router = new RoutingBatchVerifier(gpu, cpu, threshold: 8);
        (SignatureCase[] cases, bool[] expected) = Backends.Mixed(11, 9);
        using SignatureBatch batch = Backends.ToBatch(cases);

        Assert.Equal(expected, router.Verify(batch));
        Assert.Equal((1, 0), (gpu.Calls, cpu.Calls));
        bool[] few = new bool[3];
        router.Verify(batch, 0, 3, few);
        Assert.Equal(expected[..3], few);
        Assert.Equal((1, 1), (gpu.Calls, cpu.Calls));
    }

    [Fact]
    public void The_first_accelerator_fault_is_reported_once_and_the_cpu_takes_over_with_exact_verdicts()
    {
        var gpu = new Recording("gpu", fault: true);
        var cpu = new Recording("simd");
        var faults = new List<Exception>();
        using var router = new RoutingBatchVerifier(gpu, cpu, threshold: 2, faults.Add);
        (SignatureCase[] cases, bool[] expected) = Backends.Mixed(12, 16);
        using SignatureBatch batch = Backends.ToBatch(cases);
        Assert.Equal("gpu", router.Name);

        Assert.Equal(expected, router.Verify(batch));
        Assert.Equal(expected, router.Verify(batch));
        Assert.Single(faults);
        Assert.True(router.AcceleratorFailed);
        Assert.Equal("simd", router.Name); // what a node's Status reports from now on
        Assert.Equal(1, gpu.Calls);
        Assert.Equal(2, cpu.Calls);
        Assert.Contains("faulted", router.Description);
    }

    [Fact]
    public void An_accelerator_disposed_under_a_call_is_no_device_fault()
    {
        // The node stopping while a delegated VerifyBatch still runs: the container disposes the shared GPU first. That
        // was logged as a GPU fault and the backend switched off.
        var gpu = new Recording("gpu");
        var cpu = new Recording("simd");
        var faults = new List<Exception>();
        using var router = new RoutingBatchVerifier(gpu, cpu, threshold: 2, faults.Add);
        gpu.Dispose();
        (SignatureCase[] cases, bool[] expected) = Backends.Mixed(13, 4);
        using SignatureBatch batch = Backends.ToBatch(cases);

        // The CPU answers the call; nothing is logged, and the accelerator is not switched off.
        Assert.Equal(expected, router.Verify(batch));
        Assert.Equal(1, cpu.Calls);
        Assert.Empty(faults);
        Assert.False(router.AcceleratorFailed);
    }

    /// <summary>Faults on its first batch, but only once told to, so a second caller can be made to wait meanwhile.</summary>
    private sealed class HeldFault : BatchVerifierBase
    {
        public ManualResetEventSlim Entered { get; } = new();

        public ManualResetEventSlim Release { get; } = new();

        public int Calls;

        public override string Name => "gpu";

        public override string Description => "gpu";

        protected override void VerifyCore(SignatureBatch batch, int start, int count, Span<bool> verdicts)
        {
            Interlocked.Increment(ref Calls);
            Entered.Set();
            Release.Wait();
            throw new InvalidOperationException("device lost");
        }
    }

    private static (Thread Thread, Task<bool[]> Verdicts) VerifyOnAThread(IBatchVerifier verifier, SignatureBatch batch)
    {
        var verdicts = new TaskCompletionSource<bool[]>(TaskCreationOptions.RunContinuationsAsynchronously);
        var thread = new Thread(() =>
        {
            try
            {
                verdicts.SetResult(verifier.Verify(batch));
            }
            catch (Exception e)
            {
                verdicts.SetException(e);
            }
        });
        thread.Start();
        return (thread, verdicts.Task);
    }

    [Fact]
    public async Task A_caller_waiting_for_the_accelerator_when_it_faults_goes_to_the_cpu_and_the_fault_is_reported_once()
    {
        var gpu = new HeldFault();
        int faults = 0;
        using var router = new RoutingBatchVerifier(gpu, new Recording("simd"), threshold: 2, _ => Interlocked.Increment(ref faults));
        (SignatureCase[] cases, bool[] expected) = Backends.Mixed(13, 8);
        using SignatureBatch batch = Backends.ToBatch(cases);

        // Threads of their own: the first blocks in the device, and under the whole parallel suite a pool thread for
        // it did not come within 30 s once (CI, AVX2 off).
        (Thread _, Task<bool[]> first) = VerifyOnAThread(router, batch);
        Assert.True(gpu.Entered.Wait(TimeSpan.FromSeconds(30)));
        // The second passes the flag check, then waits for the device: released only once it waits, or it could come
        // after the fault, see the flag set, and go to the CPU without the scenario.
        (Thread secondThread, Task<bool[]> second) = VerifyOnAThread(router, batch);
        BlockedThread.WaitUntilBlocked(secondThread, "the accelerator's lock");
        gpu.Release.Set();

        Assert.Equal(expected, await first);
        Assert.Equal(expected, await second);
        Assert.Equal(1, Volatile.Read(ref faults));
        Assert.Equal(1, Volatile.Read(ref gpu.Calls));
    }

    [Fact]
    public void A_gpu_that_fails_to_start_under_auto_is_replaced_by_simd_and_fails_the_start_when_named()
    {
        var registry = new BatchVerifierRegistry();
        registry.Register(new BackendDescriptor(SimdBatchVerifier.BackendName, "simd", 10, () => null, o => new SimdBatchVerifier(o)));
        registry.Register(new BackendDescriptor(GpuBatchVerifier.DeviceBackendName, "a GPU whose kernels fail to compile", 20, () => null,
            _ => throw new InvalidOperationException("kernel compilation failed")));

        using IBatchVerifier chosen = MegaNet.Node.Verification.VerifierStartup.CreateBackend(registry, "auto", new VerifierOptions(), NullLogger.Instance);
        Assert.Equal(SimdBatchVerifier.BackendName, chosen.Name);
        // Named, it fails the start as a BackendUnavailableException (one line at the command line), not the driver's
        // own exception, which `meganet node` printed with a stack trace.
        var e = Assert.Throws<BackendUnavailableException>(() =>
            MegaNet.Node.Verification.VerifierStartup.CreateBackend(registry, "gpu", new VerifierOptions(), NullLogger.Instance));
        Assert.Contains("Verifier backend 'gpu' is not available: it failed to start (InvalidOperationException: kernel compilation failed)", e.Message);
        Assert.Contains("or start with --backend simd", e.Message);
        Assert.IsType<InvalidOperationException>(e.InnerException);
    }

    [Fact]
    public void A_bad_gpu_chunk_setting_fails_only_gpu_backends_and_is_said_as_a_setting_not_a_gpu_failure()
    {
        // MEGANET_GPU_CHUNK=abc reads as -1. It was checked for every backend (`meganet verify --backend simd` failed),
        // and at a GPU's start it was called a GPU failure: "check the GPU and its driver, or start with --backend
        // simd" when named, and under auto "auto chose SIMD" before failing anyway.
        var badChunk = new VerifierOptions { GpuChunkItems = -1 };
        using (IBatchVerifier simd = Backends.Registry.Create(SimdBatchVerifier.BackendName, badChunk))
        {
            Assert.Equal(SimdBatchVerifier.BackendName, simd.Name);
        }

        var registry = new BatchVerifierRegistry();
        registry.Register(new BackendDescriptor(SimdBatchVerifier.BackendName, "simd", 10, () => null, o => new SimdBatchVerifier(o)));
        registry.Register(new BackendDescriptor(GpuBatchVerifier.DeviceBackendName, "the kernels on the CPU accelerator, under the GPU's name", 20, () => null,
            o => new GpuBatchVerifier(GpuDeviceKind.CpuAccelerator, o)));
        foreach (string requested in new[] { "gpu", "auto" })
        {
            var e = Assert.Throws<ArgumentOutOfRangeException>(() => MegaNet.Node.Verification.VerifierStartup.CreateBackend(registry, requested, badChunk, NullLogger.Instance));
            Assert.StartsWith("MEGANET_GPU_CHUNK (VerifierOptions.GpuChunkItems) must be 0", e.Message, StringComparison.Ordinal);
        }
    }

    /// <summary>Right on small batches; on batches cut into chunks, the verdicts of the second half land one item late.</summary>
    private sealed class ShiftsLargeBatches(IBatchVerifier inner) : BatchVerifierBase
    {
        public override string Name => "gpu";

        public override string Description => "gpu that misplaces verdicts of large batches";

        protected override void VerifyCore(SignatureBatch batch, int start, int count, Span<bool> verdicts)
        {
            inner.Verify(batch, start, count, verdicts);
            if (count > GpuBatchVerifier.MinSingleLaunchItems)
            {
                Span<bool> half = verdicts[(count / 2)..];
                for (int i = half.Length - 1; i > 0; i--)
                {
                    half[i] = half[i - 1];
                }
            }
        }
    }

    [Fact]
    public void A_gpu_that_misplaces_verdicts_only_in_chunked_batches_is_refused_at_start()
    {
        var e = Assert.Throws<BackendUnavailableException>(() => MegaNet.Node.Verification.VerifierStartup.CheckGpu(
            new ShiftsLargeBatches(Backends.Get("simd")), "gpu", () => throw new InvalidOperationException("no fallback when asked by name"), NullLogger.Instance));
        Assert.Contains($"of {GpuBatchVerifier.MinSingleLaunchItems + 1} start-up check items", e.Message);
    }

    /// <summary>Right on messages the device hashes; the opposite verdict on longer ones, which the GPU backend hashes on
    /// the host and marks for the challenge kernel to skip (a path only batches with such messages take).</summary>
    private sealed class WrongOnLongMessages(IBatchVerifier inner) : BatchVerifierBase
    {
        public override string Name => "gpu";

        public override string Description => "gpu that gets messages over 16 KiB wrong";

        protected override void VerifyCore(SignatureBatch batch, int start, int count, Span<bool> verdicts)
        {
            inner.Verify(batch, start, count, verdicts);
            for (int i = 0; i < count; i++)
            {
                verdicts[i] ^= batch.GetMessage(start + i).Length > GpuBatchVerifier.MaxDeviceHashedMessageBytes;
            }
        }
    }

    [Fact]
    public void A_gpu_wrong_only_on_messages_it_hashes_on_the_host_is_refused_at_start()
    {
        var e = Assert.Throws<BackendUnavailableException>(() => MegaNet.Node.Verification.VerifierStartup.CheckGpu(
            new WrongOnLongMessages(Backends.Get("simd")), "gpu", () => throw new InvalidOperationException("no fallback when asked by name"), NullLogger.Instance));
        Assert.Contains($"of {GpuBatchVerifier.MinSingleLaunchItems + 1} start-up check items", e.Message);
    }

    [Fact]
    public void The_start_up_check_s_long_messages_take_the_gpu_kernels_host_hashed_path_and_agree()
    {
        // The kernels of the check's device, on ILGPU's CPU accelerator: the long items are hashed on the host and marked
        // for the challenge kernel to skip, among short items it hashes.
        var gpu = (GpuBatchVerifier)Backends.Get(GpuBatchVerifier.CpuBackendName);
        long before = gpu.LongMessagesHashedOnHost;
        Assert.Equal(0, MegaNet.Node.Verification.VerifierSelfCheck.Mismatches(gpu, 32, batchSize: 40, longMessages: true));
        Assert.True(gpu.LongMessagesHashedOnHost - before >= 4, $"{gpu.LongMessagesHashedOnHost - before} messages hashed on the host; the check has four over 16 KiB");
    }

    /// <summary>Another backend's verdicts under the name "gpu" (or <paramref name="name"/>), until told to fail like a
    /// faulting device.</summary>
    private sealed class Switchable(IBatchVerifier inner, string name = GpuBatchVerifier.DeviceBackendName) : BatchVerifierBase
    {
        public bool Fail { get; set; }

        public int Calls { get; private set; }

        public bool Disposed { get; private set; }

        public override string Name => name;

        public override string Description => "switchable";

        protected override void VerifyCore(SignatureBatch batch, int start, int count, Span<bool> verdicts)
        {
            Calls++;
            if (Fail)
            {
                // A device fault can leave garbage behind: the router must not trust any of it.
                verdicts.Fill(true);
                throw new InvalidOperationException("device lost");
            }

            inner.Verify(batch, start, count, verdicts);
        }

        protected override void Dispose(bool disposing) => Disposed = true;
    }

    /// <summary>A clock whose timestamps move only by hand.</summary>
    private sealed class SteppedClock : TimeProvider
    {
        private long _ticks;

        public override long TimestampFrequency => TimeSpan.TicksPerSecond;

        public override long GetTimestamp() => Volatile.Read(ref _ticks);

        public void Advance(TimeSpan by) => Interlocked.Add(ref _ticks, by.Ticks);
    }

    private static (SignatureBatch Small, SignatureBatch Large, bool[] Expected) Batches(int seed)
    {
        var small = new SignatureBatch(3);
        var large = new SignatureBatch(8);
        var generator = new SignatureCaseGenerator(seed);
        for (int i = 0; i < 8; i++)
        {
            SignatureCase c = generator.NextMixed(invalidShare: 0.5);
            large.Add(c.PublicKey, c.Signature, c.Message);
            if (i < 3)
            {
                small.Add(c.PublicKey, c.Signature, c.Message);
            }
        }

        return (small, large, Backends.Get("simd").Verify(large));
    }

    [Fact]
    public async Task A_faulted_accelerator_serves_again_only_after_a_back_off_and_a_passed_check_and_every_verdict_stays_exact()
    {
        // A fault switched the GPU off until a restart: a transient one (a driver reset) cost a long-running node its
        // GPU for good.
        var gpu = new Switchable(Backends.Get("simd"));
        var cpu = new Switchable(Backends.Get("simd"), "simd");
        var clock = new SteppedClock();
        var outcomes = new System.Collections.Concurrent.ConcurrentQueue<(string? Failure, TimeSpan? Next)>();
        int faults = 0;
        using var router = new RoutingBatchVerifier(gpu, cpu, threshold: 4, _ => Interlocked.Increment(ref faults), new AcceleratorRetry
        {
            Check = () => MegaNet.Node.Verification.VerifierSelfCheck.Mismatches(gpu, 16) == 0 ? null : "wrong verdicts",
            FirstDelay = TimeSpan.FromMinutes(5),
            MaxDelay = TimeSpan.FromMinutes(20),
            Clock = clock,
            Checked = (failure, next) => outcomes.Enqueue((failure, next)),
        });
        (SignatureBatch small, SignatureBatch large, bool[] expected) = Batches(17);
        using (small)
        using (large)
        {
            Assert.Equal(expected, router.Verify(large));
            gpu.Fail = true;
            Assert.Equal(expected, router.Verify(large)); // the faulted batch, again on the CPU
            Assert.Equal((1, true, "simd"), (faults, router.AcceleratorFailed, router.Name));

            // Within the wait, and for small batches after it, nothing checks the device: the CPU verifies.
            clock.Advance(TimeSpan.FromMinutes(5) - TimeSpan.FromSeconds(1));
            Assert.Equal(expected, router.Verify(large));
            clock.Advance(TimeSpan.FromSeconds(1));
            Assert.Equal(expected[..3], router.Verify(small));
            Assert.Null(router.LastCheckForTests);
            Assert.Equal(2, gpu.Calls);

            // The first large batch after it starts the check (in the background; the batch goes to the CPU). The device
            // still fails: it stays off, and the next check waits twice as long.
            Assert.Equal(expected, router.Verify(large));
            Task first = router.LastCheckForTests!;
            await first.WaitAsync(TimeSpan.FromMinutes(1));
            Assert.Equal([("InvalidOperationException: device lost", TimeSpan.FromMinutes(10))], outcomes);
            Assert.True(router.AcceleratorFailed);
            clock.Advance(TimeSpan.FromMinutes(9));
            Assert.Equal(expected, router.Verify(large));
            Assert.Same(first, router.LastCheckForTests);

            // The device is back: the check passes, and only then does a large batch reach it again.
            gpu.Fail = false;
            clock.Advance(TimeSpan.FromMinutes(1));
            Assert.Equal(expected, router.Verify(large));
            await router.LastCheckForTests!.WaitAsync(TimeSpan.FromMinutes(1));
            Assert.Equal((null, null), outcomes.Last());
            Assert.Equal((false, "gpu"), (router.AcceleratorFailed, router.Name));
            int calls = gpu.Calls;
            Assert.Equal(expected, router.Verify(large));
            Assert.Equal(calls + 1, gpu.Calls);

            // A second fault: the wait goes on doubling, up to MaxDelay (20 minutes, not 5 again).
            gpu.Fail = true;
            Assert.Equal(expected, router.Verify(large));
            Task second = router.LastCheckForTests!;
            clock.Advance(TimeSpan.FromMinutes(20) - TimeSpan.FromSeconds(1));
            Assert.Equal(expected, router.Verify(large));
            Assert.Same(second, router.LastCheckForTests);
            clock.Advance(TimeSpan.FromSeconds(1));
            Assert.Equal(expected, router.Verify(large));
            await router.LastCheckForTests!.WaitAsync(TimeSpan.FromMinutes(1));
            Assert.NotSame(second, router.LastCheckForTests);
            Assert.Equal(("InvalidOperationException: device lost", TimeSpan.FromMinutes(20)), outcomes.Last());
            Assert.Equal(2, faults);

            // Back again, it serves MaxDelay without a fault: the next fault waits FirstDelay again, not the longest wait
            // it ever reached (a GPU that recovered and faults again days later was kept off for the longest wait).
            gpu.Fail = false;
            clock.Advance(TimeSpan.FromMinutes(20));
            Assert.Equal(expected, router.Verify(large));
            await router.LastCheckForTests!.WaitAsync(TimeSpan.FromMinutes(1));
            Assert.Equal((null, null), outcomes.Last());
            clock.Advance(TimeSpan.FromMinutes(20));
            gpu.Fail = true;
            Assert.Equal(expected, router.Verify(large));
            Task third = router.LastCheckForTests!;
            clock.Advance(TimeSpan.FromMinutes(5));
            Assert.Equal(expected, router.Verify(large));
            Assert.NotSame(third, router.LastCheckForTests);
            await router.LastCheckForTests!.WaitAsync(TimeSpan.FromMinutes(1));
            Assert.Equal(("InvalidOperationException: device lost", TimeSpan.FromMinutes(10)), outcomes.Last());
            Assert.Equal(3, faults);
        }
    }

    [Fact]
    public async Task A_gpu_cpu_node_checks_the_kernels_again_after_a_fault_for_all_its_routers()
    {
        // Through the node's composition: admission's router and delegated verification's share the device, its fault
        // and its retry. The check is the node's start-up check, on the kernels themselves (ILGPU's CPU accelerator).
        var kernels = new Switchable(Backends.Get(GpuBatchVerifier.CpuBackendName), GpuBatchVerifier.CpuBackendName);
        var clock = new SteppedClock();
        var outcomes = new System.Collections.Concurrent.ConcurrentQueue<string?>();
        using MegaNet.Node.Hosting.NodeVerifiers verifiers = MegaNet.Node.Hosting.NodeHost.Compose(kernels, new VerifierOptions { Threads = 1, GpuThreshold = 4 },
            (name, _) => new Named(name, Backends.Get("simd")), _ => { }, new AcceleratorRetry
            {
                Check = () => MegaNet.Node.Verification.VerifierStartup.SelfCheckFailure(kernels),
                Clock = clock,
                Checked = (failure, _) => outcomes.Enqueue(failure),
            });
        (SignatureBatch small, SignatureBatch large, bool[] expected) = Batches(23);
        using (small)
        using (large)
        {
            kernels.Fail = true;
            Assert.Equal(expected, verifiers.Delegated.Verify(large));
            Assert.Equal("simd", verifiers.Node.Name);
            kernels.Fail = false;
            clock.Advance(TimeSpan.FromMinutes(5));
            Assert.Equal(expected, verifiers.Node.Verify(large));
            await ((RoutingBatchVerifier)verifiers.Node).LastCheckForTests!.WaitAsync(TimeSpan.FromMinutes(2));
            Assert.Equal([null], outcomes);
            Assert.Equal(GpuBatchVerifier.CpuBackendName, verifiers.Node.Name);
            int calls = kernels.Calls;
            Assert.Equal(expected, verifiers.Delegated.Verify(large));
            Assert.Equal(calls + 1, kernels.Calls);
        }
    }

    [Fact]
    public async Task A_gpu_nodes_faults_checks_and_whether_it_serves_show_in_its_instruments()
    {
        // A GPU fault and its recovery showed only in the log: nothing an alert or a dashboard could count. Only the
        // node's composition records these (no other test class of this assembly composes a node), so the counts are
        // this test's.
        var kernels = new Switchable(Backends.Get("simd"));
        var clock = new SteppedClock();
        var counts = new System.Collections.Concurrent.ConcurrentDictionary<string, long>();
        long serving = -1;
        using var listener = new System.Diagnostics.Metrics.MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == MegaNet.Core.Diagnostics.MegaNetMetrics.MeterName && instrument.Name.StartsWith("meganet.gpu.", StringComparison.Ordinal))
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) =>
        {
            if (instrument.Name == "meganet.gpu.serving")
            {
                Volatile.Write(ref serving, value);
                return;
            }

            string key = instrument.Name + (tags.Length == 0 ? "" : $"/{tags[0].Value}");
            counts.AddOrUpdate(key, value, (_, sum) => sum + value);
        });
        listener.Start();
        long Serving()
        {
            listener.RecordObservableInstruments();
            return Volatile.Read(ref serving);
        }

        long Count(string key) => counts.GetValueOrDefault(key);

        MegaNet.Node.Hosting.NodeVerifiers verifiers = MegaNet.Node.Hosting.NodeHost.Compose(kernels, new VerifierOptions { Threads = 1, GpuThreshold = 4 },
            (name, _) => new Named(name, Backends.Get("simd")), _ => { }, new AcceleratorRetry
            {
                Check = () => kernels.Fail ? "still failing" : null,
                FirstDelay = TimeSpan.FromMinutes(5),
                MaxDelay = TimeSpan.FromMinutes(20),
                Clock = clock,
            });
        (SignatureBatch small, SignatureBatch large, bool[] expected) = Batches(29);
        using (small)
        using (large)
        {
            var router = (RoutingBatchVerifier)verifiers.Node;
            Assert.Equal(1, Serving());

            kernels.Fail = true;
            Assert.Equal(expected, verifiers.Node.Verify(large));
            Assert.Equal((1L, 0L), (Count("meganet.gpu.faults"), Serving()));

            clock.Advance(TimeSpan.FromMinutes(5));
            Assert.Equal(expected, verifiers.Node.Verify(large));
            await router.LastCheckForTests!.WaitAsync(TimeSpan.FromMinutes(1));
            Assert.Equal((1L, 0L, 0L), (Count("meganet.gpu.checks/failed"), Count("meganet.gpu.checks/passed"), Serving()));

            kernels.Fail = false;
            clock.Advance(TimeSpan.FromMinutes(10));
            Assert.Equal(expected, verifiers.Node.Verify(large));
            await router.LastCheckForTests!.WaitAsync(TimeSpan.FromMinutes(1));
            Assert.Equal((1L, 1L, 1L, 1L), (Count("meganet.gpu.faults"), Count("meganet.gpu.checks/failed"), Count("meganet.gpu.checks/passed"), Serving()));
        }

        // A node that stopped reports no GPU.
        verifiers.Dispose();
        Assert.Equal(0, Serving());
    }

    [Fact]
    public void A_sibling_router_shares_the_accelerator_and_its_fault_and_leaves_disposing_it_to_the_first()
    {
        var gpu = new Switchable(Backends.Get("simd"));
        var cpu = new Switchable(Backends.Get("simd")); // a stand-in CPU backend that counts its calls
        var siblingCpu = new Switchable(Backends.Get("simd"));
        int faults = 0;
        var router = new RoutingBatchVerifier(gpu, cpu, threshold: 4, _ => faults++);
        RoutingBatchVerifier sibling = router.WithCpu(siblingCpu);
        using var batch = new SignatureBatch(8);
        var generator = new SignatureCaseGenerator(7);
        for (int i = 0; i < 8; i++)
        {
            SignatureCase c = generator.NextMixed(invalidShare: 0.5);
            batch.Add(c.PublicKey, c.Signature, c.Message);
        }

        bool[] expected = Backends.Get("simd").Verify(batch);
        Assert.Equal(expected, sibling.Verify(batch));
        Assert.Equal((1, 0), (gpu.Calls, siblingCpu.Calls));

        // The device fails under the sibling: its batch is verified again on its own CPU backend, the fault is
        // reported once, and the first router stays off the device too.
        gpu.Fail = true;
        Assert.Equal(expected, sibling.Verify(batch));
        Assert.Equal(expected, router.Verify(batch));
        Assert.Equal((2, 1, 1, 1), (gpu.Calls, siblingCpu.Calls, cpu.Calls, faults));
        Assert.True(router.AcceleratorFailed);

        sibling.Dispose();
        Assert.True(siblingCpu.Disposed);
        Assert.False(gpu.Disposed);
        router.Dispose();
        Assert.True(gpu.Disposed);
        Assert.True(cpu.Disposed);
    }

    [Fact]
    public void A_gpu_cpu_node_routes_like_a_gpu_node_and_falls_back_to_simd_when_the_kernels_fault()
    {
        // A stand-in under the name gpu-cpu (the kernels on ILGPU's CPU accelerator are slow); the node composed
        // gpu-cpu without the router, so a fault reached the caller and delegated verification built a second one.
        var kernels = new Switchable(Backends.Get("simd"), GpuBatchVerifier.CpuBackendName);
        var faults = new List<Exception>();
        var created = new List<string>();
        using MegaNet.Node.Hosting.NodeVerifiers verifiers = MegaNet.Node.Hosting.NodeHost.Compose(kernels, new VerifierOptions { Threads = 1, GpuThreshold = 4 },
            (name, _) =>
            {
                created.Add(name);
                return new Named(name, Backends.Get("simd"));
            }, faults.Add);
        Assert.Equal(["simd", "simd"], created); // the router's CPU side and delegated verification's; no second gpu-cpu
        Assert.IsType<RoutingBatchVerifier>(verifiers.Node);
        Assert.IsType<RoutingBatchVerifier>(verifiers.Delegated);
        Assert.Equal(GpuBatchVerifier.CpuBackendName, verifiers.Node.Name);

        using var small = new SignatureBatch(3);
        using var large = new SignatureBatch(8);
        var generator = new SignatureCaseGenerator(11);
        for (int i = 0; i < 8; i++)
        {
            SignatureCase c = generator.NextMixed(invalidShare: 0.5);
            large.Add(c.PublicKey, c.Signature, c.Message);
            if (i < 3)
            {
                small.Add(c.PublicKey, c.Signature, c.Message);
            }
        }

        bool[] expected = Backends.Get("simd").Verify(large);
        Assert.Equal(expected[..3], verifiers.Node.Verify(small));
        Assert.Equal(expected, verifiers.Delegated.Verify(large));
        Assert.Equal(1, kernels.Calls); // only the large batch reached the kernels

        kernels.Fail = true;
        Assert.Equal(expected, verifiers.Node.Verify(large));
        Assert.Equal(expected, verifiers.Delegated.Verify(large));
        Assert.Single(faults);
        Assert.Equal("simd", verifiers.Node.Name);
    }

    [Fact]
    public void A_call_reports_the_backends_whose_verdicts_it_returns()
    {
        // VerifyBatch answers with these names: the router's own name, read before the call, said "gpu" for a call
        // under the threshold that ran on SIMD, and for one the GPU faulted on.
        var gpu = new Switchable(Backends.Get("simd"));
        using var router = new RoutingBatchVerifier(gpu, new Named("simd", Backends.Get("simd")), threshold: 4);
        (SignatureCase[] cases, bool[] expected) = Backends.Mixed(13, 8);
        using SignatureBatch batch = Backends.ToBatch(cases);
        bool[] verdicts = new bool[8];

        Assert.Equal(RoutedTo.Accelerator, router.VerifyReporting(batch, 0, 8, verdicts));
        Assert.Equal(expected, verdicts);
        Assert.Equal(RoutedTo.Cpu, router.VerifyReporting(batch, 0, 3, verdicts));
        Assert.Equal(expected[..3], verdicts[..3]);
        Assert.Equal(RoutedTo.None, router.VerifyReporting(batch, 0, 0, verdicts));

        // The faulted attempt gave no verdicts: SIMD's alone are returned.
        gpu.Fail = true;
        Assert.Equal(RoutedTo.Cpu, router.VerifyReporting(batch, 0, 8, verdicts));
        Assert.Equal(expected, verdicts);

        Assert.Equal(["gpu", "simd", "gpu+simd", "simd"],
            new[] { RoutedTo.Accelerator, RoutedTo.Cpu, RoutedTo.Accelerator | RoutedTo.Cpu, RoutedTo.None }.Select(router.NamesOf));
    }

    [Fact]
    public void Backends_with_different_rules_cannot_be_routed_together()
    {
        Assert.Throws<ArgumentException>(() => new RoutingBatchVerifier(new LibsodiumBatchVerifier(), new ReferenceBatchVerifier(), 4));
    }

    /// <summary>Reports a backend's name over another backend's verdicts (a stand-in for a GPU on a machine without one).</summary>
    private sealed class Named(string name, IBatchVerifier inner) : BatchVerifierBase
    {
        public bool Disposed { get; private set; }

        public override string Name => name;

        public override string Description => $"{inner.Name} posing as {name}";

        protected override void VerifyCore(SignatureBatch batch, int start, int count, Span<bool> verdicts) => inner.Verify(batch, start, count, verdicts);

        protected override void Dispose(bool disposing) => Disposed = true;
    }

    [Fact]
    public void A_gpu_that_disagrees_with_the_reference_at_start_is_refused_or_replaced_under_auto()
    {
        // libsodium's cofactorless rule differs from ours on torsion residues, which the start-up check contains.
        using var libsodium = new LibsodiumBatchVerifier();
        var wrong = new Named("gpu", libsodium);
        var e = Assert.Throws<BackendUnavailableException>(() =>
            MegaNet.Node.Verification.VerifierStartup.CheckGpu(wrong, "gpu", () => throw new InvalidOperationException("no fallback when asked by name"), NullLogger.Instance));
        Assert.Contains("differ from the reference rule", e.Message);
        Assert.Contains("--backend simd", e.Message);
        Assert.True(wrong.Disposed);

        var wrongUnderAuto = new Named("gpu", libsodium);
        var simd = Backends.Get("simd");
        IBatchVerifier chosen = MegaNet.Node.Verification.VerifierStartup.CheckGpu(wrongUnderAuto, "auto", () => simd, NullLogger.Instance);
        Assert.Same(simd, chosen);

        // A GPU that agrees is kept as it is.
        var right = new Named("gpu", Backends.Get("simd"));
        Assert.Same(right, MegaNet.Node.Verification.VerifierStartup.CheckGpu(right, "gpu", () => throw new InvalidOperationException("kept"), NullLogger.Instance));
        Assert.False(right.Disposed);
    }
}
