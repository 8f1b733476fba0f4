// SPDX-License-Identifier: MIT
using System.Net;
using Ovpn.DataPlane;
using Ovpn.Platform.Dco;
using Ovpn.Platform.Netlink;
using Ovpn.Protocol.Keys;
using static Ovpn.Platform.Tests.Netlink.Hex;

namespace Ovpn.Platform.Tests.Netlink;

/// <summary>
/// Upstream "ovpn" family (include/uapi/linux/ovpn.h: OVPN_A_IFINDEX 1, OVPN_A_PEER 2, OVPN_A_KEYCONF 3;
/// OVPN_CMD_PEER_NEW 1 .. OVPN_CMD_PEER_FLOAT_NTF 11; peer/keyconf/keydir attribute enums). Bytes written by hand.
/// </summary>
public class OvpnUpstreamTests
{
    [Fact]
    public void PeerNew_udp4_uses_separate_remote_address_and_be16_port()
    {
        byte[] msg = OvpnUpstream.PeerNew(0x21, 7, 5, 42, new IPEndPoint(IPAddress.Parse("::ffff:10.200.0.2"), 51000),
            IPAddress.Parse("172.27.224.2"), null).Finish(seq: 2);
        byte[] expected = B(
            "48000000 2100 0500 02000000 00000000" + // len 72
            "01 01 0000" +                            // OVPN_CMD_PEER_NEW
            "0800 0100 07000000" +                    // OVPN_A_IFINDEX
            "2c00 0280" +                             // OVPN_A_PEER nest, len 44
            "0800 0100 05000000" +                    //   ID
            "0800 0200 0ac80002" +                    //   REMOTE_IPV4 (v4-mapped folded)
            "0600 0500 c738 0000" +                   //   REMOTE_PORT be16 51000
            "0800 0600 2a000000" +                    //   SOCKET fd 42
            "0800 0800 ac1be002");                    //   VPN_IPV4
        Assert.Equal(Of(expected), Of(msg));
    }

    [Fact]
    public void PeerNew_udp6_with_scope()
    {
        var remote = new IPEndPoint(IPAddress.Parse("fe80::1%3"), 1194);
        byte[] msg = OvpnUpstream.PeerNew(0x21, 7, 5, 42, remote, null, IPAddress.Parse("fd00::2")).Finish(seq: 1);
        byte[] expected = B(
            "68000000 2100 0500 01000000 00000000" + // len 104 = 16 + 4 + 8 + 76
            "01 01 0000 | 0800 0100 07000000" +
            "4c00 0280" +                             // OVPN_A_PEER nest, len 76 = 4 + 8 + 20 + 8 + 8 + 8 + 20
            "0800 0100 05000000" +
            "1400 0300 fe800000000000000000000000000001" + // REMOTE_IPV6
            "0800 0400 03000000" +                    // REMOTE_IPV6_SCOPE_ID
            "0600 0500 04aa 0000" +                   // REMOTE_PORT 1194
            "0800 0600 2a000000" +                    // SOCKET
            "1400 0900 fd000000000000000000000000000002"); // VPN_IPV6
        Assert.Equal(Of(expected), Of(msg));
    }

    [Fact]
    public void KeyNew_uses_u32_slot_keyid_cipher_in_keyconf_nest()
    {
        byte[] ek = Enumerable.Repeat((byte)0x11, 32).ToArray(), dk = Enumerable.Repeat((byte)0x22, 32).ToArray();
        byte[] en = Enumerable.Range(0xa0, 8).Select(i => (byte)i).ToArray(), dn = Enumerable.Range(0xb0, 8).Select(i => (byte)i).ToArray();
        byte[] msg = OvpnUpstream.KeyNew(0x21, 7, 1, KeySlot.Secondary, 2, DataCipher.ChaCha20Poly1305, ek, en, dk, dn).Finish(seq: 3);
        byte[] expected = B(
            "a8000000 2100 0500 03000000 00000000" + // len 168
            "06 01 0000" +                            // OVPN_CMD_KEY_NEW
            "0800 0100 07000000" +
            "8c00 0380" +                             // OVPN_A_KEYCONF nest, len 140
            "0800 0100 01000000" +                    //   PEER_ID
            "0800 0200 01000000" +                    //   SLOT secondary (u32)
            "0800 0300 02000000" +                    //   KEY_ID (u32)
            "0800 0400 02000000" +                    //   CIPHER_ALG chacha20-poly1305 (u32)
            "3400 0580 | 2400 0100" + string.Concat(Enumerable.Repeat("11", 32)) + "| 0c00 0200 a0a1a2a3a4a5a6a7" +
            "3400 0680 | 2400 0100" + string.Concat(Enumerable.Repeat("22", 32)) + "| 0c00 0200 b0b1b2b3b4b5b6b7");
        Assert.Equal(Of(expected), Of(msg));
    }

    [Fact]
    public void Other_requests_match_hand_layouts()
    {
        Assert.Equal(Of(B("38000000 2100 0500 01000000 00000000 | 02 01 0000 | 0800 0100 07000000 | 1c00 0280 | 0800 0100 05000000 | 0800 0d00 0a000000 | 0800 0e00 3c000000")),
            Of(OvpnUpstream.PeerSet(0x21, 7, 5, 10, 60).Finish(1)));
        Assert.Equal(Of(B("28000000 2100 0500 01000000 00000000 | 04 01 0000 | 0800 0100 07000000 | 0c00 0280 | 0800 0100 05000000")),
            Of(OvpnUpstream.PeerDel(0x21, 7, 5).Finish(1)));
        Assert.Equal(Of(B("28000000 2100 0500 01000000 00000000 | 03 01 0000 | 0800 0100 07000000 | 0c00 0280 | 0800 0100 05000000")),
            Of(OvpnUpstream.PeerGet(0x21, 7, 5).Finish(1)));
        Assert.Equal(Of(B("1c000000 2100 0103 01000000 00000000 | 03 01 0000 | 0800 0100 07000000")),
            Of(OvpnUpstream.PeerGetDump(0x21, 7).Finish(1)));
        Assert.Equal(Of(B("28000000 2100 0500 01000000 00000000 | 08 01 0000 | 0800 0100 07000000 | 0c00 0380 | 0800 0100 05000000")),
            Of(OvpnUpstream.KeySwap(0x21, 7, 5).Finish(1)));
        Assert.Equal(Of(B("30000000 2100 0500 01000000 00000000 | 0a 01 0000 | 0800 0100 07000000 | 1400 0380 | 0800 0100 05000000 | 0800 0200 00000000")),
            Of(OvpnUpstream.KeyDel(0x21, 7, 5, KeySlot.Primary).Finish(1)));
        Assert.Equal(Of(B("48000000 1000 0506 01000000 00000000 | 00000000 00000000 00000000 00000000 | 0a00 0300 617330743000 0000 |" +
                          "1c00 1280 | 0900 0100 6f76706e00 000000 | 0c00 0280 | 0500 0100 00 000000")),
            Of(OvpnUpstream.NewLink("as0t0", OvpnDcoV2.MODE_P2P).Finish(1)));
    }

    [Fact]
    public void Peer_ids_are_24_bit()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => OvpnUpstream.PeerDel(0x21, 7, 0x1000000));
        _ = OvpnUpstream.PeerDel(0x21, 7, 0xFFFFFF);
    }

    [Fact]
    public void Parses_peer_get_reply_with_uint_widths()
    {
        byte[] reply = B(
            "54000000 2100 0200 01000000 00000000" + // len 84, NLM_F_MULTI (dump element)
            "03 01 0000" +                            // OVPN_CMD_PEER_GET
            "4000 0280" +                             // OVPN_A_PEER nest, len 64
            "0800 0100 05000000" +
            "0800 0200 0ac80002" +
            "0600 0500 c738 0000" +
            "0800 0800 ac1be002" +
            "0c00 1000 0000000002000000" +            // VPN_RX_BYTES as 8-byte uint: 2^33
            "0800 1100 39300000" +                    // VPN_TX_BYTES as 4-byte uint: 12345
            "0800 1600 07000000");                    // LINK_RX_PACKETS 7
        var s = OvpnUpstream.ParsePeer(Assert.Single(NetlinkMessage.ParseAll(reply)));
        Assert.Equal(5u, s.PeerId);
        Assert.Equal("udp:10.200.0.2:51000", s.Remote);
        Assert.Equal(IPAddress.Parse("172.27.224.2"), s.VpnIPv4);
        Assert.Equal(1L << 33, s.VpnRxBytes);
        Assert.Equal(12345, s.VpnTxBytes);
        Assert.Equal(7, s.LinkRxPackets);
        Assert.Equal(0, s.LinkTxPackets);
    }

    [Fact]
    public void Parses_the_three_notifications()
    {
        var del = OvpnUpstream.ParseNotification(Assert.Single(NetlinkMessage.ParseAll(B(
            "30000000 2100 0000 00000000 00000000 | 05 01 0000 | 0800 0100 07000000 | 1400 0280 | 0800 0f00 03000000 | 0800 0100 05000000"))), 0x21);
        Assert.Equal(new DcoNotification.PeerDeleted(7, 5, PeerDeleteReason.TransportError), del);

        // key-id put as u16 by the kernel (nla_put_u16) although the spec says u32
        var swap = OvpnUpstream.ParseNotification(Assert.Single(NetlinkMessage.ParseAll(B(
            "30000000 2100 0000 00000000 00000000 | 09 01 0000 | 0800 0100 07000000 | 1400 0380 | 0800 0100 05000000 | 0600 0300 0300 0000"))), 0x21);
        Assert.Equal(new DcoNotification.KeySwapDue(7, 5, 3), swap);

        var fl = OvpnUpstream.ParseNotification(Assert.Single(NetlinkMessage.ParseAll(B(
            "38000000 2100 0000 00000000 00000000 | 0b 01 0000 | 0800 0100 07000000 | 1c00 0280 | 0800 0100 05000000 | 0800 0200 0ac80009 | 0600 0500 04aa 0000"))), 0x21);
        Assert.Equal(new DcoNotification.PeerFloated(7, 5, new IPEndPoint(IPAddress.Parse("10.200.0.9"), 1194)), fl);

        // a reply of another family id is not a notification of ours
        Assert.Null(OvpnUpstream.ParseNotification(Assert.Single(NetlinkMessage.ParseAll(B(
            "30000000 2200 0000 00000000 00000000 | 05 01 0000 | 0800 0100 07000000 | 1400 0280 | 0800 0f00 03000000 | 0800 0100 05000000"))), 0x21));
    }
}
