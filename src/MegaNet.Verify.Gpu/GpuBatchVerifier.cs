using System.Buffers;
using System.Buffers.Binary;
using System.Diagnostics;
using System.Security.Cryptography;
using ILGPU;
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
/// Backends <c>gpu</c> and <c>gpu-cpu</c>: the MegaNet rule as ILGPU kernels, one thread per signature. The host
/// checks S &lt; L and computes k = SHA-512(R ‖ A ‖ M) mod L in parallel; the kernel decodes A and R strictly, refuses
/// small-order points and checks [8]([S]B − R − [k]A) = 𝒪. Device buffers are allocated once, grown on demand up to
/// <see cref="VerifierOptions.GpuMaxBatch"/> items per launch, and reused; the kernel is compiled once at construction.
/// One batch at a time per instance (calls from several threads queue on the instance).
/// </summary>
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
    private readonly Action<Index1D, ArrayView<byte>, ArrayView<byte>, ArrayView<uint>, ArrayView<int>, ArrayView<byte>, CurveConstants, ArrayView<int>> _kernel;
    private readonly CurveConstants _constants;
    private readonly MemoryBuffer1D<byte, Stride1D.Dense> _smallOrder;
    private readonly int _maxBatch;
    private readonly object _gate = new();
    private MemoryBuffer1D<byte, Stride1D.Dense>? _keys, _rs;
    private MemoryBuffer1D<uint, Stride1D.Dense>? _scalars;
    private MemoryBuffer1D<int, Stride1D.Dense>? _pre, _verdicts;
    private int _capacity;

    /// <summary>Creates the verifier on the given accelerator kind and compiles the kernel.</summary>
    /// <exception cref="BackendUnavailableException">No such accelerator here.</exception>
    public GpuBatchVerifier(GpuDeviceKind kind, VerifierOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _kind = kind;
        _maxBatch = options.GpuMaxBatch;
        if (kind == GpuDeviceKind.Device && DeviceProbe.Value is { } reason)
        {
            throw new BackendUnavailableException(DeviceBackendName, reason);
        }

        var watch = Stopwatch.StartNew();
        _context = kind == GpuDeviceKind.Device
            ? Context.Create(b => b.Cuda().OpenCL().Math(MathMode.Default))
            : Context.Create(b => b.CPU().Math(MathMode.Default));
        Device device = kind == GpuDeviceKind.Device
            ? _context.Devices.Where(d => d.AcceleratorType is AcceleratorType.Cuda or AcceleratorType.OpenCL)
                .OrderBy(d => d.AcceleratorType == AcceleratorType.Cuda ? 0 : 1).First()
            : _context.GetPreferredDevice(preferCPU: true);
        _accelerator = device.CreateAccelerator(_context);
        _kernel = _accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<byte>, ArrayView<byte>, ArrayView<uint>, ArrayView<int>, ArrayView<byte>, CurveConstants, ArrayView<int>>(Ed25519Kernel.Verify);
        _constants = BuildConstants();
        byte[] smallOrder = SmallOrderEncodings();
        _smallOrder = _accelerator.Allocate1D(smallOrder);
        CompileMilliseconds = watch.Elapsed.TotalMilliseconds;
        DeviceName = _accelerator.Name;
    }

    /// <summary>Null when the backend can run here, else why not.</summary>
    public static string? Probe(GpuDeviceKind kind) => kind == GpuDeviceKind.CpuAccelerator ? null : DeviceProbe.Value;

    /// <summary>Time to create the accelerator and compile the kernel.</summary>
    public double CompileMilliseconds { get; }

    /// <summary>The accelerator's name.</summary>
    public string DeviceName { get; }

    /// <inheritdoc />
    public override string Name => _kind == GpuDeviceKind.Device ? DeviceBackendName : CpuBackendName;

    /// <inheritdoc />
    public override string Description =>
        $"ILGPU {_accelerator.AcceleratorType} '{DeviceName}', one thread per signature, kernel ready in {CompileMilliseconds:F0} ms";

    /// <inheritdoc />
    protected override void VerifyCore(SignatureBatch batch, int start, int count, Span<bool> verdicts)
    {
        for (int done = 0; done < count; done += _maxBatch)
        {
            int n = Math.Min(_maxBatch, count - done);
            VerifyChunk(batch, start + done, n, verdicts.Slice(done, n));
        }
    }

    private void VerifyChunk(SignatureBatch batch, int start, int n, Span<bool> verdicts)
    {
        byte[] keys = ArrayPool<byte>.Shared.Rent(32 * n);
        byte[] rs = ArrayPool<byte>.Shared.Rent(32 * n);
        uint[] scalars = ArrayPool<uint>.Shared.Rent(16 * n);
        int[] pre = ArrayPool<int>.Shared.Rent(n);
        int[] results = ArrayPool<int>.Shared.Rent(n);
        try
        {
            PrepareOnHost(batch, start, n, keys, rs, scalars, pre);
            lock (_gate)
            {
                EnsureCapacity(n);
                long t0 = Stopwatch.GetTimestamp();
                AcceleratorStream stream = _accelerator.DefaultStream;
                _keys!.View.SubView(0, 32 * n).CopyFromCPU(stream, keys.AsSpan(0, 32 * n));
                _rs!.View.SubView(0, 32 * n).CopyFromCPU(stream, rs.AsSpan(0, 32 * n));
                _scalars!.View.SubView(0, 16 * n).CopyFromCPU(stream, scalars.AsSpan(0, 16 * n));
                _pre!.View.SubView(0, n).CopyFromCPU(stream, pre.AsSpan(0, n));
                stream.Synchronize();
                long t1 = Stopwatch.GetTimestamp();
                _kernel(n, _keys.View, _rs.View, _scalars.View, _pre.View, _smallOrder.View, _constants, _verdicts!.View);
                stream.Synchronize();
                long t2 = Stopwatch.GetTimestamp();
                _verdicts.View.SubView(0, n).CopyToCPU(stream, results.AsSpan(0, n));
                stream.Synchronize();
                long t3 = Stopwatch.GetTimestamp();
                MegaNetMetrics.GpuTransferTime.Record(Stopwatch.GetElapsedTime(t0, t1).TotalMilliseconds + Stopwatch.GetElapsedTime(t2, t3).TotalMilliseconds);
                MegaNetMetrics.GpuKernelTime.Record(Stopwatch.GetElapsedTime(t1, t2).TotalMilliseconds);
            }

            for (int i = 0; i < n; i++)
            {
                verdicts[i] = results[i] == 1;
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(keys);
            ArrayPool<byte>.Shared.Return(rs);
            ArrayPool<uint>.Shared.Return(scalars);
            ArrayPool<int>.Shared.Return(pre);
            ArrayPool<int>.Shared.Return(results);
        }
    }

    /// <summary>Rule 2 (S &lt; L) and rule 5 (k) on the host, in parallel.</summary>
    private static void PrepareOnHost(SignatureBatch batch, int start, int n, byte[] keys, byte[] rs, uint[] scalars, int[] pre)
    {
        batch.PublicKeys.Slice(32 * start, 32 * n).CopyTo(keys);
        Parallel.For(0, (n + 255) / 256, block =>
        {
            using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA512);
            Span<byte> digest = stackalloc byte[64];
            for (int j = block * 256; j < Math.Min(n, (block + 1) * 256); j++)
            {
                int i = start + j;
                ReadOnlySpan<byte> sig = batch.GetSignature(i);
                sig[..32].CopyTo(rs.AsSpan(32 * j));
                bool ok = Ed25519Constants.IsCanonicalScalar(sig[32..]);
                pre[j] = ok ? 1 : 0;
                Span<uint> words = scalars.AsSpan(16 * j, 16);
                words.Clear();
                if (!ok)
                {
                    continue;
                }

                sha.AppendData(sig[..32]);
                sha.AppendData(batch.GetPublicKey(i));
                sha.AppendData(batch.GetMessage(i));
                sha.GetHashAndReset(digest);
                Scalar256 k = ScalarMath.ReduceBytes(digest);
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

    private void EnsureCapacity(int n)
    {
        if (n <= _capacity)
        {
            return;
        }

        int capacity = Math.Min(_maxBatch, Math.Max(n, Math.Max(1024, _capacity * 2)));
        _keys?.Dispose();
        _rs?.Dispose();
        _scalars?.Dispose();
        _pre?.Dispose();
        _verdicts?.Dispose();
        _keys = _accelerator.Allocate1D<byte>(32L * capacity);
        _rs = _accelerator.Allocate1D<byte>(32L * capacity);
        _scalars = _accelerator.Allocate1D<uint>(16L * capacity);
        _pre = _accelerator.Allocate1D<int>(capacity);
        _verdicts = _accelerator.Allocate1D<int>(capacity);
        _capacity = capacity;
    }

    private static CurveConstants BuildConstants()
    {
        CurveConstants c;
        c.D = Fe.FromBytes(Convert.FromHexString("a3785913ca4deb75abd841414d0a700098e879777940c78c73fe6f2bee6c0352"));
        c.D2 = Fe.Reduce(Fe.Add(c.D, c.D));
        c.SqrtM1 = Fe.FromBytes(Convert.FromHexString("b0a00e4a271beec478e42fad0618432fa7d7fb3d99004d2b0bdfc14f8024832b"));
        // B = (x, 4/5) with x even; coordinates from the reference, converted with the kernel's own code.
        byte[] x = Ed25519Reference.ToLittleEndian(Ed25519Reference.Mod(Ed25519Reference.B.X * Ed25519Reference.Inverse(Ed25519Reference.B.Z)));
        byte[] y = Ed25519Reference.ToLittleEndian(Ed25519Reference.Mod(Ed25519Reference.B.Y * Ed25519Reference.Inverse(Ed25519Reference.B.Z)));
        c.B.X = Fe.FromBytes(x);
        c.B.Y = Fe.FromBytes(y);
        c.B.Z = Fe.One();
        c.B.T = Fe.Mul(c.B.X, c.B.Y);
        return c;
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

    private static string? ProbeDevice()
    {
        try
        {
            using Context context = Context.Create(b => b.Cuda().OpenCL());
            return context.Devices.Any(d => d.AcceleratorType is AcceleratorType.Cuda or AcceleratorType.OpenCL)
                ? null
                : "no CUDA or OpenCL GPU found (use --backend simd, or gpu-cpu to run the GPU kernels on the CPU for testing).";
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
                _keys?.Dispose();
                _rs?.Dispose();
                _scalars?.Dispose();
                _pre?.Dispose();
                _verdicts?.Dispose();
                _smallOrder.Dispose();
                _accelerator.Dispose();
                _context.Dispose();
            }
        }
    }
}
