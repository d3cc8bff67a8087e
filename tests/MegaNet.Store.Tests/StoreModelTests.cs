using System.Globalization;
using MegaNet.Store;
using Xunit.Abstractions;
using static MegaNet.Store.Tests.StoreTestKit;

namespace MegaNet.Store.Tests;

/// <summary>
/// The store against a model of what it promises, over random puts, replays, acks, expiry, checkpoints (sweep and
/// compaction), reopens and crashes (the files an open store has, opened), with a memory budget small enough that most records live on disk and compaction runs often:
/// every put is taken or refused for a quota exactly as the model counts the mailbox, every mailbox lists exactly its
/// live mail in order, byte for byte, and a replay finds its original receipt until
/// the envelope expires. A compaction that dropped live records behind a tag collision was found this way.
/// </summary>
public sealed class StoreModelTests(ITestOutputHelper output) : IDisposable
{
    private readonly List<string> _dirs = [NewDirectory()];

    public void Dispose() => _dirs.ForEach(d => Directory.Delete(d, recursive: true));

    private sealed record Stored(byte[] Envelope, byte[] Recipient, DateTimeOffset ExpiresAt, PutReceipt Receipt)
    {
        public bool Acked { get; set; }
    }

    [Theory]
    [InlineData(false, false)]
    [InlineData(true, false)] // the table layout of stores before manifest version 3: metadata and bytes in records apart
    [InlineData(false, true)] // checkpoints in the background too, so compactions run a step at a time between the steps
    public async Task Random_operations_keep_every_mailbox_and_replay_as_the_model_says(bool separateRecords, bool background)
    {
        int seed = StoreTestKit.Seed(1_000_000);
        output.WriteLine($"seed {seed} (MEGANET_TEST_SEED={seed} repeats this run)");
        var random = new Random(seed);
        var clock = new ManualClock(DateTimeOffset.UtcNow);
        StoreOptions options = Options(_dirs[0], clock);
        // Sweeps and compactions when the test asks, or in the background every 15 ms (the store's clock is the test's,
        // but checkpoints are due by the machine's): the compactions those start run a step at a time between groups,
        // so puts, acks, replays, reopens and crash images come halfway through one.
        options.CheckpointInterval = background ? TimeSpan.FromMilliseconds(15) : TimeSpan.FromDays(1);
        // Quotas that fill: every put is taken or refused exactly as the model counts the mailbox (live mail only).
        options.MailboxMaxCount = 60;
        options.MailboxMaxBytes = 300_000;
        options.SeparateEnvelopeRecordsForTests = separateRecords;
        options.IndexBytesForTests = 4_096; // 64 buckets: keys share chains and overflow buckets, tags collide
        byte[][] recipients = [.. Enumerable.Range(0, 12).Select(_ => Bytes(random, 32))];
        var stored = new List<Stored>();
        int checkpoints = 0, reopens = 0, crashes = 0, compactions = 0, refused = 0;
        FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options);
        Queue<byte[]> sharedSlotIds = SharedSlotIds(store, random);
        long stepsBetweenGroups = 0;
        try
        {
            for (int step = 0; step < 1_200; step++)
            {
                string at = $"seed {seed}, step {step}";
                int op = random.Next(100);
                if (op < 45)
                {
                    // New envelopes, with now and then a replay of one that has not expired among them.
                    var batch = new List<(PutRequest Put, Stored? Original)>();
                    for (int i = random.Next(1, 21); i > 0; i--)
                    {
                        Stored? replay = random.Next(8) == 0 ? Live(stored, clock.Now).OrderBy(_ => random.Next()).FirstOrDefault() : null;
                        batch.Add(replay is not null
                            ? (new PutRequest(replay.Envelope, replay.Recipient, replay.ExpiresAt) { EnvelopeId = replay.Receipt.EnvelopeId }, replay)
                            : (new PutRequest(Bytes(random, random.Next(200, 12_000)), recipients[random.Next(recipients.Length)], clock.Now.AddMinutes(random.Next(2, 300)))
                            {
                                // Half of them under ids that share an index chain with another (the store takes a given id as is).
                                EnvelopeId = random.Next(2) == 0 && sharedSlotIds.TryDequeue(out byte[]? id) ? id : Bytes(random, 32),
                            }, null));
                    }

                    IReadOnlyList<PutResult> results = await store.PutManyAsync([.. batch.Select(b => b.Put)]);
                    var firstInBatch = new Dictionary<string, PutReceipt>();
                    for (int i = 0; i < batch.Count; i++)
                    {
                        string key = Convert.ToHexString(batch[i].Put.EnvelopeId.Span);
                        if (batch[i].Original is null && !firstInBatch.ContainsKey(key))
                        {
                            List<Stored> waiting = [.. Live(stored, clock.Now).Where(e => !e.Acked && e.Recipient.AsSpan().SequenceEqual(batch[i].Put.Recipient.Span))];
                            bool full = waiting.Count + 1 > options.MailboxMaxCount || waiting.Sum(e => e.Envelope.Length) + batch[i].Put.Envelope.Length > options.MailboxMaxBytes;
                            Assert.True(full == results[i].Error is QuotaExceededException,
                                $"{at}: {waiting.Count} envelopes of {waiting.Sum(e => e.Envelope.Length)} bytes waiting, a put of {batch[i].Put.Envelope.Length} bytes: {results[i].Error?.GetType().Name ?? "taken"}");
                            if (full)
                            {
                                refused++;
                                continue;
                            }
                        }

                        PutReceipt receipt = results[i].Receipt ?? throw new Xunit.Sdk.XunitException($"{at}: put refused: {results[i].Error}");
                        if (batch[i].Original is { } original)
                        {
                            Assert.True(receipt.Duplicate, $"{at}: a replay was stored again");
                            Assert.Equal(original.Receipt.LogIndex, receipt.LogIndex);
                        }
                        else if (firstInBatch.TryGetValue(key, out PutReceipt? first))
                        {
                            Assert.Equal(first.LogIndex, receipt.LogIndex);
                        }
                        else
                        {
                            Assert.False(receipt.Duplicate, $"{at}: a new envelope was taken for a replay");
                            firstInBatch[key] = receipt;
                            stored.Add(new Stored(batch[i].Put.Envelope.ToArray(), batch[i].Put.Recipient.ToArray(), batch[i].Put.ExpiresAt, receipt));
                        }
                    }
                }
                else if (op < 60)
                {
                    // The owner acknowledges some of its mail, now and then with a number never given.
                    byte[] recipient = recipients[random.Next(recipients.Length)];
                    List<Stored> mine = [.. Live(stored, clock.Now).Where(e => e.Recipient.AsSpan().SequenceEqual(recipient) && !e.Acked).Where(_ => random.Next(3) == 0)];
                    var seqs = mine.Select(e => e.Receipt.MailboxSeq).ToList();
                    if (random.Next(4) == 0)
                    {
                        seqs.Add((ulong)random.NextInt64(1L << 40, 1L << 50));
                    }

                    // Expired mail too, now and then: counted while the index still holds it (until the sweep).
                    List<Stored> expired = random.Next(3) == 0
                        ? [.. stored.Where(e => e.ExpiresAt <= clock.Now && !e.Acked && e.Recipient.AsSpan().SequenceEqual(recipient)).Where(_ => random.Next(2) == 0)]
                        : [];
                    seqs.AddRange(expired.Select(e => e.Receipt.MailboxSeq));
                    int acked = await store.AckAsync(recipient, seqs);
                    Assert.InRange(acked, mine.Count, mine.Count + expired.Count);
                    mine.ForEach(e => e.Acked = true);
                    expired.ForEach(e => e.Acked = true);
                }
                else if (op < 72)
                {
                    clock.Now = clock.Now.AddMinutes(random.Next(0, 11));
                }
                else if (op < 82)
                {
                    long begin = store.TableExtent.Begin;
                    if (background)
                    {
                        // A pause instead of an asked-for checkpoint (which would finish a compaction whole): the
                        // background ones go on, and an idle committer compacts page after page.
                        await Task.Delay(random.Next(5, 40));
                    }
                    else
                    {
                        await store.CheckpointAsync();
                    }

                    checkpoints++;
                    compactions += store.TableExtent.Begin > begin ? 1 : 0;
                }
                else if (op < 84)
                {
                    stepsBetweenGroups += store.CompactionStepsBetweenGroups;
                    await store.DisposeAsync();
                    store = await FasterEnvelopeStore.OpenAsync(options);
                    reopens++;
                }
                else if (op < 86)
                {
                    // What kill -9 now would leave (every put and ack above was acknowledged), opened in a copy.
                    // No checkpoint may write while the files are copied (the copy would hold a manifest from after
                    // the checkpoint files it copied, or a commit record naming a log segment it found deleted); a
                    // compaction under way goes on, as it would up to a crash. A checkpoint the committer found due
                    // just before the interval changed can still start after the wait: such a copy is taken again.
                    options.CheckpointInterval = background ? TimeSpan.FromDays(1) : options.CheckpointInterval;
                    string crashed;
                    for (var waited = System.Diagnostics.Stopwatch.StartNew(); ; await Task.Delay(2))
                    {
                        // A minute: a checkpoint's writes and flushes wait on a disk other tests share on a loaded machine.
                        Assert.True(waited.Elapsed < TimeSpan.FromMinutes(1), $"{at}: background checkpoints did not stop within a minute");
                        if (store.BackgroundCheckpointUnfinished)
                        {
                            continue;
                        }

                        long started = store.BackgroundCheckpointsStarted;
                        crashed = NewDirectory();
                        _dirs.Add(crashed);
                        try
                        {
                            CopyStoreFiles(store.StoreDirectory, Path.Combine(crashed, "store"));
                        }
                        catch (IOException) when (store.BackgroundCheckpointsStarted != started || store.BackgroundCheckpointUnfinished)
                        {
                            continue; // a file that checkpoint deleted under the copy
                        }

                        if (store.BackgroundCheckpointsStarted == started && !store.BackgroundCheckpointUnfinished)
                        {
                            break;
                        }
                    }

                    stepsBetweenGroups += store.CompactionStepsBetweenGroups;
                    await store.DisposeAsync();
                    options.DataDirectory = crashed;
                    options.CheckpointInterval = background ? TimeSpan.FromMilliseconds(15) : options.CheckpointInterval;
                    store = await FasterEnvelopeStore.OpenAsync(options);
                    crashes++;
                }
                else
                {
                    await CheckMailboxAsync(store, recipients[random.Next(recipients.Length)], stored, clock.Now, at);
                    foreach (Stored e in stored.OrderBy(_ => random.Next()).Take(20))
                    {
                        PutReceipt? found = await store.FindAsync(e.Receipt.EnvelopeId);
                        if (e.ExpiresAt > clock.Now)
                        {
                            Assert.True(found is not null, $"{at}: envelope of log index {e.Receipt.LogIndex} (acked: {e.Acked}) not found before its expiry");
                            Assert.Equal(e.Receipt.LogIndex, found.LogIndex);
                        }
                        else
                        {
                            Assert.Null(found);
                        }
                    }
                }
            }

            foreach (byte[] recipient in recipients)
            {
                await CheckMailboxAsync(store, recipient, stored, clock.Now, $"seed {seed}, end");
            }

            stepsBetweenGroups += store.CompactionStepsBetweenGroups;
            output.WriteLine($"{stored.Count} envelopes ({refused} refused for a quota), {checkpoints} checkpoints or pauses ({compactions} moved the table's begin address), {reopens} reopens, {crashes} crashes, {stepsBetweenGroups} compaction steps between groups");
            Assert.True(background ? stepsBetweenGroups > 0 : compactions > 0, $"seed {seed}: no compaction ran{(background ? " a step at a time" : "")}; the test wants some");
        }
        finally
        {
            await store.DisposeAsync();
        }
    }

    // Ids in groups that share an index bucket and tag (so one chain), group after group: the lookup of an older one
    // starts at a newer one's record. 40,000 random ids over 64 buckets and 2^14 tags give several hundred such pairs.
    private static Queue<byte[]> SharedSlotIds(FasterEnvelopeStore store, Random random)
    {
        var bySlot = new Dictionary<(long, ushort), List<byte[]>>();
        for (int i = 0; i < 40_000; i++)
        {
            byte[] id = Bytes(random, 32);
            (long bucket, ushort tag) = store.TableSlotForTests(id);
            Assert.True(bucket >= 0, "the table's index was not found");
            if (!bySlot.TryGetValue((bucket, tag), out List<byte[]>? ids))
            {
                bySlot[(bucket, tag)] = ids = [];
            }

            ids.Add(id);
        }

        return new Queue<byte[]>(bySlot.Values.Where(ids => ids.Count > 1).SelectMany(ids => ids));
    }

    [Theory]
    [InlineData(false, 2)]
    [InlineData(true, 2)] // checkpoints in the background only: compactions run a step at a time between the owners' groups
    [InlineData(true, 4)] // four groups prepared and committing at once (StoreOptions.GroupsInFlight)
    public async Task Owners_side_by_side_with_checkpoints_between_them_each_see_what_their_own_model_says(bool background, int groupsInFlight)
    {
        // Four owners, each with three mailboxes of its own, send, replay, acknowledge and list at once (their puts and
        // acks share group commits in the store's pipeline), while checkpoints (sweeps, compactions) are asked for
        // between them. Each owner's mailboxes hold exactly what its own sequential model says.
        int seed = StoreTestKit.Seed(1_000_000);
        output.WriteLine($"seed {seed} (MEGANET_TEST_SEED={seed} repeats this run)");
        StoreOptions options = Options(_dirs[0]);
        options.CheckpointInterval = background ? TimeSpan.FromMilliseconds(10) : TimeSpan.FromDays(1);
        options.GroupsInFlight = groupsInFlight;
        options.MailboxMaxCount = 40;
        options.MailboxMaxBytes = 200_000;
        options.IndexBytesForTests = 4_096;
        await using FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options);
        // Not Random(seed + owner) of owner 0, whose own ids would then be among these (two owners stored one id).
        Queue<byte[]> sharedSlotIds = SharedSlotIds(store, new Random(seed - 2));
        using var done = new CancellationTokenSource();
        int checkpoints = 0;
        Task checkpointing = Task.Run(async () =>
        {
            var random = new Random(seed - 1);
            while (!background && !done.IsCancellationRequested)
            {
                await Task.Delay(random.Next(5, 60));
                await store.CheckpointAsync();
                checkpoints++;
            }
        });

        async Task<int> Owner(int owner)
        {
            var random = new Random(seed + owner);
            byte[][] mailboxes = [.. Enumerable.Range(0, 3).Select(_ => Bytes(random, 32))];
            var stored = new List<Stored>();
            for (int step = 0; step < 250; step++)
            {
                string at = $"seed {seed}, owner {owner}, step {step}";
                int op = random.Next(100);
                if (op < 55)
                {
                    var batch = new List<(PutRequest Put, Stored? Original)>();
                    for (int i = random.Next(1, 11); i > 0; i--)
                    {
                        Stored? replay = random.Next(8) == 0 ? stored.OrderBy(_ => random.Next()).FirstOrDefault() : null;
                        byte[]? id = null;
                        if (replay is null && random.Next(2) == 0)
                        {
                            lock (sharedSlotIds)
                            {
                                sharedSlotIds.TryDequeue(out id);
                            }
                        }

                        batch.Add(replay is not null
                            ? (new PutRequest(replay.Envelope, replay.Recipient, replay.ExpiresAt) { EnvelopeId = replay.Receipt.EnvelopeId }, replay)
                            : (new PutRequest(Bytes(random, random.Next(200, 12_000)), mailboxes[random.Next(3)], DateTimeOffset.UtcNow.AddDays(1)) { EnvelopeId = id ?? Bytes(random, 32) }, null));
                    }

                    IReadOnlyList<PutResult> results = await store.PutManyAsync([.. batch.Select(b => b.Put)]);
                    for (int i = 0; i < batch.Count; i++)
                    {
                        if (batch[i].Original is { } original)
                        {
                            PutReceipt again = results[i].Receipt ?? throw new Xunit.Sdk.XunitException($"{at}: a replay was refused: {results[i].Error}");
                            Assert.True(again.Duplicate && again.LogIndex == original.Receipt.LogIndex, $"{at}: a replay was stored again");
                            continue;
                        }

                        List<Stored> waiting = [.. stored.Where(e => !e.Acked && e.Recipient.AsSpan().SequenceEqual(batch[i].Put.Recipient.Span))];
                        bool full = waiting.Count + 1 > options.MailboxMaxCount || waiting.Sum(e => e.Envelope.Length) + batch[i].Put.Envelope.Length > options.MailboxMaxBytes;
                        Assert.True(full == results[i].Error is QuotaExceededException, $"{at}: {waiting.Count} waiting, {results[i].Error?.GetType().Name ?? "taken"}");
                        if (!full)
                        {
                            PutReceipt receipt = results[i].Receipt ?? throw new Xunit.Sdk.XunitException($"{at}: put refused: {results[i].Error}");
                            Assert.False(receipt.Duplicate, $"{at}: a new envelope was taken for a replay");
                            stored.Add(new Stored(batch[i].Put.Envelope.ToArray(), batch[i].Put.Recipient.ToArray(), batch[i].Put.ExpiresAt, receipt));
                        }
                    }
                }
                else if (op < 80)
                {
                    byte[] mailbox = mailboxes[random.Next(3)];
                    List<Stored> mine = [.. stored.Where(e => !e.Acked && e.Recipient.AsSpan().SequenceEqual(mailbox) && random.Next(2) == 0)];
                    Assert.Equal(mine.Count, await store.AckAsync(mailbox, [.. mine.Select(e => e.Receipt.MailboxSeq)]));
                    mine.ForEach(e => e.Acked = true);
                }
                else
                {
                    await CheckMailboxAsync(store, mailboxes[random.Next(3)], stored, DateTimeOffset.UtcNow, at);
                }
            }

            foreach (byte[] mailbox in mailboxes)
            {
                await CheckMailboxAsync(store, mailbox, stored, DateTimeOffset.UtcNow, $"seed {seed}, owner {owner}, end");
            }

            foreach (Stored e in stored)
            {
                Assert.Equal(e.Receipt.LogIndex, (await store.FindAsync(e.Receipt.EnvelopeId))?.LogIndex);
            }

            return stored.Count;
        }

        int[] counts;
        try
        {
            counts = await Task.WhenAll(Enumerable.Range(0, 4).Select(o => Task.Run(() => Owner(o))));
        }
        finally
        {
            done.Cancel();
            await checkpointing;
        }

        output.WriteLine($"{counts.Sum()} envelopes stored by 4 owners, {checkpoints} checkpoints asked for between them, table begin {store.TableExtent.Begin:N0}, {store.CompactionStepsBetweenGroups} compaction steps between groups");
        Assert.True(store.TableExtent.Begin > 64, $"seed {seed}: no compaction ran; the test wants some");
        Assert.True(!background || store.CompactionStepsBetweenGroups > 0, $"seed {seed}: no compaction ran a step at a time; the test wants some");
    }

    private static IEnumerable<Stored> Live(List<Stored> stored, DateTimeOffset now) => stored.Where(e => e.ExpiresAt > now);

    // The whole mailbox, page by page: exactly the live, unacknowledged mail, in order, byte for byte.
    private static async Task CheckMailboxAsync(FasterEnvelopeStore store, byte[] recipient, List<Stored> stored, DateTimeOffset now, string at)
    {
        List<Stored> expected = [.. Live(stored, now).Where(e => !e.Acked && e.Recipient.AsSpan().SequenceEqual(recipient)).OrderBy(e => e.Receipt.MailboxSeq)];
        var listed = new List<MailboxEntry>();
        ulong after = 0;
        while (true)
        {
            MailboxPage page = await store.ListAsync(recipient, after, 37);
            if (page.Entries.Count == 0)
            {
                break;
            }

            listed.AddRange(page.Entries);
            after = page.NextCursor;
        }

        Assert.True(expected.Count == listed.Count, $"{at}: the mailbox lists {listed.Count} envelopes, the model {expected.Count}");
        for (int i = 0; i < expected.Count; i++)
        {
            Assert.Equal(expected[i].Receipt.MailboxSeq, listed[i].Seq);
            Assert.Equal(expected[i].Receipt.LogIndex, listed[i].LogIndex);
            Assert.True(expected[i].Envelope.AsSpan().SequenceEqual(listed[i].Envelope), $"{at}: the envelope of seq {listed[i].Seq} differs");
        }
    }
}
