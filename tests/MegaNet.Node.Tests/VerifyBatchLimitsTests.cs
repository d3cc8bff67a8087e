using System.Text;
using Google.Protobuf;
using Grpc.Core;
using MegaNet.Api;
using MegaNet.Api.V1;
using MegaNet.Core.Ed25519;
using MegaNet.Node.Hosting;
using MegaNet.Node.Services;
using Microsoft.Extensions.DependencyInjection;

namespace MegaNet.Node.Tests;

/// <summary>What delegated verification may cost the node, and what its errors say.</summary>
public sealed class VerifyBatchLimitsTests
{
    /// <summary>65,536 real signatures over messages changed afterwards: every one needs a single check.</summary>
    private static VerifyBatchRequest AllForged() => Forged(every: 1);

    /// <summary><paramref name="count"/> real signatures, every <paramref name="every"/>th over a message changed afterwards.</summary>
    private static VerifyBatchRequest Forged(int every, int count = 65_536)
    {
        var request = new VerifyBatchRequest();
        var items = new SignatureItem[256];
        byte[] publicKey = new byte[32], secretKey = new byte[64], signature = new byte[64], seed = new byte[32];
        for (int i = 0; i < items.Length; i++)
        {
            seed[0] = (byte)i;
            seed[1] = 1;
            Ed25519Signer.KeyPairFromSeed(seed, publicKey, secretKey);
            byte[] message = Encoding.UTF8.GetBytes($"message {i}");
            Ed25519Signer.Sign(secretKey, message, signature);
            if (i % every == 0)
            {
                message[0] ^= 1;
            }

            items[i] = new SignatureItem { PublicKey = ByteString.CopyFrom(publicKey), Signature = ByteString.CopyFrom(signature), Message = ByteString.CopyFrom(message) };
        }

        for (int i = 0; i < count; i++)
        {
            request.Signatures.Add(items[i % items.Length]);
        }

        return request;
    }

    [Fact]
    public async Task Calls_beyond_the_gate_are_refused_with_a_retry_hint_while_others_verify()
    {
        await using TestNode node = await TestNode.StartAsync();
        DelegatedVerificationGate gate = node.Services.GetRequiredService<DelegatedVerificationGate>();
        // Slow (bisection in every step) but with 4,096 invalid signatures, within a site's budget, so nothing stops it.
        VerifyBatchRequest heavy = Forged(every: 16);
        // Each client from a site of its own (127.0.0.10, .11, ...): one site may hold only half the slots.
        using var clients = new DisposableList(Enumerable.Range(0, gate.Capacity + 1)
            .Select(i => new MegaNetClient(node.Address, localAddress: System.Net.IPAddress.Parse($"127.0.0.{10 + i}"))));
        using var giveUp = new CancellationTokenSource();
        Task[] busy = clients.Items.Take(gate.Capacity)
            .Select(c => c.Relay.VerifyBatchAsync(heavy, cancellationToken: giveUp.Token).ResponseAsync).ToArray<Task>();
        for (int i = 0; i < 3000 && gate.InUse < gate.Capacity; i++)
        {
            await Task.Delay(10);
        }

        Assert.Equal(gate.Capacity, gate.InUse);

        // The hint comes from how long the running calls have run (or their pace): after a second, at least a
        // second. It was a fixed 250 ms, ~50 times too short for a call that held the slot for 12 s.
        await Task.Delay(1_000);
        var refused = await Assert.ThrowsAsync<RpcException>(async () => await clients.Items[^1].Relay.VerifyBatchAsync(heavy));
        Assert.Equal(StatusCode.ResourceExhausted, refused.StatusCode);
        Assert.Contains("VerifyBatch", refused.Status.Detail);
        Assert.InRange(refused.RetryAfter()!.Value.TotalMilliseconds, 1_000, DelegatedVerificationGate.MaxRetryMs);

        // The callers give up; the node stops working for them and frees the slots.
        giveUp.Cancel();
        foreach (Task t in busy)
        {
            // Ended by the caller's own cancellation, not by a fault on the node.
            Exception e = await Assert.ThrowsAnyAsync<Exception>(() => t);
            Assert.True(e is OperationCanceledException or RpcException { StatusCode: StatusCode.Cancelled }, $"a busy call ended with {e.GetType().Name}: {e.Message}");
        }

        for (int i = 0; i < 6000 && gate.InUse > 0; i++)
        {
            await Task.Delay(10);
        }

        Assert.Equal(0, gate.InUse);
    }

    [Fact]
    public async Task A_site_sending_invalid_signatures_is_stopped_and_then_refused_unverified_while_others_verify()
    {
        await using TestNode node = await TestNode.StartAsync();
        using var forger = new MegaNetClient(node.Address, localAddress: System.Net.IPAddress.Parse("127.0.0.2"));
        using MegaNetClient honest = node.Client();
        VerifyBatchRequest heavy = AllForged();

        // It stops once the site's budget of invalid verdicts is spent (a few steps, not the 12 s of all 65,536), and
        // its next calls are refused before anything is verified. (The budget refills by the second: on a loaded
        // machine a call may take long enough to stay within it, so this sends up to five, back to back.) Its deadline
        // is minutes, not the client's default 30 s: a slow machine under the parallel tests took longer than that to
        // spend the budget, which is counted in verdicts, not seconds.
        RpcException? refused = null;
        for (int attempt = 0; attempt < 5 && refused is null; attempt++)
        {
            try
            {
                await forger.Relay.VerifyBatchAsync(heavy, deadline: DateTime.UtcNow.AddMinutes(3));
            }
            catch (RpcException e) when (e.StatusCode == StatusCode.ResourceExhausted && e.Status.Detail.Contains("stopped after", StringComparison.Ordinal))
            {
                Assert.NotNull(e.RetryAfter());
            }
            catch (RpcException e) when (e.StatusCode == StatusCode.ResourceExhausted)
            {
                refused = e;
            }
        }

        Assert.NotNull(refused);
        Assert.Contains("were invalid lately", refused.Status.Detail, StringComparison.Ordinal);
        Assert.InRange(refused.RetryAfter()!.Value.TotalMilliseconds, 1, 60_000);

        // The budget refills at BadPerSecond, so that refusal lasts only as long as the last step overshot it (its
        // retry-after): a loaded machine took longer than that to send the large request below, which was then let
        // through and failed to parse (then UNKNOWN, now INVALID_ARGUMENT; CI, 2026-11-30). So once the budget allows a
        // call again, the site is charged two minutes' worth more through the gate itself, and the early refusals below
        // cannot outlast it.
        DelegatedVerificationGate gate = node.Services.GetRequiredService<DelegatedVerificationGate>();
        ClientAddress forgerSite = ClientAddress.From(System.Net.IPAddress.Parse("127.0.0.2"))!.Value;
        DelegatedVerificationGate.Call? charge = null;
        for (int i = 0; i < 6_000 && (charge = gate.TryEnter(forgerSite, 0, out _, out _)) is null; i++)
        {
            await Task.Delay(10);
        }

        Assert.NotNull(charge);
        using (charge)
        {
            Assert.False(charge.Stepped(0, DelegatedVerificationGate.BadBurst + (120 * DelegatedVerificationGate.BadPerSecond), out _));
        }

        Assert.Equal(DelegatedVerificationGate.Refusal.BadBudget, gate.WouldRefuse(forgerSite, out _));

        // Refused before its request is read: a body that is no protobuf at all gets the same answer from that site,
        // where it would fail to parse (as another site's does, below).
        byte[] garbage = [0x0A, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F, 0x01, 0x02];
        RpcException early = await Assert.ThrowsAsync<RpcException>(() => RawVerifyBatch(node.Address, System.Net.IPAddress.Parse("127.0.0.2"), garbage));
        Assert.Equal(StatusCode.ResourceExhausted, early.StatusCode);
        Assert.Equal(refused.Status.Detail, early.Status.Detail);
        Assert.InRange(early.RetryAfter()!.Value.TotalMilliseconds, 1, 60_000);
        // Also while a large request is still being sent: the client gets the answer, not a reset stream.
        byte[] large = new byte[8 << 20];
        Array.Fill(large, (byte)0xFF);
        RpcException earlyLarge = await Assert.ThrowsAsync<RpcException>(() => RawVerifyBatch(node.Address, System.Net.IPAddress.Parse("127.0.0.2"), large));
        Assert.Equal(StatusCode.ResourceExhausted, earlyLarge.StatusCode);
        Assert.Equal(refused.Status.Detail, earlyLarge.Status.Detail);

        // Another site verifies as before.
        var few = new VerifyBatchRequest();
        few.Signatures.Add(heavy.Signatures.Take(3));
        Assert.Equal([false, false, false], (await honest.Relay.VerifyBatchAsync(few)).SignatureValid);

        // The same garbage from a site the gate lets through is read, and fails to parse.
        RpcException parsed = await Assert.ThrowsAsync<RpcException>(() => RawVerifyBatch(node.Address, System.Net.IPAddress.Parse("127.0.0.3"), garbage));
        Assert.Equal(StatusCode.InvalidArgument, parsed.StatusCode);
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task Delegated_calls_verify_on_one_thread_each_so_the_gate_bounds_their_cores()
    {
        await using TestNode node = await TestNode.StartAsync(o => o.Threads = 2);
        DelegatedVerificationGate gate = node.Services.GetRequiredService<DelegatedVerificationGate>();
        Assert.Contains("2 thread(s)", node.Services.GetRequiredService<MegaNet.Core.Verification.IBatchVerifier>().Description, StringComparison.Ordinal);
        Assert.Contains("1 thread(s)", gate.Verifier.Description, StringComparison.Ordinal);
        Assert.Equal("simd", gate.Verifier.Name);

        // Still the node's rule: a valid item and a forged one.
        using MegaNetClient client = node.Client();
        VerifyBatchRequest request = AllForged();
        SignatureItem forged = request.Signatures[0];
        byte[] message = forged.Message.ToByteArray();
        message[0] ^= 1; // back to what was signed
        var both = new VerifyBatchRequest();
        both.Signatures.Add(new SignatureItem { PublicKey = forged.PublicKey, Signature = forged.Signature, Message = ByteString.CopyFrom(message) });
        both.Signatures.Add(forged);
        VerifyBatchResponse verdicts = await client.Relay.VerifyBatchAsync(both);
        Assert.Equal([true, false], verdicts.SignatureValid);
        Assert.Equal("simd", verdicts.Backend);
    }

    [Fact]
    public async Task Overlong_proof_paths_are_false_and_proof_errors_speak_plainly()
    {
        await using TestNode node = await TestNode.StartAsync(o => o.MaxTtlDays = 7);
        using MegaNetClient client = node.Client();
        using Identity alice = Identity.Create(), bob = Identity.Create();
        Receipt receipt = await client.SendAsync(alice, bob.Card, Encoding.UTF8.GetBytes("x"), "text/plain", ttl: TimeSpan.FromDays(1));
        var overlong = new InclusionItem { Leaf = receipt.EnvelopeId, LeafIndex = receipt.LogIndex, TreeSize = receipt.TreeHead.TreeSize, RootHash = receipt.TreeHead.RootHash };
        overlong.Path.AddRange(Enumerable.Repeat(ByteString.CopyFrom(new byte[32]), 65));
        var overlongConsistency = new ConsistencyItem { FirstSize = 1, FirstRoot = receipt.TreeHead.RootHash, SecondSize = 2, SecondRoot = receipt.TreeHead.RootHash };
        overlongConsistency.Path.AddRange(overlong.Path);
        var request = new VerifyBatchRequest();
        request.Inclusions.Add(overlong);
        request.Consistencies.Add(overlongConsistency);
        VerifyBatchResponse verdicts = await client.Relay.VerifyBatchAsync(request);
        Assert.Equal([false], verdicts.InclusionValid);
        Assert.Equal([false], verdicts.ConsistencyValid);

        // Items of every kind count against the one limit.
        var tooMany = new VerifyBatchRequest();
        tooMany.Inclusions.Add(Enumerable.Range(0, 65_536).Select(_ => new InclusionItem()));
        tooMany.Consistencies.Add(new ConsistencyItem());
        RpcException over = await Assert.ThrowsAsync<RpcException>(async () => await client.Relay.VerifyBatchAsync(tooMany));
        Assert.Equal(StatusCode.InvalidArgument, over.StatusCode);
        Assert.Contains("has 65,537 items; at most 65,536", over.Status.Detail, StringComparison.Ordinal);
        tooMany.Consistencies.Clear();
        Assert.Equal(65_536, (await client.Relay.VerifyBatchAsync(tooMany)).InclusionValid.Count(valid => !valid));

        // Wrong whatever the log holds: INVALID_ARGUMENT; beyond what it holds now: OUT_OF_RANGE.
        foreach ((InclusionProofRequest bad, StatusCode code) in new[]
        {
            (new InclusionProofRequest { LeafIndex = -1, TreeSize = 0 }, StatusCode.InvalidArgument),
            (new InclusionProofRequest { LeafIndex = 0, TreeSize = -5 }, StatusCode.InvalidArgument),
            (new InclusionProofRequest { LeafIndex = 1, TreeSize = 1 }, StatusCode.InvalidArgument),
            (new InclusionProofRequest { LeafIndex = 0, TreeSize = 2 }, StatusCode.OutOfRange),
        })
        {
            var e = await Assert.ThrowsAsync<RpcException>(async () => await client.Relay.GetInclusionProofAsync(bad));
            Assert.Equal(code, e.StatusCode);
            Assert.DoesNotContain("Parameter", e.Status.Detail);
            Assert.DoesNotContain("\n", e.Status.Detail);
        }

        foreach ((ConsistencyProofRequest bad, StatusCode code) in new[]
        {
            (new ConsistencyProofRequest { First = 2, Second = 1 }, StatusCode.InvalidArgument),
            (new ConsistencyProofRequest { First = -1, Second = 1 }, StatusCode.InvalidArgument),
            (new ConsistencyProofRequest { First = 1, Second = 2 }, StatusCode.OutOfRange),
        })
        {
            var e = await Assert.ThrowsAsync<RpcException>(async () => await client.Relay.GetConsistencyProofAsync(bad));
            Assert.Equal(code, e.StatusCode);
        }

        // The default lifetime Status announces is never above the longest one the node accepts.
        StatusResponse status = await client.Relay.StatusAsync(new StatusRequest());
        Assert.Equal((long)TimeSpan.FromDays(7).TotalSeconds, status.Limits.DefaultTtlSeconds);
        node.AssertNoServerErrors();
    }

    private sealed class DisposableList(IEnumerable<MegaNetClient> items) : IDisposable
    {
        public MegaNetClient[] Items { get; } = items.ToArray();

        public void Dispose()
        {
            foreach (MegaNetClient c in Items)
            {
                c.Dispose();
            }
        }
    }

    [Fact]
    public async Task A_site_that_stops_calling_is_forgotten_once_its_budget_refilled_without_another_call()
    {
        await using TestNode node = await TestNode.StartAsync();
        DelegatedVerificationGate gate = node.Services.GetRequiredService<DelegatedVerificationGate>();
        // 2,000 forgeries spend 2 s of the site's budget of invalid verdicts: it is remembered until that has refilled.
        VerifyBatchRequest forged = Forged(every: 1, count: 2_000);

        using (var client = new MegaNetClient(node.Address, localAddress: System.Net.IPAddress.Parse("127.0.0.9")))
        {
            VerifyBatchResponse verdicts = await client.Relay.VerifyBatchAsync(forged);
            Assert.DoesNotContain(verdicts.SignatureValid, v => v);
        }

        Assert.Equal(1, gate.Sites);
        // No call comes after it: the node's own sweep (every second) forgets the site, where protocol.md says it keeps
        // a site only while it owes. Before the sweep, a site was forgotten only by a later call's.
        await Poll.UntilAsync(() => gate.Sites == 0, () => $"{gate.Sites} site(s) still kept with no call since");
    }

    /// <summary>A VerifyBatch call whose request body is <paramref name="body"/>, from <paramref name="local"/>.</summary>
    private static async Task RawVerifyBatch(Uri node, System.Net.IPAddress local, byte[] body)
    {
        var handler = new System.Net.Http.SocketsHttpHandler
        {
            ConnectCallback = async (context, ct) =>
            {
                var socket = new System.Net.Sockets.Socket(local.AddressFamily, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
                try
                {
                    socket.Bind(new System.Net.IPEndPoint(local, 0));
                    await socket.ConnectAsync(context.DnsEndPoint, ct);
                    return new System.Net.Sockets.NetworkStream(socket, ownsSocket: true);
                }
                catch
                {
                    socket.Dispose();
                    throw;
                }
            },
        };
        using var channel = Grpc.Net.Client.GrpcChannel.ForAddress(node, new Grpc.Net.Client.GrpcChannelOptions { HttpHandler = handler });
        var raw = Marshallers.Create<byte[]>(b => b, b => b);
        var method = new Method<byte[], byte[]>(MethodType.Unary, "meganet.v1.Relay", "VerifyBatch", raw, raw);
        await channel.CreateCallInvoker().AsyncUnaryCall(method, null, new CallOptions(deadline: DateTime.UtcNow.AddSeconds(30)), body);
    }
}
