using Grpc.Core;
using MegaNet.Api;
using MegaNet.Api.V1;
using MegaNet.Core.Verification;
using MegaNet.Node.Admission;
using MegaNet.Node.Hosting;

namespace MegaNet.Node.Tests;

/// <summary>The used-nonce memory of <see cref="MailboxAuthenticator"/>: a signed challenge opens one call for its
/// whole lifetime, whatever order challenges are used in, and the memory empties as they expire.</summary>
public sealed class MailboxAuthenticatorTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("meganet-auth-").FullName;

    private sealed class Clock(DateTimeOffset now) : TimeProvider
    {
        public DateTimeOffset Now { get; set; } = now;

        public override DateTimeOffset GetUtcNow() => Now;
    }

    [Fact]
    public void A_used_challenge_stays_refused_until_it_expires_whatever_order_challenges_were_used_in()
    {
        var t0 = new DateTimeOffset(2030, 1, 1, 0, 0, 0, TimeSpan.Zero);
        var clock = new Clock(t0);
        using var verifier = new LibsodiumBatchVerifier();
        var authenticator = new MailboxAuthenticator(NodeKey.LoadOrCreate(_dir), verifier, clock);
        using Identity bob = Identity.Create();
        MailboxAuth Sign() => MegaNetClient.SignChallenge(bob, authenticator.Challenge(bob.Address), bob.Address);

        // An old challenge and a young one, used young first: a queue in order of use held the old one at its head,
        // and two threads sweeping it at once could drop the young one (a replay window of most of a lifetime).
        MailboxAuth old = Sign();
        clock.Now = t0.AddSeconds(110);
        MailboxAuth young = Sign();
        authenticator.Authenticate(young);
        authenticator.Authenticate(old);
        Assert.Equal(2, authenticator.UsedCount);

        // The old one has expired, the young one lives 105 s more: replays of both, beside fresh uses that sweep.
        clock.Now = t0.AddSeconds(125);
        Parallel.For(0, 64, i =>
        {
            if (i % 2 == 0)
            {
                authenticator.Authenticate(Sign());
                return;
            }

            RpcException replay = Assert.Throws<RpcException>(() => authenticator.Authenticate(young));
            Assert.Contains("already used", replay.Status.Detail);
            Assert.Contains("expired", Assert.Throws<RpcException>(() => authenticator.Authenticate(old)).Status.Detail);
        });

        // The old one's second is gone; the young one and the 32 fresh ones stay until they too have expired.
        Assert.Equal(33, authenticator.UsedCount);
        clock.Now = t0.AddSeconds(232);
        Assert.Contains("expired", Assert.Throws<RpcException>(() => authenticator.Authenticate(young)).Status.Detail);
        authenticator.Authenticate(Sign());
        Assert.Equal(33, authenticator.UsedCount); // the 32 used at 125 s and this one
    }

    [Fact]
    public void Used_challenges_are_forgotten_on_time_after_the_clock_steps_back()
    {
        var t0 = new DateTimeOffset(2030, 1, 1, 0, 0, 0, TimeSpan.Zero);
        var clock = new Clock(t0);
        using var verifier = new LibsodiumBatchVerifier();
        var authenticator = new MailboxAuthenticator(NodeKey.LoadOrCreate(_dir), verifier, clock);
        using Identity bob = Identity.Create();
        MailboxAuth Sign() => MegaNetClient.SignChallenge(bob, authenticator.Challenge(bob.Address), bob.Address);
        for (int i = 0; i < 5; i++)
        {
            authenticator.Authenticate(Sign());
        }

        // An hour back (a clock corrected by NTP): one used then, and once it has expired it is forgotten. Sweeps
        // used to wait for the clock to pass the old schedule again, keeping every second meanwhile.
        clock.Now = t0.AddHours(-1);
        authenticator.Authenticate(Sign());
        clock.Now = t0.AddHours(-1).AddSeconds(125);
        authenticator.Authenticate(Sign());
        Assert.Equal(5 + 1, authenticator.UsedCount);
    }

    [Fact]
    public void One_mailbox_opened_too_often_is_pushed_back_alone_until_its_challenges_expire()
    {
        var t0 = new DateTimeOffset(2030, 1, 1, 0, 0, 0, TimeSpan.Zero);
        var clock = new Clock(t0);
        using var verifier = new LibsodiumBatchVerifier();
        var authenticator = new MailboxAuthenticator(NodeKey.LoadOrCreate(_dir), verifier, clock);
        using Identity eve = Identity.Create(), bob = Identity.Create();
        MailboxAuth Sign(Identity who) => MegaNetClient.SignChallenge(who, authenticator.Challenge(who.Address), who.Address);

        // Eve opens her own mailbox as fast as she can sign, spread over a minute and a half of challenges.
        for (int i = 0; i < MailboxAuthenticator.MaxUsedPerAddress; i++)
        {
            clock.Now = t0.AddMilliseconds(90L * i);
            authenticator.Authenticate(Sign(eve));
        }

        RpcException pushedBack = Assert.Throws<RpcException>(() => authenticator.Authenticate(Sign(eve)));
        Assert.Equal(StatusCode.ResourceExhausted, pushedBack.StatusCode);
        Assert.NotNull(pushedBack.Trailers.GetValue("retry-after-ms"));

        // Everyone else is not: before this limit one identity could fill the node-wide memory of used challenges.
        Assert.Equal(bob.Address, authenticator.Authenticate(Sign(bob)));

        // Once her first challenges have expired, Eve is let in again.
        clock.Now = t0.AddSeconds(125);
        Assert.Equal(eve.Address, authenticator.Authenticate(Sign(eve)));
    }

    [Fact]
    public void Of_many_concurrent_uses_of_one_challenge_exactly_one_opens_a_call()
    {
        using var verifier = new LibsodiumBatchVerifier();
        var authenticator = new MailboxAuthenticator(NodeKey.LoadOrCreate(_dir), verifier, TimeProvider.System);
        using Identity bob = Identity.Create();
        for (int round = 0; round < 50; round++)
        {
            MailboxAuth auth = MegaNetClient.SignChallenge(bob, authenticator.Challenge(bob.Address), bob.Address);
            int opened = 0;
            Parallel.For(0, 8, _ =>
            {
                try
                {
                    authenticator.Authenticate(auth);
                    Interlocked.Increment(ref opened);
                }
                catch (RpcException e) when (e.StatusCode == StatusCode.Unauthenticated)
                {
                }
            });
            Assert.Equal(1, opened);
        }
    }

    public void Dispose() => Directory.Delete(_dir, recursive: true);
}
