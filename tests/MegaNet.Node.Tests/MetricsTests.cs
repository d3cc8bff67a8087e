using MegaNet.Core.Ed25519;
using MegaNet.Core.Verification;
using MegaNet.Node.Diagnostics;

namespace MegaNet.Node.Tests;

public sealed class MetricsTests
{
    /// <summary>Delegates to the reference verifier under a name unique to one test, so series recorded by other
    /// tests running at the same time (the meter is process-wide) cannot change the figures asserted here.</summary>
    private sealed class RenamedVerifier(string name) : IBatchVerifier
    {
        private readonly ReferenceBatchVerifier _inner = new();

        public string Name => name;

        public string Description => _inner.Description;

        public VerificationRule Rule => _inner.Rule;

        public void Verify(SignatureBatch batch, int start, int count, Span<bool> verdicts) => _inner.Verify(batch, start, count, verdicts);

        public void Dispose() => _inner.Dispose();
    }

    private static SignatureBatch MakeBatch(int valid, int corrupted)
    {
        var batch = new SignatureBatch();
        Span<byte> seed = stackalloc byte[32];
        Span<byte> pk = stackalloc byte[32];
        Span<byte> sk = stackalloc byte[64];
        Span<byte> sig = stackalloc byte[64];
        for (int i = 0; i < valid + corrupted; i++)
        {
            seed.Fill((byte)(i + 1));
            Ed25519Signer.KeyPairFromSeed(seed, pk, sk);
            byte[] message = [(byte)i, 1, 2, 3];
            Ed25519Signer.Sign(sk, message, sig);
            if (i >= valid)
            {
                sig[40] ^= 0x10; // flip a bit of S: must now be rejected
            }

            batch.Add(pk, sig, message);
        }

        return batch;
    }

    [Fact]
    public void PrometheusText_ContainsVerificationsBatchSizeAndDuration_AfterInstrumentedVerify()
    {
        string backend = "mt" + Guid.NewGuid().ToString("N")[..8];
        using var collector = new PrometheusExporter();
        using var verifier = new InstrumentedBatchVerifier(new RenamedVerifier(backend));
        using SignatureBatch batch = MakeBatch(valid: 3, corrupted: 2);

        bool[] verdicts = verifier.Verify(batch);
        Assert.Equal([true, true, true, false, false], verdicts);

        string text = collector.Render();
        Assert.Contains("# TYPE meganet_verify_signatures_total counter", text);
        Assert.Contains($"meganet_verify_signatures_total{{backend=\"{backend}\",verdict=\"valid\"}} 3\n", text);
        Assert.Contains($"meganet_verify_signatures_total{{backend=\"{backend}\",verdict=\"invalid\"}} 2\n", text);
        Assert.Contains($"meganet_verify_batch_size_count{{backend=\"{backend}\"}} 1\n", text);
        Assert.Contains($"meganet_verify_batch_size_sum{{backend=\"{backend}\"}} 5\n", text);
        Assert.Contains($"meganet_verify_batch_duration_count{{backend=\"{backend}\"}} 1\n", text);

        // Observable gauges are read at scrape time.
        Assert.Contains("# TYPE meganet_admission_queue_depth gauge", text);
        Assert.Contains("meganet_admission_queue_depth ", text);
        // Observable counters too, as counters.
        Assert.Contains("# TYPE meganet_store_table_disk_reads_total counter", text);
        Assert.Contains("\nmeganet_store_table_disk_reads_total ", text);
    }

    [Fact]
    public void InstrumentedVerifier_PassesVerdictsThroughUnchanged_ForSubRange()
    {
        using var verifier = new InstrumentedBatchVerifier(new RenamedVerifier("mt-range"));
        using SignatureBatch batch = MakeBatch(valid: 2, corrupted: 2);
        Span<bool> verdicts = [false, false, true];
        verifier.Verify(batch, 1, 2, verdicts[..2]);
        Assert.Equal(new[] { true, false, true }, verdicts.ToArray());
    }
}
