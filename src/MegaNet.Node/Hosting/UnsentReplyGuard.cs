using MegaNet.Node.Services;
using Microsoft.AspNetCore.Http;

namespace MegaNet.Node.Hosting;

/// <summary>
/// Bounds the memory <c>Fetch</c> replies hold in the node until their clients read them. A unary reply is handed to
/// Kestrel whole and the call completes on the node at once; HTTP/2 flow control then lets a client simply not read,
/// and the reply (up to <see cref="RelayService.FetchPageBytes"/> of envelopes) stays in the stream's buffer, 100 streams
/// a connection, as many connections as the caps allow: about 6 GiB from one IPv4 address at the default caps (found
/// in review, 2026-12-04). So each Fetch call is charged, node-wide and to its site (an IPv4 address, or an IPv6 /48),
/// from before its reply is built until the reply has left the node: <see cref="NodeOptions.UnsentReplyMiB"/>, a quarter
/// of it per site. A call that would go beyond it is refused before its request is read (RESOURCE_EXHAUSTED,
/// <c>retry-after-ms</c>), and a reply not read within <see cref="Grace"/> plus 1 s per 64 KiB of it is reset, so one
/// client cannot hold the budget for good. <c>Subscribe</c> pages are charged to the same budget while they are written
/// (<see cref="TryChargePage"/>): a subscriber that stops reading held its page until its lifetime ended, 20,000 of them
/// (<see cref="NodeOptions.MaxSubscriptions"/>) about 1.25 GiB.
/// </summary>
public sealed class UnsentReplyGuard(NodeOptions options)
{
    /// <summary>The gRPC path of Fetch.</summary>
    public const string FetchPath = "/meganet.v1.Relay/Fetch";

    /// <summary>What a call is charged until its reply's size is known: a full page of envelopes (one envelope alone is
    /// at most that too) and the other fields of 1,000 items.</summary>
    public const long MaxReplyBytes = RelayService.FetchPageBytes + (64 << 10);

    /// <summary>How long, besides 1 s per 64 KiB of the reply, a client may take to read a reply: longer than the C#
    /// client's own 30 s deadline, so a phone on a slow link (a full page in 34 s: about 60 kbit/s) that reads its reply
    /// at all is not reset. The budget, not this, bounds what unread replies hold; this bounds for how long.</summary>
    public static readonly TimeSpan Grace = TimeSpan.FromSeconds(30);

    /// <summary>The retry hint of a refusal: replies in flight leave within milliseconds when read, within
    /// <see cref="Grace"/> and a few seconds when not.</summary>
    internal const int RetryAfterMs = 1_000;

    // HttpContext.Items key under which the Fetch handler leaves its reply's size.
    private static readonly object ReplyBytesKey = new();

    private readonly SiteByteBudget _unsent = new((long)options.UnsentReplyMiB << 20);

    /// <summary>Bytes charged for Fetch replies and Subscribe pages not yet sent, node-wide.</summary>
    public long Unsent => _unsent.Held;

    /// <summary>The most the replies and pages not yet sent to one site may hold: a quarter of the budget.</summary>
    public long SiteBudget => _unsent.SiteBudget;

    /// <summary>Tests: the time a reply may take to be read besides 1 s per 64 KiB (default <see cref="Grace"/>).</summary>
    internal TimeSpan ReadGrace { get; set; } = Grace;

    /// <summary><c>Subscribe</c>: charges <paramref name="bytes"/> for a page about to be listed and written to
    /// <paramref name="site"/>; false (nothing charged) where the budget has no room. Give it back with
    /// <see cref="ReleasePage"/>.</summary>
    internal bool TryChargePage(ClientAddress site, long bytes) => _unsent.TryCharge(site, bytes);

    /// <summary>Gives back <paramref name="bytes"/> of what <see cref="TryChargePage"/> charged.</summary>
    internal void ReleasePage(ClientAddress site, long bytes) => _unsent.Release(site, bytes);

    /// <summary>How long a client may take to read <paramref name="bytes"/> of replies before its stream is reset.</summary>
    internal TimeSpan ReadDeadline(long bytes) => ReadGrace + TimeSpan.FromSeconds((double)bytes / RequestMessageGuard.MinimumBytesPerSecond);

    /// <summary>The Fetch handler: the reply it returns is <paramref name="bytes"/> long (its charge shrinks to that).</summary>
    public static void ReplySize(HttpContext? context, long bytes)
    {
        if (context is not null)
        {
            context.Items[ReplyBytesKey] = bytes;
        }
    }

    /// <summary>Runs <paramref name="next"/> for a Fetch call that fits the budget, then waits for its reply to leave;
    /// refuses one that does not fit; passes every other call on.</summary>
    public Task InvokeAsync(HttpContext context, RequestDelegate next) =>
        context.Request.Path.Value == FetchPath ? FetchAsync(context, next) : next(context);

    private async Task FetchAsync(HttpContext context, RequestDelegate next)
    {
        ClientAddress site = ClientAddress.From(context.Connection.RemoteIpAddress)?.Site ?? default;
        if (!_unsent.TryCharge(site, MaxReplyBytes))
        {
            // Before the request is read, as EarlyVerifyBatchRefusal's: nothing is listed for a reply with no room.
            EarlyVerifyBatchRefusal.RefuseUnread(context.Response,
                $"The node holds as many Fetch replies and Subscribe pages not yet read as it allows (UnsentReplyMiB {_unsent.Budget >> 20}, a quarter of it per network address); read the replies already asked for, and retry after retry-after-ms.",
                RetryAfterMs);
            return;
        }

        long charged = MaxReplyBytes;
        try
        {
            await next(context).ConfigureAwait(false);
            if (context.Items.TryGetValue(ReplyBytesKey, out object? size) && size is long bytes && bytes < charged)
            {
                _unsent.Release(site, charged - bytes);
                charged = bytes;
            }

            // The reply is in the stream's buffer; a flush completes once it has gone to the client (or the stream or
            // connection ended). Until then it is charged, and past the deadline the stream is reset.
            using var deadline = new CancellationTokenSource(ReadDeadline(charged));
            using CancellationTokenRegistration reset = deadline.Token.Register(static c => ((HttpContext)c!).Abort(), context);
            try
            {
                await context.Response.BodyWriter.FlushAsync(context.RequestAborted).ConfigureAwait(false);
            }
            catch (Exception e) when (e is OperationCanceledException or IOException or InvalidOperationException)
            {
                // The client went, or the stream was reset: the reply's bytes went with it.
            }
        }
        finally
        {
            _unsent.Release(site, charged);
        }
    }
}
