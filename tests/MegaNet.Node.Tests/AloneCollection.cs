namespace MegaNet.Node.Tests;

/// <summary>Tests that compare how much CPU threads get: they run after the parallel tests, one class at a time,
/// since other tests' threads on this machine's two cores would skew the shares they measure.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class AloneCollection
{
    public const string Name = "alone";
}
