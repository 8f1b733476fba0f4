// SPDX-License-Identifier: MIT
using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using Ovpn.DataPlane;
using Ovpn.Platform.Netlink;
using Ovpn.Protocol.Keys;

namespace Ovpn.Platform.Dco;

/// <summary>
/// Message encoding for the upstream <c>ovpn</c> generic netlink family (Linux 6.16+, and OpenVPN/ovpn-backports
/// for older kernels; include/uapi/linux/ovpn.h, Documentation/netlink/specs/ovpn.yaml). Differences to
/// ovpn-dco-v2: one generic <c>peer</c> nest (attr 2) for all peer ops and one <c>keyconf</c> nest (attr 3) for key
/// ops; the remote is remote-ipv4/-ipv6 + remote-port (big-endian), not a raw sockaddr; slot, key id and cipher are
/// u32; VPN addresses are forbidden on P2P devices; notifications are separate commands (peer-del-ntf,
/// key-swap-ntf, peer-float-ntf). Per-operation input policies reject attributes an operation does not take.
/// </summary>
public static class OvpnUpstream
{
    public const string FamilyName = "ovpn";
    public const string LinkKind = "ovpn";
    public const string ModuleSysfsName = "ovpn";
    public const byte GenlVersion = 1;

    // enum ovpn_cmd
    public const byte CMD_PEER_NEW = 1, CMD_PEER_SET = 2, CMD_PEER_GET = 3, CMD_PEER_DEL = 4, CMD_PEER_DEL_NTF = 5,
        CMD_KEY_NEW = 6, CMD_KEY_GET = 7, CMD_KEY_SWAP = 8, CMD_KEY_SWAP_NTF = 9, CMD_KEY_DEL = 10, CMD_PEER_FLOAT_NTF = 11;

    // top-level set "ovpn"
    public const ushort A_IFINDEX = 1, A_PEER = 2, A_KEYCONF = 3;

    // set "peer"
    public const ushort PEER_ID = 1, PEER_REMOTE_IPV4 = 2, PEER_REMOTE_IPV6 = 3, PEER_REMOTE_IPV6_SCOPE_ID = 4, PEER_REMOTE_PORT = 5,
        PEER_SOCKET = 6, PEER_SOCKET_NETNSID = 7, PEER_VPN_IPV4 = 8, PEER_VPN_IPV6 = 9, PEER_LOCAL_IPV4 = 10, PEER_LOCAL_IPV6 = 11,
        PEER_LOCAL_PORT = 12, PEER_KEEPALIVE_INTERVAL = 13, PEER_KEEPALIVE_TIMEOUT = 14, PEER_DEL_REASON = 15,
        PEER_VPN_RX_BYTES = 16, PEER_VPN_TX_BYTES = 17, PEER_VPN_RX_PACKETS = 18, PEER_VPN_TX_PACKETS = 19,
        PEER_LINK_RX_BYTES = 20, PEER_LINK_TX_BYTES = 21, PEER_LINK_RX_PACKETS = 22, PEER_LINK_TX_PACKETS = 23, PEER_TX_ID = 24;

    // set "keyconf" / "keydir"
    public const ushort KEYCONF_PEER_ID = 1, KEYCONF_SLOT = 2, KEYCONF_KEY_ID = 3, KEYCONF_CIPHER_ALG = 4,
        KEYCONF_ENCRYPT_DIR = 5, KEYCONF_DECRYPT_DIR = 6;
    public const ushort KEYDIR_CIPHER_KEY = 1, KEYDIR_NONCE_TAIL = 2;

    /// <summary>Peer ids are 24 bits in this API (the DATA_V2 header's peer-id field).</summary>
    public const uint MaxPeerId = 0xFFFFFF;

    private static NetlinkMessageWriter Start(ushort familyId, byte cmd, int ifindex, ushort flags = NetlinkConst.NLM_F_REQUEST | NetlinkConst.NLM_F_ACK)
        => new NetlinkMessageWriter(familyId, flags).GenlHeader(cmd, GenlVersion).U32(A_IFINDEX, (uint)ifindex);

    private static uint CheckId(uint peerId)
        => peerId <= MaxPeerId ? peerId : throw new ArgumentOutOfRangeException(nameof(peerId), "ovpn peer ids are 24-bit");

    /// <summary>PEER_NEW. VPN addresses are required in MP mode and forbidden in P2P mode (the caller decides).</summary>
    public static NetlinkMessageWriter PeerNew(ushort familyId, int ifindex, uint peerId, int socketFd,
        IPEndPoint? remote, IPAddress? vpnIPv4, IPAddress? vpnIPv6)
    {
        var w = Start(familyId, CMD_PEER_NEW, ifindex).BeginNested(A_PEER).U32(PEER_ID, CheckId(peerId));
        if (remote is not null)
            PutRemote(w, remote);
        w.U32(PEER_SOCKET, checked((uint)socketFd));
        if (vpnIPv4 is not null)
            w.Attr(PEER_VPN_IPV4, V4(vpnIPv4));
        if (vpnIPv6 is not null)
            w.Attr(PEER_VPN_IPV6, vpnIPv6.GetAddressBytes());
        return w.EndNested();
    }

    public static NetlinkMessageWriter PeerSet(ushort familyId, int ifindex, uint peerId, uint keepaliveIntervalSeconds, uint keepaliveTimeoutSeconds)
        => Start(familyId, CMD_PEER_SET, ifindex).BeginNested(A_PEER)
            .U32(PEER_ID, CheckId(peerId))
            .U32(PEER_KEEPALIVE_INTERVAL, keepaliveIntervalSeconds)
            .U32(PEER_KEEPALIVE_TIMEOUT, keepaliveTimeoutSeconds)
            .EndNested();

    public static NetlinkMessageWriter PeerDel(ushort familyId, int ifindex, uint peerId)
        => Start(familyId, CMD_PEER_DEL, ifindex).BeginNested(A_PEER).U32(PEER_ID, CheckId(peerId)).EndNested();

    public static NetlinkMessageWriter PeerGet(ushort familyId, int ifindex, uint peerId)
        => Start(familyId, CMD_PEER_GET, ifindex).BeginNested(A_PEER).U32(PEER_ID, CheckId(peerId)).EndNested();

    public static NetlinkMessageWriter PeerGetDump(ushort familyId, int ifindex)
        => Start(familyId, CMD_PEER_GET, ifindex, NetlinkConst.NLM_F_REQUEST | NetlinkConst.NLM_F_DUMP);

    public static NetlinkMessageWriter KeyNew(ushort familyId, int ifindex, uint peerId, KeySlot slot, int keyId, DataCipher cipher,
        ReadOnlySpan<byte> encryptKey, ReadOnlySpan<byte> encryptNonceTail, ReadOnlySpan<byte> decryptKey, ReadOnlySpan<byte> decryptNonceTail)
    {
        if (keyId is < 0 or > 7)
            throw new ArgumentOutOfRangeException(nameof(keyId), "OpenVPN key ids are 0..7");
        if (encryptNonceTail.Length != 8 || decryptNonceTail.Length != 8)
            throw new ArgumentException("nonce tails must be 8 bytes");
        return Start(familyId, CMD_KEY_NEW, ifindex).BeginNested(A_KEYCONF)
            .U32(KEYCONF_PEER_ID, CheckId(peerId))
            .U32(KEYCONF_SLOT, (uint)slot)
            .U32(KEYCONF_KEY_ID, (uint)keyId)
            .U32(KEYCONF_CIPHER_ALG, OvpnDcoV2.CipherAlg(cipher)) // same enum values in both APIs
            .BeginNested(KEYCONF_ENCRYPT_DIR).Attr(KEYDIR_CIPHER_KEY, encryptKey).Attr(KEYDIR_NONCE_TAIL, encryptNonceTail).EndNested()
            .BeginNested(KEYCONF_DECRYPT_DIR).Attr(KEYDIR_CIPHER_KEY, decryptKey).Attr(KEYDIR_NONCE_TAIL, decryptNonceTail).EndNested()
            .EndNested();
    }

    public static NetlinkMessageWriter KeySwap(ushort familyId, int ifindex, uint peerId)
        => Start(familyId, CMD_KEY_SWAP, ifindex).BeginNested(A_KEYCONF).U32(KEYCONF_PEER_ID, CheckId(peerId)).EndNested();

    public static NetlinkMessageWriter KeyDel(ushort familyId, int ifindex, uint peerId, KeySlot slot)
        => Start(familyId, CMD_KEY_DEL, ifindex).BeginNested(A_KEYCONF).U32(KEYCONF_PEER_ID, CheckId(peerId)).U32(KEYCONF_SLOT, (uint)slot).EndNested();

    /// <summary>RTM_NEWLINK kind "ovpn" with IFLA_OVPN_MODE (u8, attr 1 of IFLA_INFO_DATA, as in ovpn-dco).</summary>
    public static NetlinkMessageWriter NewLink(string name, byte mode) => OvpnDcoV2.NewLink(name, mode, LinkKind);

    public static PeerStats ParsePeer(NetlinkMessage reply)
    {
        if (reply.GenlCommand != CMD_PEER_GET)
            throw new InvalidDataException($"not a PEER_GET reply (cmd {reply.GenlCommand})");
        var nest = reply.GenlAttributes().Find(A_PEER) ?? throw new InvalidDataException("PEER_GET reply without OVPN_A_PEER");
        var a = nest.Nested();
        uint id = a.Find(PEER_ID)?.AsU32() ?? throw new InvalidDataException("PEER_GET reply without id");
        var remote = ParseRemote(a);
        IPAddress? v4 = a.Find(PEER_VPN_IPV4) is { Data.Length: 4 } v ? new IPAddress(v.Data) : null;
        long U(ushort t) => a.Find(t) is { } x ? (long)x.AsUInt() : 0;
        return new PeerStats(id, remote is null ? "udp:?" : $"udp:{remote}", v4,
            U(PEER_VPN_RX_BYTES), U(PEER_VPN_TX_BYTES), U(PEER_VPN_RX_PACKETS), U(PEER_VPN_TX_PACKETS),
            U(PEER_LINK_RX_BYTES), U(PEER_LINK_TX_BYTES), U(PEER_LINK_RX_PACKETS), U(PEER_LINK_TX_PACKETS),
            new Dictionary<string, long>());
    }

    /// <summary>Parses the three notifications of the "peers" group; null for anything else.</summary>
    public static DcoNotification? ParseNotification(NetlinkMessage msg, ushort familyId)
    {
        if (msg.Type != familyId)
            return null;
        var attrs = msg.GenlAttributes();
        if (attrs.Find(A_IFINDEX) is not { } ifi)
            return null;
        int ifindex = (int)ifi.AsU32();
        switch (msg.GenlCommand)
        {
            case CMD_PEER_DEL_NTF when attrs.Find(A_PEER) is { } p:
            {
                var a = p.Nested();
                if (a.Find(PEER_ID) is not { } id)
                    return null;
                var reason = a.Find(PEER_DEL_REASON) is { } r ? (PeerDeleteReason)r.AsUInt() : PeerDeleteReason.Teardown;
                return new DcoNotification.PeerDeleted(ifindex, id.AsU32(), reason);
            }
            case CMD_KEY_SWAP_NTF when attrs.Find(A_KEYCONF) is { } k:
            {
                var a = k.Nested();
                // key-id is put as u16 by some kernels although the spec says u32: read by length.
                if (a.Find(KEYCONF_PEER_ID) is not { } id || a.Find(KEYCONF_KEY_ID) is not { } kid)
                    return null;
                return new DcoNotification.KeySwapDue(ifindex, id.AsU32(), (int)kid.AsUInt());
            }
            case CMD_PEER_FLOAT_NTF when attrs.Find(A_PEER) is { } p:
            {
                var a = p.Nested();
                if (a.Find(PEER_ID) is not { } id || ParseRemote(a) is not { } ep)
                    return null;
                return new DcoNotification.PeerFloated(ifindex, id.AsU32(), ep);
            }
            default:
                return null;
        }
    }

    private static void PutRemote(NetlinkMessageWriter w, IPEndPoint remote)
    {
        var addr = remote.Address.IsIPv4MappedToIPv6 ? remote.Address.MapToIPv4() : remote.Address;
        if (addr.AddressFamily == AddressFamily.InterNetwork)
        {
            w.Attr(PEER_REMOTE_IPV4, addr.GetAddressBytes());
        }
        else
        {
            w.Attr(PEER_REMOTE_IPV6, addr.GetAddressBytes());
            if (addr.ScopeId != 0)
                w.U32(PEER_REMOTE_IPV6_SCOPE_ID, (uint)addr.ScopeId);
        }
        Span<byte> port = stackalloc byte[2];
        BinaryPrimitives.WriteUInt16BigEndian(port, (ushort)remote.Port);
        w.Attr(PEER_REMOTE_PORT, port);
    }

    private static IPEndPoint? ParseRemote(IReadOnlyList<NetlinkAttribute> a)
    {
        if (a.Find(PEER_REMOTE_PORT) is not { Data.Length: >= 2 } port)
            return null;
        int p = BinaryPrimitives.ReadUInt16BigEndian(port.Data);
        if (a.Find(PEER_REMOTE_IPV4) is { Data.Length: 4 } v4)
            return new IPEndPoint(new IPAddress(v4.Data), p);
        if (a.Find(PEER_REMOTE_IPV6) is { Data.Length: 16 } v6)
            return new IPEndPoint(new IPAddress(v6.Data, a.Find(PEER_REMOTE_IPV6_SCOPE_ID) is { } s ? s.AsU32() : 0), p);
        return null;
    }

    private static byte[] V4(IPAddress a)
    {
        var x = a.IsIPv4MappedToIPv6 ? a.MapToIPv4() : a;
        return x.AddressFamily == AddressFamily.InterNetwork ? x.GetAddressBytes() : throw new ArgumentException($"{a} is not IPv4");
    }
}

/// <summary>A message from the "peers" multicast group, decoded independently of the API generation.</summary>
public abstract record DcoNotification(int IfIndex, uint PeerId)
{
    /// <summary>The kernel removed a peer (keepalive expired, transport error ...).</summary>
    public sealed record PeerDeleted(int IfIndex, uint PeerId, PeerDeleteReason Reason) : DcoNotification(IfIndex, PeerId);

    /// <summary>The primary key's packet-id space is nearly used up: renegotiate (upstream ovpn only).</summary>
    public sealed record KeySwapDue(int IfIndex, uint PeerId, int KeyId) : DcoNotification(IfIndex, PeerId);

    /// <summary>An authenticated packet came from a new remote address (upstream ovpn only).</summary>
    public sealed record PeerFloated(int IfIndex, uint PeerId, IPEndPoint Remote) : DcoNotification(IfIndex, PeerId);
}
