namespace MegaNet.Verify.Tests;

/// <summary>Waits for a thread to block, where a test means it to wait on a lock: a fixed sleep instead let a slow
/// thread arrive after the lock was free, and the test passed without its scenario.</summary>
internal static class BlockedThread
{
    /// <summary>Returns once <paramref name="thread"/> waits (<see cref="ThreadState.WaitSleepJoin"/>); fails after a
    /// minute, saying it never blocked on <paramref name="what"/>.</summary>
    public static void WaitUntilBlocked(Thread thread, string what)
    {
        var waited = System.Diagnostics.Stopwatch.StartNew();
        while ((thread.ThreadState & ThreadState.WaitSleepJoin) == 0)
        {
            Assert.True(waited.Elapsed < TimeSpan.FromMinutes(1), $"thread {thread.ManagedThreadId} never blocked on {what} ({thread.ThreadState})");
            Thread.Sleep(1);
        }
    }
}
