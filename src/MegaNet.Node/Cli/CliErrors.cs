namespace MegaNet.Node.Cli;

/// <summary>Turns exception messages into the one line a person running the CLI sees.</summary>
internal static class CliErrors
{
    /// <summary><paramref name="e"/>'s message without the " (Parameter 'name')" that .NET appends: the parameter
    /// is a name in our code, not something the person typed.</summary>
    public static string WithoutParameterName(ArgumentException e)
    {
        string suffix = $" (Parameter '{e.ParamName}')";
        return e.ParamName is not null && e.Message.EndsWith(suffix, StringComparison.Ordinal) ? e.Message[..^suffix.Length] : e.Message;
    }
}
