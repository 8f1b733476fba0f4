// SPDX-License-Identifier: MIT
using System.Net;
using System.Text.RegularExpressions;
using Ovpn.Testing;

namespace Ovpn.Client.Tests;

/// <summary>
/// `ovpnas connect` against the stock openvpn 2.6 server in network namespaces. Needs root,
/// /dev/net/tun and /usr/sbin/openvpn; skipped locally without them, fails under CI=true.
/// </summary>
public sealed partial class StockServerTests
{
    private static async Task ConnectPingTransferAsync(Scenario s, long bytes = 4 << 20)
    {
        await using var rig = ClientRig.Create(s);
        await rig.StartServerAsync();
        rig.StartClient();
        await rig.WaitClientConnectedAsync();
        var ping = await TrafficCheck.PingAsync(rig.Cli, ClientRig.ServerVpn, count: 3);
        Assert.True(ping.Loss == 0, $"ping loss {ping.Loss}\n{ping.Output}\n{rig.Logs()}");
        var t = await TrafficCheck.TransferAsync(rig.Cli, rig.Srv, ClientRig.ServerVpn, bytes, TimeSpan.FromSeconds(60));
        Assert.Equal(bytes, t.Bytes);
        // The server must have seen our client by its certificate name, with the cipher we asked for.
        Assert.Contains(rig.Server!.Log, l => l.Contains("alice", StringComparison.Ordinal));
        Assert.True(rig.Server.Log.Any(l => l.Contains("PUSH_REPLY", StringComparison.Ordinal) && l.Contains($",cipher {s.Cipher},", StringComparison.Ordinal)),
            "server did not report the data channel cipher\n" + string.Join('\n', rig.Server.Log.Where(l => l.Contains("cipher", StringComparison.OrdinalIgnoreCase))));
        Assert.Contains(rig.Client!.Lines, l => l.Contains($"cipher {s.Cipher}", StringComparison.Ordinal));
        Assert.Contains(rig.Client.Lines, l => l.Contains(s.Tcp ? "connected to tcp:" : "connected to udp:", StringComparison.Ordinal));
    }

    [RequiresTheory(Requirement.Root, Requirement.Tun, Requirement.OpenVpn)]
    [InlineData(false, "tls-crypt", "AES-256-GCM")]
    [InlineData(true, "tls-crypt", "AES-256-GCM")]
    [InlineData(false, "tls-auth", "AES-128-GCM")]
    [InlineData(true, "tls-auth", "CHACHA20-POLY1305")]
    [InlineData(false, "tls-crypt", "CHACHA20-POLY1305")]
    public Task ConnectsPingsAndMovesData(bool tcp, string wrap, string cipher) =>
        ConnectPingTransferAsync(new Scenario(Tcp: tcp, Wrap: wrap, Cipher: cipher));
}
