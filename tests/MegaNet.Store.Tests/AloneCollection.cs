namespace MegaNet.Store.Tests;

/// <summary>Tests that count what the process-wide meter records: they run after the parallel tests, one class at a
/// time, so no other test's store adds its measurements to theirs.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class AloneCollection
{
    public const string Name = "alone";
}
