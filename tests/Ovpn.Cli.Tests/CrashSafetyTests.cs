// SPDX-License-Identifier: MIT
using System.Diagnostics;
using Ovpn.ControlPlane.Config;

namespace Ovpn.Cli.Tests;

/// <summary>
/// A writer killed with SIGKILL in the middle of its work loses nothing it had acknowledged: real
/// `ovpnas sacli ConfigPut` processes write in a loop, the loop and its current child are killed at
/// varying moments, and the database then opens, passes SQLite's integrity check and holds every
/// value whose ConfigPut had exited 0.
/// </summary>
public sealed class CrashSafetyTests : IDisposable
{
    private readonly CliHarness _cli = new();

    public void Dispose() => _cli.Dispose();

    [Theory]
    [InlineData(1500)]
    [InlineData(2300)]
    [InlineData(3100)]
    public void KilledWriterLosesNoAcknowledgedWrite(int killAfterMs)
    {
        _cli.RunOk("init", "--hostname", "vpn.example.org");
        string dll = Path.Combine(AppContext.BaseDirectory, "ovpnas.dll");
        string acks = Path.Combine(_cli.DataDir, "acks.txt");
        // Each ConfigPut writes a distinct key; "ok N" is appended only after it exited 0.
        string script = $"for i in $(seq 1 200); do dotnet '{dll}' sacli --data-dir '{_cli.DataDir}' " +
                        $"-k vpn.server.routing.private_network.$i -v 10.$((i % 250)).0.0/16 ConfigPut >/dev/null && echo \"ok $i\" >> '{acks}'; done";
        var psi = new ProcessStartInfo("setsid", ["bash", "-c", script]) { UseShellExecute = false };
        using var writer = Process.Start(psi)!;
        Thread.Sleep(killAfterMs);
        // The whole process group: the loop and the ConfigPut that is running right now.
        Process.Start("kill", ["-KILL", "--", "-" + writer.Id])!.WaitForExit(5000);
        Assert.True(writer.WaitForExit(10_000), "writer did not die");

        var acked = File.Exists(acks) ? File.ReadAllLines(acks).Select(l => int.Parse(l[3..], System.Globalization.CultureInfo.InvariantCulture)).ToList() : [];
        Assert.NotEmpty(acked);

        var db = OvpnDatabase.Open(_cli.DataDir);
        using (var c = db.OpenConnection())
        {
            using var cmd = c.CreateCommand();
            cmd.CommandText = "PRAGMA integrity_check";
            Assert.Equal("ok", cmd.ExecuteScalar() as string);
        }

        var store = new ConfigStore(db);
        foreach (int i in acked)
        {
            Assert.Equal($"10.{i % 250}.0.0/16", store.Get($"vpn.server.routing.private_network.{i}"));
        }

        // The database still takes writes after the crash.
        _cli.RunOk("sacli", "-k", "vpn.server.tun_mtu", "-v", "1400", "ConfigPut");
        Assert.Equal("1400", store.Get("vpn.server.tun_mtu"));
    }
}
