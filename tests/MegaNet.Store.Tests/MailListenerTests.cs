using System.Diagnostics.Metrics;
using MegaNet.Core.Diagnostics;
using MegaNet.Store;
using static MegaNet.Store.Tests.StoreTestKit;

namespace MegaNet.Store.Tests;

/// <summary>A <c>MailArrived</c> listener that throws fails no put and is counted, so a broken live delivery shows.</summary>
[Collection(AloneCollection.Name)]
public sealed class MailListenerTests : IDisposable
{
    private readonly string _dir = NewDirectory();
    private readonly Random _random = new(29);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public async Task A_throwing_listener_is_counted_and_fails_no_put()
    {
        long counted = 0;
        using var listener = new MeterListener
        {
            InstrumentPublished = (instrument, l) =>
            {
                if (instrument.Meter.Name == MegaNetMetrics.MeterName && instrument.Name == "meganet.store.mail_listener_failures")
                {
                    l.EnableMeasurementEvents(instrument);
                }
            },
        };
        listener.SetMeasurementEventCallback<long>((_, value, _, _) => Interlocked.Add(ref counted, value));
        listener.Start();

        await using FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(Options(_dir));
        int calls = 0;
        store.MailArrived += (_, _) =>
        {
            Interlocked.Increment(ref calls);
            throw new InvalidOperationException("listener broken");
        };
        byte[] recipient = Bytes(_random, 32);
        for (int i = 0; i < 3; i++)
        {
            PutReceipt receipt = await store.PutAsync(new PutRequest(Bytes(_random, 200), recipient, DateTimeOffset.UtcNow.AddDays(1)));
            Assert.Equal(i, receipt.LogIndex);
        }

        // A duplicate raises nothing.
        PutReceipt again = await store.PutAsync(new PutRequest(new byte[200], recipient, DateTimeOffset.UtcNow.AddDays(1)));
        Assert.True((await store.PutAsync(new PutRequest(new byte[200], recipient, DateTimeOffset.UtcNow.AddDays(1)))).Duplicate);
        Assert.Equal(3, again.LogIndex);
        Assert.Null(store.Fault);
        Assert.Equal(4, Volatile.Read(ref calls));
        Assert.Equal(4, Interlocked.Read(ref counted));
    }

    [Fact]
    public async Task Each_listener_call_carries_its_own_puts_recipient_and_seq()
    {
        // The store lends one address buffer to every call: each call must see its own put's recipient while it runs.
        await using FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(Options(_dir));
        var seen = new List<(byte[] Address, ulong Seq)>();
        var all = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        store.MailArrived += (address, seq) =>
        {
            lock (seen)
            {
                seen.Add((address.ToArray(), seq));
                if (seen.Count == 3)
                {
                    all.TrySetResult();
                }
            }
        };
        byte[][] recipients = [Bytes(_random, 32), Bytes(_random, 32), Bytes(_random, 32)];
        DateTimeOffset expiry = DateTimeOffset.UtcNow.AddDays(1);
        IReadOnlyList<PutResult> results = await store.PutManyAsync([.. recipients.Select(r => new PutRequest(Bytes(_random, 200), r, expiry))]);

        // Raised after the puts are answered: their caller may get here first.
        await all.Task.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(3, seen.Count);
        for (int i = 0; i < recipients.Length; i++)
        {
            Assert.Equal(recipients[i], seen[i].Address);
            Assert.Equal(results[i].Receipt!.MailboxSeq, seen[i].Seq);
        }
    }
}
