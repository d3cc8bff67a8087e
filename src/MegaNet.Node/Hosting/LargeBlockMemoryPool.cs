using System.Buffers;
using System.Collections.Concurrent;
using Microsoft.AspNetCore.Connections;

namespace MegaNet.Node.Hosting;

/// <summary>
/// The socket transport's memory in blocks larger than Kestrel's 4 KiB. Kestrel receives into one block at a time, so
/// with its own pool a 64-envelope <c>SubmitBatchStream</c> request (about 80 KB) took some 45 <c>recv</c> calls, each
/// with its wait-for-data read and its pipe flush; on the 2-core VMs the relay targets are measured on a system call is
/// costly (the hypervisor takes it), and these were most of the node's system calls (2026-12-07: 56,000 a second while
/// streaming 79,000 envelopes a second). With larger blocks a read takes what the socket holds, up to a block.
/// </summary>
/// <remarks>
/// Kestrel also gives this pool to each connection's HTTP/2 streams, for their request and response pipes. A pipe holds
/// a block only while it has bytes not yet read (it gives the block back once they are), and an idle connection holds
/// none (the transport waits for data before it takes a block: <c>WaitForDataBeforeAllocatingBuffer</c>, left on), so
/// the larger blocks cost memory only for bytes in flight, which HTTP/2 flow control bounds as before. Blocks live on
/// the pinned object heap (the socket pins what it reads into and writes from); returned ones are kept for reuse up to
/// <see cref="MaxKeptBytes"/>, and past that left to the collector.
/// </remarks>
internal sealed class LargeBlockMemoryPool : MemoryPool<byte>
{
    /// <summary>Bytes a block holds: a loopback TCP segment's worth, and four HTTP/2 frames of the default size.</summary>
    public const int BlockSize = 64 * 1024;

    /// <summary>Most bytes kept in returned blocks for reuse.</summary>
    public const long MaxKeptBytes = 32L << 20;

    private readonly ConcurrentQueue<Block> _kept = new();
    private int _keptCount;
    private long _rented;
    private bool _disposed;

    /// <inheritdoc/>
    public override int MaxBufferSize => BlockSize;

    /// <summary>Blocks kept for reuse now.</summary>
    internal int KeptBlocks => Volatile.Read(ref _keptCount);

    /// <summary>Rents so far.</summary>
    internal long Rented => Interlocked.Read(ref _rented);

    /// <inheritdoc/>
    public override IMemoryOwner<byte> Rent(int minBufferSize = -1)
    {
        if (minBufferSize > BlockSize)
        {
            throw new ArgumentOutOfRangeException(nameof(minBufferSize), minBufferSize, $"A block holds at most {BlockSize} bytes.");
        }

        Interlocked.Increment(ref _rented);
        if (_kept.TryDequeue(out Block? block))
        {
            Interlocked.Decrement(ref _keptCount);
        }
        else
        {
            block = new Block(this);
        }

        block.Lease();
        return block;
    }

    private void Return(Block block)
    {
        // Counted before it is queued, so that returns at once cannot keep more than the cap between them.
        if (Volatile.Read(ref _disposed) || (long)Interlocked.Increment(ref _keptCount) * BlockSize > MaxKeptBytes)
        {
            Interlocked.Decrement(ref _keptCount);
            return;
        }

        _kept.Enqueue(block);
    }

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        Volatile.Write(ref _disposed, true);
        _kept.Clear();
        Volatile.Write(ref _keptCount, 0);
    }

    /// <summary>One block: its own owner, so that a rent allocates nothing once blocks are kept.</summary>
    private sealed class Block(LargeBlockMemoryPool pool) : IMemoryOwner<byte>
    {
        private readonly byte[] _array = GC.AllocateUninitializedArray<byte>(BlockSize, pinned: true);
        private int _leased;

        public Memory<byte> Memory => Volatile.Read(ref _leased) == 1
            ? _array
            : throw new ObjectDisposedException(nameof(LargeBlockMemoryPool), "This block was given back to its pool.");

        public void Lease() => Volatile.Write(ref _leased, 1);

        public void Dispose()
        {
            // Once: a second dispose must not put the block in the pool twice (two renters would share it).
            if (Interlocked.Exchange(ref _leased, 0) == 1)
            {
                pool.Return(this);
            }
        }
    }

    /// <summary>Makes a pool for each of the transport's I/O queues.</summary>
    internal sealed class Factory : IMemoryPoolFactory<byte>
    {
        private readonly ConcurrentQueue<LargeBlockMemoryPool> _made = new();

        /// <summary>The pools made so far (a handful: one per I/O queue).</summary>
        internal IReadOnlyCollection<LargeBlockMemoryPool> Made => _made;

        /// <inheritdoc/>
        public MemoryPool<byte> Create(MemoryPoolOptions? options = null)
        {
            var pool = new LargeBlockMemoryPool();
            _made.Enqueue(pool);
            return pool;
        }
    }
}
