// SPDX-License-Identifier: MIT
using System.Net;
using System.Security.Cryptography;
using Ovpn.ControlPlane.Config;
using Ovpn.ControlPlane.Pki;
using Ovpn.ControlPlane.Sessions;
using Ovpn.ControlPlane.Users;
using Ovpn.Protocol.Control;
using Ovpn.Protocol.Keys;

namespace Ovpn.Server;

/// <summary>Builds a server's options from the data directory (config database + PKI).</summary>
public static class ServerFactory
{
    public static (ListenOptions Listen, ControlPlaneOptions Control, ServerSettings Settings) Load(string dataDir)
    {
        if (!OvpnDatabase.Exists(dataDir))
        {
            throw new InvalidOperationException($"no server database in {dataDir}; run 'ovpnas init --data-dir {dataDir}' first");
        }

        var db = OvpnDatabase.Open(dataDir);
        var store = new ConfigStore(db);
        var settings = ServerSettings.From(store);
        // The per-handshake look-ups (serial revoked? user exists? prop_deny?) go through one
        // long-lived read cache that re-reads after any committed change (CLI writes included), so
        // a revoke or deny still applies to the next handshake. It lives as long as the process.
        var cache = new DirectoryReadCache(db);
        var ca = CertificateAuthority.Open(db).WithReadCache(cache);
        var users = new UserStore(db, cache);

        if (settings.OsiLayer != 3)
        {
            throw new NotSupportedException("vpn.general.osi_layer 2 (bridging, TAP) is not supported: this server runs layer 3 (TUN) only");
        }

        var ciphers = new List<DataCipher>();
        foreach (var name in settings.DataCiphers)
        {
            if (!DataCipherNames.TryParse(name, out var c))
            {
                throw new InvalidOperationException($"vpn.server.data_ciphers: unknown cipher '{name}'");
            }

            ciphers.Add(c);
        }

        var push = new List<string>();
        foreach (var r in settings.PrivateRoutes)
        {
            push.Add($"route {r.Network} {PrefixToMask(r.PrefixLength)}");
        }

        if (settings.RerouteGateway)
        {
            push.Add("redirect-gateway def1 bypass-dhcp");
        }

        foreach (var dns in settings.DnsServers)
        {
            push.Add($"dhcp-option DNS {dns}");
        }

        var mode = settings.TlsMode switch
        {
            TlsControlSecurity.TlsAuth => ControlWrapMode.TlsAuth,
            TlsControlSecurity.TlsCrypt => ControlWrapMode.TlsCrypt,
            _ => ControlWrapMode.None,
        };

        // After the certificate check: the user must exist and not be denied (user > group > __DEFAULT__).
        AuthResult Admit(bool certOk, string? cn, string? reason)
        {
            if (!certOk)
            {
                return new AuthResult(false, cn, reason);
            }

            if (cn is null || !users.Exists(cn))
            {
                return new AuthResult(false, cn, $"no such user '{cn}'");
            }

            if (string.Equals(users.GetEffectiveProperty(cn, "prop_deny"), "true", StringComparison.OrdinalIgnoreCase))
            {
                return new AuthResult(false, cn, $"user '{cn}' is denied access (prop_deny, user > group > __DEFAULT__)");
            }

            return new AuthResult(true, cn, null);
        }

        var control = new ControlPlaneOptions
        {
            DataCiphers = ciphers,
            WrapMode = mode,
            WrapKey = mode == ControlWrapMode.None ? null : StaticKey.Parse(ca.StaticKeyText),
            TlsAuthDigest = HashAlgorithmName.SHA1,
            ServerCertificate = ca.LoadServerCertificate(),
            ClientCa = ca.CaCertificate,
            ValidateClient = cert => Admit(ca.ValidateClientCertificate(cert, out var cn, out var reason), cn, reason),
            ValidateClientWithChain = (cert, chain) => Admit(ca.ValidateClientCertificate(cert, chain, out var cn, out var reason), cn, reason),
            Pool = new IpPool(settings.Pool.Network, settings.Pool.PrefixLength),
            ExtraPush = push,
            PingSeconds = settings.PingSeconds,
            PingRestartSeconds = settings.PingRestartSeconds,
            RenegotiateSeconds = settings.RenegSeconds,
            TunMtu = settings.TunMtu,
        };

        var listen = new ListenOptions
        {
            Udp = settings.UdpEnabled,
            Tcp = settings.TcpEnabled,
            UdpPort = settings.UdpPort,
            TcpPort = settings.TcpPort,
            TunMtu = settings.TunMtu,
            PreferOffload = settings.Dco,
            UdpDaemons = settings.UdpDaemons,
            TcpDaemons = settings.TcpDaemons,
        };
        return (listen, control, settings);
    }

    private static IPAddress PrefixToMask(int bits)
    {
        uint m = bits == 0 ? 0 : uint.MaxValue << (32 - bits);
        return new IPAddress([(byte)(m >> 24), (byte)(m >> 16), (byte)(m >> 8), (byte)m]);
    }
}
