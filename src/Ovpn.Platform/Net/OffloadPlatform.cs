// SPDX-License-Identifier: MIT
using System.Net;
using System.Net.Sockets;
using Ovpn.DataPlane;
using Ovpn.DataPlane.Offload;
using Ovpn.Platform.Linux;

namespace Ovpn.Platform.Net;

/// <summary>
/// Wires <see cref="OffloadDataPlane"/> to the Linux platform for the server: batched UDP on the
/// sockets the server bound, a multi-queue TUN with one queue per worker, and OpenSSL EVP for the
/// AEAD when libcrypto is loadable (else the BCL codec). The TUN is opened with IFF_VNET_HDR and
/// the engine coalesces TCP segments and (when the kernel accepts UDP GSO frames) UDP datagrams
/// before writing them (userspace GRO, <see cref="TunCoalescer"/>) unless the caller says otherwise
/// or the environment has <c>OVPN_TUN_COALESCE=0</c> (all off) or <c>OVPN_TUN_UDP_GRO=0</c> (UDP
/// off), for benchmark comparisons. The vnet TUN also reads TCP super-packets (read-side TSO,
/// <see cref="OffloadOptions.TunSegmentationOffload"/>) unless <c>OVPN_TUN_TSO=0</c>.
/// </summary>
public static class OffloadPlatform
{
    /// <summary>
    /// Creates (does not start) the engine. The engine owns the TUN queues and the batch wrappers'
    /// native memory (<see cref="OffloadDataPlane.Dispose"/> releases both); the server keeps
    /// owning <paramref name="udpSockets"/> and disposes them after the engine.
    /// </summary>
    /// <param name="configureTun">Runs once on the first queue: MTU, address, link up.</param>
    /// <param name="udpLinkFactory">How a UDP address becomes the link handed to the control plane
    /// (the server passes one that reuses its session's link, e.g. SessionManager.FindUdpLink).</param>
    public static OffloadDataPlane Create(IReadOnlyList<Socket> udpSockets, string tunName, Action<TunDevice> configureTun,
        IDataPlaneEvents events, Func<IBatchDatagramSocket, SocketAddress, ILinkTransport>? udpLinkFactory = null,
        int? workers = null, TimeProvider? time = null, UnhandledPacketHandler? unhandledData = null, bool? tunCoalesce = null,
        bool? tunTso = null)
    {
        int n = workers ?? Environment.ProcessorCount;
        bool coalesce = tunCoalesce ?? CoalesceFromEnvironment();
        // TSO on read needs the vnet header, which only the coalescing (vnet) TUN has.
        bool tso = coalesce && (tunTso ?? TsoFromEnvironment());
        var batch = new IBatchDatagramSocket[udpSockets.Count];
        for (int i = 0; i < batch.Length; i++)
        {
            batch[i] = new UdpBatchSocket(udpSockets[i]) { RxModerationMicros = RxModerationFromEnvironment() };
        }

        var options = new OffloadOptions
        {
            Workers = n,
            UdpLinkFactory = udpLinkFactory,
            UnhandledDataPacket = unhandledData,
            Aead = OpenSslPacketAeadFactory.IsAvailable ? OpenSslPacketAeadFactory.Instance : BclPacketAeadFactory.Instance,
            OwnsTunQueues = true,
            OwnsDatagramSockets = true,
            TunCoalesce = coalesce,
            TunCoalesceUdp = !IsOff(Environment.GetEnvironmentVariable(UdpCoalesceVariable)),
            TunCoalesceLinger = int.TryParse(Environment.GetEnvironmentVariable(LingerVariable), out int linger) ? Math.Clamp(linger, 0, 64) : DefaultLinger,
            TunSegmentationOffload = tso,
        };
        return new OffloadDataPlane(batch, MultiQueueTun.Open(tunName, n, configureTun, vnetHeader: coalesce, tcpOffload: tso), events, options, time);
    }

    /// <summary>Name of the environment switch: "0" (or "false"/"off") turns TUN coalescing off.</summary>
    public const string CoalesceVariable = "OVPN_TUN_COALESCE";

    /// <summary>Environment override of <see cref="OffloadOptions.TunCoalesceLinger"/> (yields before a short batch's flush).</summary>
    public const string LingerVariable = "OVPN_TUN_LINGER";

    /// <summary>
    /// The server's linger: 0. On the 2-core bench (bench/tunnel.sh rows c and e, five runs under
    /// varying host load) 4 yields gave anything from 0.4x to 1.05x the CPU per GB of no linger:
    /// when the core is otherwise idle a yield returns at once and the extra receive attempts cost
    /// more than the larger super-packets save. Kept as a knob (OVPN_TUN_LINGER) for busier hosts.
    /// </summary>
    public const int DefaultLinger = 0;

    /// <summary>Environment override of <see cref="UdpBatchSocket.RxModerationMicros"/> (receive
    /// moderation interval in microseconds, 0 = off).</summary>
    public const string RxModerationVariable = "OVPN_RX_MODERATION_US";

    /// <summary>The server's receive moderation interval when the environment does not say.</summary>
    public const int DefaultRxModerationMicros = 0;

    /// <summary><see cref="RxModerationVariable"/> clamped to 0..1000, else <see cref="DefaultRxModerationMicros"/>.</summary>
    public static int RxModerationFromEnvironment() =>
        int.TryParse(Environment.GetEnvironmentVariable(RxModerationVariable), out int us) ? Math.Clamp(us, 0, 1000) : DefaultRxModerationMicros;

    /// <summary>Name of the environment switch for UDP only: "0" (or "false"/"off") writes UDP
    /// datagrams one by one while TCP is still coalesced (bench/forward.sh's before-state row).</summary>
    public const string UdpCoalesceVariable = "OVPN_TUN_UDP_GRO";

    /// <summary>Name of the environment switch: "0" (or "false"/"off") turns read-side TSO off (the
    /// kernel segments TCP before the TUN and the engine reads one packet per read()).</summary>
    public const string TsoVariable = "OVPN_TUN_TSO";

    /// <summary>True unless <see cref="TsoVariable"/> says 0/false/off.</summary>
    public static bool TsoFromEnvironment() => !IsOff(Environment.GetEnvironmentVariable(TsoVariable));

    /// <summary>True unless <see cref="CoalesceVariable"/> says 0/false/off.</summary>
    public static bool CoalesceFromEnvironment() => !IsOff(Environment.GetEnvironmentVariable(CoalesceVariable));

    private static bool IsOff(string? v) =>
        v is not null && (v == "0" || v.Equals("false", StringComparison.OrdinalIgnoreCase) || v.Equals("off", StringComparison.OrdinalIgnoreCase));
}
