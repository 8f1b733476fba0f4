// SPDX-License-Identifier: MIT
using System.Text.RegularExpressions;
using Ovpn.Testing;

namespace Ovpn.Interop.Tests;

/// <summary>
/// vpn.server.daemon.ovpndco=true: the multi-threaded offload engine carries AEAD peers; peers that
/// offload cannot carry (CBC, compression framing) land on a non-offload daemon while the others
/// stay offloaded, and the log says why.
/// </summary>
public sealed partial class OffloadModeTests
{
    private const string WithCbc = "AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305:AES-256-CBC";

    [RequiresTheory(Requirement.Root, Requirement.Tun, Requirement.OpenVpn)]
    [InlineData("udp", "AES-256-GCM")]
    [InlineData("udp", "CHACHA20-POLY1305")]
    [InlineData("tcp", "AES-128-GCM")]
    public async Task StockClientIsOffloaded(string proto, string cipher)
    {
        await using var s = ServerUnderTest.Create(("vpn.server.daemon.ovpndco", "true"));
        await s.StartAsync();
        Assert.Contains(s.Process!.Lines, l => l.Contains("data channel offload: active: ovpnas-offload", StringComparison.Ordinal));
        await using var client = OpenVpnProcess.Start(s.ClientNs, s.ClientConfig("alice", proto, cipher));
        await client.WaitInitializedAsync(TimeSpan.FromSeconds(45));
        Assert.Contains(s.Process.Lines, l => l.Contains("alice/", StringComparison.Ordinal) && l.Contains("data path offload", StringComparison.Ordinal));
        Assert.Equal(0.0, (await TrafficCheck.PingAsync(s.ClientNs, ServerUnderTest.TunnelServerAddress, count: 3)).Loss);
        var clientIp = ServerUnderTest.ClientVpnAddress(client);
        Assert.Equal(0.0, (await TrafficCheck.PingAsync(s.ServerNs, clientIp, count: 3)).Loss);
        var up = await TrafficCheck.TransferAsync(s.ClientNs, s.ServerNs, ServerUnderTest.TunnelServerAddress, 50L << 20, TimeSpan.FromSeconds(120));
        Assert.Equal(50L << 20, up.Bytes);
        var down = await TrafficCheck.TransferAsync(s.ServerNs, s.ClientNs, clientIp, 16L << 20, TimeSpan.FromSeconds(60), seed: 9);
        Assert.Equal(16L << 20, down.Bytes);
        Assert.Equal(0, await client.StopAsync());
        await s.Process.WaitForLineAsync(new Regex("alice/.*disconnected"), TimeSpan.FromSeconds(10));
    }

    [RequiresFact(Requirement.Root, Requirement.Tun, Requirement.OpenVpn)]
    public async Task CbcAndCompressionPeersUseTheDaemonWhileAeadPeerStaysOffloaded()
    {
        await using var s = ServerUnderTest.Create(("vpn.server.daemon.ovpndco", "true"), ("vpn.server.data_ciphers", WithCbc));
        s.Cli("user", "add", "bob");
        s.Cli("user", "add", "carol");
        await s.StartAsync();
        await using var aead = OpenVpnProcess.Start(s.ClientNs, s.ClientConfig("alice", "udp"));
        await aead.WaitInitializedAsync(TimeSpan.FromSeconds(45));
        Assert.Contains(s.Process!.Lines, l => l.Contains("alice/", StringComparison.Ordinal) && l.Contains("data path offload", StringComparison.Ordinal));

        // One legacy client at a time shares the client namespace with alice (each gets its own tun).
        foreach (var (user, proto, cipher, extra, reason) in new[]
        {
            ("bob", "udp", "AES-256-CBC", "", "not offloaded: cipher AES-256-CBC is not AEAD"),
            ("carol", "tcp", (string?)null, "comp-lzo", "not offloaded: client uses compression framing"),
        })
        {
            await using var legacy = OpenVpnProcess.Start(s.ClientNs, s.ClientConfig(user, proto, cipher, extra));
            await legacy.WaitInitializedAsync(TimeSpan.FromSeconds(45));
            Assert.Contains(s.Process.Lines, l => l.Contains(user + "/", StringComparison.Ordinal) &&
                l.Contains($"data path daemon (not offloadable) ({reason})", StringComparison.Ordinal));
            var legacyIp = ServerUnderTest.ClientVpnAddress(legacy);
            Assert.Equal(0.0, (await TrafficCheck.PingAsync(s.ServerNs, legacyIp, count: 3)).Loss);
            var lt = await TrafficCheck.TransferAsync(s.ServerNs, s.ClientNs, legacyIp, 4L << 20, TimeSpan.FromSeconds(60), seed: 11);
            Assert.Equal(4L << 20, lt.Bytes);

            // alice (offloaded) moves traffic while the legacy client is connected.
            Assert.Equal(0.0, (await TrafficCheck.PingAsync(s.ServerNs, ServerUnderTest.ClientVpnAddress(aead), count: 2)).Loss);
            var t = await TrafficCheck.TransferAsync(s.ServerNs, s.ClientNs, ServerUnderTest.ClientVpnAddress(aead), 8L << 20, TimeSpan.FromSeconds(60));
            Assert.Equal(8L << 20, t.Bytes);
            await legacy.StopAsync();
            await s.Process.WaitForLineAsync(new Regex(user + "/.*disconnected"), TimeSpan.FromSeconds(15));
        }
    }

    [RequiresFact(Requirement.Root, Requirement.Tun, Requirement.OpenVpn)]
    public async Task RenegotiationUnderLoadWithOffload()
    {
        await using var s = ServerUnderTest.Create(("vpn.server.daemon.ovpndco", "true"));
        await s.StartAsync();
        await using var client = OpenVpnProcess.Start(s.ClientNs, s.ClientConfig("alice", "udp", null, "reneg-sec 8"));
        await client.WaitInitializedAsync(TimeSpan.FromSeconds(45));
        var perf = await Iperf3.RunAsync(s.ServerNs, s.ClientNs, ServerUnderTest.TunnelServerAddress, ["-t", "20"], TimeSpan.FromSeconds(60));
        Assert.True(perf.ReceivedBitsPerSecond > 1_000_000, $"stream stalled: {perf.ReceivedBitsPerSecond} bit/s");
        Assert.True(s.CountServerLines("is now primary") >= 2, s.Process!.Tail());
        var t = await TrafficCheck.TransferAsync(s.ClientNs, s.ServerNs, ServerUnderTest.TunnelServerAddress, 8L << 20, TimeSpan.FromSeconds(60));
        Assert.Equal(8L << 20, t.Bytes);
    }
}
