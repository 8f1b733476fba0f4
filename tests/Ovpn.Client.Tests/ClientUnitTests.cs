// SPDX-License-Identifier: MIT
using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Ovpn.ControlPlane.Client;
using Ovpn.Protocol.Control;
using Ovpn.Protocol.Keys;
using Ovpn.Protocol.Options;

namespace Ovpn.Client.Tests;

/// <summary>Shared throwaway certificates for the unit tests (no openvpn needed).</summary>
internal static class Certs
{
    private static readonly Lazy<(string CaPem, X509Certificate2 Ca, X509Certificate2 Server, X509Certificate2 ClientLeaf, X509Certificate2 OtherServer)> s_all = new(Make);

    public static string CaPem => s_all.Value.CaPem;
    public static X509Certificate2 Ca => s_all.Value.Ca;
    public static X509Certificate2 Server => s_all.Value.Server;
    public static X509Certificate2 ClientLeaf => s_all.Value.ClientLeaf;
    public static X509Certificate2 OtherServer => s_all.Value.OtherServer;

    private static (string, X509Certificate2, X509Certificate2, X509Certificate2, X509Certificate2) Make()
    {
        var now = DateTimeOffset.UtcNow;
        X509Certificate2 MakeCa(string cn, out RSA key)
        {
            key = RSA.Create(2048);
            var req = new CertificateRequest("CN=" + cn, key, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
            req.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
            req.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign, true));
            return req.CreateSelfSigned(now.AddHours(-1), now.AddYears(1));
        }

        X509Certificate2 Leaf(X509Certificate2 ca, string subject, string eku, bool withKu)
        {
            using var key = RSA.Create(2048);
            var req = new CertificateRequest(subject, key, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
            if (withKu)
            {
                req.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature | X509KeyUsageFlags.KeyEncipherment, true));
            }

            req.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid(eku)], false));
            return req.Create(ca, now.AddHours(-1), now.AddMonths(6), RandomNumberGenerator.GetBytes(8));
        }

        var ca = MakeCa("Test CA", out var caKey);
        var other = MakeCa("Other CA", out var otherKey);
        var srv = Leaf(ca, "CN=vpn.example, O=Example, C=US", "1.3.6.1.5.5.7.3.1", true);
        var cli = Leaf(ca, "CN=alice", "1.3.6.1.5.5.7.3.2", true);
        var os = Leaf(other, "CN=vpn.example", "1.3.6.1.5.5.7.3.1", true);
        caKey.Dispose();
        otherKey.Dispose();
        return (ca.ExportCertificatePem(), ca, srv, cli, os);
    }
}

public sealed class ClientProfileTests
{
    private static string Minimal(string extra = "") => $"""
        client
        dev tun
        proto udp
        remote vpn.example 1194
        remote-cert-tls server
        <ca>
        {Certs.CaPem.Trim()}
        </ca>
        auth-user-pass
        {extra}
        """;

    [Fact]
    public void ParsesRemotesWithPerRemoteProtoAndPort()
    {
        var p = ClientProfile.Parse(Minimal("remote 10.0.0.2 443 tcp\nremote 10.0.0.3\nport 1195\nremote-random"), "/");
        Assert.Empty(p.Errors);
        Assert.Equal(3, p.Remotes.Count);
        Assert.Equal(new RemoteEndpoint("vpn.example", 1194, false), p.Remotes[0]);
        Assert.Equal(new RemoteEndpoint("10.0.0.2", 443, true), p.Remotes[1]);
        // `port` applies to remotes without an explicit port, wherever it appears (OpenVPN semantics).
        Assert.Equal(new RemoteEndpoint("10.0.0.3", 1195, false), p.Remotes[2]);
        Assert.True(p.RemoteRandom);
        Assert.True(p.RemoteCertTlsServer);
    }

    [Fact]
    public void ReadsInlineAndFileReferencedKeys()
    {
        var dir = Directory.CreateTempSubdirectory("ovpnt-client-prof-").FullName;
        try
        {
            var key = StaticKey.Generate();
            File.WriteAllText(Path.Combine(dir, "ta.key"), key.ToPem());
            File.WriteAllText(Path.Combine(dir, "ca.crt"), Certs.CaPem);
            File.WriteAllText(Path.Combine(dir, "creds.txt"), "bob\nsecret pass\n");
            var text = "client\ndev tun\nremote a.example\nca ca.crt\ntls-auth ta.key 1\nauth SHA256\nauth-user-pass creds.txt\n";
            var p = ClientProfile.Parse(text, dir);
            Assert.Empty(p.Errors);
            Assert.Equal(ControlWrapMode.TlsAuth, p.WrapMode);
            Assert.Equal(1, p.KeyDirection);
            Assert.Equal(HashAlgorithmName.SHA256, p.TlsAuthDigest);
            Assert.True(key.Bytes.SequenceEqual(p.WrapKey!.Bytes));
            Assert.Equal("bob", p.Username);
            Assert.Equal("secret pass", p.Password);

            var inline = ClientProfile.Parse(Minimal($"<tls-crypt>\n{key.ToPem()}\n</tls-crypt>"), dir);
            Assert.Empty(inline.Errors);
            Assert.Equal(ControlWrapMode.TlsCrypt, inline.WrapMode);
            Assert.True(key.Bytes.SequenceEqual(inline.WrapKey!.Bytes));

            var inlineAuth = ClientProfile.Parse(Minimal($"key-direction 1\n<tls-auth>\n{key.ToPem()}\n</tls-auth>"), dir);
            Assert.Equal(ControlWrapMode.TlsAuth, inlineAuth.WrapMode);
            Assert.Equal(1, inlineAuth.KeyDirection);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Theory]
    [InlineData("comp-lzo no", "comp-lzo", true)]
    [InlineData("compress stub-v2", "compress", true)]
    [InlineData("tls-crypt-v2 x.key", "tls-crypt-v2", true)]
    [InlineData("http-proxy 1.2.3.4 8080", "http-proxy", true)]
    [InlineData("frobnicate 1", "frobnicate", true)]
    [InlineData("dev tap", "dev", true)]
    [InlineData("mssfix 1400", "mssfix", false)]
    [InlineData("block-outside-dns", "block-outside-dns", false)]
    [InlineData("ignore-unknown-option frobnicate\nfrobnicate 1", "frobnicate", false)]
    [InlineData("remote-cert-eku \"TLS Web Server Authentication\"", "remote-cert-eku", true)]
    [InlineData("tls-version-min 1.1", "tls-version-min", false)]
    [InlineData("auth-retry interact", "auth-retry", false)]
    public void ReportsUnsupportedDirectivesByName(string line, string directive, bool isError)
    {
        var p = ClientProfile.Parse(Minimal(line), "/");
        var issue = Assert.Single(p.Issues, i => i.Directive == directive);
        Assert.Equal(isError, issue.IsError);
        if (isError)
        {
            var ex = Assert.Throws<ProfileException>(p.ThrowIfErrors);
            Assert.Contains(directive, ex.Message, StringComparison.Ordinal);
        }
        else
        {
            p.ThrowIfErrors();
        }
    }

    [Fact]
    public void MissingEssentialsAreErrors()
    {
        var p = ClientProfile.Parse("client\ndev tun\n", "/");
        Assert.Contains(p.Errors, i => i.Directive == "remote");
        Assert.Contains(p.Errors, i => i.Directive == "ca");
        Assert.Contains(p.Errors, i => i.Directive == "cert");
    }

    [Fact]
    public void DataCiphersKeepsOrderAndDropsNonAead()
    {
        var p = ClientProfile.Parse(Minimal("data-ciphers CHACHA20-POLY1305:AES-256-CBC:AES-128-GCM"), "/");
        Assert.Equal([DataCipher.ChaCha20Poly1305, DataCipher.Aes128Gcm], p.DataCiphers);
        Assert.Contains(p.Issues, i => !i.IsError && i.Message.Contains("AES-256-CBC", StringComparison.Ordinal));
    }

    [Fact]
    public void PullFilterFirstMatchWins()
    {
        var p = ClientProfile.Parse(Minimal("pull-filter accept \"route 10.1.\"\npull-filter ignore \"route \"\npull-filter reject redirect-gateway"), "/");
        Assert.Empty(p.Errors);
        Assert.Equal("accept", p.FilterPushed("route 10.1.0.0 255.255.0.0"));
        Assert.Equal("ignore", p.FilterPushed("route 10.2.0.0 255.255.0.0"));
        Assert.Equal("reject", p.FilterPushed("redirect-gateway def1"));
        Assert.Equal("accept", p.FilterPushed("ifconfig 10.8.0.2 255.255.255.0"));
    }

    [Fact]
    public void TokenizerHandlesQuotesAndComments()
    {
        Assert.Equal(["verify-x509-name", "C=US, CN=vpn", "subject"], ClientProfile.Tokenize("verify-x509-name \"C=US, CN=vpn\" subject # comment"));
        Assert.Equal(["a", "b c"], ClientProfile.Tokenize("a 'b c'"));
    }

    [Fact]
    public void PeerInfoAnnouncesDataV2PushAndCcExitButNotEkm()
    {
        var p = ClientProfile.Parse(Minimal("data-ciphers AES-128-GCM:CHACHA20-POLY1305"), "/");
        var pi = PeerInfo.Parse(ClientConnection.BuildPeerInfo(p));
        Assert.Equal(2 | 4 | 128, pi.IvProto);
        Assert.Equal(0, pi.IvProto & 8);
        Assert.Equal(["AES-128-GCM", "CHACHA20-POLY1305"], pi.IvCiphers!);
        Assert.Equal("linux", pi.IvPlat);
        Assert.Equal(0, pi.IvNcp); // IV_NCP=2 only when both AES-GCM ciphers are allowed
        // The server side of our own code negotiates the first common cipher from it.
        Assert.True(CipherNegotiation.TrySelect([DataCipher.Aes256Gcm, DataCipher.ChaCha20Poly1305], pi, null, null, out var c, out _));
        Assert.Equal(DataCipher.ChaCha20Poly1305, c);
    }
}

public sealed class PushedOptionsTests
{
    private static ClientProfile Profile(string extra = "") => ClientProfile.Parse(
        $"client\ndev tun\nremote x\nauth-user-pass\n<ca>\n{Certs.CaPem.Trim()}\n</ca>\n{extra}", "/");

    [Fact]
    public void AppliesSubnetPush()
    {
        var opts = PushReplyParser.Parse("PUSH_REPLY,route-gateway 10.8.0.1,topology subnet,ping 10,ping-restart 60,route 10.99.0.0 255.255.0.0," +
            "dhcp-option DNS 10.8.0.1,ifconfig 10.8.0.2 255.255.255.0,peer-id 7,cipher AES-128-GCM,protocol-flags cc-exit,tun-mtu 1420");
        Assert.True(PushedOptions.TryApply(opts, Profile(), out var cfg, out var err), err);
        Assert.Equal(IPAddress.Parse("10.8.0.2"), cfg!.Address);
        Assert.Equal(24, cfg.PrefixLength);
        Assert.Null(cfg.PeerAddress);
        Assert.Equal(7u, cfg.PeerId);
        Assert.Equal(DataCipher.Aes128Gcm, cfg.Cipher);
        Assert.Equal(10, cfg.Ping);
        Assert.Equal(60, cfg.PingRestart);
        Assert.Equal(1420, cfg.TunMtu);
        Assert.True(cfg.CcExit);
        var route = Assert.Single(cfg.Routes);
        Assert.Equal((IPAddress.Parse("10.99.0.0"), 16), route);
    }

    [Fact]
    public void AppliesIpv6AndRedirectGateway()
    {
        var opts = PushReplyParser.Parse("PUSH_REPLY,tun-ipv6,ifconfig-ipv6 fd00:8::1000/64 fd00:8::1,route-ipv6 fd00:9::/48," +
            "redirect-gateway def1 bypass-dhcp,topology subnet,ifconfig 10.8.0.2 255.255.255.0,cipher AES-256-GCM");
        Assert.True(PushedOptions.TryApply(opts, Profile(), out var cfg, out var err), err);
        Assert.Equal(IPAddress.Parse("fd00:8::1000"), cfg!.Address6);
        Assert.Equal(64, cfg.Prefix6);
        Assert.Equal((IPAddress.Parse("fd00:9::"), 48), Assert.Single(cfg.Routes6));
        Assert.True(cfg.RedirectGateway);
    }

    [Fact]
    public void Net30GivesPointToPointPeer()
    {
        var opts = PushReplyParser.Parse("PUSH_REPLY,topology net30,ifconfig 10.8.0.6 10.8.0.5,cipher AES-256-GCM");
        Assert.True(PushedOptions.TryApply(opts, Profile(), out var cfg, out var err), err);
        Assert.Equal(IPAddress.Parse("10.8.0.5"), cfg!.PeerAddress);
        Assert.Null(cfg.PeerId); // no peer-id pushed: DATA_V1
    }

    [Theory]
    [InlineData("PUSH_REPLY,ifconfig 10.8.0.2 255.255.255.0,cipher AES-256-GCM,protocol-flags cc-exit tls-ekm", "tls-ekm")]
    [InlineData("PUSH_REPLY,ifconfig 10.8.0.2 255.255.255.0,cipher AES-256-GCM,key-derivation tls-ekm", "key-derivation")]
    [InlineData("PUSH_REPLY,ifconfig 10.8.0.2 255.255.255.0,cipher BF-CBC", "BF-CBC")]
    [InlineData("PUSH_REPLY,ifconfig 10.8.0.2 255.255.255.0,cipher CHACHA20-POLY1305", "not in data-ciphers")]
    [InlineData("PUSH_REPLY,ifconfig 10.8.0.2 255.255.255.0,cipher AES-256-GCM,compress stub-v2", "compress")]
    [InlineData("PUSH_REPLY,cipher AES-256-GCM", "ifconfig")]
    public void RefusesWhatItCannotHonour(string push, string expected)
    {
        var p = Profile("data-ciphers AES-256-GCM:AES-128-GCM");
        Assert.False(PushedOptions.TryApply(PushReplyParser.Parse(push), p, out _, out var err));
        Assert.Contains(expected, err, StringComparison.Ordinal);
    }

    [Fact]
    public void MissingCipherUsesFallback()
    {
        var opts = PushReplyParser.Parse("PUSH_REPLY,ifconfig 10.8.0.2 255.255.255.0");
        Assert.False(PushedOptions.TryApply(opts, Profile(), out _, out _));
        Assert.True(PushedOptions.TryApply(opts, Profile("data-ciphers-fallback AES-128-GCM"), out var cfg, out var err), err);
        Assert.Equal(DataCipher.Aes128Gcm, cfg!.Cipher);
    }
}

public sealed class KeyMethod2FramingTests
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void SplitsServerKeyMethod2FromFollowingMessage(bool withTrailer)
    {
        var m = KeyMethod2Message.CreateRandom(isClient: false);
        m.Options = "V4,dev-type tun,link-mtu 1549,tun-mtu 1500,proto UDPv4,auth [null-digest],keysize 256,key-method 2,tls-server";
        var km = m.Encode(isClient: false);
        var trailer = withTrailer ? ControlMessage.Encode("PUSH_REPLY,ifconfig 10.8.0.2 255.255.255.0") : [];
        byte[] all = [.. km, .. trailer];
        Assert.Equal(km.Length, KeyMethod2Message.MeasureLength(all, fromClient: false));
        Assert.True(KeyMethod2Message.TryDecode(all.AsSpan(0, km.Length), fromClient: false, out var back, out var err), err);
        Assert.Equal(m.Random1, back!.Random1);
        Assert.Equal(m.Options, back.Options);
    }
}

public sealed class ServerCertificateCheckTests
{
    private static ClientProfile Profile(string extra) => ClientProfile.Parse(
        $"client\ndev tun\nremote x\nauth-user-pass\n<ca>\n{Certs.CaPem.Trim()}\n</ca>\n{extra}", "/");

    private static X509Certificate2Collection Cas()
    {
        var c = new X509Certificate2Collection();
        c.ImportFromPem(Certs.CaPem);
        return c;
    }

    [Fact]
    public void AcceptsServerCertificateFromProfileCa() =>
        Assert.Null(ServerCertificateCheck.Validate(Certs.Server, null, Cas(), Profile("remote-cert-tls server")));

    [Fact]
    public void RefusesCertificateFromAnotherCa() =>
        Assert.Contains("chain", ServerCertificateCheck.Validate(Certs.OtherServer, null, Cas(), Profile("")), StringComparison.Ordinal);

    [Fact]
    public void RemoteCertTlsServerRefusesClientCertificate()
    {
        Assert.Contains("EKU", ServerCertificateCheck.Validate(Certs.ClientLeaf, null, Cas(), Profile("remote-cert-tls server")), StringComparison.Ordinal);
        // Without the directive a client certificate from the same CA passes (OpenVPN behaves alike).
        Assert.Null(ServerCertificateCheck.Validate(Certs.ClientLeaf, null, Cas(), Profile("")));
    }

    [Theory]
    [InlineData("verify-x509-name vpn.example name", true)]
    [InlineData("verify-x509-name vpn.other name", false)]
    [InlineData("verify-x509-name vpn. name-prefix", true)]
    [InlineData("verify-x509-name \"C=US, O=Example, CN=vpn.example\"", true)]
    [InlineData("verify-x509-name \"C=US, O=Other, CN=vpn.example\" subject", false)]
    public void VerifyX509Name(string directive, bool ok)
    {
        var p = Profile(directive);
        Assert.Empty(p.Errors);
        var r = ServerCertificateCheck.Validate(Certs.Server, null, Cas(), p);
        Assert.Equal(ok, r is null);
    }
}

public sealed class ConnectCommandTests
{
    [Fact]
    public async Task ProfileErrorsStopTheClientBeforeAnyNetworkUse()
    {
        var dir = Directory.CreateTempSubdirectory("ovpnt-client-cli-").FullName;
        try
        {
            string profile = Path.Combine(dir, "bad.ovpn");
            File.WriteAllText(profile, $"client\ndev tun\nremote 127.0.0.1 1\ncomp-lzo no\nfrobnicate 1\nmssfix 1400\n<ca>\n{Certs.CaPem.Trim()}\n</ca>\nauth-user-pass\n");
            var psi = new System.Diagnostics.ProcessStartInfo("dotnet") { RedirectStandardError = true, RedirectStandardOutput = true, RedirectStandardInput = true };
            foreach (var a in new[] { Path.Combine(AppContext.BaseDirectory, "ovpnas.dll"), "connect", profile, "--data-dir", Path.Combine(dir, "d") })
            {
                psi.ArgumentList.Add(a);
            }

            using var p = System.Diagnostics.Process.Start(psi)!;
            p.StandardInput.Close();
            var err = p.StandardError.ReadToEndAsync();
            var output = p.StandardOutput.ReadToEndAsync();
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            await p.WaitForExitAsync(cts.Token);
            string all = await err + await output;
            Assert.NotEqual(0, p.ExitCode);
            Assert.Contains("comp-lzo", all, StringComparison.Ordinal);
            Assert.Contains("frobnicate", all, StringComparison.Ordinal);
            Assert.Contains("mssfix", all, StringComparison.Ordinal); // the warning is reported too
            Assert.DoesNotContain("connecting to", all, StringComparison.Ordinal);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void StatusWithoutRunningClientSaysSo()
    {
        var sw = new StringWriter();
        Assert.Equal(1, Ovpn.Cli.ConnectCommand.PrintStatus(Path.Combine(Path.GetTempPath(), "ovpnt-client-none-" + Guid.NewGuid()), sw));
        Assert.Contains("no client running", sw.ToString(), StringComparison.Ordinal);
    }
}
