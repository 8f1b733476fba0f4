// SPDX-License-Identifier: MIT
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text.RegularExpressions;

namespace Ovpn.ControlPlane.Config;

/// <summary>
/// One typed config key. Indexed keys (".N" suffix, e.g. vpn.server.dhcp_option.dns.0) have
/// <see cref="Indexed"/> set and no default. <see cref="Normalize"/> returns the canonical stored
/// form or throws <see cref="ConfigValidationException"/>.
/// </summary>
public sealed class ConfigKeyDefinition
{
    private readonly Func<string, string?> _normalize;

    public string Name { get; }          // for indexed keys: the prefix without ".N"
    public bool Indexed { get; }
    public string Allowed { get; }
    private readonly Func<string?>? _default;

    internal ConfigKeyDefinition(string name, bool indexed, string allowed, Func<string?>? defaultValue, Func<string, string?> normalize)
    {
        Name = name;
        Indexed = indexed;
        Allowed = allowed;
        _default = defaultValue;
        _normalize = normalize;
    }

    public string? DefaultValue => _default?.Invoke();

    /// <summary>Returns the canonical value, or throws naming the key, the value and what is allowed.</summary>
    public string Normalize(string key, string? value)
    {
        if (value is null)
            throw new ConfigValidationException(key, value, Allowed);
        return _normalize(value) ?? throw new ConfigValidationException(key, value, Allowed);
    }
}

/// <summary>The registry of known keys (Access Server names). Unknown keys are refused.</summary>
public static class ConfigKeys
{
    public const string Dco = "vpn.server.daemon.ovpndco";
    public const string DaemonEnable = "vpn.server.daemon.enable";
    public const string Protocols = "vpn.server.daemon.protocols";
    public const string UdpPort = "vpn.server.daemon.udp.port";
    public const string TcpPort = "vpn.server.daemon.tcp.port";
    public const string UdpDaemons = "vpn.server.daemon.udp.n_daemons";
    public const string TcpDaemons = "vpn.server.daemon.tcp.n_daemons";
    public const string PoolNetwork = "vpn.daemon.0.client.network";
    public const string PoolNetmaskBits = "vpn.daemon.0.client.netmask_bits";
    public const string DataCiphers = "vpn.server.data_ciphers";
    public const string TlsCcSecurity = "vpn.server.tls_cc_security";
    public const string OsiLayer = "vpn.general.osi_layer";
    public const string PrivateNetworkPrefix = "vpn.server.routing.private_network";
    public const string RerouteGw = "vpn.client.routing.reroute_gw";
    public const string DnsPrefix = "vpn.server.dhcp_option.dns";
    public const string ServerConfigText = "vpn.server.config_text";
    public const string ClientConfigText = "vpn.client.config_text";
    public const string HttpsPort = "cs.https.port";
    public const string TunMtu = "vpn.server.tun_mtu";
    public const string HostName = "host.name";
    public const string RenegSec = "vpn.server.reneg_sec";
    public const string Ping = "vpn.server.ping";
    public const string PingRestart = "vpn.server.ping_restart";

    /// <summary>Ciphers accepted in <see cref="DataCiphers"/> (OpenVPN names).</summary>
    public static readonly IReadOnlyList<string> AeadCiphers = ["AES-256-GCM", "AES-128-GCM", "CHACHA20-POLY1305"];
    public static readonly IReadOnlyList<string> CbcCiphers = ["AES-256-CBC", "AES-128-CBC"];

    private static readonly Dictionary<string, ConfigKeyDefinition> Plain = new(StringComparer.Ordinal);
    private static readonly List<ConfigKeyDefinition> IndexedDefs = [];

    static ConfigKeys()
    {
        Bool(Dco, false);
        Bool(DaemonEnable, true);
        Choice(Protocols, "both", "udp", "tcp", "both");
        Int(UdpPort, 1, 65535, 1194);
        Int(TcpPort, 1, 65535, 443);
        Add(UdpDaemons, "an integer 1..64", () => DefaultDaemons().ToString(CultureInfo.InvariantCulture), v => IntIn(v, 1, 64));
        Add(TcpDaemons, "an integer 1..64", () => DefaultDaemons().ToString(CultureInfo.InvariantCulture), v => IntIn(v, 1, 64));
        Add(PoolNetwork, "an IPv4 address (dotted quad)", () => "172.27.224.0", Ipv4);
        Int(PoolNetmaskBits, 16, 30, 20);
        Add(DataCiphers, "a colon-separated list of AES-256-GCM, AES-128-GCM, CHACHA20-POLY1305, AES-256-CBC, AES-128-CBC with at least one AEAD and no repeats",
            () => string.Join(':', AeadCiphers), CipherList);
        Choice(TlsCcSecurity, "tls-crypt", "tls-crypt", "tls-auth", "none");
        Choice(OsiLayer, "3", "3", "2");
        AddIndexed(PrivateNetworkPrefix, "an IPv4 network in CIDR form (a.b.c.d/0..32, no host bits)", Cidr);
        Bool(RerouteGw, false);
        AddIndexed(DnsPrefix, "an IPv4 address (dotted quad)", Ipv4);
        Add(ServerConfigText, "free text", () => "", v => v);
        Add(ClientConfigText, "free text", () => "", v => v);
        Int(HttpsPort, 1, 65535, 943);
        Int(TunMtu, 576, 65536, 1420);
        Add(HostName, "a DNS host name or an IP address", DefaultHostName, HostNameValue);
        Int(RenegSec, 0, int.MaxValue, 3600);
        Int(Ping, 1, 86400, 10);
        Int(PingRestart, 1, 86400, 60);
    }

    public static IEnumerable<ConfigKeyDefinition> All => Plain.Values.Concat(IndexedDefs);
    public static IEnumerable<ConfigKeyDefinition> PlainKeys => Plain.Values;

    /// <summary>Finds the definition of a full key name (indexed keys need a numeric suffix).</summary>
    public static bool TryGet(string key, out ConfigKeyDefinition def)
    {
        if (Plain.TryGetValue(key, out def!))
            return true;
        foreach (var d in IndexedDefs)
        {
            if (key.Length > d.Name.Length + 1 && key.StartsWith(d.Name + ".", StringComparison.Ordinal)
                && TryParseIndex(key.AsSpan(d.Name.Length + 1), out _))
            {
                def = d;
                return true;
            }
        }
        def = null!;
        return false;
    }

    internal static bool TryParseIndex(ReadOnlySpan<char> s, out int index)
    {
        index = -1;
        foreach (var ch in s)
            if (ch is < '0' or > '9')
                return false;
        return s.Length is > 0 and <= 4 && int.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out index);
    }

    /// <summary>Validates and canonicalizes a value for a key; throws ConfigValidationException.</summary>
    public static string Normalize(string key, string? value)
    {
        if (!TryGet(key, out var def))
            throw new ConfigValidationException(key, value,
                "only known keys (unknown key; indexed keys need a numeric suffix, e.g. vpn.server.dhcp_option.dns.0)");
        return def.Normalize(key, value);
    }

    public static int DefaultDaemons() => Math.Clamp(Environment.ProcessorCount, 1, 64);

    private static string DefaultHostName()
    {
        try
        {
            var h = Dns.GetHostName();
            return HostNameValue(h) ?? "localhost";
        }
        catch (SocketException)
        {
            return "localhost";
        }
    }

    private static void Add(string name, string allowed, Func<string?> def, Func<string, string?> norm) =>
        Plain.Add(name, new ConfigKeyDefinition(name, false, allowed, def, norm));

    private static void AddIndexed(string name, string allowed, Func<string, string?> norm) =>
        IndexedDefs.Add(new ConfigKeyDefinition(name, true, allowed, null, norm));

    private static void Bool(string name, bool def) =>
        Add(name, "true or false", () => def ? "true" : "false", v => v.Trim().ToLowerInvariant() switch
        {
            "true" => "true",
            "false" => "false",
            _ => null,
        });

    private static void Int(string name, int min, int max, int def) =>
        Add(name, $"an integer {min}..{max}", () => def.ToString(CultureInfo.InvariantCulture), v => IntIn(v, min, max));

    private static void Choice(string name, string def, params string[] choices) =>
        Add(name, "one of " + string.Join(" | ", choices), () => def, v =>
        {
            var t = v.Trim().ToLowerInvariant();
            return Array.IndexOf(choices, t) >= 0 ? t : null;
        });

    private static string? IntIn(string v, int min, int max) =>
        int.TryParse(v.Trim(), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var i) && i >= min && i <= max
            ? i.ToString(CultureInfo.InvariantCulture)
            : null;

    internal static string? Ipv4(string v)
    {
        var t = v.Trim();
        // IPAddress.TryParse accepts shorthand like "10" or "10.1"; insist on four decimal parts
        // without leading zeros (which .NET would read as octal).
        if (!Regex.IsMatch(t, @"^(0|[1-9]\d{0,2})(\.(0|[1-9]\d{0,2})){3}$"))
            return null;
        return IPAddress.TryParse(t, out var ip) && ip.AddressFamily == AddressFamily.InterNetwork ? ip.ToString() : null;
    }

    internal static string? Cidr(string v)
    {
        var parts = v.Trim().Split('/');
        if (parts.Length != 2 || Ipv4(parts[0]) is not { } addr)
            return null;
        if (!int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out var bits) || bits is < 0 or > 32)
            return null;
        var net = Ipv4Network.Mask(IPAddress.Parse(addr), bits);
        return net.ToString() == addr ? $"{addr}/{bits}" : null;
    }

    private static string? CipherList(string v)
    {
        var items = v.Trim().Split(':');
        var seen = new List<string>();
        foreach (var raw in items)
        {
            var c = raw.Trim().ToUpperInvariant();
            if (!AeadCiphers.Contains(c) && !CbcCiphers.Contains(c))
                return null;
            if (seen.Contains(c))
                return null;
            seen.Add(c);
        }
        return seen.Any(AeadCiphers.Contains) ? string.Join(':', seen) : null;
    }

    private static string? HostNameValue(string v)
    {
        var t = v.Trim();
        if (t.Length == 0 || t.Length > 253)
            return null;
        if (IPAddress.TryParse(t, out var ip) && (ip.AddressFamily == AddressFamily.InterNetworkV6 || Ipv4(t) is not null))
            return ip.ToString();
        // RFC 1123 labels; the name is written into profiles, so no spaces or quotes can get in.
        return Regex.IsMatch(t, @"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")
            && !Regex.IsMatch(t, @"^[\d.]+$")
            ? t.TrimEnd('.').ToLowerInvariant()
            : null;
    }
}

/// <summary>An IPv4 network (address with host bits cleared + prefix length).</summary>
public readonly record struct Ipv4Network(IPAddress Network, int PrefixLength)
{
    public static IPAddress Mask(IPAddress address, int bits)
    {
        var b = address.GetAddressBytes();
        uint v = (uint)(b[0] << 24 | b[1] << 16 | b[2] << 8 | b[3]);
        uint mask = bits == 0 ? 0u : uint.MaxValue << (32 - bits);
        v &= mask;
        return new IPAddress(new[] { (byte)(v >> 24), (byte)(v >> 16), (byte)(v >> 8), (byte)v });
    }

    /// <summary>Dotted netmask, e.g. 255.255.240.0 for /20 (what "route"/"ifconfig" take).</summary>
    public string Netmask => Mask(IPAddress.Broadcast, PrefixLength).ToString();

    public static Ipv4Network Parse(string cidr)
    {
        var p = cidr.Split('/');
        return new Ipv4Network(IPAddress.Parse(p[0]), int.Parse(p[1], CultureInfo.InvariantCulture));
    }

    public override string ToString() => $"{Network}/{PrefixLength}";
}
