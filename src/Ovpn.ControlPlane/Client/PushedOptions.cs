// SPDX-License-Identifier: MIT
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Ovpn.Protocol.Keys;
using Ovpn.Protocol.Options;

namespace Ovpn.ControlPlane.Client;

/// <summary>
/// Turns the options of a PUSH_REPLY into a <see cref="PushedConfig"/>. Every option is either
/// applied, noted in the log (DNS), or reported by name as not supported: an error when ignoring
/// it would change the wire format or security (compression, tls-ekm, non-AEAD ciphers), a warning
/// otherwise.
/// </summary>
public static class PushedOptions
{
    public static bool TryApply(IReadOnlyList<PushOption> options, ClientProfile profile, out PushedConfig? config, out string? error)
    {
        config = null;
        error = null;
        IPAddress? addr = null, peer = null;
        int prefix = 32;
        uint? peerId = null;
        string? cipherName = null;
        int? ping = profile.PingSeconds, pingRestart = profile.PingRestartSeconds, tunMtu = null;
        bool ccExit = false;
        int een = profile.ExplicitExitNotify;
        string topology = "net30";
        IPAddress? mask = null;
        var routes = new List<(IPAddress, int)>();
        var routes6 = new List<(IPAddress, int)>();
        IPAddress? addr6 = null;
        int prefix6 = 64;
        bool redirect = false;
        foreach (var o in options)
        {
            var a = o.Args;
            string A(int i) => i < a.Count ? a[i] : throw new FormatException($"pushed '{o}': missing argument");
            try
            {
                switch (o.Name)
                {
                    case "ifconfig":
                        addr = IPAddress.Parse(A(0));
                        var second = IPAddress.Parse(A(1));
                        if (IsNetmask(second))
                        {
                            mask = second;
                        }
                        else
                        {
                            peer = second;
                        }

                        break;
                    case "topology":
                        topology = A(0);
                        break;
                    case "route":
                        var net = IPAddress.Parse(A(0));
                        int bits = a.Count > 1 && a[1] != "default" ? MaskToPrefix(IPAddress.Parse(a[1])) : 32;
                        routes.Add((net, bits));
                        break;
                    case "route-gateway":
                        break; // tun routes point at the device; the gateway does not matter
                    case "peer-id":
                        peerId = uint.Parse(A(0), CultureInfo.InvariantCulture);
                        break;
                    case "cipher":
                        cipherName = A(0);
                        break;
                    case "ping":
                        ping = int.Parse(A(0), CultureInfo.InvariantCulture);
                        break;
                    case "ping-restart":
                        pingRestart = int.Parse(A(0), CultureInfo.InvariantCulture);
                        break;
                    case "tun-mtu":
                        tunMtu = int.Parse(A(0), CultureInfo.InvariantCulture);
                        break;
                    case "protocol-flags":
                        foreach (var f in a)
                        {
                            if (f == "cc-exit")
                            {
                                ccExit = true;
                            }
                            else if (f == "tls-ekm")
                            {
                                error = "server pushed tls-ekm key derivation, which this client did not announce and cannot do";
                                return false;
                            }
                            else
                            {
                                Log.Warn("client", $"pushed protocol-flags '{f}' not supported; ignored");
                            }
                        }

                        break;
                    case "key-derivation":
                        error = $"server pushed key-derivation {string.Join(' ', a)}; not supported (PRF only)";
                        return false;
                    case "explicit-exit-notify":
                        een = a.Count > 0 ? int.Parse(a[0], CultureInfo.InvariantCulture) : 1;
                        break;
                    case "dhcp-option":
                    case "dns":
                        Log.Info("client", $"pushed DNS setting noted (not applied to the system resolver): {o}");
                        break;
                    case "compress":
                    case "comp-lzo":
                        if (o.Name == "comp-lzo" && a.Count > 0 && a[0] == "no" || o.Name == "compress" && a.Count > 0 && a[0] == "stub-v2")
                        {
                            error = $"server pushed '{o}' (compression framing); this client does not do compression framing";
                        }
                        else
                        {
                            error = $"server pushed compression '{o}'; not supported";
                        }

                        return false;
                    case "auth-token":
                    case "auth-token-user":
                        break; // kept by the connection for renegotiation
                    case "ifconfig-ipv6":
                        var (a6, p6) = ParseCidr6(A(0));
                        addr6 = a6;
                        prefix6 = p6;
                        break;
                    case "route-ipv6":
                        routes6.Add(ParseCidr6(A(0)));
                        break;
                    case "redirect-gateway":
                        redirect = true;
                        foreach (var f in a)
                        {
                            if (f is "ipv6" or "!ipv4" or "local")
                            {
                                Log.Warn("client", $"redirect-gateway flag '{f}' not supported; IPv4 def1 routes only");
                            }
                        }

                        break;
                    case "block-outside-dns":
                    case "inactive":
                    case "ping-exit":
                    case "ping-timer-rem":
                    case "persist-tun":
                    case "persist-key":
                    case "register-dns":
                    case "echo":
                    case "setenv":
                    case "tun-ipv6":
                    case "route-delay":
                    case "sndbuf":
                    case "rcvbuf":
                        Log.Warn("client", $"pushed option '{o}' not supported by this client; ignored");
                        break;
                    default:
                        Log.Warn("client", $"unknown pushed option '{o}'; ignored");
                        break;
                }
            }
            catch (FormatException e)
            {
                error = $"bad pushed option '{o}': {e.Message}";
                return false;
            }
        }

        if (addr is null)
        {
            error = "server pushed no ifconfig address";
            return false;
        }

        if (mask is not null)
        {
            prefix = MaskToPrefix(mask);
        }
        else if (topology == "subnet")
        {
            error = "topology subnet but ifconfig has no netmask";
            return false;
        }

        if (!CipherNegotiation.TryAcceptPushed(profile.DataCiphers, cipherName, null, profile.DataCiphersFallback, out var cipher, out var why))
        {
            error = why;
            return false;
        }

        if (!DataCipherNames.IsAead(cipher))
        {
            error = $"server requires non-AEAD cipher {DataCipherNames.ToName(cipher)}; not supported";
            return false;
        }

        config = new PushedConfig(options, addr, prefix, peer, peerId, cipher, ping, pingRestart, tunMtu, ccExit, een, routes, topology)
        {
            Address6 = addr6,
            Prefix6 = prefix6,
            Routes6 = routes6,
            RedirectGateway = redirect,
        };
        return true;
    }

    private static (IPAddress, int) ParseCidr6(string s)
    {
        int slash = s.IndexOf('/', StringComparison.Ordinal);
        var ip = IPAddress.Parse(slash < 0 ? s : s[..slash]);
        if (ip.AddressFamily != AddressFamily.InterNetworkV6)
        {
            throw new FormatException($"'{s}' is not an IPv6 address");
        }

        int bits = slash < 0 ? 128 : int.Parse(s[(slash + 1)..], CultureInfo.InvariantCulture);
        if (bits is < 0 or > 128)
        {
            throw new FormatException($"'{s}': bad prefix length");
        }

        return (ip, bits);
    }

    internal static bool IsNetmask(IPAddress a)
    {
        if (a.AddressFamily != AddressFamily.InterNetwork)
        {
            return false;
        }

        uint v = System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(a.GetAddressBytes());
        // Netmasks are contiguous ones from the top; 255.x is the usual first byte.
        return (v >> 24) == 255 && (~v & (~v + 1)) == 0;
    }

    internal static int MaskToPrefix(IPAddress mask)
    {
        uint v = System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(mask.GetAddressBytes());
        if ((~v & (~v + 1)) != 0)
        {
            throw new FormatException($"'{mask}' is not a contiguous netmask");
        }

        return System.Numerics.BitOperations.PopCount(v);
    }
}
