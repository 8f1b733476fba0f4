// SPDX-License-Identifier: MIT
using System.Text.RegularExpressions;
using Ovpn.Testing;

namespace Ovpn.Interop.Tests;

/// <summary>
/// A UDP client whose source address changes mid-session (as behind a NAT rebinding): its
/// authenticated data packets move ("float") the peer, and traffic continues, in both modes.
/// </summary>
public sealed class RoamingTests
{
    [RequiresTheory(Requirement.Root, Requirement.Tun, Requirement.OpenVpn)]
    [InlineData("false")]
    [InlineData("true")]
    public async Task ClientThatRoamsToANewSourceAddressKeepsItsTunnel(string offload)
    {
        await using var s = ServerUnderTest.Create(("vpn.server.daemon.ovpndco", offload), ("vpn.server.reneg_sec", "15"));
        await s.StartAsync();
        await using var client = OpenVpnProcess.Start(s.ClientNs, s.ClientConfig("alice", "udp"));
        await client.WaitInitializedAsync(TimeSpan.FromSeconds(45));
        Assert.Equal(0.0, (await TrafficCheck.PingAsync(s.ClientNs, ServerUnderTest.TunnelServerAddress, count: 2)).Loss);

        // The client's packets now leave from a second address (the socket is unbound: the kernel
        // picks the source per packet from the route).
        string oldAddr = s.ServerLinkAddress.ToString()[..^1] + "2";
        string newAddr = s.ServerLinkAddress.ToString()[..^1] + "3";
        s.ClientNs.ExecChecked("ip", "addr", "add", newAddr + "/24", "dev", s.ClientNs.VethName!);
        s.ClientNs.ExecChecked("ip", "route", "replace", s.ServerLinkAddress + "/32", "dev", s.ClientNs.VethName!, "src", newAddr);

        var ping = await TrafficCheck.PingAsync(s.ClientNs, ServerUnderTest.TunnelServerAddress, count: 5);
        Assert.True(ping.Received >= 4, ping.Output);
        var line = await s.Process!.WaitForLineAsync(new Regex("alice/udp:" + Regex.Escape(oldAddr) + @":\d+: client floated to udp:" + Regex.Escape(newAddr)), TimeSpan.FromSeconds(10));
        Assert.Contains(newAddr, line, StringComparison.Ordinal);
        var t = await TrafficCheck.TransferAsync(s.ClientNs, s.ServerNs, ServerUnderTest.TunnelServerAddress, 8L << 20, TimeSpan.FromSeconds(60));
        Assert.Equal(8L << 20, t.Bytes);
        // The control channel follows too: the server's renegotiation completes over the new address.
        await s.Process.WaitForLineAsync(new Regex("alice/udp:" + Regex.Escape(newAddr) + @":\d+: key-id 1 is now primary"), TimeSpan.FromSeconds(30));
        Assert.Equal(0.0, (await TrafficCheck.PingAsync(s.ClientNs, ServerUnderTest.TunnelServerAddress, count: 2)).Loss);
    }
}
