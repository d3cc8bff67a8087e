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
    // The backend a node gives its authenticator (NodeHost): MegaNet's rule, never libsodium's.
    private readonly CountingVerifier _verifier = new(MegaNet.Node.Verification.VerifierCatalog.Create().Create("simd", new VerifierOptions { Threads = 1 }));
    private readonly MailboxAuthenticator _authenticator;

    public MailboxAuthenticatorTests() => _authenticator = new MailboxAuthenticator(NodeKey.LoadOrCreate(_dir), _verifier, _clock);

    private MailboxAuth SignFor(Identity who) => MegaNetClient.SignChallenge(who, _authenticator.Challenge(who.Address), who.Address, MailboxPurpose.Fetch);

    /// <summary>Checks <paramref name="auth"/> as a Fetch (the purpose <see cref="SignFor"/> signs).</summary>
    private byte[] Open(MailboxAuth auth, ClientAddress? source = null) => _authenticator.Authenticate(auth, MailboxPurpose.Fetch, source);

    private sealed class Clock(DateTimeOffset now) : TimeProvider
    {
        public DateTimeOffset Now { get; set; } = now;

        public override DateTimeOffset GetUtcNow() => Now;

        // The monotonic clock moves with Now too, from T0 (the failure budget counts on it).
        public override long GetTimestamp() => (Now - T0).Ticks;

        public override long TimestampFrequency => TimeSpan.TicksPerSecond;
    }

    /// <summary>Counts the signatures checked, to show which refusals cost none.</summary>
    private sealed class CountingVerifier(IBatchVerifier inner) : IBatchVerifier
    {
        private int _checked;

        public int Checked => Volatile.Read(ref _checked);

        public string Name => inner.Name;

        public string Description => inner.Description;

        public VerificationRule Rule => inner.Rule;

        public void Verify(SignatureBatch batch, int start, int count, Span<bool> verdicts)
        {
            Interlocked.Add(ref _checked, count);
            inner.Verify(batch, start, count, verdicts);
        }

        public void Dispose() => inner.Dispose();
    }

    /// <summary>A correct auth for <paramref name="who"/> with one bit of its signature flipped: the keys own the
    /// address, so only the signature check can refuse it.</summary>
    private MailboxAuth ForgedFor(Identity who) => Forged(SignFor(who));

    private static MailboxAuth Forged(MailboxAuth genuine)
    {
        MailboxAuth auth = genuine.Clone();
        byte[] signature = auth.Signature.ToByteArray();
        signature[0] ^= 1;
        auth.Signature = Google.Protobuf.ByteString.CopyFrom(signature);
        return auth;
    }

    [Fact]
    public void A_failed_signature_check_uses_the_challenge_up()
    {
        using Identity bob = Identity.Create();
        MailboxAuth genuine = SignFor(bob), forged = Forged(genuine);

        Assert.Equal(StatusCode.PermissionDenied, Assert.Throws<RpcException>(() => Open(forged)).StatusCode);
        int checks = _verifier.Checked;

        // Before, one challenge allowed wrong signatures without end, each a full check; now the second try with
        // that challenge is refused unchecked, even with the right signature.
        RpcException again = Assert.Throws<RpcException>(() => Open(forged));
        Assert.Contains("already used", again.Status.Detail, StringComparison.Ordinal);
        Assert.Contains("already used", Assert.Throws<RpcException>(() => Open(genuine)).Status.Detail, StringComparison.Ordinal);
        Assert.Equal(checks, _verifier.Checked);

        // A fresh challenge opens the mailbox as before, and the failed one was not counted against the mailbox.
        Assert.Equal(bob.Address, Open(SignFor(bob)));
        Assert.Equal(2, _authenticator.UsedCount);
    }

    /// <summary>An auth as clients before 2026-12-01 signed it: "meganet-auth-v1" ‖ nonce ‖ node id ‖ address, no
    /// purpose (the bytes written here the old way, not through today's EnvelopeFormat).</summary>
    private MailboxAuth SignedTheOldWay(Identity who)
    {
        ChallengeResponse challenge = _authenticator.Challenge(who.Address);
        byte[] signed = [.. "meganet-auth-v1"u8, .. challenge.Nonce.Span, .. challenge.NodeId.Span, .. who.Address];
        MailboxAuth auth = SignFor(who).Clone();
        auth.Nonce = challenge.Nonce;
        auth.Signature = Google.Protobuf.ByteString.CopyFrom(who.SignWithIdentity(signed));
        return auth;
    }

    [Fact]
    public void An_auth_an_old_client_signed_is_refused_with_advice_to_update_it()
    {
        // Found by running a meganet from 2026-11-29 against this node: its fetch and listen were told only that the
        // signature does not verify, which sends the owner looking for a wrong key, not for an update.
        using Identity bob = Identity.Create();
        MailboxAuth old = SignedTheOldWay(bob);
        RpcException refused = Assert.Throws<RpcException>(() => Open(old));
        Assert.Equal(StatusCode.PermissionDenied, refused.StatusCode);
        Assert.Contains("before 2026-12-01", refused.Status.Detail, StringComparison.Ordinal);
        Assert.Contains("update meganet", refused.Status.Detail, StringComparison.Ordinal);

        // Still refused for every call (v1 names none) and used up like any failed check.
        Assert.Equal(StatusCode.PermissionDenied, Assert.Throws<RpcException>(() => _authenticator.Authenticate(SignedTheOldWay(bob), MailboxPurpose.Subscribe)).StatusCode);
        Assert.Contains("already used", Assert.Throws<RpcException>(() => Open(old)).Status.Detail, StringComparison.Ordinal);

        // A signature that is simply wrong keeps its own message.
        RpcException forged = Assert.Throws<RpcException>(() => Open(ForgedFor(bob)));
        Assert.DoesNotContain("before 2026-12-01", forged.Status.Detail, StringComparison.Ordinal);
        Assert.Contains("does not verify", forged.Status.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public void A_site_whose_signatures_keep_failing_is_refused_unchecked_and_others_are_not()
    {
        ClientAddress forger = ClientAddress.From(System.Net.IPAddress.Parse("2001:db8:1:2::7"))!.Value;
        ClientAddress sameSite = ClientAddress.From(System.Net.IPAddress.Parse("2001:db8:1:ffff::9"))!.Value; // same /48
        ClientAddress other = ClientAddress.From(System.Net.IPAddress.Parse("203.0.113.7"))!.Value;
        using Identity bob = Identity.Create(), eve = Identity.Create();

        for (int i = 0; i < AuthFailures.Burst; i++)
        {
            Assert.Equal(StatusCode.PermissionDenied, Assert.Throws<RpcException>(() => Open(ForgedFor(eve), forger)).StatusCode);
        }

        // The burst is spent: refused before the check (which is what costs), from any /64 of the /48, with a hint.
        int checks = _verifier.Checked;
        foreach (ClientAddress from in new[] { forger, sameSite })
        {
            RpcException refused = Assert.Throws<RpcException>(() => Open(ForgedFor(eve), from));
            Assert.Equal(StatusCode.ResourceExhausted, refused.StatusCode);
            Assert.Contains("failed to verify", refused.Status.Detail, StringComparison.Ordinal);
            Assert.Equal((1000 / AuthFailures.FailuresPerSecond).ToString(System.Globalization.CultureInfo.InvariantCulture), refused.Trailers.GetValue("retry-after-ms"));
        }

        Assert.Equal(checks, _verifier.Checked);

        // Other sites are not held back.
        Assert.Equal(bob.Address, Open(SignFor(bob), other));

        // After the hinted wait one more check is allowed, and a valid signature gives its share back.
        _clock.Now += TimeSpan.FromMilliseconds(1000 / AuthFailures.FailuresPerSecond);
        Assert.Equal(bob.Address, Open(SignFor(bob), sameSite));
        Assert.Equal(bob.Address, Open(SignFor(bob), forger));
        Assert.Equal(StatusCode.PermissionDenied, Assert.Throws<RpcException>(() => Open(ForgedFor(eve), forger)).StatusCode);
        Assert.Equal(StatusCode.ResourceExhausted, Assert.Throws<RpcException>(() => Open(ForgedFor(eve), forger)).StatusCode);

        // Once the site has failed nothing for the hold, it starts afresh with a full burst.
        _clock.Now += AuthFailures.Hold;
        for (int i = 0; i < AuthFailures.Burst; i++)
        {
            Assert.Equal(StatusCode.PermissionDenied, Assert.Throws<RpcException>(() => Open(ForgedFor(eve), forger)).StatusCode);
        }

        Assert.Equal(StatusCode.ResourceExhausted, Assert.Throws<RpcException>(() => Open(ForgedFor(eve), forger)).StatusCode);
    }

    [Fact]
    public void Concurrent_forgeries_from_one_site_do_not_overshoot_its_budget()
    {
        ClientAddress forger = ClientAddress.From(System.Net.IPAddress.Parse("198.51.100.3"))!.Value;
        using Identity eve = Identity.Create();
        Assert.Equal(StatusCode.PermissionDenied, Assert.Throws<RpcException>(() => Open(ForgedFor(eve), forger)).StatusCode);
        var forged = Enumerable.Range(0, 4 * AuthFailures.Burst).Select(_ => ForgedFor(eve)).ToArray();
        int checks = _verifier.Checked;
        Parallel.ForEach(forged, auth => Assert.Throws<RpcException>(() => Open(auth, forger)));
        // Two checks per failure: the second tells an old client's v1 auth apart (its refusal says to update).
        Assert.Equal(2 * (AuthFailures.Burst - 1), _verifier.Checked - checks);
    }

    [Fact]
    public void Checks_begun_at_once_from_a_new_site_stop_at_its_burst_and_a_valid_one_leaves_no_trace()
    {
        // A site with no failure held had nothing to reserve from: every check begun before the first failed one
        // ended was allowed (150 forgeries at once from a fresh address all reached the Ed25519 check).
        var failures = new AuthFailures();
        var fresh = new ClientAddress(0, 7);
        long now = 1_000 * System.Diagnostics.Stopwatch.Frequency;
        for (int i = 0; i < AuthFailures.Burst; i++)
        {
            Assert.True(failures.TryBegin(fresh, now, out bool reserved, out _), $"check {i}");
            Assert.True(reserved, $"check {i} reserved nothing");
        }

        Assert.False(failures.TryBegin(fresh, now, out _, out int retryAfterMs));
        Assert.True(retryAfterMs > 0);

        // A site whose checks all turn out valid is not remembered once they end; one that failed is, for the hold.
        var honest = new ClientAddress(0, 8);
        Assert.True(failures.TryBegin(honest, now, out bool honestReserved, out _));
        failures.Checked(honest, valid: true, honestReserved, now);
        Assert.Equal(1, failures.Count);
        var forger = new ClientAddress(0, 9);
        Assert.True(failures.TryBegin(forger, now, out bool forgerReserved, out _));
        failures.Checked(forger, valid: false, forgerReserved, now);
        Assert.Equal(2, failures.Count);
        failures.Sweep(now + (long)(AuthFailures.Hold.TotalSeconds * System.Diagnostics.Stopwatch.Frequency) + 1);
        Assert.Equal(0, failures.Count);
    }

    [Fact]
    public void The_failure_table_is_capped()
    {
        var failures = new AuthFailures(capacity: 4);
        long now = 1_000;
        for (uint i = 0; i < 10; i++)
        {
            var site = new ClientAddress(0, i);
            Assert.True(failures.TryBegin(site, now, out bool reserved, out _));
            failures.Checked(site, valid: false, reserved, now++);
        }

        Assert.Equal(4, failures.Count);

        // The newest are the ones kept: the last site is still held to what it spent.
        var last = new ClientAddress(0, 9);
        for (int i = 1; i < AuthFailures.Burst; i++)
        {
            Assert.True(failures.TryBegin(last, now, out bool reserved, out _));
            failures.Checked(last, valid: false, reserved, now);
        }

        Assert.False(failures.TryBegin(last, now, out _, out int retryAfterMs));
        Assert.True(retryAfterMs > 0);
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
        Open(young);
        Open(old);
        Assert.Equal(2, _authenticator.UsedCount);

        // The old one has expired, the young one lives 105 s more: replays of both, beside fresh uses that sweep.
        _clock.Now = T0.AddSeconds(125);
        Parallel.For(0, 64, i =>
        {
            if (i % 2 == 0)
            {
                Open(Sign());
                return;
            }

            RpcException replay = Assert.Throws<RpcException>(() => Open(young));
            Assert.Contains("already used", replay.Status.Detail);
            Assert.Contains("expired", Assert.Throws<RpcException>(() => Open(old)).Status.Detail);
        });

        // The old one's second is gone; the young one and the 32 fresh ones stay until they too have expired.
        Assert.Equal(33, _authenticator.UsedCount);
        _clock.Now = T0.AddSeconds(232);
        Assert.Contains("expired", Assert.Throws<RpcException>(() => Open(young)).Status.Detail);
        Open(Sign());
        Assert.Equal(33, _authenticator.UsedCount); // the 32 used at 125 s and this one
    }

    [Fact]
    public void Used_challenges_are_forgotten_on_time_after_the_clock_steps_back()
    {
        using Identity bob = Identity.Create();
        MailboxAuth Sign() => SignFor(bob);
        for (int i = 0; i < 5; i++)
        {
            Open(Sign());
        }

        // An hour back (a clock corrected by NTP): one used then, and once it has expired it is forgotten. Sweeps
        // used to wait for the clock to pass the old schedule again, keeping every second meanwhile.
        _clock.Now = T0.AddHours(-1);
        Open(Sign());
        _clock.Now = T0.AddHours(-1).AddSeconds(125);
        Open(Sign());
        Assert.Equal(5 + 1, _authenticator.UsedCount);
    }

    [Fact]
    public void A_wall_clock_stepped_forward_and_back_does_not_make_a_used_challenge_good_again()
    {
        // The wall clock jumps ten minutes ahead (a VM resumed, NTP) and back; the monotonic clock runs on. Timed by the
        // wall clock, the jump had the sweep forget the used challenge, which the clock, back, then took for alive.
        var clock = new SteppingClock(T0);
        var authenticator = new MailboxAuthenticator(NodeKey.LoadOrCreate(_dir), _verifier, clock);
        using Identity bob = Identity.Create();
        MailboxAuth Sign() => MegaNetClient.SignChallenge(bob, authenticator.Challenge(bob.Address), bob.Address, MailboxPurpose.Fetch);
        MailboxAuth used = Sign();
        authenticator.Authenticate(used, MailboxPurpose.Fetch);

        clock.Step(wall: TimeSpan.FromMinutes(10), monotonic: TimeSpan.FromSeconds(1));
        authenticator.Authenticate(Sign(), MailboxPurpose.Fetch);
        clock.Step(wall: TimeSpan.FromMinutes(-10), monotonic: TimeSpan.FromSeconds(1));

        Assert.Contains("already used", Assert.Throws<RpcException>(() => authenticator.Authenticate(used, MailboxPurpose.Fetch)).Status.Detail);
        // It still expires on time, by the monotonic clock.
        clock.Step(wall: TimeSpan.Zero, monotonic: MailboxAuthenticator.Lifetime);
        Assert.Contains("expired", Assert.Throws<RpcException>(() => authenticator.Authenticate(used, MailboxPurpose.Fetch)).Status.Detail);
    }

    /// <summary>A wall clock that may step either way, beside a monotonic clock that only runs forward.</summary>
    private sealed class SteppingClock(DateTimeOffset now) : TimeProvider
    {
        private DateTimeOffset _now = now;
        private long _ticks;

        public void Step(TimeSpan wall, TimeSpan monotonic) => (_now, _ticks) = (_now + wall, _ticks + monotonic.Ticks);

        public override DateTimeOffset GetUtcNow() => _now;

        public override long GetTimestamp() => _ticks;

        public override long TimestampFrequency => TimeSpan.TicksPerSecond;
    }

    [Fact]
    public void One_mailbox_opened_too_often_is_pushed_back_alone_until_its_challenges_expire()
    {
        using Identity eve = Identity.Create(), bob = Identity.Create();

        // Eve opens her own mailbox as fast as she can sign, spread over a minute and a half of challenges.
        for (int i = 0; i < MailboxAuthenticator.MaxUsedPerAddress; i++)
        {
            _clock.Now = T0.AddMilliseconds(90L * i);
            Open(SignFor(eve));
        }

        RpcException pushedBack = Assert.Throws<RpcException>(() => Open(SignFor(eve)));
        Assert.Equal(StatusCode.ResourceExhausted, pushedBack.StatusCode);
        Assert.NotNull(pushedBack.Trailers.GetValue("retry-after-ms"));

        // Everyone else is not: before this limit one identity could fill the node-wide memory of used challenges.
        Assert.Equal(bob.Address, Open(SignFor(bob)));

        // Once her first challenges have expired, Eve is let in again.
        _clock.Now = T0.AddSeconds(125);
        Assert.Equal(eve.Address, Open(SignFor(eve)));
    }

    [Fact]
    public void A_valid_auth_a_cap_refused_is_used_up_so_its_replays_cost_no_check()
    {
        using Identity eve = Identity.Create();
        for (int i = 0; i < MailboxAuthenticator.MaxUsedPerAddress; i++)
        {
            Open(SignFor(eve));
        }

        // Refused by the mailbox's cap after its signature was checked. Before, the nonce stayed unused, and the same
        // auth sent again cost the node a check each time until it expired, two minutes later.
        MailboxAuth refused = SignFor(eve);
        Assert.Equal(StatusCode.ResourceExhausted, Assert.Throws<RpcException>(() => Open(refused)).StatusCode);
        int checkedBefore = _verifier.Checked;
        for (int i = 0; i < 100; i++)
        {
            Assert.Contains("already used", Assert.Throws<RpcException>(() => Open(refused)).Status.Detail, StringComparison.Ordinal);
        }

        Assert.Equal(checkedBefore, _verifier.Checked);
    }

    [Fact]
    public void A_valid_auth_a_full_site_cap_refused_is_charged_to_the_sites_failure_budget()
    {
        // A site cap of 100 (a node-wide cap of 2,000): once the site is full its nonce cannot be recorded as used,
        // so each replay of the refused auth costs a check; the site's budget of failed checks now bounds them.
        var authenticator = new MailboxAuthenticator(NodeKey.LoadOrCreate(_dir), _verifier, _clock) { UsedCap = 2_000 };
        ClientAddress site = ClientAddress.From(System.Net.IPAddress.Parse("203.0.113.20"))!.Value;
        using Identity eve = Identity.Create();
        MailboxAuth Sign() => MegaNetClient.SignChallenge(eve, authenticator.Challenge(eve.Address), eve.Address, MailboxPurpose.Fetch);
        for (int i = 0; i < 100; i++)
        {
            authenticator.Authenticate(Sign(), MailboxPurpose.Fetch, site);
        }

        MailboxAuth refused = Sign();
        int checkedBefore = _verifier.Checked;
        RpcException last = null!;
        for (int i = 0; i < 200; i++)
        {
            last = Assert.Throws<RpcException>(() => authenticator.Authenticate(refused, MailboxPurpose.Fetch, site));
            Assert.Equal(StatusCode.ResourceExhausted, last.StatusCode);
        }

        Assert.InRange(_verifier.Checked - checkedBefore, 1, AuthFailures.Burst + 1);
        Assert.Contains("were refused by a cap on mailbox openings, lately", last.Status.Detail, StringComparison.Ordinal);
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
                    Open(SignFor(sybil), host);
                }
            }

            RpcException pushedBack = Assert.Throws<RpcException>(() => Open(SignFor(last), host));
            Assert.Equal(StatusCode.ResourceExhausted, pushedBack.StatusCode);
            Assert.Contains("from this network address", pushedBack.Status.Detail, StringComparison.Ordinal);

            // Other clients are not pushed back, and the host is let in again once its first challenges expire.
            Assert.Equal(bob.Address, Open(SignFor(bob), other));
            _clock.Now = T0.AddSeconds(125);
            Assert.Equal(last.Address, Open(SignFor(last), host));
        }
        finally
        {
            sybils.ForEach(s => s.Dispose());
        }
    }

    [Fact]
    public void What_expired_is_forgotten_without_another_call()
    {
        using Identity bob = Identity.Create();
        ClientAddress site = ClientAddress.From(System.Net.IPAddress.Parse("203.0.113.9"))!.Value;
        Open(SignFor(bob), site);
        Assert.Throws<RpcException>(() => Open(ForgedFor(bob), site));
        Assert.Equal(2, _authenticator.UsedCount); // the failed one is used up too
        Assert.Equal(1, _authenticator.SitesFailing);

        // No call comes: the node's sweep alone forgets the nonces, the mailbox and site counted for them, and the site
        // whose signature failed (held 60 s after its last failure).
        _clock.Now = T0.AddSeconds(125);
        _authenticator.Sweep();
        Assert.Equal(0, _authenticator.UsedCount);
        Assert.Equal(0, _authenticator.SitesFailing);
    }

    [Fact]
    public void Sites_that_fill_the_node_wide_cap_leave_a_reserve_to_sites_with_few_challenges_live()
    {
        // A node-wide cap of 20,000 (1,000 a site): twenty sites, each opening one mailbox a thousand times, fill it.
        // Before, every other mailbox was then locked out until their challenges expired.
        var authenticator = new MailboxAuthenticator(NodeKey.LoadOrCreate(_dir), _verifier, _clock) { UsedCap = 20_000 };
        MailboxAuth Sign(Identity who) => MegaNetClient.SignChallenge(who, authenticator.Challenge(who.Address), who.Address, MailboxPurpose.Fetch);
        static ClientAddress Site(int n) => ClientAddress.From(System.Net.IPAddress.Parse($"198.51.100.{n}"))!.Value;
        var heavy = Enumerable.Range(0, 20).Select(_ => Identity.Create()).ToList();
        using Identity latecomer = Identity.Create(), bob = Identity.Create();
        try
        {
            for (int site = 0; site < heavy.Count; site++)
            {
                for (int k = 0; k < MailboxAuthenticator.MaxUsedPerAddress; k++)
                {
                    _clock.Now = T0.AddMilliseconds(90_000.0 * ((site * 1_000) + k) / 20_000);
                    authenticator.Authenticate(Sign(heavy[site]), MailboxPurpose.Fetch, Site(site + 1));
                }
            }

            Assert.Equal(20_000, authenticator.UsedCount);
            // A site with fewer than LightSiteNonces live still gets in, up to that many.
            for (int k = 0; k < MailboxAuthenticator.LightSiteNonces; k++)
            {
                Assert.Equal(latecomer.Address, authenticator.Authenticate(Sign(latecomer), MailboxPurpose.Fetch, Site(100)));
            }

            RpcException full = Assert.Throws<RpcException>(() => authenticator.Authenticate(Sign(latecomer), MailboxPurpose.Fetch, Site(100)));
            Assert.Equal(StatusCode.ResourceExhausted, full.StatusCode);
            Assert.Contains("Too many mailbox authentications", full.Status.Detail, StringComparison.Ordinal);
            Assert.Equal(bob.Address, authenticator.Authenticate(Sign(bob), MailboxPurpose.Fetch, Site(101)));
        }
        finally
        {
            heavy.ForEach(h => h.Dispose());
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
                    Open(auth);
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
