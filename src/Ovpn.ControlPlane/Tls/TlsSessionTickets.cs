// SPDX-License-Identifier: MIT
using System.Net.Security;
using System.Reflection;
using System.Runtime.InteropServices;

namespace Ovpn.ControlPlane.Tls;

/// <summary>
/// Stops a server-side SslStream from issuing TLS 1.3 session tickets (SSL_set_num_tickets(ssl, 0)).
/// Why: OpenVPN never resumes a TLS session (every key state, including renegotiations, is a full
/// handshake; the stock server turns tickets and its session cache off), yet OpenSSL's default is
/// two NewSessionTicket messages after every TLS 1.3 handshake. Each one costs the server a session
/// copy, its DER encoding (which includes the client's certificate), an encryption and a MAC, and
/// it puts ~2-3 KB more ciphertext on the control channel (several more reliable control packets,
/// each tls-crypt wrapped and acknowledged), all for a ticket the client never presents.
/// Security and protocol behaviour are unchanged: nothing ever accepted a ticket.
///
/// SslStream does not expose its SSL handle nor a ticket option (AllowTlsResume = false would also
/// stop .NET from caching the SSL_CTX, i.e. a new context per handshake). Its security context on
/// Linux is the SSL* (a SafeSslHandle in a private field), created when the ClientHello is
/// processed; tickets are built only after the client's Finished arrives, in a later handshake
/// step. So the caller invokes <see cref="TryDisable"/> from the transport's read path (SslStream
/// is then waiting for input, no SSL call runs on the object) until it reports Done. Best effort,
/// like <see cref="TlsBufferRelease"/>: another runtime layout or no libssl leaves tickets on.
/// </summary>
internal static unsafe class TlsSessionTickets
{
    /// <summary>Outcome of one attempt.</summary>
    public enum Result
    {
        /// <summary>The SSL object does not exist yet (no ClientHello processed): try again on the next read.</summary>
        NotYet,

        /// <summary>Tickets are off for this stream.</summary>
        Disabled,

        /// <summary>Not possible here (other OS or runtime layout, libssl without the call): stop trying.</summary>
        Unsupported,
    }

    private static readonly FieldInfo? ContextField =
        typeof(SslStream).GetField("_securityContext", BindingFlags.Instance | BindingFlags.NonPublic);

    // int SSL_set_num_tickets(SSL *s, size_t num_tickets) / size_t SSL_get_num_tickets(const SSL *s), OpenSSL >= 1.1.1.
    private static readonly (nint Set, nint Get) Fns = Load();

    private static (nint, nint) Load()
    {
        if (!OperatingSystem.IsLinux())
        {
            return (0, 0);
        }

        foreach (string name in new[] { "libssl.so.3", "libssl.so" })
        {
            if (NativeLibrary.TryLoad(name, out var lib) &&
                NativeLibrary.TryGetExport(lib, "SSL_set_num_tickets", out var set) &&
                NativeLibrary.TryGetExport(lib, "SSL_get_num_tickets", out var get))
            {
                return (set, get);
            }
        }

        return (0, 0);
    }

    /// <summary>Whether this process can turn tickets off at all.</summary>
    public static bool Supported => Fns.Set != 0 && ContextField is not null;

    /// <summary>Sets the number of TLS 1.3 tickets the stream's SSL object will issue to zero.</summary>
    public static Result TryDisable(SslStream ssl)
    {
        if (!Supported)
        {
            return Result.Unsupported;
        }

        var ctx = ContextField!.GetValue(ssl);
        if (ctx is null)
        {
            return Result.NotYet;
        }

        if (ctx is not SafeHandle h || h.GetType().Name != "SafeSslHandle")
        {
            return Result.Unsupported;
        }

        bool added = false;
        try
        {
            h.DangerousAddRef(ref added);
            if (h.IsInvalid)
            {
                return Result.Unsupported;
            }

            return ((delegate* unmanaged<nint, nuint, int>)Fns.Set)(h.DangerousGetHandle(), 0) == 1 ? Result.Disabled : Result.Unsupported;
        }
        catch (ObjectDisposedException)
        {
            return Result.Unsupported;
        }
        finally
        {
            if (added)
            {
                h.DangerousRelease();
            }
        }
    }

    /// <summary>How many TLS 1.3 tickets the stream's SSL object issues per handshake, or null when unknown (for tests).</summary>
    public static long? TicketsPerHandshake(SslStream ssl)
    {
        if (!Supported || ContextField!.GetValue(ssl) is not SafeHandle h || h.IsInvalid || h.IsClosed)
        {
            return null;
        }

        bool added = false;
        try
        {
            h.DangerousAddRef(ref added);
            return (long)((delegate* unmanaged<nint, nuint>)Fns.Get)(h.DangerousGetHandle());
        }
        finally
        {
            if (added)
            {
                h.DangerousRelease();
            }
        }
    }
}
