// SPDX-License-Identifier: MIT
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Ovpn.DataPlane;
using Ovpn.DataPlane.Transport;
using Ovpn.Protocol.Control;
using Ovpn.Protocol.Wire;

namespace Ovpn.ControlPlane.Sessions;

/// <summary>One connected (or connecting) client, for status output.</summary>
public sealed record SessionInfo(
    string? CommonName, string RealAddress, string? VpnAddress, uint? PeerId, string? Cipher,
    string? ClientVersion, DateTimeOffset ConnectedAt, bool Authenticated, string DataPath, string? DataPathReason);

/// <summary>
/// Finds or creates the session for each control packet, owns the peer-id allocator and the
/// session tables, receives the data plane's notifications, and drives session timers.
/// A new session is created only for a client hard reset that passes the tls-crypt/tls-auth check
/// (done statelessly, before anything is allocated). Thread-safe.
/// </summary>
public sealed class SessionManager : IDataPlaneEvents, IDisposable
{
    private readonly ControlPlaneOptions _o;
    private readonly ConcurrentDictionary<SocketAddress, ServerSession> _udp = new();
    private readonly ConcurrentDictionary<ILinkTransport, ServerSession> _tcp = new(ReferenceEqualityComparer.Instance);
    private readonly ConcurrentDictionary<uint, ServerSession> _byPeerId = new();
    private readonly ConcurrentDictionary<string, long> _drops = new();
    private readonly ControlWrapper _probe;
    private readonly object _probeLock = new();
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private readonly Timer _timer;
    private int _halfOpen;
    private IDataPathSelector? _paths;

    public SessionManager(ControlPlaneOptions options)
    {
        _o = options;
        _probe = options.WrapMode switch
        {
            ControlWrapMode.TlsCrypt => ControlWrapper.CreateTlsCrypt(options.WrapKey!, isServer: true),
            ControlWrapMode.TlsAuth => ControlWrapper.CreateTlsAuth(options.WrapKey!, 0, options.TlsAuthDigest),
            _ => ControlWrapper.CreateNone(),
        };
        _timer = new Timer(_ => Tick(), null, 200, 200);
    }

    public ControlPlaneOptions Options => _o;

    /// <summary>The data paths (daemons or offload engine) and how clients are spread over them.</summary>
    public IDataPathSelector Paths
    {
        get => _paths ?? throw new InvalidOperationException("data paths not attached");
        set => _paths = value;
    }

    /// <summary>The data plane serving a peer-id (DATA_V2 routing), or null.</summary>
    public IDataPlane? PlaneForPeer(uint peerId) => _byPeerId.TryGetValue(peerId, out var s) ? s.Path?.Plane : null;

    /// <summary>The data plane serving the client on a link (DATA_V1 routing), or null.</summary>
    public IDataPlane? PlaneForLink(ILinkTransport link)
    {
        ServerSession? s;
        if (link.IsTcp)
        {
            _tcp.TryGetValue(link, out s);
        }
        else
        {
            _udp.TryGetValue(((UdpLinkTransport)link).Address, out s);
        }

        return s?.Path?.Plane;
    }

    public IdAllocator PeerIds { get; } = new();

    /// <summary>Fired when a session ends (for tests and status), with its reason.</summary>
    public event Action<ServerSession, string>? SessionClosed;

    public event Action<ServerSession>? SessionAuthenticated;

    public IReadOnlyDictionary<string, long> ControlDrops => new Dictionary<string, long>(_drops);

    public int SessionCount => _udp.Count + _tcp.Count;

    public void CountControlDrop(string reason) => _drops.AddOrUpdate(reason, 1, (_, v) => v + 1);

    /// <summary>The link object of a live UDP session at this address, so data packets reuse it.</summary>
    public ILinkTransport? FindUdpLink(SocketAddress address) => _udp.TryGetValue(address, out var s) ? s.Link : null;

    public IReadOnlyList<SessionInfo> GetSessions()
    {
        var list = new List<SessionInfo>();
        foreach (var s in _udp.Values.Concat(_tcp.Values))
        {
            string path = s.Path is { } p ? $"{p.Name} ({p.Plane.EngineName})" : "none";
            string? reason = s.DataPathReason;
            list.Add(new SessionInfo(s.CommonName, s.Link.Describe(), s.VpnAddress?.ToString(), s.PeerId,
                s.Cipher is { } c ? Protocol.Keys.DataCipherNames.ToName(c) : null, s.ClientVersion, s.ConnectedAt,
                s.Authenticated, path, reason));
        }

        return list;
    }

    // ------------------------------------------------------------ IDataPlaneEvents

    public void OnControlPacket(ILinkTransport link, ReadOnlySpan<byte> packet)
    {
        ServerSession? s;
        if (link.IsTcp)
        {
            _tcp.TryGetValue(link, out s);
        }
        else
        {
            _udp.TryGetValue(((UdpLinkTransport)link).Address, out s);
        }

        var op = OpcodeByte.GetOpcode(packet[0]);
        bool isClientReset = op == Opcode.ControlHardResetClientV2;
        if (s is not null && !s.IsClosed)
        {
            if (isClientReset && !IsSameSession(s, packet))
            {
                // The client restarted with a new session id (reconnect): the new attempt replaces the old.
                if (TryCreateSession(link, packet, replacing: s))
                {
                    return;
                }

                return;
            }

            s.PostPacket(packet.ToArray());
            return;
        }

        if (!isClientReset)
        {
            CountControlDrop(op is Opcode.ControlHardResetClientV3 ? "TlsCryptV2Unsupported" : op is Opcode.ControlHardResetClientV1 ? "KeyMethod1" : "NoSession");
            return;
        }

        TryCreateSession(link, packet, replacing: null);
    }

    // Session ids are the big-endian number the codec reads from bytes 1..8 of every control packet.
    private static bool IsSameSession(ServerSession s, ReadOnlySpan<byte> packet) =>
        packet.Length >= 9 && System.Buffers.Binary.BinaryPrimitives.ReadUInt64BigEndian(packet[1..]) == s.PeerSessionId;

    private bool TryCreateSession(ILinkTransport link, ReadOnlySpan<byte> packet, ServerSession? replacing)
    {
        ControlPacket? p;
        ControlDropReason why;
        lock (_probeLock)
        {
            if (!_probe.TryUnwrap(packet, checkReplay: false, out p, out why) || p is null)
            {
                CountControlDrop(why.ToString());
                return false;
            }
        }

        if (p.Opcode != Opcode.ControlHardResetClientV2 || p.KeyId != 0 || p.MessageId != 0 || p.Acks.Length != 0)
        {
            CountControlDrop("BadReset");
            return false;
        }

        if (Volatile.Read(ref _halfOpen) >= _o.MaxHalfOpenSessions)
        {
            CountControlDrop("TooManyHandshakes");
            return false;
        }

        replacing?.PostClose("client reconnected with a new session");
        Interlocked.Increment(ref _halfOpen);
        var session = new ServerSession(this, _o, link, p.SessionId, _clock);
        if (link.IsTcp)
        {
            _tcp[link] = session;
        }
        else
        {
            _udp[((UdpLinkTransport)link).Address] = session;
        }

        Log.Info("session", $"new session from {link.Describe()}");
        session.Begin(packet.ToArray());
        return true;
    }

    public void OnPeerDeleted(uint peerId, PeerDeleteReason reason)
    {
        if (_byPeerId.TryGetValue(peerId, out var s))
        {
            string why = reason switch
            {
                PeerDeleteReason.Expired => $"ping-restart: no packet from client for {_o.PingRestartSeconds * 2} s",
                PeerDeleteReason.TransportDisconnect => "client sent OCC EXIT (explicit-exit-notify)",
                PeerDeleteReason.TransportError => "transport error",
                _ => reason.ToString(),
            };
            s.PostClose(why);
        }
    }

    public void OnKeyRenegotiationDue(uint peerId, int keyId)
    {
        if (_byPeerId.TryGetValue(peerId, out var s))
        {
            s.PostRenegotiate($"packet-id of key-id {keyId} near its limit");
        }
    }

    public void OnPeerFloated(uint peerId, ILinkTransport newLink)
    {
        if (!_byPeerId.TryGetValue(peerId, out var s) || newLink is not UdpLinkTransport nu || s.Link is not UdpLinkTransport old)
        {
            return;
        }

        Log.Info("session", $"{s.Describe}: client floated to {newLink.Describe()}");
        _udp.TryRemove(new KeyValuePair<SocketAddress, ServerSession>(old.Address, s));
        s.Link = newLink;
        _udp[nu.Address] = s;
    }

    /// <summary>A TCP connection ended: its session goes with it.</summary>
    public void OnTcpClosed(ILinkTransport link)
    {
        if (_tcp.TryGetValue(link, out var s))
        {
            s.PostClose("TCP connection closed by client");
        }
    }

    // ------------------------------------------------------------ session callbacks

    internal void OnAuthenticated(ServerSession s)
    {
        Interlocked.Decrement(ref _halfOpen);
        _byPeerId[s.PeerId!.Value] = s;
        SessionAuthenticated?.Invoke(s);
    }

    internal void OnSessionClosed(ServerSession s, string reason)
    {
        if (!s.Authenticated)
        {
            Interlocked.Decrement(ref _halfOpen);
        }

        if (s.Link is UdpLinkTransport u)
        {
            _udp.TryRemove(new KeyValuePair<SocketAddress, ServerSession>(u.Address, s));
        }
        else
        {
            _tcp.TryRemove(new KeyValuePair<ILinkTransport, ServerSession>(s.Link, s));
            s.Link.Close();
        }

        if (s.PeerId is { } id)
        {
            _byPeerId.TryRemove(new KeyValuePair<uint, ServerSession>(id, s));
        }

        Log.Info("session", $"{s.Describe}: disconnected: {reason}");
        SessionClosed?.Invoke(s, reason);
    }

    private void Tick()
    {
        foreach (var s in _udp.Values)
        {
            s.PostTick();
        }

        foreach (var s in _tcp.Values)
        {
            s.PostTick();
        }
    }

    /// <summary>
    /// Tells every client the server is going away (RESTART, as OpenVPN's explicit-exit-notify on a
    /// server), then closes all sessions.
    /// </summary>
    public async Task ShutdownAsync(TimeSpan grace)
    {
        var all = _udp.Values.Concat(_tcp.Values).ToList();
        await Task.WhenAll(all.Select(s => s.NotifyAsync("RESTART", grace))).ConfigureAwait(false);
        // Let the reliability layer put the message on the wire (it was queued by the TLS write).
        await Task.Delay(300).ConfigureAwait(false);
        foreach (var s in all)
        {
            s.PostClose("server shutting down");
        }

        var deadline = DateTime.UtcNow + grace;
        while (SessionCount > 0 && DateTime.UtcNow < deadline)
        {
            await Task.Delay(50).ConfigureAwait(false);
        }
    }

    public void Dispose() => _timer.Dispose();
}
