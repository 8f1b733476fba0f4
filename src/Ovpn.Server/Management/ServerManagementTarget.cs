// SPDX-License-Identifier: MIT
using Ovpn.ControlPlane.Config;
using Ovpn.ControlPlane.Dco;

namespace Ovpn.Server.Management;

/// <summary>
/// The management target of a running `ovpnas serve`: status from the host, Reload re-reads the
/// config database of the data directory. When a reload contains changes that need a restart,
/// <see cref="RestartRequested"/> is raised (the serve loop may restart the host) — unless the
/// caller set <see cref="AutoRestart"/> to false.
/// </summary>
public sealed class ServerManagementTarget(string dataDir, Action requestStop) : IManagementTarget
{
    private volatile ServerHost? _host;

    /// <summary>The host currently serving (swapped by the serve loop on restart).</summary>
    public ServerHost? Host
    {
        get => _host;
        set => _host = value;
    }

    public bool AutoRestart { get; set; } = true;

    /// <summary>Raised after a reload that needs a restart (handlers must not block).</summary>
    public event Action<ReloadResult>? RestartRequested;

    /// <summary>Probe used for the kernel module (replaceable for tests).</summary>
    public Func<KernelDcoInfo> KernelProbe { get; set; } = KernelDcoProbe.ProbeKernel;

    private ServerHost RequireHost() => _host ?? throw new InvalidOperationException("the VPN service is (re)starting");

    public ServiceStatus GetStatus()
    {
        var h = RequireHost();
        var dco = h.GetDcoStatus(KernelProbe());
        return new ServiceStatus("running", Environment.ProcessId, h.StartedAt, h.DataPlane.EngineName, h.DataPlane.EngineVersion,
            dco, h.Listeners, h.Sessions.SessionCount, []);
    }

    public VpnStatus GetVpnStatus() => RequireHost().GetVpnStatus();

    public DcoReview GetDcoReview() => DcoRules.Review(RequireHost().EffectiveSettings ?? throw new InvalidOperationException("no settings"));

    public ReloadResult Reload()
    {
        var next = ServerSettings.From(ConfigStore.Open(dataDir));
        var result = RequireHost().Reload(next, KernelProbe());
        if (result.NeedsRestart && AutoRestart && RestartRequested is { } handler)
        {
            // The handler validates the new configuration (it throws if it cannot be started).
            handler(result);
            result = result with { Restarting = true };
        }

        return result;
    }

    public void RequestStop() => requestStop();
}
