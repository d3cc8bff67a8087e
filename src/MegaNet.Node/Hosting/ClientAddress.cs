using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;

namespace MegaNet.Node.Hosting;

/// <summary>
/// What the node counts a client under: an IPv4 address (IPv4-mapped IPv6 included), or an IPv6 /64, the block one
/// host or one home usually holds. Connection caps and the forgery lane of admission key on it.
/// </summary>
public readonly record struct ClientAddress(ulong Prefix, ulong Host)
{
    // Host of an IPv6 /64 and of an IPv6 /48: never an IPv4 address (those are below 2^32), and a /48 never equals
    // one of its /64s, even the one whose last 16 prefix bits are zero.
    private const ulong Slash64 = ulong.MaxValue;
    private const ulong Slash48 = ulong.MaxValue - 1;

    /// <summary>True for an IPv6 block, false for an IPv4 address.</summary>
    public bool IsIPv6 => Host >= Slash48;

    /// <summary>The site this address belongs to: for IPv6 its /48 (what one customer usually holds, 65,536 /64s),
    /// for IPv4 the address itself. Limits that an attacker must not multiply by hopping /64s key on it.</summary>
    public ClientAddress Site => IsIPv6 ? new ClientAddress(Prefix & 0xFFFF_FFFF_FFFF_0000, Slash48) : this;

    /// <summary>The client address of <paramref name="endPoint"/>; null for anything but IP (a Unix socket).</summary>
    public static ClientAddress? From(EndPoint? endPoint) => endPoint is IPEndPoint ip ? From(ip.Address) : null;

    /// <summary>The client address of <paramref name="address"/>; null when there is none.</summary>
    public static ClientAddress? From(IPAddress? address)
    {
        if (address is null)
        {
            return null;
        }

        Span<byte> bytes = stackalloc byte[16];
        if (!address.TryWriteBytes(bytes, out int written))
        {
            return null;
        }

        // An IPv4 client of a dual-stack listener arrives as ::ffff:a.b.c.d: read from its last four bytes, not through
        // MapToIPv4, which allocated an IPAddress per call.
        return address.AddressFamily == AddressFamily.InterNetwork
            ? new ClientAddress(0, BinaryPrimitives.ReadUInt32BigEndian(bytes[..written]))
            : address.IsIPv4MappedToIPv6
                ? new ClientAddress(0, BinaryPrimitives.ReadUInt32BigEndian(bytes[12..16]))
                : new ClientAddress(BinaryPrimitives.ReadUInt64BigEndian(bytes), Slash64);
    }
}
