using System.Text;
using System.Text.Json.Nodes;
using MegaNet.Api;
using MegaNet.Node.Cli;

using static MegaNet.Node.Tests.MeganetResults;
using Result = MegaNet.Node.Tests.MeganetProcess.Result;

namespace MegaNet.Node.Tests;

/// <summary>
/// <c>fetch --save-files DIR</c>: each file received (in one envelope or in parts) is written into DIR under a name made
/// safe from what the sender chose, never over a file there, and the output says where.
/// </summary>
public sealed class SaveFilesTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("meganet-save-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private Task<Result> Meganet(params string[] args) => MeganetProcess.RunAsync(_dir, null, false, args);

    [Theory]
    [InlineData("photo.jpg", "photo.jpg")]
    [InlineData("../../.bashrc", "_._.._.bashrc")]
    [InlineData(".bashrc", "_bashrc")]
    [InlineData("-rf", "_rf")]
    [InlineData("a<b>c\"d|e?f*g", "a_b_c_d_e_f_g")]
    [InlineData("trailing...", "trailing")]
    [InlineData("C:\\Windows\\x.dll", "C__Windows_x.dll")]
    [InlineData("..", "file")]
    [InlineData(" . ", "file")]
    [InlineData("", "file")]
    [InlineData("a\u001b]0;title\u0007b\u202etxt.exe", "a_]0;title_b_txt.exe")]
    [InlineData("line\nbreak", "line_break")]
    [InlineData("bob.contacts", "bob.contacts_")]
    [InlineData("bob.SEEN", "bob.SEEN_")]
    [InlineData("bob.seen.lock", "bob.seen.lock_")]
    [InlineData("bob.parts", "bob.parts_")]
    [InlineData("bob.sending", "bob.sending_")]
    [InlineData("known-nodes", "known-nodes_")]
    [InlineData("Known-Nodes", "Known-Nodes_")]
    [InlineData("known-nodes.txt", "known-nodes.txt")]
    [InlineData("contacts", "contacts")]
    public void Saved_names_are_one_plain_name(string sent, string saved) => Assert.Equal(saved, Inbox.SavedName(sent));

    [Fact]
    public void A_long_name_is_cut_keeping_its_extension_and_whole_characters()
    {
        string name = Inbox.SavedName(new string('x', 200) + ".tar.gz");
        Assert.EndsWith(".gz", name, StringComparison.Ordinal);
        Assert.Equal(140, Encoding.UTF8.GetByteCount(name));
        // Counted in bytes, not characters: three bytes each, 100 of them made a temporary name over 255 bytes.
        string chinese = Inbox.SavedName(new string('文', 100) + ".txt");
        Assert.EndsWith(".txt", chinese, StringComparison.Ordinal);
        Assert.InRange(Encoding.UTF8.GetByteCount(chinese), 130, 140);
        // A cut through a surrogate pair would leave half a character, which no file system takes.
        // One ASCII character first, so that the cut falls between the halves of a pair.
        string emoji = Inbox.SavedName("x" + string.Concat(Enumerable.Repeat("\U0001F600", 100)) + ".png");
        Assert.True(Encoding.UTF8.GetString(Encoding.UTF8.GetBytes(emoji)) == emoji, "the name is not valid UTF-16");
        Assert.EndsWith(".png", emoji, StringComparison.Ordinal);
    }

    [Fact]
    public void A_file_counts_as_saved_before_only_as_a_plain_file_with_the_same_bytes()
    {
        byte[] bytes = new byte[200_000];
        new Random(3).NextBytes(bytes);
        string plain = Path.Combine(_dir, "plain.bin");
        File.WriteAllBytes(plain, bytes);
        if (!OperatingSystem.IsWindows())
        {
            // Readable by others (or theirs): someone else may have put it there, or may change it after.
            File.SetUnixFileMode(plain, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
            Assert.False(Inbox.HoldsAlready(plain, bytes));
            File.SetUnixFileMode(plain, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        }

        Assert.True(Inbox.HoldsAlready(plain, bytes));
        Assert.False(Inbox.HoldsAlready(plain, bytes.AsSpan(0, bytes.Length - 1)));
        bytes[^1] ^= 1;
        Assert.False(Inbox.HoldsAlready(plain, bytes));
        Assert.False(Inbox.HoldsAlready(Path.Combine(_dir, "missing.bin"), bytes));
        bytes[^1] ^= 1;
        if (!OperatingSystem.IsWindows())
        {
            string link = Path.Combine(_dir, "link.bin");
            File.CreateSymbolicLink(link, plain);
            Assert.False(Inbox.HoldsAlready(link, bytes));

            // A pipe of length 0 for an empty file: its open would wait for a writer.
            string fifo = Path.Combine(_dir, "fifo");
            using (System.Diagnostics.Process mkfifo = System.Diagnostics.Process.Start("mkfifo", fifo))
            {
                mkfifo.WaitForExit();
            }

            Assert.False(Inbox.HoldsAlready(fifo, []));
        }
    }

    [Fact]
    public async Task A_file_with_a_long_name_in_another_script_is_saved()
    {
        await using Mailroom room = await Mailroom.StartAsync(_dir);
        (TestNode node, string url, MegaNetClient client, Identity alice, Identity bob, string bobPath) = room;
        byte[] content = Encoding.UTF8.GetBytes("報告");
        await client.SendAsync(alice, bob.Card, content, "application/octet-stream", new string('文', 100) + ".txt");
        string saveDir = Path.Combine(_dir, "received");

        Result fetched = await Meganet("fetch", "-i", bobPath, "--node", url, "--json", "--save-files", saveDir, "--ack");
        Assert.True(fetched.ExitCode == 0, fetched.Stderr);
        string saved = Assert.Single(JsonLines(fetched))["saved_as"]!.GetValue<string>();
        Assert.Equal(content, await File.ReadAllBytesAsync(saved));
        Assert.EndsWith(".txt", saved, StringComparison.Ordinal);
        Assert.Contains("acknowledged 1 message(s)", fetched.Stderr, StringComparison.Ordinal);
        node.AssertNoServerErrors();
    }

    /// <summary>Saved into the identity's own directory, a stranger's file named like the identity's contacts became
    /// them (where there were none yet): from the next message on the stranger's mail showed as from a contact, and
    /// 'send --to' that name went to the stranger (found in review, 2026-12-04).</summary>
    [Fact]
    public async Task A_file_named_like_a_side_file_saved_beside_the_identity_is_not_taken_for_it()
    {
        await using Mailroom room = await Mailroom.StartAsync(_dir);
        (TestNode node, string url, MegaNetClient client, Identity alice, Identity bob, string bobPath) = room;
        string contacts = SideFiles.Of(bobPath, SideFiles.Contacts), identityDir = Path.GetDirectoryName(bobPath)!;
        Assert.False(File.Exists(contacts));
        byte[] planted = Encoding.UTF8.GetBytes($"{alice.Card} mum\n");
        await client.SendAsync(alice, bob.Card, planted, "application/octet-stream", Path.GetFileName(contacts));
        await client.SendAsync(alice, bob.Card, planted, "application/octet-stream", "known-nodes");
        await client.SendAsync(alice, bob.Card, Encoding.UTF8.GetBytes("hello"), "text/plain; charset=utf-8");

        Result fetched = await Meganet("fetch", "-i", bobPath, "--node", url, "--json", "--save-files", identityDir, "--ack");
        Assert.True(fetched.ExitCode == 0, fetched.Stderr);
        JsonObject[] messages = JsonLines(fetched);
        Assert.Equal(3, messages.Length);
        Assert.All(messages, m => Assert.False(m.ContainsKey("sender_name"), $"shown as from a contact: {m.ToJsonString()}"));
        Assert.Equal(
            new[] { contacts + "_", Path.Combine(identityDir, "known-nodes_") }.Order(StringComparer.Ordinal),
            messages.Where(m => m.ContainsKey("saved_as")).Select(m => m["saved_as"]!.GetValue<string>()).Order(StringComparer.Ordinal));
        Assert.False(File.Exists(contacts));
        Assert.Equal(planted, await File.ReadAllBytesAsync(contacts + "_"));
        // The pins fetch makes itself (the node's id, on first contact) are the only ones there.
        string pins = Path.Combine(identityDir, "known-nodes");
        Assert.False(File.Exists(pins) && (await File.ReadAllTextAsync(pins)).Contains(alice.Card.ToString(), StringComparison.Ordinal), "a stranger's file was taken for the pinned node ids");

        Result list = await Meganet("contact", "list", "-i", bobPath);
        Assert.True(list.ExitCode == 0, list.Stderr);
        Assert.Empty(list.Stdout.Trim());
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task Files_are_saved_whole_never_over_another_and_the_output_says_where()
    {
        await using Mailroom room = await Mailroom.StartAsync(_dir);
        (TestNode node, string url, MegaNetClient client, Identity alice, Identity bob, string bobPath) = room;
        byte[] small = Encoding.UTF8.GetBytes("a small file"), large = new byte[(2 * FileParts.SliceLength("notes.txt")) + 5];
        new Random(7).NextBytes(large);
        await client.SendAsync(alice, bob.Card, small, "application/octet-stream", "notes.txt");
        await client.SendFileInPartsAsync(alice, bob.Card, large, "notes.txt");
        await client.SendAsync(alice, bob.Card, small, "application/octet-stream", "../escape.txt");
        await client.SendAsync(alice, bob.Card, Encoding.UTF8.GetBytes("just text"), "text/plain; charset=utf-8");
        string saveDir = Path.Combine(_dir, "received");

        Result json = await Meganet("fetch", "-i", bobPath, "--node", url, "--json", "--save-files", saveDir);
        Assert.True(json.ExitCode == 0, json.Stderr);
        JsonObject[] messages = JsonLines(json);
        Assert.Equal(4, messages.Length);
        Assert.All(messages, m => Assert.False(m.ContainsKey("file_base64")));
        Assert.All(messages, m => Assert.False(m.ContainsKey("saved_before")));
        Assert.Equal("just text", Assert.Single(messages, m => m.ContainsKey("text"))["text"]!.GetValue<string>());
        JsonObject[] files = messages.Where(m => m.ContainsKey("file_name")).ToArray();
        Assert.Equal(
            new[] { Path.Combine(saveDir, "notes.txt"), Path.Combine(saveDir, "notes (2).txt"), Path.Combine(saveDir, "_._escape.txt") }.Order(StringComparer.Ordinal),
            files.Select(m => m["saved_as"]!.GetValue<string>()).Order(StringComparer.Ordinal));
        foreach (JsonObject file in files)
        {
            byte[] written = await File.ReadAllBytesAsync(file["saved_as"]!.GetValue<string>());
            Assert.Equal(file["file_length"]!.GetValue<int>(), written.Length);
            Assert.Equal(file.ContainsKey("parts") ? large : small, written);
        }

        Assert.False(File.Exists(Path.Combine(_dir, "escape.txt")));

        // Fetched again (not acknowledged): a file in one envelope whose bytes are there already under one of its names is
        // not saved again, and the output says where it is; one whose name holds other bytes now (changed by the user) is
        // saved beside it, never over it. A file in parts, not acknowledged either, is made whole again by its first part
        // (its parts were kept) and found saved before; its other parts are reported as copies of it.
        await File.WriteAllTextAsync(Path.Combine(saveDir, "_._escape.txt"), "edited since");
        Result text = await Meganet("fetch", "-i", bobPath, "--node", url, "--save-files", saveDir);
        Assert.True(text.ExitCode == 0, text.Stderr);
        Assert.Contains($"file 'notes.txt' ({small.Length} bytes; saved as {Path.Combine(saveDir, "notes.txt")} before: the same bytes are there)", text.Stdout, StringComparison.Ordinal);
        Assert.Contains($"file '../escape.txt' ({small.Length} bytes; saved as {Path.Combine(saveDir, "_._escape (2).txt")})", text.Stdout, StringComparison.Ordinal);
        Assert.Contains($"saved as {Path.Combine(saveDir, "notes (2).txt")} before: the same bytes are there", text.Stdout, StringComparison.Ordinal);
        Assert.Contains("parts of file 'notes.txt' from", text.Stderr, StringComparison.Ordinal);
        Assert.Contains("which was shown already", text.Stderr, StringComparison.Ordinal);
        Assert.Equal(4, Directory.GetFiles(saveDir).Length);
        Assert.Equal("edited since", await File.ReadAllTextAsync(Path.Combine(saveDir, "_._escape.txt")));
        Assert.Equal(small, await File.ReadAllBytesAsync(Path.Combine(saveDir, "_._escape (2).txt")));

        Result again = await Meganet("fetch", "-i", bobPath, "--node", url, "--json", "--save-files", saveDir);
        Assert.True(again.ExitCode == 0, again.Stderr);
        JsonObject[] savedBefore = JsonLines(again).Where(m => m.ContainsKey("saved_as")).ToArray();
        Assert.Equal(3, savedBefore.Length);
        Assert.All(savedBefore, m => Assert.True(m["saved_before"]!.GetValue<bool>()));
        Assert.Equal(4, Directory.GetFiles(saveDir).Length);
        Assert.Equal(small, await File.ReadAllBytesAsync(Path.Combine(saveDir, "notes.txt")));
        if (!OperatingSystem.IsWindows())
        {
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(Path.Combine(saveDir, "notes.txt")));
        }

        Result onFile = await Meganet("fetch", "-i", bobPath, "--node", url, "--save-files", bobPath);
        Assert.Equal(1, onFile.ExitCode);
        Assert.Contains("is a file; give a directory", onFile.Stderr, StringComparison.Ordinal);
        node.AssertNoServerErrors();
    }
}
