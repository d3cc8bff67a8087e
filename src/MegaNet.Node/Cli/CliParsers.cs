using System.CommandLine.Parsing;
using System.Globalization;

namespace MegaNet.Node.Cli;

/// <summary>Option parsers shared by the commands; they report errors through System.CommandLine, never by throwing.</summary>
internal static class CliParsers
{
    /// <summary>The longest <see cref="Duration"/> accepted.</summary>
    public static readonly TimeSpan MaxDuration = TimeSpan.FromDays(30);

    /// <summary>An http(s) URL such as http://127.0.0.1:7700.</summary>
    public static Uri? NodeUri(ArgumentResult result)
    {
        string text = result.Tokens.Single().Value;
        if (Uri.TryCreate(text, UriKind.Absolute, out Uri? uri) && uri.Scheme is "http" or "https")
        {
            if (uri.AbsolutePath != "/" || uri.Query.Length > 0 || uri.Fragment.Length > 0)
            {
                // gRPC calls go to /meganet.v1.Relay/..., whatever path the URL has: a path would be dropped unseen.
                result.AddError($"'{text}': a node URL is a scheme, host and port only, such as http://127.0.0.1:7700 (gRPC has no path to add).");
                return null;
            }

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

    /// <summary>A number such as 7, 2.5 or 1e3, with a decimal point. System.CommandLine's own parse takes ',' as a
    /// thousands separator, so "2,5" (a decimal comma) was read as 25.</summary>
    public static double Number(ArgumentResult result)
    {
        string text = result.Tokens.Single().Value;
        if (double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double value))
        {
            return value;
        }

        string option = result.Parent is OptionResult o ? o.Option.Name : "the value";
        result.AddError($"{option}: '{text}' is not a number, such as 7 or 0.5{(text.Contains(',', StringComparison.Ordinal) ? " (no commas: 1000, or 2.5 for two and a half)" : "")}.");
        return 0;
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

    /// <summary>A duration such as 30s, 2m, 1h, 1d or 00:01:30.</summary>
    public static CliDuration Duration(ArgumentResult result)
    {
        string text = result.Tokens.Single().Value.Trim();
        if (double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double bare))
        {
            // TimeSpan.Parse reads a bare number as days: "--duration 10" meant 10 s and traced for 10 days. A unit
            // would not make 0 or -5 acceptable, so advising "0s" only led to the next refusal.
            string name = (result.Parent as OptionResult)?.Option.Name ?? "The duration";
            result.AddError(bare > 0
                ? $"{name} '{text}' has no unit: write {text}s, {text}m, {text}h or {text}d."
                : $"{name} must be more than 0, with a unit, such as 30s, 2m or 1h (got '{text}').");
            return default;
        }

        TimeSpan? parsed =
            Unit(text, 's') is { } s ? TimeSpan.FromSeconds(Math.Clamp(s, -1, 1e9)) :
            Unit(text, 'm') is { } m ? TimeSpan.FromMinutes(Math.Clamp(m, -1, 1e7)) :
            Unit(text, 'h') is { } h ? TimeSpan.FromHours(Math.Clamp(h, -1, 1e6)) :
            Unit(text, 'd') is { } d ? TimeSpan.FromDays(Math.Clamp(d, -1, 1e5)) :
            TimeSpan.TryParse(text, CultureInfo.InvariantCulture, out TimeSpan t) ? t : null;
        if (parsed > TimeSpan.Zero && parsed <= MaxDuration)
        {
            return new(parsed.Value);
        }

        if (parsed is not null)
        {
            // A duration, but not one that can be waited (timers take at most about 49 days): say so, not that it is
            // no duration at all.
            string name = (result.Parent as OptionResult)?.Option.Name ?? "The duration";
            result.AddError($"{name} must be more than 0 and at most {MaxDuration.TotalDays:0} days, such as 30s, 2m or 00:01:30 (got '{text}').");
            return default;
        }

        result.AddError($"'{text}' is not a duration such as 30s, 2m, 1h, 1d or 00:01:30.");
        return default;
    }

    /// <summary>The number before <paramref name="unit"/> at the end of <paramref name="text"/>, if that is the form.</summary>
    private static double? Unit(string text, char unit) =>
        text.Length > 1 && text[^1] == unit && double.TryParse(text[..^1], NumberStyles.Float, CultureInfo.InvariantCulture, out double value) && double.IsFinite(value) ? value : null;
}

/// <summary>
/// The value of a duration option (<see cref="CliParsers.Duration"/>): a <see cref="TimeSpan"/> that <c>--help</c>'s
/// "[default: ...]" shows in the form the option is given, <c>30s</c> or <c>5m</c>, not as <c>00:00:30</c>
/// (System.CommandLine prints a default with its ToString, and its help builder is not public to customize).
/// </summary>
internal readonly record struct CliDuration(TimeSpan Value)
{
    public static implicit operator TimeSpan(CliDuration duration) => duration.Value;

    /// <summary>The duration as a <see cref="TimeSpan"/>.</summary>
    public TimeSpan ToTimeSpan() => Value;

    /// <summary>In the largest unit that holds it whole (1d, 2h, 5m, 30s; 1.5s), which <see cref="CliParsers.Duration"/>
    /// reads back.</summary>
    public override string ToString() =>
        Value.Ticks % TimeSpan.TicksPerDay == 0 ? Whole(Value.TotalDays, 'd')
        : Value.Ticks % TimeSpan.TicksPerHour == 0 ? Whole(Value.TotalHours, 'h')
        : Value.Ticks % TimeSpan.TicksPerMinute == 0 ? Whole(Value.TotalMinutes, 'm')
        : Whole(Value.TotalSeconds, 's');

    private static string Whole(double count, char unit) => count.ToString("0.#######", CultureInfo.InvariantCulture) + unit;
}
