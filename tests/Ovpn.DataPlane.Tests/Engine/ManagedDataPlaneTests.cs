// SPDX-License-Identifier: MIT
using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Net;
using Ovpn.DataPlane;
using Ovpn.DataPlane.Engine;
using Ovpn.Protocol.Data;
using Ovpn.Protocol.Keys;

namespace Ovpn.DataPlane.Tests.Engine;

/// <summary>
/// The single-threaded daemon engine over in-memory link and TUN doubles: a "client" seals packets
/// with the mirror keys and the engine must decrypt, check and deliver them (and the reverse).
/// </summary>
public sealed class ManagedDataPlaneTests : IDisposable
{
    private static readonly IPAddress ClientIp = IPAddress.Parse("172.27.224.2");
    private readonly ManualTime _time = new();
    private readonly MemoryTun _tun = new();
    private readonly RecordingEvents _events = new();
    private readonly MemoryLink _link = new();
    private readonly ManagedDataPlane _dp;
    private readonly byte[] _scratch = new byte[ManagedDataPlane.MaxPacket * 2];

    public ManagedDataPlaneTests()
    {
        _dp = new ManagedDataPlane(_tun, _events, _time);
        _dp.NewPeer(new PeerConfig(5, _link, ClientIp, null));
    }

    public void Dispose() => _dp.Dispose();

    // Server keys: encrypt with (K2, IV3), decrypt with (K0, IV1); the client mirrors them.
    private static KeyConfig ServerKey(int keyId, KeySlot slot, byte seed) =>
        new(5, slot, keyId, DataCipher.Aes256Gcm, new KeyDirection(Fill(32, (byte)(seed + 2)), Fill(8, (byte)(seed + 3))),
            new KeyDirection(Fill(32, seed), Fill(8, (byte)(seed + 1))));

    private static AeadCodec ClientSealer(byte seed) => new(DataCipher.Aes256Gcm, Fill(32, seed), Fill(8, (byte)(seed + 1)));

    private static AeadCodec ClientOpener(byte seed) => new(DataCipher.Aes256Gcm, Fill(32, (byte)(seed + 2)), Fill(8, (byte)(seed + 3)));

    private static byte[] Fill(int n, byte v) => Enumerable.Repeat(v, n).ToArray();

    private static byte[] IpPacket(IPAddress src, IPAddress dst, int payload, byte marker)
    {
        var p = new byte[20 + payload];
        p[0] = 0x45;
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(2), (ushort)p.Length);
        p[9] = 17;
        src.GetAddressBytes().CopyTo(p, 12);
        dst.GetAddressBytes().CopyTo(p, 16);
        p.AsSpan(20).Fill(marker);
        return p;
    }

    private byte[] Seal(AeadCodec c, int keyId, uint pid, byte[] plain)
    {
        var wire = new byte[plain.Length + 64];
        int n = c.SealDataV2(wire, keyId, 5, pid, plain);
        return wire[..n];
    }

    private void Receive(byte[] wire) => _dp.OnLinkPacket(_link, wire, _scratch);

    [Fact]
    public void DeliversAuthenticatedPacketsInOrderAndDropsReplays()
    {
        _dp.NewKey(ServerKey(0, KeySlot.Primary, 10));
        using var c = ClientSealer(10);
        for (uint i = 1; i <= 50; i++)
        {
            Receive(Seal(c, 0, i, IpPacket(ClientIp, IPAddress.Parse("10.1.1.1"), 100, (byte)i)));
        }

        Receive(Seal(c, 0, 7, IpPacket(ClientIp, IPAddress.Parse("10.1.1.1"), 100, 7))); // replay
        Assert.Equal(50, _tun.Written.Count);
        Assert.Equal(Enumerable.Range(1, 50).Select(i => (byte)i), _tun.Written.Select(p => p[20]));
        var st = _dp.GetPeer(5)!;
        Assert.Equal(50, st.VpnRxPackets);
        Assert.Equal(1, st.Drops["Replay"]);
    }

    [Fact]
    public void WrongKeyTamperingAndSpoofedSourceAreDroppedAndCounted()
    {
        _dp.NewKey(ServerKey(0, KeySlot.Primary, 10));
        using var good = ClientSealer(10);
        using var bad = ClientSealer(99);
        Receive(Seal(bad, 0, 1, IpPacket(ClientIp, ClientIp, 10, 1)));
        var t = Seal(good, 0, 2, IpPacket(ClientIp, ClientIp, 10, 1));
        t[^1] ^= 1;
        Receive(t);
        Receive(Seal(good, 3, 3, IpPacket(ClientIp, ClientIp, 10, 1)));                       // unknown key id
        Receive(Seal(good, 0, 4, IpPacket(IPAddress.Parse("172.27.224.9"), ClientIp, 10, 1))); // not its address
        Receive([0x48, 0, 0]);                                                                   // truncated
        Receive(Seal(good, 0, 5, [1, 2, 3]));                                                    // not an IP packet
        Assert.Empty(_tun.Written);
        var d = _dp.GetPeer(5)!.Drops;
        Assert.Equal(2, d["AuthFailed"]);
        Assert.Equal(1, d["UnknownKey"]);
        Assert.Equal(1, d["SourceAddress"]);
        Assert.Equal(1, d["Malformed"]);
        Assert.Equal(1, _dp.GlobalDrops["Malformed"]);
    }

    [Fact]
    public void ControlPacketsGoUpAndUnknownPeersAreCounted()
    {
        Receive([0x38, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0]);
        Assert.Single(_events.Control);
        Receive([0x48, 0, 0, 9, 1, 2, 3, 4]);
        Assert.Equal(1, _dp.GlobalDrops["UnknownPeer"]);
    }

    [Fact]
    public void TunPacketsAreSealedForTheRoutedPeerAndOpenByTheClient()
    {
        _dp.NewKey(ServerKey(0, KeySlot.Primary, 10));
        using var open = ClientOpener(10);
        _tun.Inject(IpPacket(IPAddress.Parse("172.27.224.1"), ClientIp, 300, 0xAB));
        _tun.Inject(IpPacket(IPAddress.Parse("172.27.224.1"), IPAddress.Parse("172.27.224.77"), 300, 0xCD)); // no such client
        _dp.Start();
        Assert.True(SpinWait.SpinUntil(() => _link.Sent.Count >= 1 && _dp.GlobalDrops.ContainsKey("NoRoute"), 5000));
        var wire = _link.Sent.Single();
        var plain = new byte[wire.Length];
        Assert.Equal(DataDropReason.None, open.Open(wire, plain, out int n, out uint pid));
        Assert.Equal(1u, pid);
        Assert.Equal(320, n);
        Assert.Equal(0xAB, plain[20]);
        Assert.Equal(1, _dp.GetPeer(5)!.VpnTxPackets);
    }

    [Fact]
    public void KeySwapWithTrafficFlowingLosesNothing()
    {
        _dp.NewKey(ServerKey(0, KeySlot.Primary, 10));
        using var k0 = ClientSealer(10);
        using var k1 = ClientSealer(40);
        uint pid0 = 1, pid1 = 1;
        for (int i = 0; i < 20; i++)
        {
            Receive(Seal(k0, 0, pid0++, IpPacket(ClientIp, ClientIp, 10, 1)));
        }

        _dp.NewKey(ServerKey(1, KeySlot.Secondary, 40));
        // During the transition the client may use either key.
        for (int i = 0; i < 20; i++)
        {
            Receive(i % 2 == 0 ? Seal(k0, 0, pid0++, IpPacket(ClientIp, ClientIp, 10, 1)) : Seal(k1, 1, pid1++, IpPacket(ClientIp, ClientIp, 10, 1)));
        }

        _dp.SwapKeys(5);
        Assert.Equal(1, _dp.GetKeyId(5, KeySlot.Primary));
        Assert.Equal(0, _dp.GetKeyId(5, KeySlot.Secondary));
        Receive(Seal(k0, 0, pid0++, IpPacket(ClientIp, ClientIp, 10, 1)));
        _dp.DeleteKey(5, KeySlot.Secondary);
        Receive(Seal(k0, 0, pid0++, IpPacket(ClientIp, ClientIp, 10, 1)));
        Receive(Seal(k1, 1, pid1++, IpPacket(ClientIp, ClientIp, 10, 1)));
        Assert.Equal(42, _tun.Written.Count);
        Assert.Equal(1, _dp.GetPeer(5)!.Drops["UnknownKey"]);
    }

    [Fact]
    public void KeepaliveSendsPingsAndExpiresSilentPeers()
    {
        _dp.NewKey(ServerKey(0, KeySlot.Primary, 10));
        _dp.SetPeer(5, TimeSpan.FromSeconds(10), TimeSpan.FromSeconds(60));
        _time.Advance(TimeSpan.FromSeconds(11));
        _dp.Tick();
        using var open = ClientOpener(10);
        var plain = new byte[64];
        Assert.Equal(DataDropReason.None, open.Open(_link.Sent.Single(), plain, out int n, out _));
        Assert.True(SpecialPayloads.IsPing(plain.AsSpan(0, n)));
        Assert.Empty(_events.Deleted);
        _time.Advance(TimeSpan.FromSeconds(50));
        _dp.Tick();
        Assert.Equal((5u, PeerDeleteReason.Expired), _events.Deleted.Single());
        Assert.Null(_dp.GetPeer(5));
    }

    [Fact]
    public void SendCounterNeverWrapsAndAsksForRenegotiation()
    {
        _dp.RenegotiationTrigger = 3;
        _dp.NewKey(ServerKey(0, KeySlot.Primary, 10));
        _dp.SetPeer(5, TimeSpan.FromSeconds(1), TimeSpan.Zero);
        for (int i = 0; i < 4; i++)
        {
            _time.Advance(TimeSpan.FromSeconds(2));
            _dp.Tick();
        }

        Assert.Equal((5u, 0), _events.Renegotiate.Single());
    }

    [Fact]
    public void OccExitRemovesThePeer()
    {
        _dp.NewKey(ServerKey(0, KeySlot.Primary, 10));
        using var c = ClientSealer(10);
        var occ = new byte[17];
        SpecialPayloads.WriteOcc(occ, OccOpcode.Exit);
        Receive(Seal(c, 0, 1, occ));
        Assert.Equal((5u, PeerDeleteReason.TransportDisconnect), _events.Deleted.Single());
    }

    [Theory]
    [InlineData(CompressionStub.LzoNo)]
    [InlineData(CompressionStub.Swap)]
    [InlineData(CompressionStub.StubV2)]
    public void StubFramedPeersAreUnframed(CompressionStub stub)
    {
        var link = new MemoryLink();
        _dp.NewPeer(new PeerConfig(6, link, IPAddress.Parse("172.27.224.3"), null) { Compression = stub });
        _dp.NewKey(ServerKey(0, KeySlot.Primary, 10) with { PeerId = 6 });
        using var c = ClientSealer(10);
        var ip = IpPacket(IPAddress.Parse("172.27.224.3"), ClientIp, 40, 0x50);
        byte[] framed = stub switch
        {
            CompressionStub.LzoNo => [0xFA, .. ip],
            CompressionStub.Swap => [0xFB, .. ip[1..], ip[0]],
            _ => ip, // stub-v2: only a leading 0x50 would be escaped
        };
        var wire = new byte[framed.Length + 64];
        int n = c.SealDataV2(wire, 0, 6, 1, framed);
        _dp.OnLinkPacket(link, wire.AsSpan(0, n), _scratch);
        Assert.Equal(ip, _tun.Written.Single());
    }

    private sealed class ManualTime : TimeProvider
    {
        private long _ticks = 1_000_000;

        public override long TimestampFrequency => TimeSpan.TicksPerSecond;

        public override long GetTimestamp() => Interlocked.Read(ref _ticks);

        public void Advance(TimeSpan t) => Interlocked.Add(ref _ticks, t.Ticks);
    }

    private sealed class MemoryTun : ITunDevice
    {
        private readonly BlockingCollection<byte[]> _in = [];

        public ConcurrentQueue<byte[]> WrittenQueue { get; } = new();

        public List<byte[]> Written => [.. WrittenQueue];

        public string Name => "mem0";

        public void Inject(byte[] p) => _in.Add(p);

        public int Read(Span<byte> buffer)
        {
            if (!_in.TryTake(out var p, 200))
            {
                return 0;
            }

            p.CopyTo(buffer);
            return p.Length;
        }

        public void Write(ReadOnlySpan<byte> packet) => WrittenQueue.Enqueue(packet.ToArray());

        public void Dispose() => _in.CompleteAdding();
    }

    private sealed class MemoryLink : ILinkTransport
    {
        private readonly ConcurrentQueue<byte[]> _sent = new();

        public List<byte[]> Sent => [.. _sent];

        public EndPoint Remote => new IPEndPoint(IPAddress.Loopback, 1);

        public bool IsTcp => false;

        public void Send(ReadOnlySpan<byte> packet) => _sent.Enqueue(packet.ToArray());

        public string Describe() => "mem";

        public void Close()
        {
        }
    }

    private sealed class RecordingEvents : IDataPlaneEvents
    {
        public ConcurrentQueue<byte[]> ControlQueue { get; } = new();

        public List<byte[]> Control => [.. ControlQueue];

        public List<(uint, PeerDeleteReason)> Deleted { get; } = [];

        public List<(uint, int)> Renegotiate { get; } = [];

        public void OnControlPacket(ILinkTransport link, ReadOnlySpan<byte> packet) => ControlQueue.Enqueue(packet.ToArray());

        public void OnKeyRenegotiationDue(uint peerId, int keyId) => Renegotiate.Add((peerId, keyId));

        public void OnPeerDeleted(uint peerId, PeerDeleteReason reason) => Deleted.Add((peerId, reason));

        public void OnPeerFloated(uint peerId, ILinkTransport newLink)
        {
        }
    }
}
