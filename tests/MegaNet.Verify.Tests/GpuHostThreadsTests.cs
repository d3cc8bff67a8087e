using System.Diagnostics;
using MegaNet.Core.Ed25519;
using MegaNet.Core.Verification;
using MegaNet.Verify.Gpu;
using Xunit.Abstractions;

namespace MegaNet.Verify.Tests;

/// <summary>The GPU backend's host work (SHA-512 with <see cref="VerifierOptions.GpuHashOnHost"/>) runs on at most
/// <see cref="VerifierOptions.Threads"/> threads: unbounded, it spread over the whole thread pool, which on a node
/// also serves gRPC and Kestrel.</summary>
public sealed class GpuHostThreadsTests(ITestOutputHelper output)
{
    /// <summary>Runs every task on a thread of its own and records how many loop workers ran at once: given to the
    /// verifier's host loops, it shows how many threads they took, whatever the thread pool's size and however busy
    /// other tests keep it. A worker is counted by its task's state (<c>Parallel.For</c>'s replica), not its task: a
    /// worker that has run a while hands on to a new task of its own, which starts before the old one returns.</summary>
    private sealed class CountingScheduler : TaskScheduler
    {
        private readonly Dictionary<object, int> _running = [];
        private int _most;

        public int MostAtOnce
        {
            get
            {
                lock (_running)
                {
                    return _most;
                }
            }
        }

        protected override void QueueTask(Task task) => new Thread(() => Run(task)) { IsBackground = true }.Start();

        protected override bool TryExecuteTaskInline(Task task, bool taskWasPreviouslyQueued) => Run(task);

        protected override IEnumerable<Task> GetScheduledTasks() => [];

        private bool Run(Task task)
        {
            object worker = task.AsyncState ?? task;
            lock (_running)
            {
                _running[worker] = _running.GetValueOrDefault(worker) + 1;
                _most = Math.Max(_most, _running.Count);
            }

            try
            {
                return TryExecuteTask(task);
            }
            finally
            {
                lock (_running)
                {
                    if (--_running[worker] == 0)
                    {
                        _running.Remove(worker);
                    }
                }
            }
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void Host_hashing_runs_on_at_most_the_configured_threads(int threads)
    {
        // 1,024 items of 16 KiB: four blocks of 256 for the host to hash, each long enough that an unbounded loop
        // starts a worker per block before the first is done.
        var random = new Random(5);
        byte[] seed = new byte[32], pk = new byte[32], sk = new byte[64], signature = new byte[64], message = new byte[16 << 10];
        using var batch = new SignatureBatch(1024, 1024 * message.Length);
        var expected = new bool[1024];
        for (int i = 0; i < expected.Length; i++)
        {
            random.NextBytes(seed);
            random.NextBytes(message);
            Ed25519Signer.KeyPairFromSeed(seed, pk, sk);
            Ed25519Signer.Sign(sk, message, signature);
            expected[i] = i % 5 != 0;
            if (!expected[i])
            {
                signature[random.Next(64)] ^= 4;
            }

            batch.Add(pk, signature, message);
        }

        using var gpu = new GpuBatchVerifier(GpuDeviceKind.CpuAccelerator, new VerifierOptions { Threads = threads, GpuHashOnHost = true });
        Assert.Equal(threads, gpu.HostThreads);
        Assert.Contains($"SHA-512 on the host ({threads} thread(s))", gpu.Description, StringComparison.Ordinal);
        var scheduler = new CountingScheduler();
        gpu.HostParallelism.TaskScheduler = scheduler;
        var watch = Stopwatch.StartNew();
        bool[] verdicts = gpu.Verify(batch);
        output.WriteLine($"{watch.Elapsed.TotalSeconds:F1} s; at most {scheduler.MostAtOnce} thread(s) at once");
        Assert.Equal(expected, verdicts);
        Assert.InRange(scheduler.MostAtOnce, 1, threads);
    }
}
