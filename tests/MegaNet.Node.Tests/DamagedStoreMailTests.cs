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
public sealed class DamagedStoreMailTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("meganet-damaged-").FullName;

    // Bob's identity file, for meganet.
    private readonly string _bobPath;
    private readonly Identity _bob;

    public DamagedStoreMailTests()
    {
        _bobPath = TestIdentities.Save(_dir, "bob.json").Path;
        _bob = Identity.Load(_bobPath);
    }

    public void Dispose()
    {
        _bob.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    /// <summary>120 envelopes of the 64 KiB class for <paramref name="bob"/> under an 8 MiB store budget (4 MiB of
    /// table in memory): the table's first 1.5 MiB were flushed before they left memory, and are read from disk.
    /// Returns the mailbox's sequence numbers, the envelopes and their receipts.</summary>
    private static async Task<(ulong[] Seqs, Envelope[] Envelopes, Receipt[] Receipts)> FillAsync(TestNode node, Identity bob)
    {
        using MegaNetClient client = node.Client();
        using Identity alice = Identity.Create();
        byte[] content = RandomNumberGenerator.GetBytes(60_000);
        // Each its own content: two of the same content sealed in the same millisecond are one message to the
        // recipient (SeenMessages: the second is a copy).
        Envelope[] envelopes = [.. Enumerable.Range(0, 120).Select(i => EnvelopeFormat.Seal(alice, bob.Card, Numbered(content, i), "application/octet-stream", null, DateTimeOffset.UtcNow.AddDays(1)))];
        Receipt[] receipts = await Task.WhenAll(envelopes.Select(e => client.Relay.SubmitAsync(new SubmitRequest { Envelope = e }).ResponseAsync));
        var store = (FasterEnvelopeStore)node.Services.GetRequiredService<IEnvelopeStore>();
        Assert.True(store.TableHeadAddressForTests >= 3 << 19, $"the table holds {store.TableHeadAddressForTests} bytes on disk only");
        ulong[] seqs = store.IndexedSeqs(bob.Address);
        Assert.Equal(120, seqs.Length);
        return (seqs, envelopes, receipts);
    }

    private static byte[] Numbered(byte[] content, int i)
    {
        byte[] numbered = content.ToArray();
        System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(numbered, i);
        return numbered;
    }

    // A bad sector: 512 KiB of zeros in the table's first segment, about eight whole records. Returns what was there.
    private static byte[] ZeroTable(TestNode node) => WriteTable(node, new byte[512 << 10]);

    // ZeroTable for a test that repairs the bytes later (WriteTable): no compaction until then, which would go past the
    // damaged records (the node's timed checkpoint may fall in between on a slow machine).
    private static byte[] ZeroTableUntilRepaired(TestNode node)
    {
        ((FasterEnvelopeStore)node.Services.GetRequiredService<IEnvelopeStore>()).CompactionOffForTests = true;
        return ZeroTable(node);
    }

    /// <summary>Writes <paramref name="bytes"/> where <see cref="ZeroTable"/> zeroes, returning what was there.</summary>
    private static byte[] WriteTable(TestNode node, byte[] bytes)
    {
        using var segment = new FileStream(Path.Combine(node.Options.DataDirectory, "store", "kv", "hlog.log.0"), FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite);
        byte[] before = new byte[bytes.Length];
        segment.Position = 1 << 20;
        segment.ReadExactly(before);
        segment.Position = 1 << 20;
        segment.Write(bytes);
        return before;
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

    /// <summary>A compaction that goes past damaged table records (the mail there acknowledged, so nothing is left to
    /// fetch that would find it) reports the damage as a read does: logged once in full, and the node unhealthy. Before,
    /// FASTER's compaction over the zeroed records ended the node's process (an AccessViolationException).</summary>
    [Fact]
    public async Task Damage_a_compaction_goes_past_is_logged_in_full_and_the_node_reports_itself_damaged()
    {
        using Identity bob = Identity.Create();
        await using TestNode node = await TestNode.StartAsync(o => o.SubmitBurst = 10_000);
        (ulong[] seqs, _, _) = await FillAsync(node, bob);
        var store = (FasterEnvelopeStore)node.Services.GetRequiredService<IEnvelopeStore>();
        await store.CheckpointAsync();
        ZeroTable(node);
        // Little live mail in much log: the next checkpoint compacts.
        Assert.Equal(seqs.Length, await store.AckAsync(bob.Address, seqs));
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, await HealthAsync(node));

        await store.CheckpointAsync();

        Assert.True(store.LastCompaction?.DamagedBytes > 0, $"the compaction found no damage: {store.LastCompaction}");
        string error = Assert.Single(node.Errors);
        Assert.Contains($"Compacting the envelope table in '{store.TableDirectory}' found", error, StringComparison.Ordinal);
        Assert.Contains("stop the node, then restore the store directory from a backup", error, StringComparison.Ordinal);
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.NotServing, await HealthAsync(node));
    }

    /// <summary>The entries of <paramref name="seqs"/> the node no longer delivers: each asked for alone, from the one
    /// before it, answers DATA_LOSS naming it.</summary>
    private static async Task<ulong[]> DamagedSeqsAsync(TestNode node, Identity bob, ulong[] seqs)
    {
        using MegaNetClient client = node.Client();
        var damaged = new List<ulong>();
        for (int i = 0; i < seqs.Length; i++)
        {
            try
            {
                await client.Relay.FetchAsync(new FetchRequest { Auth = await client.AuthenticateAsync(bob, MailboxPurpose.Fetch), AfterSeq = i == 0 ? 0 : seqs[i - 1], Limit = 1 });
            }
            catch (RpcException e) when (e.StatusCode == StatusCode.DataLoss)
            {
                Assert.Equal(seqs[i], MegaNetClient.DamagedSeq(e));
                damaged.Add(seqs[i]);
            }
        }

        Assert.InRange(damaged.Count, 1, seqs.Length - 2);
        return [.. damaged];
    }

    /// <summary>The <c>seq</c> of each message a <c>--json</c> run printed, in order.</summary>
    private static ulong[] PrintedSeqs(IEnumerable<string> lines) =>
        [.. lines.Where(l => l.Length > 0).Select(l => (ulong)System.Text.Json.Nodes.JsonNode.Parse(l)!["seq"]!)];

    /// <summary>One damaged envelope blocked every later message of the mailbox: <c>fetch</c> showed the node's
    /// DATA_LOSS and stopped.</summary>
    [Fact]
    public async Task Fetch_goes_on_past_envelopes_the_store_no_longer_gives_names_them_acks_none_of_them_and_exits_2()
    {
        await using TestNode node = await TestNode.StartAsync(o => o.SubmitBurst = 10_000);
        (ulong[] seqs, _, _) = await FillAsync(node, _bob);
        byte[] sound = ZeroTableUntilRepaired(node);
        ulong[] damaged = await DamagedSeqsAsync(node, _bob, seqs);

        string[] fetch = ["fetch", "-i", _bobPath, "--node", node.Address.ToString(), "--json", "--ack"];
        MeganetProcess.Result r = await MeganetProcess.RunAsync(_dir, null, false, fetch);
        MeganetResults.AssertExit(r, 2);
        Assert.Equal(seqs.Except(damaged), PrintedSeqs(r.Stdout.Split('\n')));
        foreach (ulong seq in damaged)
        {
            Assert.Contains($"meganet: the message at seq {seq} could not be delivered: the node's store is damaged", r.Stderr, StringComparison.Ordinal);
        }

        Assert.Contains($"acknowledged {seqs.Length - damaged.Length} message(s)", r.Stderr, StringComparison.Ordinal);
        // What it printed is gone from the node; what it could not deliver is not.
        var store = (FasterEnvelopeStore)node.Services.GetRequiredService<IEnvelopeStore>();
        Assert.Equal(damaged, store.IndexedSeqs(_bob.Address));

        // Once the store is restored, they come with the next fetch.
        WriteTable(node, sound);
        MeganetProcess.Result again = await MeganetProcess.RunAsync(_dir, null, false, fetch);
        MeganetResults.AssertExit(again, 0, $"acknowledged {damaged.Length} message(s)");
        Assert.Equal(damaged, PrintedSeqs(again.Stdout.Split('\n')));
        Assert.Empty(store.IndexedSeqs(_bob.Address));
    }

    /// <summary>ListenAsync threw the subscription's DATA_LOSS: a listener saw none of the mail after the damaged
    /// envelope until the store was restored.</summary>
    [Fact]
    public async Task ListenAsync_reports_each_envelope_the_store_no_longer_gives_once_and_goes_on_listening()
    {
        using Identity bob = Identity.Create(), alice = Identity.Create();
        await using TestNode node = await TestNode.StartAsync(o => o.SubmitBurst = 10_000);
        (ulong[] seqs, _, _) = await FillAsync(node, bob);
        ZeroTable(node);
        ulong[] damaged = await DamagedSeqsAsync(node, bob, seqs);

        using MegaNetClient client = node.Client();
        using var deadline = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        var reported = new List<ulong>();
        var received = new List<ulong>();
        await using IAsyncEnumerator<ReceivedMessage> messages = client.ListenAsync(bob, 0, deadline.Token, damaged: d =>
        {
            Assert.Equal(d.Seq, MegaNetClient.DamagedSeq(d.Error));
            reported.Add(d.Seq);
        }).GetAsyncEnumerator(deadline.Token);
        while (received.Count < seqs.Length - damaged.Length)
        {
            Assert.True(await messages.MoveNextAsync());
            received.Add(messages.Current.Seq);
        }

        Assert.Equal(seqs.Except(damaged), received);
        Assert.Equal(damaged, reported);

        // Still listening: new mail comes.
        await client.SendAsync(alice, bob.Card, System.Text.Encoding.UTF8.GetBytes("after the damage"), "text/plain");
        Assert.True(await messages.MoveNextAsync());
        Assert.Equal("after the damage", messages.Current.Content.Content.ToStringUtf8());
        Assert.Equal(damaged, reported);
    }

    /// <summary><c>listen</c> showed the DATA_LOSS as a failure and stopped (a subscription that had worked is retried
    /// only on passing failures): no mail after the damaged envelope, ever.</summary>
    [Fact]
    public async Task Listen_goes_on_past_envelopes_the_store_no_longer_gives_names_each_once_and_acks_none_of_them()
    {
        using Identity alice = Identity.Create();
        await using TestNode node = await TestNode.StartAsync(o => o.SubmitBurst = 10_000);
        (ulong[] seqs, _, _) = await FillAsync(node, _bob);
        byte[] sound = ZeroTableUntilRepaired(node);
        ulong[] damaged = await DamagedSeqsAsync(node, _bob, seqs);
        var store = (FasterEnvelopeStore)node.Services.GetRequiredService<IEnvelopeStore>();

        using var listen = new RunningMeganet(_dir, "listen", "-i", _bobPath, "--node", node.Address.ToString(), "--json", "--ack");
        string Stderr() => $"exited: {listen.Process.HasExited}; {listen.Stdout.Length} line(s) on stdout; stderr:\n{string.Join('\n', listen.Stderr)}";
        await Poll.UntilAsync(() => listen.Process.HasExited || listen.Stdout.Length >= seqs.Length - damaged.Length, Stderr);
        Assert.False(listen.Process.HasExited, Stderr());
        Assert.Equal(seqs.Except(damaged), PrintedSeqs(listen.Stdout));
        foreach (ulong seq in damaged)
        {
            Assert.Single(listen.Stderr, l => l.StartsWith($"meganet: the message at seq {seq} could not be delivered: the node's store is damaged", StringComparison.Ordinal));
        }

        // Everything printed is acknowledged; the damaged ones are not.
        await Poll.UntilAsync(() => store.IndexedSeqs(_bob.Address).SequenceEqual(damaged), () => $"the mailbox holds {string.Join(", ", store.IndexedSeqs(_bob.Address))}; {Stderr()}");

        // Still listening: new mail comes.
        using (MegaNetClient sender = node.Client())
        {
            await sender.SendAsync(alice, _bob.Card, System.Text.Encoding.UTF8.GetBytes("after the damage"), "text/plain");
        }

        await listen.WaitForAsync("after the damage");
        // Repaired before the node stops, as its operator would restore the store.
        WriteTable(node, sound);
        Assert.Equal(0, await listen.StopAsync());
        Assert.Contains($"acknowledged {seqs.Length - damaged.Length + 1} message(s)", listen.Stderr);
    }

    /// <summary>A table read that keeps failing: the node registers each subscription (its first keepalive), then ends
    /// it with UNAVAILABLE. listen took that keepalive for a working subscription and reset its backoff, so it
    /// subscribed again every second for as long as the failure lasted, and --retry-for never ran out.</summary>
    [Fact]
    public async Task Listen_backs_off_while_the_node_cannot_read_its_store_gives_up_after_retry_for_and_delivers_once_it_can()
    {
        await using TestNode node = await TestNode.StartAsync(o => o.SubmitBurst = 10_000);
        (ulong[] seqs, _, _) = await FillAsync(node, _bob);
        var store = (FasterEnvelopeStore)node.Services.GetRequiredService<IEnvelopeStore>();
        store.TableDeviceForTests.FailReadForTests = _ => true;

        // As for a node that cannot be reached: 1 s, 2 s ... apart, and given up after --retry-for.
        using (var failing = new RunningMeganet(_dir, "listen", "-i", _bobPath, "--node", node.Address.ToString(), "--retry-for", "5s"))
        {
            Task exited = failing.Process.WaitForExitAsync();
            Assert.True(await Task.WhenAny(exited, Task.Delay(TimeSpan.FromSeconds(90))) == exited,
                $"still subscribing 90 s after the first failure, with --retry-for 5s:\n{string.Join('\n', failing.Stderr)}");
            Assert.True(failing.Process.ExitCode == 2, $"exit code {failing.Process.ExitCode}:\n{string.Join('\n', failing.Stderr)}");
            Assert.Contains("gave up after", failing.Stderr[^1], StringComparison.Ordinal);
            string[] waits = [.. failing.Stderr.Where(l => l.StartsWith("meganet: subscription lost", StringComparison.Ordinal)).Select(l => l[l.LastIndexOf(" in ", StringComparison.Ordinal)..])];
            Assert.Equal([" in 1 s.", " in 2 s."], waits.Take(2));
            Assert.All(waits, w => Assert.Contains("could not read the next envelope", failing.Stderr.First(l => l.EndsWith(w, StringComparison.Ordinal)), StringComparison.Ordinal));
        }

        // And once reads work again, the mail comes.
        using var listen = new RunningMeganet(_dir, "listen", "-i", _bobPath, "--node", node.Address.ToString(), "--json");
        await listen.WaitForAsync("in 4 s.", stderr: true);
        store.TableDeviceForTests.FailReadForTests = null;
        await Poll.UntilAsync(() => listen.Process.HasExited || listen.Stdout.Length >= seqs.Length, () => string.Join('\n', listen.Stderr));
        Assert.Equal(seqs, PrintedSeqs(listen.Stdout));
        Assert.Equal(0, await listen.StopAsync());
    }

    /// <summary>A node's damaged-seq is taken only as a way forward: one at or before the cursor ends the fetch as the
    /// DATA_LOSS it is (going on from it would ask for the same page without end), and the node's words are shown
    /// escaped, not obeyed.</summary>
    [Fact]
    public async Task Fetch_goes_on_only_past_a_damaged_seq_beyond_its_cursor_and_shows_the_nodes_words_escaped()
    {
        await using var fake = await FakeRelay<DamagedMailRelay>.StartAsync(new DamagedMailRelay());
        MeganetProcess.Result r = await MeganetProcess.RunAsync(_dir, null, false, "fetch", "-i", _bobPath, "--node", fake.Address.ToString());
        MeganetResults.AssertExit(r, 2);
        Assert.Contains("meganet: the message at seq 5 could not be delivered: the node's store is damaged (the node said DataLoss: damaged \\u001b]0;owned\\u0007)", r.Stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("\u001b", r.Stderr, StringComparison.Ordinal);
        // Then the same seq again, after 5: the end, not a loop of fetches.
        Assert.Single(r.Stderr.Split('\n'), l => l.Contains("could not be delivered", StringComparison.Ordinal));
        Assert.Equal(2, r.Stderr.Split('\n').Count(l => l.Contains("the node said DataLoss", StringComparison.Ordinal)));
    }

    /// <summary>A node that answers every fetch with DATA_LOSS and damaged-seq 5, with a terminal escape in its text.</summary>
    private sealed class DamagedMailRelay : Relay.RelayBase
    {
        private static readonly byte[] NodeId = RandomNumberGenerator.GetBytes(32);

        public override Task<ChallengeResponse> Challenge(ChallengeRequest request, ServerCallContext context) =>
            Task.FromResult(new ChallengeResponse
            {
                Nonce = Google.Protobuf.ByteString.CopyFrom(RandomNumberGenerator.GetBytes(32)),
                NodeId = Google.Protobuf.ByteString.CopyFrom(NodeId),
                ExpiresUnixMs = DateTimeOffset.UtcNow.AddMinutes(2).ToUnixTimeMilliseconds(),
            });

        public override Task<FetchResponse> Fetch(FetchRequest request, ServerCallContext context) =>
            throw new RpcException(new Status(StatusCode.DataLoss, "damaged \u001b]0;owned\u0007"), new Metadata { { MegaNetClient.DamagedSeqTrailer, "5" } });
    }

    [Fact]
    public async Task A_table_read_the_device_fails_answers_unavailable_the_node_stays_serving_and_the_same_fetch_then_delivers()
    {
        using Identity bob = Identity.Create();
        await using TestNode node = await TestNode.StartAsync(o => o.SubmitBurst = 10_000);
        (ulong[] seqs, _, _) = await FillAsync(node, bob);
        var store = (FasterEnvelopeStore)node.Services.GetRequiredService<IEnvelopeStore>();
        store.TableDeviceForTests.FailReadForTests = _ => true;

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

        store.TableDeviceForTests.FailReadForTests = null;
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
