// SPDX-License-Identifier: MIT
using Ovpn.ControlPlane.Config;

namespace Ovpn.ControlPlane.Dco;

/// <summary>How a setting or directive relates to kernel data channel offload (ovpn-dco).</summary>
public enum DcoCompatibility
{
    /// <summary>Works unchanged with the kernel data path.</summary>
    Compatible,

    /// <summary>Works, but something is adjusted or ignored (the reason says what).</summary>
    Warning,

    /// <summary>Prevents offload for the affected peers (OpenVPN 2.6 would fall back to userspace).</summary>
    Incompatible,
}

/// <summary>
/// One finding of the review. <see cref="Source"/> is the config key the finding comes from,
/// <see cref="LineNumber"/> the 1-based line inside a config_text key (0 for plain settings).
/// </summary>
public sealed record DcoFinding(string Source, int LineNumber, string Line, string Directive, DcoCompatibility Compatibility, string Reason);

/// <summary>The outcome of <see cref="DcoRules.Review"/>.</summary>
public sealed record DcoReview(
    bool DcoEnabled,
    IReadOnlyList<DcoFinding> Findings,
    IReadOnlyList<string> OffloadedCiphers,
    bool CompressionAllowed)
{
    /// <summary>Nothing in the configuration prevents offload.</summary>
    public bool Offloadable => Findings.All(f => f.Compatibility != DcoCompatibility.Incompatible);

    /// <summary>The reasons that prevent offload, as "source: directive: reason".</summary>
    public IEnumerable<string> Blockers => Findings.Where(f => f.Compatibility == DcoCompatibility.Incompatible).Select(Describe);

    public IEnumerable<string> Warnings => Findings.Where(f => f.Compatibility == DcoCompatibility.Warning).Select(Describe);

    private static string Describe(DcoFinding f) =>
        f.LineNumber > 0 ? $"{f.Source} line {f.LineNumber} '{f.Directive}': {f.Reason}" : $"{f.Source}: {f.Reason}";
}

/// <summary>
/// The DCO rules of this server, modelled on what OpenVPN 2.6 checks before it enables offload
/// (dco_check_option / dco_check_option_ce / dco_check_startup_option, protocol notes §17.1).
/// The kernel module only does AEAD in DATA_V2 on a routed (tun) interface, with no compression
/// framing and no userspace-only features such as fragmentation, proxies or traffic shaping.
/// </summary>
public static class DcoRules
{
    /// <summary>Ciphers the Linux kernel backend implements (2.6: dco_get_supported_ciphers).</summary>
    public static readonly IReadOnlyList<string> KernelCiphers = ["AES-128-GCM", "AES-192-GCM", "AES-256-GCM", "CHACHA20-POLY1305"];

    /// <summary>Reviews the settings and every additional directive. Pure: no I/O.</summary>
    public static DcoReview Review(ServerSettings s)
    {
        var findings = new List<DcoFinding>();

        if (s.OsiLayer == 2)
        {
            findings.Add(new DcoFinding(ConfigKeys.OsiLayer, 0, "2", "osi_layer", DcoCompatibility.Incompatible,
                "layer-2 bridging (TAP) is not offered with DCO: ovpn-dco is a routed (layer 3) interface only"));
        }

        var offloaded = s.DataCiphers.Where(c => KernelCiphers.Contains(c, StringComparer.OrdinalIgnoreCase)).ToList();
        var removed = s.DataCiphers.Except(offloaded, StringComparer.OrdinalIgnoreCase).ToList();
        if (removed.Count > 0)
        {
            findings.Add(new DcoFinding(ConfigKeys.DataCiphers, 0, string.Join(':', s.DataCiphers), "data-ciphers",
                s.Dco ? DcoCompatibility.Warning : DcoCompatibility.Compatible,
                $"{string.Join(", ", removed)} taken out of the offloaded cipher set (the kernel does AEAD only); offloaded: {string.Join(':', offloaded)}"));
        }

        if (s.Dco)
        {
            findings.Add(new DcoFinding(ConfigKeys.Dco, 0, "true", "compression", DcoCompatibility.Warning,
                "compression is forced off: no compression framing is offered or accepted (the kernel data path has none)"));
        }

        Classify(ConfigKeys.ServerConfigText, s.ServerConfigText, findings);
        Classify(ConfigKeys.ClientConfigText, s.ClientConfigText, findings);
        return new DcoReview(s.Dco, findings, offloaded, CompressionAllowed: !s.Dco);
    }

    /// <summary>Classifies each directive line of a config_text value (comments and blank lines skipped).</summary>
    public static void Classify(string source, string text, List<DcoFinding> into)
    {
        var lines = text.Replace("\r\n", "\n").Split('\n');
        for (int i = 0; i < lines.Length; i++)
        {
            if (ClassifyLine(source, i + 1, lines[i]) is { } f)
            {
                into.Add(f);
            }
        }
    }

    /// <summary>Classifies one directive line; null for blank lines and comments.</summary>
    public static DcoFinding? ClassifyLine(string source, int lineNumber, string line)
    {
        var tokens = Tokenize(line);
        if (tokens.Count == 0)
        {
            return null;
        }

        var name = tokens[0].TrimStart('-').ToLowerInvariant();
        var args = tokens.Skip(1).ToList();
        var (compat, reason) = Judge(name, args);
        return new DcoFinding(source, lineNumber, line.Trim(), name, compat, reason);
    }

    private static (DcoCompatibility, string) Judge(string name, List<string> args)
    {
        const DcoCompatibility ok = DcoCompatibility.Compatible;
        const DcoCompatibility warn = DcoCompatibility.Warning;
        const DcoCompatibility bad = DcoCompatibility.Incompatible;
        string Arg(int i) => i < args.Count ? args[i] : "";

        switch (name)
        {
            case "push":
                // A pushed option acts on the client: judge the option inside the quotes.
                if (args.Count == 0)
                {
                    return (warn, "push without an option");
                }

                var inner = ClassifyLine("push", 0, string.Join(' ', args));
                return inner is null ? (warn, "push without an option")
                    : (inner.Compatibility, $"pushed '{inner.Directive}': {inner.Reason}");
            case "fragment":
                return (bad, "--fragment is done by userspace; the kernel data path does not fragment (use mssfix / a smaller tun-mtu)");
            case "http-proxy":
            case "socks-proxy":
                return (bad, $"--{name}: traffic through a proxy runs in userspace, the kernel cannot use that transport");
            case "http-proxy-option":
            case "http-proxy-user-pass":
                return (bad, $"--{name} belongs to an HTTP proxy connection, which is not offloadable");
            case "shaper":
                return (bad, "--shaper (traffic shaping) is done in userspace and is not supported with DCO");
            case "comp-lzo":
            case "compress":
                return (bad, $"--{name}: any compression setting, including stubs and 'no', disables offload in OpenVPN 2.6 (the kernel has no compression framing)");
            case "allow-compression":
                return Arg(0).Equals("no", StringComparison.OrdinalIgnoreCase)
                    ? (ok, "allow-compression no keeps compression off")
                    : (bad, $"allow-compression {Arg(0)}: compression must stay off with DCO");
            case "topology":
                return Arg(0).Equals("subnet", StringComparison.OrdinalIgnoreCase)
                    ? (ok, "topology subnet is what DCO servers use")
                    : (bad, $"topology {Arg(0)}: a DCO server needs topology subnet");
            case "dev-type":
                return Arg(0).Equals("tun", StringComparison.OrdinalIgnoreCase)
                    ? (ok, "tun device")
                    : (bad, $"dev-type {Arg(0)}: DCO is a layer-3 (tun) interface only");
            case "dev":
                return Arg(0).StartsWith("tap", StringComparison.OrdinalIgnoreCase)
                    ? (bad, $"dev {Arg(0)}: a tap (layer-2) device cannot be offloaded")
                    : (ok, "the device name is chosen by the server");
            case "bind-dev":
                return (bad, "--bind-dev (VRF binding) is not supported with DCO");
            case "mktun":
            case "rmtun":
                return (bad, $"--{name}: persistent tun creation is a userspace device operation, incompatible with DCO");
            case "management-query-proxy":
                return (bad, "--management-query-proxy may select a proxy at runtime, which DCO cannot carry");
            case "disable-dco":
                return (bad, "--disable-dco turns offload off explicitly");
            case "secret":
                return (bad, "static-key mode (--secret) has no TLS key negotiation; DCO needs TLS mode");
            case "data-ciphers":
            case "ncp-ciphers":
            {
                var nonAead = Arg(0).Split(':', StringSplitOptions.RemoveEmptyEntries)
                    .Where(c => !KernelCiphers.Contains(c, StringComparer.OrdinalIgnoreCase)).ToList();
                return nonAead.Count == 0
                    ? (ok, "only ciphers the kernel implements")
                    : (bad, $"{string.Join(", ", nonAead)} not supported by the kernel (AEAD only: {string.Join(':', KernelCiphers)})");
            }

            case "data-ciphers-fallback":
            case "cipher":
                return KernelCiphers.Contains(Arg(0), StringComparer.OrdinalIgnoreCase)
                    ? (ok, "AEAD cipher supported by the kernel")
                    : (bad, $"--{name} {Arg(0)}: not an AEAD cipher the kernel implements");
            case "auth":
                return (ok, "--auth only matters for non-AEAD ciphers and tls-auth; the kernel data path is AEAD");
            case "ip-win32":
                return (warn, $"ip-win32 {Arg(0)}: legacy DHCP emulation of the TAP-Windows adapter; DCO (ovpn-dco-win) clients do not use it");
            case "dhcp-option":
                return (warn, $"dhcp-option {Arg(0)}: DHCP-style options are a legacy TAP mechanism; DCO clients apply them through the OS (works for DNS/DOMAIN, other options are ignored)");
            case "tap-sleep":
            case "dhcp-renew":
            case "dhcp-release":
            case "dhcp-pre-release":
            case "route-delay":
                return (warn, $"--{name}: legacy TAP-Windows DHCP handling, has no effect with DCO");
            case "windows-driver":
                return Arg(0).Equals("ovpn-dco", StringComparison.OrdinalIgnoreCase)
                    ? (ok, "windows-driver ovpn-dco")
                    : (bad, $"windows-driver {Arg(0)}: only the ovpn-dco driver is offloaded");
            case "mode":
            case "server":
            case "tls-server":
            case "tls-client":
            case "client":
            case "keepalive":
            case "ping":
            case "ping-restart":
            case "ping-exit":
            case "inactive":
            case "route":
            case "route-ipv6":
            case "iroute":
            case "iroute-ipv6":
            case "redirect-gateway":
            case "block-outside-dns":
            case "mssfix":
            case "tun-mtu":
            case "verb":
            case "mute":
            case "float":
            case "client-to-client":
            case "persist-tun":
            case "persist-key":
            case "explicit-exit-notify":
            case "reneg-sec":
            case "reneg-bytes":
            case "reneg-pkts":
            case "tls-crypt":
            case "tls-auth":
            case "tls-version-min":
            case "remote-cert-tls":
            case "user":
            case "group":
            case "max-clients":
            case "duplicate-cn":
            case "script-security":
            case "setenv":
            case "proto":
            case "port":
            case "lport":
            case "rport":
            case "nobind":
            case "remote":
            case "resolv-retry":
            case "auth-nocache":
            case "pull":
            case "pull-filter":
            case "route-nopull":
            case "ifconfig-push":
            case "push-reset":
            case "status":
            case "log":
            case "log-append":
                return (ok, "not affected by data channel offload");
            default:
                return (ok, "not known to affect data channel offload");
        }
    }

    /// <summary>Splits an OpenVPN config line: whitespace-separated, double or single quotes group, # or ; starts a comment.</summary>
    internal static List<string> Tokenize(string line)
    {
        var tokens = new List<string>();
        var t = line.Trim();
        if (t.Length == 0 || t[0] is '#' or ';')
        {
            return tokens;
        }

        var cur = new System.Text.StringBuilder();
        char quote = '\0';
        bool any = false;
        foreach (var ch in t)
        {
            if (quote != '\0')
            {
                if (ch == quote)
                {
                    quote = '\0';
                }
                else
                {
                    cur.Append(ch);
                }

                continue;
            }

            if (ch is '"' or '\'')
            {
                quote = ch;
                any = true;
                continue;
            }

            if (char.IsWhiteSpace(ch))
            {
                if (cur.Length > 0 || any)
                {
                    tokens.Add(cur.ToString());
                    cur.Clear();
                    any = false;
                }

                continue;
            }

            if (ch is '#' or ';' && cur.Length == 0 && !any)
            {
                break;
            }

            cur.Append(ch);
        }

        if (cur.Length > 0 || any)
        {
            tokens.Add(cur.ToString());
        }

        return tokens;
    }
}
