// SPDX-License-Identifier: MIT
using System.Net;
using System.Net.Sockets;
using Ovpn.DataPlane.Offload;
using Ovpn.Platform.Net;

namespace Ovpn.Platform.Tests;

/// <summary>
/// Receive moderation in <see cref="UdpBatchSocket"/> (<see cref="UdpBatchSocket.RxModerationMicros"/>),
/// over real sockets on 127.0.0.1: an idle socket is never moderated, a streaming one sleeps the
/// interval instead of polling, and a moderated wait that finds nothing still falls back to
/// waiting for the caller's full timeout (nothing is missed), with and without UDP GRO.
/// </summary>
public sealed class UdpRxModerationTests : IDisposable
{
    private readonly List<IDisposable> _owned = [];
    private readonly PacketBufferPool _pool = new(64, 2048);

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
        s.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return s;
    }

    private (UdpBatchSocket Rx, Socket RxSocket, Socket Tx) Pair(bool gro, int moderationUs)
    {
        var rxs = Bound();
        var rx = new UdpBatchSocket(rxs, 64, gso: false, gro: gro) { RxModerationMicros = moderationUs };
        _owned.Add(rx);
        return (rx, rxs, Bound());
    }

    private PacketBuffer[] Rent(int n)
    {
        var a = new PacketBuffer[n];
        for (int i = 0; i < n; i++)
        {
            a[i] = _pool.Rent()!;
        }

        return a;
    }

    private static byte[] Payload(int seq) => [.. Enumerable.Range(0, 300).Select(i => (byte)(seq * 13 + i))];

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void An_idle_socket_is_not_moderated_and_times_out_empty(bool gro)
    {
        var (rx, _, _) = Pair(gro, 500);
        var bufs = Rent(8);
        Assert.Equal(0, rx.ReceiveBatch(bufs, bufs.Length, 20));
        Assert.Equal(0, rx.ModeratedWaits);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_streaming_socket_sleeps_the_interval_then_still_waits_for_a_late_datagram(bool gro)
    {
        var (rx, rxs, tx) = Pair(gro, 200);
        rx.ModerationStreamWindowMicros = 60_000_000; // "streaming" for the whole test
        var bufs = Rent(8);
        tx.SendTo(Payload(1), rxs.LocalEndPoint!);
        int n = 0;
        for (int i = 0; i < 100 && n == 0; i++)
        {
            n = rx.ReceiveBatch(bufs, bufs.Length, 100);
        }

        Assert.Equal(1, n);
        Assert.True(bufs[0].Data.SequenceEqual(Payload(1)));
        long before = rx.ModeratedWaits;

        // Empty socket while streaming: a moderated wait, then the ordinary poll up to the timeout.
        Assert.Equal(0, rx.ReceiveBatch(bufs, bufs.Length, 10));
        Assert.Equal(before + 1, rx.ModeratedWaits);

        // A datagram sent well after the moderation interval must still be picked up by the poll
        // that follows the moderated wait.
        var sender = new Thread(() =>
        {
            Thread.Sleep(50);
            tx.SendTo(Payload(2), rxs.LocalEndPoint!);
        });
        sender.Start();
        n = rx.ReceiveBatch(bufs, bufs.Length, 5000);
        Assert.True(sender.Join(TimeSpan.FromSeconds(5)));
        Assert.Equal(1, n);
        Assert.True(bufs[0].Data.SequenceEqual(Payload(2)));
        Assert.Equal(before + 2, rx.ModeratedWaits);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Datagrams_queued_during_a_moderated_wait_all_arrive_intact_and_in_order(bool gro)
    {
        var (rx, rxs, tx) = Pair(gro, 1000);
        rx.ModerationStreamWindowMicros = 60_000_000;
        var bufs = Rent(16);
        tx.SendTo(Payload(0), rxs.LocalEndPoint!);
        int first = 0;
        for (int i = 0; i < 100 && first == 0; i++)
        {
            first = rx.ReceiveBatch(bufs, bufs.Length, 100);
        }

        Assert.Equal(1, first);
        var sender = new Thread(() =>
        {
            for (int s = 1; s <= 10; s++)
            {
                tx.SendTo(Payload(s), rxs.LocalEndPoint!);
            }
        });
        sender.Start();
        var got = new List<byte[]>();
        for (int i = 0; i < 200 && got.Count < 10; i++)
        {
            int n = rx.ReceiveBatch(bufs, bufs.Length, 100);
            for (int k = 0; k < n; k++)
            {
                got.Add(bufs[k].Data.ToArray());
            }
        }

        Assert.True(sender.Join(TimeSpan.FromSeconds(5)));
        Assert.Equal(10, got.Count);
        for (int s = 1; s <= 10; s++)
        {
            Assert.True(got[s - 1].AsSpan().SequenceEqual(Payload(s)), $"datagram {s}");
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void After_an_empty_non_blocking_receive_a_waiting_one_polls_before_recvmmsg(bool gro)
    {
        var (rx, rxs, tx) = Pair(gro, 0);
        var bufs = Rent(8);
        Assert.Equal(0, rx.ReceiveBatch(bufs, bufs.Length, 0)); // finds the socket empty: one recvmmsg
        long s0 = rx.Counters.ReceiveSyscalls;
        Assert.Equal(1, s0);

        // Nothing arrives: the waiting call must not repeat the failed recvmmsg, only poll.
        Assert.Equal(0, rx.ReceiveBatch(bufs, bufs.Length, 20));
        Assert.Equal(s0, rx.Counters.ReceiveSyscalls);

        // Still empty after that timeout: the next waiting call polls first as well, and a datagram
        // that arrives is read by exactly one recvmmsg.
        tx.SendTo(Payload(5), rxs.LocalEndPoint!);
        int n = 0;
        for (int i = 0; i < 50 && n == 0; i++)
        {
            n = rx.ReceiveBatch(bufs, bufs.Length, 100);
        }

        Assert.Equal(1, n);
        Assert.True(bufs[0].Data.SequenceEqual(Payload(5)));
        Assert.Equal(s0 + 1, rx.Counters.ReceiveSyscalls);

        // After a successful receive the next call tries recvmmsg first again (the busy case).
        Assert.Equal(0, rx.ReceiveBatch(bufs, bufs.Length, 0));
        Assert.Equal(s0 + 2, rx.Counters.ReceiveSyscalls);
    }

    [Fact]
    public void Moderation_interval_and_window_are_validated()
    {
        var (rx, _, _) = Pair(false, 0);
        Assert.Throws<ArgumentOutOfRangeException>(() => rx.RxModerationMicros = -1);
        Assert.Throws<ArgumentOutOfRangeException>(() => rx.RxModerationMicros = 1001);
        Assert.Throws<ArgumentOutOfRangeException>(() => rx.ModerationStreamWindowMicros = 0);
        rx.RxModerationMicros = 250;
        Assert.Equal(250, rx.RxModerationMicros);
        Assert.InRange(rx.ModerationStreamWindowMicros, 499, 500); // two intervals unless set
        rx.ModerationStreamWindowMicros = 7000;
        rx.RxModerationMicros = 100;
        Assert.InRange(rx.ModerationStreamWindowMicros, 6999, 7000); // an explicit window stays
    }
}
