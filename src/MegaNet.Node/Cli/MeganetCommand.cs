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

        string name = parse.CommandResult.Command.Name;
        // System.CommandLine's own signal handling is off (a null timeout): the node's host handles the signals, and
        // for the others Interruption does, so that SIGTERM exits 143 rather than 130.
        var configuration = new InvocationConfiguration { ProcessTerminationTimeout = null };
        if (GraceAfterSignal(name) is not TimeSpan grace)
        {
            return parse.InvokeAsync(configuration).GetAwaiter().GetResult();
        }

        using Interruption interruption = Interruption.Watch(grace);
        // On the thread pool, as System.CommandLine runs it when it handles signals: a command busy on this thread (bench
        // runs synchronously) would otherwise outlast its grace period.
        return interruption.WaitAsync(Task.Run(() => parse.InvokeAsync(configuration, interruption.Token))).GetAwaiter().GetResult();
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
    /// How long a command may take to finish after Ctrl+C / SIGTERM before the process ends with 130/143; null for
    /// <c>node</c>, whose host handles those signals alone (calls in flight: up to 30 s, the host's ShutdownTimeout; then
    /// admission drain and the store's final checkpoint, up to StoreOptions.ShutdownTimeout, 60 s; a fixed timeout cut
    /// it off in the middle) while the process waits for it. <c>load</c> gets time to stop its embedded
    /// node and delete its data directory; the others (listen: a signal is how it ends) 5 s.
    /// </summary>
    internal static TimeSpan? GraceAfterSignal(string command) => command switch
    {
        "node" => null,
        "load" => TimeSpan.FromSeconds(60),
        _ => TimeSpan.FromSeconds(5),
    };
}
