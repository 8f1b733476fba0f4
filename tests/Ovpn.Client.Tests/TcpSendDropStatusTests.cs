// SPDX-License-Identifier: MIT
using System.Net;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Ovpn.Testing;

namespace Ovpn.Client.Tests;

/// <summary>
/// A TCP client that stops reading fills its bounded send queue on the server; the packets the
/// queue refuses must show up in `sacli VPNStatus`, for that client and in the totals.
/// </summary>
public sealed partial class TcpSendDropStatusTests
{
    private const int SigStop = 19;
    private const int SigCont = 18;

    [GeneratedRegex("listening on UDP")]
    private static partial Regex Listening();

    [RequiresFact(Requirement.Root, Requirement.Tun)]
    public async Task Send_queue_drops_of_a_stalled_tcp_client_appear_in_vpn_status()
    {
        Requirements.RequireOrFail(Requirement.Root, Requirement.Tun);
        NetNs.CleanupStale();
        var (srv, cli) = NetNs.CreateVethPair("10.78.0.1/24", "10.78.0.2/24");
        string dir = Directory.CreateTempSubdirectory("ovpnt-tcpdrop-").FullName;
        NetNsProcess? server = null, client = null;
        try
        {
            string data = Path.Combine(dir, "srv");
            string dll = ClientRig.OvpnasDll;
            Check(srv.Exec(TimeSpan.FromSeconds(60), "dotnet", dll, "init", "--data-dir", data, "--hostname", "10.78.0.1"));
            Check(srv.Exec(TimeSpan.FromSeconds(60), "dotnet", dll, "user", "add", "alice", "--data-dir", data));
            string profile = Path.Combine(dir, "alice.ovpn");
            Check(srv.Exec(TimeSpan.FromSeconds(60), "dotnet", dll, "profile", "alice", "--data-dir", data, "--out", profile));
            var lines = File.ReadAllText(profile).Split('\n')
                .Where(l => !l.StartsWith("remote ", StringComparison.Ordinal) || l.Contains("tcp", StringComparison.Ordinal));
            File.WriteAllText(profile, string.Join('\n', lines));

            server = srv.Start("dotnet", dll, "serve", "--data-dir", data);
            await server.WaitForLineAsync(Listening(), TimeSpan.FromSeconds(30));
            client = cli.StartIn(dir, "dotnet", dll, "connect", profile, "--data-dir", Path.Combine(dir, "cli"));
            await client.WaitForLineAsync(ClientRig.Initialized(), TimeSpan.FromSeconds(40));

            var before = VpnStatus(srv, dll, data);
            var c0 = Assert.Single(before["clients"]!.AsArray())!;
            string vpn = c0["vpnAddress"]!.GetValue<string>();
            Assert.Null(c0["drops"]?["TcpSendQueueFull"]);

            // The client process stops: its TCP receive window closes, the server's send queue
            // fills up to its bound, and from then on data packets to it are dropped and counted.
            Assert.True(client.Signal(SigStop));
            // 30000 x ~1.3 kB = ~40 MB towards the client's VPN address, far beyond the kernel
            // socket buffers plus the 2 MiB queue bound.
            string flood = "import socket\n" +
                "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n" +
                $"for i in range(30000): s.sendto(b'x' * 1300, ('{vpn}', 9))\n";
            var f = srv.Exec(TimeSpan.FromSeconds(60), "python3", "-c", flood);
            Assert.True(f.ExitCode == 0, f.ToString());

            var after = VpnStatus(srv, dll, data);
            var c1 = Assert.Single(after["clients"]!.AsArray())!;
            long perClient = c1["drops"]?["TcpSendQueueFull"]?.GetValue<long>() ?? 0;
            long total = after["globalDrops"]?["TcpSendQueueFull"]?.GetValue<long>() ?? 0;
            Assert.True(perClient > 0, $"no per-client TCP send drops in:\n{after.ToJsonString()}");
            Assert.True(total >= perClient, $"total {total} < per-client {perClient}");
            Assert.True(client.Signal(SigCont));
        }
        finally
        {
            if (client is not null)
            {
                client.Signal(SigCont);
                client.Signal(Ovpn.Platform.Linux.LinuxProcess.SIGTERM);
                await client.WaitForExitAsync(TimeSpan.FromSeconds(10));
                await client.DisposeAsync();
            }

            if (server is not null)
            {
                server.Signal(Ovpn.Platform.Linux.LinuxProcess.SIGTERM);
                await server.WaitForExitAsync(TimeSpan.FromSeconds(10));
                await server.DisposeAsync();
            }

            await cli.DisposeAsync();
            await srv.DisposeAsync();
            Directory.Delete(dir, recursive: true);
        }
    }

    private static JsonNode VpnStatus(NetNs ns, string dll, string data)
    {
        var r = ns.Exec(TimeSpan.FromSeconds(30), "dotnet", dll, "sacli", "VPNStatus", "--data-dir", data);
        Check(r);
        return JsonNode.Parse(r.Stdout) ?? throw new InvalidOperationException("empty VPNStatus");
    }

    private static void Check(ExecResult r) => Assert.True(r.ExitCode == 0, r.ToString());
}
