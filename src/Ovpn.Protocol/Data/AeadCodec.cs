// SPDX-License-Identifier: MIT
using System.Buffers.Binary;
using System.Security.Cryptography;
using Ovpn.Protocol.Keys;

namespace Ovpn.Protocol.Data;

/// <summary>
/// AEAD data channel, OpenVPN 2.6 format with the tag BEFORE the ciphertext
/// (protocol notes section 13.2):
/// <code>
/// P_DATA_V2                                    P_DATA_V1
/// off size                                     off size
/// 0   1   0x48|key_id   } AD (8 bytes)         0   1   0x30|key_id  (not authenticated)
/// 1   3   peer-id u24   }                      1   4   packet id    AD (4 bytes)
/// 4   4   packet id     }                      5   16  tag
/// 8   16  tag                                  21  n   ciphertext
/// 24  n   ciphertext (no padding)
/// nonce[12] = packet_id[4] ‖ implicit_iv[8]
/// </code>
/// One instance per direction and key. Not thread-safe (holds an AesGcm / ChaCha20Poly1305
/// instance); the data plane keeps one per worker. Allocation-free per packet on the success
/// path; a failed tag check costs one exception inside the BCL (there is no non-throwing
/// decrypt API), which only attack or corrupted traffic triggers.
/// Replay checking is NOT done here: the caller checks its <see cref="ReplayWindow"/> with the
/// returned packet id after <see cref="Open"/> succeeds (the tag must be verified first).
/// </summary>
public sealed class AeadCodec : IDataChannelCodec
{
    public const int TagSize = 16;
    public const int PacketIdSize = 4;
    public const int NonceSize = 12;
    public const int ImplicitIvSize = 8;
    public const int V2Overhead = DataPacketHeader.V2HeaderLength + PacketIdSize + TagSize; // 24
    public const int V1Overhead = DataPacketHeader.V1HeaderLength + PacketIdSize + TagSize; // 21

    private readonly AesGcm? _gcm;
    private readonly ChaCha20Poly1305? _chacha;
    private readonly ulong _implicitIv; // the 8-byte tail, kept as raw bytes in a ulong (big-endian read)
    private readonly int _expectedKeyId;

    public DataCipher Cipher { get; }

    /// <param name="c">An AEAD cipher; CBC ciphers are refused here (CBC+HMAC has its own codec).</param>
    /// <param name="key">Cipher key of exactly <see cref="DataCipherNames.KeyLength"/> bytes.</param>
    /// <param name="implicitIv">The 8-byte nonce tail (S1/S3 [0..8)).</param>
    /// <param name="expectedKeyId">If 0..7, <see cref="Open"/> drops packets carrying another key id
    /// with <see cref="DataDropReason.UnknownKey"/> before doing any crypto; -1 = accept any.</param>
    public AeadCodec(DataCipher c, ReadOnlySpan<byte> key, ReadOnlySpan<byte> implicitIv, int expectedKeyId = -1)
    {
        if (!DataCipherNames.IsAead(c))
        {
            throw new NotSupportedException($"{DataCipherNames.ToName(c)} is not an AEAD cipher; use CbcHmacCodec");
        }

        if (key.Length != DataCipherNames.KeyLength(c))
        {
            throw new ArgumentException($"{DataCipherNames.ToName(c)} needs a {DataCipherNames.KeyLength(c)}-byte key, got {key.Length}", nameof(key));
        }

        if (implicitIv.Length != ImplicitIvSize)
        {
            throw new ArgumentException("implicit IV must be 8 bytes", nameof(implicitIv));
        }

        if (expectedKeyId is < -1 or > 7)
        {
            throw new ArgumentOutOfRangeException(nameof(expectedKeyId));
        }

        Cipher = c;
        _expectedKeyId = expectedKeyId;
        _implicitIv = BinaryPrimitives.ReadUInt64BigEndian(implicitIv);
        if (c == DataCipher.ChaCha20Poly1305)
        {
            if (!ChaCha20Poly1305.IsSupported)
            {
                throw new NotSupportedException("CHACHA20-POLY1305 is not supported by this platform's crypto library");
            }

            _chacha = new ChaCha20Poly1305(key);
        }
        else
        {
            _gcm = new AesGcm(key, TagSize);
        }
    }

    /// <summary>Writes header | packet-id | tag | ciphertext into <paramref name="dst"/> and returns
    /// the packet length (plaintext + 24). <paramref name="plaintext"/> may alias
    /// dst[24..] exactly (in-place encryption).</summary>
    public int SealDataV2(Span<byte> dst, int keyId, uint peerId, uint packetId, ReadOnlySpan<byte> plaintext)
    {
        int total = V2Overhead + plaintext.Length;
        CheckSeal(dst, total, keyId, packetId);
        DataPacketHeader.WriteV2(dst, keyId, peerId);
        BinaryPrimitives.WriteUInt32BigEndian(dst.Slice(4, PacketIdSize), packetId);
        Encrypt(packetId, plaintext, dst.Slice(V2Overhead, plaintext.Length), dst.Slice(8, TagSize), dst[..8]);
        return total;
    }

    /// <summary>P_DATA_V1 variant (no peer-id; only the packet id is authenticated).</summary>
    public int SealDataV1(Span<byte> dst, int keyId, uint packetId, ReadOnlySpan<byte> plaintext)
    {
        int total = V1Overhead + plaintext.Length;
        CheckSeal(dst, total, keyId, packetId);
        dst[0] = DataPacketHeader.Compose(DataPacketHeader.OpcodeDataV1, keyId);
        BinaryPrimitives.WriteUInt32BigEndian(dst.Slice(1, PacketIdSize), packetId);
        Encrypt(packetId, plaintext, dst.Slice(V1Overhead, plaintext.Length), dst.Slice(5, TagSize), dst.Slice(1, PacketIdSize));
        return total;
    }

    /// <summary>
    /// Authenticates and decrypts a whole V1 or V2 wire packet into <paramref name="dst"/>.
    /// On success returns <see cref="DataDropReason.None"/> with the plaintext length and the
    /// packet id (which the caller then runs through its replay window). On failure nothing
    /// usable is left in dst.
    /// </summary>
    public DataDropReason Open(ReadOnlySpan<byte> wire, Span<byte> dst, out int written, out uint packetId)
    {
        written = 0;
        packetId = 0;
        if (wire.IsEmpty)
        {
            return DataDropReason.Malformed;
        }

        int headerLen = DataPacketHeader.GetHeaderLength(DataPacketHeader.GetOpcode(wire[0]));
        if (headerLen < 0)
        {
            return DataDropReason.Malformed;
        }

        int overhead = headerLen + PacketIdSize + TagSize;
        // Minimum valid packet: header + packet id + tag + 1 byte (notes 13.2).
        if (wire.Length <= overhead)
        {
            return DataDropReason.Malformed;
        }

        if (_expectedKeyId >= 0 && DataPacketHeader.GetKeyId(wire[0]) != _expectedKeyId)
        {
            return DataDropReason.UnknownKey;
        }

        int ctLen = wire.Length - overhead;
        if (ctLen > dst.Length)
        {
            return DataDropReason.TooLarge;
        }

        uint pid = BinaryPrimitives.ReadUInt32BigEndian(wire.Slice(headerLen, PacketIdSize));
        ReadOnlySpan<byte> ad = headerLen == DataPacketHeader.V2HeaderLength
            ? wire[..8]
            : wire.Slice(1, PacketIdSize);
        ReadOnlySpan<byte> tag = wire.Slice(headerLen + PacketIdSize, TagSize);
        ReadOnlySpan<byte> ct = wire.Slice(overhead, ctLen);

        Span<byte> nonce = stackalloc byte[NonceSize];
        BuildNonce(nonce, pid);
        try
        {
            if (_chacha is not null)
            {
                _chacha.Decrypt(nonce, ct, tag, dst[..ctLen], ad);
            }
            else
            {
                _gcm!.Decrypt(nonce, ct, tag, dst[..ctLen], ad);
            }
        }
        catch (AuthenticationTagMismatchException)
        {
            return DataDropReason.AuthFailed;
        }

        written = ctLen;
        packetId = pid;
        return DataDropReason.None;
    }

    public void Dispose()
    {
        _gcm?.Dispose();
        _chacha?.Dispose();
    }

    private static void CheckSeal(Span<byte> dst, int total, int keyId, uint packetId)
    {
        if (dst.Length < total)
        {
            throw new ArgumentException($"destination too small: need {total}, have {dst.Length}", nameof(dst));
        }

        if (packetId == 0)
        {
            // 0 is never a valid data packet id; receivers reject it (notes 13.1).
            throw new ArgumentOutOfRangeException(nameof(packetId), "packet id 0 is invalid");
        }

        if ((uint)keyId > 7)
        {
            throw new ArgumentOutOfRangeException(nameof(keyId), "key id is 0..7");
        }
    }

    private void Encrypt(uint packetId, ReadOnlySpan<byte> plaintext, Span<byte> ciphertext, Span<byte> tag, ReadOnlySpan<byte> ad)
    {
        Span<byte> nonce = stackalloc byte[NonceSize];
        BuildNonce(nonce, packetId);
        if (_chacha is not null)
        {
            _chacha.Encrypt(nonce, plaintext, ciphertext, tag, ad);
        }
        else
        {
            _gcm!.Encrypt(nonce, plaintext, ciphertext, tag, ad);
        }
    }

    private void BuildNonce(Span<byte> nonce, uint packetId)
    {
        BinaryPrimitives.WriteUInt32BigEndian(nonce, packetId);
        BinaryPrimitives.WriteUInt64BigEndian(nonce[4..], _implicitIv);
    }
}
