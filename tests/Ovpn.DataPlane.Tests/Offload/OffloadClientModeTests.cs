// SPDX-License-Identifier: MIT
using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using Ovpn.DataPlane.Offload;
using Ovpn.DataPlane.Transport;
using Ovpn.Protocol.Data;
using Ovpn.Protocol.Keys;

namespace Ovpn.DataPlane.Tests.Offload;

/// <summary>
/// <see cref="OffloadOptions.ClientMode"/>: the engine as the client end of one tunnel, over the
/// in-memory doubles. The test plays the server: it seals with the server-to-client key and opens
/// what the engine sent with the client-to-server key.
/// </summary>
public sealed class OffloadClientModeTests : IDisposable
{
    private const uint PeerId = 7;
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(10);
    private static readonly IPAddress OwnVpn = IPAddress.Parse("172.27.224.9");
    private readonly ChannelDatagramSocket _sock = new();
    private readonly ChannelTun[] _tuns = [new(), new()];
    private readonly RecordingEvents _events = new();
    private readonly ManualTime _time = new();
    private readonly SocketAddress _server = Packets.Addr("10.99.0.1", 1194);
    private readonly TestPeerKeys _keys = new();
    private readonly AeadCodec _serverSealer;
    private readonly AeadCodec _serverOpener;
    private readonly UdpLinkTransport _link;
    private OffloadDataPlane? _dp;
    private uint _nextServerPid = 1;

    public OffloadClientModeTests()
    {
        _serverSealer = new AeadCodec(_keys.Cipher, _keys.S2CKey, _keys.S2CTail);
        _serverOpener = new AeadCodec(_keys.Cipher, _keys.C2SKey, _keys.C2STail);
        _link = new UdpLinkTransport(_sock.Socket, _server);
    }

    public void Dispose()
    {
        _dp?.Dispose();
        _sock.Dispose();
        _serverSealer.Dispose();
        _serverOpener.Dispose();
    }

    /// <summary>The client's view of the keys: encrypt client-to-server, decrypt server-to-client.</summary>
    private KeyConfig ClientKey(int keyId = 0) =>
        new(PeerId, KeySlot.Primary, keyId, _keys.Cipher, new KeyDirection((byte[])_keys.C2SKey.Clone(), (byte[])_keys.C2STail.Clone()),
            new KeyDirection((byte[])_keys.S2CKey.Clone(), (byte[])_keys.S2CTail.Clone()));

    private OffloadDataPlane Start(IBatchDatagramSocket[] sockets, ILinkTransport link, bool inline = true)
    {
        _dp = new OffloadDataPlane(sockets, _tuns, _events,
            new OffloadOptions { ClientMode = true, Workers = 2, PoolSize = 512, QueueLength = 512, KeepaliveTimer = false, Inline = inline, OwnsTunQueues = true },
            _time);
        _dp.NewPeer(new PeerConfig(PeerId, link, OwnVpn, null));
        _dp.NewKey(ClientKey());
        _dp.Start();
        return _dp;
    }

    private byte[] FromServer(byte[] plain, uint stampedPeerId = PeerId) =>
        Packets.Seal(_serverSealer, 0, stampedPeerId, _nextServerPid++, plain);

    private static byte[] Ipv6(uint seq, int size = 80)
    {
        var p = new byte[size];
        p[0] = 0x60;
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(4), (ushort)(size - 40));
        p[6] = 17;
        p[7] = 64;
        IPAddress.Parse("fd00:8::2").GetAddressBytes().CopyTo(p, 8);
        IPAddress.Parse("2001:db8::99").GetAddressBytes().CopyTo(p, 24);
        BinaryPrimitives.WriteUInt32BigEndian(p.AsSpan(40), seq);
        return p;
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Every_tun_packet_goes_to_the_server_ipv4_and_ipv6_any_destination(bool inline)
    {
        var dp = Start([_sock], _link, inline);
        // Destinations no route table would know: the kernel routed them into the tunnel (redirect-gateway, pushed routes).
        var v4 = Packets.Ipv4(OwnVpn, IPAddress.Parse("192.0.2.77"), 1, 120);
        var v6 = Ipv6(2);
        _tuns[0].Inject(v4);
        _tuns[1].Inject(v6);
        var sent = new List<(byte[] Data, SocketAddress To)>();
        while (sent.Count < 2 && _sock.Sent.TryTake(out var s, Wait))
        {
            sent.Add(s);
        }

        Assert.Equal(2, sent.Count);
        var plains = new List<byte[]>();
        foreach (var (data, to) in sent)
        {
            Assert.Equal(_server, to);
            Assert.Equal((9 << 3) | 0, data[0]);
            Assert.Equal(PeerId, BinaryPrimitives.ReadUInt32BigEndian(data) & 0xFFFFFF);
            plains.Add(Packets.Open(_serverOpener, data, out _));
        }

        Assert.Contains(plains, p => p.AsSpan().SequenceEqual(v4));
        Assert.Contains(plains, p => p.AsSpan().SequenceEqual(v6));
        TestWait.Eventually(() => dp.GetPeer(PeerId)!.VpnTxPackets == 2, "tx counters");
        Assert.Equal(v4.Length + v6.Length, dp.GetPeer(PeerId)!.VpnTxBytes);
        Assert.DoesNotContain("NoRoute", dp.GlobalDrops.Keys);
    }

    [Fact]
    public void Server_packets_reach_tun_without_a_source_check_whatever_peer_id_they_carry()
    {
        var dp = Start([_sock], _link);
        // Forwarded traffic from a host behind the server: source is not our own VPN address.
        var v4 = Packets.Ipv4(IPAddress.Parse("198.51.100.5"), OwnVpn, 11, 90);
        var v6 = Ipv6(12);
        _sock.Inject(FromServer(v4), _server);
        // A server may stamp another peer-id on its packets; the client has one peer anyway.
        _sock.Inject(FromServer(v6, stampedPeerId: 0xFFFFFF), _server);
        var tun = TestWait.TakeTun(_tuns, 2);
        Assert.True(tun.Count == 2, $"drops {string.Join(",", dp.GetPeer(PeerId)!.Drops)} global {string.Join(",", dp.GlobalDrops)} {dp.LastWorkerError}");
        Assert.Contains(tun, p => p.AsSpan().SequenceEqual(v4));
        Assert.Contains(tun, p => p.AsSpan().SequenceEqual(v6));
        var st = dp.GetPeer(PeerId)!;
        Assert.Equal(2, st.VpnRxPackets);
        Assert.DoesNotContain("SourceAddress", st.Drops.Keys);
    }

    [Fact]
    public void Control_packets_from_the_server_go_up_with_the_servers_link_and_strangers_are_dropped()
    {
        var dp = Start([_sock], _link);
        byte[] control = [(4 << 3) | 0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
        _sock.Inject(control, _server);
        TestWait.Eventually(() => !_events.Control.IsEmpty, "control packet");
        var (link, packet) = _events.Control.Single();
        Assert.Same(_link, link);
        Assert.Equal(control, packet);

        // Another address: neither its control packets nor its data (even if correctly sealed) are taken.
        var stranger = Packets.Addr("10.99.0.66", 1194);
        _sock.Inject(control, stranger);
        _sock.Inject(FromServer(Packets.Ipv4(IPAddress.Parse("198.51.100.5"), OwnVpn, 1)), stranger);
        TestWait.Eventually(() => dp.GlobalDrops.GetValueOrDefault("WrongLink") == 2, "two wrong-link drops");
        Assert.Single(_events.Control);
        Assert.All(_tuns, t => Assert.Empty(t.Written));
        Assert.Equal(0, dp.GetPeer(PeerId)!.VpnRxPackets);
        Assert.Empty(_events.Floated);
    }

    [Fact]
    public void Carries_exactly_one_peer()
    {
        Start([_sock], _link);
        var ex = Assert.Throws<InvalidOperationException>(() =>
            _dp!.NewPeer(new PeerConfig(PeerId + 1, _link, IPAddress.Parse("172.27.224.10"), null)));
        Assert.Contains("one peer", ex.Message);
        _dp!.DeletePeer(PeerId);
        // Without its peer, TUN packets have nowhere to go.
        _tuns[0].Inject(Packets.Ipv4(OwnVpn, IPAddress.Parse("192.0.2.1"), 1));
        TestWait.Eventually(() => _dp.GlobalDrops.GetValueOrDefault("NoRoute") == 1, "no-route drop");
        Assert.Empty(_sock.Sent);
    }

    [Fact]
    public void Keepalive_pings_the_server_and_expires_without_traffic()
    {
        var dp = Start([_sock], _link);
        dp.SetPeer(PeerId, TimeSpan.FromSeconds(10), TimeSpan.FromSeconds(60));
        _time.Advance(TimeSpan.FromSeconds(11));
        dp.Tick();
        Assert.True(_sock.Sent.TryTake(out var ping, Wait));
        Assert.Equal(_server, ping.To);
        Assert.True(SpecialPayloads.IsPing(Packets.Open(_serverOpener, ping.Data, out _)));

        // A ping from the server is consumed (not written to TUN) and keeps the peer alive.
        _time.Advance(TimeSpan.FromSeconds(40));
        _sock.Inject(FromServer(SpecialPayloads.PingMagic.ToArray()), _server);
        TestWait.Eventually(() => dp.GetPeer(PeerId)!.LinkRxPackets == 1, "server ping");
        _time.Advance(TimeSpan.FromSeconds(40));
        dp.Tick();
        Assert.Empty(_events.Deleted);
        Assert.All(_tuns, t => Assert.Empty(t.Written));

        _time.Advance(TimeSpan.FromSeconds(30));
        dp.Tick();
        Assert.Equal((PeerId, PeerDeleteReason.Expired), _events.Deleted.Single());
    }

    [Fact]
    public void Tcp_link_is_fed_by_the_clients_reader_and_sends_on_the_link()
    {
        var tcp = new FakeTcpLink(new IPEndPoint(IPAddress.Parse("10.99.0.1"), 443));
        var dp = Start([], tcp);
        var v4 = Packets.Ipv4(IPAddress.Parse("198.51.100.5"), OwnVpn, 5, 70);
        dp.OnLinkPacket(tcp, FromServer(v4), new byte[2048]);
        var tun = TestWait.TakeTun(_tuns, 1);
        Assert.Single(tun);
        Assert.Equal(v4, tun[0]);

        byte[] control = [(4 << 3) | 0, 9, 9, 9];
        dp.OnLinkPacket(tcp, control, new byte[2048]);
        Assert.Same(tcp, _events.Control.Single().Link);

        var up = Packets.Ipv4(OwnVpn, IPAddress.Parse("192.0.2.8"), 6, 60);
        _tuns[1].Inject(up);
        Assert.True(tcp.Sent.TryTake(out var wire, Wait));
        Assert.Equal(up, Packets.Open(_serverOpener, wire, out _));
    }
}
