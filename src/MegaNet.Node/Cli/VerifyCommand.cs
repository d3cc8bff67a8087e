using System.CommandLine;

namespace MegaNet.Node.Cli;

/// <summary><c>meganet verify</c>: verdicts for a JSON-lines file of (pk, sig, msg) items on any backend.</summary>
internal static class VerifyCommand
{
    public static Command Build()
    {
        var command = new Command("verify", "Verify JSON lines {\"pk\",\"sig\",\"msg\"} (hex) and write one {\"valid\":bool} line per input.");
        command.SetAction(_ =>
        {
            Console.Error.WriteLine("meganet verify: not implemented yet.");
            return 2;
        });
        return command;
    }
}
