// SPDX-License-Identifier: MIT
using System.Globalization;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Ovpn.ControlPlane.Config;

namespace Ovpn.ControlPlane.Pki;

/// <summary>A certificate issued by our CA, with its PEM text.</summary>
public sealed record IssuedCertificate(string Serial, string? User, string Kind, string CertificatePem, string? PrivateKeyPem,
    DateTimeOffset NotAfter, bool Revoked);

/// <summary>
/// The server's private CA. RSA-2048 with SHA-256 signatures throughout: that is what stock
/// OpenVPN 2.6 on OpenSSL 3 accepts at its default security level with no extra options.
/// Everything lives in the database (<see cref="OvpnDatabase"/>): the CA, server and tls-crypt
/// keys in <c>pki_files</c> (names ca.crt, ca.key, server.crt, server.key, tls-crypt.key), every
/// issued certificate with its revoked flag in <c>certificates</c>.
/// Thread-safe: revocation is read from the database on every validation, so a revoke done by
/// the CLI takes effect on the next handshake of a running server. With a
/// <see cref="Users.DirectoryReadCache"/> (<see cref="WithReadCache"/>, the running server's) the
/// read is answered from its memo, which is dropped whenever anyone committed a change to the
/// database (PRAGMA data_version), so that still holds; writes here also invalidate it.
/// </summary>
public sealed class CertificateAuthority
{
    public const string CaCommonName = "OpenVPN CA";
    public const string ServerCommonName = "OpenVPN Server";
    public const string ServerAuthOid = "1.3.6.1.5.5.7.3.1";
    public const string ClientAuthOid = "1.3.6.1.5.5.7.3.2";

    private static readonly TimeSpan CaLifetime = TimeSpan.FromDays(3650);
    private static readonly TimeSpan LeafLifetime = TimeSpan.FromDays(3650 - 30);
    // Back-date notBefore so a client whose clock runs a little behind still accepts the cert.
    private static readonly TimeSpan Backdate = TimeSpan.FromHours(1);

    private readonly OvpnDatabase _db;
    private readonly X509Certificate2 _caCert;   // public part only
    private readonly Users.DirectoryReadCache? _cache;

    private CertificateAuthority(OvpnDatabase db, X509Certificate2 caCert, Users.DirectoryReadCache? cache = null)
    {
        _db = db;
        _caCert = caCert;
        _cache = cache;
    }

    /// <summary>The same CA, answering revocation look-ups from <paramref name="cache"/> (see the class summary).</summary>
    public CertificateAuthority WithReadCache(Users.DirectoryReadCache cache) => new(_db, _caCert, cache);

    /// <summary>The CA certificate (public part). Each call returns a new instance the caller owns.</summary>
    public X509Certificate2 CaCertificate => X509CertificateLoader.LoadCertificate(_caCert.RawData);
    public string CaCertificatePem => ReadFile("ca.crt");
    public string ServerCertificatePem => ReadFile("server.crt");
    /// <summary>The tls-crypt / tls-auth static key in OpenVPN text form. Key material: never log it.</summary>
    public string StaticKeyText => ReadFile("tls-crypt.key");

    public static CertificateAuthority Open(string dataDir) => Open(OvpnDatabase.Open(dataDir));

    public static CertificateAuthority Open(OvpnDatabase db)
    {
        var pem = TryReadFile(db, "ca.crt") ?? throw new AdminException("the PKI is not initialized (run 'ovpnas init')");
        return new CertificateAuthority(db, X509Certificate2.CreateFromPem(pem));
    }

    /// <summary>Creates the CA, the server certificate (SAN = hostname) and the tls-crypt key.</summary>
    public static CertificateAuthority Initialize(OvpnDatabase db, string hostname)
    {
        if (TryReadFile(db, "ca.crt") is not null)
            throw new AdminException("the PKI already exists");
        var now = DateTimeOffset.UtcNow;

        using var caKey = RSA.Create(2048);
        var caReq = new CertificateRequest(new X500DistinguishedName("CN=" + CaCommonName), caKey, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        caReq.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        caReq.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        caReq.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(caReq.PublicKey, false));
        using var ca = caReq.Create(caReq.SubjectName, X509SignatureGenerator.CreateForRSA(caKey, RSASignaturePadding.Pkcs1),
            now - Backdate, now + CaLifetime, NewSerial());
        using var caWithKey = ca.CopyWithPrivateKey(caKey);

        using var serverKey = RSA.Create(2048);
        var srvReq = new CertificateRequest(new X500DistinguishedName("CN=" + ServerCommonName), serverKey, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        srvReq.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        srvReq.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature | X509KeyUsageFlags.KeyEncipherment, true));
        srvReq.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid(ServerAuthOid)], false));
        var san = new SubjectAlternativeNameBuilder();
        if (System.Net.IPAddress.TryParse(hostname, out var ip))
            san.AddIpAddress(ip);
        else
            san.AddDnsName(hostname);
        srvReq.CertificateExtensions.Add(san.Build());
        srvReq.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(srvReq.PublicKey, false));
        srvReq.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(ca, true, false));
        using var server = srvReq.Create(caWithKey, now - Backdate, Min(now + LeafLifetime, ca.NotAfter), NewSerial());

        using var c = db.OpenConnection();
        using var tx = c.BeginTransaction();
        InsertFile(c, tx, "ca.crt", ca.ExportCertificatePem());
        InsertFile(c, tx, "ca.key", caKey.ExportPkcs8PrivateKeyPem());
        InsertFile(c, tx, "server.crt", server.ExportCertificatePem());
        InsertFile(c, tx, "server.key", serverKey.ExportPkcs8PrivateKeyPem());
        InsertFile(c, tx, "tls-crypt.key", StaticKeyFile.Generate());
        InsertCert(c, tx, ca, null, "ca", null);
        InsertCert(c, tx, server, null, "server", null);
        tx.Commit();
        return new CertificateAuthority(db, X509Certificate2.CreateFromPem(ca.ExportCertificatePem()));
    }

    /// <summary>
    /// The server certificate with its private key attached, usable by SslStream on Linux. It goes
    /// through a PKCS#12 round trip because certificates made by CreateFromPem carry an ephemeral
    /// key that some TLS back ends refuse. Each call returns a new instance the caller owns.
    /// </summary>
    public X509Certificate2 LoadServerCertificate()
    {
        using var withKey = X509Certificate2.CreateFromPem(ReadFile("server.crt"), ReadFile("server.key"));
        var pfx = withKey.Export(X509ContentType.Pkcs12);
        try
        {
            return X509CertificateLoader.LoadPkcs12(pfx, null, X509KeyStorageFlags.Exportable);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(pfx);
        }
    }

    /// <summary>Issues a client certificate (CN = user, EKU clientAuth) and records it.</summary>
    public IssuedCertificate IssueClientCertificate(string user)
    {
        var now = DateTimeOffset.UtcNow;
        return IssueClientCertificate(user, now - Backdate, now + LeafLifetime, record: true);
    }

    /// <summary>Issue with explicit validity; <paramref name="record"/>=false leaves the serial unknown (tests).</summary>
    internal IssuedCertificate IssueClientCertificate(string user, DateTimeOffset notBefore, DateTimeOffset notAfter, bool record)
    {
        UserNameCheck(user);
        using var caWithKey = X509Certificate2.CreateFromPem(ReadFile("ca.crt"), ReadFile("ca.key"));
        using var key = RSA.Create(2048);
        var dn = new X500DistinguishedNameBuilder();
        dn.AddCommonName(user); // the builder escapes the name, so no DN injection via user names
        var req = new CertificateRequest(dn.Build(), key, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        req.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        req.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, true));
        req.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid(ClientAuthOid)], false));
        req.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(req.PublicKey, false));
        req.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(caWithKey, true, false));
        using var cert = req.Create(caWithKey, notBefore, Min(notAfter, caWithKey.NotAfter), NewSerial());
        var keyPem = key.ExportPkcs8PrivateKeyPem();
        if (record)
        {
            using var c = _db.OpenConnection();
            using var tx = c.BeginTransaction();
            InsertCert(c, tx, cert, user, "client", keyPem);
            tx.Commit();
            _cache?.Invalidate();
        }
        return new IssuedCertificate(cert.SerialNumber, user, "client", cert.ExportCertificatePem(), keyPem, cert.NotAfter, false);
    }

    /// <summary>The newest non-revoked, unexpired client certificate of a user, or null.</summary>
    public IssuedCertificate? GetActiveClientCertificate(string user) =>
        ListCertificates(user).Where(x => x.Kind == "client" && !x.Revoked && x.PrivateKeyPem is not null && x.NotAfter > DateTimeOffset.UtcNow.AddDays(1))
            .LastOrDefault();

    /// <summary>Certificates in issue order, all of them or one user's.</summary>
    public IReadOnlyList<IssuedCertificate> ListCertificates(string? user = null)
    {
        using var c = _db.OpenConnection();
        using var cmd = c.CreateCommand();
        cmd.CommandText = "SELECT serial, user, kind, cert_pem, key_pem, not_after_unix, revoked FROM certificates"
            + (user is null ? "" : " WHERE user = $u") + " ORDER BY created_unix, rowid";
        if (user is not null)
            cmd.Parameters.AddWithValue("$u", user);
        using var r = cmd.ExecuteReader();
        var list = new List<IssuedCertificate>();
        while (r.Read())
            list.Add(new IssuedCertificate(r.GetString(0), r.IsDBNull(1) ? null : r.GetString(1), r.GetString(2), r.GetString(3),
                r.IsDBNull(4) ? null : r.GetString(4), DateTimeOffset.FromUnixTimeSeconds(r.GetInt64(5)), r.GetInt64(6) != 0));
        return list;
    }

    /// <summary>Marks every certificate of the user revoked; returns how many were newly revoked.</summary>
    public int RevokeUser(string user)
    {
        using var c = _db.OpenConnection();
        using var cmd = c.CreateCommand();
        // The private key of a revoked cert is useless to us; drop it.
        cmd.CommandText = "UPDATE certificates SET revoked = 1, revoked_unix = $t, key_pem = NULL WHERE user = $u AND revoked = 0";
        cmd.Parameters.AddWithValue("$u", user);
        cmd.Parameters.AddWithValue("$t", DateTimeOffset.UtcNow.ToUnixTimeSeconds());
        var n = cmd.ExecuteNonQuery();
        _cache?.Invalidate();
        return n;
    }

    public bool RevokeSerial(string serial)
    {
        using var c = _db.OpenConnection();
        using var cmd = c.CreateCommand();
        cmd.CommandText = "UPDATE certificates SET revoked = 1, revoked_unix = $t, key_pem = NULL WHERE serial = $s AND revoked = 0";
        cmd.Parameters.AddWithValue("$s", serial.ToUpperInvariant());
        cmd.Parameters.AddWithValue("$t", DateTimeOffset.UtcNow.ToUnixTimeSeconds());
        var n = cmd.ExecuteNonQuery();
        _cache?.Invalidate();
        return n > 0;
    }

    /// <summary>
    /// A signed X.509 CRL (PEM, "X509 CRL") of every revoked serial, valid for
    /// <paramref name="validity"/> (default 7 days). Our own server checks the database directly;
    /// this is for tools that want a CRL file (e.g. stock openvpn --crl-verify).
    /// </summary>
    public string ExportCrlPem(TimeSpan? validity = null)
    {
        var builder = new CertificateRevocationListBuilder();
        using (var c = _db.OpenConnection())
        using (var cmd = c.CreateCommand())
        {
            cmd.CommandText = "SELECT serial, COALESCE(revoked_unix, created_unix) FROM certificates WHERE revoked = 1";
            using var r = cmd.ExecuteReader();
            while (r.Read())
                builder.AddEntry(Convert.FromHexString(r.GetString(0)), DateTimeOffset.FromUnixTimeSeconds(r.GetInt64(1)));
        }
        using var caWithKey = X509Certificate2.CreateFromPem(ReadFile("ca.crt"), ReadFile("ca.key"));
        var now = DateTimeOffset.UtcNow;
        // CRL numbers must increase; seconds since the epoch do without extra state.
        var der = builder.Build(caWithKey, new System.Numerics.BigInteger(now.ToUnixTimeSeconds()), now + (validity ?? TimeSpan.FromDays(7)),
            HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1, now - Backdate);
        return PemEncoding.WriteString("X509 CRL", der);
    }

    /// <summary>Null if the serial was never issued by us, else its revoked flag.</summary>
    public bool? IsRevoked(string serial)
    {
        if (_cache is not null)
            return _cache.IsRevoked(serial.ToUpperInvariant());
        using var c = _db.OpenConnection();
        using var cmd = c.CreateCommand();
        cmd.CommandText = "SELECT revoked FROM certificates WHERE serial = $s";
        cmd.Parameters.AddWithValue("$s", serial.ToUpperInvariant());
        return cmd.ExecuteScalar() is long v ? v != 0 : null;
    }

    /// <summary>
    /// Verifies a client certificate: chain to our CA only (CustomRootTrust), within its validity
    /// period, EKU clientAuth present, serial issued by us and not revoked. On success
    /// <paramref name="commonName"/> is the subject CN (the user name).
    /// </summary>
    public bool ValidateClientCertificate(X509Certificate2 cert, out string? commonName, out string? reason)
    {
        commonName = null;
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.Add(_caCert);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck; // our revocation list is the DB
        chain.ChainPolicy.DisableCertificateDownloads = true;
        chain.ChainPolicy.VerificationFlags = X509VerificationFlags.NoFlag;
        chain.ChainPolicy.VerificationTime = DateTime.Now;
        chain.ChainPolicy.ApplicationPolicy.Add(new Oid(ClientAuthOid));
        if (!chain.Build(cert))
        {
            reason = "certificate chain invalid: " + string.Join("; ", chain.ChainStatus.Select(s => s.Status + " " + s.StatusInformation.Trim()));
            return false;
        }
        var root = chain.ChainElements[^1].Certificate;
        if (!root.RawDataMemory.Span.SequenceEqual(_caCert.RawDataMemory.Span))
        {
            reason = "certificate does not chain to our CA";
            return false;
        }
        return CheckLeaf(cert, out commonName, out reason);
    }

    /// <summary>
    /// The same check as <see cref="ValidateClientCertificate(X509Certificate2, out string?, out string?)"/>
    /// for a certificate whose chain the TLS layer already built (SslStream on the server, with a
    /// custom-root policy holding our CA): a valid such chain that ends at our CA is taken as is,
    /// which saves building it a second time per handshake; any other chain (errors, other trust
    /// mode, another root, another leaf) gets the full check, so the outcome is the same.
    /// </summary>
    public bool ValidateClientCertificate(X509Certificate2 cert, X509Chain builtChain, out string? commonName, out string? reason)
    {
        var elements = builtChain.ChainElements;
        bool usable = builtChain.ChainPolicy.TrustMode == X509ChainTrustMode.CustomRootTrust
            && builtChain.ChainPolicy.RevocationMode == X509RevocationMode.NoCheck
            && elements.Count >= 2
            && builtChain.ChainStatus.All(st => st.Status == X509ChainStatusFlags.NoError)
            && elements[0].Certificate.RawDataMemory.Span.SequenceEqual(cert.RawDataMemory.Span)
            && elements[^1].Certificate.RawDataMemory.Span.SequenceEqual(_caCert.RawDataMemory.Span);
        return usable ? CheckLeaf(cert, out commonName, out reason) : ValidateClientCertificate(cert, out commonName, out reason);
    }

    /// <summary>The checks after the chain: EKU clientAuth, not a CA, serial ours and not revoked, has a CN.</summary>
    private bool CheckLeaf(X509Certificate2 cert, out string? commonName, out string? reason)
    {
        commonName = null;
        var eku = cert.Extensions.OfType<X509EnhancedKeyUsageExtension>().FirstOrDefault();
        if (eku is null || !eku.EnhancedKeyUsages.Cast<Oid>().Any(o => o.Value == ClientAuthOid))
        {
            reason = "certificate lacks extended key usage clientAuth";
            return false;
        }
        if (cert.Extensions.OfType<X509BasicConstraintsExtension>().Any(b => b.CertificateAuthority))
        {
            reason = "a CA certificate cannot be used as a client certificate";
            return false;
        }
        switch (IsRevoked(cert.SerialNumber))
        {
            case null:
                reason = $"certificate serial {cert.SerialNumber} was not issued by this server";
                return false;
            case true:
                reason = $"certificate serial {cert.SerialNumber} is revoked";
                return false;
        }
        var cn = cert.GetNameInfo(X509NameType.SimpleName, false);
        if (string.IsNullOrEmpty(cn))
        {
            reason = "certificate has no common name";
            return false;
        }
        commonName = cn;
        reason = null;
        return true;
    }

    /// <summary>
    /// 16 random bytes as a positive DER integer (top bit clear, first byte non-zero so the
    /// encoding is canonical and exactly 16 bytes long).
    /// </summary>
    internal static byte[] NewSerial()
    {
        var s = RandomNumberGenerator.GetBytes(16);
        s[0] = (byte)((s[0] & 0x7F) | 0x01);
        return s;
    }

    private static void UserNameCheck(string user)
    {
        if (string.IsNullOrEmpty(user) || user.Length > 64)
            throw new AdminException($"invalid certificate common name '{user}'");
    }

    private static DateTimeOffset Min(DateTimeOffset a, DateTimeOffset b) => a < b ? a : b;

    private string ReadFile(string name) =>
        TryReadFile(_db, name) ?? throw new AdminException($"PKI file '{name}' is missing from the database");

    private static string? TryReadFile(OvpnDatabase db, string name)
    {
        using var c = db.OpenConnection();
        using var cmd = c.CreateCommand();
        cmd.CommandText = "SELECT content FROM pki_files WHERE name = $n";
        cmd.Parameters.AddWithValue("$n", name);
        return cmd.ExecuteScalar() as string;
    }

    private static void InsertFile(Microsoft.Data.Sqlite.SqliteConnection c, Microsoft.Data.Sqlite.SqliteTransaction tx, string name, string content)
    {
        using var cmd = c.CreateCommand();
        cmd.Transaction = tx;
        cmd.CommandText = "INSERT INTO pki_files (name, content, created_unix) VALUES ($n, $c, $t)";
        cmd.Parameters.AddWithValue("$n", name);
        cmd.Parameters.AddWithValue("$c", content);
        cmd.Parameters.AddWithValue("$t", DateTimeOffset.UtcNow.ToUnixTimeSeconds());
        cmd.ExecuteNonQuery();
    }

    private static void InsertCert(Microsoft.Data.Sqlite.SqliteConnection c, Microsoft.Data.Sqlite.SqliteTransaction tx,
        X509Certificate2 cert, string? user, string kind, string? keyPem)
    {
        using var cmd = c.CreateCommand();
        cmd.Transaction = tx;
        cmd.CommandText = """
            INSERT INTO certificates (serial, user, kind, cert_pem, key_pem, not_after_unix, created_unix)
            VALUES ($s, $u, $k, $c, $key, $na, $t)
            """;
        cmd.Parameters.AddWithValue("$s", cert.SerialNumber);
        cmd.Parameters.AddWithValue("$u", (object?)user ?? DBNull.Value);
        cmd.Parameters.AddWithValue("$k", kind);
        cmd.Parameters.AddWithValue("$c", cert.ExportCertificatePem());
        cmd.Parameters.AddWithValue("$key", (object?)keyPem ?? DBNull.Value);
        cmd.Parameters.AddWithValue("$na", new DateTimeOffset(cert.NotAfter.ToUniversalTime()).ToUnixTimeSeconds());
        cmd.Parameters.AddWithValue("$t", DateTimeOffset.UtcNow.ToUnixTimeSeconds());
        cmd.ExecuteNonQuery();
    }
}
