// SPDX-License-Identifier: MIT
using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Ovpn.Admin;

/// <summary>
/// The admin web server's TLS certificate: self-signed (ECDSA P-256), generated at first start and
/// kept in the data directory as admin-web.pfx (mode 0600) so browsers see the same one after restarts.
/// </summary>
public static class AdminCertificate
{
    public const string FileName = "admin-web.pfx";

    public static X509Certificate2 LoadOrCreate(string dataDir, string hostname)
    {
        var path = Path.Combine(dataDir, FileName);
        if (File.Exists(path))
        {
            var existing = X509CertificateLoader.LoadPkcs12FromFile(path, null);
            if (existing.NotAfter > DateTime.UtcNow.AddDays(1))
            {
                return existing;
            }

            existing.Dispose();
        }

        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var req = new CertificateRequest($"CN={hostname}, O=ovpnas admin", key, HashAlgorithmName.SHA256);
        var san = new SubjectAlternativeNameBuilder();
        san.AddDnsName("localhost");
        san.AddIpAddress(IPAddress.Loopback);
        san.AddIpAddress(IPAddress.IPv6Loopback);
        if (IPAddress.TryParse(hostname, out var ip))
        {
            san.AddIpAddress(ip);
        }
        else
        {
            san.AddDnsName(hostname);
        }

        req.CertificateExtensions.Add(san.Build());
        req.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        req.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, true));
        req.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], false));
        // 397 days: the longest validity browsers accept for TLS server certificates.
        using var cert = req.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(397));
        var pfx = cert.Export(X509ContentType.Pkcs12);
        using (var fs = new FileStream(path, new FileStreamOptions
        {
            Mode = FileMode.Create,
            Access = FileAccess.Write,
            UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite,
        }))
        {
            fs.Write(pfx);
        }

        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        return X509CertificateLoader.LoadPkcs12(pfx, null);
    }
}
