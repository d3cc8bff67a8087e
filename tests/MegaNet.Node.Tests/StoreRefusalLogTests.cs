using System.Text;
using Grpc.Core;
using MegaNet.Api;
using MegaNet.Api.V1;
using MegaNet.Node.Admission;
using MegaNet.Node.Cli;
using MegaNet.Node.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace MegaNet.Node.Tests;

/// <summary>A node whose store refuses new mail for want of room (below <c>StoreMinFreeDiskMiB</c>, or holding all
/// <c>StoreMaxMiB</c> allows) tells its operator: a warning at start, a warning at most once a minute while it refuses
/// (with the count refused since), a line when it accepts again, and the condition in <c>Status</c> and
/// <c>meganet status</c>. Senders only saw a retryable refusal, and the node's log said nothing.</summary>
public sealed class StoreRefusalLogTests
{
    [Fact]
    public async Task A_node_below_its_free_space_mark_warns_at_start_and_says_so_in_status()
    {
        var log = new LogCapture(LogLevel.Information);
        // No disk has 2 PiB free: the mark is missed whatever the machine.
        await using TestNode node = await TestNode.StartAsync(o => o.StoreMinFreeDiskMiB = int.MaxValue,
            services: s => s.AddSingleton<ILoggerProvider>(log));

        string warning = Assert.Single(log.Lines, l => l.StartsWith("Warning", StringComparison.Ordinal) && l.Contains("StoreMinFreeDiskMiB", StringComparison.Ordinal));
        Assert.Contains($"The data directory {Path.GetFullPath(node.Options.DataDirectory)} has ", warning, StringComparison.Ordinal);
        Assert.Contains($"MiB free, under the {int.MaxValue} MiB the store keeps free", warning, StringComparison.Ordinal);
        Assert.Contains("Free disk space there", warning, StringComparison.Ordinal);

        using MegaNetClient client = node.Client();
        StatusResponse status = await client.Relay.StatusAsync(new StatusRequest());
        Assert.Equal("disk_low", status.StoreRefusing);
        SignedTreeHead head = await client.Relay.GetTreeHeadAsync(new GetTreeHeadRequest());
        Assert.Contains("new mail  REFUSED: the node's disk is below the free space its operator keeps (StoreMinFreeDiskMiB)",
            ClientCommands.DescribeStatus(node.Address, status, head), StringComparison.Ordinal);

        using Identity alice = Identity.Create(), bob = Identity.Create();
        RpcException refused = await Assert.ThrowsAsync<RpcException>(() => client.SendAsync(alice, bob.Card, "hello"u8.ToArray(), "text/plain; charset=utf-8"));
        Assert.Equal(StatusCode.ResourceExhausted, refused.StatusCode);
        // Within the minute after the start's warning: counted, not said again.
        Assert.Single(log.Lines, l => l.Contains("StoreMinFreeDiskMiB", StringComparison.Ordinal));
        node.AssertNoServerErrors();
    }

    [Fact]
    public void Refusals_are_warned_of_at_most_once_a_minute_with_the_count_and_the_end_is_said()
    {
        var log = new LogCapture(LogLevel.Information);
        var clock = new ShiftedClock();
        var watch = new StoreRefusalWatch(new NodeOptions { StoreMaxMiB = 3 }, clock, log.CreateLogger("MegaNet.Admission"));
        Assert.Null(watch.Refusing);
        watch.Accepted();
        Assert.Empty(log.Lines);

        watch.Refused(StoreRefusalWatch.StoreFull, 3);
        Assert.Equal(StoreRefusalWatch.StoreFull, watch.Refusing);
        // Status looks again: full while the largest envelope would not fit beside the mail held.
        int largest = new NodeOptions().MaxEnvelopeBytes;
        Assert.Equal(StoreRefusalWatch.StoreFull, watch.RefusingNow(heldBytes: (3L << 20) - largest + 1));
        Assert.Null(watch.RefusingNow(heldBytes: (3L << 20) - largest));
        string first = Assert.Single(log.Lines);
        Assert.StartsWith("Warning", first, StringComparison.Ordinal);
        Assert.Contains("StoreMaxMiB allows (3 MiB); 3 envelopes refused since the last warning. Raise StoreMaxMiB", first, StringComparison.Ordinal);

        clock.Offset += StoreRefusalWatch.WarningInterval - TimeSpan.FromSeconds(1);
        watch.Refused(StoreRefusalWatch.StoreFull, 2);
        Assert.Single(log.Lines);
        clock.Offset += TimeSpan.FromSeconds(1);
        watch.Refused(StoreRefusalWatch.StoreFull, 4);
        Assert.Equal(2, log.Lines.Count);
        Assert.Contains("6 envelopes refused since the last warning", log.Lines[1], StringComparison.Ordinal);

        // Another reason starts a stretch of its own, said at once.
        watch.Refused(StoreRefusalWatch.DiskLow, 1);
        Assert.Equal(StoreRefusalWatch.DiskLow, watch.Refusing);
        Assert.Equal(3, log.Lines.Count);
        Assert.Contains("for want of disk space: 1 envelopes refused since the last warning", log.Lines[2], StringComparison.Ordinal);
        Assert.Contains("StoreMinFreeDiskMiB", log.Lines[2], StringComparison.Ordinal);

        // Status looks again: this disk has more than the default 1 GiB mark free, so the node no longer says it refuses; the
        // stretch itself lasts until the store takes mail.
        Assert.Null(watch.RefusingNow(heldBytes: 0));
        Assert.Equal(StoreRefusalWatch.DiskLow, watch.Refusing);

        clock.Offset += TimeSpan.FromSeconds(5);
        watch.Accepted();
        Assert.Null(watch.Refusing);
        Assert.Equal("Information MegaNet.Admission: Accepting new mail again after refusing it (disk_low) for 5 s; 1 envelopes were refused", log.Lines[3]);
        watch.Accepted();
        Assert.Equal(4, log.Lines.Count);
    }

    [Fact]
    public async Task A_full_node_warns_says_so_in_status_and_logs_when_acknowledged_mail_makes_room()
    {
        var log = new LogCapture(LogLevel.Information);
        await using TestNode node = await TestNode.StartAsync(o =>
        {
            TestNode.Unthrottled(o);
            o.StoreMaxMiB = 1;
            o.PowMaxBits = 0;
        }, services: s => s.AddSingleton<ILoggerProvider>(log));
        using Identity alice = Identity.Create(), bob = Identity.Create();
        using MegaNetClient client = node.Client();
        const string TextType = "text/plain; charset=utf-8";
        byte[] big = Encoding.UTF8.GetBytes(new string('x', EnvelopeFormat.MaxContentLength(TextType, null)));
        Assert.Equal("", (await client.Relay.StatusAsync(new StatusRequest())).StoreRefusing);

        int sent = 0;
        while (true)
        {
            try
            {
                await client.SendAsync(alice, bob.Card, big, TextType);
                Assert.True(++sent < 100, "the cap never refused");
            }
            catch (RpcException e) when (e.StatusCode == StatusCode.ResourceExhausted)
            {
                break;
            }
        }

        // Counted once the group's answers are out (the refused client may hear first): waited for.
        const string Refusing = "Refusing new mail: the node holds all the mail StoreMaxMiB allows (1 MiB); 1 envelopes refused";
        await Poll.UntilAsync(() => log.Lines.Any(l => l.Contains(Refusing, StringComparison.Ordinal)), () => $"no warning; the log: {string.Join("\n", log.Lines)}");
        Assert.Single(log.Lines, l => l.Contains(Refusing, StringComparison.Ordinal));
        Assert.Equal("store_full", (await client.Relay.StatusAsync(new StatusRequest())).StoreRefusing);

        var seqs = new List<ulong>();
        ulong cursor = 0;
        for (FetchResult page; (page = await client.FetchAsync(bob, cursor)).Messages.Count > 0; cursor = page.NextCursor)
        {
            seqs.AddRange(page.Messages.Select(m => m.Seq));
        }

        Assert.Equal(sent, await client.AckAsync(bob, seqs));
        // Room is back before anyone sends again: Status says so (it said store_full until the next envelope was stored).
        Assert.Equal("", (await client.Relay.StatusAsync(new StatusRequest())).StoreRefusing);
        await client.SendAsync(alice, bob.Card, big, TextType);
        bool AcceptingAgain(string l) => l.StartsWith("Information", StringComparison.Ordinal)
            && l.Contains("Accepting new mail again after refusing it (store_full)", StringComparison.Ordinal)
            && l.EndsWith("1 envelopes were refused", StringComparison.Ordinal);
        await Poll.UntilAsync(() => log.Lines.Any(AcceptingAgain), () => $"no line on accepting again; the log: {string.Join("\n", log.Lines)}");
        Assert.Single(log.Lines, AcceptingAgain);
        Assert.Equal("", (await client.Relay.StatusAsync(new StatusRequest())).StoreRefusing);
        node.AssertNoServerErrors();
    }

    [Fact]
    public void A_wall_clock_stepped_back_neither_silences_the_warnings_nor_shortens_the_stretch()
    {
        var log = new LogCapture(LogLevel.Information);
        var clock = new ShiftedClock();
        var watch = new StoreRefusalWatch(new NodeOptions { StoreMaxMiB = 3 }, clock, log.CreateLogger("MegaNet.Admission"));
        watch.Refused(StoreRefusalWatch.StoreFull, 1);
        Assert.Single(log.Lines);

        // NTP steps the wall clock back an hour; a minute later the node still refuses, and says so.
        clock.WallStep -= TimeSpan.FromHours(1);
        clock.Offset += StoreRefusalWatch.WarningInterval;
        watch.Refused(StoreRefusalWatch.StoreFull, 2);
        Assert.Equal(2, log.Lines.Count);
        Assert.Contains("2 envelopes refused since the last warning", log.Lines[1], StringComparison.Ordinal);

        clock.Offset += TimeSpan.FromSeconds(5);
        watch.Accepted();
        Assert.Equal("Information MegaNet.Admission: Accepting new mail again after refusing it (store_full) for 65 s; 3 envelopes were refused", log.Lines[2]);
    }

    /// <summary>The system's clock, moved on by the test: <see cref="Offset"/> moves the wall clock and the monotonic
    /// one, <see cref="WallStep"/> the wall clock alone (NTP stepping it).</summary>
    private sealed class ShiftedClock : TimeProvider
    {
        public TimeSpan Offset { get; set; }

        public TimeSpan WallStep { get; set; }

        public override DateTimeOffset GetUtcNow() => base.GetUtcNow() + Offset + WallStep;

        public override long GetTimestamp() => base.GetTimestamp() + (long)(Offset.TotalSeconds * TimestampFrequency);
    }
}
