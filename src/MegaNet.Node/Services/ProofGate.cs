using System.Diagnostics;
using System.Runtime.CompilerServices;
using Grpc.Core;
using MegaNet.Api;
using MegaNet.Node.Admission;
using MegaNet.Node.Hosting;

namespace MegaNet.Node.Services;

/// <summary>
/// The log's proofs (<c>GetInclusionProof</c>, <c>GetConsistencyProof</c>): free to ask for and up to ~0.35 ms of CPU
/// each on a log of a million leaves (a hash its checkpoint released is recomputed from the 256 leaf hashes of its block,
/// read back from leaves.bin), so a client could keep cores busy that admission needs. Each client site (an IPv4
/// address, or an IPv6 /48) has a budget of <see cref="Burst"/> proofs, then <see cref="PerSecond"/> a second, and at
/// most <see cref="Capacity"/> proofs (half the cores) are computed at once, a call waiting up to
/// <see cref="MaxWait"/> for its turn; beyond either a call is refused RESOURCE_EXHAUSTED with retry-after-ms. Honest
/// clients ask for one proof per receipt they check and one per audit.
/// </summary>
public sealed class ProofGate : IDisposable
{
    /// <summary>Proofs a site may ask for at once (and whenever it has been quiet for a few seconds).</summary>
    public const int Burst = 1_000;

    /// <summary>Proofs a second a site may ask for once its burst is spent: at ~0.35 ms each, a tenth of a core.</summary>
    public const int PerSecond = 200;

    /// <summary>How long a call waits for one of the <see cref="Capacity"/> slots before it is refused.</summary>
    public static readonly TimeSpan MaxWait = TimeSpan.FromSeconds(1);

    // Sites remembered at most; one is forgotten once its budget is whole again, and a full table forgets the ones
    // that owe least.
    private const int MaxSites = 65_536;

    private readonly object _lock = new();
    private readonly SiteTable<TokenCount> _sites = new(
        MaxSites,
        static (s, now) => s.At(now, PerSecond, Burst) >= Burst,
        static (s, now) => -s.At(now, PerSecond, Burst));

    private readonly SemaphoreSlim _slots;

    /// <summary>Creates a gate computing at most <paramref name="slots"/> proofs at once (default: half the cores, at
    /// least one).</summary>
    public ProofGate(int? slots = null)
    {
        Capacity = slots ?? Math.Max(1, Environment.ProcessorCount / 2);
        ArgumentOutOfRangeException.ThrowIfLessThan(Capacity, 1, nameof(slots));
        _slots = new SemaphoreSlim(Capacity, Capacity);
    }

    /// <summary>Proofs computed at once, at most.</summary>
    public int Capacity { get; }

    /// <summary>Sites remembered now (tests).</summary>
    internal int Sites
    {
        get
        {
            lock (_lock)
            {
                return _sites.Count;
            }
        }
    }

    /// <summary>Takes one proof from <paramref name="source"/>'s budget (null: not an IP client, held to none) and waits
    /// for a slot; dispose the result to give the slot back.</summary>
    /// <exception cref="RpcException">RESOURCE_EXHAUSTED: the site's budget is spent, or no slot came free in time.</exception>
    public async ValueTask<Slot> EnterAsync(ClientAddress? source, CancellationToken cancellationToken)
    {
        Take(source, Stopwatch.GetTimestamp());
        if (!await _slots.WaitAsync(MaxWait, cancellationToken).ConfigureAwait(false))
        {
            throw new RpcException(new Status(StatusCode.ResourceExhausted,
                $"The node is computing {Capacity} log proof(s) at once, all it computes at a time, and none finished within {MaxWait.TotalSeconds:0} s; retry after retry-after-ms."),
                NodeRefusals.Trailers(retryAfterMs: 100));
        }

        return new Slot(_slots);
    }

    /// <summary>Takes one proof from the budget of <paramref name="source"/>'s site at <paramref name="now"/>, a
    /// <see cref="Stopwatch"/> timestamp.</summary>
    /// <exception cref="RpcException">RESOURCE_EXHAUSTED with retry-after-ms: the budget is spent.</exception>
    internal void Take(ClientAddress? source, long now)
    {
        if (source?.Site is not { } site)
        {
            return;
        }

        int retryAfterMs;
        lock (_lock)
        {
            _sites.Sweep(now);
            ref TokenCount budget = ref _sites.Find(site);
            if (Unsafe.IsNullRef(ref budget))
            {
                budget = ref _sites.GetOrAdd(site, now, out _);
                budget = new TokenCount(Burst, now);
            }

            if (budget.Available(now, PerSecond, Burst, out retryAfterMs))
            {
                budget.Tokens--;
                return;
            }
        }

        throw new RpcException(new Status(StatusCode.ResourceExhausted,
            $"This network address asked for more log proofs than the node gives one client site ({Burst:N0} at once, then {PerSecond:N0} a second); retry after retry-after-ms."),
            NodeRefusals.Trailers(retryAfterMs));
    }

    /// <summary>Forgets the sites whose budget is whole again. <see cref="Take"/> does so on each call; the node's
    /// <see cref="SiteSweeper"/> calls this every second, so a site that asked for one proof is not remembered until
    /// someone else asks for one (docs/protocol.md says how long a relay keeps a site).</summary>
    public void Sweep()
    {
        lock (_lock)
        {
            _sites.Sweep(Stopwatch.GetTimestamp());
        }
    }

    /// <inheritdoc/>
    public void Dispose() => _slots.Dispose();

    /// <summary>A slot held while one proof is computed.</summary>
    public readonly struct Slot(SemaphoreSlim slots) : IDisposable
    {
        /// <summary>Gives the slot back.</summary>
        public void Dispose() => slots.Release();
    }
}
