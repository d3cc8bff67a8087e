using System.Net;
using System.Text;
using Grpc.Core;
using MegaNet.Api;
using MegaNet.Api.V1;

namespace MegaNet.Node.Tests;

/// <summary>
/// A client address that sent a bad signature has its next submissions checked one at a time, apart from the batch, and
/// at most <c>ForgerySuspects.ChecksPerSecond</c> a second:
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
        await forgersGenuine; // still accepted: the address is checked apart, not refused
        foreach (Task<Receipt> f in forgeries)
        {
            RpcException e = await Assert.ThrowsAsync<RpcException>(() => f);
            Assert.Equal(StatusCode.InvalidArgument, e.StatusCode);
        }

        StatusResponse after = await honest.Relay.StatusAsync(new StatusRequest());
        Assert.Equal(8ul, after.SignaturesVerified - before.SignaturesVerified);
        // The honest five in one batch, each of the forger's three alone. Mixed in, all eight went in one batch, and its
        // two bad signatures made the honest five pay for the bisection that found them.
        Assert.Equal(4ul, after.BatchesVerified - before.BatchesVerified);
        Assert.Equal(6, after.TreeSize);
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task A_suspect_address_gets_a_budget_of_single_checks_and_is_refused_beyond_it()
    {
        await using TestNode node = await TestNode.StartAsync(o => o.FlushMicroseconds = 1_000_000);
        using var forger = new MegaNetClient(node.Address, localAddress: Forger);
        RpcException first = await Assert.ThrowsAsync<RpcException>(async () => await forger.Relay.SubmitAsync(new SubmitRequest { Envelope = Seal(1, forged: true)[0] }));
        Assert.Equal(StatusCode.InvalidArgument, first.StatusCode);
        StatusResponse before = await forger.Relay.StatusAsync(new StatusRequest());

        // More forgeries in one flush window than a second's budget: the budget's worth is checked, the rest refused unchecked.
        const int Sent = 150;
        Envelope[] bad = Seal(Sent, forged: true);
        RpcException[] answers = await Task.WhenAll(bad.Select(async e =>
            await Assert.ThrowsAsync<RpcException>(async () => await forger.Relay.SubmitAsync(new SubmitRequest { Envelope = e }))));
        StatusResponse after = await forger.Relay.StatusAsync(new StatusRequest());

        int checkedAlone = answers.Count(a => a.StatusCode == StatusCode.InvalidArgument);
        RpcException[] refused = answers.Where(a => a.StatusCode == StatusCode.ResourceExhausted).ToArray();
        Assert.Equal(Sent, checkedAlone + refused.Length);
        Assert.Equal(MegaNet.Node.Admission.ForgerySuspects.ChecksPerSecond, checkedAlone);
        Assert.Equal((ulong)checkedAlone, after.SignaturesVerified - before.SignaturesVerified);
        Assert.All(refused, r =>
        {
            Assert.Contains("did not verify came from this address", r.Status.Detail, StringComparison.Ordinal);
            Assert.Equal("1000", r.Trailers.GetValue("retry-after-ms"));
        });
        Assert.Equal(0, after.TreeSize);
        node.AssertNoServerErrors();
    }

    private static Envelope[] Seal(int count, bool forged)
    {
        using Identity recipient = Identity.Create();
        var envelopes = new Envelope[count];
        for (int i = 0; i < count; i++)
        {
            using Identity sender = Identity.Create();
            envelopes[i] = EnvelopeFormat.Seal(sender, recipient.Card, Encoding.UTF8.GetBytes($"message {i}"), "text/plain; charset=utf-8", null,
                DateTimeOffset.UtcNow.AddDays(1), 0);
            if (forged)
            {
                // Well-formed, and the signature no longer covers it: only the batch equation can tell.
                envelopes[i].ExpiresUnixMs += 1;
            }
        }

        return envelopes;
    }
}
