using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace MegaNet.Node.Tests;

/// <summary>Records every line a node logs at <paramref name="minimum"/> or above (Information unless given), as "Level
/// category: message [exception type: message]", so a test can look for the line an operator would read; into
/// <paramref name="lines"/> when given. With <paramref name="stackTraces"/> the exception is written whole (TestNode's
/// errors, read when a test fails).</summary>
internal sealed class LogCapture(LogLevel minimum = LogLevel.Information, ConcurrentQueue<string>? lines = null, bool stackTraces = false) : ILoggerProvider
{
    private readonly ConcurrentQueue<string> _lines = lines ?? new();

    public IReadOnlyList<string> Lines => [.. _lines];

    public ILogger CreateLogger(string categoryName) => new Recorder(categoryName, this);

    public void Dispose()
    {
    }

    private sealed class Recorder(string category, LogCapture capture) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel >= capture._minimum;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (IsEnabled(logLevel))
            {
                capture._lines.Enqueue($"{logLevel} {category}: {formatter(state, exception)}" + exception switch
                {
                    null => "",
                    _ when capture._stackTraces => $" {exception}",
                    _ => $" [{exception.GetType().Name}: {exception.Message}]",
                });
            }
        }
    }

    private readonly LogLevel _minimum = minimum;
    private readonly bool _stackTraces = stackTraces;
}
