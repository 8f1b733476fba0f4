// SPDX-License-Identifier: MIT
using System.Security.Cryptography.X509Certificates;

namespace Ovpn.ControlPlane.Client;

/// <summary>
/// Verifies the server certificate the way an OpenVPN client configured with `ca`,
/// `remote-cert-tls server` and `verify-x509-name` does: the chain must end in one of the profile's
/// CA certificates (and only those: CustomRootTrust, no system store), the certificate must carry
/// keyUsage and the serverAuth EKU when remote-cert-tls server is set, and its name must match.
/// </summary>
public static class ServerCertificateCheck
{
    public const string ServerAuthOid = "1.3.6.1.5.5.7.3.1";

    /// <summary>Null when acceptable, otherwise the reason.</summary>
    public static string? Validate(X509Certificate2? cert, X509Chain? presented, X509Certificate2Collection caCerts, ClientProfile profile)
    {
        if (cert is null)
        {
            return "server sent no certificate";
        }

        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.AddRange(caCerts);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        chain.ChainPolicy.VerificationFlags = X509VerificationFlags.NoFlag;
        if (presented is not null)
        {
            // Intermediates the server sent along.
            foreach (var el in presented.ChainElements)
            {
                if (!el.Certificate.Equals(cert))
                {
                    chain.ChainPolicy.ExtraStore.Add(el.Certificate);
                }
            }
        }

        if (!chain.Build(cert))
        {
            var status = string.Join(", ", chain.ChainStatus.Select(s => s.Status.ToString()));
            return $"certificate chain does not verify against the profile CA ({status})";
        }

        if (profile.RemoteCertTlsServer)
        {
            bool hasKu = cert.Extensions.OfType<X509KeyUsageExtension>().Any();
            var eku = cert.Extensions.OfType<X509EnhancedKeyUsageExtension>().FirstOrDefault();
            bool serverAuth = eku is not null && eku.EnhancedKeyUsages.Cast<System.Security.Cryptography.Oid>().Any(o => o.Value == ServerAuthOid);
            if (!hasKu)
            {
                return "remote-cert-tls server: certificate has no keyUsage extension";
            }

            if (!serverAuth)
            {
                return "remote-cert-tls server: certificate lacks the TLS Web Server Authentication EKU";
            }
        }

        if (profile.VerifyX509Name is { } want)
        {
            string cn = cert.GetNameInfo(X509NameType.SimpleName, forIssuer: false);
            bool ok = profile.VerifyX509Type switch
            {
                "name" => cn == want,
                "name-prefix" => cn.StartsWith(want, StringComparison.Ordinal),
                _ => SameRdnSet(cert.SubjectName, want),
            };
            if (!ok)
            {
                return $"verify-x509-name: server certificate '{cert.Subject}' does not match '{want}' ({profile.VerifyX509Type})";
            }
        }

        return null;
    }

    /// <summary>
    /// OpenVPN prints subjects as "C=US, O=x, CN=y" (issuer order); .NET as "CN=y, O=x, C=US".
    /// Compare the attribute sets, ignoring order and the spacing after commas.
    /// </summary>
    internal static bool SameRdnSet(X500DistinguishedName subject, string want)
    {
        static SortedSet<string> Split(string s) => new(
            s.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
             .Select(p => p.Replace(" = ", "=", StringComparison.Ordinal)), StringComparer.Ordinal);
        return Split(subject.Name).SetEquals(Split(want));
    }
}
