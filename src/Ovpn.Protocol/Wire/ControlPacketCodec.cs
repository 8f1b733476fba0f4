// SPDX-License-Identifier: MIT
using System.Buffers.Binary;

namespace Ovpn.Protocol.Wire;

/// <summary>
/// Plain control packet layout (protocol notes section 3):
/// <code>
/// off  size  field
/// 0    1     opcode|key_id
/// 1    8     own session id
/// 9    1     n = number of acked msg-ids (0..8)
/// 10   4*n   acked msg-ids (u32)
/// ..   8     peer session id   (only if n &gt; 0)
/// ..   4     msg-id            (absent in P_ACK_V1)
/// ..   *     payload
/// </code>
/// The same body (from offset 9) also appears after the tls-auth header and inside tls-crypt,
/// so the "body" helpers are exposed to the wrappers.
/// </summary>
public static class ControlPacketCodec
{
    public const int MaxAcks = 8;
    public const int HeaderSize = 9; // opcode byte + own sid

    public static int GetEncodedLength(ControlPacket p) => HeaderSize + GetBodyLength(p);

    public static int Encode(ControlPacket p, Span<byte> dst)
    {
        int len = GetEncodedLength(p);
        if (dst.Length < len)
        {
            throw new ArgumentException($"Destination too small: need {len}, have {dst.Length}", nameof(dst));
        }

        dst[0] = OpcodeByte.Compose(p.Opcode, p.KeyId);
        BinaryPrimitives.WriteUInt64BigEndian(dst.Slice(1, 8), p.SessionId);
        return HeaderSize + EncodeBody(p, dst[HeaderSize..]);
    }

    public static bool TryDecode(ReadOnlySpan<byte> src, out ControlPacket? p)
    {
        p = null;
        if (src.Length < HeaderSize + 1)
        {
            return false;
        }

        var op = OpcodeByte.GetOpcode(src[0]);
        if (!OpcodeByte.IsControl(op))
        {
            return false;
        }

        ulong sid = BinaryPrimitives.ReadUInt64BigEndian(src.Slice(1, 8));
        return TryDecodeBody(op, OpcodeByte.GetKeyId(src[0]), sid, src[HeaderSize..], out p);
    }

    /// <summary>Length of n | acks | [peer sid] | [msg-id] | payload.</summary>
    internal static int GetBodyLength(ControlPacket p)
    {
        ValidateForEncode(p);
        int n = p.Acks.Length;
        return 1 + 4 * n + (n > 0 ? 8 : 0) + (p.Opcode == Opcode.AckV1 ? 0 : 4) + p.Payload.Length;
    }

    internal static int EncodeBody(ControlPacket p, Span<byte> dst)
    {
        int len = GetBodyLength(p);
        if (dst.Length < len)
        {
            throw new ArgumentException("Destination too small", nameof(dst));
        }

        int o = 0;
        dst[o++] = (byte)p.Acks.Length;
        foreach (uint a in p.Acks)
        {
            BinaryPrimitives.WriteUInt32BigEndian(dst.Slice(o, 4), a);
            o += 4;
        }

        if (p.Acks.Length > 0)
        {
            BinaryPrimitives.WriteUInt64BigEndian(dst.Slice(o, 8), p.PeerSessionId);
            o += 8;
        }

        if (p.Opcode != Opcode.AckV1)
        {
            BinaryPrimitives.WriteUInt32BigEndian(dst.Slice(o, 4), p.MessageId!.Value);
            o += 4;
        }

        p.Payload.Span.CopyTo(dst[o..]);
        o += p.Payload.Length;
        return o;
    }

    internal static bool TryDecodeBody(Opcode op, int keyId, ulong sid, ReadOnlySpan<byte> body, out ControlPacket? p)
    {
        p = null;
        if (body.Length < 1)
        {
            return false;
        }

        int n = body[0];
        if (n > MaxAcks)
        {
            return false;
        }

        int o = 1;
        int need = o + 4 * n + (n > 0 ? 8 : 0) + (op == Opcode.AckV1 ? 0 : 4);
        if (body.Length < need)
        {
            return false;
        }

        var acks = n == 0 ? [] : new uint[n];
        for (int i = 0; i < n; i++)
        {
            acks[i] = BinaryPrimitives.ReadUInt32BigEndian(body.Slice(o, 4));
            o += 4;
        }

        ulong peer = 0;
        if (n > 0)
        {
            peer = BinaryPrimitives.ReadUInt64BigEndian(body.Slice(o, 8));
            o += 8;
        }

        uint? msgId = null;
        if (op != Opcode.AckV1)
        {
            msgId = BinaryPrimitives.ReadUInt32BigEndian(body.Slice(o, 4));
            o += 4;
        }
        else if (body.Length != o)
        {
            // An ACK packet carries nothing but acks; trailing bytes are malformed.
            return false;
        }

        p = new ControlPacket
        {
            Opcode = op,
            KeyId = keyId,
            SessionId = sid,
            Acks = acks,
            PeerSessionId = peer,
            MessageId = msgId,
            Payload = body[o..].ToArray(),
        };
        return true;
    }

    private static void ValidateForEncode(ControlPacket p)
    {
        ArgumentNullException.ThrowIfNull(p);
        if (p.Acks.Length > MaxAcks)
        {
            throw new ArgumentException($"At most {MaxAcks} acks per packet", nameof(p));
        }

        if (p.Opcode == Opcode.AckV1)
        {
            if (p.MessageId is not null || !p.Payload.IsEmpty)
            {
                throw new ArgumentException("AckV1 has no msg-id and no payload", nameof(p));
            }
        }
        else if (p.MessageId is null)
        {
            throw new ArgumentException("Non-ACK control packets need a msg-id", nameof(p));
        }
    }
}
