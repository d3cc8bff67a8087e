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

    /// <summary>Parses and runs <paramref name="args"/>; returns the exit code.</summary>
    public static int Run(string[] args)
    {
        // Bare 'meganet': the overview, as --help gives it (exit 1: nothing was done).
        ParseResult parse = Build().Parse(args.Length == 0 ? ["--help"] : args);
        if (args.Length == 0)
        {
            parse.Invoke();
            return 1;
        }

        if (parse.Errors.Count > 0)
        {
            // What is wrong and where the usage is, on stderr; System.CommandLine would add the whole help text on
            // stdout, where a script reading --json output gets it instead of an empty stream.
            foreach (System.CommandLine.Parsing.ParseError error in parse.Errors)
            {
                Console.Error.WriteLine($"meganet: {error.Message}");
            }

            Console.Error.WriteLine($"Run '{CommandPath(parse.CommandResult)} --help' for usage.");
            return 1;
        }

        return parse.InvokeAsync(InvocationFor(parse.CommandResult.Command.Name)).GetAwaiter().GetResult();
    }

    private static string CommandPath(System.CommandLine.Parsing.CommandResult result)
    {
        var names = new List<string>();
        for (System.CommandLine.Parsing.SymbolResult? r = result; r is not null; r = r.Parent)
        {
            if (r is System.CommandLine.Parsing.CommandResult c)
            {
                names.Add(c.Parent is null ? "meganet" : c.Command.Name);
            }
        }

        names.Reverse();
        return string.Join(' ', names);
    }

    /// <summary>
    /// How long a command may take to finish after Ctrl+C / SIGTERM before System.CommandLine ends it with 130/143.
    /// The default (2 s) cut the node off in the middle of its shutdown (admission drain, final checkpoint: up to
    /// 30 s), so the node's host handles those signals alone and the process waits for it; <c>load</c> gets time
    /// to stop its embedded node and delete its data directory; the others (listen: Ctrl+C is how it ends) 5 s.
    /// </summary>
    internal static InvocationConfiguration InvocationFor(string command) => command switch
    {
        "node" => new InvocationConfiguration { ProcessTerminationTimeout = null },
        "load" => new InvocationConfiguration { ProcessTerminationTimeout = TimeSpan.FromSeconds(60) },
        // Set explicitly: a new InvocationConfiguration leaves it null in 2.0.0, and Ctrl+C then killed listen outright.
        _ => new InvocationConfiguration { ProcessTerminationTimeout = TimeSpan.FromSeconds(5) },
    };
}
