using System.Diagnostics;

namespace MegaNet.Node.Admission;

/// <summary>The tokens of a token bucket and when they were last counted, refilled at a rate up to a burst; the
/// rate and burst belong to the caller. Not thread-safe: a shared one is used under a lock.</summary>
internal struct TokenCount(double tokens, long stamp)
{
    /// <summary>Tokens as of <see cref="Stamp"/>.</summary>
    public double Tokens = tokens;

    /// <summary>The <see cref="Stopwatch"/> timestamp <see cref="Tokens"/> was counted at.</summary>
    public long Stamp = stamp;

    /// <summary>Adds what <paramref name="perSecond"/> earned since <see cref="Stamp"/>, up to <paramref name="burst"/>.
    /// A reading older than the stamp (a thread that read the clock before another counted) adds nothing and leaves
    /// the stamp where it is.</summary>
    public void Refill(long now, double perSecond, double burst)
    {
        Tokens = At(now, perSecond, burst);
        Stamp = Math.Max(Stamp, now);
    }

    /// <summary>The tokens there would be at <paramref name="now"/>; counts nothing.</summary>
    public readonly double At(long now, double perSecond, double burst) =>
        now > Stamp ? Math.Min(burst, Tokens + ((double)(now - Stamp) / Stopwatch.Frequency * perSecond)) : Tokens;

    /// <summary>Refills, then whether a token is there (it is not taken); when not, <paramref name="retryAfterMs"/> says
    /// when one will be (1 ms to a minute).</summary>
    public bool Available(long now, double perSecond, double burst, out int retryAfterMs)
    {
        Refill(now, perSecond, burst);
        retryAfterMs = Tokens >= 1 ? 0 : (int)Math.Clamp(Math.Ceiling((1 - Tokens) * 1000 / perSecond), 1, 60_000);
        return Tokens >= 1;
    }

    /// <summary>Gives one token back, up to <paramref name="burst"/>.</summary>
    public void Return(double burst) => Tokens = Math.Min(burst, Tokens + 1);
}
