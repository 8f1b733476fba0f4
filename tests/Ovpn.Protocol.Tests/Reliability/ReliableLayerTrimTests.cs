// SPDX-License-Identifier: MIT
using Ovpn.Protocol.Reliability;
using Ovpn.Protocol.Wire;

namespace Ovpn.Protocol.Tests.Reliability;

/// <summary>
/// Trimming an idle key state's windows: refused while anything is pending, and after it the layer
/// keeps its msg-id counters (the next message continues the sequence) and still works both ways.
/// </summary>
public class ReliableLayerTrimTests
{
    private static void Exchange(ReliableLayer from, ReliableLayer to, long now)
    {
        for (int guard = 0; guard < 32 && from.TryGetPacketToSend(now, out var p) && p is not null; guard++)
        {
            Assert.True(to.OnReceived(p, now));
        }
    }

    [Fact]
    public void TrimIsRefusedWhilePendingAndKeepsTheSequenceAfterwards()
    {
        var a = new ReliableLayer(1, 0) { PeerSessionId = 2 };
        var b = new ReliableLayer(2, 0) { PeerSessionId = 1 };
        a.Queue(Opcode.ControlV1, new byte[] { 1, 2, 3 });
        Assert.False(a.IsIdle);
        Assert.Equal(3, a.BufferedBytes);
        Assert.False(a.TrimIdle()); // unacked payload

        Exchange(a, b, 0);
        Assert.False(b.IsIdle); // received, not read, ACK owed
        Assert.False(b.TrimIdle());
        Assert.True(b.TryRead(out _, out var got));
        Assert.Equal(new byte[] { 1, 2, 3 }, got.ToArray());
        Exchange(b, a, 0); // the ACK
        Assert.True(a.IsIdle);
        Assert.True(b.IsIdle);
        Assert.True(a.TrimIdle());
        Assert.True(b.TrimIdle());
        Assert.Equal(0, a.BufferedBytes);

        // After the trim: the next message gets msg-id 1 and arrives.
        a.Queue(Opcode.ControlV1, new byte[] { 4 });
        Assert.True(a.TryGetPacketToSend(0, out var p2));
        Assert.Equal(1u, p2!.MessageId);
        Assert.True(b.OnReceived(p2, 0));
        Assert.True(b.TryRead(out _, out var got2));
        Assert.Equal(new byte[] { 4 }, got2.ToArray());
    }
}
