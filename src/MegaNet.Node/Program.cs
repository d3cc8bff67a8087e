namespace MegaNet.Node;

internal static class Program
{
    private static int Main(string[] args) => Cli.MeganetCommand.Run(args);
}
