// SPDX-License-Identifier: MIT
using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using Ovpn.DataPlane.Transport;
using Ovpn.Protocol.Data;
using Ovpn.Protocol.Keys;

namespace Ovpn.DataPlane.Offload;

/// <summary>Tuning knobs of <see cref="OffloadDataPlane"/>. Defaults suit a server.</summary>
public sealed record OffloadOptions
{
    /// <summary>Crypto workers; default one per core.</summary>
    public int Workers { get; init; } = Environment.ProcessorCount;

    /// <summary>
    /// Run-to-completion: each reader thread opens/seals the packets it read itself instead of
    /// handing them to a worker queue (no thread hop, no wake-up per packet). Parallelism then
    /// comes from the reader threads: one per TUN queue (transmit) and one per datagram socket
    /// (receive; give the engine several SO_REUSEPORT sockets to spread clients). False = the
    /// pipelined mode with <see cref="Workers"/> crypto workers behind per-worker queues.
    /// </summary>
    public bool Inline { get; init; } = true;

    /// <summary>Datagrams per recvmmsg/sendmmsg call.</summary>
    public int BatchSize { get; init; } = 64;

    /// <summary>Pinned packet buffers shared by all stages (bounds memory: count x BufferSize).</summary>
    public int PoolSize { get; init; } = 8192;

    /// <summary>Bytes per buffer: headroom + the largest datagram or TUN packet accepted.</summary>
    public int BufferSize { get; init; } = 2048;

    /// <summary>Per-worker queue length (power of two). A full queue drops and counts QueueFull.</summary>
    public int QueueLength { get; init; } = 4096;

    /// <summary>Run keepalive/expiry once a second on an internal timer (tests call Tick instead).</summary>
    public bool KeepaliveTimer { get; init; } = true;

    /// <summary>Builds the link object handed to the control plane for a UDP address (the server
    /// passes one that reuses its session's link). Default: a new <see cref="UdpLinkTransport"/>.</summary>
    public Func<IBatchDatagramSocket, SocketAddress, ILinkTransport>? UdpLinkFactory { get; init; }

    /// <summary>
    /// Data packets of peers this engine does not carry (the kernel module likewise returns them to
    /// the socket): when set, they go here, so that a non-offload daemon can serve peers offload
    /// cannot carry (CBC, compression framing, DATA_V1). When null they are dropped and counted.
    /// </summary>
    public UnhandledPacketHandler? UnhandledDataPacket { get; init; }

    /// <summary>Cipher implementation (default: the BCL through AeadCodec; the platform offers
    /// OpenSSL EVP directly, which is faster per packet).</summary>
    public IPacketAeadFactory? Aead { get; init; }

    /// <summary>Whether Dispose also disposes the TUN queues (true when the engine created them).</summary>
    public bool OwnsTunQueues { get; init; } = true;

    /// <summary>Whether Dispose also disposes the <see cref="IBatchDatagramSocket"/> wrappers (their
    /// native buffers; a <c>UdpBatchSocket</c> never closes the server's socket itself).</summary>
    public bool OwnsDatagramSockets { get; init; }

    /// <summary>
    /// Client side of one tunnel (OpenVPN 3's --dco on the client): exactly one peer, the server.
    /// Every IPv4/IPv6 packet read from TUN goes to it whatever its destination (the kernel routed
    /// it into the tunnel), a DATA_V2 packet is matched to it whatever peer-id it carries, datagrams
    /// from any other address than the server's are dropped (no float), and there is no VPN
    /// source-address check on receive (the server forwards traffic from anywhere).
    /// </summary>
    public bool ClientMode { get; init; }

    /// <summary>
    /// Userspace GRO before the TUN write (<see cref="TunCoalescer"/>): consecutive TCP segments
    /// of a flow within one receive batch become one GSO super-packet, so the kernel runs the inner
    /// TCP receive path once per super-packet; likewise consecutive UDP datagrams of a flow
    /// (<see cref="UdpCoalescer"/>) when the TUN accepts UDP GSO frames
    /// (<see cref="IVnetTunDevice.AcceptsUdpGso"/>, Linux 6.2+; else UDP is written datagram by
    /// datagram). Takes effect only when the TUN queues implement <see cref="IVnetTunDevice"/>
    /// (opened with IFF_VNET_HDR); otherwise every packet is written alone.
    /// </summary>
    public bool TunCoalesce { get; init; } = true;

    /// <summary>With <see cref="TunCoalesce"/>: merge UDP datagrams too when the TUN accepts UDP GSO
    /// frames. False = UDP is written datagram by datagram (TCP is still merged).</summary>
    public bool TunCoalesceUdp { get; init; } = true;

    /// <summary>
    /// With <see cref="TunCoalesce"/>: how many times a UDP reader that holds coalesced segments
    /// and got a short batch yields its core and looks for more datagrams before it writes them
    /// (a few microseconds each; trades that latency for larger super-packets when the reader is
    /// faster than the traffic). 0 = write at the end of every short batch. Full batches are
    /// always chained (up to 4 receive calls) since more datagrams are likely queued.
    /// </summary>
    public int TunCoalesceLinger { get; init; }

    /// <summary>
    /// Segmentation offload on the TUN read side: the platform opens vnet TUN queues with
    /// TUNSETOFFLOAD(TSO4|TSO6|CSUM), so one read returns a TCP super-packet of up to 64 KiB, which
    /// <see cref="TcpSegmenter"/> splits into MSS-sized packets that are sealed into the same
    /// per-peer send batch (one UDP GSO sendmmsg entry) instead of one read() per packet. The
    /// engine uses frame reads whenever a queue says <see cref="IVnetTunDevice.ReadsTcpGso"/>;
    /// this option tells the platform whether to ask the kernel for it (false with a queue that
    /// already reads TSO frames is refused at construction: plain reads would lose them).
    /// </summary>
    public bool TunSegmentationOffload { get; init; } = true;
}

/// <summary>
/// Userspace data channel offload: the same behaviour as the kernel ovpn module (and as
/// <see cref="Engine.ManagedDataPlane"/> for DATA_V2 AEAD peers), on several cores.
///
/// Stages. S = datagram sockets (the server may bind several with SO_REUSEPORT), Q = TUN queues
/// (IFF_MULTI_QUEUE, one per core), one thread per socket and per queue:
/// <code>
///  link -> [UDP reader xS]  recvmmsg: up to BatchSize datagrams into pooled pinned buffers
///             | opcode: control -> IDataPlaneEvents.OnControlPacket (inline, buffer returned)
///             | DATA_V2: peer by peer-id -> OPEN
///          [TCP readers]    the server calls OnLinkPacket: same dispatch (one copy into a buffer)
///  OPEN:  key slot by key-id -> replay pre-check -> AEAD open in place -> replay update
///         -> float / wrong-link check -> ping/OCC consumed -> source-address check -> TUN write
///         (with a vnet TUN: into the context's TunCoalescer (TCP, and UDP on 6.2+), flushed at the end of each batch)
///  tun  -> [TUN reader xQ]  read after 24 bytes of headroom -> IPv4 destination -> peer -> SEAL
///  SEAL:  primary key -> packet-id (never wraps) -> AEAD seal in place (header, packet id and tag
///         written into the headroom) -> sendmmsg (UDP) or TcpLinkTransport.Send
///  [timer] keepalive once a second: expiry -> OnPeerDeleted(Expired); idle peer -> SEAL a ping
/// </code>
/// Client mode (<see cref="OffloadOptions.ClientMode"/>, `ovpnas connect --dco`): one peer, the server;
/// TUN packets of both IP versions go to it, datagrams from other addresses are dropped before
/// dispatch, and OPEN skips the float and source-address steps.
/// Two ways to run OPEN and SEAL, chosen by <see cref="OffloadOptions.Inline"/>:
/// <list type="bullet">
/// <item>Inline (default; the upstream ovpn module's lesson, and measured faster here: no thread
/// hop and no wake-up per packet): the reader thread that got the packet runs the stage. RX order
/// per peer holds because a peer's flow reaches one socket; TX order per peer holds because SEAL
/// and the send run under the peer's send-order lock when two TUN queues carry the same peer.</item>
/// <item>Pipelined: readers enqueue to crypto workers (<see cref="OffloadOptions.Workers"/>, bounded
/// FIFO queues, full = wait briefly then drop and count). Each peer has one RX worker and one TX
/// worker (different ones when there are two or more, so one busy client uses two cores), which
/// keeps its order; workers flush one sendmmsg per drained batch.</item>
/// </list>
/// A key's cipher contexts are never used by two threads at once: the per-direction lock on the
/// key is uncontended in steady state and orders use against key deletion.
/// Allocation: none per packet in steady state (buffers pooled and pinned, nonces on the stack in
/// the <see cref="IPacketAead"/>, preallocated queues, counter arrays); tests assert it. Exceptions
/// (I/O errors, the BCL's failed-tag exception) allocate, but only on bad traffic.
/// Thread-safety: all public methods may be called from any thread.
/// </summary>
public sealed class OffloadDataPlane : IDataPlane, ILinkPacketSink
{
    private const int MinIpPacket = 20;
    private const byte OpDataV1 = 6;
    private const byte OpDataV2 = 9;

    private readonly IBatchDatagramSocket[] _sockets;
    private readonly ITunDevice[] _tunQueues;
    private readonly IDataPlaneEvents _events;
    private readonly TimeProvider _time;
    private readonly OffloadOptions _o;
    private readonly Func<IBatchDatagramSocket, SocketAddress, ILinkTransport> _udpLinkFactory;
    private readonly PacketBufferPool _pool;
    private readonly Worker[] _workers;
    private readonly Worker _timerContext;
    private readonly ThreadLocal<Worker> _linkContexts;
    private readonly ConcurrentDictionary<uint, Peer> _peers = new();
    private readonly ConcurrentDictionary<uint, Peer> _routesV4 = new();
    private volatile Peer? _clientPeer; // ClientMode: the server, the only peer
    private readonly long[] _globalDrops = new long[Enum.GetValues<OffloadDropReason>().Length];
    private readonly List<Thread> _threads = [];
    private readonly object _lifecycle = new();
    private Timer? _timer;
    private volatile bool _stopping;
    private bool _started;
    private long _tunPackets, _tunBytes;
    private long _tunGsoFrames, _tunGsoSegments;
    private long _tunTsoFrames, _tunTsoSegments;

    /// <summary>A TUN frame buffer: the largest IP packet (64 KiB) plus the virtio_net_hdr.</summary>
    private const int MaxTunFrame = 65536 + VirtioNetHeader.Length;

    public OffloadDataPlane(IReadOnlyList<IBatchDatagramSocket> udpSockets, IReadOnlyList<ITunDevice> tunQueues,
        IDataPlaneEvents events, OffloadOptions? options = null, TimeProvider? time = null)
    {
        _o = options ?? new OffloadOptions();
        if (_o.Workers < 1 || _o.BatchSize < 1 || _o.PoolSize < 2 * _o.BatchSize || _o.BufferSize < 256)
        {
            throw new ArgumentException("invalid offload options", nameof(options));
        }

        if (tunQueues.Count == 0)
        {
            throw new ArgumentException("at least one TUN queue is needed", nameof(tunQueues));
        }

        if (!_o.TunSegmentationOffload && tunQueues.Any(q => q is IVnetTunDevice { ReadsTcpGso: true }))
        {
            throw new ArgumentException("a TUN queue reads TCP super-packets but TunSegmentationOffload is off", nameof(options));
        }

        _sockets = [.. udpSockets];
        _tunQueues = [.. tunQueues];
        _events = events;
        _time = time ?? TimeProvider.System;
        _udpLinkFactory = _o.UdpLinkFactory ?? ((s, a) => new UdpLinkTransport(s.Socket, a));
        _pool = new PacketBufferPool(_o.PoolSize, _o.BufferSize);
        _workers = new Worker[_o.Inline ? 0 : _o.Workers];
        for (int i = 0; i < _workers.Length; i++)
        {
            _workers[i] = new Worker(this, i, withQueue: true, coalesce: true);
        }

        _timerContext = new Worker(this, 0, withQueue: false);
        _linkContexts = new ThreadLocal<Worker>(() => new Worker(this, Environment.CurrentManagedThreadId, withQueue: false));
    }

    /// <summary>Creates the engine with TUN queues from <paramref name="tunQueueFactory"/> (called once
    /// with the worker count; e.g. <c>MultiQueueTun.Open</c>). The engine owns and disposes them.</summary>
    public OffloadDataPlane(IReadOnlyList<IBatchDatagramSocket> udpSockets, Func<int, IReadOnlyList<ITunDevice>> tunQueueFactory,
        IDataPlaneEvents events, OffloadOptions? options = null, TimeProvider? time = null)
        : this(udpSockets, tunQueueFactory((options ?? new OffloadOptions()).Workers), events,
            (options ?? new OffloadOptions()) with { OwnsTunQueues = true }, time)
    {
    }

    public string EngineName => "ovpnas-offload";

    public string EngineVersion => typeof(OffloadDataPlane).Assembly.GetName().Version?.ToString() ?? "0";

    /// <summary>Packet-id at which the control plane is told to renegotiate (OpenVPN's 0xFF000000).</summary>
    public uint RenegotiationTrigger { get; set; } = 0xFF000000;

    /// <summary>Crypto threads: the workers (pipelined) or the reader threads that do the crypto (inline).</summary>
    public int WorkerCount => _o.Inline ? _sockets.Length + _tunQueues.Length : _workers.Length;

    public bool Inline => _o.Inline;

    /// <summary>Which cipher implementation the workers use ("bcl" or "openssl-evp").</summary>
    public string CipherImplementation => (_o.Aead ?? BclPacketAeadFactory.Instance).Name;

    /// <summary>The buffer pool (tests check it for leaks).</summary>
    public PacketBufferPool Pool => _pool;

    /// <summary>IP packets and bytes written to TUN since start (all peers).</summary>
    public long TunPacketsWritten => Interlocked.Read(ref _tunPackets);

    public long TunBytesWritten => Interlocked.Read(ref _tunBytes);

    /// <summary>Whether TUN writes go through the coalescer (vnet TUN queues and <see cref="OffloadOptions.TunCoalesce"/>).</summary>
    public bool TunCoalescing => _o.TunCoalesce && _tunQueues.Length > 0 && _tunQueues[0] is IVnetTunDevice;

    /// <summary>Whether UDP datagrams are coalesced too (<see cref="TunCoalescing"/> and the TUN
    /// accepts VIRTIO_NET_HDR_GSO_UDP_L4 frames).</summary>
    public bool TunUdpCoalescing => TunCoalescing && _o.TunCoalesceUdp && ((IVnetTunDevice)_tunQueues[0]).AcceptsUdpGso;

    /// <summary>One line for status/logs: "tcp+udp", or "tcp only (why UDP is not)", or "off".</summary>
    public string TunCoalescingDescription =>
        !TunCoalescing ? "off" :
        TunUdpCoalescing ? "tcp+udp" :
        !_o.TunCoalesceUdp ? "tcp only, udp per packet: turned off" :
        $"tcp only, udp per packet: {((IVnetTunDevice)_tunQueues[0]).UdpGsoUnsupportedReason}";

    /// <summary>Whether the TUN readers read TCP super-packets and segment them (<see cref="OffloadOptions.TunSegmentationOffload"/>).</summary>
    public bool TunSegmentation => _tunQueues[0] is IVnetTunDevice { ReadsTcpGso: true };

    /// <summary>For status/logs: "tun tso on" or "tun tso off: why".</summary>
    public string TunSegmentationDescription =>
        TunSegmentation ? "tun tso on" :
        !_o.TunSegmentationOffload ? "tun tso off: turned off" :
        _tunQueues[0] is IVnetTunDevice v ? $"tun tso off: {v.TcpGsoReadUnsupportedReason}" :
        "tun tso off: TUN has no vnet header";

    /// <summary>TCP super-packets read from TUN and split, and the segments they yielded.</summary>
    public long TunTsoFramesRead => Interlocked.Read(ref _tunTsoFrames);

    public long TunTsoSegmentsRead => Interlocked.Read(ref _tunTsoSegments);

    /// <summary>GSO super-packets (TCP and UDP) written to TUN, and the segments they carried (updated per batch).</summary>
    public long TunGsoFramesWritten => Interlocked.Read(ref _tunGsoFrames);

    public long TunGsoSegmentsWritten => Interlocked.Read(ref _tunGsoSegments);

    public IReadOnlyDictionary<string, long> GlobalDrops => Snapshot(_globalDrops);

    /// <summary>The last unexpected exception a worker caught (diagnostics; null if none).</summary>
    public string? LastWorkerError { get; private set; }

    /// <summary>Starts the reader threads, the workers and the keepalive timer.</summary>
    public void Start()
    {
        lock (_lifecycle)
        {
            ObjectDisposedException.ThrowIf(_stopping, this);
            if (_started)
            {
                return;
            }

            _started = true;
            foreach (var w in _workers)
            {
                StartThread(w.Run, $"offload-worker-{w.Index}");
            }

            for (int i = 0; i < _sockets.Length; i++)
            {
                int s = i;
                StartThread(() => RunUdpReader(s), $"offload-udp-{s}");
            }

            for (int i = 0; i < _tunQueues.Length; i++)
            {
                int q = i;
                StartThread(() => RunTunReader(q), $"offload-tun-{q}");
            }

            if (_o.KeepaliveTimer)
            {
                _timer = new Timer(_ => Tick(), null, 1000, 1000);
            }
        }
    }

    private void StartThread(ThreadStart body, string name)
    {
        var t = new Thread(body) { IsBackground = true, Name = name };
        _threads.Add(t);
        t.Start();
    }

    // ------------------------------------------------------------------ peers and keys

    public void NewPeer(PeerConfig config)
    {
        if (config.OffloadBlocker is { } why)
        {
            throw new NotSupportedException($"peer {config.PeerId} cannot be offloaded: {why}");
        }

        if (config.PeerId > DataPacketHeader.NoPeerId - 1)
        {
            throw new ArgumentOutOfRangeException(nameof(config), "peer-id must fit in 24 bits and not be 0xFFFFFF");
        }

        int n = _workers.Length;
        var p = new Peer(config, _time.GetTimestamp(),
            n == 0 ? null : _workers[(int)(config.PeerId % (uint)n)],
            n == 0 ? null : _workers[(int)((config.PeerId + (n > 1 ? 1u : 0u)) % (uint)n)]);
        if (_o.ClientMode)
        {
            lock (_lifecycle)
            {
                if (!_peers.IsEmpty)
                {
                    throw new InvalidOperationException("client mode carries exactly one peer (the server)");
                }

                _peers[config.PeerId] = p;
                _clientPeer = p;
            }

            return;
        }

        if (!_peers.TryAdd(config.PeerId, p))
        {
            throw new InvalidOperationException($"peer {config.PeerId} exists");
        }

        if (p.VpnIPv4Key != 0)
        {
            _routesV4[p.VpnIPv4Key] = p;
        }
    }

    public void SetPeer(uint peerId, TimeSpan keepaliveInterval, TimeSpan keepaliveTimeout)
    {
        var p = GetPeerOrThrow(peerId);
        lock (p.KeyLock)
        {
            p.KeepaliveInterval = keepaliveInterval;
            p.KeepaliveTimeout = keepaliveTimeout;
        }
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

        if (p.VpnIPv4Key != 0)
        {
            _routesV4.TryRemove(new KeyValuePair<uint, Peer>(p.VpnIPv4Key, p));
        }

        if (ReferenceEquals(_clientPeer, p))
        {
            _clientPeer = null;
        }

        p.Removed = true;
        p.DisposeKeys();
        if (notify is { } reason)
        {
            _events.OnPeerDeleted(peerId, reason);
        }
    }

    public void NewKey(KeyConfig key)
    {
        if (!DataCipherNames.IsAead(key.Cipher))
        {
            throw new NotSupportedException($"{DataCipherNames.ToName(key.Cipher)} cannot be offloaded: only AEAD ciphers are");
        }

        var p = GetPeerOrThrow(key.PeerId);
        var ks = new KeyState(key, _o.Aead ?? BclPacketAeadFactory.Instance);
        key.Encrypt.Clear();
        key.Decrypt.Clear();
        lock (p.KeyLock)
        {
            KeyState? old;
            if (key.Slot == KeySlot.Primary)
            {
                old = p.Primary;
                p.Primary = ks;
            }
            else
            {
                old = p.Secondary;
                p.Secondary = ks;
            }

            old?.Dispose();
        }
    }

    public void SwapKeys(uint peerId)
    {
        var p = GetPeerOrThrow(peerId);
        lock (p.KeyLock)
        {
            (p.Primary, p.Secondary) = (p.Secondary, p.Primary);
        }
    }

    public void DeleteKey(uint peerId, KeySlot slot)
    {
        var p = GetPeerOrThrow(peerId);
        lock (p.KeyLock)
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

    // ------------------------------------------------------------------ link input

    /// <summary>
    /// Entry for packets the server reads itself (TCP connections, or UDP if it keeps its own
    /// reader): data packets are copied into a pooled buffer and queued to the peer's RX worker;
    /// anything else goes to the control plane inline. <paramref name="scratch"/> is unused (kept
    /// for the same call shape as the managed engine).
    /// </summary>
    public void OnLinkPacket(ILinkTransport link, ReadOnlySpan<byte> packet, Span<byte> scratch)
    {
        if (packet.Length == 0)
        {
            CountGlobal(OffloadDropReason.Malformed);
            return;
        }

        int op = packet[0] >> 3;
        if (op != OpDataV2 && op != OpDataV1)
        {
            _events.OnControlPacket(link, packet);
            return;
        }

        if (op == OpDataV1 || packet.Length < 4)
        {
            // Offloaded peers always speak DATA_V2 (NewPeer refuses others), so a V1 packet has no owner here.
            CountGlobal(op == OpDataV1 ? OffloadDropReason.UnknownPeer : OffloadDropReason.Malformed);
            return;
        }

        uint peerId = BinaryPrimitives.ReadUInt32BigEndian(packet) & 0xFFFFFF;
        if (!TryFindPeer(peerId, out var peer))
        {
            CountGlobal(OffloadDropReason.UnknownPeer);
            return;
        }

        if (packet.Length > _pool.BufferSize)
        {
            peer.Count(OffloadDropReason.TooBig);
            return;
        }

        var b = _pool.Rent();
        if (b is null)
        {
            peer.Count(OffloadDropReason.NoBuffer);
            return;
        }

        packet.CopyTo(b.Array);
        b.Offset = 0;
        b.Length = packet.Length;
        if (link is UdpLinkTransport udp)
        {
            b.SetAddress(udp.Address);
        }
        else
        {
            b.Link = link;
        }

        if (_o.Inline)
        {
            b.Peer = peer;
            _linkContexts.Value!.Process(b, PacketWork.Open);
            return;
        }

        Dispatch(peer, b, peer.RxWorker!, PacketWork.Open);
    }

    /// <summary>The peer a DATA_V2 packet belongs to: by peer-id, or in client mode the server.</summary>
    private bool TryFindPeer(uint peerId, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out Peer? peer)
    {
        if (_o.ClientMode)
        {
            peer = _clientPeer;
            return peer is not null;
        }

        return _peers.TryGetValue(peerId, out peer);
    }

    private void Dispatch(Peer peer, PacketBuffer b, Worker w, PacketWork work)
    {
        b.Peer = peer;
        b.Work = work;
        if (w.Queue!.TryEnqueue(b))
        {
            return;
        }

        // Full: give the worker a moment (a few yields) before dropping. Under sustained overload
        // this slows the reader down so that the kernel socket buffer, not our queue, sheds the
        // excess, which costs less CPU than receiving packets only to drop them.
        var spin = new SpinWait();
        for (int i = 0; i < 30; i++)
        {
            spin.SpinOnce(sleep1Threshold: -1);
            if (w.Queue!.TryEnqueue(b))
            {
                return;
            }
        }

        peer.Count(OffloadDropReason.QueueFull);
        _pool.Return(b);
    }

    /// <summary>UDP reader stage: one thread per datagram socket.</summary>
    private void RunUdpReader(int socketIndex)
    {
        var sock = _sockets[socketIndex];
        var ctx = new Worker(this, socketIndex, withQueue: false, coalesce: true);
        var bufs = new PacketBuffer[_o.BatchSize];
        int have = 0;
        int heldRounds = 0, lingered = 0;
        try
        {
            while (!_stopping)
            {
                while (have < bufs.Length && _pool.Rent() is { } nb)
                {
                    bufs[have++] = nb;
                }

                if (have == 0)
                {
                    ctx.FlushTun();
                    heldRounds = 0;
                    // Every buffer is in flight: let the workers drain instead of spinning.
                    Thread.Sleep(1);
                    continue;
                }

                int n;
                try
                {
                    // While segments are held, only take what is already queued (never block on them).
                    n = sock.ReceiveBatch(bufs, have, ctx.HoldsTun ? 0 : 200);
                }
                catch (ObjectDisposedException)
                {
                    return;
                }
                catch (SocketException)
                {
                    continue;
                }

                for (int i = 0; i < n; i++)
                {
                    var b = bufs[i];
                    b.SocketIndex = socketIndex;
                    HandleDatagram(sock, b, ctx);
                }

                // Like NAPI polling before a GRO flush: keep merging while datagrams keep coming (a
                // full batch, or a short one within the linger budget), write when the socket runs
                // dry or after 4 receive calls, so segments are held for microseconds at most.
                if (ctx.HoldsTun && n > 0 && heldRounds < 3 && (n == have || lingered < _o.TunCoalesceLinger))
                {
                    heldRounds++;
                    if (n < have)
                    {
                        lingered++;
                        Thread.Yield();
                    }
                }
                else
                {
                    ctx.FlushTun();
                    heldRounds = 0;
                    lingered = 0;
                }

                // Slots 0..n were handed on; compact the still-owned buffers to the front.
                int remaining = have - n;
                for (int i = 0; i < remaining; i++)
                {
                    bufs[i] = bufs[n + i];
                }

                for (int i = remaining; i < have; i++)
                {
                    bufs[i] = null!;
                }

                have = remaining;
            }
        }
        finally
        {
            for (int i = 0; i < have; i++)
            {
                _pool.Return(bufs[i]);
            }
        }
    }

    /// <summary>A data packet of a peer this engine does not have: to the fallback, or counted.</summary>
    private void HandOff(IBatchDatagramSocket sock, PacketBuffer b, ReadOnlySpan<byte> data)
    {
        if (_o.UnhandledDataPacket is not { } handler)
        {
            CountGlobal(OffloadDropReason.UnknownPeer);
            return;
        }

        try
        {
            handler(_udpLinkFactory(sock, b.Address), data);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            CountGlobal(OffloadDropReason.Malformed);
        }
    }

    private void HandleDatagram(IBatchDatagramSocket sock, PacketBuffer b, Worker ctx)
    {
        var data = b.Data;
        if (data.Length == 0)
        {
            CountGlobal(OffloadDropReason.Malformed);
            _pool.Return(b);
            return;
        }

        if (_o.ClientMode && (_clientPeer is not { } server || !b.Address.Equals(server.Address)))
        {
            // A client talks to its server only: anything else on the socket is not ours.
            CountGlobal(OffloadDropReason.WrongLink);
            _pool.Return(b);
            return;
        }

        int op = data[0] >> 3;
        if (op == OpDataV2 && data.Length >= 4)
        {
            uint peerId = BinaryPrimitives.ReadUInt32BigEndian(data) & 0xFFFFFF;
            if (TryFindPeer(peerId, out var peer))
            {
                if (_o.Inline)
                {
                    b.Peer = peer;
                    ctx.Process(b, PacketWork.Open);
                }
                else
                {
                    Dispatch(peer, b, peer.RxWorker!, PacketWork.Open);
                }

                return;
            }

            HandOff(sock, b, data);
        }
        else if (op == OpDataV2 || op == OpDataV1)
        {
            if (op == OpDataV1)
            {
                HandOff(sock, b, data);
            }
            else
            {
                CountGlobal(OffloadDropReason.Malformed);
            }
        }
        else
        {
            try
            {
                // Control packets are rare; allocating the link object here is fine. A client hands
                // up its server's own link (the one its control channel sends on).
                _events.OnControlPacket(_o.ClientMode && _clientPeer is { } own ? own.Link : _udpLinkFactory(sock, b.Address), data);
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                // The control plane must not take the data socket down with it.
                CountGlobal(OffloadDropReason.Malformed);
            }
        }

        _pool.Return(b);
    }

    /// <summary>TUN reader stage: one thread per TUN queue. When buffers or the worker queue run out
    /// it waits instead of reading on: the kernel's TUN queue then fills and drops, which is the
    /// cheapest place to shed load (TCP inside the tunnel sees it as congestion).</summary>
    private void RunTunReader(int queueIndex)
    {
        var tun = _tunQueues[queueIndex];
        if (tun is IVnetTunDevice { ReadsTcpGso: true } vnet)
        {
            RunTunFrameReader(queueIndex, vnet);
            return;
        }

        var ctx = new Worker(this, queueIndex, withQueue: false);
        // Inline mode with a TUN that can report "empty": packets already queued are sealed into one
        // send batch (under their peer's send-order lock) that goes out when the queue runs dry, the
        // peer changes or BatchSize is reached, instead of one send per packet.
        var tryRead = _o.Inline ? tun as ITunTryRead : null;
        int batched = 0;
        try
        {
            while (!_stopping)
            {
                var b = batched > 0 ? _pool.Rent() : null;
                if (b is null)
                {
                    if (batched > 0)
                    {
                        ctx.EndSealBatch();
                        batched = 0;
                    }

                    b = RentWaiting();
                    if (b is null)
                    {
                        return;
                    }
                }

                int n;
                try
                {
                    var span = b.Array.AsSpan(PacketBuffer.Headroom);
                    n = batched > 0 ? tryRead!.TryRead(span) : -1;
                    if (n < 0)
                    {
                        if (batched > 0)
                        {
                            ctx.EndSealBatch();
                            batched = 0;
                        }

                        n = tun.Read(span);
                    }
                }
                catch (Exception e) when (_stopping || e is ObjectDisposedException)
                {
                    // The TUN queue was closed (shutdown): this reader is done.
                    _pool.Return(b);
                    return;
                }

                if (n <= 0)
                {
                    _pool.Return(b);
                    if (n < 0 || _stopping)
                    {
                        return;
                    }

                    continue;
                }

                b.Offset = PacketBuffer.Headroom;
                b.Length = n;
                var pkt = b.Data;
                Peer? peer;
                if (_o.ClientMode)
                {
                    // One peer: everything the kernel routed into the tunnel (IPv4 and IPv6) goes to the server.
                    peer = _clientPeer;
                    if (peer is null || n < MinIpPacket || (pkt[0] >> 4) is not (4 or 6))
                    {
                        CountGlobal(peer is null ? OffloadDropReason.NoRoute : OffloadDropReason.Malformed);
                        _pool.Return(b);
                        continue;
                    }
                }
                else if (n < MinIpPacket || (pkt[0] >> 4) != 4)
                {
                    // IPv6 is not routed to clients yet (no IPv6 pool); count it rather than guess.
                    CountGlobal(OffloadDropReason.NoRoute);
                    _pool.Return(b);
                    continue;
                }

                else if (!_routesV4.TryGetValue(BinaryPrimitives.ReadUInt32BigEndian(pkt[16..]), out peer))
                {
                    CountGlobal(OffloadDropReason.NoRoute);
                    _pool.Return(b);
                    continue;
                }

                b.VpnPayload = true;
                b.Peer = peer;
                b.Work = PacketWork.Seal;
                if (tryRead is not null)
                {
                    ctx.SealBatched(b);
                    if (++batched >= _o.BatchSize)
                    {
                        ctx.EndSealBatch();
                        batched = 0;
                    }

                    continue;
                }

                if (_o.Inline)
                {
                    ctx.Process(b, PacketWork.Seal);
                    continue;
                }

                if (!EnqueueWaiting(peer, b))
                {
                    return;
                }
            }
        }
        finally
        {
            // Never leave a peer's send-order lock held or sealed packets unsent.
            ctx.EndSealBatch();
        }
    }

    /// <summary>
    /// TUN reader stage for queues that deliver TCP super-packets (read-side TSO): one read() returns
    /// a frame (virtio_net_hdr + up to 64 KiB), <see cref="TcpSegmenter"/> splits it into pooled
    /// buffers at <see cref="PacketBuffer.Headroom"/>, and all its segments are sealed into the
    /// peer's current send batch (packet-ids in order under the peer's send-order lock), so they
    /// leave in one sendmmsg as one UDP GSO run. Frames already queued are drained into the same
    /// batch as in <see cref="RunTunReader"/>; the batch is flushed when the queue runs dry, the
    /// peer changes or BatchSize segments are reached (checked between frames: a frame is never
    /// split across flushes unless buffers run out). The frame is copied once more than a plain
    /// read (into the segment buffers); the saving is the syscalls and kernel segmentation.
    /// </summary>
    private void RunTunFrameReader(int queueIndex, IVnetTunDevice tun)
    {
        var ctx = new Worker(this, queueIndex, withQueue: false);
        // One frame buffer per reader thread, allocated once (pinned: read() takes its address).
        var frameBuffer = GC.AllocateUninitializedArray<byte>(MaxTunFrame, pinned: true);
        int capacity = _o.BufferSize - PacketBuffer.Headroom;
        int batched = 0;
        try
        {
            while (!_stopping)
            {
                int n;
                try
                {
                    n = batched > 0 ? tun.TryReadFrame(frameBuffer) : -1;
                    if (n < 0)
                    {
                        if (batched > 0)
                        {
                            ctx.EndSealBatch();
                            batched = 0;
                        }

                        n = tun.ReadFrame(frameBuffer);
                    }
                }
                catch (Exception e) when (_stopping || e is ObjectDisposedException)
                {
                    return;
                }

                if (n <= 0)
                {
                    if (n < 0 || _stopping)
                    {
                        return;
                    }

                    continue;
                }

                var frame = frameBuffer.AsSpan(0, n);
                if (!TcpSegmenter.TryPlan(frame, out var plan, out _))
                {
                    CountGlobal(OffloadDropReason.TunFrameRefused);
                    continue;
                }

                if (plan.MaxSegmentLength > capacity)
                {
                    CountGlobal(OffloadDropReason.TooBig);
                    continue;
                }

                var peer = RouteTunPacket(frame.Slice(VirtioNetHeader.Length, plan.PacketLength));
                if (peer is null)
                {
                    continue;
                }

                if (plan.IsSegmented)
                {
                    Interlocked.Increment(ref _tunTsoFrames);
                    Interlocked.Add(ref _tunTsoSegments, plan.Count);
                }

                for (int i = 0; i < plan.Count; i++)
                {
                    var b = _pool.Rent();
                    if (b is null)
                    {
                        if (batched > 0)
                        {
                            ctx.EndSealBatch();
                            batched = 0;
                        }

                        b = RentWaiting();
                        if (b is null)
                        {
                            return;
                        }
                    }

                    b.Offset = PacketBuffer.Headroom;
                    b.Length = TcpSegmenter.WriteSegment(in plan, frame, i, b.Array.AsSpan(PacketBuffer.Headroom, capacity));
                    b.VpnPayload = true;
                    b.Peer = peer;
                    b.Work = PacketWork.Seal;
                    if (_o.Inline)
                    {
                        ctx.SealBatched(b);
                        batched++;
                        continue;
                    }

                    if (!EnqueueWaiting(peer, b))
                    {
                        return;
                    }
                }

                if (batched >= _o.BatchSize)
                {
                    ctx.EndSealBatch();
                    batched = 0;
                }
            }
        }
        finally
        {
            // Never leave a peer's send-order lock held or sealed packets unsent.
            ctx.EndSealBatch();
        }
    }

    /// <summary>The peer an IP packet read from TUN goes to (same rules as <see cref="RunTunReader"/>);
    /// null after counting the drop.</summary>
    private Peer? RouteTunPacket(ReadOnlySpan<byte> pkt)
    {
        Peer? peer;
        if (_o.ClientMode)
        {
            peer = _clientPeer;
            if (peer is null || pkt.Length < MinIpPacket || (pkt[0] >> 4) is not (4 or 6))
            {
                CountGlobal(peer is null ? OffloadDropReason.NoRoute : OffloadDropReason.Malformed);
                return null;
            }

            return peer;
        }

        if (pkt.Length < MinIpPacket || (pkt[0] >> 4) != 4 || !_routesV4.TryGetValue(BinaryPrimitives.ReadUInt32BigEndian(pkt[16..]), out peer))
        {
            CountGlobal(OffloadDropReason.NoRoute);
            return null;
        }

        return peer;
    }

    /// <summary>
    /// TUN readers, pipelined mode: queues <paramref name="b"/> to its peer's TX worker, waiting
    /// while the queue is full (back-pressure on the TUN reader instead of a drop). False once
    /// stopping, with <paramref name="b"/> returned to the pool.
    /// </summary>
    private bool EnqueueWaiting(Peer peer, PacketBuffer b)
    {
        var spin = new SpinWait();
        while (!peer.TxWorker!.Queue!.TryEnqueue(b))
        {
            if (_stopping)
            {
                _pool.Return(b);
                return false;
            }

            spin.SpinOnce(sleep1Threshold: 20);
        }

        return true;
    }

    /// <summary>Rents a buffer, waiting while all are in flight; null once stopping.</summary>
    private PacketBuffer? RentWaiting()
    {
        var spin = new SpinWait();
        while (!_stopping)
        {
            if (_pool.Rent() is { } b)
            {
                return b;
            }

            spin.SpinOnce(sleep1Threshold: 20);
        }

        return null;
    }

    // ------------------------------------------------------------------ timers

    /// <summary>Keepalive: expires silent peers and queues pings to idle ones. The internal timer calls
    /// this once a second; tests call it directly with a fake clock.</summary>
    public void Tick()
    {
        long now = _time.GetTimestamp();
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
                QueueSpecial(p, SpecialPayloads.PingMagic, 0, withOp: false);
            }
        }
    }

    /// <summary>Sends the OCC EXIT message on the data channel (explicit-exit-notify towards clients).</summary>
    public void SendOccExit(uint peerId)
    {
        if (_peers.TryGetValue(peerId, out var p))
        {
            QueueSpecial(p, SpecialPayloads.OccMagic, (byte)OccOpcode.Exit, withOp: true);
        }
    }

    private void QueueSpecial(Peer p, ReadOnlySpan<byte> magic, byte op, bool withOp)
    {
        var b = _pool.Rent();
        if (b is null)
        {
            p.Count(OffloadDropReason.NoBuffer);
            return;
        }

        magic.CopyTo(b.Array.AsSpan(PacketBuffer.Headroom));
        int len = magic.Length;
        if (withOp)
        {
            b.Array[PacketBuffer.Headroom + len++] = op;
        }

        b.Offset = PacketBuffer.Headroom;
        b.Length = len;
        b.VpnPayload = false;
        // Stamp now so that a stalled queue does not make Tick queue a ping every second.
        Volatile.Write(ref p.LastTx, _time.GetTimestamp());
        if (_o.Inline)
        {
            b.Peer = p;
            lock (_timerContext)
            {
                _timerContext.Process(b, PacketWork.Seal);
            }

            return;
        }

        Dispatch(p, b, p.TxWorker!, PacketWork.Seal);
    }

    // ------------------------------------------------------------------ worker stages

    private void CountGlobal(OffloadDropReason r) => Interlocked.Increment(ref _globalDrops[(int)r]);

    private static Dictionary<string, long> Snapshot(long[] counters)
    {
        var d = new Dictionary<string, long>();
        foreach (var r in Enum.GetValues<OffloadDropReason>())
        {
            long v = Interlocked.Read(ref counters[(int)r]);
            if (v != 0)
            {
                d[r.ToString()] = v;
            }
        }

        return d;
    }

    public void Dispose()
    {
        lock (_lifecycle)
        {
            if (_stopping)
            {
                return;
            }

            _stopping = true;
        }

        _timer?.Dispose();
        foreach (var w in _workers)
        {
            w.Queue!.Close();
        }

        if (_o.OwnsTunQueues)
        {
            foreach (var t in _tunQueues)
            {
                t.Dispose();
            }
        }

        // Readers wake within their 200 ms receive timeout (or when the TUN queue closes); bounded join.
        var deadline = Environment.TickCount64 + 3000;
        foreach (var t in _threads)
        {
            int left = (int)Math.Max(0, deadline - Environment.TickCount64);
            t.Join(left);
        }

        if (_o.OwnsDatagramSockets)
        {
            // Only once no reader can still be inside ReceiveBatch (they all left above).
            if (RunningThreads == 0)
            {
                foreach (var s in _sockets)
                {
                    s.Dispose();
                }
            }
        }

        foreach (var id in _peers.Keys)
        {
            RemovePeer(id, notify: null);
        }

        _linkContexts.Dispose();
    }

    /// <summary>Engine threads still alive (0 after a clean Dispose; tests check for leaks).</summary>
    public int RunningThreads
    {
        get
        {
            int n = 0;
            foreach (var t in _threads)
            {
                if (t.IsAlive)
                {
                    n++;
                }
            }

            return n;
        }
    }

    /// <summary>
    /// One crypto worker. Owns its queue's consumer side, its send batches and a TUN queue for
    /// writes. Not thread-safe: everything here runs on the worker's own thread.
    /// </summary>
    private sealed class Worker
    {
        private readonly OffloadDataPlane _dp;
        private readonly PacketBuffer[] _drained;
        private readonly PacketBuffer[][] _pending;
        private readonly int[] _pendingCount;
        private readonly ITunDevice _tun;

        // Set when this context writes to a vnet TUN with coalescing on (UDP readers and pipelined
        // workers, which flush per batch); TCP link contexts and TUN readers write packets alone.
        private readonly TunCoalescer? _coalescer;
        private readonly IVnetTunDevice? _vnetTun;
        private long _reportedGsoFrames, _reportedGsoSegments;

        public Worker(OffloadDataPlane dp, int index, bool withQueue, bool coalesce = false)
        {
            _dp = dp;
            Index = index;
            Queue = withQueue ? new WorkQueue(dp._o.QueueLength) : null;
            _drained = new PacketBuffer[dp._o.BatchSize];
            _pending = new PacketBuffer[Math.Max(1, dp._sockets.Length)][];
            for (int i = 0; i < _pending.Length; i++)
            {
                _pending[i] = new PacketBuffer[dp._o.BatchSize];
            }

            _pendingCount = new int[_pending.Length];
            _tun = dp._tunQueues[(index & int.MaxValue) % dp._tunQueues.Length];
            if (coalesce && dp._o.TunCoalesce && _tun is IVnetTunDevice vnet)
            {
                _vnetTun = vnet;
                _coalescer = new TunCoalescer(udp: dp._o.TunCoalesceUdp && vnet.AcceptsUdpGso);
            }
        }

        /// <summary>Whether the coalescer holds segments not yet written.</summary>
        public bool HoldsTun => _coalescer is { HeldSegments: > 0 };

        /// <summary>Writes what the coalescer holds (end of a receive batch).</summary>
        public void FlushTun()
        {
            if (_coalescer is null)
            {
                return;
            }

            try
            {
                _coalescer.Flush(_vnetTun!);
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                _coalescer.Reset();
                _dp.CountGlobal(OffloadDropReason.SendFailed);
                _dp.LastWorkerError = e.GetType().Name + ": " + e.Message;
            }

            long frames = _coalescer.GsoFramesWritten - _reportedGsoFrames;
            if (frames != 0)
            {
                _reportedGsoFrames += frames;
                long segs = _coalescer.SegmentsCoalesced - _reportedGsoSegments;
                _reportedGsoSegments += segs;
                Interlocked.Add(ref _dp._tunGsoFrames, frames);
                Interlocked.Add(ref _dp._tunGsoSegments, segs);
            }
        }

        public int Index { get; }

        /// <summary>The worker's input (pipelined mode); null for an inline context.</summary>
        public WorkQueue? Queue { get; }

        public void Run()
        {
            while (true)
            {
                int n = Queue!.Drain(_drained, 200);
                if (n < 0)
                {
                    return;
                }

                for (int i = 0; i < n; i++)
                {
                    var b = _drained[i];
                    _drained[i] = null!;
                    try
                    {
                        if (b.Work == PacketWork.Open)
                        {
                            Open(b);
                        }
                        else
                        {
                            Seal(b);
                        }
                    }
                    catch (Exception e) when (e is not OutOfMemoryException)
                    {
                        // A bug or I/O failure on one packet must not kill the worker; the buffer may
                        // already be queued for sending, so it is not returned here (no double return).
                        _dp.CountGlobal(OffloadDropReason.SendFailed);
                        _dp.LastWorkerError = e.GetType().Name + ": " + e.Message;
                    }
                }

                Flush();
                FlushTun();
            }
        }

        /// <summary>Inline mode: opens, or seals and sends, one packet on the calling thread.</summary>
        /// <summary>
        /// TUN reader, inline mode: seals <paramref name="b"/> into this context's pending send batch,
        /// holding its peer's send-order lock until <see cref="EndSealBatch"/> so that the packet-ids
        /// another queue's reader assigns to the same peer cannot overtake this batch on the wire.
        /// A packet of another peer first ends the current batch.
        /// </summary>
        public void SealBatched(PacketBuffer b)
        {
            var peer = (Peer)b.Peer!;
            if (!ReferenceEquals(_batchPeer, peer))
            {
                EndSealBatch();
                Monitor.Enter(peer.SendOrder);
                _batchPeer = peer;
            }

            try
            {
                Seal(b);
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                _dp.CountGlobal(OffloadDropReason.SendFailed);
                _dp.LastWorkerError = e.GetType().Name + ": " + e.Message;
            }
        }

        /// <summary>Sends what <see cref="SealBatched"/> queued and releases the peer's lock.</summary>
        public void EndSealBatch()
        {
            if (_batchPeer is not { } peer)
            {
                return;
            }

            try
            {
                Flush();
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                _dp.CountGlobal(OffloadDropReason.SendFailed);
                _dp.LastWorkerError = e.GetType().Name + ": " + e.Message;
            }
            finally
            {
                _batchPeer = null;
                Monitor.Exit(peer.SendOrder);
            }
        }

        private Peer? _batchPeer;

        public void Process(PacketBuffer b, PacketWork work)
        {
            try
            {
                if (work == PacketWork.Open)
                {
                    Open(b);
                }
                else
                {
                    var peer = (Peer)b.Peer!;
                    lock (peer.SendOrder)
                    {
                        Seal(b);
                        Flush();
                    }
                }
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                _dp.CountGlobal(OffloadDropReason.SendFailed);
                _dp.LastWorkerError = e.GetType().Name + ": " + e.Message;
            }
        }

        private void Drop(Peer peer, PacketBuffer b, OffloadDropReason r)
        {
            peer.Count(r);
            _dp._pool.Return(b);
        }

        private void Open(PacketBuffer b)
        {
            var peer = (Peer)b.Peer!;
            if (peer.Removed)
            {
                Drop(peer, b, OffloadDropReason.PeerGone);
                return;
            }

            var wire = b.Array.AsSpan(b.Offset, b.Length);
            int keyId = wire[0] & 7;
            var ks = peer.Primary is { } pk && pk.KeyId == keyId ? pk
                : peer.Secondary is { } sk && sk.KeyId == keyId ? sk : null;
            if (ks is null)
            {
                Drop(peer, b, OffloadDropReason.UnknownKey);
                return;
            }

            if (wire.Length <= AeadCodec.V2Overhead)
            {
                Drop(peer, b, OffloadDropReason.Malformed);
                return;
            }

            int len;
            lock (ks.RxLock)
            {
                if (ks.Disposed)
                {
                    Drop(peer, b, OffloadDropReason.UnknownKey);
                    return;
                }

                // Cheap pre-check: a replayed id is dropped without spending the AEAD on it.
                uint claimed = BinaryPrimitives.ReadUInt32BigEndian(wire[4..]);
                if (!ks.Replay.Check(claimed))
                {
                    Drop(peer, b, OffloadDropReason.Replay);
                    return;
                }

                // In place: the plaintext lands exactly where the ciphertext was (after 24 bytes).
                var r = ks.Decrypt.Open(wire, b.Array.AsSpan(b.Offset + AeadCodec.V2Overhead, wire.Length - AeadCodec.V2Overhead),
                    out len, out uint packetId);
                if (r != DataDropReason.None)
                {
                    Drop(peer, b, r == DataDropReason.AuthFailed ? OffloadDropReason.AuthFailed : OffloadDropReason.Malformed);
                    return;
                }

                ks.Replay.Update(packetId);
            }

            // Authenticated: only now may the packet move the peer (float) or refresh its liveness.
            Interlocked.Add(ref peer.LinkRxBytes, wire.Length);
            Interlocked.Increment(ref peer.LinkRxPackets);
            Volatile.Write(ref peer.LastRx, _dp._time.GetTimestamp());
            var link = peer.Link;
            if (b.Link is not null)
            {
                if (!ReferenceEquals(b.Link, link))
                {
                    Drop(peer, b, OffloadDropReason.WrongLink);
                    return;
                }
            }
            else
            {
                if (link.IsTcp)
                {
                    Drop(peer, b, OffloadDropReason.WrongLink);
                    return;
                }

                peer.SocketIndex = b.SocketIndex;
                if (!b.Address.Equals(peer.Address))
                {
                    if (_dp._o.ClientMode)
                    {
                        // No float on the client side: the server does not move.
                        Drop(peer, b, OffloadDropReason.WrongLink);
                        return;
                    }

                    Float(peer, b);
                }
            }

            var plain = b.Array.AsSpan(b.Offset + AeadCodec.V2Overhead, len);
            if (SpecialPayloads.IsPing(plain))
            {
                _dp._pool.Return(b);
                return;
            }

            if (SpecialPayloads.TryGetOcc(plain, out var occ, out _))
            {
                _dp._pool.Return(b);
                if (occ == OccOpcode.Exit)
                {
                    _dp.RemovePeer(peer.Id, PeerDeleteReason.TransportDisconnect);
                }

                return;
            }

            if (plain.Length < MinIpPacket)
            {
                Drop(peer, b, OffloadDropReason.Malformed);
                return;
            }

            int version = plain[0] >> 4;
            if (version == 4)
            {
                if (!_dp._o.ClientMode && BinaryPrimitives.ReadUInt32BigEndian(plain[12..]) != peer.VpnIPv4Key)
                {
                    Drop(peer, b, OffloadDropReason.SourceAddress);
                    return;
                }
            }
            else if (version != 6)
            {
                Drop(peer, b, OffloadDropReason.Malformed);
                return;
            }

            try
            {
                if (_coalescer is not null)
                {
                    _coalescer.Add(plain, _vnetTun!);
                }
                else
                {
                    _tun.Write(plain);
                }
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                Drop(peer, b, OffloadDropReason.SendFailed);
                return;
            }

            Interlocked.Add(ref peer.VpnRxBytes, plain.Length);
            Interlocked.Increment(ref peer.VpnRxPackets);
            Interlocked.Increment(ref _dp._tunPackets);
            Interlocked.Add(ref _dp._tunBytes, plain.Length);
            _dp._pool.Return(b);
        }

        private void Float(Peer peer, PacketBuffer b)
        {
            // Rare (a client roamed): allocating the new link and address object is fine here.
            var sock = _dp._sockets.Length > 0 ? _dp._sockets[b.SocketIndex] : null;
            if (sock is null)
            {
                return;
            }

            var newLink = _dp._udpLinkFactory(sock, b.Address);
            var addr = new SocketAddress(b.Address.Family, b.Address.Size);
            b.Address.Buffer.Span.CopyTo(addr.Buffer.Span);
            peer.Address = addr;
            peer.Link = newLink;
            _dp._events.OnPeerFloated(peer.Id, newLink);
        }

        private void Seal(PacketBuffer b)
        {
            var peer = (Peer)b.Peer!;
            if (peer.Removed)
            {
                Drop(peer, b, OffloadDropReason.PeerGone);
                return;
            }

            var ks = peer.Primary;
            if (ks is null)
            {
                Drop(peer, b, OffloadDropReason.NoKey);
                return;
            }

            int payloadLen = b.Length;
            if (b.Offset != PacketBuffer.Headroom)
            {
                Drop(peer, b, OffloadDropReason.Malformed);
                return;
            }

            bool renegDue = false;
            int len;
            lock (ks.TxLock)
            {
                if (ks.Disposed)
                {
                    Drop(peer, b, OffloadDropReason.NoKey);
                    return;
                }

                uint pid = ks.NextPacketId;
                if (pid == 0)
                {
                    Drop(peer, b, OffloadDropReason.PacketIdExhausted);
                    return;
                }

                // Never wrap: 0 marks the counter as exhausted, so a nonce is never reused.
                ks.NextPacketId = pid == uint.MaxValue ? 0 : pid + 1;
                if (pid >= _dp.RenegotiationTrigger && !ks.RenegotiationSignalled)
                {
                    ks.RenegotiationSignalled = true;
                    renegDue = true;
                }

                len = ks.Encrypt.SealDataV2(b.Array.AsSpan(0, AeadCodec.V2Overhead + payloadLen), ks.KeyId, peer.Id, pid,
                    b.Array.AsSpan(AeadCodec.V2Overhead, payloadLen));
            }

            b.Offset = 0;
            b.Length = len;
            Interlocked.Add(ref peer.LinkTxBytes, len);
            Interlocked.Increment(ref peer.LinkTxPackets);
            if (b.VpnPayload)
            {
                Interlocked.Add(ref peer.VpnTxBytes, payloadLen);
                Interlocked.Increment(ref peer.VpnTxPackets);
                Volatile.Write(ref peer.LastTx, _dp._time.GetTimestamp());
            }

            if (renegDue)
            {
                _dp._events.OnKeyRenegotiationDue(peer.Id, ks.KeyId);
            }

            var link = peer.Link;
            if (link.IsTcp || _dp._sockets.Length == 0)
            {
                link.Send(b.Data);
                _dp._pool.Return(b);
                return;
            }

            int s = peer.SocketIndex;
            b.SetAddress(peer.Address);
            b.SocketIndex = s;
            _pending[s][_pendingCount[s]++] = b;
            if (_pendingCount[s] == _pending[s].Length)
            {
                FlushSocket(s);
            }
        }

        private void Flush()
        {
            for (int s = 0; s < _pending.Length; s++)
            {
                if (_pendingCount[s] > 0)
                {
                    FlushSocket(s);
                }
            }
        }

        private void FlushSocket(int s)
        {
            var batch = _pending[s];
            int n = _pendingCount[s];
            _pendingCount[s] = 0;
            int sent;
            try
            {
                sent = _dp._sockets[s].SendBatch(batch, n);
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                sent = 0;
            }

            for (int i = 0; i < n; i++)
            {
                if (i >= sent)
                {
                    ((Peer)batch[i].Peer!).Count(OffloadDropReason.SendFailed);
                }

                _dp._pool.Return(batch[i]);
                batch[i] = null!;
            }
        }
    }

    private sealed class KeyState : IDisposable
    {
        public readonly int KeyId;
        public readonly IPacketAead Encrypt;
        public readonly IPacketAead Decrypt;
        public readonly object RxLock = new();

        // The send side is only touched by the TX worker, the receive side only by the RX worker.
        public readonly object TxLock = new();
        public ReplayWindow Replay;
        public uint NextPacketId = 1;
        public bool RenegotiationSignalled;
        public volatile bool Disposed;

        public KeyState(KeyConfig k, IPacketAeadFactory aead)
        {
            KeyId = k.KeyId;
            Encrypt = aead.Create(k.Cipher, k.Encrypt.CipherKey, k.Encrypt.NonceTail);
            Decrypt = aead.Create(k.Cipher, k.Decrypt.CipherKey, k.Decrypt.NonceTail);
        }

        public void Dispose()
        {
            lock (RxLock)
            {
                lock (TxLock)
                {
                    Disposed = true;
                    Encrypt.Dispose();
                    Decrypt.Dispose();
                }
            }
        }

        public override string ToString() => $"key-id {KeyId}";
    }

    private sealed class Peer
    {
        public readonly uint Id;
        public readonly IPAddress? VpnIPv4;
        public readonly uint VpnIPv4Key;
        public readonly Worker? RxWorker;
        public readonly Worker? TxWorker;

        // Inline mode: held across seal and send so that two TUN queues carrying this peer's
        // traffic cannot put its packets on the wire out of packet-id order.
        public readonly object SendOrder = new();
        public readonly object KeyLock = new();
        public volatile ILinkTransport Link;
        public volatile SocketAddress Address;
        public volatile KeyState? Primary;
        public volatile KeyState? Secondary;
        public volatile bool Removed;
        public volatile int SocketIndex;
        public TimeSpan KeepaliveInterval;
        public TimeSpan KeepaliveTimeout;
        public long LastRx;
        public long LastTx;
        public long VpnRxBytes, VpnTxBytes, VpnRxPackets, VpnTxPackets;
        public long LinkRxBytes, LinkTxBytes, LinkRxPackets, LinkTxPackets;
        private readonly long[] _drops = new long[Enum.GetValues<OffloadDropReason>().Length];

        public Peer(PeerConfig c, long now, Worker? rx, Worker? tx)
        {
            Id = c.PeerId;
            Link = c.Transport;
            Address = c.Transport is UdpLinkTransport u ? u.Address
                : c.Transport.IsTcp ? new SocketAddress(AddressFamily.InterNetworkV6, 28)
                : c.Transport.Remote.Serialize();
            VpnIPv4 = c.VpnIPv4;
            VpnIPv4Key = c.VpnIPv4 is null ? 0 : BinaryPrimitives.ReadUInt32BigEndian(c.VpnIPv4.MapToIPv4().GetAddressBytes());
            RxWorker = rx;
            TxWorker = tx;
            LastRx = now;
            LastTx = now;
        }

        public void Count(OffloadDropReason r) => Interlocked.Increment(ref _drops[(int)r]);

        public void DisposeKeys()
        {
            lock (KeyLock)
            {
                Primary?.Dispose();
                Secondary?.Dispose();
                Primary = null;
                Secondary = null;
            }
        }

        public PeerStats Snapshot() =>
            new(Id, Link.Describe(), VpnIPv4,
                Interlocked.Read(ref VpnRxBytes), Interlocked.Read(ref VpnTxBytes),
                Interlocked.Read(ref VpnRxPackets), Interlocked.Read(ref VpnTxPackets),
                Interlocked.Read(ref LinkRxBytes), Interlocked.Read(ref LinkTxBytes),
                Interlocked.Read(ref LinkRxPackets), Interlocked.Read(ref LinkTxPackets), OffloadDataPlane.Snapshot(_drops));
    }
}
