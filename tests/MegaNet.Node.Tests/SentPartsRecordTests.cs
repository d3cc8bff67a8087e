using Google.Protobuf;
using MegaNet.Api.V1;
using MegaNet.Node.Cli;

namespace MegaNet.Node.Tests;

/// <summary>
/// The record a <c>send --file</c> in parts keeps of how far it got (<see cref="SentParts"/>), read and appended as a
/// send stops and is run again.
/// </summary>
public sealed class SentPartsRecordTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("meganet-record-").FullName;

    private static readonly byte[] Sender = Key(1), Recipient = Key(2), FileId = Key(3, 16), NodeId = Key(4);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static byte[] Key(byte b, int length = 32) => Enumerable.Repeat(b, length).ToArray();

    private SentParts Open() =>
        SentParts.Open(Path.Combine(_dir, "alice.json"), Sender, Recipient, FileId, NodeId, count: 3, treeSize: 0, w => Assert.Fail(w));

    private static Envelope Part(int index) => new()
    {
        Version = 1,
        Recipient = ByteString.CopyFrom(Recipient),
        ExpiresUnixMs = DateTimeOffset.UtcNow.AddDays(1).ToUnixTimeMilliseconds(),
        SealedPayload = ByteString.CopyFrom([(byte)index]),
    };

    [Fact]
    public void Lines_appended_after_a_last_line_a_crash_cut_short_go_on_lines_of_their_own()
    {
        string record;
        using (SentParts first = Open())
        {
            record = first.Path;
            first.Unanswered(0, Part(0));
        }

        // The send crashed while writing its next line.
        File.AppendAllText(record, "{\"part\":1,\"unans");

        // Told once, as the record is read: the first line appended starts a line of its own, and the next one after it
        // no blank line either. Glued to the fragment, part 1's line was lost with it, and the part sealed anew: a copy.
        using (SentParts again = Open())
        {
            Assert.NotNull(again.UnansweredEarlier(0));
            again.Unanswered(1, Part(1));
            again.Unanswered(2, Part(2));
        }

        Assert.Equal(4, File.ReadAllLines(record).Length);
        Assert.Equal("{\"part\":1,\"unans", File.ReadAllLines(record)[1]);
        using SentParts third = Open();
        Assert.All(new[] { 0, 1, 2 }, i => Assert.Equal(Part(i).SealedPayload, third.UnansweredEarlier(i)!.SealedPayload));
    }
}
