// SPDX-License-Identifier: MIT
using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using Ovpn.DataPlane;
using Ovpn.Platform.Netlink;
using Ovpn.Protocol.Keys;

namespace Ovpn.Platform.Dco;

/// <summary>
/// Message encoding for the out-of-tree <c>ovpn-dco-v2</c> generic netlink family (OpenVPN/ovpn-dco,
/// include/uapi/linux/ovpn_dco.h): every request is genlmsghdr(cmd, version 1) + OVPN_ATTR_IFINDEX (u32) +
/// one nested container whose attribute number belongs to the command. Attribute widths follow the
/// module's netlink policy exactly, because the family is validated strictly (no GENL_DONT_VALIDATE_STRICT):
/// a u32 where the policy says u8 is rejected.
/// </summary>
public static class OvpnDcoV2
{
    public const string FamilyName = "ovpn-dco-v2";
    public const string LinkKind = "ovpn-dco";
    public const string ModuleSysfsName = "ovpn_dco_v2";
    public const string MulticastGroupPeers = "peers";
    public const byte GenlVersion = 1;

    // enum ovpn_nl_commands
    public const byte CMD_NEW_PEER = 1, CMD_SET_PEER = 2, CMD_DEL_PEER = 3, CMD_NEW_KEY = 4, CMD_SWAP_KEYS = 5, CMD_DEL_KEY = 6, CMD_GET_PEER = 7;

    // enum ovpn_netlink_attrs
    public const ushort ATTR_IFINDEX = 1, ATTR_NEW_PEER = 2, ATTR_SET_PEER = 3, ATTR_DEL_PEER = 4, ATTR_NEW_KEY = 5,
        ATTR_SWAP_KEYS = 6, ATTR_DEL_KEY = 7, ATTR_GET_PEER = 8;

    // enum ovpn_netlink_new_peer_attrs
    public const ushort NEW_PEER_PEER_ID = 1, NEW_PEER_SOCKADDR_REMOTE = 2, NEW_PEER_SOCKET = 3, NEW_PEER_IPV4 = 4,
        NEW_PEER_IPV6 = 5, NEW_PEER_LOCAL_IP = 6;

    // enum ovpn_netlink_set_peer_attrs
    public const ushort SET_PEER_PEER_ID = 1, SET_PEER_KEEPALIVE_INTERVAL = 2, SET_PEER_KEEPALIVE_TIMEOUT = 3;

    // enum ovpn_netlink_del_peer_attrs
    public const ushort DEL_PEER_REASON = 1, DEL_PEER_PEER_ID = 2;

    // enum ovpn_netlink_new_key_attrs / key_dir / del_key / swap_keys / get_peer
    public const ushort NEW_KEY_PEER_ID = 1, NEW_KEY_SLOT = 2, NEW_KEY_KEY_ID = 3, NEW_KEY_CIPHER_ALG = 4,
        NEW_KEY_ENCRYPT_KEY = 5, NEW_KEY_DECRYPT_KEY = 6;
    public const ushort KEY_DIR_CIPHER_KEY = 1, KEY_DIR_NONCE_TAIL = 2;
    public const ushort DEL_KEY_PEER_ID = 1, DEL_KEY_SLOT = 2;
    public const ushort SWAP_KEYS_PEER_ID = 1;
    public const ushort GET_PEER_PEER_ID = 1;

    // enum ovpn_netlink_get_peer_response_attrs
    public const ushort RESP_PEER_ID = 1, RESP_SOCKADDR_REMOTE = 2, RESP_IPV4 = 3, RESP_IPV6 = 4, RESP_LOCAL_IP = 5,
        RESP_LOCAL_PORT = 6, RESP_KEEPALIVE_INTERVAL = 7, RESP_KEEPALIVE_TIMEOUT = 8, RESP_VPN_RX_BYTES = 9,
        RESP_VPN_TX_BYTES = 10, RESP_VPN_RX_PACKETS = 11, RESP_VPN_TX_PACKETS = 12, RESP_LINK_RX_BYTES = 13,
        RESP_LINK_TX_BYTES = 14, RESP_LINK_RX_PACKETS = 15, RESP_LINK_TX_PACKETS = 16;

    // enum ovpn_cipher_alg, enum ovpn_mode (IFLA_OVPN_MODE = 1 inside IFLA_INFO_DATA)
    public const ushort CIPHER_ALG_NONE = 0, CIPHER_ALG_AES_GCM = 1, CIPHER_ALG_CHACHA20_POLY1305 = 2;
    public const ushort IFLA_OVPN_MODE = 1;
    public const byte MODE_P2P = 0, MODE_MP = 1;

    /// <summary>Kernel cipher number for our cipher; the module has no CBC/HMAC mode.</summary>
    public static ushort CipherAlg(DataCipher cipher) => cipher switch
    {
        DataCipher.Aes128Gcm or DataCipher.Aes256Gcm => CIPHER_ALG_AES_GCM,
        DataCipher.ChaCha20Poly1305 => CIPHER_ALG_CHACHA20_POLY1305,
        _ => throw new NotSupportedException($"the kernel ovpn-dco module supports only AEAD ciphers (AES-GCM, ChaCha20-Poly1305), not {cipher}"),
    };

    private static NetlinkMessageWriter Start(ushort familyId, byte cmd, int ifindex, ushort flags = NetlinkConst.NLM_F_REQUEST | NetlinkConst.NLM_F_ACK)
        => new NetlinkMessageWriter(familyId, flags).GenlHeader(cmd, GenlVersion).U32(ATTR_IFINDEX, (uint)ifindex);

    /// <summary>NEW_PEER. The socket is a descriptor number in the calling process (the kernel does sockfd_lookup).</summary>
    public static NetlinkMessageWriter NewPeer(ushort familyId, int ifindex, uint peerId, int socketFd,
        IPEndPoint? remote, IPAddress? vpnIPv4, IPAddress? vpnIPv6, IPAddress? localIp = null)
    {
        var w = Start(familyId, CMD_NEW_PEER, ifindex).BeginNested(ATTR_NEW_PEER).U32(NEW_PEER_PEER_ID, peerId);
        if (remote is not null)
            w.Attr(NEW_PEER_SOCKADDR_REMOTE, EncodeSockaddr(remote));
        w.U32(NEW_PEER_SOCKET, checked((uint)socketFd));
        if (vpnIPv4 is not null)
            w.Attr(NEW_PEER_IPV4, AddressBytes(vpnIPv4, AddressFamily.InterNetwork)); // __be32: address bytes as on the wire
        if (vpnIPv6 is not null)
            w.Attr(NEW_PEER_IPV6, AddressBytes(vpnIPv6, AddressFamily.InterNetworkV6));
        if (localIp is not null)
        {
            var l = localIp.IsIPv4MappedToIPv6 ? localIp.MapToIPv4() : localIp;
            w.Attr(NEW_PEER_LOCAL_IP, l.GetAddressBytes());
        }
        return w.EndNested();
    }

    /// <summary>SET_PEER keepalive (the module applies it only when both values are present).</summary>
    public static NetlinkMessageWriter SetPeer(ushort familyId, int ifindex, uint peerId, uint keepaliveIntervalSeconds, uint keepaliveTimeoutSeconds)
        => Start(familyId, CMD_SET_PEER, ifindex).BeginNested(ATTR_SET_PEER)
            .U32(SET_PEER_PEER_ID, peerId)
            .U32(SET_PEER_KEEPALIVE_INTERVAL, keepaliveIntervalSeconds)
            .U32(SET_PEER_KEEPALIVE_TIMEOUT, keepaliveTimeoutSeconds)
            .EndNested();

    public static NetlinkMessageWriter DelPeer(ushort familyId, int ifindex, uint peerId)
        => Start(familyId, CMD_DEL_PEER, ifindex).BeginNested(ATTR_DEL_PEER).U32(DEL_PEER_PEER_ID, peerId).EndNested();

    /// <summary>NEW_KEY. KEY_ID is a u8 in the policy (Debian's build reads it as u16; little-endian + zero padding makes that equal).</summary>
    public static NetlinkMessageWriter NewKey(ushort familyId, int ifindex, uint peerId, KeySlot slot, int keyId, DataCipher cipher,
        ReadOnlySpan<byte> encryptKey, ReadOnlySpan<byte> encryptNonceTail, ReadOnlySpan<byte> decryptKey, ReadOnlySpan<byte> decryptNonceTail)
    {
        if (keyId is < 0 or > 7)
            throw new ArgumentOutOfRangeException(nameof(keyId), "OpenVPN key ids are 0..7");
        if (encryptNonceTail.Length != 8 || decryptNonceTail.Length != 8)
            throw new ArgumentException("nonce tails must be 8 bytes");
        return Start(familyId, CMD_NEW_KEY, ifindex).BeginNested(ATTR_NEW_KEY)
            .U32(NEW_KEY_PEER_ID, peerId)
            .U8(NEW_KEY_SLOT, (byte)slot)
            .U8(NEW_KEY_KEY_ID, (byte)keyId)
            .U16(NEW_KEY_CIPHER_ALG, CipherAlg(cipher))
            .BeginNested(NEW_KEY_ENCRYPT_KEY).Attr(KEY_DIR_CIPHER_KEY, encryptKey).Attr(KEY_DIR_NONCE_TAIL, encryptNonceTail).EndNested()
            .BeginNested(NEW_KEY_DECRYPT_KEY).Attr(KEY_DIR_CIPHER_KEY, decryptKey).Attr(KEY_DIR_NONCE_TAIL, decryptNonceTail).EndNested()
            .EndNested();
    }

    public static NetlinkMessageWriter SwapKeys(ushort familyId, int ifindex, uint peerId)
        => Start(familyId, CMD_SWAP_KEYS, ifindex).BeginNested(ATTR_SWAP_KEYS).U32(SWAP_KEYS_PEER_ID, peerId).EndNested();

    public static NetlinkMessageWriter DelKey(ushort familyId, int ifindex, uint peerId, KeySlot slot)
        => Start(familyId, CMD_DEL_KEY, ifindex).BeginNested(ATTR_DEL_KEY).U32(DEL_KEY_PEER_ID, peerId).U8(DEL_KEY_SLOT, (byte)slot).EndNested();

    public static NetlinkMessageWriter GetPeer(ushort familyId, int ifindex, uint peerId)
        => Start(familyId, CMD_GET_PEER, ifindex).BeginNested(ATTR_GET_PEER).U32(GET_PEER_PEER_ID, peerId).EndNested();

    /// <summary>GET_PEER dump: only IFINDEX; one reply per peer (NLM_F_MULTI) then NLMSG_DONE.</summary>
    public static NetlinkMessageWriter GetPeersDump(ushort familyId, int ifindex)
        => Start(familyId, CMD_GET_PEER, ifindex, NetlinkConst.NLM_F_REQUEST | NetlinkConst.NLM_F_DUMP);

    /// <summary>RTM_NEWLINK creating the netdev: IFLA_IFNAME + IFLA_LINKINFO { KIND "ovpn-dco", DATA { IFLA_OVPN_MODE u8 } }.</summary>
    public static NetlinkMessageWriter NewLink(string name, byte mode, string kind = LinkKind)
        => new NetlinkMessageWriter(NetlinkConst.RTM_NEWLINK,
                NetlinkConst.NLM_F_REQUEST | NetlinkConst.NLM_F_ACK | NetlinkConst.NLM_F_CREATE | NetlinkConst.NLM_F_EXCL)
            .IfInfoHeader(0, 0)
            .String(NetlinkConst.IFLA_IFNAME, name)
            .BeginNested(NetlinkConst.IFLA_LINKINFO)
            .String(NetlinkConst.IFLA_INFO_KIND, kind)
            .BeginNested(NetlinkConst.IFLA_INFO_DATA).U8(IFLA_OVPN_MODE, mode).EndNested()
            .EndNested();

    public static NetlinkMessageWriter DelLink(int ifindex)
        => new NetlinkMessageWriter(NetlinkConst.RTM_DELLINK, NetlinkConst.NLM_F_REQUEST | NetlinkConst.NLM_F_ACK).IfInfoHeader(0, ifindex);

    /// <summary>Raw struct sockaddr_in (16 B) or sockaddr_in6 (28 B); IPv4-mapped addresses become sockaddr_in.</summary>
    public static byte[] EncodeSockaddr(IPEndPoint ep)
    {
        var addr = ep.Address.IsIPv4MappedToIPv6 ? ep.Address.MapToIPv4() : ep.Address;
        if (addr.AddressFamily == AddressFamily.InterNetwork)
        {
            // { sa_family_t sin_family (host order); __be16 sin_port; struct in_addr; u8 zero[8] }
            var b = new byte[16];
            BinaryPrimitives.WriteUInt16LittleEndian(b, 2);
            BinaryPrimitives.WriteUInt16BigEndian(b.AsSpan(2), (ushort)ep.Port);
            addr.GetAddressBytes().CopyTo(b, 4);
            return b;
        }
        else
        {
            // { sa_family_t; __be16 port; __be32 flowinfo; struct in6_addr; u32 scope_id }
            var b = new byte[28];
            BinaryPrimitives.WriteUInt16LittleEndian(b, 10);
            BinaryPrimitives.WriteUInt16BigEndian(b.AsSpan(2), (ushort)ep.Port);
            addr.GetAddressBytes().CopyTo(b, 8);
            BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(24), (uint)addr.ScopeId);
            return b;
        }
    }

    public static IPEndPoint? DecodeSockaddr(ReadOnlySpan<byte> sa)
    {
        if (sa.Length >= 16 && BinaryPrimitives.ReadUInt16LittleEndian(sa) == 2)
            return new IPEndPoint(new IPAddress(sa.Slice(4, 4)), BinaryPrimitives.ReadUInt16BigEndian(sa.Slice(2)));
        if (sa.Length >= 28 && BinaryPrimitives.ReadUInt16LittleEndian(sa) == 10)
            return new IPEndPoint(new IPAddress(sa.Slice(8, 16), BinaryPrimitives.ReadUInt32LittleEndian(sa.Slice(24))),
                BinaryPrimitives.ReadUInt16BigEndian(sa.Slice(2)));
        return null;
    }

    /// <summary>Parses one GET_PEER reply (doit answer or one dump element) into our stats record.</summary>
    public static PeerStats ParsePeer(NetlinkMessage reply)
    {
        if (reply.GenlCommand != CMD_GET_PEER)
            throw new InvalidDataException($"not a GET_PEER reply (cmd {reply.GenlCommand})");
        var nest = reply.GenlAttributes().Find(ATTR_GET_PEER) ?? throw new InvalidDataException("GET_PEER reply without OVPN_ATTR_GET_PEER");
        uint id = 0;
        bool haveId = false;
        string remote = "udp:?";
        IPAddress? v4 = null;
        long vrxB = 0, vtxB = 0, vrxP = 0, vtxP = 0, lrxB = 0, ltxB = 0, lrxP = 0, ltxP = 0;
        // Unknown attributes (including the u64 alignment pad, type 0) are skipped.
        foreach (var a in nest.Nested())
        {
            switch (a.Type)
            {
                case RESP_PEER_ID: id = a.AsU32(); haveId = true; break;
                case RESP_SOCKADDR_REMOTE:
                    remote = DecodeSockaddr(a.Data) is { } ep ? $"udp:{ep}" : "udp:?";
                    break;
                case RESP_IPV4 when a.Data.Length == 4: v4 = new IPAddress(a.Data); break;
                case RESP_VPN_RX_BYTES: vrxB = (long)a.AsUInt(); break;
                case RESP_VPN_TX_BYTES: vtxB = (long)a.AsUInt(); break;
                case RESP_VPN_RX_PACKETS: vrxP = (long)a.AsUInt(); break;
                case RESP_VPN_TX_PACKETS: vtxP = (long)a.AsUInt(); break;
                case RESP_LINK_RX_BYTES: lrxB = (long)a.AsUInt(); break;
                case RESP_LINK_TX_BYTES: ltxB = (long)a.AsUInt(); break;
                case RESP_LINK_RX_PACKETS: lrxP = (long)a.AsUInt(); break;
                case RESP_LINK_TX_PACKETS: ltxP = (long)a.AsUInt(); break;
            }
        }
        if (!haveId)
            throw new InvalidDataException("GET_PEER reply without PEER_ID");
        return new PeerStats(id, remote, v4, vrxB, vtxB, vrxP, vtxP, lrxB, ltxB, lrxP, ltxP, new Dictionary<string, long>());
    }

    /// <summary>A DEL_PEER notification from the "peers" group: (ifindex, peer id, reason); null for other messages.</summary>
    public static (int IfIndex, uint PeerId, PeerDeleteReason Reason)? ParseDelPeerNotification(NetlinkMessage msg, ushort familyId)
    {
        if (msg.Type != familyId || msg.GenlCommand != CMD_DEL_PEER)
            return null;
        var attrs = msg.GenlAttributes();
        if (attrs.Find(ATTR_IFINDEX) is not { } ifi || attrs.Find(ATTR_DEL_PEER) is not { } nest)
            return null;
        var inner = nest.Nested();
        if (inner.Find(DEL_PEER_PEER_ID) is not { } pid)
            return null;
        var reason = inner.Find(DEL_PEER_REASON) is { } r ? (PeerDeleteReason)r.AsU8() : PeerDeleteReason.Teardown;
        return ((int)ifi.AsU32(), pid.AsU32(), reason);
    }

    private static byte[] AddressBytes(IPAddress a, AddressFamily want)
    {
        var x = want == AddressFamily.InterNetwork && a.IsIPv4MappedToIPv6 ? a.MapToIPv4() : a;
        if (x.AddressFamily != want)
            throw new ArgumentException($"{a} is not an {(want == AddressFamily.InterNetwork ? "IPv4" : "IPv6")} address");
        return x.GetAddressBytes();
    }
}
