// SPDX-License-Identifier: MIT
using System.Net.Sockets;

namespace Ovpn.DataPlane.Offload;

/// <summary>
/// Port for a UDP socket that moves datagrams in batches (recvmmsg/sendmmsg on Linux, a channel in
/// tests). One thread calls <see cref="ReceiveBatch"/>; <see cref="SendBatch"/> may be called from
/// several threads at once (each call is one syscall, the kernel keeps datagrams whole).
/// </summary>
public interface IBatchDatagramSocket : IDisposable
{
    /// <summary>The underlying socket, used to build <see cref="Transport.UdpLinkTransport"/>s for
    /// the control plane. Test doubles return any unbound UDP socket.</summary>
    Socket Socket { get; }

    /// <summary>
    /// Waits up to <paramref name="timeoutMs"/> for datagrams and fills up to
    /// <paramref name="count"/> buffers: payload at <see cref="PacketBuffer.Offset"/> 0, its
    /// <see cref="PacketBuffer.Length"/> and source <see cref="PacketBuffer.Address"/>.
    /// Returns how many were filled (0 on timeout). Throws <see cref="ObjectDisposedException"/>
    /// once the socket is closed.
    /// </summary>
    int ReceiveBatch(PacketBuffer[] buffers, int count, int timeoutMs);

    /// <summary>Sends buffers[0..count) (each <see cref="PacketBuffer.Data"/> to its
    /// <see cref="PacketBuffer.Address"/>). Returns how many went out; the rest were dropped.</summary>
    int SendBatch(PacketBuffer[] buffers, int count);
}
