using MegaNet.Api.V1;

namespace MegaNet.Api;

/// <summary>
/// What <see cref="MegaNetClient.SendFileInPartsAsync(Identity, ContactCard, byte[], string, IFilePartsJournal?, TimeSpan?, IProgress{int}?, CancellationToken)"/>
/// knows of an earlier try at sending the same file to the same recipient through the same node, and tells of this one:
/// a send that stopped part way is then finished with the parts the node has not acknowledged, not all of them again
/// (each part sent again is another envelope in the recipient's mailbox quota). The journal decides what "the same"
/// means and which earlier parts still count (one that has expired does not). Called from several threads at once.
/// </summary>
public interface IFilePartsJournal
{
    /// <summary>The receipt the node gave part <paramref name="index"/> on an earlier try, or null. A part with one is
    /// not sent again; its receipt is returned as this try's.</summary>
    Receipt? AcceptedEarlier(int index);

    /// <summary>The envelope of part <paramref name="index"/> that an earlier try submitted without getting an answer,
    /// or null. The node may have stored it, so it is submitted again as it is (a node that holds it answers with the
    /// original receipt) instead of a new envelope, which would be a second copy.</summary>
    Envelope? UnansweredEarlier(int index);

    /// <summary>The node answered part <paramref name="index"/>, sent as <paramref name="envelope"/>, with
    /// <paramref name="receipt"/> (checked to name it).</summary>
    void Accepted(int index, Envelope envelope, Receipt receipt);

    /// <summary>This try stopped (cancelled, or a submit of it went unanswered) while part <paramref name="index"/>,
    /// sealed as <paramref name="envelope"/>, had no receipt: the node may hold it. Not told of a part the node
    /// refused outright.</summary>
    void Unanswered(int index, Envelope envelope);
}
