// SPDX-License-Identifier: MIT
using Ovpn.Protocol.Options;

namespace Ovpn.Protocol.Tests.Options;

public class OptionsStringTests
{
    // Captured 2026-11-28 from OpenVPN 2.6.14 (Debian) at --verb 7, "Local Options String":
    // `openvpn --mode server --tls-server --dev tun --proto udp --server 10.77.0.0 255.255.255.0
    //  --topology subnet --keepalive 10 60 --dh none ...` and a default `--client` peer.
    private const string Real26Server = "V4,dev-type tun,link-mtu 1541,tun-mtu 1500,proto UDPv4,auth SHA1,keysize 128,key-method 2,tls-server";
    private const string Real26Client = "V4,dev-type tun,link-mtu 1541,tun-mtu 1500,proto UDPv4,auth SHA1,keysize 128,key-method 2,tls-client";

    [Fact]
    public void Default_strings_match_real_openvpn_26()
    {
        Assert.Equal(Real26Server, OptionsString.ForServer());
        Assert.Equal(Real26Client, OptionsString.Build(isServer: false));
        Assert.Null(OptionsString.GetField(Real26Client, "cipher"));
    }

    [Fact]
    public void Aead_cipher_server_string()
    {
        Assert.Equal("V4,dev-type tun,link-mtu 1549,tun-mtu 1500,proto UDPv4,auth [null-digest],keysize 256,key-method 2,tls-server",
            OptionsString.ForServer(linkMtu: 1549, authDigest: "[null-digest]", keySizeBits: 256));
    }

    [Fact]
    public void Field_order_with_all_options()
    {
        var s = OptionsString.ForServer(tunMtu: 1400, linkMtu: 1500, tcp: true, compLzo: true, keyDirection: 0,
            cipherName: "AES-256-CBC", authDigest: "SHA1", keySizeBits: 256, tlsAuth: true);
        Assert.Equal("V4,dev-type tun,link-mtu 1500,tun-mtu 1400,proto TCPv4_SERVER,comp-lzo,keydir 0,cipher AES-256-CBC,auth SHA1,keysize 256,tls-auth,key-method 2,tls-server", s);
        Assert.EndsWith(",tls-client", OptionsString.Build(false));
        Assert.Contains("proto TCPv4_CLIENT", OptionsString.Build(false, tcp: true));
    }

    [Fact]
    public void GetField_reads_client_fields()
    {
        const string c = "V4,dev-type tun,link-mtu 1558,tun-mtu 1500,proto UDPv4,comp-lzo,cipher AES-256-CBC,auth SHA1,keysize 256,key-method 2,tls-client";
        Assert.Equal("AES-256-CBC", OptionsString.GetField(c, "cipher"));
        Assert.Equal("", OptionsString.GetField(c, "comp-lzo"));
        Assert.Equal("1500", OptionsString.GetField(c, "tun-mtu"));
        Assert.Equal("UDPv4", OptionsString.GetField(c, "proto"));
        Assert.Null(OptionsString.GetField(c, "tls-auth"));
        Assert.Null(OptionsString.GetField(c, "comp"));      // no prefix matching
        Assert.Null(OptionsString.GetField(c, "link"));
        Assert.True(OptionsString.HasField(c, "tls-client"));
        Assert.Null(OptionsString.GetField(null, "cipher"));
        Assert.Null(OptionsString.GetField(OptionsString.ForServer(), "cipher"));
        Assert.Equal("SHA1", OptionsString.GetField(OptionsString.ForServer(), "auth"));
    }
}
