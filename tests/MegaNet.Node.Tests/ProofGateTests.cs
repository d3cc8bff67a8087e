using System.Diagnostics;
using System.Globalization;
using System.Net;
using Grpc.Core;
using MegaNet.Api;
using MegaNet.Api.V1;
using MegaNet.Node.Hosting;
using MegaNet.Node.Services;
using Microsoft.Extensions.DependencyInjection;

namespace MegaNet.Node.Tests;

/// <summary>
/// The log's proofs are free to ask for and cost the node CPU (up to ~0.35 ms each on a million leaves): each client
/// site has a budget of them, and at most half the cores compute them at once. Before, any client could ask for
/// proofs without limit, on the thread pool that admission and the store share.
/// </summary>
public sealed class ProofGateTests
{
    private static readonly ClientAddress SiteA = ClientAddress.From(IPAddress.Parse("198.51.100.1"))!.Value;
    private static readonly ClientAddress SiteB = ClientAddress.From(IPAddress.Parse("198.51.100.2"))!.Value;

    [Fact]
    public void A_site_gets_its_burst_then_its_rate_and_other_sites_are_not_held_to_it()
    {
        using var gate = new ProofGate(slots: 1);
        long t0 = 1_000 * Stopwatch.Frequency;
        for (int i = 0; i < ProofGate.Burst; i++)
        {
            gate.Take(SiteA, t0);
        }

        RpcException refused = Assert.Throws<RpcException>(() => gate.Take(SiteA, t0));
        Assert.Equal(StatusCode.ResourceExhausted, refused.StatusCode);
        Assert.Contains("log proofs", refused.Status.Detail, StringComparison.Ordinal);
        Assert.Equal((1000 / ProofGate.PerSecond).ToString(CultureInfo.InvariantCulture), refused.Trailers.GetValue(NodeRefusals.RetryAfterTrailer));

        gate.Take(SiteB, t0); // another site has its own budget
        gate.Take(null, t0); // not an IP client: held to none

        // One more after 1/PerSecond, and the site is forgotten once its budget is whole again.
        gate.Take(SiteA, t0 + (Stopwatch.Frequency / ProofGate.PerSecond));
        Assert.Throws<RpcException>(() => gate.Take(SiteA, t0 + (Stopwatch.Frequency / ProofGate.PerSecond)));
        gate.Take(SiteA, t0 + (10 * Stopwatch.Frequency)); // refilled; the sweep ran before this take
        Assert.Equal(1, gate.Sites);
    }

    [Fact]
    public async Task A_proof_waits_for_a_slot_and_is_refused_when_none_comes_free_in_time()
    {
        using var gate = new ProofGate(slots: 1);
        ProofGate.Slot held = await gate.EnterAsync(SiteA, CancellationToken.None);
        RpcException busy = await Assert.ThrowsAsync<RpcException>(async () => await gate.EnterAsync(SiteB, CancellationToken.None));
        Assert.Equal(StatusCode.ResourceExhausted, busy.StatusCode);
        Assert.Contains("computing 1 log proof(s) at once", busy.Status.Detail, StringComparison.Ordinal);
        Assert.NotNull(busy.Trailers.GetValue(NodeRefusals.RetryAfterTrailer));

        // A slot given back within the wait is taken.
        ValueTask<ProofGate.Slot> waiting = gate.EnterAsync(SiteB, CancellationToken.None);
        Assert.False(waiting.IsCompleted);
        held.Dispose();
        (await waiting.AsTask().WaitAsync(TimeSpan.FromSeconds(30))).Dispose();
    }

    [Fact]
    public async Task A_node_refuses_a_client_past_its_proof_budget_and_serves_another_address()
    {
        await using TestNode node = await TestNode.StartAsync();
        using var greedy = new MegaNetClient(node.Address, localAddress: IPAddress.Loopback);
        using var other = new MegaNetClient(node.Address, localAddress: IPAddress.Parse("127.0.0.2"));
        await greedy.Relay.SubmitAsync(new SubmitRequest { Envelope = AdmissionBatchingTests.Seal(1)[0] });
        var request = new InclusionProofRequest { LeafIndex = 0, TreeSize = 1 };

        // Asked for in waves of 100 until one is refused: the burst, and what the rate added meanwhile.
        var clock = Stopwatch.StartNew();
        int served = 0;
        RpcException? refusal = null;
        while (refusal is null && served <= 10 * ProofGate.Burst)
        {
            Task<InclusionProof>[] wave = Enumerable.Range(0, 100).Select(_ => greedy.Relay.GetInclusionProofAsync(request).ResponseAsync).ToArray();
            try
            {
                await Task.WhenAll(wave);
            }
            catch (RpcException e)
            {
                refusal = e;
            }

            served += wave.Count(t => t.IsCompletedSuccessfully);
        }

        Assert.NotNull(refusal);
        Assert.Equal(StatusCode.ResourceExhausted, refusal.StatusCode);
        Assert.Contains("log proofs", refusal.Status.Detail, StringComparison.Ordinal);
        Assert.InRange(served, ProofGate.Burst - 1, ProofGate.Burst + (int)Math.Ceiling(clock.Elapsed.TotalSeconds * ProofGate.PerSecond));

        InclusionProof proof = await other.Relay.GetInclusionProofAsync(request);
        Assert.Empty(proof.Path); // a tree of one leaf
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task A_site_that_stops_asking_is_forgotten_once_its_budget_refilled_without_another_call()
    {
        await using TestNode node = await TestNode.StartAsync();
        ProofGate gate = node.Services.GetRequiredService<ProofGate>();
        using var client = new MegaNetClient(node.Address, localAddress: IPAddress.Parse("127.0.0.9"));
        await client.Relay.SubmitAsync(new SubmitRequest { Envelope = AdmissionBatchingTests.Seal(1)[0] });
        var request = new InclusionProofRequest { LeafIndex = 0, TreeSize = 1 };

        // Half the burst: 2.5 s of the site's rate to refill, so it is remembered when the calls end.
        for (int wave = 0; wave < ProofGate.Burst / 200; wave++)
        {
            await Task.WhenAll(Enumerable.Range(0, 100).Select(_ => client.Relay.GetInclusionProofAsync(request).ResponseAsync));
        }

        Assert.Equal(1, gate.Sites);
        // No call comes after them: the node's own sweep (every second) forgets the site, where protocol.md says it keeps
        // a site only while it owes. Before, a site was forgotten only when a later call, from anyone, swept the table.
        var waited = Stopwatch.StartNew();
        while (gate.Sites > 0 && waited.Elapsed < TimeSpan.FromSeconds(30))
        {
            await Task.Delay(100);
        }

        Assert.Equal(0, gate.Sites);
        node.AssertNoServerErrors();
    }
}
