// SPDX-License-Identifier: MIT
using System.Diagnostics;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Ovpn.ControlPlane.Config;
using Ovpn.ControlPlane.Pki;
using Ovpn.ControlPlane.Tests.Config;

namespace Ovpn.ControlPlane.Tests.Pki;

/// <summary>One initialized PKI shared by the tests of the class (RSA key generation is slow).</summary>
public sealed class PkiFixture : IDisposable
{
    public TempDataDir Dir { get; } = new();
    public TempDataDir OtherDir { get; } = new();
    public CertificateAuthority Ca { get; }
    public CertificateAuthority OtherCa { get; }

    public PkiFixture()
    {
        Ca = CertificateAuthority.Initialize(Dir.CreateDatabase(), "vpn.example.com");
        OtherCa = CertificateAuthority.Initialize(OtherDir.CreateDatabase(), "other.example.com");
    }

    public void Dispose()
    {
        Dir.Dispose();
        OtherDir.Dispose();
    }
}

public sealed class CertificateAuthorityTests(PkiFixture fx) : IClassFixture<PkiFixture>
{
    private CertificateAuthority Ca => fx.Ca;

    private static X509Certificate2 Load(IssuedCertificate c) => X509Certificate2.CreateFromPem(c.CertificatePem);

    private static (int Code, string Output) OpensslVerify(string caPem, string certPem, string purpose)
    {
        var dir = Directory.CreateTempSubdirectory("ovpnas-openssl-");
        try
        {
            var ca = Path.Combine(dir.FullName, "ca.pem");
            var cert = Path.Combine(dir.FullName, "cert.pem");
            File.WriteAllText(ca, caPem);
            File.WriteAllText(cert, certPem);
            var psi = new ProcessStartInfo("openssl") { RedirectStandardOutput = true, RedirectStandardError = true };
            foreach (var a in new[] { "verify", "-CAfile", ca, "-purpose", purpose, cert })
                psi.ArgumentList.Add(a);
            using var p = Process.Start(psi)!;
            var output = p.StandardOutput.ReadToEndAsync();
            var error = p.StandardError.ReadToEndAsync();
            Assert.True(p.WaitForExit(20_000), "openssl verify hung");
            return (p.ExitCode, output.Result + error.Result);
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    [Fact]
    public void ServerCertificatePassesOpensslSslServerPurpose()
    {
        var (code, output) = OpensslVerify(Ca.CaCertificatePem, Ca.ServerCertificatePem, "sslserver");
        Assert.True(code == 0, output);
        Assert.Contains("OK", output);
        // ... and is not accepted for the client purpose, so the check above can fail.
        var (code2, output2) = OpensslVerify(Ca.CaCertificatePem, Ca.ServerCertificatePem, "sslclient");
        Assert.True(code2 != 0, output2);
    }

    [Fact]
    public void ClientCertificatePassesOpensslSslClientPurpose()
    {
        var issued = Ca.IssueClientCertificate("alice");
        var (code, output) = OpensslVerify(Ca.CaCertificatePem, issued.CertificatePem, "sslclient");
        Assert.True(code == 0, output);
        var (code2, output2) = OpensslVerify(Ca.CaCertificatePem, issued.CertificatePem, "sslserver");
        Assert.True(code2 != 0, output2);
        // A cert from another CA does not verify against ours.
        var (code3, output3) = OpensslVerify(Ca.CaCertificatePem, fx.OtherCa.IssueClientCertificate("alice").CertificatePem, "sslclient");
        Assert.True(code3 != 0, output3);
    }

    [Fact]
    public void CertificateProfiles()
    {
        using var ca = Ca.CaCertificate;
        Assert.Equal("CN=OpenVPN CA", ca.Subject);
        Assert.True(ca.Extensions.OfType<X509BasicConstraintsExtension>().Single().CertificateAuthority);
        Assert.InRange((ca.NotAfter - ca.NotBefore).TotalDays, 3649, 3651);
        Assert.Equal("1.2.840.113549.1.1.11", ca.SignatureAlgorithm.Value); // sha256WithRSAEncryption

        using var server = Ca.LoadServerCertificate();
        Assert.True(server.HasPrivateKey);
        Assert.Equal("CN=OpenVPN Server", server.Subject);
        Assert.Equal(2048, server.GetRSAPublicKey()!.KeySize);
        var ku = server.Extensions.OfType<X509KeyUsageExtension>().Single().KeyUsages;
        Assert.Equal(X509KeyUsageFlags.DigitalSignature | X509KeyUsageFlags.KeyEncipherment, ku);
        Assert.Equal([CertificateAuthority.ServerAuthOid],
            server.Extensions.OfType<X509EnhancedKeyUsageExtension>().Single().EnhancedKeyUsages.Cast<Oid>().Select(o => o.Value));
        Assert.Contains("vpn.example.com", server.Extensions.OfType<X509SubjectAlternativeNameExtension>().Single().EnumerateDnsNames());

        using var client = Load(Ca.IssueClientCertificate("bob"));
        Assert.Equal("CN=bob", client.Subject);
        Assert.Equal(X509KeyUsageFlags.DigitalSignature, client.Extensions.OfType<X509KeyUsageExtension>().Single().KeyUsages);
        Assert.Equal([CertificateAuthority.ClientAuthOid],
            client.Extensions.OfType<X509EnhancedKeyUsageExtension>().Single().EnhancedKeyUsages.Cast<Oid>().Select(o => o.Value));
    }

    [Fact]
    public void SerialsAreRandomPositiveAndDistinct()
    {
        var serials = Enumerable.Range(0, 200).Select(_ => CertificateAuthority.NewSerial()).ToList();
        Assert.All(serials, s => Assert.Equal(16, s.Length));
        Assert.All(serials, s => Assert.True(s[0] is > 0 and < 0x80));
        Assert.Equal(200, serials.Select(Convert.ToHexString).Distinct().Count());
        var a = Ca.IssueClientCertificate("carol");
        var b = Ca.IssueClientCertificate("carol");
        Assert.NotEqual(a.Serial, b.Serial);
        Assert.Equal(32, a.Serial.Length);
    }

    [Fact]
    public void ValidClientCertificateIsAccepted()
    {
        using var cert = Load(Ca.IssueClientCertificate("dave"));
        Assert.True(Ca.ValidateClientCertificate(cert, out var cn, out var reason), reason);
        Assert.Equal("dave", cn);
        Assert.Null(reason);
    }

    [Fact]
    public void CertificateFromAnotherCaIsRefused()
    {
        using var foreign = Load(fx.OtherCa.IssueClientCertificate("dave"));
        Assert.False(Ca.ValidateClientCertificate(foreign, out var cn, out var reason));
        Assert.Null(cn);
        Assert.NotNull(reason);
    }

    [Fact]
    public void RevokedCertificateIsRefused()
    {
        using var cert = Load(Ca.IssueClientCertificate("erin"));
        Assert.True(Ca.ValidateClientCertificate(cert, out _, out _));
        Assert.Equal(1, Ca.RevokeUser("erin"));
        Assert.True(Ca.IsRevoked(cert.SerialNumber));
        Assert.False(Ca.ValidateClientCertificate(cert, out _, out var reason));
        Assert.Contains("revoked", reason);
        Assert.Null(Ca.GetActiveClientCertificate("erin"));
        // Revocation is read from the database, so another instance sees it too.
        Assert.False(CertificateAuthority.Open(fx.Dir.Path).ValidateClientCertificate(cert, out _, out _));
    }

    [Fact]
    public void ServerCertificateUsedAsClientIsRefused()
    {
        using var server = X509Certificate2.CreateFromPem(Ca.ServerCertificatePem);
        Assert.False(Ca.ValidateClientCertificate(server, out _, out var reason));
        Assert.NotNull(reason);
        using var ca = Ca.CaCertificate;
        Assert.False(Ca.ValidateClientCertificate(ca, out _, out _));
    }

    [Fact]
    public void ExpiredAndNotYetValidCertificatesAreRefused()
    {
        var now = DateTimeOffset.UtcNow;
        using var expired = Load(Ca.IssueClientCertificate("frank", now.AddMinutes(-50), now.AddMinutes(-2), record: true));
        Assert.False(Ca.ValidateClientCertificate(expired, out _, out var reason));
        Assert.Contains("NotTimeValid", reason);
        using var future = Load(Ca.IssueClientCertificate("frank", now.AddDays(1), now.AddDays(30), record: true));
        Assert.False(Ca.ValidateClientCertificate(future, out _, out _));
    }

    [Fact]
    public void CertificateWithUnknownSerialIsRefused()
    {
        var now = DateTimeOffset.UtcNow;
        using var unrecorded = Load(Ca.IssueClientCertificate("gina", now.AddHours(-1), now.AddDays(30), record: false));
        Assert.False(Ca.ValidateClientCertificate(unrecorded, out _, out var reason));
        Assert.Contains("not issued", reason);
    }

    [Fact]
    public void StaticKeyHasOpenVpnFormat()
    {
        var text = Ca.StaticKeyText;
        var lines = text.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        int b = Array.IndexOf(lines, StaticKeyFile.Begin), e = Array.IndexOf(lines, StaticKeyFile.End);
        Assert.True(b >= 0 && e == b + 17, text.Length.ToString());
        for (int i = b + 1; i < e; i++)
            Assert.Matches("^[0-9a-f]{32}$", lines[i]);
        Assert.True(StaticKeyFile.TryParse(text, out var key));
        Assert.Equal(256, key.Length);
        Assert.Equal(text, StaticKeyFile.Format(key));
        Assert.NotEqual(fx.OtherCa.StaticKeyText, text);
        Assert.False(StaticKeyFile.TryParse(text.Replace(lines[b + 3], lines[b + 3][..30]), out _));
    }

    [Fact]
    public void InitializeTwiceIsRefused()
    {
        Assert.Throws<AdminException>(() => CertificateAuthority.Initialize(OvpnDatabase.Open(fx.Dir.Path), "x.example.com"));
    }

    /// <summary>
    /// Real TLS over loopback: SslStream server with LoadServerCertificate() requiring a client
    /// certificate, validated by ValidateClientCertificate; the client trusts only our CA.
    /// </summary>
    [Fact]
    public async Task SslStreamHandshakeWithServerAndClientCertificates()
    {
        var issued = Ca.IssueClientCertificate("henry");
        using var clientCert = X509CertificateLoader.LoadPkcs12(
            X509Certificate2.CreateFromPem(issued.CertificatePem, issued.PrivateKeyPem).Export(X509ContentType.Pkcs12), null);
        using var serverCert = Ca.LoadServerCertificate();
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20));

        string? seenCn = null;
        var serverTask = Task.Run(async () =>
        {
            using var tcp = await listener.AcceptTcpClientAsync(cts.Token);
            using var ssl = new SslStream(tcp.GetStream());
            await ssl.AuthenticateAsServerAsync(new SslServerAuthenticationOptions
            {
                ServerCertificate = serverCert,
                ClientCertificateRequired = true,
                RemoteCertificateValidationCallback = (_, cert, _, _) =>
                    cert is X509Certificate2 c2 && Ca.ValidateClientCertificate(c2, out seenCn, out _),
            }, cts.Token);
            ssl.WriteByte(42);
            await ssl.FlushAsync(cts.Token);
        });

        using var client = new TcpClient();
        await client.ConnectAsync(IPAddress.Loopback, port, cts.Token);
        using var cssl = new SslStream(client.GetStream());
        await cssl.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
        {
            TargetHost = "vpn.example.com",
            ClientCertificates = [clientCert],
            CertificateChainPolicy = new X509ChainPolicy
            {
                TrustMode = X509ChainTrustMode.CustomRootTrust,
                CustomTrustStore = { X509Certificate2.CreateFromPem(Ca.CaCertificatePem) },
                RevocationMode = X509RevocationMode.NoCheck,
            },
        }, cts.Token);
        Assert.Equal(42, cssl.ReadByte());
        await serverTask;
        Assert.Equal("henry", seenCn);
    }
}

public sealed class CrlTests : IDisposable
{
    private readonly TempDataDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [Fact]
    public void CrlListsRevokedSerialsAndOpensslHonoursIt()
    {
        var ca = CertificateAuthority.Initialize(_dir.CreateDatabase(), "vpn.example.com");
        var good = ca.IssueClientCertificate("good");
        var bad = ca.IssueClientCertificate("bad");
        ca.RevokeUser("bad");
        var crl = ca.ExportCrlPem();
        Assert.StartsWith("-----BEGIN X509 CRL-----", crl);

        var dir = Directory.CreateTempSubdirectory("ovpnas-crl-");
        try
        {
            File.WriteAllText(Path.Combine(dir.FullName, "ca.pem"), ca.CaCertificatePem);
            File.WriteAllText(Path.Combine(dir.FullName, "crl.pem"), crl);
            File.WriteAllText(Path.Combine(dir.FullName, "good.pem"), good.CertificatePem);
            File.WriteAllText(Path.Combine(dir.FullName, "bad.pem"), bad.CertificatePem);
            (int, string) Verify(string cert)
            {
                var psi = new ProcessStartInfo("openssl") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = dir.FullName };
                foreach (var a in new[] { "verify", "-crl_check", "-CAfile", "ca.pem", "-CRLfile", "crl.pem", "-purpose", "sslclient", cert })
                    psi.ArgumentList.Add(a);
                using var p = Process.Start(psi)!;
                var o = p.StandardOutput.ReadToEndAsync();
                var e = p.StandardError.ReadToEndAsync();
                Assert.True(p.WaitForExit(20_000));
                return (p.ExitCode, o.Result + e.Result);
            }
            var (goodCode, goodOut) = Verify("good.pem");
            Assert.True(goodCode == 0, goodOut);
            var (badCode, badOut) = Verify("bad.pem");
            Assert.True(badCode != 0, badOut);
            Assert.Contains("revoked", badOut);
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }
}
