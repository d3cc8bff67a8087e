using System.Text.Json.Nodes;
using Google.Protobuf;
using MegaNet.Api.V1;
using MegaNet.Core.Interop;
using MegaNet.Node.Cli;

namespace MegaNet.Node.Tests;

/// <summary>
/// What <c>send --file</c> keeps in <c>NAME.sending/</c> does not pile up: a finished send leaves no lock file, and a
/// send in parts prunes lock files whose record is gone, records of abandoned sends once nothing in them counts, and
/// records named the way of older versions, which no send reads; never anything a running send holds.
/// </summary>
public sealed class SentPartsPruneTests : IDisposable
{
    private static readonly TimeSpan LongUnwritten = SentParts.PruneUnwrittenFor + TimeSpan.FromDays(1);

    private readonly string _dir = Directory.CreateTempSubdirectory("meganet-sending-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string IdentityPath => Path.Combine(_dir, "alice.json");

    private string Sending => Path.Combine(_dir, "alice.sending");

    /// <summary>A record's name: the sender's and the recipient's addresses, the file id and the node id, or without the
    /// sender (<paramref name="withSender"/> false) as before.</summary>
    private string Record(byte seed, bool withSender = true)
    {
        int[] lengths = withSender ? [32, 32, 16, 32] : [32, 16, 32];
        return Path.Combine(Sending, string.Join('-', lengths.Select((length, i) => Convert.ToHexStringLower(Enumerable.Repeat((byte)(seed + i), length).ToArray()))));
    }

    private static byte[] Key(byte b, int length = 32) => Enumerable.Repeat(b, length).ToArray();

    /// <summary>Opens and ends a send of another file, which prunes as it starts.</summary>
    private void StartASend()
    {
        using SentParts parts = SentParts.Open(IdentityPath, Key(0xA0), Key(0xB0), Key(0xC0, 16), Key(0xD0), count: 2, treeSize: 0, w => Assert.Fail(w));
    }

    private static string UnansweredLine(DateTimeOffset expires) =>
        new JsonObject { ["part"] = 0, ["unanswered"] = Convert.ToBase64String(new Envelope { Version = 1, ExpiresUnixMs = expires.ToUnixTimeMilliseconds() }.ToByteArray()) }.ToJsonString();

    private static string ReceiptLine(DateTimeOffset expires) => new JsonObject
    {
        ["part"] = 1,
        ["expires_unix_ms"] = expires.ToUnixTimeMilliseconds(),
        ["receipt"] = ClientCommands.ReceiptJson(new Receipt { EnvelopeId = ByteString.CopyFrom(new byte[32]), TreeHead = new SignedTreeHead() }),
    }.ToJsonString();

    /// <summary>A record with <paramref name="lines"/> and its lock file, last written <paramref name="ago"/>.</summary>
    private static void WriteRecord(string record, TimeSpan ago, params string[] lines)
    {
        File.WriteAllLines(record, lines);
        File.SetLastWriteTimeUtc(record, DateTime.UtcNow - ago);
        File.WriteAllBytes(record + ".lock", []);
    }

    /// <summary>Holds a lock file as a running send does.</summary>
    private static FileStream HoldAsASend(string lockFile) => new(lockFile, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);

    [Fact]
    public void A_send_accepted_whole_leaves_neither_its_record_nor_its_lock_file()
    {
        string record;
        using (SentParts parts = SentParts.Open(IdentityPath, Key(1), Key(2), Key(3, 16), Key(4), count: 2, treeSize: 0, w => Assert.Fail(w)))
        {
            record = parts.Path;
            Assert.True(File.Exists(record + ".lock"));
            parts.Finish();
        }

        // Before, the empty lock file stayed, one for every file ever sent in parts.
        Assert.False(File.Exists(record));
        Assert.False(File.Exists(record + ".lock"));
    }

    [Fact]
    public void Lock_files_whose_record_is_gone_are_pruned_unless_a_send_holds_them()
    {
        Directory.CreateDirectory(Sending);
        string finished = Record(0x10), running = Record(0x20), stopped = Record(0x30);
        File.WriteAllBytes(finished + ".lock", []); // a send that crashed after deleting its record
        WriteRecord(stopped, TimeSpan.Zero, UnansweredLine(DateTimeOffset.UtcNow.AddDays(1)));
        string notOurs = Path.Combine(Sending, "notes.lock");
        File.WriteAllBytes(notOurs, []);

        using (HoldAsASend(running + ".lock")) // a send that has not written its record yet
        {
            StartASend();
            Assert.True(File.Exists(running + ".lock"));
        }

        Assert.False(File.Exists(finished + ".lock"));
        Assert.True(File.Exists(stopped));
        Assert.True(File.Exists(stopped + ".lock"));
        Assert.True(File.Exists(notOurs));
    }

    [Fact]
    public void A_record_unwritten_for_a_month_is_pruned_once_every_part_in_it_expired()
    {
        Directory.CreateDirectory(Sending);
        DateTimeOffset past = DateTimeOffset.UtcNow.AddDays(-2), future = DateTimeOffset.UtcNow.AddDays(300);
        string abandoned = Record(0x10), longLived = Record(0x20), recent = Record(0x30), running = Record(0x40);
        WriteRecord(abandoned, LongUnwritten, UnansweredLine(past), ReceiptLine(past), "{\"part\":2,\"torn");
        WriteRecord(longLived, LongUnwritten, UnansweredLine(past), ReceiptLine(future)); // sent with a long --ttl-days
        WriteRecord(recent, TimeSpan.FromDays(1), UnansweredLine(past));
        WriteRecord(running, LongUnwritten, UnansweredLine(past));

        using (HoldAsASend(running + ".lock"))
        {
            StartASend();
        }

        Assert.False(File.Exists(abandoned));
        Assert.False(File.Exists(abandoned + ".lock"));
        Assert.True(File.Exists(longLived));
        Assert.True(File.Exists(recent));
        Assert.True(File.Exists(running));
        Assert.True(File.Exists(running + ".lock"));

        // A receipt that has not expired keeps the record too.
        File.WriteAllLines(longLived, [UnansweredLine(future)]);
        File.SetLastWriteTimeUtc(longLived, DateTime.UtcNow - LongUnwritten);
        StartASend();
        Assert.True(File.Exists(longLived));
    }

    [Fact]
    public void Records_named_without_the_sender_are_pruned_once_unwritten_for_a_month()
    {
        Directory.CreateDirectory(Sending);
        string old = Record(0x10, withSender: false), recent = Record(0x20, withSender: false);
        File.WriteAllLines(old, [UnansweredLine(DateTimeOffset.UtcNow.AddDays(300))]);
        File.SetLastWriteTimeUtc(old, DateTime.UtcNow - LongUnwritten);
        File.WriteAllLines(recent, [UnansweredLine(DateTimeOffset.UtcNow.AddDays(300))]);

        StartASend();

        Assert.False(File.Exists(old)); // no send reads it: before, it stayed for good
        Assert.True(File.Exists(recent)); // a send of an older meganet may still be using it
    }

    [SkippableFact]
    public void A_lock_is_known_for_one_on_a_file_its_name_no_longer_gives()
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "the file's identity is told on Linux only");
        string path = Path.Combine(_dir, "x.lock");
        using FileStream held = FileLock.Take(path, FileMode.OpenOrCreate, deletable: true);
        Assert.True(FileLock.StillNamed(held.SafeFileHandle, path));

        // Deleted by another while held (or after it was opened and before it was locked).
        File.Delete(path);
        Assert.False(FileLock.StillNamed(held.SafeFileHandle, path));

        // And the name created anew by a third: that is not the file held.
        File.WriteAllBytes(path, []);
        Assert.False(FileLock.StillNamed(held.SafeFileHandle, path));
        using FileStream taken = FileLock.Take(path, FileMode.Open);
        Assert.True(FileLock.StillNamed(taken.SafeFileHandle, path));
    }

    [SkippableFact]
    [System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
    public void Lock_files_are_owner_only_whatever_the_umask()
    {
        Skip.If(OperatingSystem.IsWindows(), "Unix file modes");
        // records.lock and each send's lock file, and the contacts' and tree heads' locks, took the umask's mode (0644
        // under the usual 022, the test runner's here and in CI): the one kind of file beside an identity others could read.
        string taken = Path.Combine(_dir, "taken.lock"), locked = Path.Combine(_dir, "alice.contacts");
        using (FileLock.Take(taken, FileMode.OpenOrCreate))
        using (LockedFile.TryOpen(locked))
        {
        }

        const UnixFileMode OwnerOnly = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        Assert.Equal(OwnerOnly, File.GetUnixFileMode(taken));
        Assert.Equal(OwnerOnly, File.GetUnixFileMode(locked + ".lock"));
    }
}
