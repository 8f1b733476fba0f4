// SPDX-License-Identifier: MIT
using System.Buffers.Binary;

namespace Ovpn.DataPlane.Offload;

/// <summary>
/// Userspace UDP GRO for a TUN opened with IFF_VNET_HDR on a kernel that knows
/// VIRTIO_NET_HDR_GSO_UDP_L4 (6.2+): merges consecutive datagrams of one UDP flow into one frame
/// that the kernel takes as a single GSO skb and segments back into the original datagrams only
/// where needed (a local socket with UDP_GRO reads it whole; routing, netfilter and the IP layer
/// run once per frame instead of once per datagram). Pure logic, no I/O: frames go to an
/// <see cref="IVnetFrameSink"/>. Same design and contract as <see cref="TcpCoalescer"/>:
/// <list type="bullet">
/// <item><see cref="TryAdd"/> takes one plain IP packet. A UDP candidate is copied into its flow's
/// slot (the caller may reuse its buffer at once) and true is returned; anything else returns false
/// and neither writes nor changes anything, so the caller decides what to do with it (see
/// <see cref="TunCoalescer"/>, which first calls <see cref="FlushSameHosts"/> so a packet never
/// overtakes held datagrams between the same two hosts).</item>
/// <item><see cref="Flush"/> writes every held slot, oldest first; the caller flushes at the end of
/// each receive batch, so datagrams are never held longer than one batch.</item>
/// <item>Order: datagrams of one flow leave in arrival order; different flows may be reordered
/// relative to each other (as with the kernel's GRO).</item>
/// </list>
/// Merge rules (the kernel's udp_gro_receive_segment/inet_gro_receive, as wireguard-go applies
/// them): IPv4 without options and not a fragment, or IPv6 whose next header is UDP; the IP and
/// UDP length fields match the packet (padded packets are not merged); payload not empty; the
/// UDP checksum is non-zero and verifies. A merged frame is CHECKSUM_PARTIAL, so the kernel will
/// not verify it again: a bad checksum is written alone for the kernel to drop and count, and a
/// zero (absent) IPv4 checksum is written alone too, because re-segmentation would compute a
/// checksum the sender did not send (the kernel's GRO merges zero with zero; we do not).
/// To join a slot: same addresses and ports, same TOS/DF/reserved bits/TTL (IPv4) or first word
/// and hop limit (IPv6), IPv4 identification = the first datagram's + the number held (the IDs
/// the kernel's segmentation gives), or, with DF set, equal to the first's (RFC 6864 atomic
/// datagrams; segmentation then numbers them up from the first); payload not larger than the
/// first's (gso_size), nothing after a shorter one, at most <see cref="MaxSegments"/> datagrams
/// and an IP packet of at most 65535 bytes.
/// A merged frame carries NEEDS_CSUM, gso_type UDP_L4, hdr_len = IP + 8, gso_size = the first
/// datagram's payload, csum_start = IP header length, csum_offset = 6; the UDP length = the frame's
/// UDP length and the checksum field = the folded pseudo-header sum over it; IPv4 total length and
/// header checksum (or IPv6 payload length) recomputed. A slot holding one datagram is written
/// unchanged with a zeroed header.
/// Allocation: slot buffers are allocated once in the constructor; nothing per packet.
/// Not thread-safe: one instance per writer thread.
/// </summary>
public sealed class UdpCoalescer
{
    /// <summary>Largest IP packet a frame may carry (IPv4 total length is 16 bits).</summary>
    public const int MaxIpPacket = 65535;

    /// <summary>Most datagrams in one frame: the kernel's UDP_GRO_CNT_MAX (its segmentation limit
    /// for a virtio_net_hdr frame is higher).</summary>
    public const int MaxSegments = 64;

    private const int ProtoUdp = 17;
    private const int UdpHeaderLength = 8;

    private readonly Slot[] _slots;
    private long _age;

    /// <param name="maxFlows">Flows held at once; a new flow beyond this writes the oldest slot.</param>
    public UdpCoalescer(int maxFlows = 8)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxFlows, 1);
        _slots = new Slot[maxFlows];
        for (int i = 0; i < maxFlows; i++)
        {
            _slots[i] = new Slot();
        }
    }

    /// <summary>Datagrams currently held (written by the next <see cref="Flush"/>).</summary>
    public int HeldSegments
    {
        get
        {
            int n = 0;
            foreach (var s in _slots)
            {
                n += s.InUse ? s.Segments : 0;
            }

            return n;
        }
    }

    /// <summary>Frames written so far (super-packets and single datagrams).</summary>
    public long FramesWritten { get; private set; }

    /// <summary>Super-packets (GSO frames of two or more datagrams) written so far.</summary>
    public long GsoFramesWritten { get; private set; }

    /// <summary>Datagrams that went out inside a super-packet of two or more.</summary>
    public long SegmentsCoalesced { get; private set; }

    /// <summary>Takes <paramref name="packet"/> if it is a UDP candidate (true; may write frames of
    /// its own flow or an evicted one); otherwise false with nothing written or changed.</summary>
    public bool TryAdd(ReadOnlySpan<byte> packet, IVnetFrameSink sink)
    {
        if (!TryParseCandidate(packet, out var c))
        {
            return false;
        }

        Slot? free = null;
        Slot? oldest = null;
        foreach (var s in _slots)
        {
            if (!s.InUse)
            {
                free ??= s;
                continue;
            }

            if (SameFlow(s, packet, c))
            {
                if (CanAppend(s, packet, c))
                {
                    Append(s, packet, c);
                    return true;
                }

                // Same flow, not mergeable (size grew, header changed, frame full...): what is held
                // goes first, then this datagram starts the flow's next frame in the same slot.
                WriteSlot(s, sink);
                Start(s, packet, c);
                return true;
            }

            if (oldest is null || s.Age < oldest.Age)
            {
                oldest = s;
            }
        }

        if (free is null)
        {
            WriteSlot(oldest!, sink);
            free = oldest!;
        }

        Start(free, packet, c);
        return true;
    }

    /// <summary>Writes every held slot, oldest first.</summary>
    public void Flush(IVnetFrameSink sink)
    {
        while (true)
        {
            Slot? oldest = null;
            foreach (var s in _slots)
            {
                if (s.InUse && (oldest is null || s.Age < oldest.Age))
                {
                    oldest = s;
                }
            }

            if (oldest is null)
            {
                return;
            }

            WriteSlot(oldest, sink);
        }
    }

    /// <summary>Drops everything held without writing (after a sink failure).</summary>
    public void Reset()
    {
        foreach (var s in _slots)
        {
            s.InUse = false;
        }
    }

    /// <summary>Writes (oldest first) the held slots whose two addresses equal the packet's in either
    /// direction, so a non-mergeable packet of a held flow (bad checksum, fragment, options) or an
    /// ICMP error about it cannot overtake that flow's held datagrams.</summary>
    public void FlushSameHosts(ReadOnlySpan<byte> p, IVnetFrameSink sink)
    {
        if (p.Length < 20 || !AnyInUse())
        {
            return;
        }

        int version = p[0] >> 4;
        if ((version != 4 && version != 6) || (version == 6 && p.Length < 40))
        {
            return;
        }

        bool v6 = version == 6;
        var addrs = v6 ? p.Slice(8, 32) : p.Slice(12, 8);
        int half = addrs.Length / 2;
        while (true)
        {
            Slot? oldest = null;
            foreach (var s in _slots)
            {
                if (!s.InUse || s.V6 != v6)
                {
                    continue;
                }

                var held = v6 ? s.Frame.AsSpan(VirtioNetHeader.Length + 8, 32) : s.Frame.AsSpan(VirtioNetHeader.Length + 12, 8);
                bool match = held.SequenceEqual(addrs) ||
                    (held[..half].SequenceEqual(addrs[half..]) && held[half..].SequenceEqual(addrs[..half]));
                if (match && (oldest is null || s.Age < oldest.Age))
                {
                    oldest = s;
                }
            }

            if (oldest is null)
            {
                return;
            }

            WriteSlot(oldest, sink);
        }
    }

    private bool AnyInUse()
    {
        foreach (var s in _slots)
        {
            if (s.InUse)
            {
                return true;
            }
        }

        return false;
    }

    // ------------------------------------------------------------------ parsing

    private struct Candidate
    {
        public bool V6;
        public int IpHeaderLength;
        public int PayloadLength;
    }

    private static bool TryParseCandidate(ReadOnlySpan<byte> p, out Candidate c)
    {
        c = default;
        if (p.Length < 20 + UdpHeaderLength + 1 || p.Length > MaxIpPacket)
        {
            return false;
        }

        int version = p[0] >> 4;
        int iphl;
        if (version == 4)
        {
            // No options (IHL 5), UDP, total length = packet, MF clear and offset 0 (DF is fine).
            if (p[0] != 0x45 || p[9] != ProtoUdp || BinaryPrimitives.ReadUInt16BigEndian(p[2..]) != p.Length ||
                (BinaryPrimitives.ReadUInt16BigEndian(p[6..]) & 0x3FFF) != 0)
            {
                return false;
            }

            iphl = 20;
        }
        else if (version == 6)
        {
            // Next header UDP directly: extension headers (fragments included) are not merged.
            if (p.Length < 40 + UdpHeaderLength + 1 || p[6] != ProtoUdp || BinaryPrimitives.ReadUInt16BigEndian(p[4..]) != p.Length - 40)
            {
                return false;
            }

            iphl = 40;
        }
        else
        {
            return false;
        }

        // The UDP length must be exactly what follows the IP header (the kernel flushes padded or
        // truncated datagrams rather than merging them).
        int udpLength = p.Length - iphl;
        if (BinaryPrimitives.ReadUInt16BigEndian(p[(iphl + 4)..]) != udpLength)
        {
            return false;
        }

        // Zero = no checksum (IPv4) or invalid (IPv6): written alone either way.
        if (BinaryPrimitives.ReadUInt16BigEndian(p[(iphl + 6)..]) == 0)
        {
            return false;
        }

        var ipAddrs = version == 4 ? p.Slice(12, 8) : p.Slice(8, 32);
        int half = ipAddrs.Length / 2;
        ushort pseudo = InternetChecksum.PseudoHeaderSum(ipAddrs[..half], ipAddrs[half..], ProtoUdp, udpLength);
        if (InternetChecksum.Sum(p[iphl..], pseudo) != 0xFFFF)
        {
            return false;
        }

        c.V6 = version == 6;
        c.IpHeaderLength = iphl;
        c.PayloadLength = udpLength - UdpHeaderLength;
        return true;
    }

    // ------------------------------------------------------------------ slots

    /// <summary>One flow's super-packet under construction: frame = vnet header + IP packet.</summary>
    private sealed class Slot
    {
        public readonly byte[] Frame = new byte[VirtioNetHeader.Length + MaxIpPacket];
        public bool InUse;
        public long Age;
        public bool V6;
        public int IpHeaderLength;

        /// <summary>IP packet length (after the vnet header).</summary>
        public int Length;
        public int GsoSize;
        public int Segments;

        /// <summary>IPv4: every datagram so far had the first one's identification (DF set).</summary>
        public bool FixedId;

        /// <summary>A shorter datagram was appended: nothing may follow.</summary>
        public bool Closed;

        public Span<byte> Ip => Frame.AsSpan(VirtioNetHeader.Length, Length);
    }

    private static bool SameFlow(Slot s, ReadOnlySpan<byte> p, in Candidate c)
    {
        if (s.V6 != c.V6)
        {
            return false;
        }

        var held = s.Frame.AsSpan(VirtioNetHeader.Length);
        var addrs = c.V6 ? p.Slice(8, 32) : p.Slice(12, 8);
        var heldAddrs = c.V6 ? held.Slice(8, 32) : held.Slice(12, 8);
        return addrs.SequenceEqual(heldAddrs) &&
            p.Slice(c.IpHeaderLength, 4).SequenceEqual(held.Slice(s.IpHeaderLength, 4));
    }

    private static bool CanAppend(Slot s, ReadOnlySpan<byte> p, in Candidate c)
    {
        if (s.Closed || s.Segments >= MaxSegments || c.PayloadLength > s.GsoSize || s.Length + c.PayloadLength > MaxIpPacket)
        {
            return false;
        }

        var held = s.Frame.AsSpan(VirtioNetHeader.Length);
        if (c.V6)
        {
            // Version, traffic class, flow label; hop limit.
            return p[..4].SequenceEqual(held[..4]) && p[7] == held[7];
        }

        // TOS (ECN included), DF/reserved bits, TTL.
        if (p[1] != held[1] || (p[6] >> 5) != (held[6] >> 5) || p[8] != held[8])
        {
            return false;
        }

        ushort first = BinaryPrimitives.ReadUInt16BigEndian(held[4..]);
        ushort id = BinaryPrimitives.ReadUInt16BigEndian(p[4..]);
        bool df = (p[6] & 0x40) != 0;
        return s.FixedId ? id == first && df : id == (ushort)(first + s.Segments) || (s.Segments == 1 && df && id == first);
    }

    private void Start(Slot s, ReadOnlySpan<byte> p, in Candidate c)
    {
        p.CopyTo(s.Frame.AsSpan(VirtioNetHeader.Length));
        s.InUse = true;
        s.Age = ++_age;
        s.V6 = c.V6;
        s.IpHeaderLength = c.IpHeaderLength;
        s.Length = p.Length;
        s.GsoSize = c.PayloadLength;
        s.Segments = 1;
        s.FixedId = false;
        s.Closed = false;
    }

    private static void Append(Slot s, ReadOnlySpan<byte> p, in Candidate c)
    {
        if (!c.V6 && s.Segments == 1)
        {
            // The second datagram decides whether this frame's IDs count up or stay fixed.
            s.FixedId = BinaryPrimitives.ReadUInt16BigEndian(p[4..]) == BinaryPrimitives.ReadUInt16BigEndian(s.Frame.AsSpan(VirtioNetHeader.Length + 4));
        }

        p[(c.IpHeaderLength + UdpHeaderLength)..].CopyTo(s.Frame.AsSpan(VirtioNetHeader.Length + s.Length));
        s.Length += c.PayloadLength;
        s.Segments++;
        if (c.PayloadLength < s.GsoSize)
        {
            s.Closed = true;
        }
    }

    private void WriteSlot(Slot s, IVnetFrameSink sink)
    {
        // Free before writing: a throwing sink loses this frame only, never leaves a stale slot.
        s.InUse = false;
        var frame = s.Frame.AsSpan(0, VirtioNetHeader.Length + s.Length);
        if (s.Segments == 1)
        {
            VirtioNetHeader.WriteNone(frame);
            FramesWritten++;
            sink.WriteFrame(frame);
            return;
        }

        var ip = s.Ip;
        int iphl = s.IpHeaderLength;
        int udpLength = s.Length - iphl;
        ReadOnlySpan<byte> src, dst;
        if (s.V6)
        {
            BinaryPrimitives.WriteUInt16BigEndian(ip[4..], (ushort)udpLength);
            src = ip.Slice(8, 16);
            dst = ip.Slice(24, 16);
        }
        else
        {
            BinaryPrimitives.WriteUInt16BigEndian(ip[2..], (ushort)s.Length);
            BinaryPrimitives.WriteUInt16BigEndian(ip[10..], InternetChecksum.Ipv4HeaderChecksum(ip[..iphl]));
            src = ip.Slice(12, 4);
            dst = ip.Slice(16, 4);
        }

        // The kernel's segmentation swaps this length for each datagram's in the partial checksum,
        // so the length field and the pseudo-header sum must agree.
        BinaryPrimitives.WriteUInt16BigEndian(ip[(iphl + 4)..], (ushort)udpLength);
        BinaryPrimitives.WriteUInt16BigEndian(ip[(iphl + 6)..], InternetChecksum.PseudoHeaderSum(src, dst, ProtoUdp, udpLength));
        VirtioNetHeader.Write(frame, VirtioNetHeader.FlagNeedsCsum, VirtioNetHeader.GsoUdpL4,
            (ushort)(iphl + UdpHeaderLength), (ushort)s.GsoSize, (ushort)iphl, 6);
        FramesWritten++;
        GsoFramesWritten++;
        SegmentsCoalesced += s.Segments;
        sink.WriteFrame(frame);
    }
}
