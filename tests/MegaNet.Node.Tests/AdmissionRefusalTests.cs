using Grpc.Core;
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
}
