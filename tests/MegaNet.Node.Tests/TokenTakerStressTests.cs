using System.Collections.Concurrent;
using System.Diagnostics;
using System.Reflection;
using System.Text;
using Grpc.Core;
using MegaNet.Api;
using MegaNet.Api.V1;
using MegaNet.Core.Verification;
using MegaNet.Node.Admission;
using MegaNet.Node.Hosting;
using MegaNet.Node.Verification;
using MegaNet.Store;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;
using Xunit.Abstractions;

using SignedTreeHead = MegaNet.Store.SignedTreeHead;

namespace MegaNet.Node.Tests;

/// <summary>Stress of admission's token-taker table (the submissions that took their key's token, chained under a slot
/// of their envelope id): many envelopes and copies of them from several
/// tasks at once under a tight token bucket, with a store that answers after random delays, sometimes synchronously,
/// and sometimes fails (a whole group, single envelopes, a short answer, a fault where the batcher reads its mark).
/// A monitor walks the table's chains throughout (under their locks) and checks them: no cycle, every member in its
/// own slot and unanswered.</summary>
public sealed class TokenTakerStressTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Hang = TimeSpan.FromSeconds(90);

    // Rounds a test runs (TOKEN_TAKER_STRESS_ROUNDS), each with a fresh pipeline and store; every other one paced.
    private static readonly int Rounds = int.TryParse(Environment.GetEnvironmentVariable("TOKEN_TAKER_STRESS_ROUNDS"), out int r) ? r : 6;

    /// <summary>One sending key per envelope, one token, no refill: the key's bucket is empty only because a
    /// submission of that very envelope took its token. So unless some submission of the envelope failed (its token
    /// given back), every submission must get the one receipt, never a rate refusal.</summary>
    [Theory]
    [InlineData(1, 64, 16_384, 1024)]
    [InlineData(2, 16, 256, 1024)]
    [InlineData(3, 256, 64, 256)]
    [InlineData(4, 1, 16_384, 16_384)]
    [InlineData(5, 64, 16_384, 256)]
    public async Task Copies_of_envelopes_whose_key_has_one_token_get_the_originals_receipt_and_leave_no_taker(int seed, int maxBatch, int storeInFlight, int slotsUsed)
    {
        seed = SeedFromEnvironment(seed);
        output.WriteLine($"seed {seed}, MaxBatch {maxBatch}, StoreInFlight {storeInFlight}, slots used {slotsUsed}");
        var rng = new Random(seed);
        using Identity recipient = Identity.Create();
        var watch = Stopwatch.StartNew();
        const int Envelopes = 1_200;
        Envelope[] envelopes = SealFromNewSenders(recipient, Envelopes, slotsUsed);

        output.WriteLine($"sealed {Envelopes} in {watch.ElapsedMilliseconds} ms");
        for (int round = 0; round < Rounds; round++)
        {
            // A fresh pipeline and store each round: the same envelopes are new to them (and fall in the same slots).
            var plan = Plan(rng, Envelopes, maxCopies: 4, window: 24);
            var options = new NodeOptions
            {
                SubmitBurst = 1,
                SubmitRatePerKey = 0.001,
                FlushMicroseconds = 200,
                MaxBatch = maxBatch,
                StoreInFlight = storeInFlight,
                PowMaxBits = 0,
            };
            var store = new ChaosStore(seed * 100 + round) { GroupFailPercent = 2, ItemFailPercent = 2, DropLastPercent = 2, MarkFaultPercent = 1 };
            Outcome[] outcomes = await RunAsync(rng, store, options, envelopes, plan, disposeAfter: null, paced: round % 2 == 1);

            int failures = 0, rate = 0, copies = 0;
            foreach (IGrouping<int, Outcome> byEnvelope in outcomes.GroupBy(o => o.Envelope))
            {
                string id = Id(envelopes[byEnvelope.Key]);
                bool failed = byEnvelope.Any(o => o.Kind is not (Kind.Receipt or Kind.Rate));
                failures += failed ? 1 : 0;
                long? index = store.IndexOf(id);
                foreach (Outcome o in byEnvelope)
                {
                    copies += o.Receipt is { Duplicate: true } ? 1 : 0;
                    switch (o.Kind)
                    {
                        case Kind.Receipt:
                            Assert.True(index == o.Receipt!.LogIndex, $"envelope {byEnvelope.Key}: a receipt of log index {o.Receipt.LogIndex}, the store's is {index?.ToString() ?? "none"} (seed {seed})");
                            Assert.Equal(id, Convert.ToHexString(o.Receipt.EnvelopeId.Span));
                            break;
                        case Kind.Rate:
                            rate++;
                            Assert.True(failed, $"envelope {byEnvelope.Key}: a submission refused for the rate though no submission of it failed " +
                                $"(store index {index?.ToString() ?? "none"}; answers: {string.Join(", ", byEnvelope.Select(x => x.Kind))}) (seed {seed})");
                            break;
                    }
                }

                if (!failed)
                {
                    Assert.True(index is not null, $"envelope {byEnvelope.Key} never failed and was never stored (seed {seed})");
                }
            }

            output.WriteLine($"round {round}: {outcomes.Length} submissions, {copies} answered as copies/replays, {failures} envelopes with a failure, {rate} rate refusals; " +
                $"store: {store.Groups} groups, {store.SyncGroups} synchronous, {store.Stored} stored; {store.Faults}");
        }
    }

    /// <summary>Several envelopes per sending key, a burst of 1-4 and a slow refill: rate refusals are legitimate here,
    /// so only completion, agreeing receipts and an empty table at the end are checked.</summary>
    [Theory]
    [InlineData(11, 1, 64, 2048)]
    [InlineData(12, 2, 16, 1024)]
    [InlineData(13, 4, 256, 256)]
    [InlineData(14, 3, 1, 256)]
    public async Task Many_envelopes_per_key_and_their_copies_under_a_tight_bucket_all_complete_and_leave_no_taker(int seed, int burst, int maxBatch, int slotsUsed)
    {
        seed = SeedFromEnvironment(seed);
        output.WriteLine($"seed {seed}, burst {burst}, MaxBatch {maxBatch}, slots used {slotsUsed}");
        var rng = new Random(seed);
        using Identity recipient = Identity.Create();
        const int Keys = 40, PerKey = 30;
        var senders = Enumerable.Range(0, Keys).Select(_ => Identity.Create()).ToArray();
        try
        {
            var envelopes = new Envelope[Keys * PerKey];
            for (int i = 0; i < envelopes.Length; i++)
            {
                envelopes[i] = SealInSlots(senders[i % Keys], recipient, slotsUsed, i);
            }

            for (int round = 0; round < Rounds; round++)
            {
                var plan = Plan(rng, envelopes.Length, maxCopies: 4, window: 32);
                var options = new NodeOptions
                {
                    SubmitBurst = burst,
                    SubmitRatePerKey = 100,
                    FlushMicroseconds = 300,
                    MaxBatch = maxBatch,
                    StoreInFlight = 512,
                    PowMaxBits = 0,
                };
                var store = new ChaosStore(seed * 100 + round) { GroupFailPercent = 2, ItemFailPercent = 3, DropLastPercent = 2, MarkFaultPercent = 1 };
                Outcome[] outcomes = await RunAsync(rng, store, options, envelopes, plan, disposeAfter: null, paced: round % 2 == 1);
                foreach (Outcome o in outcomes.Where(o => o.Kind == Kind.Receipt))
                {
                    string id = Id(envelopes[o.Envelope]);
                    Assert.True(store.IndexOf(id) == o.Receipt!.LogIndex, $"envelope {o.Envelope}: receipt index {o.Receipt.LogIndex}, store's {store.IndexOf(id)} (seed {seed})");
                }

                output.WriteLine($"round {round}: {outcomes.Length} submissions: {string.Join(", ", outcomes.GroupBy(o => o.Kind).Select(g => $"{g.Key} {g.Count()}"))}; " +
                    $"store: {store.Groups} groups, {store.SyncGroups} synchronous, {store.Stored} stored; {store.Faults}");
            }
        }
        finally
        {
            foreach (Identity s in senders)
            {
                s.Dispose();
            }
        }
    }

    /// <summary>The node stops while copies race their originals and the store is slow: every submission is answered
    /// and the table is empty once the pipeline is disposed.</summary>
    [Theory]
    [InlineData(21)]
    [InlineData(22)]
    [InlineData(23)]
    public async Task Stopping_while_copies_race_their_originals_answers_everything_and_leaves_no_taker(int seed)
    {
        seed = SeedFromEnvironment(seed);
        output.WriteLine($"seed {seed}");
        var rng = new Random(seed);
        using Identity recipient = Identity.Create();
        const int Envelopes = 800;
        Envelope[] envelopes = SealFromNewSenders(recipient, Envelopes, 512);

        for (int round = 0; round < Rounds; round++)
        {
            var plan = Plan(rng, Envelopes, maxCopies: 4, window: 24);
            var options = new NodeOptions { SubmitBurst = 1, SubmitRatePerKey = 0.001, FlushMicroseconds = 200, MaxBatch = 32, PowMaxBits = 0 };
            var store = new ChaosStore(seed * 100 + round) { GroupFailPercent = 2, ItemFailPercent = 2, DropLastPercent = 2, MarkFaultPercent = 1, MaxDelayMs = 20 };
            Outcome[] outcomes = await RunAsync(rng, store, options, envelopes, plan, disposeAfter: rng.Next(plan.Length), paced: round % 2 == 1);
            output.WriteLine($"round {round}: {outcomes.Length} submissions: {string.Join(", ", outcomes.GroupBy(o => o.Kind).Select(g => $"{g.Key} {g.Count()}"))}; " +
                $"store: {store.Groups} groups, {store.Stored} stored; {store.Faults}");
        }
    }

    /// <summary>The same against a real node and store, over four SubmitStreams and unary calls on six connections:
    /// one token per key, each envelope 1-4 times. The store does not fail here, so every submission must get the
    /// envelope's one receipt, and the table must be empty once all are answered.</summary>
    [Theory]
    [InlineData(31, 1024)]
    [InlineData(32, 16_384)]
    public async Task On_a_real_node_copies_over_streams_and_unary_calls_get_the_one_receipt_and_leave_no_taker(int seed, int slotsUsed)
    {
        seed = SeedFromEnvironment(seed);
        output.WriteLine($"seed {seed}, slots used {slotsUsed}");
        var rng = new Random(seed);
        await using TestNode node = await TestNode.StartAsync(o =>
        {
            o.SubmitBurst = 1;
            o.SubmitRatePerKey = 0.001;
        });
        using Identity recipient = Identity.Create();
        const int Envelopes = 600;
        Envelope[] envelopes = SealFromNewSenders(recipient, Envelopes, slotsUsed);

        int[] plan = Plan(rng, Envelopes, maxCopies: 4, window: 16);
        int[] lane = [.. plan.Select(_ => rng.Next(6))]; // 0-3: a stream each, 4-5: unary
        var clients = Enumerable.Range(0, 6).Select(_ => node.Client()).ToArray();
        var results = new SubmitResult?[plan.Length];
        var watch = Stopwatch.StartNew();
        Task[] senders = [.. Enumerable.Range(0, 6).Select(l => Task.Run(async () =>
        {
            int[] mine = [.. Enumerable.Range(0, plan.Length).Where(i => lane[i] == l)];
            if (l >= 4)
            {
                await Parallel.ForEachAsync(mine, new ParallelOptions { MaxDegreeOfParallelism = 16 }, async (i, _) =>
                {
                    try
                    {
                        results[i] = new SubmitResult { Receipt = await clients[l].Relay.SubmitAsync(new SubmitRequest { Envelope = envelopes[plan[i]] }, deadline: DateTime.UtcNow.AddMinutes(2)) };
                    }
                    catch (RpcException e)
                    {
                        results[i] = new SubmitResult { StatusCode = (int)e.StatusCode, Error = e.Status.Detail };
                    }
                });
                return;
            }

            using AsyncDuplexStreamingCall<SubmitRequest, SubmitResult> stream = clients[l].Relay.SubmitStream(deadline: DateTime.UtcNow.AddMinutes(2));
            Task reader = Task.Run(async () =>
            {
                foreach (int i in mine)
                {
                    Assert.True(await stream.ResponseStream.MoveNext(CancellationToken.None), "the SubmitStream ended");
                    results[i] = stream.ResponseStream.Current;
                }
            });
            foreach (int i in mine)
            {
                await stream.RequestStream.WriteAsync(new SubmitRequest { Envelope = envelopes[plan[i]] });
            }

            await stream.RequestStream.CompleteAsync();
            await reader;
        }))];
        await Task.WhenAll(senders).WaitAsync(Hang);
        output.WriteLine($"{plan.Length} submissions answered in {watch.ElapsedMilliseconds} ms");

        foreach (IGrouping<int, int> byEnvelope in Enumerable.Range(0, plan.Length).GroupBy(i => plan[i]))
        {
            SubmitResult[] answers = [.. byEnvelope.Select(i => results[i]!)];
            foreach (SubmitResult r in answers)
            {
                Assert.True(r.Receipt is not null, $"envelope {byEnvelope.Key}: refused ({(StatusCode)r.StatusCode}: {r.Error}); answers: " +
                    string.Join(", ", answers.Select(a => a.Receipt is { } x ? $"receipt {x.LogIndex}{(x.Duplicate ? " dup" : "")}" : $"{(StatusCode)a.StatusCode}")) + $" (seed {seed})");
            }

            Assert.Single(answers.Select(a => a.Receipt.LogIndex).Distinct());
            Assert.Equal(Id(envelopes[byEnvelope.Key]), Convert.ToHexString(answers[0].Receipt.EnvelopeId.Span));
        }

        Assert.Equal(0, node.Services.GetRequiredService<AdmissionPipeline>().TokenTakersHeld);
        node.AssertNoServerErrors();
    }

    private static int SeedFromEnvironment(int seed) =>
        int.TryParse(Environment.GetEnvironmentVariable("TOKEN_TAKER_STRESS_SEED"), out int offset) ? seed * 1_000 + offset : seed;

    private static string Id(Envelope e) => Convert.ToHexString(EnvelopeFormat.EnvelopeId(e));

    private static uint Slot(Envelope e) => (uint)Key256.From(EnvelopeFormat.EnvelopeId(e)).GetHashCode() % (1 << 14);

    /// <summary>An envelope from <paramref name="sender"/> whose token-taker slot is below <paramref name="slotsUsed"/>,
    /// so that chains form (several takers in a slot at once) far more often than over all 16,384 slots. Sealed once,
    /// then its expiry moved a millisecond at a time (a new id each) until the slot fits, and signed again.</summary>
    private static Envelope SealInSlots(Identity sender, Identity recipient, int slotsUsed, int n)
    {
        Envelope e = EnvelopeFormat.Seal(sender, recipient.Card, Encoding.UTF8.GetBytes($"m {n}"), "text/plain", null, DateTimeOffset.UtcNow.AddDays(1));
        while (Slot(e) >= slotsUsed)
        {
            e.ExpiresUnixMs--;
        }

        EnvelopeFormat.Stamp(sender, e, default, bits: 0);
        return e;
    }

    /// <summary><paramref name="count"/> envelopes, each from a sending identity of its own (so each key has one token to
    /// give), in slots below <paramref name="slotsUsed"/>.</summary>
    private static Envelope[] SealFromNewSenders(Identity recipient, int count, int slotsUsed)
    {
        var envelopes = new Envelope[count];
        for (int i = 0; i < count; i++)
        {
            using Identity sender = Identity.Create();
            envelopes[i] = SealInSlots(sender, recipient, slotsUsed, i);
        }

        return envelopes;
    }

    /// <summary>Which envelope each submission is, in submission order: each envelope 1 to <paramref name="maxCopies"/>
    /// times, its submissions scattered over about <paramref name="window"/> neighbours so that copies race each other
    /// and their original at every stage (queued, in one batch, with the store, stored).</summary>
    private static int[] Plan(Random rng, int envelopes, int maxCopies, int window) =>
        [.. Enumerable.Range(0, envelopes)
            .SelectMany(e => Enumerable.Range(0, rng.Next(1, maxCopies + 1)).Select(_ => (Envelope: e, Order: e + rng.NextDouble() * window)))
            .OrderBy(x => x.Order)
            .Select(x => x.Envelope)];

    private enum Kind { Receipt, Rate, StoreFailed, Quota, Internal, Closing }

    private sealed record Outcome(int Envelope, Kind Kind, Receipt? Receipt, string? Detail);

    private async Task<Outcome[]> RunAsync(Random rng, ChaosStore store, NodeOptions options, Envelope[] envelopes, int[] plan, int? disposeAfter, bool paced)
    {
        using IBatchVerifier simd = VerifierCatalog.Create().Create("simd", new VerifierOptions { Threads = 1 });
        var admission = new AdmissionPipeline(simd, store, options, TimeProvider.System, NullLogger<AdmissionPipeline>.Instance);
        var table = new TableProbe(admission);
        var calls = new Task<Receipt>[plan.Length];
        int[] pauses = [.. plan.Select(_ => rng.Next(100))];
        int next = -1;
        using var stop = new CancellationTokenSource();
        Task monitor = Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                table.Check();
                await Task.Delay(2);
            }
        });
        Task? disposing = null;
        var watch = Stopwatch.StartNew();
        try
        {
            Task[] workers = [.. Enumerable.Range(0, 8).Select(_ => Task.Run(async () =>
            {
                int i;
                while ((i = Interlocked.Increment(ref next)) < plan.Length)
                {
                    if (disposeAfter == i)
                    {
                        disposing = admission.DisposeAsync().AsTask();
                    }

                    calls[i] = admission.SubmitAsync(envelopes[plan[i]], null, CancellationToken.None);
                    if (pauses[i] < (paced ? 25 : 5))
                    {
                        await Task.Delay(1);
                    }
                    else if (pauses[i] < 40)
                    {
                        await Task.Yield();
                    }
                }
            }))];
            await Task.WhenAll(workers).WaitAsync(Hang);
            try
            {
                await Task.WhenAll(calls.Select(c => c.ContinueWith(_ => { }, TaskScheduler.Default))).WaitAsync(Hang);
            }
            catch (TimeoutException)
            {
                int open = calls.Count(c => !c.IsCompleted);
                Assert.Fail($"{open} of {calls.Length} submissions unanswered after {Hang}; queue depth {admission.QueueDepth}, table (probe) {table.CountUnlocked()}, store groups {store.Groups}, pending store groups {store.Open}");
            }

            output.WriteLine($"answered in {watch.ElapsedMilliseconds} ms; most takers seen at once {table.MostHeld}, longest chain {table.LongestChain}, checks {table.Checks}");
            // Every submission is answered after it left the table: nothing may be left, at once.
            Assert.Equal(0, table.CountUnlocked());
            Assert.Equal(0, admission.TokenTakersHeld);
        }
        finally
        {
            stop.Cancel();
            await monitor.WaitAsync(Hang);
            disposing ??= admission.DisposeAsync().AsTask();
            await disposing.WaitAsync(Hang);
        }

        Assert.Equal(0, table.CountUnlocked());
        Assert.Equal(0, admission.TokenTakersHeld);
        Assert.Equal(0, admission.HeldBytes);
        Assert.Null(table.Violation);
        return [.. calls.Select((c, i) => Classify(plan[i], c))];
    }

    private static Outcome Classify(int envelope, Task<Receipt> call)
    {
        if (call.IsCompletedSuccessfully)
        {
            return new Outcome(envelope, Kind.Receipt, call.Result, null);
        }

        Exception e = call.Exception!.InnerException!;
        RpcException rpc = Assert.IsType<RpcException>(e);
        string detail = rpc.Status.Detail;
        Kind kind = (rpc.StatusCode, detail) switch
        {
            (StatusCode.ResourceExhausted, _) when detail.StartsWith("Too many submissions from this sending key", StringComparison.Ordinal) => Kind.Rate,
            (StatusCode.ResourceExhausted, _) when detail.StartsWith("injected quota", StringComparison.Ordinal) => Kind.Quota,
            (StatusCode.Unavailable, _) when detail.Contains("could not store", StringComparison.Ordinal) => Kind.StoreFailed,
            (StatusCode.Unavailable, _) when detail.Contains("shutting down", StringComparison.Ordinal) => Kind.Closing,
            (StatusCode.Internal, _) when detail.StartsWith("Verification failed inside the node", StringComparison.Ordinal) => Kind.Internal,
            _ => throw new Xunit.Sdk.XunitException($"unexpected answer for envelope {envelope}: {rpc.StatusCode}: {detail}"),
        };
        return new Outcome(envelope, kind, null, detail);
    }

    /// <summary>Reads the pipeline's token-taker table through reflection: its chains, walked under their stripe's lock
    /// with a step bound (a cycle would hang <see cref="AdmissionPipeline.TokenTakersHeld"/>).</summary>
    private sealed class TableProbe
    {
        private static readonly BindingFlags Any = BindingFlags.NonPublic | BindingFlags.Public | BindingFlags.Instance;
        private static readonly Type PendingType = typeof(AdmissionPipeline).GetNestedType("Pending", BindingFlags.NonPublic)!;
        private static readonly FieldInfo NextField = PendingType.GetField("NextTaker", Any)!;
        private static readonly FieldInfo IsTakerField = PendingType.GetField("IsTokenTaker", Any)!;
        private static readonly PropertyInfo IdKeyProperty = PendingType.GetProperty("IdKey", Any)!;

        private readonly object?[] _slots;
        private readonly Lock[] _locks;

        public TableProbe(AdmissionPipeline admission)
        {
            _slots = (object?[])typeof(AdmissionPipeline).GetField("_tokenTakers", Any)!.GetValue(admission)!;
            _locks = (Lock[])typeof(AdmissionPipeline).GetField("_tokenTakerLocks", Any)!.GetValue(admission)!;
        }

        public string? Violation { get; private set; }

        public int MostHeld { get; private set; }

        public int LongestChain { get; private set; }

        public int Checks { get; private set; }

        /// <summary>Walks every chain under its lock: members must be in their own slot, marked, not yet answered
        /// (every path takes a submission out before it answers it), and the chain must end.</summary>
        public void Check()
        {
            int held = 0;
            for (int slot = 0; slot < _slots.Length; slot++)
            {
                if (Volatile.Read(ref _slots[slot]) is null)
                {
                    continue;
                }

                using (_locks[slot % _locks.Length].EnterScope())
                {
                    int length = 0;
                    for (object? p = _slots[slot]; p is not null; p = NextField.GetValue(p))
                    {
                        if (++length > 100_000)
                        {
                            Fail($"slot {slot}: a chain of more than 100,000 (a cycle)");
                            return;
                        }

                        if ((uint)IdKeyProperty.GetValue(p)!.GetHashCode() % (uint)_slots.Length != slot)
                        {
                            Fail($"slot {slot}: a member of another slot");
                        }

                        if (!(bool)IsTakerField.GetValue(p)!)
                        {
                            Fail($"slot {slot}: a member not marked IsTokenTaker");
                        }

                        if (((TaskCompletionSource<Receipt>)p).Task.IsCompleted)
                        {
                            Fail($"slot {slot}: a member already answered ({((TaskCompletionSource<Receipt>)p).Task.Status})");
                        }
                    }

                    held += length;
                    LongestChain = Math.Max(LongestChain, length);
                }
            }

            MostHeld = Math.Max(MostHeld, held);
            Checks++;
        }

        /// <summary>Members of all chains, bounded (no lock: for a quiet pipeline).</summary>
        public int CountUnlocked()
        {
            int held = 0;
            foreach (object? head in _slots)
            {
                int length = 0;
                for (object? p = head; p is not null && length <= 100_000; p = NextField.GetValue(p))
                {
                    length++;
                }

                held += length;
            }

            return held;
        }

        private void Fail(string what)
        {
            Violation ??= what;
            Assert.Fail(what);
        }
    }

    /// <summary>A store that answers each group after a random delay (or at once, synchronously), stores each id once
    /// (a copy gets the first receipt, marked a duplicate), moves its mark after the group is findable, and fails by
    /// chance: a whole group (throws), single envelopes (a quota refusal or an I/O error), a group's last answer left
    /// out, and a fault on the batcher's thread where it reads the lookup mark.</summary>
    internal sealed class ChaosStore(int seed) : AdmissionOnlyStore
    {
        private readonly Random _rng = new(seed ^ 0x5EED);
        private readonly ConcurrentDictionary<string, PutReceipt> _stored = new();
        private readonly Lock _apply = new();
        private readonly SignedTreeHead _head = new(1, new byte[32], 0, new byte[32], new byte[64]);
        private long _mark;
        private long _nextIndex;
        private int _groups, _syncGroups, _open, _groupFaults, _itemFaults, _dropped, _markFaults;

        public int GroupFailPercent { get; init; }

        public int ItemFailPercent { get; init; }

        public int DropLastPercent { get; init; }

        public int MarkFaultPercent { get; init; }

        public int MaxDelayMs { get; init; } = 8;

        public int Groups => Volatile.Read(ref _groups);

        public int SyncGroups => Volatile.Read(ref _syncGroups);

        public int Open => Volatile.Read(ref _open);

        public int Stored => _stored.Count;

        public string Faults => $"faults: {_groupFaults} groups, {_itemFaults} items, {_dropped} short answers, {_markFaults} mark reads";

        public long? IndexOf(string id) => _stored.TryGetValue(id, out PutReceipt? r) ? r.LogIndex : null;

        private int Next(int max)
        {
            lock (_rng)
            {
                return _rng.Next(max);
            }
        }

        public override ValueTask<IReadOnlyList<PutResult>> PutManyAsync(IReadOnlyList<PutRequest> requests, CancellationToken cancellationToken = default)
        {
            Interlocked.Increment(ref _groups);
            int how = Next(100);
            if (how < 20)
            {
                Interlocked.Increment(ref _syncGroups);
                return ValueTask.FromResult(Apply(requests)); // answered on the batcher's thread
            }

            return Later(requests, how < 50 ? 0 : 1 + Next(MaxDelayMs));

            async ValueTask<IReadOnlyList<PutResult>> Later(IReadOnlyList<PutRequest> requests, int delayMs)
            {
                Interlocked.Increment(ref _open);
                try
                {
                    if (delayMs == 0)
                    {
                        await Task.Yield();
                    }
                    else
                    {
                        await Task.Delay(delayMs);
                    }

                    return Apply(requests);
                }
                finally
                {
                    Interlocked.Decrement(ref _open);
                }
            }
        }

        private IReadOnlyList<PutResult> Apply(IReadOnlyList<PutRequest> requests)
        {
            if (Next(100) < GroupFailPercent)
            {
                Interlocked.Increment(ref _groupFaults);
                throw new IOException("injected group failure");
            }

            bool dropLast = Next(100) < DropLastPercent;
            var results = new List<PutResult>(requests.Count);
            lock (_apply)
            {
                for (int i = 0; i < requests.Count; i++)
                {
                    if (dropLast && i == requests.Count - 1)
                    {
                        Interlocked.Increment(ref _dropped);
                        break;
                    }

                    string id = Convert.ToHexString(requests[i].EnvelopeId.Span);
                    int fail = Next(100);
                    if (fail < ItemFailPercent)
                    {
                        Interlocked.Increment(ref _itemFaults);
                        results.Add(new PutResult(null, fail % 2 == 0 ? new QuotaExceededException("injected quota refusal") : new IOException("injected item failure")));
                    }
                    else if (_stored.TryGetValue(id, out PutReceipt? existing))
                    {
                        results.Add(new PutResult(existing with { Duplicate = true }, null));
                    }
                    else
                    {
                        var receipt = new PutReceipt(requests[i].EnvelopeId.ToArray(), _nextIndex++, 1, _head, Duplicate: false);
                        _stored[id] = receipt;
                        results.Add(new PutResult(receipt, null));
                    }
                }

                // Findable first, then the mark moves, as the real store's: a lookup that read the new mark finds the group.
                Interlocked.Increment(ref _mark);
            }

            RaiseMailArrived();
            return results;
        }

        public override ValueTask<PutReceipt?> FindAsync(ReadOnlyMemory<byte> envelopeId, CancellationToken cancellationToken = default) =>
            ValueTask.FromResult(_stored.TryGetValue(Convert.ToHexString(envelopeId.Span), out PutReceipt? r) ? r with { Duplicate = true } : null);

        public override long LookupMark
        {
            get
            {
                if (MarkFaultPercent > 0 && Thread.CurrentThread.Name == "mn-admission" && Next(100) < MarkFaultPercent)
                {
                    Interlocked.Increment(ref _markFaults);
                    throw new InvalidOperationException("injected mark fault");
                }

                return Volatile.Read(ref _mark);
            }
        }
    }
}
