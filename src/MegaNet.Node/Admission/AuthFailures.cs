using System.Diagnostics;
using System.Runtime.CompilerServices;
using MegaNet.Node.Hosting;

namespace MegaNet.Node.Admission;

/// <summary>
/// Client sites (an IPv4 address, or an IPv6 /48) whose mailbox authentication failed its signature check within the
/// last <see cref="Hold"/>, each with a budget of failed checks (<see cref="Burst"/>, then <see cref="FailuresPerSecond"/>
/// a second). A wrong signature costs the node a full Ed25519 check (~117 µs) and the caller nothing, so without this
/// one client ran 9,449 of them a second, over a core. A site takes one from its budget before each check and gets it
/// back when the signature is valid, so concurrent forgeries cannot overshoot it; a site whose budget is whole again
/// after a valid check is forgotten, so sites with no failure are in the table only while their checks run. Not thread-safe: <see cref="MailboxAuthenticator"/> uses it under its lock.
/// </summary>
internal sealed class AuthFailures(int capacity = AuthFailures.DefaultCapacity)
{
    /// <summary>Sites remembered at most (about 5 MB): a full table drops expired entries, then the one that expires
    /// soonest.</summary>
    public const int DefaultCapacity = 65_536;

    /// <summary>Failed signature checks a second a site may go on with once its burst is spent: about a thousandth of
    /// a core each. An honest client never fails one (it signs the challenge with the key it sends), so only a bug or
    /// a forger reaches this, or many valid signatures refused by a cap on used challenges (which count here, since a
    /// refused valid one cost a check too); the other clients behind the same address are refused meanwhile.</summary>
    public const int FailuresPerSecond = 10;

    /// <summary>Failed checks a site may make at once (and its budget on its first failure).</summary>
    public const int Burst = 50;

    /// <summary>How long a site stays in the table after its last failed check.</summary>
    public static readonly TimeSpan Hold = TimeSpan.FromSeconds(60);

    private static readonly long HoldTicks = (long)(Hold.TotalSeconds * Stopwatch.Frequency);

    private readonly SiteTable<SiteBudget> _entries = SiteBudget.Table(capacity);

    /// <summary>Sites remembered now.</summary>
    public int Count => _entries.Count;

    /// <summary>Forgets the sites whose hold ended by <paramref name="now"/> (a <see cref="Stopwatch"/> timestamp),
    /// without a check to trigger it.</summary>
    public void Sweep(long now) => _entries.Sweep(now);

    /// <summary>Before a signature check for <paramref name="site"/> at <paramref name="now"/> (a
    /// <see cref="Stopwatch"/>-frequency timestamp): false when its budget is spent (<paramref name="retryAfterMs"/>
    /// then says when one more check is allowed); true otherwise, with <paramref name="reserved"/> when one was taken
    /// from its budget, to pass to <see cref="Checked"/>.</summary>
    public bool TryBegin(ClientAddress site, long now, out bool reserved, out int retryAfterMs)
    {
        reserved = false;
        retryAfterMs = 0;
        _entries.Sweep(now);
        ref SiteBudget e = ref SiteBudget.FindHeld(_entries, site, now);
        if (Unsafe.IsNullRef(ref e))
        {
            // A site with no failure held gets an entry with a full budget, and reserves from it as a known site does:
            // with nothing to reserve from, any number of forgeries sent at once from a new site were all checked, past
            // the burst (found in review, 2026-12-04). A valid signature removes the entry again (Checked).
            e = ref _entries.GetOrAdd(site, now, out _);
            e = new SiteBudget { Until = now + HoldTicks, Budget = new TokenCount(Burst, now) };
        }

        if (!e.Budget.Available(now, FailuresPerSecond, Burst, out retryAfterMs))
        {
            return false;
        }

        e.Budget.Tokens--;
        reserved = true;
        return true;
    }

    /// <summary>Records the outcome of the check <see cref="TryBegin"/> allowed: a valid signature gives back what it
    /// reserved; a failed one keeps it (or, for a site not in the table, adds the site with one taken) and holds the
    /// site for <see cref="Hold"/> from now.</summary>
    public void Checked(ClientAddress site, bool valid, bool reserved, long now)
    {
        if (valid)
        {
            if (reserved)
            {
                SiteBudget.GiveBack(_entries, site, Burst);
            }

            // A whole budget limits no one, and a new failure starts from a whole one: the site need not be kept (a site
            // that only ever signs validly is remembered only while its checks run).
            ref SiteBudget e = ref _entries.Find(site);
            if (!Unsafe.IsNullRef(ref e) && e.Budget.At(now, FailuresPerSecond, Burst) >= Burst)
            {
                _entries.Remove(site);
            }
        }
        else
        {
            SiteBudget.Charge(_entries, site, now, HoldTicks, FailuresPerSecond, Burst, takenBefore: reserved);
        }
    }
}
