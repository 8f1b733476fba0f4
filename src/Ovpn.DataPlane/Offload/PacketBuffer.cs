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
    }

    /// <summary>Pinned storage for the whole packet, headroom included.</summary>
    public byte[] Array { get; }

    public int Offset;
    public int Length;

    // One preallocated address object per family: SocketAddress equality and copying look at its
    // whole buffer, so the object must have exactly the sockaddr's size (16 or 28 bytes).
    private readonly SocketAddress _v4 = new(AddressFamily.InterNetwork, 16);
    private readonly SocketAddress _v6 = new(AddressFamily.InterNetworkV6, 28);
    private bool _isV6;

    /// <summary>Remote UDP address (source on receive, destination on send), native sockaddr bytes.</summary>
    public SocketAddress Address => _isV6 ? _v6 : _v4;

    /// <summary>Sets <see cref="Address"/> from native sockaddr_in (16) or sockaddr_in6 (28) bytes.</summary>
    public void SetAddress(ReadOnlySpan<byte> sockaddr)
    {
        _isV6 = sockaddr.Length > 16;
        var dst = Address.Buffer.Span;
        dst.Clear();
        sockaddr[..Math.Min(sockaddr.Length, dst.Length)].CopyTo(dst);
    }

    /// <summary>Copies another address object into <see cref="Address"/>.</summary>
    public void SetAddress(SocketAddress a) => SetAddress(a.Buffer.Span[..a.Size]);

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
