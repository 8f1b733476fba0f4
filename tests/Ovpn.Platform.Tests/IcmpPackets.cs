// SPDX-License-Identifier: MIT
using System.Buffers.Binary;
using System.Net;

namespace Ovpn.Platform.Tests;

/// <summary>Hand-built IPv4/ICMP helpers for the TUN tests (RFC 791 / RFC 792).</summary>
internal static class IcmpPackets
{
    public const byte ProtoIcmp = 1;

    public static bool IsIpv4EchoRequest(ReadOnlySpan<byte> p, IPAddress dst)
        => p.Length >= 28 && (p[0] >> 4) == 4 && p[9] == ProtoIcmp
           && p.Slice(16, 4).SequenceEqual(dst.GetAddressBytes())
           && p[(p[0] & 0x0f) * 4] == 8; // ICMP type 8 = echo request

    /// <summary>Turns an echo request into the matching echo reply (swap addresses, type 0, checksums).</summary>
    public static byte[] MakeEchoReply(ReadOnlySpan<byte> request)
    {
        byte[] r = request.ToArray();
        int ihl = (r[0] & 0x0f) * 4;
        // swap source (12..15) and destination (16..19)
        for (int i = 0; i < 4; i++)
            (r[12 + i], r[16 + i]) = (r[16 + i], r[12 + i]);
        r[8] = 64; // TTL
        r[10] = r[11] = 0;
        BinaryPrimitives.WriteUInt16BigEndian(r.AsSpan(10), Checksum(r.AsSpan(0, ihl)));
        r[ihl] = 0; // echo reply
        r[ihl + 2] = r[ihl + 3] = 0;
        BinaryPrimitives.WriteUInt16BigEndian(r.AsSpan(ihl + 2), Checksum(r.AsSpan(ihl)));
        return r;
    }

    /// <summary>IPv4 ICMP echo request with id/seq and a 32-byte payload (RFC 791/792 layouts).</summary>
    public static byte[] MakeEchoRequest(IPAddress src, IPAddress dst, ushort id, ushort seq)
    {
        byte[] p = new byte[20 + 8 + 32];
        p[0] = 0x45;
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(2), (ushort)p.Length);
        p[8] = 64;
        p[9] = ProtoIcmp;
        src.GetAddressBytes().CopyTo(p, 12);
        dst.GetAddressBytes().CopyTo(p, 16);
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(10), Checksum(p.AsSpan(0, 20)));
        p[20] = 8;
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(24), id);
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(26), seq);
        for (int i = 0; i < 32; i++)
            p[28 + i] = (byte)(seq + i);
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(22), Checksum(p.AsSpan(20)));
        return p;
    }

    /// <summary>Internet checksum (one's complement of the one's-complement sum).</summary>
    public static ushort Checksum(ReadOnlySpan<byte> data)
    {
        uint sum = 0;
        int i = 0;
        for (; i + 1 < data.Length; i += 2)
            sum += BinaryPrimitives.ReadUInt16BigEndian(data.Slice(i));
        if (i < data.Length)
            sum += (uint)data[i] << 8;
        while ((sum >> 16) != 0)
            sum = (sum & 0xffff) + (sum >> 16);
        return (ushort)~sum;
    }
}
