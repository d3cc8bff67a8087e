using System.Diagnostics;
using MegaNet.Node.Hosting;

namespace MegaNet.Node.Admission;

/// <summary>
/// Client addresses that sent an envelope whose signature did not verify within the last <see cref="Hold"/>. Admission
/// checks their submissions one at a time, apart from the batch: one bad signature in a batch makes the whole batch pay
/// for bisection (about one more check of every item in it), so a client sending 100 forged envelopes a second cut
/// eight honest streaming clients from 52,000 to 28,000 accepted/s. Used by the batcher thread alone.
/// </summary>
internal sealed class ForgerySuspects(int capacity = ForgerySuspects.DefaultCapacity)
{
    /// <summary>Addresses remembered at most; a full table first drops expired entries, then everything (an attacker
    /// with that many addresses gets one more bad signature into a batch from each, no more).</summary>
    public const int DefaultCapacity = 65_536;

    /// <summary>How long an address stays suspect after its last bad signature.</summary>
    public static readonly TimeSpan Hold = TimeSpan.FromSeconds(60);

    private static readonly long HoldTicks = (long)(Hold.TotalSeconds * Stopwatch.Frequency);

    private readonly Dictionary<ClientAddress, long> _until = [];

    /// <summary>Addresses remembered now (some may have expired).</summary>
    public int Count => _until.Count;

    /// <summary>True when <paramref name="address"/> sent a bad signature within <see cref="Hold"/> of <paramref name="now"/>
    /// (a <see cref="Stopwatch"/> timestamp).</summary>
    public bool Contains(ClientAddress? address, long now) => address is { } a && _until.TryGetValue(a, out long until) && until > now;

    /// <summary>Records a bad signature from <paramref name="address"/> at <paramref name="now"/>.</summary>
    public void Add(ClientAddress? address, long now)
    {
        if (address is not { } a)
        {
            return;
        }

        if (_until.Count >= capacity && !_until.ContainsKey(a))
        {
            foreach (KeyValuePair<ClientAddress, long> entry in _until)
            {
                if (entry.Value <= now)
                {
                    _until.Remove(entry.Key);
                }
            }

            if (_until.Count >= capacity)
            {
                _until.Clear();
            }
        }

        _until[a] = now + HoldTicks;
    }
}
