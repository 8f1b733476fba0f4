// SPDX-License-Identifier: MIT
using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using Ovpn.DataPlane.Transport;

namespace Ovpn.DataPlane.Tests.Links;

/// <summary>
/// The TCP link over a real loopback socket pair: Send never blocks on a peer that does not read
/// (the bounded queue drops and counts instead), and a reading peer receives every frame whole
/// and in order even with several threads sending at once.
/// </summary>
public sealed class TcpLinkTransportTests
{
    private const byte DataV2 = 9 << 3;
    private const byte ControlV1 = 4 << 3;

    private static (Socket ServerSide, Socket ClientSide) Pair(int bufferBytes)
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        if (bufferBytes > 0)
        {
            client.ReceiveBufferSize = bufferBytes;
            client.SendBufferSize = bufferBytes;
        }

        client.Connect(listener.LocalEndPoint!);
        var server = listener.Accept();
        if (bufferBytes > 0)
        {
            server.SendBufferSize = bufferBytes;
            server.ReceiveBufferSize = bufferBytes;
        }

        return (server, client);
    }

    private static byte[] Packet(byte opcode, int size, int stream, int seq)
    {
        var p = new byte[size];
        p[0] = opcode;
        BinaryPrimitives.WriteInt32BigEndian(p.AsSpan(1), stream);
        BinaryPrimitives.WriteInt32BigEndian(p.AsSpan(5), seq);
        for (int i = 9; i < size; i++)
        {
            p[i] = (byte)(stream * 31 + seq * 7 + i);
        }

        return p;
    }

    [Fact]
    public async Task SendDoesNotBlockOnAPeerThatNeverReadsAndCountsDrops()
    {
        var (serverSide, clientSide) = Pair(4096);
        using var peer = clientSide; // never reads
        const int bound = 256 << 10;
        var link = new TcpLinkTransport(serverSide, bound);
        try
        {
            const int count = 5000;
            var packet = Packet(DataV2, 1200, 0, 0);
            // 6 MB offered against a 256 KiB queue and a few KiB of socket buffers: a blocking
            // send would hang here. The wall limit is a hang guard only.
            var sender = Task.Run(() =>
            {
                for (int i = 0; i < count; i++)
                {
                    link.Send(packet);
                }
            });
            Assert.True(await Task.WhenAny(sender, Task.Delay(TimeSpan.FromSeconds(60))) == sender, "Send blocked on a peer that does not read");
            await sender;

            Assert.True(link.DroppedDataPackets > 0, "nothing was dropped although the peer never reads");
            Assert.True(link.DroppedDataPackets < count, "everything was dropped");
            Assert.True(link.QueuedBytes <= bound, $"queue {link.QueuedBytes} exceeds its bound {bound}");
            Assert.Equal(0, link.DroppedControlPackets);

            // Control packets still fit in the reserve above the bound, then are dropped and counted.
            var control = Packet(ControlV1, 1000, 1, 0);
            int controlSent = 0;
            while (link.DroppedControlPackets == 0 && controlSent < 1000)
            {
                link.Send(control);
                controlSent++;
            }

            Assert.True(controlSent > 1, "no control packet fitted into the reserve");
            Assert.Equal(1, link.DroppedControlPackets);
            Assert.True(link.QueuedBytes <= bound + TcpLinkTransport.ControlReserveBytes);
        }
        finally
        {
            link.Close();
        }
    }

    [Fact]
    public async Task ReadingPeerReceivesEveryFrameWholeAndInOrder()
    {
        var (serverSide, clientSide) = Pair(0);
        using var peer = clientSide;
        const int threads = 4, perThread = 3000;
        // Bound above everything sent: nothing may be dropped, so every frame must arrive.
        var link = new TcpLinkTransport(serverSide, 64 << 20);
        var rng = new Random(7);
        var sizes = Enumerable.Range(0, threads * perThread).Select(_ => rng.Next(16, 1500)).ToArray();
        long expectedFrames = threads * perThread;

        var reader = Task.Run(async () =>
        {
            var next = new int[threads];
            var buf = new byte[256 << 10];
            int have = 0;
            long frames = 0;
            while (frames < expectedFrames)
            {
                int n = await peer.ReceiveAsync(buf.AsMemory(have), SocketFlags.None);
                if (n == 0)
                {
                    throw new InvalidOperationException($"connection closed after {frames} frames");
                }

                have += n;
                int pos = 0;
                while (have - pos >= 2)
                {
                    int len = BinaryPrimitives.ReadUInt16BigEndian(buf.AsSpan(pos));
                    if (have - pos - 2 < len)
                    {
                        break;
                    }

                    var p = buf.AsSpan(pos + 2, len);
                    int stream = BinaryPrimitives.ReadInt32BigEndian(p[1..]);
                    int seq = BinaryPrimitives.ReadInt32BigEndian(p[5..]);
                    Assert.Equal(DataV2, p[0]);
                    Assert.InRange(stream, 0, threads - 1);
                    Assert.Equal(next[stream], seq); // in order per sender
                    Assert.Equal(sizes[stream * perThread + seq], len);
                    Assert.True(p.SequenceEqual(Packet(DataV2, len, stream, seq)), $"frame {stream}/{seq} torn or corrupted");
                    next[stream]++;
                    frames++;
                    pos += 2 + len;
                }

                Buffer.BlockCopy(buf, pos, buf, 0, have - pos);
                have -= pos;
            }

            return next;
        });

        var senders = Enumerable.Range(0, threads).Select(t => Task.Run(() =>
        {
            for (int i = 0; i < perThread; i++)
            {
                link.Send(Packet(DataV2, sizes[t * perThread + i], t, i));
            }
        })).ToArray();

        var all = Task.WhenAll(senders);
        Assert.True(await Task.WhenAny(all, Task.Delay(TimeSpan.FromSeconds(120))) == all, "senders hung");
        Assert.True(await Task.WhenAny(reader, Task.Delay(TimeSpan.FromSeconds(120))) == reader, "reader did not get every frame");
        var got = await reader;
        Assert.All(got, n => Assert.Equal(perThread, n));
        Assert.Equal(0, link.DroppedDataPackets);
        link.Close();
    }

    [Fact]
    public async Task CloseLetsQueuedFramesLeaveFirst()
    {
        var (serverSide, clientSide) = Pair(0);
        using var peer = clientSide;
        var link = new TcpLinkTransport(serverSide);
        for (int i = 0; i < 200; i++)
        {
            link.Send(Packet(ControlV1, 1000, 0, i));
        }

        link.Close();
        var received = new MemoryStream();
        var buf = new byte[65536];
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        while (true)
        {
            int n = await peer.ReceiveAsync(buf, SocketFlags.None, cts.Token);
            if (n == 0)
            {
                break; // the link closed after its queue drained
            }

            received.Write(buf, 0, n);
        }

        Assert.Equal(200 * (2 + 1000), received.Length);
        Assert.True(link.IsClosed);
    }
}
