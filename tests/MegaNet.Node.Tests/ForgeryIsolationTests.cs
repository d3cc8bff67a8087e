using System.Net;
using System.Text;
using Grpc.Core;
using MegaNet.Api;
using MegaNet.Api.V1;
using MegaNet.Node.Admission;
using MegaNet.Node.Hosting;
using Microsoft.Extensions.DependencyInjection;

namespace MegaNet.Node.Tests;

/// <summary>
/// A client address that sent a bad signature has its next submissions verified in a batch of their own, and is refused
/// unverified once it sends more bad signatures than its budget allows:
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
        await using var sites = await TwoSites.StartAsync();
        (TestNode node, MegaNetClient honest, MegaNetClient forger) = (sites.Node, sites.Honest, sites.Forger);

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
    public async Task A_site_not_yet_suspect_puts_only_a_few_submissions_into_the_batch_it_shares_with_others()
    {
        await using var sites = await TwoSites.StartAsync();
        (TestNode node, MegaNetClient honest, MegaNetClient forger) = (sites.Node, sites.Honest, sites.Forger);
        Envelope[] good = Seal(3, forged: false);
        Envelope[] bad = Seal(40, forged: true);
        StatusResponse before = await honest.Relay.StatusAsync(new StatusRequest());

        // One flush window: three honest envelopes and forty forged ones from a site with no record yet.
        Task<Receipt>[] honestCalls = good.Select(e => honest.Relay.SubmitAsync(new SubmitRequest { Envelope = e }).ResponseAsync).ToArray();
        Task<Receipt>[] forgeries = bad.Select(e => forger.Relay.SubmitAsync(new SubmitRequest { Envelope = e }).ResponseAsync).ToArray();
        Assert.Equal(3, (await Task.WhenAll(honestCalls)).Length);
        foreach (Task<Receipt> f in forgeries)
        {
            Assert.Equal(StatusCode.InvalidArgument, (await Assert.ThrowsAsync<RpcException>(() => f)).StatusCode);
        }

        // The shared batch held the three and at most 16 of the forger's; the others went in a second batch. Before,
        // all 43 went in one, and the honest three waited for the bisection of forty forgeries.
        StatusResponse after = await honest.Relay.StatusAsync(new StatusRequest());
        Assert.Equal(43ul, after.SignaturesVerified - before.SignaturesVerified);
        Assert.InRange(node.Services.GetRequiredService<AdmissionPipeline>().Overflowed, 1, 40 - AdmissionPipeline.MainBatchPerSite);
        Assert.Equal(3, after.TreeSize);
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task An_address_past_its_budget_of_bad_signatures_is_refused_unverified_and_others_are_not()
    {
        await using var sites = await TwoSites.StartAsync();
        (TestNode node, MegaNetClient honest, MegaNetClient forger) = (sites.Node, sites.Honest, sites.Forger);
        RpcException first = await Assert.ThrowsAsync<RpcException>(async () => await forger.Relay.SubmitAsync(new SubmitRequest { Envelope = Seal(1, forged: true)[0] }));
        Assert.Equal(StatusCode.InvalidArgument, first.StatusCode);
        Envelope[] bad = Seal(ForgerySuspects.Burst + 500, forged: true);
        Envelope good = Seal(1, forged: false)[0];

        // More bad signatures at once than the burst: the burst's worth is verified (each takes from the budget until
        // its verdict), the rest refused unverified, saying why and when to come back.
        StatusResponse before = await honest.Relay.StatusAsync(new StatusRequest());
        var clock = System.Diagnostics.Stopwatch.StartNew();
        RpcException[] answers = await FanOut.AllAsync(bad, e =>
            Assert.ThrowsAsync<RpcException>(async () => await forger.Relay.SubmitAsync(new SubmitRequest { Envelope = e })));
        double seconds = clock.Elapsed.TotalSeconds;
        StatusResponse after = await honest.Relay.StatusAsync(new StatusRequest());
        RpcException[] unverified = answers.Where(a => a.StatusCode == StatusCode.ResourceExhausted).ToArray();
        int verified = answers.Count(a => a.StatusCode == StatusCode.InvalidArgument);
        Assert.Equal(answers.Length, unverified.Length + verified);
        Assert.Equal((ulong)verified, after.SignaturesVerified - before.SignaturesVerified);
        Assert.InRange(verified, ForgerySuspects.Burst - 1, ForgerySuspects.Burst + (int)Math.Ceiling(seconds * ForgerySuspects.BadPerSecond));
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
    public void The_budget_allows_bad_signatures_at_its_rate_valid_ones_give_back_and_the_address_is_forgotten_after_the_hold()
    {
        var suspects = new ForgerySuspects();
        ClientAddress a = ClientAddress.From(IPAddress.Parse("198.51.100.1"))!.Value;
        ClientAddress b = ClientAddress.From(IPAddress.Parse("198.51.100.2"))!.Value;
        long t0 = 1_000 * System.Diagnostics.Stopwatch.Frequency;
        long Seconds(double s) => t0 + (long)(s * System.Diagnostics.Stopwatch.Frequency);

        Assert.Equal(ForgerySuspects.Lane.Clean, suspects.Classify(a, t0, out _));
        Assert.Equal(ForgerySuspects.Lane.Clean, suspects.Classify(null, t0, out _));
        suspects.Verified(a, valid: false, suspectLane: false, t0); // a bad one in the main batch: budget 999
        Assert.Equal(ForgerySuspects.Lane.Clean, suspects.Classify(b, t0, out _));

        // An honest client streaming on: each submission takes one until its verdict and gives it back.
        for (int i = 0; i < 3 * ForgerySuspects.Burst; i++)
        {
            Assert.Equal(ForgerySuspects.Lane.Suspect, suspects.Classify(a, Seconds(i * 0.01), out _));
            suspects.Verified(a, valid: true, suspectLane: true, Seconds(i * 0.01));
        }

        // A forger's burst: the budget's worth, then refused until it refills at 100 a second.
        long t1 = Seconds(31);
        int taken = 0;
        while (suspects.Classify(a, t1, out _) == ForgerySuspects.Lane.Suspect)
        {
            taken++;
        }

        Assert.Equal(ForgerySuspects.Burst, taken); // refilled to the burst over the half minute of valid ones
        for (int i = 0; i < taken; i++)
        {
            suspects.Verified(a, valid: false, suspectLane: true, t1);
        }

        Assert.Equal(ForgerySuspects.Lane.Refused, suspects.Classify(a, t1, out int retryAfterMs));
        Assert.Equal(10, retryAfterMs); // one owed at 100 a second
        Assert.Equal(ForgerySuspects.Lane.Suspect, suspects.Classify(a, t1 + (System.Diagnostics.Stopwatch.Frequency / 50), out _));

        // Suspect until the hold has passed since the last bad signature; swept then.
        Assert.Equal(ForgerySuspects.Lane.Suspect, suspects.Classify(a, Seconds(31 + 59), out _));
        suspects.Sweep(Seconds(31 + 61));
        Assert.Equal(0, suspects.Count);
        Assert.Equal(ForgerySuspects.Lane.Clean, suspects.Classify(a, Seconds(31 + 61), out _));
    }

    [Fact]
    public void The_suspects_lane_takes_at_most_its_rate_from_all_addresses_together()
    {
        var suspects = new ForgerySuspects();
        long t0 = 1_000 * System.Diagnostics.Stopwatch.Frequency;
        ClientAddress[] forgers = [.. Enumerable.Range(0, 4).Select(i => ClientAddress.From(IPAddress.Parse($"198.51.100.{i + 1}"))!.Value)];
        foreach (ClientAddress f in forgers)
        {
            suspects.Verified(f, valid: false, suspectLane: false, t0);
        }

        int taken = 0;
        ForgerySuspects.Lane lane;
        while ((lane = suspects.Classify(forgers[taken % 4], t0, out _)) == ForgerySuspects.Lane.Suspect)
        {
            taken++;
        }

        Assert.Equal(ForgerySuspects.LanePerSecond, taken);
        Assert.Equal(ForgerySuspects.Lane.LaneFull, lane);
    }

    [Fact]
    public void A_full_table_drops_expired_addresses_first_then_the_one_expiring_soonest_never_all()
    {
        var suspects = new ForgerySuspects(capacity: 2);
        ClientAddress[] addresses = [.. Enumerable.Range(1, 4).Select(i => ClientAddress.From(IPAddress.Parse($"198.51.100.{i}"))!.Value)];
        long t0 = 1_000 * System.Diagnostics.Stopwatch.Frequency;
        long Later(double s) => t0 + (long)(s * System.Diagnostics.Stopwatch.Frequency);
        suspects.Verified(addresses[0], valid: false, suspectLane: false, t0);
        suspects.Verified(addresses[1], valid: false, suspectLane: false, Later(70));
        suspects.Verified(addresses[2], valid: false, suspectLane: false, Later(70.5)); // the first has expired: it goes
        Assert.Equal(2, suspects.Count);
        Assert.Equal(ForgerySuspects.Lane.Suspect, suspects.Classify(addresses[1], Later(71), out _));

        suspects.Verified(addresses[3], valid: false, suspectLane: false, Later(72)); // none expired: the soonest goes
        Assert.Equal(2, suspects.Count);
        Assert.Equal(ForgerySuspects.Lane.Clean, suspects.Classify(addresses[1], Later(72), out _));
        Assert.Equal(ForgerySuspects.Lane.Suspect, suspects.Classify(addresses[2], Later(72), out _));
        Assert.Equal(ForgerySuspects.Lane.Suspect, suspects.Classify(addresses[3], Later(72), out _));
    }

    /// <summary>A node with a one-second flush window, and a client on each of two sites (127.0.0.1, 127.0.0.2), connected.</summary>
    private sealed class TwoSites : IAsyncDisposable
    {
        private TwoSites(TestNode node)
        {
            Node = node;
            Honest = new MegaNetClient(node.Address, localAddress: ForgeryIsolationTests.Honest);
            Forger = new MegaNetClient(node.Address, localAddress: ForgeryIsolationTests.Forger);
        }

        public TestNode Node { get; }

        public MegaNetClient Honest { get; }

        public MegaNetClient Forger { get; }

        public static async Task<TwoSites> StartAsync()
        {
            var sites = new TwoSites(await TestNode.StartAsync(o => o.FlushMicroseconds = 1_000_000));
            await sites.Honest.Relay.StatusAsync(new StatusRequest());
            await sites.Forger.Relay.StatusAsync(new StatusRequest());
            return sites;
        }

        public async ValueTask DisposeAsync()
        {
            Honest.Dispose();
            Forger.Dispose();
            await Node.DisposeAsync();
        }
    }

    internal static Envelope[] Seal(int count, bool forged)
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
