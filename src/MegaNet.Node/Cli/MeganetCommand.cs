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
        // 'meganet help [COMMAND...]', as git and go take it: that command's --help ('help' itself names no command).
        if (args.Length > 0 && args[0] == "help")
        {
            args = [.. args[1..], "--help"];
        }

        // Bare 'meganet': the overview, as --help gives it (exit 1: nothing was done).
        RootCommand root = Build();
        ParseResult parse = root.Parse(args.Length == 0 ? ["--help"] : args);
        if (args.Length == 0)
        {
            parse.Invoke();
            return 1;
        }

        if (UnknownCommand(root, args) is { } unknown)
        {
            // System.CommandLine says "Required command was not provided" and lists every token as unrecognized.
            Console.Error.WriteLine(unknown.Message);
            Console.Error.WriteLine(UsageHint(unknown.Path));
            return 1;
        }

        // A mistyped option where a command takes arguments (contact add --identty x NAME CARD) is bound to an
        // argument: the errors then name the words after it, or there are none and the command ran with the option's
        // name as a contact's name. So a word that looks like an option is refused wherever it landed, unless it
        // comes after a lone "--" (which makes every word after it an argument: a contact named --x). Judged by the
        // token's place, not its text: the same word may also be an option's value before the "--".
        var boundToArguments = new HashSet<System.CommandLine.Parsing.Token>(
            parse.CommandResult.Children.OfType<System.CommandLine.Parsing.ArgumentResult>().SelectMany(a => a.Tokens), ReferenceEqualityComparer.Instance);
        string[] optionLike = [.. parse.Tokens.TakeWhile(t => t.Type != System.CommandLine.Parsing.TokenType.DoubleDash)
            .Where(boundToArguments.Contains).Select(t => t.Value).Where(v => v.Length > 2 && v.StartsWith("--", StringComparison.Ordinal))];
        if (optionLike.Length > 0)
        {
            foreach (string word in optionLike.Distinct(StringComparer.Ordinal))
            {
                Console.Error.WriteLine(NearestOption(word, parse.CommandResult.Command) is { } near
                    ? $"meganet: Unrecognized command or argument '{word}'; did you mean '{near}'?"
                    : $"meganet: Unrecognized command or argument '{word}'.");
            }

            Console.Error.WriteLine(UsageHint(CommandPath(parse.CommandResult)));
            return 1;
        }

        if (parse.Errors.Count > 0)
        {
            // What is wrong and where the usage is, on stderr; System.CommandLine would add the whole help text on
            // stdout, where a script reading --json output gets it instead of an empty stream.
            // Each once: a command missing two arguments got "Required argument missing for command: 'add'." twice, and
            // neither said which.
            var printed = new HashSet<string>(StringComparer.Ordinal);
            foreach (System.CommandLine.Parsing.ParseError error in parse.Errors)
            {
                string line = Plain(error.Message);
                if ((error.SymbolResult as System.CommandLine.Parsing.CommandResult ?? error.SymbolResult?.Parent as System.CommandLine.Parsing.CommandResult) is { } command
                    && command.Command.Arguments.Count > 0 && line.StartsWith("Required argument missing for command", StringComparison.Ordinal))
                {
                    string[] missing = command.Command.Arguments.Where(a => parse.GetResult(a) is not { Tokens.Count: > 0 }).Select(a => $"<{a.Name}>").ToArray();
                    string path = CommandPath(command);
                    line = $"'{path["meganet ".Length..]}' needs {string.Join(" and ", missing)} ({path} {string.Join(' ', command.Command.Arguments.Select(a => $"<{a.Name}>"))} [options]).";
                }

                line = WithNearestOption(line, parse.CommandResult.Command);
                if (printed.Add(line))
                {
                    Console.Error.WriteLine($"meganet: {line}");
                }
            }

            Console.Error.WriteLine(UsageHint(CommandPath(parse.CommandResult)));
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

    /// <summary>System.CommandLine's parse error for a number option names a .NET type ("as expected type
    /// 'System.Double'", or a nullable one's full generic name); this says what kind of number instead. Other messages
    /// pass unchanged.</summary>
    internal static string Plain(string message)
    {
        System.Text.RegularExpressions.Match m = System.Text.RegularExpressions.Regex.Match(message,
            "^Cannot parse argument '(?<value>.*)' for option '(?<option>[^']*)' as expected type '(?:System\\.Nullable`1\\[+)?System\\.(?<type>\\w+)[^']*'\\.?$");
        if (!m.Success)
        {
            return message;
        }

        string kind = m.Groups["type"].Value switch
        {
            "Int32" or "Int64" or "Int16" => "a whole number",
            "UInt32" or "UInt64" or "UInt16" or "Byte" => "a whole number, 0 or more",
            _ => "a value of the kind its --help gives",
        };
        return $"{m.Groups["option"].Value}: '{m.Groups["value"].Value}' is not {kind}.";
    }

    /// <summary>
    /// The first word of <paramref name="args"/> that stands where a command (or a subcommand: <c>id new</c>,
    /// <c>contact add</c>) belongs and names none, said with the nearest name and the list; null when there is none.
    /// </summary>
    internal static (string Message, string Path)? UnknownCommand(RootCommand root, string[] args)
    {
        Command current = root;
        string path = "meganet";
        foreach (string arg in args)
        {
            if (current.Subcommands.Count == 0 || arg.StartsWith('-'))
            {
                return null;
            }

            Command? next = current.Subcommands.FirstOrDefault(c => c.Name == arg);
            if (next is null)
            {
                string? near = current.Subcommands.Select(c => c.Name).FirstOrDefault(n => EditDistance(n, arg) <= 2);
                string what = current == root ? "a command" : $"a command of '{path}'";
                return ($"meganet: '{arg}' is not {what}{(near is null ? "." : $"; did you mean '{near}'?")} " +
                    $"Commands: {string.Join(", ", current.Subcommands.Select(c => c.Name))}.", path);
            }

            current = next;
            path += " " + next.Name;
        }

        return null;
    }

    /// <summary>System.CommandLine's "Unrecognized command or argument '--ak'." for an option-like word, with the nearest
    /// option of <paramref name="command"/> (a mistyped command got a suggestion, a mistyped option none). Other
    /// messages pass unchanged.</summary>
    internal static string WithNearestOption(string message, Command command)
    {
        System.Text.RegularExpressions.Match m = System.Text.RegularExpressions.Regex.Match(message, "^Unrecognized command or argument '(?<word>--?[^'=]+)(=[^']*)?'\\.$");
        if (!m.Success)
        {
            return message;
        }

        return NearestOption(m.Groups["word"].Value, command) is { } near ? $"{message[..^1]}; did you mean '{near}'?" : message;
    }

    /// <summary>The long option of <paramref name="command"/> (or a recursive one of a command above it) within two edits
    /// of <paramref name="word"/> (its part before any '='), the nearest; null when there is none.</summary>
    private static string? NearestOption(string word, Command command)
    {
        word = word.Split('=', 2)[0];
        return command.Options.Concat(Ancestors(command).SelectMany(p => p.Options.Where(o => o.Recursive)))
            .SelectMany(o => o.Aliases.Prepend(o.Name))
            .Where(n => n.StartsWith("--", StringComparison.Ordinal))
            .Select(n => (Name: n, Distance: EditDistance(n, word)))
            .Where(c => c.Distance <= 2)
            .OrderBy(c => c.Distance)
            .Select(c => c.Name)
            .FirstOrDefault();
    }

    /// <summary>Every command above <paramref name="command"/> (the root's recursive options, --help among them, hold
    /// for commands two levels down too).</summary>
    private static IEnumerable<Command> Ancestors(Command command)
    {
        foreach (Command parent in command.Parents.OfType<Command>())
        {
            yield return parent;
            foreach (Command above in Ancestors(parent))
            {
                yield return above;
            }
        }
    }

    /// <summary>Levenshtein distance, for suggesting a command name.</summary>
    private static int EditDistance(string a, string b)
    {
        int[] row = Enumerable.Range(0, b.Length + 1).ToArray();
        for (int i = 1; i <= a.Length; i++)
        {
            int diagonal = row[0];
            row[0] = i;
            for (int j = 1; j <= b.Length; j++)
            {
                int above = row[j];
                row[j] = Math.Min(Math.Min(row[j] + 1, row[j - 1] + 1), diagonal + (a[i - 1] == b[j - 1] ? 0 : 1));
                diagonal = above;
            }
        }

        return row[b.Length];
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

    /// <summary>The line that says where the usage of <paramref name="commandPath"/> (e.g. <c>meganet id</c>) is.</summary>
    internal static string UsageHint(string commandPath) => $"Run '{commandPath} --help' for usage.";

    /// <summary>
    /// How long a command may take to finish after Ctrl+C / SIGTERM before the process ends with 130/143; null for
    /// <c>node</c>, whose host handles those signals alone (calls in flight: up to 10 s, NodeHost.ServerStopDrain; then
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

/// <summary>
/// A command-line mistake found once the line is parsed (a value out of range, options that do not go together): the
/// command prints it, then where its usage is, as System.CommandLine's own parse errors are printed.
/// </summary>
internal sealed class UsageException(string command, string message) : ArgumentException(message)
{
    /// <summary>Where the usage of the command is, e.g. "Run 'meganet bench --help' for usage."</summary>
    public string Hint { get; } = MeganetCommand.UsageHint($"meganet {command}");
}
