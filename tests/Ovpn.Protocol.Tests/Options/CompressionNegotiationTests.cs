// SPDX-License-Identifier: MIT
using Ovpn.Protocol.Data;
using Ovpn.Protocol.Options;

namespace Ovpn.Protocol.Tests.Options;

public class CompressionNegotiationTests
{
    private const string WithCompLzo = "V4,dev-type tun,link-mtu 1542,tun-mtu 1500,proto UDPv4,comp-lzo,auth SHA1,keysize 128,key-method 2,tls-client";
    private const string Plain = "V4,dev-type tun,link-mtu 1541,tun-mtu 1500,proto UDPv4,auth SHA1,keysize 128,key-method 2,tls-client";

    [Fact]
    public void Default_26_client_gets_no_framing()
    {
        var m = CompressionNegotiation.SelectForServer(PeerInfo.Parse(PeerInfoTests.Client26), Plain, out var push);
        Assert.Equal(CompressionFramingMode.None, m);
        Assert.Null(push);
    }

    [Fact]
    public void Comp_lzo_client_with_stub_v2_gets_stub_v2()
    {
        var m = CompressionNegotiation.SelectForServer(PeerInfo.Parse(PeerInfoTests.Client26), WithCompLzo, out var push);
        Assert.Equal(CompressionFramingMode.CompStubV2, m);
        Assert.Equal("compress stub-v2", push);
    }

    [Fact]
    public void Old_comp_lzo_client_gets_comp_lzo_no()
    {
        var m = CompressionNegotiation.SelectForServer(PeerInfo.Parse(PeerInfoTests.Client23), WithCompLzo, out var push);
        Assert.Equal(CompressionFramingMode.LzoStub, m);
        Assert.Equal("comp-lzo no", push);
    }
}
