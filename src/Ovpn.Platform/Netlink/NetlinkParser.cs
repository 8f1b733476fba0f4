// SPDX-License-Identifier: MIT
using System.Buffers.Binary;
using System.Text;

namespace Ovpn.Platform.Netlink;

/// <summary>One received netlink message: header fields and the payload after the 16-byte header.</summary>
public sealed record NetlinkMessage(ushort Type, ushort Flags, uint Seq, uint PortId, byte[] Payload)
{
    public bool IsError => Type == NetlinkConst.NLMSG_ERROR;
    public bool IsDone => Type == NetlinkConst.NLMSG_DONE;

    /// <summary>NLMSG_ERROR: the (negative) errno, 0 for an ACK.</summary>
    public int ErrorCode => IsError && Payload.Length >= 4 ? BinaryPrimitives.ReadInt32LittleEndian(Payload) : 0;

    /// <summary>NLMSG_ERROR with extended ack: the kernel's NLMSGERR_ATTR_MSG text, if any.</summary>
    public string? ExtAckMessage
    {
        get
        {
            if (!IsError || (Flags & NetlinkConst.NLM_F_ACK_TLVS) == 0 || Payload.Length < 4 + NetlinkConst.NlMsgHdrLen)
                return null;
            // struct nlmsgerr { int error; struct nlmsghdr msg; } then, unless capped, the request payload.
            int offset = 4 + NetlinkConst.NlMsgHdrLen;
            if ((Flags & NetlinkConst.NLM_F_CAPPED) == 0)
            {
                uint origLen = BinaryPrimitives.ReadUInt32LittleEndian(Payload.AsSpan(4));
                offset = 4 + NetlinkConst.Align((int)Math.Min(origLen, (uint)Payload.Length));
            }
            if (offset > Payload.Length)
                return null;
            foreach (var a in NetlinkAttribute.Parse(Payload.AsSpan(offset)))
                if (a.Type == NetlinkConst.NLMSGERR_ATTR_MSG)
                    return a.AsString();
            return null;
        }
    }

    /// <summary>Generic netlink: command byte of the genlmsghdr.</summary>
    public byte GenlCommand => Payload.Length >= NetlinkConst.GenlHdrLen ? Payload[0] : (byte)0;

    /// <summary>Generic netlink: the attributes after the genlmsghdr.</summary>
    public IReadOnlyList<NetlinkAttribute> GenlAttributes()
        => Payload.Length < NetlinkConst.GenlHdrLen ? [] : NetlinkAttribute.Parse(Payload.AsSpan(NetlinkConst.GenlHdrLen));

    /// <summary>Splits a datagram into messages. Malformed lengths throw (the kernel never sends them).</summary>
    public static List<NetlinkMessage> ParseAll(ReadOnlySpan<byte> datagram)
    {
        var list = new List<NetlinkMessage>();
        while (datagram.Length >= NetlinkConst.NlMsgHdrLen)
        {
            uint len = BinaryPrimitives.ReadUInt32LittleEndian(datagram);
            if (len < NetlinkConst.NlMsgHdrLen || len > datagram.Length)
                throw new InvalidDataException($"malformed netlink message length {len} (have {datagram.Length})");
            list.Add(new NetlinkMessage(
                BinaryPrimitives.ReadUInt16LittleEndian(datagram.Slice(4)),
                BinaryPrimitives.ReadUInt16LittleEndian(datagram.Slice(6)),
                BinaryPrimitives.ReadUInt32LittleEndian(datagram.Slice(8)),
                BinaryPrimitives.ReadUInt32LittleEndian(datagram.Slice(12)),
                datagram.Slice(NetlinkConst.NlMsgHdrLen, (int)len - NetlinkConst.NlMsgHdrLen).ToArray()));
            int adv = NetlinkConst.Align((int)len);
            datagram = adv >= datagram.Length ? default : datagram.Slice(adv);
        }
        return list;
    }
}

/// <summary>One attribute; <see cref="Type"/> has the NLA_F_NESTED / NLA_F_NET_BYTEORDER bits removed.</summary>
public sealed record NetlinkAttribute(ushort Type, bool NestedFlag, byte[] Data)
{
    public byte AsU8() => Data.Length >= 1 ? Data[0] : throw Short(1);

    public ushort AsU16() => Data.Length >= 2 ? BinaryPrimitives.ReadUInt16LittleEndian(Data) : throw Short(2);

    public uint AsU32() => Data.Length >= 4 ? BinaryPrimitives.ReadUInt32LittleEndian(Data) : throw Short(4);

    public ulong AsU64() => Data.Length >= 8 ? BinaryPrimitives.ReadUInt64LittleEndian(Data) : throw Short(8);

    /// <summary>Kernel "uint"/mixed widths: 1, 2, 4 or 8 bytes, read by length.</summary>
    public ulong AsUInt() => Data.Length switch
    {
        >= 8 => AsU64(),
        >= 4 => AsU32(),
        >= 2 => AsU16(),
        1 => Data[0],
        _ => throw Short(1),
    };

    public string AsString()
    {
        int n = Array.IndexOf(Data, (byte)0);
        return Encoding.UTF8.GetString(Data, 0, n < 0 ? Data.Length : n);
    }

    public IReadOnlyList<NetlinkAttribute> Nested() => Parse(Data);

    /// <summary>Parses a run of attributes; a truncated trailing attribute is an error.</summary>
    public static List<NetlinkAttribute> Parse(ReadOnlySpan<byte> span)
    {
        var list = new List<NetlinkAttribute>();
        while (span.Length >= NetlinkConst.NlaHdrLen)
        {
            int len = BinaryPrimitives.ReadUInt16LittleEndian(span);
            ushort raw = BinaryPrimitives.ReadUInt16LittleEndian(span.Slice(2));
            if (len < NetlinkConst.NlaHdrLen || len > span.Length)
                throw new InvalidDataException($"malformed netlink attribute length {len} (have {span.Length})");
            list.Add(new NetlinkAttribute((ushort)(raw & NetlinkConst.NLA_TYPE_MASK), (raw & NetlinkConst.NLA_F_NESTED) != 0,
                span.Slice(NetlinkConst.NlaHdrLen, len - NetlinkConst.NlaHdrLen).ToArray()));
            int adv = NetlinkConst.Align(len);
            span = adv >= span.Length ? default : span.Slice(adv);
        }
        return list;
    }

    private InvalidDataException Short(int want) => new($"netlink attribute {Type} has {Data.Length} bytes, need {want}");

    public override string ToString() => $"nla(type {Type}, {Data.Length} bytes)";
}

internal static class AttributeListExtensions
{
    public static NetlinkAttribute? Find(this IReadOnlyList<NetlinkAttribute> attrs, ushort type)
    {
        foreach (var a in attrs)
            if (a.Type == type)
                return a;
        return null;
    }
}
