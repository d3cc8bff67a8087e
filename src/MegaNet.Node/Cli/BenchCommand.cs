using System.CommandLine;

namespace MegaNet.Node.Cli;

/// <summary><c>meganet bench</c>: a quick throughput sweep against libsodium.</summary>
internal static class BenchCommand
{
    public static Command Build()
    {
        var command = new Command("bench", "Measure verifies/s per backend and batch size, as a ratio to libsodium in the same run.");
        command.SetAction(_ =>
        {
            Console.Error.WriteLine("meganet bench: not implemented yet.");
            return 2;
        });
        return command;
    }
}
