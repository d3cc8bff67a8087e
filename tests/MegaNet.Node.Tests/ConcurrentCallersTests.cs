using System.Text;
using Grpc.Core;
using MegaNet.Api;
using MegaNet.Api.V1;
using MegaNet.Core.Transparency;
using Microsoft.Extensions.DependencyInjection;

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

    [Fact]
    public async Task Answered_submissions_leave_the_table_that_answers_their_copies()
    {
        // Held until another envelope took their slot, the last 16,384 submissions and their receipts outlived their
        // calls by seconds, so every collection promoted them (gen-0 pauses of 40-75 ms; docs/performance-log.md).
        await using TestNode node = await TestNode.StartAsync();
        using Identity alice = Identity.Create(), bob = Identity.Create();
        MegaNetClient client = node.Client();
        List<SubmitResult> results = await client.SubmitAllAsync(Enumerable.Range(0, 40).Select(i =>
            EnvelopeFormat.Seal(alice, bob.Card, Encoding.UTF8.GetBytes($"m{i}"), "text/plain", null, DateTimeOffset.UtcNow.AddDays(1))));
        Assert.Equal(40, results.Select(r => r.Receipt.LogIndex).Distinct().Count());
        Assert.Equal(0, node.Services.GetRequiredService<Admission.AdmissionPipeline>().TokenTakersHeld);
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task Several_subscribers_and_a_fetcher_of_one_mailbox_get_every_message_in_order_while_mail_arrives_on_several_connections()
    {
        const int Senders = 4, PerSender = 100, Subscribers = 3;
        await using TestNode node = await TestNode.StartAsync();
        using Identity bob = Identity.Create();
        var clients = Enumerable.Range(0, Senders + Subscribers + 1).Select(_ => node.Client()).ToArray();
        try
        {
            using var done = new CancellationTokenSource(TimeSpan.FromMinutes(2));
            var subscribed = new List<(AsyncServerStreamingCall<MailEvent> Call, List<ulong> Seqs)>();
            for (int i = 0; i < Subscribers; i++)
            {
                MailboxAuth auth = await clients[Senders + i].AuthenticateAsync(bob, MailboxPurpose.Subscribe);
                AsyncServerStreamingCall<MailEvent> call = clients[Senders + i].Relay.Subscribe(new SubscribeRequest { Auth = auth }, cancellationToken: done.Token);
                Assert.True(await call.ResponseStream.MoveNext(done.Token)); // the first keepalive: subscribed
                subscribed.Add((call, []));
            }

            // Every subscriber reads until it has every message; each page of a fetcher's pass is in order too.
            Task[] readers = [.. subscribed.Select(s => Task.Run(async () =>
            {
                while (s.Seqs.Count < Senders * PerSender && await s.Call.ResponseStream.MoveNext(done.Token))
                {
                    if (s.Call.ResponseStream.Current.Item is { } item)
                    {
                        Assert.True(s.Seqs.Count == 0 || item.Seq > s.Seqs[^1], $"seq {item.Seq} came after {(s.Seqs.Count == 0 ? 0 : s.Seqs[^1])}");
                        s.Seqs.Add(item.Seq);
                    }
                }
            }))];
            MegaNetClient fetcher = clients[^1];
            var sending = Enumerable.Range(0, Senders).Select(i => Task.Run(async () =>
            {
                using Identity sender = Identity.Create();
                return await clients[i].SubmitAllAsync(Enumerable.Range(0, PerSender).Select(j =>
                    EnvelopeFormat.Seal(sender, bob.Card, Encoding.UTF8.GetBytes($"{i}/{j}"), "text/plain", null, DateTimeOffset.UtcNow.AddDays(1))));
            })).ToArray();
            Task fetching = Task.Run(async () =>
            {
                while (!sending.All(t => t.IsCompleted))
                {
                    ulong cursor = 0, last = 0;
                    for (int page = 0; page < 8; page++)
                    {
                        FetchResponse response = await fetcher.Relay.FetchAsync(new FetchRequest { Auth = await fetcher.AuthenticateAsync(bob, MailboxPurpose.Fetch), AfterSeq = cursor, Limit = 50 });
                        foreach (MailItem item in response.Items)
                        {
                            Assert.True(item.Seq > last && item.Seq > cursor, $"a fetch page gave seq {item.Seq} after {last}");
                            last = item.Seq;
                        }

                        if (response.Items.Count == 0)
                        {
                            break;
                        }

                        cursor = response.NextCursor;
                    }
                }
            });

            List<SubmitResult>[] results = await Task.WhenAll(sending);
            ulong[] stored = [.. results.SelectMany(r => r).Select(r => (ulong)r.Receipt.LogIndex + 1).Order()];
            Assert.Equal(Senders * PerSender, stored.Distinct().Count());
            await fetching.WaitAsync(done.Token);
            await Task.WhenAll(readers).WaitAsync(done.Token);
            foreach ((AsyncServerStreamingCall<MailEvent> call, List<ulong> seqs) in subscribed)
            {
                Assert.Equal(stored, seqs);
                call.Dispose();
            }
        }
        finally
        {
            foreach (MegaNetClient c in clients)
            {
                c.Dispose();
            }
        }

        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task Acks_racing_each_other_and_deliveries_delete_once_lose_nothing_and_no_fetch_after_the_reply_sees_acked_mail()
    {
        const int Rounds = 40, PerRound = 8;
        await using TestNode node = await TestNode.StartAsync();
        using Identity alice = Identity.Create(), bob = Identity.Create();
        var clients = Enumerable.Range(0, 5).Select(_ => node.Client()).ToArray();
        try
        {
            using var done = new CancellationTokenSource(TimeSpan.FromMinutes(2));
            MegaNetClient listener = clients[4];
            AsyncServerStreamingCall<MailEvent> subscription = listener.Relay.Subscribe(
                new SubscribeRequest { Auth = await listener.AuthenticateAsync(bob, MailboxPurpose.Subscribe) }, cancellationToken: done.Token);
            var delivered = new List<ulong>();
            var unacked = new SortedSet<ulong>();
            var acked = new HashSet<ulong>();
            ulong newest = 0;
            Task reading = Task.Run(async () =>
            {
                while (await subscription.ResponseStream.MoveNext(done.Token))
                {
                    if (subscription.ResponseStream.Current.Item is { } item)
                    {
                        lock (delivered)
                        {
                            ulong last = delivered.Count == 0 ? 0 : delivered[^1];
                            Assert.True(item.Seq > last, $"the subscription gave seq {item.Seq} after {last}");
                            delivered.Add(item.Seq);
                        }
                    }
                }
            });

            for (int round = 0; round < Rounds; round++)
            {
                List<SubmitResult> sent = await clients[0].SubmitAllAsync(Enumerable.Range(0, PerRound).Select(i =>
                    EnvelopeFormat.Seal(alice, bob.Card, Encoding.UTF8.GetBytes($"{round}/{i}"), "text/plain", null, DateTimeOffset.UtcNow.AddDays(1))));
                ulong[] seqs = [.. sent.Select(r => (ulong)r.Receipt.LogIndex + 1)];
                unacked.UnionWith(seqs);
                newest = seqs.Max();

                // Half of this round's mail, one of them twice, one acked in an earlier round and one never given.
                List<ulong> toAck = [.. seqs.Where((_, i) => i % 2 == 0)];
                toAck.Add(toAck[0]);
                toAck.Add(acked.Count > 0 ? acked.First() : newest + 1_000);
                toAck.Add(newest + 1_000_000);
                ulong[] fresh = [.. toAck.Distinct().Where(unacked.Contains)];
                var start = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                Task<AckResponse>[] acks = [.. Enumerable.Range(1, 2).Select(c => Task.Run(async () =>
                {
                    MailboxAuth auth = await clients[c].AuthenticateAsync(bob, MailboxPurpose.Ack(toAck));
                    await start.Task;
                    return await clients[c].Relay.AckAsync(new AckRequest { Auth = auth, Seqs = { toAck } });
                }))];
                Task<FetchResponse> racingFetch = Task.Run(async () =>
                {
                    MailboxAuth auth = await clients[3].AuthenticateAsync(bob, MailboxPurpose.Fetch);
                    await start.Task;
                    return await clients[3].Relay.FetchAsync(new FetchRequest { Auth = auth, Limit = 1000 });
                });
                start.SetResult();
                AckResponse[] answers = await Task.WhenAll(acks).WaitAsync(done.Token);
                FetchResponse during = await racingFetch.WaitAsync(done.Token);

                // Each envelope deleted once in all, whoever deleted it; nothing else deleted.
                Assert.Equal(fresh.Length, answers.Sum(a => a.Deleted));
                unacked.ExceptWith(fresh);
                acked.UnionWith(fresh);
                Assert.All(during.Items, item => Assert.True(unacked.Contains(item.Seq) || acked.Contains(item.Seq), $"fetched {item.Seq}, never sent"));

                // After the replies: none of it is fetched again, and all the rest is still there.
                FetchResponse after = await clients[3].Relay.FetchAsync(new FetchRequest { Auth = await clients[3].AuthenticateAsync(bob, MailboxPurpose.Fetch), Limit = 1000 });
                Assert.Equal(unacked.ToArray(), after.Items.Select(i => i.Seq).ToArray());
            }

            // The subscription got every message that was never acknowledged, in order (acknowledged ones it may have missed).
            await Poll.UntilAsync(() => { lock (delivered) { return delivered.Count > 0 && delivered[^1] >= newest; } }, () => $"the subscription is at {delivered.LastOrDefault()} of {newest} ({reading.Exception?.InnerException?.Message ?? "reading"})");
            lock (delivered)
            {
                Assert.Subset(delivered.ToHashSet(), unacked.ToHashSet());
            }

            subscription.Dispose();
            await Assert.ThrowsAnyAsync<Exception>(() => reading);
        }
        finally
        {
            foreach (MegaNetClient c in clients)
            {
                c.Dispose();
            }
        }

        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task Copies_fetches_and_acks_in_flight_at_a_graceful_stop_end_and_what_was_answered_holds_after_a_restart()
    {
        await using TestNode node = await TestNode.StartAsync(o =>
        {
            o.SubmitBurst = 1;
            o.SubmitRatePerKey = 0.001;
        });
        using Identity bob = Identity.Create();
        var clients = Enumerable.Range(0, 5).Select(_ => node.Client()).ToArray();
        var receipts = new System.Collections.Concurrent.ConcurrentQueue<Receipt>();
        var acked = new System.Collections.Concurrent.ConcurrentQueue<ulong>();
        var failures = new System.Collections.Concurrent.ConcurrentQueue<RpcException>();
        try
        {
            using var stopping = new CancellationTokenSource();
            // Four connections send each envelope at once (the sending key's one token goes to one of them); a fifth
            // fetches and acknowledges what it finds.
            Task sending = Task.Run(async () =>
            {
                for (int round = 0; !stopping.IsCancellationRequested; round++)
                {
                    using Identity sender = Identity.Create();
                    Envelope envelope = EnvelopeFormat.Seal(sender, bob.Card, Encoding.UTF8.GetBytes($"round {round}"), "text/plain", null, DateTimeOffset.UtcNow.AddDays(1));
                    await Task.WhenAll(clients.Take(4).Select(c => Task.Run(async () =>
                    {
                        try
                        {
                            receipts.Enqueue(await c.Relay.SubmitAsync(new SubmitRequest { Envelope = envelope }, deadline: DateTime.UtcNow.AddMinutes(1)));
                        }
                        catch (RpcException e)
                        {
                            failures.Enqueue(e);
                        }
                    })));
                }
            });
            Task acking = Task.Run(async () =>
            {
                while (!stopping.IsCancellationRequested)
                {
                    try
                    {
                        FetchResponse page = await clients[4].Relay.FetchAsync(new FetchRequest { Auth = await clients[4].AuthenticateAsync(bob, MailboxPurpose.Fetch), Limit = 4 });
                        ulong[] seqs = [.. page.Items.Select(i => i.Seq)];
                        if (seqs.Length > 0)
                        {
                            await clients[4].Relay.AckAsync(new AckRequest { Auth = await clients[4].AuthenticateAsync(bob, MailboxPurpose.Ack(seqs)), Seqs = { seqs } });
                            foreach (ulong seq in seqs)
                            {
                                acked.Enqueue(seq);
                            }
                        }

                        await Task.Delay(20);
                    }
                    catch (RpcException e)
                    {
                        failures.Enqueue(e);
                    }
                }
            });

            await Poll.UntilAsync(() => receipts.Count >= 200 && !acked.IsEmpty, () => $"{receipts.Count} receipts, {acked.Count} acked");
            await node.StopAsync();
            stopping.Cancel();
            await Task.WhenAll(sending, acking).WaitAsync(TimeSpan.FromMinutes(2));
        }
        finally
        {
            foreach (MegaNetClient c in clients)
            {
                c.Dispose();
            }
        }

        // Only the stop's refusals: every copy that was answered at all got its envelope's receipt.
        Assert.All(failures, e => Assert.Equal(StatusCode.Unavailable, e.StatusCode));
        Assert.All(receipts.GroupBy(r => r.EnvelopeId), g => Assert.Single(g.Select(r => r.LogIndex).Distinct()));
        await node.RestartAsync();
        using MegaNetClient after = node.Client();
        var held = new HashSet<ulong>();
        ulong cursor = 0;
        while (true)
        {
            FetchResponse page = await after.Relay.FetchAsync(new FetchRequest { Auth = await after.AuthenticateAsync(bob, MailboxPurpose.Fetch), AfterSeq = cursor, Limit = 1000 });
            if (page.Items.Count == 0)
            {
                break;
            }

            held.UnionWith(page.Items.Select(i => i.Seq));
            cursor = page.NextCursor;
        }

        var gone = acked.ToHashSet();
        Assert.Empty(held.Intersect(gone));
        foreach (Receipt r in receipts.DistinctBy(r => r.LogIndex))
        {
            Assert.True(held.Contains((ulong)r.LogIndex + 1) || gone.Contains((ulong)r.LogIndex + 1), $"the envelope of log index {r.LogIndex} was lost");
        }

        Assert.Null(await after.VerifyReceiptAsync(receipts.Last()));
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
