using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using MegaNet.Verify.Simd.Curve;

namespace MegaNet.Verify.Simd;

/// <summary>
/// A bounded, thread-safe, direct-mapped cache of decoded public keys: key bytes → (passes rule 3 and 4, −A in
/// mixed-addition form). Repeat senders skip the square root and the small-order check. Striped locks keep
/// lookups allocation-free; a colliding key simply replaces the slot. Slots come from a hash keyed per process.
/// </summary>
internal sealed class KeyCache
{
    private const int Stripes = 64;
    private readonly Entry[] _entries;
    private readonly object[] _locks;
    private readonly int _mask;

    public KeyCache(int capacity)
    {
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

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
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

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void Add(ReadOnlySpan<byte> key, bool valid, in AffineNielsPoint negatedKey)
    {
        (ulong k0, ulong k1, ulong k2, ulong k3) = Words(key);
        int slot = Slot(k0, k1, k2, k3);
        lock (_locks[slot & (Stripes - 1)])
        {
            _entries[slot] = new Entry { K0 = k0, K1 = k1, K2 = k2, K3 = k3, Occupied = true, Valid = valid, Point = negatedKey };
        }
    }

    /// <summary>A hash of a 32-byte key for direct-mapped tables of attacker-chosen keys (this cache, and the
    /// verifier's per-chunk table of repeated keys).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static int Hash(ReadOnlySpan<byte> key)
    {
        (ulong k0, ulong k1, ulong k2, ulong k3) = Words(key);
        return Hash(k0, k1, k2, k3);
    }

    private int Slot(ulong k0, ulong k1, ulong k2, ulong k3) => Hash(k0, k1, k2, k3) & _mask;

    // Keys are attacker-chosen: HashCode mixes every bit of every word under a seed drawn per process, so which keys
    // share a slot (and evict each other: a square root and a small-order check per item, never a wrong verdict, since
    // all 32 bytes are compared) cannot be worked out offline. A fixed multiply-and-shift left the top bits of each word
    // out of the slot: A and -A (bit 255) always collided.
    private static int Hash(ulong k0, ulong k1, ulong k2, ulong k3) => HashCode.Combine(k0, k1, k2, k3);

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
