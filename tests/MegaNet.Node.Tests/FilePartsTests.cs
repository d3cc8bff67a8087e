using System.Buffers.Binary;
using System.Diagnostics;
using System.Security.Cryptography;
using System.Text.Json.Nodes;
using Google.Protobuf;
using Grpc.Core;
using MegaNet.Api;
using MegaNet.Api.V1;
using MegaNet.Node.Cli;
using Xunit.Abstractions;

using static MegaNet.Node.Tests.MeganetResults;
using Result = MegaNet.Node.Tests.MeganetProcess.Result;

namespace MegaNet.Node.Tests;

/// <summary>
/// Files larger than one envelope (<see cref="FileParts"/>): the format's checks, and <c>send --file</c> with
/// <c>fetch</c> through a real node: the file comes out whole once every part is here (also across fetches that
/// acknowledged some parts), and parts that do not make the file they announce are reported, never printed as it.
/// </summary>
public sealed class FilePartsTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("meganet-parts-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private Task<Result> Meganet(params string[] args) => MeganetProcess.RunAsync(_dir, null, false, args);

    private byte[] RandomFile(int length) => TestFiles.Random(output, length);

    [Theory]
    [InlineData(1, 0)]
    [InlineData(2, 0)]
    [InlineData(3, 0)]
    [InlineData(2, 1)] // exactly two full slices
    [InlineData(3, 2)] // one byte more than two
    [InlineData(2, 3)] // one byte less than two
    public void Split_parts_join_to_the_file_and_any_change_is_refused(int parts, int boundary)
    {
        int slice = FileParts.SliceLength("photo.jpg");
        int length = boundary switch
        {
            1 => 2 * slice,
            2 => (2 * slice) + 1,
            3 => (2 * slice) - 1,
            _ => (slice * (parts - 1)) + 1 + RandomNumberGenerator.GetInt32(slice - 1),
        };
        byte[] file = RandomFile(length);
        IReadOnlyList<byte[]> split = FileParts.Split(file, "photo.jpg");
        Assert.Equal(parts, split.Count);
        Assert.All(split, p => Assert.True(p.Length <= EnvelopeFormat.MaxContentLength(FileParts.ContentType, "photo.jpg")));
        Assert.True(FileParts.TryJoin(Slices(split), out byte[]? joined, out string? problem), problem);
        Assert.Equal(file, joined);

        // One bit of a slice, the order, a part missing or one too many: never the file.
        byte[][] flipped = split.Select(p => p.ToArray()).ToArray();
        flipped[^1][^1] ^= 1;
        Assert.False(FileParts.TryJoin(Slices(flipped), out _, out problem));
        Assert.Contains("hash differs", problem, StringComparison.Ordinal);
        if (parts > 1)
        {
            Assert.False(FileParts.TryJoin(Slices(split.Reverse()), out _, out problem));
            Assert.Contains("does not belong with the others", problem, StringComparison.Ordinal);
            Assert.False(FileParts.TryJoin(Slices(split.Skip(1)), out _, out problem));
            Assert.Contains("does not belong with the others", problem, StringComparison.Ordinal);
        }

        Assert.False(FileParts.TryJoin(Slices([.. split, split[0]]), out _, out _));
        Assert.False(FileParts.TryJoin([], out _, out _));
    }

    private static ReadOnlyMemory<byte>[] Slices(IEnumerable<byte[]> parts) => parts.Select(p => new ReadOnlyMemory<byte>(p)).ToArray();

    private static ReceivedMessage Part(Identity from, byte[] content, string name, ulong seq = 1) => TestParts.Part(from, content, name, seq);

    [Fact]
    public void The_kept_parts_are_capped_per_sender_and_in_all_and_two_processes_finish_a_file_once()
    {
        string identity = Path.Combine(_dir, "bob.json");
        using Identity alice = Identity.Create(), carol = Identity.Create();
        int slice = FileParts.SliceLength("a.bin");
        IReadOnlyList<byte[]> a = FileParts.Split(RandomFile(4 * slice), "a.bin"), c = FileParts.Split(RandomFile(3 * slice), "c.bin"),
            e = FileParts.Split(RandomFile(2 * slice), "e.bin");
        // A file still arriving holds back the whole of its parts of its sender's cap (each as the largest payload) and
        // its directory: room for one file of four parts from one sender. In all, parts count as they take on disk:
        // room for two parts and a third's directory, not a third part.
        long part = Part(alice, a[0], "a.bin").Content.CalculateSize();
        long four = ReceivedParts.Reservation(4), three = ReceivedParts.Reservation(3);
        ReceivedParts parts = ReceivedParts.Beside(identity, maxBytesPerSender: four, maxBytes: (2 * ReceivedParts.SetCost) + (3 * part) - 1);
        Assert.IsType<ReceivedParts.Waiting>(parts.Add(Part(alice, a[0], "a.bin")));
        Assert.IsType<ReceivedParts.Waiting>(parts.Add(Part(alice, a[1], "a.bin")));
        // Past a cap a file is left on the node (not to be acknowledged), for a later fetch once there is room.
        var deferred = Assert.IsType<ReceivedParts.Deferred>(parts.Add(Part(alice, e[0], "e.bin")));
        Assert.Contains("files still arriving from this sender hold", deferred.Reason, StringComparison.Ordinal);
        deferred = Assert.IsType<ReceivedParts.Deferred>(parts.Add(Part(carol, c[0], "c.bin")));
        Assert.Contains("the most kept is", deferred.Reason, StringComparison.Ordinal);
        // A contact's part is held to the cap per sender only: strangers filling the directory do not stop it.
        Assert.IsType<ReceivedParts.Waiting>(parts.Add(Part(carol, c[0], "c.bin"), fromContact: true));
        // A stranger's part is held to the bytes here in all even for a file begun (strangers' files can fill that
        // with none whole); a contact's file begun is never put off for room until it is whole.
        Assert.Contains("parts of files still arriving in", Assert.IsType<ReceivedParts.Deferred>(parts.Add(Part(alice, a[2], "a.bin"))).Reason, StringComparison.Ordinal);
        Assert.IsType<ReceivedParts.Waiting>(parts.Add(Part(alice, a[2], "a.bin"), fromContact: true));

        // The same index with other contents is refused; the same part again is not counted twice.
        byte[] other = a[1].ToArray();
        other[^1] ^= 1;
        Assert.Contains("came twice with different contents", Assert.IsType<ReceivedParts.Refused>(parts.Add(Part(alice, other, "a.bin"))).Reason, StringComparison.Ordinal);
        Assert.Equal(3, Assert.IsType<ReceivedParts.Waiting>(parts.Add(Part(alice, a[0], "a.bin"))).Have);

        // Files another process of this identity began count against the caps in this one, which had counted the
        // directory before.
        string frank = Path.Combine(_dir, "frank.json");
        ReceivedParts fetching = ReceivedParts.Beside(frank, maxBytesPerSender: four + three), listening = ReceivedParts.Beside(frank, maxBytesPerSender: four + three);
        Assert.IsType<ReceivedParts.Waiting>(listening.Add(Part(alice, c[0], "c.bin")));
        Assert.IsType<ReceivedParts.Waiting>(fetching.Add(Part(alice, a[0], "a.bin")));
        Assert.IsType<ReceivedParts.Deferred>(listening.Add(Part(alice, e[0], "e.bin")));

        // Two processes of one identity (a listen and a fetch), each storing one of a file's last two parts at once:
        // exactly one of them sees the file whole.
        using Identity dave = Identity.Create();
        byte[] dFile = RandomFile(2 * slice);
        IReadOnlyList<byte[]> d = FileParts.Split(dFile, "d.bin");
        string other2 = Path.Combine(_dir, "erin.json");
        ReceivedParts first = ReceivedParts.Beside(other2), second = ReceivedParts.Beside(other2);
        var outcomes = new ReceivedParts.Outcome[2];
        using var start = new Barrier(2);
        var threads = new[] { new Thread(() => { start.SignalAndWait(); outcomes[0] = first.Add(Part(dave, d[0], "d.bin")); }), new Thread(() => { start.SignalAndWait(); outcomes[1] = second.Add(Part(dave, d[1], "d.bin")); }) };
        Array.ForEach(threads, t => t.Start());
        Array.ForEach(threads, t => t.Join());
        var whole = Assert.Single(outcomes.OfType<ReceivedParts.Whole>());
        Assert.Single(outcomes.OfType<ReceivedParts.Waiting>());
        Assert.Equal(dFile, whole.File.Content.Content.ToByteArray());
    }

    [Fact]
    public void Every_file_the_parts_spool_writes_is_owner_only()
    {
        if (OperatingSystem.IsWindows())
        {
            return;
        }

        string identity = Path.Combine(_dir, "bob.json");
        using Identity alice = Identity.Create();
        IReadOnlyList<byte[]> a = FileParts.Split(RandomFile(2 * FileParts.SliceLength("a.bin")), "a.bin");
        ReceivedParts parts = ReceivedParts.Beside(identity);
        Assert.IsType<ReceivedParts.Waiting>(parts.Add(Part(alice, a[0], "a.bin")));
        parts.Forget(Assert.IsType<ReceivedParts.Whole>(parts.Add(Part(alice, a[1], "a.bin"))));
        // Left waiting: a part and the list of envelopes beside it; forgotten: the record of envelopes shown (KEY.done).
        Assert.IsType<ReceivedParts.Waiting>(parts.Add(Part(alice, FileParts.Split(RandomFile(2 * FileParts.SliceLength("b.bin")), "b.bin")[0], "b.bin")));
        string[] written = Directory.GetFiles(parts.Directory, "*", SearchOption.AllDirectories).Where(f => !f.EndsWith(".lock", StringComparison.Ordinal)).ToArray();
        Assert.Contains(written, f => f.EndsWith(".done", StringComparison.Ordinal));
        Assert.Contains(written, f => f.EndsWith("envelopes", StringComparison.Ordinal));
        Assert.Contains(written, f => f.EndsWith(".part", StringComparison.Ordinal));
        foreach (string file in written)
        {
            Assert.True(File.GetUnixFileMode(file) == (UnixFileMode.UserRead | UnixFileMode.UserWrite), $"{file} is {File.GetUnixFileMode(file)}");
        }
    }

    [Fact]
    public void Headers_out_of_bounds_are_refused()
    {
        byte[] part = FileParts.Split(new byte[100], "f")[0];
        Assert.True(FileParts.TryReadHeader(part, out FilePartHeader header, out _));
        Assert.Equal((0, 1, 100L), (header.Index, header.Count, header.FileLength));

        static byte[] With(byte[] part, Action<byte[]> write)
        {
            byte[] copy = part.ToArray();
            write(copy);
            return copy;
        }

        Assert.False(FileParts.TryReadHeader(part.AsSpan(0, FileParts.HeaderLength - 1), out _, out string? problem));
        Assert.Contains("shorter than its", problem, StringComparison.Ordinal);
        Assert.False(FileParts.TryReadHeader(With(part, p => BinaryPrimitives.WriteUInt32BigEndian(p.AsSpan(20), 0)), out _, out problem));
        Assert.Contains("has 0 parts", problem, StringComparison.Ordinal);
        Assert.False(FileParts.TryReadHeader(With(part, p => BinaryPrimitives.WriteUInt32BigEndian(p.AsSpan(20), FileParts.MaxParts + 1)), out _, out problem));
        Assert.Contains($"has {FileParts.MaxParts + 1} parts", problem, StringComparison.Ordinal);
        Assert.False(FileParts.TryReadHeader(With(part, p => BinaryPrimitives.WriteUInt32BigEndian(p.AsSpan(16), 1)), out _, out problem));
        Assert.Contains("part 2 of 1", problem, StringComparison.Ordinal);
        Assert.False(FileParts.TryReadHeader(With(part, p => BinaryPrimitives.WriteUInt64BigEndian(p.AsSpan(24), FileParts.MaxFileLength + 1)), out _, out problem));
        Assert.Contains($"the file has {FileParts.MaxFileLength + 1:N0} bytes", problem, StringComparison.Ordinal);
        Assert.False(FileParts.TryReadHeader(With(part, p => BinaryPrimitives.WriteUInt64BigEndian(p.AsSpan(24), 99)), out _, out problem));
        Assert.Contains("holds 100 bytes of a file of 99", problem, StringComparison.Ordinal);

        Assert.Throws<ArgumentException>(() => FileParts.Split(new byte[FileParts.MaxFileLength + 1], "f"));
    }

    [Fact]
    public async Task A_file_larger_than_an_envelope_is_sent_in_parts_and_fetched_whole()
    {
        await using TestNode node = await TestNode.StartAsync();
        string url = node.Address.ToString();
        using Identity alice = Identity.Create(), bob = Identity.Create();
        string alicePath = Path.Combine(_dir, "alice.json"), bobPath = Path.Combine(_dir, "bob.json");
        alice.Save(alicePath);
        bob.Save(bobPath);
        byte[] file = RandomFile((3 * FileParts.SliceLength("big.bin")) + 1234);
        string filePath = Path.Combine(_dir, "big.bin");
        await File.WriteAllBytesAsync(filePath, file);

        Result sent = await Meganet("send", "-i", alicePath, "--to", bob.Card.ToString(), "--file", filePath, "--node", url, "--json");
        AssertExit(sent, 0, "sending 'big.bin' (");
        Assert.Contains("sent 4 of 4 parts", sent.Stderr, StringComparison.Ordinal);
        // A receipt a line, each one verify-receipt checks.
        string[] receipts = sent.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(4, receipts.Length);
        string receiptPath = Path.Combine(_dir, "receipt.json");
        await File.WriteAllTextAsync(receiptPath, receipts[2]);
        AssertExit(await Meganet("verify-receipt", "-i", alicePath, "--receipt", receiptPath, "--node", url), 0);
        // All of them, as send printed them: each is checked.
        string allPath = Path.Combine(_dir, "receipts.jsonl");
        await File.WriteAllTextAsync(allPath, sent.Stdout);
        Result all = await Meganet("verify-receipt", "-i", alicePath, "--receipt", allPath, "--node", url);
        AssertExit(all, 0);
        Assert.Equal(4, all.Stdout.Split('\n').Count(l => l.StartsWith("valid: envelope ", StringComparison.Ordinal)));
        // audit takes one head: told how to pick one.
        AssertExit(await Meganet("audit", "--node", url, "--head", allPath, "--heads", Path.Combine(_dir, "heads.json")), 1, "holds 4 JSON objects, one a line");

        Result fetched = await Meganet("fetch", "-i", bobPath, "--node", url, "--json");
        AssertExit(fetched, 0);
        JsonObject message = Assert.Single(JsonLines(fetched));
        Assert.Equal("big.bin", message["file_name"]!.GetValue<string>());
        Assert.Equal(4, message["parts"]!.GetValue<int>());
        string fileId = Convert.ToHexStringLower(FileParts.IdOf(file, "big.bin"));
        Assert.Equal(fileId, message["file_id"]!.GetValue<string>());
        Assert.Equal(alice.Card.ToString(), message["sender"]!.GetValue<string>());
        Assert.Equal(file, Convert.FromBase64String(message["file_base64"]!.GetValue<string>()));
        Assert.Single(Directory.GetDirectories(Path.Combine(_dir, "bob.parts"))); // kept until acknowledged

        // Not acknowledged, so shown again, as a message of one envelope would be: that output may have gone nowhere
        // (a fetch without --ack piped into a reader that dropped it). Its parts were kept, so the first that comes
        // again makes it whole, and the others are copies of it, reported once for the file, not once a part.
        Result again = await Meganet("fetch", "-i", bobPath, "--node", url, "--json", "--ack");
        AssertExit(again, 0);
        JsonObject shownAgain = Assert.Single(JsonLines(again));
        Assert.Equal(file, Convert.FromBase64String(shownAgain["file_base64"]!.GetValue<string>()));
        // Made whole by another part this time (the first to come), so another seq and envelope id: the file id is the same.
        Assert.NotEqual(message["seq"]!.GetValue<ulong>(), shownAgain["seq"]!.GetValue<ulong>());
        Assert.NotEqual(message["id"]!.GetValue<string>(), shownAgain["id"]!.GetValue<string>());
        Assert.Equal(fileId, shownAgain["file_id"]!.GetValue<string>());
        Assert.Single(again.Stderr.Split('\n'), l => l.Contains("skipped: parts of file 'big.bin'", StringComparison.Ordinal) && l.Contains("which was shown already: copies until they are acknowledged", StringComparison.Ordinal));
        Assert.Contains("acknowledged 4 message(s)", again.Stderr, StringComparison.Ordinal);
        // Acknowledged: the kept parts are deleted, and nothing of the file waits on the node.
        Assert.Empty(Directory.GetDirectories(Path.Combine(_dir, "bob.parts")));
        Assert.Empty((await Meganet("fetch", "-i", bobPath, "--node", url, "--json")).Stdout);

        // Sent again (new envelopes, the same file id): shown again, as a message sent twice is.
        AssertExit(await Meganet("send", "-i", alicePath, "--to", bob.Card.ToString(), "--file", filePath, "--node", url), 0);
        Result resent = await Meganet("fetch", "-i", bobPath, "--node", url, "--ack");
        Assert.Contains($"file 'big.bin' ({file.Length} bytes in 4 parts; left on the node: use --json or --save-files DIR to get its contents)", resent.Stdout, StringComparison.Ordinal);
        // Text output only says it came: the bytes went nowhere, so its last part stays on the node (the others in the
        // spool), and a fetch that saves gets the file whole. Forgotten, its parts were copies "shown already" for good.
        Assert.Contains("acknowledged 3 message(s)", resent.Stderr, StringComparison.Ordinal);
        string inbox = Path.Combine(_dir, "inbox");
        Result saved = await Meganet("fetch", "-i", bobPath, "--node", url, "--ack", "--save-files", inbox);
        AssertExit(saved, 0);
        Assert.Contains("acknowledged 1 message(s)", saved.Stderr, StringComparison.Ordinal);
        Assert.Equal(file, await File.ReadAllBytesAsync(Path.Combine(inbox, "big.bin")));
        Assert.Empty(Directory.GetDirectories(Path.Combine(_dir, "bob.parts")));

        string tooLarge = Path.Combine(_dir, "huge.bin");
        await using (FileStream huge = File.Create(tooLarge))
        {
            huge.SetLength(FileParts.MaxFileLength + 1);
        }

        Result refused = await Meganet("send", "-i", alicePath, "--to", bob.Card.ToString(), "--file", tooLarge, "--node", url);
        AssertExit(refused, 1, $"at most {FileParts.MaxFileLength:N0} bytes can be sent");
        node.AssertNoServerErrors();
    }

    [SkippableFact]
    public async Task A_file_from_a_pipe_needs_a_name_and_is_sent_by_the_bytes_read_and_refused_past_the_largest()
    {
        Skip.If(OperatingSystem.IsWindows(), "bash process substitution");
        await using TestNode node = await TestNode.StartAsync();
        using Identity alice = Identity.Create(), bob = Identity.Create();
        string alicePath = Path.Combine(_dir, "alice.json"), bobPath = Path.Combine(_dir, "bob.json");
        alice.Save(alicePath);
        bob.Save(bobPath);
        byte[] file = RandomFile(100_000);
        await File.WriteAllBytesAsync(Path.Combine(_dir, "big.bin"), file);
        string send = $"exec dotnet '{ExternalNode.MeganetPath()}' send -i alice.json --to {bob.Card} --node {node.Address}";

        // A pipe's name is its descriptor's (/dev/fd/63): sent as it is, the recipient got a file called '63'. Refused,
        // and so is /dev/stdin ('stdin'), before the node is asked anything.
        Result unnamed = await MeganetProcess.RunAsync(new ProcessStartInfo("bash", ["-c", $"{send} --file <(cat big.bin)"]) { WorkingDirectory = _dir });
        AssertExit(unnamed, 1, "is a pipe or a device (as --file <(...) and /dev/stdin give), and its name '");
        Assert.Contains("with --name", unnamed.Stderr, StringComparison.Ordinal);
        Result stdin = await MeganetProcess.RunAsync(new ProcessStartInfo("bash", ["-c", $"{send} --file /dev/stdin < big.bin"]) { WorkingDirectory = _dir });
        AssertExit(stdin, 1, "its name 'stdin' says nothing of the file");
        // A thread's descriptor (/proc/PID/task/TID/fd/N; exec keeps bash's pid, whose main thread has that id too).
        Result task = await MeganetProcess.RunAsync(new ProcessStartInfo("bash", ["-c", $"{send} --file /proc/$$/task/$$/fd/3 3< big.bin"]) { WorkingDirectory = _dir });
        AssertExit(task, 1, "its name '3' says nothing of the file");

        // A pipe's length is 0 to the file system: taken for the file's size, 100 KB went as one envelope and was refused.
        Result sent = await MeganetProcess.RunAsync(new ProcessStartInfo("bash", ["-c", $"{send} --file <(cat big.bin) --name report.bin"]) { WorkingDirectory = _dir });
        AssertExit(sent, 0, "sending 'report.bin' (100,000 bytes) in 2 parts");
        Result fetched = await Meganet("fetch", "-i", bobPath, "--node", node.Address.ToString(), "--json");
        AssertExit(fetched, 0);
        JsonObject received = Assert.Single(JsonLines(fetched));
        Assert.Equal(file, Convert.FromBase64String(received["file_base64"]!.GetValue<string>()));
        Assert.Equal("report.bin", received["file_name"]!.GetValue<string>());

        // And a pipe longer than any file that can be sent is refused once that much was read, not read to its end.
        Result refused = await MeganetProcess.RunAsync(new ProcessStartInfo("bash", ["-c", $"{send} --file <(head -c {FileParts.MaxFileLength + 1} /dev/zero) --name zeros.bin"]) { WorkingDirectory = _dir });
        AssertExit(refused, 1, $"holds more than {FileParts.MaxFileLength:N0} bytes; at most {FileParts.MaxFileLength:N0} bytes can be sent");
    }

    [SkippableFact]
    public async Task A_regular_file_under_dev_shm_is_sent_under_its_own_name()
    {
        // Anything under /dev or /proc was taken for a pipe or a device and refused without --name, a regular file in
        // /dev/shm (a RAM disk) too.
        Skip.IfNot(Directory.Exists("/dev/shm"), "no /dev/shm on this machine");
        string shm = Directory.CreateDirectory(Path.Combine("/dev/shm", $"meganet-test-{Guid.NewGuid():N}")).FullName;
        try
        {
            await using TestNode node = await TestNode.StartAsync();
            using Identity alice = Identity.Create(), bob = Identity.Create();
            string alicePath = Path.Combine(_dir, "alice.json"), bobPath = Path.Combine(_dir, "bob.json");
            alice.Save(alicePath);
            bob.Save(bobPath);
            string report = Path.Combine(shm, "report.txt");
            await File.WriteAllTextAsync(report, "quarterly");

            Result sent = await Meganet("send", "-i", alicePath, "--to", bob.Card.ToString(), "--file", report, "--node", node.Address.ToString());
            AssertExit(sent, 0);
            Result fetched = await Meganet("fetch", "-i", bobPath, "--node", node.Address.ToString(), "--json");
            AssertExit(fetched, 0);
            JsonObject received = Assert.Single(JsonLines(fetched));
            Assert.Equal("report.txt", received["file_name"]!.GetValue<string>());
        }
        finally
        {
            Directory.Delete(shm, recursive: true);
        }
    }

    [Fact]
    public async Task Parts_put_off_by_the_token_bucket_are_sent_again()
    {
        // Two envelopes at once per sending key, then one a second: six parts cannot go through without waiting.
        await using TestNode node = await TestNode.StartAsync(o =>
        {
            o.SubmitBurst = 2;
            o.SubmitRatePerKey = 1;
        });
        using Identity alice = Identity.Create(), bob = Identity.Create(), carol = Identity.Create();
        using (MegaNetClient client = node.Client())
        {
            // The bucket does put off a third envelope at once (carol's key, so alice's bucket stays full).
            for (int i = 0; i < 2; i++)
            {
                await client.SendAsync(carol, bob.Card, [1], "application/octet-stream", "x");
            }

            RpcException putOff = await Assert.ThrowsAsync<RpcException>(() => client.SendAsync(carol, bob.Card, [1], "application/octet-stream", "x"));
            Assert.Equal(StatusCode.ResourceExhausted, putOff.StatusCode);
            Assert.True(putOff.RetryAfter() <= TimeSpan.FromSeconds(5), $"retry hint {putOff.RetryAfter()}");
        }

        string alicePath = Path.Combine(_dir, "alice.json"), bobPath = Path.Combine(_dir, "bob.json");
        alice.Save(alicePath);
        bob.Save(bobPath);
        byte[] file = RandomFile((5 * FileParts.SliceLength("six.bin")) + 1);
        await File.WriteAllBytesAsync(Path.Combine(_dir, "six.bin"), file);
        Result sent = await Meganet("send", "-i", alicePath, "--to", bob.Card.ToString(), "--file", Path.Combine(_dir, "six.bin"), "--node", node.Address.ToString());
        AssertExit(sent, 0, "sent 6 of 6 parts");
        Result fetched = await Meganet("fetch", "-i", bobPath, "--node", node.Address.ToString(), "--save-files", Path.Combine(_dir, "in"));
        AssertExit(fetched, 0);
        Assert.Equal(file, await File.ReadAllBytesAsync(Path.Combine(_dir, "in", "six.bin")));
        Assert.Contains("file 'six.bin'", fetched.Stdout, StringComparison.Ordinal);
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task A_file_that_could_not_be_shown_keeps_its_parts_for_the_next_fetch()
    {
        await using Mailroom room = await Mailroom.StartAsync(_dir);
        var (_, url, client, alice, bob, bobPath) = room;
        byte[] file = RandomFile((2 * FileParts.SliceLength("a.bin")) + 10);
        IReadOnlyList<byte[]> parts = FileParts.Split(file, "a.bin");
        await client.SendAsync(alice, bob.Card, parts[0], FileParts.ContentType, "a.bin");
        await client.SendAsync(alice, bob.Card, parts[1], FileParts.ContentType, "a.bin");
        AssertExit(await Meganet("fetch", "-i", bobPath, "--node", url, "--ack"), 0);

        // The last part comes, but the reader has gone: nothing acknowledged, and the two parts deleted from the node
        // are still kept here.
        await client.SendAsync(alice, bob.Card, parts[2], FileParts.ContentType, "a.bin");
        Result closed = await MeganetProcess.RunAsync(_dir, null, true, "fetch", "-i", bobPath, "--node", url, "--ack");
        Assert.Equal(1, closed.ExitCode);
        Assert.Contains("cannot write to standard output", closed.Stderr, StringComparison.Ordinal);
        Assert.Contains("no message was acknowledged", closed.Stderr, StringComparison.Ordinal);

        Result fetched = await Meganet("fetch", "-i", bobPath, "--node", url, "--json", "--ack");
        AssertExit(fetched, 0);
        JsonObject message = Assert.Single(JsonLines(fetched));
        Assert.Equal(file, Convert.FromBase64String(message["file_base64"]!.GetValue<string>()));
        Assert.Empty(Directory.GetDirectories(Path.Combine(_dir, "bob.parts")));
    }

    [Fact]
    public async Task Parts_acknowledged_in_one_fetch_wait_for_the_rest_and_parts_that_do_not_make_the_file_are_reported()
    {
        await using Mailroom room = await Mailroom.StartAsync(_dir);
        (TestNode node, string url, MegaNetClient client, Identity alice, Identity bob, string bobPath) = room;
        byte[] file = RandomFile((2 * FileParts.SliceLength("a.bin")) + 10);
        IReadOnlyList<byte[]> parts = FileParts.Split(file, "a.bin");
        Task Send(Identity from, byte[] part, string name = "a.bin") => client.SendAsync(from, bob.Card, part, FileParts.ContentType, name);

        // Two of three parts: kept (on disk before the ack), nothing printed.
        await Send(alice, parts[2]);
        await Send(alice, parts[0]);
        Result first = await Meganet("fetch", "-i", bobPath, "--node", url, "--ack");
        AssertExit(first, 0);
        Assert.Equal(string.Empty, first.Stdout);
        Assert.Contains("2 of 3 parts here, kept in", first.Stderr, StringComparison.Ordinal);
        Assert.Contains("acknowledged 2 message(s)", first.Stderr, StringComparison.Ordinal);

        // Someone else's part with the same file id cannot complete alice's file, nor can one that says another count.
        using Identity mallory = Identity.Create();
        await Send(mallory, parts[1]);
        byte[] recounted = parts[1].ToArray();
        BinaryPrimitives.WriteUInt32BigEndian(recounted.AsSpan(20), 4);
        await Send(alice, recounted);
        // Cut as the protocol says, but announcing another hash under the same id.
        byte[] rehashed = parts[1].ToArray();
        rehashed[32] ^= 1;
        await Send(alice, rehashed);
        Result mixed = await Meganet("fetch", "-i", bobPath, "--node", url, "--ack");
        AssertExit(mixed, 0);
        Assert.Equal(string.Empty, mixed.Stdout);
        Assert.Contains("does not match the parts of that file received before", mixed.Stderr, StringComparison.Ordinal);
        Assert.Contains("part 2 of file 'a.bin' is not cut as the protocol says: a file of", mixed.Stderr, StringComparison.Ordinal);

        // The last part: the file, whole.
        await Send(alice, parts[1]);
        Result last = await Meganet("fetch", "-i", bobPath, "--node", url, "--json", "--ack");
        AssertExit(last, 0);
        JsonObject message = Assert.Single(JsonLines(last));
        Assert.Equal(file, Convert.FromBase64String(message["file_base64"]!.GetValue<string>()));
        Assert.Equal(alice.Card.ToString(), message["sender"]!.GetValue<string>());

        // A name with a terminal escape in it is shown escaped (in the refusal of parts cut for another name).
        await Send(alice, recounted, "x\u001b[J");
        await Send(alice, parts[0], "x\u001b[J");
        Result escaped = await Meganet("fetch", "-i", bobPath, "--node", url, "--ack");
        AssertExit(escaped, 0);
        Assert.DoesNotContain("\u001b", escaped.Stderr, StringComparison.Ordinal);
        Assert.Contains("file 'x\\u001b[J' is not cut as the protocol says", escaped.Stderr, StringComparison.Ordinal);

        // Parts whose slices were changed (by their sender: a relay cannot) make no file: reported, and all acknowledged.
        IReadOnlyList<byte[]> other = FileParts.Split(file, "b.bin");
        byte[] altered = other[1].ToArray();
        altered[^1] ^= 1;
        foreach (byte[] part in new[] { other[0], altered, other[2] })
        {
            await Send(alice, part, "b.bin");
        }

        Result spoilt = await Meganet("fetch", "-i", bobPath, "--node", url, "--ack");
        AssertExit(spoilt, 0);
        Assert.Equal(string.Empty, spoilt.Stdout);
        Assert.Contains("file 'b.bin' in 3 parts: the parts do not make the file they announce (its hash differs); its parts were dropped", spoilt.Stderr, StringComparison.Ordinal);
        Assert.Contains("acknowledged 3 message(s)", spoilt.Stderr, StringComparison.Ordinal);
        Assert.Empty((await client.FetchAsync(bob)).Messages);

        // Mallory's lone part is all that waits (until it is older than the seen window): the recounted one, not cut as
        // the protocol says, opened no file.
        Assert.Single(Directory.GetDirectories(Path.Combine(_dir, "bob.parts")));
        node.AssertNoServerErrors();
    }
}
