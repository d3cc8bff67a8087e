using MegaNet.Api.V1;
using MegaNet.Node.Benchmarking;

namespace MegaNet.Node.Tests;

/// <summary><c>meganet load</c>'s generator against a real node: every envelope counted once, in both modes. In the
/// alone collection: its nodes take load that would slow the other tests' calls past their deadlines.</summary>
[Collection(AloneCollection.Name)]
public sealed class LoadGeneratorTests
{
    [Fact]
    public async Task Streaming_and_unary_load_count_every_envelope_and_read_the_node_batches()
    {
        await using TestNode node = await TestNode.StartAsync(TestNode.Unthrottled);
        var progress = new StringWriter();
        var generator = new LoadGenerator(node.Address, clients: 4, connections: 4, progress);

        LoadReport stream = await generator.RunStreamingAsync(LoadGenerator.Prepare(400, senders: 16, recipients: 8));
        Assert.Equal((400, 400, 0), (stream.Sent, stream.Accepted, stream.Refused));
        Assert.True(stream.MeanServerBatch >= 1, $"mean verifier batch {stream.MeanServerBatch}");
        Assert.True(stream.P99Ms >= stream.P50Ms && stream.P50Ms > 0);
        // Far too short for a steady state after the warm-up: not reported rather than made up.
        Assert.True(double.IsNaN(stream.SteadyAcceptedPerSecond));

        IReadOnlyList<Envelope> unaryEnvelopes = LoadGenerator.Prepare(200, senders: 16, recipients: 8);
        // Four clients over two connections this time.
        LoadReport unary = await new LoadGenerator(node.Address, clients: 4, connections: 2, progress).RunUnaryAsync(unaryEnvelopes, targetRate: 2_000);
        Assert.Equal((200, 200, 0), (unary.Sent, unary.Accepted, unary.Refused));
        Assert.Contains("unary (open loop at", progress.ToString());
        Assert.True(unary.OfferedPerSecond > 0, $"started at {unary.OfferedPerSecond}/s");

        // Every one of them was stored once: the log holds exactly the 600 envelopes sent.
        using var client = node.Client();
        Assert.Equal(600, (await client.Relay.GetTreeHeadAsync(new GetTreeHeadRequest())).TreeSize);
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task Mixed_load_streams_on_schedule_beside_unary_calls_and_counts_every_envelope_once()
    {
        await using TestNode node = await TestNode.StartAsync(TestNode.Unthrottled);
        var progress = new StringWriter();
        IReadOnlyList<Envelope> streamed = LoadGenerator.Prepare(600, senders: 16, recipients: 8);
        IReadOnlyList<Envelope> single = LoadGenerator.Prepare(60, senders: 16, recipients: 8);

        // 600 streamed at 2,000/s in requests of up to 16 and 60 unary calls at 200/s: both about 0.3 s long.
        var csv = new StringWriter();
        long before = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        LoadGenerator.MixedLoad mixed = await new LoadGenerator(node.Address, clients: 3, connections: 2, progress) { Timeline = LoadTimeline.Over(csv) }
            .RunMixedAsync(streamed, single, streamRate: 2_000, unaryRate: 200, perRequest: 16);
        long after = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();

        Assert.Equal((600, 600, 0), (mixed.Stream.Sent, mixed.Stream.Accepted, mixed.Stream.Refused));
        Assert.Equal((60, 60, 0), (mixed.Unary.Sent, mixed.Unary.Accepted, mixed.Unary.Refused));
        Assert.Equal((660, 660, 0), (mixed.Total.Sent, mixed.Total.Accepted, mixed.Total.Refused));
        // On schedule: the last request is due at 584 / 2,000 s, so the streamed envelopes started at about 2,000/s
        // (lateness can only slow that), where unpaced they all go within milliseconds.
        Assert.InRange(mixed.Stream.OfferedPerSecond, 200, 2_200);
        Assert.InRange(mixed.Unary.OfferedPerSecond, 20, 220);
        Assert.True(mixed.Total.Seconds >= 0.29, $"{mixed.Total.Seconds} s");
        Assert.True(mixed.Stream.P99Ms >= mixed.Stream.P50Ms && mixed.Stream.P50Ms > 0);
        Assert.True(mixed.Unary.P99Ms >= mixed.Unary.P50Ms && mixed.Unary.P50Ms > 0);
        Assert.False(double.IsNaN(mixed.Unary.StartLateP99Ms));
        Assert.False(double.IsNaN(mixed.Stream.StartLateP99Ms));
        string text = progress.ToString();
        Assert.Contains("stream x16 (paced at 2,000/s) clients 3:", text, StringComparison.Ordinal);
        Assert.Contains("unary (open loop at 200/s) beside it clients 3:", text, StringComparison.Ordinal);
        Assert.Contains("stream + unary: ", text, StringComparison.Ordinal);

        // --timeline: a row per envelope of each kind, each accepted, completed within the run by the wall clock, with
        // the lateness of its schedule.
        string[][] rows = [.. csv.ToString().Split(Environment.NewLine, StringSplitOptions.RemoveEmptyEntries).Skip(1).Select(r => r.Split(','))];
        Assert.Equal(600, rows.Count(r => r[0] == "mixed" && r[1] == "stream"));
        Assert.Equal(60, rows.Count(r => r[0] == "mixed" && r[1] == "unary"));
        Assert.All(rows, r =>
        {
            Assert.Equal("1", r[6]);
            Assert.InRange(double.Parse(r[2], System.Globalization.CultureInfo.InvariantCulture), before, after + 5);
            Assert.True(double.Parse(r[4], System.Globalization.CultureInfo.InvariantCulture) > 0, string.Join(',', r));
            Assert.NotEqual(string.Empty, r[5]);
        });

        using var client = node.Client();
        Assert.Equal(660, (await client.Relay.GetTreeHeadAsync(new GetTreeHeadRequest())).TreeSize);
        node.AssertNoServerErrors();
    }

    [Fact]
    public void A_mixed_schedule_takes_the_clients_requests_in_turn_by_envelope_and_keeps_each_clients_order()
    {
        // Client 0's requests carry 2, 2 and 1 envelopes, client 1's 2 and 1; 10 envelopes/s streamed, 2 unary calls/s.
        static LoadGenerator.StreamShare Share(params int[] counts) => new([], counts.Select(c => (Array.Empty<byte>(), c)).ToList());
        LoadGenerator.Schedule schedule = LoadGenerator.Schedule.Of([Share(2, 2, 1), Share(2, 1)], streamRate: 10, unaryCalls: 3, unaryRate: 2);

        // A request is due at its first envelope's time (envelopes before it / 10); unary call i at i / 2; ~c is client c.
        Assert.Equal(new double[] { 0, 0, 0.2, 0.4, 0.5, 0.6, 0.7, 1.0 }, schedule.Due);
        Assert.Equal(new[] { ~0, 0, ~1, ~0, 1, ~1, ~0, 2 }, schedule.Item);
    }

    [Fact]
    public void The_mixed_lines_give_each_kind_then_both_with_the_phases_cpu()
    {
        var stream = new LoadReport("stream x64 (paced at 27,000/s)", 8, 270_000, 270_000, 0, 10, 7, 90, 7, 95, 27_000, 70, "simd", 27_000, 0.2, 4);
        var unary = new LoadReport("unary (open loop at 3,000/s) beside it", 8, 30_000, 30_000, 0, 10, 6, 80, 6, 85, 3_000, 70, "simd", 3_000, 0.02, 3);
        var total = new LoadReport("stream + unary", 8, 300_000, 299_990, 10, 10, double.NaN, double.NaN, double.NaN, double.NaN, 29_998, 70, "simd", 30_000,
            Cpu: new CpuSpent(0.3, 1.8, 2));

        string text = LoadGenerator.DescribeMixed(new LoadGenerator.MixedLoad(stream, unary, total));

        string[] lines = text.Split(Environment.NewLine, StringSplitOptions.RemoveEmptyEntries);
        Assert.StartsWith("stream x64 (paced at 27,000/s) clients 8:", lines[0], StringComparison.Ordinal);
        Assert.StartsWith("unary (open loop at 3,000/s) beside it clients 8:", lines[1], StringComparison.Ordinal);
        Assert.Equal("stream + unary: 29,999 accepted/s (29,998/s after the first 2 s; started at 30,000/s), 10 refused", lines[2]);
        // 1.8 cores for 10 s over 299,990 envelopes: 60.0 µs each; the kinds' own lines carry no CPU of their own.
        Assert.Equal("  CPU: this process 0.30 cores, the machine 1.80 of 2 busy (60.0 µs of the machine's CPU an accepted envelope)", lines[3]);
        Assert.Equal(4, lines.Length);
    }

    [Fact]
    public async Task Batched_streaming_load_counts_every_envelope_and_cuts_requests_by_count()
    {
        await using TestNode node = await TestNode.StartAsync(TestNode.Unthrottled);
        var progress = new StringWriter();

        // 250 envelopes over 3 clients in requests of up to 16: uneven shares and short last requests.
        LoadReport stream = await new LoadGenerator(node.Address, clients: 3, connections: 1, progress)
            .RunStreamingAsync(LoadGenerator.Prepare(250, senders: 16, recipients: 8), perRequest: 16);

        Assert.Equal((250, 250, 0), (stream.Sent, stream.Accepted, stream.Refused));
        Assert.Equal("stream x16", stream.Mode);
        Assert.Contains("stream x16 clients 3:", progress.ToString(), StringComparison.Ordinal);
        Assert.True(stream.P99Ms >= stream.P50Ms && stream.P50Ms > 0);
        using var client = node.Client();
        Assert.Equal(250, (await client.Relay.GetTreeHeadAsync(new GetTreeHeadRequest())).TreeSize);
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task Refused_calls_are_reported_with_their_status_and_the_nodes_reason_in_both_modes()
    {
        // Four sending keys with a burst of 5 and a token a minute: the first 20 of each phase's envelopes are accepted,
        // the rest refused by the token bucket.
        await using TestNode node = await TestNode.StartAsync(o =>
        {
            o.SubmitRatePerKey = 1.0 / 60;
            o.SubmitBurst = 5;
        });
        var progress = new StringWriter();
        var generator = new LoadGenerator(node.Address, clients: 2, connections: 1, progress);

        LoadReport stream = await generator.RunStreamingAsync(LoadGenerator.Prepare(60, senders: 4, recipients: 4));
        LoadReport unary = await generator.RunUnaryAsync(LoadGenerator.Prepare(60, senders: 4, recipients: 4));

        string text = progress.ToString();
        foreach (LoadReport report in new[] { stream, unary })
        {
            Assert.Equal((60, 20, 40), (report.Sent, report.Accepted, report.Refused));
            Assert.StartsWith("40 ResourceExhausted (first: Too many submissions from this sending key", report.Refusals, StringComparison.Ordinal);
        }

        Assert.Equal(2, text.Split("  refused: 40 ResourceExhausted (first: Too many submissions from this sending key").Length - 1);

        // Batched streaming (SubmitBatchStream, answers read for their status alone): the same counts and reason.
        // Fresh keys, so their buckets are full again.
        LoadReport batched = await generator.RunStreamingAsync(LoadGenerator.Prepare(60, senders: 4, recipients: 4), perRequest: 16);
        Assert.Equal((60, 20, 40), (batched.Sent, batched.Accepted, batched.Refused));
        Assert.StartsWith("40 ResourceExhausted (first: Too many submissions from this sending key", batched.Refusals, StringComparison.Ordinal);
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task The_floor_phase_makes_status_calls_on_the_same_schedule_and_stores_and_verifies_nothing()
    {
        await using TestNode node = await TestNode.StartAsync();
        using var client = node.Client();
        StatusResponse before = await client.Relay.StatusAsync(new StatusRequest());
        var progress = new StringWriter();

        LoadReport floor = await new LoadGenerator(node.Address, clients: 4, connections: 2, progress)
            .RunUnaryAsync(LoadGenerator.Prepare(300, senders: 4, recipients: 4), targetRate: 2_000, floor: true);

        Assert.Equal((300, 300, 0), (floor.Sent, floor.Accepted, floor.Refused));
        Assert.StartsWith("floor (Status calls, nothing verified or stored) (open loop at 2,000/s)", progress.ToString(), StringComparison.Ordinal);
        Assert.True(floor.OfferedPerSecond > 0 && floor.P99Ms >= floor.P50Ms && floor.P50Ms > 0, progress.ToString());
        StatusResponse after = await client.Relay.StatusAsync(new StatusRequest());
        Assert.Equal((0L, before.SignaturesVerified), (after.TreeSize, after.SignaturesVerified));
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task Forged_load_is_refused_every_time_and_stores_nothing_beside_the_honest_load()
    {
        await using TestNode node = await TestNode.StartAsync(TestNode.Unthrottled);
        Assert.Equal(System.Net.IPAddress.Parse("127.0.0.2"), ForgedLoad.DefaultFrom(node.Address));
        await using ForgedLoad forged = await ForgedLoad.StartAsync(node.Address, ForgedLoad.Prepare(50), rate: 200, ForgedLoad.DefaultFrom(node.Address), null, CancellationToken.None);
        LoadReport stream = await new LoadGenerator(node.Address, clients: 4, connections: 4).RunStreamingAsync(LoadGenerator.Prepare(400, senders: 16, recipients: 8));
        await Task.Delay(500); // a hundred forgeries, at least
        ForgedReport report = await forged.StopAsync();

        Assert.Equal((400, 0), (stream.Accepted, stream.Refused));
        Assert.True(report.Sent >= 50, ForgedLoad.Describe(report));
        Assert.Equal(0, report.Accepted);
        Assert.Equal(report.Sent, report.Refused + report.Other);
        Assert.True(report.Refused >= 50, ForgedLoad.Describe(report)); // within the burst, each is verified and refused as bad
        Assert.Contains("refused as bad signatures", ForgedLoad.Describe(report), StringComparison.Ordinal);
        using var client = node.Client();
        Assert.Equal(400, (await client.Relay.GetTreeHeadAsync(new GetTreeHeadRequest())).TreeSize);
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task Open_loop_reports_the_clients_own_lateness()
    {
        await using TestNode node = await TestNode.StartAsync(TestNode.Unthrottled);
        var progress = new StringWriter();
        IReadOnlyList<Envelope> envelopes = LoadGenerator.Prepare(600, senders: 16, recipients: 8);

        // 4 clients at 1,000/s: each client's calls are 4 ms apart, so a timer-based wait sleeps before every call.
        LoadReport unary = await new LoadGenerator(node.Address, clients: 4, connections: 4, progress).RunUnaryAsync(envelopes, targetRate: 1_000);

        Assert.Equal(600, unary.Accepted);
        // How late is reported, not bounded: precision is a property of the machine's load, which a unit test on a
        // shared two-core runner does not control. `meganet load` prints it beside every open-loop result.
        // A call starts after its due time, never on it to the tick (the wait returns at it or past it, and the call's
        // start is timed after that): a lateness of nothing at p99 is a lateness not measured.
        Assert.True(unary.StartLateP50Ms >= 0 && unary.StartLateP99Ms >= unary.StartLateP50Ms && unary.StartLateP99Ms > 0, $"lateness p50 {unary.StartLateP50Ms}, p99 {unary.StartLateP99Ms}");
        Assert.Contains($"client start lateness p50 {unary.StartLateP50Ms:F2} ms", progress.ToString(), StringComparison.Ordinal);
        node.AssertNoServerErrors();
    }

    [Fact]
    public void Waiting_for_a_due_time_never_returns_early()
    {
        var watch = System.Diagnostics.Stopwatch.StartNew();
        for (int i = 0; i < 300; i++)
        {
            double due = 0.01 + (i * 0.0007); // 0.7 ms apart: neither a whole timer tick nor a multiple of one
            LoadGenerator.WaitUntil(watch, due, CancellationToken.None);
            double late = watch.Elapsed.TotalSeconds - due;
            Assert.True(late >= 0, $"wait {i} returned {-late * 1000:F3} ms early");
        }
    }

    [Fact]
    public void The_timeline_writes_a_row_per_call_with_its_wall_clock_completion()
    {
        // A phase that began at 1,800,000,000,000.5 ms since 1970: a call on schedule, one refused, one without a
        // schedule (closed loop: no lateness).
        var calls = new LoadGenerator.CallSamples(3);
        (calls.StartedAt[0], calls.CompletedAt[0], calls.LatencyMs[0], calls.LateMs[0], calls.Ok[0]) = (0.1, 0.25, 150.25, 0.5, true);
        (calls.StartedAt[1], calls.CompletedAt[1], calls.LatencyMs[1], calls.LateMs[1], calls.Ok[1]) = (0.2, 0.2031, 3.1, 0, false);
        (calls.StartedAt[2], calls.CompletedAt[2], calls.LatencyMs[2], calls.Ok[2]) = (1.5, 1.502, 2, true);
        DateTimeOffset began = DateTimeOffset.FromUnixTimeMilliseconds(1_800_000_000_000).AddTicks(TimeSpan.TicksPerMillisecond / 2);
        var csv = new StringWriter { NewLine = "\n" };
        using (LoadTimeline timeline = LoadTimeline.Over(csv))
        {
            timeline.Add("mixed", "unary", began, calls);
        }

        Assert.Equal(
            [
                LoadTimeline.Header,
                "mixed,unary,1800000000250.500,0.100000,150.250,0.500,1",
                "mixed,unary,1800000000203.600,0.200000,3.100,0.000,0",
                "mixed,unary,1800000001502.500,1.500000,2.000,,1",
            ],
            csv.ToString().TrimEnd('\n').Split('\n'));
    }

    [Fact]
    public void An_acceptance_counts_after_the_warm_up_by_when_it_completed_not_by_start_plus_a_latency_that_includes_lateness()
    {
        // 1,000 calls due at 1.4 s that started 500 ms late at 1.9 s and completed at 1.95 s (latency from the due time:
        // 550 ms), then 1,000 calls started at 2.5 s and completed at 2.6 s. Only the second 1,000 completed after the
        // warm-up; start + latency (2.45 s) would count the first 1,000 there too.
        var calls = new LoadGenerator.CallSamples(2_000);
        for (int i = 0; i < 2_000; i++)
        {
            bool early = i < 1_000;
            calls.StartedAt[i] = early ? 1.9 : 2.5;
            calls.CompletedAt[i] = early ? 1.95 : 2.6;
            calls.LatencyMs[i] = early ? 550 : 100;
            calls.LateMs[i] = early ? 500 : 0;
            calls.Ok[i] = true;
        }

        LoadReport report = LoadGenerator.Summarize("unary", 4, 2_000, 2_000, 0, seconds: 3, calls, meanServerBatch: 1, "simd");

        Assert.Equal(1_000, report.SteadyAcceptedPerSecond, precision: 6);
        Assert.Equal(550, report.P99Ms);
        Assert.Equal(500, report.StartLateP99Ms);
    }

    [Fact]
    public void The_printed_line_gives_the_clients_lateness_and_warns_when_it_is_a_large_part_of_the_latency()
    {
        var calm = new LoadReport("unary", 8, 100, 100, 0, 1, P50Ms: 2, P99Ms: 10, double.NaN, double.NaN, double.NaN, 1, "simd", 100,
            StartLateP50Ms: 0.05, StartLateP99Ms: 0.3);
        var lagging = calm with { StartLateP50Ms = 1.5, StartLateP99Ms = 6 };

        string calmText = LoadGenerator.Describe(calm), laggingText = LoadGenerator.Describe(lagging);

        Assert.Contains("client start lateness p50 0.05 ms, p99 0.30 ms", calmText, StringComparison.Ordinal);
        Assert.DoesNotContain("warning", calmText, StringComparison.Ordinal);
        Assert.Contains("warning: this load client started calls up to 6.00 ms late (p99), 60 % of the latency p99", laggingText, StringComparison.Ordinal);
        // Closed loop and streaming have no schedule: no lateness, no warning.
        string closed = LoadGenerator.Describe(calm with { StartLateP50Ms = double.NaN, StartLateP99Ms = double.NaN });
        Assert.DoesNotContain("lateness", closed, StringComparison.Ordinal);
        Assert.DoesNotContain("warning", closed, StringComparison.Ordinal);
    }

    [Fact]
    public void The_floor_line_counts_answered_status_calls_and_gives_no_verifier_batch()
    {
        // --floor's Status calls were printed as "accepted/s" with "mean verifier batch 0.0 (simd)": they reach no verifier.
        var floor = new LoadReport("floor (Status calls, nothing verified or stored) (open loop at 1,000/s)", 8, 2000, 2000, 0, 2,
            P50Ms: 0.4, P99Ms: 3.5, 0.3, 3.0, 1000, 0, "simd", 1000, StatusCalls: true);
        string text = LoadGenerator.Describe(floor);
        Assert.Contains("1,000 answered/s (2000/2000, 0 refused;", text, StringComparison.Ordinal);
        Assert.Contains("(after the first 2 s: 1,000 answered/s,", text, StringComparison.Ordinal);
        Assert.DoesNotContain("accepted", text, StringComparison.Ordinal);
        Assert.DoesNotContain("verifier batch", text, StringComparison.Ordinal);

        string unary = LoadGenerator.Describe(floor with { Mode = "unary", StatusCalls = false, MeanServerBatch = 2.5 });
        Assert.Contains("1,000 accepted/s", unary, StringComparison.Ordinal);
        Assert.Contains("mean verifier batch 2.5 (simd)", unary, StringComparison.Ordinal);
    }

    [Fact]
    public void The_printed_line_gives_the_cores_this_process_and_the_machine_kept_busy()
    {
        var stream = new LoadReport("stream", 8, 100_000, 100_000, 0, 5, 90, 190, 88, 180, SteadyAcceptedPerSecond: 21_000, 900, "simd",
            Cpu: new CpuSpent(0.4, 1.9, 2));

        // 1.9 cores for 5 s over 100,000 envelopes: 1.9 * 5 / 100,000 s = 95 µs each.
        Assert.Contains("  CPU: this process 0.40 cores, the machine 1.90 of 2 busy (95.0 µs of the machine's CPU an accepted envelope)",
            LoadGenerator.Describe(stream), StringComparison.Ordinal);
        // Where the machine's share is unknown (not Linux), only this process's; nothing measured, no line.
        string processOnly = LoadGenerator.Describe(stream with { Cpu = new CpuSpent(0.4, double.NaN, 2) });
        Assert.Contains("  CPU: this process 0.40 cores" + Environment.NewLine, processOnly, StringComparison.Ordinal);
        Assert.DoesNotContain("CPU:", LoadGenerator.Describe(stream with { Cpu = null }), StringComparison.Ordinal);
        Assert.Contains("busy (95.0 µs of the machine's CPU an accepted envelope); its busiest thread 'mn-admission' 0.93 of a core" + Environment.NewLine,
            LoadGenerator.Describe(stream with { Cpu = new CpuSpent(0.4, 1.9, 2, "mn-admission", 0.93) }), StringComparison.Ordinal);
    }

    [Fact]
    public void A_thread_stat_line_gives_its_name_and_ticks_even_with_parentheses_and_spaces_in_the_name()
    {
        // tid (comm) state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime stime cutime ...
        Assert.Equal(("mn-admission", 1234L + 56), CpuUse.ParseTaskStat("4242 (mn-admission) R 1 1 1 0 -1 4194560 900 0 0 0 1234 56 0 0 20 0 40 0"));
        Assert.Equal((".NET TP (x) y", 7L + 8), CpuUse.ParseTaskStat("17 (.NET TP (x) y) S 1 1 1 0 -1 0 0 0 0 0 7 8 0 0"));
        Assert.Null(CpuUse.ParseTaskStat("17 (name) S 1 1 1"));
        Assert.Null(CpuUse.ParseTaskStat("17 name S 1 1 1 0 -1 0 0 0 0 0 7 8"));
        Assert.Null(CpuUse.ParseTaskStat(null));
    }

    [Fact]
    public void The_busiest_thread_is_the_one_that_spun_and_its_share_is_about_a_core()
    {
        if (!OperatingSystem.IsLinux())
        {
            return;
        }

        // A named thread spins until its own ticks (its /proc stat line) have grown by 40, 400 ms; the span is at
        // least that long, so its share is at most a core, and no other thread of this test host spins as long.
        CpuUse start = CpuUse.Now();
        var clock = System.Diagnostics.Stopwatch.StartNew();
        using var spun = new ManualResetEventSlim();
        using var release = new ManualResetEventSlim();
        var spinner = new Thread(() =>
        {
            long from = OwnTicks();
            while (OwnTicks() - from < 40)
            {
            }

            // Alive until the second sample: a thread that has ended is not in it.
            spun.Set();
            release.Wait();
        })
        { Name = "spin-test" };
        spinner.Start();
        spun.Wait();
        double seconds = clock.Elapsed.TotalSeconds;
        CpuSpent spent = CpuUse.Between(start, CpuUse.Now(), seconds);
        release.Set();
        spinner.Join();
        Assert.Equal("spin-test", spent.BusiestThread);
        Assert.InRange(spent.BusiestThreadCores * seconds, 0.395, 0.45);
        Assert.InRange(spent.BusiestThreadCores, 0.0, 1.05);

        static long OwnTicks() => CpuUse.ParseTaskStat(File.ReadAllText("/proc/thread-self/stat"))!.Value.Ticks;
    }

    [Fact]
    public void Proc_stat_counts_user_nice_system_irq_and_softirq_as_busy_and_idle_iowait_and_steal_as_not()
    {
        // user nice system idle iowait irq softirq steal guest guest_nice
        Assert.Equal((100L + 2 + 30 + 4 + 5, 100L + 2 + 30 + 500 + 7 + 4 + 5 + 9), CpuUse.ParseProcStat("cpu  100 2 30 500 7 4 5 9 11 0"));
        Assert.Equal((10L + 0 + 3, 10L + 0 + 3 + 50), CpuUse.ParseProcStat("cpu 10 0 3 50"));
        Assert.Null(CpuUse.ParseProcStat("cpu0 100 2 30 500"));
        Assert.Null(CpuUse.ParseProcStat("cpu  100 x 30 500"));
        Assert.Null(CpuUse.ParseProcStat(null));

        if (OperatingSystem.IsLinux())
        {
            // Spins until this process has used 300 ms more CPU (however busy the machine is meanwhile): the
            // machine's busy time over the span is at least that (less a tick of 10 ms at each end), and at most
            // every core for the whole span (the cores /proc/stat counts: in a container, the host's).
            CpuUse start = CpuUse.Now();
            var clock = System.Diagnostics.Stopwatch.StartNew();
            while (Environment.CpuUsage.TotalTime - start.Process < TimeSpan.FromMilliseconds(300))
            {
            }

            double seconds = clock.Elapsed.TotalSeconds;
            CpuSpent spent = CpuUse.Between(start, CpuUse.Now(), seconds);
            Assert.InRange(spent.ProcessCores * seconds, 0.3, 0.3 + (Environment.ProcessorCount * seconds));
            Assert.InRange(spent.MachineCores * seconds, 0.28, (spent.LogicalCores * seconds) + 0.02);
        }
    }

    [Fact]
    public void Percentiles_are_nearest_rank()
    {
        double[] hundred = Enumerable.Range(1, 100).Select(i => (double)i).ToArray();
        Assert.Equal(50, LoadGenerator.Percentile(hundred, 0.50));
        Assert.Equal(99, LoadGenerator.Percentile(hundred, 0.99)); // not the maximum
        Assert.Equal(100, LoadGenerator.Percentile(hundred, 1.0));
        Assert.Equal(7, LoadGenerator.Percentile([7], 0.99));
        Assert.True(double.IsNaN(LoadGenerator.Percentile([], 0.5)));
    }

    [Fact]
    public void The_streaming_rate_is_given_as_a_share_of_the_baseline_after_the_first_seconds_when_there_is_that_figure()
    {
        var raw = new VerifyBenchmarkResult("simd", LoadBaseline.Batch, 2, 40_000, 4.0, false, "simd") { LibsodiumPairedPerSecond = 10_000 };
        var stream = new LoadReport("stream", 8, 100_000, 100_000, 0, 5, 90, 190, 88, 180, SteadyAcceptedPerSecond: 21_000, 900, "simd");

        Assert.Equal("stream accepted 21,000/s after the first 2 s: 52.5 % of the raw simd verifier's 40,000/s measured in this run",
            LoadBaseline.DescribeShare(stream, raw));
        // Too short for a steady figure: the whole phase's rate (20,000/s), and the line says so.
        Assert.StartsWith("stream accepted 20,000/s over the whole phase", LoadBaseline.DescribeShare(stream with { SteadyAcceptedPerSecond = double.NaN }, raw), StringComparison.Ordinal);
        Assert.Equal("raw simd verifier in this process: 40,000/s at batch 1,024 on 2 threads, key cache off (4.00x libsodium's 10,000/s beside it)",
            LoadBaseline.DescribeBaseline(raw));

        // Timed again after the phase: the share is of the two timings' mean, and the line gives both.
        Assert.Equal("stream accepted 21,000/s after the first 2 s: 50.0 % of the raw simd verifier's 42,000/s measured in this run " +
            "(mean of 40,000/s before the streaming phase and 44,000/s after it)",
            LoadBaseline.DescribeShare(stream, raw, raw with { VerifiesPerSecond = 44_000 }));

        // Timings further apart than UnsteadySpread: the machine's speed moved, and the line gives the range it leaves.
        Assert.Equal("stream accepted 21,000/s after the first 2 s: 42.0 % of the raw simd verifier's 50,000/s measured in this run " +
            "(mean of 40,000/s before the streaming phase and 60,000/s after it); the two timings differ by 50 %, so the machine's speed changed " +
            "during the run: the share lies anywhere from 35.0 % (of the faster timing) to 52.5 % (of the slower); run again for a firmer figure",
            LoadBaseline.DescribeShare(stream, raw, raw with { VerifiesPerSecond = 60_000 }));
        Assert.DoesNotContain("differ by", LoadBaseline.DescribeShare(stream, raw, raw with { VerifiesPerSecond = 40_000 * (1 + LoadBaseline.UnsteadySpread) }), StringComparison.Ordinal);
        Assert.Contains("differ by 16 %", LoadBaseline.DescribeShare(stream, raw with { VerifiesPerSecond = 46_400 }, raw), StringComparison.Ordinal);
    }

    [Fact]
    public void The_baseline_times_the_simd_verifier_on_every_core_without_the_key_cache()
    {
        VerifyBenchmarkResult raw = LoadBaseline.Measure(TimeSpan.FromMilliseconds(50));

        Assert.Equal(("simd", LoadBaseline.Batch, false), (raw.Backend, raw.Batch, raw.KeyCache));
        Assert.Equal(Environment.ProcessorCount, raw.ThreadsRequested);
        Assert.True(raw.VerifiesPerSecond > 0 && raw.LibsodiumPairedPerSecond > 0, LoadBaseline.DescribeBaseline(raw));
    }

    [Fact]
    public void Pacing_lets_go_of_the_calls_that_succeeded_and_keeps_those_that_failed_or_are_in_flight()
    {
        Task failed = Task.FromException(new InvalidOperationException("refused"));
        var inFlight = new TaskCompletionSource();
        // Every call due at once: no waiting, only the bookkeeping.
        List<Task> open = LoadGenerator.Pace(10_000, _ => 0, System.Diagnostics.Stopwatch.StartNew(),
            (i, _) => i switch { 17 => failed, 5_000 => inFlight.Task, _ => Task.CompletedTask }, CancellationToken.None);

        Assert.Contains(failed, open);
        Assert.Contains(inFlight.Task, open);
        // Not the 10,000 started: what succeeded before the last look was let go.
        Assert.InRange(open.Count, 2, 4_096);
        Assert.Equal(2, open.Count(t => !t.IsCompletedSuccessfully));
    }
}
