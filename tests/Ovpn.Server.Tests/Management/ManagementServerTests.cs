// SPDX-License-Identifier: MIT
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Ovpn.Server.Management;

namespace Ovpn.Server.Tests.Management;

public class ManagementServerTests
{
    private static readonly TimeSpan T = TimeSpan.FromSeconds(5);

    [Fact]
    public async Task SocketIsCreatedOwnerOnlyAndRemovedOnDispose()
    {
        using var dir = new TempDir();
        var path = ManagementServer.PathFor(dir.Path);
        await using (var server = ManagementServer.Start(new FakeTarget(), dir.Path))
        {
            Assert.Equal(path, server.SocketPath);
            Assert.True(File.Exists(path));
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(path));
        }

        Assert.False(File.Exists(path));
    }

    [Fact]
    public async Task StatusAndVpnStatusRoundTrip()
    {
        using var dir = new TempDir();
        await using var server = ManagementServer.Start(new FakeTarget(), dir.Path);
        var status = await ManagementClient.SendAsync(dir.Path, "status", T);
        Assert.Equal("running", status.GetProperty("state").GetString());
        var dco = status.GetProperty("kernelDataChannelOffloading");
        Assert.Equal("NotAvailable", dco.GetProperty("state").GetString());
        Assert.Contains("kernel module not loaded", dco.GetProperty("text").GetString());

        var vpn = await ManagementClient.SendAsync(dir.Path, "vpnstatus", T);
        var c = vpn.GetProperty("clients")[0];
        Assert.Equal("alice", c.GetProperty("commonName").GetString());
        Assert.Equal(7u, c.GetProperty("peerId").GetUInt32());
        Assert.Equal(100, c.GetProperty("bytesIn").GetInt64());
        Assert.Equal("client uses compression framing", c.GetProperty("dataPathReason").GetString());
    }

    [Fact]
    public async Task ASlowCommandStillAnswersAfterTheRequestTimeout()
    {
        // The request timeout bounds reading the request only: a status that takes longer (a kernel
        // probe on a loaded machine) must still be answered, not dropped with a connection reset.
        using var dir = new TempDir();
        var target = new FakeTarget { StatusDelay = TimeSpan.FromMilliseconds(1500) };
        await using var server = ManagementServer.Start(target, dir.Path, requestTimeout: TimeSpan.FromMilliseconds(300));
        var status = await ManagementClient.SendAsync(dir.Path, "status", T);
        Assert.Equal("running", status.GetProperty("state").GetString());
    }

    [Fact]
    public async Task AConnectionThatNeverSendsARequestIsClosed()
    {
        using var dir = new TempDir();
        await using var server = ManagementServer.Start(new FakeTarget(), dir.Path, requestTimeout: TimeSpan.FromMilliseconds(300));
        using var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        await s.ConnectAsync(new System.Net.Sockets.UnixDomainSocketEndPoint(server.SocketPath));
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        int n;
        try
        {
            n = await s.ReceiveAsync(new byte[64], SocketFlags.None, cts.Token);
        }
        catch (SocketException)
        {
            n = 0; // a reset is a close too
        }

        Assert.Equal(0, n);
        Assert.False(cts.IsCancellationRequested);
    }

    [Fact]
    public async Task ReloadAndStopReachTheTarget()
    {
        using var dir = new TempDir();
        var target = new FakeTarget();
        await using var server = ManagementServer.Start(target, dir.Path);
        var r = await ManagementClient.SendAsync(dir.Path, "reload", T);
        Assert.Equal(1, target.Reloads);
        Assert.Equal(2, r.GetProperty("clientsKept").GetInt32());
        Assert.Equal("stopping", (await ManagementClient.SendAsync(dir.Path, "stop", T)).GetString());
        // The stop is done after the reply has been written.
        for (int i = 0; i < 50 && Volatile.Read(ref target.Stops) == 0; i++)
        {
            await Task.Delay(20);
        }

        Assert.Equal(1, target.Stops);
    }

    [Fact]
    public async Task UnknownCommandIsAUsageError()
    {
        using var dir = new TempDir();
        await using var server = ManagementServer.Start(new FakeTarget(), dir.Path);
        var e = await Assert.ThrowsAsync<ManagementException>(() => ManagementClient.SendAsync(dir.Path, "format-disk", T));
        Assert.Equal(ManagementCodes.Usage, e.Code);
        Assert.Contains("unknown command", e.Message);
    }

    [Fact]
    public async Task TargetFailureIsARuntimeError()
    {
        using var dir = new TempDir();
        await using var server = ManagementServer.Start(new FakeTarget { Throw = new InvalidOperationException("boom") }, dir.Path);
        var e = await Assert.ThrowsAsync<ManagementException>(() => ManagementClient.SendAsync(dir.Path, "status", T));
        Assert.Equal(ManagementCodes.Runtime, e.Code);
        Assert.Contains("boom", e.Message);
    }

    [Fact]
    public async Task MalformedRequestGetsAnErrorReply()
    {
        using var dir = new TempDir();
        await using var server = ManagementServer.Start(new FakeTarget(), dir.Path);
        using var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        await s.ConnectAsync(new UnixDomainSocketEndPoint(server.SocketPath));
        await s.SendAsync(Encoding.UTF8.GetBytes("this is not json\n"), SocketFlags.None);
        var buf = new byte[4096];
        int n = await s.ReceiveAsync(buf, SocketFlags.None).WaitAsync(T);
        using var doc = JsonDocument.Parse(buf.AsMemory(0, n));
        Assert.False(doc.RootElement.GetProperty("ok").GetBoolean());
        Assert.Equal(1, doc.RootElement.GetProperty("code").GetInt32());
    }

    [Fact]
    public async Task NoServerMeansNotRunning()
    {
        using var dir = new TempDir();
        await Assert.ThrowsAsync<ServerNotRunningException>(() => ManagementClient.SendAsync(dir.Path, "status", T));
        // A stale socket file left by a crashed server: still "not running", and a new server replaces it.
        var path = ManagementServer.PathFor(dir.Path);
        // Bound but never listening: connecting is refused, as for the file of a dead process.
        using var stale = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        stale.Bind(new UnixDomainSocketEndPoint(path));
        Assert.True(File.Exists(path));
        await Assert.ThrowsAsync<ServerNotRunningException>(() => ManagementClient.SendAsync(dir.Path, "status", T));
        await using var server = ManagementServer.Start(new FakeTarget(), dir.Path);
        Assert.Equal("pong", (await ManagementClient.SendAsync(dir.Path, "ping", T)).GetString());
    }

    [Fact]
    public async Task SecondServerOnTheSameDirectoryIsRefused()
    {
        using var dir = new TempDir();
        await using var first = ManagementServer.Start(new FakeTarget(), dir.Path);
        var e = Assert.Throws<InvalidOperationException>(() => ManagementServer.Start(new FakeTarget(), dir.Path));
        Assert.Contains("already running", e.Message);
        Assert.Equal("pong", (await ManagementClient.SendAsync(dir.Path, "ping", T)).GetString());
    }

    [Fact]
    public void KernelProbeReadsSysfs()
    {
        using var dir = new TempDir();
        var none = KernelDcoProbe.Probe(dir.Path);
        Assert.False(none.Available);
        Assert.Contains("kernel module not loaded", none.Reason);

        Directory.CreateDirectory(Path.Combine(dir.Path, "module", "ovpn_dco_v2"));
        File.WriteAllText(Path.Combine(dir.Path, "module", "ovpn_dco_v2", "version"), "0.2.20250801\n");
        var dco = KernelDcoProbe.Probe(dir.Path);
        Assert.True(dco.Available);
        Assert.Equal("ovpn_dco_v2", dco.Module);
        Assert.Equal("0.2.20250801", dco.Version);
    }

    [Fact]
    public void StatusRowHasThreeStates()
    {
        var clean = new ControlPlane.Dco.DcoReview(true, [], ["AES-256-GCM"], false);
        var kernel = new KernelDcoInfo(true, "ovpn", "6.16", null);
        var active = DcoStatusBuilder.Build(true, "kernel-ovpn", "6.16", kernel, clean);
        Assert.Equal(DcoState.Active, active.State);
        Assert.Contains("kernel-ovpn", active.Text);

        var off = DcoStatusBuilder.Build(false, "ovpnas-userspace", "1.0", kernel, clean);
        Assert.Equal(DcoState.AvailableInactive, off.State);
        Assert.Contains("disabled in configuration", off.Text);

        var blocked = new ControlPlane.Dco.DcoReview(true,
            [new ControlPlane.Dco.DcoFinding("vpn.server.config_text", 2, "fragment 1300", "fragment", ControlPlane.Dco.DcoCompatibility.Incompatible, "userspace only")], [], false);
        var b = DcoStatusBuilder.Build(true, "ovpnas-userspace", "1.0", kernel, blocked);
        Assert.Equal(DcoState.AvailableInactive, b.State);
        Assert.Contains("fragment", b.Text);

        var missing = DcoStatusBuilder.Build(true, "ovpnas-userspace", "1.0", FakeTarget.NoKernel, clean);
        Assert.Equal(DcoState.NotAvailable, missing.State);
        Assert.Contains("kernel module not loaded", missing.Text);
    }
}
