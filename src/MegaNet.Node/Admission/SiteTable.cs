using System.Diagnostics;
using System.Runtime.InteropServices;
using MegaNet.Node.Hosting;

namespace MegaNet.Node.Admission;

/// <summary>
/// What the node remembers per client site (an IPv4 address, or an IPv6 /48) for its budgets against one client's abuse
/// (forged envelopes, failed mailbox logins, invalid delegated verdicts), in a table of bounded size: entries that no
/// longer matter are swept at most once a second, and a full table makes room by dropping the entries ranked first for
/// eviction, a sixteenth of it at once. Not thread-safe: its owner uses it under its own lock, or from one thread.
/// </summary>
/// <param name="capacity">Sites remembered at most.</param>
/// <param name="forgettable">Whether an entry no longer matters at a <see cref="Stopwatch"/> timestamp.</param>
/// <param name="evictionRank">With the table full of entries that matter, the one with the lowest rank is dropped.</param>
internal sealed class SiteTable<TEntry>(int capacity, Func<TEntry, long, bool> forgettable, Func<TEntry, long, double> evictionRank)
    where TEntry : struct
{
    private readonly Dictionary<ClientAddress, TEntry> _entries = [];
    private long _nextSweep = long.MinValue;

    /// <summary>Sites remembered now.</summary>
    public int Count => _entries.Count;

    /// <summary>The site's entry, or a null reference (<see cref="System.Runtime.CompilerServices.Unsafe.IsNullRef{T}(ref readonly T)"/>).</summary>
    public ref TEntry Find(ClientAddress site) => ref CollectionsMarshal.GetValueRefOrNullRef(_entries, site);

    /// <summary>The site's entry, added (zeroed, <paramref name="existed"/> false) when it has none, after making room.</summary>
    public ref TEntry GetOrAdd(ClientAddress site, long now, out bool existed)
    {
        if (_entries.Count >= capacity && !_entries.ContainsKey(site))
        {
            MakeRoom(now);
        }

        return ref CollectionsMarshal.GetValueRefOrAddDefault(_entries, site, out existed);
    }

    /// <summary>Forgets the site.</summary>
    public void Remove(ClientAddress site) => _entries.Remove(site);

    /// <summary>Drops the entries that no longer matter, at most once a second (and at once after the clock stepped
    /// back, which would otherwise postpone every sweep until it passed the old schedule again).</summary>
    public void Sweep(long now)
    {
        if (now < _nextSweep && now >= _nextSweep - Stopwatch.Frequency)
        {
            return;
        }

        _nextSweep = now + Stopwatch.Frequency;
        foreach (KeyValuePair<ClientAddress, TEntry> entry in _entries)
        {
            if (forgettable(entry.Value, now))
            {
                _entries.Remove(entry.Key);
            }
        }
    }

    private void MakeRoom(long now)
    {
        _nextSweep = long.MinValue;
        Sweep(now);
        if (_entries.Count < capacity)
        {
            return;
        }

        // Every entry matters: one with many sites churns the table, but the ranking decides what it may free. The
        // lowest-ranked sixteenth goes at once, so a stream of new sites pays for the scans once per that many of them:
        // one dropped at a time, each new site (each forgery from one, on the batcher's thread) cost two scans of the
        // whole table, about a millisecond at its 65,536 entries.
        int drop = Math.Max(1, capacity / EvictionShare);
        var lowest = new PriorityQueue<ClientAddress, double>(drop + 1, HighestFirst);
        foreach (KeyValuePair<ClientAddress, TEntry> entry in _entries)
        {
            double rank = evictionRank(entry.Value, now);
            if (lowest.Count < drop)
            {
                lowest.Enqueue(entry.Key, rank);
            }
            else if (lowest.TryPeek(out _, out double highest) && rank < highest)
            {
                lowest.EnqueueDequeue(entry.Key, rank);
            }
        }

        while (lowest.TryDequeue(out ClientAddress site, out _))
        {
            _entries.Remove(site);
        }
    }

    /// <summary>A full table drops this share of its entries at once (one in sixteen).</summary>
    internal const int EvictionShare = 16;

    private static readonly Comparer<double> HighestFirst = Comparer<double>.Create(static (a, b) => b.CompareTo(a));
}

/// <summary>A site's budget of something it should rarely do, and until when it is remembered (a
/// <see cref="Stopwatch"/> timestamp).</summary>
internal struct SiteBudget
{
    /// <summary>Until when the site is remembered.</summary>
    public long Until;

    /// <summary>Its budget.</summary>
    public TokenCount Budget;

    /// <summary>A table of these, forgetting a site once <see cref="Until"/> has passed and, when full, the one that
    /// would be forgotten soonest (so one with many sites never frees the sites it holds to their budget).</summary>
    public static SiteTable<SiteBudget> Table(int capacity) => new(capacity, static (e, now) => e.Until <= now, static (e, _) => e.Until);

    /// <summary>The site's entry while it is held (remembered and its hold not over at <paramref name="now"/>), else
    /// a null reference.</summary>
    public static ref SiteBudget FindHeld(SiteTable<SiteBudget> table, ClientAddress site, long now)
    {
        ref SiteBudget e = ref table.Find(site);
        if (System.Runtime.CompilerServices.Unsafe.IsNullRef(ref e) || e.Until <= now)
        {
            return ref System.Runtime.CompilerServices.Unsafe.NullRef<SiteBudget>();
        }

        return ref e;
    }

    /// <summary>A good outcome for <paramref name="site"/>: gives back the one taken from its budget beforehand, if the
    /// site is still remembered.</summary>
    public static void GiveBack(SiteTable<SiteBudget> table, ClientAddress site, double burst)
    {
        ref SiteBudget held = ref table.Find(site);
        if (!System.Runtime.CompilerServices.Unsafe.IsNullRef(ref held))
        {
            held.Budget.Return(burst);
        }
    }

    /// <summary>A bad outcome for <paramref name="site"/> at <paramref name="now"/>: it is remembered for
    /// <paramref name="holdTicks"/> from now, and one is taken from its budget unless <paramref name="takenBefore"/>.
    /// A site new, or back after its hold ran out, starts with a full budget (which refilling over a hold at least as
    /// long as a burst takes to refill would give it anyway).</summary>
    public static void Charge(SiteTable<SiteBudget> table, ClientAddress site, long now, long holdTicks, double perSecond, double burst, bool takenBefore)
    {
        ref SiteBudget e = ref table.GetOrAdd(site, now, out bool existed);
        if (!existed || e.Until <= now)
        {
            e.Budget = new TokenCount(burst, now);
        }

        if (!takenBefore)
        {
            e.Budget.Refill(now, perSecond, burst);
            e.Budget.Tokens--;
        }

        e.Until = now + holdTicks;
    }
}
