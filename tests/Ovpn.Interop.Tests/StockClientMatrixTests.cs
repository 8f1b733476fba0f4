// SPDX-License-Identifier: MIT
using System.Text.RegularExpressions;
using Ovpn.Testing;

namespace Ovpn.Interop.Tests;

/// <summary>
/// The stock openvpn 2.6 client against `ovpnas serve`: UDP and TCP x three AEAD ciphers x
/// tls-crypt and tls-auth. Each case connects, pings both ways, moves 50 MB with a SHA-256 check
/// and disconnects cleanly.
/// </summary>
public sealed partial class StockClientMatrixTests
{
    public static TheoryData<string, string, string> Matrix()
    {
        var d = new TheoryData<string, string, string>();
        foreach (var wrap in new[] { "tls-crypt", "tls-auth" })
        {
            foreach (var proto in new[] { "udp", "tcp" })
            {
                foreach (var cipher in new[] { "AES-256-GCM", "AES-128-GCM", "CHACHA20-POLY1305" })
                {
                    d.Add(wrap, proto, cipher);
                }
            }
        }

        return d;
    }

    [RequiresTheory(Requirement.Root, Requirement.Tun, Requirement.OpenVpn)]
    [MemberData(nameof(Matrix))]
    public async Task StockClientConnectsPingsTransfersAndDisconnects(string wrap, string proto, string cipher)
    {
        await using var s = ServerUnderTest.Create(("vpn.server.tls_cc_security", wrap));
        await s.StartAsync();
        await using var client = OpenVpnProcess.Start(s.ClientNs, s.ClientConfig("alice", proto, cipher));
        await client.WaitInitializedAsync(TimeSpan.FromSeconds(45));
        // The cipher line follows "Initialization Sequence Completed" in the client's log.
        await client.WaitForLineAsync(new Regex(Regex.Escape($"Data Channel: cipher '{cipher}'")), TimeSpan.FromSeconds(5));

        var toServer = await TrafficCheck.PingAsync(s.ClientNs, ServerUnderTest.TunnelServerAddress, count: 3);
        Assert.Equal(0.0, toServer.Loss);
        var clientIp = ServerUnderTest.ClientVpnAddress(client);
        var toClient = await TrafficCheck.PingAsync(s.ServerNs, clientIp, count: 3);
        Assert.Equal(0.0, toClient.Loss);

        var up = await TrafficCheck.TransferAsync(s.ClientNs, s.ServerNs, ServerUnderTest.TunnelServerAddress, 50L << 20, TimeSpan.FromSeconds(120));
        Assert.Equal(50L << 20, up.Bytes);
        var down = await TrafficCheck.TransferAsync(s.ServerNs, s.ClientNs, clientIp, 8L << 20, TimeSpan.FromSeconds(60), seed: 7);
        Assert.Equal(8L << 20, down.Bytes);

        int exitCode = await client.StopAsync() ?? -1;
        Assert.Equal(0, exitCode);
        // UDP clients say goodbye with EXIT (cc-exit); TCP clients close the connection.
        string expected = proto == "udp" ? "client sent EXIT" : "TCP connection closed";
        await s.Process!.WaitForLineAsync(new Regex(Regex.Escape(expected)), TimeSpan.FromSeconds(10));
        Assert.Equal(0, await s.StopAsync());
        Assert.Contains(s.Process.Lines, l => l.Contains("stopped", StringComparison.Ordinal));
    }
}
