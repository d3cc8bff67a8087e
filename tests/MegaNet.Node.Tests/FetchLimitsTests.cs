using System.Security.Cryptography;
using Google.Protobuf;
using MegaNet.Api;
using MegaNet.Api.V1;
using MegaNet.Node.Services;

namespace MegaNet.Node.Tests;

/// <summary>A Fetch reply stays in the node's memory until the client reads it: pages are cut at
/// <see cref="RelayService.FetchPageBytes"/> of envelopes, and the cursor leads to the rest.</summary>
public sealed class FetchLimitsTests
{
    private const int Envelopes = 40; // 64 KiB class each: about 2.6 MB, ten pages

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
    public async Task A_page_holds_at_most_256_KiB_of_envelopes_and_its_cursor_leads_to_the_rest()
    {
        using Identity bob = Identity.Create();
        await using TestNode node = await StartWithFullMailboxAsync(bob);
        using MegaNetClient client = node.Client();
        var seqs = new List<ulong>();
        var pages = new List<int>();
        for (ulong cursor = 0; ;)
        {
            FetchResponse page = await client.Relay.FetchAsync(new FetchRequest { Auth = await client.AuthenticateAsync(bob, MailboxPurpose.Fetch), AfterSeq = cursor, Limit = 1000 });
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

        Assert.True(pages.Count >= 10, $"pages of {string.Join(", ", pages)}");
        Assert.Equal(Envelopes, seqs.Distinct().Count());
        Assert.Equal(seqs.Order(), seqs);
        node.AssertNoServerErrors();
    }

    /// <summary>A client that never reads its Fetch replies holds their bytes in the node, one stream each: one
    /// connection may hold Kestrel's 100 (with 1 MiB pages they pinned 100 MiB; now at most about 25 MiB), and the
    /// next call waits for a stream until the client reads one.</summary>
    [Fact]
    public async Task One_connection_holds_a_bounded_number_of_unread_replies()
    {
        using Identity bob = Identity.Create();
        await using TestNode node = await StartWithFullMailboxAsync(bob);
        using MegaNetClient client = node.Client();
        using var http = new HttpClient(new SocketsHttpHandler { EnableMultipleHttp2Connections = false, InitialHttp2StreamWindowSize = 65_535 }) { BaseAddress = node.Address };
        async Task<HttpRequestMessage> FetchRequestAsync()
        {
            byte[] body = new FetchRequest { Auth = await client.AuthenticateAsync(bob, MailboxPurpose.Fetch), Limit = 1000 }.ToByteArray();
            byte[] framed = new byte[5 + body.Length]; // gRPC framing: uncompressed, then the length, big-endian
            System.Buffers.Binary.BinaryPrimitives.WriteInt32BigEndian(framed.AsSpan(1), body.Length);
            body.CopyTo(framed, 5);
            var request = new HttpRequestMessage(HttpMethod.Post, "/meganet.v1.Relay/Fetch")
            {
                Version = System.Net.HttpVersion.Version20,
                VersionPolicy = HttpVersionPolicy.RequestVersionExact,
                Content = new ByteArrayContent(framed),
            };
            request.Content.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/grpc");
            request.Headers.TE.Add(new System.Net.Http.Headers.TransferCodingWithQualityHeaderValue("trailers"));
            return request;
        }

        var unread = new List<HttpResponseMessage>();
        try
        {
            for (int i = 0; i < KestrelStreamsPerConnection; i++)
            {
                unread.Add(await http.SendAsync(await FetchRequestAsync(), HttpCompletionOption.ResponseHeadersRead));
            }

            Task<HttpResponseMessage> next = http.SendAsync(await FetchRequestAsync(), HttpCompletionOption.ResponseHeadersRead);
            Assert.NotSame(next, await Task.WhenAny(next, Task.Delay(TimeSpan.FromSeconds(2))));

            // Reading one reply frees its stream; the waiting call goes out and is answered.
            byte[] read = await unread[0].Content.ReadAsByteArrayAsync();
            Assert.InRange(read.Length, 5, 5 + FetchPageBytesWithSlack);
            // Bounded generously: on a loaded machine the freed stream's call may take a while to go out and be answered.
            Assert.True(await Task.WhenAny(next, Task.Delay(TimeSpan.FromSeconds(90))) == next, "the waiting Fetch was not answered within 90 s of reading one reply");
            unread.Add(await next);
        }
        finally
        {
            unread.ForEach(r => r.Dispose());
        }

        node.AssertNoServerErrors();
    }

    // Kestrel's Http2Limits.MaxStreamsPerConnection, which the node leaves as it is.
    private const int KestrelStreamsPerConnection = 100;

    // A page's envelopes plus the reply's own fields (cursor, sequence numbers, ids).
    private const int FetchPageBytesWithSlack = (int)RelayService.FetchPageBytes + (64 << 10) + (1 << 16);
}
