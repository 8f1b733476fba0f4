// SPDX-License-Identifier: MIT
using System.Net;
using System.Net.Sockets;
using Ovpn.DataPlane;
using Ovpn.DataPlane.Transport;
using Ovpn.Platform.Dco;

namespace Ovpn.Platform.Tests.Netlink;

/// <summary>Host-independent properties of the probe and of the offload checks (the real module is tested in the VM, tests/kernel-dco).</summary>
public class KernelDcoProbeTests
{
    [Fact]
    public void Probe_is_consistent_and_explains_unusable()
    {
        var s = KernelDco.Probe();
        if (s.Usable)
        {
            Assert.Contains(s.FamilyName, new[] { "ovpn-dco-v2", "ovpn" });
            Assert.Equal(1u, s.FamilyVersion);
            Assert.True(s.HasCapNetAdmin);
            Assert.Null(s.Reason);
        }
        else
        {
            Assert.False(string.IsNullOrWhiteSpace(s.Reason));
            Assert.Contains(s.Reason!, s.ToString());
            // If the family is missing, the reason says so, not something about capabilities.
            if (s.FamilyName is null)
                Assert.Contains("module missing", s.Reason);
        }
    }

    [Fact]
    public void Probe_reports_capability_from_proc()
    {
        var s = KernelDco.Probe();
        string capEff = File.ReadLines("/proc/self/status").First(l => l.StartsWith("CapEff:", StringComparison.Ordinal));
        bool expected = ((Convert.ToUInt64(capEff[7..].Trim(), 16) >> 12) & 1) != 0;
        Assert.Equal(expected, s.HasCapNetAdmin);
    }

    [Fact]
    public void Offload_blockers_are_reported_before_any_kernel_call()
    {
        using var sock = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        var link = new UdpLinkTransport(sock, new IPEndPoint(IPAddress.Loopback, 1194).Serialize());
        var ok = new PeerConfig(1, link, IPAddress.Parse("172.27.224.2"), null);
        Assert.Null(KernelDataPlane.OffloadBlocker(ok));
        Assert.Equal("client does not support DATA_V2 (peer-id)", KernelDataPlane.OffloadBlocker(ok with { DataV2 = false }));
        Assert.Equal("client uses compression framing", KernelDataPlane.OffloadBlocker(ok with { Compression = CompressionStub.StubV2 }));
    }
}
