using BenchmarkDotNet.Attributes;
using MegaNet.Core.Verification;
using MegaNet.Node.Benchmarking;
using MegaNet.Node.Verification;

namespace MegaNet.Perf;

/// <summary>
/// The simd backend (one thread, key cache off) on a batch of 1,024 where every <see cref="ForgedEvery"/>-th item's
/// message has a flipped bit (0: none): what a batch costs once it has to find its bad items, from one forgery to all of
/// them, as admission's suspects' lane and a hostile VerifyBatch caller make it pay. Each operation verifies the batch
/// once and checks the verdict count. The message is spoilt, not the signature (as ForgedLoad moves the expiry): a
/// forgery with a well-formed R, A and canonical S fails only the batch equation and is found by bisection, while a
/// flipped bit of R made about half the items undecodable, rejected before the equation at a fraction of the cost.
/// Run: <c>dotnet run -c Release --project perf/MegaNet.Perf -- --filter '*ForgedShareBenchmarks*' --job short</c>.
/// </summary>
public class ForgedShareBenchmarks
{
    private const int Batch = 1_024;

    private SignatureBatch _batch = null!;
    private IBatchVerifier _verifier = null!;
    private bool[] _verdicts = [];
    private int _forged;

    /// <summary>Every this-many-th item is forged (0: none, 1: all).</summary>
    [Params(0, 1024, 64, 8, 2, 1)]
    public int ForgedEvery { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _verifier = VerifierCatalog.Create().Create("simd", new VerifierOptions { Threads = 1, KeyCacheCapacity = 0 });
        using SignatureBatch valid = VerifyBenchmark.MakeBatch(Batch, 0);
        _verdicts = new bool[Batch];
        // Every key and signature verifies as made, so every R and A decodes; the forgeries keep them.
        _verifier.Verify(valid, _verdicts);
        if (_verdicts.Any(v => !v))
        {
            throw new InvalidOperationException($"{_verdicts.Count(v => !v)} of the {Batch} valid items were rejected.");
        }

        _batch = new SignatureBatch(Batch, Batch * 64);
        for (int i = 0; i < Batch; i++)
        {
            byte[] message = valid.GetMessage(i).ToArray();
            if (ForgedEvery > 0 && i % ForgedEvery == 0)
            {
                message[0] ^= 1;
                _forged++;
            }

            _batch.Add(valid.GetPublicKey(i), valid.GetSignature(i), message);
        }

        Verify();
    }

    [Benchmark]
    public void Verify()
    {
        _verifier.Verify(_batch, _verdicts);
        if (_verdicts.Count(v => !v) != _forged)
        {
            throw new InvalidOperationException($"{_verdicts.Count(v => !v)} of {Batch} rejected, {_forged} forged.");
        }
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _verifier.Dispose();
        _batch.Dispose();
    }
}
