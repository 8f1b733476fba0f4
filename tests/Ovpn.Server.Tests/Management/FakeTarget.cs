// SPDX-License-Identifier: MIT
using Ovpn.ControlPlane.Config;
using Ovpn.ControlPlane.Dco;
using Ovpn.Server.Management;

namespace Ovpn.Server.Tests.Management;

/// <summary>A management target with fixed answers; records calls.</summary>
internal sealed class FakeTarget : IManagementTarget
{
    public int Reloads;
    public int Stops;
    public Exception? Throw;
    public TimeSpan StatusDelay;
    public Action? OnStop;
    public ReloadResult NextReload = new(["host.name: used for new profiles"], [], ["vpn.server.tun_mtu"], 2);

    public static readonly KernelDcoInfo NoKernel = new(false, null, null, "kernel module not loaded");

    public ServiceStatus GetStatus()
    {
        if (StatusDelay > TimeSpan.Zero)
        {
            Thread.Sleep(StatusDelay);
        }

        if (Throw is { } e)
        {
            throw e;
        }

        var review = new DcoReview(true, [], ["AES-256-GCM"], false);
        return new ServiceStatus("running", 42, DateTimeOffset.UnixEpoch, "ovpnas-userspace", "1.0",
            DcoStatusBuilder.Build(true, "ovpnas-userspace", "1.0", NoKernel, review), ["udp [::]:1194"], 1, []);
    }

    public VpnStatus GetVpnStatus() => new(
        [new ClientStatus("alice", "udp 10.0.0.2:5000", "172.27.224.2", 7, "AES-256-GCM", "2.6.14", DateTimeOffset.UnixEpoch, true,
            "ovpnas-userspace", "client uses compression framing", 100, 200, 3, 4, new Dictionary<string, long> { ["Replay"] = 1 })],
        new Dictionary<string, long>());

    public ReloadResult Reload()
    {
        Interlocked.Increment(ref Reloads);
        if (Throw is { } e)
        {
            throw e;
        }

        return NextReload;
    }

    public void RequestStop()
    {
        Interlocked.Increment(ref Stops);
        OnStop?.Invoke();
    }

    public DcoReview GetDcoReview() => new(true, [new DcoFinding(ConfigKeys.ServerConfigText, 1, "fragment 1300", "fragment", DcoCompatibility.Incompatible, "no")], [], false);
}

/// <summary>A temporary data directory, removed on dispose.</summary>
internal sealed class TempDir : IDisposable
{
    public string Path { get; } = Directory.CreateTempSubdirectory("ovpnas-mgmt-").FullName;

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, true);
        }
        catch (IOException)
        {
        }
    }
}
