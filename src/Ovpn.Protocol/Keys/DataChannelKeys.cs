// SPDX-License-Identifier: MIT
using System.Security.Cryptography;

namespace Ovpn.Protocol.Keys;

/// <summary>
/// Directional data-channel keys cut from a 256-byte key2 (protocol notes sections 6.1, 12.1):
/// <code>
/// bytes   0.. 63  S0  client->server cipher key
/// bytes  64..127  S1  client->server HMAC key (CBC) | AEAD implicit IV = S1[0..8)
/// bytes 128..191  S2  server->client cipher key
/// bytes 192..255  S3  server->client HMAC key (CBC) | AEAD implicit IV = S3[0..8)
/// </code>
/// Server encrypts with S2 / S3 and decrypts with S0 / S1; the client the opposite.
/// The arrays are owned by this object; never log them.
/// </summary>
public sealed class DataChannelKeys
{
    public const int SliceLength = 64;
    public const int ImplicitIvLength = 8;

    public DataCipher Cipher { get; }
    public bool IsServer { get; }
    public byte[] EncryptKey { get; }
    public byte[] EncryptImplicitIv { get; }
    public byte[] DecryptKey { get; }
    public byte[] DecryptImplicitIv { get; }

    /// <summary>CBC only (null for AEAD): the full 64-byte HMAC slice used when sending; the
    /// codec uses its first digest-length bytes (20 for SHA1, 32 for SHA256).</summary>
    public byte[]? EncryptHmacKey { get; }

    /// <summary>CBC only (null for AEAD): the full 64-byte HMAC slice used when receiving.</summary>
    public byte[]? DecryptHmacKey { get; }

    private DataChannelKeys(DataCipher c, bool isServer, byte[] ek, byte[] eiv, byte[] dk, byte[] div, byte[]? eh, byte[]? dh)
    {
        Cipher = c;
        IsServer = isServer;
        EncryptKey = ek;
        EncryptImplicitIv = eiv;
        DecryptKey = dk;
        DecryptImplicitIv = div;
        EncryptHmacKey = eh;
        DecryptHmacKey = dh;
    }

    /// <exception cref="ArgumentException">key2 is not 256 bytes.</exception>
    /// <exception cref="CryptographicException">a cipher key is all zero ("Bad dynamic key generated").</exception>
    public static DataChannelKeys FromKey2(ReadOnlySpan<byte> key2, DataCipher c, bool isServer)
    {
        if (key2.Length != 4 * SliceLength)
        {
            throw new ArgumentException($"key2 must be 256 bytes, got {key2.Length}", nameof(key2));
        }

        int keyLen = DataCipherNames.KeyLength(c);
        ReadOnlySpan<byte> s0 = key2.Slice(0 * SliceLength, SliceLength);
        ReadOnlySpan<byte> s1 = key2.Slice(1 * SliceLength, SliceLength);
        ReadOnlySpan<byte> s2 = key2.Slice(2 * SliceLength, SliceLength);
        ReadOnlySpan<byte> s3 = key2.Slice(3 * SliceLength, SliceLength);

        // KEY_DIRECTION_INVERSE on the server: send with key[1], receive with key[0].
        ReadOnlySpan<byte> encCipher = isServer ? s2 : s0;
        ReadOnlySpan<byte> encHmac = isServer ? s3 : s1;
        ReadOnlySpan<byte> decCipher = isServer ? s0 : s2;
        ReadOnlySpan<byte> decHmac = isServer ? s1 : s3;

        var ek = encCipher[..keyLen].ToArray();
        var dk = decCipher[..keyLen].ToArray();
        if (IsAllZero(ek) || IsAllZero(dk))
        {
            throw new CryptographicException("Bad dynamic key generated (all-zero cipher key)");
        }

        bool aead = DataCipherNames.IsAead(c);
        return new DataChannelKeys(c, isServer,
            ek, encHmac[..ImplicitIvLength].ToArray(),
            dk, decHmac[..ImplicitIvLength].ToArray(),
            aead ? null : encHmac.ToArray(),
            aead ? null : decHmac.ToArray());
    }

    private static bool IsAllZero(ReadOnlySpan<byte> s) => s.IndexOfAnyExcept((byte)0) < 0;
}
