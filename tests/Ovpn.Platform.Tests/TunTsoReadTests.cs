// SPDX-License-Identifier: MIT
using System.Buffers.Binary;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Ovpn.DataPlane.Offload;
using Ovpn.Platform.Linux;
using Ovpn.Testing;

namespace Ovpn.Platform.Tests;

/// <summary>
/// Read-side TSO against the real kernel: a TUN opened with tcpOffload, a kernel TCP socket in the
/// namespace sends a large write to an address behind the TUN, and we play the receiver (hand-built
/// SYN-ACK and ACKs). The kernel must hand us TCP super-packets (gso_type TCPV4, gso_size = the MSS
/// we announced); <see cref="TcpSegmenter"/> must turn them into valid MSS-sized segments whose
/// payloads are exactly the bytes the socket wrote.
/// </summary>
public sealed class TunTsoReadTests
{
    private static readonly IPAddress TunAddr = IPAddress.Parse("10.97.0.1");
    private static readonly IPAddress PeerAddr = IPAddress.Parse("10.97.0.2");
    private const ushort PeerPort = 5598;
    private const int Mss = 1400;

    /// <summary>A segment from the peer (behind the TUN) to the kernel socket, with a full checksum.</summary>
    private static byte[] FromPeer(ushort dstPort, uint seq, uint ack, byte flags, bool mssOption)
    {
        int thl = mssOption ? 24 : 20;
        var p = new byte[20 + thl];
        p[0] = 0x45;
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(2), (ushort)p.Length);
        p[6] = 0x40;
        p[8] = 64;
        p[9] = 6;
        PeerAddr.GetAddressBytes().CopyTo(p, 12);
        TunAddr.GetAddressBytes().CopyTo(p, 16);
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(10), InternetChecksum.Ipv4HeaderChecksum(p.AsSpan(0, 20)));
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(20), PeerPort);
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(22), dstPort);
        BinaryPrimitives.WriteUInt32BigEndian(p.AsSpan(24), seq);
        BinaryPrimitives.WriteUInt32BigEndian(p.AsSpan(28), ack);
        p[32] = (byte)(thl / 4 << 4);
        p[33] = flags;
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(34), 65535);
        if (mssOption)
        {
            p[40] = 2;
            p[41] = 4;
            BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(42), Mss);
        }

        ushort pseudo = InternetChecksum.PseudoHeaderSum(p.AsSpan(12, 4), p.AsSpan(16, 4), 6, p.Length - 20);
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(36), (ushort)~InternetChecksum.Sum(p.AsSpan(20), pseudo));
        return p;
    }

    [RequiresFact(Requirement.Root, Requirement.Tun)]
    public async Task Kernel_hands_tcp_super_packets_that_segment_into_valid_packets()
    {
        Requirements.RequireOrFail(Requirement.Root, Requirement.Tun);
        using var ns = new NetNs();
        using var tun = ns.RunInNamespace(() => TunDevice.Create("tsotest0", vnetHeader: true, tcpOffload: true));
        Assert.True(tun.ReadsTcpGso, tun.TcpGsoReadUnsupportedReason);
        tun.SetMtu(1500);
        tun.AddAddress(TunAddr, 24);
        tun.SetUp();

        var data = new byte[256 * 1024];
        new Random(5).NextBytes(data);
        using var sender = ns.CreateSocket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        sender.NoDelay = false;
        var connect = sender.ConnectAsync(new IPEndPoint(PeerAddr, PeerPort));

        var frame = new byte[65536 + VirtioNetHeader.Length];
        var seg = new byte[2048];
        var sw = Stopwatch.StartNew();
        var limit = TimeSpan.FromSeconds(15);

        // SYN from the kernel (read as a frame: header included).
        ushort localPort = 0;
        uint isn = 0;
        while (localPort == 0)
        {
            Assert.True(sw.Elapsed < limit, "no SYN on the TUN");
            int n = ReadFrame(tun, frame, sw, limit);
            var ip = frame.AsSpan(VirtioNetHeader.Length, n - VirtioNetHeader.Length);
            if (ip.Length >= 40 && ip[0] >> 4 == 4 && ip[9] == 6 && ip[33] == 0x02)
            {
                localPort = BinaryPrimitives.ReadUInt16BigEndian(ip[20..]);
                isn = BinaryPrimitives.ReadUInt32BigEndian(ip[24..]);
            }
        }

        const uint peerIsn = 777_000;
        tun.Write(FromPeer(localPort, peerIsn, isn + 1, 0x12, mssOption: true));
        await connect.WaitAsync(limit);
        var send = sender.SendAsync(data, SocketFlags.None);

        // Receive: segment every frame, check each packet, ACK cumulatively so the window opens.
        var received = new MemoryStream();
        uint next = isn + 1;
        int gsoFrames = 0, segments = 0;
        while (received.Length < data.Length)
        {
            Assert.True(sw.Elapsed < limit, $"only {received.Length} of {data.Length} bytes arrived ({gsoFrames} GSO frames)");
            int n = ReadFrame(tun, frame, sw, limit);
            var f = frame.AsSpan(0, n);
            var ipv = f[VirtioNetHeader.Length..];
            if (ipv.Length < 40 || ipv[0] >> 4 != 4 || ipv[9] != 6 || BinaryPrimitives.ReadUInt16BigEndian(ipv[20..]) != localPort)
            {
                continue; // IPv6 router solicitations and the like
            }

            Assert.True(TcpSegmenter.TryPlan(f, out var plan, out var err), $"kernel frame refused: {err}");
            byte gso = VirtioNetHeader.GsoType(f);
            if (plan.IsSegmented)
            {
                Assert.Equal(VirtioNetHeader.GsoTcpV4, (byte)(gso & 0x7F));
                Assert.Equal(Mss, VirtioNetHeader.GsoSize(f));
                if (plan.Count > 1)
                {
                    gsoFrames++;
                }
            }

            for (int i = 0; i < plan.Count; i++)
            {
                int len = TcpSegmenter.WriteSegment(in plan, f, i, seg);
                Assert.InRange(len, 40, 20 + 20 + 12 + Mss);
                var p = seg.AsSpan(0, len);
                Assert.Equal(len, BinaryPrimitives.ReadUInt16BigEndian(p[2..]));
                Assert.Equal(0xFFFF, InternetChecksum.Sum(p[..20]));
                ushort pseudo = InternetChecksum.PseudoHeaderSum(p.Slice(12, 4), p.Slice(16, 4), 6, len - 20);
                Assert.Equal(0xFFFF, InternetChecksum.Sum(p[20..], pseudo));
                int thl = (p[32] >> 4) * 4;
                int payload = len - 20 - thl;
                Assert.True(payload <= Mss, $"segment payload {payload} > MSS");
                uint seq = BinaryPrimitives.ReadUInt32BigEndian(p[24..]);
                if (payload > 0 && seq == next)
                {
                    received.Write(p.Slice(20 + thl, payload));
                    next += (uint)payload;
                    segments++;
                }
            }

            tun.Write(FromPeer(localPort, peerIsn + 1, next, 0x10, mssOption: false));
        }

        Assert.True(gsoFrames > 0, "the kernel never handed a TCP super-packet to the TUN");
        Assert.True(received.ToArray().AsSpan().SequenceEqual(data), "segment payloads differ from the bytes written");
        Assert.True(segments >= data.Length / Mss);
        await send.WaitAsync(limit);
    }

    [RequiresFact(Requirement.Root, Requirement.Tun)]
    public void Tso_is_only_on_when_asked_for_and_survives_more_queues()
    {
        Requirements.RequireOrFail(Requirement.Root, Requirement.Tun);
        using var ns = new NetNs();
        Assert.Throws<ArgumentException>(() => ns.RunInNamespace(() => TunDevice.Create("tsoplain0", tcpOffload: true)));
        using (var plain = ns.RunInNamespace(() => TunDevice.Create("tsooff0", vnetHeader: true)))
        {
            Assert.False(plain.ReadsTcpGso);
            Assert.Equal("not asked for", plain.TcpGsoReadUnsupportedReason);
        }

        // Every queue's open probes USO (TUNSETOFFLOAD, device-wide) and must end with TSO on again.
        var queues = ns.RunInNamespace(() => Ovpn.Platform.Net.MultiQueueTun.Open("tsomq0", 3, vnetHeader: true, tcpOffload: true));
        try
        {
            Assert.All(queues, q => Assert.True(((Ovpn.DataPlane.Offload.IVnetTunDevice)q).ReadsTcpGso));
            var features = ns.Exec("ethtool", "-k", "tsomq0");
            if (features.ExitCode == 0)
            {
                Assert.Contains("tcp-segmentation-offload: on", features.Stdout, StringComparison.Ordinal);
            }
        }
        finally
        {
            foreach (var q in queues)
            {
                q.Dispose();
            }
        }
    }

    private static int ReadFrame(TunDevice tun, byte[] frame, Stopwatch sw, TimeSpan limit)
    {
        while (sw.Elapsed < limit)
        {
            int n = tun.TryReadFrame(frame);
            if (n > VirtioNetHeader.Length)
            {
                return n;
            }

            Thread.Sleep(1);
        }

        throw new TimeoutException("nothing to read on the TUN");
    }
}
