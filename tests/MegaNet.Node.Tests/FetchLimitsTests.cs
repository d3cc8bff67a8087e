using System.Security.Cryptography;
using MegaNet.Api;
using MegaNet.Api.V1;
using MegaNet.Node.Services;

namespace MegaNet.Node.Tests;

/// <summary>A Fetch reply stays in the node's memory until the client reads it: pages are cut at
/// <see cref="RelayService.FetchPageBytes"/> of envelopes, and the cursor leads to the rest.</summary>
public sealed class FetchLimitsTests
{
    private const int Envelopes = 40; // 64 KiB class each: about 2.6 MB, three pages

    private static async Task<TestNode> StartWithFullMailboxAsync(Identity bob)
    {
        TestNode node = await TestNode.StartAsync(o =>
        {
            o.SubmitBurst = 10_000;
            o.StoreMemoryMiB = 32;
        });
        using MegaNetClient client = node.Client();
        using Identity alice = Identity.Create();
        byte[] content = RandomNumberGenerator.GetBytes(60_000);
        await Task.WhenAll(Enumerable.Range(0, Envelopes).Select(_ => client.Relay.SubmitAsync(new SubmitRequest
        {
            Envelope = EnvelopeFormat.Seal(alice, bob.Card, content, "application/octet-stream", null, DateTimeOffset.UtcNow.AddDays(1)),
        }).ResponseAsync));
        return node;
    }

    [Fact]
    public async Task A_page_holds_at_most_one_MiB_of_envelopes_and_its_cursor_leads_to_the_rest()
    {
        using Identity bob = Identity.Create();
        await using TestNode node = await StartWithFullMailboxAsync(bob);
        using MegaNetClient client = node.Client();
        var seqs = new List<ulong>();
        var pages = new List<int>();
        for (ulong cursor = 0; ;)
        {
            FetchResponse page = await client.Relay.FetchAsync(new FetchRequest { Auth = await client.AuthenticateAsync(bob), AfterSeq = cursor, Limit = 1000 });
            if (page.Items.Count == 0)
            {
                break;
            }

            long bytes = page.Items.Sum(i => (long)i.Envelope.CalculateSize());
            Assert.True(bytes <= RelayService.FetchPageBytes, $"a page of {bytes} bytes");
            Assert.Equal(page.Items[^1].Seq, page.NextCursor);
            pages.Add(page.Items.Count);
            seqs.AddRange(page.Items.Select(i => i.Seq));
            cursor = page.NextCursor;
        }

        Assert.True(pages.Count >= 2, $"pages of {string.Join(", ", pages)}");
        Assert.Equal(Envelopes, seqs.Distinct().Count());
        Assert.Equal(seqs.Order(), seqs);
        node.AssertNoServerErrors();
    }
}
