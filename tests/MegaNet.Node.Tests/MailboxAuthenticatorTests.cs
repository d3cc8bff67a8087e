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
    private static readonly DateTimeOffset T0 = new(2030, 1, 1, 0, 0, 0, TimeSpan.Zero);

    private readonly string _dir = Directory.CreateTempSubdirectory("meganet-auth-").FullName;
    private readonly Clock _clock = new(T0);
    private readonly LibsodiumBatchVerifier _verifier = new();
    private readonly MailboxAuthenticator _authenticator;

    public MailboxAuthenticatorTests() => _authenticator = new MailboxAuthenticator(NodeKey.LoadOrCreate(_dir), _verifier, _clock);

    private MailboxAuth SignFor(Identity who) => MegaNetClient.SignChallenge(who, _authenticator.Challenge(who.Address), who.Address);

    private sealed class Clock(DateTimeOffset now) : TimeProvider
    {
        public DateTimeOffset Now { get; set; } = now;

        public override DateTimeOffset GetUtcNow() => Now;
    }

    [Fact]
    public void A_used_challenge_stays_refused_until_it_expires_whatever_order_challenges_were_used_in()
    {
        using Identity bob = Identity.Create();
        MailboxAuth Sign() => SignFor(bob);

        // An old challenge and a young one, used young first: a queue in order of use held the old one at its head,
        // and two threads sweeping it at once could drop the young one (a replay window of most of a lifetime).
        MailboxAuth old = Sign();
        _clock.Now = T0.AddSeconds(110);
        MailboxAuth young = Sign();
        _authenticator.Authenticate(young);
        _authenticator.Authenticate(old);
        Assert.Equal(2, _authenticator.UsedCount);

        // The old one has expired, the young one lives 105 s more: replays of both, beside fresh uses that sweep.
        _clock.Now = T0.AddSeconds(125);
        Parallel.For(0, 64, i =>
        {
            if (i % 2 == 0)
            {
                _authenticator.Authenticate(Sign());
                return;
            }

            RpcException replay = Assert.Throws<RpcException>(() => _authenticator.Authenticate(young));
            Assert.Contains("already used", replay.Status.Detail);
            Assert.Contains("expired", Assert.Throws<RpcException>(() => _authenticator.Authenticate(old)).Status.Detail);
        });

        // The old one's second is gone; the young one and the 32 fresh ones stay until they too have expired.
        Assert.Equal(33, _authenticator.UsedCount);
        _clock.Now = T0.AddSeconds(232);
        Assert.Contains("expired", Assert.Throws<RpcException>(() => _authenticator.Authenticate(young)).Status.Detail);
        _authenticator.Authenticate(Sign());
        Assert.Equal(33, _authenticator.UsedCount); // the 32 used at 125 s and this one
    }

    [Fact]
    public void Used_challenges_are_forgotten_on_time_after_the_clock_steps_back()
    {
        using Identity bob = Identity.Create();
        MailboxAuth Sign() => SignFor(bob);
        for (int i = 0; i < 5; i++)
        {
            _authenticator.Authenticate(Sign());
        }

        // An hour back (a clock corrected by NTP): one used then, and once it has expired it is forgotten. Sweeps
        // used to wait for the clock to pass the old schedule again, keeping every second meanwhile.
        _clock.Now = T0.AddHours(-1);
        _authenticator.Authenticate(Sign());
        _clock.Now = T0.AddHours(-1).AddSeconds(125);
        _authenticator.Authenticate(Sign());
        Assert.Equal(5 + 1, _authenticator.UsedCount);
    }

    [Fact]
    public void One_mailbox_opened_too_often_is_pushed_back_alone_until_its_challenges_expire()
    {
        using Identity eve = Identity.Create(), bob = Identity.Create();

        // Eve opens her own mailbox as fast as she can sign, spread over a minute and a half of challenges.
        for (int i = 0; i < MailboxAuthenticator.MaxUsedPerAddress; i++)
        {
            _clock.Now = T0.AddMilliseconds(90L * i);
            _authenticator.Authenticate(SignFor(eve));
        }

        RpcException pushedBack = Assert.Throws<RpcException>(() => _authenticator.Authenticate(SignFor(eve)));
        Assert.Equal(StatusCode.ResourceExhausted, pushedBack.StatusCode);
        Assert.NotNull(pushedBack.Trailers.GetValue("retry-after-ms"));

        // Everyone else is not: before this limit one identity could fill the node-wide memory of used challenges.
        Assert.Equal(bob.Address, _authenticator.Authenticate(SignFor(bob)));

        // Once her first challenges have expired, Eve is let in again.
        _clock.Now = T0.AddSeconds(125);
        Assert.Equal(eve.Address, _authenticator.Authenticate(SignFor(eve)));
    }

    [Fact]
    public void One_client_address_opening_many_mailboxes_is_pushed_back_alone_until_its_challenges_expire()
    {
        // Identities cost nothing: a host with a thousand of them could fill the node-wide memory of used challenges
        // within each mailbox's limit and lock every mailbox out. Its address is now held to a twentieth of that memory.
        ClientAddress host = ClientAddress.From(System.Net.IPAddress.Parse("203.0.113.7"))!.Value;
        ClientAddress other = ClientAddress.From(System.Net.IPAddress.Parse("2001:db8::1"))!.Value;
        int identities = MailboxAuthenticator.MaxUsedPerSource / MailboxAuthenticator.MaxUsedPerAddress;
        var sybils = Enumerable.Range(0, identities).Select(_ => Identity.Create()).ToList();
        using Identity last = Identity.Create(), bob = Identity.Create();
        try
        {
            int i = 0;
            foreach (Identity sybil in sybils)
            {
                for (int k = 0; k < MailboxAuthenticator.MaxUsedPerAddress; k++, i++)
                {
                    _clock.Now = T0.AddMilliseconds(90_000.0 * i / MailboxAuthenticator.MaxUsedPerSource);
                    _authenticator.Authenticate(SignFor(sybil), host);
                }
            }

            RpcException pushedBack = Assert.Throws<RpcException>(() => _authenticator.Authenticate(SignFor(last), host));
            Assert.Equal(StatusCode.ResourceExhausted, pushedBack.StatusCode);
            Assert.Contains("from this network address", pushedBack.Status.Detail, StringComparison.Ordinal);

            // Other clients are not pushed back, and the host is let in again once its first challenges expire.
            Assert.Equal(bob.Address, _authenticator.Authenticate(SignFor(bob), other));
            _clock.Now = T0.AddSeconds(125);
            Assert.Equal(last.Address, _authenticator.Authenticate(SignFor(last), host));
        }
        finally
        {
            sybils.ForEach(s => s.Dispose());
        }
    }

    [Fact]
    public void Of_many_concurrent_uses_of_one_challenge_exactly_one_opens_a_call()
    {
        using Identity bob = Identity.Create();
        for (int round = 0; round < 50; round++)
        {
            MailboxAuth auth = SignFor(bob);
            int opened = 0;
            Parallel.For(0, 8, _ =>
            {
                try
                {
                    _authenticator.Authenticate(auth);
                    Interlocked.Increment(ref opened);
                }
                catch (RpcException e) when (e.StatusCode == StatusCode.Unauthenticated)
                {
                }
            });
            Assert.Equal(1, opened);
        }
    }

    public void Dispose()
    {
        _verifier.Dispose();
        Directory.Delete(_dir, recursive: true);
    }
}
