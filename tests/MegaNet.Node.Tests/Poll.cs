namespace MegaNet.Node.Tests;

/// <summary>Waiting for a state that other threads or a node bring about, with a deadline rather than a sleep.</summary>
internal static class Poll
{
    /// <summary>Polls <paramref name="condition"/> every 50 ms for up to two minutes; on timing out, fails with
    /// <paramref name="state"/> (what was awaited, or what is still the case), read then.</summary>
    public static async Task UntilAsync(Func<bool> condition, Func<string> state)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (!condition() && clock.Elapsed < TimeSpan.FromMinutes(2))
        {
            await Task.Delay(50);
        }

        Assert.True(condition(), $"timed out after {clock.Elapsed.TotalSeconds:0} s: {state()}");
    }
}
