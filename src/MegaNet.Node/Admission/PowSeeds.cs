using System.Buffers.Binary;
using System.Security.Cryptography;
using MegaNet.Api;

namespace MegaNet.Node.Admission;

/// <summary>
/// The node's proof-of-work seeds: a stamp is made for one (docs/protocol.md), and counts only while the node takes it,
/// the seed of the current <see cref="Lifetime"/> period since the node started (<c>Status.pow_seed</c>) or of the period
/// before. A seed is thus taken for 10 to 20 minutes after it was first announced, and a node that restarts draws all
/// anew: work done while a node is idle cannot be hoarded and spent once it is loaded (with stamps tied to the envelope
/// alone, a month of one core's work, some 130 million 16-bit stamps, was good until the envelopes expired).
/// </summary>
/// <remarks>Thread-safe and lock-free: a period's seed is an HMAC of its number under a key drawn at start, so every
/// thread that sees a new period computes the same pair, and publishing it twice does no harm.</remarks>
internal sealed class PowSeeds(TimeProvider clock)
{
    /// <summary>The length of a period; a seed is current for one and taken for one more.</summary>
    public static readonly TimeSpan Lifetime = TimeSpan.FromMinutes(10);

    private readonly TimeProvider _clock = clock;
    private readonly byte[] _key = RandomNumberGenerator.GetBytes(32);
    private readonly long _start = clock.GetTimestamp();
    private long _turnedForTests;
    private Pair? _pair;

    /// <summary>The seed stamps are to be made for now.</summary>
    public byte[] Current => Fresh().Current;

    /// <summary>The bits <paramref name="envelope"/>'s stamp counts for here (<paramref name="coreBytes"/> are its
    /// <see cref="EnvelopeFormat.CoreBytes"/>): under the current seed, else the one before it; 0 for no stamp, a stamp
    /// for another seed, or one that does not hold.</summary>
    public int StampBits(ReadOnlySpan<byte> coreBytes, MegaNet.Api.V1.Envelope envelope)
    {
        Pair pair = Fresh();
        return EnvelopeFormat.StampBits(coreBytes, envelope, pair.Current, pair.Previous);
    }

    /// <summary>Moves on one period now, as <see cref="Lifetime"/> passing would (tests).</summary>
    internal void TurnForTests() => Interlocked.Increment(ref _turnedForTests);

    private Pair Fresh()
    {
        long period = (_clock.GetElapsedTime(_start).Ticks / Lifetime.Ticks) + Interlocked.Read(ref _turnedForTests);
        Pair? pair = Volatile.Read(ref _pair);
        if (pair is null || pair.Period != period)
        {
            pair = new Pair(period, Seed(period), Seed(period - 1));
            Volatile.Write(ref _pair, pair);
        }

        return pair;
    }

    private byte[] Seed(long period)
    {
        Span<byte> number = stackalloc byte[8];
        BinaryPrimitives.WriteInt64BigEndian(number, period);
        return HMACSHA256.HashData(_key, number)[..EnvelopeFormat.PowSeedLength];
    }

    private sealed record Pair(long Period, byte[] Current, byte[] Previous);
}
