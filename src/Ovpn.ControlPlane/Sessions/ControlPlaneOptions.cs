// SPDX-License-Identifier: MIT
using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Ovpn.Protocol.Control;
using Ovpn.Protocol.Keys;

namespace Ovpn.ControlPlane.Sessions;

/// <summary>Result of checking a client's certificate (and credentials, if any).</summary>
public readonly record struct AuthResult(bool Ok, string? CommonName, string? Reason);

/// <summary>Immutable settings of the control plane, built once from the config database at start.</summary>
public sealed record ControlPlaneOptions
{
    public required IReadOnlyList<DataCipher> DataCiphers { get; init; }

    public DataCipher? FallbackCipher { get; init; }

    public required ControlWrapMode WrapMode { get; init; }

    public StaticKey? WrapKey { get; init; }

    /// <summary>tls-auth HMAC digest (OpenVPN's --auth; SHA1 is its default).</summary>
    public HashAlgorithmName TlsAuthDigest { get; init; } = HashAlgorithmName.SHA1;

    public required X509Certificate2 ServerCertificate { get; init; }

    /// <summary>
    /// The server certificate as SslStream wants it, built once and shared by every session. Given
    /// a bare certificate, each SslStream would build its own context (a chain build per handshake)
    /// and, on Linux, its own native SSL_CTX; a shared context lets the runtime reuse one SSL_CTX.
    /// </summary>
    internal SslStreamCertificateContext ServerCertificateContext
    {
        get
        {
            var cached = _certContext;
            if (cached is not null && ReferenceEquals(cached.Value.For, ServerCertificate))
            {
                return cached.Value.Context;
            }

            var ctx = SslStreamCertificateContext.Create(ServerCertificate, additionalCertificates: null, offline: true);
            _certContext = (ServerCertificate, ctx);
            return ctx;
        }
    }

    private (X509Certificate2 For, SslStreamCertificateContext Context)? _certContext;

    /// <summary>
    /// The CA that issues client certificates, if known. SslStream builds a chain for the client's
    /// certificate before <see cref="ValidateClient"/> runs; with this set it builds it against this
    /// CA only, instead of searching the system trust store on every handshake. Validation itself
    /// stays with <see cref="ValidateClient"/>.
    /// </summary>
    public X509Certificate2? ClientCa { get; init; }

    /// <summary>Checks the client certificate (chain to our CA, not revoked, user allowed).</summary>
    public required Func<X509Certificate2, AuthResult> ValidateClient { get; init; }

    /// <summary>
    /// Optional form of <see cref="ValidateClient"/> used when SslStream has already built the
    /// client's chain against <see cref="ClientCa"/> and reported no policy errors: it receives that
    /// chain so the check need not build it a second time on every handshake. It must reach the same
    /// verdict as <see cref="ValidateClient"/> (and rebuild the chain itself if it cannot trust the
    /// one given). Unset: <see cref="ValidateClient"/> is always used.
    /// </summary>
    public Func<X509Certificate2, X509Chain, AuthResult>? ValidateClientWithChain { get; init; }

    public required IpPool Pool { get; init; }

    /// <summary>Extra options pushed to every client (route, dhcp-option DNS, redirect-gateway ...).</summary>
    public IReadOnlyList<string> ExtraPush { get; init; } = [];

    public int PingSeconds { get; init; } = 10;

    public int PingRestartSeconds { get; init; } = 60;

    public int RenegotiateSeconds { get; init; } = 3600;

    public int HandWindowSeconds { get; init; } = 60;

    public int TunMtu { get; init; } = 1420;

    /// <summary>Accept clients that frame data with the no-compression stubs (comp-lzo / compress in their profile).</summary>
    public bool AllowCompressionStubs { get; init; } = true;

    /// <summary>Packet-id at which the data plane asks for a renegotiation (tests lower it).</summary>
    public uint PacketIdRenegotiationTrigger { get; init; } = 0xFF000000;

    /// <summary>How many sessions may be in the handshake at once (anti-flood).</summary>
    public int MaxHalfOpenSessions { get; init; } = 1024;
}
