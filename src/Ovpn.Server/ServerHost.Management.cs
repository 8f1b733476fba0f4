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
        string engine = _dataPlane?.EngineName ?? "none";
        string version = _dataPlane?.EngineVersion ?? "";
        return DcoStatusBuilder.Build(settings.Dco, engine, version, kernel, review);
    }

    /// <summary>Connected clients with their data path and counters.</summary>
    public VpnStatus GetVpnStatus()
    {
        var peers = _dataPlane?.GetPeers() ?? [];
        var byId = peers.ToDictionary(p => p.PeerId);
        var list = new List<ClientStatus>();
        foreach (var s in _sessions.GetSessions())
        {
            PeerStatsOrEmpty(s.PeerId, byId, out var st);
            list.Add(new ClientStatus(s.CommonName, s.RealAddress, s.VpnAddress, s.PeerId, s.Cipher, s.ClientVersion, s.ConnectedAt,
                s.Authenticated, s.DataPath, s.DataPathReason,
                st?.VpnRxBytes ?? 0, st?.VpnTxBytes ?? 0, st?.VpnRxPackets ?? 0, st?.VpnTxPackets ?? 0,
                st?.Drops ?? new Dictionary<string, long>()));
        }

        return new VpnStatus(list, _dataPlane?.GlobalDrops ?? new Dictionary<string, long>());
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

            bool kernelEngine = (_dataPlane?.EngineName ?? "").Contains("kernel", StringComparison.OrdinalIgnoreCase)
                || (_dataPlane?.EngineName ?? "").Contains("dco", StringComparison.OrdinalIgnoreCase);
            if (next.Dco != cur.Dco && (kernel.Available || kernelEngine))
            {
                restart.Add($"{ConfigKeys.Dco}: switching the data path between kernel and userspace recreates the VPN interface");
            }
            else
            {
                Live(ConfigKeys.Dco, next.Dco != cur.Dco, next.Dco
                    ? "offload preferred; the kernel module is not available, so the data path stays userspace (compression off and AEAD-only negotiation apply from the next restart)"
                    : "offload off");
            }

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
                Dco = restart.Any(r => r.StartsWith(ConfigKeys.Dco + ":", StringComparison.Ordinal)) ? cur.Dco : next.Dco,
                Hostname = next.Hostname,
                ClientConfigText = next.ClientConfigText,
                ServerConfigText = next.ServerConfigText,
            };
            return new ReloadResult(applied, restart, same, _sessions.SessionCount);
        }
    }
}
