using System.Buffers.Binary;
using BenchmarkDotNet.Attributes;
using MegaNet.Core.Ed25519;
using MegaNet.Core.Transparency;
using MegaNet.Store;

namespace MegaNet.Perf;

/// <summary>
/// Store throughput: acknowledged 1 KiB puts (group commit included), mailbox reads, proof generation and
/// verification. Run: <c>dotnet run -c Release --project perf/MegaNet.Perf -- --filter '*StoreBenchmarks*'</c>.
/// <para>The three put benchmarks build their requests the same way, from random 1 KiB payloads made once in
/// <see cref="Setup"/>: each put copies one and stamps a run-wide counter into it (a new envelope every time, never a
/// duplicate), about 0.1 µs, which <see cref="RequestBuilding"/> times on its own. Until 2026-11-29 ConcurrentPuts and
/// PutMany generated each payload inside the timed operation with a seeded <c>new Random(1)</c> (.NET's legacy
/// algorithm, ~4.4 µs per KiB, ~40 % of PutMany's figure). The requests are not built in an [IterationSetup]: that
/// runs one invocation per iteration, after a forced GC and an untimed pause in which the store's background work
/// catches up, which flattered StreamedPuts by a third (5.6 against 8.0-9.1 µs) rather than removing 0.2 µs.</para>
/// </summary>
[MemoryDiagnoser]
public class StoreBenchmarks
{
    private const int Group = 1000;
    private FasterEnvelopeStore _store = null!;
    private string _dir = null!;
    private const int PayloadPool = 4096;
    private readonly Random _random = new(1);
    private byte[][] _payloads = [];
    private long _stamp;
    private DateTimeOffset _expires;
    private byte[][] _recipients = [];
    private SignedTreeHead _head = null!;
    private IReadOnlyList<byte[]> _proof = [];
    private byte[] _leafHash = [];
    private long _leafIndex;
    private FASTER.core.IDevice _logDevice = null!;
    private FASTER.core.FasterLog _log = null!;
    private readonly MerkleLog _merkle = new();
    private byte[][] _ids = [];

    [GlobalSetup]
    public void Setup()
    {
        _dir = Directory.CreateTempSubdirectory("meganet-perf-").FullName;
        byte[] seed = new byte[32], pk = new byte[32], sk = new byte[64];
        Ed25519Signer.KeyPairFromSeed(seed, pk, sk);
        _store = FasterEnvelopeStore.OpenAsync(new StoreOptions
        {
            DataDirectory = _dir,
            NodeSecretKey = sk,
            MailboxMaxCount = int.MaxValue,
            MailboxMaxBytes = long.MaxValue,
        }).GetAwaiter().GetResult();
        _recipients = Enumerable.Range(0, 64).Select(_ => Bytes(32)).ToArray();
        _payloads = Enumerable.Range(0, PayloadPool).Select(_ => Bytes(1024)).ToArray();
        // A day ahead of the start: a benchmark run takes minutes, so every put is still unexpired when it is made.
        _expires = DateTimeOffset.UtcNow.AddDays(1);
        IReadOnlyList<PutResult> first = _store.PutManyAsync(Enumerable.Range(0, Group)
            .Select(_ => new PutRequest(Bytes(1024), _recipients[_random.Next(64)], DateTimeOffset.UtcNow.AddDays(1))).ToList()).AsTask().GetAwaiter().GetResult();
        // Recipient 0 gets 200 more, so MailboxRead's page really holds 100 entries (checked below).
        _store.PutManyAsync(Enumerable.Range(0, 200)
            .Select(_ => new PutRequest(Bytes(1024), _recipients[0], DateTimeOffset.UtcNow.AddDays(1))).ToList()).AsTask().GetAwaiter().GetResult();
        if (MailboxRead().GetAwaiter().GetResult().Entries.Count != 100)
        {
            throw new InvalidOperationException("MailboxRead does not read a full page of 100 entries.");
        }

        _head = _store.GetTreeHead();
        PutReceipt middle = first[Group / 2].Receipt!;
        _proof = _store.GetInclusionProof(middle.LogIndex, _head.TreeSize);
        _leafHash = MerkleTree.LeafHash(middle.EnvelopeId);
        _leafIndex = middle.LogIndex;
        _logDevice = FASTER.core.Devices.CreateLogDevice(Path.Combine(_dir, "appends.log"), preallocateFile: false);
        _log = new FASTER.core.FasterLog(new FASTER.core.FasterLogSettings { LogDevice = _logDevice, LogCommitDir = Path.Combine(_dir, "appends-commits"), MemorySizeBits = 24, PageSizeBits = 20 });
        _ids = Enumerable.Range(0, Group).Select(_ => Bytes(32)).ToArray();
        if (!InclusionProofVerification())
        {
            throw new InvalidOperationException("The benchmark's inclusion proof does not verify.");
        }
    }

    /// <summary>1,000 acknowledged 1 KiB puts from 1,000 concurrent callers (one operation = one put).</summary>
    [Benchmark(OperationsPerInvoke = Group)]
    public Task ConcurrentPuts() => Task.WhenAll(Enumerable.Range(0, Group).Select(_ => _store.PutAsync(NextRequest()).AsTask()));

    /// <summary>1,000 acknowledged 1 KiB puts in one PutManyAsync call.</summary>
    [Benchmark(OperationsPerInvoke = Group)]
    public async Task PutMany() => Stored(await _store.PutManyAsync(NextGroup()));

    /// <summary>What the put benchmarks spend building a request, without the store (one operation = one request):
    /// subtract it from their figures for the store's own cost.</summary>
    [Benchmark(OperationsPerInvoke = Group)]
    public List<PutRequest> RequestBuilding() => NextGroup();

    /// <summary>
    /// 16,000 acknowledged 1 KiB puts from four producers, each sending four batches of 1,000 one after another, so new
    /// groups arrive while earlier ones commit and apply (the store pipelines them); one operation = one put. This is
    /// the shape of perf/MegaNet.StoreFill (up to 4,000 puts in flight), so the two measure the same regime.
    /// </summary>
    [Benchmark(OperationsPerInvoke = 16 * Group)]
    public Task StreamedPuts() => Task.WhenAll(Enumerable.Range(0, 4).Select(async _ =>
    {
        for (int round = 0; round < 4; round++)
        {
            Stored(await _store.PutManyAsync(NextGroup()));
        }
    }));

    /// <summary>Throws unless every put was stored as new. A refused put (low disk, a full mailbox) comes back as a
    /// result, not an exception, and is quick: timed as a put it made the store look ten times as fast.</summary>
    private static void Stored(IReadOnlyList<PutResult> results)
    {
        foreach (PutResult result in results)
        {
            if (result.Receipt is not { Duplicate: false })
            {
                throw new InvalidOperationException($"A put was not stored as new, so this run does not time puts: {result.Error?.Message ?? "a duplicate"}");
            }
        }
    }

    /// <summary>A page of 100 mailbox entries (one operation = one entry read).</summary>
    [Benchmark(OperationsPerInvoke = 100)]
    public Task<MailboxPage> MailboxRead() => _store.ListAsync(_recipients[0], 0, 100).AsTask();

    /// <summary>
    /// Transparency-log appends as the store makes them: 1,000 envelope ids appended to a FasterLog and committed once,
    /// and the Merkle tree extended by them (one operation = one leaf).
    /// </summary>
    [Benchmark(OperationsPerInvoke = Group)]
    public async Task LogAppends()
    {
        for (int i = 0; i < Group; i++)
        {
            _log.Enqueue(_ids[i]);
            _merkle.Append(_ids[i]);
        }

        await _log.CommitAsync();
    }

    [Benchmark]
    public IReadOnlyList<byte[]> InclusionProofGeneration() => _store.GetInclusionProof(_head.TreeSize / 3, _head.TreeSize);

    [Benchmark]
    public bool InclusionProofVerification() => MerkleTree.VerifyInclusion(_leafHash, _leafIndex, _head.TreeSize, _proof, _head.RootHash);

    [GlobalCleanup]
    public void Cleanup()
    {
        _store.DisposeAsync().AsTask().GetAwaiter().GetResult();
        _log.Dispose();
        _logDevice.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    private List<PutRequest> NextGroup()
    {
        var group = new List<PutRequest>(Group);
        for (int i = 0; i < Group; i++)
        {
            group.Add(NextRequest());
        }

        return group;
    }

    /// <summary>A new 1 KiB envelope: a pooled random payload with a counter unique in this run written over its first
    /// bytes (so the store never sees a duplicate); round-robin over the recipients. Thread-safe: StreamedPuts's
    /// producers run concurrently.</summary>
    private PutRequest NextRequest()
    {
        long n = Interlocked.Increment(ref _stamp);
        byte[] payload = GC.AllocateUninitializedArray<byte>(1024);
        _payloads[n % PayloadPool].CopyTo(payload, 0);
        BinaryPrimitives.WriteInt64LittleEndian(payload, n);
        return new PutRequest(payload, _recipients[n % _recipients.Length], _expires);
    }

    private byte[] Bytes(int n)
    {
        byte[] b = new byte[n];
        _random.NextBytes(b);
        return b;
    }
}
