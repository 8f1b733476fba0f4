// SPDX-License-Identifier: MIT
using System.Net.Security;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Ovpn.ControlPlane.Tls;

namespace Ovpn.ControlPlane.Tests.Tls;

/// <summary>
/// The server's TLS 1.3 session tickets are turned off through the control channel stream's read
/// hook (as ServerSession wires it), and the session still works; without the hook OpenSSL's
/// default (tickets on) is in force, which shows the check can fail.
/// </summary>
public sealed class TlsSessionTicketsTests
{
    [Fact]
    public async Task ReadHookTurnsServerTicketsOffAndSessionStillWorks()
    {
        Assert.True(TlsSessionTickets.Supported, "libssl SSL_set_num_tickets or SslStream's context field not found");
        var (server, client) = await HandshakeAsync(disableTickets: true);
        Assert.Equal(SslProtocols.Tls13, server.SslProtocol);
        Assert.Equal(0L, TlsSessionTickets.TicketsPerHandshake(server));

        // Application data flows both ways after the handshake.
        await client.WriteAsync("ping"u8.ToArray());
        var buf = new byte[16];
        int n = await server.ReadAsync(buf).AsTask().WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal("ping", System.Text.Encoding.ASCII.GetString(buf, 0, n));
        await server.WriteAsync("pong"u8.ToArray());
        n = await client.ReadAsync(buf).AsTask().WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal("pong", System.Text.Encoding.ASCII.GetString(buf, 0, n));
        server.Dispose();
        client.Dispose();
    }

    [Fact]
    public async Task WithoutHookServerIssuesTickets()
    {
        var (server, client) = await HandshakeAsync(disableTickets: false);
        Assert.True(TlsSessionTickets.TicketsPerHandshake(server) > 0);
        server.Dispose();
        client.Dispose();
    }

    private static async Task<(SslStream Server, SslStream Client)> HandshakeAsync(bool disableTickets)
    {
        using var caKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var caReq = new CertificateRequest("CN=tickets-test-ca", caKey, HashAlgorithmName.SHA256);
        caReq.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        using var ca = caReq.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddHours(1));
        X509Certificate2 Issue(string cn)
        {
            var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
            var req = new CertificateRequest($"CN={cn}", key, HashAlgorithmName.SHA256);
            using var pub = req.Create(ca, DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddHours(1), RandomNumberGenerator.GetBytes(8));
            return pub.CopyWithPrivateKey(key);
        }

        var serverCert = Issue("server");
        var clientCert = Issue("client");

        // Two control channel streams joined back to back: what one side writes, the other reads.
        ControlChannelStream? toClient = null, toServer = null;
        toServer = new ControlChannelStream(bytes => toClient!.Feed(bytes));
        toClient = new ControlChannelStream(bytes => toServer.Feed(bytes));
        var server = new SslStream(toServer, leaveInnerStreamOpen: false);
        var client = new SslStream(toClient, leaveInnerStreamOpen: false);
        if (disableTickets)
        {
            toServer.BeforeRead = () => TlsSessionTickets.TryDisable(server) != TlsSessionTickets.Result.NotYet || server.IsAuthenticated;
        }

        var serverTask = server.AuthenticateAsServerAsync(new SslServerAuthenticationOptions
        {
            ServerCertificateContext = SslStreamCertificateContext.Create(serverCert, null, offline: true),
            ClientCertificateRequired = true,
            EnabledSslProtocols = SslProtocols.Tls12 | SslProtocols.Tls13,
            CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
            RemoteCertificateValidationCallback = (_, c, _, _) => c is not null,
        });
        var clientTask = client.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
        {
            TargetHost = "server",
            ClientCertificates = [clientCert],
            EnabledSslProtocols = SslProtocols.Tls12 | SslProtocols.Tls13,
            CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
            RemoteCertificateValidationCallback = (_, c, _, _) => c is not null,
        });
        await Task.WhenAll(serverTask, clientTask).WaitAsync(TimeSpan.FromSeconds(20));
        return (server, client);
    }
}
