// SPDX-License-Identifier: MIT
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Ovpn.DataPlane.Offload;
using Ovpn.Platform.Net;

namespace Ovpn.Benchmarks;

/// <summary>
/// Loopback micro-benchmark of <see cref="UdpBatchSocket"/> with and without UDP GSO (send) and
/// UDP GRO (receive). One sender thread floods 127.0.0.1 with equal-size datagrams in batches of
/// the engine's size through SendBatch; one receiver thread drains them through ReceiveBatch. Each
/// thread's own CPU time (CLOCK_THREAD_CPUTIME_ID, user+system) is divided by the datagrams it
/// handled. On loopback the kernel's delivery into the receiving socket runs in the sender's
/// context, so the sender's figure includes that (and the segmentation a non-GRO receiver needs).
/// All four combinations run in the same process, interleaved, <c>--rounds</c> times.
/// Usage: dotnet Ovpn.Benchmarks.dll udpgso [--datagrams 300000] [--size 1400] [--batch 64]
///        [--rounds 3] [--gro-buffers 16]
/// </summary>
public static partial class UdpGsoBench
{
    private const int ClockThreadCpuTime = 3; // CLOCK_THREAD_CPUTIME_ID

    [StructLayout(LayoutKind.Sequential)]
    private struct Timespec
    {
        public long Sec;
        public long Nsec;
    }

    [LibraryImport("libc", EntryPoint = "clock_gettime")]
    private static partial int ClockGetTime(int clock, out Timespec ts);

    private static long ThreadCpuNs()
    {
        ClockGetTime(ClockThreadCpuTime, out var ts);
        return (ts.Sec * 1_000_000_000L) + ts.Nsec;
    }

    private sealed record Result(bool Gso, bool Gro, long Sent, double SendSeconds, long SendCpuNs, long Received, long RecvCpuNs, UdpBatchCounters Tx, UdpBatchCounters Rx)
    {
        public double SendPps => Sent / SendSeconds;

        public double SendNsPerDgram => (double)SendCpuNs / Math.Max(1, Sent);

        public double RecvNsPerDgram => (double)RecvCpuNs / Math.Max(1, Received);
    }

    public static int Run(string[] args)
    {
        int datagrams = int.Parse(Arg(args, "--datagrams", "300000"));
        int size = int.Parse(Arg(args, "--size", "1400"));
        int batch = int.Parse(Arg(args, "--batch", "64"));
        int rounds = int.Parse(Arg(args, "--rounds", "3"));
        int groBuffers = int.Parse(Arg(args, "--gro-buffers", UdpBatchSocket.DefaultGroBuffers.ToString()));
        Console.WriteLine($"udpgso: {datagrams} datagrams of {size} B per run, batches of {batch}, {rounds} rounds, GRO areas {groBuffers} x 64 KiB, {Environment.ProcessorCount} cores, 127.0.0.1");
        Console.WriteLine($"{"send",-6} {"recv",-6} {"tx pps",10} {"tx ns/dg",9} {"tx dg/call",10} {"rx got",8} {"rx ns/dg",9} {"rx dg/call",10} {"gso msgs",9} {"gro msgs",9}");
        var all = new List<Result>();
        (bool, bool)[] combos = [(false, false), (true, false), (false, true), (true, true)];
        for (int r = 0; r < rounds; r++)
        {
            foreach (var (gso, gro) in combos)
            {
                var res = RunOne(gso, gro, datagrams, size, batch, groBuffers);
                all.Add(res);
                Console.WriteLine($"{(gso ? "gso" : "plain"),-6} {(gro ? "gro" : "plain"),-6} {res.SendPps,10:F0} {res.SendNsPerDgram,9:F0} " +
                    $"{(double)res.Tx.DatagramsSent / Math.Max(1, res.Tx.SendSyscalls),10:F1} {res.Received,8} {res.RecvNsPerDgram,9:F0} " +
                    $"{(double)res.Rx.DatagramsReceived / Math.Max(1, res.Rx.ReceiveSyscalls),10:F1} {res.Tx.GsoMessages,9} {res.Rx.GroMessages,9}");
            }
        }

        // Medians over rounds, then the ratios asked for: each feature on vs off, other side fixed.
        double Med(bool gso, bool gro, Func<Result, double> f)
        {
            var v = all.Where(x => x.Gso == gso && x.Gro == gro).Select(f).Order().ToArray();
            return v[v.Length / 2];
        }

        Console.WriteLine();
        Console.WriteLine("medians over rounds:");
        foreach (var (gso, gro) in combos)
        {
            Console.WriteLine($"  send {(gso ? "gso  " : "plain")} recv {(gro ? "gro  " : "plain")}: tx {Med(gso, gro, x => x.SendPps) / 1e3,7:F0} kdg/s {Med(gso, gro, x => x.SendNsPerDgram),6:F0} ns/dg cpu; rx {Med(gso, gro, x => x.RecvNsPerDgram),6:F0} ns/dg cpu, got {Med(gso, gro, x => (double)x.Received / x.Sent) * 100,5:F1}%");
        }

        Console.WriteLine($"GSO send (plain receiver): tx dg/s x{Med(true, false, x => x.SendPps) / Med(false, false, x => x.SendPps):F2}, tx cpu/dg x{Med(true, false, x => x.SendNsPerDgram) / Med(false, false, x => x.SendNsPerDgram):F2}");
        Console.WriteLine($"GSO send (GRO receiver):   tx dg/s x{Med(true, true, x => x.SendPps) / Med(false, true, x => x.SendPps):F2}, tx cpu/dg x{Med(true, true, x => x.SendNsPerDgram) / Med(false, true, x => x.SendNsPerDgram):F2}");
        Console.WriteLine($"GRO receive (GSO sender):  rx cpu/dg x{Med(true, true, x => x.RecvNsPerDgram) / Med(true, false, x => x.RecvNsPerDgram):F2}");
        Console.WriteLine($"GRO receive (plain sender, nothing to coalesce): rx cpu/dg x{Med(false, true, x => x.RecvNsPerDgram) / Med(false, false, x => x.RecvNsPerDgram):F2}");
        return 0;
    }

    private static string Arg(string[] a, string name, string def)
    {
        int i = Array.IndexOf(a, name);
        return i >= 0 && i + 1 < a.Length ? a[i + 1] : def;
    }

    private static Result RunOne(bool gso, bool gro, int datagrams, int size, int batch, int groBuffers)
    {
        using var rxSock = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        using var txSock = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        rxSock.ReceiveBufferSize = 16 << 20;
        txSock.SendBufferSize = 16 << 20;
        rxSock.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        txSock.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        using var rx = new UdpBatchSocket(rxSock, batch, gso: false, gro: gro, groBuffers: groBuffers);
        using var tx = new UdpBatchSocket(txSock, batch, gso: gso, gro: false);
        if (gso && !tx.GsoEnabled)
        {
            throw new NotSupportedException("UDP GSO unavailable: " + tx.GsoFallbackReason);
        }

        if (gro && !rx.GroEnabled)
        {
            throw new NotSupportedException("UDP GRO unavailable on this kernel");
        }

        var pool = new PacketBufferPool(2 * batch, 2048);
        var to = ((IPEndPoint)rxSock.LocalEndPoint!).Serialize();
        var txBufs = new PacketBuffer[batch];
        for (int i = 0; i < batch; i++)
        {
            txBufs[i] = pool.Rent()!;
            txBufs[i].Length = size;
            txBufs[i].Array.AsSpan(0, size).Fill((byte)i);
            txBufs[i].SetAddress(to);
        }

        var rxBufs = new PacketBuffer[batch];
        for (int i = 0; i < batch; i++)
        {
            rxBufs[i] = pool.Rent()!;
        }

        long received = 0, recvCpu = 0;
        bool senderDone = false;
        var receiver = new Thread(() =>
        {
            long c0 = ThreadCpuNs();
            int idle = 0;
            // Bounded: stops at the datagram count, or 3 empty 100 ms waits after the sender ended.
            while (received < datagrams && idle < 3)
            {
                int n = rx.ReceiveBatch(rxBufs, batch, 100);
                received += n;
                idle = n == 0 && Volatile.Read(ref senderDone) ? idle + 1 : 0;
            }

            recvCpu = ThreadCpuNs() - c0;
        }) { IsBackground = true, Name = "udpgso-rx" };
        receiver.Start();

        long sent = 0, sendCpu = 0;
        double seconds = 0;
        var sender = new Thread(() =>
        {
            long c0 = ThreadCpuNs();
            var sw = Stopwatch.StartNew();
            // Bounded in count and in time (30 s).
            while (sent < datagrams && sw.Elapsed.TotalSeconds < 30)
            {
                int n = (int)Math.Min(batch, datagrams - sent);
                sent += tx.SendBatch(txBufs, n);
            }

            seconds = sw.Elapsed.TotalSeconds;
            sendCpu = ThreadCpuNs() - c0;
            Volatile.Write(ref senderDone, true);
        }) { IsBackground = true, Name = "udpgso-tx" };
        sender.Start();
        sender.Join();
        receiver.Join();
        return new Result(gso, gro, sent, seconds, sendCpu, received, recvCpu, tx.Counters, rx.Counters);
    }
}
