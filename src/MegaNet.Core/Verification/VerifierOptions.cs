namespace MegaNet.Core.Verification;

/// <summary>Settings every backend understands. Defaults are chosen for a node on its own machine.</summary>
public sealed class VerifierOptions
{
    /// <summary>Worker threads a CPU backend may use for one batch. Default: all logical processors.</summary>
    public int Threads { get; set; } = Environment.ProcessorCount;

    /// <summary>Decompressed public keys kept in the per-key cache. Default 65,536; 0 turns the cache off; at most
    /// <see cref="MaxKeyCacheCapacity"/>.</summary>
    public int KeyCacheCapacity { get; set; } = 65_536;

    /// <summary>Most keys <see cref="KeyCacheCapacity"/> may ask for: 4,194,304 (the cache rounds up to a power of two,
    /// with about 160 bytes a key).</summary>
    public const int MaxKeyCacheCapacity = 1 << 22;

    /// <summary>Smallest batch the router sends to the GPU; smaller ones go to SIMD. Default 1,024.</summary>
    public int GpuThreshold { get; set; } = 1_024;

    /// <summary>Largest batch a GPU backend accepts in one launch (buffers are sized for it). Default 1,048,576.</summary>
    public int GpuMaxBatch { get; set; } = 1 << 20;

    /// <summary>
    /// On CUDA, multiply field limbs with PTX <c>mul.wide.s32</c> (the kernel's PTX rewritten before the driver compiles
    /// it) instead of ILGPU's 64-bit multiply. Default on: an H200 run (perf/gpu/results) checked its verdicts and
    /// found the kernel 2.6 times faster. <c>MEGANET_GPU_INLINE_PTX=0</c> turns it off. ILGPU's CPU accelerator runs
    /// the plain path either way.
    /// </summary>
    public bool GpuInlinePtx { get; set; } = Environment.GetEnvironmentVariable("MEGANET_GPU_INLINE_PTX") != "0";

    /// <summary>
    /// Compute S &lt; L and k = SHA-512(R ‖ A ‖ M) mod L on the host's cores instead of in a device kernel (the default).
    /// For comparison and diagnosis; also turned on by the environment variable <c>MEGANET_GPU_HOST_HASH=1</c>.
    /// </summary>
    public bool GpuHashOnHost { get; set; } = Environment.GetEnvironmentVariable("MEGANET_GPU_HOST_HASH") == "1";

    /// <summary>
    /// Items per launch when a GPU backend cuts a large batch into chunks over its two streams; 0 (the default) lets it
    /// choose: a batch of up to what the device keeps resident at once (at least 16,384 items; 33,792 on an H200) is one
    /// launch, a larger one goes in the fewest equal launches of at most that many, or in quarters where those are
    /// larger (20,000 items over a 16,384 limit: two launches of 10,000). For
    /// measuring other splits on a given GPU (perf/gpu/device-check.sh, <c>CHUNKS</c>); also set by the environment
    /// variable <c>MEGANET_GPU_CHUNK</c>. A GPU backend refuses a negative value (what a value that is not a whole number
    /// reads as) when it is made.
    /// </summary>
    public int GpuChunkItems { get; set; } = WholeNumberFromEnvironment("MEGANET_GPU_CHUNK");

    /// <summary>
    /// Threads per group of every verification launch on a GPU backend; 0 (the default) lets it choose: groups of whole
    /// warps that divide the kernel's occupancy group, as large as the launch allows while every multiprocessor still
    /// gets one. For measuring other shapes on a given GPU (perf/gpu/device-check.sh, <c>LAUNCH_GROUPS</c>); also set by
    /// the environment variable <c>MEGANET_GPU_GROUP</c>. A GPU backend refuses a value that is not 0 or a multiple of
    /// its warp size up to its largest group (a value that is not a whole number reads as -1) when it is made.
    /// </summary>
    public int GpuGroupThreads { get; set; } = WholeNumberFromEnvironment("MEGANET_GPU_GROUP");

    /// <summary>Throws <see cref="ArgumentOutOfRangeException"/> naming the first setting out of range. Not
    /// <see cref="GpuChunkItems"/> and <see cref="GpuGroupThreads"/>, which only a GPU backend reads and checks (a bad <c>MEGANET_GPU_CHUNK</c> failed
    /// <c>--backend simd</c> too).</summary>
    public void Validate()
    {
        if (Threads is < 1 or > 1024)
        {
            throw new ArgumentOutOfRangeException(nameof(Threads), Threads, "Threads must be between 1 and 1024.");
        }

        if (KeyCacheCapacity is < 0 or > MaxKeyCacheCapacity)
        {
            throw new ArgumentOutOfRangeException(nameof(KeyCacheCapacity), KeyCacheCapacity, $"KeyCacheCapacity must be 0 (off) to {MaxKeyCacheCapacity:N0}.");
        }

        if (GpuThreshold < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(GpuThreshold), GpuThreshold, "GpuThreshold must be at least 1.");
        }

        if (GpuMaxBatch < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(GpuMaxBatch), GpuMaxBatch, "GpuMaxBatch must be at least 1.");
        }
    }

    // A value that is not a whole number reads as -1, so Validate names it instead of the default hiding the typo.
    private static int WholeNumberFromEnvironment(string variable) =>
        Environment.GetEnvironmentVariable(variable) is { } text ? (int.TryParse(text, out int value) && value >= 0 ? value : -1) : 0;

    /// <summary>A copy with the same settings.</summary>
    public VerifierOptions Clone() => (VerifierOptions)MemberwiseClone();
}
