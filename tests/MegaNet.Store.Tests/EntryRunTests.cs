using System.Buffers;
using MegaNet.Store;

namespace MegaNet.Store.Tests;

/// <summary>A mailbox's entries in a checkpoint snapshot as one sequence of the runs the buffer's chunks hold.</summary>
public sealed class EntryRunTests
{
    private static IndexEntry[] Entries(ulong firstSeq, int count) =>
        [.. Enumerable.Range(0, count).Select(i => new IndexEntry(firstSeq + (ulong)i, default, 0, (long)firstSeq + i, 100 + i))];

    private static IndexEntry[] Flatten(ReadOnlySequence<IndexEntry> sequence)
    {
        var all = new List<IndexEntry>();
        foreach (ReadOnlyMemory<IndexEntry> run in sequence)
        {
            all.AddRange(run.ToArray());
        }

        return [.. all];
    }

    [Fact]
    public void Runs_across_chunks_read_back_in_order_without_the_empty_ones()
    {
        IndexEntry[] chunkA = Entries(1, 10), chunkB = Entries(11, 10), chunkC = Entries(21, 10);
        List<ArraySegment<IndexEntry>> runs = [new(chunkA, 6, 4), new(chunkB, 0, 0), new(chunkB, 0, 10), new(chunkC, 0, 3)];

        ReadOnlySequence<IndexEntry> sequence = EntryRun.Sequence(runs);

        Assert.Equal(17, sequence.Length);
        Assert.Equal([.. chunkA[6..], .. chunkB, .. chunkC[..3]], Flatten(sequence));
        Assert.False(sequence.IsSingleSegment);
    }

    [Fact]
    public void One_run_is_a_single_segment_and_none_is_empty()
    {
        IndexEntry[] chunk = Entries(1, 8);

        ReadOnlySequence<IndexEntry> one = EntryRun.Sequence([new(chunk, 0, 0), new(chunk, 2, 5)]);
        Assert.True(one.IsSingleSegment);
        Assert.Equal(chunk[2..7], Flatten(one));

        Assert.True(EntryRun.Sequence([new(chunk, 3, 0)]).IsEmpty);
        Assert.True(EntryRun.Sequence([]).IsEmpty);
    }
}
