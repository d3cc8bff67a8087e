using System.Diagnostics;
using System.Runtime.InteropServices;

namespace MegaNet.Node.Cli;

/// <summary>
/// Ctrl+C (SIGINT) and SIGTERM for every command but <c>node</c> (whose host handles them): the first cancels the
/// command's token and gives it a grace period to finish; past it, or at a second signal, the command is left and the
/// process exits. The exit
/// code is what a shell reports for a process the signal ended, 130 or 143. System.CommandLine's own handler turns both
/// signals into one cancellation and does not say which, so this replaces it.
/// </summary>
internal sealed class Interruption : IDisposable
{
    private const int SIGINT = 2;
    private const int SIGTERM = 15;

    private static int s_lastSignal; // 0 until a signal arrives; set before the token is cancelled

    private readonly CancellationTokenSource _cancel = new();
    private readonly TaskCompletionSource _graceOver = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TimeSpan _grace;
    private readonly PosixSignalRegistration _interrupt;
    private readonly PosixSignalRegistration _terminate;
    private Timer? _graceTimer;
    private bool _secondSignal;
    private long _firstSignalAt;

    /// <summary>A signal sooner than this after the first is taken as the same one delivered twice.</summary>
    internal static readonly TimeSpan SecondSignalAfter = TimeSpan.FromMilliseconds(500);

    private Interruption(TimeSpan grace)
    {
        _grace = grace;
        _interrupt = PosixSignalRegistration.Create(PosixSignal.SIGINT, context => OnSignal(context, SIGINT));
        _terminate = PosixSignalRegistration.Create(PosixSignal.SIGTERM, context => OnSignal(context, SIGTERM));
    }

    /// <summary>128 + the number of the signal that interrupted the command (SIGINT when none did).</summary>
    public static int ExitCode => ExitCodeFor(terminated: Volatile.Read(ref s_lastSignal) is SIGTERM);

    /// <summary>What a shell reports for a process SIGTERM (143) or SIGINT (130) ended.</summary>
    internal static int ExitCodeFor(bool terminated) => 128 + (terminated ? SIGTERM : SIGINT);

    /// <summary>Cancelled by the first SIGINT or SIGTERM.</summary>
    public CancellationToken Token => _cancel.Token;

    /// <summary>Handles SIGINT and SIGTERM until disposed, allowing a command <paramref name="grace"/> to finish after one.</summary>
    public static Interruption Watch(TimeSpan grace)
    {
        Volatile.Write(ref s_lastSignal, 0);
        return new(grace);
    }

    /// <summary><paramref name="command"/>'s exit code, or <see cref="ExitCode"/> once the grace period after a signal is over.</summary>
    public async Task<int> WaitAsync(Task<int> command)
    {
        if (await Task.WhenAny(command, _graceOver.Task) == command)
        {
            return await command;
        }

        Console.Error.WriteLine(Volatile.Read(ref _secondSignal)
            ? "meganet: interrupted again; the command was ended before it had stopped."
            : $"meganet: interrupted; the command had not stopped {_grace.TotalSeconds:0} s after the signal, so it was ended.");
        return ExitCode;
    }

    public void Dispose()
    {
        _interrupt.Dispose();
        _terminate.Dispose();
        _graceTimer?.Dispose();
        _cancel.Dispose();
    }

    private void OnSignal(PosixSignalContext context, int signal)
    {
        // The process is not ended by the signal: the command ends, or the grace period ends it.
        context.Cancel = true;
        if (Interlocked.CompareExchange(ref s_lastSignal, signal, 0) != 0)
        {
            // A second signal: the person means it; no more grace (the exit code stays the first signal's). Not one
            // that follows at once: `timeout` signals the command and then its whole process group, so one timeout
            // delivers two.
            if (Stopwatch.GetElapsedTime(Volatile.Read(ref _firstSignalAt)) >= SecondSignalAfter)
            {
                Volatile.Write(ref _secondSignal, true);
                _graceOver.TrySetResult();
            }

            return;
        }

        Volatile.Write(ref _firstSignalAt, Stopwatch.GetTimestamp());

        try
        {
            _graceTimer = new Timer(_ => _graceOver.TrySetResult(), null, _grace, Timeout.InfiniteTimeSpan);
            _cancel.Cancel();
        }
        catch (ObjectDisposedException)
        {
            // The command finished and Dispose ran while this handler was on its way.
        }
    }
}
