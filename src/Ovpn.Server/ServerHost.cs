// SPDX-License-Identifier: MIT
using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using Ovpn.ControlPlane;
using Ovpn.ControlPlane.Sessions;
using Ovpn.DataPlane;
using Ovpn.DataPlane.Engine;
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

    public string TunName { get; init; } = "as0t0";

    public int TunMtu { get; init; } = 1420;
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
    private ITunDevice? _tun;
    private ManagedDataPlane? _dataPlane;
    private Socket? _udp;
    private Socket? _tcp;
    private Thread? _udpThread;
    private Timer? _keepalive;
    private long _tcpFramingErrors;

    public ServerHost(ListenOptions listen, ControlPlaneOptions control)
    {
        _listen = listen;
        _sessions = new SessionManager(control);
    }

    public SessionManager Sessions => _sessions;

    public IDataPlane DataPlane => _dataPlane ?? throw new InvalidOperationException("not started");

    public IPEndPoint? UdpEndPoint => _udp?.LocalEndPoint as IPEndPoint;

    public IPEndPoint? TcpEndPoint => _tcp?.LocalEndPoint as IPEndPoint;

    public long TcpFramingErrors => Interlocked.Read(ref _tcpFramingErrors);

    /// <summary>Creates the TUN device and starts listening.</summary>
    public void Start(Func<string, int, ITunDevice>? tunFactory = null)
    {
        var pool = _sessions.Options.Pool;
        _tun = (tunFactory ?? CreateLinuxTun)(_listen.TunName, pool.PrefixLength);
        _dataPlane = new ManagedDataPlane(_tun, _sessions)
        {
            RenegotiationTrigger = _sessions.Options.PacketIdRenegotiationTrigger,
        };
        _sessions.DataPlane = _dataPlane;
        _dataPlane.Start();

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
            _udpThread = new Thread(RunUdpReceiver) { IsBackground = true, Name = "udp-receiver" };
            _udpThread.Start();
            Log.Info("server", $"listening on UDP {_udp.LocalEndPoint}");
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

        _keepalive = new Timer(_ => _dataPlane?.Tick(), null, 1000, 1000);
    }

    private ITunDevice CreateLinuxTun(string name, int prefix)
    {
        var tun = Platform.Linux.TunDevice.Create(name);
        try
        {
            tun.SetMtu(_listen.TunMtu);
            tun.AddAddress(_sessions.Options.Pool.ServerAddress, prefix);
            tun.SetUp();
        }
        catch
        {
            tun.Dispose();
            throw;
        }

        Log.Info("server", $"TUN {tun.Name} up: {_sessions.Options.Pool.ServerAddress}/{prefix}, mtu {_listen.TunMtu}");
        return new LinuxTunAdapter(tun);
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
                _dataPlane!.OnLinkPacket(link, buf.AsSpan(0, n), scratch);
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

                    _dataPlane!.OnLinkPacket(link, buf.AsSpan(pos + 2, len), scratch);
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
        _dataPlane?.Dispose();
        _tun?.Dispose();
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
        if (_dataPlane is not null)
        {
            foreach (var p in _dataPlane.GetPeers())
            {
                foreach (var (k, v) in p.Drops)
                {
                    peerDrops[k] = peerDrops.GetValueOrDefault(k) + v;
                }
            }
        }

        var global = _dataPlane?.GlobalDrops ?? new Dictionary<string, long>();
        return $"drops: control={Fmt(_sessions.ControlDrops)} data={Fmt(global)} peers={Fmt(peerDrops)} tcp-framing={TcpFramingErrors}";
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
