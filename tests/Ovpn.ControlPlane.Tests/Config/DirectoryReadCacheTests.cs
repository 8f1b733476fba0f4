// SPDX-License-Identifier: MIT
using System.Security.Cryptography.X509Certificates;
using Ovpn.ControlPlane.Config;
using Ovpn.ControlPlane.Pki;
using Ovpn.ControlPlane.Users;

namespace Ovpn.ControlPlane.Tests.Config;

/// <summary>
/// The server's per-handshake read cache must never answer with stale data: writes through a
/// second, uncached store (its own connections, as the CLI in another process) and writes through
/// the cached stores themselves both show up on the very next look-up.
/// </summary>
public sealed class DirectoryReadCacheTests : IDisposable
{
    private readonly TempDataDir _dir = new();
    private readonly DirectoryReadCache _cache;
    private readonly CertificateAuthority _cachedCa;
    private readonly UserStore _cachedUsers;

    public DirectoryReadCacheTests()
    {
        var db = _dir.CreateDatabase();
        CertificateAuthority.Initialize(db, "vpn.example.com");
        _cache = new DirectoryReadCache(OvpnDatabase.Open(_dir.Path));
        _cachedCa = CertificateAuthority.Open(db).WithReadCache(_cache);
        _cachedUsers = new UserStore(db, _cache);
    }

    public void Dispose()
    {
        _cache.Dispose();
        _dir.Dispose();
    }

    /// <summary>A second store on the same file that knows nothing of the cache.</summary>
    private (CertificateAuthority Ca, UserStore Users) Other()
    {
        var db = OvpnDatabase.Open(_dir.Path);
        return (CertificateAuthority.Open(db), new UserStore(db));
    }

    [Fact]
    public void RepeatedLookupsAreAnsweredFromTheMemo()
    {
        var (ca, users) = Other();
        users.Add("alice");
        var cert = ca.IssueClientCertificate("alice");
        Assert.False(_cachedCa.IsRevoked(cert.Serial));
        Assert.True(_cachedUsers.Exists("alice"));
        long misses = _cache.Misses, hits = _cache.Hits;
        Assert.False(_cachedCa.IsRevoked(cert.Serial.ToLowerInvariant()));
        Assert.True(_cachedUsers.Exists("alice"));
        Assert.Equal(misses, _cache.Misses);
        Assert.Equal(hits + 2, _cache.Hits);
    }

    [Fact]
    public void RevokeThroughASecondStoreIsSeenByTheNextValidation()
    {
        var (ca, users) = Other();
        users.Add("bob");
        var issued = ca.IssueClientCertificate("bob");
        using var cert = X509Certificate2.CreateFromPem(issued.CertificatePem);
        Assert.True(_cachedCa.ValidateClientCertificate(cert, out var cn, out var reason), reason);
        Assert.Equal("bob", cn);
        Assert.True(_cachedCa.ValidateClientCertificate(cert, out _, out reason), reason); // now memoized

        Assert.Equal(1, ca.RevokeUser("bob"));

        Assert.False(_cachedCa.ValidateClientCertificate(cert, out _, out reason));
        Assert.Contains("revoked", reason);
        Assert.True(_cachedCa.IsRevoked(issued.Serial));
    }

    [Fact]
    public void UnknownSerialIssuedLaterBecomesKnown()
    {
        // A serial looked up before it was recorded is memoized as "not ours" until the next write.
        var (ca, users) = Other();
        users.Add("carol");
        var unrecorded = _cachedCa.IssueClientCertificate("carol", DateTimeOffset.UtcNow.AddHours(-1), DateTimeOffset.UtcNow.AddDays(30), record: false);
        Assert.Null(_cachedCa.IsRevoked(unrecorded.Serial));
        var recorded = ca.IssueClientCertificate("carol");
        Assert.False(_cachedCa.IsRevoked(recorded.Serial));
        Assert.Null(_cachedCa.IsRevoked(unrecorded.Serial));
    }

    [Fact]
    public void UserAndPropertyChangesThroughASecondStoreAreSeenAtOnce()
    {
        var (_, users) = Other();
        Assert.False(_cachedUsers.Exists("dave"));
        users.Add("dave");
        Assert.True(_cachedUsers.Exists("dave"));

        Assert.Null(_cachedUsers.GetEffectiveProperty("dave", "prop_deny"));
        users.SetProperty(UserStore.DefaultRecord, "prop_deny", "true");
        Assert.Equal("true", _cachedUsers.GetEffectiveProperty("dave", "prop_deny"));
        users.SetProperty("dave", "prop_deny", "false");
        Assert.Equal("false", _cachedUsers.GetEffectiveProperty("dave", "prop_deny"));

        // Group precedence is computed over cached records too.
        users.SetProperty("staff", "type", "group");
        users.SetProperty("staff", "prop_deny", "true");
        users.DeleteProperty("dave", "prop_deny");
        users.SetProperty("dave", "conn_group", "staff");
        Assert.Equal("true", _cachedUsers.GetEffectiveProperty("dave", "prop_deny"));

        Assert.True(users.Delete("dave"));
        Assert.False(_cachedUsers.Exists("dave"));
        Assert.Empty(_cachedUsers.GetProperties("dave"));
    }

    [Fact]
    public void WritesThroughTheCachedStoresInvalidate()
    {
        _cachedUsers.Add("erin");
        var issued = _cachedCa.IssueClientCertificate("erin");
        Assert.False(_cachedCa.IsRevoked(issued.Serial));
        _cachedUsers.SetProperty("erin", "prop_deny", "true");
        Assert.Equal("true", _cachedUsers.GetEffectiveProperty("erin", "prop_deny"));
        Assert.True(_cachedCa.RevokeSerial(issued.Serial));
        Assert.True(_cachedCa.IsRevoked(issued.Serial));

        // The copy handed out is the caller's: changing it does not change the memo.
        var props = _cachedUsers.GetProperties("erin");
        props["prop_deny"] = "false";
        Assert.Equal("true", _cachedUsers.GetProperty("erin", "prop_deny"));
    }

    [Fact]
    public void DisposedCacheRefusesLookups()
    {
        var db = OvpnDatabase.Open(_dir.Path);
        var cache = new DirectoryReadCache(db);
        cache.Dispose();
        Assert.Throws<ObjectDisposedException>(() => cache.UserExists("x"));
    }
}
