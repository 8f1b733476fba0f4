// SPDX-License-Identifier: MIT
using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Security.Cryptography;
using Ovpn.Protocol.Keys;

[assembly: InternalsVisibleTo("Ovpn.Protocol.Tests")]

namespace Ovpn.Protocol.Data;

/// <summary>
/// Legacy CBC + HMAC data channel in TLS mode (protocol notes section 13.5; OpenVPN
/// <c>openvpn_encrypt_v1</c>/<c>openvpn_decrypt_v1</c>):
/// <code>
/// [op|kid] [peer-id u24, V2 only] | HMAC (H bytes, over IV ‖ ciphertext) | IV (16, random) |
/// AES-CBC( packet id u32 ‖ payload ‖ PKCS#7 padding )
/// </code>
/// The header is NOT covered by the HMAC (unlike AEAD V2). Packet ids are the 4-byte short
/// form (TLS mode). HMAC is verified in constant time before anything is decrypted.
/// Only for interoperating with old peers whose only common cipher is AES-128/256-CBC; never
/// preferred. Not thread-safe (keeps an Aes and IncrementalHash instance).
/// </summary>
public sealed class CbcHmacCodec : IDataChannelCodec
{
    public const int IvSize = 16;
    public const int BlockSize = 16;
    public const int PacketIdSize = 4;

    private readonly Aes _aes;
    private readonly IncrementalHash _hmac;
    private readonly int _expectedKeyId;

    public DataCipher Cipher { get; }

    /// <summary>HMAC length in bytes (20 for SHA1, 32 for SHA256, ...).</summary>
    public int HmacSize { get; }

    /// <param name="hmacKey">The HMAC slice (S1/S3); its first <see cref="HmacSize"/> bytes are used.</param>
    /// <param name="digest">The --auth digest: SHA1, SHA256, SHA384 or SHA512.</param>
    public CbcHmacCodec(DataCipher c, ReadOnlySpan<byte> cipherKey, ReadOnlySpan<byte> hmacKey, HashAlgorithmName digest, int expectedKeyId = -1)
    {
        if (c is not (DataCipher.Aes128Cbc or DataCipher.Aes256Cbc))
        {
            throw new NotSupportedException($"{DataCipherNames.ToName(c)} is not a CBC cipher; use AeadCodec");
        }

        if (cipherKey.Length != DataCipherNames.KeyLength(c))
        {
            throw new ArgumentException($"{DataCipherNames.ToName(c)} needs a {DataCipherNames.KeyLength(c)}-byte key", nameof(cipherKey));
        }

        HmacSize = DigestSize(digest);
        if (hmacKey.Length < HmacSize)
        {
            throw new ArgumentException($"HMAC key must be at least {HmacSize} bytes", nameof(hmacKey));
        }

        if (expectedKeyId is < -1 or > 7)
        {
            throw new ArgumentOutOfRangeException(nameof(expectedKeyId));
        }

        Cipher = c;
        _expectedKeyId = expectedKeyId;
        _aes = Aes.Create();
        _aes.Key = cipherKey.ToArray();
        _hmac = IncrementalHash.CreateHMAC(digest, hmacKey[..HmacSize]);
    }

    public static int DigestSize(HashAlgorithmName digest)
    {
        if (digest == HashAlgorithmName.SHA1) { return 20; }
        if (digest == HashAlgorithmName.SHA256) { return 32; }
        if (digest == HashAlgorithmName.SHA384) { return 48; }
        if (digest == HashAlgorithmName.SHA512) { return 64; }
        throw new NotSupportedException($"HMAC digest {digest.Name} is not supported for the data channel");
    }

    /// <summary>Wire length of a sealed packet.</summary>
    public int GetSealedLength(bool v2, int plaintextLength) =>
        (v2 ? DataPacketHeader.V2HeaderLength : DataPacketHeader.V1HeaderLength) + HmacSize + IvSize +
        ((PacketIdSize + plaintextLength) / BlockSize + 1) * BlockSize;

    public int SealDataV2(Span<byte> dst, int keyId, uint peerId, uint packetId, ReadOnlySpan<byte> plaintext)
    {
        Span<byte> iv = stackalloc byte[IvSize];
        RandomNumberGenerator.Fill(iv);
        return SealCore(dst, true, keyId, peerId, packetId, plaintext, iv);
    }

    public int SealDataV1(Span<byte> dst, int keyId, uint packetId, ReadOnlySpan<byte> plaintext)
    {
        Span<byte> iv = stackalloc byte[IvSize];
        RandomNumberGenerator.Fill(iv);
        return SealCore(dst, false, keyId, 0, packetId, plaintext, iv);
    }

    /// <summary>Deterministic-IV variant for known-answer tests only.</summary>
    internal int SealWithIv(Span<byte> dst, bool v2, int keyId, uint peerId, uint packetId, ReadOnlySpan<byte> plaintext, ReadOnlySpan<byte> iv) =>
        SealCore(dst, v2, keyId, peerId, packetId, plaintext, iv);

    private int SealCore(Span<byte> dst, bool v2, int keyId, uint peerId, uint packetId, ReadOnlySpan<byte> plaintext, ReadOnlySpan<byte> iv)
    {
        int total = GetSealedLength(v2, plaintext.Length);
        if (dst.Length < total)
        {
            throw new ArgumentException($"destination too small: need {total}, have {dst.Length}", nameof(dst));
        }

        if (packetId == 0)
        {
            throw new ArgumentOutOfRangeException(nameof(packetId), "packet id 0 is invalid");
        }

        if ((uint)keyId > 7)
        {
            throw new ArgumentOutOfRangeException(nameof(keyId), "key id is 0..7");
        }

        int hdr;
        if (v2)
        {
            DataPacketHeader.WriteV2(dst, keyId, peerId);
            hdr = DataPacketHeader.V2HeaderLength;
        }
        else
        {
            dst[0] = DataPacketHeader.Compose(DataPacketHeader.OpcodeDataV1, keyId);
            hdr = DataPacketHeader.V1HeaderLength;
        }

        Span<byte> mac = dst.Slice(hdr, HmacSize);
        Span<byte> ivOut = dst.Slice(hdr + HmacSize, IvSize);
        Span<byte> body = dst[(hdr + HmacSize + IvSize)..total];
        iv.CopyTo(ivOut);

        // Assemble packet id ‖ payload in the ciphertext region and encrypt in place.
        plaintext.CopyTo(body[PacketIdSize..]);
        BinaryPrimitives.WriteUInt32BigEndian(body, packetId);
        int ctLen = _aes.EncryptCbc(body[..(PacketIdSize + plaintext.Length)], ivOut, body, PaddingMode.PKCS7);

        _hmac.AppendData(ivOut);
        _hmac.AppendData(body[..ctLen]);
        _hmac.GetHashAndReset(mac);
        return total;
    }

    /// <summary>Verifies the HMAC, decrypts and strips the packet id. dst needs room for the
    /// whole ciphertext (wire length minus header, HMAC and IV).</summary>
    public DataDropReason Open(ReadOnlySpan<byte> wire, Span<byte> dst, out int written, out uint packetId)
    {
        written = 0;
        packetId = 0;
        if (wire.IsEmpty)
        {
            return DataDropReason.Malformed;
        }

        int hdr = DataPacketHeader.GetHeaderLength(DataPacketHeader.GetOpcode(wire[0]));
        if (hdr < 0)
        {
            return DataDropReason.Malformed;
        }

        int ctOff = hdr + HmacSize + IvSize;
        int ctLen = wire.Length - ctOff;
        if (ctLen < BlockSize || ctLen % BlockSize != 0)
        {
            return DataDropReason.Malformed;
        }

        if (_expectedKeyId >= 0 && DataPacketHeader.GetKeyId(wire[0]) != _expectedKeyId)
        {
            return DataDropReason.UnknownKey;
        }

        if (dst.Length < ctLen)
        {
            return DataDropReason.TooLarge;
        }

        Span<byte> mac = stackalloc byte[64];
        _hmac.AppendData(wire.Slice(hdr + HmacSize, IvSize + ctLen));
        _hmac.GetHashAndReset(mac[..HmacSize]);
        bool ok = CryptographicOperations.FixedTimeEquals(mac[..HmacSize], wire.Slice(hdr, HmacSize));
        CryptographicOperations.ZeroMemory(mac);
        if (!ok)
        {
            return DataDropReason.AuthFailed;
        }

        int n;
        try
        {
            n = _aes.DecryptCbc(wire.Slice(ctOff, ctLen), wire.Slice(hdr + HmacSize, IvSize), dst, PaddingMode.PKCS7);
        }
        catch (CryptographicException)
        {
            dst[..ctLen].Clear();
            return DataDropReason.BadPadding;
        }

        if (n < PacketIdSize)
        {
            dst[..n].Clear();
            return DataDropReason.Malformed;
        }

        packetId = BinaryPrimitives.ReadUInt32BigEndian(dst);
        dst[PacketIdSize..n].CopyTo(dst);
        written = n - PacketIdSize;
        return DataDropReason.None;
    }

    public void Dispose()
    {
        _aes.Dispose();
        _hmac.Dispose();
    }
}
