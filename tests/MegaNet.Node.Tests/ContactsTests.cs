using System.Text.Json.Nodes;
using MegaNet.Api;
using MegaNet.Node.Cli;

using static MegaNet.Node.Tests.MeganetResults;
using Result = MegaNet.Node.Tests.MeganetProcess.Result;

namespace MegaNet.Node.Tests;

/// <summary>
/// <c>meganet contact</c>: a name saved for a card sends to it (<c>send --to NAME</c>) and names mail signed by that card
/// in <c>fetch</c> and <c>listen</c>; mistakes in names, cards and the file are errors that say what to fix, and the
/// file is changed under its lock.
/// </summary>
public sealed class ContactsTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("meganet-contacts-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private Task<Result> Meganet(params string[] args) => MeganetProcess.RunAsync(_dir, null, false, args);

    private (string Path, ContactCard Card) NewIdentity(string name) => TestIdentities.Save(_dir, name);

    [Fact]
    public async Task A_saved_name_sends_to_its_card_and_names_mail_signed_by_it()
    {
        await using TestNode node = await TestNode.StartAsync();
        string url = node.Address.ToString();
        (string alice, ContactCard aliceCard) = NewIdentity("alice.json");
        (string bob, ContactCard bobCard) = NewIdentity("bob.json");
        (string mallory, _) = NewIdentity("mallory.json");

        AssertExit(await Meganet("contact", "add", "Bob Jones", bobCard.ToString(), "-i", alice), 0, $"saved 'Bob Jones' in {Path.Combine(_dir, "alice.contacts")}");
        AssertExit(await Meganet("contact", "add", "alice", aliceCard.ToString(), "-i", bob), 0);
        // Case is ignored in names; the name is sent to, not a card.
        AssertExit(await Meganet("send", "-i", alice, "--to", "bob jones", "--text", "by name", "--node", url), 0);
        AssertExit(await Meganet("send", "-i", mallory, "--to", bobCard.ToString(), "--text", "from a stranger", "--node", url), 0);

        Result text = await Meganet("fetch", "-i", bob, "--node", url);
        AssertExit(text, 0);
        string[] lines = text.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Contains(lines, l => l.EndsWith(" from alice: by name", StringComparison.Ordinal));
        // Mail from a card not in the contacts is shown by its card, whatever it says.
        Assert.Contains(lines, l => l.Contains(" from mn1", StringComparison.Ordinal) && l.EndsWith(": from a stranger", StringComparison.Ordinal));

        Result json = await Meganet("fetch", "-i", bob, "--node", url, "--json");
        AssertExit(json, 0);
        JsonObject[] messages = JsonLines(json);
        JsonObject named = Assert.Single(messages, m => m["text"]!.GetValue<string>() == "by name");
        Assert.Equal("alice", named["sender_name"]!.GetValue<string>());
        Assert.Equal(aliceCard.ToString(), named["sender"]!.GetValue<string>());
        Assert.False(Assert.Single(messages, m => m["text"]!.GetValue<string>() == "from a stranger").ContainsKey("sender_name"));

        // Forgotten: shown by the card again, and no longer a recipient by name.
        AssertExit(await Meganet("contact", "remove", "ALICE", "-i", bob), 0, "removed 'alice'");
        Result after = await Meganet("fetch", "-i", bob, "--node", url);
        AssertExit(after, 0);
        Assert.DoesNotContain(" from alice:", after.Stdout, StringComparison.Ordinal);
        Assert.Contains($" from {aliceCard}: by name", after.Stdout, StringComparison.Ordinal);
        AssertExit(await Meganet("send", "-i", bob, "--to", "alice", "--text", "x", "--node", url), 1, "is neither a contact card (mn1...) nor the name of a contact in");
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task Names_and_cards_are_checked_and_each_card_has_one_name()
    {
        (string alice, _) = NewIdentity("alice.json");
        (_, ContactCard bob) = NewIdentity("bob.json");
        (_, ContactCard carol) = NewIdentity("carol.json");
        AssertExit(await Meganet("contact", "add", "bob", bob.ToString(), "-i", alice), 0);

        AssertExit(await Meganet("contact", "add", "Bob", carol.ToString(), "-i", alice), 1, "'bob' is already a contact in");
        AssertExit(await Meganet("contact", "add", "robert", bob.ToString(), "-i", alice), 1, "That card is already saved as 'bob'");
        AssertExit(await Meganet("contact", "add", "mn1bob", carol.ToString(), "-i", alice), 1, "may not begin with 'mn1'");
        AssertExit(await Meganet("contact", "add", "car\u001b[2Jol", carol.ToString(), "-i", alice), 1, "may not hold control or invisible characters");
        AssertExit(await Meganet("contact", "add", "car\u202eol", carol.ToString(), "-i", alice), 1, "may not hold control or invisible characters");
        AssertExit(await Meganet("contact", "add", new string('c', Contacts.MaxNameLength + 1), carol.ToString(), "-i", alice), 1, $"1 to {Contacts.MaxNameLength} characters");
        AssertExit(await Meganet("contact", "add", "   ", carol.ToString(), "-i", alice), 1, $"1 to {Contacts.MaxNameLength} characters");
        // A typo in the middle (the last character also carries spare bits, so A and B there can be the same card's
        // non-canonical form, refused for that instead: 1 run in 16).
        string card = carol.ToString();
        int at = card.Length - 10;
        string typo = card[..at] + (card[at] == 'A' ? 'B' : 'A') + card[(at + 1)..];
        AssertExit(await Meganet("contact", "add", "carol", typo, "-i", alice), 1, "card: The contact card is damaged");
        // The two the other way round: said so, not that the name is no card.
        AssertExit(await Meganet("contact", "add", carol.ToString(), "carol", "-i", alice), 1, "the card comes second: 'meganet contact add NAME CARD'.");
        AssertExit(await Meganet("contact", "remove", "carol", "-i", alice), 1, "No contact named 'carol'");
        // A name that looks like an option is refused as a mistyped one, unless it comes after a lone "--".
        AssertExit(await Meganet("contact", "add", "--carol", carol.ToString(), "-i", alice), 1, "Unrecognized command or argument '--carol'");
        AssertExit(await Meganet("contact", "add", "-i", alice, "--", "--carol", carol.ToString()), 0);
        AssertExit(await Meganet("contact", "remove", "-i", alice, "--", "--carol"), 0);
        // The same word as an option's value before the "--" and as the name after it (an identity file named --work).
        File.Copy(alice, Path.Combine(_dir, "--work"));
        AssertExit(await Meganet("contact", "add", "-i", "--work", "--", "--work", carol.ToString()), 0);
        AssertExit(await Meganet("contact", "list", "-i", Path.Combine(_dir, "x.contacts")), 1, "cannot be named");
        // Beside no identity (a mistyped --identity): refused, and no contacts file is made (it was, and the mistake
        // showed only when 'send --to' found no such contact).
        string alcie = Path.Combine(_dir, "alcie.json");
        AssertExit(await Meganet("contact", "add", "carol", carol.ToString(), "-i", alcie), 1, $"No identity at {alcie}; create one with 'meganet id new --identity {ClientCommands.ShellQuoted(alcie)}'");
        Assert.False(File.Exists(Path.Combine(_dir, "alcie.contacts")));
        // remove too (it answered "No contact named", and its lock file made the identity's folder): nothing is made.
        string nowhere = Path.Combine(_dir, "nowhere", "alice.json");
        AssertExit(await Meganet("contact", "remove", "carol", "-i", nowhere), 1, "No identity at");
        Assert.False(Directory.Exists(Path.GetDirectoryName(nowhere)));

        // The same again changes nothing; the file is its owner's alone.
        AssertExit(await Meganet("contact", "add", "bob", bob.ToString(), "-i", alice), 0, "already saved so in");
        if (!OperatingSystem.IsWindows())
        {
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(Path.Combine(_dir, "alice.contacts")));
        }

        // A name a shell would split or expand is quoted in the command an error suggests.
        AssertExit(await Meganet("contact", "add", "it's $me", carol.ToString(), "-i", alice), 0);
        // The command suggested names the identity given, so that it acts on that one and not on the default.
        AssertExit(await Meganet("contact", "add", "other", carol.ToString(), "-i", alice), 1, $"meganet contact remove --identity {ClientCommands.ShellQuoted(alice)} 'it'\\''s $me'");
        AssertExit(await Meganet("contact", "remove", "IT'S $ME", "-i", alice), 0, "removed 'it's $me'");

        // --force gives the name to another card; the list shows what is saved.
        AssertExit(await Meganet("contact", "add", "bob", carol.ToString(), "-i", alice, "--force"), 0);
        Result list = await Meganet("contact", "list", "-i", alice, "--json");
        AssertExit(list, 0);
        JsonObject only = Assert.Single(JsonLines(list));
        Assert.Equal("bob", only["name"]!.GetValue<string>());
        Assert.Equal(carol.ToString(), only["card"]!.GetValue<string>());
        Assert.Equal(Convert.ToHexStringLower(carol.Address), only["address"]!.GetValue<string>());
    }

    [Fact]
    public async Task A_damaged_contacts_file_is_named_with_its_line_before_any_mail_is_fetched()
    {
        await using TestNode node = await TestNode.StartAsync();
        string url = node.Address.ToString();
        (string alice, ContactCard aliceCard) = NewIdentity("alice.json");
        (string bob, ContactCard bobCard) = NewIdentity("bob.json");
        AssertExit(await Meganet("send", "-i", alice, "--to", bobCard.ToString(), "--text", "kept", "--node", url), 0);
        string file = Path.Combine(_dir, "bob.contacts");
        await File.WriteAllTextAsync(file, $"# by hand\n{aliceCard} alice\n\n{aliceCard.ToString()[..20]} broken\n");

        AssertExit(await Meganet("fetch", "-i", bob, "--node", url, "--ack"), 1, $"{file} line 4:");
        // The same card or name twice is a damaged file too: one of them would be ignored.
        await File.WriteAllTextAsync(file, $"{aliceCard} alice\n{aliceCard} eve\n");
        AssertExit(await Meganet("contact", "list", "-i", bob), 1, $"{file} line 2: the card is on line 1 too; fix or delete that line");
        await File.WriteAllTextAsync(file, $"{aliceCard} alice\n\n{bobCard} ALICE\n");
        AssertExit(await Meganet("contact", "list", "-i", bob), 1, $"{file} line 3: the name is on line 1 too");

        // Nothing was fetched or acknowledged: the mail is still there once the file is mended.
        await File.WriteAllTextAsync(file, $"{aliceCard} alice\n");
        Result fetched = await Meganet("fetch", "-i", bob, "--node", url);
        AssertExit(fetched, 0);
        Assert.Contains(" from alice: kept", fetched.Stdout, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Comments_blank_lines_and_unchanged_contacts_stay_as_written_when_the_file_is_rewritten()
    {
        (string alice, _) = NewIdentity("alice.json");
        ContactCard[] cards = Enumerable.Range(0, 4).Select(_ => { using Identity i = Identity.Create(); return i.Card; }).ToArray();
        string file = Contacts.PathOf(alice);
        // Notes, a blank line, a CRLF line and a contact laid out by hand (the rewrite dropped all but the contacts).
        await File.WriteAllTextAsync(file,
            $"# my contacts\n\n  # work\n{cards[0]}   bob  \n# family\r\n{cards[1]} carol\n\n{cards[2]} dave\n# the end");

        AssertExit(await Meganet("contact", "add", "erin", cards[3].ToString(), "-i", alice), 0, "saved 'erin'");
        Assert.Equal(
            $"# my contacts\n\n  # work\n{cards[0]}   bob  \n# family\r\n{cards[1]} carol\n\n{cards[2]} dave\n# the end\n{cards[3]} erin\n",
            await File.ReadAllTextAsync(file));

        // Removed: its line goes, the lines around it stay; given to another card: rewritten in place.
        AssertExit(await Meganet("contact", "remove", "carol", "-i", alice), 0, "removed 'carol'");
        AssertExit(await Meganet("contact", "add", "bob", cards[1].ToString(), "--force", "-i", alice), 0, "saved 'bob'");
        Assert.Equal(
            $"# my contacts\n\n  # work\n{cards[1]} bob\n# family\r\n\n{cards[2]} dave\n# the end\n{cards[3]} erin\n",
            await File.ReadAllTextAsync(file));
        Assert.Equal(["bob", "dave", "erin"], Contacts.Load(alice).Entries.Select(e => e.Name));

        // A file a command creates says how it is written, comments included.
        (string bob, _) = NewIdentity("bob.json");
        await Contacts.ChangeAsync(bob, c => c.Add("dave", cards[2], replace: false), CancellationToken.None);
        string[] created = (await File.ReadAllTextAsync(Contacts.PathOf(bob))).Split('\n');
        Assert.StartsWith("# ", created[0], StringComparison.Ordinal);
        Assert.Contains("comment", created[0], StringComparison.Ordinal);
        Assert.Equal([$"{cards[2]} dave", string.Empty], created[1..]);
        Result help = await Meganet("contact", "--help");
        Assert.Contains("a line whose first character other than white space is # is a comment", help.Stdout, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_name_is_given_only_to_a_card_with_both_keys_saved()
    {
        string identity = Path.Combine(_dir, "bob.json");
        using Identity alice = Identity.Create(), mallory = Identity.Create();
        await Contacts.ChangeAsync(identity, c => c.Add("alice", alice.Card, replace: false), CancellationToken.None);
        Contacts contacts = Contacts.Load(identity);
        Assert.Equal("alice", contacts.NameOf(alice.Card));
        // A card with one of alice's keys and one of another's is not alice (her address is the hash of both).
        Assert.Null(contacts.NameOf(new ContactCard(alice.Card.SigningKey, mallory.Card.EncryptionKey)));
        Assert.Null(contacts.NameOf(new ContactCard(mallory.Card.SigningKey, alice.Card.EncryptionKey)));
        Assert.Null(contacts.NameOf(mallory.Card));
    }

    [Fact]
    public async Task Concurrent_changes_are_all_kept_and_a_follower_sees_them()
    {
        string identity = Path.Combine(_dir, "alice.json");
        ContactCard[] cards = Enumerable.Range(0, 16).Select(_ => { using Identity i = Identity.Create(); return i.Card; }).ToArray();
        var follower = new ContactsFollower(identity);
        Assert.Null(follower.NameOf(cards[0]));

        // Each change reads, changes and rewrites the whole file: without the lock, changes made at once are lost (the
        // pause, as a slow disk would, lets the others read the file meanwhile).
        // A thread each, so all start at once whatever the thread pool's size.
        await Task.WhenAll(cards.Select((card, i) => Task.Factory.StartNew(() => Contacts.ChangeAsync(identity, c =>
        {
            c.Add($"friend {i}", card, replace: false);
            Thread.Sleep(5);
        }, CancellationToken.None), CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default).Unwrap()));
        Contacts saved = Contacts.Load(identity);
        Assert.Equal(cards.Length, saved.Entries.Count);
        for (int i = 0; i < cards.Length; i++)
        {
            Assert.Equal($"friend {i}", saved.NameOf(cards[i]));
        }

        // A listen that started before sees the names saved since, and keeps them when the file is damaged meanwhile.
        Assert.Equal("friend 3", follower.NameOf(cards[3]));
        string path = Contacts.PathOf(identity);
        await File.AppendAllTextAsync(path, "not a card\n");
        File.SetLastWriteTimeUtc(path, DateTime.UtcNow.AddSeconds(5));
        Assert.Equal("friend 3", follower.NameOf(cards[3]));
        File.Delete(path);
        Assert.Null(follower.NameOf(cards[3]));

        // Changed within a time stamp's resolution (the same time, the same length): a file written in the last two
        // seconds is read again all the same.
        await Contacts.ChangeAsync(identity, c => c.Add("ab", cards[0], replace: false), CancellationToken.None);
        Assert.Equal("ab", follower.NameOf(cards[0]));
        DateTime written = File.GetLastWriteTimeUtc(path);
        await Contacts.ChangeAsync(identity, c =>
        {
            c.Remove("ab");
            c.Add("ba", cards[0], replace: false);
        }, CancellationToken.None);
        File.SetLastWriteTimeUtc(path, written);
        Assert.Equal("ba", follower.NameOf(cards[0]));
    }
}
