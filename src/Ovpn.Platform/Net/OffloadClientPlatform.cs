// SPDX-License-Identifier: MIT
using System.Net.Sockets;
using Ovpn.DataPlane;
using Ovpn.DataPlane.Offload;
using Ovpn.Platform.Linux;

namespace Ovpn.Platform.Net;

/// <summary>
/// Wires <see cref="OffloadDataPlane"/> in client mode (<see cref="OffloadOptions.ClientMode"/>) to
/// the Linux platform for `ovpnas connect`: the client's own UDP socket read with recvmmsg (none on
/// TCP: the client's TCP reader feeds <see cref="OffloadDataPlane.OnLinkPacket"/>), a multi-queue TUN
/// with one reader per queue (IFF_VNET_HDR + TCP coalescing on write unless OVPN_TUN_COALESCE=0, read-side TSO unless OVPN_TUN_TSO=0), OpenSSL EVP for the AEAD when libcrypto loads (else the BCL codec).
/// </summary>
public static class OffloadClientPlatform
{
    /// <summary>TUN queues of a client by default: one TUN reader seals while the socket reader opens,
    /// and a second TUN queue lets two sending flows seal in parallel on a 2-core machine.</summary>
    public const int DefaultQueues = 2;

    /// <summary>
    /// Creates (does not start) the engine. It owns the TUN queues and the batch wrapper (its native
    /// buffers); the client keeps owning <paramref name="udpSocket"/> and closes it after the engine.
    /// Keepalive is driven by the client (<see cref="OffloadDataPlane.Tick"/>), not an engine timer.
    /// </summary>
    /// <param name="configureTun">Runs once on the first queue: MTU, addresses, link up, routes.</param>
    public static OffloadDataPlane Create(Socket? udpSocket, string tunName, int queues, Action<TunDevice> configureTun,
        IDataPlaneEvents events)
    {
        IBatchDatagramSocket[] sockets = udpSocket is null ? [] : [new UdpBatchSocket(udpSocket)];
        // Userspace GRO into the TUN (TcpCoalescer) helps the client's download direction exactly as it
        // helps the server's upload direction; OVPN_TUN_COALESCE=0 turns it off here too.
        bool coalesce = OffloadPlatform.CoalesceFromEnvironment();
        // Read-side TSO speeds up the client's upload as it does the server's download (OVPN_TUN_TSO=0: off).
        bool tso = coalesce && OffloadPlatform.TsoFromEnvironment();
        try
        {
            var options = new OffloadOptions
            {
                ClientMode = true,
                Workers = queues,
                // One tunnel: a quarter of the server's pool is plenty (bounds pinned memory to 4 MiB).
                PoolSize = 2048,
                KeepaliveTimer = false,
                Aead = AeadFactory,
                OwnsTunQueues = true,
                OwnsDatagramSockets = true,
                TunCoalesce = coalesce,
                TunSegmentationOffload = tso,
            };
            return new OffloadDataPlane(sockets, MultiQueueTun.Open(tunName, queues, configureTun, vnetHeader: coalesce, tcpOffload: tso), events, options);
        }
        catch
        {
            foreach (var s in sockets)
            {
                s.Dispose();
            }

            throw;
        }
    }

    /// <summary>The AEAD implementation the engine will use ("openssl-evp" or "bcl").</summary>
    public static IPacketAeadFactory AeadFactory =>
        OpenSslPacketAeadFactory.IsAvailable ? OpenSslPacketAeadFactory.Instance : BclPacketAeadFactory.Instance;
}
