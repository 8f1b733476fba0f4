// SPDX-License-Identifier: MIT
using System.Net;
using Ovpn.DataPlane;
using Ovpn.Platform.Dco;
using Ovpn.Platform.Netlink;
using static Ovpn.Platform.Tests.Netlink.Hex;

namespace Ovpn.Platform.Tests.Netlink;

/// <summary>Replies written by hand in the shape the kernel builds them (net/netlink/genetlink.c ctrl_fill_info,
/// ovpn-dco netlink.c ovpn_netlink_send_peer / ovpn_netlink_notify_del_peer).</summary>
public class NetlinkParsingTests
{
    // CTRL_CMD_NEWFAMILY for ovpn-dco-v2: id 0x20, version 1, hdrsize 0, maxattr 8, ops 1 and 7,
    // mcast group "peers" id 9. Group elements carry GRP_ID before GRP_NAME, as ctrl_fill_mcgrp_info puts them.
    private static readonly byte[] FamilyReply = B(
        "8c000000 1000 0000 01000000 44332211" +   // nlmsghdr len 140, GENL_ID_CTRL, seq 1, pid 0x11223344
        "01 02 0000" +                              // CTRL_CMD_NEWFAMILY, version 2
        "1000 0200 6f76706e2d64636f2d763200" +      // FAMILY_NAME "ovpn-dco-v2\0"
        "0600 0100 2000 0000" +                     // FAMILY_ID u16 0x20 (padded)
        "0800 0300 01000000" +                      // VERSION 1
        "0800 0400 00000000" +                      // HDRSIZE 0
        "0800 0500 08000000" +                      // MAXATTR 8
        "2c00 0680" +                               // OPS nested array, len 44
        "1400 0180 0800 0100 01000000 0800 0200 0b000000" + // [1] OP_ID 1, FLAGS 0x0b
        "1400 0280 0800 0100 07000000 0800 0200 0f000000" + // [2] OP_ID 7, FLAGS 0x0f
        "1c00 0780" +                               // MCAST_GROUPS, len 28
        "1800 0180 0800 0200 09000000 0a00 0100 706565727300 0000"); // [1] GRP_ID 9, GRP_NAME "peers\0"

    [Fact]
    public void Parses_family_id_version_ops_and_multicast_groups()
    {
        var msgs = NetlinkMessage.ParseAll(FamilyReply);
        var m = Assert.Single(msgs);
        Assert.Equal(0x11223344u, m.PortId);
        var f = GenlFamily.Parse(m);
        Assert.Equal("ovpn-dco-v2", f.Name);
        Assert.Equal(0x20, f.Id);
        Assert.Equal(1u, f.Version);
        Assert.Equal(8u, f.MaxAttr);
        Assert.Equal([1u, 7u], f.OperationIds);
        Assert.Equal(9u, f.MulticastGroups["peers"]);
        Assert.Single(f.MulticastGroups);
    }

    [Fact]
    public void Truncated_attribute_is_rejected()
    {
        byte[] bad = (byte[])FamilyReply.Clone();
        bad[20] = 0xff; // FAMILY_NAME nla_len 255 > remaining
        var m = Assert.Single(NetlinkMessage.ParseAll(bad));
        Assert.Throws<InvalidDataException>(() => GenlFamily.Parse(m));
        Assert.Throws<InvalidDataException>(() => NetlinkMessage.ParseAll(FamilyReply.AsSpan(0, 100)));
    }

    [Fact]
    public void Several_messages_in_one_datagram_and_done()
    {
        byte[] two = [.. FamilyReply, .. B("14000000 0300 0200 01000000 44332211 00000000")]; // NLMSG_DONE, MULTI
        var msgs = NetlinkMessage.ParseAll(two);
        Assert.Equal(2, msgs.Count);
        Assert.True(msgs[1].IsDone);
    }

    [Fact]
    public void Error_with_extended_ack_message()
    {
        // NLMSG_ERROR, flags CAPPED|ACK_TLVS (0x300): error -22, the request's header only, then NLMSGERR_ATTR_MSG.
        byte[] err = B("2c000000 0200 0003 05000000 00000000" +
                       "eaffffff" +                                // -EINVAL
                       "24000000 2000 0500 05000000 00000000" +    // echoed request header
                       "0800 0100 626164 00");                     // MSG "bad\0"
        var m = Assert.Single(NetlinkMessage.ParseAll(err));
        Assert.True(m.IsError);
        Assert.Equal(-22, m.ErrorCode);
        Assert.Equal("bad", m.ExtAckMessage);
        var ack = Assert.Single(NetlinkMessage.ParseAll(B("24000000 0200 0001 05000000 00000000 00000000 24000000 2000 0500 05000000 00000000")));
        Assert.Equal(0, ack.ErrorCode);
        Assert.Null(ack.ExtAckMessage);
    }

    [Fact]
    public void Parses_get_peer_reply_with_u64_pad_attribute()
    {
        byte[] reply = B(
            "9c000000 2000 0000 07000000 00000000" +   // len 156
            "07 01 0000" +                              // OVPN_CMD_GET_PEER
            "8800 0880" +                               // OVPN_ATTR_GET_PEER nest, len 136
            "0800 0100 05000000" +                      // PEER_ID 5
            "0800 0300 ac1be002" +                      // IPV4 172.27.224.2
            "0800 0700 0a000000 0800 0800 3c000000" +   // keepalive 10 / 60
            "1400 0200 0200 c738 0ac80002 0000000000000000" + // SOCKADDR_REMOTE 10.200.0.2:51000
            "0800 0500 0ac80001" +                      // LOCAL_IP
            "0600 0600 04aa 0000" +                     // LOCAL_PORT be16 1194
            "0400 0000" +                               // pad attribute (type 0) before a 64-bit value
            "0c00 0900 e803000000000000" +              // VPN_RX_BYTES 1000
            "0800 0b00 0a000000" +                      // VPN_RX_PACKETS 10
            "0c00 0a00 d007000000000000" +              // VPN_TX_BYTES 2000
            "0800 0c00 14000000" +                      // VPN_TX_PACKETS 20
            "0c00 0d00 0000000001000000" +              // LINK_RX_BYTES 2^32 (needs 64 bits)
            "0800 0f00 1e000000");                      // LINK_RX_PACKETS 30 (TX_* absent)
        var s = OvpnDcoV2.ParsePeer(Assert.Single(NetlinkMessage.ParseAll(reply)));
        Assert.Equal(5u, s.PeerId);
        Assert.Equal(IPAddress.Parse("172.27.224.2"), s.VpnIPv4);
        Assert.Equal("udp:10.200.0.2:51000", s.Remote);
        Assert.Equal(1000, s.VpnRxBytes);
        Assert.Equal(2000, s.VpnTxBytes);
        Assert.Equal(10, s.VpnRxPackets);
        Assert.Equal(20, s.VpnTxPackets);
        Assert.Equal(1L << 32, s.LinkRxBytes);
        Assert.Equal(30, s.LinkRxPackets);
        Assert.Equal(0, s.LinkTxBytes);
        Assert.Equal(0, s.LinkTxPackets);
    }

    [Fact]
    public void Get_peer_reply_without_peer_id_is_rejected()
    {
        byte[] reply = B("20000000 2000 0000 07000000 00000000 | 07 01 0000 | 0c00 0880 | 0800 0300 ac1be002"); // only IPV4
        Assert.Throws<InvalidDataException>(() => OvpnDcoV2.ParsePeer(Assert.Single(NetlinkMessage.ParseAll(reply))));
    }

    [Fact]
    public void Parses_del_peer_notification()
    {
        byte[] ntf = B("30000000 2000 0000 00000000 00000000" + // len 48; multicast: seq 0, pid 0
                       "03 01 0000" +                            // OVPN_CMD_DEL_PEER
                       "0800 0100 07000000" +                    // IFINDEX 7
                       "1400 0480" +                             // OVPN_ATTR_DEL_PEER nest
                       "0500 0100 02 000000" +                   //   REASON EXPIRED
                       "0800 0200 05000000");                    //   PEER_ID 5
        var m = Assert.Single(NetlinkMessage.ParseAll(ntf));
        var n = OvpnDcoV2.ParseDelPeerNotification(m, familyId: 0x20);
        Assert.NotNull(n);
        Assert.Equal((7, 5u, PeerDeleteReason.Expired), n.Value);
        Assert.Null(OvpnDcoV2.ParseDelPeerNotification(m, familyId: 0x21)); // another family's message
    }
}
