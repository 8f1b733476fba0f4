// SPDX-License-Identifier: MIT
namespace Ovpn.Platform.Netlink;

/// <summary>A generic netlink family as reported by nlctrl (CTRL_CMD_GETFAMILY).</summary>
public sealed record GenlFamily(
    string Name, ushort Id, uint Version, uint HeaderSize, uint MaxAttr,
    IReadOnlyList<uint> OperationIds, IReadOnlyDictionary<string, uint> MulticastGroups)
{
    /// <summary>GENL_NAMSIZ: family names including the NUL terminator.</summary>
    public const int GenlNameSize = 16;

    /// <summary>CTRL_CMD_GETFAMILY request for one family by name (nlctrl's own version is 2; it ignores it).</summary>
    public static NetlinkMessageWriter BuildGetFamily(string name)
        => name.Length is 0 or >= GenlNameSize
            ? throw new ArgumentException($"genl family names are 1..{GenlNameSize - 1} characters (GENL_NAMSIZ)", nameof(name))
            : new NetlinkMessageWriter(NetlinkConst.GENL_ID_CTRL, NetlinkConst.NLM_F_REQUEST | NetlinkConst.NLM_F_ACK)
            .GenlHeader(NetlinkConst.CTRL_CMD_GETFAMILY, 1)
            .String(NetlinkConst.CTRL_ATTR_FAMILY_NAME, name);

    /// <summary>Parses the CTRL_CMD_NEWFAMILY reply (the payload after nlmsghdr).</summary>
    public static GenlFamily Parse(NetlinkMessage reply)
    {
        if (reply.Type != NetlinkConst.GENL_ID_CTRL || reply.GenlCommand != NetlinkConst.CTRL_CMD_NEWFAMILY)
            throw new InvalidDataException($"not a CTRL_CMD_NEWFAMILY reply (type {reply.Type}, cmd {reply.GenlCommand})");
        var attrs = reply.GenlAttributes();
        string name = attrs.Find(NetlinkConst.CTRL_ATTR_FAMILY_NAME)?.AsString() ?? throw new InvalidDataException("family reply without name");
        ushort id = attrs.Find(NetlinkConst.CTRL_ATTR_FAMILY_ID)?.AsU16() ?? throw new InvalidDataException("family reply without id");
        uint version = attrs.Find(NetlinkConst.CTRL_ATTR_VERSION)?.AsU32() ?? 0;
        uint hdr = attrs.Find(NetlinkConst.CTRL_ATTR_HDRSIZE)?.AsU32() ?? 0;
        uint maxAttr = attrs.Find(NetlinkConst.CTRL_ATTR_MAXATTR)?.AsU32() ?? 0;
        var ops = new List<uint>();
        // CTRL_ATTR_OPS and CTRL_ATTR_MCAST_GROUPS are "nested arrays": the outer nest holds one nest per
        // element (attribute type = index starting at 1), each with the element's attributes.
        if (attrs.Find(NetlinkConst.CTRL_ATTR_OPS) is { } opsAttr)
            foreach (var op in opsAttr.Nested())
                if (op.Nested().Find(NetlinkConst.CTRL_ATTR_OP_ID) is { } opId)
                    ops.Add(opId.AsU32());
        var groups = new Dictionary<string, uint>(StringComparer.Ordinal);
        if (attrs.Find(NetlinkConst.CTRL_ATTR_MCAST_GROUPS) is { } grpAttr)
            foreach (var g in grpAttr.Nested())
            {
                var ga = g.Nested();
                if (ga.Find(NetlinkConst.CTRL_ATTR_MCAST_GRP_NAME) is { } gn && ga.Find(NetlinkConst.CTRL_ATTR_MCAST_GRP_ID) is { } gid)
                    groups[gn.AsString()] = gid.AsU32();
            }
        return new GenlFamily(name, id, version, hdr, maxAttr, ops, groups);
    }
}
