using Grpc.Core;
using MegaNet.Api.V1;
using MegaNet.Node.Cli;

namespace MegaNet.Node.Tests;

/// <summary>How <c>meganet load</c> paces its unary phase.</summary>
public sealed class LoadCommandTests
{
    [Theory]
    // --mode both without --rate: half the streaming rate. A streaming phase that accepted nothing left 0, which the
    // unary phase (and --floor's) took as closed loop, contrary to the help; now refused, saying why.
    [InlineData("both", 0.0, 0.0, true)]
    [InlineData("both", 0.0, double.NaN, true)]
    [InlineData("both", 0.0, 1_200.0, false)]
    [InlineData("both", 500.0, 0.0, false)] // --rate given: it is the rate, whatever the stream did
    [InlineData("unary", 0.0, 0.0, false)] // --mode unary without --rate is closed loop, as the help says
    public void The_unary_phase_after_a_stream_that_accepted_nothing_is_not_run_closed_loop(string mode, double offered, double streamRate, bool refused)
    {
        string? problem = LoadCommand.UnaryRateProblem(mode, offered, streamRate, unaryEnvelopes: 75_000, mixedShare: 0.5);
        Assert.Equal(refused, problem is not null);
        if (refused)
        {
            Assert.Contains("the streaming phase accepted nothing", problem, StringComparison.Ordinal);
            Assert.Contains("give --rate", problem, StringComparison.Ordinal);
        }
    }

    [Theory]
    // --mode mixed offers half the streaming rate in all, --rate being only its unary part: a stream that accepted
    // nothing leaves no rate even with --rate, and the way out is not to give one.
    [InlineData(0.0, 0.0, "the streaming phase accepted nothing")]
    [InlineData(300.0, 0.0, "the streaming phase accepted nothing")]
    [InlineData(0.0, 0.5, "75,000 envelopes at half that would take")]
    [InlineData(0.0, 1_200.0, null)]
    public void The_mixed_phase_after_a_stream_that_accepted_nothing_or_a_handful_is_not_run(double offered, double streamRate, string? expected)
    {
        string? problem = LoadCommand.UnaryRateProblem("mixed", offered, streamRate, unaryEnvelopes: 75_000, mixedShare: 0.5);
        if (expected is null)
        {
            Assert.Null(problem);
            return;
        }

        Assert.NotNull(problem);
        Assert.Contains(expected, problem, StringComparison.Ordinal);
        Assert.Contains("the mixed phase is not run", problem, StringComparison.Ordinal);
        Assert.DoesNotContain("--rate", problem, StringComparison.Ordinal);
    }

    [Theory]
    // --mixed-share sets the mixed phase's load: 75,000 envelopes at a tenth of 1,200/s take 625 s, past the ten minutes;
    // at half of it, 125 s.
    [InlineData("mixed", 0.1, "75,000 envelopes at 0.1 of that would take 0:10:25")]
    [InlineData("mixed", 0.5, null)]
    // --mode both's unary phase is offered half the streaming rate whatever the share: 125 s.
    [InlineData("both", 0.1, null)]
    public void The_mixed_phase_is_sized_by_its_share_of_the_streaming_rate(string mode, double share, string? expected)
    {
        AssertSaysOrNothing(expected, LoadCommand.UnaryRateProblem(mode, 0, 1_200, unaryEnvelopes: 75_000, mixedShare: share));
    }

    [Theory]
    // In proportion to the rates, so both parts last about as long; never none of either.
    [InlineData(300_000, 30_000.0, 3_000.0, 270_000, 30_000)]
    [InlineData(300_000, 30_000.0, 1_000.0, 290_000, 10_000)]
    [InlineData(10, 100.0, 99.0, 1, 9)]
    [InlineData(10, 100.0, 0.001, 9, 1)]
    [InlineData(1, 100.0, 10.0, 1, 1)]
    public void The_mixed_phase_splits_its_envelopes_by_the_two_rates(int envelopes, double total, double unaryRate, int streamed, int unary) =>
        Assert.Equal((streamed, unary), LoadCommand.MixedSplit(envelopes, total, unaryRate));

    [Theory]
    // A stream that accepted a handful (5 in 10 s): 75,000 unary calls at 0.25/s would take three and a half days.
    [InlineData(0.5, true)]
    // 75,000 at 125/s is exactly the ten minutes allowed; at 250/s, five.
    [InlineData(250.0, false)]
    [InlineData(500.0, false)]
    public void A_unary_phase_that_half_the_streaming_rate_would_stretch_past_ten_minutes_is_not_run(double streamRate, bool refused)
    {
        string? problem = LoadCommand.UnaryRateProblem("both", 0, streamRate, unaryEnvelopes: 75_000, mixedShare: 0.5);
        Assert.Equal(refused, problem is not null);
        if (refused)
        {
            Assert.Contains("more than 10 minutes", problem, StringComparison.Ordinal);
            Assert.Contains("give --rate", problem, StringComparison.Ordinal);
        }
    }

    [Theory]
    // 0.5 for 500: the default 20,000 envelopes give 10,000 unary calls, five and a half hours at 0.5/s.
    [InlineData("both", 0.5, 20_000, false, "10,000 calls take about 5:33:20")]
    [InlineData("unary", 10.0, 20_000, false, "20,000 calls take about 0:33:20")]
    // --floor runs the calls again at that rate: 6 minutes become 12.
    [InlineData("both", 50.0, 36_000, true, "and --floor's as many again")]
    [InlineData("both", 50.0, 36_000, false, null)]
    [InlineData("both", 500.0, 20_000, false, null)]
    [InlineData("both", 0.0, 20_000, false, null)] // no --rate: half the streaming rate, checked after the stream
    [InlineData("stream", 0.5, 20_000, false, null)] // refused elsewhere: --rate is for the unary phase
    [InlineData("mixed", 0.5, 20_000, false, null)] // the streamed part sets how long a mixed phase lasts
    public void A_given_rate_that_stretches_the_unary_phase_past_ten_minutes_is_warned_of(string mode, double rate, int envelopes, bool floor, string? expected)
    {
        AssertSaysOrNothing(expected, LoadCommand.SlowRateWarning(mode, rate, envelopes, floor));
    }

    // No text where none is expected; else one that contains the expected words.
    private static void AssertSaysOrNothing(string? expected, string? text)
    {
        if (expected is null)
        {
            Assert.Null(text);
        }
        else
        {
            Assert.NotNull(text);
            Assert.Contains(expected, text, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task A_nodes_words_in_the_report_of_a_node_out_of_reach_are_shown_not_obeyed()
    {
        // The node chooses the text of a DEADLINE_EXCEEDED it sends: printed raw, its escapes rewrote the terminal.
        await using var fake = await FakeRelay<LateStatus>.StartAsync(new LateStatus());
        string dir = Directory.CreateTempSubdirectory("meganet-load-").FullName;
        try
        {
            MeganetProcess.Result r = await MeganetProcess.RunAsync(dir, null, false, "load", "--node", fake.Address.ToString());
            MeganetResults.AssertExit(r, 2, $"meganet load: cannot reach the node at {fake.Address} (DeadlineExceeded: late\\u000d\\u001b[2J)");
            Assert.DoesNotContain('\u001b', r.Stderr);
            Assert.DoesNotContain('\r', r.Stderr);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    /// <summary>Answers Status with DEADLINE_EXCEEDED, in words holding terminal escapes.</summary>
    private sealed class LateStatus : Relay.RelayBase
    {
        public override Task<StatusResponse> Status(StatusRequest request, ServerCallContext context) =>
            throw new RpcException(new Grpc.Core.Status(StatusCode.DeadlineExceeded, "late\r\u001b[2J"));
    }
}
