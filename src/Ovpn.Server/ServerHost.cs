// SPDX-License-Identifier: MIT
using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using Ovpn.ControlPlane;
using Ovpn.ControlPlane.Sessions;
using Ovpn.DataPlane;
using Ovpn.DataPlane.Engine;
using Ovpn.DataPlane.Offload;
using Ovpn.DataPlane.Transport;

namespace Ovpn.Server;

/// <summary>Where and how the server listens; built from the config database.</summary>
public sealed record ListenOptions
{
    public bool Udp { get; init; } = true;

    public bool Tcp { get; init; } = true;

    public int UdpPort { get; init; } = 1194;

    public int TcpPort { get; init; } = 443;

    /// <summary>Listen address; IPv6Any listens on IPv4 and IPv6 (dual-stack).</summary>
    public IPAddress Address { get; init; } = IPAddress.IPv6Any;

    /// <summary>TUN names are this prefix plus the daemon index: as0t0, as0t1, ...</summary>
    public string TunPrefix { get; init; } = "as0t";

    public int TunMtu { get; init; } = 1420;

    /// <summary>vpn.server.daemon.ovpndco: prefer data channel offload.</summary>
    public bool PreferOffload { get; init; }

    /// <summary>Non-offload mode: single-threaded daemons per transport (Access Server's n_daemons).</summary>
    public int UdpDaemons { get; init; } = 1;

    public int TcpDaemons { get; init; } = 1;

    /// <summary>Use the kernel ovpn-dco-v2 / ovpn module when it is loaded (offload mode only).</summary>
    public bool KernelOffload { get; init; } = true;

    /// <summary>Offload engine threads (default: one per core).</summary>
    public int? OffloadWorkers { get; init; }
}

/// <summary>
/// Composition of one server instance: TUN device, UDP and TCP listeners, the data plane and the
/// control plane's session manager. Start/Stop are not thread-safe; the running parts are.
/// </summary>
public sealed partial class ServerHost : IAsyncDisposable
{
    private readonly ListenOptions _listen;
    private readonly SessionManager _sessions;
    private readonly CancellationTokenSource _stop = new();
    private readonly List<Task> _tasks = [];
    private readonly List<ITunDevice> _tuns = [];
    private readonly List<ManagedDataPlane> _daemons = [];
    private OffloadDataPlane? _offload;
    private Platform.Dco.KernelDataPlane? _kernel;
    private IDataPathSelector? _paths;
    private long _unroutedData;
    private Socket? _udp;
    private Socket? _tcp;
    private Thread? _udpThread;
    private Timer? _keepalive;
    private long _tcpFramingErrors;

    // TCP send-queue drops (TcpLinkTransport counts them per connection): the live connections,
    // and the sums of connections already closed, so the totals never go backwards.
    private readonly ConcurrentDictionary<TcpLinkTransport, byte> _tcpLinks = new(ReferenceEqualityComparer.Instance);
    private long _closedTcpDataDrops;
    private long _closedTcpControlDrops;

    /// <summary>Drop reason for data packets a TCP client's full send queue refused (in the status drop maps).</summary>
    public const string TcpSendQueueFullDrop = "TcpSendQueueFull";

    /// <summary>Drop reason for control packets refused by a full TCP send queue and its control reserve.</summary>
    public const string TcpSendQueueFullControlDrop = "TcpSendQueueFullControl";

    public ServerHost(ListenOptions listen, ControlPlaneOptions control)
    {
        _listen = listen;
        _sessions = new SessionManager(control);
    }

    public SessionManager Sessions => _sessions;

    /// <summary>The data paths (daemons, or offload engine plus fallback).</summary>
    public IDataPathSelector Paths => _paths ?? throw new InvalidOperationException("not started");

    /// <summary>The preferred data plane (offload engine when active, else the first daemon).</summary>
    public IDataPlane DataPlane => Paths.Paths[0].Plane;

    /// <summary>"active: ENGINE VERSION" or "inactive: why" — Status' "data channel offloading" row.</summary>
    public string OffloadStatus { get; private set; } = "inactive: server not started";

    public bool OffloadActive { get; private set; }

    public IPEndPoint? UdpEndPoint => _udp?.LocalEndPoint as IPEndPoint;

    public IPEndPoint? TcpEndPoint => _tcp?.LocalEndPoint as IPEndPoint;

    public long TcpFramingErrors => Interlocked.Read(ref _tcpFramingErrors);

    /// <summary>Creates the TUN device and starts listening.</summary>
    public void Start(Func<string, IpPool, ITunDevice>? tunFactory = null)
    {
        var factory = tunFactory ?? CreateLinuxTun;
        var pool = _sessions.Options.Pool;
        if (_listen.Udp)
        {
            _udp = new Socket(_listen.Address.AddressFamily, SocketType.Dgram, ProtocolType.Udp);
            if (_listen.Address.AddressFamily == AddressFamily.InterNetworkV6)
            {
                _udp.DualMode = true;
            }

            _udp.ReceiveBufferSize = 4 << 20;
            _udp.SendBufferSize = 4 << 20;
            _udp.Bind(new IPEndPoint(_listen.Address, _listen.UdpPort));
        }

        if (_listen.PreferOffload)
        {
            StartOffload(factory, pool);
        }
        else
        {
            OffloadStatus = "inactive: disabled by vpn.server.daemon.ovpndco=false";
            StartDaemons(factory, pool);
        }

        Log.Info("server", $"data channel offload: {OffloadStatus}");
        _sessions.Paths = _paths!;
        if (_udp is not null)
        {
            if (_offload is null)
            {
                _udpThread = new Thread(RunUdpReceiver) { IsBackground = true, Name = "udp-receiver" };
                _udpThread.Start();
            }
            else
            {
                _offload.Start();
            }

            Log.Info("server", $"listening on UDP {_udp.LocalEndPoint}");
        }
        else
        {
            _offload?.Start();
        }


        if (_listen.Tcp)
        {
            _tcp = new Socket(_listen.Address.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
            if (_listen.Address.AddressFamily == AddressFamily.InterNetworkV6)
            {
                _tcp.DualMode = true;
            }

            _tcp.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
            _tcp.Bind(new IPEndPoint(_listen.Address, _listen.TcpPort));
            _tcp.Listen(512);
            _tasks.Add(Task.Run(RunTcpAcceptAsync));
            Log.Info("server", $"listening on TCP {_tcp.LocalEndPoint}");
        }

        _keepalive = new Timer(_ =>
        {
            foreach (var d in _daemons)
            {
                d.Tick();
            }
        }, null, 1000, 1000);
    }

    /// <summary>Non-offload mode: single-threaded daemons per transport, each with its TUN and pool slice.</summary>
    private void StartDaemons(Func<string, IpPool, ITunDevice> factory, IpPool pool)
    {
        int udpN = _listen.Udp ? Math.Max(1, _listen.UdpDaemons) : 0;
        int tcpN = _listen.Tcp ? Math.Max(1, _listen.TcpDaemons) : 0;
        var slices = IpPool.Split(pool.Network, pool.PrefixLength, udpN + tcpN);
        var udpPaths = new List<DataPath>();
        var tcpPaths = new List<DataPath>();
        for (int i = 0; i < udpN + tcpN; i++)
        {
            bool udp = i < udpN;
            var path = StartDaemon(factory, _listen.TunPrefix + i, slices[i], $"daemon {(udp ? "udp" : "tcp")}#{(udp ? i : i - udpN)}");
            (udp ? udpPaths : tcpPaths).Add(path);
        }

        _paths = new DaemonSelector(udpPaths, tcpPaths);
    }

    private DataPath StartDaemon(Func<string, IpPool, ITunDevice> factory, string tunName, IpPool slice, string name)
    {
        var tun = factory(tunName, slice);
        _tuns.Add(tun);
        var dp = new ManagedDataPlane(tun, _sessions) { RenegotiationTrigger = _sessions.Options.PacketIdRenegotiationTrigger };
        _daemons.Add(dp);
        dp.Start();
        return new DataPath(name, dp, slice, isOffload: false, tunName);
    }

    /// <summary>
    /// Offload mode: the multi-threaded offload engine reads the UDP socket itself and carries every
    /// peer it can (AEAD, DATA_V2, no compression); one single-threaded daemon serves the others.
    /// </summary>
    private void StartOffload(Func<string, IpPool, ITunDevice> factory, IpPool pool)
    {
        var slices = IpPool.Split(pool.Network, pool.PrefixLength, 2);
        var fallback = StartDaemon(factory, _listen.TunPrefix + "1", slices[1], "daemon (not offloadable)");
        string tunName = _listen.TunPrefix + "0";

        // "Prefer kernel OpenVPN data channel offloading if available": the ovpn-dco-v2 / ovpn module
        // when it is loaded and usable, else our multi-threaded userspace engine.
        string kernelWhy;
        if (_listen.KernelOffload && _udp is not null)
        {
            var probe = Platform.Dco.KernelDco.Probe();
            kernelWhy = probe.Reason ?? string.Empty;
            if (probe.Usable)
            {
                try
                {
                    var kdp = new Platform.Dco.KernelDataPlane(new Platform.Dco.KernelDataPlaneOptions { InterfaceName = tunName, UdpSocket = _udp }, _sessions);
                    kdp.SetMtu(_listen.TunMtu);
                    kdp.AddAddress(slices[0].ServerAddress, slices[0].PrefixLength);
                    kdp.SetUp();
                    _kernel = kdp;
                    Log.Info("server", $"{tunName} ({kdp.LinkKind}) up: {slices[0].ServerAddress}/{slices[0].PrefixLength}, mtu {_listen.TunMtu}");
                    var kernelPath = new DataPath("kernel offload", kdp, slices[0], isOffload: true, tunName);
                    _paths = new OffloadSelector(kernelPath, fallback, offloadCarriesTcp: false);
                    OffloadActive = true;
                    OffloadStatus = $"active: {kdp.EngineName} {kdp.EngineVersion} (kernel module {probe.ModuleName} {probe.ModuleVersion ?? "?"})";
                    return;
                }
                catch (Exception e) when (e is not OutOfMemoryException)
                {
                    kernelWhy = $"kernel module present but unusable: {e.Message}";
                    _kernel?.Dispose();
                    _kernel = null;
                }
            }
        }
        else
        {
            kernelWhy = _udp is null ? "kernel offload needs UDP (TCP peers are not offloaded by the module)" : "kernel offload disabled";
        }

        var sockets = _udp is null ? Array.Empty<Socket>() : [_udp];
        _offload = Platform.Net.OffloadPlatform.Create(
            sockets, tunName,
            tun =>
            {
                tun.SetMtu(_listen.TunMtu);
                tun.AddAddress(slices[0].ServerAddress, slices[0].PrefixLength);
                tun.SetUp();
                Log.Info("server", $"TUN {tun.Name} (multi-queue) up: {slices[0].ServerAddress}/{slices[0].PrefixLength}, mtu {_listen.TunMtu}");
            },
            _sessions,
            (s, a) => _sessions.FindUdpLink(a) ?? new UdpLinkTransport(s.Socket, a),
            workers: _listen.OffloadWorkers,
            unhandledData: (link, packet) =>
            {
                // On an engine thread: peers offload does not carry go to the fallback daemon.
                Span<byte> scratch = stackalloc byte[ManagedDataPlane.MaxPacket];
                Dispatch(link, packet, scratch, allowOffload: false);
            });
        _offload.RenegotiationTrigger = _sessions.Options.PacketIdRenegotiationTrigger;
        var offloadPath = new DataPath("offload", _offload, slices[0], isOffload: true, tunName);
        _paths = new OffloadSelector(offloadPath, fallback);
        OffloadActive = true;
        OffloadStatus = $"active: {_offload.EngineName} {_offload.EngineVersion} (userspace, {_offload.WorkerCount} threads, cipher {_offload.CipherImplementation}, tun coalescing {_offload.TunCoalescingDescription}, {_offload.TunSegmentationDescription}); kernel module not used: {kernelWhy}";
    }

    private ITunDevice CreateLinuxTun(string name, IpPool slice)
    {
        var tun = Platform.Linux.TunDevice.Create(name);
        try
        {
            tun.SetMtu(_listen.TunMtu);
            tun.AddAddress(slice.ServerAddress, slice.PrefixLength);
            tun.SetUp();
        }
        catch
        {
            tun.Dispose();
            throw;
        }

        Log.Info("server", $"TUN {tun.Name} up: {slice.ServerAddress}/{slice.PrefixLength}, mtu {_listen.TunMtu}");
        return new LinuxTunAdapter(tun);
    }

    /// <summary>
    /// Routes one packet read from a link: data packets to the data plane of their peer (by peer-id
    /// for DATA_V2, by link for DATA_V1), everything else to the control plane.
    /// </summary>
    private void Dispatch(ILinkTransport link, ReadOnlySpan<byte> packet, Span<byte> scratch, bool allowOffload = true)
    {
        var op = Protocol.Wire.OpcodeByte.GetOpcode(packet[0]);
        if (op is Protocol.Wire.Opcode.DataV2 or Protocol.Wire.Opcode.DataV1)
        {
            IDataPlane? plane = op == Protocol.Wire.Opcode.DataV2
                ? packet.Length >= 4 ? _sessions.PlaneForPeer(BinaryPrimitives.ReadUInt32BigEndian(packet) & 0xFFFFFF) : null
                : _sessions.PlaneForLink(link);
            if (plane is ILinkPacketSink sink && (allowOffload || plane is ManagedDataPlane))
            {
                sink.OnLinkPacket(link, packet, scratch);
            }
            else
            {
                Interlocked.Increment(ref _unroutedData);
            }

            return;
        }

        _sessions.OnControlPacket(link, packet);
    }

    /// <summary>UDP: one receive thread; data packets are decrypted inline, control packets go to sessions.</summary>
    private void RunUdpReceiver()
    {
        var sock = _udp!;
        var buf = new byte[65536];
        var scratch = new byte[65536];
        var from = new SocketAddress(sock.AddressFamily);
        while (!_stop.IsCancellationRequested)
        {
            int n;
            try
            {
                n = sock.ReceiveFrom(buf, SocketFlags.None, from);
            }
            catch (SocketException e) when (e.SocketErrorCode is SocketError.ConnectionReset or SocketError.MessageSize)
            {
                continue;
            }
            catch (Exception) when (_stop.IsCancellationRequested)
            {
                return;
            }
            catch (ObjectDisposedException)
            {
                return;
            }

            if (n == 0)
            {
                continue;
            }

            try
            {
                var link = _sessions.FindUdpLink(from) ?? new UdpLinkTransport(sock, from);
                Dispatch(link, buf.AsSpan(0, n), scratch);
            }
            catch (Exception e)
            {
                // A bug in packet handling must not take the listener down; it is logged and counted.
                _sessions.CountControlDrop("InternalError");
                Log.Error("server", $"UDP packet handling failed: {e.Message}");
            }
        }
    }

    private async Task RunTcpAcceptAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket conn;
            try
            {
                conn = await _tcp!.AcceptAsync(_stop.Token).ConfigureAwait(false);
            }
            catch (Exception) when (_stop.IsCancellationRequested)
            {
                return;
            }
            catch (SocketException)
            {
                continue;
            }

            var link = new TcpLinkTransport(conn);
            _tcpLinks[link] = 0;
            _ = Task.Run(() => RunTcpConnectionAsync(link));
        }
    }

    /// <summary>TCP: u16-length framed packets; a bad length ends the connection (as OpenVPN does).</summary>
    private async Task RunTcpConnectionAsync(TcpLinkTransport link)
    {
        var buf = new byte[65536 + 2];
        var scratch = new byte[65536];
        int have = 0;
        try
        {
            while (!_stop.IsCancellationRequested)
            {
                int n = await link.Socket.ReceiveAsync(buf.AsMemory(have), SocketFlags.None, _stop.Token).ConfigureAwait(false);
                if (n == 0)
                {
                    break;
                }

                have += n;
                int pos = 0;
                while (have - pos >= 2)
                {
                    int len = BinaryPrimitives.ReadUInt16BigEndian(buf.AsSpan(pos));
                    if (len == 0 || len > TcpLinkTransport.MaxPacket)
                    {
                        Interlocked.Increment(ref _tcpFramingErrors);
                        Log.Warn("server", $"{link.Describe()}: bad encapsulated packet length {len}; closing");
                        return;
                    }

                    if (have - pos - 2 < len)
                    {
                        break;
                    }

                    Dispatch(link, buf.AsSpan(pos + 2, len), scratch);
                    pos += 2 + len;
                }

                if (pos > 0)
                {
                    Buffer.BlockCopy(buf, pos, buf, 0, have - pos);
                    have -= pos;
                }
            }
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException or OperationCanceledException)
        {
        }
        finally
        {
            _sessions.OnTcpClosed(link);
            link.Close();
            if (_tcpLinks.TryRemove(link, out _))
            {
                Interlocked.Add(ref _closedTcpDataDrops, link.DroppedDataPackets);
                Interlocked.Add(ref _closedTcpControlDrops, link.DroppedControlPackets);
            }
        }
    }

    /// <summary>Tells clients to go (RESTART), then stops listeners and removes the TUN device.</summary>
    public async Task StopAsync()
    {
        if (_stop.IsCancellationRequested)
        {
            return;
        }

        Log.Info("server", "shutting down: notifying clients");
        Log.Info("server", DropSummary());
        await _sessions.ShutdownAsync(TimeSpan.FromSeconds(2)).ConfigureAwait(false);
        _stop.Cancel();
        _keepalive?.Dispose();
        _udp?.Dispose();
        _tcp?.Dispose();
        await Task.WhenAll(_tasks).WaitAsync(TimeSpan.FromSeconds(3)).ContinueWith(_ => { }, TaskScheduler.Default).ConfigureAwait(false);
        _offload?.Dispose();
        _kernel?.Dispose();
        foreach (var d in _daemons)
        {
            d.Dispose();
        }

        foreach (var t in _tuns)
        {
            t.Dispose();
        }

        _udpThread?.Join(TimeSpan.FromSeconds(2));
        _sessions.Dispose();
        Log.Info("server", "stopped");
    }

    /// <summary>One line with every drop counter (control plane, data plane global and per peer).</summary>
    public string DropSummary()
    {
        static string Fmt(IEnumerable<KeyValuePair<string, long>> d) =>
            "{" + string.Join(", ", d.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => $"{kv.Key}: {kv.Value}")) + "}";

        var peerDrops = new Dictionary<string, long>();
        var global = new Dictionary<string, long>();
        if (Interlocked.Read(ref _unroutedData) is > 0 and var unrouted)
        {
            global["UnknownPeer"] = unrouted;
        }

        foreach (var path in _paths?.Paths ?? [])
        {
            foreach (var p in path.Plane.GetPeers())
            {
                foreach (var (k, v) in p.Drops)
                {
                    peerDrops[k] = peerDrops.GetValueOrDefault(k) + v;
                }
            }

            foreach (var (k, v) in path.Plane.GlobalDrops)
            {
                global[k] = global.GetValueOrDefault(k) + v;
            }
        }

        AddTcpSendDrops(global);
        return $"drops: control={Fmt(_sessions.ControlDrops)} data={Fmt(global)} peers={Fmt(peerDrops)} tcp-framing={TcpFramingErrors}";
    }

    /// <summary>
    /// Adds the TCP send-queue drops of every connection (live and closed) to a totals map, under
    /// <see cref="TcpSendQueueFullDrop"/> / <see cref="TcpSendQueueFullControlDrop"/>; zero counts
    /// are left out like the other drop reasons.
    /// </summary>
    private void AddTcpSendDrops(Dictionary<string, long> totals)
    {
        long data = Interlocked.Read(ref _closedTcpDataDrops);
        long control = Interlocked.Read(ref _closedTcpControlDrops);
        foreach (var link in _tcpLinks.Keys)
        {
            data += link.DroppedDataPackets;
            control += link.DroppedControlPackets;
        }

        AddDrop(totals, TcpSendQueueFullDrop, data);
        AddDrop(totals, TcpSendQueueFullControlDrop, control);
    }

    private static void AddDrop(Dictionary<string, long> d, string reason, long n)
    {
        if (n > 0)
        {
            d[reason] = d.GetValueOrDefault(reason) + n;
        }
    }

    public async ValueTask DisposeAsync() => await StopAsync().ConfigureAwait(false);

    /// <summary>Adapts the platform TUN device to the data plane's port.</summary>
    private sealed class LinuxTunAdapter(Platform.Linux.TunDevice tun) : ITunDevice
    {
        public string Name => tun.Name;

        public int Read(Span<byte> buffer) => tun.Read(buffer);

        public void Write(ReadOnlySpan<byte> packet) => tun.Write(packet);

        public void Dispose() => tun.Dispose();
    }
}
