using System.Diagnostics;
using MegaNet.Node.Hosting;

namespace MegaNet.Node.Admission;

/// <summary>
/// Client addresses that sent an envelope whose signature did not verify within the last <see cref="Hold"/>. Admission
/// checks their submissions one at a time, apart from the batch, and at most <see cref="ChecksPerSecond"/> a second
/// each: one bad signature in a batch makes the whole batch pay for bisection (about one more check of every item in
/// it), so a client sending 100 forged envelopes a second cut eight honest streaming clients from 52,000 to 28,000
/// accepted/s; apart, a forgery costs a single check (~85 µs here), and the budget caps what one address can spend.
/// Used by the batcher thread alone.
/// </summary>
internal sealed class ForgerySuspects(int capacity = ForgerySuspects.DefaultCapacity)
{
    /// <summary>Addresses remembered at most; a full table first drops expired entries, then everything (an attacker
    /// with that many addresses gets one more bad signature into a batch from each, no more).</summary>
    public const int DefaultCapacity = 65_536;

    /// <summary>Single checks a second one suspect address may have (and the burst); beyond them its submissions are
    /// refused unverified until the budget refills. Honest clients behind the same address share it meanwhile.</summary>
    public const int ChecksPerSecond = 100;

    /// <summary>How long an address stays suspect after its last bad signature.</summary>
    public static readonly TimeSpan Hold = TimeSpan.FromSeconds(60);

    private static readonly long HoldTicks = (long)(Hold.TotalSeconds * Stopwatch.Frequency);

    private readonly Dictionary<ClientAddress, Entry> _entries = [];

    /// <summary>Addresses remembered now (some may have expired).</summary>
    public int Count => _entries.Count;

    /// <summary>True when <paramref name="address"/> sent a bad signature within <see cref="Hold"/> of <paramref name="now"/>
    /// (a <see cref="Stopwatch"/> timestamp).</summary>
    public bool Contains(ClientAddress? address, long now) => address is { } a && _entries.TryGetValue(a, out Entry e) && e.Until > now;

    /// <summary>Takes one single check from a suspect address's budget; false when it has none left.</summary>
    public bool TryTakeCheck(ClientAddress? address, long now)
    {
        if (address is not { } a)
        {
            return true;
        }

        ref Entry e = ref System.Runtime.InteropServices.CollectionsMarshal.GetValueRefOrNullRef(_entries, a);
        if (System.Runtime.CompilerServices.Unsafe.IsNullRef(ref e))
        {
            return true;
        }

        double seconds = (double)(now - e.Refilled) / Stopwatch.Frequency;
        e.Checks = Math.Min(ChecksPerSecond, e.Checks + (seconds * ChecksPerSecond));
        e.Refilled = now;
        if (e.Checks < 1)
        {
            return false;
        }

        e.Checks--;
        return true;
    }

    /// <summary>Records a bad signature from <paramref name="address"/> at <paramref name="now"/>.</summary>
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

        ref Entry e = ref System.Runtime.InteropServices.CollectionsMarshal.GetValueRefOrAddDefault(_entries, a, out bool existed);
        if (!existed)
        {
            e.Checks = ChecksPerSecond;
            e.Refilled = now;
        }

        e.Until = now + HoldTicks;
    }

    private struct Entry
    {
        public long Until;
        public double Checks;
        public long Refilled;
    }
}
