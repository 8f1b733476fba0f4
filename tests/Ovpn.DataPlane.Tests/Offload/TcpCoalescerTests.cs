// SPDX-License-Identifier: MIT
using System.Buffers.Binary;
using System.Net;
using Ovpn.DataPlane.Offload;

namespace Ovpn.DataPlane.Tests.Offload;

/// <summary>Builds TCP/IP packets with checksums computed by a naive byte-wise sum (independent of
/// <see cref="InternetChecksum"/>), and re-segments GSO frames the way the kernel would.</summary>
internal static class Tcp
{
    public const byte Ack = 0x10, Psh = 0x08, Fin = 0x01, Syn = 0x02, Rst = 0x04, Urg = 0x20;

    public static readonly IPAddress A4 = IPAddress.Parse("172.27.224.2");
    public static readonly IPAddress B4 = IPAddress.Parse("172.27.224.1");
    public static readonly IPAddress A6 = IPAddress.Parse("fd00::2");
    public static readonly IPAddress B6 = IPAddress.Parse("fd00::1");

    public sealed record Spec
    {
        public bool V6 { get; init; }
        public ushort SrcPort { get; init; } = 40000;
        public ushort DstPort { get; init; } = 5201;
        public uint Seq { get; init; } = 1000;
        public uint AckNo { get; init; } = 77;
        public byte Flags { get; init; } = Ack;
        public ushort Window { get; init; } = 500;
        public int Payload { get; init; } = 1000;
        public ushort IpId { get; init; } = 1;
        public byte Ttl { get; init; } = 64;
        public byte Tos { get; init; }
        public uint TsVal { get; init; } = 12345;
        public bool IpOptions { get; init; }
        public bool MoreFragments { get; init; }
        public bool BadChecksum { get; init; }
        public byte PayloadSeed { get; init; }
    }

    public static byte[] Build(Spec s)
    {
        int iphl = s.V6 ? 40 : s.IpOptions ? 24 : 20;
        const int thl = 32; // 12 bytes of options: NOP NOP timestamp, as Linux sends them
        var p = new byte[iphl + thl + s.Payload];
        if (s.V6)
        {
            p[0] = (byte)(0x60 | (s.Tos >> 4));
            p[1] = (byte)((s.Tos & 0x0F) << 4);
            BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(4), (ushort)(p.Length - 40));
            p[6] = 6;
            p[7] = s.Ttl;
            A6.GetAddressBytes().CopyTo(p, 8);
            B6.GetAddressBytes().CopyTo(p, 24);
        }
        else
        {
            p[0] = (byte)(0x40 | (iphl / 4));
            p[1] = s.Tos;
            BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(2), (ushort)p.Length);
            BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(4), s.IpId);
            BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(6), (ushort)(0x4000 | (s.MoreFragments ? 0x2000 : 0)));
            p[8] = s.Ttl;
            p[9] = 6;
            A4.GetAddressBytes().CopyTo(p, 12);
            B4.GetAddressBytes().CopyTo(p, 16);
            if (s.IpOptions)
            {
                p[20] = 1; // NOP x4
                p[21] = 1;
                p[22] = 1;
                p[23] = 1;
            }

            BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(10), NaiveChecksum(p.AsSpan(0, iphl), 0));
        }

        var t = p.AsSpan(iphl);
        BinaryPrimitives.WriteUInt16BigEndian(t, s.SrcPort);
        BinaryPrimitives.WriteUInt16BigEndian(t[2..], s.DstPort);
        BinaryPrimitives.WriteUInt32BigEndian(t[4..], s.Seq);
        BinaryPrimitives.WriteUInt32BigEndian(t[8..], s.AckNo);
        t[12] = thl / 4 << 4;
        t[13] = s.Flags;
        BinaryPrimitives.WriteUInt16BigEndian(t[14..], s.Window);
        t[20] = 1;
        t[21] = 1;
        t[22] = 8;
        t[23] = 10;
        BinaryPrimitives.WriteUInt32BigEndian(t[24..], s.TsVal);
        BinaryPrimitives.WriteUInt32BigEndian(t[28..], 999);
        for (int i = 0; i < s.Payload; i++)
        {
            t[thl + i] = (byte)((s.Seq + (uint)i) * 31 + s.PayloadSeed);
        }

        ushort c = TcpChecksum(p, iphl);
        BinaryPrimitives.WriteUInt16BigEndian(t[16..], (ushort)(s.BadChecksum ? c ^ 0x5A5A : c));
        return p;
    }

    /// <summary>Consecutive segments of one flow (IP ids and sequence numbers increasing).</summary>
    public static List<byte[]> Run(Spec first, int count, int lastPayload = -1, byte lastFlags = Ack | Psh)
    {
        var list = new List<byte[]>();
        uint seq = first.Seq;
        for (int i = 0; i < count; i++)
        {
            bool last = i == count - 1;
            var s = first with
            {
                Seq = seq,
                IpId = (ushort)(first.IpId + i),
                Payload = last && lastPayload >= 0 ? lastPayload : first.Payload,
                Flags = last ? lastFlags : first.Flags,
            };
            list.Add(Build(s));
            seq += (uint)s.Payload;
        }

        return list;
    }

    public static ushort NaiveSum(ReadOnlySpan<byte> d, uint acc)
    {
        for (int i = 0; i < d.Length; i += 2)
        {
            acc += (uint)(d[i] << 8 | (i + 1 < d.Length ? d[i + 1] : 0));
        }

        while (acc > 0xFFFF)
        {
            acc = (acc & 0xFFFF) + (acc >> 16);
        }

        return (ushort)acc;
    }

    public static ushort NaiveChecksum(ReadOnlySpan<byte> d, uint acc) => (ushort)~NaiveSum(d, acc);

    public static uint PseudoNaive(byte[] p, int iphl)
    {
        bool v6 = p[0] >> 4 == 6;
        var addrs = v6 ? p.AsSpan(8, 32) : p.AsSpan(12, 8);
        return NaiveSum(addrs, 0) + 6u + (uint)(p.Length - iphl);
    }

    /// <summary>Full TCP checksum of p with the checksum field taken as zero.</summary>
    public static ushort TcpChecksum(byte[] p, int iphl)
    {
        var seg = p.AsSpan(iphl).ToArray();
        seg[16] = 0;
        seg[17] = 0;
        return NaiveChecksum(seg, PseudoNaive(p, iphl));
    }

    public static bool TcpChecksumValid(byte[] p, int iphl) => NaiveSum(p.AsSpan(iphl), PseudoNaive(p, iphl)) == 0xFFFF;

    /// <summary>
    /// What the kernel does with a frame: no GSO = the packet as is; GSO = split the payload into
    /// gso_size pieces, each with the head's headers, IPv4 length/id/checksum and IPv6 payload
    /// length fixed, sequence number advanced, PSH only on the last piece, and the TCP checksum
    /// completed from the partial (pseudo-header) value the frame carries.
    /// </summary>
    public static List<byte[]> Resegment(byte[] frame)
    {
        var h = frame.AsSpan(0, VirtioNetHeader.Length);
        var ip = frame[VirtioNetHeader.Length..];
        if (VirtioNetHeader.GsoType(h) == VirtioNetHeader.GsoNone)
        {
            Assert.Equal(0, VirtioNetHeader.Flags(h));
            return [ip];
        }

        bool v6 = ip[0] >> 4 == 6;
        Assert.Equal(v6 ? VirtioNetHeader.GsoTcpV6 : VirtioNetHeader.GsoTcpV4, VirtioNetHeader.GsoType(h));
        Assert.Equal(VirtioNetHeader.FlagNeedsCsum, VirtioNetHeader.Flags(h));
        int iphl = v6 ? 40 : (ip[0] & 15) * 4;
        int thl = (ip[iphl + 12] >> 4) * 4;
        Assert.Equal(iphl, VirtioNetHeader.CsumStart(h));
        Assert.Equal(16, VirtioNetHeader.CsumOffset(h));
        Assert.Equal(iphl + thl, VirtioNetHeader.HdrLen(h));
        if (v6)
        {
            Assert.Equal(ip.Length - 40, BinaryPrimitives.ReadUInt16BigEndian(ip.AsSpan(4)));
        }
        else
        {
            Assert.Equal(ip.Length, BinaryPrimitives.ReadUInt16BigEndian(ip.AsSpan(2)));
            Assert.Equal(0xFFFF, NaiveSum(ip.AsSpan(0, iphl), 0)); // IPv4 header checksum verifies
        }

        // CHECKSUM_PARTIAL: the field must hold the (uncomplemented) pseudo-header sum of the
        // super-packet, so that summing from csum_start and complementing gives its real checksum.
        var superSeg = ip.AsSpan(iphl).ToArray();
        Assert.Equal(TcpChecksum(ip, iphl), (ushort)~NaiveSum(superSeg, 0));

        int mss = VirtioNetHeader.GsoSize(h);
        int payload = ip.Length - iphl - thl;
        Assert.True(payload > mss, "a GSO frame carries more than one segment");
        var result = new List<byte[]>();
        uint seq0 = BinaryPrimitives.ReadUInt32BigEndian(ip.AsSpan(iphl + 4));
        ushort id0 = BinaryPrimitives.ReadUInt16BigEndian(ip.AsSpan(4));
        byte flags = ip[iphl + 13];
        for (int off = 0, i = 0; off < payload; off += mss, i++)
        {
            int n = Math.Min(mss, payload - off);
            var seg = new byte[iphl + thl + n];
            ip.AsSpan(0, iphl + thl).CopyTo(seg);
            ip.AsSpan(iphl + thl + off, n).CopyTo(seg.AsSpan(iphl + thl));
            bool last = off + n == payload;
            seg[iphl + 13] = (byte)(last ? flags : flags & ~Psh);
            BinaryPrimitives.WriteUInt32BigEndian(seg.AsSpan(iphl + 4), seq0 + (uint)off);
            if (v6)
            {
                BinaryPrimitives.WriteUInt16BigEndian(seg.AsSpan(4), (ushort)(seg.Length - 40));
            }
            else
            {
                BinaryPrimitives.WriteUInt16BigEndian(seg.AsSpan(2), (ushort)seg.Length);
                BinaryPrimitives.WriteUInt16BigEndian(seg.AsSpan(4), (ushort)(id0 + i));
                seg[10] = 0;
                seg[11] = 0;
                BinaryPrimitives.WriteUInt16BigEndian(seg.AsSpan(10), NaiveChecksum(seg.AsSpan(0, iphl), 0));
            }

            BinaryPrimitives.WriteUInt16BigEndian(seg.AsSpan(iphl + 16), TcpChecksum(seg, iphl));
            result.Add(seg);
        }

        return result;
    }
}

internal sealed class RecordingSink : IVnetFrameSink
{
    public List<byte[]> Frames { get; } = [];

    public void WriteFrame(ReadOnlySpan<byte> frame) => Frames.Add(frame.ToArray());

    public List<byte[]> Packets() => Frames.SelectMany(Tcp.Resegment).ToList();
}

public sealed class TcpCoalescerTests
{
    private static RecordingSink Feed(IEnumerable<byte[]> packets, int maxFlows = 8)
    {
        var c = new TcpCoalescer(maxFlows);
        var sink = new RecordingSink();
        foreach (var p in packets)
        {
            c.Add(p, sink);
        }

        c.Flush(sink);
        Assert.Equal(0, c.HeldSegments);
        return sink;
    }

    private static void AssertSamePackets(IReadOnlyList<byte[]> expected, IReadOnlyList<byte[]> actual)
    {
        Assert.Equal(expected.Count, actual.Count);
        for (int i = 0; i < expected.Count; i++)
        {
            Assert.True(expected[i].AsSpan().SequenceEqual(actual[i]), $"packet {i} differs after re-segmentation");
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Consecutive_segments_become_one_gso_frame_that_resegments_to_the_originals(bool v6)
    {
        var input = Tcp.Run(new Tcp.Spec { V6 = v6, Payload = 1448 }, 20, lastPayload: 300);
        var sink = Feed(input);

        var frame = Assert.Single(sink.Frames);
        Assert.Equal(1448, VirtioNetHeader.GsoSize(frame));
        Assert.Equal(VirtioNetHeader.Length + (v6 ? 40 : 20) + 32 + 19 * 1448 + 300, frame.Length);
        // PSH of the last segment is on the super-packet.
        Assert.Equal(Tcp.Ack | Tcp.Psh, frame[VirtioNetHeader.Length + (v6 ? 40 : 20) + 13]);
        AssertSamePackets(input, sink.Packets());
    }

    [Fact]
    public void A_single_segment_goes_out_unchanged_with_a_zero_header()
    {
        var p = Tcp.Build(new Tcp.Spec());
        var sink = Feed([p]);
        var frame = Assert.Single(sink.Frames);
        Assert.True(frame.AsSpan(0, VirtioNetHeader.Length).IndexOfAnyExcept((byte)0) < 0);
        Assert.True(frame.AsSpan(VirtioNetHeader.Length).SequenceEqual(p));
    }

    [Fact]
    public void A_gap_in_sequence_numbers_starts_a_new_frame()
    {
        var a = Tcp.Run(new Tcp.Spec { Seq = 1000 }, 3, lastFlags: Tcp.Ack);
        var b = Tcp.Run(new Tcp.Spec { Seq = 1000 + 3000 + 500, IpId = 4 }, 3);
        var sink = Feed([.. a, .. b]);
        Assert.Equal(2, sink.Frames.Count);
        AssertSamePackets([.. a, .. b], sink.Packets());
    }

    [Fact]
    public void Interleaved_flows_are_merged_separately_and_each_keeps_its_order()
    {
        var f1 = Tcp.Run(new Tcp.Spec { SrcPort = 1111 }, 4);
        var f2 = Tcp.Run(new Tcp.Spec { SrcPort = 2222, Seq = 9_000_000 }, 4);
        var mixed = new List<byte[]>();
        for (int i = 0; i < 4; i++)
        {
            mixed.Add(f1[i]);
            mixed.Add(f2[i]);
        }

        var sink = Feed(mixed);
        Assert.Equal(2, sink.Frames.Count);
        var outp = sink.Packets();
        AssertSamePackets(f1, outp.Where(p => BinaryPrimitives.ReadUInt16BigEndian(p.AsSpan(20)) == 1111).ToList());
        AssertSamePackets(f2, outp.Where(p => BinaryPrimitives.ReadUInt16BigEndian(p.AsSpan(20)) == 2222).ToList());
    }

    [Theory]
    [InlineData(Tcp.Ack | Tcp.Fin)]
    [InlineData(Tcp.Ack | Tcp.Rst)]
    [InlineData(Tcp.Syn)]
    [InlineData(Tcp.Ack | Tcp.Urg)]
    public void Control_flags_are_not_merged_and_do_not_overtake_held_segments(byte flags)
    {
        var held = Tcp.Run(new Tcp.Spec(), 3, lastFlags: Tcp.Ack);
        var special = Tcp.Build(new Tcp.Spec { Seq = 1000 + 3000, IpId = 4, Flags = flags });
        var after = Tcp.Build(new Tcp.Spec { Seq = 1000 + 4000, IpId = 5 });
        var sink = Feed([.. held, special, after]);
        Assert.Equal(3, sink.Frames.Count); // the held three, the special one alone, the next alone
        Assert.Equal(VirtioNetHeader.GsoNone, VirtioNetHeader.GsoType(sink.Frames[1]));
        AssertSamePackets([.. held, special, after], sink.Packets());
    }

    [Fact]
    public void Psh_closes_the_frame_a_later_segment_starts_another()
    {
        var first = Tcp.Run(new Tcp.Spec(), 3, lastFlags: Tcp.Ack | Tcp.Psh);
        var second = Tcp.Run(new Tcp.Spec { Seq = 4000, IpId = 4 }, 3);
        var sink = Feed([.. first, .. second]);
        Assert.Equal(2, sink.Frames.Count);
        AssertSamePackets([.. first, .. second], sink.Packets());
    }

    [Fact]
    public void Ip_options_and_fragments_are_written_alone()
    {
        var opts = Tcp.Run(new Tcp.Spec { IpOptions = true }, 3, lastFlags: Tcp.Ack);
        var frags = Tcp.Run(new Tcp.Spec { MoreFragments = true, SrcPort = 3333 }, 3, lastFlags: Tcp.Ack);
        var sink = Feed([.. opts, .. frags]);
        Assert.Equal(6, sink.Frames.Count);
        Assert.All(sink.Frames, f => Assert.Equal(VirtioNetHeader.GsoNone, VirtioNetHeader.GsoType(f)));
        AssertSamePackets([.. opts, .. frags], sink.Packets());
    }

    public static TheoryData<string> HeaderMismatches => new() { "ack", "window", "ttl", "tos", "tsval", "bigger" };

    [Theory]
    [MemberData(nameof(HeaderMismatches))]
    public void A_segment_whose_headers_differ_is_not_appended(string what)
    {
        var a = Tcp.Build(new Tcp.Spec { Seq = 1000 });
        var b = Tcp.Build(new Tcp.Spec { Seq = 2000, IpId = 2 });
        var spec = new Tcp.Spec { Seq = 3000, IpId = 3 };
        spec = what switch
        {
            "ack" => spec with { AckNo = 78 },
            "window" => spec with { Window = 501 },
            "ttl" => spec with { Ttl = 63 },
            "tos" => spec with { Tos = 0x03 },
            "tsval" => spec with { TsVal = 12346 },
            "bigger" => spec with { Payload = 1001 },
            _ => throw new ArgumentException(what),
        };
        var c = Tcp.Build(spec);
        var sink = Feed([a, b, c]);
        Assert.Equal(2, sink.Frames.Count);
        Assert.Equal(VirtioNetHeader.GsoTcpV4, VirtioNetHeader.GsoType(sink.Frames[0]));
        AssertSamePackets([a, b, c], sink.Packets());
    }

    [Fact]
    public void Nothing_follows_a_shorter_segment()
    {
        var a = Tcp.Build(new Tcp.Spec { Seq = 1000 });
        var b = Tcp.Build(new Tcp.Spec { Seq = 2000, IpId = 2, Payload = 500 });
        var c = Tcp.Build(new Tcp.Spec { Seq = 2500, IpId = 3, Payload = 500 });
        var sink = Feed([a, b, c]);
        Assert.Equal(2, sink.Frames.Count);
        AssertSamePackets([a, b, c], sink.Packets());
    }

    [Fact]
    public void A_bad_checksum_segment_is_not_merged_and_the_kernel_gets_it_as_is()
    {
        var a = Tcp.Build(new Tcp.Spec { Seq = 1000 });
        var bad = Tcp.Build(new Tcp.Spec { Seq = 2000, IpId = 2, BadChecksum = true });
        var sink = Feed([a, bad]);
        Assert.Equal(2, sink.Frames.Count);
        Assert.All(sink.Frames, f => Assert.Equal(VirtioNetHeader.GsoNone, VirtioNetHeader.GsoType(f)));
        Assert.True(sink.Frames[1].AsSpan(VirtioNetHeader.Length).SequenceEqual(bad));
        Assert.False(Tcp.TcpChecksumValid(sink.Frames[1][VirtioNetHeader.Length..], 20));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Super_packets_never_exceed_64_KiB(bool v6)
    {
        var input = Tcp.Run(new Tcp.Spec { V6 = v6, Payload = 1448 }, 100);
        var sink = Feed(input);
        Assert.True(sink.Frames.Count >= 3, $"{sink.Frames.Count} frames");
        Assert.All(sink.Frames, f => Assert.True(f.Length - VirtioNetHeader.Length <= 65535, $"{f.Length}"));
        AssertSamePackets(input, sink.Packets());
    }

    [Fact]
    public void Other_traffic_between_the_same_hosts_flushes_the_held_flow_first()
    {
        var held = Tcp.Run(new Tcp.Spec(), 3, lastFlags: Tcp.Ack);
        var udp = Packets.Ipv4(Tcp.B4, Tcp.A4, 7, 100); // the reverse direction, not TCP
        var other = Packets.Ipv4(IPAddress.Parse("10.9.9.9"), IPAddress.Parse("10.9.9.8"), 8, 100);
        var c = new TcpCoalescer();
        var sink = new RecordingSink();
        foreach (var p in held)
        {
            c.Add(p, sink);
        }

        c.Add(other, sink);
        Assert.Single(sink.Frames); // unrelated hosts: the flow stays held
        Assert.Equal(3, c.HeldSegments);
        c.Add(udp, sink);
        Assert.Equal(3, sink.Frames.Count); // the flow's frame, then the packet
        Assert.Equal(VirtioNetHeader.GsoTcpV4, VirtioNetHeader.GsoType(sink.Frames[1]));
        Assert.True(sink.Frames[2].AsSpan(VirtioNetHeader.Length).SequenceEqual(udp));
        c.Flush(sink);
        Assert.Equal(3, sink.Frames.Count);
    }

    [Fact]
    public void More_flows_than_slots_evicts_the_oldest_and_keeps_per_flow_order()
    {
        var flows = Enumerable.Range(0, 5).Select(f => Tcp.Run(new Tcp.Spec { SrcPort = (ushort)(2000 + f) }, 3, lastFlags: Tcp.Ack)).ToList();
        var mixed = new List<byte[]>();
        for (int i = 0; i < 3; i++)
        {
            foreach (var f in flows)
            {
                mixed.Add(f[i]);
            }
        }

        var outp = Feed(mixed, maxFlows: 2).Packets();
        Assert.Equal(15, outp.Count);
        for (int f = 0; f < 5; f++)
        {
            AssertSamePackets(flows[f], outp.Where(p => BinaryPrimitives.ReadUInt16BigEndian(p.AsSpan(20)) == 2000 + f).ToList());
        }
    }

    [Fact]
    public void Pure_acks_and_non_ip_pass_through_alone()
    {
        var ack = Tcp.Build(new Tcp.Spec { Payload = 0 });
        var junk = new byte[] { 0x00, 1, 2, 3 };
        var sink = Feed([ack, ack, junk]);
        Assert.Equal(3, sink.Frames.Count);
        Assert.True(sink.Frames[2].AsSpan(VirtioNetHeader.Length).SequenceEqual(junk));
    }

    [Fact]
    public void Internet_checksum_matches_a_naive_sum_for_every_length_and_offset()
    {
        var rnd = new Random(42);
        var data = new byte[1800];
        rnd.NextBytes(data);
        for (int off = 0; off < 9; off++)
        {
            for (int len = 0; len < 1600; len += len < 200 ? 1 : 37)
            {
                var span = data.AsSpan(off, len);
                Assert.Equal(Tcp.NaiveSum(span, 0), InternetChecksum.Sum(span));
            }
        }
    }

    [Fact]
    public void Adding_and_flushing_does_not_allocate()
    {
        var input = Tcp.Run(new Tcp.Spec { Payload = 1400 }, 40);
        var c = new TcpCoalescer();
        var sink = new CountingSink();
        for (int round = 0; round < 3; round++)
        {
            foreach (var p in input)
            {
                c.Add(p, sink);
            }

            c.Flush(sink);
        }

        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int round = 0; round < 50; round++)
        {
            foreach (var p in input)
            {
                c.Add(p, sink);
            }

            c.Flush(sink);
        }

        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
        Assert.Equal(53, sink.Frames);
    }

    private sealed class CountingSink : IVnetFrameSink
    {
        public int Frames;

        public void WriteFrame(ReadOnlySpan<byte> frame) => Frames++;
    }
}
