using MegaNet.Store;
using static MegaNet.Store.Tests.StoreTestKit;

namespace MegaNet.Store.Tests;

/// <summary>
/// A PutManyAsync call larger than one slice (<see cref="FasterEnvelopeStore.PutSlice"/>) may have its slices committed
/// in different groups. When a later group's commit fails, the slices committed before it are stored (their recipients
/// may have fetched them already), so their puts must keep their receipts, and only the failed slices' puts carry the
/// failure.
/// </summary>
public sealed class CommitFailureTests : IDisposable
{
    private readonly string _dir = NewDirectory();
    private readonly Random _random = new(17);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public async Task A_call_whose_second_group_fails_keeps_the_receipts_of_its_first()
    {
        int commits = 0;
        bool counting = false;
        StoreOptions options = Options(_dir);
        options.CheckpointInterval = TimeSpan.FromHours(1);
        // A slice per group, so the call's two slices are two commits: the first succeeds, the second fails.
        options.MaxGroupForTests = FasterEnvelopeStore.PutSlice;
        options.FailCommitForTests = () => Volatile.Read(ref counting) && Interlocked.Increment(ref commits) > 1;
        byte[][] recipients = Enumerable.Range(0, 64).Select(_ => Bytes(_random, 32)).ToArray();
        var puts = Enumerable.Range(0, 2 * FasterEnvelopeStore.PutSlice)
            .Select(i => new PutRequest(Bytes(_random, 200), recipients[i % recipients.Length], DateTimeOffset.UtcNow.AddDays(1))).ToList();
        IReadOnlyList<PutResult> results;
        FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options);
        try
        {
            Volatile.Write(ref counting, true);
            results = await store.PutManyAsync(puts);
        }
        finally
        {
            // The store refuses writes after the failed commit; its close says so.
            await Assert.ThrowsAsync<StoreUnavailableException>(async () => await store.DisposeAsync());
        }

        // Before, the whole call threw, and admission told every submitter "nothing was acknowledged".
        Assert.All(results.Take(FasterEnvelopeStore.PutSlice), r => Assert.NotNull(r.Receipt));
        Assert.All(results.Skip(FasterEnvelopeStore.PutSlice), r =>
        {
            Assert.Null(r.Receipt);
            Assert.Contains("nothing was acknowledged", Assert.IsType<StoreUnavailableException>(r.Error).Message, StringComparison.Ordinal);
        });

        // The receipts handed out hold: reopened, the store has every one of them.
        await using FasterEnvelopeStore reopened = await FasterEnvelopeStore.OpenAsync(Options(_dir));
        foreach (PutResult r in results.Take(FasterEnvelopeStore.PutSlice))
        {
            Assert.NotNull(await reopened.FindAsync(r.Receipt!.EnvelopeId));
        }
    }

    [Fact]
    public async Task A_call_none_of_whose_slices_was_stored_throws()
    {
        StoreOptions options = Options(_dir);
        options.FailCommitForTests = () => true;
        byte[] recipient = Bytes(_random, 32);
        FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options);
        try
        {
            await Assert.ThrowsAsync<StoreUnavailableException>(async () => await store.PutManyAsync(
                [.. Enumerable.Range(0, 3).Select(_ => new PutRequest(Bytes(_random, 200), recipient, DateTimeOffset.UtcNow.AddDays(1)))]));
        }
        finally
        {
            await Assert.ThrowsAsync<StoreUnavailableException>(async () => await store.DisposeAsync());
        }
    }
}
