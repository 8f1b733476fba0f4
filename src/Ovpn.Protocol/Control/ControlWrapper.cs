// SPDX-License-Identifier: MIT
using System.Buffers.Binary;
using System.Security.Cryptography;
using Ovpn.Protocol.Wire;

namespace Ovpn.Protocol.Control;

public enum ControlWrapMode { None, TlsAuth, TlsCrypt }

public enum ControlDropReason { None, Malformed, BadHmac, Replay, UnknownOpcode }

/// <summary>
/// Control-channel wrapping (protocol notes section 6). One instance per session: it holds the
/// send replay counter and the receive replay window. Not thread-safe.
///
/// tls-auth wire format (H = digest size):
/// <code>
/// 0     1  opcode|key_id
/// 1     8  own sid
/// 9     H  HMAC(replay-id | replay-time | opcode|key_id | own sid | body)
/// 9+H   4  replay-id
/// 13+H  4  replay-time
/// 17+H  .. body = n | acks | [peer sid] | [msg-id] | payload
/// </code>
/// tls-crypt v1 wire format:
/// <code>
/// 0   1   opcode|key_id
/// 1   8   own sid
/// 9   4   replay-id
/// 13  4   replay-time
/// 17  32  tag = HMAC-SHA256(Ka, bytes[0..17) | body)
/// 49  ..  AES-256-CTR(Ke, IV = tag[0..16), body)
/// </code>
/// </summary>
public sealed class ControlWrapper
{
    private const int ReplayHeaderSize = 8;
    private const int TlsCryptTagSize = 32;
    private const int TlsCryptKeySize = 32;

    private readonly HashAlgorithmName _digest;
    private readonly int _hmacSize;
    private readonly byte[] _sendHmacKey = [];
    private readonly byte[] _recvHmacKey = [];
    private readonly Aes? _sendAes;
    private readonly Aes? _recvAes;

    private uint _sendCounter;     // last replay-id sent; 0 = nothing sent yet
    private uint _sendTime;
    private ControlReplayWindow _replay;

    private ControlWrapper(ControlWrapMode mode, HashAlgorithmName digest, int hmacSize,
        byte[] sendHmacKey, byte[] recvHmacKey, byte[]? sendCipherKey, byte[]? recvCipherKey)
    {
        Mode = mode;
        _digest = digest;
        _hmacSize = hmacSize;
        _sendHmacKey = sendHmacKey;
        _recvHmacKey = recvHmacKey;
        if (sendCipherKey is not null && recvCipherKey is not null)
        {
            _sendAes = Aes.Create();
            _sendAes.Key = sendCipherKey;
            _recvAes = Aes.Create();
            _recvAes.Key = recvCipherKey;
            CryptographicOperations.ZeroMemory(sendCipherKey);
            CryptographicOperations.ZeroMemory(recvCipherKey);
        }
    }

    public ControlWrapMode Mode { get; }

    /// <summary>Bytes that wrapping adds to the plain encoding of a packet.</summary>
    public int Overhead => Mode switch
    {
        ControlWrapMode.TlsAuth => _hmacSize + ReplayHeaderSize,
        ControlWrapMode.TlsCrypt => ReplayHeaderSize + TlsCryptTagSize,
        _ => 0,
    };

    /// <summary>Last replay-id used by <see cref="Wrap"/> (0 before the first call).</summary>
    public uint LastSentReplayId => _sendCounter;

    public static ControlWrapper CreateNone() => new(ControlWrapMode.None, default, 0, [], [], null, null);

    /// <summary>
    /// keyDirection 0: send with S1 / receive with S3 (server convention); 1: the inverse;
    /// null: bidirectional, both S1. Digest: SHA1 (default in OpenVPN), SHA256, SHA384, SHA512.
    /// </summary>
    public static ControlWrapper CreateTlsAuth(StaticKey key, int? keyDirection, HashAlgorithmName digest)
    {
        ArgumentNullException.ThrowIfNull(key);
        int h = DigestSize(digest);
        if (keyDirection is not (null or 0 or 1))
        {
            throw new ArgumentOutOfRangeException(nameof(keyDirection), keyDirection, "key direction must be 0, 1 or null");
        }

        int sendSlice = keyDirection == 1 ? 3 : 1;
        int recvSlice = keyDirection switch { 0 => 3, 1 => 1, _ => 1 };
        return new ControlWrapper(ControlWrapMode.TlsAuth, digest, h,
            key.Slice(sendSlice)[..h].ToArray(), key.Slice(recvSlice)[..h].ToArray(), null, null);
    }

    /// <summary>Server sends with S0/S1 and receives with S2/S3; the client the other way round.</summary>
    public static ControlWrapper CreateTlsCrypt(StaticKey key, bool isServer)
    {
        ArgumentNullException.ThrowIfNull(key);
        int sendKey = isServer ? 0 : 2;
        int recvKey = isServer ? 2 : 0;
        return new ControlWrapper(ControlWrapMode.TlsCrypt, HashAlgorithmName.SHA256, TlsCryptTagSize,
            key.Slice(sendKey + 1)[..TlsCryptKeySize].ToArray(), key.Slice(recvKey + 1)[..TlsCryptKeySize].ToArray(),
            key.Slice(sendKey)[..TlsCryptKeySize].ToArray(), key.Slice(recvKey)[..TlsCryptKeySize].ToArray());
    }

    private static int DigestSize(HashAlgorithmName d)
    {
        if (d == HashAlgorithmName.SHA1)
        {
            return 20;
        }

        if (d == HashAlgorithmName.SHA256)
        {
            return 32;
        }

        if (d == HashAlgorithmName.SHA384)
        {
            return 48;
        }

        if (d == HashAlgorithmName.SHA512)
        {
            return 64;
        }

        throw new NotSupportedException($"tls-auth digest {d.Name} is not supported (use SHA1, SHA256, SHA384 or SHA512)");
    }

    /// <summary>
    /// Wraps a plain control packet. Every call consumes a fresh replay-id (starting at 1); the
    /// replay timestamp is taken from <paramref name="unixSeconds"/> at the first call and kept.
    /// </summary>
    public byte[] Wrap(ControlPacket p, uint unixSeconds)
    {
        ArgumentNullException.ThrowIfNull(p);
        if (Mode == ControlWrapMode.None)
        {
            var plain = new byte[ControlPacketCodec.GetEncodedLength(p)];
            ControlPacketCodec.Encode(p, plain);
            return plain;
        }

        NextReplayId(unixSeconds, out uint id, out uint time);
        int bodyLen = ControlPacketCodec.GetBodyLength(p);
        const int hdr = ControlPacketCodec.HeaderSize;

        if (Mode == ControlWrapMode.TlsAuth)
        {
            int h = _hmacSize;
            var wire = new byte[hdr + h + ReplayHeaderSize + bodyLen];
            wire[0] = OpcodeByte.Compose(p.Opcode, p.KeyId);
            BinaryPrimitives.WriteUInt64BigEndian(wire.AsSpan(1, 8), p.SessionId);
            BinaryPrimitives.WriteUInt32BigEndian(wire.AsSpan(hdr + h, 4), id);
            BinaryPrimitives.WriteUInt32BigEndian(wire.AsSpan(hdr + h + 4, 4), time);
            ControlPacketCodec.EncodeBody(p, wire.AsSpan(hdr + h + ReplayHeaderSize));
            ComputeTlsAuthHmac(_sendHmacKey, wire, wire.AsSpan(hdr, h));
            return wire;
        }

        // tls-crypt
        {
            const int ctOff = hdr + ReplayHeaderSize + TlsCryptTagSize;
            var wire = new byte[ctOff + bodyLen];
            wire[0] = OpcodeByte.Compose(p.Opcode, p.KeyId);
            BinaryPrimitives.WriteUInt64BigEndian(wire.AsSpan(1, 8), p.SessionId);
            BinaryPrimitives.WriteUInt32BigEndian(wire.AsSpan(hdr, 4), id);
            BinaryPrimitives.WriteUInt32BigEndian(wire.AsSpan(hdr + 4, 4), time);
            // Encode the plaintext body in place, tag it, then encrypt it in place.
            Span<byte> body = wire.AsSpan(ctOff);
            ControlPacketCodec.EncodeBody(p, body);
            Span<byte> tag = wire.AsSpan(hdr + ReplayHeaderSize, TlsCryptTagSize);
            ComputeTlsCryptTag(_sendHmacKey, wire.AsSpan(0, hdr + ReplayHeaderSize), body, tag);
            AesCtrTransform(_sendAes!, tag[..16], body, body);
            return wire;
        }
    }

    private void NextReplayId(uint unixSeconds, out uint id, out uint time)
    {
        if (_sendCounter == 0)
        {
            _sendTime = unixSeconds;
        }
        else if (_sendCounter == uint.MaxValue)
        {
            // Long-form ids restart at 1 with a new timestamp; the peer accepts a newer timestamp.
            _sendCounter = 0;
            _sendTime = Math.Max(unixSeconds, _sendTime + 1);
        }

        _sendCounter++;
        id = _sendCounter;
        time = _sendTime;
    }

    /// <summary>
    /// Authenticates (and for tls-crypt decrypts) a wire packet. With checkReplay=false nothing in
    /// this object changes (stateless pre-check before a session exists); with true the replay-id is
    /// checked and, on success, recorded.
    /// </summary>
    public bool TryUnwrap(ReadOnlySpan<byte> wire, bool checkReplay, out ControlPacket? p, out ControlDropReason reason)
    {
        p = null;
        const int hdr = ControlPacketCodec.HeaderSize;
        if (wire.Length < 1)
        {
            reason = ControlDropReason.Malformed;
            return false;
        }

        var op = OpcodeByte.GetOpcode(wire[0]);
        if (!OpcodeByte.IsControl(op))
        {
            reason = ControlDropReason.UnknownOpcode;
            return false;
        }

        int keyId = OpcodeByte.GetKeyId(wire[0]);
        switch (Mode)
        {
            case ControlWrapMode.None:
                if (!ControlPacketCodec.TryDecode(wire, out p))
                {
                    reason = ControlDropReason.Malformed;
                    return false;
                }

                reason = ControlDropReason.None;
                return true;

            case ControlWrapMode.TlsAuth:
            {
                int h = _hmacSize;
                if (wire.Length < hdr + h + ReplayHeaderSize + 1)
                {
                    reason = ControlDropReason.Malformed;
                    return false;
                }

                Span<byte> mac = stackalloc byte[64];
                mac = mac[..h];
                ComputeTlsAuthHmac(_recvHmacKey, wire, mac);
                if (!CryptographicOperations.FixedTimeEquals(mac, wire.Slice(hdr, h)))
                {
                    reason = ControlDropReason.BadHmac;
                    return false;
                }

                uint id = BinaryPrimitives.ReadUInt32BigEndian(wire.Slice(hdr + h, 4));
                uint time = BinaryPrimitives.ReadUInt32BigEndian(wire.Slice(hdr + h + 4, 4));
                ulong sid = BinaryPrimitives.ReadUInt64BigEndian(wire.Slice(1, 8));
                if (!ControlPacketCodec.TryDecodeBody(op, keyId, sid, wire[(hdr + h + ReplayHeaderSize)..], out p))
                {
                    reason = ControlDropReason.Malformed;
                    return false;
                }

                return FinishReplay(checkReplay, id, time, ref p, out reason);
            }

            default:
            {
                const int ctOff = hdr + ReplayHeaderSize + TlsCryptTagSize;
                if (wire.Length < ctOff + 1)
                {
                    reason = ControlDropReason.Malformed;
                    return false;
                }

                ReadOnlySpan<byte> tag = wire.Slice(hdr + ReplayHeaderSize, TlsCryptTagSize);
                var plain = new byte[wire.Length - ctOff];
                AesCtrTransform(_recvAes!, tag[..16], wire[ctOff..], plain);
                Span<byte> expected = stackalloc byte[TlsCryptTagSize];
                ComputeTlsCryptTag(_recvHmacKey, wire[..(hdr + ReplayHeaderSize)], plain, expected);
                if (!CryptographicOperations.FixedTimeEquals(expected, tag))
                {
                    CryptographicOperations.ZeroMemory(plain);
                    reason = ControlDropReason.BadHmac;
                    return false;
                }

                uint id = BinaryPrimitives.ReadUInt32BigEndian(wire.Slice(hdr, 4));
                uint time = BinaryPrimitives.ReadUInt32BigEndian(wire.Slice(hdr + 4, 4));
                ulong sid = BinaryPrimitives.ReadUInt64BigEndian(wire.Slice(1, 8));
                if (!ControlPacketCodec.TryDecodeBody(op, keyId, sid, plain, out p))
                {
                    reason = ControlDropReason.Malformed;
                    return false;
                }

                return FinishReplay(checkReplay, id, time, ref p, out reason);
            }
        }
    }

    private bool FinishReplay(bool checkReplay, uint id, uint time, ref ControlPacket? p, out ControlDropReason reason)
    {
        if (id == 0 || (checkReplay && !_replay.Check(id, time)))
        {
            // id 0 is never valid, even in the stateless pre-check.
            p = null;
            reason = ControlDropReason.Replay;
            return false;
        }

        if (checkReplay)
        {
            _replay.Update(id, time);
        }

        reason = ControlDropReason.None;
        return true;
    }

    /// <summary>
    /// Reads the replay-id and timestamp of a wrapped packet without verifying it (diagnostics/tests).
    /// Returns false in mode None or if the packet is too short.
    /// </summary>
    public bool TryPeekReplayId(ReadOnlySpan<byte> wire, out uint id, out uint time)
    {
        id = time = 0;
        int off = Mode switch
        {
            ControlWrapMode.TlsAuth => ControlPacketCodec.HeaderSize + _hmacSize,
            ControlWrapMode.TlsCrypt => ControlPacketCodec.HeaderSize,
            _ => -1,
        };
        if (off < 0 || wire.Length < off + ReplayHeaderSize)
        {
            return false;
        }

        id = BinaryPrimitives.ReadUInt32BigEndian(wire.Slice(off, 4));
        time = BinaryPrimitives.ReadUInt32BigEndian(wire.Slice(off + 4, 4));
        return true;
    }

    // HMAC input is the header in swapped order: replay-id | time | opcode | sid | body.
    private void ComputeTlsAuthHmac(byte[] key, ReadOnlySpan<byte> wire, Span<byte> dst)
    {
        const int hdr = ControlPacketCodec.HeaderSize;
        int h = _hmacSize;
        using var hmac = IncrementalHash.CreateHMAC(_digest, key);
        hmac.AppendData(wire.Slice(hdr + h, ReplayHeaderSize));
        hmac.AppendData(wire[..hdr]);
        hmac.AppendData(wire[(hdr + h + ReplayHeaderSize)..]);
        if (!hmac.TryGetHashAndReset(dst, out int written) || written != h)
        {
            throw new CryptographicException("Unexpected HMAC size");
        }
    }

    private static void ComputeTlsCryptTag(byte[] key, ReadOnlySpan<byte> header, ReadOnlySpan<byte> plain, Span<byte> dst)
    {
        using var hmac = IncrementalHash.CreateHMAC(HashAlgorithmName.SHA256, key);
        hmac.AppendData(header);
        hmac.AppendData(plain);
        if (!hmac.TryGetHashAndReset(dst, out int written) || written != TlsCryptTagSize)
        {
            throw new CryptographicException("Unexpected HMAC size");
        }
    }

    /// <summary>
    /// AES-256-CTR as OpenSSL does it: the 16-byte IV is the initial counter block and the whole
    /// block is incremented as a 128-bit big-endian integer. .NET has no CTR mode, so counter blocks
    /// are encrypted with ECB and XORed. src and dst may be the same span.
    /// </summary>
    internal static void AesCtrTransform(Aes aes, ReadOnlySpan<byte> iv, ReadOnlySpan<byte> src, Span<byte> dst)
    {
        int blocks = (src.Length + 15) / 16;
        var counters = new byte[blocks * 16];
        Span<byte> ctr = stackalloc byte[16];
        iv.CopyTo(ctr);
        for (int b = 0; b < blocks; b++)
        {
            ctr.CopyTo(counters.AsSpan(b * 16, 16));
            for (int i = 15; i >= 0; i--)
            {
                if (++ctr[i] != 0)
                {
                    break;
                }
            }
        }

        aes.EncryptEcb(counters, counters, PaddingMode.None);
        for (int i = 0; i < src.Length; i++)
        {
            dst[i] = (byte)(src[i] ^ counters[i]);
        }

        CryptographicOperations.ZeroMemory(counters);
    }
}
