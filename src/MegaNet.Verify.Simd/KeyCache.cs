using System.Buffers.Binary;
using MegaNet.Verify.Simd.Curve;

namespace MegaNet.Verify.Simd;

/// <summary>
/// A bounded, thread-safe, direct-mapped cache of decoded public keys: key bytes → (passes rule 3 and 4, −A in
/// mixed-addition form). Repeat senders skip the square root and the small-order check. Striped locks keep
/// lookups allocation-free; a colliding key simply replaces the slot. Slots come from a hash keyed per cache.
/// </summary>
internal sealed class KeyCache
{
    private const int Stripes = 64;
    private readonly Entry[] _entries;
    private readonly object[] _locks;
    private readonly int _mask;

    // Drawn per cache: keys are attacker-chosen, and with fixed constants anyone could grind offline keys that share an
    // honest sender's slot and keep evicting it (a square root and a small-order check per item; never a wrong
    // verdict, since the full 32 bytes are compared).
    private readonly ulong _s0, _s1, _s2, _s3;
    private readonly ulong _m0, _m1, _m2, _m3;

    public KeyCache(int capacity)
    {
        Span<ulong> random = stackalloc ulong[8];
        System.Security.Cryptography.RandomNumberGenerator.Fill(System.Runtime.InteropServices.MemoryMarshal.AsBytes(random));
        (_s0, _s1, _s2, _s3) = (random[0], random[1], random[2], random[3]);
        (_m0, _m1, _m2, _m3) = (random[4] | 1, random[5] | 1, random[6] | 1, random[7] | 1);

        int size = 1;
        while (size < capacity)
        {
            size <<= 1;
        }

        _entries = new Entry[size];
        _mask = size - 1;
        _locks = new object[Stripes];
        for (int i = 0; i < Stripes; i++)
        {
            _locks[i] = new object();
        }
    }

    public bool TryGet(ReadOnlySpan<byte> key, out bool valid, out AffineNielsPoint negatedKey)
    {
        (ulong k0, ulong k1, ulong k2, ulong k3) = Words(key);
        int slot = Slot(k0, k1, k2, k3);
        lock (_locks[slot & (Stripes - 1)])
        {
            ref Entry e = ref _entries[slot];
            if (e.Occupied && e.K0 == k0 && e.K1 == k1 && e.K2 == k2 && e.K3 == k3)
            {
                valid = e.Valid;
                negatedKey = e.Point;
                return true;
            }
        }

        valid = false;
        negatedKey = default;
        return false;
    }

    public void Add(ReadOnlySpan<byte> key, bool valid, in AffineNielsPoint negatedKey)
    {
        (ulong k0, ulong k1, ulong k2, ulong k3) = Words(key);
        int slot = Slot(k0, k1, k2, k3);
        lock (_locks[slot & (Stripes - 1)])
        {
            _entries[slot] = new Entry { K0 = k0, K1 = k1, K2 = k2, K3 = k3, Occupied = true, Valid = valid, Point = negatedKey };
        }
    }

    private int Slot(ulong k0, ulong k1, ulong k2, ulong k3)
    {
        // Every word, under this cache's secret seeds and odd multipliers, so which keys share a slot cannot be
        // worked out offline.
        ulong h = ((k0 ^ _s0) * _m0) ^ ((k1 ^ _s1) * _m1) ^ ((k2 ^ _s2) * _m2) ^ ((k3 ^ _s3) * _m3);
        return (int)((h ^ (h >> 29)) & (ulong)_mask);
    }

    private static (ulong, ulong, ulong, ulong) Words(ReadOnlySpan<byte> key) => (
        BinaryPrimitives.ReadUInt64LittleEndian(key),
        BinaryPrimitives.ReadUInt64LittleEndian(key[8..]),
        BinaryPrimitives.ReadUInt64LittleEndian(key[16..]),
        BinaryPrimitives.ReadUInt64LittleEndian(key[24..]));

    private struct Entry
    {
        public ulong K0, K1, K2, K3;
        public bool Occupied, Valid;
        public AffineNielsPoint Point;
    }
}
