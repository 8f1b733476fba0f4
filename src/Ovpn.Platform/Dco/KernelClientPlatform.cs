// SPDX-License-Identifier: MIT
using System.Net.Sockets;
using Ovpn.DataPlane;

namespace Ovpn.Platform.Dco;

/// <summary>
/// Wires <see cref="KernelDataPlane"/> in point-to-point mode (<c>MultiPeer = false</c>, the module's MODE_P2P)
/// for `ovpnas connect --dco kernel|auto`: one ovpn-dco netdev named like the client's TUN (ovpncN), one
/// peer (the server), the client's own UDP socket attached by NEW_PEER.
/// </summary>
/// <remarks>
/// Socket contract: unlike the userspace offload engine, the kernel does not take the socket over. The module
/// installs itself as the socket's UDP encapsulation handler and consumes only DATA_V2 packets of its peer;
/// control packets (and anything else) still reach the socket's receive queue, so the client's own receive
/// loop keeps reading it. The client keeps owning the socket (the kernel holds its own reference while the
/// peer exists) and closes it after disposing the data plane.
/// Keepalive, ping-restart and rekey-due run in the kernel: they come back as SET_PEER-driven DEL_PEER
/// (reason EXPIRED) and KEY_SWAP notifications through <see cref="IDataPlaneEvents"/>.
/// </remarks>
public static class KernelClientPlatform
{
    /// <summary>Name pattern shared with the client's TUN devices (the TUN factory asks the kernel for "ovpnc%d").</summary>
    public const string NamePrefix = "ovpnc";

    /// <summary>Creates the P2P netdev (down, no address yet) for <paramref name="udpSocket"/>; the caller adds the peer and keys.</summary>
    public static KernelDataPlane Create(Socket udpSocket, IDataPlaneEvents events, string? family = null)
    {
        ArgumentNullException.ThrowIfNull(udpSocket);
        if (udpSocket.ProtocolType != ProtocolType.Udp)
        {
            throw new NotSupportedException("the client's kernel data path carries UDP only");
        }

        // The kernel could expand "ovpnc%d" itself, but KernelDataPlane resolves the index by the exact name;
        // a name raced by another process fails RTM_NEWLINK with EEXIST, so try the next one (bounded).
        IOException? last = null;
        for (int attempt = 0; attempt < 4; attempt++)
        {
            string name = FreeInterfaceName();
            try
            {
                return new KernelDataPlane(new KernelDataPlaneOptions
                {
                    InterfaceName = name,
                    UdpSocket = udpSocket,
                    MultiPeer = false,
                    Family = family,
                }, events);
            }
            catch (Netlink.NetlinkException e) when (e.Errno == 17) // EEXIST
            {
                last = e;
            }
        }

        throw new IOException($"no free {NamePrefix}N interface name for the kernel data path: {last?.Message}", last);
    }

    /// <summary>The first ovpncN not present in this network namespace (/sys/class/net is per netns).</summary>
    public static string FreeInterfaceName()
    {
        for (int i = 0; i < 256; i++)
        {
            string name = NamePrefix + i;
            if (!Directory.Exists(Path.Combine("/sys/class/net", name)))
            {
                return name;
            }
        }

        throw new IOException($"no free {NamePrefix}N interface name (ovpnc0..ovpnc255 all exist)");
    }
}
