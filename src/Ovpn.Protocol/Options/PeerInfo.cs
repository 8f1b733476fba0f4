// SPDX-License-Identifier: MIT
namespace Ovpn.Protocol.Options;

/// <summary>IV_PROTO bits (protocol notes section 9).</summary>
[Flags]
public enum IvProtoFlags
{
    None = 0,
    DataV2 = 1 << 1,
    RequestPush = 1 << 2,
    TlsKeyExport = 1 << 3,
    AuthPendingKw = 1 << 4,
    NcpP2p = 1 << 5,
    DnsOption = 1 << 6,
    CcExitNotify = 1 << 7,
    AuthFailTemp = 1 << 8,
    DynTlsCrypt = 1 << 9,
    DataEpoch = 1 << 10,
    DnsOptionV2 = 1 << 11,
    PushUpdate = 1 << 12,
}

/// <summary>
/// Client peer-info (IV_*/UV_* lines from key-method 2; protocol notes section 9).
/// Parsing is tolerant: lines are "NAME=value" separated by \n (a trailing \r is dropped),
/// junk lines are ignored, the first occurrence of a name wins (OpenVPN searches with strstr),
/// and numbers are read like atoi (leading digits; otherwise 0).
/// </summary>
public sealed class PeerInfo
{
    public int IvProto { get; set; }
    public int IvNcp { get; set; }
    /// <summary>IV_CIPHERS split at ':', null when the variable is absent.</summary>
    public string[]? IvCiphers { get; set; }
    public string? IvVer { get; set; }
    public string? IvPlat { get; set; }
    public int? IvMtu { get; set; }
    public bool LzoStub { get; set; }
    public bool CompStub { get; set; }
    public bool CompStubV2 { get; set; }
    public bool Lzo { get; set; }
    public bool Lz4 { get; set; }
    public bool Lz4V2 { get; set; }
    public bool TcpNl { get; set; }
    public IReadOnlyDictionary<string, string> All { get; set; } = new Dictionary<string, string>();

    public IvProtoFlags ProtoFlags => (IvProtoFlags)IvProto;

    public bool Has(IvProtoFlags f) => (ProtoFlags & f) == f;

    /// <summary>Client supports NCP (IV_NCP≥2 or IV_CIPHERS present): only then is `cipher` pushed.</summary>
    public bool SupportsNcp => IvNcp >= 2 || IvCiphers is not null;

    public static PeerInfo Parse(string? text)
    {
        var all = new Dictionary<string, string>(StringComparer.Ordinal);
        if (!string.IsNullOrEmpty(text))
        {
            foreach (var rawLine in text.Split('\n'))
            {
                var line = rawLine.TrimEnd('\r');
                int eq = line.IndexOf('=');
                if (eq <= 0)
                {
                    continue;
                }

                var name = line[..eq].Trim();
                if (name.Length == 0)
                {
                    continue;
                }

                all.TryAdd(name, line[(eq + 1)..]);
            }
        }

        var pi = new PeerInfo { All = all };
        pi.IvProto = Atoi(Get(all, "IV_PROTO")) ?? 0;
        pi.IvNcp = Atoi(Get(all, "IV_NCP")) ?? 0;
        pi.IvVer = Get(all, "IV_VER");
        pi.IvPlat = Get(all, "IV_PLAT");
        pi.IvMtu = Atoi(Get(all, "IV_MTU"));
        var ciphers = Get(all, "IV_CIPHERS");
        pi.IvCiphers = ciphers?.Split(':', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        pi.LzoStub = IsOne(all, "IV_LZO_STUB");
        pi.CompStub = IsOne(all, "IV_COMP_STUB");
        pi.CompStubV2 = IsOne(all, "IV_COMP_STUBv2");
        pi.Lzo = IsOne(all, "IV_LZO");
        pi.Lz4 = IsOne(all, "IV_LZ4");
        pi.Lz4V2 = IsOne(all, "IV_LZ4v2");
        pi.TcpNl = IsOne(all, "IV_TCPNL");
        return pi;
    }

    private static string? Get(Dictionary<string, string> d, string k) => d.TryGetValue(k, out var v) ? v : null;

    private static bool IsOne(Dictionary<string, string> d, string k) => (Atoi(Get(d, k)) ?? 0) != 0;

    /// <summary>atoi-like: optional leading spaces and sign, then digits; null if value is null.</summary>
    private static int? Atoi(string? s)
    {
        if (s is null)
        {
            return null;
        }

        int i = 0;
        while (i < s.Length && s[i] == ' ')
        {
            i++;
        }

        bool neg = false;
        if (i < s.Length && (s[i] == '-' || s[i] == '+'))
        {
            neg = s[i] == '-';
            i++;
        }

        long v = 0;
        while (i < s.Length && char.IsAsciiDigit(s[i]) && v <= int.MaxValue)
        {
            v = v * 10 + (s[i] - '0');
            i++;
        }

        v = Math.Min(v, int.MaxValue);
        return (int)(neg ? -v : v);
    }
}
