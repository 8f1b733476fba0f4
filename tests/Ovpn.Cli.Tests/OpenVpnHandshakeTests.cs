// SPDX-License-Identifier: MIT
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using Ovpn.ControlPlane.Pki;

namespace Ovpn.Cli.Tests;

/// <summary>
/// End-to-end check of the PKI and profile with two real openvpn 2.6 processes on 127.0.0.1:
/// an openvpn peer-to-peer TLS server using our CA, server certificate and static key, and the
/// openvpn client using the generated profile. Both sides must verify each other's certificates
/// (client: remote-cert-tls server; server: CA chain of the client cert) and reach
/// "Initialization Sequence Completed". --dev null: no TUN, no routes.
/// </summary>
public sealed class OpenVpnHandshakeTests : IDisposable
{
    private readonly CliHarness _cli = new();

    public void Dispose() => _cli.Dispose();

    private static int FreeUdpPort()
    {
        using var s = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        s.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)s.LocalEndPoint!).Port;
    }

    private static string WritePrivate(string dir, string name, string content)
    {
        var path = Path.Combine(dir, name);
        File.WriteAllText(path, content);
        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        return path;
    }

    private sealed record Setup(string Profile, string[] ServerArgs);

    private Setup Prepare(string tlsMode)
    {
        var port = FreeUdpPort();
        _cli.RunOk("init", "--hostname", "127.0.0.1");
        _cli.RunOk("user", "add", "alice");
        _cli.RunOk("sacli", "-k", "vpn.server.daemon.protocols", "-v", "udp", "ConfigPut");
        _cli.RunOk("sacli", "-k", "vpn.server.daemon.udp.port", "-v", port.ToString(CultureInfo.InvariantCulture), "ConfigPut");
        _cli.RunOk("sacli", "-k", "vpn.server.tls_cc_security", "-v", tlsMode, "ConfigPut");
        _cli.RunOk("sacli", "-k", "vpn.server.tun_mtu", "-v", "1500", "ConfigPut");
        var profile = Path.Combine(_cli.DataDir, "alice.ovpn");
        _cli.RunOk("profile", "alice", "--out", profile);

        var ca = CertificateAuthority.Open(_cli.DataDir);
        using var serverCert = ca.LoadServerCertificate();
        var caFile = WritePrivate(_cli.DataDir, "ca.pem", ca.CaCertificatePem);
        var certFile = WritePrivate(_cli.DataDir, "server.pem", ca.ServerCertificatePem);
        var keyFile = WritePrivate(_cli.DataDir, "server.key", serverCert.GetRSAPrivateKey()!.ExportPkcs8PrivateKeyPem());
        var staticKey = WritePrivate(_cli.DataDir, "static.key", ca.StaticKeyText);
        string[] wrap = tlsMode == "tls-crypt" ? ["--tls-crypt", staticKey] : ["--tls-auth", staticKey, "0"];
        return new Setup(profile, [
            "--dev", "null", "--tls-server", "--ca", caFile, "--cert", certFile, "--key", keyFile, "--dh", "none",
            .. wrap, "--local", "127.0.0.1", "--lport", port.ToString(CultureInfo.InvariantCulture), "--proto", "udp",
            "--ifconfig-noexec", "--verb", "3"]);
    }

    [Theory]
    [InlineData("tls-crypt")]
    [InlineData("tls-auth")]
    public async Task RealClientAndServerCompleteHandshakeWithOurPki(string tlsMode)
    {
        var setup = Prepare(tlsMode);
        using var server = new OpenVpnProcess(setup.ServerArgs);
        Assert.True(await server.WaitForLogAsync("link local (bound)", TimeSpan.FromSeconds(10)), server.Log);

        using var client = new OpenVpnProcess("--config", setup.Profile, "--dev", "null", "--ifconfig-noexec", "--route-noexec", "--verb", "3");
        var done = await client.WaitForLogAsync("Initialization Sequence Completed", TimeSpan.FromSeconds(20));
        Assert.True(done, "client:\n" + client.Log + "\nserver:\n" + server.Log);
        Assert.Contains("VERIFY EKU OK", client.Log);
        Assert.Contains("VERIFY OK: depth=0, CN=OpenVPN Server", client.Log);
        Assert.True(await server.WaitForLogAsync("VERIFY OK: depth=0, CN=alice", TimeSpan.FromSeconds(5)), server.Log);
        Assert.DoesNotContain("TLS Error", client.Log);
        Assert.DoesNotContain("WARNING", client.Log);
    }

    /// <summary>A revoked user's old profile is refused by stock openvpn using our exported CRL.</summary>
    [Fact]
    public async Task RevokedCertificateIsRefusedByOpenVpnWithExportedCrl()
    {
        var setup = Prepare("tls-crypt");
        _cli.RunOk("user", "revoke", "alice");
        var crl = WritePrivate(_cli.DataDir, "crl.pem", CertificateAuthority.Open(_cli.DataDir).ExportCrlPem());
        using var server = new OpenVpnProcess([.. setup.ServerArgs, "--crl-verify", crl]);
        Assert.True(await server.WaitForLogAsync("link local (bound)", TimeSpan.FromSeconds(10)), server.Log);

        using var client = new OpenVpnProcess("--config", setup.Profile, "--dev", "null", "--ifconfig-noexec", "--route-noexec", "--verb", "3");
        Assert.True(await server.WaitForLogAsync("error=certificate revoked: CN=alice", TimeSpan.FromSeconds(15)), server.Log);
        Assert.DoesNotContain("Initialization Sequence Completed", client.Log);
    }
}
