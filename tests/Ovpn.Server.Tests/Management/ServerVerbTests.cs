// SPDX-License-Identifier: MIT
using System.Text.Json;
using Ovpn.Cli;
using Ovpn.ControlPlane.Config;
using Ovpn.Server.Management;

namespace Ovpn.Server.Tests.Management;

/// <summary>The sacli server verbs through the real command line, against a fake server. One class: ServerCommands.Errors is static.</summary>
public class ServerVerbTests
{
    private static (int Rc, string Out, string Err) Run(params string[] args)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        ServerCommands.Errors = e;
        int rc = Program.Run(args, o, e);
        return (rc, o.ToString(), e.ToString());
    }

    [Fact]
    public async Task StatusPrintsJsonAndExitsZero()
    {
        using var dir = new TempDir();
        await using var server = ManagementServer.Start(new FakeTarget(), dir.Path);
        var (rc, o, _) = Run("sacli", "--data-dir", dir.Path, "Status");
        Assert.Equal(0, rc);
        using var doc = JsonDocument.Parse(o);
        Assert.Equal("running", doc.RootElement.GetProperty("state").GetString());
        Assert.Equal("NotAvailable", doc.RootElement.GetProperty("kernelDataChannelOffloading").GetProperty("state").GetString());
    }

    [Fact]
    public async Task VpnStatusListsClients()
    {
        using var dir = new TempDir();
        await using var server = ManagementServer.Start(new FakeTarget(), dir.Path);
        var (rc, o, _) = Run("sacli", "--data-dir", dir.Path, "VPNStatus");
        Assert.Equal(0, rc);
        using var doc = JsonDocument.Parse(o);
        Assert.Equal("172.27.224.2", doc.RootElement.GetProperty("clients")[0].GetProperty("vpnAddress").GetString());
    }

    [Theory]
    [InlineData("Status")]
    [InlineData("VPNStatus")]
    [InlineData("start")]
    [InlineData("stop")]
    public void VerbsExitThreeWhenNotRunning(string verb)
    {
        using var dir = new TempDir();
        var (rc, _, err) = Run("sacli", "--data-dir", dir.Path, verb);
        Assert.Equal(3, rc);
        Assert.Contains("server not running", err);
    }

    [Fact]
    public void OfflineStatusStillPrintsJson()
    {
        using var dir = new TempDir();
        var (rc, o, _) = Run("sacli", "--data-dir", dir.Path, "Status");
        Assert.Equal(3, rc);
        using var doc = JsonDocument.Parse(o);
        Assert.Equal("not running", doc.RootElement.GetProperty("state").GetString());
    }

    [Fact]
    public async Task StartReloadsAndPrintsWhatWasApplied()
    {
        using var dir = new TempDir();
        var target = new FakeTarget();
        await using var server = ManagementServer.Start(target, dir.Path);
        var (rc, o, _) = Run("sacli", "--data-dir", dir.Path, "start");
        Assert.Equal(0, rc);
        Assert.Equal(1, target.Reloads);
        using var doc = JsonDocument.Parse(o);
        Assert.Equal("host.name: used for new profiles", doc.RootElement.GetProperty("applied")[0].GetString());
    }

    [Fact]
    public async Task StartWithInvalidConfigExitsOne()
    {
        using var dir = new TempDir();
        var target = new FakeTarget { Throw = new ConfigValidationException("vpn.server.tun_mtu", "500", "an integer 576..65536") };
        await using var server = ManagementServer.Start(target, dir.Path);
        var (rc, _, err) = Run("sacli", "--data-dir", dir.Path, "start");
        Assert.Equal(1, rc);
        Assert.Contains("vpn.server.tun_mtu", err);
    }

    [Fact]
    public async Task RuntimeFailureExitsTwo()
    {
        using var dir = new TempDir();
        await using var server = ManagementServer.Start(new FakeTarget { Throw = new InvalidOperationException("engine exploded") }, dir.Path);
        var (rc, _, err) = Run("sacli", "--data-dir", dir.Path, "Status");
        Assert.Equal(2, rc);
        Assert.Contains("engine exploded", err);
    }

    [Fact]
    public async Task StopWaitsUntilTheServerIsGone()
    {
        using var dir = new TempDir();
        var target = new FakeTarget();
        var server = ManagementServer.Start(target, dir.Path);
        target.OnStop = () => _ = Task.Run(async () =>
        {
            await Task.Delay(300);
            await server.DisposeAsync();
        });
        var (rc, _, _) = Run("sacli", "--data-dir", dir.Path, "stop");
        Assert.Equal(0, rc);
        Assert.Equal(1, target.Stops);
        Assert.False(File.Exists(server.SocketPath));
    }

    [Fact]
    public void UnknownVerbIsUsageError()
    {
        using var dir = new TempDir();
        var (rc, _, err) = Run("sacli", "--data-dir", dir.Path, "Frobnicate");
        Assert.Equal(1, rc);
        Assert.Contains("unknown sacli verb", err);
    }

    [Fact]
    public void DoctorReportsChecksWithFixes()
    {
        using var dir = new TempDir();
        var sys = Directory.CreateDirectory(Path.Combine(dir.Path, "sys")).FullName;
        var proc = Path.Combine(dir.Path, "proc");
        Directory.CreateDirectory(Path.Combine(proc, "self"));
        Directory.CreateDirectory(Path.Combine(proc, "sys", "kernel"));
        File.WriteAllText(Path.Combine(proc, "sys", "kernel", "osrelease"), "6.99.0-test\n");
        File.WriteAllText(Path.Combine(proc, "self", "status"), "Name:\tx\nCapEff:\t0000000000000000\n");
        var efivars = Directory.CreateDirectory(Path.Combine(sys, "firmware", "efi", "efivars")).FullName;
        File.WriteAllBytes(Path.Combine(efivars, "SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"), [6, 0, 0, 0, 1]);

        var checks = Doctor.Run(Path.Combine(dir.Path, "nodb"), sys, proc);
        var byName = checks.ToDictionary(c => c.Name, c => c, StringComparer.Ordinal);
        Assert.Equal(Doctor.Warn, byName["kernel module"].Level);
        Assert.NotNull(byName["kernel module"].Fix);
        Assert.Contains("6.99.0-test", byName["kernel headers"].Detail);
        Assert.Contains("Secure Boot enabled", byName["secure boot"].Detail);
        Assert.Contains("mokutil", byName["secure boot"].Fix);
        Assert.Equal(Doctor.Fail, byName["CAP_NET_ADMIN"].Level);

        File.WriteAllText(Path.Combine(proc, "self", "status"), "CapEff:\t000001ffffffffff\n");
        Directory.CreateDirectory(Path.Combine(sys, "module", "ovpn"));
        File.WriteAllText(Path.Combine(sys, "module", "ovpn", "version"), "1.0\n");
        var again = Doctor.Run(Path.Combine(dir.Path, "nodb"), sys, proc).ToDictionary(c => c.Name, c => c, StringComparer.Ordinal);
        Assert.Equal(Doctor.Ok, again["CAP_NET_ADMIN"].Level);
        Assert.Equal(Doctor.Ok, again["kernel module"].Level);
        Assert.Contains("ovpn loaded, version 1.0", again["kernel module"].Detail);
    }
}
