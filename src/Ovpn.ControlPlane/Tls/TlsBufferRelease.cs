// SPDX-License-Identifier: MIT
using System.Net.Security;
using System.Reflection;
using System.Runtime.InteropServices;

namespace Ovpn.ControlPlane.Tls;

/// <summary>
/// Asks OpenSSL to free an idle TLS session's record buffers (SSL_MODE_RELEASE_BUFFERS): without
/// it every SSL object keeps a ~17 KiB read and a ~17 KiB write buffer for its whole life, which on
/// a server with thousands of idle control channels is most of the per-peer memory. OpenSSL
/// re-allocates a buffer when a record is read or written again, so behaviour is unchanged.
///
/// SslStream does not expose its SSL handle: on Linux its security context *is* the SSL* (a
/// SafeSslHandle), reached through a private field. Everything here is best effort: any mismatch
/// (another runtime layout, another OS, libssl not loadable) leaves the stream as it was and
/// returns false. Call only while no other operation runs on the stream (right after the handshake
/// completes, before the first read), as SSL_ctrl is not synchronised with SSL_read/SSL_write.
/// </summary>
internal static unsafe class TlsBufferRelease
{
    private const int SslCtrlMode = 33;          // SSL_CTRL_MODE
    private const long SslModeReleaseBuffers = 0x10; // SSL_MODE_RELEASE_BUFFERS

    private static readonly FieldInfo? ContextField =
        typeof(SslStream).GetField("_securityContext", BindingFlags.Instance | BindingFlags.NonPublic);

    private static readonly delegate* unmanaged<nint, int, nint, nint, nint> SslCtrl = LoadSslCtrl();

    /// <summary>Whether this process can set the mode at all (Linux, libssl 3 loaded, runtime layout as expected).</summary>
    public static bool Supported => SslCtrl != null && ContextField is not null;

    private static delegate* unmanaged<nint, int, nint, nint, nint> LoadSslCtrl()
    {
        if (!OperatingSystem.IsLinux())
        {
            return null;
        }

        foreach (string name in new[] { "libssl.so.3", "libssl.so" })
        {
            if (NativeLibrary.TryLoad(name, out var lib) && NativeLibrary.TryGetExport(lib, "SSL_ctrl", out var fn))
            {
                return (delegate* unmanaged<nint, int, nint, nint, nint>)fn;
            }
        }

        return null;
    }

    /// <summary>Sets SSL_MODE_RELEASE_BUFFERS on the stream's SSL object; returns true if the mode is now set.</summary>
    public static bool TryEnable(SslStream ssl)
    {
        if (!Supported || ContextField!.GetValue(ssl) is not SafeHandle h ||
            h.GetType().Name != "SafeSslHandle" || h.IsInvalid || h.IsClosed)
        {
            return false;
        }

        bool added = false;
        try
        {
            h.DangerousAddRef(ref added);
            nint mode = SslCtrl(h.DangerousGetHandle(), SslCtrlMode, (nint)SslModeReleaseBuffers, 0);
            return (mode & (nint)SslModeReleaseBuffers) != 0;
        }
        catch (ObjectDisposedException)
        {
            return false;
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
