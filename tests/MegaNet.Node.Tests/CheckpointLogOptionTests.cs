using MegaNet.Api;
using MegaNet.Api.V1;

namespace MegaNet.Node.Tests;

/// <summary><c>CheckpointLogMiB</c> reaches the store: past that much write-ahead log the node checkpoints, well before
/// the once-a-minute checkpoint, and with the default it does not yet.</summary>
public sealed class CheckpointLogOptionTests
{
    private const int EnvelopeCount = 320; // about 20 MiB in the 64 KiB padding class

    [Theory]
    [InlineData(16, true)]
    [InlineData(256, false)]
    public async Task Past_CheckpointLogMiB_of_log_the_node_checkpoints(int checkpointLogMiB, bool expectCheckpoint)
    {
        await using TestNode node = await TestNode.StartAsync(o => o.CheckpointLogMiB = checkpointLogMiB);
        string manifest = Path.Combine(node.Options.DataDirectory, "store", "checkpoint.manifest");
        DateTime before = File.Exists(manifest) ? File.GetLastWriteTimeUtc(manifest) : DateTime.MinValue;

        using MegaNetClient client = node.Client();
        foreach (Envelope[] chunk in Seal(EnvelopeCount).Chunk(32))
        {
            await Task.WhenAll(chunk.Select(e => client.Relay.SubmitAsync(new SubmitRequest { Envelope = e }).ResponseAsync));
        }

        // A checkpoint runs on the committer after the group that crossed the mark; give it a few seconds.
        bool checkpointed = false;
        for (int i = 0; i < 100 && !checkpointed; i++)
        {
            checkpointed = File.Exists(manifest) && File.GetLastWriteTimeUtc(manifest) > before;
            if (!checkpointed)
            {
                await Task.Delay(100);
            }
        }

        Assert.Equal(expectCheckpoint, checkpointed);
        node.AssertNoServerErrors();
    }

    /// <summary>Envelopes with the most text the largest padding class holds, from distinct senders to one recipient.</summary>
    private static Envelope[] Seal(int count)
    {
        using Identity recipient = Identity.Create();
        const string ContentType = "text/plain; charset=utf-8";
        byte[] content = new byte[EnvelopeFormat.MaxContentLength(ContentType, null)];
        Array.Fill(content, (byte)'x');
        var envelopes = new Envelope[count];
        for (int i = 0; i < count; i++)
        {
            using Identity sender = Identity.Create();
            content[0] = (byte)('a' + (i % 26));
            envelopes[i] = EnvelopeFormat.Seal(sender, recipient.Card, content, ContentType, null, DateTimeOffset.UtcNow.AddDays(1), 0);
        }

        return envelopes;
    }
}
