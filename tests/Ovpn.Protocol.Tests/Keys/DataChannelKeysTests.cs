// SPDX-License-Identifier: MIT
using System.Security.Cryptography;
using Ovpn.Protocol.Keys;

namespace Ovpn.Protocol.Tests.Keys;

public class DataChannelKeysTests
{
    private static byte[] SlicedKey2()
    {
        // Each byte encodes its slice (high nibble) so a wrong slice shows up immediately.
        var k = new byte[256];
        for (int i = 0; i < 256; i++)
        {
            k[i] = (byte)(((i / 64) << 6) | (i % 64));
        }

        return k;
    }

    [Theory]
    [InlineData(DataCipher.Aes256Gcm, 32)]
    [InlineData(DataCipher.Aes128Gcm, 16)]
    [InlineData(DataCipher.ChaCha20Poly1305, 32)]
    public void Server_encrypts_with_S2_S3_and_decrypts_with_S0_S1(DataCipher c, int keyLen)
    {
        var k2 = SlicedKey2();
        var s = DataChannelKeys.FromKey2(k2, c, isServer: true);
        Assert.Equal(k2[128..(128 + keyLen)], s.EncryptKey);
        Assert.Equal(k2[192..200], s.EncryptImplicitIv);
        Assert.Equal(k2[0..keyLen], s.DecryptKey);
        Assert.Equal(k2[64..72], s.DecryptImplicitIv);
        Assert.Null(s.EncryptHmacKey);
        Assert.Null(s.DecryptHmacKey);
    }

    [Fact]
    public void Client_is_the_mirror_of_server()
    {
        var k2 = SlicedKey2();
        var s = DataChannelKeys.FromKey2(k2, DataCipher.Aes256Gcm, isServer: true);
        var c = DataChannelKeys.FromKey2(k2, DataCipher.Aes256Gcm, isServer: false);
        Assert.Equal(s.EncryptKey, c.DecryptKey);
        Assert.Equal(s.EncryptImplicitIv, c.DecryptImplicitIv);
        Assert.Equal(s.DecryptKey, c.EncryptKey);
        Assert.Equal(s.DecryptImplicitIv, c.EncryptImplicitIv);
        Assert.Equal(k2[0..32], c.EncryptKey);
        Assert.Equal(k2[64..72], c.EncryptImplicitIv);
    }

    [Fact]
    public void Cbc_exposes_hmac_slices()
    {
        var k2 = SlicedKey2();
        var s = DataChannelKeys.FromKey2(k2, DataCipher.Aes128Cbc, isServer: true);
        Assert.Equal(k2[192..256], s.EncryptHmacKey);
        Assert.Equal(k2[64..128], s.DecryptHmacKey);
        Assert.Equal(k2[128..144], s.EncryptKey);
    }

    [Fact]
    public void Rejects_all_zero_cipher_key()
    {
        var k2 = SlicedKey2();
        Array.Clear(k2, 0, 32); // S0 cipher part for AES-256
        Assert.Throws<CryptographicException>(() => DataChannelKeys.FromKey2(k2, DataCipher.Aes256Gcm, true));
        // For AES-128 only the first 16 bytes count: a key with zero first half is rejected too.
        Assert.Throws<CryptographicException>(() => DataChannelKeys.FromKey2(k2, DataCipher.Aes128Gcm, false));
    }

    [Fact]
    public void Rejects_wrong_key2_length()
    {
        Assert.Throws<ArgumentException>(() => DataChannelKeys.FromKey2(new byte[255], DataCipher.Aes256Gcm, true));
    }

    [Fact]
    public void Works_on_prf_vector()
    {
        var k2 = OpenVpnPrfTests.DeriveVectorKey2();
        var s = DataChannelKeys.FromKey2(k2, DataCipher.Aes256Gcm, true);
        Assert.Equal(OpenVpnPrfTests.Key2Hex.Substring(256, 64), Convert.ToHexString(s.EncryptKey));
        Assert.Equal(OpenVpnPrfTests.Key2Hex.Substring(384, 16), Convert.ToHexString(s.EncryptImplicitIv));
    }
}
