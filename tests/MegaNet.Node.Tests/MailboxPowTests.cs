using System.Text;
using Grpc.Core;
using MegaNet.Api;
using MegaNet.Api.V1;

namespace MegaNet.Node.Tests;

/// <summary>Mail to a mailbox nearly at its quota needs a proof-of-work stamp whatever the node's load, in quarters of
/// <c>PowMaxBits</c> (docs/protocol.md), so sending keys made up on the spot cannot fill it for free; the demand falls
/// once the owner acknowledges, and other mailboxes are not touched by it.</summary>
public sealed class MailboxPowTests
{
    private static Envelope Seal(TestNode? node, Identity from, Identity to, int i, int powBits) => SubmitStreamRefusalTests.Seal(node, from, to, i, powBits);

    [Fact]
    public async Task A_nearly_full_mailbox_demands_work_in_steps_until_its_owner_acknowledges()
    {
        // Quota 8 from 50 %: with 4 waiting a quarter of PowMaxBits 8, then another quarter per waiting envelope.
        await using TestNode node = await TestNode.StartAsync(o =>
        {
            o.MailboxMaxCount = 8;
            o.PowMaxBits = 8;
        });
        using Identity alice = Identity.Create(), bob = Identity.Create(), carol = Identity.Create();
        using MegaNetClient client = node.Client();
        StatusResponse status = await client.Relay.StatusAsync(new StatusRequest());
        Assert.Equal(50, status.Limits.MailboxPowFromPercent);

        int sent = 0;
        for (; sent < 4; sent++)
        {
            await client.Relay.SubmitAsync(new SubmitRequest { Envelope = Seal(node, alice, bob, sent, 0) });
        }

        int[] demanded = [2, 4, 6, 8];
        for (int waiting = 4; waiting < 8; waiting++)
        {
            int bits = demanded[waiting - 4];
            RpcException bare = await Assert.ThrowsAsync<RpcException>(async () =>
                await client.Relay.SubmitAsync(new SubmitRequest { Envelope = Seal(node, alice, bob, sent++, 0) }));
            Assert.Equal(StatusCode.FailedPrecondition, bare.StatusCode);
            Assert.Equal(bits, bare.RequiredPowBits());
            Assert.Equal(node.PowSeed, bare.RequiredPowSeed());
            Assert.Contains("mailbox is nearly full", bare.Status.Detail, StringComparison.Ordinal);

            RpcException weak = await Assert.ThrowsAsync<RpcException>(async () =>
                await client.Relay.SubmitAsync(new SubmitRequest { Envelope = Seal(node, alice, bob, sent++, bits - 1) }));
            Assert.Equal(bits, weak.RequiredPowBits());

            if (waiting == 7)
            {
                // The client stamps again when refused and resubmits.
                await client.SendAsync(alice, bob.Card, Encoding.UTF8.GetBytes("stamped by the client"), "text/plain; charset=utf-8");
            }
            else
            {
                await client.Relay.SubmitAsync(new SubmitRequest { Envelope = Seal(node, alice, bob, sent++, bits) });
            }
        }

        // Full: refused for the quota, with no stamp asked (work paid for a refusal would be wasted). Another mailbox,
        // and the node's load, are not affected.
        RpcException full = await Assert.ThrowsAsync<RpcException>(async () =>
            await client.Relay.SubmitAsync(new SubmitRequest { Envelope = Seal(node, alice, bob, sent++, 0) }));
        Assert.Equal(StatusCode.ResourceExhausted, full.StatusCode);
        Assert.Contains("mailbox is full", full.Status.Detail, StringComparison.Ordinal);
        await client.Relay.SubmitAsync(new SubmitRequest { Envelope = Seal(node, alice, carol, sent++, 0) });
        Assert.Equal(0u, (await client.Relay.StatusAsync(new StatusRequest())).PowBitsRequired);

        FetchResult mail = await client.FetchAsync(bob, limit: 3);
        Assert.Equal(3, mail.Messages.Count);
        Assert.Equal(8, mail.WaitingCount); // the whole mailbox, for its owner
        Assert.InRange(mail.WaitingBytes, 8 * 1_024, 8 * 2_048);
        mail = await client.FetchAsync(bob);
        Assert.Equal(8, mail.Messages.Count);
        Assert.Equal(5, await client.AckAsync(bob, mail.Messages.Take(5).Select(m => m.Seq)));
        await client.Relay.SubmitAsync(new SubmitRequest { Envelope = Seal(node, alice, bob, sent++, 0) }); // 3 were waiting
    }

    [Fact]
    public async Task Off_no_mailbox_demands_work()
    {
        await using TestNode node = await TestNode.StartAsync(o =>
        {
            o.MailboxMaxCount = 4;
            o.MailboxPowFromPercent = 0;
        });
        using Identity alice = Identity.Create(), bob = Identity.Create();
        using MegaNetClient client = node.Client();
        Assert.Equal(0, (await client.Relay.StatusAsync(new StatusRequest())).Limits.MailboxPowFromPercent);
        for (int i = 0; i < 4; i++)
        {
            await client.Relay.SubmitAsync(new SubmitRequest { Envelope = Seal(node, alice, bob, i, 0) });
        }

        RpcException full = await Assert.ThrowsAsync<RpcException>(async () =>
            await client.Relay.SubmitAsync(new SubmitRequest { Envelope = Seal(node, alice, bob, 4, 0) }));
        Assert.Equal(StatusCode.ResourceExhausted, full.StatusCode);
    }

    [Theory]
    [InlineData(699L, 10_000L, 7, 0)]
    [InlineData(700L, 10_000L, 7, 1)] // exactly at the mark, where floating point said just under it
    [InlineData(31L, 100L, 8, 2)] // exactly a quarter on, where truncating 0.999... said 1
    [InlineData(5_700L, 10_000L, 14, 3)]
    [InlineData(3L, 8L, 50, 0)]
    [InlineData(4L, 8L, 50, 1)]
    [InlineData(5L, 8L, 50, 2)]
    [InlineData(7L, 8L, 50, 4)]
    [InlineData(8L, 8L, 50, 4)]
    [InlineData(long.MaxValue / 2, long.MaxValue / 2 + 1, 99, 4)] // no overflow with any byte quota
    public void The_quarters_are_exact_at_every_boundary(long held, long quota, int from, int quarters) =>
        Assert.Equal(quarters, Admission.AdmissionPipeline.Quarters(held, quota, from));

    [Fact]
    public async Task The_byte_quota_counts_too_and_an_envelope_that_no_longer_fits_is_asked_for_no_work()
    {
        using Identity alice = Identity.Create(), bob = Identity.Create();
        int size = Seal(null, alice, bob, 0, 0).CalculateSize(); // the same for every envelope here, unstamped
        // Room for four and a half: 2 waiting are under half, 3 past it (a stamp), 4 leave no room for a fifth.
        await using TestNode node = await TestNode.StartAsync(o =>
        {
            o.MailboxMaxBytes = (size * 9) / 2;
            o.PowMaxBits = 8;
        });
        using MegaNetClient client = node.Client();
        for (int i = 0; i < 3; i++)
        {
            await client.Relay.SubmitAsync(new SubmitRequest { Envelope = Seal(node, alice, bob, i, 0) });
        }

        RpcException stamp = await Assert.ThrowsAsync<RpcException>(async () =>
            await client.Relay.SubmitAsync(new SubmitRequest { Envelope = Seal(node, alice, bob, 3, 0) }));
        Assert.Equal(StatusCode.FailedPrecondition, stamp.StatusCode);
        Assert.Equal(4, stamp.RequiredPowBits()); // 3 of 4.5: 67 %, the second quarter past half
        await client.Relay.SubmitAsync(new SubmitRequest { Envelope = Seal(node, alice, bob, 4, 4) });

        RpcException full = await Assert.ThrowsAsync<RpcException>(async () =>
            await client.Relay.SubmitAsync(new SubmitRequest { Envelope = Seal(node, alice, bob, 5, 0) }));
        Assert.Equal(StatusCode.ResourceExhausted, full.StatusCode);
        Assert.Contains("mailbox is full", full.Status.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_node_asks_the_larger_of_its_loads_and_the_mailboxs_demand_and_says_which()
    {
        // PowMinBits 6 stands for load: above the mailbox's first quarter (2 of 8), below its last (8).
        await using TestNode node = await TestNode.StartAsync(o =>
        {
            o.MailboxMaxCount = 8;
            o.PowMaxBits = 8;
            o.PowMinBits = 6;
        });
        using Identity alice = Identity.Create(), bob = Identity.Create();
        using MegaNetClient client = node.Client();
        for (int i = 0; i < 4; i++)
        {
            await client.Relay.SubmitAsync(new SubmitRequest { Envelope = Seal(node, alice, bob, i, 6) });
        }

        RpcException load = await Assert.ThrowsAsync<RpcException>(async () =>
            await client.Relay.SubmitAsync(new SubmitRequest { Envelope = Seal(node, alice, bob, 4, 0) }));
        Assert.Equal(6, load.RequiredPowBits());
        Assert.Contains("under load", load.Status.Detail, StringComparison.Ordinal);
        for (int i = 5; i < 8; i++)
        {
            await client.Relay.SubmitAsync(new SubmitRequest { Envelope = Seal(node, alice, bob, i, 6) });
        }

        RpcException mailbox = await Assert.ThrowsAsync<RpcException>(async () =>
            await client.Relay.SubmitAsync(new SubmitRequest { Envelope = Seal(node, alice, bob, 8, 6) }));
        Assert.Equal(8, mailbox.RequiredPowBits()); // 7 waiting: the last quarter
        Assert.Contains("mailbox is nearly full", mailbox.Status.Detail, StringComparison.Ordinal);
    }
}
