// SPDX-License-Identifier: MIT
using Ovpn.DataPlane.Offload;
using Ovpn.Platform.Net;
using Ovpn.Protocol.Data;
using Ovpn.Protocol.Keys;

namespace Ovpn.DataPlane.Tests.Offload;

/// <summary>
/// The OpenSSL ChaCha20-Poly1305 codec (composed from libcrypto's ChaCha20 and Poly1305, not the
/// EVP AEAD object) against the BCL ChaCha20Poly1305 codec: many packets of random sizes, key ids,
/// peer ids and packet ids both ways, in place and not, plus tampering that must not open.
/// Seeded randomness so a failure reproduces.
/// </summary>
public sealed class OpenSslChaChaInteropTests
{
    private const DataCipher Cipher = DataCipher.ChaCha20Poly1305;

    private static (byte[] Key, byte[] Tail) Keys(Random rng)
    {
        var key = new byte[32];
        var tail = new byte[8];
        rng.NextBytes(key);
        rng.NextBytes(tail);
        return (key, tail);
    }

    [Theory]
    [InlineData(1, false)]
    [InlineData(2, true)]
    public void Evp_and_bcl_interoperate_over_many_random_packets(int seed, bool inPlace)
    {
        Assert.True(OpenSslPacketAeadFactory.IsAvailable);
        var rng = new Random(seed);
        var (key, tail) = Keys(rng);
        using var ossl = OpenSslPacketAeadFactory.Instance.Create(Cipher, key, tail);
        using var osslPeer = OpenSslPacketAeadFactory.Instance.Create(Cipher, key, tail);
        using var bcl = BclPacketAeadFactory.Instance.Create(Cipher, key, tail);
        uint pid = 0;
        for (int i = 0; i < 1500; i++)
        {
            int size = rng.Next(0, 1501);
            int keyId = rng.Next(0, 8);
            uint peerId = (uint)rng.Next(0, 1 << 24);
            pid += (uint)rng.Next(1, 1000);
            var plain = new byte[size];
            rng.NextBytes(plain);

            var a = new byte[size + 24];
            var b = new byte[size + 24];
            if (inPlace)
            {
                plain.CopyTo(a, 24);
                Assert.Equal(size + 24, ossl.SealDataV2(a, keyId, peerId, pid, a.AsSpan(24, size)));
            }
            else
            {
                Assert.Equal(size + 24, ossl.SealDataV2(a, keyId, peerId, pid, plain));
            }

            Assert.Equal(size + 24, bcl.SealDataV2(b, keyId, peerId, pid, plain));
            Assert.Equal(b, a); // same header, packet id, tag and ciphertext

            if (size == 0)
            {
                // No payload is not a valid data packet for either codec (notes 13.2).
                Assert.Equal(DataDropReason.Malformed, ossl.Open(a, new byte[16], out _, out _));
                Assert.Equal(DataDropReason.Malformed, bcl.Open(b, new byte[16], out _, out _));
                continue;
            }

            // BCL opens what EVP sealed.
            var outB = new byte[size];
            Assert.Equal(DataDropReason.None, bcl.Open(a, outB, out int nb, out uint pb));
            Assert.Equal(size, nb);
            Assert.Equal(pid, pb);
            Assert.Equal(plain, outB);

            // EVP (a second instance: independent contexts) opens what BCL sealed.
            uint po;
            int no;
            if (inPlace)
            {
                Assert.Equal(DataDropReason.None, osslPeer.Open(b, b.AsSpan(24), out no, out po));
                Assert.Equal(plain, b.AsSpan(24, no).ToArray());
            }
            else
            {
                var outO = new byte[size];
                Assert.Equal(DataDropReason.None, osslPeer.Open(b, outO, out no, out po));
                Assert.Equal(plain, outO);
            }

            Assert.Equal(size, no);
            Assert.Equal(pid, po);
        }
    }

    [Theory]
    [InlineData(4095)]
    [InlineData(4097)]
    [InlineData(9000)]
    [InlineData(65000)]
    public void Large_packets_past_the_fast_call_limit_interoperate(int size)
    {
        var rng = new Random(size);
        var (key, tail) = Keys(rng);
        using var ossl = OpenSslPacketAeadFactory.Instance.Create(Cipher, key, tail);
        using var bcl = BclPacketAeadFactory.Instance.Create(Cipher, key, tail);
        var plain = new byte[size];
        rng.NextBytes(plain);
        var a = new byte[size + 24];
        var b = new byte[size + 24];
        ossl.SealDataV2(a, 3, 0xabcdef, 0xfffffff0, plain);
        bcl.SealDataV2(b, 3, 0xabcdef, 0xfffffff0, plain);
        Assert.Equal(b, a);
        var dst = new byte[size];
        Assert.Equal(DataDropReason.None, ossl.Open(b, dst, out int n, out _));
        Assert.Equal(size, n);
        Assert.Equal(plain, dst);
    }

    [Fact]
    public void Tampered_packets_do_not_open_and_leave_no_plaintext()
    {
        var rng = new Random(7);
        var (key, tail) = Keys(rng);
        using var ossl = OpenSslPacketAeadFactory.Instance.Create(Cipher, key, tail);
        using var bcl = BclPacketAeadFactory.Instance.Create(Cipher, key, tail);
        int checkedCases = 0;
        for (int i = 0; i < 300; i++)
        {
            int size = rng.Next(1, 1501);
            var plain = new byte[size];
            rng.NextBytes(plain);
            var wire = new byte[size + 24];
            // Alternate the sealer so tampering is checked on packets from both implementations.
            (i % 2 == 0 ? ossl : bcl).SealDataV2(wire, rng.Next(0, 8), (uint)rng.Next(0, 1 << 24), (uint)(i + 1), plain);

            // One flipped bit anywhere after the opcode bits: key id, peer id, packet id, tag or
            // ciphertext. The opcode's own bits would make it a different packet type (Malformed).
            var bad = (byte[])wire.Clone();
            int pos = rng.Next(0, bad.Length);
            int bit = pos == 0 ? rng.Next(0, 3) : rng.Next(0, 8);
            bad[pos] ^= (byte)(1 << bit);
            AssertFailsToOpen(ossl, bad, size);
            AssertFailsToOpen(bcl, bad, size);

            // Truncated by one byte, and a ciphertext with one byte appended.
            if (size > 1)
            {
                AssertFailsToOpen(ossl, wire.AsSpan(0, wire.Length - 1).ToArray(), size);
            }

            AssertFailsToOpen(ossl, [.. wire, 0], size + 1);
            checkedCases++;
        }

        Assert.Equal(300, checkedCases);

        // The right packet under a different key or implicit IV does not open either.
        var p = new byte[100];
        var w = new byte[124];
        ossl.SealDataV2(w, 0, 1, 5, p);
        var (key2, _) = Keys(rng);
        using var otherKey = OpenSslPacketAeadFactory.Instance.Create(Cipher, key2, tail);
        var tail2 = (byte[])tail.Clone();
        tail2[7] ^= 1;
        using var otherIv = OpenSslPacketAeadFactory.Instance.Create(Cipher, key, tail2);
        AssertFailsToOpen(otherKey, w, 100);
        AssertFailsToOpen(otherIv, w, 100);
        // ...and the untouched packet still opens afterwards (failed opens leave no state behind).
        Assert.Equal(DataDropReason.None, ossl.Open(w, new byte[100], out _, out _));
    }

    private static void AssertFailsToOpen(IPacketAead codec, byte[] wire, int dstSize)
    {
        var dst = new byte[dstSize];
        Array.Fill(dst, (byte)0x5a);
        Assert.Equal(DataDropReason.AuthFailed, codec.Open(wire, dst, out int n, out uint pid));
        Assert.Equal(0, n);
        Assert.Equal(0u, pid);
        // Whatever the codec touched holds no plaintext: either cleared or our fill pattern.
        int ctLen = wire.Length - 24;
        Assert.All(dst.AsSpan(0, ctLen).ToArray(), x => Assert.Equal(0, x));
    }
}
