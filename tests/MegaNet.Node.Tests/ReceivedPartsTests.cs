using System.Buffers.Binary;
using System.Security.Cryptography;
using Google.Protobuf;
using MegaNet.Api;
using MegaNet.Api.V1;
using MegaNet.Node.Cli;

namespace MegaNet.Node.Tests;

/// <summary>
/// The spool of file parts (<see cref="ReceivedParts"/>) against a sender who wants it to grow: parts not cut as the
/// protocol says, and sets of one tiny part each, are held to what they take on disk and to a number of files; and its
/// totals are not counted again for every part.
/// </summary>
public sealed class ReceivedPartsTests : IDisposable
{
    private const string Name = "a.bin";

    private readonly string _dir = Directory.CreateTempSubdirectory("meganet-spool-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string IdentityPath => Path.Combine(_dir, "bob.json");

    private static ReceivedMessage Part(Identity from, byte[] content, string name = Name) => TestParts.Part(from, content, name, envelopeId: RandomNumberGenerator.GetBytes(32));

    /// <summary>A part as anyone can write one: a fresh file id and hash, the header's numbers as given, and a slice of
    /// <paramref name="slice"/> bytes.</summary>
    private static byte[] Forged(int index, int count, long length, int slice)
    {
        byte[] part = new byte[FileParts.HeaderLength + slice];
        RandomNumberGenerator.Fill(part.AsSpan(0, 16));
        BinaryPrimitives.WriteUInt32BigEndian(part.AsSpan(16), (uint)index);
        BinaryPrimitives.WriteUInt32BigEndian(part.AsSpan(20), (uint)count);
        BinaryPrimitives.WriteUInt64BigEndian(part.AsSpan(24), (ulong)length);
        RandomNumberGenerator.Fill(part.AsSpan(32));
        return part;
    }

    /// <summary>The last part of a file of two, one byte long: cut as the protocol says, and as small as a part that
    /// opens a file can be.</summary>
    private static byte[] TinyLastPart() => Forged(1, 2, FileParts.SliceLength(Name) + 1L, 1);

    /// <summary>What a file that <see cref="TinyLastPart"/> begins holds back of the caps: the whole of its two parts as
    /// if each were full, and its directory.</summary>
    private static long TinyHolds(Identity from) => ReceivedParts.Reservation(2);

    [Fact]
    public void A_part_not_cut_as_the_protocol_says_is_refused_and_opens_no_file()
    {
        using Identity mallory = Identity.Create();
        ReceivedParts parts = ReceivedParts.Beside(IdentityPath);
        int slice = FileParts.SliceLength(Name);
        // Part 1 of 2 of an empty file, which FileParts.TryReadHeader takes: each opened a file of its own.
        for (int i = 0; i < 50; i++)
        {
            var refused = Assert.IsType<ReceivedParts.Refused>(parts.Add(Part(mallory, Forged(0, 2, 0, 0))));
            Assert.Contains("is not cut as the protocol says", refused.Reason, StringComparison.Ordinal);
        }

        // A first part short of a full slice, one that leaves the last part empty, and a count the length does not make.
        Assert.IsType<ReceivedParts.Refused>(parts.Add(Part(mallory, Forged(0, 2, slice + 1L, slice - 1))));
        Assert.IsType<ReceivedParts.Refused>(parts.Add(Part(mallory, Forged(1, 2, slice, 0))));
        Assert.IsType<ReceivedParts.Refused>(parts.Add(Part(mallory, Forged(0, 2, 3L * slice, slice))));
        Assert.IsType<ReceivedParts.Refused>(parts.Add(Part(mallory, Forged(2, 3, (2L * slice) + 10, 9))));
        Assert.False(Directory.Exists(parts.Directory) && Directory.GetDirectories(parts.Directory).Length > 0);

        // Parts cut as FileParts.Split cuts them are kept, the last one of a file as long as it is.
        byte[] file = RandomNumberGenerator.GetBytes((2 * slice) + 10);
        IReadOnlyList<byte[]> split = FileParts.Split(file, Name);
        Assert.IsType<ReceivedParts.Waiting>(parts.Add(Part(mallory, split[2])));
        Assert.IsType<ReceivedParts.Waiting>(parts.Add(Part(mallory, split[0])));
        var whole = Assert.IsType<ReceivedParts.Whole>(parts.Add(Part(mallory, split[1])));
        Assert.Equal(file, whole.File.Content.Content.ToByteArray());

        // A file of one part is whole as it comes: shown, and nothing kept for it.
        byte[] small = RandomNumberGenerator.GetBytes(100);
        whole = Assert.IsType<ReceivedParts.Whole>(parts.Add(Part(mallory, FileParts.Split(small, "small.bin")[0], "small.bin")));
        Assert.Equal(small, whole.File.Content.Content.ToByteArray());
        Assert.False(Directory.Exists(whole.Directory));
        parts.Forget(whole);
    }

    [Fact]
    public void A_file_left_on_the_node_is_put_together_once_a_run_however_many_of_its_parts_come_again()
    {
        // Text output without --save-files leaves a file on the node and its parts in the spool, so every fetch or listen
        // gets all its parts again: each of them made the file whole again, and a file of 307 parts was read and hashed
        // 307 times (6 GB, half a minute before the mail behind it was shown).
        using Identity alice = Identity.Create();
        const int Count = 12;
        IReadOnlyList<byte[]> split = FileParts.Split(RandomNumberGenerator.GetBytes(Count * FileParts.SliceLength(Name)), Name);
        byte[][] envelopes = [.. split.Select(_ => RandomNumberGenerator.GetBytes(32))];
        for (int run = 0; run < 3; run++)
        {
            ReceivedParts spool = ReceivedParts.Beside(IdentityPath);
            var inbox = new Inbox(json: false, new ContactsFollower(IdentityPath), spool, saveDirectory: null, Inbox.PartsRelease.Never);
            for (int i = 0; i < Count; i++)
            {
                // Parts kept may be acknowledged; the part that made the file whole, and later every copy, stay on the node.
                bool acknowledgeable = inbox.Deliver(TestParts.Part(alice, split[i], Name, (ulong)i + 1, envelopes[i]), null);
                Assert.Equal(run == 0 && i < Count - 1, acknowledgeable);
            }

            Assert.Equal(1, spool.Joins);
            Assert.Equal(Count, Directory.GetFiles(Assert.Single(Directory.GetDirectories(spool.Directory)), "*.part").Length);
        }
    }

    [Fact]
    public void Files_still_arriving_are_capped_in_number_and_each_is_charged_its_directory()
    {
        using Identity mallory = Identity.Create(), trent = Identity.Create(), carol = Identity.Create();
        ReceivedParts parts = ReceivedParts.Beside(IdentityPath, maxOpenFiles: ReceivedParts.MaxOpenFilesPerSender + 4);
        for (int i = 0; i < ReceivedParts.MaxOpenFilesPerSender; i++)
        {
            Assert.IsType<ReceivedParts.Waiting>(parts.Add(Part(mallory, TinyLastPart())));
        }

        var deferred = Assert.IsType<ReceivedParts.Deferred>(parts.Add(Part(mallory, TinyLastPart())));
        Assert.Contains($"{ReceivedParts.MaxOpenFilesPerSender} files from this sender are arriving here already", deferred.Reason, StringComparison.Ordinal);

        // Another stranger fills what is left in all; a contact is held to the number per sender only.
        for (int i = 0; i < 4; i++)
        {
            Assert.IsType<ReceivedParts.Waiting>(parts.Add(Part(trent, TinyLastPart())));
        }

        deferred = Assert.IsType<ReceivedParts.Deferred>(parts.Add(Part(trent, TinyLastPart())));
        Assert.Contains($"{ReceivedParts.MaxOpenFilesPerSender + 4} files are arriving in", deferred.Reason, StringComparison.Ordinal);
        Assert.IsType<ReceivedParts.Waiting>(parts.Add(Part(carol, TinyLastPart()), fromContact: true));
        // Another part of a file begun here is no new file.
        int slice = FileParts.SliceLength(Name);
        IReadOnlyList<byte[]> split = FileParts.Split(RandomNumberGenerator.GetBytes(3 * slice), Name);
        Assert.IsType<ReceivedParts.Deferred>(parts.Add(Part(mallory, split[0])));
        Assert.Equal(ReceivedParts.MaxOpenFilesPerSender + 5, Directory.GetDirectories(parts.Directory).Length);

        // In bytes, a file begun with a part of one byte holds back the whole of its parts and its directory: a
        // stranger's cap of bytes no longer holds hundreds of thousands of them.
        string other = Path.Combine(_dir, "erin.json");
        const int Fit = 10;
        ReceivedParts capped = ReceivedParts.Beside(other, maxBytesPerSender: Fit * TinyHolds(mallory));
        for (int i = 0; i < Fit; i++)
        {
            Assert.IsType<ReceivedParts.Waiting>(capped.Add(Part(mallory, TinyLastPart())));
        }

        deferred = Assert.IsType<ReceivedParts.Deferred>(capped.Add(Part(mallory, TinyLastPart())));
        Assert.Contains($"files still arriving from this sender hold {Fit * TinyHolds(mallory):N0} bytes here already", deferred.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public void The_totals_are_counted_once_and_again_only_after_another_process_changed_the_directory()
    {
        using Identity alice = Identity.Create(), mallory = Identity.Create();
        const int Fit = 8;
        long cap = Fit * TinyHolds(mallory);
        ReceivedParts listening = ReceivedParts.Beside(IdentityPath, maxBytesPerSender: cap), fetching = ReceivedParts.Beside(IdentityPath, maxBytesPerSender: cap);
        Assert.Equal(0, listening.Recounts); // opening reads nothing but what it prunes
        for (int i = 0; i < Fit - 1; i++)
        {
            Assert.IsType<ReceivedParts.Waiting>(listening.Add(Part(mallory, TinyLastPart())));
            Assert.IsType<ReceivedParts.Waiting>(listening.Add(Part(alice, TinyLastPart())));
        }

        // Each part added used the totals in memory: one count of the directory, not one for each part.
        Assert.Equal(1, listening.Recounts);

        // Another process's part is in this one's totals: the directory is counted again, once.
        Assert.IsType<ReceivedParts.Waiting>(fetching.Add(Part(mallory, TinyLastPart())));
        // Counted from the disk, a file whose only part is its last (a byte) holds back what it does counted part by
        // part: the whole file. (It held back one byte's worth, so each new process let more such files begin.)
        Assert.IsType<ReceivedParts.Deferred>(fetching.Add(Part(mallory, TinyLastPart())));
        Assert.IsType<ReceivedParts.Deferred>(listening.Add(Part(mallory, TinyLastPart())));
        Assert.Equal(2, listening.Recounts);
        Assert.IsType<ReceivedParts.Waiting>(listening.Add(Part(alice, TinyLastPart())));
        Assert.Equal(2, listening.Recounts);
    }

    [Fact]
    public void Room_made_here_or_by_another_process_is_counted_for_a_listen_to_fetch_its_deferred_parts_again()
    {
        // A listen fetches the parts it left on the node again once this count changes (ClientCommands.RetryDeferredAsync).
        using Identity alice = Identity.Create();
        int slice = FileParts.SliceLength(Name);
        IReadOnlyList<byte[]> a = FileParts.Split(RandomNumberGenerator.GetBytes(2 * slice), Name), b = FileParts.Split(RandomNumberGenerator.GetBytes(2 * slice), Name),
            c = FileParts.Split(RandomNumberGenerator.GetBytes(2 * slice), Name);
        ReceivedParts fetching = ReceivedParts.Beside(IdentityPath), listening = ReceivedParts.Beside(IdentityPath);
        Assert.IsType<ReceivedParts.Waiting>(fetching.Add(Part(alice, a[0])));
        Assert.IsType<ReceivedParts.Waiting>(listening.Add(Part(alice, b[0]))); // counts a, begun by the other
        long made = listening.RoomMade;
        Assert.IsType<ReceivedParts.Waiting>(listening.Add(Part(alice, c[0])));
        Assert.Equal(made, listening.RoomMade); // a file begun takes room

        // Whole here: out of the files arriving. Handed over: its parts deleted.
        var whole = Assert.IsType<ReceivedParts.Whole>(listening.Add(Part(alice, c[1])));
        Assert.Equal(made + 1, listening.RoomMade);
        listening.Forget(whole);
        Assert.Equal(made + 2, listening.RoomMade);

        // Another process finishes and forgets a file: seen at the next part this one keeps.
        fetching.Forget(Assert.IsType<ReceivedParts.Whole>(fetching.Add(Part(alice, a[1]))));
        Assert.IsType<ReceivedParts.Waiting>(listening.Add(Part(alice, c[0])));
        Assert.Equal(made + 3, listening.RoomMade);
    }

    [Fact]
    public void A_part_deferred_for_its_senders_cap_would_fit_only_once_that_sender_makes_room()
    {
        // Room made anywhere in the spool counts in RoomMade; a listen fetched every deferred part again at each change,
        // and a part deferred for its sender's cap was deferred again every time another sender's file came whole.
        using Identity alice = Identity.Create(), carol = Identity.Create();
        int slice = FileParts.SliceLength(Name);
        IReadOnlyList<byte[]> begun = FileParts.Split(RandomNumberGenerator.GetBytes(2 * slice), Name), late = FileParts.Split(RandomNumberGenerator.GetBytes(2 * slice), Name),
            other = FileParts.Split(RandomNumberGenerator.GetBytes(2 * slice), Name);
        ReceivedParts spool = ReceivedParts.Beside(IdentityPath, maxOpenFilesPerSender: 1);
        Assert.IsType<ReceivedParts.Waiting>(spool.Add(Part(alice, begun[0])));
        Assert.IsType<ReceivedParts.Waiting>(spool.Add(Part(carol, other[0])));
        var deferred = Assert.IsType<ReceivedParts.Deferred>(spool.Add(Part(alice, late[0])));
        Assert.Contains("files from this sender are arriving here already", deferred.Reason, StringComparison.Ordinal);
        Assert.Equal([false], spool.WouldFit([deferred.Part]));

        // Carol's file comes whole: room made, but not for alice.
        long made = spool.RoomMade;
        Assert.IsType<ReceivedParts.Whole>(spool.Add(Part(carol, other[1])));
        Assert.NotEqual(made, spool.RoomMade);
        Assert.Equal([false], spool.WouldFit([deferred.Part]));

        // Alice's file comes whole: her part fits now, and is kept as it was checked.
        Assert.IsType<ReceivedParts.Whole>(spool.Add(Part(alice, begun[1])));
        Assert.Equal([true], spool.WouldFit([deferred.Part]));
        Assert.IsType<ReceivedParts.Waiting>(spool.Add(Part(alice, late[0])));
    }

    [Fact]
    public void Of_deferred_files_not_begun_one_is_said_to_fit_a_check_not_every_one_against_the_same_room()
    {
        // Each part was judged against the totals as they were: with one file's room made, every deferred file not
        // begun "fit", a listen fetched them all (a mailbox open a run), kept one and deferred the rest again.
        using Identity alice = Identity.Create();
        int slice = FileParts.SliceLength(Name);
        IReadOnlyList<byte[]> begun = FileParts.Split(RandomNumberGenerator.GetBytes(2 * slice), Name),
            late = FileParts.Split(RandomNumberGenerator.GetBytes(2 * slice), Name), later = FileParts.Split(RandomNumberGenerator.GetBytes(2 * slice), Name);
        ReceivedParts spool = ReceivedParts.Beside(IdentityPath, maxOpenFilesPerSender: 1);
        Assert.IsType<ReceivedParts.Waiting>(spool.Add(Part(alice, begun[0])));
        ReceivedParts.Pending[] deferred = [.. new[] { late[0], late[1], later[0] }.Select(p => Assert.IsType<ReceivedParts.Deferred>(spool.Add(Part(alice, p))).Part)];

        Assert.IsType<ReceivedParts.Whole>(spool.Add(Part(alice, begun[1])));
        // Both of late.bin's parts (one file begins), not later.bin's.
        Assert.Equal([true, true, false], spool.WouldFit(deferred));
        Assert.IsType<ReceivedParts.Waiting>(spool.Add(Part(alice, late[0])));
        Assert.Equal([true, true, false], spool.WouldFit(deferred));
        Assert.IsType<ReceivedParts.Whole>(spool.Add(Part(alice, late[1])));
        Assert.Equal([true, true, true], spool.WouldFit(deferred));
    }

    [Fact]
    public void Files_arriving_together_cannot_fill_a_cap_between_them_with_none_whole()
    {
        using Identity alice = Identity.Create();
        int slice = FileParts.SliceLength(Name);
        IReadOnlyList<byte[]> a = FileParts.Split(RandomNumberGenerator.GetBytes(4 * slice), Name), b = FileParts.Split(RandomNumberGenerator.GetBytes(4 * slice), Name);
        long part = Part(alice, a[0]).Content.CalculateSize();
        // Room for one file of four parts, not two: before, parts were charged as they came, two files sent at once
        // took two parts each, and every part still missing was put off for room only a whole file would make.
        ReceivedParts parts = ReceivedParts.Beside(IdentityPath, maxBytesPerSender: ReceivedParts.Reservation(4) + ReceivedParts.SetCost + (2 * part));
        Assert.IsType<ReceivedParts.Waiting>(parts.Add(Part(alice, a[0])));
        var deferred = Assert.IsType<ReceivedParts.Deferred>(parts.Add(Part(alice, b[0])));
        Assert.Contains("room is made as those files come whole", deferred.Reason, StringComparison.Ordinal);
        Assert.IsType<ReceivedParts.Waiting>(parts.Add(Part(alice, a[1])));
        Assert.IsType<ReceivedParts.Deferred>(parts.Add(Part(alice, b[1])));
        Assert.IsType<ReceivedParts.Waiting>(parts.Add(Part(alice, a[2])));
        var shown = Assert.IsType<ReceivedParts.Whole>(parts.Add(Part(alice, a[3])));

        // The first file whole, the second begins; its last part waits only for the first to be handed over.
        for (int i = 0; i < 3; i++)
        {
            Assert.IsType<ReceivedParts.Waiting>(parts.Add(Part(alice, b[i])));
        }

        Assert.IsType<ReceivedParts.Deferred>(parts.Add(Part(alice, b[3])));
        parts.Forget(shown);
        Assert.IsType<ReceivedParts.Whole>(parts.Add(Part(alice, b[3])));
    }

    [Fact]
    public void Two_files_of_32_MiB_from_one_sender_fit_its_cap_whatever_their_names()
    {
        // The longest name a 32 MiB file may go under: it takes room from every slice, so the file takes the most parts,
        // each holding back the largest payload. Before, the cap let two in only under names up to about 1,700 bytes.
        int low = 1, high = EnvelopeFormat.LargestPayloadClass;
        while (low < high)
        {
            int mid = (low + high + 1) / 2;
            (low, high) = (long)FileParts.SliceLength(new string('n', mid)) * FileParts.MaxParts >= FileParts.MaxFileLength ? (mid, high) : (low, mid - 1);
        }

        string name = new('n', low);
        Assert.Equal(FileParts.MaxParts, FileParts.PartCount(FileParts.MaxFileLength, name));
        int lastSlice = (int)(FileParts.MaxFileLength - ((FileParts.MaxParts - 1L) * FileParts.SliceLength(name)));
        byte[] LastPart() => Forged(FileParts.MaxParts - 1, FileParts.MaxParts, FileParts.MaxFileLength, lastSlice);

        using Identity alice = Identity.Create();
        ReceivedParts parts = ReceivedParts.Beside(IdentityPath);
        Assert.IsType<ReceivedParts.Waiting>(parts.Add(Part(alice, LastPart(), name)));
        Assert.IsType<ReceivedParts.Waiting>(parts.Add(Part(alice, LastPart(), name)));
        // Two, not three: the cap still bounds what one sender's files hold back.
        var deferred = Assert.IsType<ReceivedParts.Deferred>(parts.Add(Part(alice, LastPart(), name)));
        Assert.Contains($"files still arriving from this sender hold {2 * ReceivedParts.Reservation(FileParts.MaxParts):N0} bytes here already", deferred.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public void Files_shown_and_kept_do_not_keep_a_later_file_from_arriving_and_have_a_cap_of_their_own()
    {
        using Identity alice = Identity.Create();
        int slice = FileParts.SliceLength(Name);
        // Room for one file of two full parts from a sender in each account: arriving, and whole.
        ReceivedParts parts = ReceivedParts.Beside(IdentityPath, maxBytesPerSender: (2 * slice) + 4096 + ReceivedParts.SetCost);
        IReadOnlyList<byte[]> first = FileParts.Split(RandomNumberGenerator.GetBytes(2 * slice), Name), second = FileParts.Split(RandomNumberGenerator.GetBytes(2 * slice), Name);
        Assert.IsType<ReceivedParts.Waiting>(parts.Add(Part(alice, first[0])));
        // Whole and shown, not forgotten: a fetch or listen without --ack, or text output without --save-files.
        var shown = Assert.IsType<ReceivedParts.Whole>(parts.Add(Part(alice, first[1])));

        // The next file from the same sender is kept: a file shown no longer counts against parts still arriving (it
        // did, and the later file's parts were left on the node until day 31, while they expire there after 7).
        Assert.IsType<ReceivedParts.Waiting>(parts.Add(Part(alice, second[0])));
        // The part that would make it whole waits for room among whole files, and says what makes it.
        var deferred = Assert.IsType<ReceivedParts.Deferred>(parts.Add(Part(alice, second[1])));
        Assert.Contains("files from this sender whole here already (shown, kept until they are handed over) take", deferred.Reason, StringComparison.Ordinal);
        Assert.Contains("'meganet fetch --ack --save-files DIR' (or --json --ack) hands them over and frees the room", deferred.Reason, StringComparison.Ordinal);
        parts.Forget(shown);
        Assert.IsType<ReceivedParts.Whole>(parts.Add(Part(alice, second[1])));
    }

    [Fact]
    public void A_file_of_one_part_is_not_remembered_as_shown()
    {
        // Never kept, it has no parts to come again: remembered as shown, the same file in another message (sent again)
        // was reported as a copy of it, and a listen held an entry for each such file for as long as it ran.
        using Identity alice = Identity.Create();
        var inbox = new Inbox(json: false, new ContactsFollower(IdentityPath), ReceivedParts.Beside(IdentityPath), saveDirectory: null, Inbox.PartsRelease.Never);
        byte[] single = Assert.Single(FileParts.Split(RandomNumberGenerator.GetBytes(100), "small.bin"));
        for (int i = 0; i < 3; i++)
        {
            inbox.Deliver(TestParts.Part(alice, single, "small.bin", (ulong)i + 1, RandomNumberGenerator.GetBytes(32)), null);
        }

        Assert.Equal(0, inbox.FilesRemembered);
    }

    [Fact]
    public void A_long_listen_forgets_the_files_shown_once_the_spool_has_pruned_them_and_keeps_the_others()
    {
        // A listen without --ack noted every file it showed, and every file whose copies it reported, for as long as it
        // ran. Once the spool has forgotten a file (its parts pruned a month after they came) a part of it starts the
        // file anew, in this run as in the next, so its entries can go.
        using Identity alice = Identity.Create();
        ReceivedParts spool = SpoolOnClock(out ShiftedClock clock);
        var inbox = new Inbox(json: false, new ContactsFollower(IdentityPath), spool, saveDirectory: null, Inbox.PartsRelease.Never) { FilesCheckFrom = 4 };
        ulong seq = 0;
        IReadOnlyList<byte[]> NewFile() => FileParts.Split(RandomNumberGenerator.GetBytes(2 * FileParts.SliceLength(Name)), Name);
        void Deliver(byte[] part) => inbox.Deliver(TestParts.Part(alice, part, Name, ++seq, RandomNumberGenerator.GetBytes(32)), null);
        IReadOnlyList<byte[]> first = NewFile();
        foreach (IReadOnlyList<byte[]> file in (IReadOnlyList<byte[]>[])[first, NewFile(), NewFile()])
        {
            Deliver(file[0]);
            Deliver(file[1]);
        }

        Deliver(first[0]); // sent again: a copy of a file shown, reported
        Assert.Equal(4, inbox.FilesRemembered);

        // A month on, the spool prunes the three files at its next part.
        clock.Offset = SeenMessages.Window + TimeSpan.FromDays(1);
        Assert.IsType<ReceivedParts.Waiting>(spool.Add(Part(alice, NewFile()[0])));
        Assert.Single(Directory.GetDirectories(spool.Directory));

        IReadOnlyList<byte[]> fourth = NewFile();
        Deliver(fourth[0]);
        Deliver(fourth[1]);
        Assert.Equal(1, inbox.FilesRemembered);

        // A file the spool still holds is still known as shown: its parts again are copies, not put together again.
        int joins = spool.Joins;
        Deliver(fourth[0]);
        Assert.Equal(joins, spool.Joins);
        Assert.Equal(2, inbox.FilesRemembered);
    }

    [Fact]
    public void A_sender_whose_files_are_gone_is_not_counted_any_more()
    {
        // Identities cost nothing: a listen kept the totals (all zero) of every sender whose parts it ever kept.
        ReceivedParts parts = ReceivedParts.Beside(IdentityPath);
        for (int i = 0; i < 20; i++)
        {
            using Identity stranger = Identity.Create();
            IReadOnlyList<byte[]> split = FileParts.Split(RandomNumberGenerator.GetBytes(2 * FileParts.SliceLength(Name)), Name);
            Assert.IsType<ReceivedParts.Waiting>(parts.Add(Part(stranger, split[0])));
            Assert.Equal(1, parts.SendersCounted);
            parts.Forget(Assert.IsType<ReceivedParts.Whole>(parts.Add(Part(stranger, split[1]))));
        }

        Assert.Equal(0, parts.SendersCounted);
    }

    [Fact]
    public void A_clock_stepped_back_does_not_put_pruning_off()
    {
        using Identity alice = Identity.Create();
        ReceivedParts parts = SpoolOnClock(out ShiftedClock clock);
        Assert.IsType<ReceivedParts.Waiting>(parts.Add(Part(alice, TinyLastPart()))); // the first add prunes, then keeps it
        string kept = Assert.Single(Directory.GetDirectories(parts.Directory));

        // NTP steps back a clock that ran a year ahead: by it, the part came 40 days ago, before the window. An hour on,
        // the next part prunes it; before, pruning waited for the clock to pass the last prune's time, a year later.
        clock.Offset = -TimeSpan.FromDays(365);
        foreach (string file in Directory.GetFiles(kept))
        {
            File.SetLastWriteTimeUtc(file, clock.GetUtcNow().UtcDateTime - TimeSpan.FromDays(40));
        }

        clock.Offset += TimeSpan.FromHours(1) + TimeSpan.FromMinutes(1);
        Assert.IsType<ReceivedParts.Waiting>(parts.Add(Part(alice, TinyLastPart())));
        Assert.DoesNotContain(kept, Directory.GetDirectories(parts.Directory));
        Assert.Single(Directory.GetDirectories(parts.Directory)); // the new part's file stays
    }

    /// <summary>The spool, pruned by a clock the test steps.</summary>
    private ReceivedParts SpoolOnClock(out ShiftedClock clock)
    {
        ReceivedParts spool = ReceivedParts.Beside(IdentityPath);
        spool.Clock = clock = new ShiftedClock();
        return spool;
    }

    /// <summary>The system's clock, stepped by the test.</summary>
    private sealed class ShiftedClock : TimeProvider
    {
        public TimeSpan Offset { get; set; }

        public override DateTimeOffset GetUtcNow() => base.GetUtcNow() + Offset;
    }
}
