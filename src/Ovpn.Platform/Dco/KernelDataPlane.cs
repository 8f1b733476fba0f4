// SPDX-License-Identifier: MIT
using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using Ovpn.DataPlane;
using Ovpn.DataPlane.Transport;
using Ovpn.Platform.Linux;
using Ovpn.Platform.Netlink;

namespace Ovpn.Platform.Dco;

/// <summary>How to set up the kernel data plane.</summary>
public sealed record KernelDataPlaneOptions
{
    /// <summary>Name of the ovpn-dco netdev to create (e.g. as0t0); it must not exist yet.</summary>
    public required string InterfaceName { get; init; }

    /// <summary>
    /// The server's UDP socket. It stays owned by the caller, who keeps reading control packets from it:
    /// the module only consumes DATA_V2 packets of peers it knows and hands everything else back to the socket.
    /// </summary>
    public required Socket UdpSocket { get; init; }

    /// <summary>MP (server, many peers routed by VPN address) or P2P (one peer).</summary>
    public bool MultiPeer { get; init; } = true;

    /// <summary>
    /// Generic netlink family to use: "ovpn-dco-v2" (out-of-tree module, OpenVPN 2.6) or "ovpn" (Linux 6.16+ /
    /// ovpn-backports). Null picks ovpn-dco-v2 when present, else ovpn.
    /// </summary>
    public string? Family { get; init; }
}

/// <summary>
/// <see cref="IDataPlane"/> backed by the Linux kernel's OpenVPN data channel offload module, driven over
/// generic netlink exactly like OpenVPN 2.6 does (see shared/docs/dco-netlink.md): RTM_NEWLINK kind
/// <c>ovpn-dco</c>, NEW_PEER with our UDP socket's descriptor, NEW_KEY/SWAP_KEYS/DEL_KEY, SET_PEER keepalive,
/// GET_PEER stats, DEL_PEER, and DEL_PEER notifications from the <c>peers</c> multicast group.
/// Both API generations are spoken: the out-of-tree <c>ovpn-dco-v2</c> family and the upstream <c>ovpn</c> family
/// (Linux 6.16+, ovpn-backports), which has a different message layout (see <see cref="OvpnUpstream"/>).
/// </summary>
/// <remarks>
/// Thread-safety: requests are serialized on one netlink socket; notifications arrive on a second socket
/// read by a background thread, so replies and notifications never interleave.
/// Requires CAP_NET_ADMIN in the initial user namespace (GENL_ADMIN_PERM).
/// </remarks>
public sealed class KernelDataPlane : IDataPlane
{
    private const int NotifyPollMs = 250;
    private readonly KernelDataPlaneOptions _options;
    private readonly IDataPlaneEvents _events;
    private readonly NetlinkSocket _genl;
    private readonly NetlinkSocket _rtnl;
    private readonly NetlinkSocket _notify;
    private readonly GenlFamily _family;
    private readonly IDcoDialect _d;
    private readonly ConcurrentDictionary<uint, PeerConfig> _peers = new();
    private readonly Thread _notifyThread;
    private volatile bool _stopping;
    private long _notificationsLost;
    private long _handlerErrors;
    private int _disposed;

    public KernelDataPlane(KernelDataPlaneOptions options, IDataPlaneEvents events)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(events);
        if (!OperatingSystem.IsLinux())
            throw new NotSupportedException("kernel data channel offload exists only on Linux");
        if (options.UdpSocket.ProtocolType != ProtocolType.Udp)
            throw new NotSupportedException("the kernel data plane carries UDP only (TCP offload is not implemented)");
        _options = options;
        _events = events;
        var cleanup = new List<IDisposable>();
        try
        {
            _genl = new NetlinkSocket(NetlinkConst.NETLINK_GENERIC);
            cleanup.Add(_genl);
            (_family, _d) = Resolve(_genl, options.Family);
            if (_family.Version != 1)
                throw new NotSupportedException($"genl family {_family.Name} has version {_family.Version}; this backend speaks version 1");
            if (!_family.MulticastGroups.TryGetValue(OvpnDcoV2.MulticastGroupPeers, out uint group))
                throw new NotSupportedException($"genl family {_family.Name} has no '{OvpnDcoV2.MulticastGroupPeers}' multicast group");
            EngineVersion = KernelDco.ReadModuleVersion(_d.ModuleSysfsName) ?? $"genl v{_family.Version}";

            _rtnl = new NetlinkSocket(NetlinkConst.NETLINK_ROUTE);
            cleanup.Add(_rtnl);
            _rtnl.Request(_d.NewLink(options.InterfaceName, options.MultiPeer ? OvpnDcoV2.MODE_MP : OvpnDcoV2.MODE_P2P),
                $"RTM_NEWLINK {options.InterfaceName} type {_d.LinkKind}");
            uint index = NetlinkNative.IfNameToIndex(options.InterfaceName);
            if (index == 0)
                throw PlatformException.FromLastError($"if_nametoindex({options.InterfaceName})");
            InterfaceIndex = (int)index;
            cleanup.Add(new LinkDeleter(_rtnl, InterfaceIndex, options.InterfaceName));

            _notify = new NetlinkSocket(NetlinkConst.NETLINK_GENERIC);
            cleanup.Add(_notify);
            _notify.SetReceiveBuffer(1 << 20);
            _notify.JoinGroup(group);
            _notifyThread = new Thread(RunNotifications) { IsBackground = true, Name = "dco-notify" };
            _notifyThread.Start();
        }
        catch
        {
            for (int i = cleanup.Count - 1; i >= 0; i--)
            {
                try { cleanup[i].Dispose(); } catch (IOException) { }
            }
            throw;
        }
    }

    public string EngineName => $"kernel {_family.Name}";

    public string EngineVersion { get; }

    public string InterfaceName => _options.InterfaceName;

    /// <summary>rtnetlink kind of the device: "ovpn-dco" (ovpn-dco-v2) or "ovpn" (upstream).</summary>
    public string LinkKind => _d.LinkKind;

    public int InterfaceIndex { get; }

    /// <summary>The resolved generic netlink family (id, version, multicast groups).</summary>
    public GenlFamily Family => _family;

    /// <summary>The module reports no per-reason drops; this counts notification problems only.</summary>
    public IReadOnlyDictionary<string, long> GlobalDrops => new Dictionary<string, long>
    {
        ["NotificationsLost"] = Interlocked.Read(ref _notificationsLost),
        ["NotificationHandlerErrors"] = Interlocked.Read(ref _handlerErrors),
    };

    /// <summary>Adds an address to the netdev (like `ip addr add`), for the server's VPN subnet.</summary>
    public void AddAddress(IPAddress address, int prefixLength) => WithRtnl(r => r.AddAddress(InterfaceIndex, address, prefixLength, InterfaceName));

    public void SetMtu(int mtu) => WithRtnl(r => r.SetMtu(InterfaceIndex, mtu, InterfaceName));

    public void SetUp(bool up = true) => WithRtnl(r => r.SetUp(InterfaceIndex, up, InterfaceName));

    /// <summary>Why a peer cannot be offloaded, or null. Checked before anything is sent to the kernel.</summary>
    public static string? OffloadBlocker(PeerConfig peer)
    {
        if (peer.OffloadBlocker is { } reason)
            return reason;
        if (peer.Transport.IsTcp)
            return "TCP peers are not offloaded by this backend (ovpn-dco-v2 TCP takes over the stream)";
        if (peer.Transport.Remote is not IPEndPoint)
            return $"peer transport has no IP endpoint ({peer.Transport.Describe()})";
        return null;
    }

    public void NewPeer(PeerConfig peer)
    {
        ArgumentNullException.ThrowIfNull(peer);
        if (OffloadBlocker(peer) is { } reason)
            throw new NotSupportedException($"peer {peer.PeerId} cannot use the kernel data plane: {reason}");
        if (_options.MultiPeer && peer.VpnIPv4 is null && peer.VpnIPv6 is null)
            throw new ArgumentException("a multi-peer ovpn-dco device routes by VPN address: the peer needs VpnIPv4 or VpnIPv6");
        var remote = (IPEndPoint)peer.Transport.Remote;
        var handle = _options.UdpSocket.SafeHandle;
        bool added = false;
        handle.DangerousAddRef(ref added);
        try
        {
            // The kernel resolves this number in our own fd table (sockfd_lookup) while handling the request,
            // so holding a reference for the duration of the call is enough; it takes its own socket reference.
            int fd = checked((int)handle.DangerousGetHandle());
            // P2P devices have exactly one peer and no routing by VPN address (upstream ovpn even rejects them).
            bool mp = _options.MultiPeer;
            _genl.Request(_d.NewPeer(_family.Id, InterfaceIndex, peer.PeerId, fd, remote, mp ? peer.VpnIPv4 : null, mp ? peer.VpnIPv6 : null),
                $"OVPN NEW_PEER {peer.PeerId} ({remote})");
        }
        finally
        {
            if (added)
                handle.DangerousRelease();
        }
        _peers[peer.PeerId] = peer;
    }

    public void SetPeer(uint peerId, TimeSpan keepaliveInterval, TimeSpan keepaliveTimeout)
        => _genl.Request(_d.SetPeer(_family.Id, InterfaceIndex, peerId, Seconds(keepaliveInterval), Seconds(keepaliveTimeout)),
            $"OVPN SET_PEER {peerId}");

    public PeerStats? GetPeer(uint peerId)
    {
        try
        {
            foreach (var m in _genl.Request(_d.GetPeer(_family.Id, InterfaceIndex, peerId), $"OVPN GET_PEER {peerId}"))
                if (m.Type == _family.Id)
                    return _d.ParsePeer(m);
            return null;
        }
        catch (NetlinkException e) when (e.Errno == 2) // ENOENT: no such peer
        {
            return null;
        }
    }

    public IReadOnlyList<PeerStats> GetPeers()
    {
        var list = new List<PeerStats>();
        foreach (var m in _genl.Request(_d.GetPeersDump(_family.Id, InterfaceIndex), "OVPN GET_PEER dump"))
            if (m.Type == _family.Id)
                list.Add(_d.ParsePeer(m));
        return list;
    }

    public void DeletePeer(uint peerId)
    {
        // Forget it first: the kernel's own DEL_PEER notification (reason USERSPACE) must not be reported
        // back to the control plane as if the data plane had dropped the peer.
        _peers.TryRemove(peerId, out _);
        try
        {
            _genl.Request(_d.DelPeer(_family.Id, InterfaceIndex, peerId), $"OVPN DEL_PEER {peerId}");
        }
        catch (NetlinkException e) when (e.Errno == 2)
        {
            // Already gone (expired in the kernel at the same moment): deleting is idempotent, as in the managed engine.
        }
    }

    public void NewKey(KeyConfig key)
    {
        ArgumentNullException.ThrowIfNull(key);
        int want = key.Cipher switch
        {
            Ovpn.Protocol.Keys.DataCipher.Aes128Gcm => 16,
            Ovpn.Protocol.Keys.DataCipher.Aes256Gcm or Ovpn.Protocol.Keys.DataCipher.ChaCha20Poly1305 => 32,
            _ => throw new NotSupportedException($"the kernel data plane supports AES-GCM and ChaCha20-Poly1305 only, not {key.Cipher}"),
        };
        // The module picks AES-128/256 from the key length, so a wrong length would silently select another cipher.
        if (key.Encrypt.CipherKey.Length != want || key.Decrypt.CipherKey.Length != want)
            throw new ArgumentException($"{key.Cipher} needs {want}-byte keys");
        try
        {
            _genl.Request(_d.NewKey(_family.Id, InterfaceIndex, key),
                $"OVPN NEW_KEY peer {key.PeerId} slot {key.Slot} key-id {key.KeyId}");
        }
        finally
        {
            // Same contract as the managed engine: the key bytes are consumed. (The request buffer is zeroed by NetlinkSocket.)
            key.Encrypt.Clear();
            key.Decrypt.Clear();
        }
    }

    public void SwapKeys(uint peerId)
        => _genl.Request(_d.SwapKeys(_family.Id, InterfaceIndex, peerId), $"OVPN SWAP_KEYS {peerId}");

    public void DeleteKey(uint peerId, KeySlot slot)
        => _genl.Request(_d.DelKey(_family.Id, InterfaceIndex, peerId, slot), $"OVPN DEL_KEY {peerId} {slot}");

    private void RunNotifications()
    {
        // Bounded: each round waits at most NotifyPollMs, and the loop ends when Dispose sets _stopping.
        while (!_stopping)
        {
            byte[]? datagram;
            try
            {
                datagram = _notify.ReceiveOne(NotifyPollMs, "ovpn-dco notifications");
            }
            catch (NetlinkException)
            {
                Interlocked.Increment(ref _notificationsLost); // ENOBUFS: keep listening
                continue;
            }
            catch (Exception) when (_stopping)
            {
                return;
            }
            catch (Exception)
            {
                // Any other receive failure: count it and keep listening (an exception escaping a background
                // thread would end the process); the pause keeps a persistent error from spinning.
                Interlocked.Increment(ref _notificationsLost);
                Thread.Sleep(NotifyPollMs);
                continue;
            }
            if (datagram is null)
                continue;
            List<NetlinkMessage> msgs;
            try
            {
                msgs = NetlinkMessage.ParseAll(datagram);
            }
            catch (InvalidDataException)
            {
                continue;
            }
            foreach (var m in msgs)
            {
                // The group is per family, not per device: other devices of the family in this netns notify here too.
                var n = _d.ParseNotification(m, _family.Id);
                if (n is null || n.IfIndex != InterfaceIndex)
                    continue;
                try
                {
                    Dispatch(n);
                }
                catch (Exception e) when (e is not OutOfMemoryException)
                {
                    // A failing event handler must not end the listener; the control plane logs its own errors.
                    Interlocked.Increment(ref _handlerErrors);
                }
            }
        }
    }

    private void Dispatch(DcoNotification n)
    {
        switch (n)
        {
            case DcoNotification.PeerDeleted del:
                // Only peers we still consider alive: our own DeletePeer forgot the peer before asking the kernel.
                if (_peers.TryRemove(del.PeerId, out _))
                    _events.OnPeerDeleted(del.PeerId, del.Reason);
                break;
            case DcoNotification.KeySwapDue swap when _peers.ContainsKey(swap.PeerId):
                _events.OnKeyRenegotiationDue(swap.PeerId, swap.KeyId);
                break;
            case DcoNotification.PeerFloated fl when _peers.ContainsKey(fl.PeerId):
                // Same address form as the receive loop sees on this socket (v4-mapped on a dual-stack socket).
                var ep = _options.UdpSocket.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 && fl.Remote.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork
                    ? new IPEndPoint(fl.Remote.Address.MapToIPv6(), fl.Remote.Port)
                    : fl.Remote;
                _events.OnPeerFloated(fl.PeerId, new UdpLinkTransport(_options.UdpSocket, ep.Serialize()));
                break;
        }
    }

    private static (GenlFamily, IDcoDialect) Resolve(NetlinkSocket genl, string? wanted)
    {
        foreach (string name in wanted is null ? [OvpnDcoV2.FamilyName, OvpnUpstream.FamilyName] : new[] { wanted })
        {
            var dialect = IDcoDialect.For(name);
            if (genl.ResolveFamily(name) is { } f)
                return (f, dialect);
        }
        throw Unavailable(wanted);
    }

    private static uint Seconds(TimeSpan t) => t <= TimeSpan.Zero ? 0 : (uint)Math.Max(1, Math.Ceiling(t.TotalSeconds));

    private void WithRtnl(Action<RtNetlink> action)
    {
        var r = new RtNetlink();
        try
        {
            action(r);
        }
        finally
        {
            r.Release();
        }
    }

    private static Exception Unavailable(string? wanted)
    {
        var status = KernelDco.Probe();
        return new NotSupportedException(wanted is null
            ? $"kernel data channel offload unavailable: {status.Reason ?? "no ovpn family found"}"
            : $"kernel data channel offload unavailable: genl family '{wanted}' not registered ({status})");
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        _stopping = true;
        _notifyThread.Join(TimeSpan.FromSeconds(2));
        try
        {
            // Deleting the link frees all peers and keys in the kernel.
            _rtnl.Request(OvpnDcoV2.DelLink(InterfaceIndex), $"RTM_DELLINK {InterfaceName}");
        }
        catch (IOException)
        {
        }
        _notify.Dispose();
        _rtnl.Dispose();
        _genl.Dispose();
        _peers.Clear();
    }

    /// <summary>Removes the netdev again when construction fails half-way.</summary>
    private sealed class LinkDeleter(NetlinkSocket rtnl, int index, string name) : IDisposable
    {
        public void Dispose() => rtnl.Request(OvpnDcoV2.DelLink(index), $"RTM_DELLINK {name}");
    }
}
