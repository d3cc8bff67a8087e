using System.CommandLine;

namespace MegaNet.Node.Cli;

/// <summary>The <c>meganet</c> command line: composes one subcommand per file in this folder.</summary>
internal static class MeganetCommand
{
    public static RootCommand Build()
    {
        var root = new RootCommand(
            "MegaNet relay node and tools: run a node, verify Ed25519 batches on any backend, benchmark and profile.");
        root.Subcommands.Add(NodeCommand.Build());
        foreach (Command command in ClientCommands.Build())
        {
            root.Subcommands.Add(command);
        }

        root.Subcommands.Add(VerifyCommand.Build());
        root.Subcommands.Add(BenchCommand.Build());
        root.Subcommands.Add(LoadCommand.Build());
        root.Subcommands.Add(ProfileCommand.Build());
        return root;
    }

    public static int Run(string[] args) => Build().Parse(args).InvokeAsync().GetAwaiter().GetResult();
}
