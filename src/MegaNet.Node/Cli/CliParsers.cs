using System.CommandLine.Parsing;
using System.Globalization;

namespace MegaNet.Node.Cli;

/// <summary>Option parsers shared by the commands; they report errors through System.CommandLine, never by throwing.</summary>
internal static class CliParsers
{
    /// <summary>An http(s) URL such as http://127.0.0.1:7700.</summary>
    public static Uri? NodeUri(ArgumentResult result)
    {
        string text = result.Tokens.Single().Value;
        if (Uri.TryCreate(text, UriKind.Absolute, out Uri? uri) && uri.Scheme is "http" or "https")
        {
            return uri;
        }

        result.AddError($"'{text}' is not a node URL such as http://127.0.0.1:7700.");
        return null;
    }

    /// <summary>A whole number, for an optional option (System.CommandLine's own error names the type as
    /// "System.Nullable`1[System.Int32]").</summary>
    public static int? OptionalInt32(ArgumentResult result)
    {
        string text = result.Tokens.Single().Value;
        if (int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out int value))
        {
            return value;
        }

        string option = result.Parent is OptionResult o ? o.Option.Name : "the value";
        result.AddError($"{option}: '{text}' is not a whole number.");
        return null;
    }

    /// <summary>A sequence number (0 or more; System.CommandLine's own error names the type as "System.UInt64").</summary>
    public static ulong SequenceNumber(ArgumentResult result)
    {
        string text = result.Tokens.Single().Value;
        if (ulong.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out ulong value))
        {
            return value;
        }

        string option = result.Parent is OptionResult o ? o.Option.Name : "the value";
        result.AddError($"{option}: '{text}' is not a sequence number (a whole number, 0 or more).");
        return 0;
    }

    /// <summary>A duration such as 30s, 2m or 00:01:30.</summary>
    public static TimeSpan Duration(ArgumentResult result)
    {
        string text = result.Tokens.Single().Value.Trim();
        if (text.EndsWith('s') && double.TryParse(text[..^1], NumberStyles.Float, CultureInfo.InvariantCulture, out double s) && s > 0)
        {
            return TimeSpan.FromSeconds(s);
        }

        if (text.EndsWith('m') && double.TryParse(text[..^1], NumberStyles.Float, CultureInfo.InvariantCulture, out double m) && m > 0)
        {
            return TimeSpan.FromMinutes(m);
        }

        if (TimeSpan.TryParse(text, CultureInfo.InvariantCulture, out TimeSpan t) && t > TimeSpan.Zero)
        {
            return t;
        }

        result.AddError($"'{text}' is not a duration such as 30s, 2m or 00:01:30.");
        return TimeSpan.Zero;
    }
}
