namespace MegaNet.Verify.Tests;

public class OncePerKeyTests
{
    [Fact]
    public void Callers_racing_on_one_key_share_one_value_made_once()
    {
        var cache = new OncePerKey<string, object>(StringComparer.OrdinalIgnoreCase);
        int made = 0;
        using var inFactory = new ManualResetEventSlim();
        using var release = new ManualResetEventSlim();
        object Create(string key)
        {
            Interlocked.Increment(ref made);
            inFactory.Set();
            // Held here until the second caller has blocked, in the factory (two values) or waiting for this one.
            Assert.True(release.Wait(TimeSpan.FromMinutes(1)), "the test never released the factory");
            return new object();
        }

        object? first = null, second = null;
        var one = new Thread(() => first = cache.Get("gpu-cpu", Create));
        one.Start();
        Assert.True(inFactory.Wait(TimeSpan.FromMinutes(1)), "the first caller never reached the factory");
        var two = new Thread(() => second = cache.Get("GPU-CPU", Create));
        two.Start();
        BlockedThread.WaitUntilBlocked(two, "the first caller's value");
        release.Set();
        one.Join();
        two.Join();

        Assert.Equal(1, made);
        Assert.Same(first, second);
    }
}
