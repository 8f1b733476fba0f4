// SPDX-License-Identifier: MIT
using System.Collections.Concurrent;
using Ovpn.DataPlane.Offload;
using Ovpn.DataPlane.Transport;
using Ovpn.Protocol.Keys;

namespace Ovpn.DataPlane.Tests.Offload;

/// <summary>A vnet TUN double: records frames (header included) and plain writes separately.</summary>
internal sealed class VnetChannelTun : IVnetTunDevice
{
    private readonly CancellationTokenSource _cts = new();

    public string Name => "test-vnet";

    /// <summary>What <see cref="IVnetTunDevice.AcceptsUdpGso"/> reports (a kernel with or without USO).</summary>
    public bool AcceptsUdpGso { get; init; }

    public string? UdpGsoUnsupportedReason => AcceptsUdpGso ? null : "test TUN without USO";

    public BlockingCollection<byte[]> Frames { get; } = new();

    public BlockingCollection<byte[]> Plain { get; } = new();

    public int Read(Span<byte> buffer)
    {
        _cts.Token.WaitHandle.WaitOne();
        throw new ObjectDisposedException(nameof(VnetChannelTun));
    }

    public void Write(ReadOnlySpan<byte> packet) => Plain.Add(packet.ToArray());

    public void WriteFrame(ReadOnlySpan<byte> frame) => Frames.Add(frame.ToArray());

    public void Dispose() => _cts.Cancel();
}

/// <summary>The engine hands a receive batch's TCP segments to the coalescer when the TUN has vnet headers.</summary>
public sealed class OffloadCoalescingTests
{
    private static List<byte[]> Resegment(byte[] f) =>
        VirtioNetHeader.GsoType(f) == VirtioNetHeader.GsoUdpL4 ? Udp.Resegment(f) : Tcp.Resegment(f);

    private static (List<byte[]> Frames, List<byte[]> Plain) Run(bool inline, bool coalesce, List<byte[]> segments, int linger = 0,
        bool udpGso = false, Action<OffloadDataPlane>? check = null)
    {
        var sock = new ChannelDatagramSocket();
        var tun = new VnetChannelTun { AcceptsUdpGso = udpGso };
        var dp = new OffloadDataPlane([sock], [tun], new RecordingEvents(),
            new OffloadOptions { Workers = 1, PoolSize = 512, QueueLength = 256, KeepaliveTimer = false, Inline = inline, TunCoalesce = coalesce, TunCoalesceLinger = linger });
        try
        {
            var keys = new TestPeerKeys();
            var addr = Packets.Addr("10.99.0.2", 40001);
            dp.NewPeer(new PeerConfig(1, new UdpLinkTransport(sock.Socket, addr), Tcp.A4, null));
            dp.NewKey(keys.ServerKey(1, KeySlot.Primary, 0));
            var sealer = keys.ClientSealer();
            uint pid = 1;
            // Queued before Start, so the reader's first recvmmsg-like call takes them as one batch.
            foreach (var s in segments)
            {
                sock.Inject(Packets.Seal(sealer, 0, 1, pid++, s), addr);
            }

            dp.Start();
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
            while (dp.TunPacketsWritten < segments.Count && DateTime.UtcNow < deadline)
            {
                Thread.Sleep(2);
            }

            Assert.Equal(segments.Count, dp.TunPacketsWritten);
            // Flushes happen at the end of the batch, right after the counter moved.
            deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
            while (tun.Frames.Sum(f => Resegment(f).Count) + tun.Plain.Count < segments.Count && DateTime.UtcNow < deadline)
            {
                Thread.Sleep(2);
            }

            Assert.Equal(coalesce, dp.TunCoalescing);
            var frames = tun.Frames.ToList();
            int gso = frames.Count(f => VirtioNetHeader.GsoType(f) != VirtioNetHeader.GsoNone);
            // The engine adds to its counters right after the batch's flush.
            deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
            while (dp.TunGsoFramesWritten != gso && DateTime.UtcNow < deadline)
            {
                Thread.Sleep(2);
            }

            Assert.Equal(gso, dp.TunGsoFramesWritten);
            Assert.Equal(frames.Where(f => VirtioNetHeader.GsoType(f) != VirtioNetHeader.GsoNone).Sum(f => Resegment(f).Count), dp.TunGsoSegmentsWritten);
            check?.Invoke(dp);
            return (frames, tun.Plain.ToList());
        }
        finally
        {
            dp.Dispose();
            sock.Dispose();
        }
    }

    [Theory]
    [InlineData(true, 0)]
    [InlineData(true, 3)]
    [InlineData(false, 0)]
    public void A_batch_of_tcp_segments_reaches_the_tun_as_gso_frames_in_order(bool inline, int linger)
    {
        var segments = Tcp.Run(new Tcp.Spec { Payload = 1300 }, 20);
        var (frames, plain) = Run(inline, coalesce: true, segments, linger);
        Assert.Empty(plain);
        if (inline)
        {
            Assert.True(frames.Count < segments.Count, $"{frames.Count} frames for {segments.Count} segments");
            // One receive batch, one flow: one super-packet.
            Assert.Single(frames);
        }
        else
        {
            // Pipelined: the worker may wake for the first packet before the reader queued the rest,
            // so how many frames depends on scheduling; contents and order are checked below.
            Assert.InRange(frames.Count, 1, segments.Count);
        }

        var outp = frames.SelectMany(Tcp.Resegment).ToList();
        Assert.Equal(segments.Count, outp.Count);
        for (int i = 0; i < segments.Count; i++)
        {
            Assert.True(segments[i].AsSpan().SequenceEqual(outp[i]), $"segment {i}");
        }
    }

    [Fact]
    public void With_coalescing_off_every_packet_is_written_alone()
    {
        var segments = Tcp.Run(new Tcp.Spec { Payload = 1300 }, 10);
        var (frames, plain) = Run(inline: true, coalesce: false, segments);
        Assert.Empty(frames);
        Assert.Equal(segments.Count, plain.Count);
        for (int i = 0; i < segments.Count; i++)
        {
            Assert.True(segments[i].AsSpan().SequenceEqual(plain[i]), $"segment {i}");
        }
    }

    [Fact]
    public void A_batch_of_udp_datagrams_reaches_a_uso_tun_as_one_frame_in_order()
    {
        var datagrams = Udp.Run(new Udp.Spec { Payload = 1300 }, 20, lastPayload: 99);
        var (frames, plain) = Run(inline: true, coalesce: true, datagrams, udpGso: true,
            check: dp =>
            {
                Assert.True(dp.TunUdpCoalescing);
                Assert.Equal("tcp+udp", dp.TunCoalescingDescription);
            });
        Assert.Empty(plain);
        var frame = Assert.Single(frames);
        Assert.Equal(VirtioNetHeader.GsoUdpL4, VirtioNetHeader.GsoType(frame));
        var outp = Udp.Resegment(frame);
        Assert.Equal(datagrams.Count, outp.Count);
        for (int i = 0; i < datagrams.Count; i++)
        {
            Assert.True(datagrams[i].AsSpan().SequenceEqual(outp[i]), $"datagram {i}");
        }
    }

    [Fact]
    public void Without_uso_udp_datagrams_are_written_one_by_one_and_the_status_says_why()
    {
        var datagrams = Udp.Run(new Udp.Spec { Payload = 1300 }, 8);
        var (frames, plain) = Run(inline: true, coalesce: true, datagrams, udpGso: false,
            check: dp =>
            {
                Assert.True(dp.TunCoalescing);
                Assert.False(dp.TunUdpCoalescing);
                Assert.Contains("test TUN without USO", dp.TunCoalescingDescription, StringComparison.Ordinal);
            });
        Assert.Empty(plain);
        Assert.Equal(datagrams.Count, frames.Count);
        Assert.All(frames, f => Assert.Equal(VirtioNetHeader.GsoNone, VirtioNetHeader.GsoType(f)));
        for (int i = 0; i < datagrams.Count; i++)
        {
            Assert.True(datagrams[i].AsSpan().SequenceEqual(frames[i].AsSpan(VirtioNetHeader.Length)), $"datagram {i}");
        }
    }
}
