// SPDX-License-Identifier: MIT
using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using Ovpn.Protocol.Data;
using Ovpn.Protocol.Wire;

namespace Ovpn.DataPlane.Engine;

/// <summary>
/// The in-process data plane: AEAD data channel between links (UDP/TCP) and one TUN device.
///
/// Pipeline (each stage runs inline on the thread that received the packet):
///   link receive thread(s)  -> parse opcode -> peer by peer-id (DATA_V2) or by link (DATA_V1)
///                           -> key slot by key-id -> AEAD open -> replay check -> unframe
///                           -> ping/OCC handled here, IP packets: source check -> TUN write
///   TUN reader thread       -> destination IPv4 -> peer -> primary key -> packet-id -> AEAD seal
///                           -> link send
///   timer (Tick)            -> keepalive pings and ping-restart expiry
/// Decryption state of a key (codec + replay window) is guarded by its receive lock, encryption
/// state (codec + packet-id) by the peer's send lock, so per-peer order holds in each direction.
/// </summary>
public sealed class ManagedDataPlane : IDataPlane, ILinkPacketSink
{
    public const int MaxPacket = 2048;

    private readonly ITunDevice? _tun;
    private readonly IDataPlaneEvents _events;
    private readonly TimeProvider _time;
    private readonly ConcurrentDictionary<uint, Peer> _peers = new();
    private readonly ConcurrentDictionary<uint, Peer> _routesV4 = new();
    private readonly ConcurrentDictionary<ILinkTransport, Peer> _byLink = new(ReferenceEqualityComparer.Instance);
    private readonly ConcurrentDictionary<SocketAddress, Peer> _byUdpAddress = new();
    private readonly long[] _globalDrops = new long[Enum.GetValues<DropReason>().Length];
    private Thread? _tunThread;
    private volatile bool _disposed;

    public ManagedDataPlane(ITunDevice? tun, IDataPlaneEvents events, TimeProvider? time = null)
    {
        _tun = tun;
        _events = events;
        _time = time ?? TimeProvider.System;
    }

    /// <summary>
    /// Client ("P2P") mode: the engine has exactly one peer, the server. Every packet read from the
    /// TUN goes to it (no per-destination routing, IPv6 too), and received packets are not checked
    /// against the peer's VPN address (the server forwards traffic from anywhere). Server mode is
    /// unchanged when this is false.
    /// </summary>
    public bool ClientMode { get; init; }

    public string EngineName => "ovpnas-userspace";

    public string EngineVersion => typeof(ManagedDataPlane).Assembly.GetName().Version?.ToString() ?? "0";

    public IReadOnlyDictionary<string, long> GlobalDrops
    {
        get
        {
            var d = new Dictionary<string, long>();
            foreach (var r in Enum.GetValues<DropReason>())
            {
                long v = Interlocked.Read(ref _globalDrops[(int)r]);
                if (v != 0)
                {
                    d[r.ToString()] = v;
                }
            }

            return d;
        }
    }

    /// <summary>Starts the TUN reader thread.</summary>
    public void Start()
    {
        if (_tun is null || _tunThread is not null)
        {
            return;
        }

        _tunThread = new Thread(RunTunReader) { IsBackground = true, Name = "dp-tun-reader" };
        _tunThread.Start();
    }

    public void NewPeer(PeerConfig config)
    {
        var p = new Peer(config, _time.GetTimestamp());
        if (!_peers.TryAdd(config.PeerId, p))
        {
            throw new InvalidOperationException($"peer {config.PeerId} exists");
        }

        if (config.VpnIPv4 is not null)
        {
            _routesV4[IPv4Key(config.VpnIPv4)] = p;
        }

        Bind(p, config.Transport);
    }

    private void Bind(Peer p, ILinkTransport link)
    {
        _byLink[link] = p;
        if (link is Transport.UdpLinkTransport udp)
        {
            _byUdpAddress[udp.Address] = p;
        }
    }

    private void Unbind(Peer p, ILinkTransport link)
    {
        _byLink.TryRemove(new KeyValuePair<ILinkTransport, Peer>(link, p));
        if (link is Transport.UdpLinkTransport udp)
        {
            _byUdpAddress.TryRemove(new KeyValuePair<SocketAddress, Peer>(udp.Address, p));
        }
    }

    /// <summary>Finds the peer that owns a link (for control packets on a known UDP address).</summary>
    public uint? FindPeerByUdpAddress(SocketAddress address) => _byUdpAddress.TryGetValue(address, out var p) ? p.Id : null;

    public void SetPeer(uint peerId, TimeSpan keepaliveInterval, TimeSpan keepaliveTimeout)
    {
        var p = GetPeerOrThrow(peerId);
        p.KeepaliveInterval = keepaliveInterval;
        p.KeepaliveTimeout = keepaliveTimeout;
    }

    public PeerStats? GetPeer(uint peerId) => _peers.TryGetValue(peerId, out var p) ? p.Snapshot() : null;

    public IReadOnlyList<PeerStats> GetPeers()
    {
        var list = new List<PeerStats>();
        foreach (var p in _peers.Values)
        {
            list.Add(p.Snapshot());
        }

        list.Sort((a, b) => a.PeerId.CompareTo(b.PeerId));
        return list;
    }

    public void DeletePeer(uint peerId) => RemovePeer(peerId, notify: null);

    private void RemovePeer(uint peerId, PeerDeleteReason? notify)
    {
        if (!_peers.TryRemove(peerId, out var p))
        {
            return;
        }

        if (p.VpnIPv4 is not null)
        {
            _routesV4.TryRemove(new KeyValuePair<uint, Peer>(IPv4Key(p.VpnIPv4), p));
        }

        Unbind(p, p.Link);
        p.DisposeKeys();
        if (notify is { } reason)
        {
            _events.OnPeerDeleted(peerId, reason);
        }
    }

    public void NewKey(KeyConfig key)
    {
        var p = GetPeerOrThrow(key.PeerId);
        var ks = new KeyState(key);
        key.Encrypt.Clear();
        key.Decrypt.Clear();
        lock (p.SendLock)
        {
            var old = key.Slot == KeySlot.Primary ? p.Primary : p.Secondary;
            if (key.Slot == KeySlot.Primary)
            {
                p.Primary = ks;
            }
            else
            {
                p.Secondary = ks;
            }

            old?.Dispose();
        }
    }

    public void SwapKeys(uint peerId)
    {
        var p = GetPeerOrThrow(peerId);
        lock (p.SendLock)
        {
            (p.Primary, p.Secondary) = (p.Secondary, p.Primary);
        }
    }

    public void DeleteKey(uint peerId, KeySlot slot)
    {
        var p = GetPeerOrThrow(peerId);
        lock (p.SendLock)
        {
            KeyState? old;
            if (slot == KeySlot.Primary)
            {
                old = p.Primary;
                p.Primary = null;
            }
            else
            {
                old = p.Secondary;
                p.Secondary = null;
            }

            old?.Dispose();
        }
    }

    /// <summary>Key id in a slot, for the control plane's bookkeeping (null when empty).</summary>
    public int? GetKeyId(uint peerId, KeySlot slot)
    {
        var p = GetPeerOrThrow(peerId);
        return (slot == KeySlot.Primary ? p.Primary : p.Secondary)?.KeyId;
    }

    private Peer GetPeerOrThrow(uint peerId) =>
        _peers.TryGetValue(peerId, out var p) ? p : throw new KeyNotFoundException($"no peer {peerId}");

    /// <summary>
    /// Entry point for every packet read from a link. Data packets are consumed here; anything else
    /// is handed to the control plane. <paramref name="scratch"/> is the calling thread's work buffer
    /// (at least <see cref="MaxPacket"/> bytes).
    /// </summary>
    public void OnLinkPacket(ILinkTransport link, ReadOnlySpan<byte> packet, Span<byte> scratch)
    {
        if (packet.Length == 0)
        {
            CountGlobal(DropReason.Malformed);
            return;
        }

        var op = OpcodeByte.GetOpcode(packet[0]);
        if (op == Opcode.DataV2)
        {
            if (packet.Length < 4)
            {
                CountGlobal(DropReason.Malformed);
                return;
            }

            uint peerId = BinaryPrimitives.ReadUInt32BigEndian(packet) & 0xFFFFFF;
            if (!_peers.TryGetValue(peerId, out var peer))
            {
                // A 2.6 client that was never told a peer-id would send V1; unknown ids are stale or forged.
                CountGlobal(DropReason.UnknownPeer);
                return;
            }

            ReceiveData(peer, link, packet, scratch);
        }
        else if (op == Opcode.DataV1)
        {
            if (!_byLink.TryGetValue(link, out var peer) &&
                !(link is Transport.UdpLinkTransport u && _byUdpAddress.TryGetValue(u.Address, out peer)))
            {
                CountGlobal(DropReason.UnknownPeer);
                return;
            }

            ReceiveData(peer, link, packet, scratch);
        }
        else
        {
            _events.OnControlPacket(link, packet);
        }
    }

    private void ReceiveData(Peer peer, ILinkTransport link, ReadOnlySpan<byte> packet, Span<byte> scratch)
    {
        int keyId = OpcodeByte.GetKeyId(packet[0]);
        var ks = peer.Primary is { } pk && pk.KeyId == keyId ? pk
            : peer.Secondary is { } sk && sk.KeyId == keyId ? sk : null;
        if (ks is null)
        {
            peer.Count(DropReason.UnknownKey);
            return;
        }

        int len;
        lock (ks.ReceiveLock)
        {
            if (ks.Disposed)
            {
                peer.Count(DropReason.UnknownKey);
                return;
            }

            var r = ks.Decrypt.Open(packet, scratch, out len, out uint packetId);
            if (r != DataDropReason.None)
            {
                peer.Count(r == DataDropReason.Malformed ? DropReason.Malformed : DropReason.AuthFailed);
                return;
            }

            if (!ks.Replay.CheckAndUpdate(packetId))
            {
                peer.Count(DropReason.Replay);
                return;
            }
        }

        // Authenticated: only now may the packet move the peer (float) or refresh its liveness.
        Interlocked.Add(ref peer.LinkRxBytes, packet.Length);
        Interlocked.Increment(ref peer.LinkRxPackets);
        Volatile.Write(ref peer.LastRx, _time.GetTimestamp());
        if (!ReferenceEquals(link, peer.Link))
        {
            if (link.IsTcp || peer.Link.IsTcp)
            {
                peer.Count(DropReason.WrongLink);
                return;
            }

            if (!(link is Transport.UdpLinkTransport nu && peer.Link is Transport.UdpLinkTransport ou && nu.Address.Equals(ou.Address)))
            {
                var old = peer.Link;
                peer.Link = link;
                Unbind(peer, old);
                Bind(peer, link);
                _events.OnPeerFloated(peer.Id, link);
            }
        }

        var plain = scratch[..len];
        if (!Unframe(peer.Stub, ref plain))
        {
            peer.Count(DropReason.Compression);
            return;
        }

        if (SpecialPayloads.IsPing(plain))
        {
            return;
        }

        if (SpecialPayloads.TryGetOcc(plain, out var occ, out _))
        {
            if (occ == OccOpcode.Exit)
            {
                RemovePeer(peer.Id, PeerDeleteReason.TransportDisconnect);
            }

            return;
        }

        if (plain.Length < 20)
        {
            peer.Count(DropReason.Malformed);
            return;
        }

        int version = plain[0] >> 4;
        if (version == 4)
        {
            uint src = BinaryPrimitives.ReadUInt32BigEndian(plain[12..]);
            if (!ClientMode && peer.VpnIPv4Key != src)
            {
                peer.Count(DropReason.SourceAddress);
                return;
            }
        }
        else if (version != 6)
        {
            peer.Count(DropReason.Malformed);
            return;
        }

        Interlocked.Add(ref peer.VpnRxBytes, plain.Length);
        Interlocked.Increment(ref peer.VpnRxPackets);
        _tun?.Write(plain);
    }

    private static CompressionFramingMode FramingOf(CompressionStub stub) => stub switch
    {
        CompressionStub.LzoNo => CompressionFramingMode.LzoStub,
        CompressionStub.Swap => CompressionFramingMode.CompStub,
        CompressionStub.StubV2 => CompressionFramingMode.CompStubV2,
        _ => CompressionFramingMode.None,
    };

    /// <summary>Removes a peer's stub framing in place; false for real compression or a bad byte.</summary>
    private static bool Unframe(CompressionStub stub, ref Span<byte> plain)
    {
        if (stub == CompressionStub.None)
        {
            return true;
        }

        if (CompressionFraming.Decode(FramingOf(stub), plain, out int offset, out int length) != DataDropReason.None)
        {
            return false;
        }

        plain = plain.Slice(offset, length);
        return true;
    }

    /// <summary>Writes the payload with the peer's stub framing into dst; returns the framed length.</summary>
    private static int Frame(CompressionStub stub, ReadOnlySpan<byte> payload, Span<byte> dst) =>
        CompressionFraming.Encode(FramingOf(stub), payload, dst);

    private void RunTunReader()
    {
        var buf = new byte[65536];
        var plain = new byte[65536 + 4];
        var wire = new byte[65536 + 64];
        while (!_disposed)
        {
            int n;
            try
            {
                n = _tun!.Read(buf);
            }
            catch (Exception) when (_disposed)
            {
                return;
            }

            if (n <= 0)
            {
                if (_disposed)
                {
                    return;
                }

                continue;
            }

            var pkt = buf.AsSpan(0, n);
            if (ClientMode)
            {
                // One peer: everything the kernel routed into the tunnel goes to the server.
                Peer? only = null;
                foreach (var p in _peers.Values)
                {
                    only = p;
                    break;
                }

                if (only is null)
                {
                    CountGlobal(DropReason.NoRoute);
                    continue;
                }

                SendToPeer(only, pkt, plain, wire, vpnPayload: true);
                continue;
            }

            if ((pkt[0] >> 4) != 4 || n < 20)
            {
                // IPv6 is not routed to clients yet (no IPv6 pool); count it rather than guess.
                CountGlobal(DropReason.NoRoute);
                continue;
            }

            uint dst = BinaryPrimitives.ReadUInt32BigEndian(pkt[16..]);
            if (!_routesV4.TryGetValue(dst, out var peer))
            {
                CountGlobal(DropReason.NoRoute);
                continue;
            }

            SendToPeer(peer, pkt, plain, wire, vpnPayload: true);
        }
    }

    private void SendToPeer(Peer peer, ReadOnlySpan<byte> payload, Span<byte> plainScratch, Span<byte> wire, bool vpnPayload)
    {
        if (payload.Length > MaxPacket + 65536 - 128)
        {
            peer.Count(DropReason.TooBig);
            return;
        }

        int plainLen = Frame(peer.Stub, payload, plainScratch);
        int len;
        bool renegDue = false;
        int keyId;
        lock (peer.SendLock)
        {
            var ks = peer.Primary;
            if (ks is null || ks.Disposed)
            {
                peer.Count(DropReason.NoKey);
                return;
            }

            if (ks.NextPacketId == 0)
            {
                peer.Count(DropReason.PacketIdExhausted);
                return;
            }

            uint pid = ks.NextPacketId;
            // Never wrap: 0 marks the counter as exhausted, so a nonce is never reused.
            ks.NextPacketId = pid == uint.MaxValue ? 0 : pid + 1;
            if (pid >= RenegotiationTrigger && !ks.RenegotiationSignalled)
            {
                ks.RenegotiationSignalled = true;
                renegDue = true;
            }

            keyId = ks.KeyId;
            len = peer.UseDataV2
                ? ks.Encrypt.SealDataV2(wire, ks.KeyId, peer.Id, pid, plainScratch[..plainLen])
                : ks.Encrypt.SealDataV1(wire, ks.KeyId, pid, plainScratch[..plainLen]);
        }

        peer.Link.Send(wire[..len]);
        Volatile.Write(ref peer.LastTx, _time.GetTimestamp());
        Interlocked.Add(ref peer.LinkTxBytes, len);
        Interlocked.Increment(ref peer.LinkTxPackets);
        if (vpnPayload)
        {
            Interlocked.Add(ref peer.VpnTxBytes, payload.Length);
            Interlocked.Increment(ref peer.VpnTxPackets);
        }

        if (renegDue)
        {
            _events.OnKeyRenegotiationDue(peer.Id, keyId);
        }
    }

    /// <summary>Packet-id at which the control plane is told to renegotiate (OpenVPN's 0xFF000000).</summary>
    public uint RenegotiationTrigger { get; set; } = 0xFF000000;

    /// <summary>Keepalive: sends pings to idle peers and expires silent ones. Call about once a second.</summary>
    public void Tick()
    {
        long now = _time.GetTimestamp();
        Span<byte> plain = stackalloc byte[32];
        var wire = new byte[128];
        foreach (var p in _peers.Values)
        {
            if (p.KeepaliveTimeout > TimeSpan.Zero && _time.GetElapsedTime(Volatile.Read(ref p.LastRx), now) > p.KeepaliveTimeout)
            {
                RemovePeer(p.Id, PeerDeleteReason.Expired);
                continue;
            }

            if (p.KeepaliveInterval > TimeSpan.Zero && p.Primary is not null &&
                _time.GetElapsedTime(Volatile.Read(ref p.LastTx), now) >= p.KeepaliveInterval)
            {
                SendToPeer(p, SpecialPayloads.PingMagic, plain, wire, vpnPayload: false);
            }
        }
    }

    /// <summary>Sends the OCC EXIT message on the data channel (explicit-exit-notify for clients without cc-exit).</summary>
    public void SendOccExit(uint peerId)
    {
        if (_peers.TryGetValue(peerId, out var p))
        {
            Span<byte> msg = stackalloc byte[17];
            int n = SpecialPayloads.WriteOcc(msg, OccOpcode.Exit);
            SendToPeer(p, msg[..n], new byte[64], new byte[128], vpnPayload: false);
        }
    }

    private void CountGlobal(DropReason r) => Interlocked.Increment(ref _globalDrops[(int)r]);

    private static uint IPv4Key(IPAddress a) => BinaryPrimitives.ReadUInt32BigEndian(a.MapToIPv4().GetAddressBytes());

    public void Dispose()
    {
        _disposed = true;
        foreach (var id in _peers.Keys)
        {
            RemovePeer(id, notify: null);
        }
    }

    private sealed class KeyState : IDisposable
    {
        public readonly int KeyId;
        public readonly IDataChannelCodec Encrypt;
        public readonly IDataChannelCodec Decrypt;
        public readonly object ReceiveLock = new();
        public ReplayWindow Replay;
        public uint NextPacketId = 1;
        public bool RenegotiationSignalled;
        public volatile bool Disposed;

        public KeyState(KeyConfig k)
        {
            KeyId = k.KeyId;
            Encrypt = CreateCodec(k, k.Encrypt);
            Decrypt = CreateCodec(k, k.Decrypt);
        }

        private static IDataChannelCodec CreateCodec(KeyConfig k, KeyDirection d)
        {
            if (Protocol.Keys.DataCipherNames.IsAead(k.Cipher))
            {
                return new AeadCodec(k.Cipher, d.CipherKey, d.NonceTail);
            }

            if (d.HmacKey is null || k.CbcDigest is not { } digest)
            {
                throw new ArgumentException($"CBC key for peer {k.PeerId} lacks its HMAC key or digest");
            }

            return new CbcHmacCodec(k.Cipher, d.CipherKey, d.HmacKey, digest);
        }

        public void Dispose()
        {
            lock (ReceiveLock)
            {
                Disposed = true;
                Encrypt.Dispose();
                Decrypt.Dispose();
            }
        }
    }

    private sealed class Peer
    {
        public readonly uint Id;
        public readonly IPAddress? VpnIPv4;
        public readonly uint VpnIPv4Key;
        public readonly CompressionStub Stub;
        public readonly object SendLock = new();
        public volatile ILinkTransport Link;
        public volatile KeyState? Primary;
        public volatile KeyState? Secondary;
        public volatile bool UseDataV2;
        public TimeSpan KeepaliveInterval;
        public TimeSpan KeepaliveTimeout;
        public long LastRx;
        public long LastTx;
        public long VpnRxBytes, VpnTxBytes, VpnRxPackets, VpnTxPackets;
        public long LinkRxBytes, LinkTxBytes, LinkRxPackets, LinkTxPackets;
        private readonly long[] _drops = new long[Enum.GetValues<DropReason>().Length];

        public Peer(PeerConfig c, long now)
        {
            UseDataV2 = c.DataV2;
            Id = c.PeerId;
            Link = c.Transport;
            VpnIPv4 = c.VpnIPv4;
            VpnIPv4Key = c.VpnIPv4 is null ? 0 : IPv4Key(c.VpnIPv4);
            Stub = c.Compression;
            LastRx = now;
            LastTx = now;
        }

        public void Count(DropReason r) => Interlocked.Increment(ref _drops[(int)r]);

        public void DisposeKeys()
        {
            lock (SendLock)
            {
                Primary?.Dispose();
                Secondary?.Dispose();
                Primary = null;
                Secondary = null;
            }
        }

        public PeerStats Snapshot()
        {
            var drops = new Dictionary<string, long>();
            foreach (var r in Enum.GetValues<DropReason>())
            {
                long v = Interlocked.Read(ref _drops[(int)r]);
                if (v != 0)
                {
                    drops[r.ToString()] = v;
                }
            }

            return new PeerStats(Id, Link.Describe(), VpnIPv4,
                Interlocked.Read(ref VpnRxBytes), Interlocked.Read(ref VpnTxBytes),
                Interlocked.Read(ref VpnRxPackets), Interlocked.Read(ref VpnTxPackets),
                Interlocked.Read(ref LinkRxBytes), Interlocked.Read(ref LinkTxBytes),
                Interlocked.Read(ref LinkRxPackets), Interlocked.Read(ref LinkTxPackets), drops);
        }
    }
}
