// SPDX-License-Identifier: MIT
using Ovpn.Protocol.Control;

namespace Ovpn.Protocol.Tests.Control;

public class ControlMessageAndFramingTests
{
    [Fact]
    public void ControlMessageEncodeAddsNulAndDecodeStrips()
    {
        Assert.Equal("PUSH_REQUEST\0"u8.ToArray(), ControlMessage.Encode("PUSH_REQUEST"));
        Assert.Equal("AUTH_FAILED", ControlMessage.Decode("AUTH_FAILED\r\n\0"u8));
        Assert.Equal("EXIT", ControlMessage.Decode("EXIT"u8));
        Assert.Equal("A", ControlMessage.Decode("A\0B\0"u8));
        Assert.Throws<ArgumentException>(() => ControlMessage.Encode("a\0b"));
    }

    [Fact]
    public void SplitRecordAtNuls()
    {
        Assert.Equal(["PUSH_REPLY,ping 10", "RESTART"], ControlMessage.SplitRecord("PUSH_REPLY,ping 10\0RESTART\n\0\0"u8));
        Assert.Equal(["ONE"], ControlMessage.SplitRecord("ONE"u8));
        Assert.Empty(ControlMessage.SplitRecord("\0\0"u8));
    }

    [Fact]
    public void FrameAddsBigEndianLength()
    {
        Assert.Equal([0x01, 0x02, .. new byte[0x102]], TcpFraming.Frame(new byte[0x102]));
        Assert.Throws<ArgumentException>(() => TcpFraming.Frame([]));
        Assert.Throws<ArgumentException>(() => TcpFraming.Frame(new byte[65536]));
    }

    [Fact]
    public void DecoderReassemblesArbitraryChunks()
    {
        var rng = new Random(11);
        var packets = Enumerable.Range(0, 300).Select(_ =>
        {
            var p = new byte[rng.Next(1, 1500)];
            rng.NextBytes(p);
            return p;
        }).ToList();
        byte[] stream = packets.SelectMany(p => TcpFraming.Frame(p)).ToArray();

        var dec = new TcpFrameDecoder(1500);
        var got = new List<byte[]>();
        int off = 0;
        while (off < stream.Length)
        {
            int n = Math.Min(rng.Next(1, 4000), stream.Length - off);
            dec.Feed(stream.AsSpan(off, n));
            off += n;
            TcpFrameStatus st;
            while ((st = dec.TryRead(out var pkt)) == TcpFrameStatus.Packet)
            {
                got.Add(pkt!);
            }

            Assert.Equal(TcpFrameStatus.NeedMore, st);
        }

        Assert.Equal(packets.Count, got.Count);
        for (int i = 0; i < got.Count; i++)
        {
            Assert.Equal(packets[i], got[i]);
        }

        Assert.Equal(0, dec.BufferedBytes);
    }

    [Theory]
    [InlineData(new byte[] { 0, 0, 9 })]
    [InlineData(new byte[] { 0x05, 0xDD })] // 1501 > 1500
    public void DecoderErrorsOnZeroOrOversizeLengthAndStaysFailed(byte[] input)
    {
        var dec = new TcpFrameDecoder(1500);
        dec.Feed(input);
        Assert.Equal(TcpFrameStatus.Error, dec.TryRead(out var p));
        Assert.Null(p);
        Assert.NotNull(dec.Error);
        dec.Feed(TcpFraming.Frame([1, 2, 3]));
        Assert.Equal(TcpFrameStatus.Error, dec.TryRead(out _));
    }

    [Fact]
    public void DecoderAcceptsMaxLengthFrame()
    {
        var dec = new TcpFrameDecoder(1500);
        dec.Feed(TcpFraming.Frame(new byte[1500]));
        Assert.Equal(TcpFrameStatus.Packet, dec.TryRead(out var p));
        Assert.Equal(1500, p!.Length);
        Assert.Equal(TcpFrameStatus.NeedMore, dec.TryRead(out _));
    }
}
