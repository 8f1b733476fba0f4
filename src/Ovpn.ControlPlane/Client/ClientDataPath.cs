// SPDX-License-Identifier: MIT
using System.Net.Sockets;
using Ovpn.DataPlane;
using Ovpn.DataPlane.Engine;
using Ovpn.Protocol.Keys;

namespace Ovpn.ControlPlane.Client;

/// <summary>`ovpnas connect --dco`: where the client's data channel runs (OpenVPN's --dco / --disable-dco).</summary>
public enum ClientDcoMode
{
    /// <summary>Kernel module when usable for this connection, else the userspace offload engine.</summary>
    Auto,

    /// <summary>The multi-core userspace offload engine (ovpnas-offload) in client mode.</summary>
    Userspace,

    /// <summary>The kernel ovpn module (point-to-point mode).</summary>
    Kernel,

    /// <summary>The single-threaded managed engine (ovpnas-managed), as before offload existed.</summary>
    Off,
}

/// <summary>Which engine <see cref="ClientDcoPolicy.Choose"/> picked.</summary>
public enum ClientEngineKind { Managed, Userspace, Kernel }

/// <summary>Parsing of the <c>--dco</c> value.</summary>
public static class ClientDcoModes
{
    public static ClientDcoMode Parse(string? value) => value?.Trim().ToLowerInvariant() switch
    {
        null or "" or "auto" => ClientDcoMode.Auto,
        "userspace" or "user" => ClientDcoMode.Userspace,
        "kernel" => ClientDcoMode.Kernel,
        "off" or "no" or "false" => ClientDcoMode.Off,
        _ => throw new ArgumentException($"--dco: '{value}' is not one of auto, userspace, kernel, off"),
    };

    public static string ToName(ClientDcoMode m) => m.ToString().ToLowerInvariant();
}

/// <summary>
/// The client's data-path decision, kept pure so that it can be tested without a platform:
/// <list type="bullet">
/// <item>off (--dco off, or `disable-dco` in the profile): managed engine;</item>
/// <item>kernel asked explicitly (--dco kernel): the kernel module (ovpn-dco-v2 / ovpn, P2P mode) or a
/// <see cref="NotSupportedException"/> naming why not (module unusable, TCP link, non-AEAD cipher, no peer-id):
/// never quietly another engine than asked;</item>
/// <item>a peer offload cannot carry (no peer-id pushed = DATA_V1, or a CBC cipher): managed engine
/// with the reason (both the kernel module and our offload engine refuse such peers);</item>
/// <item>auto = kernel when the module is usable, the link is UDP and the cipher AEAD, else userspace;</item>
/// <item>userspace: the userspace offload engine (UDP or TCP).</item>
/// </list>
/// </summary>
public static class ClientDcoPolicy
{
    /// <param name="kernelStatus">null when the kernel module is usable, else why not.</param>
    /// <exception cref="NotSupportedException">--dco kernel and the kernel cannot carry this connection.</exception>
    public static (ClientEngineKind Kind, string Reason) Choose(ClientDcoMode mode, bool profileDisablesDco, bool tcp,
        DataCipher cipher, string? peerBlocker, string? kernelStatus)
    {
        if (profileDisablesDco)
        {
            return (ClientEngineKind.Managed, "offload off: disable-dco in profile");
        }

        if (mode == ClientDcoMode.Off)
        {
            return (ClientEngineKind.Managed, "offload off: --dco off");
        }

        if (mode == ClientDcoMode.Kernel && KernelBlocker(tcp, cipher, peerBlocker, kernelStatus) is { } why)
        {
            throw new NotSupportedException($"--dco kernel: {why}; use --dco auto or --dco userspace");
        }

        if (!DataCipherNames.IsAead(cipher))
        {
            return (ClientEngineKind.Managed, $"offload not possible: cipher {DataCipherNames.ToName(cipher)} is not AEAD");
        }

        if (peerBlocker is not null)
        {
            return (ClientEngineKind.Managed, $"offload not possible: {peerBlocker}");
        }

        switch (mode)
        {
            case ClientDcoMode.Kernel:
                return (ClientEngineKind.Kernel, "--dco kernel");
            case ClientDcoMode.Userspace:
                return (ClientEngineKind.Userspace, "--dco userspace");
            default:
                if (kernelStatus is null && !tcp)
                {
                    return (ClientEngineKind.Kernel, "auto: kernel ovpn module usable, UDP, AEAD");
                }

                return (ClientEngineKind.Userspace, tcp ? "auto: TCP link (kernel offload is used for UDP only)"
                    : $"auto: {kernelStatus}");
        }
    }

    /// <summary>Why the kernel module cannot carry this connection, or null when it can.</summary>
    public static string? KernelBlocker(bool tcp, DataCipher cipher, string? peerBlocker, string? kernelStatus)
    {
        if (kernelStatus is not null)
        {
            return kernelStatus;
        }

        if (tcp)
        {
            return "TCP link (the kernel data path here carries UDP only)";
        }

        if (!DataCipherNames.IsAead(cipher))
        {
            return $"cipher {DataCipherNames.ToName(cipher)} is not AEAD (the kernel module does AES-GCM and ChaCha20-Poly1305 only)";
        }

        return peerBlocker;
    }
}

/// <summary>
/// Starts the engine <see cref="ClientDcoPolicy.Choose"/> picked, with the fallback chain of
/// `--dco auto`: a kernel engine that fails to start falls back to the userspace offload engine,
/// and a userspace engine that fails to start (e.g. no multi-queue TUN, no batched UDP) falls back
/// to the managed engine, which needs only a plain TUN device; each fallback is reported through
/// <c>warn</c> and carried in the reason the engine is given. An explicit --dco kernel / userspace
/// never falls back: the start failure propagates, so the user sees why. Only exceptions
/// <c>isStartFailure</c> accepts are treated as "this engine cannot run here" (the platform decides
/// which); anything else propagates in every mode. Kept free of platform types so it is unit-testable.
/// </summary>
public static class ClientEngineStarter
{
    public static T Start<T>(ClientDcoMode mode, ClientEngineKind kind, string reason,
        Func<string, T> kernel, Func<string, T> userspace, Func<string, T> managed,
        Func<Exception, bool> isStartFailure, Action<string> warn)
    {
        if (kind == ClientEngineKind.Managed)
        {
            return managed(reason);
        }

        if (kind == ClientEngineKind.Kernel)
        {
            if (mode != ClientDcoMode.Auto)
            {
                return kernel(reason);
            }

            try
            {
                return kernel(reason);
            }
            catch (Exception e) when (isStartFailure(e))
            {
                warn($"kernel data path could not start ({e.Message}); using the userspace offload engine");
                reason = $"auto: kernel data path failed to start: {e.Message}";
            }
        }

        if (mode != ClientDcoMode.Auto)
        {
            return userspace(reason);
        }

        try
        {
            return userspace(reason);
        }
        catch (Exception e) when (isStartFailure(e))
        {
            // auto must still connect.
            warn($"userspace offload could not start ({e.Message}); using the managed engine");
            return managed($"auto: offload engine failed to start: {e.Message}");
        }
    }
}

/// <summary>What the client hands a <see cref="IClientDataPathFactory"/> once the server pushed its options.</summary>
/// <param name="Tun">Address, MTU and routes of the TUN device to create.</param>
/// <param name="Link">The link the control channel uses (the engine's peer sends on it too).</param>
/// <param name="UdpSocket">The client's UDP socket (null on TCP): an offload engine may read it itself.</param>
/// <param name="Cipher">The negotiated data cipher.</param>
/// <param name="Peer">The one peer (the server) the engine will get.</param>
/// <param name="Events">Where the engine reports expiry, renegotiation and control packets.</param>
/// <param name="DisableDco">The profile said `disable-dco`.</param>
public sealed record ClientDataPathRequest(ClientTunSettings Tun, ILinkTransport Link, Socket? UdpSocket, DataCipher Cipher,
    PeerConfig Peer, IDataPlaneEvents Events, bool DisableDco);

/// <summary>
/// An established tunnel's data path: its engine (one peer, the server) plus what the client needs
/// beyond <see cref="IDataPlane"/>. Disposing it stops the engine and removes the TUN device.
/// </summary>
public interface IClientDataPlane : IDisposable
{
    IDataPlane Engine { get; }

    /// <summary>For the log and `connect --status`: the engine and how it runs, e.g.
    /// "ovpnas-offload (userspace, 2 TUN queues, openssl-evp)".</summary>
    string Description { get; }

    /// <summary>Why this path was chosen (logged once).</summary>
    string Reason { get; }

    string TunName { get; }

    /// <summary>True when the engine reads the client's UDP socket itself: the client's own receive
    /// loop must stop reading it, and control packets come up through <see cref="IDataPlaneEvents.OnControlPacket"/>.</summary>
    bool ReadsUdpSocket { get; }

    /// <summary>Starts the engine's threads (after the peer and its first key were installed).</summary>
    void Start();

    /// <summary>Keepalive (the client calls it once a second).</summary>
    void Tick();

    /// <summary>OCC EXIT on the data channel (explicit-exit-notify over UDP).</summary>
    void SendOccExit(uint peerId);

    /// <summary>A data packet the client read itself (TCP, or UDP before the engine took over).</summary>
    void OnLinkPacket(ILinkTransport link, ReadOnlySpan<byte> packet, Span<byte> scratch);
}

/// <summary>Port: builds the data path for an established tunnel. The front end composes it from the
/// platform (offload engines need multi-queue TUN, batched UDP and native crypto).</summary>
public interface IClientDataPathFactory
{
    IClientDataPlane Create(ClientDataPathRequest request);
}

/// <summary>The managed engine in client mode over one TUN device from an <see cref="IClientTunFactory"/>.</summary>
public sealed class ManagedClientDataPlane : IClientDataPlane
{
    private readonly ManagedDataPlane _dp;
    private readonly ITunDevice _tun;

    public ManagedClientDataPlane(IClientTunFactory tunFactory, ClientDataPathRequest request, string reason)
    {
        _tun = tunFactory.Create(request.Tun);
        _dp = new ManagedDataPlane(_tun, request.Events) { ClientMode = true };
        Reason = reason;
    }

    public IDataPlane Engine => _dp;

    public string Description => $"{_dp.EngineName} (managed engine, single-threaded)";

    public string Reason { get; }

    public string TunName => _tun.Name;

    public bool ReadsUdpSocket => false;

    public void Start() => _dp.Start();

    public void Tick() => _dp.Tick();

    public void SendOccExit(uint peerId) => _dp.SendOccExit(peerId);

    public void OnLinkPacket(ILinkTransport link, ReadOnlySpan<byte> packet, Span<byte> scratch) => _dp.OnLinkPacket(link, packet, scratch);

    public void Dispose()
    {
        _dp.Dispose();
        _tun.Dispose();
    }
}

/// <summary>Default factory: always the managed engine (platforms without offload, unit tests).</summary>
public sealed class ManagedClientDataPathFactory(IClientTunFactory tunFactory) : IClientDataPathFactory
{
    public IClientDataPlane Create(ClientDataPathRequest request) =>
        new ManagedClientDataPlane(tunFactory, request, "managed engine (no offload factory)");
}
