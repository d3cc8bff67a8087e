using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using MegaNet.Node.Hosting;

namespace MegaNet.Node.Admission;

/// <summary>
/// Client addresses that sent an envelope whose signature did not verify within the last <see cref="Hold"/>, each with
/// a budget of <see cref="BadPerSecond"/> bad signatures a second. Admission verifies their submissions in a batch of
/// their own, so the bisection that finds bad signatures costs only them, and refuses them unverified while their
/// budget is spent. One bad signature in a batch makes the whole batch pay for bisection (about one more check of every
/// item in it): before this, a client sending 100 forged envelopes a second cut eight honest streaming clients from
/// 52,000 to 28,000 accepted/s. Used by the batcher thread alone.
/// </summary>
internal sealed class ForgerySuspects(int capacity = ForgerySuspects.DefaultCapacity)
{
    /// <summary>Addresses remembered at most; a full table first drops expired entries, then everything (an attacker
    /// with that many addresses gets one more bad signature into a batch from each, no more).</summary>
    public const int DefaultCapacity = 65_536;

    /// <summary>Bad signatures a second one address may send (and the burst) before its submissions are refused
    /// unverified until the budget refills. A client with one bad envelope is never refused; honest clients behind the
    /// address of one that forges on are, meanwhile.</summary>
    public const int BadPerSecond = 100;

    /// <summary>How long an address stays suspect after its last bad signature.</summary>
    public static readonly TimeSpan Hold = TimeSpan.FromSeconds(60);

    private static readonly long HoldTicks = (long)(Hold.TotalSeconds * Stopwatch.Frequency);

    private readonly Dictionary<ClientAddress, Entry> _entries = [];

    /// <summary>Addresses remembered now (some may have expired).</summary>
    public int Count => _entries.Count;

    /// <summary>Whether a submission from <paramref name="address"/> at <paramref name="now"/> (a <see cref="Stopwatch"/>
    /// timestamp) joins the main batch (<see cref="Lane.Clean"/>), the suspects' batch, or is refused; with a refusal,
    /// <paramref name="retryAfterMs"/> says when the budget has room again.</summary>
    public Lane Classify(ClientAddress? address, long now, out int retryAfterMs)
    {
        retryAfterMs = 0;
        if (address is not { } a)
        {
            return Lane.Clean;
        }

        ref Entry e = ref CollectionsMarshal.GetValueRefOrNullRef(_entries, a);
        if (Unsafe.IsNullRef(ref e) || e.Until <= now)
        {
            return Lane.Clean;
        }

        Refill(ref e, now);
        if (e.Budget >= 1)
        {
            return Lane.Suspect;
        }

        retryAfterMs = (int)Math.Ceiling((1 - e.Budget) * 1000 / BadPerSecond);
        return Lane.Refused;
    }

    /// <summary>Records a bad signature from <paramref name="address"/> at <paramref name="now"/>: the address is suspect
    /// for <see cref="Hold"/> from now, and its budget is one less (it may go below zero: a batch can hold many).</summary>
    public void Add(ClientAddress? address, long now)
    {
        if (address is not { } a)
        {
            return;
        }

        if (_entries.Count >= capacity && !_entries.ContainsKey(a))
        {
            foreach (KeyValuePair<ClientAddress, Entry> entry in _entries)
            {
                if (entry.Value.Until <= now)
                {
                    _entries.Remove(entry.Key);
                }
            }

            if (_entries.Count >= capacity)
            {
                _entries.Clear();
            }
        }

        ref Entry e = ref CollectionsMarshal.GetValueRefOrAddDefault(_entries, a, out bool existed);
        if (!existed || e.Until <= now)
        {
            e.Budget = BadPerSecond;
            e.Refilled = now;
        }

        Refill(ref e, now);
        e.Budget--;
        e.Until = now + HoldTicks;
    }

    private static void Refill(ref Entry e, long now)
    {
        double seconds = (double)(now - e.Refilled) / Stopwatch.Frequency;
        e.Budget = Math.Min(BadPerSecond, e.Budget + (seconds * BadPerSecond));
        e.Refilled = now;
    }

    /// <summary>Where a submission is verified.</summary>
    public enum Lane
    {
        /// <summary>In the main batch.</summary>
        Clean,

        /// <summary>In the suspects' batch.</summary>
        Suspect,

        /// <summary>Not at all: its address has spent its budget of bad signatures.</summary>
        Refused,
    }

    private struct Entry
    {
        public long Until;
        public double Budget;
        public long Refilled;
    }
}
