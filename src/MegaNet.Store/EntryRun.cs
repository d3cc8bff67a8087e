using System.Buffers;

namespace MegaNet.Store;

/// <summary>A run of a mailbox's entries in a checkpoint's snapshot, linked to the next when the mailbox spans chunks of
/// the snapshot buffer.</summary>
internal sealed class EntryRun : ReadOnlySequenceSegment<IndexEntry>
{
    private EntryRun(ReadOnlyMemory<IndexEntry> entries, long runningIndex)
    {
        Memory = entries;
        RunningIndex = runningIndex;
    }

    /// <summary>The entries of <paramref name="runs"/>, in order, as one sequence (empty runs left out): no allocation
    /// for the usual mailbox that lies in one chunk.</summary>
    public static ReadOnlySequence<IndexEntry> Sequence(List<ArraySegment<IndexEntry>> runs)
    {
        EntryRun? first = null, last = null;
        ArraySegment<IndexEntry> only = default;
        int nonEmpty = 0;
        foreach (ArraySegment<IndexEntry> run in runs)
        {
            if (run.Count == 0)
            {
                continue;
            }

            if (++nonEmpty == 1)
            {
                only = run;
                continue;
            }

            if (first is null)
            {
                first = last = new EntryRun(only, 0);
            }

            var next = new EntryRun(run, last!.RunningIndex + last.Memory.Length);
            last.Next = next;
            last = next;
        }

        return nonEmpty switch
        {
            0 => ReadOnlySequence<IndexEntry>.Empty,
            1 => new ReadOnlySequence<IndexEntry>(only.Array!, only.Offset, only.Count),
            _ => new ReadOnlySequence<IndexEntry>(first!, 0, last!, last!.Memory.Length),
        };
    }
}
