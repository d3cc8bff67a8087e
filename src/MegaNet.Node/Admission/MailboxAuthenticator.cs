using System.Buffers.Binary;
using System.Diagnostics;
using System.Security.Cryptography;
using Grpc.Core;
using MegaNet.Api;
using MegaNet.Api.V1;
using MegaNet.Core.Verification;
using MegaNet.Node.Hosting;

namespace MegaNet.Node.Admission;

/// <summary>
/// Mailbox access without accounts: the node hands out a nonce for an address; the owner proves it holds the
/// identity key behind the address by signing "meganet-auth-v2" ‖ nonce ‖ node id ‖ address ‖ purpose (the call, see
/// <see cref="MailboxPurpose"/>). A nonce is good for one call, for <see cref="Lifetime"/>, and only for the address it
/// was issued for.
/// </summary>
/// <remarks>
/// Nonces are stateless: issued-at ‖ random ‖ a MAC (keyed by a secret of this process) over both and the address,
/// so handing them out costs no memory and an anonymous caller cannot fill a table of outstanding challenges. Only
/// nonces that were used are remembered, until they expire, so none is accepted twice: a signed auth seen by someone
/// else (a log, a proxy, plaintext HTTP) cannot be replayed as an Ack. A nonce is used up by a failed signature check
/// too, and each client site has a budget of failed checks (<see cref="AuthFailures"/>): a wrong signature costs the
/// node a full Ed25519 check (two: the second recognises the v1 form of clients before 2026-12-01, to tell their owners
/// to update) and the caller nothing, and one challenge used to allow any number of them.
/// </remarks>
public sealed class MailboxAuthenticator(NodeKey nodeKey, IBatchVerifier verifier, TimeProvider clock)
{
    /// <summary>How long a challenge may wait for its signed answer.</summary>
    public static readonly TimeSpan Lifetime = TimeSpan.FromMinutes(2);

    // Used nonces are kept until they expire; at most this many (30 bytes each, plus up to ~150 for each address in
    // a second and in the window), i.e. about 8,300 authentications a second sustained over a lifetime. Beyond that
    // mailbox calls are pushed back rather than memory growing; one address alone cannot get there (below).
    private const int MaxUsed = 1_000_000;

    // Most used nonces one address may have live: about 8 authentications a second sustained over a lifetime, far more
    // than a client that fetches, acks and subscribes needs. Without it one identity authenticating to its own mailbox
    // as fast as it could sign filled MaxUsed and locked every mailbox on the node out.
    internal const int MaxUsedPerAddress = 1_000;

    // Most used nonces the calls from one client site (an IPv4 address, or an IPv6 /48) may have live: a twentieth of
    // MaxUsed, so that locking every mailbox out takes twenty sites, not a thousand identities (free to make) on one host.
    // Phones behind one carrier NAT share an address; at one mailbox open a minute each, 25,000 of them fit.
    internal const int MaxUsedPerSource = MaxUsed / 20;

    // Past the node-wide cap, a reserve of a tenth more for sites with few nonces live (an owner fetching, acking and
    // subscribing needs a handful): twenty sites filling the cap no longer lock every other mailbox out; to take the
    // reserve too, a thousand more sites are needed.
    internal const int LightSiteNonces = 100;

    /// <summary>The node-wide cap on used nonces (tests set a smaller one); a site gets a twentieth of it, and sites
    /// with fewer than <see cref="LightSiteNonces"/> live a tenth more.</summary>
    internal int UsedCap { get; init; } = MaxUsed;

    private int SourceCap => UsedCap / 20;
    private const int NonceLength = 32;
    private const int MacLength = 16;
    private static readonly byte[] MacDomain = "meganet-challenge-v1"u8.ToArray();
    private static readonly byte[] LegacyAuthDomain = "meganet-auth-v1"u8.ToArray();

    /// <summary>The refusal of an auth signed in the v1 form (no purpose) that clients before 2026-12-01 sign.</summary>
    internal const string LegacyAuthRefusal =
        "The challenge is signed in the form clients from before 2026-12-01 use (meganet-auth-v1, which names no call), and this node accepts only meganet-auth-v2 (docs/protocol.md, \"Mailbox authentication\"): update meganet (or the MegaNet.Api client library) and try again; the challenge is used up. Mail waiting for you stays on the node.";

    private readonly byte[] _secret = RandomNumberGenerator.GetBytes(32);

    // Nonces are issued and checked by this process alone (the secret dies with it), so their times are the monotonic
    // clock's, anchored to the wall clock at start: with the wall clock, a step forward (NTP, a VM resumed) had the sweep
    // forget the nonces used so far, and a step back then took those nonces for alive again, open to one replay each.
    private readonly long _startUnixMs = clock.GetUtcNow().ToUnixTimeMilliseconds();
    private readonly long _startTimestamp = clock.GetTimestamp();

    // Under _gate. Sites whose signature checks failed lately, held to a budget of failures.
    private readonly AuthFailures _failures = new();

    // Used nonces by the second they were issued in, as their 8 random bytes (the node chose them, so they are as good
    // as unique within a second), with a count per address: a whole second expires at once, with no per-nonce queue. One lock: each step is a
    // hash-set add or a dictionary sweep, far cheaper than the signature check before it.
    private readonly object _gate = new();
    private readonly Dictionary<long, UsedSecond> _usedBySecond = [];
    private readonly Dictionary<Key256, int> _usedByAddress = [];
    private readonly Dictionary<ClientAddress, int> _usedBySource = [];
    private int _usedCount;
    private long _nextSweepMs;

    /// <summary>Forgets what expired (used nonces and the sites and mailboxes they were counted for, sites whose failure
    /// hold ended) without a call to trigger it: on a node no one opens a mailbox on any more, client addresses stay
    /// only as long as docs/protocol.md says. The node calls it every second.</summary>
    public void Sweep()
    {
        lock (_gate)
        {
            Forget(NowUnixMs());
            _failures.Sweep(Timestamp());
        }
    }

    /// <summary>Sites whose signature checks failed lately, remembered now (for tests).</summary>
    internal int SitesFailing
    {
        get
        {
            lock (_gate)
            {
                return _failures.Count;
            }
        }
    }

    /// <summary>Used nonces remembered now (for tests).</summary>
    internal int UsedCount
    {
        get
        {
            lock (_gate)
            {
                return _usedCount;
            }
        }
    }

    /// <summary>Issues a challenge for <paramref name="address"/>.</summary>
    public ChallengeResponse Challenge(ReadOnlySpan<byte> address)
    {
        if (address.Length != 32)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, "An address is 32 bytes."));
        }

        long now = NowUnixMs();
        byte[] nonce = new byte[NonceLength];
        BinaryPrimitives.WriteInt64BigEndian(nonce, now);
        RandomNumberGenerator.Fill(nonce.AsSpan(8, 8));
        Mac(nonce.AsSpan(0, 16), address, nonce.AsSpan(16, MacLength));
        return new ChallengeResponse
        {
            Nonce = Google.Protobuf.ByteString.CopyFrom(nonce),
            NodeId = Google.Protobuf.ByteString.CopyFrom(nodeKey.PublicKey),
            ExpiresUnixMs = now + (long)Lifetime.TotalMilliseconds,
        };
    }

    /// <summary>Returns the authenticated address or throws UNAUTHENTICATED / PERMISSION_DENIED / RESOURCE_EXHAUSTED saying why;
    /// the signature must be for <paramref name="purpose"/> (the call being made); <paramref name="source"/> is the
    /// calling client's address, when known.</summary>
    public byte[] Authenticate(MailboxAuth? auth, MailboxPurpose purpose, ClientAddress? source = null)
    {
        source = source?.Site; // by /48 for IPv6: hopping /64s must not multiply the cap
        if (auth is null || auth.Nonce.IsEmpty || auth.Signature.IsEmpty)
        {
            throw new RpcException(new Status(StatusCode.Unauthenticated, "Mailbox access needs a signed challenge: call Challenge, sign it with the identity key, and send it as auth."));
        }

        if (auth.Address.Length != 32 || auth.IdentitySigningKey.Length != 32 || auth.IdentityEncryptionKey.Length != 32 || auth.Signature.Length != 64)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, "auth: address and keys must be 32 bytes, signature 64 bytes."));
        }

        ReadOnlySpan<byte> nonce = auth.Nonce.Span;
        long now = NowUnixMs();
        long issued = nonce.Length == NonceLength ? BinaryPrimitives.ReadInt64BigEndian(nonce) : long.MinValue;
        long expires = issued == long.MinValue ? long.MinValue : issued + (long)Lifetime.TotalMilliseconds;
        if (expires <= now || issued > now + 60_000)
        {
            throw new RpcException(new Status(StatusCode.Unauthenticated, "Unknown or expired challenge nonce; call Challenge again."));
        }

        byte[] address = auth.Address.ToByteArray();
        Span<byte> mac = stackalloc byte[MacLength];
        Mac(nonce[..16], address, mac);
        if (!CryptographicOperations.FixedTimeEquals(mac, nonce.Slice(16, MacLength)))
        {
            throw new RpcException(new Status(StatusCode.PermissionDenied, "This challenge was not issued by this node for this address; call Challenge for it."));
        }

        long second = issued / 1000;
        ulong random = BinaryPrimitives.ReadUInt64LittleEndian(nonce[8..]);
        if (IsUsed(second, random))
        {
            throw Reused();
        }

        if (!ContactCard.ComputeAddress(auth.IdentitySigningKey.Span, auth.IdentityEncryptionKey.Span).AsSpan().SequenceEqual(address))
        {
            throw new RpcException(new Status(StatusCode.PermissionDenied, "These identity keys do not own this address."));
        }

        // A site that failed too many checks lately is refused before the check, which is what costs.
        bool reserved = false;
        if (source is { } site)
        {
            int retryAfterMs;
            bool allowed;
            lock (_gate)
            {
                allowed = _failures.TryBegin(site, Timestamp(), out reserved, out retryAfterMs);
            }

            if (!allowed)
            {
                throw new RpcException(new Status(StatusCode.ResourceExhausted,
                    $"Too many challenge signatures from this network address failed to verify, or were refused by a cap on mailbox openings, lately (the node allows {AuthFailures.Burst}, then {AuthFailures.FailuresPerSecond} a second); sign the challenge with the identity key sent in auth, and retry after retry-after-ms."),
                    NodeRefusals.Trailers(retryAfterMs));
            }
        }

        bool valid;
        using (var batch = new SignatureBatch(1))
        {
            batch.Add(auth.IdentitySigningKey.Span, auth.Signature.Span, EnvelopeFormat.AuthBytes(nonce, nodeKey.PublicKey, address, purpose));
            valid = verifier.Verify(batch)[0];
        }

        // Clients from before 2026-12-01 sign the v1 form, which names no call. It is refused all the same (an auth seen
        // on its way could be spent on another call, an Ack among them), but its owner is told to update the client:
        // a bare "does not verify" sent them looking for a wrong key. Only after a failed check, which the site's
        // budget of failures already bounds, so a second check there costs at most as much again.
        bool legacy = false;
        if (!valid)
        {
            using var batch = new SignatureBatch(1);
            batch.Add(auth.IdentitySigningKey.Span, auth.Signature.Span, LegacyAuthBytes(nonce, nodeKey.PublicKey, address));
            legacy = verifier.Verify(batch)[0];
        }

        // Two calls racing with one nonce: exactly one adds it.
        lock (_gate)
        {
            // The time again, under the lock: a second is swept only once all its nonces expired by some thread's
            // clock, and a reading from before the signature check could be older than that sweep.
            now = NowUnixMs();
            var owner = Key256.From(address);
            int fromSource = 0, opened = 0;
            RpcException? refusal = valid && expires > now ? CapRefusal(now, source, owner, out fromSource, out opened) : null;
            if (source is { } checkedSite)
            {
                // A valid signature that a cap refused costs the node a check and its sender nothing, as a wrong one
                // does: replayed until it expires, it would buy a check per call. It is charged to the site's budget
                // of failed checks, and used up below where a cap allows, so a replay is refused before the check.
                _failures.Checked(checkedSite, valid && refusal is null, reserved, Timestamp());
            }

            if (legacy)
            {
                UseUp(now, expires, second, random, source);
                throw new RpcException(new Status(StatusCode.PermissionDenied, LegacyAuthRefusal));
            }

            if (!valid)
            {
                UseUp(now, expires, second, random, source);
                throw new RpcException(new Status(StatusCode.PermissionDenied,
                    "The challenge signature does not verify for this identity key and this call (a signature is good for one method, and for Ack for the sequence numbers it names), and the challenge is used up; call Challenge again and sign it with the identity key sent in auth, for this call."));
            }

            if (expires <= now)
            {
                throw new RpcException(new Status(StatusCode.Unauthenticated, "Unknown or expired challenge nonce; call Challenge again."));
            }

            if (refusal is not null)
            {
                UseUp(now, expires, second, random, source);
                throw refusal;
            }

            if (!Record(second, random, source, fromSource, out UsedSecond used))
            {
                throw Reused();
            }

            used.ByAddress[owner] = used.ByAddress.GetValueOrDefault(owner) + 1;
            _usedByAddress[owner] = opened + 1;
        }

        return address;
    }

    // "meganet-auth-v1" ‖ nonce ‖ node id ‖ address: what clients before 2026-12-01 sign (recognised only to say so).
    private static byte[] LegacyAuthBytes(ReadOnlySpan<byte> nonce, ReadOnlySpan<byte> nodeId, ReadOnlySpan<byte> address) =>
        [.. LegacyAuthDomain, .. nonce, .. nodeId, .. address];

    /// <summary>Under <see cref="_gate"/>. The refusal of a valid auth by the caps on used nonces (node-wide, per
    /// mailbox, per site), or null; <paramref name="fromSource"/> and <paramref name="opened"/> are the site's and the
    /// mailbox's counts, for <see cref="Record"/>.</summary>
    private RpcException? CapRefusal(long now, ClientAddress? source, Key256 owner, out int fromSource, out int opened)
    {
        Forget(now);
        fromSource = source is { } client ? _usedBySource.GetValueOrDefault(client) : 0;
        _usedByAddress.TryGetValue(owner, out opened);
        if (_usedCount >= UsedCap + (fromSource < LightSiteNonces ? UsedCap / 10 : 0))
        {
            return new RpcException(new Status(StatusCode.ResourceExhausted, "Too many mailbox authentications in the last minutes; retry shortly."));
        }

        if (opened >= MaxUsedPerAddress)
        {
            return new RpcException(new Status(StatusCode.ResourceExhausted,
                $"This mailbox was opened {MaxUsedPerAddress} times in the last {Lifetime.TotalMinutes:0} minutes; wait a little (one Fetch takes up to 1,000 messages, and a subscription stays open)."),
                NodeRefusals.Trailers(1000));
        }

        if (fromSource >= SourceCap)
        {
            return new RpcException(new Status(StatusCode.ResourceExhausted,
                $"Mailboxes were opened {SourceCap:N0} times from this network address in the last {Lifetime.TotalMinutes:0} minutes; retry shortly."),
                NodeRefusals.Trailers(1000));
        }

        return null;
    }

    /// <summary>Under <see cref="_gate"/>. Records a nonce whose signature failed, or whose valid signature a cap
    /// refused, as used, so each such check needs a Challenge round trip of its own: before, one challenge allowed any
    /// number of wrong signatures (or replays of a refused valid one) for its lifetime.
    /// It counts against the node's and its site's caps on used nonces, but not its mailbox's: challenges for any
    /// address are free, so that would let anyone lock a mailbox out by failing on its challenges. When a cap is
    /// reached it is not recorded (the site's failure budget still bounds what the nonce can cost).</summary>
    private void UseUp(long now, long expires, long second, ulong random, ClientAddress? source)
    {
        if (expires <= now)
        {
            return; // refused as expired from now on anyway
        }

        Forget(now);
        int fromSource = source is { } client ? _usedBySource.GetValueOrDefault(client) : 0;
        if (_usedCount >= UsedCap || fromSource >= SourceCap)
        {
            return;
        }

        Record(second, random, source, fromSource, out _); // false: another call used it meanwhile
    }

    /// <summary>Under <see cref="_gate"/>. Records the nonce (<paramref name="random"/>, issued in
    /// <paramref name="second"/>) as used, counted for the node and for <paramref name="source"/>'s site, which had
    /// <paramref name="fromSource"/> used ones; false when it was used already. The caller counts the mailbox.</summary>
    private bool Record(long second, ulong random, ClientAddress? source, int fromSource, out UsedSecond used)
    {
        if (!_usedBySecond.TryGetValue(second, out UsedSecond? existing))
        {
            _usedBySecond[second] = existing = new UsedSecond();
        }

        used = existing;
        if (!used.Nonces.Add(random))
        {
            return false;
        }

        if (source is { } from)
        {
            used.BySource[from] = used.BySource.GetValueOrDefault(from) + 1;
            _usedBySource[from] = fromSource + 1;
        }

        _usedCount++;
        return true;
    }

    /// <summary>Unix milliseconds by the monotonic clock since this authenticator was made (see <c>_startUnixMs</c>).</summary>
    private long NowUnixMs() => _startUnixMs + (long)((clock.GetTimestamp() - _startTimestamp) * 1000.0 / clock.TimestampFrequency);

    // The failure budget counts in Stopwatch ticks; read from the injected clock so tests can move it.
    private long Timestamp() => clock.TimestampFrequency == Stopwatch.Frequency
        ? clock.GetTimestamp()
        : (long)(clock.GetTimestamp() * ((double)Stopwatch.Frequency / clock.TimestampFrequency));

    private static RpcException Reused() =>
        new(new Status(StatusCode.Unauthenticated, "This challenge was already used; a signed challenge opens one call. Call Challenge again."));

    private bool IsUsed(long second, ulong random)
    {
        lock (_gate)
        {
            return _usedBySecond.TryGetValue(second, out UsedSecond? used) && used.Nonces.Contains(random);
        }
    }

    // Under _gate. Drops every second whose nonces have all expired (a nonce issued in second s lives until at most
    // (s + 1) s + Lifetime); the rest stay, whatever order they were used in.
    private void Forget(long now)
    {
        // At most once a second: a second's nonces are dropped up to a second late, which costs memory, not safety
        // (an expired nonce is refused before the used set is consulted).
        // Also when the clock stepped back: waiting for it to pass the old schedule again would keep every second.
        if (now < _nextSweepMs && now >= _nextSweepMs - 1000)
        {
            return;
        }

        _nextSweepMs = now + 1000;
        List<long>? expired = null;
        foreach ((long second, UsedSecond used) in _usedBySecond)
        {
            if ((second + 1) * 1000 + (long)Lifetime.TotalMilliseconds <= now)
            {
                (expired ??= []).Add(second);
            }
        }

        if (expired is null)
        {
            return;
        }

        foreach (long second in expired)
        {
            UsedSecond used = _usedBySecond[second];
            _usedCount -= used.Nonces.Count;
            foreach ((Key256 owner, int count) in used.ByAddress)
            {
                Subtract(_usedByAddress, owner, count);
            }

            foreach ((ClientAddress from, int count) in used.BySource)
            {
                Subtract(_usedBySource, from, count);
            }

            _usedBySecond.Remove(second);
        }
    }

    private static void Subtract<TKey>(Dictionary<TKey, int> counts, TKey key, int count)
        where TKey : notnull
    {
        int left = counts[key] - count;
        if (left == 0)
        {
            counts.Remove(key);
        }
        else
        {
            counts[key] = left;
        }
    }

    /// <summary>The nonces used from one second of issue, and how many of them each mailbox address and each client
    /// address used.</summary>
    private sealed class UsedSecond
    {
        public HashSet<ulong> Nonces { get; } = [];

        public Dictionary<Key256, int> ByAddress { get; } = [];

        public Dictionary<ClientAddress, int> BySource { get; } = [];
    }

    private void Mac(ReadOnlySpan<byte> issuedAndRandom, ReadOnlySpan<byte> address, Span<byte> destination)
    {
        Span<byte> input = stackalloc byte[20 + 16 + 32];
        MacDomain.CopyTo(input);
        issuedAndRandom.CopyTo(input[MacDomain.Length..]);
        address.CopyTo(input[(MacDomain.Length + 16)..]);
        Span<byte> full = stackalloc byte[32];
        HMACSHA256.HashData(_secret, input[..(MacDomain.Length + 16 + 32)], full);
        full[..MacLength].CopyTo(destination);
    }
}
