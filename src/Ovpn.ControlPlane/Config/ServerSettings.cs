// SPDX-License-Identifier: MIT
using System.Net;

namespace Ovpn.ControlPlane.Config;

/// <summary>How the control channel is protected (vpn.server.tls_cc_security).</summary>
public enum TlsControlSecurity { None, TlsAuth, TlsCrypt }

/// <summary>
/// Immutable snapshot of the settings the server needs at start, built from a
/// <see cref="ConfigStore"/> (every value has already passed validation).
/// </summary>
public sealed record ServerSettings
{
    public required bool DaemonEnabled { get; init; }
    public required bool Dco { get; init; }
    public required bool UdpEnabled { get; init; }
    public required bool TcpEnabled { get; init; }
    public required int UdpPort { get; init; }
    public required int TcpPort { get; init; }
    public required int UdpDaemons { get; init; }
    public required int TcpDaemons { get; init; }
    /// <summary>Client address pool; host bits of the configured address are cleared.</summary>
    public required Ipv4Network Pool { get; init; }
    /// <summary>OpenVPN cipher names in configured order, e.g. "AES-256-GCM".</summary>
    public required IReadOnlyList<string> DataCiphers { get; init; }
    public required TlsControlSecurity TlsMode { get; init; }
    /// <summary>3 = tun (routed), 2 = tap (bridged).</summary>
    public required int OsiLayer { get; init; }
    public required int TunMtu { get; init; }
    public required IReadOnlyList<IPAddress> DnsServers { get; init; }
    public required IReadOnlyList<Ipv4Network> PrivateRoutes { get; init; }
    public required bool RerouteGateway { get; init; }
    public required int PingSeconds { get; init; }
    public required int PingRestartSeconds { get; init; }
    public required int RenegSeconds { get; init; }
    public required string Hostname { get; init; }
    public required int HttpsPort { get; init; }
    public required string ServerConfigText { get; init; }
    public required string ClientConfigText { get; init; }

    public static ServerSettings From(ConfigStore s)
    {
        var protocols = s.GetString(ConfigKeys.Protocols);
        var bits = s.GetInt(ConfigKeys.PoolNetmaskBits);
        return new ServerSettings
        {
            DaemonEnabled = s.GetBool(ConfigKeys.DaemonEnable),
            Dco = s.GetBool(ConfigKeys.Dco),
            UdpEnabled = protocols is "udp" or "both",
            TcpEnabled = protocols is "tcp" or "both",
            UdpPort = s.GetInt(ConfigKeys.UdpPort),
            TcpPort = s.GetInt(ConfigKeys.TcpPort),
            UdpDaemons = s.GetInt(ConfigKeys.UdpDaemons),
            TcpDaemons = s.GetInt(ConfigKeys.TcpDaemons),
            Pool = new Ipv4Network(Ipv4Network.Mask(IPAddress.Parse(s.GetString(ConfigKeys.PoolNetwork)), bits), bits),
            DataCiphers = s.GetString(ConfigKeys.DataCiphers).Split(':'),
            TlsMode = s.GetString(ConfigKeys.TlsCcSecurity) switch
            {
                "tls-auth" => TlsControlSecurity.TlsAuth,
                "none" => TlsControlSecurity.None,
                _ => TlsControlSecurity.TlsCrypt,
            },
            OsiLayer = s.GetInt(ConfigKeys.OsiLayer),
            TunMtu = s.GetInt(ConfigKeys.TunMtu),
            DnsServers = s.GetIndexed(ConfigKeys.DnsPrefix).Select(IPAddress.Parse).ToList(),
            PrivateRoutes = s.GetIndexed(ConfigKeys.PrivateNetworkPrefix).Select(Ipv4Network.Parse).ToList(),
            RerouteGateway = s.GetBool(ConfigKeys.RerouteGw),
            PingSeconds = s.GetInt(ConfigKeys.Ping),
            PingRestartSeconds = s.GetInt(ConfigKeys.PingRestart),
            RenegSeconds = s.GetInt(ConfigKeys.RenegSec),
            Hostname = s.GetString(ConfigKeys.HostName),
            HttpsPort = s.GetInt(ConfigKeys.HttpsPort),
            ServerConfigText = s.GetString(ConfigKeys.ServerConfigText),
            ClientConfigText = s.GetString(ConfigKeys.ClientConfigText),
        };
    }
}
