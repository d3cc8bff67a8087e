using System.Text;
using Grpc.Core;
using MegaNet.Api;
using MegaNet.Api.V1;
using MegaNet.Store;
using Microsoft.Extensions.DependencyInjection;

namespace MegaNet.Node.Tests;

/// <summary><c>StoreMaxMiB</c>: the mail a node holds is capped for its operator; from half of the cap every sender adds
/// proof of work (announced in <c>Status.pow_bits_required</c>), beyond it new mail is refused, and acknowledged mail
/// makes room again (docs/protocol.md).</summary>
public sealed class StoreCapTests
{
    [Fact]
    public async Task Held_mail_raises_the_work_demanded_then_fills_the_cap_and_acknowledging_makes_room()
    {
        await using TestNode node = await TestNode.StartAsync(o =>
        {
            TestNode.Unthrottled(o);
            o.StoreMaxMiB = 1;
            o.PowMaxBits = 4;
        });
        IEnvelopeStore store = node.Services.GetRequiredService<IEnvelopeStore>();
        using Identity alice = Identity.Create(), bob = Identity.Create();
        using MegaNetClient client = node.Client();
        const string TextType = "text/plain; charset=utf-8";
        byte[] big = Encoding.UTF8.GetBytes(new string('x', EnvelopeFormat.MaxContentLength(TextType, null))); // the 64 KiB class
        const long Cap = 1L << 20;

        int previous = 0, sent = 0;
        RpcException? full = null;
        while (full is null)
        {
            long held = store.HeldBytes;
            int bits = (int)(await client.Relay.StatusAsync(new StatusRequest())).PowBitsRequired;
            // Quarters of PowMaxBits 4 from half the cap: 1 bit from 50 %, 4 from 87.5 %.
            int expected = 2 * held < Cap ? 0 : (int)Math.Min(4, 1 + (4 * (2 * held - Cap) / Cap));
            Assert.True(bits == expected, $"{held:N0} bytes held: {bits} bits demanded, {expected} expected");
            Assert.True(bits >= previous);
            previous = bits;
            try
            {
                // SendAsync reads the demand from Status and stamps: every envelope past half the cap carries work.
                await client.SendAsync(alice, bob.Card, big, TextType);
                sent++;
                Assert.True(sent < 100, "the cap never refused");
            }
            catch (RpcException e) when (e.StatusCode == StatusCode.ResourceExhausted)
            {
                full = e;
            }
        }

        Assert.Contains("holds as much mail as its operator allows", full.Status.Detail, StringComparison.Ordinal);
        Assert.Equal(TimeSpan.FromSeconds(60), full.RetryAfter());
        Assert.Equal(4, previous);
        Assert.InRange(sent, 15, 16); // about 65.6 KB each against 1 MiB
        Assert.True(store.HeldBytes + big.Length > Cap);
        // Sent bare, an envelope that would pass the cap is refused for it at once, not asked for work first.
        Envelope bare = EnvelopeFormat.Seal(alice, bob.Card, big, TextType, null, DateTimeOffset.UtcNow.AddDays(1));
        RpcException refused = await Assert.ThrowsAsync<RpcException>(async () => await client.Relay.SubmitAsync(new SubmitRequest { Envelope = bare }));
        Assert.Equal(StatusCode.ResourceExhausted, refused.StatusCode);
        Assert.Contains("holds as much mail as its operator allows", refused.Status.Detail, StringComparison.Ordinal);

        // Pages of at most 256 KiB: a few of these each.
        var seqs = new List<ulong>();
        ulong cursor = 0;
        for (FetchResult page; (page = await client.FetchAsync(bob, cursor)).Messages.Count > 0; cursor = page.NextCursor)
        {
            seqs.AddRange(page.Messages.Select(m => m.Seq));
        }

        Assert.Equal(sent, seqs.Count);
        Assert.Equal(sent, await client.AckAsync(bob, seqs));
        Assert.Equal(0, store.HeldBytes);
        Assert.Equal(0u, (await client.Relay.StatusAsync(new StatusRequest())).PowBitsRequired);
        await client.SendAsync(alice, bob.Card, big, TextType);
        node.AssertNoServerErrors();
    }
}
