// SPDX-License-Identifier: MIT
using System.Security.Cryptography;
using Ovpn.Protocol.Data;
using Ovpn.Protocol.Keys;

namespace Ovpn.Protocol.Tests.Data;

public class CbcHmacCodecTests
{
    private static byte[] Seq(int n, int mul, int add)
    {
        var b = new byte[n];
        for (int i = 0; i < n; i++)
        {
            b[i] = (byte)(mul * i + add);
        }

        return b;
    }

    private static readonly byte[] CipherKey = Seq(32, 7, 3);
    private static readonly byte[] HmacKey = Seq(64, 11, 1);
    private static readonly byte[] FixedIv = Seq(16, 1, 0x30);

    private static CbcHmacCodec Codec(DataCipher c, HashAlgorithmName h, int kid = -1) =>
        new(c, CipherKey.AsSpan(0, DataCipherNames.KeyLength(c)), HmacKey, h, kid);

    // Independent vectors from python3-cryptography 48.0.0: AES-CBC(pid ‖ payload ‖ PKCS#7) with
    // IV 30..3f, HMAC over IV ‖ ciphertext, layout hdr ‖ HMAC ‖ IV ‖ ct (protocol notes 13.5).
    [Theory]
    [InlineData(DataCipher.Aes256Cbc, "SHA256", true, 1, 0x000102u, 9u, 16,
        "49000102dffc9007075dbbcc7ea9004a2e1604ac4d350297f5bcb44efdc5a4c1607de29b303132333435363738393a3b3c3d3e3f8172dc11dbf38625ae4ca9dafbbbfb56c34a2a0c2f5ab401e07567421b62c106")]
    [InlineData(DataCipher.Aes128Cbc, "SHA1", false, 0, 0u, 1u, 5,
        "303cbf3cfd07ee91bb7a20a5faf26f271e24f1a329303132333435363738393a3b3c3d3e3f1b445dc6fea3c0c263997ee86bbef67f")]
    public void Matches_independent_vector(DataCipher c, string digest, bool v2, int kid, uint peer, uint pid, int ptLen, string hex)
    {
        using var codec = Codec(c, new HashAlgorithmName(digest));
        var pt = SpecialPayloads.PingMagic[..ptLen].ToArray();
        var dst = new byte[200];
        int n = codec.SealWithIv(dst, v2, kid, peer, pid, pt, FixedIv);
        Assert.Equal(hex, Convert.ToHexString(dst, 0, n), ignoreCase: true);

        var back = new byte[200];
        Assert.Equal(DataDropReason.None, codec.Open(Convert.FromHexString(hex), back, out int w, out uint gotPid));
        Assert.Equal(pid, gotPid);
        Assert.Equal(pt, back[..w]);
    }

    [Theory]
    [InlineData(DataCipher.Aes128Cbc, "SHA1")]
    [InlineData(DataCipher.Aes256Cbc, "SHA256")]
    [InlineData(DataCipher.Aes256Cbc, "SHA512")]
    public void Round_trip_and_tamper(DataCipher c, string digest)
    {
        var h = new HashAlgorithmName(digest);
        using var tx = Codec(c, h);
        using var rx = Codec(c, h);
        var rnd = new Random(5);
        foreach (int len in new[] { 1, 11, 12, 13, 28, 100, 1400 })
        {
            var pt = new byte[len];
            rnd.NextBytes(pt);
            var wire = new byte[tx.GetSealedLength(true, len)];
            int n = tx.SealDataV2(wire, 2, 7, (uint)len, pt);
            Assert.Equal(wire.Length, n);
            var back = new byte[n];
            Assert.Equal(DataDropReason.None, rx.Open(wire, back, out int w, out uint pid));
            Assert.Equal(pt, back[..w]);
            Assert.Equal((uint)len, pid);

            n = tx.SealDataV1(wire, 2, 3, pt);
            Assert.Equal(DataDropReason.None, rx.Open(wire.AsSpan(0, n), back, out w, out pid));
            Assert.Equal(pt, back[..w]);
            Assert.Equal(3u, pid);
        }

        // Every byte after the header is covered by the HMAC.
        var p2 = new byte[30];
        var wire2 = new byte[tx.GetSealedLength(true, 30)];
        int m = tx.SealDataV2(wire2, 0, 0, 1, p2);
        for (int pos = DataPacketHeader.V2HeaderLength; pos < m; pos++)
        {
            var t = (byte[])wire2.Clone();
            t[pos] ^= 0x01;
            Assert.Equal(DataDropReason.AuthFailed, rx.Open(t, new byte[m], out _, out _));
        }
    }

    [Fact]
    public void Random_iv_differs_per_packet()
    {
        using var tx = Codec(DataCipher.Aes256Cbc, HashAlgorithmName.SHA256);
        var a = new byte[100];
        var b = new byte[100];
        int n = tx.SealDataV1(a, 0, 1, new byte[10]);
        tx.SealDataV1(b, 0, 1, new byte[10]);
        Assert.NotEqual(a[..n], b[..n]);
    }

    [Fact]
    public void Malformed_lengths_and_key_id()
    {
        using var tx = Codec(DataCipher.Aes128Cbc, HashAlgorithmName.SHA1);
        using var rx1 = Codec(DataCipher.Aes128Cbc, HashAlgorithmName.SHA1, kid: 1);
        var wire = new byte[100];
        int n = tx.SealDataV1(wire, 0, 1, new byte[10]);
        Assert.Equal(DataDropReason.UnknownKey, rx1.Open(wire.AsSpan(0, n), new byte[100], out _, out _));
        Assert.Equal(DataDropReason.Malformed, tx.Open(wire.AsSpan(0, n - 1), new byte[100], out _, out _));
        Assert.Equal(DataDropReason.Malformed, tx.Open(wire.AsSpan(0, 1 + 20 + 16), new byte[100], out _, out _));
        Assert.Throws<NotSupportedException>(() => new CbcHmacCodec(DataCipher.Aes256Gcm, new byte[32], new byte[64], HashAlgorithmName.SHA1));
        Assert.Throws<NotSupportedException>(() => new CbcHmacCodec(DataCipher.Aes256Cbc, new byte[32], new byte[64], HashAlgorithmName.MD5));
    }

    [Fact]
    public void Works_with_keys_from_key2()
    {
        var k2 = Keys.OpenVpnPrfTests.DeriveVectorKey2();
        var server = DataChannelKeys.FromKey2(k2, DataCipher.Aes256Cbc, true);
        var client = DataChannelKeys.FromKey2(k2, DataCipher.Aes256Cbc, false);
        using var tx = new CbcHmacCodec(DataCipher.Aes256Cbc, server.EncryptKey, server.EncryptHmacKey!, HashAlgorithmName.SHA256);
        using var rx = new CbcHmacCodec(DataCipher.Aes256Cbc, client.DecryptKey, client.DecryptHmacKey!, HashAlgorithmName.SHA256);
        var wire = new byte[200];
        int n = tx.SealDataV2(wire, 0, 1, 1, SpecialPayloads.PingMagic);
        var back = new byte[200];
        Assert.Equal(DataDropReason.None, rx.Open(wire.AsSpan(0, n), back, out int w, out _));
        Assert.True(SpecialPayloads.IsPing(back.AsSpan(0, w)));
    }
}
