// SPDX-License-Identifier: MIT
using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using Ovpn.DataPlane;
using Ovpn.DataPlane.Engine;
using Ovpn.DataPlane.Transport;
using Ovpn.Protocol.Keys;
using Ovpn.Protocol.Wire;

namespace Ovpn.ControlPlane.Client;

/// <summary>What the client asks of the platform for its tunnel.</summary>
public sealed record ClientTunSettings(IPAddress Address, int PrefixLength, IPAddress? PeerAddress, int Mtu,
    IReadOnlyList<(IPAddress Net, int Prefix)> Routes)
{
    public IPAddress? Address6 { get; init; }

    public int Prefix6 { get; init; }

    public IReadOnlyList<(IPAddress Net, int Prefix)> Routes6 { get; init; } = [];

    /// <summary>redirect-gateway def1: 0.0.0.0/1 and 128.0.0.0/1 into the tunnel, the server itself
    /// kept on its current path (host route).</summary>
    public IPAddress? RedirectGatewayServer { get; init; }
}

/// <summary>Port: creates the client's TUN device with address, MTU and routes. Disposing the
/// returned device removes its routes and the device.</summary>
public interface IClientTunFactory
{
    ITunDevice Create(ClientTunSettings settings);
}

/// <summary>Snapshot written to the status file (`ovpnas connect --status`).</summary>
public sealed record ClientStatus(
    string State, string? Remote, string? Path, string? Cipher, uint? PeerId, int? KeyId, string? VpnAddress,
    string? Tun, long VpnRxBytes, long VpnTxBytes, long LinkRxBytes, long LinkTxBytes,
    IReadOnlyDictionary<string, long>? Drops, int Reconnects, string? LastError, DateTimeOffset Updated);

/// <summary>
/// The `ovpnas connect` client: picks a remote, runs a <see cref="ClientConnection"/> over UDP or
/// TCP, builds the data path once the server pushed its options, keeps it alive, and reconnects
/// with backoff after RESTART, ping-restart or a network error. Stops with EXIT (cc-exit or OCC)
/// when cancelled.
///
/// Data path: an <see cref="IClientDataPathFactory"/> from the front end builds TUN + engine with one
/// peer (the server): the kernel ovpn module in P2P mode, the userspace offload engine in client mode,
/// or the managed engine (<see cref="ManagedClientDataPlane"/>, also the default without a factory).
/// The kernel path never takes the socket over (the module consumes only its data packets, control
/// packets stay in the socket's queue), so the client's loop keeps reading it. Hand-over of the UDP
/// socket: until the data path exists the client's own receive loop reads the socket; when the
/// engine reads it itself (<see cref="IClientDataPlane.ReadsUdpSocket"/>) that loop is cancelled
/// right after the engine started, and control packets come up through the engine's
/// OnControlPacket (a packet lost in the switch is retransmitted by the reliability layer). TCP
/// stays read by the client, which feeds data packets to the engine. Every attempt tears the whole
/// data path down, so a reconnect builds it anew.
///
/// Threading: <see cref="RunAsync"/> is the only driver; link receive runs on its own task per
/// attempt, the data plane has its own threads.
/// </summary>
public sealed class VpnClient : IClientDataPath
{
    private readonly ClientProfile _profile;
    private readonly IClientDataPathFactory _pathFactory;
    private readonly string? _statusPath;
    private readonly object _gate = new();
    private volatile IClientDataPlane? _dp;
    private CancellationTokenSource? _udpRxCts; // the client's own UDP receive loop of this attempt
    private Socket? _udpSock;
    private volatile ILinkTransport? _link;
    private volatile PushedConfig? _pushed;
    private volatile ClientConnection? _conn;
    private bool _attemptActive; // guarded by _gate: a late Establish must not outlive its attempt
    private RemoteEndpoint? _remote;
    private int _reconnects;
    private string? _lastError;
    private string _state = "starting";
    private volatile int _expired;

    public VpnClient(ClientProfile profile, IClientTunFactory tunFactory, string? statusPath)
        : this(profile, new ManagedClientDataPathFactory(tunFactory), statusPath)
    {
    }

    public VpnClient(ClientProfile profile, IClientDataPathFactory pathFactory, string? statusPath)
    {
        _profile = profile;
        _pathFactory = pathFactory;
        _statusPath = statusPath;
    }

    /// <summary>The running data path's description (null while none), for tests and status.</summary>
    public string? DataPath => _dp?.Description;

    /// <summary>Raised (from the client's loop) whenever the tunnel came up.</summary>
    public event Action<PushedConfig>? Connected;

    public string State => _state;

    /// <summary>Runs until cancelled (returns 0) or a fatal error (returns 1).</summary>
    public async Task<int> RunAsync(CancellationToken ct)
    {
        var remotes = _profile.Remotes.ToList();
        if (_profile.RemoteRandom)
        {
            Random.Shared.Shuffle(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(remotes));
        }

        int index = 0;
        int failures = 0;
        while (!ct.IsCancellationRequested)
        {
            var remote = remotes[index % remotes.Count];
            ClientExit exit;
            try
            {
                exit = await RunAttemptAsync(remote, ct).ConfigureAwait(false);
            }
            catch (Exception e) when (e is SocketException or IOException)
            {
                exit = new ClientExit(ClientExitKind.Restart, $"{remote}: {e.Message}");
            }

            if (exit.Kind == ClientExitKind.Stopped || ct.IsCancellationRequested)
            {
                SetState("stopped", null);
                Log.Info("client", "stopped");
                return 0;
            }

            if (exit.Kind == ClientExitKind.Fatal)
            {
                SetState("failed", exit.Reason);
                Log.Error("client", exit.Reason);
                return 1;
            }

            _reconnects++;
            bool wasUp = _lastAttemptEstablished;
            failures = wasUp ? 0 : failures + 1;
            if (!wasUp || exit.AdvanceRemote)
            {
                index++; // advance to the next remote when this one did not work, or when told to
            }

            if (_profile.ConnectRetryMax is { } max && failures >= max * remotes.Count)
            {
                SetState("failed", exit.Reason);
                Log.Error("client", $"giving up after {failures} attempts: {exit.Reason}");
                return 1;
            }

            // Backoff: connect-retry doubled per consecutive failure, capped (OpenVPN's connect-retry-max seconds).
            int delay = wasUp ? _profile.ConnectRetrySeconds
                : (int)Math.Min(_profile.ConnectRetryMaxSeconds, _profile.ConnectRetrySeconds * Math.Pow(2, Math.Min(failures - 1, 10)));
            SetState("reconnecting", exit.Reason);
            Log.Warn("client", $"connection lost ({exit.Reason}); reconnecting in {delay} s");
            try
            {
                await Task.Delay(TimeSpan.FromSeconds(delay), ct).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
            }
        }

        SetState("stopped", null);
        return 0;
    }

    private bool _lastAttemptEstablished;

    private async Task<ClientExit> RunAttemptAsync(RemoteEndpoint remote, CancellationToken ct)
    {
        _lastAttemptEstablished = false;
        _remote = remote;
        _expired = 0;
        SetState("connecting", _lastError);
        var addrs = await Dns.GetHostAddressesAsync(remote.Host, ct).ConfigureAwait(false);
        var ip = addrs.FirstOrDefault(a => a.AddressFamily == AddressFamily.InterNetwork) ?? addrs.First();
        var ep = new IPEndPoint(ip, remote.Port);
        using var attemptCts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        Socket sock;
        ILinkTransport link;
        if (remote.Tcp)
        {
            sock = new Socket(ep.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            using var connectTimeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
            connectTimeout.CancelAfter(TimeSpan.FromSeconds(_profile.ServerPollTimeoutSeconds));
            try
            {
                await sock.ConnectAsync(ep, connectTimeout.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (!ct.IsCancellationRequested)
            {
                sock.Dispose();
                return new ClientExit(ClientExitKind.Restart, $"TCP connect to {remote} timed out");
            }
            catch
            {
                sock.Dispose();
                throw;
            }

            link = new TcpLinkTransport(sock);
        }
        else
        {
            sock = new Socket(ep.AddressFamily, SocketType.Dgram, ProtocolType.Udp);
            sock.ReceiveBufferSize = 4 << 20;
            sock.SendBufferSize = 4 << 20;
            sock.Bind(new IPEndPoint(ep.AddressFamily == AddressFamily.InterNetwork ? IPAddress.Any : IPAddress.IPv6Any, 0));
            link = new UdpLinkTransport(sock, ep.Serialize());
        }

        _link = link;
        using var udpRxCts = CancellationTokenSource.CreateLinkedTokenSource(attemptCts.Token);
        lock (_gate)
        {
            _attemptActive = true;
            _udpRxCts = remote.Tcp ? null : udpRxCts;
            _udpSock = remote.Tcp ? null : sock;
        }

        var conn = new ClientConnection(_profile, remote, link, this);
        _conn = conn;
        var receiver = Task.Run(() => remote.Tcp ? ReceiveTcpAsync(sock, conn, attemptCts.Token) : ReceiveUdpAsync(sock, conn, udpRxCts.Token));
        conn.Start();
        var ticker = Task.Run(() => TickAsync(conn, attemptCts.Token));
        ClientExit exit;
        try
        {
            var stopped = Task.Delay(Timeout.Infinite, ct);
            var first = await Task.WhenAny(conn.Completion, stopped).ConfigureAwait(false);
            if (first == conn.Completion)
            {
                exit = await conn.Completion.ConfigureAwait(false);
            }
            else
            {
                await SayGoodbyeAsync(conn).ConfigureAwait(false);
                conn.PostStop(ClientExitKind.Stopped, "stopped by user");
                exit = new ClientExit(ClientExitKind.Stopped, "stopped by user");
            }
        }
        finally
        {
            await attemptCts.CancelAsync().ConfigureAwait(false);
            conn.PostStop(ClientExitKind.Stopped, "attempt ended");
            TearDown();
            link.Close();
            sock.Dispose();
            await Task.WhenAll(receiver, ticker).WaitAsync(TimeSpan.FromSeconds(3)).ContinueWith(_ => { }, TaskScheduler.Default).ConfigureAwait(false);
        }

        _lastError = exit.Kind == ClientExitKind.Stopped ? null : exit.Reason;
        return exit;
    }

    /// <summary>explicit-exit-notify: EXIT on the control channel (cc-exit), else OCC_EXIT on the data channel (UDP).</summary>
    private async Task SayGoodbyeAsync(ClientConnection conn)
    {
        if (!conn.Established)
        {
            return;
        }

        if (conn.CcExit)
        {
            Log.Info("client", "sending EXIT to the server");
            await conn.SendExitAsync(TimeSpan.FromSeconds(1)).ConfigureAwait(false);
            // Wait (bounded) for the ACK so the server really got it.
            for (int i = 0; i < 20 && !await conn.AllAckedAsync().ConfigureAwait(false); i++)
            {
                await Task.Delay(50).ConfigureAwait(false);
            }
        }
        else if (_remote is { Tcp: false } && _pushed is { } p && p.ExplicitExitNotify > 0 && _dp is { } dp && p.PeerId is { } id)
        {
            Log.Info("client", "sending OCC EXIT to the server");
            dp.SendOccExit(id);
        }
    }

    private async Task TickAsync(ClientConnection conn, CancellationToken ct)
    {
        int n = 0;
        try
        {
            while (!ct.IsCancellationRequested)
            {
                await Task.Delay(200, ct).ConfigureAwait(false);
                conn.PostTick();
                if (++n % 5 == 0)
                {
                    _dp?.Tick();
                    if (_expired != 0)
                    {
                        conn.PostStop(ClientExitKind.Restart, "ping-restart: no data from the server");
                    }

                    WriteStatus();
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    private async Task ReceiveUdpAsync(Socket sock, ClientConnection conn, CancellationToken ct)
    {
        var buf = new byte[65536];
        var scratch = new byte[65536];
        var from = new SocketAddress(sock.AddressFamily);
        var expected = (_link as UdpLinkTransport)!.Address;
        while (!ct.IsCancellationRequested)
        {
            int n;
            try
            {
                n = await sock.ReceiveFromAsync(buf, SocketFlags.None, from, ct).ConfigureAwait(false);
            }
            catch (SocketException e) when (e.SocketErrorCode is SocketError.ConnectionReset or SocketError.MessageSize or SocketError.ConnectionRefused)
            {
                continue;
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException or SocketException)
            {
                return;
            }

            // Only the server we talk to (no float on the client side).
            if (n == 0 || !from.Equals(expected))
            {
                continue;
            }

            Dispatch(conn, buf.AsSpan(0, n), scratch);
        }
    }

    private async Task ReceiveTcpAsync(Socket sock, ClientConnection conn, CancellationToken ct)
    {
        var decoder = new Protocol.Control.TcpFrameDecoder(TcpLinkTransport.MaxPacket);
        var buf = new byte[65536];
        var scratch = new byte[65536];
        string reason = "server closed the TCP connection";
        try
        {
            while (!ct.IsCancellationRequested)
            {
                int n = await sock.ReceiveAsync(buf, SocketFlags.None, ct).ConfigureAwait(false);
                if (n == 0)
                {
                    break;
                }

                decoder.Feed(buf.AsSpan(0, n));
                while (true)
                {
                    var st = decoder.TryRead(out var pkt);
                    if (st == Protocol.Control.TcpFrameStatus.NeedMore)
                    {
                        break;
                    }

                    if (st == Protocol.Control.TcpFrameStatus.Error)
                    {
                        conn.PostStop(ClientExitKind.Restart, $"TCP framing error: {decoder.Error}");
                        return;
                    }

                    Dispatch(conn, pkt!, scratch);
                }
            }
        }
        catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException)
        {
            return;
        }
        catch (SocketException e)
        {
            reason = $"TCP connection error: {e.Message}";
        }

        conn.PostStop(ClientExitKind.Restart, reason);
    }

    private void Dispatch(ClientConnection conn, ReadOnlySpan<byte> packet, Span<byte> scratch)
    {
        if (packet.Length == 0)
        {
            return;
        }

        var dp = _dp;
        if (OpcodeByte.IsData(OpcodeByte.GetOpcode(packet[0])))
        {
            dp?.OnLinkPacket(_link!, packet, scratch);
        }
        else
        {
            conn.PostPacket(packet.ToArray());
        }
    }

    // ---------------------------------------------------------------- IClientDataPath (called on the connection's loop)

    void IClientDataPath.Establish(PushedConfig config, KeyConfig firstKey)
    {
        int mtu = config.TunMtu ?? _profile.TunMtu;
        var tunSettings = new ClientTunSettings(config.Address, config.PrefixLength, config.PeerAddress, mtu, config.Routes)
        {
            Address6 = config.Address6,
            Prefix6 = config.Prefix6,
            Routes6 = config.Routes6,
            RedirectGatewayServer = config.RedirectGateway && _link!.Remote is IPEndPoint rep ? rep.Address : null,
        };
        uint peerId = config.PeerId ?? 0;
        var peer = new PeerConfig(peerId, _link!, config.Address, config.Address6) { DataV2 = config.PeerId is not null };
        var request = new ClientDataPathRequest(tunSettings, _link!, _udpSock, firstKey.Cipher, peer, new Events(this), _profile.DisableDco);
        var dp = _pathFactory.Create(request);
        try
        {
            dp.Engine.NewPeer(peer);
            if (config.Ping is { } ping || config.PingRestart is not null)
            {
                dp.Engine.SetPeer(peerId, TimeSpan.FromSeconds(config.Ping ?? 0), TimeSpan.FromSeconds(config.PingRestart ?? 0));
            }

            dp.Engine.NewKey(firstKey);
        }
        catch
        {
            dp.Dispose();
            throw;
        }

        bool active;
        CancellationTokenSource? udpRx;
        lock (_gate)
        {
            active = _attemptActive;
            udpRx = _udpRxCts;
            if (active)
            {
                _dp = dp;
                _pushed = config;
            }
        }

        if (!active)
        {
            // The attempt ended while the push was being applied.
            dp.Dispose();
            return;
        }

        dp.Start();
        if (dp.ReadsUdpSocket && udpRx is not null)
        {
            // Hand-over: the engine reads the socket from now on (data and control packets).
            try
            {
                udpRx.Cancel();
                Log.Info("client", "UDP socket handed over to the data channel engine (control packets come up from it)");
            }
            catch (ObjectDisposedException)
            {
            }
        }

        _lastAttemptEstablished = true;
        foreach (var o in config.Options)
        {
            Log.Debug("client", $"pushed: {o}");
        }

        Log.Info("client", dp is ManagedClientDataPlane
            ? $"data channel: {dp.Description}; {dp.Reason}"
            : $"data channel offload: {dp.Description}; {dp.Reason}");
        Log.Info("client", $"TUN {dp.TunName} up: {config.Address}/{config.PrefixLength}" +
            $"{(config.Address6 is { } a6 ? $", {a6}/{config.Prefix6}" : "")}, mtu {mtu}, {config.Routes.Count + config.Routes6.Count} route(s)" +
            $"{(config.RedirectGateway ? ", redirect-gateway" : "")}" +
            $"{(config.Ping is { } p ? $", ping {p}" : "")}{(config.PingRestart is { } r ? $", ping-restart {r}" : "")}");
        SetState("connected", null);
        Connected?.Invoke(config);
    }

    void IClientDataPath.InstallSecondary(KeyConfig key) => _dp?.Engine.NewKey(key);

    void IClientDataPath.SwapKeys()
    {
        if (_dp is { } dp && _pushed is { } p)
        {
            dp.Engine.SwapKeys(p.PeerId ?? 0);
        }
    }

    private void TearDown()
    {
        IClientDataPlane? dp;
        lock (_gate)
        {
            _attemptActive = false;
            _udpRxCts = null;
            _udpSock = null;
            dp = _dp;
            _dp = null;
        }

        if (dp is not null)
        {
            string name = dp.TunName;
            dp.Dispose();
            Log.Info("client", $"TUN {name} removed");
        }
    }

    private void SetState(string state, string? error)
    {
        _state = state;
        _lastError = error ?? _lastError;
        WriteStatus();
    }

    public ClientStatus GetStatus()
    {
        var dp = _dp;
        var p = _pushed;
        var conn = _conn;
        var stats = dp is not null && p is not null ? dp.Engine.GetPeer(p.PeerId ?? 0) : null;
        return new ClientStatus(_state, _remote?.ToString(), dp?.Description,
            conn?.Cipher is { } c ? DataCipherNames.ToName(c) : null, _state == "connected" ? p?.PeerId : null,
            conn?.PrimaryKeyId is { } k && k >= 0 ? k : null, _state == "connected" ? $"{p?.Address}/{p?.PrefixLength}" : null,
            dp?.TunName, stats?.VpnRxBytes ?? 0, stats?.VpnTxBytes ?? 0, stats?.LinkRxBytes ?? 0, stats?.LinkTxBytes ?? 0,
            stats?.Drops, _reconnects, _lastError, DateTimeOffset.UtcNow);
    }

    private void WriteStatus()
    {
        if (_statusPath is null)
        {
            return;
        }

        try
        {
            string tmp = _statusPath + ".tmp";
            File.WriteAllText(tmp, JsonSerializer.Serialize(GetStatus(), StatusJson.Options));
            File.Move(tmp, _statusPath, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Log.Debug("client", $"status file not written: {e.Message}");
        }
    }

    /// <summary>Removes the status file (on exit).</summary>
    public void DeleteStatus()
    {
        if (_statusPath is not null)
        {
            try
            {
                File.Delete(_statusPath);
            }
            catch (IOException)
            {
            }
        }
    }

    private sealed class Events(VpnClient client) : IDataPlaneEvents
    {
        public void OnPeerDeleted(uint peerId, PeerDeleteReason reason)
        {
            if (reason == PeerDeleteReason.Expired)
            {
                client._expired = 1;
            }
            else
            {
                client._conn?.PostStop(ClientExitKind.Restart, $"data channel peer deleted ({reason})");
            }
        }

        public void OnKeyRenegotiationDue(uint peerId, int keyId) =>
            client._conn?.PostRenegotiate("data packet-id near wrap");

        public void OnControlPacket(ILinkTransport link, ReadOnlySpan<byte> packet) => client._conn?.PostPacket(packet.ToArray());

        public void OnPeerFloated(uint peerId, ILinkTransport newLink)
        {
        }
    }
}

/// <summary>JSON settings for the status file.</summary>
public static class StatusJson
{
    public static readonly JsonSerializerOptions Options = new() { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.CamelCase };
}
