using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using Grpc.AspNetCore.Server;
using Grpc.Core;
using Grpc.Core.Interceptors;
using MegaNet.Api;
using MegaNet.Api.V1;
using MegaNet.Node.Cli;
using Microsoft.Extensions.DependencyInjection;

namespace MegaNet.Node.Tests;

/// <summary><c>listen --ack</c>'s acknowledger: a batch that fails while the node is away is sent again until the node is
/// back, a batch whose answer was lost is counted and recorded once sent again, and a refusal that would come again
/// stops acknowledging without failing listen.</summary>
public sealed class ListenAcknowledgerTests
{
    [Fact]
    public async Task A_batch_sent_while_the_node_is_down_is_acknowledged_once_it_is_back()
    {
        await using TestNode node = await TestNode.StartAsync();
        node.Options.Listen = $"127.0.0.1:{node.Address.Port.ToString(CultureInfo.InvariantCulture)}"; // a restart keeps the port
        using Identity alice = Identity.Create(), bob = Identity.Create();
        ulong[] seqs;
        byte[] nodeId;
        using (MegaNetClient client = node.Client())
        {
            for (int i = 0; i < 2; i++)
            {
                await client.SendAsync(alice, bob.Card, Encoding.UTF8.GetBytes($"m{i}"), "text/plain; charset=utf-8");
            }

            seqs = [.. (await client.FetchAsync(bob)).Messages.Select(m => m.Seq)];
            nodeId = client.NodeId!;
        }

        await node.StopAsync();
        Uri address = node.Address;
        var acknowledger = new ListenAcknowledger(bob, () => new MegaNetClient(address, nodeId));
        await using (acknowledger)
        {
            foreach (ulong seq in seqs)
            {
                acknowledger.Add(seq);
            }

            await Task.Delay(1_500); // at least one try meets no node (the acknowledger waits 1 s, then 2 s, to try again)
            Assert.Equal(0, acknowledger.Acknowledged);
            await node.RestartAsync();
            var clock = Stopwatch.StartNew();
            while (acknowledger.Acknowledged < 2)
            {
                Assert.True(clock.Elapsed < TimeSpan.FromMinutes(1), $"{acknowledger.Acknowledged} of 2 acknowledged a minute after the node came back");
                await Task.Delay(50);
            }
        }

        using MegaNetClient again = node.Client();
        Assert.Equal(0, (await again.FetchAsync(bob)).WaitingCount);
    }

    [Fact]
    public async Task A_refusal_stops_acknowledging_without_failing()
    {
        await using TestNode node = await TestNode.StartAsync();
        using Identity alice = Identity.Create(), bob = Identity.Create();
        using MegaNetClient client = node.Client();
        await client.SendAsync(alice, bob.Card, Encoding.UTF8.GetBytes("kept"), "text/plain; charset=utf-8");
        ulong seq = (await client.FetchAsync(bob)).Messages.Single().Seq;

        // Held to another node's id: the client refuses to sign for this one, every time.
        var acknowledger = new ListenAcknowledger(bob, () => new MegaNetClient(node.Address, new byte[32]));
        await using (acknowledger)
        {
            acknowledger.Add(seq);
            var clock = Stopwatch.StartNew();
            while (!acknowledger.Stopped)
            {
                Assert.True(clock.Elapsed < TimeSpan.FromMinutes(1), "acknowledging never stopped");
                await Task.Delay(50);
            }

            acknowledger.Add(seq); // ignored from now on
        }

        Assert.Equal(0, acknowledger.Acknowledged);
        Assert.Equal(1, (await client.FetchAsync(bob)).WaitingCount);
    }

    [Fact]
    public async Task A_batch_whose_answer_was_lost_is_counted_and_recorded_as_acknowledged_once_sent_again()
    {
        // The node applied the acknowledgement and the connection lost its answer: sent again, the node found the
        // messages gone and said it deleted none, and listen ended with "acknowledged 0 message(s)".
        var answers = new AckAnswers { Lose = 1 };
        await using TestNode node = await TestNode.StartAsync(services: s => s.Configure<GrpcServiceOptions>(o => o.Interceptors.Add<LosingAckAnswers>(answers)));
        using Identity alice = Identity.Create(), bob = Identity.Create();
        using MegaNetClient client = node.Client();
        for (int i = 0; i < 2; i++)
        {
            await client.SendAsync(alice, bob.Card, Encoding.UTF8.GetBytes($"m{i}"), "text/plain; charset=utf-8");
        }

        IReadOnlyList<ReceivedMessage> messages = (await client.FetchAsync(bob)).Messages;
        Assert.Equal(2, messages.Count);
        // The record listen keeps, with the envelopes shown in it (the digests are the test's own).
        SeenMessages seen = SeenMessages.InMemory();
        long now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        byte[][] digests = [.. messages.Select(_ => RandomNumberGenerator.GetBytes(32))];
        for (int i = 0; i < messages.Count; i++)
        {
            Assert.Null(seen.Check(digests[i], messages[i].EnvelopeId, now));
        }

        using var errors = new StringWriter();
        TextWriter synchronized = TextWriter.Synchronized(errors);
        var acknowledger = new ListenAcknowledger(bob, () => new MegaNetClient(node.Address, client.NodeId), seen, synchronized);
        await using (acknowledger)
        {
            foreach (ReceivedMessage m in messages)
            {
                acknowledger.Add(m.Seq, m.EnvelopeId);
            }

            // Recorded once the node confirmed the batch (sent again after a wait of 1 s).
            var clock = Stopwatch.StartNew();
            while (Enumerable.Range(0, messages.Count).Any(i => seen.Check(digests[i], messages[i].EnvelopeId, now) is null))
            {
                Assert.True(clock.Elapsed < TimeSpan.FromMinutes(1), $"not recorded as acknowledged a minute on: {errors}");
                await Task.Delay(50);
            }
        }

        Assert.Contains("failed (the node said Unavailable: the answer was lost on the way (test))", errors.ToString(), StringComparison.Ordinal);
        Assert.Equal(2, acknowledger.Acknowledged);
        Assert.Equal(0, (await client.FetchAsync(bob)).WaitingCount);
    }

    [Fact]
    public async Task A_batch_still_without_an_answer_when_listen_ends_is_not_said_to_stay_on_the_node()
    {
        // The node had applied it, and listen said the messages "stay on the node, and the next fetch or listen shows
        // them again": the next fetch showed nothing.
        var answers = new AckAnswers { Lose = 1, Hang = true };
        await using TestNode node = await TestNode.StartAsync(services: s => s.Configure<GrpcServiceOptions>(o => o.Interceptors.Add<LosingAckAnswers>(answers)));
        using Identity alice = Identity.Create(), bob = Identity.Create();
        using MegaNetClient client = node.Client();
        await client.SendAsync(alice, bob.Card, Encoding.UTF8.GetBytes("shown"), "text/plain; charset=utf-8");
        ReceivedMessage message = Assert.Single((await client.FetchAsync(bob)).Messages);
        using var errors = new StringWriter();
        TextWriter synchronized = TextWriter.Synchronized(errors);
        var acknowledger = new ListenAcknowledger(bob, () => new MegaNetClient(node.Address, client.NodeId), errors: synchronized);
        await using (acknowledger)
        {
            acknowledger.Add(message.Seq, message.EnvelopeId);
            var clock = Stopwatch.StartNew();
            while (Volatile.Read(ref answers.Applied) == 0)
            {
                Assert.True(clock.Elapsed < TimeSpan.FromMinutes(1), "the acknowledgement did not reach the node within a minute");
                await Task.Delay(50);
            }
        }

        Assert.Equal(0, (await client.FetchAsync(bob)).WaitingCount);
        Assert.Equal(0, acknowledger.Acknowledged);
        Assert.Contains("no answer came to the acknowledgement of 1 message(s) shown before listen ended; the node may have deleted them", errors.ToString(), StringComparison.Ordinal);
        Assert.DoesNotContain("they stay on the node", errors.ToString(), StringComparison.Ordinal);
    }

    /// <summary>What <see cref="LosingAckAnswers"/> does, and has done.</summary>
    private sealed class AckAnswers
    {
        /// <summary>Answers to acknowledgements still to be lost.</summary>
        public int Lose;

        /// <summary>Whether a lost answer never comes (the call waits until the client gives up on it), rather than
        /// the call failing as a connection lost does.</summary>
        public bool Hang;

        /// <summary>Acknowledgements the node applied.</summary>
        public int Applied;
    }

    /// <summary>Applies each acknowledgement, then loses the answers <see cref="AckAnswers.Lose"/> says.</summary>
    private sealed class LosingAckAnswers(AckAnswers answers) : Interceptor
    {
        public override async Task<TResponse> UnaryServerHandler<TRequest, TResponse>(TRequest request, ServerCallContext context, UnaryServerMethod<TRequest, TResponse> continuation)
        {
            TResponse response = await continuation(request, context);
            if (request is AckRequest)
            {
                Interlocked.Increment(ref answers.Applied);
                if (Interlocked.Decrement(ref answers.Lose) >= 0)
                {
                    if (answers.Hang)
                    {
                        await Task.Delay(Timeout.Infinite, context.CancellationToken);
                    }

                    throw new RpcException(new Status(StatusCode.Unavailable, "the answer was lost on the way (test)"));
                }
            }

            return response;
        }
    }
}
