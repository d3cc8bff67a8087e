using System.Net;
using System.Text;
using Grpc.Core;
using MegaNet.Api;
using MegaNet.Api.V1;
using MegaNet.Node.Admission;
using MegaNet.Node.Hosting;

namespace MegaNet.Node.Tests;

/// <summary>
/// A client address that sent a bad signature has its next submissions verified in a batch of their own, and is refused
/// unverified once it sends more than <c>ForgerySuspects.BadPerSecond</c> bad signatures a second:
/// its forgeries must not make the honest clients' batch pay for bisection (measured: 100 forged envelopes a second
/// cut eight honest streaming clients from 52,000 to 28,000 accepted/s before). Two loopback addresses play two clients.
/// </summary>
public sealed class ForgeryIsolationTests
{
    private static readonly IPAddress Honest = IPAddress.Loopback;
    private static readonly IPAddress Forger = IPAddress.Parse("127.0.0.2");

    [Fact]
    public async Task After_a_bad_signature_that_address_is_checked_apart_and_the_rest_still_share_a_batch()
    {
        await using TestNode node = await TestNode.StartAsync(o => o.FlushMicroseconds = 1_000_000);
        using var honest = new MegaNetClient(node.Address, localAddress: Honest);
        using var forger = new MegaNetClient(node.Address, localAddress: Forger);
        await honest.Relay.StatusAsync(new StatusRequest());
        await forger.Relay.StatusAsync(new StatusRequest());

        // First offence: in a batch like anyone's, and refused.
        RpcException first = await Assert.ThrowsAsync<RpcException>(async () => await forger.Relay.SubmitAsync(new SubmitRequest { Envelope = Seal(1, forged: true)[0] }));
        Assert.Equal(StatusCode.InvalidArgument, first.StatusCode);
        StatusResponse before = await honest.Relay.StatusAsync(new StatusRequest());

        // One flush window: five honest envelopes, and from the forger two forged and one genuine.
        Envelope[] good = Seal(6, forged: false);
        Envelope[] bad = Seal(2, forged: true);
        Task<Receipt>[] honestCalls = good[..5].Select(e => honest.Relay.SubmitAsync(new SubmitRequest { Envelope = e }).ResponseAsync).ToArray();
        Task<Receipt> forgersGenuine = forger.Relay.SubmitAsync(new SubmitRequest { Envelope = good[5] }).ResponseAsync;
        Task<Receipt>[] forgeries = bad.Select(e => forger.Relay.SubmitAsync(new SubmitRequest { Envelope = e }).ResponseAsync).ToArray();

        Assert.Equal(5, (await Task.WhenAll(honestCalls)).Select(r => r.LogIndex).Distinct().Count());
        await forgersGenuine; // still accepted: the address is verified apart, not refused
        foreach (Task<Receipt> f in forgeries)
        {
            RpcException e = await Assert.ThrowsAsync<RpcException>(() => f);
            Assert.Equal(StatusCode.InvalidArgument, e.StatusCode);
        }

        StatusResponse after = await honest.Relay.StatusAsync(new StatusRequest());
        Assert.Equal(8ul, after.SignaturesVerified - before.SignaturesVerified);
        // The honest five in one batch, the forger's three in another. Mixed in, all eight went in one batch, and its
        // two bad signatures made the honest five pay for the bisection that found them.
        Assert.Equal(2ul, after.BatchesVerified - before.BatchesVerified);
        Assert.Equal(6, after.TreeSize);
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task An_address_past_its_budget_of_bad_signatures_is_refused_unverified_and_others_are_not()
    {
        await using TestNode node = await TestNode.StartAsync();
        using var honest = new MegaNetClient(node.Address, localAddress: Honest);
        using var forger = new MegaNetClient(node.Address, localAddress: Forger);
        Envelope[] bad = Seal(1_000, forged: true);
        Envelope good = Seal(1, forged: false)[0];

        // Far more bad signatures than the budget refills while they arrive: some are verified and refused as bad,
        // the rest refused unverified, saying why and when to come back.
        RpcException[] answers = await Task.WhenAll(bad.Select(async e =>
            await Assert.ThrowsAsync<RpcException>(async () => await forger.Relay.SubmitAsync(new SubmitRequest { Envelope = e }))));
        RpcException[] unverified = answers.Where(a => a.StatusCode == StatusCode.ResourceExhausted).ToArray();
        Assert.Equal(answers.Length, unverified.Length + answers.Count(a => a.StatusCode == StatusCode.InvalidArgument));
        Assert.True(answers.Length - unverified.Length >= ForgerySuspects.BadPerSecond, $"only {answers.Length - unverified.Length} verified");
        Assert.NotEmpty(unverified);
        Assert.All(unverified, r =>
        {
            Assert.Contains("signatures did not verify came from this network address", r.Status.Detail, StringComparison.Ordinal);
            Assert.InRange(int.Parse(r.Trailers.GetValue("retry-after-ms")!, System.Globalization.CultureInfo.InvariantCulture), 1, 60_000);
        });

        // Another address is not held to it.
        Assert.NotNull(await honest.Relay.SubmitAsync(new SubmitRequest { Envelope = good }));
        Assert.Equal(1, (await honest.Relay.StatusAsync(new StatusRequest())).TreeSize);
        node.AssertNoServerErrors();
    }

    [Fact]
    public void The_budget_allows_bad_signatures_at_its_rate_and_the_address_is_forgotten_after_the_hold()
    {
        var suspects = new ForgerySuspects();
        ClientAddress a = ClientAddress.From(IPAddress.Parse("198.51.100.1"))!.Value;
        ClientAddress b = ClientAddress.From(IPAddress.Parse("198.51.100.2"))!.Value;
        long t0 = 1_000 * System.Diagnostics.Stopwatch.Frequency;
        long Seconds(double s) => t0 + (long)(s * System.Diagnostics.Stopwatch.Frequency);

        Assert.Equal(ForgerySuspects.Lane.Clean, suspects.Classify(a, t0, out _));
        Assert.Equal(ForgerySuspects.Lane.Clean, suspects.Classify(null, t0, out _));
        suspects.Add(a, t0);
        Assert.Equal(ForgerySuspects.Lane.Suspect, suspects.Classify(a, t0, out _));
        Assert.Equal(ForgerySuspects.Lane.Clean, suspects.Classify(b, t0, out _));

        // The whole burst spent at once, and three more: refused until the budget is back above one.
        for (int i = 1; i < ForgerySuspects.BadPerSecond + 3; i++)
        {
            suspects.Add(a, t0);
        }

        Assert.Equal(ForgerySuspects.Lane.Refused, suspects.Classify(a, t0, out int retryAfterMs));
        Assert.Equal(40, retryAfterMs); // 4 signatures owed at 100 a second
        Assert.Equal(ForgerySuspects.Lane.Refused, suspects.Classify(a, Seconds(0.035), out _));
        Assert.Equal(ForgerySuspects.Lane.Suspect, suspects.Classify(a, Seconds(0.045), out _));

        // Suspect until the hold has passed since the last bad signature, then a clean slate.
        Assert.Equal(ForgerySuspects.Lane.Suspect, suspects.Classify(a, Seconds(59), out _));
        Assert.Equal(ForgerySuspects.Lane.Clean, suspects.Classify(a, Seconds(60.5), out _));
    }

    [Fact]
    public void A_full_table_drops_expired_addresses_first_then_everything()
    {
        var suspects = new ForgerySuspects(capacity: 2);
        ClientAddress[] addresses = [.. Enumerable.Range(1, 3).Select(i => ClientAddress.From(IPAddress.Parse($"198.51.100.{i}"))!.Value)];
        long t0 = 1_000 * System.Diagnostics.Stopwatch.Frequency;
        long later = t0 + (70 * System.Diagnostics.Stopwatch.Frequency);
        suspects.Add(addresses[0], t0);
        suspects.Add(addresses[1], later);
        suspects.Add(addresses[2], later); // the first has expired: it goes, the second stays
        Assert.Equal(2, suspects.Count);
        Assert.Equal(ForgerySuspects.Lane.Suspect, suspects.Classify(addresses[1], later, out _));

        suspects.Add(addresses[0], later); // none expired: the table starts again
        Assert.Equal(1, suspects.Count);
        Assert.Equal(ForgerySuspects.Lane.Suspect, suspects.Classify(addresses[0], later, out _));
    }

    private static Envelope[] Seal(int count, bool forged)
    {
        Envelope[] envelopes = AdmissionBatchingTests.Seal(count);
        if (forged)
        {
            foreach (Envelope e in envelopes)
            {
                // Well-formed, and the signature no longer covers it: only the batch equation can tell.
                e.ExpiresUnixMs += 1;
            }
        }

        return envelopes;
    }
}
