using System.Diagnostics.Metrics;
using System.Net;
using Grpc.Core;
using MegaNet.Api.V1;
using MegaNet.Core.Diagnostics;
using MegaNet.Core.Verification;
using MegaNet.Node.Admission;
using MegaNet.Node.Hosting;
using MegaNet.Node.Verification;
using MegaNet.Store;
using Microsoft.Extensions.Logging.Abstractions;

using SignedTreeHead = MegaNet.Store.SignedTreeHead;

namespace MegaNet.Node.Tests;

/// <summary>
/// A flush window's submissions can be verified in up to three lanes, each handed to the store before the next is
/// verified. When a later lane's verification throws, the earlier lanes' submissions are the store's: their buffers
/// stay theirs until the commit, and their answers come from the store.
/// </summary>
public sealed class AdmissionLaneFailureTests
{
    [Fact]
    public async Task A_lane_that_fails_after_an_earlier_lane_went_to_the_store_leaves_that_lane_to_the_store()
    {
        // Before: every submission of the window was answered "nothing was stored" and its pooled buffer returned,
        // including the main lane's, which the store still held (and was about to commit).
        using IBatchVerifier simd = VerifierCatalog.Create().Create("simd", new VerifierOptions { Threads = 1 });
        var verifier = new FailingOnSecondCall(simd);
        var store = new HeldStore();
        var options = new NodeOptions { FlushMicroseconds = 1_000_000, MaxBatch = 4_096 };
        await using var admission = new AdmissionPipeline(verifier, store, options, TimeProvider.System, NullLogger<AdmissionPipeline>.Instance);
        try
        {
            await LaneFailureAsync(admission, store);
        }
        finally
        {
            // Disposing admission waits for the store: a failed assertion must not leave it held.
            store.Commit();
        }
    }

    private static async Task LaneFailureAsync(AdmissionPipeline admission, HeldStore store)
    {

        // One window, shared by two sites: one envelope from A, and from B more than fit in the shared batch, so B's
        // last ones go into a second (overflow) lane, whose verification fails.
        ClientAddress a = ClientAddress.From(IPAddress.Parse("10.0.0.1"))!.Value, b = ClientAddress.From(IPAddress.Parse("10.0.0.2"))!.Value;
        int fromB = AdmissionPipeline.MainBatchPerSite + 4;
        Envelope[] envelopes = AdmissionBatchingTests.Seal(1 + fromB);
        Task<Receipt>[] calls = envelopes.Select((e, i) => admission.SubmitAsync(e, i == 0 ? a : b, CancellationToken.None)).ToArray();

        IReadOnlyList<PutRequest> held = await store.Requested.Task.WaitAsync(TimeSpan.FromMinutes(1));
        Assert.Equal(1 + AdmissionPipeline.MainBatchPerSite, held.Count);
        byte[][] heldBytes = held.Select(r => r.Envelope.ToArray()).ToArray();
        // The overflow lane (B's last four) is answered with the failure; the main lane, held by the store, is not.
        Task<Receipt>[] overflowCalls = calls[^4..];
        Task<Receipt>[] mainCalls = calls[..^4];
        await Task.WhenAll(overflowCalls.Select(c => c.ContinueWith(_ => { }, TaskScheduler.Default))).WaitAsync(TimeSpan.FromMinutes(1));
        foreach (Task<Receipt> c in overflowCalls)
        {
            RpcException e = await Assert.ThrowsAsync<RpcException>(() => c);
            Assert.Equal(StatusCode.Internal, e.StatusCode);
        }

        // Nothing answers the main lane while the store holds it; a wrong answer that came later than this look is
        // caught below, where each of its calls must end with a receipt.
        Assert.All(mainCalls, c => Assert.False(c.IsCompleted, $"a main-lane call was answered before the store committed: {c.Status} {c.Exception?.InnerException?.Message}"));

        // The store commits the main lane, reading the bytes it was given; its submissions get their receipts.
        Assert.Equal(heldBytes, held.Select(r => r.Envelope.ToArray()));
        store.Commit();
        await Task.WhenAll(mainCalls.Select(c => c.ContinueWith(_ => { }, TaskScheduler.Default))).WaitAsync(TimeSpan.FromMinutes(1));
        Assert.All(mainCalls, c => Assert.True(c.IsCompletedSuccessfully, $"a main-lane call ended {c.Status}: {c.Exception?.InnerException?.Message}"));
        Receipt[] receipts = await Task.WhenAll(mainCalls);
        Assert.Equal(Enumerable.Range(0, held.Count).Select(i => (long)i), receipts.Select(r => r.LogIndex).Order());
    }

    [Fact]
    public async Task Each_envelope_of_a_batch_whose_verification_threw_is_counted_rejected_as_internal()
    {
        // Before, they were answered INTERNAL without going through Reject, so meganet.admission.rejected counted none
        // of them: a verifier failing on every batch left no trace in the rejection counts.
        var verifier = new AlwaysFailing();
        long internalRejections = 0;
        Counter<long> rejected = MegaNetMetrics.EnvelopesRejected; // created before the listener starts looking
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (ReferenceEquals(instrument, rejected))
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((_, measurement, tags, _) =>
        {
            // Only the rejections of this test's pipeline: its batcher thread is the one its verifier was called on
            // (the meter is the process's, and other tests' pipelines reject envelopes meanwhile).
            if (Environment.CurrentManagedThreadId == Volatile.Read(ref verifier.ThreadId) && tags.ToArray().Contains(new("reason", "internal")))
            {
                Interlocked.Add(ref internalRejections, measurement);
            }
        });
        listener.Start();

        var options = new NodeOptions { FlushMicroseconds = 100_000, MaxBatch = 4_096 };
        await using var admission = new AdmissionPipeline(verifier, new HeldStore(), options, TimeProvider.System, NullLogger<AdmissionPipeline>.Instance);
        Envelope[] envelopes = AdmissionBatchingTests.Seal(5);
        Task<Receipt>[] calls = envelopes.Select(e => admission.SubmitAsync(e, null, CancellationToken.None)).ToArray();
        foreach (Task<Receipt> call in calls)
        {
            RpcException e = await Assert.ThrowsAsync<RpcException>(() => call.WaitAsync(TimeSpan.FromMinutes(1)));
            Assert.Equal(StatusCode.Internal, e.StatusCode);
        }

        Assert.Equal(envelopes.Length, Interlocked.Read(ref internalRejections));
    }

    /// <summary>A backend whose every call throws; remembers the thread it was called on.</summary>
    private sealed class AlwaysFailing : IBatchVerifier
    {
        public int ThreadId = -1;

        public string Name => "always-failing";

        public string Description => "throws on every call";

        public VerificationRule Rule => VerificationRule.MegaNet;

        public void Verify(SignatureBatch batch, int start, int count, Span<bool> verdicts)
        {
            Volatile.Write(ref ThreadId, Environment.CurrentManagedThreadId);
            throw new InvalidOperationException("injected verifier fault");
        }

        public void Dispose()
        {
        }
    }

    /// <summary>The real backend, except that its second call throws (a fault in the overflow lane).</summary>
    private sealed class FailingOnSecondCall(IBatchVerifier inner) : IBatchVerifier
    {
        private int _calls;

        public string Name => inner.Name;

        public string Description => inner.Description;

        public VerificationRule Rule => inner.Rule;

        public void Verify(SignatureBatch batch, int start, int count, Span<bool> verdicts)
        {
            if (Interlocked.Increment(ref _calls) == 2)
            {
                throw new InvalidOperationException("injected verifier fault");
            }

            inner.Verify(batch, start, count, verdicts);
        }

        public void Dispose()
        {
        }
    }
}
