using System.Security.Cryptography;
using Grpc.Core;
using Grpc.Health.V1;
using MegaNet.Api;
using MegaNet.Api.V1;
using MegaNet.Node.Hosting;
using MegaNet.Store;
using Microsoft.Extensions.DependencyInjection;

namespace MegaNet.Node.Tests;

/// <summary>
/// A node whose mailbox holds envelopes that no longer read back from its envelope table (a bad sector zeroed part of
/// it): Fetch and Subscribe deliver the mail before the first such envelope, then answer DATA_LOSS naming it, with the
/// cursor before it; the damage is logged once in full and the health check turns NOT_SERVING. A table read the device
/// fails is UNAVAILABLE, the node stays serving, and the same Fetch delivers the mail once reads work. Before, either
/// was taken for mail acknowledged meanwhile: skipped with status OK, the cursor past it, nothing logged.
/// </summary>
public sealed class DamagedStoreMailTests
{
    /// <summary>120 envelopes of the 64 KiB class for <paramref name="bob"/> under an 8 MiB store budget (4 MiB of
    /// table in memory): the table's first 1.5 MiB were flushed before they left memory, and are read from disk.
    /// Returns the mailbox's sequence numbers, the envelopes and their receipts.</summary>
    private static async Task<(ulong[] Seqs, Envelope[] Envelopes, Receipt[] Receipts)> FillAsync(TestNode node, Identity bob)
    {
        using MegaNetClient client = node.Client();
        using Identity alice = Identity.Create();
        byte[] content = RandomNumberGenerator.GetBytes(60_000);
        Envelope[] envelopes = [.. Enumerable.Range(0, 120).Select(_ => EnvelopeFormat.Seal(alice, bob.Card, content, "application/octet-stream", null, DateTimeOffset.UtcNow.AddDays(1)))];
        Receipt[] receipts = await Task.WhenAll(envelopes.Select(e => client.Relay.SubmitAsync(new SubmitRequest { Envelope = e }).ResponseAsync));
        var store = (FasterEnvelopeStore)node.Services.GetRequiredService<IEnvelopeStore>();
        Assert.True(store.TableHeadAddressForTests >= 3 << 19, $"the table holds {store.TableHeadAddressForTests} bytes on disk only");
        ulong[] seqs = store.IndexedSeqs(bob.Address);
        Assert.Equal(120, seqs.Length);
        return (seqs, envelopes, receipts);
    }

    // A bad sector: 512 KiB of zeros in the table's first segment, about eight whole records.
    private static void ZeroTable(TestNode node)
    {
        using var segment = new FileStream(Path.Combine(node.Options.DataDirectory, "store", "kv", "hlog.log.0"), FileMode.Open, FileAccess.Write, FileShare.ReadWrite);
        segment.Position = 1 << 20;
        segment.Write(new byte[512 << 10]);
    }

    private static async Task<HealthCheckResponse.Types.ServingStatus> HealthAsync(TestNode node)
    {
        using var channel = Grpc.Net.Client.GrpcChannel.ForAddress(node.Address);
        return (await new Health.HealthClient(channel).CheckAsync(new HealthCheckRequest())).Status;
    }

    private static async Task<FetchResponse> FetchAsync(MegaNetClient client, Identity bob, ulong after) =>
        await client.Relay.FetchAsync(new FetchRequest { Auth = await client.AuthenticateAsync(bob, MailboxPurpose.Fetch), AfterSeq = after, Limit = 1000 });

    [Fact]
    public async Task Fetch_and_subscribe_stop_before_an_envelope_the_table_no_longer_gives_and_answer_data_loss_naming_it()
    {
        using Identity bob = Identity.Create();
        await using TestNode node = await TestNode.StartAsync(o => o.SubmitBurst = 10_000);
        (ulong[] seqs, _, _) = await FillAsync(node, bob);
        string table = Path.Combine(node.Options.DataDirectory, "store", "kv");
        ZeroTable(node);

        using MegaNetClient client = node.Client();
        var delivered = new List<ulong>();
        ulong cursor = 0;
        RpcException? damage = null;
        while (damage is null)
        {
            try
            {
                FetchResponse page = await FetchAsync(client, bob, cursor);
                Assert.Equal(120, (int)page.WaitingCount);
                if (page.Items.Count == 0)
                {
                    break; // the end of the mailbox, as a client reads it
                }

                delivered.AddRange(page.Items.Select(i => i.Seq));
                cursor = page.NextCursor;
            }
            catch (RpcException e)
            {
                damage = e;
            }
        }

        Assert.True(damage is not null, $"every page OK, {delivered.Count} of 120 delivered: the rest was skipped without a word");
        Assert.Equal(StatusCode.DataLoss, damage.StatusCode);
        int first = delivered.Count;
        Assert.InRange(first, 1, 119);
        ulong damaged = seqs[first];
        Assert.Equal(seqs.Take(first), delivered);
        Assert.True(cursor < damaged, $"cursor {cursor}, past seq {damaged}");
        Assert.Equal(StoreDamage.MailClientText(damaged), damage.Status.Detail);
        // And for a program, without parsing that text: the trailer names it.
        Assert.Equal(damaged, MegaNetClient.DamagedSeq(damage));
        Assert.DoesNotContain(node.Options.DataDirectory, damage.Status.Detail, StringComparison.Ordinal);

        // Subscribe lists the same way: the mail before it, then the same status.
        using (AsyncServerStreamingCall<MailEvent> call = client.Relay.Subscribe(new SubscribeRequest { Auth = await client.AuthenticateAsync(bob, MailboxPurpose.Subscribe) }))
        {
            var streamed = new List<ulong>();
            RpcException ended = await Assert.ThrowsAsync<RpcException>(async () =>
            {
                await foreach (MailEvent e in call.ResponseStream.ReadAllAsync())
                {
                    if (e.Item is { } item)
                    {
                        streamed.Add(item.Seq);
                    }
                }
            });
            Assert.Equal(StatusCode.DataLoss, ended.StatusCode);
            Assert.Equal(StoreDamage.MailClientText(damaged), ended.Status.Detail);
            Assert.Equal(damaged, MegaNetClient.DamagedSeq(ended));
            Assert.Equal(delivered, streamed);
        }

        // What the detail says works: the mail after it comes from after_seq of it (or the next damaged one is named).
        try
        {
            Assert.Equal(seqs[first + 1], (await FetchAsync(client, bob, damaged)).Items[0].Seq);
        }
        catch (RpcException next) when (next.StatusCode == StatusCode.DataLoss)
        {
            Assert.Equal(StoreDamage.MailClientText(seqs[first + 1]), next.Status.Detail);
        }

        // Logged once in full (the table's directory and what to do), and the node reports itself damaged.
        string error = Assert.Single(node.Errors);
        Assert.Contains(table, error, StringComparison.Ordinal);
        Assert.Contains($"mailbox seq {damaged}", error, StringComparison.Ordinal);
        Assert.Contains("stop the node, then restore the store directory from a backup", error, StringComparison.Ordinal);
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.NotServing, await HealthAsync(node));
    }

    [Fact]
    public async Task A_table_read_the_device_fails_answers_unavailable_the_node_stays_serving_and_the_same_fetch_then_delivers()
    {
        using Identity bob = Identity.Create();
        await using TestNode node = await TestNode.StartAsync(o => o.SubmitBurst = 10_000);
        (ulong[] seqs, _, _) = await FillAsync(node, bob);
        var store = (FasterEnvelopeStore)node.Services.GetRequiredService<IEnvelopeStore>();
        store.FailTableReadForTests = _ => true;

        using MegaNetClient client = node.Client();
        RpcException fetch = await Assert.ThrowsAsync<RpcException>(async () => await FetchAsync(client, bob, 0));
        Assert.Equal(StatusCode.Unavailable, fetch.StatusCode);
        Assert.Equal("The node could not read the next envelope of this mailbox from its store just now (Too many open files (injected) : 'hlog.log.0'). " +
            "This is no sign of damage: ask again later from after_seq 0.", fetch.Status.Detail);
        using (AsyncServerStreamingCall<MailEvent> call = client.Relay.Subscribe(new SubscribeRequest { Auth = await client.AuthenticateAsync(bob, MailboxPurpose.Subscribe) }))
        {
            RpcException ended = await Assert.ThrowsAsync<RpcException>(async () =>
            {
                await foreach (MailEvent e in call.ResponseStream.ReadAllAsync())
                {
                    Assert.Null(e.Item);
                }
            });
            Assert.Equal(StatusCode.Unavailable, ended.StatusCode);
            Assert.Equal(fetch.Status.Detail, ended.Status.Detail);
        }

        // No damage: nothing logged as an error, and the health check still serves.
        node.AssertNoServerErrors();
        Assert.Equal(2, node.Services.GetRequiredService<StoreDamage>().UnreadableCount);
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, await HealthAsync(node));

        store.FailTableReadForTests = null;
        FetchResponse page = await FetchAsync(client, bob, 0);
        Assert.Equal(seqs.Take(page.Items.Count), page.Items.Select(i => i.Seq));
    }

    /// <summary>Replay detection when the envelope's record is damaged: before, admission's lookup and the store's took
    /// "not found" for a new envelope, which was stored again (a second copy for bob, a second leaf, a new receipt).</summary>
    [Fact]
    public async Task A_replay_of_an_envelope_whose_record_is_damaged_gets_its_original_receipt()
    {
        using Identity bob = Identity.Create();
        await using TestNode node = await TestNode.StartAsync(o => o.SubmitBurst = 10_000);
        (_, Envelope[] envelopes, Receipt[] receipts) = await FillAsync(node, bob);
        var store = (FasterEnvelopeStore)node.Services.GetRequiredService<IEnvelopeStore>();
        // The node remembers the ids of its last puts until a checkpoint: replays look in its table after one.
        await store.CheckpointAsync();
        ZeroTable(node);

        using MegaNetClient client = node.Client();
        Receipt[] again = await Task.WhenAll(envelopes.Select(e => client.Relay.SubmitAsync(new SubmitRequest { Envelope = e }).ResponseAsync));
        Assert.All(again, r => Assert.True(r.Duplicate, $"the replay of log index {receipts[Array.IndexOf(again, r)].LogIndex} was stored again as {r.LogIndex}"));
        Assert.Equal(receipts.Select(r => r.LogIndex), again.Select(r => r.LogIndex));
        Assert.Equal(120, store.GetTreeHead().TreeSize);
        Assert.Equal(120, store.IndexedSeqs(bob.Address).Length);
    }
}
