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
    /// <summary>The client address of <paramref name="endPoint"/>; null for anything but IP (a Unix socket).</summary>
    public static ClientAddress? From(EndPoint? endPoint) => endPoint is IPEndPoint ip ? From(ip.Address) : null;

    /// <summary>The client address of <paramref name="address"/>; null when there is none.</summary>
    public static ClientAddress? From(IPAddress? address)
    {
        if (address is null)
        {
            return null;
        }

        if (address.IsIPv4MappedToIPv6)
        {
            address = address.MapToIPv4();
        }

        Span<byte> bytes = stackalloc byte[16];
        if (!address.TryWriteBytes(bytes, out int written))
        {
            return null;
        }

        return address.AddressFamily == AddressFamily.InterNetwork
            ? new ClientAddress(0, BinaryPrimitives.ReadUInt32BigEndian(bytes[..written]))
            : new ClientAddress(BinaryPrimitives.ReadUInt64BigEndian(bytes), ulong.MaxValue); // /64; a Host of all ones tells it from IPv4
    }
}
