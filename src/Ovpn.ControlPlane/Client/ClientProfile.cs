// SPDX-License-Identifier: MIT
using System.Security.Cryptography;
using System.Text;
using Ovpn.Protocol.Control;
using Ovpn.Protocol.Keys;

namespace Ovpn.ControlPlane.Client;

/// <summary>One `remote` entry of a profile.</summary>
public sealed record RemoteEndpoint(string Host, int Port, bool Tcp)
{
    public override string ToString() => $"{(Tcp ? "tcp" : "udp")}:{Host}:{Port}";
}

/// <summary>pull-filter rule: the first rule whose text is a prefix of a pushed option decides.</summary>
public sealed record PullFilter(string Action, string Text);

/// <summary>A directive the client does not implement, reported by name.</summary>
public sealed record ProfileIssue(int Line, string Directive, string Message, bool IsError)
{
    public override string ToString() => $"{(IsError ? "error" : "warning")}: line {Line}: {Directive}: {Message}";
}

/// <summary>Thrown when a profile cannot be used (errors listed).</summary>
public sealed class ProfileException(string message) : Exception(message);

/// <summary>
/// A standard OpenVPN client profile (.ovpn) as far as this client understands it. Parsing never
/// ignores a directive silently: what is not implemented becomes a <see cref="ProfileIssue"/>
/// (error when it changes security or the wire format, warning otherwise).
/// </summary>
public sealed class ClientProfile
{
    public List<RemoteEndpoint> Remotes { get; } = [];
    public bool RemoteRandom { get; private set; }
    public string CaPem { get; private set; } = "";
    public string? CertPem { get; private set; }
    public string? KeyPem { get; private set; }
    public ControlWrapMode WrapMode { get; private set; } = ControlWrapMode.None;
    public StaticKey? WrapKey { get; private set; }
    public int? KeyDirection { get; private set; }
    public HashAlgorithmName TlsAuthDigest { get; private set; } = HashAlgorithmName.SHA1;
    public string AuthName { get; private set; } = "SHA1";
    public bool RemoteCertTlsServer { get; private set; }
    public List<DataCipher> DataCiphers { get; private set; } = [DataCipher.Aes256Gcm, DataCipher.Aes128Gcm, DataCipher.ChaCha20Poly1305];
    public DataCipher? DataCiphersFallback { get; private set; }
    public bool AuthUserPass { get; private set; }
    public string? AuthUserPassFile { get; private set; }
    public string? Username { get; set; }
    public string? Password { get; set; }
    public string? VerifyX509Name { get; private set; }
    public string VerifyX509Type { get; private set; } = "subject";
    public List<PullFilter> PullFilters { get; } = [];
    public int RenegSeconds { get; private set; } = 3600;
    public int HandWindowSeconds { get; private set; } = 60;
    public int ServerPollTimeoutSeconds { get; private set; } = 20;
    public bool MinTls13 { get; private set; }
    public int ConnectRetrySeconds { get; private set; } = 1;
    public int ConnectRetryMaxSeconds { get; private set; } = 30;
    public int? ConnectRetryMax { get; private set; }
    public int TunMtu { get; private set; } = 1500;
    public int? PingSeconds { get; private set; }
    public int? PingRestartSeconds { get; private set; }
    public int ExplicitExitNotify { get; private set; }
    public bool Pull { get; private set; }

    /// <summary>`disable-dco` (OpenVPN 2.6): keep the data channel in the managed engine.</summary>
    public bool DisableDco { get; private set; }
    public List<ProfileIssue> Issues { get; } = [];
    public IEnumerable<ProfileIssue> Errors => Issues.Where(i => i.IsError);

    // Accepted because their behaviour is what this client does anyway.
    private static readonly HashSet<string> Harmless = new(StringComparer.Ordinal)
    {
        "nobind", "persist-key", "persist-tun", "resolv-retry", "auth-nocache", "tls-client", "verb", "mute",
        "mute-replay-warnings", "float", "setenv", "allow-recursive-routing",
    };

    // Not implemented, but a connection still works as the user expects (a warning).
    private static readonly HashSet<string> WarnOnly = new(StringComparer.Ordinal)
    {
        "mssfix", "sndbuf", "rcvbuf", "fast-io", "user", "group", "script-security", "up", "down", "route-up",
        "route-pre-down", "block-outside-dns", "dhcp-option", "route-delay", "route-method", "ping-timer-rem",
        "tls-cipher", "tls-ciphersuites", "tls-groups", "reneg-bytes", "reneg-pkts", "tran-window", "redirect-gateway",
        "route", "route-ipv6", "ifconfig-ipv6", "dns", "ignore-unknown-option", "status", "log", "log-append",
        "management", "machine-readable-output", "ncp-disable", "route-nopull", "inactive", "ping-exit",
        "dev-node", "txqueuelen", "tun-ipv6", "auth-token-user", "static-challenge", "setenv-safe", "push-peer-info",
    };

    /// <summary>Parses <paramref name="text"/>; file references are resolved against <paramref name="baseDir"/>.</summary>
    public static ClientProfile Parse(string text, string baseDir)
    {
        var p = new ClientProfile();
        p.ParseCore(text, baseDir);
        return p;
    }

    public static ClientProfile Load(string path)
    {
        string full = Path.GetFullPath(path);
        return Parse(File.ReadAllText(full), Path.GetDirectoryName(full) ?? ".");
    }

    /// <summary>Throws <see cref="ProfileException"/> listing every error.</summary>
    public void ThrowIfErrors()
    {
        var errors = Errors.ToList();
        if (errors.Count > 0)
        {
            throw new ProfileException("profile not usable:\n  " + string.Join("\n  ", errors));
        }
    }

    private void Error(int line, string d, string msg) => Issues.Add(new ProfileIssue(line, d, msg, true));

    private void Warn(int line, string d, string msg) => Issues.Add(new ProfileIssue(line, d, msg, false));

    private void ParseCore(string text, string baseDir)
    {
        string proto = "udp";
        int port = 1194;
        var rawRemotes = new List<(string Host, int? Port, string? Proto)>();
        var ignoreUnknown = new HashSet<string>(StringComparer.Ordinal);
        string? devType = null;
        string? tlsAuthText = null, tlsCryptText = null;
        int? tlsAuthDir = null;
        int lineNo = 0;
        var lines = text.Replace("\r\n", "\n", StringComparison.Ordinal).Split('\n');
        for (int i = 0; i < lines.Length; i++)
        {
            lineNo = i + 1;
            string line = lines[i].Trim();
            if (line.Length == 0 || line[0] is '#' or ';')
            {
                continue;
            }

            // Inline file: <tag> ... </tag>
            if (line.StartsWith('<') && line.EndsWith('>') && !line.StartsWith("</", StringComparison.Ordinal))
            {
                string tag = line[1..^1];
                var sb = new StringBuilder();
                int j = i + 1;
                for (; j < lines.Length && lines[j].Trim() != $"</{tag}>"; j++)
                {
                    sb.Append(lines[j]).Append('\n');
                }

                if (j >= lines.Length)
                {
                    Error(lineNo, tag, $"inline block <{tag}> is not closed");
                    return;
                }

                i = j;
                ApplyFile(lineNo, tag, sb.ToString(), ref tlsAuthText, ref tlsCryptText);
                continue;
            }

            var t = Tokenize(line);
            if (t.Count == 0)
            {
                continue;
            }

            string d = t[0];
            if (d.StartsWith("--", StringComparison.Ordinal))
            {
                d = d[2..];
            }

            string Arg(int k) => k < t.Count ? t[k] : throw new ProfileException($"line {lineNo}: {d}: missing argument {k}");
            try
            {
                switch (d)
                {
                    case "client":
                        Pull = true;
                        break;
                    case "pull":
                        Pull = true;
                        break;
                    case "dev":
                        if (!Arg(1).StartsWith("tun", StringComparison.Ordinal) && devType is null)
                        {
                            Error(lineNo, d, $"'{Arg(1)}': only tun devices are supported (tap is not)");
                        }

                        break;
                    case "dev-type":
                        devType = Arg(1);
                        if (devType != "tun")
                        {
                            Error(lineNo, d, $"'{devType}' is not supported (tun only)");
                        }

                        break;
                    case "proto":
                        proto = Arg(1);
                        break;
                    case "port":
                    case "rport":
                        port = int.Parse(Arg(1), System.Globalization.CultureInfo.InvariantCulture);
                        break;
                    case "remote":
                        rawRemotes.Add((Arg(1), t.Count > 2 ? int.Parse(t[2], System.Globalization.CultureInfo.InvariantCulture) : null, t.Count > 3 ? t[3] : null));
                        break;
                    case "remote-random":
                        RemoteRandom = true;
                        break;
                    case "ca":
                    case "cert":
                    case "key":
                    case "tls-crypt":
                    case "tls-auth":
                        if (Arg(1) == "[inline]")
                        {
                            if (d == "tls-auth" && t.Count > 2)
                            {
                                tlsAuthDir = int.Parse(t[2], System.Globalization.CultureInfo.InvariantCulture);
                            }

                            break;
                        }

                        string path = Path.IsPathRooted(Arg(1)) ? Arg(1) : Path.Combine(baseDir, Arg(1));
                        if (!File.Exists(path))
                        {
                            Error(lineNo, d, $"file not found: {path}");
                            break;
                        }

                        if (d == "tls-auth" && t.Count > 2)
                        {
                            tlsAuthDir = int.Parse(t[2], System.Globalization.CultureInfo.InvariantCulture);
                        }

                        ApplyFile(lineNo, d, File.ReadAllText(path), ref tlsAuthText, ref tlsCryptText);
                        break;
                    case "key-direction":
                        KeyDirection = int.Parse(Arg(1), System.Globalization.CultureInfo.InvariantCulture);
                        break;
                    case "auth":
                        AuthName = Arg(1).ToUpperInvariant();
                        TlsAuthDigest = AuthName switch
                        {
                            "SHA1" => HashAlgorithmName.SHA1,
                            "SHA256" => HashAlgorithmName.SHA256,
                            "SHA384" => HashAlgorithmName.SHA384,
                            "SHA512" => HashAlgorithmName.SHA512,
                            _ => throw new ProfileException($"line {lineNo}: auth {Arg(1)}: digest not supported"),
                        };
                        break;
                    case "remote-cert-tls":
                        if (Arg(1) != "server")
                        {
                            Error(lineNo, d, $"'{Arg(1)}': a client can only require 'server'");
                        }

                        RemoteCertTlsServer = true;
                        break;
                    case "data-ciphers":
                    case "ncp-ciphers":
                        DataCiphers = ParseCiphers(lineNo, d, Arg(1));
                        break;
                    case "data-ciphers-fallback":
                    case "cipher":
                        if (DataCipherNames.TryParse(Arg(1), out var fb) && DataCipherNames.IsAead(fb))
                        {
                            DataCiphersFallback = fb;
                        }
                        else
                        {
                            // 2.6 semantics: `cipher X` only matters as a fallback; non-AEAD ones cannot be used here.
                            Warn(lineNo, d, $"'{Arg(1)}' is not an AEAD cipher this client supports; ignored as fallback");
                        }

                        break;
                    case "auth-user-pass":
                        AuthUserPass = true;
                        if (t.Count > 1)
                        {
                            AuthUserPassFile = Path.IsPathRooted(t[1]) ? t[1] : Path.Combine(baseDir, t[1]);
                            var up = File.ReadAllLines(AuthUserPassFile);
                            if (up.Length < 2)
                            {
                                Error(lineNo, d, "file must hold the username and the password on two lines");
                            }
                            else
                            {
                                Username = up[0].Trim();
                                Password = up[1].TrimEnd('\r');
                            }
                        }

                        break;
                    case "verify-x509-name":
                        VerifyX509Name = Arg(1);
                        VerifyX509Type = t.Count > 2 ? t[2] : "subject";
                        if (VerifyX509Type is not ("subject" or "name" or "name-prefix"))
                        {
                            Error(lineNo, d, $"type '{VerifyX509Type}' unknown");
                        }

                        break;
                    case "pull-filter":
                        if (Arg(1) is not ("accept" or "ignore" or "reject"))
                        {
                            Error(lineNo, d, $"action '{Arg(1)}' unknown");
                        }

                        PullFilters.Add(new PullFilter(Arg(1), Arg(2)));
                        break;
                    case "reneg-sec":
                        RenegSeconds = int.Parse(Arg(1), System.Globalization.CultureInfo.InvariantCulture);
                        break;
                    case "server-poll-timeout":
                    case "connect-timeout":
                        ServerPollTimeoutSeconds = int.Parse(Arg(1), System.Globalization.CultureInfo.InvariantCulture);
                        break;
                    case "tls-version-min":
                        MinTls13 = Arg(1) == "1.3";
                        if (Arg(1) is not ("1.0" or "1.1" or "1.2" or "1.3"))
                        {
                            Error(lineNo, d, $"'{Arg(1)}' unknown");
                        }
                        else if (Arg(1) is "1.0" or "1.1")
                        {
                            Warn(lineNo, d, $"{Arg(1)}: this client never goes below TLS 1.2");
                        }

                        break;
                    case "auth-retry":
                        if (Arg(1) != "none")
                        {
                            Warn(lineNo, d, $"'{Arg(1)}' not implemented: AUTH_FAILED ends the client (auth-retry none)");
                        }

                        break;
                    case "hand-window":
                        HandWindowSeconds = int.Parse(Arg(1), System.Globalization.CultureInfo.InvariantCulture);
                        break;
                    case "connect-retry":
                        ConnectRetrySeconds = int.Parse(Arg(1), System.Globalization.CultureInfo.InvariantCulture);
                        if (t.Count > 2)
                        {
                            ConnectRetryMaxSeconds = int.Parse(t[2], System.Globalization.CultureInfo.InvariantCulture);
                        }

                        break;
                    case "connect-retry-max":
                        ConnectRetryMax = int.Parse(Arg(1), System.Globalization.CultureInfo.InvariantCulture);
                        break;
                    case "tun-mtu":
                        TunMtu = int.Parse(Arg(1), System.Globalization.CultureInfo.InvariantCulture);
                        break;
                    case "keepalive":
                        PingSeconds = int.Parse(Arg(1), System.Globalization.CultureInfo.InvariantCulture);
                        PingRestartSeconds = int.Parse(Arg(2), System.Globalization.CultureInfo.InvariantCulture);
                        break;
                    case "ping":
                        PingSeconds = int.Parse(Arg(1), System.Globalization.CultureInfo.InvariantCulture);
                        break;
                    case "ping-restart":
                        PingRestartSeconds = int.Parse(Arg(1), System.Globalization.CultureInfo.InvariantCulture);
                        break;
                    case "explicit-exit-notify":
                        ExplicitExitNotify = t.Count > 1 ? int.Parse(t[1], System.Globalization.CultureInfo.InvariantCulture) : 1;
                        break;
                    case "disable-dco":
                        DisableDco = true;
                        break;
                    case "comp-lzo":
                    case "compress":
                        Error(lineNo, d, "compression framing is not supported by this client; remove it (the server's 'compress migrate' handles clients without it)");
                        break;
                    case "tls-crypt-v2":
                    case "pkcs12":
                    case "cryptoapicert":
                    case "pkcs11-providers":
                    case "pkcs11-id":
                    case "secret":
                    case "ifconfig":
                    case "http-proxy":
                    case "socks-proxy":
                    case "fragment":
                    case "ns-cert-type":
                    case "tls-server":
                    case "mode":
                    case "lport":
                    case "bind":
                    case "key-method":
                    case "askpass":
                    case "tls-verify":
                    case "crl-verify":
                    case "extra-certs":
                    case "x509-username-field":
                    case "auth-user-pass-verify":
                    case "remote-cert-eku":
                    case "remote-cert-ku":
                    case "capath":
                    case "ca-path":
                    case "tls-version-max":
                        Error(lineNo, d, "not supported by this client");
                        break;
                    default:
                        if (Harmless.Contains(d))
                        {
                            break;
                        }

                        if (WarnOnly.Contains(d))
                        {
                            if (d == "ignore-unknown-option")
                            {
                                foreach (var x in t.Skip(1))
                                {
                                    ignoreUnknown.Add(x);
                                }

                                break;
                            }

                            Warn(lineNo, d, "not implemented by this client; ignored");
                            break;
                        }

                        if (ignoreUnknown.Contains(d))
                        {
                            Warn(lineNo, d, "unknown; ignored (ignore-unknown-option)");
                        }
                        else
                        {
                            Error(lineNo, d, "unknown or unsupported directive");
                        }

                        break;
                }
            }
            catch (Exception e) when (e is FormatException or OverflowException or ProfileException or IOException)
            {
                Error(lineNo, d, e.Message);
            }
        }

        foreach (var (host, rport, rproto) in rawRemotes)
        {
            string pr = rproto ?? proto;
            bool? tcp = ProtoIsTcp(pr);
            if (tcp is null)
            {
                Error(0, "proto", $"'{pr}' unknown (udp, tcp, tcp-client, udp4, tcp4-client, ...)");
                continue;
            }

            Remotes.Add(new RemoteEndpoint(host, rport ?? port, tcp.Value));
        }

        if (Remotes.Count == 0)
        {
            Error(0, "remote", "profile has no remote");
        }

        if (CaPem.Length == 0)
        {
            Error(0, "ca", "profile has no CA certificate");
        }

        if (CertPem is null != (KeyPem is null))
        {
            Error(0, "cert", "cert and key must be given together");
        }

        if (CertPem is null && !AuthUserPass)
        {
            Error(0, "cert", "neither a client certificate nor auth-user-pass is configured");
        }

        if (tlsCryptText is not null && tlsAuthText is not null)
        {
            Error(0, "tls-crypt", "tls-crypt and tls-auth are exclusive");
        }

        try
        {
            if (tlsCryptText is not null)
            {
                WrapMode = ControlWrapMode.TlsCrypt;
                WrapKey = StaticKey.Parse(tlsCryptText);
            }
            else if (tlsAuthText is not null)
            {
                WrapMode = ControlWrapMode.TlsAuth;
                WrapKey = StaticKey.Parse(tlsAuthText);
                KeyDirection = tlsAuthDir ?? KeyDirection;
            }
        }
        catch (Exception e) when (e is FormatException or ArgumentException)
        {
            Error(0, WrapMode == ControlWrapMode.TlsCrypt ? "tls-crypt" : "tls-auth", $"bad static key: {e.Message}");
        }

        if (!Pull)
        {
            Error(0, "client", "only pull clients ('client' or 'pull') are supported");
        }
    }

    private static bool? ProtoIsTcp(string p) => p switch
    {
        "udp" or "udp4" or "udp6" => false,
        "tcp" or "tcp-client" or "tcp4" or "tcp4-client" or "tcp6" or "tcp6-client" => true,
        _ => null,
    };

    private List<DataCipher> ParseCiphers(int line, string d, string list)
    {
        var result = new List<DataCipher>();
        foreach (var name in list.Split(':', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            string n = name.StartsWith('?') ? name[1..] : name;
            if (DataCipherNames.TryParse(n, out var c) && DataCipherNames.IsAead(c))
            {
                result.Add(c);
            }
            else
            {
                Warn(line, d, $"cipher '{n}' is not supported (AEAD only); left out");
            }
        }

        if (result.Count == 0)
        {
            Error(line, d, "no supported cipher left");
        }

        return result;
    }

    private void ApplyFile(int line, string tag, string content, ref string? tlsAuth, ref string? tlsCrypt)
    {
        switch (tag)
        {
            case "ca":
                CaPem = content;
                break;
            case "cert":
                CertPem = content;
                break;
            case "key":
                KeyPem = content;
                break;
            case "tls-crypt":
                tlsCrypt = content;
                break;
            case "tls-auth":
                tlsAuth = content;
                break;
            default:
                Error(line, tag, "inline block not supported by this client");
                break;
        }
    }

    /// <summary>Splits a config line like OpenVPN: whitespace separates, quotes group, backslash escapes.</summary>
    internal static List<string> Tokenize(string line)
    {
        var tokens = new List<string>();
        var cur = new StringBuilder();
        bool inTok = false, dq = false, sq = false;
        for (int i = 0; i < line.Length; i++)
        {
            char c = line[i];
            if (dq)
            {
                if (c == '\\' && i + 1 < line.Length)
                {
                    cur.Append(line[++i]);
                }
                else if (c == '"')
                {
                    dq = false;
                }
                else
                {
                    cur.Append(c);
                }
            }
            else if (sq)
            {
                if (c == '\'')
                {
                    sq = false;
                }
                else
                {
                    cur.Append(c);
                }
            }
            else if (c == '"')
            {
                dq = inTok = true;
            }
            else if (c == '\'')
            {
                sq = inTok = true;
            }
            else if (char.IsWhiteSpace(c))
            {
                if (inTok)
                {
                    tokens.Add(cur.ToString());
                    cur.Clear();
                    inTok = false;
                }
            }
            else if ((c == '#' || c == ';') && !inTok)
            {
                break;
            }
            else
            {
                cur.Append(c);
                inTok = true;
            }
        }

        if (inTok)
        {
            tokens.Add(cur.ToString());
        }

        return tokens;
    }

    /// <summary>Applies pull-filter rules (first match wins). Returns "accept", "ignore" or "reject".</summary>
    public string FilterPushed(string optionText)
    {
        foreach (var f in PullFilters)
        {
            if (optionText.StartsWith(f.Text, StringComparison.Ordinal))
            {
                return f.Action;
            }
        }

        return "accept";
    }
}
