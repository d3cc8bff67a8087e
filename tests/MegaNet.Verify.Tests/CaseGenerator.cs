using System.Numerics;
using System.Security.Cryptography;
using MegaNet.Core.Ed25519;
using static MegaNet.Core.Ed25519.Ed25519Reference;

namespace MegaNet.Verify.Tests;

/// <summary>What a generated case exercises.</summary>
public enum CaseKind
{
    Valid,
    FlipR,
    FlipS,
    FlipA,
    FlipM,
    SPlusL,
    NonCanonicalR,
    NonCanonicalA,
    SmallOrderR,
    SmallOrderA,
    MixedOrderA,
    TorsionResidue,
    NotOnCurveR,
    DuplicateKeyValid,
    DuplicateKeyInvalid,
}

/// <summary>One generated item.</summary>
public sealed record Case(CaseKind Kind, byte[] PublicKey, byte[] Signature, byte[] Message);

/// <summary>
/// Seeded generator of valid and adversarial Ed25519 items. Valid items are signed by libsodium from seeded keys;
/// torsion cases are built with the reference's point arithmetic (A = aB + T, R = rB + T', S = r + k·a mod L).
/// </summary>
public sealed class CaseGenerator
{
    private static readonly Lazy<Point[]> TorsionPoints = new(BuildTorsion);
    private readonly Random _random;
    private readonly List<(byte[] Pk, byte[] Sk)> _keys = [];

    public CaseGenerator(int seed, int distinctKeys = 64)
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

    public Case Next(CaseKind kind)
    {
        switch (kind)
        {
            case CaseKind.Valid:
            case CaseKind.DuplicateKeyValid:
                return Valid(kind, _keys[kind == CaseKind.DuplicateKeyValid ? 0 : _random.Next(_keys.Count)]);
            case CaseKind.DuplicateKeyInvalid:
            {
                Case c = Valid(kind, _keys[0]);
                c.Message.AsSpan().Reverse();
                c.Signature[40] ^= 0x10;
                return c;
            }

            case CaseKind.FlipR:
                return Flip(kind, c => c.Signature, 0, 32);
            case CaseKind.FlipS:
                return Flip(kind, c => c.Signature, 32, 32);
            case CaseKind.FlipA:
                return Flip(kind, c => c.PublicKey, 0, 32);
            case CaseKind.FlipM:
            {
                Case c = Valid(kind, RandomKey(), minMessage: 1);
                c.Message[_random.Next(c.Message.Length)] ^= (byte)(1 << _random.Next(8));
                return c;
            }

            case CaseKind.SPlusL:
            {
                Case c = Valid(kind, RandomKey());
                BigInteger s = FromLittleEndian(c.Signature.AsSpan(32)) + L;
                ToLittleEndian(s).CopyTo(c.Signature, 32);
                return c;
            }

            case CaseKind.NonCanonicalR:
            case CaseKind.NonCanonicalA:
            {
                // y + p for y in [0, 18] is a 255-bit encoding of a valid y: non-canonical, must be rejected.
                Case c = Valid(kind, RandomKey());
                byte[] enc = ToLittleEndian(P + _random.Next(19));
                if (_random.Next(2) == 1)
                {
                    enc[31] |= 0x80;
                }

                enc.CopyTo(kind == CaseKind.NonCanonicalR ? c.Signature : c.PublicKey, 0);
                return c;
            }

            case CaseKind.SmallOrderR:
            case CaseKind.SmallOrderA:
            {
                Case c = Valid(kind, RandomKey());
                Encode(Torsion[_random.Next(8)]).CopyTo(kind == CaseKind.SmallOrderR ? c.Signature : c.PublicKey, 0);
                return c;
            }

            case CaseKind.MixedOrderA:
                return Torsioned(kind, torsionA: 1 + _random.Next(7), torsionR: 0, cancel: true);
            case CaseKind.TorsionResidue:
                return Torsioned(kind, torsionA: _random.Next(8), torsionR: 1 + _random.Next(7), cancel: false);
            case CaseKind.NotOnCurveR:
            {
                Case c = Valid(kind, RandomKey());
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

            default:
                throw new ArgumentOutOfRangeException(nameof(kind), kind, null);
        }
    }

    /// <summary>A mix: mostly valid, with every adversarial kind sprinkled in.</summary>
    public Case NextMixed(double invalidShare = 0.25)
    {
        if (_random.NextDouble() >= invalidShare)
        {
            return Next(_random.Next(8) == 0 ? CaseKind.DuplicateKeyValid : CaseKind.Valid);
        }

        CaseKind[] kinds = Enum.GetValues<CaseKind>();
        return Next(kinds[1 + _random.Next(kinds.Length - 1)]);
    }

    private (byte[] Pk, byte[] Sk) RandomKey() => _keys[_random.Next(_keys.Count)];

    private Case Valid(CaseKind kind, (byte[] Pk, byte[] Sk) key, int minMessage = 0)
    {
        byte[] message = new byte[_random.Next(minMessage, 200)];
        _random.NextBytes(message);
        byte[] signature = new byte[64];
        Ed25519Signer.Sign(key.Sk, message, signature);
        return new Case(kind, (byte[])key.Pk.Clone(), signature, message);
    }

    private Case Flip(CaseKind kind, Func<Case, byte[]> target, int offset, int length)
    {
        Case c = Valid(kind, RandomKey());
        target(c)[offset + _random.Next(length)] ^= (byte)(1 << _random.Next(8));
        return c;
    }

    /// <summary>A = aB + [ta]T8, R = rB + [tr]T8, S = r + k·a mod L. With <paramref name="cancel"/> the residue is
    /// made to vanish without the cofactor when possible, so libsodium also accepts; otherwise the residue is a
    /// torsion point: MegaNet's rule accepts, the cofactorless rule rejects unless the residue happens to be zero.</summary>
    private Case Torsioned(CaseKind kind, int torsionA, int torsionR, bool cancel)
    {
        byte[] message = new byte[_random.Next(0, 64)];
        _random.NextBytes(message);
        BigInteger a = RandomScalar();
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
        return new Case(kind, aEnc, signature, message);
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

/// <summary>A cryptographically random seed for a test run, printed so a failure can be replayed.</summary>
public static class TestSeed
{
    public static int Next() => Environment.GetEnvironmentVariable("MEGANET_TEST_SEED") is { } s ? int.Parse(s, System.Globalization.CultureInfo.InvariantCulture) : RandomNumberGenerator.GetInt32(int.MaxValue);
}
