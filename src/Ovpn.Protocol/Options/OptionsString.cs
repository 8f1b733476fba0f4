// SPDX-License-Identifier: MIT
using System.Text;

namespace Ovpn.Protocol.Options;

/// <summary>
/// The OCC options ("consistency") string of key-method 2 (protocol notes section 10):
/// comma-separated, starting with V4, fields in OpenVPN's fixed order. In 2.6 it is only
/// informational except for `cipher` (fallback NCP source) and `comp-lzo` (compress migrate).
/// </summary>
public static class OptionsString
{
    /// <summary>OpenVPN's OPTION_LINE_SIZE-based limit for the options string.</summary>
    public const int MaxLength = 512;

    /// <summary>
    /// Builds the string a 2.6 peer with the given settings sends. The defaults reproduce what a
    /// default OpenVPN 2.6.14 UDP server (no --cipher, default data-ciphers) actually sent in a
    /// verb-7 capture: <c>V4,dev-type tun,link-mtu 1541,tun-mtu 1500,proto UDPv4,auth SHA1,keysize 128,key-method 2,tls-server</c>
    /// (cipher unset = BF-CBC placeholder: no `cipher` field, auth SHA1, keysize 128). A server
    /// whose --cipher is an AEAD sends e.g. <c>auth [null-digest],keysize 256</c> instead.
    /// </summary>
    /// <param name="linkMtu">Legacy computed link-mtu; informational only (peers at most warn).</param>
    /// <param name="tcp">TCPv4_SERVER (server) / TCPv4_CLIENT (client) instead of UDPv4.</param>
    /// <param name="compLzo">Emit `comp-lzo` (any compression or stub framing configured).</param>
    /// <param name="keyDirection">Emit `keydir N` (tls-auth key direction).</param>
    /// <param name="cipherName">Emit `cipher NAME` (2.6 servers without --cipher emit none).</param>
    /// <param name="authDigest">`[null-digest]` when the data cipher is AEAD, else the --auth digest.</param>
    /// <param name="keySizeBits">Cipher key bits.</param>
    /// <param name="tlsAuth">Emit `tls-auth` (not for tls-crypt).</param>
    public static string Build(bool isServer, int tunMtu = 1500, int linkMtu = 1541, bool tcp = false, bool compLzo = false,
        int? keyDirection = null, string? cipherName = null, string authDigest = "SHA1", int keySizeBits = 128,
        bool tlsAuth = false)
    {
        var sb = new StringBuilder("V4,dev-type tun");
        sb.Append(",link-mtu ").Append(linkMtu);
        sb.Append(",tun-mtu ").Append(tunMtu);
        sb.Append(",proto ").Append(tcp ? (isServer ? "TCPv4_SERVER" : "TCPv4_CLIENT") : "UDPv4");
        if (compLzo)
        {
            sb.Append(",comp-lzo");
        }

        if (keyDirection is { } kd)
        {
            sb.Append(",keydir ").Append(kd);
        }

        if (!string.IsNullOrEmpty(cipherName))
        {
            sb.Append(",cipher ").Append(cipherName);
        }

        sb.Append(",auth ").Append(authDigest);
        sb.Append(",keysize ").Append(keySizeBits);
        if (tlsAuth)
        {
            sb.Append(",tls-auth");
        }

        sb.Append(",key-method 2");
        sb.Append(isServer ? ",tls-server" : ",tls-client");
        return sb.ToString();
    }

    /// <summary>Server variant of <see cref="Build"/>.</summary>
    public static string ForServer(int tunMtu = 1500, int linkMtu = 1541, bool tcp = false, bool compLzo = false,
        int? keyDirection = null, string? cipherName = null, string authDigest = "SHA1", int keySizeBits = 128,
        bool tlsAuth = false) =>
        Build(true, tunMtu, linkMtu, tcp, compLzo, keyDirection, cipherName, authDigest, keySizeBits, tlsAuth);

    /// <summary>
    /// Value of field <paramref name="name"/>: the text after "name " (e.g. "AES-256-CBC" for
    /// `cipher AES-256-CBC`), "" when the field is present without a value (`comp-lzo`,
    /// `tls-server`), or null when absent. Field names are matched exactly (case-sensitive),
    /// the first occurrence wins.
    /// </summary>
    public static string? GetField(string? options, string name)
    {
        if (string.IsNullOrEmpty(options) || string.IsNullOrEmpty(name))
        {
            return null;
        }

        foreach (var raw in options.Split(','))
        {
            var field = raw.Trim().TrimEnd('\0');
            if (field == name)
            {
                return "";
            }

            if (field.Length > name.Length && field.StartsWith(name, StringComparison.Ordinal) && field[name.Length] == ' ')
            {
                return field[(name.Length + 1)..].Trim();
            }
        }

        return null;
    }

    /// <summary>True if the field is present (with or without value).</summary>
    public static bool HasField(string? options, string name) => GetField(options, name) is not null;
}
