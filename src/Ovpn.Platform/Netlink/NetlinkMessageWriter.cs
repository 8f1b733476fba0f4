// SPDX-License-Identifier: MIT
using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;

namespace Ovpn.Platform.Netlink;

/// <summary>
/// Builds one netlink message: <c>struct nlmsghdr</c> (16 bytes, host byte order, which is little-endian
/// on every platform we target), an optional family header (genlmsghdr, ifinfomsg ...) and attributes
/// (<c>struct nlattr</c>: u16 length including the 4-byte header but not the padding, u16 type; payload
/// padded to 4 bytes, NLA_ALIGNTO). Nested attributes are written in place and their length is patched
/// when the nest is closed, exactly like the kernel's nla_nest_start/nla_nest_end.
/// </summary>
/// <remarks>
/// The buffer may hold key material (NEW_KEY): call <see cref="Clear"/> after sending, which zeroes it.
/// </remarks>
public sealed class NetlinkMessageWriter
{
    private byte[] _buf = new byte[256];
    private int _len;
    private readonly Stack<int> _nests = new();

    /// <summary>Starts a message; the length and sequence number are filled in by <see cref="Finish"/>.</summary>
    public NetlinkMessageWriter(ushort type, ushort flags, uint seq = 0, uint portId = 0)
    {
        Reserve(NetlinkConst.NlMsgHdrLen);
        BinaryPrimitives.WriteUInt16LittleEndian(_buf.AsSpan(4), type);
        BinaryPrimitives.WriteUInt16LittleEndian(_buf.AsSpan(6), flags);
        BinaryPrimitives.WriteUInt32LittleEndian(_buf.AsSpan(8), seq);
        BinaryPrimitives.WriteUInt32LittleEndian(_buf.AsSpan(12), portId);
    }

    /// <summary>Bytes written so far.</summary>
    public int Length => _len;

    /// <summary>struct genlmsghdr { u8 cmd; u8 version; u16 reserved; }.</summary>
    public NetlinkMessageWriter GenlHeader(byte cmd, byte version)
    {
        var h = Reserve(NetlinkConst.GenlHdrLen);
        h[0] = cmd;
        h[1] = version;
        return this;
    }

    /// <summary>struct ifinfomsg { u8 family; u8 pad; u16 type; s32 index; u32 flags; u32 change; }.</summary>
    public NetlinkMessageWriter IfInfoHeader(byte family, int index, uint flags = 0, uint change = 0)
    {
        var h = Reserve(NetlinkConst.IfInfoMsgLen);
        h[0] = family;
        BinaryPrimitives.WriteInt32LittleEndian(h.Slice(4), index);
        BinaryPrimitives.WriteUInt32LittleEndian(h.Slice(8), flags);
        BinaryPrimitives.WriteUInt32LittleEndian(h.Slice(12), change);
        return this;
    }

    public NetlinkMessageWriter Attr(ushort type, ReadOnlySpan<byte> payload)
    {
        int len = NetlinkConst.NlaHdrLen + payload.Length;
        if (len > ushort.MaxValue)
            throw new ArgumentException("netlink attribute payload too large", nameof(payload));
        var a = Reserve(NetlinkConst.Align(len));
        BinaryPrimitives.WriteUInt16LittleEndian(a, (ushort)len);
        BinaryPrimitives.WriteUInt16LittleEndian(a.Slice(2), type);
        payload.CopyTo(a.Slice(NetlinkConst.NlaHdrLen));
        return this;
    }

    public NetlinkMessageWriter U8(ushort type, byte value) => Attr(type, [value]);

    public NetlinkMessageWriter U16(ushort type, ushort value)
    {
        Span<byte> v = stackalloc byte[2];
        BinaryPrimitives.WriteUInt16LittleEndian(v, value);
        return Attr(type, v);
    }

    public NetlinkMessageWriter U32(ushort type, uint value)
    {
        Span<byte> v = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(v, value);
        return Attr(type, v);
    }

    public NetlinkMessageWriter U64(ushort type, ulong value)
    {
        Span<byte> v = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(v, value);
        return Attr(type, v);
    }

    /// <summary>NUL-terminated string (NLA_NUL_STRING / NLA_STRING both accept the terminator).</summary>
    public NetlinkMessageWriter String(ushort type, string value)
    {
        byte[] s = new byte[Encoding.UTF8.GetByteCount(value) + 1];
        Encoding.UTF8.GetBytes(value, s);
        return Attr(type, s);
    }

    /// <summary>
    /// Opens a nested attribute. NLA_F_NESTED is set because strict genl validation
    /// (NL_VALIDATE_NESTED) rejects nests without it, while liberal parsers mask it off.
    /// </summary>
    public NetlinkMessageWriter BeginNested(ushort type)
    {
        _nests.Push(_len);
        var a = Reserve(NetlinkConst.NlaHdrLen);
        BinaryPrimitives.WriteUInt16LittleEndian(a.Slice(2), (ushort)(type | NetlinkConst.NLA_F_NESTED));
        return this;
    }

    public NetlinkMessageWriter EndNested()
    {
        if (_nests.Count == 0)
            throw new InvalidOperationException("EndNested without BeginNested");
        int start = _nests.Pop();
        // Children are already padded, so the nest length is a multiple of 4 (as in nla_nest_end).
        BinaryPrimitives.WriteUInt16LittleEndian(_buf.AsSpan(start), checked((ushort)(_len - start)));
        return this;
    }

    /// <summary>Patches nlmsg_len (and the sequence number) and returns a copy of the message.</summary>
    public byte[] Finish(uint? seq = null)
    {
        if (_nests.Count != 0)
            throw new InvalidOperationException("unclosed nested attribute");
        BinaryPrimitives.WriteUInt32LittleEndian(_buf, (uint)_len);
        if (seq is uint s)
            BinaryPrimitives.WriteUInt32LittleEndian(_buf.AsSpan(8), s);
        return _buf.AsSpan(0, _len).ToArray();
    }

    /// <summary>Zeroes the internal buffer (key material).</summary>
    public void Clear() => CryptographicOperations.ZeroMemory(_buf);

    private Span<byte> Reserve(int n)
    {
        if (_len + n > _buf.Length)
        {
            var bigger = new byte[Math.Max(_buf.Length * 2, _len + n)];
            _buf.AsSpan(0, _len).CopyTo(bigger);
            CryptographicOperations.ZeroMemory(_buf);
            _buf = bigger;
        }
        var s = _buf.AsSpan(_len, n);
        s.Clear();
        _len += n;
        return s;
    }
}
