using MegaNet.Api;
using MegaNet.Api.V1;
using MegaNet.Node.Admission;

namespace MegaNet.Node.Tests;

/// <summary>The node's proof-of-work seeds (docs/protocol.md, "Proof of work"): a stamp counts for the current seed and
/// the one before it, so it is good for 10 to 20 minutes after its seed was announced, and never after.</summary>
public sealed class PowSeedsTests
{
    private sealed class Clock : TimeProvider
    {
        public TimeSpan Elapsed { get; set; }

        public override long GetTimestamp() => Elapsed.Ticks;

        public override long TimestampFrequency => TimeSpan.TicksPerSecond;
    }

    private static Envelope StampedFor(byte[] seed, Identity sender, Identity recipient, int i)
    {
        Envelope envelope = EnvelopeFormat.Seal(sender, recipient.Card, [(byte)i], "application/octet-stream", null, DateTimeOffset.UtcNow.AddDays(1));
        // 16 bits: a stamp for one seed holds under another by chance 2^-17, so the refusals below do not fail by luck.
        return ExactStamp.Stamp(sender, envelope, seed, 16);
    }

    private static int Counted(PowSeeds seeds, Envelope envelope) => seeds.StampBits(EnvelopeFormat.CoreBytes(envelope), envelope);

    [Fact]
    public void A_stamp_counts_for_its_seeds_lifetime_and_the_next_then_for_nothing()
    {
        var clock = new Clock();
        var seeds = new PowSeeds(clock);
        using Identity alice = Identity.Create(), bob = Identity.Create();
        byte[] first = seeds.Current;
        Assert.Equal(EnvelopeFormat.PowSeedLength, first.Length);
        Envelope early = StampedFor(first, alice, bob, 0);
        Assert.Equal(16, Counted(seeds, early));

        // Just short of the lifetime: the same seed.
        clock.Elapsed = PowSeeds.Lifetime - TimeSpan.FromSeconds(1);
        Assert.Equal(first, seeds.Current);

        // Past it: a new seed, and the old one still taken.
        clock.Elapsed = PowSeeds.Lifetime;
        byte[] second = seeds.Current;
        Assert.NotEqual(first, second);
        Assert.Equal(16, Counted(seeds, early));
        Envelope later = StampedFor(second, alice, bob, 1);
        Assert.Equal(16, Counted(seeds, later));

        // A lifetime later the first seed is gone; the second is now the one before.
        clock.Elapsed = 2 * PowSeeds.Lifetime;
        Assert.NotEqual(second, seeds.Current);
        Assert.Equal(0, Counted(seeds, early));
        Assert.Equal(16, Counted(seeds, later));

        // Periods count from the node's start, not from when someone last asked: after five, neither of the first two
        // seeds is taken, however long nobody asked.
        clock.Elapsed = 5 * PowSeeds.Lifetime;
        Assert.Equal(0, Counted(seeds, later));
        Assert.Equal(16, Counted(seeds, StampedFor(seeds.Current, alice, bob, 2)));

        // Another node (or this one restarted) has seeds of its own.
        Assert.Equal(0, Counted(new PowSeeds(clock), later));
    }

    [Fact]
    public void A_stamp_claiming_no_bits_or_none_counts_for_nothing()
    {
        var seeds = new PowSeeds(new Clock());
        using Identity alice = Identity.Create(), bob = Identity.Create();
        Envelope bare = EnvelopeFormat.Seal(alice, bob.Card, [1], "application/octet-stream", null, DateTimeOffset.UtcNow.AddDays(1));
        Assert.Equal(0, Counted(seeds, bare));
        bare.Pow = new ProofOfWork { Bits = 0, Nonce = 5 };
        Assert.Equal(0, Counted(seeds, bare));
        bare.Pow = new ProofOfWork { Bits = 300, Nonce = 5 }; // no hash has that many zero bits
        Assert.Equal(0, Counted(seeds, bare));
    }
}
