// SPDX-License-Identifier: MIT
using Ovpn.Protocol.Data;

namespace Ovpn.Protocol.Tests.Data;

public class CompressionFramingTests
{
    private static byte[] Enc(CompressionFramingMode m, byte[] p)
    {
        var dst = new byte[p.Length + CompressionFraming.MaxOverhead];
        int n = CompressionFraming.Encode(m, p, dst);
        return dst[..n];
    }

    private static (DataDropReason, byte[]) Dec(CompressionFramingMode m, byte[] framed)
    {
        var buf = (byte[])framed.Clone();
        var r = CompressionFraming.Decode(m, buf, out int off, out int len);
        return (r, buf.AsSpan(off, len).ToArray());
    }

    private static readonly byte[] Ip = [0x45, 0x00, 0x00, 0x1c, 0xAA, 0xBB];

    [Fact]
    public void Lzo_stub_prefixes_FA()
    {
        Assert.Equal("FA4500001CAABB", Convert.ToHexString(Enc(CompressionFramingMode.LzoStub, Ip)));
        var (r, p) = Dec(CompressionFramingMode.LzoStub, Convert.FromHexString("FA4500001CAABB"));
        Assert.Equal(DataDropReason.None, r);
        Assert.Equal(Ip, p);
    }

    [Fact]
    public void Comp_stub_swaps_first_byte_to_end()
    {
        Assert.Equal("FB00001CAABB45", Convert.ToHexString(Enc(CompressionFramingMode.CompStub, Ip)));
        var (r, p) = Dec(CompressionFramingMode.CompStub, Convert.FromHexString("FB00001CAABB45"));
        Assert.Equal(DataDropReason.None, r);
        Assert.Equal(Ip, p);
        // Single-byte payload.
        Assert.Equal("FB45", Convert.ToHexString(Enc(CompressionFramingMode.CompStub, [0x45])));
        Assert.Equal([0x45], Dec(CompressionFramingMode.CompStub, [0xFB, 0x45]).Item2);
    }

    [Fact]
    public void Stub_v2_only_escapes_leading_50()
    {
        Assert.Equal(Ip, Enc(CompressionFramingMode.CompStubV2, Ip));
        byte[] p50 = [0x50, 0x01, 0x02];
        Assert.Equal("50005001" + "02", Convert.ToHexString(Enc(CompressionFramingMode.CompStubV2, p50)));
        var (r, back) = Dec(CompressionFramingMode.CompStubV2, Convert.FromHexString("5000500102"));
        Assert.Equal(DataDropReason.None, r);
        Assert.Equal(p50, back);
        (r, back) = Dec(CompressionFramingMode.CompStubV2, Ip);
        Assert.Equal(DataDropReason.None, r);
        Assert.Equal(Ip, back);
    }

    [Fact]
    public void None_is_identity_and_empty_passes()
    {
        Assert.Equal(Ip, Enc(CompressionFramingMode.None, Ip));
        foreach (var m in Enum.GetValues<CompressionFramingMode>())
        {
            Assert.Empty(Enc(m, []));
            Assert.Equal(DataDropReason.None, Dec(m, []).Item1);
        }
    }

    [Theory]
    [InlineData(CompressionFramingMode.LzoStub, "66AABB", DataDropReason.CompressionUnsupported)]
    [InlineData(CompressionFramingMode.LzoStub, "69AABB", DataDropReason.CompressionUnsupported)]
    [InlineData(CompressionFramingMode.LzoStub, "45AABB", DataDropReason.Malformed)]
    [InlineData(CompressionFramingMode.LzoStub, "FBAABB", DataDropReason.Malformed)]
    [InlineData(CompressionFramingMode.CompStub, "69AABB", DataDropReason.CompressionUnsupported)]
    [InlineData(CompressionFramingMode.CompStub, "66AABB", DataDropReason.CompressionUnsupported)]
    [InlineData(CompressionFramingMode.CompStub, "FAAABB", DataDropReason.Malformed)]
    [InlineData(CompressionFramingMode.CompStubV2, "5001AABB", DataDropReason.CompressionUnsupported)]
    [InlineData(CompressionFramingMode.CompStubV2, "5002AABB", DataDropReason.CompressionUnsupported)]
    [InlineData(CompressionFramingMode.CompStubV2, "5077AABB", DataDropReason.Malformed)]
    [InlineData(CompressionFramingMode.CompStubV2, "50", DataDropReason.Malformed)]
    public void Real_compression_and_junk_are_reported(CompressionFramingMode m, string hex, DataDropReason expected)
    {
        Assert.Equal(expected, Dec(m, Convert.FromHexString(hex)).Item1);
    }

    [Fact]
    public void Round_trip_all_modes_random()
    {
        var rnd = new Random(9);
        foreach (var m in Enum.GetValues<CompressionFramingMode>())
        {
            for (int i = 0; i < 300; i++)
            {
                var p = new byte[rnd.Next(1, 60)];
                rnd.NextBytes(p);
                if (i % 5 == 0)
                {
                    p[0] = 0x50;
                }

                var (r, back) = Dec(m, Enc(m, p));
                Assert.Equal(DataDropReason.None, r);
                Assert.Equal(p, back);
            }
        }
    }
}
