// SPDX-License-Identifier: MIT
using Ovpn.Protocol.Data;

namespace Ovpn.Protocol.Tests.Data;

public class SpecialPayloadsTests
{
    [Fact]
    public void Ping_magic_bytes()
    {
        Assert.Equal("2A187BF3641EB4CB07ED2D0A981FC748", Convert.ToHexString(SpecialPayloads.PingMagic));
        var buf = new byte[16];
        Assert.Equal(16, SpecialPayloads.WritePing(buf));
        Assert.True(SpecialPayloads.IsPing(buf));
        Assert.False(SpecialPayloads.IsPing(buf.AsSpan(0, 15)));
        var longer = new byte[17];
        buf.CopyTo(longer, 0);
        Assert.False(SpecialPayloads.IsPing(longer));
        buf[15] ^= 1;
        Assert.False(SpecialPayloads.IsPing(buf));
    }

    [Fact]
    public void Occ_magic_and_ops()
    {
        Assert.Equal("287F346BD4EF7A812D56B8D3AFC5459C", Convert.ToHexString(SpecialPayloads.OccMagic));
        var buf = new byte[64];
        int n = SpecialPayloads.WriteOcc(buf, OccOpcode.Exit);
        Assert.Equal(17, n);
        Assert.Equal(6, buf[16]);
        Assert.True(SpecialPayloads.TryGetOcc(buf.AsSpan(0, n), out var op, out var args));
        Assert.Equal(OccOpcode.Exit, op);
        Assert.Equal(0, args.Length);
        Assert.False(SpecialPayloads.IsPing(buf.AsSpan(0, n)));

        var reply = "V4,dev-type tun\0"u8.ToArray();
        n = SpecialPayloads.WriteOcc(buf, OccOpcode.Reply, reply);
        Assert.True(SpecialPayloads.TryGetOcc(buf.AsSpan(0, n), out op, out args));
        Assert.Equal(OccOpcode.Reply, op);
        Assert.Equal("V4,dev-type tun", SpecialPayloads.GetOccReplyString(args));

        n = SpecialPayloads.WriteOcc(buf, OccOpcode.MtuReply, [0x05, 0xDC, 0x05, 0x78]);
        Assert.True(SpecialPayloads.TryGetOcc(buf.AsSpan(0, n), out op, out args));
        Assert.True(SpecialPayloads.TryGetMtuReply(args, out var r, out var s));
        Assert.Equal((1500, 1400), (r, s));
    }

    [Fact]
    public void Non_occ_is_rejected()
    {
        Assert.False(SpecialPayloads.TryGetOcc(SpecialPayloads.OccMagic, out _, out _)); // no op byte
        Assert.False(SpecialPayloads.TryGetOcc(SpecialPayloads.PingMagic, out _, out _));
        Assert.False(SpecialPayloads.IsOcc([0x45, 0x00, 0x00, 0x14]));
    }
}
