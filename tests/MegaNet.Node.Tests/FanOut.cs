namespace MegaNet.Node.Tests;

/// <summary>
/// Thousands of calls at once, awaited off xunit's synchronization context. xunit (its default, conservative parallel
/// algorithm) starts a thread of its own for every continuation posted to that context, on the thread that posts it:
/// the forgery tests' thousands of answers, each continued in a lambda, <c>Assert.ThrowsAsync</c> and <c>WaitAsync</c>,
/// kept thread-pool threads starting threads for about 30 s (thread dumps: 2,283 pool items waiting, the pool's
/// threads in <c>Thread.Start</c> under <c>AsyncTestSyncContext.Post</c>), and the in-process nodes of the tests beside
/// them, which run on that pool, answered nothing meanwhile: a client's 30 s deadline ran out on a Challenge.
/// </summary>
internal static class FanOut
{
    /// <summary><paramref name="call"/> for each of <paramref name="items"/>, started and continued on the thread pool;
    /// the results in order.</summary>
    public static Task<TResult[]> AllAsync<TItem, TResult>(IEnumerable<TItem> items, Func<TItem, Task<TResult>> call) =>
        Task.Run(() => Task.WhenAll(items.Select(call)));

    /// <summary><paramref name="call"/> for each of <paramref name="items"/>, started and continued on the thread
    /// pool.</summary>
    public static Task AllAsync<TItem>(IEnumerable<TItem> items, Func<TItem, Task> call) =>
        Task.Run(() => Task.WhenAll(items.Select(call)));
}
