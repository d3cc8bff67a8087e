using System.Numerics;
using System.Security.Cryptography;
using static MegaNet.Core.Ed25519.Ed25519Reference;

namespace MegaNet.Core.Ed25519;

/// <summary>What a generated case exercises.</summary>
public enum SignatureCaseKind
{
    /// <summary>A valid signature by a random key of the generator.</summary>
    Valid,
    /// <summary>One bit of R flipped.</summary>
    FlipR,
    /// <summary>One bit of S flipped.</summary>
    FlipS,
    /// <summary>One bit of the public key flipped.</summary>
    FlipA,
    /// <summary>One bit of the message flipped.</summary>
    FlipM,
    /// <summary>S replaced by S + L (rule 2: S must be below L).</summary>
    SPlusL,
    /// <summary>R of a valid signature replaced by an encoding with y ≥ p (y − p in 0 .. 18, either sign; rule 3). The
    /// challenge changes with R, so the equation fails as well: see <see cref="NonCanonicalREquationHolds"/>.</summary>
    NonCanonicalR,
    /// <summary>The key of a valid signature replaced by an encoding with y ≥ p (y − p in 0 .. 18, either sign; rule 3).
    /// The equation fails as well: see <see cref="NonCanonicalAEquationHolds"/>.</summary>
    NonCanonicalA,
    /// <summary>R of a valid signature replaced by a point of small order (rule 4); the equation fails as well: see
    /// <see cref="SmallOrderREquationHolds"/>.</summary>
    SmallOrderR,
    /// <summary>The key of a valid signature replaced by a point of small order (rule 4); the equation fails as well:
    /// see <see cref="SmallOrderAEquationHolds"/>.</summary>
    SmallOrderA,
    /// <summary>A = aB + T with T a torsion point; the equation holds exactly.</summary>
    MixedOrderA,
    /// <summary>The equation leaves a torsion residue: the cofactored rule accepts, a cofactorless one may not.</summary>
    TorsionResidue,
    /// <summary>R not on the curve (no square root).</summary>
    NotOnCurveR,
    /// <summary>A valid signature by the generator's first key (many items share it).</summary>
    DuplicateKeyValid,
    /// <summary>An invalid signature by the generator's first key.</summary>
    DuplicateKeyInvalid,
    /// <summary>A = aB + T with T a torsion point, the same A for every item of this kind from one generator, with or
    /// without a torsion residue: the cofactored rule accepts each (batch equations that merge one key's items into one
    /// term reduce that term's scalar mod L, which moves it by a torsion point only).</summary>
    SharedMixedOrderA,
    /// <summary>A is one of the eight points of small order (each in turn, the identity first), R = [r]B and S = r, so
    /// [S]B − R − [k]A = −[k]A is of small order and the cofactored equation holds: rule 4 alone refuses the item.</summary>
    SmallOrderAEquationHolds,
    /// <summary>A = aB, R is one of the eight points of small order (each in turn) and S = k·a mod L, so the cofactored
    /// equation holds: rule 4 alone refuses the item.</summary>
    SmallOrderREquationHolds,
    /// <summary>As <see cref="SmallOrderAEquationHolds"/> with A one of the non-canonical encodings of small-order points
    /// (<see cref="SignatureCaseGenerator.NonCanonicalSmallOrderEncodings"/>, each in turn: −0, y = p + 1, y = p): rules 3
    /// and 4 refuse it, and rule 3 alone where rule 4 compares encodings with the eight canonical ones (no non-canonical
    /// encoding of a point of large order can be given an equation that holds).</summary>
    NonCanonicalAEquationHolds,
    /// <summary>As <see cref="SmallOrderREquationHolds"/> with R one of the non-canonical encodings of small-order points
    /// (each in turn): rules 3 and 4 refuse it.</summary>
    NonCanonicalREquationHolds,
}

/// <summary>One generated item and what it exercises.</summary>
public sealed record SignatureCase(SignatureCaseKind Kind, byte[] PublicKey, byte[] Signature, byte[] Message);

/// <summary>
/// Seeded generator of valid and adversarial Ed25519 items. Valid items are signed by libsodium from seeded keys;
/// torsion cases are built with the reference's point arithmetic (A = aB + T, R = rB + T', S = r + k·a mod L).
/// Shared by the test suite and <c>meganet bench --check</c>, so every backend meets the same adversarial items;
/// the expected verdict of each is the reference's (<see cref="Ed25519Reference.Verify"/>).
/// </summary>
public sealed class SignatureCaseGenerator
{
    private static readonly Lazy<Point[]> TorsionPoints = new(BuildTorsion);
    private static readonly byte[][] NonCanonicalSmallOrder =
        [WithSign(BigInteger.One), WithSign(P - 1), ToLittleEndian(P + 1), WithSign(P + 1), ToLittleEndian(P), WithSign(P)];
    private readonly Random _random;
    private readonly List<(byte[] Pk, byte[] Sk)> _keys = [];
    private readonly Dictionary<SignatureCaseKind, int> _variants = [];
    private (BigInteger A, int TorsionA)? _sharedMixedOrderKey;
    private int? _messageLength;
    private byte[]? _message;

    /// <summary>Creates a generator whose items depend only on <paramref name="seed"/>.</summary>
    public SignatureCaseGenerator(int seed, int distinctKeys = 64)
    {
        _random = new Random(seed);
        for (int i = 0; i < distinctKeys; i++)
        {
            byte[] seedBytes = new byte[32];
            _random.NextBytes(seedBytes);
            byte[] pk = new byte[32], sk = new byte[64];
            Ed25519Signer.KeyPairFromSeed(seedBytes, pk, sk);
            _keys.Add((pk, sk));
        }
    }

    /// <summary>The eight points of small order, [i]T8 for a point T8 of order 8.</summary>
    public static IReadOnlyList<Point> Torsion => TorsionPoints.Value;

    /// <summary>Encodings of the eight small-order points.</summary>
    public static IEnumerable<byte[]> SmallOrderEncodings => Torsion.Select(Encode);

    /// <summary>
    /// The six non-canonical encodings of small-order points: −0 (x = 0 with the sign bit set) of the identity (y = 1)
    /// and of (0, −1) (y = p − 1); y = p + 1 (the identity) and y = p (a point of order 4, y = 0), each with either sign.
    /// The other encodings with y ≥ p (y − p in 2 .. 18) are off the curve or points of unknown discrete log, so no item
    /// whose equation holds can be built on them.
    /// </summary>
    public static IEnumerable<byte[]> NonCanonicalSmallOrderEncodings => NonCanonicalSmallOrder.Select(e => (byte[])e.Clone());

    /// <summary>The next item of the given kind.</summary>
    public SignatureCase Next(SignatureCaseKind kind)
    {
        switch (kind)
        {
            case SignatureCaseKind.Valid:
            case SignatureCaseKind.DuplicateKeyValid:
                return Valid(kind, _keys[kind == SignatureCaseKind.DuplicateKeyValid ? 0 : _random.Next(_keys.Count)]);
            case SignatureCaseKind.DuplicateKeyInvalid:
            {
                SignatureCase c = Valid(kind, _keys[0]);
                c.Message.AsSpan().Reverse();
                c.Signature[40] ^= 0x10;
                return c;
            }

            case SignatureCaseKind.FlipR:
                return Flip(kind, c => c.Signature, 0, 32);
            case SignatureCaseKind.FlipS:
                return Flip(kind, c => c.Signature, 32, 32);
            case SignatureCaseKind.FlipA:
                return Flip(kind, c => c.PublicKey, 0, 32);
            case SignatureCaseKind.FlipM:
            {
                SignatureCase c = Valid(kind, RandomKey(), minMessage: 1);
                c.Message[_random.Next(c.Message.Length)] ^= (byte)(1 << _random.Next(8));
                return c;
            }

            case SignatureCaseKind.SPlusL:
            {
                SignatureCase c = Valid(kind, RandomKey());
                BigInteger s = FromLittleEndian(c.Signature.AsSpan(32)) + L;
                ToLittleEndian(s).CopyTo(c.Signature, 32);
                return c;
            }

            case SignatureCaseKind.NonCanonicalR:
            case SignatureCaseKind.NonCanonicalA:
            {
                // y + p for y in [0, 18] is a 255-bit encoding of a valid y: non-canonical, must be rejected.
                SignatureCase c = Valid(kind, RandomKey());
                byte[] enc = ToLittleEndian(P + _random.Next(19));
                if (_random.Next(2) == 1)
                {
                    enc[31] |= 0x80;
                }

                enc.CopyTo(kind == SignatureCaseKind.NonCanonicalR ? c.Signature : c.PublicKey, 0);
                return c;
            }

            case SignatureCaseKind.SmallOrderR:
            case SignatureCaseKind.SmallOrderA:
            {
                SignatureCase c = Valid(kind, RandomKey());
                Encode(Torsion[_random.Next(8)]).CopyTo(kind == SignatureCaseKind.SmallOrderR ? c.Signature : c.PublicKey, 0);
                return c;
            }

            case SignatureCaseKind.MixedOrderA:
                return Torsioned(kind, torsionA: 1 + _random.Next(7), torsionR: 0, cancel: true);
            case SignatureCaseKind.TorsionResidue:
                return Torsioned(kind, torsionA: _random.Next(8), torsionR: 1 + _random.Next(7), cancel: false);
            case SignatureCaseKind.SharedMixedOrderA:
            {
                _sharedMixedOrderKey ??= (RandomScalar(), 1 + _random.Next(7));
                bool cancel = _random.Next(2) == 0;
                return Torsioned(kind, _sharedMixedOrderKey.Value.TorsionA, torsionR: cancel ? 0 : 1 + _random.Next(7), cancel, _sharedMixedOrderKey.Value.A);
            }

            case SignatureCaseKind.NotOnCurveR:
            {
                SignatureCase c = Valid(kind, RandomKey());
                byte[] enc;
                do
                {
                    enc = new byte[32];
                    _random.NextBytes(enc);
                    enc[31] &= 0x7F;
                }
                while (TryDecode(enc, out _) || FromLittleEndian(enc) >= P);

                enc.CopyTo(c.Signature, 0);
                return c;
            }

            case SignatureCaseKind.SmallOrderAEquationHolds:
                return SmallOrderKey(kind, Encode(Torsion[NextVariant(kind, Torsion.Count)]));
            case SignatureCaseKind.NonCanonicalAEquationHolds:
                return SmallOrderKey(kind, (byte[])NonCanonicalSmallOrder[NextVariant(kind, NonCanonicalSmallOrder.Length)].Clone());
            case SignatureCaseKind.SmallOrderREquationHolds:
                return SmallOrderNonce(kind, Encode(Torsion[NextVariant(kind, Torsion.Count)]));
            case SignatureCaseKind.NonCanonicalREquationHolds:
                return SmallOrderNonce(kind, (byte[])NonCanonicalSmallOrder[NextVariant(kind, NonCanonicalSmallOrder.Length)].Clone());

            default:
                throw new ArgumentOutOfRangeException(nameof(kind), kind, null);
        }
    }

    /// <summary>The next item of the given kind with a message of <paramref name="messageLength"/> bytes (the other items
    /// have up to 200): for backends that treat long messages apart, as the GPU does those over 16 KiB.</summary>
    public SignatureCase Next(SignatureCaseKind kind, int messageLength)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(messageLength, kind == SignatureCaseKind.FlipM ? 1 : 0); // a bit to flip
        _messageLength = messageLength;
        try
        {
            return Next(kind);
        }
        finally
        {
            _messageLength = null;
        }
    }

    /// <summary>The next item of the given kind over <paramref name="message"/> (a kind that changes the message, as
    /// <see cref="SignatureCaseKind.FlipM"/> does, changes a copy): for signatures over a protocol's own bytes, such as
    /// a tree head's.</summary>
    public SignatureCase Next(SignatureCaseKind kind, byte[] message)
    {
        ArgumentNullException.ThrowIfNull(message);
        ArgumentOutOfRangeException.ThrowIfLessThan(message.Length, kind == SignatureCaseKind.FlipM ? 1 : 0);
        _message = message;
        try
        {
            return Next(kind);
        }
        finally
        {
            _message = null;
        }
    }

    /// <summary>A mix: mostly valid, with every adversarial kind sprinkled in.</summary>
    public SignatureCase NextMixed(double invalidShare = 0.25)
    {
        if (_random.NextDouble() >= invalidShare)
        {
            return Next(_random.Next(8) == 0 ? SignatureCaseKind.DuplicateKeyValid : SignatureCaseKind.Valid);
        }

        SignatureCaseKind[] kinds = Enum.GetValues<SignatureCaseKind>();
        return Next(kinds[1 + _random.Next(kinds.Length - 1)]);
    }

    private (byte[] Pk, byte[] Sk) RandomKey() => _keys[_random.Next(_keys.Count)];

    // Kinds that cycle through a short list of encodings give each in turn, so a dozen items of the kind cover them all.
    private int NextVariant(SignatureCaseKind kind, int count)
    {
        int n = _variants.GetValueOrDefault(kind);
        _variants[kind] = n + 1;
        return n % count;
    }

    private static byte[] WithSign(BigInteger y)
    {
        byte[] encoding = ToLittleEndian(y);
        encoding[31] |= 0x80;
        return encoding;
    }

    /// <summary>Key <paramref name="aEncoding"/> (a small-order point), R = [r]B, S = r: [S]B − R − [k]A = −[k]A is of small
    /// order whatever k is, so the cofactored equation holds and only rules 3 and 4 can refuse the item.</summary>
    private SignatureCase SmallOrderKey(SignatureCaseKind kind, byte[] aEncoding)
    {
        BigInteger r = RandomScalar();
        byte[] signature = new byte[64];
        Encode(ScalarMultiply(r, B)).CopyTo(signature, 0);
        ToLittleEndian(r).CopyTo(signature, 32);
        return new SignatureCase(kind, aEncoding, signature, RandomMessage());
    }

    /// <summary>R = <paramref name="rEncoding"/> (a small-order point), A = aB, S = k·a mod L: [S]B − R − [k]A = −R is of
    /// small order, so the cofactored equation holds and only rules 3 and 4 can refuse the item.</summary>
    private SignatureCase SmallOrderNonce(SignatureCaseKind kind, byte[] rEncoding)
    {
        BigInteger a = RandomScalar();
        byte[] aEncoding = Encode(ScalarMultiply(a, B));
        byte[] message = RandomMessage();
        byte[] signature = new byte[64];
        rEncoding.CopyTo(signature, 0);
        ToLittleEndian(ComputeK(rEncoding, aEncoding, message) * a % L).CopyTo(signature, 32);
        return new SignatureCase(kind, aEncoding, signature, message);
    }

    private byte[] RandomMessage()
    {
        if (_message is not null)
        {
            return (byte[])_message.Clone();
        }

        byte[] message = new byte[_messageLength ?? _random.Next(0, 64)];
        _random.NextBytes(message);
        return message;
    }

    private SignatureCase Valid(SignatureCaseKind kind, (byte[] Pk, byte[] Sk) key, int minMessage = 0)
    {
        byte[] message = _message is not null ? (byte[])_message.Clone() : new byte[_messageLength ?? _random.Next(minMessage, 200)];
        if (_message is null)
        {
            _random.NextBytes(message);
        }
        byte[] signature = new byte[64];
        Ed25519Signer.Sign(key.Sk, message, signature);
        return new SignatureCase(kind, (byte[])key.Pk.Clone(), signature, message);
    }

    private SignatureCase Flip(SignatureCaseKind kind, Func<SignatureCase, byte[]> target, int offset, int length)
    {
        SignatureCase c = Valid(kind, RandomKey());
        target(c)[offset + _random.Next(length)] ^= (byte)(1 << _random.Next(8));
        return c;
    }

    /// <summary>A = aB + [ta]T8, R = rB + [tr]T8, S = r + k·a mod L. With <paramref name="cancel"/> the residue is
    /// made to vanish without the cofactor when possible, so libsodium also accepts; otherwise the residue is a
    /// torsion point: MegaNet's rule accepts, the cofactorless rule rejects unless the residue happens to be zero.
    /// <paramref name="secret"/> is a, when the key is given (else drawn).</summary>
    private SignatureCase Torsioned(SignatureCaseKind kind, int torsionA, int torsionR, bool cancel, BigInteger? secret = null)
    {
        byte[] message = RandomMessage();
        BigInteger a = secret ?? RandomScalar();
        BigInteger r = RandomScalar();
        Point aPoint = Add(ScalarMultiply(a, B), Torsion[torsionA]);
        byte[] aEnc = Encode(aPoint);
        byte[] rEnc = Encode(Add(ScalarMultiply(r, B), Torsion[torsionR]));
        BigInteger k = ComputeK(rEnc, aEnc, message);
        while (cancel && (torsionR + k * torsionA) % 8 != 0)
        {
            // Exact equation wanted: R = [S]B − [k]A = rB − [k·ta]T8, i.e. tr ≡ −k·ta (mod 8). k depends on R, so
            // draw new (r, tr) until the congruence holds (one try in eight on average).
            r = RandomScalar();
            torsionR = _random.Next(8);
            rEnc = Encode(Add(ScalarMultiply(r, B), Torsion[torsionR]));
            k = ComputeK(rEnc, aEnc, message);
        }

        BigInteger s = (r + k * a) % L;
        byte[] signature = new byte[64];
        rEnc.CopyTo(signature, 0);
        ToLittleEndian(s).CopyTo(signature, 32);
        return new SignatureCase(kind, aEnc, signature, message);
    }

    private BigInteger RandomScalar()
    {
        byte[] bytes = new byte[64];
        _random.NextBytes(bytes);
        return FromLittleEndian(bytes) % L;
    }

    private static Point[] BuildTorsion()
    {
        // A point of order 8 (RFC 8032 / libsodium blocklist encoding).
        byte[] enc = Convert.FromHexString("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05");
        if (!TryDecode(enc, out Point t8))
        {
            throw new InvalidOperationException("Order-8 point failed to decode.");
        }

        var points = new Point[8];
        points[0] = Identity;
        for (int i = 1; i < 8; i++)
        {
            points[i] = Add(points[i - 1], t8);
        }

        return points;
    }
}
