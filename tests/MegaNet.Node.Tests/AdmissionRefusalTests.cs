using Grpc.Core;
using MegaNet.Api;
using MegaNet.Api.V1;
using MegaNet.Core.Verification;
using MegaNet.Node.Admission;
using MegaNet.Node.Hosting;
using MegaNet.Node.Verification;
using Microsoft.Extensions.Logging.Abstractions;

namespace MegaNet.Node.Tests;

/// <summary>Refusals come fastest when the node is busiest (a flood past the token bucket, a full queue), so admission
/// hands them back as faulted tasks without throwing: before, each cost a throw and a catch (tens of µs with its stack
/// trace), two for a malformed envelope.</summary>
public sealed class AdmissionRefusalTests
{
    [Fact]
    public async Task Refusals_are_answered_without_throwing_inside_admission()
    {
        using IBatchVerifier simd = VerifierCatalog.Create().Create("simd", new VerifierOptions { Threads = 1 });
        var store = new HeldStore();
        store.Commit();
        // One token per key and a second-long window: the second envelope of each sender is refused by its bucket.
        var options = new NodeOptions { SubmitRatePerKey = 0.001, SubmitBurst = 1, FlushMicroseconds = 1_000 };
        await using var admission = new AdmissionPipeline(simd, store, options, TimeProvider.System, NullLogger<AdmissionPipeline>.Instance);
        Envelope[] envelopes = AdmissionBatchingTests.Seal(2);
        Envelope sameSender = envelopes[0].Clone();
        sameSender.ExpiresUnixMs += 1_000; // another envelope, same sending key (its signature no longer matters: refused before)
        Envelope malformed = envelopes[1].Clone();
        malformed.Version = 7;
        await admission.SubmitAsync(envelopes[0], null, CancellationToken.None);

        int thrown = 0;
        int testThread = Environment.CurrentManagedThreadId;
        void Count(object? sender, System.Runtime.ExceptionServices.FirstChanceExceptionEventArgs e)
        {
            if (e.Exception is RpcException && Environment.CurrentManagedThreadId == testThread)
            {
                Interlocked.Increment(ref thrown);
            }
        }

        AppDomain.CurrentDomain.FirstChanceException += Count;
        Task<Receipt> limited, refusedShape;
        try
        {
            limited = admission.SubmitAsync(sameSender, null, CancellationToken.None);
            refusedShape = admission.SubmitAsync(malformed, null, CancellationToken.None);
        }
        finally
        {
            AppDomain.CurrentDomain.FirstChanceException -= Count;
        }

        Assert.True(limited.IsFaulted && refusedShape.IsFaulted, "both refused at once");
        Assert.Equal(0, thrown);
        Assert.Equal(StatusCode.ResourceExhausted, (await Assert.ThrowsAsync<RpcException>(() => limited)).StatusCode);
        RpcException version = await Assert.ThrowsAsync<RpcException>(() => refusedShape);
        Assert.Equal(StatusCode.InvalidArgument, version.StatusCode);
        Assert.Contains("Envelope version 7 is not supported", version.Status.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_token_refusal_after_the_store_took_a_group_is_answered_without_throwing_in_the_batcher()
    {
        // Two envelopes of a key with one token pass the early look (no bucket yet) and meet in one batch; the second is
        // refused its token there. A group was stored since its replay lookup, so the store is asked again whether it
        // holds the envelope now (a copy whose original was stored meanwhile): it does not, and the rate refusal came
        // as a throw on the batcher thread, which refuses a flood past a key's burst in every window of a loaded node.
        using IBatchVerifier simd = VerifierCatalog.Create().Create("simd", new VerifierOptions { Threads = 1 });
        using var verifier = new AdmissionBatchingTests.BlockingFirstCall(simd);
        var store = new HeldStore();
        store.Commit();
        var options = new NodeOptions { SubmitRatePerKey = 0.001, SubmitBurst = 1, FlushMicroseconds = 1_000 };
        await using var admission = new AdmissionPipeline(verifier, store, options, TimeProvider.System, NullLogger<AdmissionPipeline>.Instance);
        Envelope[] others = AdmissionBatchingTests.Seal(1);
        using Identity sender = Identity.Create(), recipient = Identity.Create();
        Envelope[] sameKey = AdmissionLimitsTests.SealFromOne(sender, recipient, 2);

        int thrown = 0;
        void Count(object? sender, System.Runtime.ExceptionServices.FirstChanceExceptionEventArgs e)
        {
            if (e.Exception is RpcException && Thread.CurrentThread.Name == "mn-admission")
            {
                Interlocked.Increment(ref thrown);
            }
        }

        AppDomain.CurrentDomain.FirstChanceException += Count;
        try
        {
            Task<Receipt> held = admission.SubmitAsync(others[0], null, CancellationToken.None);
            Assert.True(verifier.Entered.Wait(TimeSpan.FromMinutes(1)), "the first batch never reached the verifier");
            long mark = store.LookupMark;
            Task<Receipt>[] calls = [.. sameKey.Select(e => admission.SubmitAsync(e, null, CancellationToken.None))];
            verifier.Release.Set();
            await held.WaitAsync(TimeSpan.FromMinutes(1));
            Assert.NotEqual(mark, store.LookupMark);
            await calls[0].WaitAsync(TimeSpan.FromMinutes(1));
            RpcException refused = await Assert.ThrowsAsync<RpcException>(() => calls[1].WaitAsync(TimeSpan.FromMinutes(1)));
            Assert.Equal(StatusCode.ResourceExhausted, refused.StatusCode);
        }
        finally
        {
            AppDomain.CurrentDomain.FirstChanceException -= Count;
        }

        Assert.Equal(0, thrown);
    }
}
