// SPDX-License-Identifier: MIT
using System.Net;
using System.Net.Sockets;
using Ovpn.DataPlane.Offload;
using Ovpn.Platform.Net;
using Xunit.Abstractions;

namespace Ovpn.Platform.Tests;

/// <summary>
/// UDP GSO (UDP_SEGMENT) on send and GRO (UDP_GRO) on receive in <see cref="UdpBatchSocket"/>,
/// over real sockets on 127.0.0.1 only. Whatever the kernel does with segmentation, the caller must
/// see exactly the datagrams that were sent, in order, one per buffer.
/// </summary>
public sealed class UdpGsoGroTests(ITestOutputHelper output) : IDisposable
{
    private readonly List<IDisposable> _owned = [];
    private readonly PacketBufferPool _pool = new(1024, 2048);

    public void Dispose()
    {
        for (int i = _owned.Count - 1; i >= 0; i--)
        {
            _owned[i].Dispose();
        }
    }

    private Socket Bound()
    {
        var s = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        _owned.Add(s);
        s.ReceiveBufferSize = 4 << 20;
        s.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        s.ReceiveTimeout = 3000;
        return s;
    }

    private UdpBatchSocket Batch(Socket s, bool gso, bool gro, int groBuffers = UdpBatchSocket.DefaultGroBuffers)
    {
        var b = new UdpBatchSocket(s, 64, gso, gro, groBuffers);
        _owned.Add(b);
        return b;
    }

    /// <summary>A datagram whose bytes encode its sequence number and position, so a mix-up, a
    /// split at the wrong place or a truncation shows.</summary>
    private static byte[] Payload(int seq, int len)
    {
        var p = new byte[len];
        for (int i = 0; i < len; i++)
        {
            p[i] = (byte)((seq * 31) + (i * 7) + (i >> 8));
        }

        return p;
    }

    private PacketBuffer[] Buffers(IEnumerable<(byte[] Data, Socket To)> items)
    {
        var list = new List<PacketBuffer>();
        foreach (var (data, to) in items)
        {
            var b = _pool.Rent()!;
            b.Offset = 3; // a non-zero offset must be honoured in the gather
            b.Length = data.Length;
            data.CopyTo(b.Array.AsSpan(3));
            b.SetAddress(((IPEndPoint)to.LocalEndPoint!).Serialize());
            list.Add(b);
        }

        return [.. list];
    }

    private static List<byte[]> ReceivePlain(Socket s, int expected)
    {
        var got = new List<byte[]>();
        var buf = new byte[70000];
        EndPoint from = new IPEndPoint(IPAddress.Any, 0);
        while (got.Count < expected)
        {
            int n;
            try
            {
                n = s.ReceiveFrom(buf, ref from);
            }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.TimedOut)
            {
                break;
            }

            got.Add(buf.AsSpan(0, n).ToArray());
        }

        return got;
    }

    /// <summary>Receives through the batch socket until <paramref name="expected"/> datagrams or
    /// a quiet 2 s, asking for at most <paramref name="perCall"/> per call.</summary>
    private List<(byte[] Data, SocketAddress From)> ReceiveBatch(UdpBatchSocket s, int expected, int perCall)
    {
        var got = new List<(byte[], SocketAddress)>();
        var rx = new PacketBuffer[perCall];
        for (int i = 0; i < rx.Length; i++)
        {
            rx[i] = _pool.Rent()!;
        }

        int idle = 0;
        while (got.Count < expected && idle < 10)
        {
            int n = s.ReceiveBatch(rx, perCall, 200);
            idle = n == 0 ? idle + 1 : 0;
            Assert.InRange(n, 0, perCall);
            for (int i = 0; i < n; i++)
            {
                Assert.Equal(0, rx[i].Offset);
                var a = new SocketAddress(rx[i].Address.Family, rx[i].Address.Size);
                rx[i].Address.Buffer.CopyTo(a.Buffer);
                got.Add((rx[i].Data.ToArray(), a));
            }
        }

        foreach (var b in rx)
        {
            _pool.Return(b);
        }

        return got;
    }

    [Fact]
    public void Gso_send_of_equal_datagrams_and_shorter_tail_arrives_as_separate_datagrams()
    {
        var rx = Bound();
        var tx = Batch(Bound(), gso: true, gro: false);
        Assert.True(tx.GsoEnabled, tx.GsoFallbackReason); // kernel >= 4.18 here
        const int N = 20;
        var sent = Enumerable.Range(0, N).Select(i => Payload(i, 1200)).Append(Payload(N, 333)).ToList();
        var bufs = Buffers(sent.Select(p => (p, rx)));

        Assert.Equal(N + 1, tx.SendBatch(bufs, bufs.Length));

        var got = ReceivePlain(rx, N + 1);
        Assert.Equal(N + 1, got.Count);
        for (int i = 0; i < got.Count; i++)
        {
            Assert.Equal(sent[i], got[i]);
        }

        var c = tx.Counters;
        Assert.Equal(N + 1, c.DatagramsSent);
        Assert.Equal(1, c.GsoMessages); // one run: same address, equal sizes, shorter tail
        Assert.Equal(N + 1, c.GsoDatagrams);
        Assert.Equal(1, c.SendSyscalls);
        Assert.True(tx.GsoEnabled);
    }

    [Fact]
    public void Gso_runs_respect_the_segment_limit()
    {
        var rx = Bound();
        var tx = Batch(Bound(), gso: true, gro: false);
        // 100 datagrams of 100 B: within 65507 bytes, but above 64 segments -> two GSO messages.
        var sent = Enumerable.Range(0, 100).Select(i => Payload(i, 100)).ToList();
        // 3 datagrams of 30000 B: 65507 bytes allow only two per message.
        sent.AddRange(Enumerable.Range(100, 3).Select(i => Payload(i, 30000)));
        var bufs = sent.Select(p =>
        {
            var b = new PacketBuffer(32768);
            p.CopyTo(b.Array, 0);
            b.Length = p.Length;
            b.SetAddress(((IPEndPoint)rx.LocalEndPoint!).Serialize());
            return b;
        }).ToArray();

        Assert.Equal(sent.Count, tx.SendBatch(bufs, bufs.Length));

        var got = ReceivePlain(rx, sent.Count);
        Assert.Equal(sent, got);
        var c = tx.Counters;
        Assert.Equal(3, c.GsoMessages); // 64 + 36 small, 2 large; the third large goes alone
        Assert.Equal(102, c.GsoDatagrams);
    }

    public static TheoryData<bool> OnOff => new() { true, false };

    [Theory]
    [MemberData(nameof(OnOff))]
    public void Mixed_destinations_and_sizes_keep_order_with_and_without_gso(bool gso)
    {
        var r1 = Bound();
        var r2 = Bound();
        var tx = Batch(Bound(), gso, gro: false);
        Assert.Equal(gso, tx.GsoEnabled);
        var plan = new List<(int Len, Socket To)>();
        void Add(int n, int len, Socket to) => plan.AddRange(Enumerable.Repeat((len, to), n));
        Add(5, 500, r1);
        Add(3, 500, r2);
        Add(4, 700, r1);
        Add(1, 800, r1);   // larger than the run before: starts a new message
        Add(1, 0, r1);     // empty datagram: never part of a run
        Add(6, 1400, r2);
        Add(1, 90, r2);    // shorter tail
        Add(2, 1400, r2);  // after a tail: a new run
        Add(1, 1, r1);
        var items = plan.Select((p, i) => (Data: Payload(i, p.Len), p.To)).ToList();
        var bufs = Buffers(items);

        Assert.Equal(bufs.Length, tx.SendBatch(bufs, bufs.Length));

        var exp1 = items.Where(x => x.To == r1).Select(x => x.Data).ToList();
        var exp2 = items.Where(x => x.To == r2).Select(x => x.Data).ToList();
        Assert.Equal(exp1, ReceivePlain(r1, exp1.Count));
        Assert.Equal(exp2, ReceivePlain(r2, exp2.Count));
        var c = tx.Counters;
        Assert.Equal(bufs.Length, c.DatagramsSent);
        if (gso)
        {
            // Runs: 5@r1, 3@r2, 4@r1, 6+tail@r2, 2@r2 (singles: 800, 0, 1).
            Assert.Equal(5, c.GsoMessages);
            Assert.Equal(5 + 3 + 4 + 7 + 2, c.GsoDatagrams);
        }
        else
        {
            Assert.Equal(0, c.GsoMessages);
        }
    }

    [Theory]
    [InlineData(true, true)]
    [InlineData(true, false)]
    [InlineData(false, true)]
    [InlineData(false, false)]
    public void Batch_receiver_gets_every_datagram_intact_whether_or_not_coalesced(bool senderGso, bool receiverGro)
    {
        var rxSock = Bound();
        var rx = Batch(rxSock, gso: false, gro: receiverGro);
        Assert.Equal(receiverGro, rx.GroEnabled); // kernel >= 5.0 here
        var txSock = Bound();
        var tx = Batch(txSock, senderGso, gro: false);
        var sent = new List<byte[]>();
        int seq = 0;
        for (int round = 0; round < 4; round++)
        {
            var batch = Enumerable.Range(0, 40).Select(_ => Payload(seq++, 1000)).Append(Payload(seq++, 17 + round)).ToList();
            sent.AddRange(batch);
            var bufs = Buffers(batch.Select(p => (p, rxSock)));
            Assert.Equal(bufs.Length, tx.SendBatch(bufs, bufs.Length));
            foreach (var b in bufs)
            {
                _pool.Return(b);
            }
        }

        var got = ReceiveBatch(rx, sent.Count, 64);
        Assert.Equal(sent.Count, got.Count);
        var from = ((IPEndPoint)txSock.LocalEndPoint!).Serialize();
        for (int i = 0; i < sent.Count; i++)
        {
            Assert.Equal(sent[i], got[i].Data);
            Assert.Equal(from, got[i].From);
        }

        var c = rx.Counters;
        output.WriteLine($"sender {tx.Counters}");
        output.WriteLine($"receiver {c}");
        Assert.Equal(sent.Count, c.DatagramsReceived);
        if (!receiverGro)
        {
            Assert.Equal(0, c.GroMessages);
        }
        else if (c.GroMessages > 0)
        {
            // Coalescing happened (likely on loopback with a GSO sender, not required): every
            // coalesced message held at least two datagrams and fewer syscalls than datagrams ran.
            Assert.InRange(c.GroDatagrams, 2 * c.GroMessages, sent.Count);
            Assert.True(c.ReceiveSyscalls < c.DatagramsReceived, $"{c}");
        }
    }

    [Theory]
    [MemberData(nameof(OnOff))]
    public void Remainder_carries_over_when_the_caller_asks_for_few(bool gro)
    {
        var rxSock = Bound();
        var rx = Batch(rxSock, gso: false, gro: gro, groBuffers: 2);
        var tx = Batch(Bound(), gso: true, gro: false);
        var sent = Enumerable.Range(0, 45).Select(i => Payload(i, 600)).Append(Payload(45, 5)).ToList();
        sent.AddRange(Enumerable.Range(46, 30).Select(i => Payload(i, 1300)));
        var bufs = Buffers(sent.Select(p => (p, rxSock)));
        Assert.Equal(bufs.Length, tx.SendBatch(bufs, bufs.Length));

        var got = ReceiveBatch(rx, sent.Count, 4);

        Assert.Equal(sent, got.Select(g => g.Data).ToList());
        output.WriteLine($"receiver {rx.Counters}");
        Assert.Equal(0, rx.ReceiveBatch(new[] { _pool.Rent()! }, 1, 50)); // nothing left over
    }

    [Fact]
    public void Refused_gso_sends_fall_back_without_loss_and_switch_gso_off_after_repeated_refusals()
    {
        var rx = Bound();
        var txSock = Bound();
        // SO_NO_CHECK (SOL_SOCKET 11): the kernel refuses every UDP_SEGMENT send without checksums
        // (EINVAL, the same errno as a segment above the path MTU).
        txSock.SetRawSocketOption(1, 11, BitConverter.GetBytes(1));
        var tx = Batch(txSock, gso: true, gro: false);
        Assert.True(tx.GsoEnabled);
        var all = new List<byte[]>();
        int seq = 0;
        int SendRun(int n, int len, int tailLen = 0)
        {
            var run = Enumerable.Range(0, n).Select(_ => Payload(seq++, len)).ToList();
            if (tailLen > 0)
            {
                run.Add(Payload(seq++, tailLen));
            }

            all.AddRange(run);
            var bufs = Buffers(run.Select(p => (p, rx)));
            return tx.SendBatch(bufs, bufs.Length);
        }

        // First refusal at 50-byte segments: that run and the (larger) 400-byte run go plain.
        var first = Enumerable.Range(0, 3).Select(_ => Payload(seq++, 50)).Concat(Enumerable.Range(0, 10).Select(_ => Payload(seq++, 400))).ToList();
        all.AddRange(first);
        var b1 = Buffers(first.Select(p => (p, rx)));
        Assert.Equal(b1.Length, tx.SendBatch(b1, b1.Length));
        Assert.True(tx.GsoEnabled);
        Assert.Equal(49, tx.GsoMaxSegment);
        Assert.NotNull(tx.GsoFallbackReason);
        Assert.Equal(1, tx.Counters.GsoFallbacks);

        Assert.Equal(11, SendRun(10, 40, 7));  // refusal 2
        Assert.Equal(10, SendRun(10, 30));     // refusal 3
        Assert.Equal(10, SendRun(10, 20));     // refusal 4: GSO off
        Assert.False(tx.GsoEnabled);
        Assert.Equal(10, SendRun(10, 10));     // plain from the start, no further refusal

        Assert.Equal(all, ReceivePlain(rx, all.Count));
        var c = tx.Counters;
        Assert.Equal(UdpBatchSocket.MaxGsoRefusals, c.GsoFallbacks);
        Assert.Equal(0, c.GsoMessages);
        Assert.Equal(all.Count, c.DatagramsSent);
    }
}
