// SPDX-License-Identifier: MIT
using System.Net;
using Ovpn.DataPlane.Offload;
using Ovpn.DataPlane.Transport;
using Ovpn.Protocol.Keys;

namespace Ovpn.DataPlane.Tests.Offload;

/// <summary>
/// Inline TUN reader with a TUN that reports "nothing queued": packets already queued are sealed
/// into one send batch per peer run instead of one send per packet, and packet ids still leave in order.
/// </summary>
public sealed class OffloadTunBatchTests
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(10);

    private static (OffloadDataPlane Dp, ChannelDatagramSocket Sock, ChannelTun Tun) Build(bool tryRead)
    {
        var sock = new ChannelDatagramSocket();
        var tun = new ChannelTun();
        ITunDevice port = tryRead ? tun : new BlockingOnlyTun(tun);
        var dp = new OffloadDataPlane([sock], [port], new RecordingEvents(),
            new OffloadOptions { Workers = 1, PoolSize = 1024, KeepaliveTimer = false, Inline = true, BatchSize = 64 }, new ManualTime());
        return (dp, sock, tun);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Queued_tun_packets_go_out_in_batches_in_packet_id_order(bool tryRead)
    {
        const int n = 640;
        var (dp, sock, tun) = Build(tryRead);
        try
        {
            var peers = new[] { (Id: 1u, Vpn: IPAddress.Parse("172.27.224.2"), Keys: new TestPeerKeys()), (Id: 2u, Vpn: IPAddress.Parse("172.27.224.3"), Keys: new TestPeerKeys()) };
            foreach (var p in peers)
            {
                var addr = Packets.Addr("10.99.0.2", 41000 + (int)p.Id);
                dp.NewPeer(new PeerConfig(p.Id, new UdpLinkTransport(sock.Socket, addr), p.Vpn, null));
                dp.NewKey(p.Keys.ServerKey(p.Id, KeySlot.Primary, 0));
            }

            // Everything is queued before the reader starts: runs of 32 packets per peer, alternating.
            for (uint i = 1; i <= n; i++)
            {
                var p = peers[(i - 1) / 32 % 2];
                tun.Inject(Packets.Ipv4(Packets.ServerVpn, p.Vpn, i));
            }

            dp.Start();
            var sent = TestWait.TakeSent(sock, n);
            Assert.Equal(n, sent.Count);
            foreach (var p in peers)
            {
                using var opener = p.Keys.ClientOpener();
                uint lastPid = 0;
                uint lastSeq = 0;
                foreach (var (data, to) in sent)
                {
                    if (!to.Equals(Packets.Addr("10.99.0.2", 41000 + (int)p.Id)))
                    {
                        continue;
                    }

                    var ip = Packets.Open(opener, data, out uint pid);
                    Assert.Equal(lastPid + 1, pid);
                    Assert.True(Packets.Seq(ip) > lastSeq, "TUN order kept per peer");
                    lastPid = pid;
                    lastSeq = Packets.Seq(ip);
                }

                Assert.Equal((uint)(n / 2), lastPid);
            }

            if (tryRead)
            {
                // 20 runs of 32 packets: one send per run (the peer changes), not one per packet.
                Assert.True(sock.SendBatchCalls <= 24, $"batched: {sock.SendBatchCalls} send calls for {n} packets");
            }
            else
            {
                Assert.Equal(n, sock.SendBatchCalls);
            }
        }
        finally
        {
            dp.Dispose();
            sock.Dispose();
        }
    }
}
