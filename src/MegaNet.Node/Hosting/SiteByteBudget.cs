namespace MegaNet.Node.Hosting;

/// <summary>
/// Bytes some calls hold in the node, charged node-wide and per client site (an IPv4 address, or an IPv6 /48) against a
/// budget, a quarter of it per site: what request messages still arriving hold (<see cref="RequestMessageGuard"/>), and
/// what Fetch replies and Subscribe pages not yet read hold (<see cref="UnsentReplyGuard"/>). Thread-safe.
/// </summary>
/// <param name="budget">Bytes all sites together may hold.</param>
internal sealed class SiteByteBudget(long budget)
{
    private readonly Dictionary<ClientAddress, long> _bySite = [];
    private long _total;

    /// <summary>Bytes all sites together may hold.</summary>
    public long Budget { get; } = budget;

    /// <summary>Bytes one site may hold: a quarter of <see cref="Budget"/>.</summary>
    public long SiteBudget => Budget / 4;

    /// <summary>Bytes held now, node-wide.</summary>
    public long Held => Interlocked.Read(ref _total);

    /// <summary>Charges <paramref name="bytes"/> to <paramref name="site"/> when both the site's share and the node-wide
    /// budget (or the lower <paramref name="totalLimit"/>) have room; false (and nothing charged) otherwise.</summary>
    public bool TryCharge(ClientAddress site, long bytes, long totalLimit = long.MaxValue)
    {
        lock (_bySite)
        {
            ref long used = ref System.Runtime.InteropServices.CollectionsMarshal.GetValueRefOrAddDefault(_bySite, site, out _);
            if (_total + bytes > Math.Min(totalLimit, Budget) || used + bytes > SiteBudget)
            {
                if (used == 0)
                {
                    _bySite.Remove(site);
                }

                return false;
            }

            used += bytes;
            Interlocked.Add(ref _total, bytes);
            return true;
        }
    }

    /// <summary>Gives back <paramref name="bytes"/> that <see cref="TryCharge"/> charged to <paramref name="site"/>.</summary>
    public void Release(ClientAddress site, long bytes)
    {
        if (bytes == 0)
        {
            // Nothing to give back, and the site's entry may be gone already (its charge came down to nothing).
            return;
        }

        lock (_bySite)
        {
            ref long used = ref System.Runtime.InteropServices.CollectionsMarshal.GetValueRefOrNullRef(_bySite, site);
            used -= bytes;
            if (used == 0)
            {
                _bySite.Remove(site);
            }

            Interlocked.Add(ref _total, -bytes);
        }
    }
}
