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

public sealed class StockServerLifecycleTests
{
    [RequiresTheory(Requirement.Root, Requirement.Tun, Requirement.OpenVpn)]
    [InlineData(false)]
    [InlineData(true)]
    public async Task RenegotiatesUnderLoad(bool tcp)
    {
        await using var rig = ClientRig.Create(new Scenario(Tcp: tcp, RenegSec: 8));
        await rig.StartServerAsync();
        rig.StartClient();
        await rig.WaitClientConnectedAsync();
        var until = DateTime.UtcNow.AddSeconds(22);
        int transfers = 0;
        while (DateTime.UtcNow < until)
        {
            var t = await TrafficCheck.TransferAsync(rig.Cli, rig.Srv, ClientRig.ServerVpn, 2 << 20, TimeSpan.FromSeconds(30));
            Assert.Equal(2 << 20, t.Bytes);
            transfers++;
        }

        var ping = await TrafficCheck.PingAsync(rig.Cli, ClientRig.ServerVpn, count: 3);
        Assert.True(ping.Loss == 0, $"ping after renegotiation: loss {ping.Loss}\n{rig.Logs()}");
        // At least two renegotiations (key-id 1 and 2) happened and both became primary on our side.
        Assert.True(rig.Client!.Lines.Any(l => l.Contains("key-id 1 is now primary", StringComparison.Ordinal)), rig.Logs());
        Assert.True(rig.Client.Lines.Any(l => l.Contains("key-id 2 is now primary", StringComparison.Ordinal)), rig.Logs());
        Assert.True(transfers > 2);

        // No data packet was refused on our side during the key changes (status file of the client).
        await Task.Delay(1500);
        using var status = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(rig.DataDir, "client-status.json")));
        var root = status.RootElement;
        Assert.Equal("connected", root.GetProperty("state").GetString());
        Assert.True(root.GetProperty("vpnRxBytes").GetInt64() > 0);
        if (root.GetProperty("drops").ValueKind == System.Text.Json.JsonValueKind.Object)
        {
            foreach (var d in root.GetProperty("drops").EnumerateObject())
            {
                Assert.True(d.Name is not ("UnknownKey" or "AuthFailed" or "Replay"), $"client dropped {d.Value} packets: {d.Name}");
            }
        }
    }

    [RequiresTheory(Requirement.Root, Requirement.Tun, Requirement.OpenVpn)]
    [InlineData(false)]
    [InlineData(true)]
    public async Task ComesBackAfterServerRestart(bool tcp)
    {
        await using var rig = ClientRig.Create(new Scenario(Tcp: tcp));
        await rig.StartServerAsync();
        rig.StartClient();
        await rig.WaitClientConnectedAsync();
        Assert.Equal(0, (await TrafficCheck.PingAsync(rig.Cli, ClientRig.ServerVpn, count: 2)).Loss);
        int mark = rig.Client!.LineCount;
        await rig.StopServerAsync();
        await rig.StartServerAsync();
        await rig.WaitClientConnectedAsync(fromLine: mark, seconds: 60);
        var ping = await TrafficCheck.PingAsync(rig.Cli, ClientRig.ServerVpn, count: 3);
        Assert.True(ping.Loss == 0, $"ping after reconnect: loss {ping.Loss}\n{rig.Logs()}");
        var t = await TrafficCheck.TransferAsync(rig.Cli, rig.Srv, ClientRig.ServerVpn, 1 << 20, TimeSpan.FromSeconds(30));
        Assert.Equal(1 << 20, t.Bytes);
    }

    [RequiresFact(Requirement.Root, Requirement.Tun, Requirement.OpenVpn)]
    public async Task FailsOverToTheNextRemote()
    {
        await using var rig = ClientRig.Create(new Scenario());
        await rig.StartServerAsync();
        string profile = rig.Profile().Replace($"remote {ClientRig.ServerLink} 1194",
            $"remote {ClientRig.ServerLink} 1195\nremote {ClientRig.ServerLink} 1194\nserver-poll-timeout 3", StringComparison.Ordinal);
        rig.StartClient(profile);
        await rig.WaitClientConnectedAsync(seconds: 30);
        Assert.Contains(rig.Client!.Lines, l => l.Contains($"no answer from udp:{ClientRig.ServerLink}:1195 within 3 s", StringComparison.Ordinal));
        Assert.Contains(rig.Client.Lines, l => l.Contains($"connected to udp:{ClientRig.ServerLink}:1194", StringComparison.Ordinal));
    }

    [RequiresFact(Requirement.Root, Requirement.Tun, Requirement.OpenVpn)]
    public async Task PingRestartAfterNetworkDropReconnects()
    {
        await using var rig = ClientRig.Create(new Scenario());
        await rig.StartServerAsync();
        rig.StartClient();
        await rig.WaitClientConnectedAsync();
        int mark = rig.Client!.LineCount;
        // Pushed ping-restart is 10 s (keepalive 2 10): a 13 s outage must trigger it.
        rig.Cli.ExecChecked("ip", "link", "set", rig.Cli.VethName!, "down");
        await rig.Client.WaitForLineAsync(new System.Text.RegularExpressions.Regex("ping-restart"), TimeSpan.FromSeconds(20), mark);
        await Task.Delay(1000);
        rig.Cli.ExecChecked("ip", "link", "set", rig.Cli.VethName!, "up");
        await rig.WaitClientConnectedAsync(fromLine: mark, seconds: 60);
        var ping = await TrafficCheck.PingAsync(rig.Cli, ClientRig.ServerVpn, count: 3);
        Assert.True(ping.Loss == 0, $"ping after network drop: loss {ping.Loss}\n{rig.Logs()}");
    }

    [RequiresTheory(Requirement.Root, Requirement.Tun, Requirement.OpenVpn)]
    [InlineData(false)]
    [InlineData(true)]
    public async Task SigtermSendsExitAndRemovesTun(bool tcp)
    {
        await using var rig = ClientRig.Create(new Scenario(Tcp: tcp));
        await rig.StartServerAsync();
        rig.StartClient();
        await rig.WaitClientConnectedAsync();
        Assert.Contains("ovpnc", rig.Cli.ExecChecked("ip", "-o", "link", "show").Stdout, StringComparison.Ordinal);
        int serverMark = rig.Server!.Process.LineCount;
        rig.Client!.Signal(Ovpn.Platform.Linux.LinuxProcess.SIGTERM);
        Assert.True(await rig.Client.WaitForExitAsync(TimeSpan.FromSeconds(15)), rig.Logs());
        Assert.Equal(0, rig.Client.ExitCode);
        Assert.DoesNotContain("ovpnc", rig.Cli.ExecChecked("ip", "-o", "link", "show").Stdout, StringComparison.Ordinal);
        Assert.Contains(rig.Client.Lines, l => l.Contains("sending EXIT", StringComparison.Ordinal));
        // The stock server notices the exit notification at once (not after ping-restart).
        await rig.Server.WaitForLineAsync(new System.Text.RegularExpressions.Regex("alice.*CC-EEN exit message received"), TimeSpan.FromSeconds(10), serverMark);
    }
}

public sealed class StockServerAuthTests
{
    private const string CheckScript = "#!/bin/sh\n# via-file: line 1 user, line 2 password\n[ \"$(sed -n 1p \"$1\")\" = alice ] && [ \"$(sed -n 2p \"$1\")\" = 's3cret pw' ]\n";

    private static async Task<ClientRig> StartWithUserPassAsync(string password)
    {
        var rig = ClientRig.Create(new Scenario(
            ExtraServer: "script-security 2\nauth-user-pass-verify check.sh via-file\ntmp-dir /tmp\n",
            ExtraProfile: "auth-user-pass creds.txt\n"));
        File.WriteAllText(Path.Combine(rig.WorkDir, "creds.txt"), $"alice\n{password}\n");
        await rig.StartServerAsync(new Dictionary<string, string> { ["check.sh"] = CheckScript });
        return rig;
    }

    [RequiresFact(Requirement.Root, Requirement.Tun, Requirement.OpenVpn)]
    public async Task UserPassFromFileIsAccepted()
    {
        await using var rig = await StartWithUserPassAsync("s3cret pw");
        rig.StartClient();
        await rig.WaitClientConnectedAsync();
        Assert.Equal(0, (await TrafficCheck.PingAsync(rig.Cli, ClientRig.ServerVpn, count: 2)).Loss);
    }

    [RequiresFact(Requirement.Root, Requirement.Tun, Requirement.OpenVpn)]
    public async Task WrongPasswordEndsWithAuthFailed()
    {
        await using var rig = await StartWithUserPassAsync("wrong");
        var client = rig.StartClient();
        Assert.True(await client.WaitForExitAsync(TimeSpan.FromSeconds(40)), rig.Logs());
        Assert.Equal(1, client.ExitCode);
        Assert.Contains(client.Lines, l => l.Contains("AUTH_FAILED", StringComparison.Ordinal));
    }

    [RequiresFact(Requirement.Root, Requirement.Tun, Requirement.OpenVpn)]
    public async Task VerifyX509NameMismatchRefusesServer()
    {
        await using var rig = ClientRig.Create(new Scenario(ExtraProfile: "verify-x509-name not-the-server name\n"));
        await rig.StartServerAsync();
        var client = rig.StartClient();
        Assert.True(await client.WaitForExitAsync(TimeSpan.FromSeconds(40)), rig.Logs());
        Assert.Equal(1, client.ExitCode);
        Assert.Contains(client.Lines, l => l.Contains("verify-x509-name", StringComparison.Ordinal));
        Assert.DoesNotContain(client.Lines, l => l.Contains("Initialization Sequence Completed", StringComparison.Ordinal));
    }

    [RequiresFact(Requirement.Root, Requirement.Tun, Requirement.OpenVpn)]
    public async Task PullFilterIgnoresPushedRoute()
    {
        const string push = "push \"route 10.99.0.0 255.255.0.0\"\npush \"route 10.98.0.0 255.255.0.0\"\n";
        await using var rig = ClientRig.Create(new Scenario(ExtraServer: push, ExtraProfile: "pull-filter ignore \"route 10.99.\"\n"));
        await rig.StartServerAsync();
        rig.StartClient();
        await rig.WaitClientConnectedAsync();
        string routes = rig.Cli.ExecChecked("ip", "route", "show").Stdout;
        Assert.Contains("10.98.0.0/16 dev ovpnc", routes, StringComparison.Ordinal);
        Assert.DoesNotContain("10.99.0.0", routes, StringComparison.Ordinal);
    }

    [RequiresFact(Requirement.Root, Requirement.Tun, Requirement.OpenVpn)]
    public async Task ClientInitiatedRenegotiation()
    {
        await using var rig = ClientRig.Create(new Scenario(ExtraProfile: "reneg-sec 5\n"));
        await rig.StartServerAsync();
        rig.StartClient();
        await rig.WaitClientConnectedAsync();
        // Keep data flowing until our second renegotiation completed (bounded).
        var until = DateTime.UtcNow.AddSeconds(40);
        while (DateTime.UtcNow < until && !rig.Client!.Lines.Any(l => l.Contains("key-id 2 is now primary", StringComparison.Ordinal)))
        {
            Assert.Equal(1 << 20, (await TrafficCheck.TransferAsync(rig.Cli, rig.Srv, ClientRig.ServerVpn, 1 << 20, TimeSpan.FromSeconds(30))).Bytes);
        }

        Assert.True(rig.Client!.Lines.Any(l => l.Contains("starting renegotiation (reneg-sec 5), key-id 1", StringComparison.Ordinal)), rig.Logs());
        Assert.True(rig.Client.Lines.Any(l => l.Contains("key-id 2 is now primary", StringComparison.Ordinal)), rig.Logs());
        Assert.Equal(0, (await TrafficCheck.PingAsync(rig.Cli, ClientRig.ServerVpn, count: 3)).Loss);
    }
}

public sealed class StockServerRoutingTests
{
    [RequiresFact(Requirement.Root, Requirement.Tun, Requirement.OpenVpn)]
    public async Task Ipv6InsideTheTunnel()
    {
        await using var rig = ClientRig.Create(new Scenario(ExtraServer: "server-ipv6 fd00:8::/64\n"));
        await rig.StartServerAsync();
        rig.StartClient();
        await rig.WaitClientConnectedAsync();
        Assert.Contains("fd00:8::", rig.Cli.ExecChecked("ip", "-6", "addr", "show").Stdout, StringComparison.Ordinal);
        var ping = await TrafficCheck.PingAsync(rig.Cli, IPAddress.Parse("fd00:8::1"), count: 3);
        Assert.True(ping.Loss == 0, $"ping6 loss {ping.Loss}\n{ping.Output}\n{rig.Logs()}");
        var t = await TrafficCheck.TransferAsync(rig.Cli, rig.Srv, IPAddress.Parse("fd00:8::1"), 1 << 20, TimeSpan.FromSeconds(30));
        Assert.Equal(1 << 20, t.Bytes);
    }

    [RequiresFact(Requirement.Root, Requirement.Tun, Requirement.OpenVpn)]
    public async Task RedirectGatewaySendsEverythingThroughTheTunnel()
    {
        await using var rig = ClientRig.Create(new Scenario(ExtraServer: "push \"redirect-gateway def1\"\n"));
        // An address only the server side has: reachable from the client only through the tunnel.
        rig.Srv.ExecChecked("ip", "addr", "add", "192.0.2.1/32", "dev", "lo");
        await rig.StartServerAsync();
        rig.StartClient();
        await rig.WaitClientConnectedAsync();
        string routes = rig.Cli.ExecChecked("ip", "route", "show").Stdout;
        Assert.Contains("0.0.0.0/1 dev ovpnc", routes, StringComparison.Ordinal);
        Assert.Contains("128.0.0.0/1 dev ovpnc", routes, StringComparison.Ordinal);
        var ping = await TrafficCheck.PingAsync(rig.Cli, IPAddress.Parse("192.0.2.1"), count: 3);
        Assert.True(ping.Loss == 0, $"loss {ping.Loss}\n{routes}\n{rig.Logs()}");
        // The tunnel itself still works (server host route kept on the veth).
        Assert.Equal(0, (await TrafficCheck.PingAsync(rig.Cli, ClientRig.ServerVpn, count: 2)).Loss);

        rig.Client!.Signal(Ovpn.Platform.Linux.LinuxProcess.SIGTERM);
        Assert.True(await rig.Client.WaitForExitAsync(TimeSpan.FromSeconds(15)));
        string after = rig.Cli.ExecChecked("ip", "route", "show").Stdout;
        Assert.DoesNotContain("0.0.0.0/1", after, StringComparison.Ordinal);
        Assert.DoesNotContain($"{ClientRig.ServerLink} ", after, StringComparison.Ordinal);
    }
}

public sealed class StockServerIpv6TransportTests
{
    [RequiresTheory(Requirement.Root, Requirement.Tun, Requirement.OpenVpn)]
    [InlineData(false)]
    [InlineData(true)]
    public async Task ConnectsOverIpv6(bool tcp)
    {
        await using var rig = ClientRig.Create(new Scenario(Tcp: tcp, ExtraServer: tcp ? "proto tcp6-server\n" : "proto udp6\n"));
        rig.Srv.ExecChecked("ip", "-6", "addr", "add", "fd77::1/64", "dev", rig.Srv.VethName!, "nodad");
        rig.Cli.ExecChecked("ip", "-6", "addr", "add", "fd77::2/64", "dev", rig.Cli.VethName!, "nodad");
        await rig.StartServerAsync();
        string profile = rig.Profile().Replace($"remote {ClientRig.ServerLink} 1194", "remote fd77::1 1194", StringComparison.Ordinal)
            .Replace(tcp ? "proto tcp" : "proto udp", tcp ? "proto tcp6" : "proto udp6", StringComparison.Ordinal);
        rig.StartClient(profile);
        await rig.WaitClientConnectedAsync();
        Assert.Contains(rig.Client!.Lines, l => l.Contains($"connected to {(tcp ? "tcp" : "udp")}:fd77::1:1194", StringComparison.Ordinal));
        var t = await TrafficCheck.TransferAsync(rig.Cli, rig.Srv, ClientRig.ServerVpn, 2 << 20, TimeSpan.FromSeconds(30));
        Assert.Equal(2 << 20, t.Bytes);
    }
}
