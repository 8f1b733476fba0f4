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
/// AEAD when libcrypto is loadable (else the BCL codec).
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
        int? workers = null, TimeProvider? time = null, UnhandledPacketHandler? unhandledData = null)
    {
        int n = workers ?? Environment.ProcessorCount;
        var batch = new IBatchDatagramSocket[udpSockets.Count];
        for (int i = 0; i < batch.Length; i++)
        {
            batch[i] = new UdpBatchSocket(udpSockets[i]);
        }

        var options = new OffloadOptions
        {
            Workers = n,
            UdpLinkFactory = udpLinkFactory,
            UnhandledDataPacket = unhandledData,
            Aead = OpenSslPacketAeadFactory.IsAvailable ? OpenSslPacketAeadFactory.Instance : BclPacketAeadFactory.Instance,
            OwnsTunQueues = true,
            OwnsDatagramSockets = true,
        };
        return new OffloadDataPlane(batch, MultiQueueTun.Open(tunName, n, configureTun), events, options, time);
    }
}
