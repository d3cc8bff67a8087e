using System.Diagnostics;
using System.Text;
using MegaNet.Api;
using MegaNet.Api.V1;
using MegaNet.Core.Verification;
using MegaNet.Node.Admission;
using MegaNet.Node.Hosting;
using MegaNet.Node.Verification;
using Microsoft.Extensions.Logging.Abstractions;

namespace MegaNet.Node.Tests;

/// <summary>Concurrent submissions coalesce into verification batches that flush at <c>MaxBatch</c> items or after
/// <c>FlushMicroseconds</c>, whichever comes first (node statistics from <c>Status</c>).</summary>
public sealed class AdmissionBatchingTests
{
    [Fact]
    public async Task A_full_batch_flushes_without_waiting_for_its_window()
    {
        // A one-second window: twelve submissions must go out as two full batches of six, long before it would end.
        // Batches that waited for their window take a second or more every time; a loaded machine can make batches
        // that did not wait take that long too, now and then. So a slow run is done again on a fresh node, at most
        // three runs in all: load only adds time, so a fast run cannot come from batches that waited.
        var slow = new List<string>();
        for (int run = 1; ; run++)
        {
            (Receipt[] receipts, TimeSpan took, StatusResponse status) = await SubmitConcurrentlyAsync(maxBatch: 6, count: 12);

            Assert.Equal(12, receipts.Select(r => r.LogIndex).Distinct().Count());
            Assert.Equal(12ul, status.SignaturesVerified);
            // Two full batches; a third only if the calls reached the node so far apart that a window started early.
            Assert.InRange(status.BatchesVerified, 2ul, 3ul);
            if (status.BatchesVerified == 3 || took < TimeSpan.FromSeconds(0.9))
            {
                return;
            }

            slow.Add($"{took.TotalMilliseconds:F0} ms");
            Assert.True(run < 3, $"two full batches took {string.Join(", ", slow)} in {run} runs: they waited for the window");
        }
    }

    [Fact]
    public async Task Submissions_within_the_window_share_one_batch()
    {
        (_, TimeSpan took, StatusResponse status) = await SubmitConcurrentlyAsync(maxBatch: 4_096, count: 5);

        Assert.Equal(5ul, status.SignaturesVerified);
        Assert.Equal(1ul, status.BatchesVerified);
        // The batch was not full, so it waited out its window (sleeping in slices, not ending at the first one).
        Assert.True(took >= TimeSpan.FromSeconds(0.95), $"the batch flushed after {took.TotalMilliseconds:F0} ms, before its 1 s window");
    }

    [Fact]
    public async Task Submissions_that_waited_behind_a_batch_are_not_held_for_another_window()
    {
        // A one-second window. The first submission's batch blocks in the verifier; three more arrive meanwhile and wait
        // longer than a window. Once the verifier is free they go at once: before, their batch waited another full
        // window, counted from when the verifier came back for it. A run only shows that when it is fast (load adds
        // time, never removes it), so a slow one is done again, at most three in all.
        var slow = new List<string>();
        for (int run = 1; ; run++)
        {
            using IBatchVerifier simd = VerifierCatalog.Create().Create("simd", new VerifierOptions { Threads = 1 });
            using var verifier = new BlockingFirstCall(simd);
            var store = new HeldStore();
            store.Commit();
            var options = new NodeOptions { FlushMicroseconds = 1_000_000, MaxBatch = 4_096 };
            await using var admission = new AdmissionPipeline(verifier, store, options, TimeProvider.System, NullLogger<AdmissionPipeline>.Instance);
            Envelope[] envelopes = Seal(4);

            Task<Receipt> firstCall = admission.SubmitAsync(envelopes[0], null, CancellationToken.None);
            Assert.True(verifier.Entered.Wait(TimeSpan.FromMinutes(1)), "the first batch never reached the verifier");
            Task<Receipt>[] waiting = envelopes[1..].Select(e => admission.SubmitAsync(e, null, CancellationToken.None)).ToArray();
            await Task.Delay(1_200);

            var clock = Stopwatch.StartNew();
            verifier.Release.Set();
            await firstCall.WaitAsync(TimeSpan.FromMinutes(1));
            await Task.WhenAll(waiting).WaitAsync(TimeSpan.FromMinutes(1));
            TimeSpan took = clock.Elapsed;
            Assert.Equal(2, verifier.Calls);
            if (took < TimeSpan.FromSeconds(0.9))
            {
                return;
            }

            slow.Add($"{took.TotalMilliseconds:F0} ms");
            Assert.True(run < 3, $"the waiting submissions took {string.Join(", ", slow)} after the verifier was free, in {run} runs: they waited for another window");
        }
    }

    /// <summary>The real backend, except that its first call waits for <see cref="Release"/>; made with
    /// <c>armed: false</c>, its first call after <see cref="Arm"/>.</summary>
    internal sealed class BlockingFirstCall(IBatchVerifier inner, bool armed = true) : IBatchVerifier
    {
        private int _calls;
        private int _armed = armed ? 1 : 0;

        public ManualResetEventSlim Entered { get; } = new();

        public ManualResetEventSlim Release { get; } = new();

        public int Calls => Volatile.Read(ref _calls);

        public void Arm() => Volatile.Write(ref _armed, 1);

        public string Name => inner.Name;

        public string Description => inner.Description;

        public VerificationRule Rule => inner.Rule;

        public void Verify(SignatureBatch batch, int start, int count, Span<bool> verdicts)
        {
            Interlocked.Increment(ref _calls);
            if (Interlocked.Exchange(ref _armed, 0) == 1)
            {
                Entered.Set();
                Release.Wait(TimeSpan.FromMinutes(2));
            }

            inner.Verify(batch, start, count, verdicts);
        }

        public void Dispose()
        {
            Entered.Dispose();
            Release.Dispose();
        }
    }

    /// <summary>Submits <paramref name="count"/> envelopes from distinct senders at once to a node whose flush window is
    /// one second; returns the receipts, how long they took and the node's batch statistics afterwards.</summary>
    private static async Task<(Receipt[] Receipts, TimeSpan Took, StatusResponse Status)> SubmitConcurrentlyAsync(int maxBatch, int count)
    {
        await using TestNode node = await TestNode.StartAsync(o =>
        {
            o.MaxBatch = maxBatch;
            o.FlushMicroseconds = 1_000_000;
        });
        using MegaNetClient client = node.Client();
        await client.Relay.StatusAsync(new StatusRequest());
        Envelope[] envelopes = Seal(count);

        var clock = Stopwatch.StartNew();
        Receipt[] receipts = await Task.WhenAll(envelopes.Select(e => client.Relay.SubmitAsync(new SubmitRequest { Envelope = e }).ResponseAsync));
        TimeSpan took = clock.Elapsed;

        StatusResponse status = await client.Relay.StatusAsync(new StatusRequest());
        node.AssertNoServerErrors();
        return (receipts, took, status);
    }

    /// <summary>Seals <paramref name="count"/> envelopes from distinct senders to one recipient.</summary>
    internal static Envelope[] Seal(int count, int powBits = 0, byte[]? powSeed = null)
    {
        using Identity recipient = Identity.Create();
        var envelopes = new Envelope[count];
        for (int i = 0; i < count; i++)
        {
            using Identity sender = Identity.Create();
            envelopes[i] = EnvelopeFormat.Seal(sender, recipient.Card, Encoding.UTF8.GetBytes($"message {i}"), "text/plain; charset=utf-8", null,
                DateTimeOffset.UtcNow.AddDays(1), powBits, powSeed: powSeed);
        }

        return envelopes;
    }
}
