// SPDX-License-Identifier: MIT
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace Ovpn.Benchmarks;

/// <summary>
/// <c>udpsink --port P --payload N</c>: the counting receiver of bench/forward.sh, run in the server's
/// namespace. It binds 0.0.0.0:P with UDP_GRO (so a server that writes GSO frames into its TUN is
/// not charged for the sink reading them one by one, and one that writes packets one by one is not
/// helped: the TUN's receive path does no GRO) and counts the UDP payload bytes it reads; every
/// blast datagram carries N payload bytes, so datagrams = bytes / N. Packets reach it only if the
/// kernel accepted their IP header and UDP checksum (bad ones are dropped and counted by the
/// kernel, not here). At SIGTERM/SIGINT it also reads the socket's drop counter (/proc/net/udp,
/// receive buffer full: still packets the server delivered intact) and prints
/// <c>sink: bytes=.. datagrams=.. reads=.. odd_reads=.. socket_drops=..</c>.
/// </summary>
internal static class UdpSink
{
    private const int SolSocket = 1;
    private const int SoRcvBufForce = 33;
    private const int SolUdp = 17;
    private const int UdpGro = 104;

    public static int Run(string[] args)
    {
        int port = 9, payload = 1372;
        for (int i = 0; i + 1 < args.Length; i += 2)
        {
            switch (args[i])
            {
                case "--port": port = int.Parse(args[i + 1], CultureInfo.InvariantCulture); break;
                case "--payload": payload = int.Parse(args[i + 1], CultureInfo.InvariantCulture); break;
                default: throw new ArgumentException($"unknown option {args[i]}");
            }
        }

        using var sock = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        sock.SetRawSocketOption(SolSocket, SoRcvBufForce, BitConverter.GetBytes(64 << 20));
        sock.SetRawSocketOption(SolUdp, UdpGro, BitConverter.GetBytes(1));
        sock.Bind(new IPEndPoint(IPAddress.Any, port));
        sock.ReceiveTimeout = 200;
        bool stop = false;
        using var term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; Volatile.Write(ref stop, true); });
        using var intr = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; Volatile.Write(ref stop, true); });
        Console.WriteLine("sink: ready");
        var buf = new byte[65536];
        long bytes = 0, reads = 0, odd = 0;
        while (!Volatile.Read(ref stop))
        {
            int n;
            try
            {
                n = sock.Receive(buf);
            }
            catch (SocketException e) when (e.SocketErrorCode is SocketError.TimedOut or SocketError.WouldBlock or SocketError.Interrupted)
            {
                continue;
            }

            bytes += n;
            reads++;
            if (n % payload != 0)
            {
                odd++;
            }
        }

        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"sink: bytes={bytes} datagrams={bytes / payload} reads={reads} odd_reads={odd} socket_drops={SocketDrops(port)}"));
        return 0;
    }

    /// <summary>The "drops" column of our socket's line in /proc/net/udp (local port in hex).</summary>
    private static long SocketDrops(int port)
    {
        string local = ":" + port.ToString("X4", CultureInfo.InvariantCulture);
        foreach (var line in File.ReadLines("/proc/net/udp").Skip(1))
        {
            var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (f.Length > 12 && f[1].EndsWith(local, StringComparison.Ordinal))
            {
                return long.Parse(f[^1], CultureInfo.InvariantCulture);
            }
        }

        return -1;
    }
}
