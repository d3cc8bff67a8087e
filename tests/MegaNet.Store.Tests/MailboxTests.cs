using MegaNet.Store;
using Xunit.Abstractions;

namespace MegaNet.Store.Tests;

/// <summary>The mailbox index (struct slots, marked removals, squeezing) against a sorted dictionary.</summary>
public sealed class MailboxTests(ITestOutputHelper output)
{
    [Fact]
    public void Random_adds_removes_and_pages_match_a_sorted_dictionary()
    {
        int seed = StoreTestKit.Seed();
        output.WriteLine($"seed {seed} (replay with MEGANET_TEST_SEED={seed})");
        var random = new Random(seed);
        var box = new Mailbox();
        var model = new SortedDictionary<ulong, IndexEntry>();
        ulong nextSeq = 1;
        for (int step = 0; step < 20_000; step++)
        {
            // Growth first, then a drain (removals outnumber entries, so slots get squeezed), then growth again.
            int op = random.Next(10);
            int addShare = step is >= 8_000 and < 14_000 ? 2 : 5;
            if (op < addShare || model.Count == 0)
            {
                // Mostly appends; sometimes an older sequence number (a checkpoint's entries or a replayed put).
                ulong seq = random.Next(8) == 0 && nextSeq > 10 ? (ulong)random.NextInt64(1, (long)nextSeq) : nextSeq++;
                var entry = new IndexEntry(seq, new FasterEnvelopeStore.Key32(Guid.NewGuid().ToByteArray().Concat(Guid.NewGuid().ToByteArray()).ToArray()), random.Next(100), step, random.Next(1, 5000));
                box.Add(entry);
                model[seq] = entry;
            }
            else if (op < 9 || addShare == 2)
            {
                // Remove a present entry, or one that is not there.
                ulong seq = random.Next(4) == 0 ? (ulong)random.NextInt64(1, (long)nextSeq + 5) : model.Keys.ElementAt(random.Next(model.Count));
                bool present = model.Remove(seq, out IndexEntry expected);
                Assert.Equal(present, box.Remove(seq, out IndexEntry removed));
                if (present)
                {
                    Assert.Equal(expected, removed);
                }
            }
            else
            {
                ulong after = (ulong)random.NextInt64(0, (long)nextSeq + 2);
                int limit = random.Next(1, 50);
                long cutoff = random.Next(100);
                // Half the pages under a byte limit (entries are 1 to 4,999 bytes): a page then ends before the entry
                // that would pass it, except that the first is always taken.
                long maxBytes = random.Next(2) == 0 ? long.MaxValue : random.Next(1, 20_000);
                var page = new List<IndexEntry>();
                ulong last = box.CopyAfter(after, limit, maxBytes, page, nowUnixMs: cutoff - 1); // expired: ExpiresUnixMs < cutoff
                var expectedPage = new List<IndexEntry>();
                ulong expectedLast = after;
                long bytes = 0;
                foreach (IndexEntry e in model.Values.Where(e => e.Seq > after))
                {
                    if (expectedPage.Count == limit)
                    {
                        break;
                    }

                    if (e.ExpiresUnixMs >= cutoff)
                    {
                        if (expectedPage.Count > 0 && bytes + e.Length > maxBytes)
                        {
                            break;
                        }

                        bytes += e.Length;
                        expectedPage.Add(e);
                    }

                    expectedLast = e.Seq;
                }

                Assert.Equal(expectedPage, page);
                Assert.Equal(expectedLast, last);
            }

            Assert.Equal(model.Count, box.Count);
            Assert.Equal(model.Values.Sum(e => (long)e.Length), box.Bytes);
            if (step % 100 == 0)
            {
                long now = random.Next(-1, 101); // expiries are 0..99
                IndexEntry[] unexpired = model.Values.Where(e => e.ExpiresUnixMs > now).ToArray();
                Assert.Equal((unexpired.Length, unexpired.Sum(e => (long)e.Length)), box.Unexpired(now));
            }
        }

        var live = new IndexEntry[box.Count + 3];
        Assert.Equal(box.Count, box.CopyLive(live));
        Assert.Equal(model.Values.ToArray(), live[..box.Count]);

        // As a snapshot copies a mailbox over the chunks of its buffer: pieces of any size, going on where the last
        // stopped, make the same entries.
        var pieces = new List<IndexEntry>();
        int slot = 0;
        while (pieces.Count < box.Count)
        {
            var piece = new IndexEntry[random.Next(1, 8)];
            int n = box.CopyLive(ref slot, piece);
            Assert.True(n == piece.Length || pieces.Count + n == box.Count, $"a piece of {piece.Length} took {n} entries with {box.Count - pieces.Count} to go");
            pieces.AddRange(piece[..n]);
        }

        Assert.Equal(model.Values.ToArray(), pieces.ToArray());
        Assert.Equal(0, box.CopyLive(ref slot, new IndexEntry[4]));
    }
}
