using System.Globalization;
using MegaNet.Core.Transparency;
using MegaNet.Store;

namespace MegaNet.Store.Tests;

/// <summary>
/// What a CrashChild acknowledged, read from its output lines, and the check that a reopened store still holds it:
/// every acknowledged envelope at its log index and in the signed tree, every mailbox entry not deleted, and no
/// acknowledged delete undone.
/// </summary>
public sealed class AcknowledgedWrites
{
    private readonly Dictionary<string, (long Index, string Recipient, ulong Seq)> _puts = [];

    // Deleted by an acknowledged ack (must be gone from the mailbox), and asked to be deleted (either way).
    private readonly HashSet<string> _deleted = [];
    private readonly HashSet<string> _deleting = [];

    /// <summary>Acknowledged puts so far.</summary>
    public int Puts => _puts.Count;

    /// <summary>Acknowledged deletes so far.</summary>
    public int Deletes => _deleted.Count;

    /// <summary>Reads ACK, DELETING and DELETED lines; returns the number of ACK lines among them.</summary>
    public int Read(IEnumerable<string> lines)
    {
        int acks = 0;
        foreach (string line in lines)
        {
            string[] parts = line.Split(' ');
            switch (parts[0])
            {
                case "ACK":
                    _puts[parts[1]] = (long.Parse(parts[2], CultureInfo.InvariantCulture), parts[3], ulong.Parse(parts[4], CultureInfo.InvariantCulture));
                    acks++;
                    break;
                case "DELETING":
                    _deleting.Add(parts[1]);
                    break;
                case "DELETED":
                    _deleted.Add(parts[1]);
                    break;
            }
        }

        return acks;
    }

    /// <summary>Asserts that <paramref name="store"/> holds everything acknowledged and that its tree head is signed and
    /// consistent with <paramref name="previous"/>; returns the head.</summary>
    public async Task<SignedTreeHead> AssertHeldByAsync(FasterEnvelopeStore store, SignedTreeHead? previous, string label)
    {
        SignedTreeHead head = store.GetTreeHead();
        Assert.True(TreeHeadSignature.Verify(head.NodePublicKey, head.TreeSize, head.RootHash, head.TimestampUnixMs, head.Signature), $"{label}: tree head signature");
        if (previous is not null)
        {
            Assert.True(head.TreeSize >= previous.TreeSize, $"{label}: the log shrank from {previous.TreeSize} to {head.TreeSize}");
            Assert.True(MerkleTree.VerifyConsistency(previous.TreeSize, head.TreeSize, previous.RootHash, head.RootHash, store.GetConsistencyProof(previous.TreeSize, head.TreeSize)),
                $"{label}: head {head.TreeSize} is not consistent with {previous.TreeSize}");
        }

        var byRecipient = new Dictionary<string, HashSet<ulong>>();
        foreach ((string id, (long index, string recipient, ulong seq)) in _puts)
        {
            PutReceipt? receipt = await store.FindAsync(Convert.FromHexString(id));
            Assert.True(receipt is not null, $"{label}: acknowledged envelope {id} is missing");
            Assert.Equal(index, receipt!.LogIndex);
            Assert.True(index < head.TreeSize);
            Assert.True(MerkleTree.VerifyInclusion(MerkleTree.LeafHash(Convert.FromHexString(id)), index, head.TreeSize, store.GetInclusionProof(index, head.TreeSize), head.RootHash),
                $"{label}: leaf {index} is not in the tree");
            if (!byRecipient.TryGetValue(recipient, out HashSet<ulong>? seqs))
            {
                seqs = [];
                foreach (MailboxEntry e in (await store.ListAsync(Convert.FromHexString(recipient), 0, 100_000)).Entries)
                {
                    seqs.Add(e.Seq);
                }

                byRecipient[recipient] = seqs;
            }

            if (_deleted.Contains(id))
            {
                Assert.False(seqs.Contains(seq), $"{label}: mailbox entry {seq} of {recipient} was deleted and is back");
            }
            else if (!_deleting.Contains(id))
            {
                Assert.True(seqs.Contains(seq), $"{label}: mailbox entry {seq} of {recipient} is missing");
            }
        }

        return head;
    }
}
