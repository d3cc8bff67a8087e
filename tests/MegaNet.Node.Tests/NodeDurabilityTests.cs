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
            await Task.Delay(TimeSpan.FromMilliseconds(1500));
            await node.KillAsync();
            await senders.StopAsync();
        }

        output.WriteLine($"{senders.Receipts.Count} receipts before the kill; the sends in flight failed with {string.Join(", ", senders.Failures.Select(f => f.StatusCode).Distinct())}");
        Assert.True(senders.Receipts.Count >= 50, $"only {senders.Receipts.Count} receipts before the kill; the test proved little");
        await AssertEveryReceiptHeldAsync(data, bob, senders.Receipts);
    }

    [Fact]
    public async Task A_second_node_on_the_same_data_directory_or_port_is_refused_and_says_why()
    {
        string data = Directory.CreateTempSubdirectory("meganet-twice-").FullName;
        try
        {
            await using ExternalNode first = await ExternalNode.StartAsync(data);
            (int code, string errors) = await RunNodeAsync("--data", data, "--listen", $"127.0.0.1:{ExternalNode.FreePort()}");
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

        static async Task<(int Code, string Errors)> RunNodeAsync(params string[] args)
        {
            var psi = new System.Diagnostics.ProcessStartInfo("dotnet", [ExternalNode.MeganetPath(), "node", "--backend", "simd", .. args])
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
            };
            using var process = System.Diagnostics.Process.Start(psi)!;
            Task<string> stdout = process.StandardOutput.ReadToEndAsync();
            Task<string> stderr = process.StandardError.ReadToEndAsync();
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            try
            {
                await process.WaitForExitAsync(timeout.Token);
            }
            catch (OperationCanceledException)
            {
                process.Kill(entireProcessTree: true);
                Assert.Fail($"the second node did not refuse to start: {await stdout}");
            }

            await stdout;
            return (process.ExitCode, await stderr);
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
            Assert.Contains("Free disk space", refused.Status.Detail, StringComparison.Ordinal);

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
