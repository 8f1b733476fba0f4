// SPDX-License-Identifier: MIT
using System.Net;
using System.Text.Json;
using System.Text.RegularExpressions;
using Ovpn.ControlPlane.Config;
using Ovpn.Testing;

namespace Ovpn.Admin.Tests;

/// <summary>sacli start / Status / VPNStatus / stop against a real `ovpnas serve` with a connected stock client.</summary>
[Collection("serve")]
public sealed partial class ServeLifecycleTests
{
    [GeneratedRegex("Initialization Sequence Completed")]
    private static partial Regex Ready();

    private static (int Rc, string Out, string Err) Cli(string dataDir, params string[] args)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        Ovpn.Cli.ServerCommands.Errors = e;
        int rc = Ovpn.Cli.Program.Run([.. args, "--data-dir", dataDir], o, e);
        return (rc, o.ToString(), e.ToString());
    }

    private static JsonElement Json(string text)
    {
        using var doc = JsonDocument.Parse(text);
        return doc.RootElement.Clone();
    }

    [Fact]
    public async Task StartKeepsUnaffectedClientsRestartsForFixedKeysAndStopEndsTheServer()
    {
        Requirements.RequireOrFail(Requirement.Root, Requirement.Tun, Requirement.OpenVpn);
        NetNs.CleanupStale();
        var dir = Directory.CreateTempSubdirectory("ovpnas-lifecycle-").FullName;
        var (srv, cli) = NetNs.CreateVethPair("10.211.8.1/24", "10.211.8.2/24");
        try
        {
            Assert.Equal(0, Cli(dir, "init", "--hostname", "10.211.8.1").Rc);
            Assert.Equal(0, Cli(dir, "user", "add", "dave").Rc);
            var profile = Cli(dir, "profile", "dave").Out;
            Assert.Equal(3, Cli(dir, "sacli", "Status").Rc);

            await using var server = srv.Start("dotnet", ServeFixture.OvpnasDll, "serve", "--data-dir", dir);
            await server.WaitForLineAsync(Ready(), TimeSpan.FromSeconds(60));
            await using var vpn = OpenVpnProcess.Start(cli, profile);
            await vpn.WaitInitializedAsync(TimeSpan.FromSeconds(60));
            Assert.Equal(0.0, (await TrafficCheck.PingAsync(cli, IPAddress.Parse("172.27.224.1"), count: 2)).Loss);

            var before = Json(Cli(dir, "sacli", "VPNStatus").Out).GetProperty("clients")[0];
            var startedBefore = Json(Cli(dir, "sacli", "Status").Out).GetProperty("startedAt").GetString();

            // A live key: applied, the client stays connected with the same peer-id and session.
            Assert.Equal(0, Cli(dir, "sacli", "-k", ConfigKeys.HostName, "-v", "vpn2.example.org", "ConfigPut").Rc);
            var (rc, o, err) = Cli(dir, "sacli", "start");
            Assert.True(rc == 0, err);
            var r = Json(o);
            Assert.False(r.GetProperty("restarting").GetBoolean());
            Assert.Contains(r.GetProperty("applied").EnumerateArray(), a => a.GetString()!.StartsWith(ConfigKeys.HostName));
            Assert.Equal(1, r.GetProperty("clientsKept").GetInt32());
            var after = Json(Cli(dir, "sacli", "VPNStatus").Out).GetProperty("clients")[0];
            Assert.Equal(before.GetProperty("peerId").GetUInt32(), after.GetProperty("peerId").GetUInt32());
            Assert.Equal(before.GetProperty("connectedAt").GetString(), after.GetProperty("connectedAt").GetString());
            Assert.Equal(0.0, (await TrafficCheck.PingAsync(cli, IPAddress.Parse("172.27.224.1"), count: 2)).Loss);

            // A configuration that cannot run is refused; the service keeps running.
            Assert.Equal(0, Cli(dir, "sacli", "-k", ConfigKeys.OsiLayer, "-v", "2", "ConfigPut").Rc);
            (rc, _, err) = Cli(dir, "sacli", "start");
            Assert.Equal(2, rc);
            Assert.Contains("osi_layer 2", err);
            Assert.Equal(0, Cli(dir, "sacli", "-k", ConfigKeys.OsiLayer, "ConfigDel").Rc);
            Assert.Equal(startedBefore, Json(Cli(dir, "sacli", "Status").Out).GetProperty("startedAt").GetString());

            // A fixed key: the VPN service restarts in-process with the new MTU.
            Assert.Equal(0, Cli(dir, "sacli", "-k", ConfigKeys.TunMtu, "-v", "1400", "ConfigPut").Rc);
            (rc, o, err) = Cli(dir, "sacli", "start");
            Assert.True(rc == 0, err);
            Assert.True(Json(o).GetProperty("restarting").GetBoolean());
            string? startedAfter = null;
            for (int i = 0; i < 100 && (startedAfter is null || startedAfter == startedBefore); i++)
            {
                await Task.Delay(100);
                var s = Cli(dir, "sacli", "Status");
                startedAfter = s.Rc == 0 ? Json(s.Out).GetProperty("startedAt").GetString() : null;
            }

            Assert.NotEqual(startedBefore, startedAfter);
            Assert.Contains("mtu 1400", srv.ExecChecked("ip", "link", "show", "as0t0").Stdout);

            // stop: exit code 0, the process ends, then "not running" (3).
            (rc, _, err) = Cli(dir, "sacli", "stop");
            Assert.True(rc == 0, err);
            Assert.True(await server.WaitForExitAsync(TimeSpan.FromSeconds(20)), server.Tail());
            Assert.Equal(0, server.ExitCode);
            Assert.Equal(3, Cli(dir, "sacli", "VPNStatus").Rc);
        }
        finally
        {
            cli.Dispose();
            srv.Dispose();
            Directory.Delete(dir, true);
        }
    }
}
