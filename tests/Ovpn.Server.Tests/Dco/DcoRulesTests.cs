// SPDX-License-Identifier: MIT
using Ovpn.ControlPlane.Config;
using Ovpn.ControlPlane.Dco;

namespace Ovpn.Server.Tests.Dco;

public class DcoRulesTests
{
    private static DcoFinding One(string line) => DcoRules.ClassifyLine("test", 1, line) ?? throw new Xunit.Sdk.XunitException("no finding");

    [Theory]
    [InlineData("fragment 1300", "fragment")]
    [InlineData("topology net30", "topology")]
    [InlineData("topology p2p", "topology")]
    [InlineData("http-proxy proxy.example 8080", "http-proxy")]
    [InlineData("socks-proxy 127.0.0.1 1080", "socks-proxy")]
    [InlineData("shaper 100000", "shaper")]
    [InlineData("comp-lzo", "comp-lzo")]
    [InlineData("comp-lzo no", "comp-lzo")]
    [InlineData("compress stub-v2", "compress")]
    [InlineData("compress", "compress")]
    [InlineData("allow-compression yes", "allow-compression")]
    [InlineData("allow-compression asym", "allow-compression")]
    [InlineData("dev-type tap", "dev-type")]
    [InlineData("dev tap0", "dev")]
    [InlineData("bind-dev vrf-blue", "bind-dev")]
    [InlineData("mktun", "mktun")]
    [InlineData("management-query-proxy", "management-query-proxy")]
    [InlineData("data-ciphers AES-256-GCM:AES-256-CBC", "data-ciphers")]
    [InlineData("data-ciphers-fallback BF-CBC", "data-ciphers-fallback")]
    [InlineData("disable-dco", "disable-dco")]
    [InlineData("--fragment 1200", "fragment")]
    [InlineData("  FRAGMENT   1200  # trailing comment", "fragment")]
    [InlineData("push \"comp-lzo no\"", "push")]
    [InlineData("secret static.key", "secret")]
    public void IncompatibleDirectivesAreRefusedWithAReason(string line, string directive)
    {
        var f = One(line);
        Assert.Equal(directive, f.Directive);
        Assert.Equal(DcoCompatibility.Incompatible, f.Compatibility);
        Assert.False(string.IsNullOrWhiteSpace(f.Reason));
    }

    [Theory]
    [InlineData("topology subnet")]
    [InlineData("dev tun")]
    [InlineData("dev-type tun")]
    [InlineData("data-ciphers AES-256-GCM:CHACHA20-POLY1305:AES-128-GCM")]
    [InlineData("data-ciphers-fallback AES-256-GCM")]
    [InlineData("allow-compression no")]
    [InlineData("keepalive 10 60")]
    [InlineData("push \"route 10.0.0.0 255.0.0.0\"")]
    [InlineData("mssfix 1400")]
    [InlineData("client-to-client")]
    [InlineData("some-future-option 1")]
    public void CompatibleDirectivesPass(string line)
    {
        Assert.Equal(DcoCompatibility.Compatible, One(line).Compatibility);
    }

    [Theory]
    [InlineData("ip-win32 dynamic")]
    [InlineData("dhcp-option WINS 10.0.0.1")]
    [InlineData("push \"ip-win32 dynamic\"")]
    [InlineData("tap-sleep 5")]
    public void LegacyDhcpOptionsAreFlagged(string line)
    {
        Assert.Equal(DcoCompatibility.Warning, One(line).Compatibility);
    }

    [Theory]
    [InlineData("")]
    [InlineData("   ")]
    [InlineData("# fragment 1300")]
    [InlineData("; comp-lzo")]
    public void CommentsAndBlankLinesAreSkipped(string line)
    {
        Assert.Null(DcoRules.ClassifyLine("t", 1, line));
    }

    [Fact]
    public void NonAeadReasonNamesTheCiphers()
    {
        var f = One("data-ciphers AES-256-GCM:AES-128-CBC:BF-CBC");
        Assert.Contains("AES-128-CBC", f.Reason);
        Assert.Contains("BF-CBC", f.Reason);
        Assert.DoesNotContain("AES-256-GCM,", f.Reason);
    }

    [Fact]
    public void PushedDirectiveIsJudgedByItsContent()
    {
        var f = One("push \"compress lz4\"");
        Assert.Equal(DcoCompatibility.Incompatible, f.Compatibility);
        Assert.Contains("compress", f.Reason);
    }

    private static ServerSettings Settings(bool dco, int osi = 3, string ciphers = "AES-256-GCM:AES-128-GCM", string server = "", string client = "") => new()
    {
        DaemonEnabled = true, Dco = dco, UdpEnabled = true, TcpEnabled = true, UdpPort = 1194, TcpPort = 443,
        UdpDaemons = 1, TcpDaemons = 1, Pool = Ipv4Network.Parse("172.27.224.0/20"), DataCiphers = ciphers.Split(':'),
        TlsMode = TlsControlSecurity.TlsCrypt, OsiLayer = osi, TunMtu = 1420, DnsServers = [], PrivateRoutes = [],
        RerouteGateway = false, PingSeconds = 10, PingRestartSeconds = 60, RenegSeconds = 3600, Hostname = "vpn.example",
        HttpsPort = 943, ServerConfigText = server, ClientConfigText = client,
    };

    [Fact]
    public void CleanConfigIsOffloadable()
    {
        var r = DcoRules.Review(Settings(dco: true));
        Assert.True(r.Offloadable);
        Assert.Empty(r.Blockers);
        Assert.Equal(["AES-256-GCM", "AES-128-GCM"], r.OffloadedCiphers);
        Assert.False(r.CompressionAllowed);
    }

    [Fact]
    public void CompressionIsForcedOffOnlyWithDco()
    {
        Assert.True(DcoRules.Review(Settings(dco: false)).CompressionAllowed);
        var on = DcoRules.Review(Settings(dco: true));
        Assert.False(on.CompressionAllowed);
        Assert.Contains(on.Warnings, w => w.Contains("compression is forced off"));
    }

    [Fact]
    public void Layer2IsNotOfferedWithDco()
    {
        var r = DcoRules.Review(Settings(dco: true, osi: 2));
        Assert.False(r.Offloadable);
        Assert.Contains(r.Blockers, b => b.Contains(ConfigKeys.OsiLayer) && b.Contains("bridging"));
    }

    [Fact]
    public void NonAeadCiphersAreTakenOutOfTheOffloadedSet()
    {
        var r = DcoRules.Review(Settings(dco: true, ciphers: "AES-256-GCM:AES-256-CBC:CHACHA20-POLY1305"));
        Assert.Equal(["AES-256-GCM", "CHACHA20-POLY1305"], r.OffloadedCiphers);
        Assert.True(r.Offloadable);
        Assert.Contains(r.Warnings, w => w.Contains("AES-256-CBC taken out"));
    }

    [Fact]
    public void EveryDirectiveLineIsReportedWithItsSourceAndLine()
    {
        var r = DcoRules.Review(Settings(dco: true, server: "keepalive 10 60\n\nfragment 1300\r\n# x\ntopology net30", client: "comp-lzo no"));
        var server = r.Findings.Where(f => f.Source == ConfigKeys.ServerConfigText).ToList();
        Assert.Equal([1, 3, 5], server.Select(f => f.LineNumber));
        Assert.Equal(3, r.Blockers.Count());
        Assert.Contains(r.Blockers, b => b.StartsWith($"{ConfigKeys.ServerConfigText} line 3 'fragment'"));
        Assert.Contains(r.Blockers, b => b.StartsWith($"{ConfigKeys.ClientConfigText} line 1 'comp-lzo'"));
    }
}
