using Grpc.Core;
using MegaNet.Api;
using MegaNet.Api.V1;

namespace MegaNet.Node.Tests;

/// <summary>Submits over one SubmitStream call.</summary>
internal static class SubmitStreams
{
    /// <summary>Writes <paramref name="envelopes"/> on one stream, completes it and returns every result, in order. A
    /// deadline bounds the call: a node that stops answering fails it instead of hanging the test.</summary>
    public static async Task<List<SubmitResult>> SubmitAllAsync(this MegaNetClient client, IEnumerable<Envelope> envelopes)
    {
        using AsyncDuplexStreamingCall<SubmitRequest, SubmitResult> call = client.Relay.SubmitStream(deadline: DateTime.UtcNow.AddMinutes(2));
        foreach (Envelope envelope in envelopes)
        {
            await call.RequestStream.WriteAsync(new SubmitRequest { Envelope = envelope });
        }

        await call.RequestStream.CompleteAsync();
        var results = new List<SubmitResult>();
        await foreach (SubmitResult r in call.ResponseStream.ReadAllAsync())
        {
            results.Add(r);
        }

        return results;
    }
}
