using System.CommandLine;
using MegaNet.Node.Cli;

namespace MegaNet.Node.Tests;

/// <summary>The CLI's duration options (<c>--timeout</c>, <c>--retry-for</c>, <c>profile --duration</c>): <c>--help</c>
/// showed their defaults as TimeSpans (<c>[default: 00:00:30]</c>), a form unlike the 30s they are given in.</summary>
public sealed class CliDurationTests
{
    [Theory]
    [InlineData("fetch", "--timeout", "[default: 30s]")]
    [InlineData("listen", "--retry-for", "[default: 5m]")]
    [InlineData("profile", "--duration", "[default: 30s]")]
    public void Help_shows_a_duration_default_as_it_is_given(string command, string option, string shown)
    {
        using var output = new StringWriter();
        Assert.Equal(0, MeganetCommand.Build().Parse([command, "--help"]).Invoke(new InvocationConfiguration { Output = output }));
        string line = Assert.Single(output.ToString().Split('\n'), l => l.TrimStart().StartsWith(option + " ", StringComparison.Ordinal));
        Assert.EndsWith(shown, line.TrimEnd(), StringComparison.Ordinal);
        Assert.DoesNotMatch(@"\[default: \d+:\d\d", output.ToString()); // no other option's either
    }

    [Theory]
    [InlineData("30s", 30)]
    [InlineData("1.5s", 1.5)]
    [InlineData("2m", 120)]
    [InlineData("1h", 3_600)]
    [InlineData("1d", 86_400)]
    [InlineData("00:01:30", 90)]
    [InlineData(" 10s ", 10)]
    public void Duration_options_take_the_forms_they_took(string value, double seconds)
    {
        foreach (string[] args in (string[][])[["fetch", "--timeout", value], ["listen", "--retry-for", value], ["profile", "--duration", value]])
        {
            ParseResult parse = MeganetCommand.Build().Parse(args);
            Assert.Empty(parse.Errors);
            Assert.Equal(TimeSpan.FromSeconds(seconds), (TimeSpan)parse.GetValue<CliDuration>(args[1]));
        }
    }

    [Theory]
    [InlineData(30, "30s")]
    [InlineData(1.5, "1.5s")]
    [InlineData(90, "90s")]
    [InlineData(300, "5m")]
    [InlineData(5_400, "90m")]
    [InlineData(7_200, "2h")]
    [InlineData(86_400, "1d")]
    [InlineData(0.0001, "0.0001s")]
    public void A_duration_is_shown_in_the_largest_whole_unit_and_read_back_the_same(double seconds, string shown)
    {
        var duration = new CliDuration(TimeSpan.FromSeconds(seconds));
        Assert.Equal(shown, duration.ToString());
        Assert.Equal(duration, MeganetCommand.Build().Parse(["fetch", "--timeout", shown]).GetValue<CliDuration>("--timeout"));
    }
}
