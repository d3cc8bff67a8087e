namespace MegaNet.Node.Tests;

/// <summary>Tests that run after the parallel tests, one class at a time: those that compare how much CPU threads get,
/// since other tests' threads on this machine's two cores would skew the shares they measure, and those that read
/// process-wide counts (open connections, live subscriptions) that other tests' nodes would change.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class AloneCollection
{
    public const string Name = "alone";
}
