// SPDX-License-Identifier: MIT
using Ovpn.DataPlane.Offload;
using Ovpn.Platform.Net;
using Ovpn.Protocol.Data;
using Ovpn.Protocol.Keys;

namespace Ovpn.DataPlane.Tests.Offload;

/// <summary>The OpenSSL EVP codec must be wire-identical to the BCL one, both ways.</summary>
public sealed class OpenSslPacketAeadTests
{
    public static TheoryData<DataCipher, int> Cases()
    {
        var d = new TheoryData<DataCipher, int>();
        foreach (var c in new[] { DataCipher.Aes128Gcm, DataCipher.Aes256Gcm, DataCipher.ChaCha20Poly1305 })
        {
            foreach (int n in new[] { 1, 64, 1400 })
            {
                d.Add(c, n);
            }
        }

        return d;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Cross_checks_with_AeadCodec_both_directions(DataCipher cipher, int size)
    {
        Assert.True(OpenSslPacketAeadFactory.IsAvailable);
        var key = System.Security.Cryptography.RandomNumberGenerator.GetBytes(DataCipherNames.KeyLength(cipher));
        var tail = System.Security.Cryptography.RandomNumberGenerator.GetBytes(8);
        var plain = System.Security.Cryptography.RandomNumberGenerator.GetBytes(size);
        using var ossl = OpenSslPacketAeadFactory.Instance.Create(cipher, key, tail);
        using var bcl = new AeadCodec(cipher, key, tail);

        var a = new byte[size + 24];
        var b = new byte[size + 24];
        Assert.Equal(size + 24, ossl.SealDataV2(a, 2, 0x123456, 77, plain));
        bcl.SealDataV2(b, 2, 0x123456, 77, plain);
        Assert.Equal(b, a); // identical bytes: same header, nonce, tag and ciphertext

        // OpenSSL opens what the BCL sealed, in place.
        Assert.Equal(DataDropReason.None, ossl.Open(b, b.AsSpan(24), out int n, out uint pid));
        Assert.Equal(size, n);
        Assert.Equal(77u, pid);
        Assert.Equal(plain, b.AsSpan(24, n).ToArray());

        // A flipped bit anywhere in AAD, tag or ciphertext fails, and leaves no plaintext.
        foreach (int pos in new[] { 1, 5, 10, 24 + (size - 1) })
        {
            var bad = (byte[])a.Clone();
            bad[pos] ^= 0x01;
            var dst = new byte[size];
            Assert.Equal(DataDropReason.AuthFailed, ossl.Open(bad, dst, out _, out _));
            Assert.All(dst, x => Assert.Equal(0, x));
        }

        Assert.Equal(DataDropReason.Malformed, ossl.Open(a.AsSpan(0, 24), new byte[16], out _, out _));
    }

    [Fact]
    public void Engine_runs_with_the_OpenSsl_codec()
    {
        var sock = new ChannelDatagramSocket();
        var tun = new ChannelTun();
        using var dp = new OffloadDataPlane([sock], [tun], new RecordingEvents(),
            new OffloadOptions { Workers = 2, PoolSize = 256, QueueLength = 256, KeepaliveTimer = false, Aead = OpenSslPacketAeadFactory.Instance });
        Assert.Equal("openssl-evp", dp.CipherImplementation);
        var keys = new TestPeerKeys();
        var addr = Packets.Addr("10.99.0.2", 40001);
        var vpn = System.Net.IPAddress.Parse("172.27.224.2");
        dp.NewPeer(new PeerConfig(1, new Transport.UdpLinkTransport(sock.Socket, addr), vpn, null));
        dp.NewKey(keys.ServerKey(1, KeySlot.Primary, 0));
        dp.Start();
        using var sealer = keys.ClientSealer();
        using var opener = keys.ClientOpener();
        sock.Inject(Packets.Seal(sealer, 0, 1, 1, Packets.Ipv4(vpn, Packets.ServerVpn, 42)), addr);
        Assert.True(tun.Written.TryTake(out var ip, 10_000));
        Assert.Equal(42u, Packets.Seq(ip!));
        tun.Inject(Packets.Ipv4(Packets.ServerVpn, vpn, 43));
        Assert.True(sock.Sent.TryTake(out var w, 10_000));
        Assert.Equal(43u, Packets.Seq(Packets.Open(opener, w.Data, out _)));
        sock.Dispose();
    }
}
