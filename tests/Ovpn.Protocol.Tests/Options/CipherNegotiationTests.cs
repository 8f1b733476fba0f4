// SPDX-License-Identifier: MIT
using Ovpn.Protocol.Keys;
using Ovpn.Protocol.Options;

namespace Ovpn.Protocol.Tests.Options;

public class CipherNegotiationTests
{
    private static readonly DataCipher[] Default26 = [DataCipher.Aes256Gcm, DataCipher.Aes128Gcm, DataCipher.ChaCha20Poly1305];
    private const string Opts23Cbc = "V4,dev-type tun,link-mtu 1558,tun-mtu 1500,proto UDPv4,comp-lzo,cipher AES-256-CBC,auth SHA1,keysize 256,key-method 2,tls-client";

    [Fact]
    public void Client_24_without_iv_ciphers_gets_aes_256_gcm()
    {
        var pi = PeerInfo.Parse(PeerInfoTests.Client24);
        Assert.True(CipherNegotiation.TrySelect(Default26, pi, null, null, out var c, out var reason));
        Assert.Equal(DataCipher.Aes256Gcm, c);
        Assert.Equal("", reason);
    }

    [Fact]
    public void Client_24_follows_server_order_over_implied_list()
    {
        var pi = PeerInfo.Parse(PeerInfoTests.Client24);
        Assert.True(CipherNegotiation.TrySelect([DataCipher.ChaCha20Poly1305, DataCipher.Aes128Gcm], pi, null, null, out var c, out _));
        Assert.Equal(DataCipher.Aes128Gcm, c); // 2.4 implies only the two GCM ciphers
    }

    [Fact]
    public void Client_26_picks_first_server_cipher_the_client_has()
    {
        var pi = PeerInfo.Parse(PeerInfoTests.Client26);
        Assert.True(CipherNegotiation.TrySelect(Default26, pi, null, null, out var c, out _));
        Assert.Equal(DataCipher.Aes256Gcm, c);
        Assert.True(CipherNegotiation.TrySelect([DataCipher.ChaCha20Poly1305, DataCipher.Aes256Gcm], pi, null, null, out c, out _));
        Assert.Equal(DataCipher.ChaCha20Poly1305, c);
    }

    [Fact]
    public void Iv_ciphers_overrides_iv_ncp_and_options_cipher()
    {
        var pi = PeerInfo.Parse("IV_NCP=2\nIV_CIPHERS=CHACHA20-POLY1305\n");
        // OCC cipher is ignored when IV_CIPHERS is present.
        Assert.False(CipherNegotiation.TrySelect([DataCipher.Aes256Gcm, DataCipher.Aes256Cbc], pi, Opts23Cbc, null, out _, out var reason));
        Assert.Equal("Data channel cipher negotiation failed (no shared cipher)", reason);
        Assert.True(CipherNegotiation.TrySelect(Default26, pi, Opts23Cbc, null, out var c, out _));
        Assert.Equal(DataCipher.ChaCha20Poly1305, c);
    }

    [Fact]
    public void Client_23_cbc_refused_unless_server_lists_it()
    {
        var pi = PeerInfo.Parse(PeerInfoTests.Client23);
        Assert.False(CipherNegotiation.TrySelect(Default26, pi, Opts23Cbc, null, out _, out var reason));
        Assert.Equal(CipherNegotiation.NoSharedCipherReason, reason);

        Assert.True(CipherNegotiation.TrySelect([.. Default26, DataCipher.Aes256Cbc], pi, Opts23Cbc, null, out var c, out _));
        Assert.Equal(DataCipher.Aes256Cbc, c);

        // A different CBC cipher in the server list does not match.
        Assert.False(CipherNegotiation.TrySelect([.. Default26, DataCipher.Aes128Cbc], pi, Opts23Cbc, null, out _, out _));
    }

    [Fact]
    public void Client_offering_only_bf_cbc_is_refused()
    {
        var pi = PeerInfo.Parse("IV_VER=2.6.14\nIV_PROTO=990\nIV_CIPHERS=BF-CBC\n");
        Assert.False(CipherNegotiation.TrySelect([.. Default26, DataCipher.Aes256Cbc, DataCipher.Aes128Cbc], pi,
            "V4,cipher BF-CBC", null, out _, out var reason));
        Assert.Equal(CipherNegotiation.NoSharedCipherReason, reason);

        // Old client without NCP whose options string says BF-CBC.
        var old = PeerInfo.Parse(PeerInfoTests.Client23);
        Assert.False(CipherNegotiation.TrySelect(Default26, old, "V4,dev-type tun,cipher BF-CBC,auth SHA1,keysize 128,key-method 2,tls-client", null, out _, out _));
    }

    [Fact]
    public void Fallback_only_for_clients_without_ncp_info()
    {
        var old = PeerInfo.Parse(PeerInfoTests.Client23);
        Assert.True(CipherNegotiation.TrySelect(Default26, old, null, DataCipher.Aes128Gcm, out var c, out _));
        Assert.Equal(DataCipher.Aes128Gcm, c);

        var pi26 = PeerInfo.Parse("IV_CIPHERS=CHACHA20-POLY1305\n");
        Assert.False(CipherNegotiation.TrySelect([DataCipher.Aes256Gcm], pi26, null, DataCipher.Aes256Gcm, out _, out _));
    }

    [Fact]
    public void Empty_server_list_fails()
    {
        var pi = PeerInfo.Parse(PeerInfoTests.Client26);
        Assert.False(CipherNegotiation.TrySelect([], pi, null, null, out _, out _));
    }

    [Fact]
    public void Client_accepts_pushed_cipher_only_from_own_list()
    {
        DataCipher[] mine = [DataCipher.Aes256Gcm, DataCipher.ChaCha20Poly1305];
        Assert.True(CipherNegotiation.TryAcceptPushed(mine, "AES-256-GCM", null, null, out var c, out _));
        Assert.Equal(DataCipher.Aes256Gcm, c);
        Assert.False(CipherNegotiation.TryAcceptPushed(mine, "AES-128-GCM", null, null, out _, out var r1));
        Assert.Contains("not allowed", r1);
        Assert.False(CipherNegotiation.TryAcceptPushed(mine, "BF-CBC", null, null, out _, out var r2));
        Assert.Contains("BF-CBC", r2);

        // No push: server OCC cipher if allowed, else fallback, else fail.
        Assert.True(CipherNegotiation.TryAcceptPushed(mine, null, "V4,cipher CHACHA20-POLY1305,auth [null-digest]", null, out c, out _));
        Assert.Equal(DataCipher.ChaCha20Poly1305, c);
        Assert.True(CipherNegotiation.TryAcceptPushed(mine, null, "V4,auth SHA1", DataCipher.Aes256Gcm, out c, out _));
        Assert.Equal(DataCipher.Aes256Gcm, c);
        Assert.False(CipherNegotiation.TryAcceptPushed(mine, null, "V4,cipher AES-128-GCM", null, out _, out _));
    }
}
