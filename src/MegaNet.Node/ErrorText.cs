namespace MegaNet.Node;

/// <summary>Exception messages as a person (at the CLI or behind a gRPC client) should read them.</summary>
internal static class ErrorText
{
    /// <summary><paramref name="e"/>'s message without what .NET appends to an <see cref="ArgumentException"/>'s: the
    /// " (Parameter 'name')" (a name in our code, not something the person typed) and, for an out-of-range argument,
    /// the "Actual value was" line.</summary>
    public static string Plain(Exception e)
    {
        ArgumentNullException.ThrowIfNull(e);
        if (e is not ArgumentException { ParamName: { } name })
        {
            return e.Message;
        }

        string message = e.Message.Split('\n')[0].TrimEnd('\r');
        string suffix = $" (Parameter '{name}')";
        return message.EndsWith(suffix, StringComparison.Ordinal) ? message[..^suffix.Length] : message;
    }
}
