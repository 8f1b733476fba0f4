// SPDX-License-Identifier: MIT
using System.Buffers.Binary;
using System.Collections.Concurrent;
using Ovpn.DataPlane.Offload;
using Ovpn.DataPlane.Transport;
using Ovpn.Protocol.Keys;

namespace Ovpn.DataPlane.Tests.Offload;

/// <summary>Read-side TSO: <see cref="TcpSegmenter"/> against packets built independently by <see cref="Tcp"/>.</summary>
public sealed class TcpSegmenterTests
{
    private const byte Cwr = 0x80, Ece = 0x40;

    /// <summary>A TUN frame as the kernel hands it out with TSO on: NEEDS_CSUM, csum field = a
    /// partial sum (here deliberately wrong, the segmenter must not trust it).</summary>
    internal static byte[] Frame(byte[] ip, byte gsoType, int mss, byte flags = VirtioNetHeader.FlagNeedsCsum)
    {
        bool v6 = ip[0] >> 4 == 6;
        int iphl = v6 ? 40 : (ip[0] & 15) * 4;
        var f = new byte[VirtioNetHeader.Length + ip.Length];
        VirtioNetHeader.Write(f, flags, gsoType, (ushort)(iphl + 32), (ushort)mss, (ushort)iphl, 16);
        ip.CopyTo(f, VirtioNetHeader.Length);
        f[VirtioNetHeader.Length + iphl + 16] ^= 0x5A;
        return f;
    }

    private static List<byte[]> Segment(byte[] frame)
    {
        Assert.True(TcpSegmenter.TryPlan(frame, out var plan, out var err), $"refused: {err}");
        Assert.Equal(TunFrameError.None, err);
        var list = new List<byte[]>();
        var dst = new byte[2048];
        for (int i = 0; i < plan.Count; i++)
        {
            int n = TcpSegmenter.WriteSegment(in plan, frame, i, dst);
            Assert.InRange(n, 1, plan.MaxSegmentLength);
            list.Add(dst[..n]);
        }

        return list;
    }

    [Theory]
    [InlineData(false, false, 10000, 1448)]
    [InlineData(false, true, 10000, 1448)]
    [InlineData(false, false, 64000, 1448)]
    [InlineData(false, false, 2896, 1448)] // exact multiple
    [InlineData(true, false, 10000, 1428)]
    [InlineData(true, false, 60000, 1220)]
    public void A_super_packet_splits_exactly_as_the_kernel_would(bool v6, bool ipOptions, int payload, int mss)
    {
        var first = new Tcp.Spec { V6 = v6, IpOptions = ipOptions, Payload = mss, Seq = 0xFFFFF000, IpId = 0xFFFE, Flags = Tcp.Ack };
        var super = Tcp.Build(first with { Payload = payload, Flags = Tcp.Ack | Tcp.Psh });
        int count = (payload + mss - 1) / mss;
        int last = payload - (count - 1) * mss;
        // Independently built expectation: ids +1, seq += mss (wrapping), PSH only on the last.
        var expected = Tcp.Run(first, count, last, Tcp.Ack | Tcp.Psh);
        var got = Segment(Frame(super, v6 ? VirtioNetHeader.GsoTcpV6 : VirtioNetHeader.GsoTcpV4, mss));
        Assert.Equal(count, got.Count);
        int iphl = v6 ? 40 : ipOptions ? 24 : 20;
        var payloads = new List<byte>();
        for (int i = 0; i < count; i++)
        {
            Assert.True(expected[i].AsSpan().SequenceEqual(got[i]), $"segment {i} differs");
            Assert.True(Tcp.TcpChecksumValid(got[i], iphl), $"segment {i} tcp checksum");
            if (!v6)
            {
                Assert.Equal(0xFFFF, Tcp.NaiveSum(got[i].AsSpan(0, iphl), 0));
            }

            payloads.AddRange(got[i].AsSpan(iphl + 32).ToArray());
        }

        Assert.Equal(super.AsSpan(iphl + 32).ToArray(), payloads.ToArray());
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Fin_and_psh_stay_on_the_last_segment_cwr_on_the_first(bool v6)
    {
        byte flags = Tcp.Ack | Tcp.Psh | Tcp.Fin | Cwr | Ece;
        var super = Tcp.Build(new Tcp.Spec { V6 = v6, Payload = 5000, Flags = flags });
        byte gso = (byte)((v6 ? VirtioNetHeader.GsoTcpV6 : VirtioNetHeader.GsoTcpV4) | 0x80); // ECN bit
        var got = Segment(Frame(super, gso, 1000));
        Assert.Equal(5, got.Count);
        int iphl = v6 ? 40 : 20;
        for (int i = 0; i < got.Count; i++)
        {
            byte f = got[i][iphl + 13];
            Assert.Equal(i == 0, (f & Cwr) != 0);
            Assert.Equal(i == got.Count - 1, (f & Tcp.Fin) != 0);
            Assert.Equal(i == got.Count - 1, (f & Tcp.Psh) != 0);
            Assert.True((f & Ece) != 0 && (f & Tcp.Ack) != 0, $"segment {i} lost ECE/ACK");
            Assert.True(Tcp.TcpChecksumValid(got[i], iphl), $"segment {i} tcp checksum");
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Needs_csum_only_completes_the_checksum(bool v6)
    {
        var pkt = Tcp.Build(new Tcp.Spec { V6 = v6, Payload = 777 });
        int iphl = v6 ? 40 : 20;
        var partial = (byte[])pkt.Clone();
        // CHECKSUM_PARTIAL: the field holds the pseudo-header sum, not complemented.
        BinaryPrimitives.WriteUInt16BigEndian(partial.AsSpan(iphl + 16), Tcp.NaiveSum([], Tcp.PseudoNaive(pkt, iphl)));
        var f = new byte[VirtioNetHeader.Length + pkt.Length];
        VirtioNetHeader.Write(f, VirtioNetHeader.FlagNeedsCsum, VirtioNetHeader.GsoNone, 0, 0, (ushort)iphl, 16);
        partial.CopyTo(f, VirtioNetHeader.Length);
        Assert.True(TcpSegmenter.TryPlan(f, out var plan, out _));
        Assert.False(plan.IsSegmented);
        var got = Segment(f);
        Assert.Single(got);
        Assert.Equal(pkt, got[0]);
    }

    [Fact]
    public void Plain_packets_pass_through_unchanged()
    {
        var pkt = Packets.Ipv4(Tcp.A4, Tcp.B4, 42, 300);
        var f = new byte[VirtioNetHeader.Length + pkt.Length];
        pkt.CopyTo(f, VirtioNetHeader.Length);
        var got = Segment(f);
        Assert.Single(got);
        Assert.Equal(pkt, got[0]);
    }

    [Fact]
    public void A_segment_never_overruns_a_short_destination()
    {
        var f = Frame(Tcp.Build(new Tcp.Spec { Payload = 3000 }), VirtioNetHeader.GsoTcpV4, 1448);
        Assert.True(TcpSegmenter.TryPlan(f, out var plan, out _));
        Assert.Equal(20 + 32 + 1448, plan.MaxSegmentLength);
        Assert.Equal(-1, TcpSegmenter.WriteSegment(in plan, f, 0, new byte[plan.MaxSegmentLength - 1]));
        Assert.Throws<ArgumentOutOfRangeException>(() => TcpSegmenter.WriteSegment(in plan, f, plan.Count, new byte[2048]));
    }

    public static TheoryData<string, TunFrameError> Refusals() => new()
    {
        { "short", TunFrameError.TooShort },
        { "udp-ufo", TunFrameError.UnknownGsoType },
        { "udp-l4", TunFrameError.UnknownGsoType },
        { "ecn-without-gso", TunFrameError.UnknownGsoType },
        { "gso-size-0", TunFrameError.BadGsoSize },
        { "gso-size-1", TunFrameError.BadGsoSize },
        { "v6-packet-as-tcpv4", TunFrameError.BadIpHeader },
        { "v4-packet-as-tcpv6", TunFrameError.BadIpHeader },
        { "not-tcp", TunFrameError.BadIpHeader },
        { "fragment", TunFrameError.BadIpHeader },
        { "ihl-too-small", TunFrameError.BadIpHeader },
        { "v6-extension-header", TunFrameError.BadIpHeader },
        { "total-length-beyond-frame", TunFrameError.BadLength },
        { "v6-payload-length-beyond-frame", TunFrameError.BadLength },
        { "tcp-header-beyond-packet", TunFrameError.BadLength },
        { "tcp-doff-too-small", TunFrameError.BadLength },
        { "csum-offset-beyond-packet", TunFrameError.BadChecksumOffsets },
        { "csum-start-beyond-packet", TunFrameError.BadChecksumOffsets },
    };

    [Theory]
    [MemberData(nameof(Refusals))]
    public void Malformed_frames_are_refused(string what, TunFrameError expected)
    {
        var v4 = Tcp.Build(new Tcp.Spec { Payload = 4000 });
        var v6 = Tcp.Build(new Tcp.Spec { V6 = true, Payload = 4000 });
        byte[] f = what switch
        {
            "short" => new byte[VirtioNetHeader.Length + 19],
            "udp-ufo" => Frame(v4, VirtioNetHeader.GsoUdp, 1000),
            "udp-l4" => Frame(v4, VirtioNetHeader.GsoUdpL4, 1000),
            "ecn-without-gso" => Frame(v4, 0x80, 0),
            "gso-size-0" => Frame(v4, VirtioNetHeader.GsoTcpV4, 0),
            "gso-size-1" => Frame(v4, VirtioNetHeader.GsoTcpV4, 1),
            "v6-packet-as-tcpv4" => Frame(v6, VirtioNetHeader.GsoTcpV4, 1000),
            "v4-packet-as-tcpv6" => Frame(v4, VirtioNetHeader.GsoTcpV6, 1000),
            "not-tcp" => Patch(Frame(v4, VirtioNetHeader.GsoTcpV4, 1000), 9, 17),
            "fragment" => Frame(Tcp.Build(new Tcp.Spec { Payload = 4000, MoreFragments = true }), VirtioNetHeader.GsoTcpV4, 1000),
            "ihl-too-small" => Patch(Frame(v4, VirtioNetHeader.GsoTcpV4, 1000), 0, 0x44),
            "v6-extension-header" => Patch(Frame(v6, VirtioNetHeader.GsoTcpV6, 1000), 6, 0), // hop-by-hop
            "total-length-beyond-frame" => Frame(v4, VirtioNetHeader.GsoTcpV4, 1000)[..^1],
            "v6-payload-length-beyond-frame" => Frame(v6, VirtioNetHeader.GsoTcpV6, 1000)[..^1],
            "tcp-header-beyond-packet" => Patch(Frame(Tcp.Build(new Tcp.Spec { Payload = 0 }), VirtioNetHeader.GsoTcpV4, 1000), 20 + 12, 0xF0),
            "tcp-doff-too-small" => Patch(Frame(v4, VirtioNetHeader.GsoTcpV4, 1000), 20 + 12, 0x40),
            "csum-offset-beyond-packet" => Csum(v4, 20, v4.Length - 20 - 1),
            "csum-start-beyond-packet" => Csum(v4, v4.Length, 0),
            _ => throw new ArgumentException(what),
        };
        Assert.False(TcpSegmenter.TryPlan(f, out _, out var err), what);
        Assert.Equal(expected, err);
    }

    private static byte[] Patch(byte[] frame, int ipOffset, byte value)
    {
        frame[VirtioNetHeader.Length + ipOffset] = value;
        return frame;
    }

    private static byte[] Csum(byte[] ip, int start, int offset)
    {
        var f = new byte[VirtioNetHeader.Length + ip.Length];
        VirtioNetHeader.Write(f, VirtioNetHeader.FlagNeedsCsum, VirtioNetHeader.GsoNone, 0, 0, (ushort)start, (ushort)offset);
        ip.CopyTo(f, VirtioNetHeader.Length);
        return f;
    }

    [Fact]
    public void Segmenting_allocates_nothing()
    {
        var f = Frame(Tcp.Build(new Tcp.Spec { Payload = 60000 }), VirtioNetHeader.GsoTcpV4, 1448);
        var dst = new byte[2048];
        void Run()
        {
            for (int r = 0; r < 20; r++)
            {
                TcpSegmenter.TryPlan(f, out var plan, out _);
                for (int i = 0; i < plan.Count; i++)
                {
                    TcpSegmenter.WriteSegment(in plan, f, i, dst);
                }
            }
        }

        Run();
        long before = GC.GetAllocatedBytesForCurrentThread();
        Run();
        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
    }
}

/// <summary>A vnet TUN double whose reads return queued TSO frames (as a TUN with TUN_F_TSO* does).</summary>
internal sealed class TsoChannelTun : IVnetTunDevice
{
    private readonly BlockingCollection<byte[]> _in = new();
    private readonly CancellationTokenSource _cts = new();

    public string Name => "test-tso";

    public bool ReadsTcpGso => true;

    public void Inject(byte[] frame) => _in.Add(frame);

    public int Read(Span<byte> buffer) => throw new InvalidOperationException("a TSO queue must be read with ReadFrame");

    public int ReadFrame(Span<byte> frame)
    {
        try
        {
            var f = _in.Take(_cts.Token);
            f.CopyTo(frame);
            return f.Length;
        }
        catch (OperationCanceledException)
        {
            throw new ObjectDisposedException(Name);
        }
    }

    public int TryReadFrame(Span<byte> frame)
    {
        if (!_in.TryTake(out var f))
        {
            return -1;
        }

        f.CopyTo(frame);
        return f.Length;
    }

    public void Write(ReadOnlySpan<byte> packet)
    {
    }

    public void WriteFrame(ReadOnlySpan<byte> frame)
    {
    }

    public void Dispose() => _cts.Cancel();
}

/// <summary>The engine's TUN reader with read-side TSO: one frame becomes one ordered send batch.</summary>
public sealed class OffloadTunTsoTests
{
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void A_tso_frame_leaves_as_ordered_sealed_segments(bool inline)
    {
        var sock = new ChannelDatagramSocket();
        var tun = new TsoChannelTun();
        var dp = new OffloadDataPlane([sock], [tun], new RecordingEvents(),
            new OffloadOptions { Workers = 1, PoolSize = 512, QueueLength = 256, KeepaliveTimer = false, Inline = inline });
        try
        {
            Assert.True(dp.TunSegmentation);
            Assert.Equal("tun tso on", dp.TunSegmentationDescription);
            var keys = new TestPeerKeys();
            var addr = Packets.Addr("10.99.0.2", 40001);
            // The test packets go A4 -> B4, so the peer owns B4.
            dp.NewPeer(new PeerConfig(1, new UdpLinkTransport(sock.Socket, addr), Tcp.B4, null));
            dp.NewKey(keys.ServerKey(1, KeySlot.Primary, 0));
            var super = Tcp.Build(new Tcp.Spec { Payload = 45 * 1400, Flags = Tcp.Ack | Tcp.Psh });
            var expected = Tcp.Run(new Tcp.Spec { Payload = 1400 }, 45);
            tun.Inject(TcpSegmenterTests.Frame(super, VirtioNetHeader.GsoTcpV4, 1400));
            // Refused frames are counted, not sent.
            tun.Inject(TcpSegmenterTests.Frame(super, VirtioNetHeader.GsoUdpL4, 1400));
            var plain = Tcp.Build(new Tcp.Spec { Seq = 1000 + 45 * 1400, Payload = 100 });
            var plainFrame = new byte[VirtioNetHeader.Length + plain.Length];
            plain.CopyTo(plainFrame, VirtioNetHeader.Length);
            tun.Inject(plainFrame);
            dp.Start();
            var sent = TestWait.TakeSent(sock, 46);
            using var opener = keys.ClientOpener();
            uint lastPid = 0;
            for (int i = 0; i < sent.Count; i++)
            {
                var ip = Packets.Open(opener, sent[i].Data, out uint pid);
                Assert.True(pid > lastPid, $"packet-id {pid} after {lastPid}");
                lastPid = pid;
                Assert.Equal(i < 45 ? expected[i] : plain, ip);
            }

            TestWait.Eventually(() => dp.GlobalDrops[nameof(OffloadDropReason.TunFrameRefused)] == 1, "refused frame counted");
            Assert.Equal(1, dp.TunTsoFramesRead);
            Assert.Equal(45, dp.TunTsoSegmentsRead);
            if (inline)
            {
                // All three frames were queued before Start: the 45 segments went out in one send
                // batch (BatchSize 64), not one send per read.
                Assert.True(sock.SendBatchCalls <= 2, $"{sock.SendBatchCalls} send calls");
            }
        }
        finally
        {
            dp.Dispose();
            sock.Dispose();
        }
    }

    [Fact]
    public void A_tso_queue_with_the_option_off_is_refused()
    {
        var sock = new ChannelDatagramSocket();
        using var tun = new TsoChannelTun();
        Assert.Throws<ArgumentException>(() => new OffloadDataPlane([sock], [tun], new RecordingEvents(),
            new OffloadOptions { Workers = 1, PoolSize = 512, KeepaliveTimer = false, TunSegmentationOffload = false }));
        sock.Dispose();
    }
}
