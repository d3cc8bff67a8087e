using System.CommandLine;
using MegaNet.Node.Cli;

namespace MegaNet.Node.Tests;

/// <summary>The client commands' <c>--help</c> against what README says of them and what the commands do.</summary>
public sealed class ClientHelpTests
{
    [Theory]
    [InlineData("cannot start with '.', '-' or a space")]
    [InlineData("end with '.' or a space")]
    [InlineData("control or format characters (zero-width or bidi ones)")]
    [InlineData("line or paragraph separators")]
    [InlineData(": < > \" | ? *")]
    [InlineData("no path separators")]
    [InlineData("at most 140 bytes (UTF-8)")]
    [InlineData("/dev/fd/N")]
    public void Send_name_help_gives_every_rule_a_name_is_refused_for(string rule)
    {
        // README's send row and the refusal named these; --help said only "no path separators, at most 140 bytes",
        // so .bashrc, -rf or "report." looked fine until send refused them.
        Assert.Contains(rule, Description("send", "--name"), StringComparison.Ordinal);
    }

    private static string Description(string command, string option) =>
        ClientCommands.Build().Single(c => c.Name == command).Options.Single(o => o.Name == option).Description ?? "";
}
