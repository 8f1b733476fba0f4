// SPDX-License-Identifier: MIT
using System.Buffers.Binary;

namespace Ovpn.DataPlane.Offload;

/// <summary>Why <see cref="TcpSegmenter.TryPlan"/> refused a TUN frame (the engine drops and counts it).</summary>
public enum TunFrameError : byte
{
    None,

    /// <summary>Shorter than a virtio_net_hdr plus a minimal IP header.</summary>
    TooShort,

    /// <summary>A gso_type other than NONE/TCPV4/TCPV6 (ECN bit allowed with TCP only).</summary>
    UnknownGsoType,

    /// <summary>gso_size 0 on a GSO frame, or so small that the frame would exceed <see cref="TcpSegmenter.MaxSegments"/>.</summary>
    BadGsoSize,

    /// <summary>The IP header is not what the gso_type says (version, IHL, protocol, fragment, IPv6 extension header).</summary>
    BadIpHeader,

    /// <summary>IP total/payload length inconsistent with the frame, or the TCP header beyond it.</summary>
    BadLength,

    /// <summary>NEEDS_CSUM with csum_start/csum_offset outside the packet.</summary>
    BadChecksumOffsets,
}

/// <summary>
/// What one TUN frame yields: <see cref="Count"/> IP packets, each written by
/// <see cref="TcpSegmenter.WriteSegment"/>. A plain value (no allocation); valid only with the
/// frame it was planned from.
/// </summary>
public readonly struct TunFramePlan
{
    internal TunFramePlan(byte kind, int packetLength, int ipHeaderLength, int headerLength, int mss, int count, int csumStart, int csumOffset)
    {
        Kind = kind;
        PacketLength = packetLength;
        IpHeaderLength = ipHeaderLength;
        HeaderLength = headerLength;
        Mss = mss;
        Count = count;
        CsumStart = csumStart;
        CsumOffset = csumOffset;
    }

    internal const byte KindPlain = 0, KindChecksum = 1, KindTcp = 2;

    internal byte Kind { get; }

    /// <summary>Length of the IP packet inside the frame (after the virtio_net_hdr).</summary>
    public int PacketLength { get; }

    internal int IpHeaderLength { get; }

    /// <summary>IP + TCP header length (TCP GSO only).</summary>
    internal int HeaderLength { get; }

    internal int Mss { get; }

    /// <summary>IP packets this frame yields (1 unless it is a TCP GSO super-packet).</summary>
    public int Count { get; }

    internal int CsumStart { get; }

    internal int CsumOffset { get; }

    /// <summary>Whether the frame is a TCP GSO super-packet that is split.</summary>
    public bool IsSegmented => Kind == KindTcp;

    /// <summary>The largest packet <see cref="TcpSegmenter.WriteSegment"/> writes for this frame.</summary>
    public int MaxSegmentLength => Kind == KindTcp ? Math.Min(PacketLength, HeaderLength + Mss) : PacketLength;
}

/// <summary>
/// Software TSO for frames read from a TUN opened with IFF_VNET_HDR and TUNSETOFFLOAD(TUN_F_TSO*):
/// splits a TCP super-packet (virtio gso_type TCPV4/TCPV6, optionally with the ECN bit) into
/// gso_size-sized segments the way the kernel's tcp_gso_segment does, so the tunnel carries
/// ordinary MTU-sized packets:
/// <list type="bullet">
/// <item>every segment repeats the IP and TCP headers (options included); IPv4 total length or IPv6
/// payload length is the segment's, the IPv4 id grows by one per segment and the IPv4 header
/// checksum is recomputed;</item>
/// <item>the TCP sequence number advances by gso_size per segment; FIN and PSH stay only on the
/// last segment, CWR only on the first;</item>
/// <item>the TCP checksum of every segment is computed in full (the frame's field holds only a
/// partial pseudo-header sum).</item>
/// </list>
/// A non-GSO frame with VIRTIO_NET_HDR_F_NEEDS_CSUM gets its checksum completed at
/// csum_start + csum_offset; any other frame passes through unchanged. Malformed frames are refused
/// (<see cref="TunFrameError"/>), never partially processed. No allocation: the caller supplies the
/// destination of every segment (a pooled buffer after its seal headroom).
/// </summary>
public static class TcpSegmenter
{
    /// <summary>Upper bound of segments per frame (a 64 KiB frame at the kernel's minimum MSS of 88 is 745).</summary>
    public const int MaxSegments = 1024;

    private const int TcpProtocol = 6;
    private const byte TcpFin = 0x01, TcpPsh = 0x08, TcpCwr = 0x80;

    /// <summary>Checks <paramref name="frame"/> (virtio_net_hdr + IP packet) and says what it yields.</summary>
    public static bool TryPlan(ReadOnlySpan<byte> frame, out TunFramePlan plan, out TunFrameError error)
    {
        plan = default;
        if (frame.Length < VirtioNetHeader.Length + 20)
        {
            error = TunFrameError.TooShort;
            return false;
        }

        var hdr = frame[..VirtioNetHeader.Length];
        var pkt = frame[VirtioNetHeader.Length..];
        byte gso = VirtioNetHeader.GsoType(hdr);
        byte gsoKind = (byte)(gso & 0x7F);
        bool ecn = (gso & 0x80) != 0;
        if (gsoKind == VirtioNetHeader.GsoNone)
        {
            if (ecn)
            {
                error = TunFrameError.UnknownGsoType;
                return false;
            }

            if ((VirtioNetHeader.Flags(hdr) & VirtioNetHeader.FlagNeedsCsum) != 0)
            {
                int start = VirtioNetHeader.CsumStart(hdr), offset = VirtioNetHeader.CsumOffset(hdr);
                if (start >= pkt.Length || start + offset + 2 > pkt.Length)
                {
                    error = TunFrameError.BadChecksumOffsets;
                    return false;
                }

                plan = new TunFramePlan(TunFramePlan.KindChecksum, pkt.Length, 0, 0, 0, 1, start, offset);
            }
            else
            {
                plan = new TunFramePlan(TunFramePlan.KindPlain, pkt.Length, 0, 0, 0, 1, 0, 0);
            }

            error = TunFrameError.None;
            return true;
        }

        if (gsoKind is not (VirtioNetHeader.GsoTcpV4 or VirtioNetHeader.GsoTcpV6))
        {
            error = TunFrameError.UnknownGsoType;
            return false;
        }

        int mss = VirtioNetHeader.GsoSize(hdr);
        if (mss == 0)
        {
            error = TunFrameError.BadGsoSize;
            return false;
        }

        int ipLen, packetLen;
        if (gsoKind == VirtioNetHeader.GsoTcpV4)
        {
            if (pkt[0] >> 4 != 4 || (pkt[0] & 0xF) < 5 || pkt[9] != TcpProtocol ||
                (BinaryPrimitives.ReadUInt16BigEndian(pkt[6..]) & 0x3FFF) != 0)
            {
                error = TunFrameError.BadIpHeader;
                return false;
            }

            ipLen = (pkt[0] & 0xF) * 4;
            packetLen = BinaryPrimitives.ReadUInt16BigEndian(pkt[2..]);
        }
        else
        {
            // Extension headers are not followed: the kernel's TUN path hands TSO frames with TCP
            // right after the fixed header, and anything else is refused rather than guessed.
            if (pkt.Length < 40 || pkt[0] >> 4 != 6 || pkt[6] != TcpProtocol)
            {
                error = pkt.Length < 40 ? TunFrameError.TooShort : TunFrameError.BadIpHeader;
                return false;
            }

            ipLen = 40;
            packetLen = 40 + BinaryPrimitives.ReadUInt16BigEndian(pkt[4..]);
        }

        if (packetLen > pkt.Length || ipLen + 20 > packetLen)
        {
            error = TunFrameError.BadLength;
            return false;
        }

        int tcpLen = (pkt[ipLen + 12] >> 4) * 4;
        if (tcpLen < 20 || ipLen + tcpLen > packetLen)
        {
            error = TunFrameError.BadLength;
            return false;
        }

        int headerLen = ipLen + tcpLen;
        int payload = packetLen - headerLen;
        int count = Math.Max(1, (payload + mss - 1) / mss);
        if (count > MaxSegments)
        {
            error = TunFrameError.BadGsoSize;
            return false;
        }

        plan = new TunFramePlan(TunFramePlan.KindTcp, packetLen, ipLen, headerLen, mss, count, 0, 0);
        error = TunFrameError.None;
        return true;
    }

    /// <summary>
    /// Writes packet <paramref name="index"/> (0 ≤ index &lt; <see cref="TunFramePlan.Count"/>) of a
    /// planned frame to <paramref name="dst"/>; returns its length, or -1 when <paramref name="dst"/>
    /// is too small (check <see cref="TunFramePlan.MaxSegmentLength"/> first).
    /// </summary>
    public static int WriteSegment(in TunFramePlan plan, ReadOnlySpan<byte> frame, int index, Span<byte> dst)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(index, plan.Count);
        var pkt = frame.Slice(VirtioNetHeader.Length, plan.PacketLength);
        if (plan.Kind != TunFramePlan.KindTcp)
        {
            if (dst.Length < pkt.Length)
            {
                return -1;
            }

            pkt.CopyTo(dst);
            if (plan.Kind == TunFramePlan.KindChecksum)
            {
                // The field holds the pseudo-header sum; the sum from csum_start on completes it.
                var field = dst[(plan.CsumStart + plan.CsumOffset)..];
                ushort sum = InternetChecksum.Sum(dst[plan.CsumStart..pkt.Length]);
                BinaryPrimitives.WriteUInt16BigEndian(field, (ushort)~sum);
            }

            return pkt.Length;
        }

        int h = plan.HeaderLength, ip = plan.IpHeaderLength;
        int start = h + index * plan.Mss;
        int segPayload = Math.Min(plan.Mss, plan.PacketLength - start);
        int len = h + Math.Max(0, segPayload);
        if (dst.Length < len)
        {
            return -1;
        }

        var seg = dst[..len];
        pkt[..h].CopyTo(seg);
        if (segPayload > 0)
        {
            pkt.Slice(start, segPayload).CopyTo(seg[h..]);
        }

        var tcp = seg[ip..];
        int tcpLen = len - ip;
        bool v4 = seg[0] >> 4 == 4;
        ushort pseudo;
        if (v4)
        {
            BinaryPrimitives.WriteUInt16BigEndian(seg[2..], (ushort)len);
            ushort id = BinaryPrimitives.ReadUInt16BigEndian(pkt[4..]);
            BinaryPrimitives.WriteUInt16BigEndian(seg[4..], (ushort)(id + index));
            BinaryPrimitives.WriteUInt16BigEndian(seg[10..], InternetChecksum.Ipv4HeaderChecksum(seg[..ip]));
            pseudo = InternetChecksum.PseudoHeaderSum(seg.Slice(12, 4), seg.Slice(16, 4), TcpProtocol, tcpLen);
        }
        else
        {
            BinaryPrimitives.WriteUInt16BigEndian(seg[4..], (ushort)tcpLen);
            pseudo = InternetChecksum.PseudoHeaderSum(seg.Slice(8, 16), seg.Slice(24, 16), TcpProtocol, tcpLen);
        }

        uint seq = BinaryPrimitives.ReadUInt32BigEndian(pkt[(ip + 4)..]);
        BinaryPrimitives.WriteUInt32BigEndian(tcp[4..], unchecked(seq + (uint)(index * plan.Mss)));
        byte flags = tcp[13];
        if (index != plan.Count - 1)
        {
            flags &= unchecked((byte)~(TcpFin | TcpPsh));
        }

        if (index != 0)
        {
            flags &= unchecked((byte)~TcpCwr);
        }

        tcp[13] = flags;
        tcp[16] = 0;
        tcp[17] = 0;
        BinaryPrimitives.WriteUInt16BigEndian(tcp[16..], (ushort)~InternetChecksum.Sum(tcp[..tcpLen], pseudo));
        return len;
    }
}
