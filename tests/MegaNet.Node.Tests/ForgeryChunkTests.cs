using System.Net;
using Grpc.Core;
using MegaNet.Api.V1;
using MegaNet.Core.Verification;
using MegaNet.Node.Admission;
using MegaNet.Node.Hosting;
using MegaNet.Node.Verification;
using Microsoft.Extensions.Logging.Abstractions;

namespace MegaNet.Node.Tests;

/// <summary>
/// A flush window's clean lanes are verified in chunks that grow fourfold, and a site found forging in one chunk has its
/// later submissions of the window classified again (suspects' batch within its budget, refused beyond it). Before, a
/// site with no record yet had every forgery of its window bisected as one batch outside any budget.
/// </summary>
public sealed class ForgeryChunkTests
{
    private static readonly ClientAddress Honest = ClientAddress.From(IPAddress.Parse("10.0.0.1"))!.Value;
    private static readonly ClientAddress Forger = ClientAddress.From(IPAddress.Parse("10.0.0.2"))!.Value;

    [Fact]
    public async Task A_new_site_alone_in_a_window_gets_one_chunk_of_forgeries_verified_then_its_budget_applies()
    {
        const int Forged = 2_600;
        using IBatchVerifier simd = Simd();
        await using var admission = Start(simd, out HeldStore store);
        Envelope[] bad = Seal(Forged, forged: true);

        RpcException[] answers = await Answers(bad.Select(e => admission.SubmitAsync(e, Forger, CancellationToken.None)));

        (int verified, int refused) = VerifiedAndRefused(answers);
        Assert.Equal(verified, admission.Signatures);
        // The first chunk, then the budget: 1,000 less the chunk's bad ones is nothing left, so the rest are refused
        // unverified (unless the budget refilled at 100 a second meanwhile). Before: all 2,600 verified.
        Assert.InRange(verified, AdmissionPipeline.MainFirstChunk, AdmissionPipeline.MainFirstChunk + ForgerySuspects.Burst);
        Assert.True(refused >= Forged - AdmissionPipeline.MainFirstChunk - ForgerySuspects.Burst, $"{refused} refused unverified");
        Assert.Equal(0, store.Puts);
    }

    [Fact]
    public async Task A_new_site_sharing_a_window_gets_its_overflow_checked_against_its_budget()
    {
        const int Forged = 1_500;
        using IBatchVerifier simd = Simd();
        await using var admission = Start(simd, out HeldStore store);
        Envelope[] good = Seal(3, forged: false);
        Envelope[] bad = Seal(Forged, forged: true);

        Task<Receipt>[] honest = good.Select(e => admission.SubmitAsync(e, Honest, CancellationToken.None)).ToArray();
        RpcException[] answers = await Answers(bad.Select(e => admission.SubmitAsync(e, Forger, CancellationToken.None)));
        Assert.Equal(3, (await Task.WhenAll(honest)).Length);

        // 16 in the shared batch found the site forging; its overflow then went to the suspects' batch as far as its
        // budget (1,000 less those 16) allowed, and the rest was refused. Before: all 1,500 verified, 1,484 in one
        // overflow batch.
        (int verified, int refused) = VerifiedAndRefused(answers);
        Assert.Equal(3 + verified, admission.Signatures);
        Assert.InRange(verified, AdmissionPipeline.MainBatchPerSite, AdmissionPipeline.MainBatchPerSite + ForgerySuspects.Burst);
        Assert.True(refused >= Forged - AdmissionPipeline.MainBatchPerSite - ForgerySuspects.Burst, $"{refused} refused unverified");
        Assert.Equal(3, store.Puts);
    }

    [Fact]
    public async Task An_honest_window_larger_than_the_first_chunk_is_verified_in_two_growing_chunks_and_all_stored()
    {
        const int Count = 3_000;
        using IBatchVerifier simd = Simd();
        await using var admission = Start(simd, out HeldStore store);
        Envelope[] good = Seal(Count, forged: false);

        Receipt[] receipts = await FanOut.AllAsync(good, e => admission.SubmitAsync(e, Honest, CancellationToken.None));

        Assert.Equal(Count, receipts.Length);
        Assert.Equal(Count, store.Puts);
        Assert.Equal(Count, admission.Signatures);
        // 1,024, then up to 4,096: the rest in one.
        Assert.Equal(2, admission.Batches);
    }

    private static IBatchVerifier Simd() => VerifierCatalog.Create().Create("simd", new VerifierOptions { Threads = 1 });

    private static AdmissionPipeline Start(IBatchVerifier simd, out HeldStore store)
    {
        store = new HeldStore();
        store.Commit();
        // A two-second window: every submission of a test arrives within it.
        var options = new NodeOptions { FlushMicroseconds = 2_000_000, MaxBatch = 8_192 };
        return new AdmissionPipeline(simd, store, options, TimeProvider.System, NullLogger<AdmissionPipeline>.Instance);
    }

    private static Task<RpcException[]> Answers(IEnumerable<Task<Receipt>> calls) =>
        FanOut.AllAsync(calls, c => Assert.ThrowsAsync<RpcException>(() => c.WaitAsync(TimeSpan.FromMinutes(2))));

    // Bad signatures answer INVALID_ARGUMENT; those refused unverified RESOURCE_EXHAUSTED; nothing else.
    private static (int Verified, int Refused) VerifiedAndRefused(RpcException[] answers)
    {
        int verified = answers.Count(a => a.StatusCode == StatusCode.InvalidArgument);
        int refused = answers.Count(a => a.StatusCode == StatusCode.ResourceExhausted);
        Assert.Equal(answers.Length, verified + refused);
        return (verified, refused);
    }

    private static Envelope[] Seal(int count, bool forged) => ForgeryIsolationTests.Seal(count, forged);
}
