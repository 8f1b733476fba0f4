// SPDX-License-Identifier: MIT
using System.Net;
using System.Net.Sockets;
using Ovpn.DataPlane.Offload;
using Ovpn.Platform.Net;

namespace Ovpn.DataPlane.Tests.Offload;

/// <summary>recvmmsg/sendmmsg over loopback only.</summary>
public sealed class UdpBatchSocketTests
{
    [Fact]
    public void Sends_and_receives_batches_with_addresses_over_loopback()
    {
        using var a = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        using var b = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        a.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        b.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        using var ba = new UdpBatchSocket(a, 32);
        using var bb = new UdpBatchSocket(b, 32);
        var pool = new PacketBufferPool(64, 2048);
        var tx = new PacketBuffer[20];
        var to = ((IPEndPoint)b.LocalEndPoint!).Serialize();
        for (int i = 0; i < tx.Length; i++)
        {
            tx[i] = pool.Rent()!;
            tx[i].Offset = 5; // a non-zero offset must be honoured
            tx[i].Length = 100 + i;
            tx[i].Array.AsSpan(5, 100 + i).Fill((byte)i);
            tx[i].SetAddress(to);
        }

        Assert.Equal(20, ba.SendBatch(tx, tx.Length));

        var rx = new PacketBuffer[32];
        for (int i = 0; i < rx.Length; i++)
        {
            rx[i] = pool.Rent()!;
        }

        int got = 0;
        var deadline = Environment.TickCount64 + 5000;
        var seen = new List<(int Len, byte First)>();
        while (got < 20 && Environment.TickCount64 < deadline)
        {
            int n = bb.ReceiveBatch(rx, rx.Length, 200);
            for (int i = 0; i < n; i++)
            {
                seen.Add((rx[i].Length, rx[i].Data[0]));
                Assert.Equal(((IPEndPoint)a.LocalEndPoint!).Serialize(), rx[i].Address);
            }

            got += n;
        }

        Assert.Equal(Enumerable.Range(0, 20).Select(i => (100 + i, (byte)i)), seen);
        Assert.Equal(0, bb.ReceiveBatch(rx, rx.Length, 50)); // timeout, nothing more
    }
}
