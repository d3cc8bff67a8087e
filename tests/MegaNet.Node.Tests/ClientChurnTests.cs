using System.Security.Cryptography;
using System.Text;
using Grpc.Core;
using MegaNet.Api;
using MegaNet.Api.V1;
using Xunit.Abstractions;

namespace MegaNet.Node.Tests;

/// <summary>
/// Clients that come and go at random moments, as phones on a bad network do: concurrent senders, streaming senders,
/// subscribers, fetchers, ackers and delegated verifiers, each call cancelled after a random delay (often mid-call).
/// The node must log no error for any of it, keep everything it acknowledged, and still answer. The seed is printed;
/// replay with MEGANET_TEST_SEED.
/// </summary>
public sealed class ClientChurnTests(ITestOutputHelper output)
{
    [Fact]
    public async Task Clients_cancelling_at_random_moments_leave_no_error_and_lose_no_acknowledged_mail()
    {
        int seed = Environment.GetEnvironmentVariable("MEGANET_TEST_SEED") is { } s ? int.Parse(s, System.Globalization.CultureInfo.InvariantCulture) : RandomNumberGenerator.GetInt32(int.MaxValue);
        output.WriteLine($"seed {seed} (replay with MEGANET_TEST_SEED={seed})");

        await using TestNode node = await TestNode.StartAsync();
        using Identity alice = Identity.Create(), bob = Identity.Create();
        var acknowledged = new System.Collections.Concurrent.ConcurrentBag<Receipt>();
        var outcomes = new System.Collections.Concurrent.ConcurrentDictionary<string, int>();
        var stop = DateTime.UtcNow.AddSeconds(4);

        async Task Worker(int index)
        {
            var random = new Random(seed + index);
            using MegaNetClient client = node.Client();
            while (DateTime.UtcNow < stop)
            {
                using var leave = new CancellationTokenSource(TimeSpan.FromMilliseconds(random.Next(0, 150)));
                int kind = random.Next(6);
                string name = kind switch { 0 => "send", 1 => "stream", 2 => "subscribe", 3 => "fetch", 4 => "ack", _ => "verify" };
                try
                {
                    switch (kind)
                    {
                        case 0:
                            acknowledged.Add(await client.SendAsync(alice, bob.Card, Encoding.UTF8.GetBytes($"churn {index}"), "text/plain", cancellationToken: leave.Token));
                            break;
                        case 1:
                            using (AsyncDuplexStreamingCall<SubmitRequest, SubmitResult> call = client.Relay.SubmitStream(cancellationToken: leave.Token))
                            {
                                for (int i = random.Next(1, 30); i > 0; i--)
                                {
                                    await call.RequestStream.WriteAsync(new SubmitRequest { Envelope = Seal(alice, bob, index) });
                                }

                                if (random.Next(2) == 0)
                                {
                                    await call.RequestStream.CompleteAsync();
                                }

                                while (await call.ResponseStream.MoveNext())
                                {
                                    if (call.ResponseStream.Current.Receipt is { } receipt)
                                    {
                                        acknowledged.Add(receipt);
                                    }
                                }
                            }

                            break;
                        case 2:
                            await foreach (ReceivedMessage _ in client.ListenAsync(bob, cancellationToken: leave.Token))
                            {
                            }

                            break;
                        case 3:
                            await client.FetchAsync(bob, cancellationToken: leave.Token);
                            break;
                        case 4:
                            // Acks of sequence numbers that may not exist: deleting is not what this checks.
                            ulong seq = (ulong)random.Next(1_000_000, 2_000_000);
                            await client.Relay.AckAsync(new AckRequest { Auth = await client.AuthenticateAsync(bob, MailboxPurpose.Ack([seq]), leave.Token), Seqs = { seq } }, cancellationToken: leave.Token);
                            break;
                        default:
                            byte[] message = RandomNumberGenerator.GetBytes(32);
                            var request = new VerifyBatchRequest();
                            for (int i = random.Next(1, 200); i > 0; i--)
                            {
                                request.Signatures.Add(new SignatureItem
                                {
                                    PublicKey = Google.Protobuf.ByteString.CopyFrom(alice.Card.SigningKey),
                                    Signature = Google.Protobuf.ByteString.CopyFrom(alice.SignWithIdentity(message)),
                                    Message = Google.Protobuf.ByteString.CopyFrom(message),
                                });
                            }

                            await client.Relay.VerifyBatchAsync(request, cancellationToken: leave.Token);
                            break;
                    }

                    outcomes.AddOrUpdate(name + " done", 1, (_, n) => n + 1);
                }
                // Cancelled: the client left. UNAVAILABLE: the client's own cancellation caught .NET's HTTP/2 reading
                // ("IOException: The request was aborted", which Grpc.Net.Client reports so). RESOURCE_EXHAUSTED: the
                // node's limits (the delegated verification gate, the sending key's bucket). Anything else fails the test.
                catch (Exception e) when (e is OperationCanceledException || (e is RpcException r && r.StatusCode is StatusCode.Cancelled or StatusCode.ResourceExhausted or StatusCode.Unavailable))
                {
                    outcomes.AddOrUpdate($"{name} {(e is RpcException rpc ? rpc.StatusCode : "cancelled")}", 1, (_, n) => n + 1);
                }
            }
        }

        await Task.WhenAll(Enumerable.Range(0, 8).Select(i => Task.Run(() => Worker(i))));
        output.WriteLine(string.Join(", ", outcomes.OrderBy(p => p.Key).Select(p => $"{p.Key} {p.Value}")));

        // Every receipt a client got names an envelope the log holds, and the node still answers.
        using MegaNetClient checker = node.Client();
        Assert.NotEmpty(acknowledged);
        foreach (Receipt receipt in acknowledged)
        {
            Assert.Null(await checker.VerifyReceiptAsync(receipt));
        }

        // Stopping waits for the calls the clients left, so what they log is in the log before it is read.
        await node.StopAsync();
        node.AssertNoServerErrors();
    }

    private static Envelope Seal(Identity from, Identity to, int index) =>
        EnvelopeFormat.Seal(from, to.Card, Encoding.UTF8.GetBytes($"churn stream {index}"), "text/plain; charset=utf-8", null, DateTimeOffset.UtcNow.AddDays(1), 0);
}
