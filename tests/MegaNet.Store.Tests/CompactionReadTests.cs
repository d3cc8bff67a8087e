using MegaNet.Store;
using static MegaNet.Store.Tests.StoreTestKit;

namespace MegaNet.Store.Tests;

/// <summary>Reads racing compaction (which copies live records to the tail and moves the table's begin address past
/// the old ones). Before reads retried, about 1 in 150 of them here missed a live envelope.</summary>
public sealed class CompactionReadTests : IDisposable
{
    private readonly string _dir = NewDirectory();
    private readonly Random _random = new(11);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public async Task Reads_during_compaction_find_every_live_envelope()
    {
        var clock = new ManualClock(DateTimeOffset.UtcNow);
        await using FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(Options(_dir, clock));
        byte[] keeper = Bytes(_random, 32);
        var kept = new List<PutReceipt>();
        int misses = 0, reads = 0;
        // Rounds until the race was hit (a read retried) a few times over, or enough rounds that it surely was.
        for (int round = 0; round < 16 && (round < 4 || store.TableCompactionRetries < 3); round++)
        {
            for (int i = 0; i < 1500; i++)
            {
                await store.PutAsync(new PutRequest(Bytes(_random, 4096), Bytes(_random, 32), clock.Now.AddHours(1)));
                if (i % 10 == 0)
                {
                    kept.Add(await store.PutAsync(new PutRequest(Bytes(_random, 2048), keeper, clock.Now.AddDays(20))));
                }
            }

            clock.Now = clock.Now.AddHours(2);
            using var stop = new CancellationTokenSource();
            Task readers = Task.WhenAll(Enumerable.Range(0, 4).Select(r => Task.Run(async () =>
            {
                while (!stop.IsCancellationRequested)
                {
                    MailboxPage page = await store.ListAsync(keeper, 0, 10_000);
                    Interlocked.Increment(ref reads);
                    if (page.Entries.Count != kept.Count)
                    {
                        Interlocked.Increment(ref misses);
                    }

                    PutReceipt some = kept[(r * 7919 + reads) % kept.Count];
                    if (await store.FindAsync(some.EnvelopeId) is null)
                    {
                        Interlocked.Increment(ref misses);
                    }
                }
            })));
            (long b0, _) = store.TableExtent;
            await store.CheckpointAsync();
            (long b1, _) = store.TableExtent;
            await Task.Delay(50);
            stop.Cancel();
            await readers;
            Assert.True(b1 > b0, "no compaction");
        }

        Assert.True(misses == 0, $"{misses} of {reads} reads missed live envelopes ({store.TableCompactionRetries} retried)");
        Assert.True(store.TableCompactionRetries > 0, $"no read of {reads} raced a compaction: the test did not test");
    }
}
