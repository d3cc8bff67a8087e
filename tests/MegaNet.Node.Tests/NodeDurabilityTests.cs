using System.Collections.Concurrent;
using Grpc.Core;
using Grpc.Health.V1;
using Grpc.Net.Client;
using MegaNet.Api;
using MegaNet.Api.V1;
using Xunit.Abstractions;

namespace MegaNet.Node.Tests;

/// <summary>
/// The node process killed with SIGKILL, and the node on a disk that fills: every receipt a client got is still
/// there after a restart, as its message in the recipient's mailbox and as a leaf its receipt proves.
/// </summary>
public sealed class NodeDurabilityTests(ITestOutputHelper output)
{
    private static readonly Dictionary<string, string> NodeEnvironment = new()
    {
        ["MEGANET_MegaNet__SubmitRatePerKey"] = "1000000",
        ["MEGANET_MegaNet__SubmitBurst"] = "1000000",
        ["MEGANET_MegaNet__StoreMemoryMiB"] = "8",
        ["MEGANET_MegaNet__StoreMinFreeDiskMiB"] = "0", // these fill a 10 MiB tmpfs on purpose
    };

    [Fact]
    public async Task Every_receipt_survives_kill_9_of_the_node_under_load()
    {
        string data = Directory.CreateTempSubdirectory("meganet-kill-").FullName;
        using Identity bob = Identity.Create();
        Senders senders;
        await using (ExternalNode node = await ExternalNode.StartAsync(data, NodeEnvironment))
        {
            senders = Senders.Start(node.Address, bob.Card, count: 4);
            // Until enough receipts are out (not a fixed time: on a loaded machine 1.5 s gave 0 to 28), then a little
            // longer, so the kill lands among sends in flight.
            for (int wait = 0; wait < 1200 && senders.Receipts.Count < 100; wait++)
            {
                await Task.Delay(50);
            }

            await Task.Delay(TimeSpan.FromMilliseconds(200));
            await node.KillAsync();
            await senders.StopAsync();
        }

        output.WriteLine($"{senders.Receipts.Count} receipts before the kill; the sends in flight failed with {string.Join(", ", senders.Failures.Select(f => f.StatusCode).Distinct())}");
        Assert.True(senders.Receipts.Count >= 50, $"only {senders.Receipts.Count} receipts before the kill; the test proved little");
        await AssertEveryReceiptHeldAsync(data, bob, senders.Receipts);
    }

    [Fact]
    public async Task A_graceful_stop_answers_every_call_with_a_receipt_or_unavailable_and_ends_streams()
    {
        string data = Directory.CreateTempSubdirectory("meganet-stop-").FullName;
        await using TestNode node = await TestNode.StartAsync(o =>
        {
            TestNode.Unthrottled(o);
            // Two bulk streams fill bob's mailbox far faster than the unary senders: room for all of it.
            o.MailboxMaxCount = 1_000_000;
            o.MailboxMaxBytes = 1L << 32;
        }, dataDirectory: data);
        using MegaNetClient client = node.Client();
        using Identity alice = Identity.Create(), bob = Identity.Create();
        Envelope[] envelopes = Enumerable.Range(0, 3000)
            .Select(i => EnvelopeFormat.Seal(alice, bob.Card, [(byte)i, (byte)(i >> 8)], "application/octet-stream", null, DateTimeOffset.UtcNow.AddDays(1))).ToArray();
        var receipts = new ConcurrentQueue<Receipt>();
        var refusals = new ConcurrentQueue<RpcException>();
        int next = -1;
        using var stop = new CancellationTokenSource();
        Task[] senders = Enumerable.Range(0, 8).Select(_ => Task.Run(async () =>
        {
            int i;
            while (!stop.IsCancellationRequested && (i = Interlocked.Increment(ref next)) < envelopes.Length)
            {
                try
                {
                    receipts.Enqueue(await client.Relay.SubmitAsync(new SubmitRequest { Envelope = envelopes[i] }));
                }
                catch (RpcException e)
                {
                    refusals.Enqueue(e);
                }
            }
        })).ToArray();

        // A bulk stream that keeps sending through the stop: what the node read is answered, then it says why it ended.
        using Identity carol = Identity.Create();
        var streamed = new ConcurrentQueue<Receipt>();
        Task<RpcException> bulk = Task.Run(async () =>
        {
            using AsyncDuplexStreamingCall<SubmitRequest, SubmitResult> call = client.Relay.SubmitStream();
            Task sending = Task.Run(async () =>
            {
                try
                {
                    for (int i = 0; ; i++)
                    {
                        Envelope e = EnvelopeFormat.Seal(carol, bob.Card, BitConverter.GetBytes(i), "application/octet-stream", null, DateTimeOffset.UtcNow.AddDays(1));
                        await call.RequestStream.WriteAsync(new SubmitRequest { Envelope = e });
                    }
                }
                catch (Exception e) when (e is RpcException or InvalidOperationException or IOException)
                {
                    // The call ended.
                }
            });
            try
            {
                await foreach (SubmitResult r in call.ResponseStream.ReadAllAsync())
                {
                    Assert.Equal(0, r.StatusCode);
                    streamed.Enqueue(r.Receipt);
                }
            }
            catch (RpcException e)
            {
                await sending;
                return e;
            }

            throw new InvalidOperationException("the stream ended without a status");
        });

        // The same through SubmitBatchStream, 16 envelopes a request: the node answers whole requests, then says how many.
        using Identity dave = Identity.Create();
        var batched = new ConcurrentQueue<Receipt>();
        int batchesAnswered = 0;
        Task<RpcException> batchBulk = Task.Run(async () =>
        {
            using AsyncDuplexStreamingCall<SubmitBatchRequest, SubmitBatchResult> call = client.Relay.SubmitBatchStream();
            Task sending = Task.Run(async () =>
            {
                try
                {
                    for (int i = 0; ; i += 16)
                    {
                        var request = new SubmitBatchRequest();
                        request.Envelopes.Add(Enumerable.Range(i, 16).Select(k =>
                            EnvelopeFormat.Seal(dave, bob.Card, BitConverter.GetBytes(k), "application/octet-stream", null, DateTimeOffset.UtcNow.AddDays(1))));
                        await call.RequestStream.WriteAsync(request);
                    }
                }
                catch (Exception e) when (e is RpcException or InvalidOperationException or IOException)
                {
                    // The call ended.
                }
            });
            try
            {
                await foreach (SubmitBatchResult answer in call.ResponseStream.ReadAllAsync())
                {
                    Assert.Equal(16, answer.Results.Count);
                    Assert.All(answer.Results, r => Assert.Equal(0, r.StatusCode));
                    foreach (SubmitResult r in answer.Results)
                    {
                        batched.Enqueue(r.Receipt);
                    }

                    batchesAnswered++;
                }
            }
            catch (RpcException e)
            {
                await sending;
                return e;
            }

            throw new InvalidOperationException("the batch stream ended without a status");
        });

        // A live subscription, which would hold a graceful stop for its whole timeout unless the node ends it.
        using var listener = new MegaNetClient(node.Address);
        var live = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Task<RpcException> subscription = Assert.ThrowsAsync<RpcException>(async () =>
        {
            await foreach (ReceivedMessage _ in listener.ListenAsync(bob))
            {
                live.TrySetResult();
            }
        });
        // Stop in the middle of the load, not before it got going (the first calls wait for the verifier's JIT), and
        // with the subscription delivering.
        for (int wait = 0; wait < 600 && (receipts.Count < 200 || !live.Task.IsCompleted); wait++)
        {
            await Task.Delay(50);
        }

        Assert.True(live.Task.IsCompleted, "the subscription delivered nothing");

        var stopping = System.Diagnostics.Stopwatch.StartNew();
        await node.StopAsync();
        output.WriteLine($"stopped in {stopping.ElapsedMilliseconds} ms with {receipts.Count} receipts; refusals: " +
            string.Join("; ", refusals.GroupBy(r => $"{r.StatusCode} {r.Status.Detail}").Select(g => $"{g.Count()} × {g.Key}")));
        await stop.CancelAsync();
        await Task.WhenAll(senders);

        Assert.True(stopping.Elapsed < TimeSpan.FromSeconds(20), "the stop waited for the subscription's timeout");
        RpcException bulkEnded = await bulk;
        output.WriteLine($"the bulk stream ended with {bulkEnded.StatusCode}: {bulkEnded.Status.Detail}");
        AssertEndedAfter(bulkEnded, streamed.Count);
        RpcException batchEnded = await batchBulk;
        output.WriteLine($"the batch stream ended with {batchEnded.StatusCode} after {batchesAnswered} answers: {batchEnded.Status.Detail}");
        AssertEndedAfter(batchEnded, batchesAnswered);
        Assert.True(batchesAnswered > 0, "the batch stream got no answer before the stop; the test proved little");

        RpcException ended = await subscription;
        Assert.True(ended.StatusCode == StatusCode.Unavailable, $"the subscription ended with {ended.StatusCode}: {ended.Status.Detail}");
        // Shutting down is UNAVAILABLE, never "queue full" (a retry there is pointless) or UNKNOWN: the node's own
        // answer, a connection refused or reset (Grpc.Net.Client's UNAVAILABLE for a socket or I/O error), or a call
        // that crossed the node's GOAWAY (NO_ERROR, which MegaNetClient reports as UNAVAILABLE, as docs/protocol.md's "A
        // stopping node" promises). Any other code is a broken promise, not a timing; its detail says which path.
        Assert.All(refusals, r => Assert.True(r.StatusCode == StatusCode.Unavailable, $"a call ended {r.StatusCode}: {r.Status.Detail}"));
        Assert.True(receipts.Count > 50, $"only {receipts.Count} receipts before the stop; the test proved little");
        node.AssertNoServerErrors();

        await node.RestartAsync();
        using MegaNetClient after = node.Client();
        var held = new HashSet<string>();
        for (ulong cursor = 0; ;)
        {
            FetchResponse page = await after.Relay.FetchAsync(new FetchRequest { Auth = await after.AuthenticateAsync(bob, MailboxPurpose.Fetch), AfterSeq = cursor, Limit = 1000 });
            if (page.Items.Count == 0)
            {
                break;
            }

            held.UnionWith(page.Items.Select(i => Convert.ToHexString(i.EnvelopeId.Span)));
            cursor = page.NextCursor;
        }

        Receipt[] all = receipts.Concat(streamed).Concat(batched).ToArray();
        Assert.All(all, r => Assert.Contains(Convert.ToHexString(r.EnvelopeId.Span), held));
        // Every receipt's proof, for the unary ones; a sample of the streamed ones (each check is a round trip).
        foreach (Receipt r in receipts.Concat(streamed.Where((_, i) => i % 50 == 0)).Concat(batched.Where((_, i) => i % 50 == 0)))
        {
            Assert.Null(await after.VerifyReceiptAsync(r));
        }

        output.WriteLine($"{streamed.Count} streamed and {batched.Count} batched receipts; all {all.Length} receipts' messages are in the mailbox after the restart");

        static void AssertEndedAfter(RpcException ended, int answered)
        {
            if (ended.Status.DebugException is null)
            {
                // The node's own answer: what it read was answered, and it says how much.
                Assert.Equal(StatusCode.Unavailable, ended.StatusCode);
                Assert.Contains($"shutting down; the first {answered} requests", ended.Status.Detail, StringComparison.Ordinal);
            }
            else
            {
                // The client was still sending when the node closed the connection once every call was answered; the
                // kernel then resets the connection and the client can lose the tail of what it had not read yet,
                // status included (the client sees a transport error, whose words vary). The receipts it did read must
                // still hold (below).
                Assert.NotEqual(StatusCode.OK, ended.StatusCode);
            }
        }
    }

    [Fact]
    public async Task A_second_node_on_the_same_data_directory_or_port_is_refused_and_says_why()
    {
        string data = Directory.CreateTempSubdirectory("meganet-twice-").FullName;
        try
        {
            await using ExternalNode first = await ExternalNode.StartAsync(data);
            (int code, string errors) = await RunNodeAsync("--data", data, "--listen", "127.0.0.1:0");
            Assert.Equal(1, code);
            Assert.Contains("is open in another process", errors, StringComparison.Ordinal);

            string other = Directory.CreateTempSubdirectory("meganet-twice-").FullName;
            (code, errors) = await RunNodeAsync("--data", other, "--listen", first.Address.Authority);
            Directory.Delete(other, recursive: true);
            Assert.Equal(1, code);
            Assert.Contains("address already in use. Another node (or program) listens there", errors, StringComparison.Ordinal);

            // The first node is untouched.
            using var client = new MegaNetClient(first.Address);
            using Identity alice = Identity.Create(), bob = Identity.Create();
            await client.SendAsync(alice, bob.Card, [1, 2, 3], "application/octet-stream");
        }
        finally
        {
            Directory.Delete(data, recursive: true);
        }

        // The second node must refuse at once; MeganetProcess kills it and fails the test if it is still running after 2 minutes.
        static async Task<(int Code, string Errors)> RunNodeAsync(params string[] args)
        {
            MeganetProcess.Result result = await MeganetProcess.RunAsync(MeganetProcess.StartInfo(Directory.GetCurrentDirectory(), ["node", "--backend", "simd", .. args]));
            return (result.ExitCode, result.Stderr);
        }
    }

    [Fact]
    public async Task A_full_disk_answers_unavailable_turns_health_off_and_keeps_every_receipt()
    {
        string root = Directory.CreateTempSubdirectory("meganet-full-").FullName;
        string disk = Directory.CreateDirectory(Path.Combine(root, "disk")).FullName;
        string copy = Path.Combine(root, "copy");
        using Identity bob = Identity.Create();
        Senders senders;
        await using (ExternalNode node = await ExternalNode.StartAsync(disk, NodeEnvironment, tmpfsMiB: 10, copyTo: copy))
        {
            senders = Senders.Start(node.Address, bob.Card, count: 4, stopAtFirstFailure: true);
            Assert.True(await senders.Stopped.WaitAsync(TimeSpan.FromMinutes(2)).ContinueWith(t => t.IsCompletedSuccessfully), "the disk did not fill within 2 minutes");
            RpcException refused = senders.Failures.First();
            output.WriteLine($"{senders.Receipts.Count} receipts, then {refused.StatusCode}: {refused.Status.Detail}");
            Assert.All(senders.Failures, f => Assert.Equal(StatusCode.Unavailable, f.StatusCode));
            Assert.Contains("until its operator frees disk space", refused.Status.Detail, StringComparison.Ordinal);
            Assert.DoesNotContain(disk, refused.Status.Detail, StringComparison.Ordinal); // the data directory is the operator's business

            using (GrpcChannel channel = GrpcChannel.ForAddress(node.Address))
            using (var client = new MegaNetClient(node.Address))
            {
                HealthCheckResponse health = await new Health.HealthClient(channel).CheckAsync(new HealthCheckRequest());
                Assert.Equal(HealthCheckResponse.Types.ServingStatus.NotServing, health.Status);

                // Writes stay refused; the owner still reads the mailbox.
                using Identity carol = Identity.Create();
                RpcException again = await Assert.ThrowsAsync<RpcException>(() => client.SendAsync(carol, bob.Card, new byte[100], "application/octet-stream"));
                Assert.Equal(StatusCode.Unavailable, again.StatusCode);
                (IReadOnlyList<ReceivedMessage> page, _) = await client.FetchAsync(bob, 0, 10);
                Assert.NotEmpty(page);
                // Deleting is a write too: refused as UNAVAILABLE, saying what to do, not UNKNOWN.
                RpcException ack = await Assert.ThrowsAsync<RpcException>(() => client.AckAsync(bob, [page[0].Seq]));
                Assert.Equal(StatusCode.Unavailable, ack.StatusCode);
                Assert.Contains("Acknowledge again later", ack.Status.Detail, StringComparison.Ordinal);
            }

            await node.KillAsync();
            output.WriteLine("node output:" + System.Environment.NewLine + node.Output);
            // The failure is logged in full once, not once per refused batch.
            Assert.Single(node.Output.Split('\n'), l => l.Contains("verified envelopes failed", StringComparison.Ordinal));
        }

        Assert.True(senders.Receipts.Count >= 100, $"only {senders.Receipts.Count} receipts before the disk filled; the test proved little");
        try
        {
            // Space freed: the data directory as the full disk left it, on a disk with room.
            await AssertEveryReceiptHeldAsync(copy, bob, senders.Receipts);
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    private async Task AssertEveryReceiptHeldAsync(string data, Identity recipient, IReadOnlyCollection<Receipt> receipts)
    {
        await using TestNode node = await TestNode.StartAsync(o => o.StoreMemoryMiB = 8, dataDirectory: data);
        using MegaNetClient client = node.Client();
        var held = new Dictionary<string, long>();
        ulong cursor = 0;
        while (true)
        {
            (IReadOnlyList<ReceivedMessage> page, ulong next) = await client.FetchAsync(recipient, cursor, 500);
            if (page.Count == 0)
            {
                break;
            }

            foreach (ReceivedMessage m in page)
            {
                held[Convert.ToHexString(m.EnvelopeId)] = m.LogIndex;
            }

            cursor = next;
        }

        foreach (Receipt r in receipts)
        {
            string id = Convert.ToHexString(r.EnvelopeId.Span);
            Assert.True(held.TryGetValue(id, out long index), $"acknowledged envelope {id} (log index {r.LogIndex}) is not in the mailbox after the restart");
            Assert.Equal(r.LogIndex, index);
            Assert.Null(await client.VerifyReceiptAsync(r));
        }

        output.WriteLine($"after the restart: {held.Count} messages in the mailbox, all {receipts.Count} receipts held and proven");
        node.AssertNoServerErrors();
    }

    /// <summary>Clients sending 3,000-byte messages (the 4 KiB class) as fast as their node answers.</summary>
    private sealed class Senders
    {
        private readonly CancellationTokenSource _stop = new();
        private Task _all = Task.CompletedTask;

        public ConcurrentQueue<Receipt> Receipts { get; } = new();

        public ConcurrentQueue<RpcException> Failures { get; } = new();

        public Task Stopped => _all;

        public static Senders Start(Uri node, ContactCard recipient, int count, bool stopAtFirstFailure = false)
        {
            var senders = new Senders();
            senders._all = Task.WhenAll(Enumerable.Range(0, count).Select(i => Task.Run(async () =>
            {
                using var client = new MegaNetClient(node);
                using Identity sender = Identity.Create();
                var random = new Random(i);
                byte[] content = new byte[3000];
                while (!senders._stop.IsCancellationRequested)
                {
                    random.NextBytes(content);
                    try
                    {
                        senders.Receipts.Enqueue(await client.SendAsync(sender, recipient, content, "application/octet-stream"));
                    }
                    catch (RpcException e)
                    {
                        senders.Failures.Enqueue(e);
                        if (stopAtFirstFailure)
                        {
                            return;
                        }
                    }
                }
            })));
            return senders;
        }

        public async Task StopAsync()
        {
            await _stop.CancelAsync();
            await _all;
        }
    }
}
