using System.Diagnostics;
using System.Net;
using MegaNet.Core.Verification;
using MegaNet.Node.Hosting;
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

    [Fact]
    public void WouldRefuse_answers_as_TryEnter_would_and_takes_no_slot()
    {
        using var gate = new DelegatedVerificationGate(new ReferenceBatchVerifier(), ownsVerifier: true, slots: 2);
        ClientAddress a = Site("127.0.0.2"), b = Site("127.0.0.3");
        Assert.Equal(DelegatedVerificationGate.Refusal.None, gate.WouldRefuse(a, out _));
        Assert.Equal(0, gate.InUse);

        using DelegatedVerificationGate.Call? first = gate.TryEnter(a, 10, out _, out _);
        Assert.NotNull(first);
        // Site a holds its share (one of two slots); b may still come in, and asking took nothing.
        Assert.Equal(DelegatedVerificationGate.Refusal.SiteShare, gate.WouldRefuse(a, out int shareRetry));
        Assert.True(shareRetry > 0);
        Assert.Equal(DelegatedVerificationGate.Refusal.None, gate.WouldRefuse(b, out _));
        Assert.Equal(1, gate.InUse);

        using DelegatedVerificationGate.Call? second = gate.TryEnter(b, 10, out _, out _);
        Assert.NotNull(second);
        Assert.Equal(DelegatedVerificationGate.Refusal.Busy, gate.WouldRefuse(Site("127.0.0.4"), out _));
        Assert.Null(gate.TryEnter(Site("127.0.0.4"), 10, out DelegatedVerificationGate.Refusal refusal, out _));
        Assert.Equal(DelegatedVerificationGate.Refusal.Busy, refusal);
        Assert.Contains("already answering 2 VerifyBatch call(s)", gate.RefusalText(refusal), StringComparison.Ordinal);
    }

    [Fact]
    public void Early_refusals_percent_encode_their_message_as_grpc_message_requires()
    {
        Assert.Equal("plain text, retry after retry-after-ms.", EarlyVerifyBatchRefusal.PercentEncode("plain text, retry after retry-after-ms."));
        Assert.Equal("50 %25 %C3%BC%0A", EarlyVerifyBatchRefusal.PercentEncode("50 % ü\n"));
    }

    private static readonly long Second = Stopwatch.Frequency;

    private static ClientAddress Site(string ip) => ClientAddress.From(IPAddress.Parse(ip))!.Value;

    [Fact]
    public void Retry_hints_come_from_the_running_calls_pace()
    {
        using var gate = new DelegatedVerificationGate(new ReferenceBatchVerifier(), ownsVerifier: true, slots: 1);
        long t0 = 1_000 * Second;
        using DelegatedVerificationGate.Call a = gate.TryEnter(Site("203.0.113.1"), 65_536, t0, out _, out _)!;

        // No step done yet: as long again as it has run (here two seconds), not a fixed 250 ms.
        Assert.Null(gate.TryEnter(Site("203.0.113.2"), 10, t0 + 2 * Second, out DelegatedVerificationGate.Refusal why, out int retryAfterMs));
        Assert.Equal(DelegatedVerificationGate.Refusal.Busy, why);
        Assert.Equal(2_000, retryAfterMs);

        // A quarter done in four seconds: twelve more.
        Assert.True(a.Stepped(16_384, 0, t0 + 4 * Second, out _));
        Assert.Null(gate.TryEnter(Site("203.0.113.2"), 10, t0 + 4 * Second, out _, out retryAfterMs));
        Assert.Equal(12_000, retryAfterMs);

        // Bounded both ways: a slow call does not send clients away for minutes, a fresh one not for nothing.
        Assert.True(a.Stepped(16_385, 0, t0 + 60 * Second, out _));
        Assert.Null(gate.TryEnter(Site("203.0.113.2"), 10, t0 + 60 * Second, out _, out retryAfterMs));
        Assert.Equal(DelegatedVerificationGate.MaxRetryMs, retryAfterMs);
        a.Exit(t0 + 60 * Second);
        using DelegatedVerificationGate.Call b = gate.TryEnter(Site("203.0.113.1"), 10, t0 + 60 * Second, out _, out _)!;
        Assert.Null(gate.TryEnter(Site("203.0.113.2"), 10, t0 + 60 * Second, out _, out retryAfterMs));
        Assert.Equal(DelegatedVerificationGate.MinRetryMs, retryAfterMs);
    }

    [Fact]
    public void One_site_holds_at_most_half_the_slots()
    {
        using var gate = new DelegatedVerificationGate(new ReferenceBatchVerifier(), ownsVerifier: true, slots: 4);
        long now = 1_000 * Second;
        Assert.Equal(2, gate.PerSite);
        var calls = new List<DelegatedVerificationGate.Call>
        {
            gate.TryEnter(Site("2001:db8:1:1::1"), 100, now, out _, out _)!,
            gate.TryEnter(Site("2001:db8:1:2::1"), 100, now, out _, out _)!, // another /64 of the same /48
        };

        Assert.Null(gate.TryEnter(Site("2001:db8:1:3::1"), 100, now + Second, out DelegatedVerificationGate.Refusal why, out int retryAfterMs));
        Assert.Equal(DelegatedVerificationGate.Refusal.SiteShare, why);
        Assert.Equal(1_000, retryAfterMs);

        // Other sites take the rest; then the gate is full for everyone.
        calls.Add(gate.TryEnter(Site("203.0.113.1"), 100, now, out _, out _)!);
        calls.Add(gate.TryEnter(Site("203.0.113.2"), 100, now, out _, out _)!);
        Assert.DoesNotContain(null, calls);
        Assert.Null(gate.TryEnter(Site("203.0.113.3"), 100, now, out why, out _));
        Assert.Equal(DelegatedVerificationGate.Refusal.Busy, why);

        // Calls that end give their slot (and, owing nothing, their site's memory) back.
        calls.ForEach(c => c.Exit(now));
        calls[0].Exit(now); // twice: nothing more
        Assert.Equal(0, gate.InUse);
        Assert.Equal(0, gate.Sites);

        // With one slot, one site may hold it: the budget of invalid verdicts is what bounds its share then.
        using var single = new DelegatedVerificationGate(new ReferenceBatchVerifier(), ownsVerifier: true, slots: 1);
        Assert.Equal(1, single.PerSite);
    }

    [Fact]
    public void A_site_that_spent_its_budget_of_invalid_verdicts_stops_and_is_refused_unverified_until_it_refills()
    {
        using var gate = new DelegatedVerificationGate(new ReferenceBatchVerifier(), ownsVerifier: true, slots: 2);
        ClientAddress forger = Site("198.51.100.7");
        long now = 1_000 * Second;
        DelegatedVerificationGate.Call call = gate.TryEnter(forger, 65_536, now, out _, out _)!;
        int steps = DelegatedVerificationGate.BadBurst / 4_096;
        for (int i = 1; i < steps; i++)
        {
            Assert.True(call.Stepped(i * 4_096, 4_096, now, out _));
        }

        // The step that spends the burst says stop, and when there is room again.
        Assert.False(call.Stepped(steps * 4_096, 4_096, now, out int retryAfterMs));
        Assert.Equal(1_000 / DelegatedVerificationGate.BadPerSecond, retryAfterMs);
        call.Exit(now);

        // Refused unverified while the budget is spent, though a slot is free; other sites are not.
        Assert.Null(gate.TryEnter(forger, 10, now, out DelegatedVerificationGate.Refusal why, out retryAfterMs));
        Assert.Equal(DelegatedVerificationGate.Refusal.BadBudget, why);
        Assert.True(retryAfterMs > 0);
        using (gate.TryEnter(Site("198.51.100.8"), 10, now, out why, out _))
        {
            Assert.Equal(DelegatedVerificationGate.Refusal.None, why);
        }

        // The site is remembered while it owes, and let in again once the budget refilled enough.
        Assert.Equal(1, gate.Sites);
        DelegatedVerificationGate.Call again = gate.TryEnter(forger, 10, now + (retryAfterMs * Second / 1000), out why, out _)!;
        Assert.Equal(DelegatedVerificationGate.Refusal.None, why);
        again.Exit(now + (100 * Second));
        Assert.Equal(0, gate.Sites);
    }
}
