using System.Buffers;
using System.Buffers.Binary;
using System.Diagnostics;
using System.Reflection;
using ILGPU;
using ILGPU.Backends;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;
using ILGPU.Runtime.OpenCL;
using MegaNet.Core.Diagnostics;
using MegaNet.Core.Ed25519;
using MegaNet.Core.Verification;
using MegaNet.Verify.Gpu.Kernels;
using MegaNet.Verify.Simd.Curve;

namespace MegaNet.Verify.Gpu;

/// <summary>Which ILGPU accelerator a GPU backend runs on.</summary>
public enum GpuDeviceKind
{
    /// <summary>A real GPU: CUDA when present, else OpenCL. Backend name <c>gpu</c>.</summary>
    Device,

    /// <summary>ILGPU's CPU accelerator running the same kernels; for tests only. Backend name <c>gpu-cpu</c>.</summary>
    CpuAccelerator,
}

/// <summary>
/// Backends <c>gpu</c> and <c>gpu-cpu</c>: the MegaNet rule as ILGPU kernels, one thread per signature. A first kernel
/// (<see cref="ChallengeKernel"/>) checks S &lt; L and computes k = SHA-512(R ‖ A ‖ M) mod L (or the host does, on up
/// to <see cref="VerifierOptions.Threads"/> threads, with <see cref="VerifierOptions.GpuHashOnHost"/>, and k of any
/// message over <see cref="MaxDeviceHashedMessageBytes"/> in either mode); the second decodes A and R strictly, refuses
/// small-order points and checks [8]([S]B − R − [k]A) = 𝒪. The kernels are compiled once at construction.
/// </summary>
/// <remarks>
/// Two launch slots, each with its own stream, page-locked host buffers and device buffers, allocated on first use,
/// grown on demand up to <see cref="VerifierOptions.GpuMaxBatch"/> items and reused (no allocation per batch). Batches
/// up to <see cref="SingleLaunchItems"/> items are one launch; larger ones are cut into chunks (<see cref="ChunkItems"/>)
/// of at least that many, which alternate between the slots, so the host prepares chunk j + 1 while the device copies in, verifies and copies out chunk j. Verdicts come
/// back as one byte per item. One batch at a time per instance (calls from several threads queue on the instance).
/// The host's share of a chunk (copying it into the page-locked buffers, and with
/// <see cref="VerifierOptions.GpuHashOnHost"/> the SHA-512 of every item) runs on at most
/// <see cref="VerifierOptions.Threads"/> threads, the calling one included, as the SIMD backend bounds its own: on a
/// node the thread pool also serves gRPC and Kestrel, and an unbounded parallel loop took all of it.
/// </remarks>
public sealed class GpuBatchVerifier : BatchVerifierBase
{
    /// <summary>Registry name of the device backend.</summary>
    public const string DeviceBackendName = "gpu";

    /// <summary>Registry name of the CPU-accelerator backend.</summary>
    public const string CpuBackendName = "gpu-cpu";

    private static readonly Lazy<string?> DeviceProbe = new(ProbeDevice);

    private readonly GpuDeviceKind _kind;
    private readonly Context _context;
    private readonly Accelerator _accelerator;
    private readonly Action<AcceleratorStream, KernelConfig, int, ArrayView<byte>, ArrayView<byte>, ArrayView<uint>, ArrayView<byte>, ArrayView<byte>, ArrayView<int>, CurveConstants, ArrayView<byte>> _kernel;
    private readonly int _occupancyGroup;
    private readonly CurveConstants _constants;
    private readonly MemoryBuffer1D<byte, Stride1D.Dense> _smallOrder;
    private readonly MemoryBuffer1D<int, Stride1D.Dense> _baseTable;
    private readonly bool _inlinePtx;
    private readonly bool _hashOnHost;
    private readonly Kernel? _widenedKernel;
    private readonly Action<AcceleratorStream, KernelConfig, int, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<int>, int, int, ArrayView<ulong>, ArrayView<byte>, ArrayView<uint>, ArrayView<byte>> _prepare;
    private readonly MemoryBuffer1D<ulong, Stride1D.Dense> _shaConstants;
    private readonly int _maxBatch;
    private readonly int _chunkItems;
    private readonly int _groupThreads;
    private readonly object _gate = new();
    private readonly LaunchSlot[] _slots;
    private long _longMessagesHashedOnHost;

    // Made once, not per chunk: bounds the host's parallel loops to VerifierOptions.Threads.
    private readonly ParallelOptions _hostParallelism;

    /// <summary>Least of <see cref="SingleLaunchItems"/>, whatever the device holds.</summary>
    public const int MinSingleLaunchItems = 16_384;

    /// <summary>Most message bytes copied to the device for one chunk when the device hashes: a chunk ends before the
    /// message that would take it past this, so the page-locked and device message buffers stay within it (messages
    /// over <see cref="MaxDeviceHashedMessageBytes"/> are hashed on the host and never copied).</summary>
    public const int MaxChunkMessageBytes = 64 << 20;

    /// <summary>
    /// Longest message the device hashes when it hashes (<see cref="ChallengeKernel"/>); the host computes k for a
    /// longer one, on the same threads as its copies, and the device is handed k instead of the message.
    /// </summary>
    /// <remarks>
    /// The device hashes one item per thread, and a launch lasts as long as its slowest thread: one 15 MiB message
    /// (~123,000 SHA-512 blocks in series) held a launch of 1,023 short items, and every batch queued behind it, for
    /// the whole hash. At 16 KiB a thread hashes at most 129 blocks (R ‖ A ‖ M with its padding), of the order of
    /// the curve check the same thread does next (~850,000 instructions against ~7,500 a block), so no item makes a
    /// launch much longer than a short one does. Envelopes never come near it: they are verified over their signing
    /// bytes (139, whatever the payload). Only items given as they are (<c>VerifyBatch</c>, <c>meganet verify</c>) can
    /// be longer; those are hashed on the host, where SHA-512 runs at about 1 GB/s a core.
    /// </remarks>
    public const int MaxDeviceHashedMessageBytes = 16 << 10;

    /// <summary>Creates the verifier on the given accelerator kind and compiles the kernel.</summary>
    /// <exception cref="BackendUnavailableException">No such accelerator here.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A setting is out of range (<c>MEGANET_GPU_CHUNK</c> included).</exception>
    public GpuBatchVerifier(GpuDeviceKind kind, VerifierOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        if (options.GpuChunkItems < 0)
        {
            // Checked here, where it is read, not for every backend: a typo in it failed `--backend simd` too.
            throw new ArgumentOutOfRangeException(nameof(options), options.GpuChunkItems,
                "MEGANET_GPU_CHUNK (VerifierOptions.GpuChunkItems) must be 0 (the backend chooses) or a whole number of items per launch; fix or unset it.");
        }

        _kind = kind;
        _maxBatch = options.GpuMaxBatch;
        _chunkItems = options.GpuChunkItems;
        _groupThreads = options.GpuGroupThreads;
        _hostParallelism = new ParallelOptions { MaxDegreeOfParallelism = options.Threads };
        if (kind == GpuDeviceKind.Device && DeviceProbe.Value is { } reason)
        {
            throw new BackendUnavailableException(DeviceBackendName, reason);
        }

        var watch = Stopwatch.StartNew();
        _context = kind == GpuDeviceKind.Device
            ? Context.Create(b => b.Cuda().OpenCL(IsUsableOpenClGpu).Math(MathMode.Default).Profiling())
            : Context.Create(b => b.CPU().Math(MathMode.Default).Profiling());
        try
        {
            Device device = kind == GpuDeviceKind.Device
                ? _context.Devices.Where(d => d.AcceleratorType is AcceleratorType.Cuda or AcceleratorType.OpenCL)
                    .OrderBy(d => d.AcceleratorType == AcceleratorType.Cuda ? 0 : 1).First()
                : _context.GetPreferredDevice(preferCPU: true);
            _accelerator = device.CreateAccelerator(_context);
            if (_groupThreads != 0 && (_groupThreads < 0 || _groupThreads % _accelerator.WarpSize != 0 || _groupThreads > _accelerator.MaxNumThreadsPerGroup))
            {
                // Before the kernel compiles (seconds): the warp size and largest group are the device's.
                throw new ArgumentOutOfRangeException(nameof(options), options.GpuGroupThreads,
                    $"MEGANET_GPU_GROUP (VerifierOptions.GpuGroupThreads) must be 0 (the backend chooses) or a multiple of {_accelerator.WarpSize} (the warp size of '{_accelerator.Name}') up to {_accelerator.MaxNumThreadsPerGroup} threads; fix or unset it.");
            }

            _inlinePtx = options.GpuInlinePtx && _accelerator.AcceleratorType == AcceleratorType.Cuda;
            int? minGroupSize, minGridSize;
            if (_inlinePtx)
            {
                (_widenedKernel, _kernel, WidenedMultiplies) = LoadWidened(_accelerator);
                minGroupSize = _accelerator.EstimateGroupSize(_widenedKernel, 0, out int grid);
                minGridSize = grid;
            }
            else
            {
                _kernel = _accelerator.LoadKernel<int, ArrayView<byte>, ArrayView<byte>, ArrayView<uint>, ArrayView<byte>, ArrayView<byte>, ArrayView<int>, CurveConstants, ArrayView<byte>>(Ed25519Kernel.Verify, out KernelInfo? info);
                minGroupSize = info?.MinGroupSize;
                minGridSize = info?.MinGridSize;
            }

            _occupancyGroup = Math.Max(_accelerator.WarpSize, minGroupSize ?? Math.Min(256, _accelerator.MaxNumThreadsPerGroup));
            if (_groupThreads > 0 && GroupTooLarge(_groupThreads, _accelerator.EstimateMaxActiveGroupsPerMultiprocessor(_widenedKernel ?? _kernel.GetKernel(), _groupThreads, 0),
                    _occupancyGroup, _accelerator.Name) is { } tooLarge)
            {
                // The device's largest group is checked above; the kernel's is lower (its registers), and a group the
                // kernel cannot run failed every launch, reported as a fault of the GPU or its driver.
                throw new ArgumentOutOfRangeException(nameof(options), options.GpuGroupThreads, tooLarge);
            }

            // The occupancy estimate's smallest grid for full occupancy times its group: the threads the device runs
            // at once (33,792 on an H200: 132 multiprocessors of one 256-thread group, for 242 registers a thread).
            ResidentThreads = minGridSize is > 0 && minGroupSize is > 0
                ? (int)Math.Min(int.MaxValue, (long)minGridSize.Value * minGroupSize.Value)
                : _accelerator.NumMultiprocessors * _occupancyGroup;
            SingleLaunchItems = Math.Max(MinSingleLaunchItems, ResidentThreads);
            _hashOnHost = options.GpuHashOnHost;
            _prepare = _accelerator.LoadKernel<int, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<int>, int, int, ArrayView<ulong>, ArrayView<byte>, ArrayView<uint>, ArrayView<byte>>(ChallengeKernel.Prepare);
            _shaConstants = _accelerator.Allocate1D(ChallengeKernel.Constants());
            _constants = BuildConstants();
            _smallOrder = _accelerator.Allocate1D(SmallOrderEncodings());
            _baseTable = _accelerator.Allocate1D(BaseTable(_constants));
            _slots = [new LaunchSlot(_accelerator, _hashOnHost), new LaunchSlot(_accelerator, _hashOnHost)];
        }
        catch
        {
            // Under auto the node falls back to SIMD after this; it must not keep a device context and its memory.
            _widenedKernel?.Dispose();
            _shaConstants?.Dispose();
            _smallOrder?.Dispose();
            _baseTable?.Dispose();
            _accelerator?.Dispose();
            _context.Dispose();
            throw;
        }

        CompileMilliseconds = watch.Elapsed.TotalMilliseconds;
        DeviceName = _accelerator.Name;
    }

    /// <summary>Why a set group size cannot run the verification kernel (no group of it fits on a multiprocessor,
    /// <paramref name="maxActiveGroups"/> being the device's estimate), or null.</summary>
    internal static string? GroupTooLarge(int groupThreads, int maxActiveGroups, int occupancyGroup, string device) =>
        maxActiveGroups >= 1 ? null
        : $"MEGANET_GPU_GROUP (VerifierOptions.GpuGroupThreads) is {groupThreads}, more threads than a group of the verification kernel can have on '{device}' " +
          $"(its registers a thread allow fewer); the backend's own choice here is {occupancyGroup}: set that or less, or unset it.";

    /// <summary><see cref="MaxChunkMessageBytes"/>, lowered by tests to cut chunks by message size.</summary>
    internal int ChunkMessageBytes { get; set; } = MaxChunkMessageBytes;

    /// <summary>Items whose k the host computed in device-hash mode because their message is over
    /// <see cref="MaxDeviceHashedMessageBytes"/>; for tests.</summary>
    internal long LongMessagesHashedOnHost => Interlocked.Read(ref _longMessagesHashedOnHost);

    /// <summary>The larger of the two slots' message buffers (page-locked, and the same on the device); for tests.</summary>
    internal long MessageBufferBytes
    {
        get
        {
            lock (_gate)
            {
                return _slots.Max(slot => (long)slot.MessageCapacity);
            }
        }
    }

    /// <summary>Null when the backend can run here, else why not.</summary>
    public static string? Probe(GpuDeviceKind kind) => kind == GpuDeviceKind.CpuAccelerator ? null : DeviceProbe.Value;

    /// <summary>Threads of the verification kernel the device runs at once (its occupancy estimate; else a group of
    /// <see cref="Description"/>'s size on each multiprocessor).</summary>
    public int ResidentThreads { get; }

    /// <summary>
    /// Most items of a batch that go to the device in one launch: <see cref="ResidentThreads"/>, at least
    /// <see cref="MinSingleLaunchItems"/>. A larger batch is cut into as few launches of equal size as this allows (or
    /// quarters), so a launch about fills the device while the other stream copies. On an H200 a batch of 32,768 in
    /// one launch ran 13.1 M/s and in quarters 7.3 M/s, and one of 65,536 in halves 14.6 M/s, in quarters 12.8 M/s and
    /// in one launch 12.3 M/s (perf/gpu/results/2026-12-04-h200.txt).
    /// </summary>
    public int SingleLaunchItems { get; }

    /// <summary>Time to create the accelerator and compile the kernel.</summary>
    public double CompileMilliseconds { get; }

    /// <summary>With <see cref="VerifierOptions.GpuInlinePtx"/> on CUDA, the limb products rewritten to
    /// <c>mul.wide.s32</c> (<see cref="PtxWidening"/>); else 0.</summary>
    public int WidenedMultiplies { get; }

    /// <summary>The accelerator's name.</summary>
    public string DeviceName { get; }

    /// <summary>Most threads the host's share of a chunk runs on (<see cref="VerifierOptions.Threads"/>).</summary>
    public int HostThreads => _hostParallelism.MaxDegreeOfParallelism;

    /// <summary>The options the host's parallel loops run under; tests give them a scheduler that counts threads.</summary>
    internal ParallelOptions HostParallelism => _hostParallelism;

    /// <inheritdoc />
    public override string Name => _kind == GpuDeviceKind.Device ? DeviceBackendName : CpuBackendName;

    /// <inheritdoc />
    public override string Description =>
        $"ILGPU {_accelerator.AcceleratorType} '{DeviceName}' ({_accelerator.NumMultiprocessors} multiprocessors), one thread per signature in groups of up to {_occupancyGroup}{(_inlinePtx ? $", {WidenedMultiplies} limb products as PTX mul.wide.s32" : "")}, SHA-512 on the {(_hashOnHost ? $"host ({HostThreads} thread(s))" : $"device up to {MaxDeviceHashedMessageBytes >> 10} KiB a message, on the host ({HostThreads} thread(s)) past that")}{(_chunkItems > 0 ? $", {_chunkItems:N0} items per launch" : $", {ResidentThreads:N0} threads resident, batches over {SingleLaunchItems:N0} items cut into launches")}{(_groupThreads > 0 ? $", groups of {_groupThreads} set" : "")}, kernel ready in {CompileMilliseconds:F0} ms";

    /// <inheritdoc />
    protected override void VerifyCore(SignatureBatch batch, int start, int count, Span<bool> verdicts)
    {
        int chunk = ChunkItems(count, _maxBatch, _chunkItems, SingleLaunchItems);
        lock (_gate)
        {
            // Again under the lock: a caller that waited here while Dispose freed the buffers would launch on freed
            // ones, and ILGPU's bounds assertion ends the process.
            ObjectDisposedException.ThrowIf(IsDisposed, this);
            int launches = 0;
            try
            {
                for (int done = 0, n; done < count; done += n, launches++)
                {
                    LaunchSlot slot = _slots[launches & 1];
                    Finish(slot, verdicts);
                    n = Math.Min(chunk, count - done);
                    long prepared = Stopwatch.GetTimestamp();
                    if (_hashOnHost)
                    {
                        slot.EnsureCapacity(n, _maxBatch);
                        PrepareOnHost(batch, start + done, n, _hostParallelism, slot.Keys!.GetArray(), slot.Rs!.GetArray(), slot.Scalars!.GetArray(), slot.Pre!.GetArray());
                    }
                    else
                    {
                        slot.EnsureCapacity(n, _maxBatch);
                        n = PrepareForDevice(batch, start + done, n, slot);
                    }

                    if (!MegaNetMetrics.GpuTimingsSuspended)
                    {
                        MegaNetMetrics.GpuHostTime.Record(Stopwatch.GetElapsedTime(prepared).TotalMilliseconds);
                    }
                    Launch(slot, done, n);
                }

                Finish(_slots[launches & 1], verdicts);
                Finish(_slots[(launches + 1) & 1], verdicts);
            }
            catch
            {
                // After a fault nothing may be left in flight for the next batch to read as its own; the fault itself
                // is what the caller (the router) sees, not a second one from the wait.
                foreach (LaunchSlot slot in _slots)
                {
                    try
                    {
                        slot.Abandon();
                    }
                    catch (Exception e) when (e is not OutOfMemoryException)
                    {
                    }
                }

                throw;
            }
        }
    }

    // Queues copy-in, kernel and copy-out of one chunk on the slot's stream; nothing waits here.
    private void Launch(LaunchSlot slot, int offset, int n)
    {
        AcceleratorStream stream = slot.Stream;
        // In flight from the first enqueue: a launch that fails half way is waited out by Abandon before its buffers
        // may be freed or grown (set only at the end, copies already queued were left running under them).
        slot.Count = n;
        slot.Marks[0] = stream.AddProfilingMarker();
        slot.DeviceKeys!.View.SubView(0, 32 * n).CopyFrom(stream, slot.Keys!.ArrayView.SubView(0, 32 * n));
        if (_hashOnHost)
        {
            slot.DeviceRs!.View.SubView(0, 32 * n).CopyFrom(stream, slot.Rs!.ArrayView.SubView(0, 32 * n));
            slot.DeviceScalars!.View.SubView(0, 16 * n).CopyFrom(stream, slot.Scalars!.ArrayView.SubView(0, 16 * n));
            slot.DevicePre!.View.SubView(0, n).CopyFrom(stream, slot.Pre!.ArrayView.SubView(0, n));
            slot.Marks[1] = stream.AddProfilingMarker();
        }
        else
        {
            int messageBytes = slot.Offsets![n] - slot.Offsets[0];
            slot.DeviceSignatures!.View.SubView(0, 64 * n).CopyFrom(stream, slot.Signatures!.ArrayView.SubView(0, 64 * n));
            slot.DeviceOffsets!.View.SubView(0, n + 1).CopyFrom(stream, slot.Offsets.ArrayView.SubView(0, n + 1));
            if (messageBytes > 0)
            {
                slot.DeviceMessages!.View.SubView(0, messageBytes).CopyFrom(stream, slot.Messages!.ArrayView.SubView(0, messageBytes));
            }

            // The kernel times below include this one: rules 2 and 5 are now device work.
            slot.Marks[1] = stream.AddProfilingMarker();
            int group = Math.Min(256, _accelerator.MaxNumThreadsPerGroup);
            if (slot.HostChallenges > 0)
            {
                // The marks and the host's k of long messages; one copy each, not one per item.
                slot.DevicePre!.View.SubView(0, n).CopyFrom(stream, slot.Pre!.ArrayView.SubView(0, n));
                slot.DeviceScalars!.View.SubView(0, 16 * n).CopyFrom(stream, slot.Scalars!.ArrayView.SubView(0, 16 * n));
            }

            _prepare(stream, new KernelConfig((n + group - 1) / group, group), n, slot.DeviceSignatures.View, slot.DeviceKeys.View, slot.DeviceMessages!.View,
                slot.DeviceOffsets.View, 0, slot.HostChallenges > 0 ? 1 : 0, _shaConstants.View, slot.DeviceRs!.View, slot.DeviceScalars!.View, slot.DevicePre!.View);
        }

        _kernel(stream, LaunchShape(n), n, slot.DeviceKeys.View, slot.DeviceRs.View, slot.DeviceScalars.View, slot.DevicePre.View, _smallOrder.View, _baseTable.View, _constants, slot.DeviceVerdicts!.View);
        slot.Marks[2] = stream.AddProfilingMarker();
        slot.DeviceVerdicts.View.SubView(0, n).CopyTo(stream, slot.Results!.ArrayView.SubView(0, n));
        slot.Marks[3] = stream.AddProfilingMarker();
        slot.Offset = offset;
    }

    // The plain kernel compiled to PTX by ILGPU, its limb products rewritten to mul.wide.s32, then handed to the
    // driver. Not in ILGPU's kernel cache: the verifier disposes it.
    private static (Kernel Kernel, Action<AcceleratorStream, KernelConfig, int, ArrayView<byte>, ArrayView<byte>, ArrayView<uint>, ArrayView<byte>, ArrayView<byte>, ArrayView<int>, CurveConstants, ArrayView<byte>> Launcher, int Rewritten) LoadWidened(Accelerator accelerator)
    {
        MethodInfo method = typeof(Ed25519Kernel).GetMethod(nameof(Ed25519Kernel.Verify), BindingFlags.Public | BindingFlags.Static)!;
        var compiled = (PTXCompiledKernel)accelerator.GetBackend().Compile(EntryPointDescription.FromExplicitlyGroupedKernel(method), KernelSpecialization.Empty);
        Kernel kernel = accelerator.LoadKernel(PtxWidening.Rewrite(compiled, out int rewritten));
        try
        {
            return (kernel, kernel.CreateLauncherDelegate<Action<AcceleratorStream, KernelConfig, int, ArrayView<byte>, ArrayView<byte>, ArrayView<uint>, ArrayView<byte>, ArrayView<byte>, ArrayView<int>, CurveConstants, ArrayView<byte>>>(), rewritten);
        }
        catch
        {
            kernel.Dispose();
            throw;
        }
    }

    /// <summary>Items per launch for a batch of <paramref name="count"/>: <paramref name="configured"/> when set
    /// (<see cref="VerifierOptions.GpuChunkItems"/>), else one launch up to <paramref name="singleLaunch"/> items
    /// (<see cref="SingleLaunchItems"/>), and above that the fewest launches of at most that many, of equal size (no
    /// small last launch that would leave the device half idle), or quarters when those are larger; never more than
    /// <paramref name="maxBatch"/>.</summary>
    internal static int ChunkItems(int count, int maxBatch, int configured, int singleLaunch)
    {
        if (configured > 0 || count <= singleLaunch)
        {
            return Math.Min(maxBatch, configured > 0 ? configured : count);
        }

        int launches = (int)(((long)count + singleLaunch - 1) / singleLaunch);
        return Math.Min(maxBatch, Math.Max((count + 3) / 4, (count + launches - 1) / launches));
    }

    /// <summary>
    /// Groups for <paramref name="n"/> items: the occupancy group size for large launches (throughput), smaller groups
    /// for small ones so they still reach every multiprocessor (latency: 4,096 items in groups of 256 would keep 16 of
    /// an H100's 132 multiprocessors busy and the rest idle); groups of <see cref="VerifierOptions.GpuGroupThreads"/>
    /// when that is set.
    /// </summary>
    internal KernelConfig LaunchShape(int n) => _groupThreads > 0
        ? new KernelConfig((n + _groupThreads - 1) / _groupThreads, _groupThreads)
        : LaunchShape(n, _accelerator.WarpSize, _accelerator.NumMultiprocessors, _occupancyGroup);

    /// <inheritdoc cref="LaunchShape(int)"/>
    internal static KernelConfig LaunchShape(int n, int warp, int multiprocessors, int occupancyGroup)
    {
        // Whole warps, few enough that the groups still outnumber the multiprocessors, and a divisor of the occupancy
        // group's warps. A multiprocessor holds about one occupancy group of this kernel (its registers decide: 242 a
        // thread leave room for 8 warps on an H200), so groups of 3 warps (16,384 items on 132 multiprocessors) fit
        // two to a multiprocessor and leave a quarter of it idle, where groups of 2 fit four and fill it.
        int occupancyWarps = Math.Max(1, occupancyGroup / warp);
        int warps = Math.Clamp(n / multiprocessors / warp, 1, occupancyWarps);
        while (occupancyWarps % warps != 0)
        {
            warps--;
        }

        int group = warps * warp;
        return new KernelConfig((n + group - 1) / group, group);
    }

    // Waits for the slot's chunk (if any), records its copy and kernel times, and writes its verdicts.
    private static void Finish(LaunchSlot slot, Span<bool> verdicts)
    {
        if (slot.Count == 0)
        {
            return;
        }

        slot.Stream.Synchronize();
        if (!MegaNetMetrics.GpuTimingsSuspended)
        {
            // Not the node's start-up self-check (VerifierStartup.CheckGpu): a node that has verified
            // nothing reports no GPU launches.
            MegaNetMetrics.GpuTransferTime.Record((slot.Marks[1]!.MeasureFrom(slot.Marks[0]!) + slot.Marks[3]!.MeasureFrom(slot.Marks[2]!)).TotalMilliseconds);
            MegaNetMetrics.GpuKernelTime.Record(slot.Marks[2]!.MeasureFrom(slot.Marks[1]!).TotalMilliseconds);
        }
        ReadOnlySpan<byte> results = slot.Results!.Span[..slot.Count];
        Span<bool> target = verdicts.Slice(slot.Offset, slot.Count);
        for (int i = 0; i < results.Length; i++)
        {
            target[i] = results[i] == 1;
        }

        slot.Abandon();
    }

    /// <summary>Rule 2 (S &lt; L) and rule 5 (k) on the host, in blocks of 256 items on at most
    /// <paramref name="parallelism"/>'s threads (unbounded, the loop spread a large chunk's blocks over the whole thread
    /// pool, which on a node also runs its gRPC calls).</summary>
    private static void PrepareOnHost(SignatureBatch batch, int start, int n, ParallelOptions parallelism, byte[] keys, byte[] rs, uint[] scalars, byte[] pre)
    {
        Parallel.For(0, (n + 255) / 256, parallelism, block =>
        {
            int end = Math.Min(n, (block + 1) * 256);
            batch.PublicKeys.Slice(32 * (start + block * 256), 32 * (end - block * 256)).CopyTo(keys.AsSpan(32 * block * 256));
            for (int j = block * 256; j < end; j++)
            {
                int i = start + j;
                ReadOnlySpan<byte> sig = batch.GetSignature(i);
                sig[..32].CopyTo(rs.AsSpan(32 * j));
                bool ok = Ed25519Constants.IsCanonicalScalar(sig[32..]);
                pre[j] = ok ? (byte)1 : (byte)0;
                Span<uint> words = scalars.AsSpan(16 * j, 16);
                words.Clear();
                if (!ok)
                {
                    continue;
                }

                Scalar256 k = ChallengeScalar.Compute(sig, batch.GetPublicKey(i), batch.GetMessage(i));
                for (int w = 0; w < 8; w++)
                {
                    words[w] = BinaryPrimitives.ReadUInt32LittleEndian(sig[(32 + 4 * w)..]);
                }

                for (int w = 0; w < 4; w++)
                {
                    ulong limb = k[w];
                    words[8 + 2 * w] = (uint)limb;
                    words[9 + 2 * w] = (uint)(limb >> 32);
                }
            }
        });
    }

    /// <summary>
    /// What the device needs to hash on its own, for up to <paramref name="n"/> items from <paramref name="start"/>:
    /// returns how many the chunk takes (it ends before the message that would take it past
    /// <see cref="ChunkMessageBytes"/>). The slot gets the chunk's keys, signatures, its short messages back to back and
    /// their offsets; a message over <see cref="MaxDeviceHashedMessageBytes"/> is not copied (its offsets give it no
    /// bytes): the host computes its k here, and marks it for <see cref="ChallengeKernel.Prepare"/> to take.
    /// </summary>
    private int PrepareForDevice(SignatureBatch batch, int start, int n, LaunchSlot slot)
    {
        // The table the kernel reads messages by, built here from the batch's in one pass: positions in the slot's
        // buffer, so every range the device reads lies within the bytes copied for the chunk.
        ReadOnlySpan<int> offsets = batch.MessageOffsets.Slice(start, n + 1);
        Span<int> table = slot.Offsets!.Span;
        int[]? longItems = null;
        int longCount = 0, position = 0, taken = 0;
        table[0] = 0;
        try
        {
            for (; taken < n; taken++)
            {
                int length = offsets[taken + 1] - offsets[taken];
                if (length < 0)
                {
                    throw new ArgumentException($"The batch's message table is inconsistent at item {start + taken}: was the batch changed while it was being verified?", nameof(batch));
                }

                if (length > MaxDeviceHashedMessageBytes)
                {
                    longItems ??= ArrayPool<int>.Shared.Rent(n);
                    longItems[longCount++] = taken;
                }
                else if (taken > 0 && position + length > ChunkMessageBytes)
                {
                    break;
                }
                else
                {
                    position += length;
                }

                table[taken + 1] = position;
            }

            slot.EnsureMessageCapacity(position);
            slot.HostChallenges = longCount;
            Span<byte> marks = default;
            if (longCount > 0)
            {
                slot.EnsureHostChallenges();
                marks = slot.Pre!.Span[..taken];
                marks.Clear();
                foreach (int item in longItems.AsSpan(0, longCount))
                {
                    marks[item] = 1;
                }
            }

            CopyOnHost(batch, start, taken, slot, longCount > 0, _hostParallelism);
            if (longItems is not null)
            {
                ComputeLongChallenges(batch, start, longItems, longCount, slot.Scalars!.GetArray(), _hostParallelism);
                Interlocked.Add(ref _longMessagesHashedOnHost, longCount);
            }

            return taken;
        }
        finally
        {
            if (longItems is not null)
            {
                ArrayPool<int>.Shared.Return(longItems);
            }
        }
    }

    /// <summary>The chunk's keys, signatures and short messages copied block by block into the slot's page-locked
    /// buffers (no work per item unless some messages are left out: <paramref name="marked"/>, the slot's Pre then
    /// marks them), on at most <paramref name="parallelism"/>'s threads, like the host's hashing.</summary>
    private static void CopyOnHost(SignatureBatch batch, int start, int n, LaunchSlot slot, bool marked, ParallelOptions parallelism)
    {
        const int Part = 16_384;
        Parallel.For(0, (n + Part - 1) / Part, parallelism, part =>
        {
            int from = part * Part, items = Math.Min(Part, n - from);
            batch.PublicKeys.Slice(32 * (start + from), 32 * items).CopyTo(slot.Keys!.Span[(32 * from)..]);
            batch.Signatures.Slice(64 * (start + from), 64 * items).CopyTo(slot.Signatures!.Span[(64 * from)..]);
            ReadOnlySpan<int> table = slot.Offsets!.Span;
            ReadOnlySpan<byte> marks = marked ? slot.Pre!.Span : default;
            Span<byte> messages = slot.Messages!.Span;

            // Runs of messages the device hashes lie back to back in the batch as in the slot: one copy per run, one
            // for the whole part when no message is left out.
            int run = from;
            for (int j = from; j <= from + items; j++)
            {
                if (j == from + items || (marked && marks[j] != 0))
                {
                    int bytes = table[j] - table[run];
                    if (bytes > 0)
                    {
                        batch.MessageData.Slice(batch.MessageOffsets[start + run], bytes).CopyTo(messages[table[run]..]);
                    }

                    run = j + 1;
                }
            }
        });
    }

    /// <summary>k = SHA-512(R ‖ A ‖ M) mod L into words 8–15 of each listed item's scalars (zero where S ≥ L: the
    /// kernel's own S check refuses it), for the long messages the device does not hash.</summary>
    private static void ComputeLongChallenges(SignatureBatch batch, int start, int[] items, int count, uint[] scalars, ParallelOptions parallelism)
    {
        Parallel.For(0, count, parallelism, x =>
        {
            int j = items[x], i = start + j;
            ReadOnlySpan<byte> sig = batch.GetSignature(i);
            Span<uint> words = scalars.AsSpan(16 * j + 8, 8);
            words.Clear();
            if (!Ed25519Constants.IsCanonicalScalar(sig[32..]))
            {
                return;
            }

            Scalar256 k = ChallengeScalar.Compute(sig, batch.GetPublicKey(i), batch.GetMessage(i));
            for (int w = 0; w < 4; w++)
            {
                words[2 * w] = (uint)k[w];
                words[(2 * w) + 1] = (uint)(k[w] >> 32);
            }
        });
    }

    internal static CurveConstants BuildConstants()
    {
        CurveConstants c;
        c.D = Fe.FromBytes(Convert.FromHexString("a3785913ca4deb75abd841414d0a700098e879777940c78c73fe6f2bee6c0352"));
        c.D2 = Fe.Reduce(Fe.Add(c.D, c.D));
        c.SqrtM1 = Fe.FromBytes(Convert.FromHexString("b0a00e4a271beec478e42fad0618432fa7d7fb3d99004d2b0bdfc14f8024832b"));
        return c;
    }

    /// <summary>[1..128]B in affine (y + x, y − x, 2d·x·y) form, from the reference's points converted with the
    /// kernel's own field code.</summary>
    internal static int[] BaseTable(CurveConstants c)
    {
        int[] table = new int[Ed25519Kernel.BaseTableEntries * Ed25519Kernel.BaseTableStride];
        var point = Ed25519Reference.Identity;
        for (int m = 0; m < Ed25519Kernel.BaseTableEntries; m++)
        {
            point = Ed25519Reference.Add(point, Ed25519Reference.B);
            System.Numerics.BigInteger zInverse = Ed25519Reference.Inverse(point.Z);
            Fe x = Fe.FromBytes(Ed25519Reference.ToLittleEndian(Ed25519Reference.Mod(point.X * zInverse)));
            Fe y = Fe.FromBytes(Ed25519Reference.ToLittleEndian(Ed25519Reference.Mod(point.Y * zInverse)));
            int o = m * Ed25519Kernel.BaseTableStride;
            Fe.Store(Fe.Reduce(Fe.Add(y, x)), table, o);
            Fe.Store(Fe.Reduce(Fe.Sub(y, x)), table, o + 10);
            Fe.Store(Fe.Mul(Fe.Mul(x, y), c.D2), table, o + 20);
        }

        return table;
    }

    private static byte[] SmallOrderEncodings()
    {
        // [i]T8 for a point T8 of order 8: the eight points refused by rule 4.
        if (!Ed25519Reference.TryDecode(Convert.FromHexString("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"), out var t8))
        {
            throw new InvalidOperationException("The order-8 point failed to decode.");
        }

        byte[] all = new byte[8 * 32];
        var p = Ed25519Reference.Identity;
        for (int i = 0; i < 8; i++)
        {
            Ed25519Reference.Encode(p).CopyTo(all, 32 * i);
            p = Ed25519Reference.Add(p, t8);
        }

        return all;
    }

    /// <summary>The OpenCL devices the <c>gpu</c> backend may take: GPUs only (a CPU's OpenCL runtime, such as PoCL's or
    /// Intel's, would run the kernels on the cores SIMD verifies on, and <c>auto</c> picked it over SIMD), with what
    /// ILGPU's own <c>OpenCL()</c> requires (OpenCL C 2.0 and the generic address space).</summary>
    private static bool IsUsableOpenClGpu(CLDevice device) =>
        device.DeviceType.HasFlag(CLDeviceType.CL_DEVICE_TYPE_GPU)
        && device.CLStdVersion >= ILGPU.Backends.OpenCL.CLBackend.MinimumVersion
        && device.Capabilities.GenericAddressSpace;

    /// <summary>The end of <see cref="Probe"/>'s reason when no device was found: what to use instead, in the command
    /// line's terms (a tool without <c>--backend</c> replaces it).</summary>
    public const string NoDeviceAdvice = " (use --backend simd, or gpu-cpu to run the GPU kernels on the CPU for testing).";

    private static string? ProbeDevice()
    {
        try
        {
            using Context context = Context.Create(b => b.Cuda().OpenCL(IsUsableOpenClGpu));
            return context.Devices.Any(d => d.AcceleratorType is AcceleratorType.Cuda or AcceleratorType.OpenCL)
                ? null
                : "no CUDA or OpenCL GPU found" + NoDeviceAdvice;
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            return $"no usable GPU driver ({e.GetType().Name}: {e.Message}).";
        }
    }

    /// <inheritdoc />
    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            lock (_gate)
            {
                foreach (LaunchSlot slot in _slots)
                {
                    slot.Dispose();
                }

                // Each on its own: after a sticky CUDA fault every release reports that fault again, and the first to
                // throw used to leave the rest, the accelerator and the context too, behind (and fail the node's start
                // under auto, where the fallback to SIMD is meant to take over).
                foreach (IDisposable? resource in (IDisposable?[])[_widenedKernel, _shaConstants, _smallOrder, _baseTable, _accelerator, _context])
                {
                    DisposeQuietly(resource);
                }
            }
        }
    }

    /// <summary>Releases <paramref name="resource"/>, taking a failure as the faulted device's (nothing else can be done
    /// with it then).</summary>
    private static void DisposeQuietly(IDisposable? resource)
    {
        try
        {
            resource?.Dispose();
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
        }
    }

    /// <summary>One stream with its page-locked host buffers, device buffers and the chunk in flight on it.</summary>
    private sealed class LaunchSlot(Accelerator accelerator, bool hashOnHost) : IDisposable
    {
        public AcceleratorStream Stream { get; } = accelerator.CreateStream();

        public PageLockedArray1D<byte>? Keys { get; private set; }

        public PageLockedArray1D<byte>? Rs { get; private set; }

        public PageLockedArray1D<uint>? Scalars { get; private set; }

        public PageLockedArray1D<byte>? Pre { get; private set; }

        public PageLockedArray1D<byte>? Results { get; private set; }

        public PageLockedArray1D<byte>? Signatures { get; private set; }

        public PageLockedArray1D<byte>? Messages { get; private set; }

        public PageLockedArray1D<int>? Offsets { get; private set; }

        public MemoryBuffer1D<byte, Stride1D.Dense>? DeviceKeys { get; private set; }

        public MemoryBuffer1D<byte, Stride1D.Dense>? DeviceRs { get; private set; }

        public MemoryBuffer1D<uint, Stride1D.Dense>? DeviceScalars { get; private set; }

        public MemoryBuffer1D<byte, Stride1D.Dense>? DevicePre { get; private set; }

        public MemoryBuffer1D<byte, Stride1D.Dense>? DeviceVerdicts { get; private set; }

        public MemoryBuffer1D<byte, Stride1D.Dense>? DeviceSignatures { get; private set; }

        public MemoryBuffer1D<byte, Stride1D.Dense>? DeviceMessages { get; private set; }

        public MemoryBuffer1D<int, Stride1D.Dense>? DeviceOffsets { get; private set; }

        /// <summary>Markers before copy-in, before and after the kernel, after copy-out.</summary>
        public ProfilingMarker?[] Marks { get; } = new ProfilingMarker?[4];

        /// <summary>Where the chunk in flight goes in the caller's verdicts, and its size (0: none in flight).</summary>
        public int Offset { get; set; }

        public int Count { get; set; }

        private int _capacity;
        private int _messageCapacity;

        /// <summary>Of the chunk being prepared, the items whose k the host computed (0: none, and Pre and Scalars are
        /// not handed to the device).</summary>
        public int HostChallenges { get; set; }

        /// <summary>Bytes of <see cref="Messages"/> (and of <see cref="DeviceMessages"/>).</summary>
        public int MessageCapacity => _messageCapacity;

        /// <summary>Room for <paramref name="n"/> items, grown by doubling, capped at <paramref name="max"/>. Host
        /// buffers are those the slot's mode fills: R, scalars and the S check when the host hashes, signatures and
        /// offsets when the device does.</summary>
        public void EnsureCapacity(int n, int max)
        {
            if (n > _capacity)
            {
                int capacity = Math.Min(max, Math.Max(n, Math.Max(1024, _capacity * 2)));
                DisposeItemBuffers();
                _capacity = 0; // until every buffer below exists: a failed allocation must not leave disposed ones in use
                Scalars = null; // in device-hash mode made again on first need (EnsureHostChallenges): 65 bytes an item
                Pre = null;
                Keys = accelerator.AllocatePageLocked1D<byte>(32L * capacity);
                Results = accelerator.AllocatePageLocked1D<byte>(capacity);
                if (hashOnHost)
                {
                    Rs = accelerator.AllocatePageLocked1D<byte>(32L * capacity);
                    Scalars = accelerator.AllocatePageLocked1D<uint>(16L * capacity);
                    Pre = accelerator.AllocatePageLocked1D<byte>(capacity);
                }
                else
                {
                    Signatures = accelerator.AllocatePageLocked1D<byte>(64L * capacity);
                    Offsets = accelerator.AllocatePageLocked1D<int>(capacity + 1L);
                    DeviceSignatures = accelerator.Allocate1D<byte>(64L * capacity);
                    DeviceOffsets = accelerator.Allocate1D<int>(capacity + 1L);
                }

                DeviceKeys = accelerator.Allocate1D<byte>(32L * capacity);
                DeviceRs = accelerator.Allocate1D<byte>(32L * capacity);
                DeviceScalars = accelerator.Allocate1D<uint>(16L * capacity);
                DevicePre = accelerator.Allocate1D<byte>(capacity);
                DeviceVerdicts = accelerator.Allocate1D<byte>(capacity);
                _capacity = capacity;
            }
        }

        /// <summary>Room for <paramref name="messageBytes"/> of messages when the device hashes, grown by doubling up to
        /// <see cref="MaxChunkMessageBytes"/> (a chunk never copies more, unless a test lowers the cut below one
        /// message).</summary>
        public void EnsureMessageCapacity(int messageBytes)
        {
            // DeviceMessages too: an allocation that failed after Messages left it null with a capacity of 0.
            if (Messages is null || DeviceMessages is null || messageBytes > _messageCapacity)
            {
                int capacity = Math.Max(messageBytes, Math.Min(MaxChunkMessageBytes, Math.Max(64 * 1024, 2 * _messageCapacity)));
                (PageLockedArray1D<byte>? oldMessages, MemoryBuffer1D<byte, Stride1D.Dense>? oldDevice) = (Messages, DeviceMessages);
                Messages = null;
                DeviceMessages = null;
                _messageCapacity = 0;
                DisposeQuietly(oldMessages);
                DisposeQuietly(oldDevice);
                Messages = accelerator.AllocatePageLocked1D<byte>(capacity);
                DeviceMessages = accelerator.Allocate1D<byte>(capacity);
                _messageCapacity = capacity;
            }
        }

        /// <summary>Host buffers for the k of long messages and their marks (device-hash mode), for the slot's item
        /// capacity.</summary>
        public void EnsureHostChallenges()
        {
            if (Scalars is null || Pre is null)
            {
                (PageLockedArray1D<uint>? oldScalars, PageLockedArray1D<byte>? oldPre) = (Scalars, Pre);
                Scalars = null;
                Pre = null;
                DisposeQuietly(oldScalars);
                DisposeQuietly(oldPre);
                Scalars = accelerator.AllocatePageLocked1D<uint>(16L * _capacity);
                Pre = accelerator.AllocatePageLocked1D<byte>(_capacity);
            }
        }

        /// <summary>Waits out whatever is in flight and forgets it. After a fault the wait throws (CUDA repeats a sticky
        /// error on every later call), and the slot is forgotten first, so a second Abandon does not wait again.</summary>
        public void Abandon()
        {
            int count = Count;
            ProfilingMarker?[] marks = [.. Marks];
            Array.Clear(Marks);
            Count = 0;
            try
            {
                if (count != 0)
                {
                    Stream.Synchronize();
                }
            }
            finally
            {
                foreach (ProfilingMarker? mark in marks)
                {
                    DisposeQuietly(mark);
                }
            }
        }

        public void Dispose()
        {
            try
            {
                Abandon();
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                // A faulted device: nothing in flight will finish; what is left is let go below.
            }

            DisposeBuffers();
            DisposeQuietly(Stream);
        }

        private void DisposeBuffers()
        {
            DisposeItemBuffers();
            DisposeQuietly(Messages);
            DisposeQuietly(DeviceMessages);
        }

        private void DisposeItemBuffers()
        {
            foreach (IDisposable? buffer in (IDisposable?[])[Keys, Rs, Scalars, Pre, Results, Signatures, Offsets, DeviceKeys, DeviceRs, DeviceScalars, DevicePre, DeviceVerdicts, DeviceSignatures, DeviceOffsets])
            {
                DisposeQuietly(buffer);
            }
        }
    }
}
