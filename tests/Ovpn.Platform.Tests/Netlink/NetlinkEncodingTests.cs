// SPDX-License-Identifier: MIT
using System.Net;
using Ovpn.DataPlane;
using Ovpn.Platform.Dco;
using Ovpn.Platform.Netlink;
using Ovpn.Protocol.Keys;
using static Ovpn.Platform.Tests.Netlink.Hex;

namespace Ovpn.Platform.Tests.Netlink;

/// <summary>
/// Expected bytes are written by hand from the uapi headers: struct nlmsghdr {u32 len; u16 type; u16 flags;
/// u32 seq; u32 pid} (linux/netlink.h), struct genlmsghdr {u8 cmd; u8 version; u16 reserved}
/// (linux/genetlink.h), struct nlattr {u16 len; u16 type} + payload padded to 4 (NLA_ALIGNTO), NLA_F_NESTED
/// = 0x8000, and the ovpn-dco-v2 enums of include/uapi/linux/ovpn_dco.h. All integers little-endian (x86/arm64).
/// </summary>
public class NetlinkEncodingTests
{
    [Fact]
    public void GetFamilyRequest_matches_hand_layout()
    {
        byte[] msg = GenlFamily.BuildGetFamily("ovpn-dco-v2").Finish(seq: 1);
        byte[] expected = B(
            "24000000 | 1000 | 0500 | 01000000 | 00000000" + // nlmsghdr: len 36, GENL_ID_CTRL, REQUEST|ACK, seq 1, pid 0
            "03 01 0000" +                                      // genlmsghdr: CTRL_CMD_GETFAMILY, version 1
            "1000 0200 6f76706e2d64636f2d763200");            // nla len 16, CTRL_ATTR_FAMILY_NAME "ovpn-dco-v2\0" (12 B, no pad)
        Assert.Equal(Of(expected), Of(msg));
    }

    [Fact]
    public void Small_attributes_are_padded_to_four_but_length_excludes_padding()
    {
        byte[] msg = new NetlinkMessageWriter(0x20, 1).U8(7, 0xAB).U16(8, 0x1234).Attr(9, [1, 2, 3, 4, 5]).Finish(seq: 0);
        byte[] expected = B(
            "2c000000 2000 0100 00000000 00000000" + // len 44 = 16 + 8 + 8 + 12
            "0500 0700 ab 000000" +                   // u8: nla_len 5, 3 pad bytes
            "0600 0800 3412 0000" +                   // u16: nla_len 6, 2 pad bytes
            "0900 0900 0102030405 000000");           // 5 bytes: nla_len 9, 3 pad bytes
        Assert.Equal(Of(expected), Of(msg));
    }

    [Fact]
    public void Nested_attribute_length_covers_padded_children_and_sets_NLA_F_NESTED()
    {
        byte[] msg = new NetlinkMessageWriter(0x20, 1).BeginNested(3).U8(1, 9).BeginNested(2).U32(1, 0xdeadbeef).EndNested().EndNested().Finish(0);
        byte[] expected = B(
            "28000000 2000 0100 00000000 00000000" + // len 40
            "1800 0380" +              // outer nest: len 24 = 4 + 8 + 12, type 3 | NLA_F_NESTED
            "0500 0100 09 000000" +    // u8 padded
            "0c00 0280" +              // inner nest len 12 = 4 + 8
            "0800 0100 efbeadde");
        Assert.Equal(Of(expected), Of(msg));
    }

    [Fact]
    public void Writer_rejects_unbalanced_nests()
    {
        Assert.Throws<InvalidOperationException>(() => new NetlinkMessageWriter(1, 1).BeginNested(1).Finish());
        Assert.Throws<InvalidOperationException>(() => new NetlinkMessageWriter(1, 1).EndNested());
    }

    [Fact]
    public void NewPeer_udp4_matches_hand_layout()
    {
        byte[] msg = OvpnDcoV2.NewPeer(familyId: 0x20, ifindex: 7, peerId: 5, socketFd: 42,
            remote: new IPEndPoint(IPAddress.Parse("10.200.0.2"), 51000), vpnIPv4: IPAddress.Parse("172.27.224.2"), vpnIPv6: null).Finish(seq: 2);
        byte[] expected = B(
            "4c000000 2000 0500 02000000 00000000" + // len 76, family 0x20, REQUEST|ACK, seq 2
            "01 01 0000" +                            // OVPN_CMD_NEW_PEER, version 1
            "0800 0100 07000000" +                    // OVPN_ATTR_IFINDEX = 7
            "3000 0280" +                             // OVPN_ATTR_NEW_PEER nest, len 48
            "0800 0100 05000000" +                    //   PEER_ID 5
            "1400 0200 0200 c738 0ac80002 0000000000000000" + // SOCKADDR_REMOTE: sockaddr_in AF_INET, port 51000 BE, 10.200.0.2
            "0800 0300 2a000000" +                    //   SOCKET fd 42
            "0800 0400 ac1be002");                    //   IPV4 172.27.224.2 (network order)
        Assert.Equal(Of(expected), Of(msg));
    }

    [Fact]
    public void Sockaddr_v6_is_28_bytes_and_v4_mapped_folds_to_sockaddr_in()
    {
        byte[] v6 = OvpnDcoV2.EncodeSockaddr(new IPEndPoint(IPAddress.Parse("fd00::1"), 1194));
        Assert.Equal(Of(B("0a00 04aa 00000000 fd000000000000000000000000000001 00000000")), Of(v6));
        byte[] mapped = OvpnDcoV2.EncodeSockaddr(new IPEndPoint(IPAddress.Parse("::ffff:10.0.0.9"), 1194));
        Assert.Equal(Of(B("0200 04aa 0a000009 0000000000000000")), Of(mapped));
        Assert.Equal(new IPEndPoint(IPAddress.Parse("fd00::1"), 1194), OvpnDcoV2.DecodeSockaddr(v6));
        Assert.Equal(new IPEndPoint(IPAddress.Parse("10.0.0.9"), 1194), OvpnDcoV2.DecodeSockaddr(mapped));
    }

    [Fact]
    public void NewKey_matches_hand_layout_with_policy_widths()
    {
        byte[] ek = Enumerable.Repeat((byte)0x11, 32).ToArray(), dk = Enumerable.Repeat((byte)0x22, 32).ToArray();
        byte[] en = Enumerable.Range(0xa0, 8).Select(i => (byte)i).ToArray(), dn = Enumerable.Range(0xb0, 8).Select(i => (byte)i).ToArray();
        byte[] msg = OvpnDcoV2.NewKey(0x20, 7, peerId: 1, KeySlot.Secondary, keyId: 2, DataCipher.Aes256Gcm, ek, en, dk, dn).Finish(seq: 3);
        byte[] expected = B(
            "a8000000 2000 0500 03000000 00000000" + // len 168
            "04 01 0000" +                            // OVPN_CMD_NEW_KEY
            "0800 0100 07000000" +                    // IFINDEX 7
            "8c00 0580" +                             // OVPN_ATTR_NEW_KEY nest, len 140
            "0800 0100 01000000" +                    //   PEER_ID 1 (u32)
            "0500 0200 01 000000" +                   //   KEY_SLOT secondary (u8)
            "0500 0300 02 000000" +                   //   KEY_ID 2 (u8)
            "0600 0400 0100 0000" +                   //   CIPHER_ALG AES_GCM (u16)
            "3400 0580" +                             //   ENCRYPT_KEY nest, len 52
            "2400 0100" + new string('1', 64) +       //     CIPHER_KEY 32 bytes 0x11
            "0c00 0200 a0a1a2a3a4a5a6a7" +            //     NONCE_TAIL 8 bytes
            "3400 0680" +                             //   DECRYPT_KEY nest
            "2400 0100" + string.Concat(Enumerable.Repeat("22", 32)) +
            "0c00 0200 b0b1b2b3b4b5b6b7");
        Assert.Equal(Of(expected), Of(msg));
    }

    [Fact]
    public void SetPeer_DelPeer_SwapKeys_DelKey_GetPeer_layouts()
    {
        Assert.Equal(Of(B("38000000 2000 0500 01000000 00000000 | 02 01 0000 | 0800 0100 07000000 |" +
                          "1c00 0380 | 0800 0100 05000000 | 0800 0200 0a000000 | 0800 0300 3c000000")),
            Of(OvpnDcoV2.SetPeer(0x20, 7, 5, 10, 60).Finish(1)));
        Assert.Equal(Of(B("28000000 2000 0500 01000000 00000000 | 03 01 0000 | 0800 0100 07000000 | 0c00 0480 | 0800 0200 05000000")),
            Of(OvpnDcoV2.DelPeer(0x20, 7, 5).Finish(1))); // PEER_ID is attr 2 in the DEL_PEER nest (1 is REASON)
        Assert.Equal(Of(B("28000000 2000 0500 01000000 00000000 | 05 01 0000 | 0800 0100 07000000 | 0c00 0680 | 0800 0100 05000000")),
            Of(OvpnDcoV2.SwapKeys(0x20, 7, 5).Finish(1)));
        Assert.Equal(Of(B("30000000 2000 0500 01000000 00000000 | 06 01 0000 | 0800 0100 07000000 | 1400 0780 | 0800 0100 05000000 | 0500 0200 00 000000")),
            Of(OvpnDcoV2.DelKey(0x20, 7, 5, KeySlot.Primary).Finish(1)));
        Assert.Equal(Of(B("28000000 2000 0500 01000000 00000000 | 07 01 0000 | 0800 0100 07000000 | 0c00 0880 | 0800 0100 05000000")),
            Of(OvpnDcoV2.GetPeer(0x20, 7, 5).Finish(1)));
        // Dump: NLM_F_REQUEST | NLM_F_DUMP (0x300), no ACK, only IFINDEX.
        Assert.Equal(Of(B("1c000000 2000 0103 01000000 00000000 | 07 01 0000 | 0800 0100 07000000")),
            Of(OvpnDcoV2.GetPeersDump(0x20, 7).Finish(1)));
    }

    [Fact]
    public void NewLink_ovpn_dco_multipeer_matches_hand_layout()
    {
        byte[] msg = OvpnDcoV2.NewLink("as0t0", OvpnDcoV2.MODE_MP).Finish(seq: 9);
        byte[] expected = B(
            "4c000000 1000 0506 09000000 00000000" + // len 76, RTM_NEWLINK, REQUEST|ACK|EXCL|CREATE
            "00 00 0000 00000000 00000000 00000000" + // ifinfomsg, all zero
            "0a00 0300 617330743000 0000" +           // IFLA_IFNAME "as0t0\0" (len 10, 2 pad)
            "2000 1280" +                             // IFLA_LINKINFO nest, len 32
            "0d00 0100 6f76706e2d64636f00 000000" +   //   IFLA_INFO_KIND "ovpn-dco\0" (len 13, 3 pad)
            "0c00 0280" +                             //   IFLA_INFO_DATA nest
            "0500 0100 01 000000");                   //     IFLA_OVPN_MODE = MP
        Assert.Equal(Of(expected), Of(msg));
    }

    [Fact]
    public void Cipher_mapping_refuses_non_aead()
    {
        Assert.Equal(1, OvpnDcoV2.CipherAlg(DataCipher.Aes128Gcm));
        Assert.Equal(1, OvpnDcoV2.CipherAlg(DataCipher.Aes256Gcm));
        Assert.Equal(2, OvpnDcoV2.CipherAlg(DataCipher.ChaCha20Poly1305));
        var ex = Assert.Throws<NotSupportedException>(() => OvpnDcoV2.CipherAlg(DataCipher.Aes256Cbc));
        Assert.Contains("AEAD", ex.Message);
    }

    [Fact]
    public void Clear_zeroes_key_material_in_the_writer()
    {
        var w = OvpnDcoV2.NewKey(0x20, 7, 1, KeySlot.Primary, 0, DataCipher.Aes128Gcm,
            Enumerable.Repeat((byte)0x5a, 16).ToArray(), new byte[8], new byte[16], new byte[8]);
        Assert.Contains("5a5a5a5a", Of(w.Finish()));
        w.Clear();
        Assert.DoesNotContain("5a5a5a5a", Of(w.Finish()));
    }
}
