using BenchmarkDotNet.Attributes;
using MegaNet.Core.Ed25519;
using MegaNet.Core.Transparency;
using MegaNet.Store;

namespace MegaNet.Perf;

/// <summary>
/// Store throughput: acknowledged 1 KiB puts (group commit included), mailbox reads, proof generation and
/// verification. Run: <c>dotnet run -c Release --project perf/MegaNet.Perf -- --filter '*StoreBenchmarks*'</c>.
/// </summary>
[MemoryDiagnoser]
public class StoreBenchmarks
{
    private const int Group = 1000;
    private FasterEnvelopeStore _store = null!;
    private string _dir = null!;
    private readonly Random _random = new(1);
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
    public Task ConcurrentPuts() => Task.WhenAll(Enumerable.Range(0, Group).Select(_ =>
        _store.PutAsync(new PutRequest(Bytes(1024), _recipients[_random.Next(64)], DateTimeOffset.UtcNow.AddDays(1))).AsTask()));

    /// <summary>1,000 acknowledged 1 KiB puts in one PutManyAsync call.</summary>
    [Benchmark(OperationsPerInvoke = Group)]
    public Task PutMany() => PutGroup();

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
            await _store.PutManyAsync(Enumerable.Range(0, Group)
                .Select(_ => new PutRequest(SharedBytes(1024), _recipients[Random.Shared.Next(64)], DateTimeOffset.UtcNow.AddDays(1))).ToList());
        }
    }));

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

    private Task PutGroup() => _store.PutManyAsync(Enumerable.Range(0, Group)
        .Select(_ => new PutRequest(Bytes(1024), _recipients[_random.Next(64)], DateTimeOffset.UtcNow.AddDays(1))).ToList()).AsTask();

    // Thread-safe: the producers of StreamedPuts run concurrently.
    private static byte[] SharedBytes(int n)
    {
        byte[] b = new byte[n];
        Random.Shared.NextBytes(b);
        return b;
    }

    private byte[] Bytes(int n)
    {
        byte[] b = new byte[n];
        _random.NextBytes(b);
        return b;
    }
}
