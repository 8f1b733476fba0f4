// SPDX-License-Identifier: MIT
using System.Net;
using System.Net.Sockets;
using System.Text.RegularExpressions;
using Ovpn.Protocol.Control;
using Ovpn.Protocol.Wire;
using Ovpn.Testing;

namespace Ovpn.Interop.Tests;

/// <summary>Server behaviour with real clients: compat mode, renegotiation under load, several clients, reaping, bad input.</summary>
public sealed partial class ServerBehaviourTests
{
    private static readonly IPAddress Tunnel = ServerUnderTest.TunnelServerAddress;

    [RequiresFact(Requirement.Root, Requirement.Tun, Requirement.OpenVpn)]
    public async Task CompatMode240ClientConnects()
    {
        await using var s = ServerUnderTest.Create();
        await s.StartAsync();
        await using var client = OpenVpnProcess.Start(s.ClientNs, s.ClientConfig("alice", "udp", null, "compat-mode 2.4.0"));
        await client.WaitInitializedAsync(TimeSpan.FromSeconds(45));
        var ping = await TrafficCheck.PingAsync(s.ClientNs, Tunnel, count: 3);
        Assert.Equal(0.0, ping.Loss);
        var t = await TrafficCheck.TransferAsync(s.ClientNs, s.ServerNs, Tunnel, 8L << 20, TimeSpan.FromSeconds(60));
        Assert.Equal(8L << 20, t.Bytes);
        // compat-mode 2.4.0 still announces IV_CIPHERS, but no EKM and no cc-exit.
        Assert.Contains(s.Process!.Lines, l => l.Contains("authenticated; peer-id", StringComparison.Ordinal));
    }

    [RequiresFact(Requirement.Root, Requirement.Tun, Requirement.OpenVpn)]
    public async Task RenegotiationEveryTenSecondsWhileTcpStreamFlows()
    {
        await using var s = ServerUnderTest.Create();
        await s.StartAsync();
        await using var client = OpenVpnProcess.Start(s.ClientNs, s.ClientConfig("alice", "udp", null, "reneg-sec 10"));
        await client.WaitInitializedAsync(TimeSpan.FromSeconds(45));

        // A single TCP stream through the tunnel long enough to span at least two renegotiations.
        var perf = await Iperf3.RunAsync(s.ServerNs, s.ClientNs, Tunnel, ["-t", "25"], TimeSpan.FromSeconds(60));
        Assert.True(perf.ReceivedBitsPerSecond > 1_000_000, $"stream stalled: {perf.ReceivedBitsPerSecond} bit/s");
        int renegs = s.CountServerLines("peer started renegotiation");
        int primaries = s.CountServerLines("is now primary");
        Assert.True(renegs >= 2, $"expected >= 2 renegotiations in 25 s, saw {renegs}");
        Assert.True(primaries >= 2, $"expected the new keys to become primary, saw {primaries}");
        // The integrity check after the key changes.
        var t = await TrafficCheck.TransferAsync(s.ClientNs, s.ServerNs, Tunnel, 16L << 20, TimeSpan.FromSeconds(60));
        Assert.Equal(16L << 20, t.Bytes);
    }

    [RequiresFact(Requirement.Root, Requirement.Tun, Requirement.OpenVpn)]
    public async Task ServerInitiatedRenegotiationKeepsTrafficFlowing()
    {
        await using var s = ServerUnderTest.Create(("vpn.server.reneg_sec", "8"));
        await s.StartAsync();
        await using var client = OpenVpnProcess.Start(s.ClientNs, s.ClientConfig("alice", "tcp"));
        await client.WaitInitializedAsync(TimeSpan.FromSeconds(45));
        var t = await TrafficCheck.TransferAsync(s.ClientNs, s.ServerNs, Tunnel, 32L << 20, TimeSpan.FromSeconds(60));
        Assert.Equal(32L << 20, t.Bytes);
        await s.Process!.WaitForLineAsync(new Regex("starting renegotiation \\(reneg-sec 8\\)"), TimeSpan.FromSeconds(20));
        await s.Process.WaitForLineAsync(new Regex("key-id 1 is now primary"), TimeSpan.FromSeconds(20));
        var ping = await TrafficCheck.PingAsync(s.ClientNs, Tunnel, count: 3);
        Assert.Equal(0.0, ping.Loss);
    }

    [RequiresFact(Requirement.Root, Requirement.Tun, Requirement.OpenVpn)]
    public async Task TwoClientsAtOnceGetTheirOwnAddressesAndPeerIds()
    {
        await using var s = ServerUnderTest.Create();
        s.Cli("user", "add", "bob");
        await s.StartAsync();
        await using var a = OpenVpnProcess.Start(s.ClientNs, s.ClientConfig("alice", "udp"));
        await using var b = OpenVpnProcess.Start(s.ClientNs, s.ClientConfig("bob", "tcp", null, "route-nopull", "ifconfig-noexec"));
        await a.WaitInitializedAsync(TimeSpan.FromSeconds(45));
        await b.WaitInitializedAsync(TimeSpan.FromSeconds(45));
        var pushes = s.Process!.Lines.Where(l => l.Contains("authenticated; peer-id", StringComparison.Ordinal)).ToList();
        Assert.Equal(2, pushes.Count);
        // Without offload, UDP and TCP clients land on their transport's daemons, each with its own subnet.
        Assert.Contains(pushes, l => l.Contains("alice/", StringComparison.Ordinal) && l.Contains("data path daemon udp#0", StringComparison.Ordinal));
        Assert.Contains(pushes, l => l.Contains("bob/", StringComparison.Ordinal) && l.Contains("data path daemon tcp#0", StringComparison.Ordinal));
        Assert.Contains(pushes, l => l.Contains("peer-id 0,", StringComparison.Ordinal));
        Assert.Contains(pushes, l => l.Contains("peer-id 1,", StringComparison.Ordinal));
        Assert.NotEqual(ServerUnderTest.ClientVpnAddress(a), ServerUnderTest.ClientVpnAddress(b));
        // alice's tunnel carries traffic while bob is connected too.
        var ping = await TrafficCheck.PingAsync(s.ClientNs, Tunnel, count: 3);
        Assert.Equal(0.0, ping.Loss);
        await b.StopAsync();
        await s.Process.WaitForLineAsync(new Regex("bob/.*disconnected"), TimeSpan.FromSeconds(10));
        ping = await TrafficCheck.PingAsync(s.ClientNs, Tunnel, count: 2);
        Assert.Equal(0.0, ping.Loss);
    }

    [RequiresFact(Requirement.Root, Requirement.Tun, Requirement.OpenVpn)]
    public async Task NewUdpClientsAreSpreadAcrossDaemons()
    {
        await using var s = ServerUnderTest.Create(("vpn.server.daemon.udp.n_daemons", "2"), ("vpn.server.daemon.tcp.n_daemons", "1"));
        s.Cli("user", "add", "bob");
        await s.StartAsync();
        Assert.Contains(s.Process!.Lines, l => l.Contains("TUN as0t1 up", StringComparison.Ordinal));
        await using var a = OpenVpnProcess.Start(s.ClientNs, s.ClientConfig("alice", "udp"));
        await a.WaitInitializedAsync(TimeSpan.FromSeconds(45));
        await using var b = OpenVpnProcess.Start(s.ClientNs, s.ClientConfig("bob", "udp", null, "route-nopull", "ifconfig-noexec"));
        await b.WaitInitializedAsync(TimeSpan.FromSeconds(45));
        Assert.Contains(s.Process.Lines, l => l.Contains("alice/", StringComparison.Ordinal) && l.Contains("data path daemon udp#0", StringComparison.Ordinal));
        Assert.Contains(s.Process.Lines, l => l.Contains("bob/", StringComparison.Ordinal) && l.Contains("data path daemon udp#1", StringComparison.Ordinal));
        // alice (daemon 0) reaches the server and, through the pushed pool route, daemon 1's address too.
        Assert.Equal(0.0, (await TrafficCheck.PingAsync(s.ClientNs, ServerUnderTest.TunnelServerAddress, count: 2)).Loss);
        Assert.Equal(0.0, (await TrafficCheck.PingAsync(s.ClientNs, IPAddress.Parse("172.27.228.1"), count: 2)).Loss);
    }

    [RequiresFact(Requirement.Root, Requirement.Tun, Requirement.OpenVpn)]
    public async Task KilledClientIsReapedByPingRestart()
    {
        await using var s = ServerUnderTest.Create(("vpn.server.ping", "1"), ("vpn.server.ping_restart", "3"));
        await s.StartAsync();
        var client = OpenVpnProcess.Start(s.ClientNs, s.ClientConfig("alice", "udp"));
        await client.WaitInitializedAsync(TimeSpan.FromSeconds(45));
        client.Kill();
        await client.DisposeAsync();
        var line = await s.Process!.WaitForLineAsync(new Regex("alice/.*disconnected: ping-restart"), TimeSpan.FromSeconds(20));
        Assert.Contains("no packet from client for 6 s", line);
        // The address went back to the pool: a new client gets .2 again.
        await using var again = OpenVpnProcess.Start(s.ClientNs, s.ClientConfig("alice", "udp"));
        await again.WaitInitializedAsync(TimeSpan.FromSeconds(45));
        Assert.Equal(2, s.Process.Lines.Count(l => l.Contains("alice/", StringComparison.Ordinal) && l.Contains("172.27.224.2,", StringComparison.Ordinal)));
    }

    [RequiresFact(Requirement.Root, Requirement.Tun, Requirement.OpenVpn)]
    public async Task BadInputIsDroppedCountedAndHarmless()
    {
        await using var s = ServerUnderTest.Create();
        await s.StartAsync();
        await using var client = OpenVpnProcess.Start(s.ClientNs, s.ClientConfig("alice", "udp"));
        await client.WaitInitializedAsync(TimeSpan.FromSeconds(45));
        int sessionsBefore = s.CountServerLines("new session from");

        var key = StaticKey.Parse(ExtractInline(s.ClientConfig("alice", "udp"), "tls-crypt"));
        var wrongKey = StaticKey.Generate();
        var rng = new Random(1234);
        var target = new IPEndPoint(s.ServerLinkAddress, 1194);
        int sent = 0;
        s.ClientNs.RunInNamespace(() =>
        {
            using var sock = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
            var forgedWrongKey = ControlWrapper.CreateTlsCrypt(wrongKey, isServer: false);
            var genuine = ControlWrapper.CreateTlsCrypt(key, isServer: false);
            var reset = new ControlPacket { Opcode = Opcode.ControlHardResetClientV2, KeyId = 0, SessionId = 0x1122334455667788, MessageId = 0 };
            byte[] valid = genuine.Wrap(reset, (uint)DateTimeOffset.UtcNow.ToUnixTimeSeconds());
            for (int i = 0; i < 3000; i++)
            {
                byte[] pkt = (i % 6) switch
                {
                    0 => RandomBytes(rng, rng.Next(1, 1500)),                                   // garbage
                    1 => valid[..rng.Next(1, valid.Length)],                                    // truncated reset
                    2 => forgedWrongKey.Wrap(reset, (uint)DateTimeOffset.UtcNow.ToUnixTimeSeconds()), // wrong key
                    3 => DataV2(rng, peerId: 0),                                                // data for the real peer, bad tag
                    4 => DataV2(rng, peerId: (uint)rng.Next(1, 0xFFFFFF)),                      // unknown peer
                    _ => Flip(rng, valid),                                                      // corrupted reset
                };
                sock.SendTo(pkt, target);
                sent++;
            }

            // A genuine reset sent twice: the second copy is a replay.
            sock.SendTo(valid, target);
            sock.SendTo(valid, target);
        });
        Assert.Equal(3000, sent);

        await Task.Delay(1000);
        Assert.False(s.Process!.HasExited, "server died: " + s.Process.Tail());
        var ping = await TrafficCheck.PingAsync(s.ClientNs, Tunnel, count: 3);
        Assert.Equal(0.0, ping.Loss);
        var t = await TrafficCheck.TransferAsync(s.ClientNs, s.ServerNs, Tunnel, 4L << 20, TimeSpan.FromSeconds(30));
        Assert.Equal(4L << 20, t.Bytes);
        // Only the one genuine reset may have created state; none of the 3000 bad packets did.
        Assert.True(s.CountServerLines("new session from") - sessionsBefore <= 1);

        await s.StopAsync();
        string summary = s.Process.Lines.Single(l => l.Contains("drops: control=", StringComparison.Ordinal));
        Assert.True(Count(summary, "BadHmac") >= 1000, summary);
        Assert.True(Count(summary, "UnknownPeer") >= 400, summary);
        Assert.True(Count(summary, "AuthFailed") >= 400, summary);
    }

    private static long Count(string summary, string name)
    {
        var m = Regex.Match(summary, Regex.Escape(name) + @": (\d+)");
        return m.Success ? long.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture) : 0;
    }

    private static string ExtractInline(string config, string tag)
    {
        int a = config.IndexOf($"<{tag}>", StringComparison.Ordinal) + tag.Length + 2;
        int b = config.IndexOf($"</{tag}>", StringComparison.Ordinal);
        return config[a..b];
    }

    private static byte[] RandomBytes(Random r, int n)
    {
        var b = new byte[n];
        r.NextBytes(b);
        return b;
    }

    private static byte[] Flip(Random r, byte[] valid)
    {
        var b = (byte[])valid.Clone();
        b[r.Next(9, b.Length)] ^= (byte)(1 << r.Next(8));
        return b;
    }

    private static byte[] DataV2(Random r, uint peerId)
    {
        var b = RandomBytes(r, r.Next(30, 1400));
        b[0] = 0x48;
        b[1] = (byte)(peerId >> 16);
        b[2] = (byte)(peerId >> 8);
        b[3] = (byte)peerId;
        return b;
    }
}
