// SPDX-License-Identifier: MIT
using System.Net;
using System.Net.Sockets;

namespace Ovpn.DataPlane.Transport;

/// <summary>A remote UDP address reached through a shared server socket. Immutable; thread-safe.</summary>
public sealed class UdpLinkTransport : ILinkTransport
{
    private readonly Socket _socket;
    private readonly SocketAddress _remote;

    public UdpLinkTransport(Socket socket, SocketAddress remote)
    {
        _socket = socket;
        // Copy: the receive loop reuses its SocketAddress instance.
        _remote = new SocketAddress(remote.Family, remote.Size);
        remote.Buffer.Span.CopyTo(_remote.Buffer.Span);
        Remote = socket.AddressFamily == AddressFamily.InterNetworkV6
            ? new IPEndPoint(IPAddress.IPv6Any, 0).Create(_remote)
            : new IPEndPoint(IPAddress.Any, 0).Create(_remote);
        if (Remote is IPEndPoint ep && ep.Address.IsIPv4MappedToIPv6)
        {
            Remote = new IPEndPoint(ep.Address.MapToIPv4(), ep.Port);
        }
    }

    public SocketAddress Address => _remote;

    public EndPoint Remote { get; }

    public bool IsTcp => false;

    public void Send(ReadOnlySpan<byte> packet)
    {
        try
        {
            _socket.SendTo(packet, SocketFlags.None, _remote);
        }
        catch (SocketException)
        {
            // UDP send errors (ICMP unreachable reported late, buffer full) are not fatal: the packet is lost,
            // as it could be on the wire; the reliability layer and keepalives deal with it.
        }
        catch (ObjectDisposedException)
        {
        }
    }

    public string Describe() => $"udp:{Remote}";

    public void Close()
    {
    }

    public override string ToString() => Describe();
}
