using MegaNet.Node.Admission;
using MegaNet.Node.Hosting;

namespace MegaNet.Node.Tests;

/// <summary>The bounded per-site table behind the budgets against forgeries and failed logins.</summary>
public sealed class SiteTableTests
{
    private static ClientAddress Site(int i) => new((ulong)i, 0);

    [Fact]
    public void A_full_table_drops_its_lowest_ranked_sixteenth_at_once_and_keeps_the_rest()
    {
        // Ranked by the number the entry holds; none is forgettable, so only the ranking frees room.
        var table = new SiteTable<long>(64, static (_, _) => false, static (e, _) => e);
        for (int i = 0; i < 64; i++)
        {
            table.GetOrAdd(Site(i), 0, out bool existed) = 1000 - i; // site 63 ranks lowest, site 0 highest
            Assert.False(existed);
        }

        table.GetOrAdd(Site(100), 0, out _) = 5000;
        // Four (64 / 16) went, the four lowest ranked: one scan makes room for the next three new sites as well.
        Assert.Equal(61, table.Count);
        for (int i = 0; i < 64; i++)
        {
            Assert.Equal(i < 60, !System.Runtime.CompilerServices.Unsafe.IsNullRef(ref table.Find(Site(i))));
        }

        for (int i = 101; i < 104; i++)
        {
            table.GetOrAdd(Site(i), 0, out _) = 5000;
        }

        Assert.Equal(64, table.Count);
        Assert.False(System.Runtime.CompilerServices.Unsafe.IsNullRef(ref table.Find(Site(0))));
    }
}
