using System.Text;
using Google.Protobuf;
using MegaNet.Api;
using MegaNet.Api.V1;

namespace MegaNet.Node.Tests;

/// <summary>Replays: a relay rewraps a sealed payload it saw in a new envelope; the recipient shows it once.</summary>
public sealed class SeenMessagesTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("meganet-seen-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private sealed class Clock(DateTimeOffset now) : TimeProvider
    {
        public DateTimeOffset Now { get; set; } = now;

        public override DateTimeOffset GetUtcNow() => Now;
    }

    private static byte[] Bytes(int n, byte fill) => Enumerable.Repeat(fill, n).ToArray();

    /// <summary>What a relay that carried <paramref name="carried"/> can make of it: the same sealed payload in an
    /// envelope of its own, signed with a sending key of <paramref name="relay"/>'s (a new envelope id).</summary>
    private static Envelope Rewrapped(Envelope carried, Identity relay, ContactCard to)
    {
        var replay = new Envelope
        {
            Version = carried.Version,
            Recipient = carried.Recipient,
            ExpiresUnixMs = carried.ExpiresUnixMs,
            SealedPayload = carried.SealedPayload,
            SendingKey = ByteString.CopyFrom(relay.SendingPublicKeyFor(to.Address)),
        };
        replay.Signature = ByteString.CopyFrom(relay.SignWithSendingKeyFor(to.Address, EnvelopeFormat.SigningBytes(replay)));
        return replay;
    }

    [Fact]
    public async Task A_replayed_payload_in_a_new_envelope_is_reported_as_a_copy_across_fetches_and_restarts()
    {
        await using TestNode node = await TestNode.StartAsync();
        using MegaNetClient client = node.Client();
        using Identity alice = Identity.Create(), bob = Identity.Create(), relay = Identity.Create();
        string file = Path.Combine(_dir, "bob.seen");
        Receipt original = await client.SendAsync(alice, bob.Card, Encoding.UTF8.GetBytes("meet at noon"), "text/plain");

        // Bob reads it, without acknowledging; fetching it again shows it again (the same envelope is no copy).
        FetchResult first = await client.FetchAsync(bob, seen: SeenMessages.Open(file));
        Assert.Equal("meet at noon", Assert.Single(first.Messages).Content.Content.ToStringUtf8());
        Assert.Single((await client.FetchAsync(bob, seen: SeenMessages.Open(file))).Messages);

        // A relay that carried it wraps the same sealed payload in an envelope of its own: a new id, accepted.
        Envelope carried = (await client.Relay.FetchAsync(new FetchRequest { Auth = await client.AuthenticateAsync(bob, MailboxPurpose.Fetch) })).Items[0].Envelope;
        Envelope replay = Rewrapped(carried, relay, bob.Card);
        Receipt replayed = await client.Relay.SubmitAsync(new SubmitRequest { Envelope = replay });
        Assert.False(replayed.Duplicate);
        Assert.NotEqual(original.EnvelopeId, replayed.EnvelopeId);

        // Without a record both open; with Bob's record (reloaded from its file) the copy is reported, not shown.
        Assert.Equal(2, (await client.FetchAsync(bob)).Messages.Count);
        FetchResult page = await client.FetchAsync(bob, seen: SeenMessages.Open(file));
        Assert.Equal(original.EnvelopeId.ToByteArray(), Assert.Single(page.Messages).EnvelopeId);
        UnreadableMessage copy = Assert.Single(page.Unreadable);
        Assert.Equal(replayed.EnvelopeId.ToByteArray(), copy.EnvelopeId);
        Assert.Contains("copy", copy.Reason);

        // Live delivery too: the original, the copy reported, then a later message.
        await client.SendAsync(alice, bob.Card, Encoding.UTF8.GetBytes("after"), "text/plain");
        var shown = new List<string>();
        var skipped = new List<UnreadableMessage>();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        await foreach (ReceivedMessage m in client.ListenAsync(bob, 0, cts.Token, skipped.Add, SeenMessages.Open(file)))
        {
            shown.Add(m.Content.Content.ToStringUtf8());
            if (shown.Count == 2)
            {
                break;
            }
        }

        Assert.Equal(["meet at noon", "after"], shown);
        Assert.Equal(copy.Seq, Assert.Single(skipped).Seq);
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task A_message_recorded_under_the_former_envelope_id_is_the_same_envelope_not_a_copy()
    {
        // Until 2026-11-29 an envelope id also covered the signature: a record written then names mail fetched and not
        // yet acknowledged by that id, and after the upgrade it must still count as that envelope (else 'fetch --ack'
        // reported it as a replay and deleted it unseen).
        await using TestNode node = await TestNode.StartAsync();
        using MegaNetClient client = node.Client();
        using Identity alice = Identity.Create(), bob = Identity.Create();
        string file = Path.Combine(_dir, "bob.seen");
        await client.SendAsync(alice, bob.Card, Encoding.UTF8.GetBytes("from before the upgrade"), "text/plain");
        Envelope stored = (await client.Relay.FetchAsync(new FetchRequest { Auth = await client.AuthenticateAsync(bob, MailboxPurpose.Fetch) })).Items[0].Envelope;
        SealedContent content = EnvelopeFormat.Open(bob, stored, out byte[] digest);
        byte[] formerId = NSec.Cryptography.HashAlgorithm.Blake2b_256.Hash([.. EnvelopeFormat.SigningBytes(stored), .. stored.Signature.Span]);
        Assert.Null(SeenMessages.Open(file).Check(digest, formerId, content.SentUnixMs));

        FetchResult after = await client.FetchAsync(bob, seen: SeenMessages.Open(file));
        Assert.Empty(after.Unreadable);
        Assert.Equal("from before the upgrade", Assert.Single(after.Messages).Content.Content.ToStringUtf8());
    }

    [Fact]
    public async Task Lines_a_listen_appends_while_a_fetch_prunes_the_record_are_kept()
    {
        // A listen records messages while fetches open the record and rewrite it (here: each time, to drop a damaged
        // line). Unlocked, a line appended between a fetch's read and its rewrite went with the old file.
        string file = Path.Combine(_dir, "both.seen");
        SeenMessages listening = SeenMessages.Open(file);
        long now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        const int Messages = 400;
        Task listen = Task.Factory.StartNew(() =>
        {
            for (int i = 0; i < Messages; i++)
            {
                byte[] digest = new byte[32];
                BitConverter.TryWriteBytes(digest, i);
                Assert.Null(listening.Check(digest, digest, now));
            }
        }, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        while (!listen.IsCompleted)
        {
            // Under the record's lock, as its writers write (.NET appends at the end it found, not with O_APPEND); a
            // pause between rounds, so the listen gets its turns on a busy machine.
            Damage(file);
            SeenMessages.Open(file);
            Thread.Sleep(1);
        }

        await listen;
        Assert.Equal(Messages, SeenMessages.Open(file).Count);
    }

    private static void Damage(string file, string text = "damaged\n")
    {
        while (true)
        {
            try
            {
                using var held = new FileStream(file + ".lock", FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
                File.AppendAllText(file, text);
                return;
            }
            catch (IOException e) when (MegaNet.Core.Interop.FileLock.IsContention(e))
            {
                Thread.Sleep(1);
            }
        }
    }

    [Fact]
    public void A_message_another_process_recorded_after_this_one_opened_the_record_is_known_here()
    {
        // A listen opens the record once for its life; a fetch (or a listen to another node) records a message later.
        // A relay's copy of it reaching the listen was shown again as new: the listen looked only in what it loaded.
        string file = Path.Combine(_dir, "shared.seen");
        long now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        SeenMessages listening = SeenMessages.Open(file);
        Assert.Null(listening.Check(Bytes(32, 1), Bytes(32, 0xA1), now)); // its own, before the file existed elsewhere
        SeenMessages fetching = SeenMessages.Open(file);
        Assert.Null(fetching.Check(Bytes(32, 2), Bytes(32, 0xA2), now));

        Assert.Contains("copy", listening.Check(Bytes(32, 2), Bytes(32, 0xB2), now)); // the copy, in a new envelope
        Assert.Null(listening.Check(Bytes(32, 2), Bytes(32, 0xA2), now)); // the same envelope again is no copy
        Assert.Contains("copy", fetching.Check(Bytes(32, 1), Bytes(32, 0xB1), now)); // and the other way round

        // A line cut short by a crash at the end is left (not misread), and lines after it are still found.
        Damage(file, "half a line cut by a cra");
        Assert.Null(listening.Check(Bytes(32, 3), Bytes(32, 0xA3), now));
        // The line written after the fragment is a line of its own (it was glued to it, and lost to the others).
        Assert.Contains("copy", fetching.Check(Bytes(32, 3), Bytes(32, 0xB3), now));
        Assert.Null(fetching.Check(Bytes(32, 4), Bytes(32, 0xA4), now));
        Assert.Contains("copy", listening.Check(Bytes(32, 4), Bytes(32, 0xB4), now));
        Assert.Contains("copy", SeenMessages.Open(file).Check(Bytes(32, 4), Bytes(32, 0xB4), now));
    }

    [Fact]
    public void An_envelope_whose_message_was_acknowledged_is_a_copy_when_it_comes_again_here_after_a_reopen_and_elsewhere()
    {
        // Whoever kept an envelope (the node that held it, a relay, a watcher on a plaintext link) can submit it
        // unchanged to another node the owner reads from: before, after the ack it was shown again, unmarked, as new.
        string file = Path.Combine(_dir, "acked.seen");
        long now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        SeenMessages listening = SeenMessages.Open(file); // another process of the identity, opened before the ack
        SeenMessages fetching = SeenMessages.Open(file);
        Assert.Null(fetching.Check(Bytes(32, 1), Bytes(32, 0xA1), now));
        Assert.Null(fetching.Check(Bytes(32, 2), Bytes(32, 0xA2), now));
        Assert.Null(fetching.Check(Bytes(32, 1), Bytes(32, 0xA1), now)); // unacknowledged, the same envelope is shown again
        Assert.Null(listening.Check(Bytes(32, 1), Bytes(32, 0xA1), now)); // (and the listen has it in memory now)

        fetching.Acknowledged(Bytes(32, 0xA1));
        Assert.Contains("acknowledged before", fetching.Check(Bytes(32, 1), Bytes(32, 0xA1), now));
        Assert.Contains("copy", fetching.Check(Bytes(32, 1), Bytes(32, 0xB1), now)); // another envelope: a copy, as before
        Assert.Null(fetching.Check(Bytes(32, 2), Bytes(32, 0xA2), now)); // the other message is not acknowledged
        // The listen knew the envelope as unacknowledged: it looks in the record again before showing it.
        Assert.Contains("acknowledged before", listening.Check(Bytes(32, 1), Bytes(32, 0xA1), now));

        // Kept across a reopen, and across the rewrite an open makes after a crash cut a line short.
        Assert.Contains("acknowledged before", SeenMessages.Open(file).Check(Bytes(32, 1), Bytes(32, 0xA1), now));
        File.AppendAllText(file, "half a line cut by a cra");
        SeenMessages reopened = SeenMessages.Open(file);
        Assert.DoesNotContain("cra", File.ReadAllText(file));
        Assert.Contains("acknowledged before", reopened.Check(Bytes(32, 1), Bytes(32, 0xA1), now));
        Assert.Null(reopened.Check(Bytes(32, 2), Bytes(32, 0xA2), now));

        // An envelope the record does not hold, or an acknowledgement made twice, writes nothing.
        string[] lines = File.ReadAllLines(file);
        reopened.Acknowledged(Bytes(32, 0xC3));
        reopened.Acknowledged(Bytes(32, 0xA1));
        Assert.Equal(lines, File.ReadAllLines(file));

        // In memory only, the same rule.
        SeenMessages memory = SeenMessages.InMemory();
        Assert.Null(memory.Check(Bytes(32, 1), Bytes(32, 0xA1), now));
        memory.Acknowledged(Bytes(32, 0xA1));
        Assert.Contains("acknowledged before", memory.Check(Bytes(32, 1), Bytes(32, 0xA1), now));
    }

    [Fact]
    public void A_record_written_before_acknowledgements_were_recorded_still_reads()
    {
        // Lines of three fields (digest, envelope id prefix, send time), as every version wrote them until 2026-12-05.
        string file = Path.Combine(_dir, "three-fields.seen");
        long now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        string digest = Convert.ToHexStringLower(Bytes(32, 1)), id = Convert.ToHexStringLower(Bytes(16, 0xA1));
        File.WriteAllText(file, $"{digest} {id} {now}\n{digest} {id} {now} unknown-mark\n");
        SeenMessages seen = SeenMessages.Open(file);
        Assert.Equal(1, seen.Count);
        Assert.Null(seen.Check(Bytes(32, 1), Bytes(32, 0xA1), now)); // read, and not taken for acknowledged
        Assert.Contains("copy", seen.Check(Bytes(32, 1), Bytes(32, 0xB1), now));
        Assert.Equal([$"{digest} {id} {now}"], File.ReadAllLines(file)); // the line it does not know dropped
        seen.Acknowledged(Bytes(32, 0xA1));
        Assert.Equal([$"{digest} {id} {now}", $"{digest} {id} {now} acked"], File.ReadAllLines(file));
    }

    [Fact]
    public void A_last_line_without_its_end_is_rewritten_whole_before_another_is_appended()
    {
        string file = Path.Combine(_dir, "unended.seen");
        long now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        Assert.Null(SeenMessages.Open(file).Check(Bytes(32, 1), Bytes(32, 0xA1), now));
        File.WriteAllText(file, File.ReadAllText(file).TrimEnd('\n')); // a crash before the line's end was written

        // Opened, the whole entry counts, and a message recorded next is a line of its own: it was glued to that entry,
        // and both were lost at the next open.
        Assert.Null(SeenMessages.Open(file).Check(Bytes(32, 2), Bytes(32, 0xA2), now));
        SeenMessages later = SeenMessages.Open(file);
        Assert.Contains("copy", later.Check(Bytes(32, 1), Bytes(32, 0xB1), now));
        Assert.Contains("copy", later.Check(Bytes(32, 2), Bytes(32, 0xB2), now));
    }

    [Fact]
    public void A_record_rewritten_by_another_process_is_read_again_from_its_start()
    {
        // Another process's open prunes the record into a new file (old entries, a damaged line): an offset into the
        // former file means nothing in the new one, even where the new one has grown longer than it since.
        var clock = new Clock(DateTimeOffset.UtcNow);
        string file = Path.Combine(_dir, "pruned.seen");
        long now = clock.Now.ToUnixTimeMilliseconds();
        long early = now - (long)TimeSpan.FromDays(20).TotalMilliseconds;
        SeenMessages listening = SeenMessages.Open(file, clock);
        Assert.Null(listening.Check(Bytes(32, 1), Bytes(32, 0xA1), early));
        Assert.Null(listening.Check(Bytes(32, 2), Bytes(32, 0xA2), early));
        Assert.Null(listening.Check(Bytes(32, 3), Bytes(32, 0xA3), now));
        Assert.Null(listening.Check(Bytes(32, 4), Bytes(32, 0xA4), now)); // has read three lines of four

        clock.Now = clock.Now.AddDays(15); // the first two are forgotten at the next open, which rewrites the file
        SeenMessages fetching = SeenMessages.Open(file, clock);
        Assert.Equal(2, File.ReadAllLines(file).Length);
        long later = clock.Now.ToUnixTimeMilliseconds();
        Assert.Null(fetching.Check(Bytes(32, 5), Bytes(32, 0xA5), later));
        Assert.Null(fetching.Check(Bytes(32, 6), Bytes(32, 0xA6), later));
        Assert.Null(fetching.Check(Bytes(32, 7), Bytes(32, 0xA7), later));
        Assert.Equal(5, File.ReadAllLines(file).Length); // longer than what the listen read, but not what it read

        Assert.Contains("copy", listening.Check(Bytes(32, 5), Bytes(32, 0xB5), later));
        Assert.Contains("copy", listening.Check(Bytes(32, 7), Bytes(32, 0xB7), later));
        Assert.Null(listening.Check(Bytes(32, 8), Bytes(32, 0xA8), later));
        Assert.Contains("copy", fetching.Check(Bytes(32, 8), Bytes(32, 0xB8), later));
    }

    [Fact]
    public void A_record_an_older_version_rewrote_to_the_same_length_is_read_again_from_its_start()
    {
        // A version before rewrites were counted in the lock file prunes the record into a new file renamed over it, and
        // leaves the count alone. The new file as long as the old one (or longer) was read from the old one's offset:
        // what it held was never read, and a relay's copy of a message it had recorded was shown as new.
        string file = Path.Combine(_dir, "older.seen");
        long now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        SeenMessages listening = SeenMessages.Open(file);
        Assert.Null(listening.Check(Bytes(32, 1), Bytes(32, 0xA1), now));
        Assert.Null(listening.Check(Bytes(32, 2), Bytes(32, 0xA2), now));
        Assert.Null(listening.Check(Bytes(32, 3), Bytes(32, 0xA3), now)); // has read all three lines
        byte[] lockFile = File.ReadAllBytes(file + ".lock");

        // The older version's rewrite: other messages, as many lines of the same length, through a file of its own.
        string temp = file + ".older.tmp";
        File.WriteAllText(temp, string.Concat(new byte[] { 5, 6, 7 }.Select(n =>
            $"{Convert.ToHexStringLower(Bytes(32, n))} {Convert.ToHexStringLower(Bytes(16, (byte)(0xA0 + n)))} {now}\n")));
        Assert.Equal(new FileInfo(file).Length, new FileInfo(temp).Length);
        File.Move(temp, file, overwrite: true);
        Assert.Equal(lockFile, File.ReadAllBytes(file + ".lock")); // the count of rewrites as it was

        Assert.Null(listening.Check(Bytes(32, 5), Bytes(32, 0xA5), now)); // the same envelope again is no copy
        Assert.Contains("copy", listening.Check(Bytes(32, 6), Bytes(32, 0xB6), now));
        Assert.Contains("copy", listening.Check(Bytes(32, 7), Bytes(32, 0xB7), now));
    }

    [Fact]
    public async Task A_listen_does_not_show_a_replay_of_what_a_fetch_beside_it_showed_and_acknowledged()
    {
        await using TestNode node = await TestNode.StartAsync();
        using MegaNetClient client = node.Client();
        using Identity alice = Identity.Create(), bob = Identity.Create(), relay = Identity.Create();
        string file = Path.Combine(_dir, "bob.seen");
        SeenMessages listening = SeenMessages.Open(file); // a listen started before the fetch, for its whole life
        await client.SendAsync(alice, bob.Card, Encoding.UTF8.GetBytes("meet at noon"), "text/plain");
        Envelope carried = (await client.Relay.FetchAsync(new FetchRequest { Auth = await client.AuthenticateAsync(bob, MailboxPurpose.Fetch) })).Items[0].Envelope;

        // 'fetch --ack' shows it and deletes it from the node.
        FetchResult fetched = await client.FetchAsync(bob, seen: SeenMessages.Open(file));
        Assert.Equal(1, await client.AckAsync(bob, [Assert.Single(fetched.Messages).Seq]));

        // A relay that carried it replays it in a new envelope; the listen gets only the copy, then a later message.
        Envelope replay = Rewrapped(carried, relay, bob.Card);
        Assert.False((await client.Relay.SubmitAsync(new SubmitRequest { Envelope = replay })).Duplicate);
        await client.SendAsync(alice, bob.Card, Encoding.UTF8.GetBytes("after"), "text/plain");

        var skipped = new List<UnreadableMessage>();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        await foreach (ReceivedMessage m in client.ListenAsync(bob, 0, cts.Token, skipped.Add, listening))
        {
            Assert.Equal("after", m.Content.Content.ToStringUtf8());
            break;
        }

        Assert.Contains("copy", Assert.Single(skipped).Reason);
        node.AssertNoServerErrors();
    }

    [Fact]
    public void A_message_dated_far_ahead_is_forgotten_a_window_after_it_arrived_not_after_its_date()
    {
        // A sender's clock (or a sender filling the record on purpose) at year 9999 kept the line for good, and every
        // fetch loaded it.
        var clock = new Clock(DateTimeOffset.UtcNow);
        string file = Path.Combine(_dir, "ahead.seen");
        long farAhead = new DateTimeOffset(9999, 1, 1, 0, 0, 0, TimeSpan.Zero).ToUnixTimeMilliseconds();
        SeenMessages seen = SeenMessages.Open(file, clock);
        Assert.Null(seen.Check(Bytes(32, 7), Bytes(32, 0x7), farAhead));
        Assert.Contains("copy", seen.Check(Bytes(32, 7), Bytes(32, 0x8), farAhead)); // still a copy while remembered
        Assert.Equal(1, SeenMessages.Open(file, clock).Count);

        clock.Now = clock.Now.AddDays(33); // the window (31 days) after a day ahead of its arrival
        SeenMessages later = SeenMessages.Open(file, clock);
        Assert.Equal(0, later.Count);
        Assert.Empty(File.ReadAllLines(file));

        // Forgotten, a copy of it (a relay wrapping the same sealed payload in a new envelope) is shown again; it must
        // be marked, as one sent before the window is: unmarked, it passed for a new message every month. A day ahead
        // (clocks differ) is not marked.
        Assert.Null(later.Check(Bytes(32, 7), Bytes(32, 0x9), farAhead));
        Assert.True(later.IsOld(farAhead));
        Assert.True(later.IsOld(clock.Now.AddDays(2).ToUnixTimeMilliseconds()));
        Assert.False(later.IsOld(clock.Now.AddHours(23).ToUnixTimeMilliseconds()));
    }

    [Fact]
    public void The_record_survives_a_reopen_forgets_after_the_window_and_shows_what_is_older_marked()
    {
        var clock = new Clock(DateTimeOffset.UtcNow);
        string file = Path.Combine(_dir, "id.seen");
        long sent = clock.Now.ToUnixTimeMilliseconds();
        SeenMessages seen = SeenMessages.Open(file, clock);
        Assert.Null(seen.Check(Bytes(32, 1), Bytes(32, 0xA), sent));
        Assert.Null(seen.Check(Bytes(32, 1), Bytes(32, 0xA), sent)); // the same envelope again
        Assert.Contains("copy", seen.Check(Bytes(32, 1), Bytes(32, 0xB), sent));
        Assert.Null(seen.Check(Bytes(32, 2), Bytes(32, 0xC), sent - (long)TimeSpan.FromDays(20).TotalMilliseconds));
        File.AppendAllText(file, "half a line cut by a cra"); // a crash in the middle of an append

        // Reopened: both remembered, the torn line dropped (and the file rewritten without it).
        SeenMessages again = SeenMessages.Open(file, clock);
        Assert.Equal(2, again.Count);
        Assert.Contains("copy", again.Check(Bytes(32, 1), Bytes(32, 0xD), sent));
        Assert.DoesNotContain("cra", File.ReadAllText(file));

        // Fifteen days on, the one sent 35 days ago is forgotten. Anything sent that long ago may be a replay, but it
        // is shown (only marked old): nodes keep mail for up to 3,650 days, and a sender's clock can be off.
        clock.Now = clock.Now.AddDays(15);
        SeenMessages later = SeenMessages.Open(file, clock);
        Assert.Equal(1, later.Count);
        long old = sent - (long)TimeSpan.FromDays(20).TotalMilliseconds;
        Assert.True(later.IsOld(old));
        Assert.Null(later.Check(Bytes(32, 2), Bytes(32, 0xE), old));
        Assert.Null(later.Check(Bytes(32, 2), Bytes(32, 0xE), old)); // the same envelope again
        Assert.Contains("copy", later.Check(Bytes(32, 2), Bytes(32, 0x1E), old)); // a true repeat, in this session
        Assert.False(later.IsOld(clock.Now.ToUnixTimeMilliseconds()));
        Assert.Null(later.Check(Bytes(32, 3), Bytes(32, 0xF), clock.Now.ToUnixTimeMilliseconds()));

        // The old one is not written down (the next open would prune it again): the file stays bounded.
        Assert.Equal(2, File.ReadAllLines(file).Length);
        Assert.Equal(2, SeenMessages.Open(file, clock).Count);

        if (!OperatingSystem.IsWindows())
        {
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(file));
        }
    }

    [Fact]
    public void A_record_held_open_for_months_forgets_what_left_the_window_as_an_open_would()
    {
        // A listen runs for months with the record it opened: pruned only at an open, its file and its memory grew by
        // every message for as long as it ran.
        var clock = new Clock(DateTimeOffset.UtcNow);
        string file = Path.Combine(_dir, "long.seen");
        SeenMessages seen = SeenMessages.Open(file, clock);
        SeenMessages memory = SeenMessages.InMemory(clock);
        foreach (SeenMessages record in (SeenMessages[])[seen, memory])
        {
            Assert.Null(record.Check(Bytes(32, 1), Bytes(32, 0xA), clock.Now.ToUnixTimeMilliseconds()));
        }

        clock.Now = clock.Now.AddDays(20);
        foreach (SeenMessages record in (SeenMessages[])[seen, memory])
        {
            Assert.Null(record.Check(Bytes(32, 2), Bytes(32, 0xB), clock.Now.ToUnixTimeMilliseconds()));
            Assert.Equal(2, record.Count);
        }

        // The first is now past the window: the next message finds it forgotten, in memory and in the file.
        clock.Now = clock.Now.AddDays(12);
        foreach (SeenMessages record in (SeenMessages[])[seen, memory])
        {
            Assert.Null(record.Check(Bytes(32, 3), Bytes(32, 0xC), clock.Now.ToUnixTimeMilliseconds()));
            Assert.Equal(2, record.Count);
            Assert.Contains("copy", record.Check(Bytes(32, 2), Bytes(32, 0x1B), clock.Now.ToUnixTimeMilliseconds())); // the rest stays
        }

        Assert.Equal(2, File.ReadAllLines(file).Length);
        Assert.Equal(2, SeenMessages.Open(file, clock).Count);
    }

    [Fact]
    public async Task Concurrent_opens_that_rewrite_the_record_neither_fail_nor_lose_it()
    {
        // fetch and listen open the same record; an open that drops a torn line rewrites the file. With one shared
        // temporary name the second rewrite truncated the first's file or found it renamed away.
        string file = Path.Combine(_dir, "race.seen");
        long sent = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        string[] lines = Enumerable.Range(0, 2000).Select(i => $"{Convert.ToHexStringLower(Bytes(32, 0)).Remove(0, 8)}{i:x8} {new string('a', 32)} {sent}").ToArray();
        for (int round = 0; round < 30; round++)
        {
            await File.WriteAllTextAsync(file, string.Join('\n', lines) + "\ntorn lin");
            using var start = new Barrier(4);
            SeenMessages[] opened = await Task.WhenAll(Enumerable.Range(0, 4).Select(_ => Task.Run(() =>
            {
                start.SignalAndWait();
                return SeenMessages.Open(file);
            })));
            Assert.All(opened, seen => Assert.Equal(lines.Length, seen.Count));
            Assert.Equal(lines, await File.ReadAllLinesAsync(file));
        }

        // No temporary file left behind; the lock file stays (deleting it would race with the next one to take it).
        Assert.Equal(["race.seen", "race.seen.lock"], Directory.EnumerateFiles(_dir).Select(Path.GetFileName).Order(StringComparer.Ordinal));
    }
}
