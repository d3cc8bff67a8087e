namespace MegaNet.Store;

/// <summary>One waiting envelope in a mailbox index: 64 bytes, no object of its own.</summary>
internal readonly record struct IndexEntry(ulong Seq, FasterEnvelopeStore.Key32 Id, long ExpiresUnixMs, long LogIndex, int Length);

/// <summary>
/// A recipient's waiting envelopes in sequence order: an array of <see cref="IndexEntry"/> structs, appended at the end
/// (sequence numbers only grow), with acknowledged or expired slots marked and squeezed out once they are the majority.
/// The store gives the sequence numbers (from the log index) and drops a mailbox once it is empty.
/// Not thread-safe: the store serialises access.
/// </summary>
/// <remarks>
/// Replaces a sorted set plus a dictionary of records (about 150 bytes and six objects per waiting envelope): a loaded
/// relay spent about a third of its CPU in background GCs tracing long-lived objects like those. Lookups by sequence
/// number are binary searches over the slots; removed slots keep their sequence number, so the order holds.
/// </remarks>
internal sealed class Mailbox
{
    private IndexEntry[] _slots = new IndexEntry[4];
    private bool[] _removed = new bool[4];
    private int _used;
    private int _first;

    /// <summary>Live (waiting) entries.</summary>
    public int Count { get; private set; }

    /// <summary>Whether the store reports this mailbox's usage (<see cref="FasterEnvelopeStore.ReportedUsage"/>).</summary>
    public bool Reported { get; set; }

    /// <summary>Bytes of the live entries' envelopes.</summary>
    public long Bytes { get; private set; }

    /// <summary>Adds an entry (in place of a live one with the same sequence number, if any).</summary>
    public void Add(in IndexEntry entry)
    {
        // Almost every add is the newest sequence number: no search for those.
        int at = _used == 0 || _slots[_used - 1].Seq < entry.Seq ? ~_used : Search(entry.Seq);
        if (at >= 0)
        {
            if (!_removed[at])
            {
                Bytes -= _slots[at].Length;
                Count--;
            }

            _slots[at] = entry;
            _removed[at] = false;
            _first = Math.Min(_first, at);
        }
        else
        {
            at = ~at;
            if (_used == _slots.Length)
            {
                Array.Resize(ref _slots, _slots.Length * 2);
                Array.Resize(ref _removed, _removed.Length * 2);
            }

            // Almost always the end (sequence numbers grow); a checkpoint's entries arrive in order too.
            Array.Copy(_slots, at, _slots, at + 1, _used - at);
            Array.Copy(_removed, at, _removed, at + 1, _used - at);
            _slots[at] = entry;
            _removed[at] = false;
            _used++;
            _first = Math.Min(_first, at);
        }

        Count++;
        Bytes += entry.Length;
    }

    /// <summary>Count and bytes of the live entries that have not expired at <paramref name="nowUnixMs"/> (a scan).</summary>
    public (int Count, long Bytes) Unexpired(long nowUnixMs)
    {
        int count = 0;
        long bytes = 0;
        for (int i = _first; i < _used; i++)
        {
            if (!_removed[i] && _slots[i].ExpiresUnixMs > nowUnixMs)
            {
                count++;
                bytes += _slots[i].Length;
            }
        }

        return (count, bytes);
    }

    /// <summary>The live entry with sequence number <paramref name="seq"/>; false when there is none.</summary>
    public bool TryGet(ulong seq, out IndexEntry entry)
    {
        int at = Search(seq);
        bool live = at >= 0 && !_removed[at];
        entry = live ? _slots[at] : default;
        return live;
    }

    /// <summary>The live entry of envelope <paramref name="id"/>, or null (a scan).</summary>
    public IndexEntry? Find(FasterEnvelopeStore.Key32 id)
    {
        for (int i = _first; i < _used; i++)
        {
            if (!_removed[i] && _slots[i].Id.Equals(id))
            {
                return _slots[i];
            }
        }

        return null;
    }

    /// <summary>Removes the live entry with sequence number <paramref name="seq"/>; false when there is none.</summary>
    public bool Remove(ulong seq, out IndexEntry removed)
    {
        int at = Search(seq);
        if (at < 0 || _removed[at])
        {
            removed = default;
            return false;
        }

        removed = _slots[at];
        _removed[at] = true;
        Count--;
        Bytes -= removed.Length;
        while (_first < _used && _removed[_first])
        {
            _first++;
        }

        if (_used - Count > 64 && _used - Count > Count)
        {
            Squeeze();
        }

        return true;
    }

    /// <summary>Copies up to <paramref name="limit"/> live entries with sequence numbers above <paramref name="afterSeq"/>
    /// into <paramref name="into"/>, and past the first no more than <paramref name="maxBytes"/> of envelopes in all,
    /// skipping those expired at <paramref name="nowUnixMs"/> (expiry at or before it); returns the last sequence number
    /// looked at (skipped ones included), or <paramref name="afterSeq"/>.</summary>
    /// <remarks>The expiry is a value, not a predicate: a delegate over the caller's clock was a closure and a delegate
    /// per listing, and a Subscribe lists twice per delivered envelope. <paramref name="into"/> grows once, at its first
    /// entry, to what the rest of the mailbox can give (a list presized to the limit cost a Subscribe 4 KiB per
    /// listing, most of them empty or of one entry).</remarks>
    public ulong CopyAfter(ulong afterSeq, int limit, long maxBytes, List<IndexEntry> into, long nowUnixMs)
    {
        int at = Search(afterSeq == ulong.MaxValue ? afterSeq : afterSeq + 1);
        at = Math.Max(at < 0 ? ~at : at, _first);
        ulong last = afterSeq;
        int taken = 0;
        long bytes = 0;
        for (; at < _used && taken < limit; at++)
        {
            if (_removed[at] || _slots[at].Seq <= afterSeq)
            {
                continue;
            }

            if (_slots[at].ExpiresUnixMs <= nowUnixMs)
            {
                last = _slots[at].Seq;
                continue;
            }

            // Always one, so that a page makes progress whatever its byte limit; the cursor stops before the rest.
            if (taken > 0 && bytes + _slots[at].Length > maxBytes)
            {
                break;
            }

            if (taken == 0)
            {
                into.EnsureCapacity(into.Count + Math.Min(limit, _used - at));
            }

            last = _slots[at].Seq;
            bytes += _slots[at].Length;
            into.Add(_slots[at]);
            taken++;
        }

        return last;
    }

    /// <summary>Copies the live entries in sequence order into <paramref name="destination"/> (at least
    /// <see cref="Count"/> long) and returns how many.</summary>
    public int CopyLive(Span<IndexEntry> destination)
    {
        int slot = 0;
        return CopyLive(ref slot, destination);
    }

    /// <summary>Copies live entries in sequence order into <paramref name="destination"/>, from slot
    /// <paramref name="slot"/> on (0 at first), until it is full or the live entries end, run by run of live slots;
    /// returns how many, and leaves <paramref name="slot"/> where the next call goes on: a checkpoint's snapshot spreads a
    /// mailbox over the chunks of its buffer this way.</summary>
    public int CopyLive(ref int slot, Span<IndexEntry> destination)
    {
        int n = 0;
        int i = Math.Max(slot, _first);
        while (i < _used && n < destination.Length)
        {
            int live = _removed.AsSpan(i, _used - i).IndexOf(false);
            if (live < 0)
            {
                i = _used;
                break;
            }

            i += live;
            int run = _removed.AsSpan(i, _used - i).IndexOf(true);
            run = Math.Min(run < 0 ? _used - i : run, destination.Length - n);
            _slots.AsSpan(i, run).CopyTo(destination[n..]);
            n += run;
            i += run;
        }

        slot = i;
        return n;
    }

    // Binary search over the used slots: the index of seq, or the complement of where it would go.
    private int Search(ulong seq)
    {
        int lo = 0, hi = _used - 1;
        while (lo <= hi)
        {
            int mid = (int)((uint)(lo + hi) >> 1);
            ulong s = _slots[mid].Seq;
            if (s == seq)
            {
                return mid;
            }

            if (s < seq)
            {
                lo = mid + 1;
            }
            else
            {
                hi = mid - 1;
            }
        }

        return ~lo;
    }

    private void Squeeze()
    {
        int n = 0;
        for (int i = 0; i < _used; i++)
        {
            if (!_removed[i])
            {
                _slots[n] = _slots[i];
                _removed[n] = false;
                n++;
            }
        }

        _used = n;
        _first = 0;
        int capacity = Math.Max(4, (int)System.Numerics.BitOperations.RoundUpToPowerOf2((uint)Math.Max(1, n * 2)));
        if (capacity < _slots.Length)
        {
            Array.Resize(ref _slots, capacity);
            Array.Resize(ref _removed, capacity);
        }
    }
}
