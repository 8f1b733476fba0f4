// SPDX-License-Identifier: MIT
using Ovpn.ControlPlane.Config;
using Ovpn.ControlPlane.Dco;
using Ovpn.Server.Management;

namespace Ovpn.Server;

/// <summary>Status snapshots and live reconfiguration for the management socket and the admin UI.</summary>
public sealed partial class ServerHost
{
    private readonly object _mgmtLock = new();
    private ServerSettings? _effective;
    private DateTimeOffset _startedAt = DateTimeOffset.UtcNow;

    /// <summary>The settings in effect (those the host was built from, plus what Reload applied).</summary>
    public ServerSettings? EffectiveSettings
    {
        get
        {
            lock (_mgmtLock)
            {
                return _effective;
            }
        }
    }

    public DateTimeOffset StartedAt => _startedAt;

    /// <summary>Records the settings the host was built from; call once after Start().</summary>
    public void AttachSettings(ServerSettings settings)
    {
        lock (_mgmtLock)
        {
            _effective = settings;
            _startedAt = DateTimeOffset.UtcNow;
        }
    }

    /// <summary>The "Kernel data channel offloading" row for the settings in effect.</summary>
    public DcoStatus GetDcoStatus(KernelDcoInfo kernel)
    {
        var settings = EffectiveSettings ?? throw new InvalidOperationException("no settings attached");
        var review = DcoRules.Review(settings);
        string engine = _paths is null ? "none" : DataPlane.EngineName;
        string version = _paths is null ? "" : DataPlane.EngineVersion;
        var status = DcoStatusBuilder.Build(settings.Dco, engine, version, kernel, review);
        // The host's own account of the offload mode (kernel module, or the userspace offload engine and why).
        return status with { Reason = status.Reason is null ? OffloadStatus : $"{status.Reason}; data path: {OffloadStatus}" };
    }

    /// <summary>Connected clients with their data path and counters.</summary>
    public VpnStatus GetVpnStatus()
    {
        var planes = _paths?.Paths.Select(p => p.Plane).Distinct().ToList() ?? [];
        var byId = new Dictionary<uint, DataPlane.PeerStats>();
        var global = new Dictionary<string, long>();
        foreach (var plane in planes)
        {
            foreach (var p in plane.GetPeers())
            {
                byId[p.PeerId] = p;
            }

            foreach (var (k, v) in plane.GlobalDrops)
            {
                global[k] = global.GetValueOrDefault(k) + v;
            }
        }

        AddTcpSendDrops(global);
        // A session's real address is its link's Describe(): that finds a TCP client's connection,
        // whose send-queue drops join the engine's per-peer drop reasons.
        var tcpByAddress = new Dictionary<string, Ovpn.DataPlane.Transport.TcpLinkTransport>();
        foreach (var link in _tcpLinks.Keys)
        {
            tcpByAddress[link.Describe()] = link;
        }

        var list = new List<ClientStatus>();
        foreach (var s in _sessions.GetSessions())
        {
            PeerStatsOrEmpty(s.PeerId, byId, out var st);
            var drops = st?.Drops is { } d ? new Dictionary<string, long>(d) : new Dictionary<string, long>();
            if (tcpByAddress.TryGetValue(s.RealAddress, out var tcp))
            {
                AddDrop(drops, TcpSendQueueFullDrop, tcp.DroppedDataPackets);
                AddDrop(drops, TcpSendQueueFullControlDrop, tcp.DroppedControlPackets);
            }

            list.Add(new ClientStatus(s.CommonName, s.RealAddress, s.VpnAddress, s.PeerId, s.Cipher, s.ClientVersion, s.ConnectedAt,
                s.Authenticated, s.DataPath, s.DataPathReason,
                st?.VpnRxBytes ?? 0, st?.VpnTxBytes ?? 0, st?.VpnRxPackets ?? 0, st?.VpnTxPackets ?? 0,
                drops));
        }

        return new VpnStatus(list, global);
    }

    private static void PeerStatsOrEmpty(uint? id, Dictionary<uint, DataPlane.PeerStats> byId, out DataPlane.PeerStats? st) =>
        st = id is { } i && byId.TryGetValue(i, out var p) ? p : null;

    public IReadOnlyList<string> Listeners
    {
        get
        {
            var l = new List<string>();
            if (UdpEndPoint is { } u)
            {
                l.Add($"udp {u}");
            }

            if (TcpEndPoint is { } t)
            {
                l.Add($"tcp {t}");
            }

            return l;
        }
    }

    /// <summary>
    /// Applies what can change while clients stay connected and lists what needs a restart. The
    /// listeners, pool, ciphers and pushed options are fixed in the running session manager, so
    /// their changes are reported, not applied; nothing here drops a client.
    /// </summary>
    public ReloadResult Reload(ServerSettings next, KernelDcoInfo kernel)
    {
        lock (_mgmtLock)
        {
            var cur = _effective ?? throw new InvalidOperationException("no settings attached");
            var applied = new List<string>();
            var restart = new List<string>();
            var same = new List<string>();

            void Live(string key, bool changed, string what)
            {
                (changed ? applied : same).Add(changed ? $"{key}: {what}" : key);
            }

            void Fixed(string key, bool changed, string why)
            {
                (changed ? restart : same).Add(changed ? $"{key}: {why}" : key);
            }

            // Offload mode and daemon mode have different data paths (and TUN devices): a switch restarts.
            Fixed(ConfigKeys.Dco, next.Dco != cur.Dco, next.Dco
                ? $"switching to offload mode recreates the data paths ({(kernel.Available ? "kernel module " + kernel.Module : "kernel module not available: userspace offload engine")})"
                : "switching to daemon mode recreates the data paths");

            Live(ConfigKeys.HostName, next.Hostname != cur.Hostname, "used for new profiles");
            Live(ConfigKeys.ClientConfigText, next.ClientConfigText != cur.ClientConfigText, "used for new profiles; reviewed for DCO");
            Live(ConfigKeys.ServerConfigText, next.ServerConfigText != cur.ServerConfigText, "reviewed for DCO");
            Fixed(ConfigKeys.HttpsPort, next.HttpsPort != cur.HttpsPort, "the admin web server listens on the old port until restart");
            Fixed(ConfigKeys.DaemonEnable, next.DaemonEnabled != cur.DaemonEnabled, "use 'sacli stop' to stop the service");
            Fixed(ConfigKeys.Protocols, next.UdpEnabled != cur.UdpEnabled || next.TcpEnabled != cur.TcpEnabled, "listeners are opened at start");
            Fixed(ConfigKeys.UdpPort, next.UdpPort != cur.UdpPort, "listeners are opened at start");
            Fixed(ConfigKeys.TcpPort, next.TcpPort != cur.TcpPort, "listeners are opened at start");
            Fixed(ConfigKeys.UdpDaemons, next.UdpDaemons != cur.UdpDaemons, "worker count is fixed at start");
            Fixed(ConfigKeys.TcpDaemons, next.TcpDaemons != cur.TcpDaemons, "worker count is fixed at start");
            Fixed(ConfigKeys.PoolNetwork, next.Pool != cur.Pool, "connected clients hold addresses of the current pool");
            Fixed(ConfigKeys.DataCiphers, !next.DataCiphers.SequenceEqual(cur.DataCiphers), "cipher negotiation settings are fixed at start");
            Fixed(ConfigKeys.TlsCcSecurity, next.TlsMode != cur.TlsMode, "control channel wrapping is fixed at start");
            Fixed(ConfigKeys.OsiLayer, next.OsiLayer != cur.OsiLayer, "the device type is fixed at start");
            Fixed(ConfigKeys.TunMtu, next.TunMtu != cur.TunMtu, "the tun MTU is pushed at connect and set on the device at start");
            Fixed(ConfigKeys.DnsPrefix, !next.DnsServers.SequenceEqual(cur.DnsServers), "pushed options are fixed at start");
            Fixed(ConfigKeys.PrivateNetworkPrefix, !next.PrivateRoutes.SequenceEqual(cur.PrivateRoutes), "pushed options are fixed at start");
            Fixed(ConfigKeys.RerouteGw, next.RerouteGateway != cur.RerouteGateway, "pushed options are fixed at start");
            Fixed(ConfigKeys.Ping, next.PingSeconds != cur.PingSeconds, "keepalive settings are fixed at start");
            Fixed(ConfigKeys.PingRestart, next.PingRestartSeconds != cur.PingRestartSeconds, "keepalive settings are fixed at start");
            Fixed(ConfigKeys.RenegSec, next.RenegSeconds != cur.RenegSeconds, "renegotiation interval is fixed at start");

            // Only the live part becomes effective; fixed keys keep their running values so status stays truthful.
            _effective = cur with
            {
                Hostname = next.Hostname,
                ClientConfigText = next.ClientConfigText,
                ServerConfigText = next.ServerConfigText,
            };
            return new ReloadResult(applied, restart, same, _sessions.SessionCount);
        }
    }
}
