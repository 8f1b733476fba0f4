// SPDX-License-Identifier: MIT
using Ovpn.Protocol.Data;

namespace Ovpn.Protocol.Tests.Data;

public class DataPacketHeaderTests
{
    [Fact]
    public void Reads_opcode_key_id_and_peer_id()
    {
        byte[] v2 = [0x4B, 0x12, 0x34, 0x56, 0, 0, 0, 1];
        Assert.True(DataPacketHeader.IsData(v2));
        Assert.Equal(9, DataPacketHeader.GetOpcode(v2[0]));
        Assert.Equal(3, DataPacketHeader.GetKeyId(v2[0]));
        Assert.True(DataPacketHeader.TryGetPeerId(v2, out var peer));
        Assert.Equal(0x123456u, peer);
        Assert.False(DataPacketHeader.TryGetPeerId(v2.AsSpan(0, 3), out _));

        byte[] v1 = [0x37, 0, 0, 0, 1];
        Assert.True(DataPacketHeader.IsData(v1));
        Assert.Equal(6, DataPacketHeader.GetOpcode(v1[0]));
        Assert.Equal(7, DataPacketHeader.GetKeyId(v1[0]));
        Assert.False(DataPacketHeader.TryGetPeerId(v1, out _));

        Assert.False(DataPacketHeader.IsData([0x20, 0]));
        Assert.False(DataPacketHeader.IsData([]));
        Assert.Equal(-1, DataPacketHeader.GetHeaderLength(4));
    }

    [Fact]
    public void Writes_v2_header()
    {
        var b = new byte[4];
        DataPacketHeader.WriteV2(b, 2, 0xFFFFFF);
        Assert.Equal("4AFFFFFF", Convert.ToHexString(b));
        Assert.Equal(0x4A, DataPacketHeader.Compose(DataPacketHeader.OpcodeDataV2, 2));
    }
}
