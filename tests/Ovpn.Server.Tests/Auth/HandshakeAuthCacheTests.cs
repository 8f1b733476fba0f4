// SPDX-License-Identifier: MIT
using System.Diagnostics;
using System.Security.Cryptography.X509Certificates;
using Ovpn.ControlPlane.Config;
using Ovpn.ControlPlane.Pki;
using Ovpn.ControlPlane.Users;
using Ovpn.Server;

namespace Ovpn.Server.Tests.Auth;

/// <summary>
/// The server's client check (ServerFactory's ValidateClient, which reads users, properties and
/// revocation through a long-lived cache) must follow admin changes made by the `ovpnas` command
/// in another process at once: the next handshake after `user revoke` or `sacli UserPropPut
/// prop_deny` is refused, and lifting the deny admits the user again.
/// </summary>
public sealed class HandshakeAuthCacheTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "ovpnas-authcache-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        try
        {
            Directory.Delete(_dir, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    private static void Ovpnas(params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "ovpnas.dll"));
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        using var p = Process.Start(psi)!;
        var output = p.StandardOutput.ReadToEndAsync();
        var error = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(60_000))
        {
            p.Kill(entireProcessTree: true);
            Assert.Fail("ovpnas " + string.Join(' ', args) + " hung");
        }

        Assert.True(p.ExitCode == 0, $"ovpnas {string.Join(' ', args)} exited {p.ExitCode}: {output.Result}{error.Result}");
    }

    private static X509Chain ChainOf(X509Certificate2 caCert, X509Certificate2 leaf)
    {
        var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.Add(caCert);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        Assert.True(chain.Build(leaf));
        return chain;
    }

    [Fact]
    public void RevokeAndDenyFromAnotherProcessApplyToTheNextHandshake()
    {
        var db = OvpnDatabase.Create(_dir);
        var ca = CertificateAuthority.Initialize(db, "127.0.0.1");
        var users = new UserStore(db);
        users.Add("alice");
        users.Add("bob");
        using var alice = X509Certificate2.CreateFromPem(ca.IssueClientCertificate("alice").CertificatePem);
        using var bob = X509Certificate2.CreateFromPem(ca.IssueClientCertificate("bob").CertificatePem);
        var (_, control, _) = ServerFactory.Load(_dir);

        for (int i = 0; i < 3; i++)
        {
            // Repeated: the later rounds are answered from the cache.
            Assert.True(control.ValidateClient(alice).Ok, control.ValidateClient(alice).Reason);
            Assert.True(control.ValidateClient(bob).Ok, control.ValidateClient(bob).Reason);
        }

        Assert.NotNull(control.ValidateClientWithChain);
        using var caCert = ca.CaCertificate;
        using var aliceChain = ChainOf(caCert, alice);
        Assert.True(control.ValidateClientWithChain(alice, aliceChain).Ok);

        Ovpnas("user", "revoke", "alice", "--data-dir", _dir);
        var refused = control.ValidateClient(alice);
        Assert.False(refused.Ok);
        Assert.Contains("revoked", refused.Reason);
        Assert.False(control.ValidateClientWithChain(alice, aliceChain).Ok);
        Assert.True(control.ValidateClient(bob).Ok);

        Ovpnas("sacli", "--data-dir", _dir, "-u", "bob", "-k", "prop_deny", "-v", "true", "UserPropPut");
        var denied = control.ValidateClient(bob);
        Assert.False(denied.Ok);
        Assert.Contains("denied", denied.Reason);

        Ovpnas("sacli", "--data-dir", _dir, "-u", "bob", "-k", "prop_deny", "UserPropDel");
        Assert.True(control.ValidateClient(bob).Ok, control.ValidateClient(bob).Reason);

        Ovpnas("user", "del", "bob", "--data-dir", _dir);
        Assert.False(control.ValidateClient(bob).Ok);
    }
}
