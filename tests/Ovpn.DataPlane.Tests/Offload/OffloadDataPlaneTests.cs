// SPDX-License-Identifier: MIT
using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using Ovpn.DataPlane.Offload;
using Ovpn.DataPlane.Transport;
using Ovpn.Protocol.Data;
using Ovpn.Protocol.Keys;

namespace Ovpn.DataPlane.Tests.Offload;

/// <summary>The engine's behaviour in run-to-completion mode (the default).</summary>
public sealed class OffloadDataPlaneInlineTests() : OffloadDataPlaneTests(inline: true);

/// <summary>The same behaviour with the pipelined worker queues.</summary>
public sealed class OffloadDataPlanePipelinedTests() : OffloadDataPlaneTests(inline: false);

public abstract class OffloadDataPlaneTests : IDisposable
{
    private readonly bool _inline;
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(10);
    private readonly ChannelDatagramSocket _sock = new();
    private readonly ChannelTun[] _tuns = [new(), new()];
    private readonly RecordingEvents _events = new();
    private readonly ManualTime _time = new();
    private readonly OffloadDataPlane _dp;

    protected OffloadDataPlaneTests(bool inline)
    {
        _inline = inline;
        _dp = new OffloadDataPlane([_sock], _tuns, _events,
            new OffloadOptions { Workers = 2, PoolSize = 1024, QueueLength = 1024, KeepaliveTimer = false, Inline = inline }, _time);
        Assert.Equal(inline, _dp.Inline);
        _dp.Start();
    }

    public void Dispose()
    {
        _dp.Dispose();
        _sock.Dispose();
        GC.SuppressFinalize(this);
    }

    private sealed record Client(uint PeerId, IPAddress Vpn, SocketAddress Addr, TestPeerKeys Keys, AeadCodec Sealer, AeadCodec Opener)
    {
        public uint NextId = 1;

        public byte[] Data(uint seq, int keyId = 0, int size = 64) =>
            Packets.Seal(Sealer, keyId, PeerId, NextId++, Packets.Ipv4(Vpn, Packets.ServerVpn, seq, size));
    }

    private Client AddUdpPeer(uint peerId, string vpn, int port = 40000)
    {
        var keys = new TestPeerKeys();
        var addr = Packets.Addr("10.99.0.2", port + (int)peerId);
        var ip = IPAddress.Parse(vpn);
        _dp.NewPeer(new PeerConfig(peerId, new UdpLinkTransport(_sock.Socket, addr), ip, null));
        _dp.NewKey(keys.ServerKey(peerId, KeySlot.Primary, 0));
        return new Client(peerId, ip, addr, keys, keys.ClientSealer(), keys.ClientOpener());
    }

    [Fact]
    public void Engine_identity_and_refusals()
    {
        Assert.Equal("ovpnas-offload", _dp.EngineName);
        var link = new UdpLinkTransport(_sock.Socket, Packets.Addr("10.99.0.2", 1));
        var ex = Assert.Throws<NotSupportedException>(() =>
            _dp.NewPeer(new PeerConfig(5, link, IPAddress.Parse("172.27.224.5"), null) { Compression = CompressionStub.LzoNo }));
        Assert.Contains("compression", ex.Message);
        ex = Assert.Throws<NotSupportedException>(() =>
            _dp.NewPeer(new PeerConfig(6, link, IPAddress.Parse("172.27.224.6"), null) { DataV2 = false }));
        Assert.Contains("DATA_V2", ex.Message);
        _dp.NewPeer(new PeerConfig(7, link, IPAddress.Parse("172.27.224.7"), null));
        Assert.Throws<NotSupportedException>(() => _dp.NewKey(new KeyConfig(7, KeySlot.Primary, 0, DataCipher.Aes256Cbc,
            new KeyDirection(new byte[32], new byte[8]), new KeyDirection(new byte[32], new byte[8]))));
        Assert.Throws<InvalidOperationException>(() => _dp.NewPeer(new PeerConfig(7, link, null, null)));
    }

    [Fact]
    public void Udp_round_trip_both_directions_with_counters()
    {
        var c = AddUdpPeer(1, "172.27.224.2");
        var wire = c.Data(1, size: 100);
        _sock.Inject(wire, c.Addr);
        var tun = TestWait.TakeTun(_tuns, 1);
        Assert.True(tun.Count == 1, $"global {string.Join(",", _dp.GlobalDrops)} peer {string.Join(",", _dp.GetPeer(1)!.Drops)} out {_dp.Pool.Outstanding} rx {_dp.GetPeer(1)!.LinkRxPackets} {_dp.LastWorkerError}");
        Assert.Equal(100, tun[0].Length);
        Assert.Equal(1u, Packets.Seq(tun[0]));

        var reply = Packets.Ipv4(Packets.ServerVpn, c.Vpn, 77, 200);
        _tuns[0].Inject(reply);
        var sent = TestWait.TakeSent(_sock, 1);
        Assert.Single(sent);
        Assert.Equal(c.Addr, sent[0].To);
        Assert.Equal((9 << 3) | 0, sent[0].Data[0]);
        Assert.Equal(1u, BinaryPrimitives.ReadUInt32BigEndian(sent[0].Data) & 0xFFFFFF);
        var plain = Packets.Open(c.Opener, sent[0].Data, out uint pid);
        Assert.Equal(1u, pid);
        Assert.Equal(reply, plain);

        TestWait.Eventually(() => _dp.GetPeer(1)!.LinkTxPackets == 1, "tx counters");
        var st = _dp.GetPeer(1)!;
        Assert.Equal(1, st.VpnRxPackets);
        Assert.Equal(100, st.VpnRxBytes);
        Assert.Equal(wire.Length, st.LinkRxBytes);
        Assert.Equal(1, st.VpnTxPackets);
        Assert.Equal(200, st.VpnTxBytes);
        Assert.Equal(224, st.LinkTxBytes);
        Assert.Empty(st.Drops);
        Assert.Empty(_events.Control);
    }

    [Fact]
    public void Per_peer_order_is_kept_in_both_directions_across_workers()
    {
        const int n = 3000;
        var clients = new[] { AddUdpPeer(1, "172.27.224.2"), AddUdpPeer(2, "172.27.224.3"), AddUdpPeer(3, "172.27.224.4") };
        for (uint i = 1; i <= n; i++)
        {
            foreach (var c in clients)
            {
                _sock.Inject(c.Data(i), c.Addr);
                // Two TUN queues feed the same peer: order across them is by arrival, as in the kernel.
                _tuns[(int)(i % 2)].Inject(Packets.Ipv4(Packets.ServerVpn, c.Vpn, i));
            }
        }

        var tun = TestWait.TakeTun(_tuns, 3 * n);
        Assert.Equal(3 * n, tun.Count);
        foreach (var c in clients)
        {
            var seqs = new List<uint>();
            foreach (var p in tun)
            {
                if (new IPAddress(p.AsSpan(12, 4)).Equals(c.Vpn))
                {
                    seqs.Add(Packets.Seq(p));
                }
            }

            // Each peer is opened by one worker and written to one TUN queue, so its order is exact.
            Assert.Equal(Enumerable.Range(1, n).Select(i => (uint)i), seqs);
        }

        var sent = TestWait.TakeSent(_sock, 3 * n);
        Assert.Equal(3 * n, sent.Count);
        foreach (var c in clients)
        {
            uint lastPid = 0;
            int count = 0;
            foreach (var (data, to) in sent)
            {
                if (!to.Equals(c.Addr))
                {
                    continue;
                }

                Packets.Open(c.Opener, data, out uint pid);
                Assert.Equal(lastPid + 1, pid); // packet ids leave in order, no gaps
                lastPid = pid;
                count++;
            }

            Assert.Equal(n, count);
        }

        if (!_inline)
        {
            // Pipelined workers flush one sendmmsg per drained batch.
            Assert.True(_sock.SendBatchCalls < 3 * n, $"sends were batched ({_sock.SendBatchCalls} calls for {3 * n} packets)");
        }

        TestWait.Eventually(() => _dp.Pool.Outstanding <= 64 + _tuns.Length, "buffers back in the pool (only the readers' receive buffers are out)");
    }

    [Fact]
    public void Replayed_and_too_old_packets_are_dropped_and_counted()
    {
        var c = AddUdpPeer(1, "172.27.224.2");
        var first = c.Data(1);
        _sock.Inject(first, c.Addr);
        _sock.Inject(first, c.Addr); // exact replay
        c.NextId = 200;
        _sock.Inject(c.Data(2), c.Addr);
        c.NextId = 100; // 100 behind the highest id: outside the 64-packet window
        _sock.Inject(c.Data(3), c.Addr);
        c.NextId = 190; // inside the window, never seen: accepted (reordering is allowed)
        _sock.Inject(c.Data(4), c.Addr);
        TestWait.Eventually(() => _dp.GetPeer(1)!.Drops.GetValueOrDefault("Replay") == 2, "two replay drops");
        var tun = TestWait.TakeTun(_tuns, 3);
        Assert.Equal(new uint[] { 1, 2, 4 }, tun.Select(Packets.Seq).ToArray());
    }

    [Fact]
    public void Malformed_forged_and_misaddressed_packets_are_dropped_and_counted()
    {
        var c = AddUdpPeer(1, "172.27.224.2");
        _sock.Inject([0x48, 0, 0], c.Addr); // DATA_V2, too short for a peer id
        _sock.Inject([0x48, 0, 0, 1, 0, 0, 0, 1], c.Addr); // header only
        var bad = c.Data(1);
        bad[^1] ^= 1; // tag check fails
        _sock.Inject(bad, c.Addr);
        _sock.Inject(Packets.Seal(c.Sealer, 0, 4242, 1, Packets.Ipv4(c.Vpn, Packets.ServerVpn, 1)), c.Addr); // unknown peer
        _sock.Inject(c.Data(2, keyId: 3), c.Addr); // no key 3
        _sock.Inject(Packets.Seal(c.Sealer, 0, 1, c.NextId++, Packets.Ipv4(IPAddress.Parse("172.27.224.99"), Packets.ServerVpn, 3)), c.Addr); // spoofed source
        _sock.Inject(Packets.Seal(c.Sealer, 0, 1, c.NextId++, new byte[10]), c.Addr); // not an IP packet
        _sock.Inject([(6 << 3), 1, 2, 3, 4], c.Addr); // DATA_V1: offload peers never use it
        _sock.Inject(c.Data(9), c.Addr); // a good one after all that
        var tun = TestWait.TakeTun(_tuns, 1);
        Assert.Equal(9u, Packets.Seq(tun.Single()));
        TestWait.Eventually(() => _dp.GetPeer(1)!.Drops.Values.Sum() == 5, "peer drops");
        var d = _dp.GetPeer(1)!.Drops;
        Assert.Equal(2, d["Malformed"]); // header-only packet and the 10-byte payload
        Assert.Equal(1, d["AuthFailed"]);
        Assert.Equal(1, d["UnknownKey"]);
        Assert.Equal(1, d["SourceAddress"]);
        var g = _dp.GlobalDrops;
        Assert.Equal(1, g["Malformed"]);
        Assert.Equal(2, g["UnknownPeer"]);
        Assert.Empty(_events.Control); // data packets, however broken, never reach the control plane
        Assert.Equal(1, _dp.GetPeer(1)!.VpnRxPackets);
    }

    [Fact]
    public void Control_packets_on_the_data_socket_are_handed_up()
    {
        var from = Packets.Addr("10.99.0.9", 5555);
        byte[] reset = [(7 << 3), 1, 2, 3, 4, 5, 6, 7, 8, 0];
        _sock.Inject(reset, from);
        TestWait.Eventually(() => !_events.Control.IsEmpty, "control packet");
        Assert.True(_events.Control.TryDequeue(out var cp));
        Assert.Equal(reset, cp.Packet);
        Assert.False(cp.Link.IsTcp);
        Assert.Equal(from, ((UdpLinkTransport)cp.Link).Address);
    }

    [Fact]
    public void Key_swap_with_traffic_flowing_loses_nothing()
    {
        var c = AddUdpPeer(1, "172.27.224.2");
        const int perPhase = 500;
        uint seq = 0;
        for (int i = 0; i < perPhase; i++)
        {
            _sock.Inject(c.Data(++seq, keyId: 0), c.Addr);
        }

        // Renegotiation: the new key goes in as secondary while key 0 traffic is still arriving.
        var k1 = new TestPeerKeys();
        _dp.NewKey(k1.ServerKey(1, KeySlot.Secondary, 1));
        using var sealer1 = k1.ClientSealer();
        using var opener1 = k1.ClientOpener();
        uint id1 = 1;
        for (int i = 0; i < perPhase; i++)
        {
            _sock.Inject(Packets.Seal(sealer1, 1, 1, id1++, Packets.Ipv4(c.Vpn, Packets.ServerVpn, ++seq)), c.Addr);
            _sock.Inject(c.Data(++seq, keyId: 0), c.Addr); // stragglers on the old key
        }

        _dp.SwapKeys(1);
        Assert.Equal(1, _dp.GetKeyId(1, KeySlot.Primary));
        Assert.Equal(0, _dp.GetKeyId(1, KeySlot.Secondary));
        _tuns[0].Inject(Packets.Ipv4(Packets.ServerVpn, c.Vpn, 1));
        for (int i = 0; i < perPhase; i++)
        {
            _sock.Inject(Packets.Seal(sealer1, 1, 1, id1++, Packets.Ipv4(c.Vpn, Packets.ServerVpn, ++seq)), c.Addr);
        }

        var tun = TestWait.TakeTun(_tuns, (int)seq);
        Assert.Equal((int)seq, tun.Count);
        Assert.Equal(Enumerable.Range(1, (int)seq).Select(i => (uint)i), tun.Select(Packets.Seq));

        // After the swap the server sends with key-id 1.
        var sent = TestWait.TakeSent(_sock, 1).Single();
        Assert.Equal(1, sent.Data[0] & 7);
        Packets.Open(opener1, sent.Data, out _);

        _dp.DeleteKey(1, KeySlot.Secondary);
        _sock.Inject(c.Data(++seq, keyId: 0), c.Addr);
        TestWait.Eventually(() => _dp.GetPeer(1)!.Drops.GetValueOrDefault("UnknownKey") == 1, "old key refused after delete");
        Assert.DoesNotContain(_dp.GetPeer(1)!.Drops, kv => kv.Key != "UnknownKey");
    }

    [Fact]
    public void Keepalive_pings_idle_peers_and_expires_silent_ones()
    {
        var c = AddUdpPeer(1, "172.27.224.2");
        _dp.SetPeer(1, TimeSpan.FromSeconds(10), TimeSpan.FromSeconds(60));
        _time.Advance(TimeSpan.FromSeconds(5));
        _dp.Tick();
        Assert.False(_sock.Sent.TryTake(out _, 200)); // not idle long enough

        _time.Advance(TimeSpan.FromSeconds(6));
        _dp.Tick();
        var ping = TestWait.TakeSent(_sock, 1).Single();
        Assert.True(SpecialPayloads.IsPing(Packets.Open(c.Opener, ping.Data, out _)));

        // A ping from the client keeps it alive; it is consumed, not written to TUN.
        byte[] magic = SpecialPayloads.PingMagic.ToArray();
        _sock.Inject(Packets.Seal(c.Sealer, 0, 1, c.NextId++, magic), c.Addr);
        TestWait.Eventually(() => _dp.GetPeer(1)!.LinkRxPackets == 1, "client ping");
        _time.Advance(TimeSpan.FromSeconds(50));
        _dp.Tick();
        Assert.NotNull(_dp.GetPeer(1));
        Assert.Empty(_events.Deleted);

        _time.Advance(TimeSpan.FromSeconds(11));
        _dp.Tick();
        Assert.Null(_dp.GetPeer(1));
        Assert.Equal((1u, PeerDeleteReason.Expired), _events.Deleted.Single());
        Assert.Empty(TestWait.TakeTun(_tuns, 0));
        Assert.True(_tuns.All(t => t.Written.Count == 0));
    }

    [Fact]
    public void Occ_exit_from_the_client_deletes_the_peer()
    {
        var c = AddUdpPeer(1, "172.27.224.2");
        var occ = new byte[17];
        SpecialPayloads.WriteOcc(occ, OccOpcode.Exit);
        _sock.Inject(Packets.Seal(c.Sealer, 0, 1, c.NextId++, occ), c.Addr);
        TestWait.Eventually(() => !_events.Deleted.IsEmpty, "peer deleted");
        Assert.Equal((1u, PeerDeleteReason.TransportDisconnect), _events.Deleted.Single());
    }

    [Fact]
    public void Renegotiation_is_signalled_once_near_packet_id_wrap()
    {
        var c = AddUdpPeer(1, "172.27.224.2");
        _dp.RenegotiationTrigger = 3;
        for (uint i = 1; i <= 5; i++)
        {
            _tuns[0].Inject(Packets.Ipv4(Packets.ServerVpn, c.Vpn, i));
        }

        Assert.Equal(5, TestWait.TakeSent(_sock, 5).Count);
        TestWait.Eventually(() => !_events.RenegotiationDue.IsEmpty, "renegotiation event");
        Thread.Sleep(50);
        Assert.Equal((1u, 0), _events.RenegotiationDue.Single());
    }

    [Fact]
    public void Authenticated_packet_from_a_new_address_floats_the_peer_forged_one_does_not()
    {
        var c = AddUdpPeer(1, "172.27.224.2");
        var roamed = Packets.Addr("10.99.0.3", 6000);
        var forged = c.Data(1);
        forged[30] ^= 0xFF;
        _sock.Inject(forged, roamed);
        _sock.Inject(c.Data(2), c.Addr);
        Assert.Single(TestWait.TakeTun(_tuns, 1));
        Assert.Empty(_events.Floated);

        _sock.Inject(c.Data(3), roamed);
        Assert.Single(TestWait.TakeTun(_tuns, 1));
        TestWait.Eventually(() => !_events.Floated.IsEmpty, "float event");
        Assert.Equal(roamed, ((UdpLinkTransport)_events.Floated.Single().Link).Address);
        _tuns[0].Inject(Packets.Ipv4(Packets.ServerVpn, c.Vpn, 9));
        Assert.Equal(roamed, TestWait.TakeSent(_sock, 1).Single().To);
    }

    [Fact]
    public void Tcp_peer_is_served_through_OnLinkPacket()
    {
        var keys = new TestPeerKeys();
        var link = new FakeTcpLink(new IPEndPoint(IPAddress.Parse("10.99.0.2"), 50000));
        var vpn = IPAddress.Parse("172.27.224.9");
        _dp.NewPeer(new PeerConfig(3, link, vpn, null));
        _dp.NewKey(keys.ServerKey(3, KeySlot.Primary, 0));
        using var sealer = keys.ClientSealer();
        using var opener = keys.ClientOpener();
        for (uint i = 1; i <= 100; i++)
        {
            _dp.OnLinkPacket(link, Packets.Seal(sealer, 0, 3, i, Packets.Ipv4(vpn, Packets.ServerVpn, i)), new byte[2048]);
        }

        Assert.Equal(Enumerable.Range(1, 100).Select(i => (uint)i), TestWait.TakeTun(_tuns, 100).Select(Packets.Seq));
        _tuns[1].Inject(Packets.Ipv4(Packets.ServerVpn, vpn, 5));
        Assert.True(link.Sent.TryTake(out var wire, Wait));
        Assert.Equal(5u, Packets.Seq(Packets.Open(opener, wire!, out _)));
        Assert.Equal(0, _sock.SendBatchCalls);

        // The same peer's packets arriving over another connection are refused.
        var other = new FakeTcpLink(new IPEndPoint(IPAddress.Parse("10.99.0.2"), 50001));
        _dp.OnLinkPacket(other, Packets.Seal(sealer, 0, 3, 101, Packets.Ipv4(vpn, Packets.ServerVpn, 101)), new byte[2048]);
        TestWait.Eventually(() => _dp.GetPeer(3)!.Drops.GetValueOrDefault("WrongLink") == 1, "wrong link drop");

        // Control packets from TCP go up with the TCP link.
        _dp.OnLinkPacket(link, [(4 << 3), 9, 9], new byte[16]);
        Assert.Same(link, _events.Control.Single().Link);
    }

    [Fact]
    public void Dispose_stops_every_engine_thread_and_returns_buffers()
    {
        var c = AddUdpPeer(1, "172.27.224.2");
        for (uint i = 1; i <= 200; i++)
        {
            _sock.Inject(c.Data(i), c.Addr);
            _tuns[0].Inject(Packets.Ipv4(Packets.ServerVpn, c.Vpn, i));
        }

        Assert.Equal(200, TestWait.TakeTun(_tuns, 200).Count);
        Assert.Equal(200, TestWait.TakeSent(_sock, 200).Count);
        Assert.Equal(_inline ? 1 + 2 : 2 + 1 + 2, _dp.RunningThreads); // (workers,) UDP reader, TUN readers
        _dp.Dispose();
        Assert.Equal(0, _dp.RunningThreads);
        Assert.Equal(0, _dp.Pool.Outstanding);
        Assert.Null(_dp.GetPeer(1));
    }

    [Fact]
    public void Deleted_peer_gets_no_more_traffic()
    {
        var c = AddUdpPeer(1, "172.27.224.2");
        _dp.DeletePeer(1);
        Assert.Null(_dp.GetPeer(1));
        Assert.Empty(_events.Deleted); // deletes asked for by the control plane are not echoed back
        _sock.Inject(c.Data(1), c.Addr);
        _tuns[0].Inject(Packets.Ipv4(Packets.ServerVpn, c.Vpn, 1));
        TestWait.Eventually(() => _dp.GlobalDrops.GetValueOrDefault("UnknownPeer") == 1 && _dp.GlobalDrops.GetValueOrDefault("NoRoute") == 1, "drops");
        Assert.Empty(TestWait.TakeTun(_tuns, 0));
    }
}
