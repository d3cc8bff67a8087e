namespace MegaNet.Core.Threading;

/// <summary>
/// Waits for the stage threads of the node's pipeline (the admission batcher, the store's committer): dedicated threads
/// that block until a task completes. <c>task.GetAwaiter().GetResult()</c> on an incomplete task spins first (Task's
/// spin-then-block wait, mostly <c>sched_yield</c>), which at 10,000 unary submissions/s was 3.4 % of the node's CPU
/// samples on two cores, taken from the work it waits for; these waits block at once.
/// </summary>
public sealed class StageThread : IDisposable
{
    private readonly ManualResetEventSlim _done = new(false, spinCount: 0);
    private readonly Action _set;

    // Set while meanwhile runs: a wait of this waiter inside it would reset the event that wakes the outer wait, which
    // then, its wake lost, would run meanwhile every interval for good.
    private bool _inMeanwhile;

    /// <summary>A waiter for one thread, reused for each of its waits (not thread-safe).</summary>
    public StageThread() => _set = _done.Set;

    /// <summary>Blocks until <paramref name="task"/> completes, then rethrows its exception, if any.</summary>
    public void Wait(Task task)
    {
        Block(task);
        task.GetAwaiter().GetResult();
    }

    /// <summary>Blocks until <paramref name="task"/> completes and returns its result (or rethrows its exception).</summary>
    public T Wait<T>(Task<T> task)
    {
        Block(task);
        return task.GetAwaiter().GetResult();
    }

    /// <summary>Blocks until <paramref name="task"/> completes and returns its result (or rethrows its exception).</summary>
    public T Wait<T>(ValueTask<T> task)
    {
        ThrowIfInMeanwhile();
        return task.IsCompletedSuccessfully ? task.Result : Wait(task.AsTask());
    }

    /// <summary><see cref="Wait{T}(ValueTask{T})"/>, running <paramref name="meanwhile"/> on this thread every
    /// <paramref name="interval"/> until the task completes (housekeeping for a stage that is idle). What
    /// <paramref name="meanwhile"/> waits for, it waits for with another <see cref="StageThread"/>; an exception from it
    /// ends the wait and leaves this waiter unfit for more (the task's wake is still to come).</summary>
    public T Wait<T>(ValueTask<T> task, TimeSpan interval, Action meanwhile)
    {
        ThrowIfInMeanwhile();
        if (task.IsCompletedSuccessfully)
        {
            return task.Result;
        }

        Task<T> waiting = task.AsTask();
        Block(waiting, interval, meanwhile);
        return waiting.GetAwaiter().GetResult();
    }

    /// <inheritdoc/>
    public void Dispose() => _done.Dispose();

    // Checked before every completed-task shortcut (those of the ValueTask overloads too), so that the mistake shows
    // whatever the timing.
    private void ThrowIfInMeanwhile()
    {
        if (_inMeanwhile)
        {
            throw new InvalidOperationException("A stage's idle housekeeping waited with the StageThread it runs under; give it a StageThread of its own.");
        }
    }

    private void Block(Task task, TimeSpan interval = default, Action? meanwhile = null)
    {
        ThrowIfInMeanwhile();

        if (task.IsCompleted)
        {
            return;
        }

        _done.Reset();
        // Called once, after the task completes (inline on the completing thread, or queued): each wait gets its own Set.
        task.ConfigureAwait(false).GetAwaiter().UnsafeOnCompleted(_set);
        if (meanwhile is null)
        {
            _done.Wait();
            return;
        }

        while (!_done.Wait(interval))
        {
            _inMeanwhile = true;
            try
            {
                meanwhile();
            }
            finally
            {
                _inMeanwhile = false;
            }
        }
    }
}
