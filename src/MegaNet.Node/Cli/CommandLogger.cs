using Microsoft.Extensions.Logging;

namespace MegaNet.Node.Cli;

/// <summary>A command's log (the verifier start-up's, which the node writes to its own log) as lines on standard error,
/// each after the command's name: <c>meganet verify: The GPU verifier was not used: …</c>.</summary>
internal sealed class CommandLogger(string command) : ILogger
{
    public IDisposable? BeginScope<TState>(TState state)
        where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Information;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        ArgumentNullException.ThrowIfNull(formatter);
        if (IsEnabled(logLevel))
        {
            Console.Error.WriteLine($"meganet {command}: {formatter(state, exception)}.");
        }
    }
}
