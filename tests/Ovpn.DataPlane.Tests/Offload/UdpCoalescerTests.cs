// SPDX-License-Identifier: MIT
using System.Buffers.Binary;
using Ovpn.DataPlane.Offload;

namespace Ovpn.DataPlane.Tests.Offload;

/// <summary>Builds UDP/IP datagrams with checksums from the naive byte-wise sum of <see cref="Tcp"/>
/// (independent of <see cref="InternetChecksum"/>) and re-segments UDP GSO frames as the kernel's
/// __udp_gso_segment does.</summary>
internal static class Udp
{
    public sealed record Spec
    {
        public bool V6 { get; init; }
        public ushort SrcPort { get; init; } = 40000;
        public ushort DstPort { get; init; } = 9;
        public int Payload { get; init; } = 1372;
        public ushort IpId { get; init; } = 1;
        public bool Df { get; init; } = true;
        public byte Ttl { get; init; } = 64;
        public byte Tos { get; init; }
        public bool IpOptions { get; init; }
        public bool MoreFragments { get; init; }
        public ushort FragmentOffset { get; init; }
        public bool BadChecksum { get; init; }
        public bool ZeroChecksum { get; init; }

        /// <summary>Extra bytes after the UDP datagram inside the IP packet (UDP length &lt; IP payload).</summary>
        public int Padding { get; init; }
        public byte PayloadSeed { get; init; }
    }

    public static byte[] Build(Spec s)
    {
        int iphl = s.V6 ? 40 : s.IpOptions ? 24 : 20;
        int udpLength = 8 + s.Payload;
        var p = new byte[iphl + udpLength + s.Padding];
        if (s.V6)
        {
            p[0] = (byte)(0x60 | (s.Tos >> 4));
            p[1] = (byte)((s.Tos & 0x0F) << 4);
            BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(4), (ushort)(p.Length - 40));
            p[6] = 17;
            p[7] = s.Ttl;
            Tcp.A6.GetAddressBytes().CopyTo(p, 8);
            Tcp.B6.GetAddressBytes().CopyTo(p, 24);
        }
        else
        {
            p[0] = (byte)(0x40 | (iphl / 4));
            p[1] = s.Tos;
            BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(2), (ushort)p.Length);
            BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(4), s.IpId);
            BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(6), (ushort)((s.Df ? 0x4000 : 0) | (s.MoreFragments ? 0x2000 : 0) | s.FragmentOffset));
            p[8] = s.Ttl;
            p[9] = 17;
            Tcp.A4.GetAddressBytes().CopyTo(p, 12);
            Tcp.B4.GetAddressBytes().CopyTo(p, 16);
            if (s.IpOptions)
            {
                p[20] = 1; // NOP x4
                p[21] = 1;
                p[22] = 1;
                p[23] = 1;
            }

            BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(10), Tcp.NaiveChecksum(p.AsSpan(0, iphl), 0));
        }

        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(iphl), s.SrcPort);
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(iphl + 2), s.DstPort);
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(iphl + 4), (ushort)udpLength);
        for (int i = 0; i < s.Payload; i++)
        {
            p[iphl + 8 + i] = (byte)(s.PayloadSeed + i * 7);
        }

        if (!s.ZeroChecksum)
        {
            ushort c = UdpChecksum(p, iphl, udpLength);
            if (s.BadChecksum)
            {
                c ^= 0x0101;
            }

            BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(iphl + 6), c);
        }

        return p;
    }

    /// <summary>count datagrams of one flow, IPv4 IDs counting up, payload seeds differing; the last
    /// one's payload is <paramref name="lastPayload"/> if given.</summary>
    public static List<byte[]> Run(Spec first, int count, int lastPayload = -1)
    {
        var list = new List<byte[]>();
        for (int i = 0; i < count; i++)
        {
            list.Add(Build(first with
            {
                IpId = (ushort)(first.IpId + i),
                PayloadSeed = (byte)(first.PayloadSeed + i * 13),
                Payload = i == count - 1 && lastPayload >= 0 ? lastPayload : first.Payload,
            }));
        }

        return list;
    }

    /// <summary>Full UDP checksum of the datagram at iphl (field taken as zero; 0 sent as 0xFFFF).</summary>
    public static ushort UdpChecksum(byte[] p, int iphl, int udpLength)
    {
        var seg = p.AsSpan(iphl, udpLength).ToArray();
        seg[6] = 0;
        seg[7] = 0;
        ushort c = Tcp.NaiveChecksum(seg, Pseudo(p, iphl, udpLength));
        return c == 0 ? (ushort)0xFFFF : c;
    }

    private static uint Pseudo(byte[] p, int iphl, int udpLength)
    {
        bool v6 = p[0] >> 4 == 6;
        var addrs = v6 ? p.AsSpan(8, 32) : p.AsSpan(12, 8);
        return Tcp.NaiveSum(addrs, 0) + 17u + (uint)udpLength;
    }

    /// <summary>
    /// What the kernel does with a frame: no GSO = the packet as is; UDP_L4 = split the payload into
    /// gso_size pieces, each with the head's headers, UDP length set, the UDP checksum completed
    /// from the partial (pseudo-header) value the frame carries, IPv4 total length, id (first + i)
    /// and header checksum, or IPv6 payload length, fixed.
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
        Assert.Equal(VirtioNetHeader.GsoUdpL4, VirtioNetHeader.GsoType(h));
        Assert.Equal(VirtioNetHeader.FlagNeedsCsum, VirtioNetHeader.Flags(h));
        int iphl = v6 ? 40 : (ip[0] & 15) * 4;
        Assert.Equal(iphl, VirtioNetHeader.CsumStart(h));
        Assert.Equal(6, VirtioNetHeader.CsumOffset(h));
        Assert.Equal(iphl + 8, VirtioNetHeader.HdrLen(h));
        int udpLength = ip.Length - iphl;
        Assert.Equal(udpLength, BinaryPrimitives.ReadUInt16BigEndian(ip.AsSpan(iphl + 4)));
        if (v6)
        {
            Assert.Equal(ip.Length - 40, BinaryPrimitives.ReadUInt16BigEndian(ip.AsSpan(4)));
        }
        else
        {
            Assert.Equal(ip.Length, BinaryPrimitives.ReadUInt16BigEndian(ip.AsSpan(2)));
            Assert.Equal(0xFFFF, Tcp.NaiveSum(ip.AsSpan(0, iphl), 0));
        }

        // CHECKSUM_PARTIAL: the field holds the uncomplemented pseudo-header sum over the whole UDP length.
        Assert.Equal(Tcp.NaiveSum([], Pseudo(ip, iphl, udpLength)), BinaryPrimitives.ReadUInt16BigEndian(ip.AsSpan(iphl + 6)));

        int mss = VirtioNetHeader.GsoSize(h);
        int payload = udpLength - 8;
        Assert.True(payload > mss, "a GSO frame carries more than one datagram");
        Assert.True((payload + mss - 1) / mss <= UdpCoalescer.MaxSegments);
        var result = new List<byte[]>();
        ushort id0 = BinaryPrimitives.ReadUInt16BigEndian(ip.AsSpan(4));
        for (int off = 0, i = 0; off < payload; off += mss, i++)
        {
            int n = Math.Min(mss, payload - off);
            var seg = new byte[iphl + 8 + n];
            ip.AsSpan(0, iphl + 8).CopyTo(seg);
            ip.AsSpan(iphl + 8 + off, n).CopyTo(seg.AsSpan(iphl + 8));
            BinaryPrimitives.WriteUInt16BigEndian(seg.AsSpan(iphl + 4), (ushort)(8 + n));
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
                BinaryPrimitives.WriteUInt16BigEndian(seg.AsSpan(10), Tcp.NaiveChecksum(seg.AsSpan(0, iphl), 0));
            }

            BinaryPrimitives.WriteUInt16BigEndian(seg.AsSpan(iphl + 6), UdpChecksum(seg, iphl, 8 + n));
            result.Add(seg);
        }

        return result;
    }

    /// <summary>Re-segments frames of either protocol.</summary>
    public static List<byte[]> Packets(RecordingSink sink) =>
        sink.Frames.SelectMany(f => VirtioNetHeader.GsoType(f) == VirtioNetHeader.GsoUdpL4 ? Resegment(f) : Tcp.Resegment(f)).ToList();
}

public sealed class UdpCoalescerTests
{
    private static RecordingSink Feed(IEnumerable<byte[]> packets, bool udp = true)
    {
        var c = new TunCoalescer(udp);
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

    private static bool IsGso(byte[] frame) => VirtioNetHeader.GsoType(frame) != VirtioNetHeader.GsoNone;

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Consecutive_datagrams_become_one_uso_frame_that_resegments_to_the_originals(bool v6)
    {
        var input = Udp.Run(new Udp.Spec { V6 = v6, Payload = 1372 }, 32, lastPayload: 100);
        var sink = Feed(input);

        var frame = Assert.Single(sink.Frames);
        Assert.Equal(1372, VirtioNetHeader.GsoSize(frame));
        Assert.Equal(VirtioNetHeader.Length + (v6 ? 40 : 20) + 8 + 31 * 1372 + 100, frame.Length);
        AssertSamePackets(input, Udp.Packets(sink));
    }

    [Fact]
    public void A_single_datagram_goes_out_unchanged_with_a_zero_header()
    {
        var p = Udp.Build(new Udp.Spec());
        var sink = Feed([p]);
        var frame = Assert.Single(sink.Frames);
        Assert.True(frame.AsSpan(0, VirtioNetHeader.Length).IndexOfAnyExcept((byte)0) < 0);
        Assert.True(frame.AsSpan(VirtioNetHeader.Length).SequenceEqual(p));
    }

    [Fact]
    public void Interleaved_flows_are_merged_separately_and_each_keeps_its_order()
    {
        var a = Udp.Run(new Udp.Spec { SrcPort = 1000 }, 6);
        var b = Udp.Run(new Udp.Spec { SrcPort = 2000, IpId = 500 }, 6);
        var c = Udp.Run(new Udp.Spec { V6 = true, DstPort = 53 }, 6);
        var mixed = new List<byte[]>();
        for (int i = 0; i < 6; i++)
        {
            mixed.Add(a[i]);
            mixed.Add(b[i]);
            mixed.Add(c[i]);
        }

        var sink = Feed(mixed);
        Assert.Equal(3, sink.Frames.Count);
        Assert.All(sink.Frames, f => Assert.True(IsGso(f)));
        var all = Udp.Packets(sink);
        AssertSamePackets([.. a, .. b, .. c], all);
    }

    [Fact]
    public void A_larger_datagram_after_a_smaller_one_starts_a_new_frame_and_nothing_follows_a_shorter_one()
    {
        var small = Udp.Run(new Udp.Spec { Payload = 500 }, 3);
        var big = Udp.Run(new Udp.Spec { Payload = 900, IpId = 4 }, 3, lastPayload: 200);
        var after = Udp.Run(new Udp.Spec { Payload = 200, IpId = 7 }, 2);
        var sink = Feed([.. small, .. big, .. after]);
        // 500x3 | 900,900,200 | 200,200 (the second 200 may not follow the shorter 200 of frame 2).
        Assert.Equal(3, sink.Frames.Count);
        Assert.Equal(500, VirtioNetHeader.GsoSize(sink.Frames[0]));
        Assert.Equal(900, VirtioNetHeader.GsoSize(sink.Frames[1]));
        Assert.Equal(200, VirtioNetHeader.GsoSize(sink.Frames[2]));
        AssertSamePackets([.. small, .. big, .. after], Udp.Packets(sink));
    }

    public static TheoryData<string> HeaderMismatches => new() { "ttl", "tos", "df", "id-gap", "dst-port", "v6-hop", "v6-class" };

    [Theory]
    [MemberData(nameof(HeaderMismatches))]
    public void A_datagram_whose_headers_differ_is_not_appended(string what)
    {
        bool v6 = what.StartsWith("v6", StringComparison.Ordinal);
        var first = Udp.Build(new Udp.Spec { V6 = v6, IpId = 10 });
        var second = Udp.Build(what switch
        {
            "ttl" => new Udp.Spec { IpId = 11, Ttl = 63 },
            "tos" => new Udp.Spec { IpId = 11, Tos = 0x10 },
            "df" => new Udp.Spec { IpId = 11, Df = false },
            "id-gap" => new Udp.Spec { IpId = 13 },
            "dst-port" => new Udp.Spec { IpId = 11, DstPort = 10 },
            "v6-hop" => new Udp.Spec { V6 = true, Ttl = 1 },
            "v6-class" => new Udp.Spec { V6 = true, Tos = 0x20 },
            _ => throw new ArgumentException(what),
        });
        var sink = Feed([first, second]);
        Assert.Equal(2, sink.Frames.Count);
        Assert.All(sink.Frames, f => Assert.False(IsGso(f)));
        AssertSamePackets([first, second], Udp.Packets(sink));
    }

    [Fact]
    public void A_fixed_id_with_df_merges_and_resegments_with_counting_ids()
    {
        var input = Enumerable.Range(0, 5).Select(i => Udp.Build(new Udp.Spec { IpId = 0, PayloadSeed = (byte)i })).ToList();
        var sink = Feed(input);
        Assert.True(IsGso(Assert.Single(sink.Frames)));
        var output = Udp.Packets(sink);
        Assert.Equal(5, output.Count);
        for (int i = 0; i < 5; i++)
        {
            // RFC 6864 atomic datagrams: only the identification (and so the header checksum) may change.
            Assert.Equal(i, BinaryPrimitives.ReadUInt16BigEndian(output[i].AsSpan(4)));
            Assert.True(input[i].AsSpan(0, 4).SequenceEqual(output[i].AsSpan(0, 4)));
            Assert.True(input[i].AsSpan(6, 4).SequenceEqual(output[i].AsSpan(6, 4)));
            Assert.True(input[i].AsSpan(12).SequenceEqual(output[i].AsSpan(12)));
        }

        // Without DF a fixed id is not merged.
        var noDf = Enumerable.Range(0, 3).Select(i => Udp.Build(new Udp.Spec { IpId = 0, Df = false, PayloadSeed = (byte)i })).ToList();
        Assert.Equal(3, Feed(noDf).Frames.Count);
    }

    [Theory]
    [InlineData("options")]
    [InlineData("more-fragments")]
    [InlineData("fragment-offset")]
    [InlineData("padding")]
    [InlineData("empty")]
    public void Ip_options_fragments_padded_and_empty_datagrams_are_written_alone(string what)
    {
        var run = Udp.Run(new Udp.Spec(), 3);
        var odd = Udp.Build(what switch
        {
            "options" => new Udp.Spec { IpId = 4, IpOptions = true },
            "more-fragments" => new Udp.Spec { IpId = 4, MoreFragments = true },
            "fragment-offset" => new Udp.Spec { IpId = 4, FragmentOffset = 100 },
            "padding" => new Udp.Spec { IpId = 4, Padding = 6 },
            "empty" => new Udp.Spec { IpId = 4, Payload = 0 },
            _ => throw new ArgumentException(what),
        });
        var tail = Udp.Run(new Udp.Spec { IpId = 5 }, 3);
        var sink = Feed([.. run, odd, .. tail]);
        // The odd packet flushes the held run first (same hosts), then goes alone, then a new frame.
        Assert.Equal(3, sink.Frames.Count);
        Assert.True(IsGso(sink.Frames[0]));
        Assert.False(IsGso(sink.Frames[1]));
        Assert.True(sink.Frames[1].AsSpan(VirtioNetHeader.Length).SequenceEqual(odd));
        Assert.True(IsGso(sink.Frames[2]));
        AssertSamePackets([.. run, odd, .. tail], Udp.Packets(sink));
    }

    [Fact]
    public void A_bad_checksum_datagram_is_not_merged_and_the_kernel_gets_it_as_is()
    {
        var run = Udp.Run(new Udp.Spec(), 4);
        var bad = Udp.Build(new Udp.Spec { IpId = 5, BadChecksum = true });
        var sink = Feed([.. run, bad]);
        Assert.Equal(2, sink.Frames.Count);
        Assert.True(IsGso(sink.Frames[0]));
        Assert.True(sink.Frames[1].AsSpan(VirtioNetHeader.Length).SequenceEqual(bad));
        AssertSamePackets([.. run, bad], Udp.Packets(sink));
    }

    [Fact]
    public void Zero_checksum_datagrams_are_written_alone_with_their_zero_checksum()
    {
        var zero = Enumerable.Range(0, 3).Select(i => Udp.Build(new Udp.Spec { IpId = (ushort)(1 + i), ZeroChecksum = true })).ToList();
        var sink = Feed(zero);
        Assert.Equal(3, sink.Frames.Count);
        Assert.All(sink.Frames, f => Assert.False(IsGso(f)));
        Assert.All(sink.Frames, f => Assert.Equal(0, BinaryPrimitives.ReadUInt16BigEndian(f.AsSpan(VirtioNetHeader.Length + 26))));
        AssertSamePackets(zero, Udp.Packets(sink));
    }

    [Fact]
    public void Frames_hold_at_most_64_datagrams()
    {
        var input = Udp.Run(new Udp.Spec { Payload = 100 }, 150);
        var sink = Feed(input);
        Assert.Equal(3, sink.Frames.Count);
        Assert.Equal(20 + 8 + 64 * 100, sink.Frames[0].Length - VirtioNetHeader.Length);
        Assert.Equal(20 + 8 + 22 * 100, sink.Frames[2].Length - VirtioNetHeader.Length);
        AssertSamePackets(input, Udp.Packets(sink));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Frames_never_exceed_64_KiB(bool v6)
    {
        var input = Udp.Run(new Udp.Spec { V6 = v6, Payload = 1400 }, 60);
        var sink = Feed(input);
        Assert.True(sink.Frames.Count >= 2);
        Assert.All(sink.Frames, f => Assert.True(f.Length - VirtioNetHeader.Length <= UdpCoalescer.MaxIpPacket));
        // As many as fit: (65535 - headers) / 1400.
        Assert.Equal((65535 - (v6 ? 48 : 28)) / 1400 * 1400 + (v6 ? 48 : 28), sink.Frames[0].Length - VirtioNetHeader.Length);
        AssertSamePackets(input, Udp.Packets(sink));
    }

    [Fact]
    public void Tcp_and_icmp_between_the_same_hosts_do_not_overtake_held_datagrams()
    {
        var run = Udp.Run(new Udp.Spec(), 4);
        // An ICMP port unreachable the other way between the same two hosts.
        var icmp = new byte[28];
        icmp[0] = 0x45;
        BinaryPrimitives.WriteUInt16BigEndian(icmp.AsSpan(2), 28);
        icmp[8] = 64;
        icmp[9] = 1;
        Tcp.B4.GetAddressBytes().CopyTo(icmp, 12);
        Tcp.A4.GetAddressBytes().CopyTo(icmp, 16);
        icmp[20] = 3;
        icmp[21] = 3;
        var tcp = Tcp.Run(new Tcp.Spec(), 3);
        var sink = Feed([.. run, icmp, .. tcp]);
        Assert.Equal(3, sink.Frames.Count);
        Assert.Equal(VirtioNetHeader.GsoUdpL4, VirtioNetHeader.GsoType(sink.Frames[0]));
        Assert.True(sink.Frames[1].AsSpan(VirtioNetHeader.Length).SequenceEqual(icmp));
        Assert.Equal(VirtioNetHeader.GsoTcpV4, VirtioNetHeader.GsoType(sink.Frames[2]));
        AssertSamePackets([.. run, icmp, .. tcp], Udp.Packets(sink));
    }

    [Fact]
    public void Without_udp_gso_datagrams_are_written_one_by_one()
    {
        var input = Udp.Run(new Udp.Spec(), 5);
        var sink = Feed(input, udp: false);
        Assert.Equal(5, sink.Frames.Count);
        Assert.All(sink.Frames, f => Assert.False(IsGso(f)));
        AssertSamePackets(input, Udp.Packets(sink));
    }

    [Fact]
    public void More_flows_than_slots_evicts_the_oldest_and_keeps_per_flow_order()
    {
        var flows = Enumerable.Range(0, 12).Select(f => Udp.Run(new Udp.Spec { SrcPort = (ushort)(1000 + f), IpId = (ushort)(f * 100) }, 3)).ToList();
        var mixed = new List<byte[]>();
        for (int i = 0; i < 3; i++)
        {
            foreach (var f in flows)
            {
                mixed.Add(f[i]);
            }
        }

        var c = new UdpCoalescer(maxFlows: 4);
        var sink = new RecordingSink();
        foreach (var p in mixed)
        {
            Assert.True(c.TryAdd(p, sink));
        }

        c.Flush(sink);
        var output = Udp.Packets(sink);
        Assert.Equal(mixed.Count, output.Count);
        foreach (var f in flows)
        {
            ushort port = BinaryPrimitives.ReadUInt16BigEndian(f[0].AsSpan(20));
            var got = output.Where(p => BinaryPrimitives.ReadUInt16BigEndian(p.AsSpan(20)) == port).ToList();
            AssertSamePackets(f, got);
        }
    }

    [Fact]
    public void Adding_and_flushing_does_not_allocate()
    {
        var input = Udp.Run(new Udp.Spec { Payload = 1372 }, 40);
        var c = new TunCoalescer(udp: true);
        var sink = new NullSink();
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
        Assert.Equal(53 * 40, c.SegmentsCoalesced);
    }

    [Fact]
    public void Internet_checksum_of_all_ones_and_all_zeros_keeps_ones_complement_semantics()
    {
        // The vector path sums exactly and folds at the end: 0xFFFF words must give 0xFFFF, zeros 0.
        foreach (int len in new[] { 64, 96, 1400, 65535 })
        {
            var ones = new byte[len];
            Array.Fill(ones, (byte)0xFF);
            Assert.Equal(Tcp.NaiveSum(ones, 0), InternetChecksum.Sum(ones));
            Assert.Equal(0, InternetChecksum.Sum(new byte[len]));
        }
    }

    private sealed class NullSink : IVnetFrameSink
    {
        public int Frames;

        public void WriteFrame(ReadOnlySpan<byte> frame) => Frames++;
    }
}
