// SPDX-License-Identifier: MIT
using System.Net;
using Ovpn.Testing;

namespace Ovpn.Platform.Tests;

/// <summary>Exercises OpenVpnProcess with two stock openvpn instances (cleartext p2p, test only).</summary>
public sealed class OpenVpnProcessTests
{
    [RequiresFact(Requirement.Root, Requirement.Tun, Requirement.OpenVpn)]
    public async Task TwoStockOpenVpns_Initialize_PingThroughTunnel_AndStop()
    {
        Requirements.RequireOrFail(Requirement.Root, Requirement.Tun, Requirement.OpenVpn);
        Assert.Matches(@"^2\.\d+\.\d+", Requirements.OpenVpnVersion);
        var (a, b) = NetNs.CreateVethPair("10.94.0.1/24", "10.94.0.2/24");
        using (a)
        using (b)
        {
            // No crypto at all: only to exercise the harness (process, log, init detection).
            await using var server = OpenVpnProcess.Start(a, "dev tun\nproto udp\nlport 1194\nifconfig 10.8.94.1 10.8.94.2\n");
            await using var client = OpenVpnProcess.Start(b, "dev tun\nproto udp\nremote 10.94.0.1 1194\nifconfig 10.8.94.2 10.8.94.1\n");
            await Task.WhenAll(server.WaitInitializedAsync(TimeSpan.FromSeconds(20)), client.WaitInitializedAsync(TimeSpan.FromSeconds(20)));
            var ping = await TrafficCheck.PingAsync(b, IPAddress.Parse("10.8.94.1"), count: 3);
            Assert.Equal(0.0, ping.Loss);
            Assert.True(File.Exists(server.ConfigPath));
            int? code = await client.StopAsync(TimeSpan.FromSeconds(10));
            Assert.NotNull(code);
            Assert.True(client.HasExited);
            Assert.Contains(client.Log, l => l.Contains("SIGTERM", StringComparison.Ordinal));
        }
    }

    [RequiresFact(Requirement.Root, Requirement.Tun, Requirement.OpenVpn)]
    public async Task WaitInitialized_FailsWithLogTail_OnBadConfig()
    {
        Requirements.RequireOrFail(Requirement.Root, Requirement.Tun, Requirement.OpenVpn);
        using var ns = new NetNs();
        using var vpn = OpenVpnProcess.Start(ns, "dev tun\nthis-is-not-an-option 1\n", files: new Dictionary<string, string> { ["extra.txt"] = "x" });
        Assert.True(File.Exists(Path.Combine(vpn.WorkDir, "extra.txt")));
        var ex = await Assert.ThrowsAsync<InvalidOperationException>(() => vpn.WaitInitializedAsync(TimeSpan.FromSeconds(15)));
        Assert.Contains("this-is-not-an-option", ex.Message);
        string dir = vpn.WorkDir;
        vpn.Dispose();
        Assert.False(Directory.Exists(dir));
    }
}
