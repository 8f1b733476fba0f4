// SPDX-License-Identifier: MIT
using System.Buffers.Binary;

namespace Ovpn.DataPlane.Offload;

/// <summary>Receives complete TUN frames: a 10-byte <c>struct virtio_net_hdr</c> followed by one IP packet
/// (possibly a TCP or UDP super-packet the kernel treats as GSO).</summary>
public interface IVnetFrameSink
{
    /// <summary>Writes one frame (header included). Throws on I/O failure.</summary>
    void WriteFrame(ReadOnlySpan<byte> frame);
}

/// <summary>
/// A TUN queue opened with IFF_VNET_HDR. <see cref="ITunDevice.Read"/> and
/// <see cref="ITunDevice.Write"/> still move plain IP packets (the implementation strips or adds a
/// zeroed header); <see cref="IVnetFrameSink.WriteFrame"/> writes a frame whose header the caller
/// built, which is how coalesced TCP super-packets reach the kernel.
/// </summary>
public interface IVnetTunDevice : ITunDevice, IVnetFrameSink
{
    /// <summary>Whether the kernel accepts frames with gso_type <see cref="VirtioNetHeader.GsoUdpL4"/>
    /// (UDP super-packets, Linux 6.2+). When false the engine writes UDP datagrams one by one.</summary>
    bool AcceptsUdpGso => false;

    /// <summary>Why <see cref="AcceptsUdpGso"/> is false, for the engine's status/log line.</summary>
    string? UdpGsoUnsupportedReason => "not supported by this TUN implementation";

    /// <summary>Whether the kernel hands this queue TCP super-packets on read (TUNSETOFFLOAD with
    /// TUN_F_CSUM|TUN_F_TSO4|TUN_F_TSO6|TUN_F_TSO_ECN accepted). Then reads must go through
    /// <see cref="ReadFrame"/>/<see cref="TryReadFrame"/> and <see cref="TcpSegmenter"/>: the plain
    /// <see cref="ITunDevice.Read"/> cannot return a super-packet.</summary>
    bool ReadsTcpGso => false;

    /// <summary>Why <see cref="ReadsTcpGso"/> is false (not asked for, kernel refused), for the status line.</summary>
    string? TcpGsoReadUnsupportedReason => "not supported by this TUN implementation";

    /// <summary>Blocks until one frame (virtio_net_hdr + IP packet, up to 64 KiB with TSO) is
    /// queued and copies it into <paramref name="frame"/>; returns its length. Throws
    /// ObjectDisposedException once the queue is closed.</summary>
    int ReadFrame(Span<byte> frame) => throw new NotSupportedException("This TUN implementation cannot read vnet frames.");

    /// <summary>Like <see cref="ReadFrame"/> but never blocks: -1 when no frame is queued.</summary>
    int TryReadFrame(Span<byte> frame) => throw new NotSupportedException("This TUN implementation cannot read vnet frames.");
}

/// <summary>
/// <c>struct virtio_net_hdr</c> (linux/virtio_net.h) in the byte order a TUN device uses on a
/// little-endian host without TUNSETVNETLE/BE: native little-endian u16 fields.
/// Layout: flags u8, gso_type u8, hdr_len u16, gso_size u16, csum_start u16, csum_offset u16.
/// </summary>
public static class VirtioNetHeader
{
    public const int Length = 10;

    /// <summary>VIRTIO_NET_HDR_F_NEEDS_CSUM: the checksum at csum_start+csum_offset is partial
    /// (pseudo-header only); the kernel makes it CHECKSUM_PARTIAL.</summary>
    public const byte FlagNeedsCsum = 1;

    public const byte GsoNone = 0;
    public const byte GsoTcpV4 = 1;
    public const byte GsoUdp = 3;
    public const byte GsoTcpV6 = 4;

    /// <summary>VIRTIO_NET_HDR_GSO_UDP_L4: UDP segmentation (USO), gso_size = datagram payload.
    /// (<see cref="GsoUdp"/> is the old UFO type, which fragments at the IP layer instead.)</summary>
    public const byte GsoUdpL4 = 5;

    public static void Write(Span<byte> dst, byte flags, byte gsoType, ushort hdrLen, ushort gsoSize, ushort csumStart, ushort csumOffset)
    {
        dst[0] = flags;
        dst[1] = gsoType;
        BinaryPrimitives.WriteUInt16LittleEndian(dst[2..], hdrLen);
        BinaryPrimitives.WriteUInt16LittleEndian(dst[4..], gsoSize);
        BinaryPrimitives.WriteUInt16LittleEndian(dst[6..], csumStart);
        BinaryPrimitives.WriteUInt16LittleEndian(dst[8..], csumOffset);
    }

    public static void WriteNone(Span<byte> dst) => dst[..Length].Clear();

    public static byte Flags(ReadOnlySpan<byte> h) => h[0];

    public static byte GsoType(ReadOnlySpan<byte> h) => h[1];

    public static ushort HdrLen(ReadOnlySpan<byte> h) => BinaryPrimitives.ReadUInt16LittleEndian(h[2..]);

    public static ushort GsoSize(ReadOnlySpan<byte> h) => BinaryPrimitives.ReadUInt16LittleEndian(h[4..]);

    public static ushort CsumStart(ReadOnlySpan<byte> h) => BinaryPrimitives.ReadUInt16LittleEndian(h[6..]);

    public static ushort CsumOffset(ReadOnlySpan<byte> h) => BinaryPrimitives.ReadUInt16LittleEndian(h[8..]);
}
