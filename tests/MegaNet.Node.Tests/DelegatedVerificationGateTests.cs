using MegaNet.Core.Verification;
using MegaNet.Node.Services;

namespace MegaNet.Node.Tests;

/// <summary>Delegated verification runs on the gate's own threads, so its seconds of CPU never hold a thread-pool thread.</summary>
public sealed class DelegatedVerificationGateTests
{
    [Fact]
    public async Task Work_runs_on_a_gate_thread_not_the_thread_pool()
    {
        using var gate = new DelegatedVerificationGate(new ReferenceBatchVerifier(), ownsVerifier: true, slots: 2);
        (bool Pool, string? Name) first = await gate.RunAsync(Here, CancellationToken.None);
        (bool Pool, string? Name) second = await gate.RunAsync(Here, CancellationToken.None);
        Assert.False(first.Pool);
        Assert.Equal("meganet-verify-batch", first.Name);
        Assert.False(second.Pool);

        // Two slots busy at once each get a thread: neither call waits behind the other.
        using var both = new Barrier(2);
        Task<bool>[] together = [.. Enumerable.Range(0, 2).Select(_ => gate.RunAsync(() => both.SignalAndWait(TimeSpan.FromSeconds(30)), CancellationToken.None))];
        bool[] met = await Task.WhenAll(together);
        Assert.Equal([true, true], met);

        static (bool, string?) Here() => (Thread.CurrentThread.IsThreadPoolThread, Thread.CurrentThread.Name);
    }

    [Fact]
    public async Task A_cancelled_call_ends_as_cancelled()
    {
        using var gate = new DelegatedVerificationGate(new ReferenceBatchVerifier(), ownsVerifier: true, slots: 1);
        using var cancelled = new CancellationTokenSource();
        await cancelled.CancelAsync();
        bool ran = false;
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => gate.RunAsync(() => ran = true, cancelled.Token));
        Assert.False(ran);

        // Cancelled between steps, as VerifyBatch checks its token between chunks.
        using var midway = new CancellationTokenSource();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => gate.RunAsync<int>(() =>
        {
            midway.Cancel();
            midway.Token.ThrowIfCancellationRequested();
            return 0;
        }, midway.Token));
    }
}
