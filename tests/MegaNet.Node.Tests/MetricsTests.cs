using MegaNet.Core.Ed25519;
using MegaNet.Core.Verification;
using MegaNet.Node.Diagnostics;
using MegaNet.Node.Hosting;

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
        // Histograms with real cumulative buckets (Prometheus computes quantiles from them), and durations in seconds.
        Assert.Contains("# TYPE meganet_verify_batch_size histogram\n", text);
        Assert.Contains($"meganet_verify_batch_size_bucket{{backend=\"{backend}\",le=\"4\"}} 0\n", text);
        Assert.Contains($"meganet_verify_batch_size_bucket{{backend=\"{backend}\",le=\"8\"}} 1\n", text);
        Assert.Contains($"meganet_verify_batch_size_bucket{{backend=\"{backend}\",le=\"+Inf\"}} 1\n", text);
        Assert.Contains("# TYPE meganet_verify_batch_duration_seconds histogram\n", text);
        Assert.Contains($"meganet_verify_batch_duration_seconds_count{{backend=\"{backend}\"}} 1\n", text);
        Assert.Contains($"meganet_verify_batch_duration_seconds_bucket{{backend=\"{backend}\",le=\"+Inf\"}} 1\n", text);

        // Observable gauges are read at scrape time.
        Assert.Contains("# TYPE meganet_admission_queue_depth gauge", text);
        Assert.Contains("meganet_admission_queue_depth ", text);
        // Observable counters too, as counters.
        Assert.Contains("# TYPE meganet_store_table_disk_reads_total counter", text);
        Assert.Contains("\nmeganet_store_table_disk_reads_total ", text);
        // Bytes in the name once, from the unit.
        Assert.Contains("# HELP meganet_store_held_bytes Envelope bytes waiting in all mailboxes (bytes)\n# TYPE meganet_store_held_bytes gauge\n", text);
    }

    [Fact]
    public void A_gpu_nodes_metrics_name_the_backend_that_verified_each_batch()
    {
        // A stand-in for a real GPU (named as one; the reference verifies), behind the node's router, and a SIMD
        // backend under a name of this test's own, so series of other tests cannot change the figures.
        string simd = "mt-simd-" + Guid.NewGuid().ToString("N")[..8];
        using var collector = new PrometheusExporter();
        var options = new VerifierOptions { Threads = 1, GpuThreshold = 4 };
        using NodeVerifiers verifiers = NodeHost.Compose(new RenamedVerifier(MegaNet.Verify.Gpu.GpuBatchVerifier.DeviceBackendName), options,
            (name, _) => new RenamedVerifier(name == MegaNet.Verify.Simd.SimdBatchVerifier.BackendName ? simd : name), _ => { });
        using SignatureBatch small = MakeBatch(valid: 2, corrupted: 1), large = MakeBatch(valid: 5, corrupted: 0);
        verifiers.Node.Verify(small);
        verifiers.Auth.Verify(small);
        verifiers.Delegated.Verify(small);

        // Under the threshold all went to SIMD, and are counted as SIMD's: they were counted as the GPU's. Each under
        // its purpose.
        string text = collector.Render();
        foreach (string purpose in new[] { "admission", "auth", "delegated" })
        {
            Assert.Contains($"meganet_verify_signatures_total{{backend=\"{simd}\",purpose=\"{purpose}\",verdict=\"valid\"}} 2\n", text);
            Assert.Contains($"meganet_verify_signatures_total{{backend=\"{simd}\",purpose=\"{purpose}\",verdict=\"invalid\"}} 1\n", text);
            Assert.Contains($"meganet_verify_batch_size_count{{backend=\"{simd}\",purpose=\"{purpose}\"}} 1\n", text);
        }

        // At the threshold the GPU verified it, and it is counted as the GPU's, under the purpose of the verifier that
        // sent it there (the series are shared with other tests of this process, so counted by their growth).
        string gpu = MegaNet.Verify.Gpu.GpuBatchVerifier.DeviceBackendName;
        string admissionOnGpu = $"meganet_verify_batch_size_count{{backend=\"{gpu}\",purpose=\"admission\"}}";
        string delegatedOnGpu = $"meganet_verify_batch_size_count{{backend=\"{gpu}\",purpose=\"delegated\"}}";
        long admissionBefore = Count(collector.Render(), admissionOnGpu);
        verifiers.Node.Verify(large);
        text = collector.Render();
        Assert.Contains($"meganet_verify_batch_size_count{{backend=\"{simd}\",purpose=\"admission\"}} 1\n", text);
        Assert.True(Count(text, admissionOnGpu) > admissionBefore, "the GPU's batch was not counted as the GPU's");
        long delegatedBefore = Count(text, delegatedOnGpu);
        admissionBefore = Count(text, admissionOnGpu);
        verifiers.Delegated.Verify(large);
        text = collector.Render();
        Assert.True(Count(text, delegatedOnGpu) > delegatedBefore, "delegated verification's GPU batch was not counted as delegated");
        Assert.Equal(admissionBefore, Count(text, admissionOnGpu));

    }

    [Fact]
    public async Task A_clients_VerifyBatch_and_mailbox_logins_are_counted_apart_from_admission()
    {
        // A node process of its own: the meter is process-wide, and other tests submit forged envelopes meanwhile.
        string dir = Directory.CreateTempSubdirectory("meganet-purpose-").FullName;
        try
        {
            await using ExternalNode node = await ExternalNode.StartAsync(Path.Combine(dir, "data"),
                new Dictionary<string, string> { ["MEGANET_MegaNet__MetricsListen"] = "127.0.0.1:0" });
            int metricsPort = node.MetricsPort;
            using var http = new HttpClient();
            using var client = new MegaNet.Api.MegaNetClient(node.Address);
            using MegaNet.Api.Identity alice = MegaNet.Api.Identity.Create(), bob = MegaNet.Api.Identity.Create();
            await client.SendAsync(alice, bob.Card, "hello"u8.ToArray(), "text/plain");
            string before = await http.GetStringAsync($"http://127.0.0.1:{metricsPort}/metrics");

            // A client asks whether three signatures are bob's: they are alice's, and "no" is an ordinary answer.
            byte[] message = "signed by alice"u8.ToArray();
            var request = new MegaNet.Api.V1.VerifyBatchRequest();
            for (int i = 0; i < 3; i++)
            {
                request.Signatures.Add(new MegaNet.Api.V1.SignatureItem
                {
                    PublicKey = Google.Protobuf.ByteString.CopyFrom(bob.Card.SigningKey),
                    Signature = Google.Protobuf.ByteString.CopyFrom(alice.SignWithIdentity(message)),
                    Message = Google.Protobuf.ByteString.CopyFrom(message),
                });
            }

            Assert.All((await client.Relay.VerifyBatchAsync(request)).SignatureValid, Assert.False);
            // And bob logs in to his mailbox: a one-item batch.
            Assert.Single((await client.FetchAsync(bob)).Messages);
            string after = await http.GetStringAsync($"http://127.0.0.1:{metricsPort}/metrics");

            const string Signatures = "meganet_verify_signatures_total{backend=\"simd\",purpose=";
            const string Batches = "meganet_verify_batch_size_count{backend=\"simd\",purpose=";
            // What an alert on forged envelopes and admission's batch sizes read did not move.
            Assert.Equal(0, Count(after, Signatures + "\"admission\",verdict=\"invalid\"}"));
            // There at 0 from admission's first batch, so increase() counts the first forgery (it was missing until one came).
            Assert.Contains(Signatures + "\"admission\",verdict=\"invalid\"} 0\n", before, StringComparison.Ordinal);
            Assert.Equal(1, Count(after, Signatures + "\"admission\",verdict=\"valid\"}"));
            Assert.Equal(Count(before, Batches + "\"admission\"}"), Count(after, Batches + "\"admission\"}"));
            // The client's question and the login are counted under their own purposes.
            Assert.Equal(Count(before, Signatures + "\"delegated\",verdict=\"invalid\"}") + 3, Count(after, Signatures + "\"delegated\",verdict=\"invalid\"}"));
            Assert.True(Count(after, Batches + "\"auth\"}") > Count(before, Batches + "\"auth\"}"), $"the mailbox login was not counted as auth:\n{after}");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }

    }

    [Fact]
    public void PrometheusText_ExportsMillisecondHistogramsInSecondsWithCumulativeBuckets()
    {
        // A tag of this test's own: the meter is process-wide and other tests record admission latency too.
        var tag = new KeyValuePair<string, object?>("test", Guid.NewGuid().ToString("N"));
        using var collector = new MegaNet.Node.Diagnostics.PrometheusExporter();
        foreach (double ms in new[] { 0.05, 3, 3, 7.5, 40_000 })
        {
            MegaNet.Core.Diagnostics.MegaNetMetrics.AdmissionLatency.Record(ms, tag);
        }

        string text = collector.Render();
        string series = $"test=\"{tag.Value}\"";
        const string Name = "meganet_admission_latency_seconds";
        Assert.Contains($"# HELP {Name} Admission latency, submit to receipt (seconds)\n# TYPE {Name} histogram\n", text);
        Assert.DoesNotContain("meganet_admission_latency_count", text, StringComparison.Ordinal); // no unitless name left
        Assert.DoesNotContain("summary", text, StringComparison.Ordinal);
        // le is inclusive and cumulative: 0.05 ms in the first bucket (0.1 ms), 3 ms twice by 5 ms, 7.5 ms by 10 ms,
        // 40 s past the last bound (30 s), so only in +Inf.
        Assert.Contains($"{Name}_bucket{{{series},le=\"0.0001\"}} 1\n", text);
        Assert.Contains($"{Name}_bucket{{{series},le=\"0.0025\"}} 1\n", text);
        Assert.Contains($"{Name}_bucket{{{series},le=\"0.005\"}} 3\n", text);
        Assert.Contains($"{Name}_bucket{{{series},le=\"0.01\"}} 4\n", text);
        Assert.Contains($"{Name}_bucket{{{series},le=\"30\"}} 4\n", text);
        Assert.Contains($"{Name}_bucket{{{series},le=\"+Inf\"}} 5\n", text);
        Assert.Contains($"{Name}_count{{{series}}} 5\n", text);
        double sum = double.Parse(text.Split('\n').Single(l => l.StartsWith($"{Name}_sum{{{series}}}", StringComparison.Ordinal)).Split(' ')[1], System.Globalization.CultureInfo.InvariantCulture);
        Assert.Equal(40.01355, sum, precision: 9);

        // Every histogram in the text: buckets rise with le, never fall, and end at +Inf equal to _count.
        foreach (IGrouping<string, string> buckets in text.Split('\n').Where(l => l.Contains("_bucket{", StringComparison.Ordinal))
            .GroupBy(l => System.Text.RegularExpressions.Regex.Replace(l, @"le=""[^""]*""\}.*", string.Empty)))
        {
            long[] counts = buckets.Select(l => long.Parse(l[(l.LastIndexOf(' ') + 1)..], System.Globalization.CultureInfo.InvariantCulture)).ToArray();
            Assert.True(counts.Zip(counts.Skip(1)).All(p => p.First <= p.Second), $"not cumulative: {buckets.Key}");
            Assert.EndsWith("le=\"+Inf\"}", buckets.Last()[..buckets.Last().LastIndexOf(' ')], StringComparison.Ordinal);
            string countLine = buckets.Key.Replace("_bucket{", "_count{", StringComparison.Ordinal).TrimEnd(',') + "} " + counts[^1];
            Assert.Contains(countLine.Replace("{}", string.Empty, StringComparison.Ordinal) + "\n", text);
        }
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

    // The value of one Prometheus series in a scrape, 0 when it is not listed.
    private static long Count(string text, string series) => text.Split('\n').FirstOrDefault(l => l.StartsWith(series + " ", StringComparison.Ordinal)) is { } line
        ? long.Parse(line[(series.Length + 1)..], System.Globalization.CultureInfo.InvariantCulture)
        : 0;
}
