// SPDX-License-Identifier: MIT
namespace Ovpn.Platform.Netlink;

/// <summary>Numbers from the uapi headers linux/netlink.h, linux/genetlink.h, linux/rtnetlink.h, linux/if_link.h.</summary>
public static class NetlinkConst
{
    public const int NlMsgHdrLen = 16;   // struct nlmsghdr
    public const int GenlHdrLen = 4;     // struct genlmsghdr
    public const int NlaHdrLen = 4;      // struct nlattr
    public const int IfInfoMsgLen = 16;  // struct ifinfomsg

    // socket level
    public const int AF_NETLINK = 16;
    public const int NETLINK_ROUTE = 0;
    public const int NETLINK_GENERIC = 16;
    public const int SOL_NETLINK = 270;
    public const int NETLINK_ADD_MEMBERSHIP = 1;
    public const int NETLINK_DROP_MEMBERSHIP = 2;
    public const int NETLINK_CAP_ACK = 10;
    public const int NETLINK_EXT_ACK = 11;

    // nlmsg_type
    public const ushort NLMSG_NOOP = 1;
    public const ushort NLMSG_ERROR = 2;
    public const ushort NLMSG_DONE = 3;
    public const ushort NLMSG_OVERRUN = 4;

    // nlmsg_flags
    public const ushort NLM_F_REQUEST = 0x1;
    public const ushort NLM_F_MULTI = 0x2;
    public const ushort NLM_F_ACK = 0x4;
    public const ushort NLM_F_ROOT = 0x100;
    public const ushort NLM_F_MATCH = 0x200;
    public const ushort NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH;
    public const ushort NLM_F_EXCL = 0x200;
    public const ushort NLM_F_CREATE = 0x400;
    public const ushort NLM_F_CAPPED = 0x100;    // in NLMSG_ERROR: request payload not echoed
    public const ushort NLM_F_ACK_TLVS = 0x200;  // in NLMSG_ERROR: extended-ack TLVs follow

    // struct nlattr nla_type flag bits
    public const ushort NLA_F_NESTED = 0x8000;
    public const ushort NLA_F_NET_BYTEORDER = 0x4000;
    public const ushort NLA_TYPE_MASK = 0x3fff;

    // enum nlmsgerr_attrs
    public const ushort NLMSGERR_ATTR_MSG = 1;

    // generic netlink controller (linux/genetlink.h)
    public const ushort GENL_ID_CTRL = 0x10;
    public const byte CTRL_CMD_NEWFAMILY = 1;
    public const byte CTRL_CMD_GETFAMILY = 3;
    public const ushort CTRL_ATTR_FAMILY_ID = 1;
    public const ushort CTRL_ATTR_FAMILY_NAME = 2;
    public const ushort CTRL_ATTR_VERSION = 3;
    public const ushort CTRL_ATTR_HDRSIZE = 4;
    public const ushort CTRL_ATTR_MAXATTR = 5;
    public const ushort CTRL_ATTR_OPS = 6;
    public const ushort CTRL_ATTR_MCAST_GROUPS = 7;
    public const ushort CTRL_ATTR_OP_ID = 1;
    public const ushort CTRL_ATTR_MCAST_GRP_NAME = 1;
    public const ushort CTRL_ATTR_MCAST_GRP_ID = 2;

    // rtnetlink
    public const ushort RTM_NEWLINK = 16;
    public const ushort RTM_DELLINK = 17;
    public const ushort RTM_GETLINK = 18;
    public const ushort IFLA_IFNAME = 3;
    public const ushort IFLA_LINKINFO = 18;
    public const ushort IFLA_INFO_KIND = 1;
    public const ushort IFLA_INFO_DATA = 2;

    /// <summary>NLMSG_ALIGN / NLA_ALIGN: round up to 4.</summary>
    public static int Align(int n) => (n + 3) & ~3;
}
