using System.Buffers.Binary;

namespace MegaNet.Node.Admission;

/// <summary>A 32-byte key (a sending key, an address) as a dictionary key without an array; hashed with
/// <see cref="HashCode"/>'s per-process seed, so chosen keys cannot pile into one bucket.</summary>
internal readonly record struct Key256(ulong A, ulong B, ulong C, ulong D)
{
    public static Key256 From(ReadOnlySpan<byte> key) => new(
        BinaryPrimitives.ReadUInt64LittleEndian(key),
        BinaryPrimitives.ReadUInt64LittleEndian(key[8..]),
        BinaryPrimitives.ReadUInt64LittleEndian(key[16..]),
        BinaryPrimitives.ReadUInt64LittleEndian(key[24..]));

    public override int GetHashCode() => HashCode.Combine(A, B, C, D);
}
