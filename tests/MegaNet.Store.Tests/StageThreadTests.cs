using MegaNet.Core.Threading;

namespace MegaNet.Store.Tests;

/// <summary>The stage threads' blocking wait (the store's committer and the admission batcher use it): what
/// <c>GetAwaiter().GetResult()</c> gave, results and exceptions alike, for tasks completed before, during and after the
/// wait, with one waiter reused for every wait as a stage thread reuses it.</summary>
public sealed class StageThreadTests
{
    [Fact]
    public void Results_and_exceptions_come_back_as_from_GetResult()
    {
        using var thread = new StageThread();
        Assert.Equal(7, thread.Wait(Task.FromResult(7)));
        Assert.True(thread.Wait(new ValueTask<bool>(true)));
        thread.Wait(Task.CompletedTask);

        // Not wrapped in an AggregateException, as GetResult: the stages' callers catch the exception itself.
        var boom = new InvalidOperationException("boom");
        Assert.Same(boom, Assert.Throws<InvalidOperationException>(() => thread.Wait(Task.FromException(boom))));
        Assert.Same(boom, Assert.Throws<InvalidOperationException>(() => thread.Wait(Task.FromException<int>(boom))));
        Assert.Throws<TaskCanceledException>(() => thread.Wait(Task.FromCanceled(new CancellationToken(canceled: true))));

        var later = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        _ = Task.Run(async () =>
        {
            await Task.Delay(50);
            later.SetException(boom);
        });
        Assert.Same(boom, Assert.Throws<InvalidOperationException>(() => thread.Wait(later.Task)));
    }

    [Fact]
    public void One_waiter_serves_many_waits_whichever_thread_completes_them_and_when()
    {
        using var thread = new StageThread();
        var random = new Random(5);
        for (int i = 0; i < 2_000; i++)
        {
            // Completed before the wait, on a pool thread during it (after 0-2 spins of the pool), or inline by the
            // completing thread (continuations not forced asynchronous).
            var source = new TaskCompletionSource<int>(i % 3 == 0 ? TaskCreationOptions.None : TaskCreationOptions.RunContinuationsAsynchronously);
            int kind = random.Next(3), expected = i;
            if (kind == 0)
            {
                source.SetResult(expected);
            }
            else
            {
                int spins = random.Next(200);
                ThreadPool.UnsafeQueueUserWorkItem(_ =>
                {
                    Thread.SpinWait(spins);
                    source.SetResult(expected);
                }, null);
            }

            ValueTask<int> value = kind == 2 ? new ValueTask<int>(source.Task) : default;
            int got = kind == 2 ? thread.Wait(value) : thread.Wait(source.Task);
            Assert.Equal(expected, got);
        }
    }

    [Fact]
    public void Housekeeping_runs_while_the_wait_is_idle_and_may_not_wait_with_the_same_waiter()
    {
        using var thread = new StageThread();
        var source = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        int calls = 0;
        Assert.Equal(7, thread.Wait(new ValueTask<int>(source.Task), TimeSpan.FromMilliseconds(1), () =>
        {
            if (++calls == 3)
            {
                source.SetResult(7);
            }
        }));
        Assert.True(calls >= 3);

        // Its wait would reset the event that wakes the outer one, whose wake could then be lost for good.
        // On a waiter of its own: the exception leaves the wake of its wait pending, which would end a later wait early.
        using var misused = new StageThread();
        var once = new TaskCompletionSource<bool>();
        Assert.Throws<InvalidOperationException>(() => misused.Wait(new ValueTask<bool>(once.Task), TimeSpan.FromMilliseconds(1), () =>
        {
            try
            {
                misused.Wait(Task.CompletedTask);
            }
            finally
            {
                once.TrySetResult(true);
            }
        }));
        // Also through the ValueTask overloads' shortcut for a value already there: a misuse that shows only when the
        // value is late would pass its tests by timing.
        foreach (Action<StageThread> wait in new Action<StageThread>[] { w => w.Wait(new ValueTask<int>(5)), w => w.Wait(new ValueTask<int>(5), TimeSpan.FromMilliseconds(1), () => { }) })
        {
            using var shortcut = new StageThread();
            var pending = new TaskCompletionSource<bool>();
            Assert.Throws<InvalidOperationException>(() => shortcut.Wait(new ValueTask<bool>(pending.Task), TimeSpan.FromMilliseconds(1), () =>
            {
                try
                {
                    wait(shortcut);
                }
                finally
                {
                    pending.TrySetResult(true);
                }
            }));
        }

        // What it waits for, it waits for with another waiter.
        using var other = new StageThread();
        var later = new TaskCompletionSource<bool>();
        Assert.True(thread.Wait(new ValueTask<bool>(later.Task), TimeSpan.FromMilliseconds(1), () => other.Wait(Task.Run(() => later.TrySetResult(true)))));
    }
}
