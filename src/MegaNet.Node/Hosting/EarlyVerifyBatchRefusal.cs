using System.Globalization;
using System.Text;
using Grpc.Core;
using MegaNet.Api;
using MegaNet.Node.Services;
using Microsoft.AspNetCore.Http;

namespace MegaNet.Node.Hosting;

/// <summary>
/// Refuses a <c>VerifyBatch</c> call before its request is read when the gate would refuse it anyway (the site's budget
/// of invalid verdicts spent, its share of the slots held, or every slot busy): Grpc.AspNetCore reads and parses a whole
/// request message (up to 16 MiB, 65,536 items) before the service can ask the gate, so a client refused again and
/// again cost the node that parsing each time. The answer is the one the service gives (RESOURCE_EXHAUSTED, the same
/// text and <c>retry-after-ms</c>), sent as a gRPC trailers-only response; the request's bytes are left unread.
/// </summary>
internal sealed class EarlyVerifyBatchRefusal(DelegatedVerificationGate gate)
{
    /// <summary>The gRPC path of VerifyBatch.</summary>
    public const string Path = "/meganet.v1.Relay/VerifyBatch";

    /// <summary>Answers a VerifyBatch call the gate would refuse; passes everything else on.</summary>
    /// <remarks>Not async: every call passes through here, and an await would cost each one a state machine and a
    /// continuation for nothing.</remarks>
    public Task InvokeAsync(HttpContext context, RequestDelegate next)
    {
        if (context.Request.Path.Value == Path
            && context.Request.ContentType is { } type && type.StartsWith("application/grpc", StringComparison.OrdinalIgnoreCase)
            && gate.WouldRefuse(ClientAddress.From(context.Connection.RemoteIpAddress), out int retryAfterMs) is var refusal
            && refusal != DelegatedVerificationGate.Refusal.None)
        {
            RefuseUnread(context.Response, gate.RefusalText(refusal), retryAfterMs);
            return Task.CompletedTask;
        }

        return next(context);
    }

    /// <summary>Answers a call RESOURCE_EXHAUSTED with <paramref name="text"/> and <c>retry-after-ms</c>, as a gRPC
    /// trailers-only response, leaving its request's bytes unread.</summary>
    internal static void RefuseUnread(HttpResponse response, string text, int retryAfterMs)
    {
        response.StatusCode = StatusCodes.Status200OK;
        response.ContentType = "application/grpc";
        response.Headers["grpc-status"] = ((int)StatusCode.ResourceExhausted).ToString(CultureInfo.InvariantCulture);
        response.Headers["grpc-message"] = PercentEncode(text);
        response.Headers[NodeRefusals.RetryAfterTrailer] = retryAfterMs.ToString(CultureInfo.InvariantCulture);
    }

    /// <summary>grpc-message's encoding: UTF-8, with every byte outside printable ASCII, and '%', as %XX.</summary>
    internal static string PercentEncode(string text)
    {
        var encoded = new StringBuilder(text.Length);
        foreach (byte b in Encoding.UTF8.GetBytes(text))
        {
            if (b is >= 0x20 and <= 0x7E && b != (byte)'%')
            {
                encoded.Append((char)b);
            }
            else
            {
                encoded.Append('%').Append(b.ToString("X2", CultureInfo.InvariantCulture));
            }
        }

        return encoded.ToString();
    }
}
