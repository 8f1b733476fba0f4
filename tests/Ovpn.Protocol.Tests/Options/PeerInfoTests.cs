// SPDX-License-Identifier: MIT
using Ovpn.Protocol.Options;

namespace Ovpn.Protocol.Tests.Options;

public class PeerInfoTests
{
    // OpenVPN 2.4.x Linux client peer-info in the order 2.4's push_peer_info emits it (as seen
    // in "peer info:" server log lines): IV_PROTO=2, IV_NCP=2, no IV_CIPHERS.
    internal const string Client24 =
        "IV_VER=2.4.7\nIV_PLAT=linux\nIV_PROTO=2\nIV_NCP=2\nIV_LZ4=1\nIV_LZ4v2=1\nIV_LZO=1\n" +
        "IV_COMP_STUB=1\nIV_COMP_STUBv2=1\nIV_TCPNL=1\n";

    // Real 2.6 Linux client: the "peer info:" lines logged by an OpenVPN 2.6.14 server (Debian)
    // for a default `openvpn --client --dev tun` 2.6.14 peer, captured 2026-11-28, in log order.
    internal const string Client26 =
        "IV_VER=2.6.14\nIV_PLAT=linux\nIV_TCPNL=1\nIV_MTU=1600\nIV_NCP=2\n" +
        "IV_CIPHERS=AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305\nIV_PROTO=990\n" +
        "IV_LZO_STUB=1\nIV_COMP_STUB=1\nIV_COMP_STUBv2=1\n";

    // 2.3-style client: no IV_NCP, no IV_PROTO flags beyond nothing, real LZO.
    internal const string Client23 = "IV_VER=2.3.10\nIV_PLAT=linux\nIV_LZ4=1\nIV_LZO=1\nIV_COMP_STUB=1\n";

    [Fact]
    public void Parses_24_client()
    {
        var pi = PeerInfo.Parse(Client24);
        Assert.Equal("2.4.7", pi.IvVer);
        Assert.Equal("linux", pi.IvPlat);
        Assert.Equal(2, pi.IvProto);
        Assert.Equal(2, pi.IvNcp);
        Assert.Null(pi.IvCiphers);
        Assert.Null(pi.IvMtu);
        Assert.True(pi.Lz4 && pi.Lz4V2 && pi.Lzo && pi.CompStub && pi.CompStubV2 && pi.TcpNl);
        Assert.False(pi.LzoStub);
        Assert.True(pi.Has(IvProtoFlags.DataV2));
        Assert.False(pi.Has(IvProtoFlags.TlsKeyExport));
        Assert.True(pi.SupportsNcp);
    }

    [Fact]
    public void Parses_26_client()
    {
        var pi = PeerInfo.Parse(Client26);
        Assert.Equal(990, pi.IvProto);
        Assert.Equal(1600, pi.IvMtu);
        Assert.Equal(["AES-256-GCM", "AES-128-GCM", "CHACHA20-POLY1305"], pi.IvCiphers!);
        Assert.True(pi.LzoStub && pi.CompStub && pi.CompStubV2);
        Assert.False(pi.Lzo || pi.Lz4 || pi.Lz4V2);
        Assert.True(pi.Has(IvProtoFlags.DataV2 | IvProtoFlags.RequestPush | IvProtoFlags.TlsKeyExport |
                           IvProtoFlags.CcExitNotify | IvProtoFlags.DynTlsCrypt));
        Assert.False(pi.Has(IvProtoFlags.DataEpoch));
        Assert.Equal("1", pi.All["IV_TCPNL"]);
    }

    [Fact]
    public void Tolerates_junk_crlf_duplicates_and_null()
    {
        var pi = PeerInfo.Parse("garbage line\r\nIV_PROTO=6\r\n=x\nIV_PROTO=990\nIV_MTU=abc\nIV_NCP=2junk\nUV_FOO=a=b\n");
        Assert.Equal(6, pi.IvProto);  // first occurrence wins
        Assert.Equal(0, pi.IvMtu);    // atoi semantics
        Assert.Equal(2, pi.IvNcp);
        Assert.Equal("a=b", pi.All["UV_FOO"]);
        Assert.Null(pi.IvVer);

        var empty = PeerInfo.Parse(null);
        Assert.Equal(0, empty.IvProto);
        Assert.Empty(empty.All);
        Assert.False(empty.SupportsNcp);
    }
}
