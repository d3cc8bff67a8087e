using System.Security.Cryptography;
using MegaNet.Api;
using MegaNet.Node.Cli;

namespace MegaNet.Node.Tests;

/// <summary>
/// What a running <c>listen</c> fetches again of the parts it left on the node for want of room in the parts spool
/// (<see cref="Inbox.DeferredToFetch"/>): which entries go together into one fetch, and how long it waits after a
/// fetch of them failed. Driven through the inbox as listen drives it, on a clock the test steps.
/// </summary>
public sealed class ListenDeferredTests : IDisposable
{
    private const string Name = "late.bin";

    private readonly string _dir = Directory.CreateTempSubdirectory("meganet-deferred-").FullName;
    private readonly SteppedClock _clock = new();

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string IdentityPath => Path.Combine(_dir, "bob.json");

    /// <summary>A file of <paramref name="count"/> full parts.</summary>
    private static IReadOnlyList<byte[]> NewFile(int count) => FileParts.Split(RandomNumberGenerator.GetBytes(count * FileParts.SliceLength(Name)), Name);

    /// <summary>An inbox over a spool that takes one file from a sender at once, and that file begun from
    /// <paramref name="sender"/>: every other file of theirs is deferred until <paramref name="begun"/> is whole.</summary>
    private (Inbox Inbox, ReceivedParts Spool) FullInbox(Identity sender, out IReadOnlyList<byte[]> begun)
    {
        ReceivedParts spool = ReceivedParts.Beside(IdentityPath, maxOpenFilesPerSender: 1);
        var inbox = new Inbox(json: true, new ContactsFollower(IdentityPath), spool, saveDirectory: null, Inbox.PartsRelease.WhenWritten, _clock);
        begun = NewFile(2);
        Assert.True(inbox.Deliver(TestParts.Part(sender, begun[0], Name, seq: 1, envelopeId: RandomNumberGenerator.GetBytes(32)), null));
        return (inbox, spool);
    }

    private static ReceivedMessage Part(Identity sender, byte[] part, ulong seq) => TestParts.Part(sender, part, Name, seq, RandomNumberGenerator.GetBytes(32));

    [Fact]
    public void Deferred_entries_within_a_page_of_each_other_are_fetched_together_and_scattered_ones_apart()
    {
        // A retry cost a mailbox open per deferred entry: 400 scattered parts made about 400 opens against the node's
        // 1,000 a mailbox in 2 minutes. Entries that lie within a page (100 entries as listen saw them) go in one fetch.
        using Identity alice = Identity.Create();
        (Inbox inbox, ReceivedParts spool) = FullInbox(alice, out IReadOnlyList<byte[]> begun);
        IReadOnlyList<byte[]> late = NewFile(5);
        ulong seq = 1;
        void Deferred(int index) => Assert.False(inbox.Deliver(Part(alice, late[index], ++seq), null));
        void Others(int count)
        {
            // Entries between (here parts that do not read, which take their place in the mailbox like any mail).
            for (int i = 0; i < count; i++)
            {
                Assert.True(inbox.Deliver(Part(alice, new byte[3], ++seq), null));
            }
        }

        Deferred(0); // the second entry listen saw
        Others(98);
        Deferred(1); // 99 entries after it: the run spans 100, a page
        Deferred(2); // 100 after the first: a run of its own
        Others(50);
        Deferred(3);
        Others(300);
        Deferred(4); // alone
        Assert.Empty(inbox.DeferredToFetch()); // no room made yet

        Assert.IsType<ReceivedParts.Whole>(spool.Add(Part(alice, begun[1], 1)));
        List<Inbox.DeferredRun> runs = inbox.DeferredToFetch();
        Assert.Equal([[2UL, 101UL], [102UL, 153UL], [454UL]], runs.Select(r => r.Seqs));
        Assert.Equal([100, 52, 1], runs.Select(r => r.Span));
    }

    [Fact]
    public void A_failed_fetch_of_deferred_parts_waits_5_s_doubling_to_2_min_or_longer_when_the_node_asks()
    {
        // Tried again at the next message, a node that refused the mailbox for opens too many was asked again at once,
        // and refused opens count against the address.
        using Identity alice = Identity.Create();
        (Inbox inbox, ReceivedParts spool) = FullInbox(alice, out IReadOnlyList<byte[]> begun);
        Assert.False(inbox.Deliver(Part(alice, NewFile(2)[0], 2), null));
        Assert.IsType<ReceivedParts.Whole>(spool.Add(Part(alice, begun[1], 1)));
        Assert.NotEmpty(inbox.DeferredToFetch());

        TimeSpan[] expected = [.. new[] { 5, 10, 20, 40, 80, 120, 120 }.Select(s => TimeSpan.FromSeconds(s))];
        foreach (TimeSpan wait in expected)
        {
            Assert.Equal(wait, inbox.DeferredNotFetched(retryAfter: null));
            AssertOfferedAfter(inbox, wait);
        }

        // The node's retry-after-ms when it is longer than the wait; the wait when it is shorter.
        Assert.Equal(TimeSpan.FromMinutes(7), inbox.DeferredNotFetched(TimeSpan.FromMinutes(7)));
        AssertOfferedAfter(inbox, TimeSpan.FromMinutes(7));
        Assert.Equal(Inbox.MaxDeferredBackoff, inbox.DeferredNotFetched(TimeSpan.FromSeconds(1)));
        AssertOfferedAfter(inbox, Inbox.MaxDeferredBackoff);

        // A fetch that went through starts the waits over.
        inbox.DeferredFetched();
        Assert.Equal(Inbox.FirstDeferredBackoff, inbox.DeferredNotFetched(retryAfter: null));
        AssertOfferedAfter(inbox, Inbox.FirstDeferredBackoff);
    }

    [Fact]
    public void With_room_made_for_two_files_not_begun_the_second_is_offered_once_the_first_has_begun()
    {
        // One file not begun is offered a check; the next check offers the next. But the first file's part, kept,
        // makes no room (a file begun takes some), so the next check did not come until room was made again: with
        // two files' room made at once, the second file's part stayed on the node.
        using Identity alice = Identity.Create();
        ReceivedParts spool = ReceivedParts.Beside(IdentityPath, maxOpenFilesPerSender: 2);
        var inbox = new Inbox(json: true, new ContactsFollower(IdentityPath), spool, saveDirectory: null, Inbox.PartsRelease.WhenWritten, _clock);
        IReadOnlyList<byte[]> first = NewFile(2), second = NewFile(2), late = NewFile(2), later = NewFile(2);
        Assert.IsType<ReceivedParts.Waiting>(spool.Add(Part(alice, first[0], 1)));
        Assert.IsType<ReceivedParts.Waiting>(spool.Add(Part(alice, second[0], 2)));
        ReceivedMessage lateFirst = Part(alice, late[0], 3), laterFirst = Part(alice, later[0], 4);
        Assert.False(inbox.Deliver(lateFirst, null));
        Assert.False(inbox.Deliver(laterFirst, null));

        // Both files come whole at once (here through a fetch beside the listen): room for two.
        Assert.IsType<ReceivedParts.Whole>(spool.Add(Part(alice, first[1], 5)));
        Assert.IsType<ReceivedParts.Whole>(spool.Add(Part(alice, second[1], 6)));
        Assert.Equal([[3UL]], inbox.DeferredToFetch().Select(r => r.Seqs));
        Assert.True(inbox.Deliver(lateFirst, null)); // fetched again, and kept
        inbox.DeferredFetched();
        Assert.Equal([[4UL]], inbox.DeferredToFetch().Select(r => r.Seqs));
        Assert.True(inbox.Deliver(laterFirst, null));
        inbox.DeferredFetched();
        Assert.Empty(inbox.DeferredToFetch());
    }

    [Fact]
    public void A_fetch_of_deferred_parts_that_kept_none_is_not_repeated_until_room_is_made()
    {
        // Checked again after every fetch, a part that the check said fits and the spool deferred again would be
        // fetched again and again, a mailbox open each time.
        using Identity alice = Identity.Create();
        (Inbox inbox, ReceivedParts spool) = FullInbox(alice, out IReadOnlyList<byte[]> begun);
        ReceivedMessage late = Part(alice, NewFile(2)[0], 2);
        Assert.False(inbox.Deliver(late, null));
        Assert.IsType<ReceivedParts.Whole>(spool.Add(Part(alice, begun[1], 1)));
        Assert.NotEmpty(inbox.DeferredToFetch());

        // Another file of alice's takes the room before the fetch comes back.
        Assert.IsType<ReceivedParts.Waiting>(spool.Add(Part(alice, NewFile(2)[0], 9)));
        Assert.False(inbox.Deliver(late, null));
        inbox.DeferredFetched();
        Assert.Empty(inbox.DeferredToFetch());
    }

    [Fact]
    public void Deferred_parts_are_checked_on_a_schedule_of_their_own_so_room_made_without_mail_is_found()
    {
        // Checked only after a message, parts deferred waited for the next mail however much room another process
        // made meanwhile (a fetch --ack beside the listen handing files over), or expired on the node.
        using Identity alice = Identity.Create();
        (Inbox inbox, ReceivedParts spool) = FullInbox(alice, out IReadOnlyList<byte[]> begun);
        Assert.Null(inbox.NextDeferredCheck()); // nothing deferred: listen waits for mail alone
        Assert.False(inbox.Deliver(Part(alice, NewFile(2)[0], 2), null));

        // Checks that find nothing come 5 s, 10 s … 2 min apart.
        foreach (int seconds in new[] { 5, 10, 20, 40, 80, 120, 120 })
        {
            Assert.Equal(TimeSpan.FromSeconds(seconds), inbox.NextDeferredCheck());
            Assert.Empty(inbox.DeferredToFetch());
            _clock.Advance(TimeSpan.FromSeconds(seconds));
            Assert.Equal(TimeSpan.Zero, inbox.NextDeferredCheck());
            Assert.Empty(inbox.DeferredToFetch());
        }

        // Another process makes the room: this one sees it at its next check, not before.
        ReceivedParts beside = ReceivedParts.Beside(IdentityPath, maxOpenFilesPerSender: 1);
        Assert.IsType<ReceivedParts.Whole>(beside.Add(Part(alice, begun[1], 1)));
        Assert.Empty(inbox.DeferredToFetch());
        _clock.Advance(inbox.NextDeferredCheck()!.Value);
        Assert.Equal([[2UL]], inbox.DeferredToFetch().Select(r => r.Seqs));

        // A failed fetch is tried again after its wait without a message either.
        Assert.Equal(Inbox.FirstDeferredBackoff, inbox.DeferredNotFetched(retryAfter: TimeSpan.FromSeconds(1)));
        Assert.Equal(Inbox.FirstDeferredBackoff, inbox.NextDeferredCheck());

        // And never before that wait, though the schedule's next check (5 s) comes first: a node's retry-after hint of
        // a minute is kept to.
        _clock.Advance(Inbox.FirstDeferredBackoff);
        Assert.Equal([[2UL]], inbox.DeferredToFetch().Select(r => r.Seqs));
        Assert.Equal(TimeSpan.FromMinutes(1), inbox.DeferredNotFetched(retryAfter: TimeSpan.FromMinutes(1)));
        Assert.Equal(TimeSpan.FromMinutes(1), inbox.NextDeferredCheck());
        _clock.Advance(Inbox.FirstDeferredBackoff);
        Assert.Equal(TimeSpan.FromSeconds(55), inbox.NextDeferredCheck());
    }

    [Fact]
    public async Task A_part_deferred_for_a_stranger_is_judged_by_the_contacts_caps_once_its_sender_is_saved_as_one()
    {
        // Whether the sender was a contact was fixed when the part was deferred: saved as one since (and held to the
        // caps per sender alone when fetched again), the sender's part still waited for room among strangers' files.
        using Identity alice = Identity.Create(), carol = Identity.Create();
        ReceivedParts spool = ReceivedParts.Beside(IdentityPath, maxOpenFiles: 1); // one stranger's file at once: carol's
        var inbox = new Inbox(json: true, new ContactsFollower(IdentityPath), spool, saveDirectory: null, Inbox.PartsRelease.WhenWritten, _clock);
        Assert.IsType<ReceivedParts.Waiting>(spool.Add(Part(carol, NewFile(2)[0], 1)));
        ReceivedMessage late = Part(alice, NewFile(2)[0], 2);
        Assert.False(inbox.Deliver(late, null));
        _clock.Advance(inbox.NextDeferredCheck()!.Value);
        Assert.Empty(inbox.DeferredToFetch());

        await Contacts.ChangeAsync(IdentityPath, c => c.Add("alice", alice.Card, replace: false), CancellationToken.None);
        _clock.Advance(inbox.NextDeferredCheck()!.Value);
        Assert.Equal([[2UL]], inbox.DeferredToFetch().Select(r => r.Seqs));
        Assert.True(inbox.Deliver(late, null)); // kept, as the check said
    }

    /// <summary>The deferred parts are not offered before <paramref name="wait"/> has passed, and are once it has.</summary>
    private void AssertOfferedAfter(Inbox inbox, TimeSpan wait)
    {
        _clock.Advance(wait - TimeSpan.FromMilliseconds(1));
        Assert.Empty(inbox.DeferredToFetch());
        _clock.Advance(TimeSpan.FromMilliseconds(1));
        Assert.NotEmpty(inbox.DeferredToFetch());
    }

    /// <summary>A clock that moves only when the test moves it (also for <see cref="ListenDeferredDamageTests"/>).</summary>
    internal sealed class SteppedClock : TimeProvider
    {
        private long _ticks = TimeSpan.TicksPerDay;

        public override long TimestampFrequency => TimeSpan.TicksPerSecond;

        public override long GetTimestamp() => _ticks;

        public void Advance(TimeSpan by) => _ticks += by.Ticks;
    }
}
