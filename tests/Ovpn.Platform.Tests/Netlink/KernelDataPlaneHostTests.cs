// SPDX-License-Identifier: MIT
using System.Net;
using System.Net.Sockets;
using Ovpn.DataPlane;
using Ovpn.Platform.Dco;

namespace Ovpn.Platform.Tests.Netlink;

/// <summary>
/// KernelDataPlane on whatever kernel runs the tests. Where no ovpn family exists (most CI hosts, this
/// project's dev host) construction must fail with NotSupportedException naming the reason; where the module
/// is there and we may use it, a device is created and removed again. The full behaviour against real
/// modules is tested in the VM (tests/kernel-dco).
/// </summary>
public class KernelDataPlaneHostTests
{
    private sealed class NoEvents : IDataPlaneEvents
    {
        public void OnPeerDeleted(uint peerId, PeerDeleteReason reason) { }
        public void OnKeyRenegotiationDue(uint peerId, int keyId) { }
        public void OnControlPacket(ILinkTransport link, ReadOnlySpan<byte> packet) { }
        public void OnPeerFloated(uint peerId, ILinkTransport newLink) { }
    }

    [Fact]
    public void Construction_fails_with_the_probe_reason_or_creates_a_device()
    {
        var status = KernelDco.Probe();
        using var udp = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        udp.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        string name = $"kdt{Environment.ProcessId % 100000}";
        var options = new KernelDataPlaneOptions { InterfaceName = name, UdpSocket = udp };
        if (status.FamilyName is null)
        {
            var ex = Assert.Throws<NotSupportedException>(() => new KernelDataPlane(options, new NoEvents()));
            Assert.Contains("module missing", ex.Message);
        }
        else if (!status.Usable)
        {
            Assert.ThrowsAny<Exception>(() => new KernelDataPlane(options, new NoEvents()));
        }
        else
        {
            using var dp = new KernelDataPlane(options, new NoEvents());
            Assert.True(dp.InterfaceIndex > 0);
            Assert.Empty(dp.GetPeers());
        }
    }

    [Fact]
    public void Unknown_family_name_is_refused()
    {
        using var udp = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        var ex = Assert.Throws<NotSupportedException>(() =>
            new KernelDataPlane(new KernelDataPlaneOptions { InterfaceName = "kdtx", UdpSocket = udp, Family = "ovpn-dco" }, new NoEvents()));
        Assert.Contains("unknown kernel DCO family", ex.Message);
    }

    [Fact]
    public void Tcp_socket_is_refused()
    {
        using var tcp = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        var ex = Assert.Throws<NotSupportedException>(() =>
            new KernelDataPlane(new KernelDataPlaneOptions { InterfaceName = "kdtx", UdpSocket = tcp }, new NoEvents()));
        Assert.Contains("UDP only", ex.Message);
    }
}
