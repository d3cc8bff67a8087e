using MegaNet.Node.Cli;
using MegaNet.Node.Diagnostics;
using Microsoft.Diagnostics.NETCore.Client;

namespace MegaNet.Node.Tests;

/// <summary><c>meganet profile --help</c> against what the command writes.</summary>
public sealed class ProfileHelpTests
{
    [Fact]
    public void The_dump_option_says_it_writes_a_heap_dump_as_it_does()
    {
        // --help said "a full memory dump" while the node was asked for a heap dump (DumpType.WithHeap), smaller and
        // enough for dotnet-dump analyze; README said "full dump" too.
        Assert.Equal(DumpType.WithHeap, NodeProfiler.DumpKind);
        string help = ProfileCommand.Build().Options.Single(o => o.Name == "--dump").Description ?? "";
        Assert.StartsWith("Write a heap dump to this file", help, StringComparison.Ordinal);
        Assert.Contains("dotnet-dump analyze", help, StringComparison.Ordinal);
        Assert.DoesNotContain("full memory dump", help, StringComparison.Ordinal);
        Assert.Contains("# heap dump", File.ReadAllText(Checkout.Path("README.md")), StringComparison.Ordinal);
    }
}
