using System.Diagnostics;
using System.Text;
using Grpc.Core;
using Grpc.Core.Interceptors;
using MegaNet.Api;
using MegaNet.Api.V1;

namespace MegaNet.Node.Tests;

/// <summary>What a developer gets from <see cref="MegaNetClient"/> besides its calls: a default deadline, interceptors,
/// proof of work done when the node demands it (within bounds, cancellably), and the node's refusals made readable.</summary>
public sealed class MegaNetClientOptionsTests
{
    private static byte[] Text(string s) => Encoding.UTF8.GetBytes(s);

    [Fact]
    public async Task A_unary_call_on_a_half_open_connection_ends_at_the_default_deadline_and_says_so()
    {
        await using TestNode node = await TestNode.StartAsync();
        await using var proxy = new FreezableProxy(node.Address);
        using var client = new MegaNetClient(proxy.Address, options: new MegaNetClientOptions { DefaultDeadline = TimeSpan.FromSeconds(2) });
        using Identity bob = Identity.Create();
        // The connection is made by a call with a deadline of its own: the first call of a client (the connection, the
        // JIT) on a loaded machine (CI: 2 cores) can take longer than the 2 s default, which failed the test there with
        // nothing wrong. The calls below are the ones the default must end.
        await client.Relay.StatusAsync(new StatusRequest(), deadline: DateTime.UtcNow.AddMinutes(1));

        proxy.Freeze();
        // Before the default, only the HTTP/2 pings (30 s + 20 s) ended such a call, and a node that answered pings but
        // not the call was waited on forever.
        var waited = Stopwatch.StartNew();
        RpcException e = await Assert.ThrowsAsync<RpcException>(() => client.Relay.StatusAsync(new StatusRequest()).ResponseAsync.WaitAsync(TimeSpan.FromSeconds(25)));
        Assert.Equal(StatusCode.DeadlineExceeded, e.StatusCode);
        Assert.Contains("DefaultDeadline", e.Status.Detail, StringComparison.Ordinal);
        Assert.InRange(waited.Elapsed, TimeSpan.FromSeconds(1.5), TimeSpan.FromSeconds(20));

        // The wrapped calls get it too.
        e = await Assert.ThrowsAsync<RpcException>(() => client.FetchAsync(bob).WaitAsync(TimeSpan.FromSeconds(25)));
        Assert.Equal(StatusCode.DeadlineExceeded, e.StatusCode);

        // A deadline the caller gives wins over the default.
        waited.Restart();
        e = await Assert.ThrowsAsync<RpcException>(() => client.Relay.StatusAsync(new StatusRequest(), deadline: DateTime.UtcNow.AddSeconds(5)).ResponseAsync.WaitAsync(TimeSpan.FromSeconds(25)));
        Assert.Equal(StatusCode.DeadlineExceeded, e.StatusCode);
        Assert.True(waited.Elapsed >= TimeSpan.FromSeconds(4.5), $"ended after {waited.Elapsed}, before the caller's 5 s deadline");
    }

    [Fact]
    public async Task A_submit_whose_answer_came_too_late_is_made_again_with_the_same_envelope_and_stored_once()
    {
        // The node holds each submission a second for its batch (counted from its arrival); the client waits 400 ms for
        // the first submit's answer. The node stores the envelope after the client gave up on it: sealed again (as a user
        // running send again), it would be stored twice, two copies nobody could tell apart. Submitted again as it was,
        // it gets the original receipt. Only that submit has the 400 ms: Status (before it) and the submit made again
        // get a minute, since on a loaded machine (CI: 2 cores) either can take longer than 400 ms to be answered, and
        // the send then failed with nothing wrong.
        await using TestNode node = await TestNode.StartAsync(o => o.FlushMicroseconds = 1_000_000);
        var firstSubmitOnly = new DefaultDeadlineForFirstSubmitOnly();
        using var client = new MegaNetClient(node.Address, options: new MegaNetClientOptions
        {
            DefaultDeadline = TimeSpan.FromMilliseconds(400),
            Interceptors = [firstSubmitOnly],
        });
        using Identity alice = Identity.Create(), bob = Identity.Create();
        Receipt receipt = await client.SendAsync(alice, bob.Card, Text("once"), "text/plain");
        // The first answer came too late, and the envelope was submitted once more.
        Assert.Equal(2, firstSubmitOnly.Submits);
        using MegaNetClient reader = node.Client();
        Assert.Equal(1, (await reader.Relay.GetTreeHeadAsync(new GetTreeHeadRequest())).TreeSize);
        ReceivedMessage received = Assert.Single((await reader.FetchAsync(bob)).Messages);
        Assert.Equal(receipt.EnvelopeId.ToByteArray(), received.EnvelopeId);
    }

    [Theory]
    [InlineData(2, true)]
    [InlineData(3, false)]
    public async Task A_send_asks_for_the_nodes_status_again_while_the_node_is_unavailable(int failures, bool sent)
    {
        // A node restarting for a second or two: its Status went unanswered and the send failed at once, before anything
        // was sealed, though a submit in the same state is made again after 1 and 2 s.
        await using TestNode node = await TestNode.StartAsync();
        var refused = new HttpRequestException("Connection refused", new System.Net.Sockets.SocketException((int)System.Net.Sockets.SocketError.ConnectionRefused));
        var down = new SubmitAnswers(call => call <= failures ? new RpcException(new Status(StatusCode.Unavailable, "Error connecting to subchannel.", refused)) : null,
            skipNode: true, method: "Status");
        using var client = new MegaNetClient(node.Address, options: new MegaNetClientOptions { Interceptors = [down] });
        using Identity alice = Identity.Create(), bob = Identity.Create();
        if (sent)
        {
            Receipt receipt = await client.SendAsync(alice, bob.Card, Text("after the restart"), "text/plain");
            using MegaNetClient reader = node.Client();
            Assert.Equal(receipt.EnvelopeId.ToByteArray(), Assert.Single((await reader.FetchAsync(bob)).Messages).EnvelopeId);
        }
        else
        {
            RpcException e = await Assert.ThrowsAsync<RpcException>(() => client.SendAsync(alice, bob.Card, Text("never"), "text/plain"));
            Assert.Equal(StatusCode.Unavailable, e.StatusCode);
        }

        Assert.Equal(Math.Min(failures + 1, 3), down.Calls);
    }

    [Fact]
    public async Task A_submit_whose_answer_was_lost_gets_the_original_receipt_as_this_clients_own()
    {
        await using TestNode node = await TestNode.StartAsync();
        // The node stores the first submit; its answer is lost on the way back.
        var lose = new SubmitAnswers(call => call == 1 ? new RpcException(new Status(StatusCode.DeadlineExceeded, "lost")) : null);
        using var client = new MegaNetClient(node.Address, options: new MegaNetClientOptions { Interceptors = [lose] });
        using Identity alice = Identity.Create(), bob = Identity.Create();
        Receipt receipt = await client.SendAsync(alice, bob.Card, Text("once"), "text/plain");
        Assert.Equal(2, lose.Calls);
        // The node answers the second submit as a replay; for this client it is the first acceptance of its message.
        Assert.False(receipt.Duplicate);
        Assert.Equal(1, (await client.Relay.GetTreeHeadAsync(new GetTreeHeadRequest())).TreeSize);
    }

    [Fact]
    public async Task A_submit_that_went_unanswered_is_never_stamped_again()
    {
        await using TestNode node = await TestNode.StartAsync();
        // The first submit gets no answer (the node may have stored it); the second is told to carry 8 bits of proof
        // of work. A new stamp would be a new envelope beside one that may be stored: two copies.
        var answers = new SubmitAnswers(call => call == 1
            ? new RpcException(new Status(StatusCode.DeadlineExceeded, "lost"))
            : new RpcException(new Status(StatusCode.FailedPrecondition, "more work"), NodeRefusals.Trailers(0, 8, new byte[EnvelopeFormat.PowSeedLength])), skipNode: true);
        using var client = new MegaNetClient(node.Address, options: new MegaNetClientOptions { Interceptors = [answers] });
        using Identity alice = Identity.Create(), bob = Identity.Create();
        RpcException e = await Assert.ThrowsAsync<RpcException>(() => client.SendAsync(alice, bob.Card, Text("hi"), "text/plain"));
        Assert.Equal(StatusCode.FailedPrecondition, e.StatusCode);
        Assert.Contains("may have stored it as envelope", e.Status.Detail, StringComparison.Ordinal);
        Assert.Equal(2, answers.Calls);
    }

    [Fact]
    public async Task A_send_interrupted_after_an_unanswered_submit_names_the_envelope_the_node_may_have_stored()
    {
        await using TestNode node = await TestNode.StartAsync();
        var lose = new SubmitAnswers(_ => new RpcException(new Status(StatusCode.DeadlineExceeded, "lost")), skipNode: true);
        using var client = new MegaNetClient(node.Address, options: new MegaNetClientOptions { Interceptors = [lose] });
        using Identity alice = Identity.Create(), bob = Identity.Create();
        // Ctrl+C while the client waits to submit again: "interrupted" alone left the user to send it again, a copy.
        using var ctrlC = new CancellationTokenSource();
        Task<Receipt> send = client.SendAsync(alice, bob.Card, Text("hi"), "text/plain", cancellationToken: ctrlC.Token);
        while (lose.Calls == 0)
        {
            await Task.Delay(10);
        }

        await ctrlC.CancelAsync();
        SendInterruptedException e = await Assert.ThrowsAsync<SendInterruptedException>(() => send);
        Assert.Equal(32, e.EnvelopeId.Length);
        Assert.Contains(Convert.ToHexStringLower(e.EnvelopeId), e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_send_interrupted_just_as_a_submit_comes_back_unanswered_is_told_as_interrupted()
    {
        // Ctrl+C landing as the unanswered submit returned (before the wait to submit again) skipped that wait and ended
        // in the submit's deadline error: told as a failure, not as the interruption it was (seen in CI).
        await using TestNode node = await TestNode.StartAsync();
        using var ctrlC = new CancellationTokenSource();
        var lose = new SubmitAnswers(_ =>
        {
            ctrlC.Cancel();
            return new RpcException(new Status(StatusCode.DeadlineExceeded, "lost"));
        }, skipNode: true);
        using var client = new MegaNetClient(node.Address, options: new MegaNetClientOptions { Interceptors = [lose] });
        using Identity alice = Identity.Create(), bob = Identity.Create();
        SendInterruptedException e = await Assert.ThrowsAsync<SendInterruptedException>(() => client.SendAsync(alice, bob.Card, Text("hi"), "text/plain", cancellationToken: ctrlC.Token));
        Assert.Contains(Convert.ToHexStringLower(e.EnvelopeId), e.Message, StringComparison.Ordinal);
        Assert.Equal(1, lose.Calls);
    }

    [Fact]
    public async Task A_send_interrupted_while_its_submit_is_in_flight_names_the_envelope_the_node_may_have_stored()
    {
        await using TestNode node = await TestNode.StartAsync();
        var held = new StoredThenHeld();
        using var client = new MegaNetClient(node.Address, options: new MegaNetClientOptions { Interceptors = [held] });
        using Identity alice = Identity.Create(), bob = Identity.Create();
        // Ctrl+C after the node took the submit but before its answer came: "interrupted" alone left the user to send
        // it again, a copy.
        using var ctrlC = new CancellationTokenSource();
        Task<Receipt> send = client.SendAsync(alice, bob.Card, Text("hi"), "text/plain", cancellationToken: ctrlC.Token);
        await held.Stored.Task.WaitAsync(TimeSpan.FromMinutes(1));
        await ctrlC.CancelAsync();
        SendInterruptedException e = await Assert.ThrowsAsync<SendInterruptedException>(() => send);
        Assert.Contains(Convert.ToHexStringLower(e.EnvelopeId), e.Message, StringComparison.Ordinal);
        using MegaNetClient plain = node.Client();
        Assert.Single((await plain.FetchAsync(bob)).Messages);
    }

    [Fact]
    public async Task A_send_interrupted_before_its_submit_left_is_told_as_not_sent()
    {
        await using TestNode node = await TestNode.StartAsync();
        // Ctrl+C as the node's status comes back, before the sealed envelope's submit is started: nothing can be
        // stored, yet the send said the node may have stored it, and a user told so does not send it again.
        using var ctrlC = new CancellationTokenSource();
        var interrupt = new CancelAfterStatus(ctrlC);
        using var client = new MegaNetClient(node.Address, options: new MegaNetClientOptions { Interceptors = [interrupt] });
        using Identity alice = Identity.Create(), bob = Identity.Create();
        OperationCanceledException e = await Assert.ThrowsAnyAsync<OperationCanceledException>(
            () => client.SendAsync(alice, bob.Card, Text("hi"), "text/plain", cancellationToken: ctrlC.Token));
        Assert.IsNotType<SendInterruptedException>(e);
        Assert.Equal(0, interrupt.Submits);
        using MegaNetClient plain = node.Client();
        Assert.Empty((await plain.FetchAsync(bob)).Messages);
    }

    [Theory]
    [InlineData(StatusCode.DeadlineExceeded, null, true)]
    [InlineData(StatusCode.Unavailable, null, false)]
    [InlineData(StatusCode.Unavailable, "reset", true)]
    [InlineData(StatusCode.Unavailable, "refused", false)]
    public async Task A_submit_that_keeps_failing_is_tried_three_times_and_says_whether_the_node_may_have_stored_it(StatusCode code, string? transport, bool mayBeStored)
    {
        await using TestNode node = await TestNode.StartAsync();
        // Never reaching the node: a deadline that passed or a connection reset under the call (the node may have
        // stored it), or the node's own UNAVAILABLE ("nothing was stored") or a connection refused (the call never
        // left), which must not be told as a possible copy.
        Exception? debug = transport switch
        {
            "reset" => new IOException("The connection was reset."),
            "refused" => new System.Net.Http.HttpRequestException("refused", new System.Net.Sockets.SocketException((int)System.Net.Sockets.SocketError.ConnectionRefused)),
            _ => null,
        };
        var fail = new SubmitAnswers(_ => new RpcException(new Status(code, "no", debug)), skipNode: true);
        using var client = new MegaNetClient(node.Address, options: new MegaNetClientOptions { Interceptors = [fail] });
        using Identity alice = Identity.Create(), bob = Identity.Create();
        RpcException e = await Assert.ThrowsAsync<RpcException>(() => client.SendAsync(alice, bob.Card, Text("hi"), "text/plain"));
        Assert.Equal(code, e.StatusCode);
        Assert.Equal(3, fail.Calls);
        Assert.Equal(mayBeStored, e.Status.Detail.Contains("may have stored it as envelope", StringComparison.Ordinal));
    }

    [Fact]
    public async Task A_last_submit_without_an_answer_after_two_that_never_left_names_the_envelope_the_node_may_have_stored()
    {
        await using TestNode node = await TestNode.StartAsync();
        // Two connections refused (nothing stored), then a deadline on the last try allowed: that one may have been stored,
        // and the caller told nothing sealed the message again, a copy the recipient cannot tell from the first.
        var refused = new System.Net.Http.HttpRequestException("refused", new System.Net.Sockets.SocketException((int)System.Net.Sockets.SocketError.ConnectionRefused));
        var answers = new SubmitAnswers(call => call < 3
            ? new RpcException(new Status(StatusCode.Unavailable, "no", refused))
            : new RpcException(new Status(StatusCode.DeadlineExceeded, "lost")), skipNode: true);
        using var client = new MegaNetClient(node.Address, options: new MegaNetClientOptions { Interceptors = [answers] });
        using Identity alice = Identity.Create(), bob = Identity.Create();
        RpcException e = await Assert.ThrowsAsync<RpcException>(() => client.SendAsync(alice, bob.Card, Text("hi"), "text/plain"));
        Assert.Equal(StatusCode.DeadlineExceeded, e.StatusCode);
        Assert.Equal(3, answers.Calls);
        Assert.Contains("may have stored it as envelope", e.Status.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_subscription_outlives_the_default_deadline()
    {
        await using TestNode node = await TestNode.StartAsync();
        using var client = new MegaNetClient(node.Address, options: new MegaNetClientOptions { DefaultDeadline = TimeSpan.FromSeconds(1) });
        using Identity alice = Identity.Create(), bob = Identity.Create();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await using IAsyncEnumerator<ReceivedMessage> inbox = client.ListenAsync(bob, 0, cts.Token).GetAsyncEnumerator(cts.Token);
        Task<bool> next = inbox.MoveNextAsync().AsTask();
        await Task.Delay(TimeSpan.FromSeconds(2.5));
        Assert.False(next.IsCompleted, $"the subscription ended: {next.Exception?.InnerException?.Message}");
        await client.SendAsync(alice, bob.Card, Text("late"), "text/plain");
        Assert.True(await next);
        Assert.Equal("late", inbox.Current.Content.Content.ToStringUtf8());
    }

    [Fact]
    public async Task Interceptors_see_the_wrapped_calls_and_the_raw_ones()
    {
        await using TestNode node = await TestNode.StartAsync();
        var seen = new Counting();
        using var client = new MegaNetClient(node.Address, options: new MegaNetClientOptions { Interceptors = [seen] });
        using Identity alice = Identity.Create(), bob = Identity.Create();
        await client.SendAsync(alice, bob.Card, Text("hi"), "text/plain");
        await client.Relay.GetTreeHeadAsync(new GetTreeHeadRequest());
        Assert.Equal(["/meganet.v1.Relay/Status", "/meganet.v1.Relay/Submit", "/meganet.v1.Relay/GetTreeHead"], seen.Methods);
        // Inside the caller's interceptors, so they see the call before the default deadline is set.
        Assert.All(seen.Deadlines, d => Assert.Null(d));
    }

    [Fact]
    public async Task Send_stamps_again_when_the_node_demands_more_work_than_it_announced()
    {
        // The node demands 8 bits; the client reads 0 in Status (as when the node's load rises between the two calls).
        await using TestNode node = await TestNode.StartAsync(o => o.PowMinBits = 8);
        using var client = new MegaNetClient(node.Address, options: new MegaNetClientOptions { Interceptors = [new AnnouncesNoPow()] });
        using Identity alice = Identity.Create(), bob = Identity.Create();
        Receipt receipt = await client.SendAsync(alice, bob.Card, Text("stamped late"), "text/plain");
        Assert.False(receipt.Duplicate);

        (IReadOnlyList<ReceivedMessage> messages, _) = await node.Client().FetchAsync(bob);
        Assert.Equal("stamped late", Assert.Single(messages).Content.Content.ToStringUtf8());
        Assert.Equal(receipt.EnvelopeId.ToByteArray(), messages[0].EnvelopeId);
    }

    [Fact]
    public async Task Send_refuses_a_proof_of_work_demand_beyond_its_limit_at_once()
    {
        await using TestNode node = await TestNode.StartAsync(o => { o.PowMaxBits = 32; o.PowMinBits = 30; });
        using MegaNetClient client = node.Client();
        using Identity alice = Identity.Create(), bob = Identity.Create();
        // Before the limit the client set out to compute 2^30 hashes on the caller's thread.
        PowDemandTooHighException e = await Assert.ThrowsAsync<PowDemandTooHighException>(
            () => client.SendAsync(alice, bob.Card, Text("x"), "text/plain").WaitAsync(TimeSpan.FromSeconds(20)));
        Assert.Equal(30u, e.DemandedBits);
        Assert.Equal(24, e.MaxBits);
        Assert.Contains("MaxPowBits", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Send_stops_computing_proof_of_work_when_cancelled()
    {
        await using TestNode node = await TestNode.StartAsync(o => { o.PowMaxBits = 32; o.PowMinBits = 30; });
        using var cts = new CancellationTokenSource();
        // The token fires once Status has answered, so while the stamp is computed (2^30 hashes: minutes), not during
        // a gRPC call (one that is cancelled ends with RpcException Cancelled instead).
        using var client = new MegaNetClient(node.Address, options: new MegaNetClientOptions
        {
            MaxPowBits = 32,
            Interceptors = [new OnStatus(_ => cts.CancelAfter(TimeSpan.FromMilliseconds(300)))],
        });
        using Identity alice = Identity.Create(), bob = Identity.Create();
        var waited = Stopwatch.StartNew();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(
            () => client.SendAsync(alice, bob.Card, Text("x"), "text/plain", cancellationToken: cts.Token).WaitAsync(TimeSpan.FromSeconds(20)));
        Assert.True(waited.Elapsed < TimeSpan.FromSeconds(15), $"took {waited.Elapsed}");
    }

    [Fact]
    public async Task Send_without_a_ttl_fits_a_node_whose_maximum_ttl_is_under_a_week()
    {
        // Before, the default of 7 days was refused with INVALID_ARGUMENT by such a node.
        await using TestNode node = await TestNode.StartAsync(o => o.MaxTtlDays = 2);
        using MegaNetClient client = node.Client();
        using Identity alice = Identity.Create(), bob = Identity.Create();
        Receipt receipt = await client.SendAsync(alice, bob.Card, Text("short-lived"), "text/plain");
        Assert.False(receipt.Duplicate);
        Assert.Equal(TimeSpan.FromDays(7), MegaNetClient.DefaultTtl(new Limits { MaxTtlSeconds = (long)TimeSpan.FromDays(30).TotalSeconds }));
        Assert.Equal(TimeSpan.FromSeconds(90), MegaNetClient.DefaultTtl(new Limits { MaxTtlSeconds = 100 }));

        // A lifetime beyond the node's is refused before anything is sealed, stamped or sent (the node refused it after
        // the work, as INVALID_ARGUMENT); the node's maximum itself is taken.
        var beyond = await Assert.ThrowsAsync<TtlBeyondNodeMaximumException>(() => client.SendAsync(alice, bob.Card, Text("too long"), "text/plain", ttl: TimeSpan.FromDays(3)));
        Assert.Equal(TimeSpan.FromDays(2), beyond.NodeMaximum);
        Assert.Contains("at most 2 days", beyond.Message, StringComparison.Ordinal);
        Assert.Equal(1, (await client.Relay.GetTreeHeadAsync(new GetTreeHeadRequest())).TreeSize);
        await client.SendAsync(alice, bob.Card, Text("two days"), "text/plain", ttl: TimeSpan.FromDays(2));
    }

    [Fact]
    public void Refusals_give_their_retry_time_and_proof_of_work_demand()
    {
        var busy = new RpcException(new Status(StatusCode.ResourceExhausted, "busy"), new Metadata { { "retry-after-ms", "250" } });
        var weak = new RpcException(new Status(StatusCode.FailedPrecondition, "stamp"), new Metadata { { "pow-bits", "12" }, { "pow-seed", "000102030405060708090a0b0c0d0e0f" } });
        var bare = new RpcException(new Status(StatusCode.ResourceExhausted, "busy"), new Metadata { { "retry-after-ms", "-5" }, { "pow-bits", "lots" }, { "pow-seed", "0001" } });
        var odd = new RpcException(new Status(StatusCode.FailedPrecondition, "stamp"), new Metadata { { "pow-bits", "12" }, { "pow-seed", "zz0102030405060708090a0b0c0d0e0f" } });
        Assert.Equal(TimeSpan.FromMilliseconds(250), busy.RetryAfter());
        Assert.Null(busy.RequiredPowBits());
        Assert.Equal(12, weak.RequiredPowBits());
        Assert.Equal(Enumerable.Range(0, 16).Select(i => (byte)i), weak.RequiredPowSeed());
        Assert.Null(bare.RequiredPowSeed()); // too short
        Assert.Null(odd.RequiredPowSeed()); // not hex
        Assert.Null(busy.RequiredPowSeed());
        Assert.Throws<ArgumentException>(() => NodeRefusals.Trailers(0, 8)); // a demand its client could not stamp for
        Assert.Null(weak.RetryAfter());
        Assert.Null(bare.RetryAfter());
        Assert.Null(bare.RequiredPowBits());
    }

    [Fact]
    public async Task A_node_that_demands_work_but_gives_no_seed_is_named_before_anything_is_submitted()
    {
        var relay = new SeedlessRelay();
        await using var fake = await FakeRelay<SeedlessRelay>.StartAsync(relay);
        using var client = new MegaNetClient(fake.Address);
        using Identity alice = Identity.Create(), bob = Identity.Create();
        NodeMisbehavedException e = await Assert.ThrowsAsync<NodeMisbehavedException>(() => client.SendAsync(alice, bob.Card, Text("x"), "text/plain"));
        Assert.Contains("gives a seed of 0 bytes, not 16", e.Message, StringComparison.Ordinal);
        Assert.Equal(0, relay.Submits);
    }

    /// <summary>Demands 8 bits of work in <c>Status</c> without a seed to make them for (a node of another protocol
    /// version), and counts the submits it gets.</summary>
    private sealed class SeedlessRelay : Relay.RelayBase
    {
        public int Submits { get; private set; }

        public override Task<StatusResponse> Status(StatusRequest request, ServerCallContext context) =>
            Task.FromResult(new StatusResponse { PowBitsRequired = 8, Limits = new Limits { MaxTtlSeconds = 86_400 } });

        public override Task<Receipt> Submit(SubmitRequest request, ServerCallContext context)
        {
            Submits++;
            throw new RpcException(new Grpc.Core.Status(StatusCode.Unimplemented, "not here"));
        }
    }

    [Fact]
    public async Task A_refusal_from_the_node_carries_its_demand()
    {
        await using TestNode node = await TestNode.StartAsync(o => o.PowMinBits = 8);
        using MegaNetClient client = node.Client();
        using Identity alice = Identity.Create(), bob = Identity.Create();
        Envelope envelope = EnvelopeFormat.Seal(alice, bob.Card, Text("x"), "text/plain", null, DateTimeOffset.UtcNow.AddDays(1));
        RpcException e = await Assert.ThrowsAsync<RpcException>(async () => await client.Relay.SubmitAsync(new SubmitRequest { Envelope = envelope }));
        Assert.Equal(8, e.RequiredPowBits());
        Assert.Equal(node.PowSeed, e.RequiredPowSeed());

        EnvelopeFormat.Stamp(alice, envelope, e.RequiredPowSeed(), e.RequiredPowBits()!.Value);
        Receipt receipt = await client.Relay.SubmitAsync(new SubmitRequest { Envelope = envelope });
        Assert.Equal(EnvelopeFormat.EnvelopeId(envelope), receipt.EnvelopeId.ToByteArray());
    }

    [Fact]
    public void The_node_id_a_client_shows_is_a_copy()
    {
        byte[] id = Enumerable.Repeat((byte)7, 32).ToArray();
        using var client = new MegaNetClient(new Uri("http://127.0.0.1:1"), id);
        client.NodeId![0] ^= 0xFF;
        Assert.Equal(id, client.NodeId);
    }

    [Fact]
    public void Options_out_of_range_are_refused()
    {
        var address = new Uri("http://127.0.0.1:1");
        Assert.Throws<ArgumentOutOfRangeException>(() => new MegaNetClient(address, options: new MegaNetClientOptions { DefaultDeadline = TimeSpan.Zero }));
        Assert.Throws<ArgumentOutOfRangeException>(() => new MegaNetClient(address, options: new MegaNetClientOptions { MaxPowBits = 33 }));
        using var none = new MegaNetClient(address, options: new MegaNetClientOptions { DefaultDeadline = null });
    }

    private sealed class Counting : Interceptor
    {
        public List<string> Methods { get; } = [];

        public List<DateTime?> Deadlines { get; } = [];

        public override AsyncUnaryCall<TResponse> AsyncUnaryCall<TRequest, TResponse>(TRequest request, ClientInterceptorContext<TRequest, TResponse> context,
            AsyncUnaryCallContinuation<TRequest, TResponse> continuation)
        {
            lock (Methods)
            {
                Methods.Add(context.Method.FullName);
                Deadlines.Add(context.Options.Deadline);
            }

            return continuation(request, context);
        }
    }

    /// <summary>Gives every unary call but the first Submit a deadline a minute away (a deadline the caller gives wins
    /// over the client's default), so the default times that submit alone; counts the submits.</summary>
    private sealed class DefaultDeadlineForFirstSubmitOnly : Interceptor
    {
        private int _submits;

        public int Submits => Volatile.Read(ref _submits);

        public override AsyncUnaryCall<TResponse> AsyncUnaryCall<TRequest, TResponse>(TRequest request, ClientInterceptorContext<TRequest, TResponse> context,
            AsyncUnaryCallContinuation<TRequest, TResponse> continuation)
        {
            if (context.Method.Name == "Submit" && Interlocked.Increment(ref _submits) == 1)
            {
                return continuation(request, context);
            }

            return continuation(request, new ClientInterceptorContext<TRequest, TResponse>(context.Method, context.Host,
                context.Options.WithDeadline(DateTime.UtcNow.AddMinutes(1))));
        }
    }

    /// <summary>Turns the answer of each Submit (counted from 1) into the exception <c>answer</c> gives, when it gives
    /// one: after the node answered, or, with <c>skipNode</c>, without calling the node at all.</summary>
    private sealed class SubmitAnswers(Func<int, RpcException?> answer, bool skipNode = false, string method = "Submit") : Interceptor
    {
        private int _calls;

        public int Calls => Volatile.Read(ref _calls);

        public override AsyncUnaryCall<TResponse> AsyncUnaryCall<TRequest, TResponse>(TRequest request, ClientInterceptorContext<TRequest, TResponse> context,
            AsyncUnaryCallContinuation<TRequest, TResponse> continuation)
        {
            if (context.Method.Name != method)
            {
                return continuation(request, context);
            }

            RpcException? replaced = answer(Interlocked.Increment(ref _calls));
            if (skipNode && replaced is not null)
            {
                return new AsyncUnaryCall<TResponse>(Task.FromException<TResponse>(replaced), Task.FromResult(new Metadata()), () => replaced.Status, () => [], () => { });
            }

            AsyncUnaryCall<TResponse> call = continuation(request, context);
            return new AsyncUnaryCall<TResponse>(Replace(call.ResponseAsync, replaced), call.ResponseHeadersAsync, call.GetStatus, call.GetTrailers, call.Dispose);
        }

        private static async Task<T> Replace<T>(Task<T> response, RpcException? replaced)
        {
            T result = await response;
            return replaced is null ? result : throw replaced;
        }
    }

    /// <summary>Cancels a token once the node's <c>Status</c> answer has come (the send then seals its envelope and
    /// submits it), and counts the submits started.</summary>
    private sealed class CancelAfterStatus(CancellationTokenSource cancel) : Interceptor
    {
        private int _submits;

        public int Submits => Volatile.Read(ref _submits);

        public override AsyncUnaryCall<TResponse> AsyncUnaryCall<TRequest, TResponse>(TRequest request, ClientInterceptorContext<TRequest, TResponse> context,
            AsyncUnaryCallContinuation<TRequest, TResponse> continuation)
        {
            if (context.Method.Name == "Submit")
            {
                Interlocked.Increment(ref _submits);
            }

            AsyncUnaryCall<TResponse> call = continuation(request, context);
            return context.Method.Name != "Status"
                ? call
                : new AsyncUnaryCall<TResponse>(CancelAfter(call.ResponseAsync), call.ResponseHeadersAsync, call.GetStatus, call.GetTrailers, call.Dispose);
        }

        private async Task<T> CancelAfter<T>(Task<T> response)
        {
            T answer = await response;
            await cancel.CancelAsync();
            return answer;
        }
    }

    /// <summary>Passes each submit to the node, then holds its answer back until the call is cancelled, as a Ctrl+C
    /// after the node took it would see; <see cref="Stored"/> completes once the node has answered one.</summary>
    private sealed class StoredThenHeld : Interceptor
    {
        public TaskCompletionSource Stored { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public override AsyncUnaryCall<TResponse> AsyncUnaryCall<TRequest, TResponse>(TRequest request, ClientInterceptorContext<TRequest, TResponse> context,
            AsyncUnaryCallContinuation<TRequest, TResponse> continuation)
        {
            AsyncUnaryCall<TResponse> call = continuation(request, context);
            return context.Method.Name != "Submit"
                ? call
                : new AsyncUnaryCall<TResponse>(Hold(call.ResponseAsync, context.Options.CancellationToken), call.ResponseHeadersAsync, call.GetStatus, call.GetTrailers, call.Dispose);
        }

        private async Task<T> Hold<T>(Task<T> response, CancellationToken cancellationToken)
        {
            await response;
            Stored.TrySetResult();
            try
            {
                await Task.Delay(Timeout.InfiniteTimeSpan, cancellationToken);
            }
            catch (OperationCanceledException e)
            {
                // As the gRPC client reports a call its caller cancelled.
                throw new RpcException(new Status(StatusCode.Cancelled, "Call canceled by the client.", e));
            }

            throw new InvalidOperationException("an infinite wait ended");
        }
    }

    /// <summary>Makes Status say the node demands no proof of work.</summary>
    private sealed class AnnouncesNoPow() : OnStatus(status => status.PowBitsRequired = 0);

    /// <summary>Runs an action on each Status answer before the caller gets it.</summary>
    private class OnStatus(Action<StatusResponse> action) : Interceptor
    {
        public override AsyncUnaryCall<TResponse> AsyncUnaryCall<TRequest, TResponse>(TRequest request, ClientInterceptorContext<TRequest, TResponse> context,
            AsyncUnaryCallContinuation<TRequest, TResponse> continuation)
        {
            AsyncUnaryCall<TResponse> call = continuation(request, context);
            return new AsyncUnaryCall<TResponse>(Rewrite(call.ResponseAsync), call.ResponseHeadersAsync, call.GetStatus, call.GetTrailers, call.Dispose);
        }

        private async Task<T> Rewrite<T>(Task<T> response)
        {
            T result = await response;
            if (result is StatusResponse status)
            {
                action(status);
            }

            return result;
        }
    }
}
