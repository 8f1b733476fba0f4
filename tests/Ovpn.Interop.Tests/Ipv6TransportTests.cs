// SPDX-License-Identifier: MIT
using Ovpn.Testing;

namespace Ovpn.Interop.Tests;

/// <summary>The server listens dual-stack: a client reaches it over IPv6 transport too.</summary>
public sealed class Ipv6TransportTests
{
    [RequiresTheory(Requirement.Root, Requirement.Tun, Requirement.OpenVpn)]
    [InlineData("udp6")]
    [InlineData("tcp6-client")]
    public async Task StockClientConnectsOverIpv6(string proto)
    {
        await using var s = ServerUnderTest.Create();
        s.ServerNs.ExecChecked("ip", "-6", "addr", "add", "fd00:77::1/64", "dev", s.ServerNs.VethName!, "nodad");
        s.ClientNs.ExecChecked("ip", "-6", "addr", "add", "fd00:77::2/64", "dev", s.ClientNs.VethName!, "nodad");
        await s.StartAsync();
        string config = s.ClientConfig("alice", "udp")
            .Replace($"remote {s.ServerLinkAddress} 1194 udp", $"remote fd00:77::1 {(proto == "udp6" ? 1194 : 443)} {proto}", StringComparison.Ordinal);
        await using var client = OpenVpnProcess.Start(s.ClientNs, config);
        await client.WaitInitializedAsync(TimeSpan.FromSeconds(45));
        Assert.Contains(s.Process!.Lines, l => l.Contains("new session from", StringComparison.Ordinal) && l.Contains("fd00:77::2", StringComparison.Ordinal));
        var ping = await TrafficCheck.PingAsync(s.ClientNs, ServerUnderTest.TunnelServerAddress, count: 3);
        Assert.Equal(0.0, ping.Loss);
        var t = await TrafficCheck.TransferAsync(s.ClientNs, s.ServerNs, ServerUnderTest.TunnelServerAddress, 8L << 20, TimeSpan.FromSeconds(60));
        Assert.Equal(8L << 20, t.Bytes);
    }
}
