// SPDX-License-Identifier: MIT
using System.Security.Cryptography.X509Certificates;
using Ovpn.ControlPlane.Pki;
using Ovpn.ControlPlane.Users;

namespace Ovpn.ControlPlane.Tests.Pki;

/// <summary>
/// The server reuses the chain SslStream built for the client certificate. The verdict must be
/// the same as the full check whatever chain it is handed: a valid chain to our CA is accepted
/// only for a good leaf; foreign, broken or mismatched chains fall back to the full check.
/// </summary>
public sealed class PrebuiltChainValidationTests(PkiFixture fx) : IClassFixture<PkiFixture>
{
    private static X509Chain BuildChain(X509Certificate2 caCert, X509Certificate2 leaf)
    {
        var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.Add(caCert);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        chain.ChainPolicy.DisableCertificateDownloads = true;
        chain.Build(leaf);
        return chain;
    }

    private X509Certificate2 Issue(CertificateAuthority ca, string user)
    {
        new UserStore(OvpnDatabaseOf(ca)).EnsureExists(user);
        return X509Certificate2.CreateFromPem(ca.IssueClientCertificate(user).CertificatePem);
    }

    private Ovpn.ControlPlane.Config.OvpnDatabase OvpnDatabaseOf(CertificateAuthority ca) =>
        Ovpn.ControlPlane.Config.OvpnDatabase.Open(ReferenceEquals(ca, fx.Ca) ? fx.Dir.Path : fx.OtherDir.Path);

    [Fact]
    public void ValidChainToOurCaIsAcceptedForAGoodLeaf()
    {
        using var cert = Issue(fx.Ca, "chain-ok");
        using var caCert = fx.Ca.CaCertificate;
        using var chain = BuildChain(caCert, cert);
        Assert.True(fx.Ca.ValidateClientCertificate(cert, chain, out var cn, out var reason), reason);
        Assert.Equal("chain-ok", cn);
    }

    [Fact]
    public void RevokedLeafIsRefusedDespiteAValidChain()
    {
        using var cert = Issue(fx.Ca, "chain-revoked");
        fx.Ca.RevokeUser("chain-revoked");
        using var caCert = fx.Ca.CaCertificate;
        using var chain = BuildChain(caCert, cert);
        Assert.False(fx.Ca.ValidateClientCertificate(cert, chain, out _, out var reason));
        Assert.Contains("revoked", reason);
    }

    [Fact]
    public void ChainToAnotherCaIsRefused()
    {
        using var foreign = Issue(fx.OtherCa, "chain-foreign");
        using var otherCaCert = fx.OtherCa.CaCertificate;
        using var chain = BuildChain(otherCaCert, foreign);
        Assert.False(fx.Ca.ValidateClientCertificate(foreign, chain, out _, out var reason));
        Assert.Contains("chain invalid", reason);
    }

    [Fact]
    public void ChainWithErrorsFallsBackToTheFullCheck()
    {
        // Expired leaf: the handed chain carries NotTimeValid; the full check refuses it.
        var expired = fx.Ca.IssueClientCertificate("chain-expired", DateTimeOffset.UtcNow.AddMinutes(-50), DateTimeOffset.UtcNow.AddMinutes(-2), record: true);
        using var cert = X509Certificate2.CreateFromPem(expired.CertificatePem);
        using var caCert = fx.Ca.CaCertificate;
        using var chain = BuildChain(caCert, cert);
        Assert.NotEmpty(chain.ChainStatus);
        Assert.False(fx.Ca.ValidateClientCertificate(cert, chain, out _, out var reason));
        Assert.Contains("chain invalid", reason);
    }

    [Fact]
    public void ChainOfAnotherLeafIsNotTrustedForThisOne()
    {
        using var good = Issue(fx.Ca, "chain-good");
        using var foreign = Issue(fx.OtherCa, "chain-other-leaf");
        using var caCert = fx.Ca.CaCertificate;
        using var chain = BuildChain(caCert, good);
        Assert.False(fx.Ca.ValidateClientCertificate(foreign, chain, out _, out var reason));
        Assert.Contains("chain invalid", reason);
    }
}
