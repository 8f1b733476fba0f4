// SPDX-License-Identifier: MIT
using Ovpn.Protocol.Data;
using Ovpn.Protocol.Keys;

namespace Ovpn.Protocol.Tests.Data;

public class AeadCodecTests
{
    private static readonly byte[] Iv = Convert.FromHexString("a1a2a3a4a5a6a7a8");

    private static byte[] Key(int n)
    {
        var k = new byte[n];
        for (int i = 0; i < n; i++)
        {
            k[i] = (byte)(7 * i + 3);
        }

        return k;
    }

    private static AeadCodec Codec(DataCipher c, int expectedKeyId = -1) =>
        new(c, Key(DataCipherNames.KeyLength(c)), Iv, expectedKeyId);

    public static TheoryData<DataCipher> Ciphers => [DataCipher.Aes128Gcm, DataCipher.Aes256Gcm, DataCipher.ChaCha20Poly1305];

    // Known answers computed independently with python3-cryptography 48.0.0 (AESGCM /
    // ChaCha20Poly1305) by assembling the 2.6 wire layout by hand (header ‖ pid ‖ tag ‖ ct,
    // nonce = pid ‖ implicit IV, AD = first 8 bytes for V2 / the pid for V1). Key =
    // (7i+3) & 0xff, implicit IV a1..a8, plaintext = the 16-byte ping magic.
    [Theory]
    [InlineData(DataCipher.Aes256Gcm, true, 1, 0xABCDEFu, 0x01020304u,
        "49abcdef010203045482f07dfe9340991ec126b6d1b06e360777b1c0306ca4b607725b5e1724fe34")]
    [InlineData(DataCipher.Aes128Gcm, false, 2, 0u, 7u,
        "320000000765453b22604aaf9db07bd234e75f007498f354c6afdf5f43a60d5197d9024c2d")]
    [InlineData(DataCipher.ChaCha20Poly1305, true, 0, 5u, 1u,
        "4800000500000001d249b8d1742323bf8d364122b64cec3e50b0c89d78f4b9204b8d1749f950a79c")]
    public void Seal_matches_independent_vector(DataCipher c, bool v2, int keyId, uint peerId, uint pid, string expectedHex)
    {
        using var codec = Codec(c);
        var dst = new byte[100];
        int n = v2
            ? codec.SealDataV2(dst, keyId, peerId, pid, SpecialPayloads.PingMagic)
            : codec.SealDataV1(dst, keyId, pid, SpecialPayloads.PingMagic);
        Assert.Equal(expectedHex, Convert.ToHexString(dst, 0, n), ignoreCase: true);

        var plain = new byte[100];
        Assert.Equal(DataDropReason.None, codec.Open(Convert.FromHexString(expectedHex), plain, out int w, out uint got));
        Assert.Equal(pid, got);
        Assert.True(SpecialPayloads.IsPing(plain.AsSpan(0, w)));
    }

    [Theory]
    [MemberData(nameof(Ciphers))]
    public void Round_trip_v1_and_v2(DataCipher c)
    {
        using var tx = Codec(c);
        using var rx = Codec(c);
        var rnd = new Random(42);
        foreach (int len in new[] { 1, 15, 16, 17, 100, 1400 })
        {
            var pt = new byte[len];
            rnd.NextBytes(pt);
            var wire = new byte[len + AeadCodec.V2Overhead];
            var back = new byte[len];

            int n = tx.SealDataV2(wire, 3, 0x123456, (uint)len, pt);
            Assert.Equal(len + 24, n);
            Assert.Equal(0x48 | 3, wire[0]);
            Assert.True(DataPacketHeader.TryGetPeerId(wire, out var peer));
            Assert.Equal(0x123456u, peer);
            Assert.Equal(DataDropReason.None, rx.Open(wire.AsSpan(0, n), back, out int w, out uint pid));
            Assert.Equal((uint)len, pid);
            Assert.Equal(pt, back[..w]);

            n = tx.SealDataV1(wire, 5, 99, pt);
            Assert.Equal(len + 21, n);
            Assert.Equal(0x30 | 5, wire[0]);
            Assert.False(DataPacketHeader.TryGetPeerId(wire, out _));
            Assert.Equal(DataDropReason.None, rx.Open(wire.AsSpan(0, n), back, out w, out pid));
            Assert.Equal(99u, pid);
            Assert.Equal(pt, back[..w]);
        }
    }

    [Theory]
    [MemberData(nameof(Ciphers))]
    public void Every_single_bit_flip_fails_v2(DataCipher c)
    {
        using var codec = Codec(c);
        var pt = new byte[40];
        new Random(1).NextBytes(pt);
        var wire = new byte[64];
        int n = codec.SealDataV2(wire, 1, 77, 1000, pt);
        var dst = new byte[64];
        for (int pos = 0; pos < n; pos++)
        {
            foreach (byte mask in new byte[] { 0x01, 0x80 })
            {
                var t = (byte[])wire.Clone();
                t[pos] ^= mask;
                var r = codec.Open(t.AsSpan(0, n), dst, out int w, out _);
                // Flipping opcode bits may turn it into a non-data opcode (Malformed) — still a drop.
                Assert.NotEqual(DataDropReason.None, r);
                Assert.Equal(0, w);
            }
        }
    }

    [Theory]
    [MemberData(nameof(Ciphers))]
    public void Every_byte_flip_after_opcode_fails_v1(DataCipher c)
    {
        using var codec = Codec(c);
        var pt = new byte[33];
        var wire = new byte[64];
        int n = codec.SealDataV1(wire, 0, 5, pt);
        var dst = new byte[64];
        // Byte 0 (opcode/key id) is not authenticated in V1 by design; everything else is.
        for (int pos = 1; pos < n; pos++)
        {
            var t = (byte[])wire.Clone();
            t[pos] ^= 0x5A;
            Assert.Equal(DataDropReason.AuthFailed, codec.Open(t.AsSpan(0, n), dst, out _, out _));
        }
    }

    [Fact]
    public void V2_key_id_is_authenticated_and_expected_key_id_is_enforced()
    {
        using var tx = Codec(DataCipher.Aes256Gcm);
        using var rxAny = Codec(DataCipher.Aes256Gcm);
        using var rxKey1 = Codec(DataCipher.Aes256Gcm, expectedKeyId: 1);
        var wire = new byte[64];
        var dst = new byte[64];
        int n = tx.SealDataV2(wire, 2, 1, 1, new byte[10]);

        Assert.Equal(DataDropReason.UnknownKey, rxKey1.Open(wire.AsSpan(0, n), dst, out _, out _));

        // Rewriting key id 2 -> 1 passes the key-id filter but breaks the tag (AD covers byte 0).
        wire[0] = (byte)((wire[0] & ~7) | 1);
        Assert.Equal(DataDropReason.AuthFailed, rxKey1.Open(wire.AsSpan(0, n), dst, out _, out _));
        Assert.Equal(DataDropReason.AuthFailed, rxAny.Open(wire.AsSpan(0, n), dst, out _, out _));

        n = tx.SealDataV1(wire, 1, 9, new byte[10]);
        Assert.Equal(DataDropReason.None, rxKey1.Open(wire.AsSpan(0, n), dst, out _, out _));
    }

    [Fact]
    public void Wrong_key_or_iv_fails()
    {
        using var tx = Codec(DataCipher.Aes128Gcm);
        var otherKey = Key(16);
        otherKey[0] ^= 1;
        using var rxKey = new AeadCodec(DataCipher.Aes128Gcm, otherKey, Iv);
        var iv2 = (byte[])Iv.Clone();
        iv2[7] ^= 1;
        using var rxIv = new AeadCodec(DataCipher.Aes128Gcm, Key(16), iv2);
        var wire = new byte[64];
        int n = tx.SealDataV2(wire, 0, 0, 1, new byte[20]);
        Assert.Equal(DataDropReason.AuthFailed, rxKey.Open(wire.AsSpan(0, n), new byte[64], out _, out _));
        Assert.Equal(DataDropReason.AuthFailed, rxIv.Open(wire.AsSpan(0, n), new byte[64], out _, out _));
    }

    [Theory]
    [MemberData(nameof(Ciphers))]
    public void Truncated_packets_are_malformed_or_fail(DataCipher c)
    {
        using var codec = Codec(c);
        var wire = new byte[64];
        int n = codec.SealDataV2(wire, 0, 0, 1, new byte[10]);
        var dst = new byte[64];
        for (int len = 0; len < n; len++)
        {
            var r = codec.Open(wire.AsSpan(0, len), dst, out int w, out _);
            Assert.Equal(len <= AeadCodec.V2Overhead ? DataDropReason.Malformed : DataDropReason.AuthFailed, r);
            Assert.Equal(0, w);
        }

        n = codec.SealDataV1(wire, 0, 1, new byte[10]);
        for (int len = 0; len <= AeadCodec.V1Overhead; len++)
        {
            Assert.Equal(DataDropReason.Malformed, codec.Open(wire.AsSpan(0, len), dst, out _, out _));
        }
    }

    [Fact]
    public void Non_data_opcode_is_malformed_and_small_dst_is_too_large()
    {
        using var codec = Codec(DataCipher.Aes256Gcm);
        var wire = new byte[64];
        int n = codec.SealDataV2(wire, 0, 0, 1, new byte[30]);
        Assert.Equal(DataDropReason.TooLarge, codec.Open(wire.AsSpan(0, n), new byte[29], out _, out _));
        wire[0] = 0x20; // P_CONTROL_V1
        Assert.Equal(DataDropReason.Malformed, codec.Open(wire.AsSpan(0, n), new byte[64], out _, out _));
    }

    [Fact]
    public void Seal_refuses_packet_id_zero_bad_key_id_and_small_dst()
    {
        using var codec = Codec(DataCipher.Aes256Gcm);
        Assert.Throws<ArgumentOutOfRangeException>(() => codec.SealDataV2(new byte[64], 0, 0, 0, new byte[4]));
        Assert.Throws<ArgumentOutOfRangeException>(() => codec.SealDataV2(new byte[64], 8, 0, 1, new byte[4]));
        Assert.Throws<ArgumentOutOfRangeException>(() => codec.SealDataV2(new byte[64], 0, 0x1000000, 1, new byte[4]));
        Assert.Throws<ArgumentException>(() => codec.SealDataV2(new byte[27], 0, 0, 1, new byte[4]));
        Assert.Throws<ArgumentException>(() => codec.SealDataV1(new byte[24], 0, 1, new byte[4]));
    }

    [Fact]
    public void Constructor_validates()
    {
        Assert.Throws<NotSupportedException>(() => new AeadCodec(DataCipher.Aes256Cbc, new byte[32], Iv));
        Assert.Throws<ArgumentException>(() => new AeadCodec(DataCipher.Aes256Gcm, new byte[16], Iv));
        Assert.Throws<ArgumentException>(() => new AeadCodec(DataCipher.Aes128Gcm, new byte[16], new byte[12]));
    }

    [Fact]
    public void In_place_seal_works()
    {
        using var codec = Codec(DataCipher.Aes256Gcm);
        var buf = new byte[24 + 50];
        var pt = new byte[50];
        new Random(3).NextBytes(pt);
        pt.CopyTo(buf, 24);
        int n = codec.SealDataV2(buf, 0, 1, 1, buf.AsSpan(24, 50));
        var back = new byte[50];
        Assert.Equal(DataDropReason.None, codec.Open(buf.AsSpan(0, n), back, out _, out _));
        Assert.Equal(pt, back);
    }

    [Theory]
    [MemberData(nameof(Ciphers))]
    public void In_place_open_works(DataCipher c)
    {
        using var codec = Codec(c);
        var pt = new byte[77];
        new Random(4).NextBytes(pt);
        var buf = new byte[24 + 77];
        int n = codec.SealDataV2(buf, 0, 1, 5, pt);
        // Decrypt over the ciphertext region of the same buffer (what a zero-copy receive path does).
        Assert.Equal(DataDropReason.None, codec.Open(buf.AsSpan(0, n), buf.AsSpan(AeadCodec.V2Overhead), out int w, out _));
        Assert.Equal(pt, buf.AsSpan(AeadCodec.V2Overhead, w).ToArray());
    }

    [Theory]
    [MemberData(nameof(Ciphers))]
    public void No_heap_allocations_per_packet(DataCipher c)
    {
        using var tx = Codec(c);
        using var rx = Codec(c);
        var pt = new byte[1400];
        var wire = new byte[1400 + AeadCodec.V2Overhead];
        var back = new byte[1400];
        var window = new ReplayWindow();
        var counter = new PacketIdCounter();

        // Warm up (JIT, first-use lazy init inside the crypto library).
        for (int i = 0; i < 100; i++)
        {
            Assert.True(counter.TryNext(out uint id));
            int n = tx.SealDataV2(wire, 0, 1, id, pt);
            rx.Open(wire.AsSpan(0, n), back, out _, out uint pid);
            window.CheckAndUpdate(pid);
        }

        long before = GC.GetAllocatedBytesForCurrentThread();
        int ok = 0;
        for (int i = 0; i < 10_000; i++)
        {
            counter.TryNext(out uint id);
            int n = (i & 1) == 0 ? tx.SealDataV2(wire, 0, 1, id, pt) : tx.SealDataV1(wire, 0, id, pt);
            if (rx.Open(wire.AsSpan(0, n), back, out _, out uint pid) == DataDropReason.None && window.CheckAndUpdate(pid))
            {
                ok++;
            }
        }

        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(10_000, ok);
        Assert.Equal(0, allocated);
    }
}
