using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using MegaNet.Core.Verification;
using MegaNet.Node.Admission;
using MegaNet.Node.Hosting;

namespace MegaNet.Node.Services;

/// <summary>
/// Delegated verification (<c>VerifyBatch</c>): the verifier it runs on, and how many calls may verify at once, half
/// the cores (at least one). Delegated verification is free to ask for and costly to answer (an all-invalid request
/// of 65,536 signatures is about 12 s of CPU, bisecting, against 0.7 s valid), so calls beyond this are refused with
/// RESOURCE_EXHAUSTED and a retry hint instead of queueing behind each other and starving admission. On the CPU each
/// call verifies on one thread, so the slots bound the cores it takes: on the node's verifier every call fanned out
/// over all of its threads (all the cores but one), and half the cores' worth of calls could take every core. The
/// calls verify on the gate's own threads (<see cref="RunAsync{T}"/>), one per slot, not on thread-pool threads:
/// seconds of CPU on one of the pool's few threads (two on a 2-core node) left store reads, admission and Kestrel
/// waiting for the pool to grow.
/// </summary>
/// <remarks>
/// One client site (an IPv4 address, or an IPv6 /48) may hold at most <see cref="PerSite"/> slots, half of them
/// (at least one), so with two slots or more it never holds them all; and it has a budget of invalid verdicts
/// (<see cref="BadBurst"/>, then <see cref="BadPerSecond"/> a second), checked before a call and after each step of
/// one, because invalid signatures are what cost: on a 2-core node (one slot) one client sending all-invalid calls
/// back to back held the slot for 12 s a call, without end. A call from a site whose budget is spent is refused
/// unverified, and one that spends it stops at its next step.
/// </remarks>
public sealed class DelegatedVerificationGate : IDisposable
{
    /// <summary>Invalid verdicts a site may be given at once (and whenever it has been quiet for a while): a quarter
    /// of the largest call, about 3 s of one core bisecting. A client checking what it received sees few invalid
    /// signatures; one that sends more, faster, is a cost to everyone else.</summary>
    public const int BadBurst = 16_384;

    /// <summary>Invalid verdicts a second a site may be given once its burst is spent: about a fifth of a core of
    /// bisection (~180 µs an invalid item), the most one client can take from the others on average.</summary>
    public const int BadPerSecond = 1_000;

    /// <summary>The bounds of a retry hint for a slot: a call may end any moment, and one hint should not send a client
    /// away for longer than the longest call the budget lets run. (A site past its budget of invalid verdicts is told
    /// when the budget allows one more, up to a minute.)</summary>
    public const int MinRetryMs = 100, MaxRetryMs = 15_000;

    // Sites remembered at most: one is kept while it holds a slot or owes its budget (about 16 s after a full burst
    // of invalid verdicts). A full table forgets the one that owes least.
    private const int MaxSites = 65_536;

    private readonly bool _ownsVerifier;
    private readonly SlotScheduler _scheduler;

    // One lock for the slots and the sites: taken when a call enters, after each of its steps (4,096 signatures) and
    // when it leaves, all far cheaper than the verification between them.
    private readonly object _lock = new();
    private readonly Call?[] _calls;
    // A site is forgotten once it holds no slot and owes nothing; a full table forgets the idle one that owes least
    // (sites holding slots are at most Capacity of MaxSites).
    private readonly SiteTable<Site> _sites = new(
        MaxSites,
        Site.Forgettable,
        static (s, now) => s.Holding > 0 ? double.MaxValue : -s.Budget.At(now, BadPerSecond, BadBurst));

    private int _inUse;

    /// <summary>Creates a gate over <paramref name="verifier"/> with <paramref name="slots"/> slots (default: half the
    /// cores, at least one); with <paramref name="ownsVerifier"/> disposing the gate disposes the verifier.</summary>
    public DelegatedVerificationGate(IBatchVerifier verifier, bool ownsVerifier, int? slots = null)
    {
        Verifier = verifier ?? throw new ArgumentNullException(nameof(verifier));
        _ownsVerifier = ownsVerifier;
        Capacity = slots ?? Math.Max(1, Environment.ProcessorCount / 2);
        ArgumentOutOfRangeException.ThrowIfLessThan(Capacity, 1, nameof(slots));
        _calls = new Call?[Capacity];
        _scheduler = new SlotScheduler(Capacity);
    }

    /// <summary>What delegated calls verify on.</summary>
    public IBatchVerifier Verifier { get; }

    /// <summary>Calls that may verify at once.</summary>
    public int Capacity { get; }

    /// <summary>Calls one client site may have verifying at once: half the slots, at least one.</summary>
    public int PerSite => Math.Max(1, Capacity / 2);

    /// <summary>Calls verifying now.</summary>
    public int InUse
    {
        get
        {
            lock (_lock)
            {
                return _inUse;
            }
        }
    }

    /// <summary>Sites remembered now (for tests).</summary>
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

    /// <summary>Takes a slot for a call of <paramref name="signatures"/> signatures from <paramref name="site"/> (null:
    /// not an IP client, held to no site's limits); dispose the call to give it back. Null when refused:
    /// <paramref name="refusal"/> says why and <paramref name="retryAfterMs"/> when to try again.</summary>
    public Call? TryEnter(ClientAddress? site, int signatures, out Refusal refusal, out int retryAfterMs) =>
        TryEnter(site, signatures, Stopwatch.GetTimestamp(), out refusal, out retryAfterMs);

    /// <summary><see cref="TryEnter(ClientAddress?, int, out Refusal, out int)"/> at <paramref name="now"/>, a
    /// <see cref="Stopwatch"/> timestamp.</summary>
    internal Call? TryEnter(ClientAddress? site, int signatures, long now, out Refusal refusal, out int retryAfterMs)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(signatures);
        site = site?.Site;
        lock (_lock)
        {
            ref Site s = ref Check(site, now, out refusal, out retryAfterMs);
            if (refusal != Refusal.None)
            {
                return null;
            }

            if (site is { } added && Unsafe.IsNullRef(ref s))
            {
                s = ref _sites.GetOrAdd(added, now, out _);
                s.Budget = new TokenCount(BadBurst, now);
            }

            if (!Unsafe.IsNullRef(ref s))
            {
                s.Holding++;
            }

            int slot = Array.IndexOf(_calls, null);
            var call = new Call(this, site, signatures, now, slot);
            _calls[slot] = call;
            _inUse++;
            return call;
        }
    }

    /// <summary>
    /// Whether a call from <paramref name="site"/> would be refused now, and why, without taking a slot: the node asks
    /// before it reads a request (up to 16 MiB, parsed whole before the service sees it), so a site past its budget or
    /// share, or a full gate, costs it no parsing. A call let through here is still checked by
    /// <see cref="TryEnter(ClientAddress?, int, out Refusal, out int)"/>.
    /// </summary>
    public Refusal WouldRefuse(ClientAddress? site, out int retryAfterMs)
    {
        long now = Stopwatch.GetTimestamp();
        lock (_lock)
        {
            Check(site?.Site, now, out Refusal refusal, out retryAfterMs);
            return refusal;
        }
    }

    /// <summary>What a refused caller is told.</summary>
    public string RefusalText(Refusal refusal) => refusal switch
    {
        Refusal.BadBudget => BadBudgetText("Too many signatures sent to VerifyBatch from this network address were invalid lately"),
        Refusal.SiteShare =>
            $"This network address has {PerSite} VerifyBatch call(s) running already, the most one client site may have of the node's {Capacity}; send the next when one ends (retry-after-ms estimates when).",
        Refusal.Busy => $"The node is already answering {Capacity} VerifyBatch call(s), all it answers at once; retry after retry-after-ms (when the first should end).",
        _ => throw new ArgumentOutOfRangeException(nameof(refusal), refusal, "Not a refusal."),
    };

    /// <summary>The text of a refusal for invalid verdicts: <paramref name="what"/>, and the budget.</summary>
    public static string BadBudgetText(string what) =>
        $"{what} (each site gets {BadBurst:N0} invalid verdicts, then {BadPerSecond:N0} a second: an invalid signature costs the node about 16 valid ones); retry after retry-after-ms.";

    /// <summary>Forgets the sites whose budget is whole again and that run no call, without a call to trigger it (see
    /// <see cref="Admission.MailboxAuthenticator.Sweep"/>).</summary>
    public void Sweep()
    {
        lock (_lock)
        {
            _sites.Sweep(Stopwatch.GetTimestamp());
        }
    }

    // Under the lock: the site's entry (a null ref when it has none) and whether a call from it is refused now.
    private ref Site Check(ClientAddress? site, long now, out Refusal refusal, out int retryAfterMs)
    {
        _sites.Sweep(now);
        ref Site s = ref Unsafe.NullRef<Site>();
        if (site is { } key)
        {
            s = ref _sites.Find(key);
            if (!Unsafe.IsNullRef(ref s) && !s.Budget.Available(now, BadPerSecond, BadBurst, out retryAfterMs))
            {
                refusal = Refusal.BadBudget;
                return ref s;
            }
        }

        if (_inUse == Capacity)
        {
            refusal = Refusal.Busy;
            retryAfterMs = SoonestEnd(null, now);
            return ref s;
        }

        if (!Unsafe.IsNullRef(ref s) && s.Holding >= PerSite)
        {
            refusal = Refusal.SiteShare;
            retryAfterMs = SoonestEnd(site, now);
            return ref s;
        }

        refusal = Refusal.None;
        retryAfterMs = 0;
        return ref s;
    }

    /// <summary>Runs <paramref name="work"/> on one of the gate's threads (call it while holding a slot, so one is
    /// free) and completes with its result; cancelled without running if <paramref name="cancellationToken"/> fires
    /// first, and cancelled if <paramref name="work"/> throws <see cref="OperationCanceledException"/> for that token.</summary>
    public Task<T> RunAsync<T>(Func<T> work, CancellationToken cancellationToken) =>
        Task.Factory.StartNew(work, cancellationToken, TaskCreationOptions.DenyChildAttach, _scheduler);

    /// <inheritdoc />
    public void Dispose()
    {
        _scheduler.Dispose();
        if (_ownsVerifier)
        {
            Verifier.Dispose();
        }
    }

    // Under _lock. When the first of the running calls (of one site, or all) should end: from its pace so far when it
    // has finished a step, else as long again as it has run; within [MinRetryMs, MaxRetryMs]. A fixed 250 ms was ~50
    // times too short for a call that held the slot for 12 s.
    private int SoonestEnd(ClientAddress? site, long now)
    {
        double soonest = double.MaxValue;
        foreach (Call? call in _calls)
        {
            if (call is null || (site is not null && call.Site != site))
            {
                continue;
            }

            double elapsed = now - call.Start;
            double left = call.Verified > 0 ? elapsed * (call.Signatures - call.Verified) / call.Verified : elapsed;
            soonest = Math.Min(soonest, left);
        }

        double ms = soonest * 1000 / Stopwatch.Frequency;
        return ms >= MaxRetryMs ? MaxRetryMs : Math.Max(MinRetryMs, (int)Math.Ceiling(ms));
    }

    // After a step of `call`: charges its site for the step's invalid verdicts; false when the budget is
    // spent, with when it will allow one more.
    private bool Stepped(Call call, int verified, int invalid, long now, out int retryAfterMs)
    {
        retryAfterMs = 0;
        lock (_lock)
        {
            call.Verified = verified;
            if (call.Site is not { } site)
            {
                return true;
            }

            ref Site s = ref _sites.Find(site);
            Debug.Assert(!Unsafe.IsNullRef(ref s), "a site is kept while it holds a slot");
            s.Budget.Refill(now, BadPerSecond, BadBurst);
            s.Budget.Tokens -= invalid;
            return s.Budget.Available(now, BadPerSecond, BadBurst, out retryAfterMs);
        }
    }

    private void Exit(Call call, long now)
    {
        lock (_lock)
        {
            if (_calls[call.Slot] != call)
            {
                return; // disposed already
            }

            _calls[call.Slot] = null;
            _inUse--;
            if (call.Site is { } site)
            {
                ref Site s = ref _sites.Find(site);
                s.Holding--;
                if (Site.Forgettable(s, now))
                {
                    _sites.Remove(site);
                }
            }
        }
    }

    /// <summary>Why <see cref="TryEnter(ClientAddress?, int, out Refusal, out int)"/> refused a call.</summary>
    public enum Refusal
    {
        /// <summary>It did not.</summary>
        None,

        /// <summary>Every slot is taken.</summary>
        Busy,

        /// <summary>The call's site holds <see cref="PerSite"/> slots already.</summary>
        SiteShare,

        /// <summary>The call's site has spent its budget of invalid verdicts.</summary>
        BadBudget,
    }

    /// <summary>A call holding a slot: report each step with <see cref="Stepped(int, int, out int)"/>, dispose when done.</summary>
    public sealed class Call : IDisposable
    {
        private readonly DelegatedVerificationGate _gate;

        internal Call(DelegatedVerificationGate gate, ClientAddress? site, int signatures, long start, int slot)
        {
            _gate = gate;
            Site = site;
            Signatures = signatures;
            Start = start;
            Slot = slot;
        }

        /// <summary>The client site it came from, if any.</summary>
        public ClientAddress? Site { get; }

        internal int Signatures { get; }

        internal long Start { get; }

        internal int Slot { get; }

        // Under the gate's lock.
        internal int Verified { get; set; }

        /// <summary>Records a step: <paramref name="verified"/> signatures have verdicts so far, <paramref name="invalid"/>
        /// of this step's are false. False when the site's budget of invalid verdicts is spent: the call should stop,
        /// and <paramref name="retryAfterMs"/> says when the site may verify again.</summary>
        public bool Stepped(int verified, int invalid, out int retryAfterMs) =>
            _gate.Stepped(this, verified, invalid, Stopwatch.GetTimestamp(), out retryAfterMs);

        /// <summary><see cref="Stepped(int, int, out int)"/> at <paramref name="now"/>.</summary>
        internal bool Stepped(int verified, int invalid, long now, out int retryAfterMs) =>
            _gate.Stepped(this, verified, invalid, now, out retryAfterMs);

        /// <summary>Gives the slot back (once; later calls do nothing).</summary>
        public void Dispose() => _gate.Exit(this, Stopwatch.GetTimestamp());

        /// <summary><see cref="Dispose"/> at <paramref name="now"/>.</summary>
        internal void Exit(long now) => _gate.Exit(this, now);
    }

    private struct Site
    {
        public int Holding;
        public TokenCount Budget;

        // Holds no slot and owes nothing: remembering it changes nothing.
        public static bool Forgettable(Site s, long now) => s.Holding == 0 && s.Budget.At(now, BadPerSecond, BadBurst) >= BadBurst;
    }

    /// <summary>Runs tasks on up to <c>threads</c> dedicated background threads, each started the first time it is
    /// needed (most nodes never answer VerifyBatch) and kept after, so a call costs no thread creation.</summary>
    private sealed class SlotScheduler(int threads) : TaskScheduler, IDisposable
    {
        private readonly BlockingCollection<Task> _queue = [];
        private int _started;

        public override int MaximumConcurrencyLevel => threads;

        protected override void QueueTask(Task task)
        {
            _queue.Add(task);
            // Each caller holds a slot, so queued tasks never outnumber the slots: a thread per task until every slot
            // has one means none waits behind another call. (The increment may overshoot; the check keeps the bound.)
            if (Volatile.Read(ref _started) < threads && Interlocked.Increment(ref _started) <= threads)
            {
                new Thread(Run) { IsBackground = true, Name = "meganet-verify-batch" }.Start();
            }
        }

        // Never inline: the caller is a thread-pool thread, which is what this scheduler keeps the work off.
        protected override bool TryExecuteTaskInline(Task task, bool taskWasPreviouslyQueued) => false;

        protected override IEnumerable<Task> GetScheduledTasks() => _queue.ToArray();

        private void Run()
        {
            foreach (Task task in _queue.GetConsumingEnumerable())
            {
                TryExecuteTask(task);
            }
        }

        public void Dispose() => _queue.CompleteAdding();
    }
}
