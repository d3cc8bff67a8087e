using System.Text;
using Grpc.Core;
using MegaNet.Api;
using MegaNet.Api.V1;
using MegaNet.Core.Transparency;

namespace MegaNet.Node.Tests;

/// <summary>Several clients acting on the same data at the same moment, against a real node: the same envelope on
/// several connections and methods, acks racing deliveries, several subscribers of one mailbox. Each race runs for many
/// rounds, so that an interleaving that breaks it has a fair chance to come; the assertions hold for every interleaving.</summary>
public sealed class ConcurrentCallersTests
{
    private const int Callers = 6; // two of each submit method, each on a connection of its own

    [Fact]
    public async Task The_same_envelope_at_once_on_several_connections_and_methods_is_stored_once_and_every_caller_gets_its_receipt()
    {
        await using TestNode node = await TestNode.StartAsync();
        await SubmitCopiesAtOnceAsync(node, rounds: 120, freshSenderPerRound: false);
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task Copies_of_an_envelope_racing_its_sending_keys_last_token_get_its_receipt_not_a_rate_limit()
    {
        // One token per sending key and no refill: each round's envelope is the key's one stored envelope, so the
        // copies beside it must be answered as a replay would be, with its receipt, not refused for the token it took.
        await using TestNode node = await TestNode.StartAsync(o =>
        {
            o.SubmitBurst = 1;
            o.SubmitRatePerKey = 0.001;
        });
        await SubmitCopiesAtOnceAsync(node, rounds: 60, freshSenderPerRound: true);
        node.AssertNoServerErrors();
    }

    // Submits one envelope per round on Callers connections at once (Submit, SubmitStream, SubmitBatchStream) and checks
    // that every caller got a receipt for the one stored copy whose head proves it, and that the log and mailbox hold
    // each envelope once.
    private static async Task SubmitCopiesAtOnceAsync(TestNode node, int rounds, bool freshSenderPerRound)
    {
        using Identity bob = Identity.Create();
        using Identity alice = Identity.Create();
        var clients = Enumerable.Range(0, Callers).Select(_ => node.Client()).ToArray();
        var streams = new AsyncDuplexStreamingCall<SubmitRequest, SubmitResult>[2];
        var batchStreams = new AsyncDuplexStreamingCall<SubmitBatchRequest, SubmitBatchResult>[2];
        try
        {
            for (int i = 0; i < 2; i++)
            {
                streams[i] = clients[2 + i].Relay.SubmitStream(deadline: DateTime.UtcNow.AddMinutes(5));
                batchStreams[i] = clients[4 + i].Relay.SubmitBatchStream(deadline: DateTime.UtcNow.AddMinutes(5));
            }

            var ids = new HashSet<string>();
            for (int round = 0; round < rounds; round++)
            {
                using Identity? fresh = freshSenderPerRound ? Identity.Create() : null;
                Envelope envelope = EnvelopeFormat.Seal(fresh ?? alice, bob.Card, Encoding.UTF8.GetBytes($"round {round}"), "text/plain", null, DateTimeOffset.UtcNow.AddDays(1));
                var start = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                var calls = new List<Task<SubmitResult>>();
                for (int i = 0; i < 2; i++)
                {
                    MegaNetClient unary = clients[i];
                    calls.Add(Task.Run(async () =>
                    {
                        await start.Task;
                        try
                        {
                            return new SubmitResult { Receipt = await unary.Relay.SubmitAsync(new SubmitRequest { Envelope = envelope }, deadline: DateTime.UtcNow.AddMinutes(1)) };
                        }
                        catch (RpcException e)
                        {
                            return new SubmitResult { StatusCode = (int)e.StatusCode, Error = e.Status.Detail };
                        }
                    }));
                    AsyncDuplexStreamingCall<SubmitRequest, SubmitResult> stream = streams[i];
                    calls.Add(Task.Run(async () =>
                    {
                        await start.Task;
                        await stream.RequestStream.WriteAsync(new SubmitRequest { Envelope = envelope });
                        Assert.True(await stream.ResponseStream.MoveNext(CancellationToken.None), "the SubmitStream ended");
                        return stream.ResponseStream.Current;
                    }));
                    AsyncDuplexStreamingCall<SubmitBatchRequest, SubmitBatchResult> batch = batchStreams[i];
                    calls.Add(Task.Run(async () =>
                    {
                        await start.Task;
                        await batch.RequestStream.WriteAsync(new SubmitBatchRequest { Envelopes = { envelope } });
                        Assert.True(await batch.ResponseStream.MoveNext(CancellationToken.None), "the SubmitBatchStream ended");
                        return Assert.Single(batch.ResponseStream.Current.Results);
                    }));
                }

                start.SetResult();
                SubmitResult[] results = await Task.WhenAll(calls).WaitAsync(TimeSpan.FromMinutes(2));
                foreach (SubmitResult r in results)
                {
                    Assert.True(r.Receipt is not null, $"round {round}: a caller was refused ({(StatusCode)r.StatusCode}: {r.Error})");
                }

                Receipt[] receipts = [.. results.Select(r => r.Receipt)];
                Assert.All(receipts, r => Assert.Equal(receipts[0].EnvelopeId, r.EnvelopeId));
                Assert.All(receipts, r => Assert.Equal(receipts[0].LogIndex, r.LogIndex));
                Assert.Single(receipts, r => !r.Duplicate);
                Assert.True(ids.Add(receipts[0].EnvelopeId.ToBase64()));
                foreach (Receipt r in receipts.DistinctBy(r => r.TreeHead.TreeSize))
                {
                    await AssertProvesAsync(clients[0], r);
                }
            }

            StatusResponse status = await clients[0].Relay.StatusAsync(new StatusRequest());
            Assert.Equal((ulong)rounds, (ulong)status.TreeSize);
            var held = new HashSet<string>();
            ulong cursor = 0;
            while (true)
            {
                FetchResponse page = await clients[0].Relay.FetchAsync(new FetchRequest { Auth = await clients[0].AuthenticateAsync(bob, MailboxPurpose.Fetch), AfterSeq = cursor, Limit = 1000 });
                if (page.Items.Count == 0)
                {
                    break;
                }

                Assert.All(page.Items, item => Assert.True(held.Add(item.EnvelopeId.ToBase64()), "the mailbox holds an envelope twice"));
                cursor = page.NextCursor;
            }

            Assert.Equal(ids, held);
        }
        finally
        {
            foreach (var s in streams)
            {
                s?.Dispose();
            }

            foreach (var s in batchStreams)
            {
                s?.Dispose();
            }

            foreach (MegaNetClient c in clients)
            {
                c.Dispose();
            }
        }
    }

    // The receipt's head is signed by the node and its inclusion proof leads to the head's root.
    private static async Task AssertProvesAsync(MegaNetClient client, Receipt receipt)
    {
        Assert.True(receipt.TreeHead.SignatureVerifies);
        Assert.InRange(receipt.LogIndex, 0, receipt.TreeHead.TreeSize - 1);
        InclusionProof proof = await client.Relay.GetInclusionProofAsync(new InclusionProofRequest { LeafIndex = receipt.LogIndex, TreeSize = receipt.TreeHead.TreeSize });
        Assert.True(MerkleTree.VerifyInclusion(MerkleTree.LeafHash(receipt.EnvelopeId.Span), receipt.LogIndex, receipt.TreeHead.TreeSize, proof.Path,
            static hash => hash.Memory, receipt.TreeHead.RootHash.Span), $"the head of size {receipt.TreeHead.TreeSize} does not prove leaf {receipt.LogIndex}");
    }
}
