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
/// IFF_VNET_HDR TUN against the real kernel: we play a TCP client behind the TUN (hand-built
/// segments), a real socket in the namespace is the server. The kernel is the oracle for the
/// coalesced GSO frame: the server socket must receive exactly the bytes of every segment.
/// </summary>
public sealed class VnetTunTests
{
    private static readonly IPAddress TunAddr = IPAddress.Parse("10.98.0.1");
    private static readonly IPAddress PeerAddr = IPAddress.Parse("10.98.0.2");
    private const ushort ServerPort = 5599;
    private const ushort ClientPort = 40123;

    private static byte[] Segment(uint seq, uint ack, byte flags, ReadOnlySpan<byte> payload, ushort ipId)
    {
        var p = new byte[40 + payload.Length];
        p[0] = 0x45;
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(2), (ushort)p.Length);
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(4), ipId);
        p[6] = 0x40; // DF
        p[8] = 64;
        p[9] = 6;
        PeerAddr.GetAddressBytes().CopyTo(p, 12);
        TunAddr.GetAddressBytes().CopyTo(p, 16);
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(10), InternetChecksum.Ipv4HeaderChecksum(p.AsSpan(0, 20)));
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(20), ClientPort);
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(22), ServerPort);
        BinaryPrimitives.WriteUInt32BigEndian(p.AsSpan(24), seq);
        BinaryPrimitives.WriteUInt32BigEndian(p.AsSpan(28), ack);
        p[32] = 5 << 4;
        p[33] = flags;
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(34), 65535);
        payload.CopyTo(p.AsSpan(40));
        ushort pseudo = InternetChecksum.PseudoHeaderSum(p.AsSpan(12, 4), p.AsSpan(16, 4), 6, p.Length - 20);
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(36), (ushort)~InternetChecksum.Sum(p.AsSpan(20), pseudo));
        return p;
    }

    private sealed class TunSink(TunDevice tun) : IVnetFrameSink
    {
        public void WriteFrame(ReadOnlySpan<byte> frame) => tun.WriteFrame(frame);
    }

    [RequiresFact(Requirement.Root, Requirement.Tun)]
    public async Task Coalesced_super_packet_is_accepted_by_the_kernel_tcp_stack()
    {
        Requirements.RequireOrFail(Requirement.Root, Requirement.Tun);
        using var ns = new NetNs();
        using var tun = ns.RunInNamespace(() => TunDevice.Create("vnettest0", vnetHeader: true));
        Assert.True(tun.HasVnetHeader);
        tun.AddAddress(TunAddr, 24);
        tun.SetUp();
        using var listener = ns.CreateSocket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(TunAddr, ServerPort));
        listener.Listen(1);
        var accept = listener.AcceptAsync();

        // Handshake by hand. Plain Write on a vnet TUN prepends a zeroed header.
        const uint isn = 1000;
        tun.Write(Segment(isn, 0, 0x02, [], 1));
        uint serverIsn = await ReadSynAck(tun);
        tun.Write(Segment(isn + 1, serverIsn + 1, 0x10, [], 2));
        using var server = await accept.WaitAsync(TimeSpan.FromSeconds(10));

        // 30 segments of 1000 bytes, the last with PSH, through the coalescer: one GSO frame.
        var data = new byte[30_000];
        new Random(7).NextBytes(data);
        var coalescer = new TcpCoalescer();
        var sink = new TunSink(tun);
        for (int i = 0; i < 30; i++)
        {
            byte flags = (byte)(i == 29 ? 0x18 : 0x10);
            coalescer.Add(Segment(isn + 1 + (uint)(i * 1000), serverIsn + 1, flags, data.AsSpan(i * 1000, 1000), (ushort)(3 + i)), sink);
        }

        coalescer.Flush(sink);
        Assert.Equal(1, coalescer.FramesWritten);
        Assert.Equal(30, coalescer.SegmentsCoalesced);

        var got = new byte[data.Length + 1];
        int have = 0;
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        while (have < data.Length)
        {
            int n = await server.ReceiveAsync(got.AsMemory(have), SocketFlags.None, cts.Token);
            Assert.True(n > 0, "server connection closed early");
            have += n;
        }

        Assert.Equal(data.Length, have);
        Assert.True(data.AsSpan().SequenceEqual(got.AsSpan(0, have)));
    }

    private static byte[] Datagram(ReadOnlySpan<byte> payload, ushort ipId)
    {
        var p = new byte[28 + payload.Length];
        p[0] = 0x45;
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(2), (ushort)p.Length);
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(4), ipId);
        p[6] = 0x40; // DF
        p[8] = 64;
        p[9] = 17;
        PeerAddr.GetAddressBytes().CopyTo(p, 12);
        TunAddr.GetAddressBytes().CopyTo(p, 16);
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(10), InternetChecksum.Ipv4HeaderChecksum(p.AsSpan(0, 20)));
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(20), ClientPort);
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(22), ServerPort);
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(24), (ushort)(8 + payload.Length));
        payload.CopyTo(p.AsSpan(28));
        ushort pseudo = InternetChecksum.PseudoHeaderSum(p.AsSpan(12, 4), p.AsSpan(16, 4), 17, p.Length - 20);
        ushort c = (ushort)~InternetChecksum.Sum(p.AsSpan(20), pseudo);
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(26), c == 0 ? (ushort)0xFFFF : c);
        return p;
    }

    [RequiresFact(Requirement.Root, Requirement.Tun)]
    public void Coalesced_udp_frame_reaches_a_udp_socket_as_the_original_datagrams()
    {
        Requirements.RequireOrFail(Requirement.Root, Requirement.Tun);
        using var ns = new NetNs();
        using var tun = ns.RunInNamespace(() => TunDevice.Create("vnetudp0", vnetHeader: true));
        // VIRTIO_NET_HDR_GSO_UDP_L4 came with Linux 6.2; older kernels must say no, not pretend.
        bool kernelHasUso = Environment.OSVersion.Version >= new Version(6, 2);
        Assert.Equal(kernelHasUso, tun.SupportsUdpGso);
        if (!kernelHasUso)
        {
            Assert.NotNull(tun.UdpGsoUnsupportedReason);
            return;
        }

        tun.AddAddress(TunAddr, 24);
        tun.SetUp();
        // No UDP_GRO on this socket: the kernel must segment the frame into the original datagrams.
        using var receiver = ns.CreateSocket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        receiver.Bind(new IPEndPoint(TunAddr, ServerPort));
        receiver.ReceiveTimeout = 5000;

        // 20 datagrams of 1200 bytes and a last one of 333, distinct contents, through the coalescer.
        var rnd = new Random(11);
        var payloads = Enumerable.Range(0, 21).Select(i => { var b = new byte[i == 20 ? 333 : 1200]; rnd.NextBytes(b); return b; }).ToList();
        var coalescer = new UdpCoalescer();
        var sink = new TunSink(tun);
        for (int i = 0; i < payloads.Count; i++)
        {
            Assert.True(coalescer.TryAdd(Datagram(payloads[i], (ushort)(100 + i)), sink));
        }

        coalescer.Flush(sink);
        Assert.Equal(1, coalescer.FramesWritten);
        Assert.Equal(21, coalescer.SegmentsCoalesced);

        var buf = new byte[65536];
        var from = new IPEndPoint(IPAddress.Any, 0);
        foreach (var expected in payloads)
        {
            EndPoint ep = from;
            int n = receiver.ReceiveFrom(buf, ref ep);
            Assert.Equal(new IPEndPoint(PeerAddr, ClientPort), ep);
            Assert.Equal(expected.Length, n);
            Assert.True(expected.AsSpan().SequenceEqual(buf.AsSpan(0, n)), "datagram content differs");
        }

        // Nothing more (no duplicate, no leftover).
        receiver.ReceiveTimeout = 300;
        Assert.Throws<SocketException>(() => receiver.Receive(buf));
    }

    /// <summary>Reads from the TUN until the server's SYN-ACK (skipping IPv6 noise); returns its ISN.</summary>
    private static async Task<uint> ReadSynAck(TunDevice tun)
    {
        var buf = new byte[70_000];
        var sw = Stopwatch.StartNew();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        while (sw.Elapsed < TimeSpan.FromSeconds(10))
        {
            int n = await tun.ReadAsync(buf, cts.Token);
            // The header was stripped: the packet starts at 0 and is an ordinary checksummed packet.
            if (n < 40 || buf[0] != 0x45 || buf[9] != 6 || BinaryPrimitives.ReadUInt16BigEndian(buf.AsSpan(20)) != ServerPort ||
                (buf[33] & 0x12) != 0x12)
            {
                continue;
            }

            ushort pseudo = InternetChecksum.PseudoHeaderSum(buf.AsSpan(12, 4), buf.AsSpan(16, 4), 6, n - 20);
            Assert.Equal(0xFFFF, InternetChecksum.Sum(buf.AsSpan(20, n - 20), pseudo));
            return BinaryPrimitives.ReadUInt32BigEndian(buf.AsSpan(24));
        }

        throw new TimeoutException("no SYN-ACK on the TUN");
    }
}
