// SPDX-License-Identifier: MIT
using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;

namespace Ovpn.DataPlane.Offload;

/// <summary>What a queued <see cref="PacketBuffer"/> asks its worker to do.</summary>
public enum PacketWork : byte
{
    /// <summary>A wire packet from a link: authenticate, decrypt, write to TUN.</summary>
    Open,

    /// <summary>An IP packet from TUN (or a keepalive/OCC payload) at <see cref="PacketBuffer.Headroom"/>: seal and send.</summary>
    Seal,
}

/// <summary>
/// One pooled packet buffer. The array is allocated once on the pinned object heap so that batched
/// syscalls (recvmmsg/sendmmsg, TUN read/write) can take its address without a <c>fixed</c> per
/// packet. <see cref="Headroom"/> bytes in front of a TUN payload leave room for the DATA_V2
/// header, packet id and tag, so sealing writes the wire packet in place with no copy.
/// Ownership: exactly one owner at a time (pool, reader, worker queue, worker); the owner that is
/// done calls <see cref="PacketBufferPool.Return"/>, which clears the references it carried.
/// </summary>
public sealed class PacketBuffer
{
    /// <summary>DATA_V2 overhead: 4-byte header, 4-byte packet id, 16-byte tag.</summary>
    public const int Headroom = 24;

    public PacketBuffer(int capacity)
    {
        Array = GC.AllocateArray<byte>(capacity, pinned: true);
        // Large enough for sockaddr_in6 (28 bytes); Size is set to the real length on receive.
        Address = new SocketAddress(AddressFamily.InterNetworkV6, 28);
    }

    /// <summary>Pinned storage for the whole packet, headroom included.</summary>
    public byte[] Array { get; }

    public int Offset;
    public int Length;

    /// <summary>Remote UDP address (source on receive, destination on send), native sockaddr bytes.</summary>
    public readonly SocketAddress Address;

    /// <summary>Index of the datagram socket the packet came from / goes out on.</summary>
    public int SocketIndex;

    public PacketWork Work;

    /// <summary>True when a Seal payload is tunnel traffic (counted as VPN tx), false for ping/OCC.</summary>
    public bool VpnPayload;

    /// <summary>Set by the dispatcher so the worker does not look the peer up again.</summary>
    internal object? Peer;

    /// <summary>The link a TCP packet came from (null for UDP: the address says it).</summary>
    public ILinkTransport? Link;

    public Span<byte> Data => Array.AsSpan(Offset, Length);

    internal void Reset()
    {
        Offset = 0;
        Length = 0;
        SocketIndex = 0;
        VpnPayload = false;
        Peer = null;
        Link = null;
    }
}

/// <summary>
/// A fixed set of <see cref="PacketBuffer"/>s created up front. Rent never allocates: when all
/// buffers are in flight it returns null and the caller drops and counts the packet (backpressure
/// instead of unbounded memory). Thread-safe.
/// </summary>
public sealed class PacketBufferPool
{
    private readonly ConcurrentQueue<PacketBuffer> _free = new();
    private long _outstanding;

    public PacketBufferPool(int count, int bufferSize)
    {
        BufferSize = bufferSize;
        Count = count;
        for (int i = 0; i < count; i++)
        {
            _free.Enqueue(new PacketBuffer(bufferSize));
        }
    }

    public int BufferSize { get; }

    public int Count { get; }

    /// <summary>Buffers currently rented (for leak checks in tests).</summary>
    public long Outstanding => Interlocked.Read(ref _outstanding);

    public PacketBuffer? Rent()
    {
        if (_free.TryDequeue(out var b))
        {
            Interlocked.Increment(ref _outstanding);
            return b;
        }

        return null;
    }

    public void Return(PacketBuffer b)
    {
        b.Reset();
        Interlocked.Decrement(ref _outstanding);
        _free.Enqueue(b);
    }
}
