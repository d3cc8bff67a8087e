using System.Diagnostics;
using System.Runtime.CompilerServices;
using MegaNet.Node.Hosting;

namespace MegaNet.Node.Admission;

/// <summary>
/// Client addresses that sent an envelope whose signature did not verify within the last <see cref="Hold"/>, each with
/// a budget of bad signatures (<see cref="BadPerSecond"/> a second, up to <see cref="Burst"/>). Admission verifies their
/// submissions in a batch of their own, so the bisection that finds bad signatures costs only them, and refuses them
/// unverified while their budget is spent. One bad signature in a batch makes the whole batch pay for bisection (about
/// one more check of every item in it): before this, a client sending 100 forged envelopes a second cut eight honest
/// streaming clients from 52,000 to 28,000 accepted/s. Used by the batcher thread alone.
/// </summary>
internal sealed class ForgerySuspects(int capacity = ForgerySuspects.DefaultCapacity)
{
    /// <summary>Addresses remembered at most. A full table drops expired entries, then the one that expires soonest.</summary>
    public const int DefaultCapacity = 65_536;

    /// <summary>Bad signatures a second one address may send before its submissions are refused unverified until the
    /// budget refills. A client with one bad envelope is never refused; honest clients behind the address of one that
    /// forges on are, meanwhile.</summary>
    public const int BadPerSecond = 100;

    /// <summary>The most a suspect address may have in one batch of its own, and the budget it starts with: each of its
    /// submissions takes one until its verdict, and a valid one gives it back, so an honest client streaming after one
    /// bad envelope keeps its pace, and a forger's burst costs at most this many bad signatures, then 100 a second.</summary>
    public const int Burst = 1_000;

    /// <summary>Submissions a second the suspects' lane takes from all addresses together (and its burst): verifying
    /// batches dense with bad signatures costs ~180 µs an item here, so this bounds the lane to about a fifth of a core
    /// however many addresses forge. Beyond it suspect submissions are refused unverified.</summary>
    public const int LanePerSecond = 1_000;

    /// <summary>How long an address stays suspect after its last bad signature.</summary>
    public static readonly TimeSpan Hold = TimeSpan.FromSeconds(60);

    private static readonly long HoldTicks = (long)(Hold.TotalSeconds * Stopwatch.Frequency);

    private readonly SiteTable<SiteBudget> _entries = SiteBudget.Table(capacity);
    private TokenCount _lane = new(LanePerSecond, long.MinValue); // counting starts with the first suspect submission

    /// <summary>Addresses remembered now.</summary>
    public int Count => _entries.Count;

    /// <summary>Whether a submission from <paramref name="address"/> at <paramref name="now"/> (a <see cref="Stopwatch"/>
    /// timestamp) joins the main batch (<see cref="Lane.Clean"/>), the suspects' batch (taking one from the address's
    /// budget until <see cref="Verified"/>, and one from the lane's), or is refused: <see cref="Lane.Refused"/> when the
    /// address spent its budget, <see cref="Lane.LaneFull"/> when the lane did; <paramref name="retryAfterMs"/> then
    /// says when there is room again.</summary>
    public Lane Classify(ClientAddress? address, long now, out int retryAfterMs)
    {
        retryAfterMs = 0;
        if (address is not { } a)
        {
            return Lane.Clean;
        }

        ref SiteBudget e = ref SiteBudget.FindHeld(_entries, a, now);
        if (Unsafe.IsNullRef(ref e))
        {
            return Lane.Clean;
        }

        if (!e.Budget.Available(now, BadPerSecond, Burst, out retryAfterMs))
        {
            return Lane.Refused;
        }

        if (_lane.Stamp == long.MinValue)
        {
            _lane.Stamp = now;
        }

        if (!_lane.Available(now, LanePerSecond, LanePerSecond, out retryAfterMs))
        {
            return Lane.LaneFull;
        }

        _lane.Tokens--;
        e.Budget.Tokens--;
        return Lane.Suspect;
    }

    /// <summary>Records the verdict on a submission from <paramref name="address"/>: in the suspects' lane a valid one
    /// gives back what <see cref="Classify"/> took; a bad one anywhere makes the address suspect until
    /// <see cref="Hold"/> from now, and in the clean lane also takes one from its budget.</summary>
    public void Verified(ClientAddress? address, bool valid, bool suspectLane, long now)
    {
        if (address is not { } a || (valid && !suspectLane))
        {
            return;
        }

        if (valid)
        {
            SiteBudget.GiveBack(_entries, a, Burst);
        }
        else
        {
            // In the suspects' lane Classify took one already.
            SiteBudget.Charge(_entries, a, now, HoldTicks, BadPerSecond, Burst, takenBefore: suspectLane);
        }
    }

    /// <summary>Drops expired addresses, at most once a second, so an address is kept no longer than <see cref="Hold"/>
    /// after its last bad signature (plus up to a second).</summary>
    public void Sweep(long now) => _entries.Sweep(now);

    /// <summary>Where a submission is verified.</summary>
    public enum Lane
    {
        /// <summary>In the main batch.</summary>
        Clean,

        /// <summary>In the suspects' batch.</summary>
        Suspect,

        /// <summary>Not at all: its address has spent its budget of bad signatures.</summary>
        Refused,

        /// <summary>Not at all: the suspects' lane is full for now.</summary>
        LaneFull,
    }
}
