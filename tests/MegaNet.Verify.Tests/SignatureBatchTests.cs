using MegaNet.Core.Ed25519;
using MegaNet.Core.Verification;

namespace MegaNet.Verify.Tests;

public sealed class SignatureBatchTests
{
    [Fact]
    public void Items_round_trip_through_growth()
    {
        using var batch = new SignatureBatch(capacity: 1, messageCapacity: 1);
        var random = new Random(7);
        var items = new List<(byte[] Pk, byte[] Sig, byte[] Msg)>();
        for (int i = 0; i < 300; i++)
        {
            byte[] pk = new byte[32], sig = new byte[64], msg = new byte[random.Next(0, 100)];
            random.NextBytes(pk);
            random.NextBytes(sig);
            random.NextBytes(msg);
            Assert.Equal(i, batch.Add(pk, sig, msg));
            items.Add((pk, sig, msg));
        }

        Assert.Equal(300, batch.Count);
        for (int i = 0; i < items.Count; i++)
        {
            Assert.Equal(items[i].Pk, batch.GetPublicKey(i).ToArray());
            Assert.Equal(items[i].Sig, batch.GetSignature(i).ToArray());
            Assert.Equal(items[i].Msg, batch.GetMessage(i).ToArray());
            Assert.Equal(items[i].Pk, batch.PublicKeys.Slice(i * 32, 32).ToArray());
            Assert.Equal(items[i].Msg, batch.MessageData[batch.MessageOffsets[i]..batch.MessageOffsets[i + 1]].ToArray());
        }

        Assert.Equal(items.Sum(x => x.Msg.Length), batch.MessageBytes);
        Assert.Throws<ArgumentOutOfRangeException>(() => batch.GetMessage(300));
    }

    [Fact]
    public void Wrong_lengths_are_kept_as_malformed_items_with_a_false_verdict()
    {
        using var batch = new SignatureBatch();
        batch.Add(new byte[31], new byte[64], [1]);
        batch.Add(new byte[32], new byte[65], [2]);
        Assert.Equal(2, batch.MalformedCount);
        Assert.True(batch.IsMalformed(0));
        Assert.Equal([2], batch.GetMessage(1).ToArray());
        Assert.Equal([false, false], new ReferenceBatchVerifier().Verify(batch));
        batch.Clear();
        Assert.Equal(0, batch.MalformedCount);
        Assert.Equal(0, batch.Count);
    }

    [Fact]
    public void A_malformed_item_refused_for_its_size_leaves_the_next_item_unmarked()
    {
        (SignatureCase[] cases, bool[] expected) = Backends.Mixed(5, 2);
        // The batch's room for messages lowered to what the two good items need, so the malformed item's message is
        // refused by the batch's room (AddCore), after its key and signature were judged, as a message that would
        // take a real batch past 2 GiB is; refused there, it must not leave its mark on the index the next item gets.
        int room = cases[0].Message.Length + cases[1].Message.Length;
        using var batch = new SignatureBatch { MessageSpace = room };
        batch.Add(cases[0].PublicKey, cases[0].Signature, cases[0].Message);

        var e = Assert.Throws<ArgumentException>(() => batch.Add(new byte[31], new byte[64], new byte[cases[1].Message.Length + 1]));
        Assert.Equal("message", e.ParamName);
        Assert.Contains($"cannot hold more than {room:N0} bytes of messages", e.Message, StringComparison.Ordinal);

        Assert.Equal(1, batch.Count);
        Assert.Equal(0, batch.MalformedCount);
        Assert.Equal(1, batch.Add(cases[1].PublicKey, cases[1].Signature, cases[1].Message));
        Assert.False(batch.IsMalformed(1));
        Assert.Equal(expected, new ReferenceBatchVerifier().Verify(batch));
    }

    [Fact]
    public void A_disposed_batch_refuses_new_items()
    {
        var batch = new SignatureBatch();
        batch.Dispose();
        Assert.Throws<ObjectDisposedException>(() => batch.Add(new byte[32], new byte[64], []));
    }
}
