// SPDX-License-Identifier: MIT
using System.Buffers.Binary;

namespace Ovpn.DataPlane.Offload;

/// <summary>
/// Userspace GRO for a TUN opened with IFF_VNET_HDR: merges consecutive TCP segments of one flow
/// into a super-packet that the kernel accepts as a GSO skb, so the inner TCP receive path runs
/// once per super-packet instead of once per segment (the per-packet TUN write was most of the
/// offload engine's CPU). Pure logic, no I/O: frames go to an <see cref="IVnetFrameSink"/>.
///
/// Contract:
/// <list type="bullet">
/// <item><see cref="Add"/> takes one plain IP packet (copied; the caller may reuse its buffer at
/// once). A candidate TCP segment is held in a per-flow slot; anything else is written at once
/// with a zeroed header, after first writing every held slot between the same two addresses (so
/// a FIN, RST, out-of-order segment or ICMP error never overtakes segments of its own flow).</item>
/// <item><see cref="Flush"/> writes every held slot, oldest first. The caller flushes at the end of
/// each receive batch; held packets are never older than one batch.</item>
/// <item>Order: packets of one flow (same addresses and ports) leave in arrival order. Different
/// flows may be reordered relative to each other, as the kernel's own GRO does.</item>
/// </list>
/// Merge rules (those of the kernel's tcp_gro_receive/inet_gro_receive, as wireguard-go applies
/// them): IPv4 without options and not fragmented, or IPv6 whose next header is TCP; lengths in
/// the IP header match the packet; flags exactly ACK or ACK|PSH, payload not empty; the TCP
/// checksum verifies (a merged packet is CHECKSUM_PARTIAL, so the kernel will not check it again);
/// to join a slot: same addresses and ports, sequence number = the slot's next, same ACK number,
/// window, TCP header length and options, same TOS/DF/TTL (IPv4) or first word/hop limit (IPv6),
/// payload not larger than the first segment's (the MSS), nothing after a shorter segment or a
/// PSH, total IP length at most 65535.
/// A merged frame carries NEEDS_CSUM, gso_type TCPV4/TCPV6, hdr_len = IP + TCP header,
/// gso_size = the first segment's payload, csum_start = IP header length, csum_offset = 16, the TCP
/// checksum field = the folded pseudo-header sum (CHECKSUM_PARTIAL convention), IPv4 total length
/// and header checksum (or IPv6 payload length) recomputed; PSH is set if the last segment had it.
/// Allocation: slot buffers are allocated once in the constructor; nothing per packet.
/// Not thread-safe: one instance per writer thread.
/// </summary>
public sealed class TcpCoalescer
{
    /// <summary>Largest IP packet a frame may carry (IPv4 total length is 16 bits).</summary>
    public const int MaxIpPacket = 65535;

    private const int ProtoTcp = 6;
    private const byte TcpAck = 0x10;
    private const byte TcpPsh = 0x08;

    private readonly Slot[] _slots;
    private readonly byte[] _single = new byte[VirtioNetHeader.Length + MaxIpPacket];
    private long _age;

    /// <param name="maxFlows">Flows held at once; a new flow beyond this writes the oldest slot.</param>
    public TcpCoalescer(int maxFlows = 8)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxFlows, 1);
        _slots = new Slot[maxFlows];
        for (int i = 0; i < maxFlows; i++)
        {
            _slots[i] = new Slot();
        }
    }

    /// <summary>Segments currently held (written by the next <see cref="Flush"/>).</summary>
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

    /// <summary>Frames written so far (super-packets and single packets).</summary>
    public long FramesWritten { get; private set; }

    /// <summary>Super-packets (GSO frames of two or more segments) written so far.</summary>
    public long GsoFramesWritten { get; private set; }

    /// <summary>Segments that went out inside a super-packet of two or more.</summary>
    public long SegmentsCoalesced { get; private set; }

    /// <summary>Takes one IP packet; may write frames to <paramref name="sink"/>.</summary>
    public void Add(ReadOnlySpan<byte> packet, IVnetFrameSink sink)
    {
        if (!TryParseCandidate(packet, out var c))
        {
            FlushSameHosts(packet, sink);
            WriteSingle(packet, sink);
            return;
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
                    return;
                }

                // Same flow but not mergeable (gap, new ACK, other size...): what is held goes
                // first, then this segment starts the flow's next super-packet in the same slot.
                WriteSlot(s, sink);
                Start(s, packet, c);
                return;
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

    /// <summary>Drops everything held without writing (after a sink failure the caller may prefer this).</summary>
    public void Reset()
    {
        foreach (var s in _slots)
        {
            s.InUse = false;
        }
    }

    // ------------------------------------------------------------------ parsing

    private struct Candidate
    {
        public bool V6;
        public int IpHeaderLength;
        public int TcpHeaderLength;
        public int PayloadLength;
        public uint Seq;
        public bool Psh;
    }

    private static bool TryParseCandidate(ReadOnlySpan<byte> p, out Candidate c)
    {
        c = default;
        if (p.Length < 40 || p.Length > MaxIpPacket)
        {
            return false;
        }

        int version = p[0] >> 4;
        int iphl;
        if (version == 4)
        {
            // No options (IHL 5), TCP, total length = packet, MF clear and offset 0 (DF is fine).
            if (p[0] != 0x45 || p[9] != ProtoTcp || BinaryPrimitives.ReadUInt16BigEndian(p[2..]) != p.Length ||
                (BinaryPrimitives.ReadUInt16BigEndian(p[6..]) & 0x3FFF) != 0)
            {
                return false;
            }

            iphl = 20;
        }
        else if (version == 6)
        {
            // Next header TCP directly: extension headers are not merged.
            if (p.Length < 60 || p[6] != ProtoTcp || BinaryPrimitives.ReadUInt16BigEndian(p[4..]) != p.Length - 40)
            {
                return false;
            }

            iphl = 40;
        }
        else
        {
            return false;
        }

        int thl = (p[iphl + 12] >> 4) * 4;
        if (thl < 20 || iphl + thl >= p.Length)
        {
            // Also refuses an empty payload (a pure ACK is not worth holding).
            return false;
        }

        byte flags = p[iphl + 13];
        if ((flags != TcpAck && flags != (TcpAck | TcpPsh)) || (p[iphl + 12] & 0x0F) != 0)
        {
            return false;
        }

        // CHECKSUM_PARTIAL skips the kernel's verification, so only verified segments may merge.
        var ipAddrs = version == 4 ? p.Slice(12, 8) : p.Slice(8, 32);
        int half = ipAddrs.Length / 2;
        ushort pseudo = InternetChecksum.PseudoHeaderSum(ipAddrs[..half], ipAddrs[half..], ProtoTcp, p.Length - iphl);
        if (InternetChecksum.Sum(p[iphl..], pseudo) != 0xFFFF)
        {
            return false;
        }

        c.V6 = version == 6;
        c.IpHeaderLength = iphl;
        c.TcpHeaderLength = thl;
        c.PayloadLength = p.Length - iphl - thl;
        c.Seq = BinaryPrimitives.ReadUInt32BigEndian(p[(iphl + 4)..]);
        c.Psh = (flags & TcpPsh) != 0;
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
        public int TcpHeaderLength;

        /// <summary>IP packet length (after the vnet header).</summary>
        public int Length;
        public int GsoSize;
        public int Segments;
        public uint NextSeq;

        /// <summary>A PSH or short segment was appended: nothing may follow.</summary>
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
        if (s.Closed || c.Seq != s.NextSeq || c.PayloadLength > s.GsoSize || s.Length + c.PayloadLength > MaxIpPacket ||
            c.TcpHeaderLength != s.TcpHeaderLength)
        {
            return false;
        }

        var held = s.Frame.AsSpan(VirtioNetHeader.Length);
        if (c.V6)
        {
            // Version, traffic class, flow label; hop limit.
            if (!p[..4].SequenceEqual(held[..4]) || p[7] != held[7])
            {
                return false;
            }
        }
        else if (p[1] != held[1] || (p[6] >> 5) != (held[6] >> 5) || p[8] != held[8])
        {
            // TOS (ECN included), DF/reserved bits, TTL.
            return false;
        }

        int t = c.IpHeaderLength;
        // ACK number (8..12), window (14..16), options (20..thl) must be identical.
        return p.Slice(t + 8, 4).SequenceEqual(held.Slice(t + 8, 4)) &&
            p.Slice(t + 14, 2).SequenceEqual(held.Slice(t + 14, 2)) &&
            p.Slice(t + 20, c.TcpHeaderLength - 20).SequenceEqual(held.Slice(t + 20, c.TcpHeaderLength - 20));
    }

    private void Start(Slot s, ReadOnlySpan<byte> p, in Candidate c)
    {
        p.CopyTo(s.Frame.AsSpan(VirtioNetHeader.Length));
        s.InUse = true;
        s.Age = ++_age;
        s.V6 = c.V6;
        s.IpHeaderLength = c.IpHeaderLength;
        s.TcpHeaderLength = c.TcpHeaderLength;
        s.Length = p.Length;
        s.GsoSize = c.PayloadLength;
        s.Segments = 1;
        s.NextSeq = c.Seq + (uint)c.PayloadLength;
        s.Closed = c.Psh;
    }

    private static void Append(Slot s, ReadOnlySpan<byte> p, in Candidate c)
    {
        p[(c.IpHeaderLength + c.TcpHeaderLength)..].CopyTo(s.Frame.AsSpan(VirtioNetHeader.Length + s.Length));
        s.Length += c.PayloadLength;
        s.Segments++;
        s.NextSeq += (uint)c.PayloadLength;
        if (c.Psh)
        {
            s.Frame[VirtioNetHeader.Length + s.IpHeaderLength + 13] |= TcpPsh;
            s.Closed = true;
        }

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
        ReadOnlySpan<byte> src, dst;
        if (s.V6)
        {
            BinaryPrimitives.WriteUInt16BigEndian(ip[4..], (ushort)(s.Length - 40));
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

        ushort pseudo = InternetChecksum.PseudoHeaderSum(src, dst, ProtoTcp, s.Length - iphl);
        BinaryPrimitives.WriteUInt16BigEndian(ip[(iphl + 16)..], pseudo);
        VirtioNetHeader.Write(frame, VirtioNetHeader.FlagNeedsCsum, s.V6 ? VirtioNetHeader.GsoTcpV6 : VirtioNetHeader.GsoTcpV4,
            (ushort)(iphl + s.TcpHeaderLength), (ushort)s.GsoSize, (ushort)iphl, 16);
        FramesWritten++;
        GsoFramesWritten++;
        SegmentsCoalesced += s.Segments;
        sink.WriteFrame(frame);
    }

    private void WriteSingle(ReadOnlySpan<byte> p, IVnetFrameSink sink)
    {
        if (p.Length > MaxIpPacket)
        {
            throw new ArgumentException($"IP packet of {p.Length} bytes is larger than {MaxIpPacket}", nameof(p));
        }

        VirtioNetHeader.WriteNone(_single);
        p.CopyTo(_single.AsSpan(VirtioNetHeader.Length));
        FramesWritten++;
        sink.WriteFrame(_single.AsSpan(0, VirtioNetHeader.Length + p.Length));
    }

    /// <summary>Writes (oldest first) the held slots whose two addresses equal the packet's, so that a
    /// non-mergeable packet of a held flow (FIN, RST, IP options, extension headers...) or an ICMP
    /// error about it cannot overtake that flow's held segments.</summary>
    private void FlushSameHosts(ReadOnlySpan<byte> p, IVnetFrameSink sink)
    {
        if (p.Length < 20)
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
                // Either direction: an ICMP error or RST may come from the other end's address.
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
}
