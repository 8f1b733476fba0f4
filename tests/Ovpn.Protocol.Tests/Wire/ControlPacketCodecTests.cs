// SPDX-License-Identifier: MIT
using Ovpn.Protocol.Wire;

namespace Ovpn.Protocol.Tests.Wire;

public class ControlPacketCodecTests
{
    [Fact]
    public void OpcodeByteComposesAndSplits()
    {
        Assert.Equal(0x38, OpcodeByte.Compose(Opcode.ControlHardResetClientV2, 0));
        Assert.Equal(0x4B, OpcodeByte.Compose(Opcode.DataV2, 3));
        Assert.Equal(Opcode.ControlV1, OpcodeByte.GetOpcode(0x27));
        Assert.Equal(7, OpcodeByte.GetKeyId(0x27));
        Assert.True(OpcodeByte.IsData(Opcode.DataV1));
        Assert.True(OpcodeByte.IsData(Opcode.DataV2));
        Assert.False(OpcodeByte.IsData(Opcode.AckV1));
        Assert.Throws<ArgumentOutOfRangeException>(() => OpcodeByte.Compose(Opcode.ControlV1, 8));
    }

    [Fact]
    public void ClientResetIs14BytesWithDocumentedLayout()
    {
        var p = new ControlPacket { Opcode = Opcode.ControlHardResetClientV2, SessionId = 0x0102030405060708, MessageId = 0 };
        var buf = new byte[ControlPacketCodec.GetEncodedLength(p)];
        Assert.Equal(14, ControlPacketCodec.Encode(p, buf));
        Assert.Equal("380102030405060708" + "00" + "00000000", Convert.ToHexStringLower(buf));
    }

    [Fact]
    public void ServerResetWithOneAckIs26AndAckV1Is22()
    {
        var reset = new ControlPacket
        {
            Opcode = Opcode.ControlHardResetServerV2,
            SessionId = 0xAA,
            Acks = [0],
            PeerSessionId = 0xBB,
            MessageId = 0,
        };
        Assert.Equal(26, ControlPacketCodec.GetEncodedLength(reset));
        var buf = new byte[26];
        ControlPacketCodec.Encode(reset, buf);
        Assert.Equal("4000000000000000aa" + "01" + "00000000" + "00000000000000bb" + "00000000", Convert.ToHexStringLower(buf));

        var ack = new ControlPacket { Opcode = Opcode.AckV1, KeyId = 2, SessionId = 1, Acks = [5], PeerSessionId = 2 };
        Assert.Equal(22, ControlPacketCodec.GetEncodedLength(ack));
        buf = new byte[22];
        ControlPacketCodec.Encode(ack, buf);
        Assert.True(ControlPacketCodec.TryDecode(buf, out var d));
        Assert.Equal(Opcode.AckV1, d!.Opcode);
        Assert.Equal(2, d.KeyId);
        Assert.Null(d.MessageId);
        Assert.Equal([5u], d.Acks);
        Assert.Equal(2UL, d.PeerSessionId);
    }

    [Fact]
    public void RoundTripsRandomPackets()
    {
        var rng = new Random(7);
        Opcode[] ops = [Opcode.ControlV1, Opcode.AckV1, Opcode.ControlHardResetClientV2, Opcode.ControlHardResetServerV2, Opcode.ControlSoftResetV1];
        for (int i = 0; i < 500; i++)
        {
            var op = ops[rng.Next(ops.Length)];
            int n = op == Opcode.AckV1 ? rng.Next(1, 9) : rng.Next(0, 9);
            var p = new ControlPacket
            {
                Opcode = op,
                KeyId = rng.Next(8),
                SessionId = (ulong)rng.NextInt64(),
                Acks = Enumerable.Range(0, n).Select(_ => (uint)rng.Next()).ToArray(),
                PeerSessionId = n > 0 ? (ulong)rng.NextInt64() : 0,
                MessageId = op == Opcode.AckV1 ? null : (uint)rng.Next(),
                Payload = op == Opcode.AckV1 ? default : Enumerable.Range(0, rng.Next(0, 200)).Select(_ => (byte)rng.Next()).ToArray(),
            };
            var buf = new byte[ControlPacketCodec.GetEncodedLength(p)];
            Assert.Equal(buf.Length, ControlPacketCodec.Encode(p, buf));
            Assert.True(ControlPacketCodec.TryDecode(buf, out var d));
            Assert.Equal(p.Opcode, d!.Opcode);
            Assert.Equal(p.KeyId, d.KeyId);
            Assert.Equal(p.SessionId, d.SessionId);
            Assert.Equal(p.Acks, d.Acks);
            Assert.Equal(p.PeerSessionId, d.PeerSessionId);
            Assert.Equal(p.MessageId, d.MessageId);
            Assert.Equal(p.Payload.ToArray(), d.Payload.ToArray());
        }
    }

    [Theory]
    [InlineData("")]                                           // empty
    [InlineData("380102030405060708")]                         // no ack count
    [InlineData("38010203040506070800000000")]                 // msg-id truncated (3 bytes)
    [InlineData("3801020304050607080900000000")]              // 9 acks
    [InlineData("380102030405060708010000000100000000000000")]  // ack without full peer sid + msg-id
    [InlineData("28010203040506070801000000010000000000000002ff")] // AckV1 with trailing byte
    [InlineData("48010203040506070800000000")]                 // data opcode
    [InlineData("00010203040506070800000000")]                 // opcode 0
    [InlineData("f8010203040506070800000000")]                 // opcode 31
    public void RejectsMalformed(string hex)
    {
        Assert.False(ControlPacketCodec.TryDecode(Convert.FromHexString(hex), out var p));
        Assert.Null(p);
    }

    [Fact]
    public void TryDecodeNeverThrowsOnGarbage()
    {
        var rng = new Random(99);
        for (int i = 0; i < 20000; i++)
        {
            var b = new byte[rng.Next(0, 64)];
            rng.NextBytes(b);
            if (b.Length > 0 && rng.Next(2) == 0)
            {
                b[0] = OpcodeByte.Compose((Opcode)rng.Next(3, 12), rng.Next(8));
            }

            if (b.Length > 9 && rng.Next(2) == 0)
            {
                b[9] = (byte)rng.Next(0, 10);
            }

            _ = ControlPacketCodec.TryDecode(b, out _);
        }
    }

    [Fact]
    public void EncodeRejectsInvalidPackets()
    {
        var buf = new byte[100];
        Assert.Throws<ArgumentException>(() => ControlPacketCodec.Encode(new ControlPacket { Opcode = Opcode.ControlV1 }, buf));
        Assert.Throws<ArgumentException>(() => ControlPacketCodec.Encode(new ControlPacket { Opcode = Opcode.AckV1, MessageId = 1, Acks = [1] }, buf));
        Assert.Throws<ArgumentException>(() => ControlPacketCodec.Encode(new ControlPacket { Opcode = Opcode.ControlV1, MessageId = 1, Acks = new uint[9] }, buf));
        Assert.Throws<ArgumentException>(() => ControlPacketCodec.Encode(new ControlPacket { Opcode = Opcode.ControlV1, MessageId = 1 }, new byte[13]));
    }
}
