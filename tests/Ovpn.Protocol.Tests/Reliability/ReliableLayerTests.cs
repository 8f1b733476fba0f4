// SPDX-License-Identifier: MIT
using Ovpn.Protocol.Reliability;
using Ovpn.Protocol.Wire;

namespace Ovpn.Protocol.Tests.Reliability;

public class ReliableLayerTests
{
    private const ulong SidA = 0x1111_2222_3333_4444;
    private const ulong SidB = 0xAAAA_BBBB_CCCC_DDDD;

    private static ControlPacket FromPeer(uint? msgId, byte[]? payload = null, uint[]? acks = null, ulong ackSid = SidA) => new()
    {
        Opcode = msgId is null ? Opcode.AckV1 : Opcode.ControlV1,
        KeyId = 0,
        SessionId = SidB,
        MessageId = msgId,
        Acks = acks ?? [],
        PeerSessionId = acks is null ? 0 : ackSid,
        Payload = payload ?? (msgId is null ? Array.Empty<byte>() : new byte[] { (byte)msgId }),
    };

    private static List<ControlPacket> Drain(ReliableLayer r, long now)
    {
        var list = new List<ControlPacket>();
        for (int i = 0; i < 100 && r.TryGetPacketToSend(now, out var p); i++)
        {
            list.Add(p!);
        }

        return list;
    }

    [Fact]
    public void RetransmitTimerStartsAtInitialTimeoutAndDoubles()
    {
        var r = new ReliableLayer(SidA, 0);
        r.Queue(Opcode.ControlHardResetClientV2, ReadOnlyMemory<byte>.Empty);
        Assert.Equal(long.MinValue, r.NextDeadlineMs);

        long[] expectedSends = [0, 2000, 6000, 14000, 30000];
        long t = 0;
        var sendTimes = new List<long>();
        for (; t <= 30000; t += 1)
        {
            foreach (var p in Drain(r, t))
            {
                Assert.Equal(0u, p.MessageId);
                Assert.Equal(Opcode.ControlHardResetClientV2, p.Opcode);
                sendTimes.Add(t);
            }
        }

        Assert.Equal(expectedSends, sendTimes);
        Assert.Equal(30000 + 32000, r.NextDeadlineMs);
        Assert.Equal(5, r.GetTransmissionCount(0));
    }

    [Fact]
    public void SendWindowIsSixAndOpensOnlyWhenLowestIsAcked()
    {
        var r = new ReliableLayer(SidA, 0);
        for (int i = 0; i < 6; i++)
        {
            Assert.True(r.CanQueue);
            r.Queue(Opcode.ControlV1, new byte[] { (byte)i });
        }

        Assert.False(r.CanQueue);
        Assert.Throws<InvalidOperationException>(() => r.Queue(Opcode.ControlV1, new byte[1]));
        Assert.Equal(6, Drain(r, 0).Count);

        // ACK for a higher id frees no window room while id 0 is outstanding.
        Assert.True(r.OnReceived(FromPeer(null, acks: [3]), 10));
        Assert.False(r.CanQueue);
        Assert.True(r.OnReceived(FromPeer(null, acks: [0]), 10));
        Assert.True(r.CanQueue);
        r.Queue(Opcode.ControlV1, new byte[] { 6 });
        Assert.False(r.CanQueue); // ids 1..6 in flight (3 acked): 7 - 1 = 6
    }

    [Fact]
    public void QueueSplitUsesBacklogAndRespectsWindow()
    {
        var r = new ReliableLayer(SidA, 0, maxPayload: 100);
        var data = new byte[1050];
        new Random(1).NextBytes(data);
        Assert.Equal(11, r.QueueSplit(Opcode.ControlV1, data));
        Assert.Equal(6, r.InFlightCount);
        Assert.Equal(5, r.BacklogCount);
        Assert.False(r.CanQueue);

        var sent = Drain(r, 0);
        Assert.Equal(6, sent.Count);
        Assert.All(sent, p => Assert.Equal(100, p.Payload.Length));

        Assert.True(r.OnReceived(FromPeer(null, acks: [0, 1]), 5));
        sent = Drain(r, 5);
        Assert.Equal([6u, 7u], sent.Select(p => p.MessageId!.Value));

        // Acknowledge everything in order; the tail chunk is 50 bytes.
        var all = new List<ControlPacket>();
        for (uint id = 2; id < 11; id++)
        {
            Assert.True(r.OnReceived(FromPeer(null, acks: [id]), 10));
            all.AddRange(Drain(r, 10));
        }

        Assert.Equal(50, all[^1].Payload.Length);
        Assert.Equal(10u, all[^1].MessageId);
        Assert.True(r.AllAcked);
        Assert.Null(r.NextDeadlineMs);
    }

    [Fact]
    public void FastRetransmitAfterThreeAcksForHigherIds()
    {
        var r = new ReliableLayer(SidA, 0);
        for (int i = 0; i < 5; i++)
        {
            r.Queue(Opcode.ControlV1, new byte[] { (byte)i });
        }

        Assert.Equal(5, Drain(r, 0).Count);
        r.OnReceived(FromPeer(null, acks: [1, 2]), 100);
        Assert.Empty(Drain(r, 100));
        r.OnReceived(FromPeer(null, acks: [3]), 100);
        var resent = Drain(r, 100);
        Assert.Single(resent);
        Assert.Equal(0u, resent[0].MessageId);
        Assert.Empty(Drain(r, 101));
    }

    [Fact]
    public void AcksArePiggyBackedUpToFourAndStandaloneUpToEight()
    {
        var r = new ReliableLayer(SidA, 0);
        for (uint id = 0; id < 10; id++)
        {
            Assert.True(r.OnReceived(FromPeer(id), 0));
        }

        r.Queue(Opcode.ControlV1, new byte[] { 42 });
        var pkts = Drain(r, 0);
        Assert.Equal(2, pkts.Count);
        Assert.Equal(Opcode.ControlV1, pkts[0].Opcode);
        Assert.Equal(4, pkts[0].Acks.Length);
        Assert.Equal(SidB, pkts[0].PeerSessionId);
        Assert.Equal(Opcode.AckV1, pkts[1].Opcode);
        Assert.Null(pkts[1].MessageId);
        // 6 still pending + 2 recently ACKed ids re-sent in the spare slots.
        Assert.Equal(8, pkts[1].Acks.Length);
        Assert.All(pkts, p => Assert.Equal(p.Acks.Length, p.Acks.Distinct().Count()));
        Assert.Equal(Enumerable.Range(0, 10).Select(i => (uint)i), pkts.SelectMany(p => p.Acks).Distinct().Order());
        Assert.All(pkts, p => Assert.True(ControlPacketCodec.GetEncodedLength(p) > 0));
    }

    [Fact]
    public void DuplicatesAreReAckedButDeliveredOnce()
    {
        var r = new ReliableLayer(SidA, 0);
        Assert.True(r.OnReceived(FromPeer(0, [7]), 0));
        Assert.Single(Drain(r, 0));
        Assert.True(r.TryRead(out _, out var pl));
        Assert.Equal([7], pl.ToArray());

        Assert.True(r.OnReceived(FromPeer(0, [7]), 1));
        var acks = Drain(r, 1);
        Assert.Single(acks);
        Assert.Equal(Opcode.AckV1, acks[0].Opcode);
        Assert.Contains(0u, acks[0].Acks);
        Assert.False(r.TryRead(out _, out _));
    }

    [Fact]
    public void IdsBeyondReceiveWindowAreDroppedWithoutAck()
    {
        var r = new ReliableLayer(SidA, 0);
        Assert.True(r.OnReceived(FromPeer(12), 0));
        Assert.Empty(Drain(r, 0));
        Assert.True(r.OnReceived(FromPeer(11), 0));
        var acks = Drain(r, 0);
        Assert.Equal([11u], acks.Single().Acks);
        Assert.False(r.TryRead(out _, out _)); // 0..10 still missing
    }

    [Fact]
    public void ReordersIntoMsgIdOrder()
    {
        var r = new ReliableLayer(SidA, 0);
        foreach (uint id in new uint[] { 2, 1, 3, 0 })
        {
            Assert.True(r.OnReceived(FromPeer(id), 0));
        }

        for (int i = 0; i < 4; i++)
        {
            Assert.True(r.TryRead(out var op, out var pl));
            Assert.Equal(Opcode.ControlV1, op);
            Assert.Equal(i, pl.Span[0]);
        }

        Assert.False(r.TryRead(out _, out _));
    }

    [Fact]
    public void AcksForWrongSessionRejectWholePacket()
    {
        var r = new ReliableLayer(SidA, 0);
        r.Queue(Opcode.ControlV1, new byte[] { 1 });
        Drain(r, 0);
        Assert.False(r.OnReceived(FromPeer(0, [9], acks: [0], ackSid: 0xDEAD), 0));
        Assert.False(r.AllAcked);        // ack not processed
        Assert.False(r.TryRead(out _, out _)); // payload not stored
        Assert.Empty(Drain(r, 1));       // nothing to ack

        Assert.True(r.OnReceived(FromPeer(0, [9], acks: [0]), 2));
        Assert.True(r.AllAcked);
        Assert.True(r.TryRead(out _, out _));
    }

    [Fact]
    public void PacketsFromOtherSessionOrKeyIdAreRejected()
    {
        var r = new ReliableLayer(SidA, 1);
        var p = FromPeer(0);
        Assert.False(r.OnReceived(p, 0)); // key id 0 != 1
        p.KeyId = 1;
        Assert.True(r.OnReceived(p, 0));
        Assert.Equal(SidB, r.PeerSessionId);
        var other = FromPeer(1);
        other.KeyId = 1;
        other.SessionId = 0x5555;
        Assert.False(r.OnReceived(other, 0));
    }

    [Fact]
    public void MaxPayloadForKeepsWrappedPacketsWithinLimit()
    {
        var key = Ovpn.Protocol.Control.StaticKey.Generate();
        var wrap = Ovpn.Protocol.Control.ControlWrapper.CreateTlsAuth(key, 0, System.Security.Cryptography.HashAlgorithmName.SHA512);
        int max = ReliableLayer.MaxPayloadFor(wrap.Overhead);
        var r = new ReliableLayer(SidA, 0, maxPayload: max);
        for (uint id = 0; id < 6; id++)
        {
            r.OnReceived(FromPeer(id), 0); // so outgoing packets carry 4 acks
        }

        r.QueueSplit(Opcode.ControlV1, new byte[max * 2 + 1]);
        var pkts = Drain(r, 0);
        Assert.Equal(1250, wrap.Wrap(pkts[0], 1).Length);
        Assert.Equal(4, pkts[0].Acks.Length);
        Assert.All(pkts, p => Assert.True(wrap.Wrap(p, 1).Length <= 1250));
        Assert.True(new ReliableLayer(SidA, 0).MaxPayload <= max); // the default 1100 fits every wrap mode
    }
}
