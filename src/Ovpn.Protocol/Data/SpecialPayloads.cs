// SPDX-License-Identifier: MIT
using System.Buffers.Binary;

namespace Ovpn.Protocol.Data;

/// <summary>OCC message op codes (byte after the 16-byte OCC magic; protocol notes 14.2).</summary>
public enum OccOpcode : byte
{
    Request = 0,
    Reply = 1,
    MtuLoadRequest = 2,
    MtuLoad = 3,
    MtuRequest = 4,
    MtuReply = 5,
    Exit = 6,
}

/// <summary>
/// Payloads that travel inside the data channel but must never reach the tun device
/// (protocol notes 14.1/14.2): the 16-byte keepalive ping and OCC messages
/// (16-byte magic ‖ u8 op ‖ args). They are recognised after decryption and decompression framing.
/// </summary>
public static class SpecialPayloads
{
    public const int MagicLength = 16;

    /// <summary>Keepalive ping: 2a 18 7b f3 64 1e b4 cb 07 ed 2d 0a 98 1f c7 48.</summary>
    public static ReadOnlySpan<byte> PingMagic =>
        [0x2a, 0x18, 0x7b, 0xf3, 0x64, 0x1e, 0xb4, 0xcb, 0x07, 0xed, 0x2d, 0x0a, 0x98, 0x1f, 0xc7, 0x48];

    /// <summary>OCC prefix: 28 7f 34 6b d4 ef 7a 81 2d 56 b8 d3 af c5 45 9c.</summary>
    public static ReadOnlySpan<byte> OccMagic =>
        [0x28, 0x7f, 0x34, 0x6b, 0xd4, 0xef, 0x7a, 0x81, 0x2d, 0x56, 0xb8, 0xd3, 0xaf, 0xc5, 0x45, 0x9c];

    /// <summary>Exactly the 16 ping bytes (OpenVPN compares the whole buffer).</summary>
    public static bool IsPing(ReadOnlySpan<byte> payload) => payload.SequenceEqual(PingMagic);

    /// <summary>Starts with the OCC magic and has an op byte.</summary>
    public static bool IsOcc(ReadOnlySpan<byte> payload) =>
        payload.Length > MagicLength && payload.StartsWith(OccMagic);

    /// <summary>Splits an OCC message into its op code and the bytes after it. Unknown op codes
    /// are returned as-is (the caller ignores them).</summary>
    public static bool TryGetOcc(ReadOnlySpan<byte> payload, out OccOpcode op, out ReadOnlySpan<byte> args)
    {
        if (!IsOcc(payload))
        {
            op = default;
            args = default;
            return false;
        }

        op = (OccOpcode)payload[MagicLength];
        args = payload[(MagicLength + 1)..];
        return true;
    }

    /// <summary>Writes the ping payload; returns 16.</summary>
    public static int WritePing(Span<byte> dst)
    {
        PingMagic.CopyTo(dst);
        return MagicLength;
    }

    /// <summary>Writes magic ‖ op ‖ args; returns the length.</summary>
    public static int WriteOcc(Span<byte> dst, OccOpcode op, ReadOnlySpan<byte> args = default)
    {
        int len = MagicLength + 1 + args.Length;
        if (dst.Length < len)
        {
            throw new ArgumentException($"destination too small: need {len}", nameof(dst));
        }

        OccMagic.CopyTo(dst);
        dst[MagicLength] = (byte)op;
        args.CopyTo(dst[(MagicLength + 1)..]);
        return len;
    }

    /// <summary>OCC_REPLY args are the NUL-terminated options string; returns null if no NUL.</summary>
    public static string? GetOccReplyString(ReadOnlySpan<byte> args)
    {
        int nul = args.IndexOf((byte)0);
        return nul < 0 ? null : System.Text.Encoding.ASCII.GetString(args[..nul]);
    }

    /// <summary>OCC_MTU_REPLY args: u16 max_recv ‖ u16 max_send.</summary>
    public static bool TryGetMtuReply(ReadOnlySpan<byte> args, out ushort maxRecv, out ushort maxSend)
    {
        maxRecv = maxSend = 0;
        if (args.Length < 4)
        {
            return false;
        }

        maxRecv = BinaryPrimitives.ReadUInt16BigEndian(args);
        maxSend = BinaryPrimitives.ReadUInt16BigEndian(args[2..]);
        return true;
    }
}
