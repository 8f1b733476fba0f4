// SPDX-License-Identifier: MIT
using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using Ovpn.DataPlane;
using Ovpn.DataPlane.Engine;
using Ovpn.DataPlane.Offload;
using Ovpn.DataPlane.Transport;
using Ovpn.Platform.Net;
using Ovpn.Protocol.Keys;

namespace Ovpn.Benchmarks;

/// <summary>
/// Engine load generator: many peers' DATA_V2 packets over real UDP on loopback into a data plane
/// whose TUN is a counter (no TUN device, no kernel routing), measuring what the engine forwards
/// "to TUN" per second. Peers and keys are installed through IDataPlane directly (the handshake is
/// not what is measured). The same harness drives the managed engine the way ServerHost does (one
/// receive thread, ReceiveFrom + OnLinkPacket) and the offload engine (recvmmsg, workers).
/// Usage: dotnet Ovpn.Benchmarks.dll loadgen [--engine offload|managed|both] [--peers 64]
///        [--packets 300000] [--size 1400] [--senders 1] [--workers N] [--cipher bcl|openssl]
///        [--udp-offload on|off|both]
/// --udp-offload: UDP GSO in the generator's sendmmsg and UDP GRO on the engine's socket (the
/// UdpBatchSocket defaults are on); "both" runs each engine with it off, then on.
/// </summary>
public static class LoadGen
{
    private static readonly IPAddress ServerVpn = IPAddress.Parse("172.27.224.1");

    public static int Run(string[] args)
    {
        string engine = Arg(args, "--engine", "both");
        int peers = int.Parse(Arg(args, "--peers", "64"));
        int size = int.Parse(Arg(args, "--size", "1400"));
        int senders = int.Parse(Arg(args, "--senders", "1"));
        int workers = int.Parse(Arg(args, "--workers", Environment.ProcessorCount.ToString()));
        string cipher = Arg(args, "--cipher", OpenSslPacketAeadFactory.IsAvailable ? "openssl" : "bcl");
        int packets = int.Parse(Arg(args, "--packets", "300000"));
        string udpOffload = Arg(args, "--udp-offload", "on");
        bool[] offloadModes = udpOffload switch
        {
            "on" => [true],
            "off" => [false],
            "both" => [false, true],
            _ => throw new ArgumentException("--udp-offload on|off|both"),
        };
        Console.WriteLine($"loadgen: {peers} peers, {size} B IP packets, {packets} pre-sealed packets blasted by {senders} sender thread(s), {Environment.ProcessorCount} cores, loopback");
        Console.WriteLine($"{"engine",-34} {"offered pps",12} {"to-TUN pps",12} {"Gbit/s",8} {"delivered",10} {"cpu s",7}");
        var results = new List<(string, double)>();
        foreach (bool udpOff in offloadModes)
        {
            foreach (var e in engine == "both" ? new[] { "managed", "offload" } : [engine])
            {
                var (label, pps) = RunOne(e, peers, packets, size, senders, workers, cipher, udpOff);
                results.Add((label, pps));
            }
        }

        if (offloadModes.Length == 1 && results.Count == 2 && results[0].Item2 > 0)
        {
            Console.WriteLine($"offload / managed forwarding ratio: {results[1].Item2 / results[0].Item2:F2}x");
        }

        if (offloadModes.Length == 2)
        {
            int per = results.Count / 2;
            for (int i = 0; i < per; i++)
            {
                if (results[i].Item2 > 0)
                {
                    Console.WriteLine($"{results[per + i].Item1}: GSO/GRO on / off forwarding ratio: {results[per + i].Item2 / results[i].Item2:F2}x");
                }
            }
        }

        return 0;
    }

    private static string Arg(string[] a, string name, string def)
    {
        int i = Array.IndexOf(a, name);
        return i >= 0 && i + 1 < a.Length ? a[i + 1] : def;
    }

    private static (string, double) RunOne(string engine, int peerCount, int packets, int size, int senderCount, int workers, string cipher, bool udpOffload)
    {
        using var server = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        server.ReceiveBufferSize = 16 << 20;
        server.SendBufferSize = 16 << 20;
        server.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        var serverEp = (IPEndPoint)server.LocalEndPoint!;
        var tun = new CountingTun();
        var events = new NullEvents();
        IDataPlane dp;
        string label;
        UdpBatchSocket? batch = null;
        Thread? managedReader = null;
        using var stop = new CancellationTokenSource();
        if (engine == "offload")
        {
            batch = new UdpBatchSocket(server, gso: udpOffload, gro: udpOffload);
            var o = new OffloadOptions
            {
                Workers = workers,
                KeepaliveTimer = false,
                Aead = cipher == "openssl" ? OpenSslPacketAeadFactory.Instance : BclPacketAeadFactory.Instance,
            };
            var off = new OffloadDataPlane([batch], [tun], events, o);
            off.Start();
            dp = off;
            label = $"offload ({workers} workers, {off.CipherImplementation}{(batch.GroEnabled ? ", gro" : "")})";
        }
        else
        {
            var m = new ManagedDataPlane(tun, events);
            m.Start();
            dp = m;
            label = "managed (1 receive thread, bcl)" + (udpOffload ? ", gso gen" : "");
            var links = new ConcurrentDictionary<SocketAddress, UdpLinkTransport>();
            managedReader = new Thread(() =>
            {
                var buf = new byte[65536];
                var scratch = new byte[65536];
                var from = new SocketAddress(AddressFamily.InterNetwork);
                server.ReceiveTimeout = 200;
                while (!stop.IsCancellationRequested)
                {
                    int n;
                    try
                    {
                        n = server.ReceiveFrom(buf, SocketFlags.None, from);
                    }
                    catch (SocketException)
                    {
                        continue;
                    }
                    catch (ObjectDisposedException)
                    {
                        return;
                    }

                    // As ServerHost does: reuse the session's link object for a known address.
                    if (!links.TryGetValue(from, out var link))
                    {
                        link = new UdpLinkTransport(server, from);
                        links[link.Address] = link;
                    }

                    m.OnLinkPacket(link, buf.AsSpan(0, n), scratch);
                }
            })
            { IsBackground = true, Name = "managed-udp" };
            managedReader.Start();
        }

        // Senders: one UDP socket each; peers are spread over them (peers share a source address,
        // which both engines allow: DATA_V2 is looked up by peer-id).
        var senderSockets = new Socket[senderCount];
        var peerSets = new List<Peer>[senderCount];
        for (int s = 0; s < senderCount; s++)
        {
            senderSockets[s] = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp) { SendBufferSize = 8 << 20 };
            senderSockets[s].Bind(new IPEndPoint(IPAddress.Loopback, 0));
            peerSets[s] = [];
        }

        var factory = OpenSslPacketAeadFactory.IsAvailable ? (IPacketAeadFactory)OpenSslPacketAeadFactory.Instance : BclPacketAeadFactory.Instance;
        for (int i = 0; i < peerCount; i++)
        {
            uint id = (uint)i + 1;
            int s = i % senderCount;
            var vpn = new IPAddress([172, 27, (byte)(225 + (i >> 8)), (byte)(i & 0xFF)]);
            var k = RandomNumberGenerator.GetBytes(32);
            var t = RandomNumberGenerator.GetBytes(8);
            var sk = RandomNumberGenerator.GetBytes(32);
            var st = RandomNumberGenerator.GetBytes(8);
            var link = new UdpLinkTransport(server, ((IPEndPoint)senderSockets[s].LocalEndPoint!).Serialize());
            dp.NewPeer(new PeerConfig(id, link, vpn, null));
            dp.NewKey(new KeyConfig(id, KeySlot.Primary, 0, DataCipher.Aes256Gcm, new KeyDirection(sk, st), new KeyDirection((byte[])k.Clone(), (byte[])t.Clone())));
            peerSets[s].Add(new Peer(id, vpn, factory.Create(DataCipher.Aes256Gcm, k, t)));
        }

        // Pre-seal everything so the sender costs only sendmmsg, not crypto: the server, not the
        // generator, must be the bottleneck on a 2-core machine.
        var work = new PacketBuffer[senderCount][];
        for (int s = 0; s < senderCount; s++)
        {
            work[s] = Preseal(peerSets[s], packets / senderCount, size, serverEp);
        }

        GC.Collect();
        var threads = new Thread[senderCount];
        long offered = 0;
        long sendTicks = 0;
        var proc = Process.GetCurrentProcess();
        var cpu0 = proc.TotalProcessorTime;
        var sw = Stopwatch.StartNew();
        for (int s = 0; s < senderCount; s++)
        {
            int si = s;
            threads[s] = new Thread(() =>
            {
                Blast(senderSockets[si], work[si], udpOffload, ref offered);
                Interlocked.Exchange(ref sendTicks, sw.ElapsedTicks);
            })
            { IsBackground = true };
            threads[s].Start();
        }

        // Wait until the count stops moving for 300 ms (or everything arrived); bounded at 60 s.
        long last = -1, lastChangeTicks = 0;
        long total = (long)(packets / senderCount) * senderCount;
        while (sw.Elapsed < TimeSpan.FromSeconds(60))
        {
            Thread.Sleep(10);
            long now = tun.Packets;
            if (now != last)
            {
                last = now;
                lastChangeTicks = sw.ElapsedTicks;
            }
            else if (now >= total || sw.ElapsedTicks - lastChangeTicks > Stopwatch.Frequency * 3 / 10)
            {
                break;
            }
        }

        proc.Refresh();
        var cpu = (proc.TotalProcessorTime - cpu0).TotalSeconds;
        stop.Cancel();
        foreach (var t in threads)
        {
            t.Join(2000);
        }

        double el = (double)lastChangeTicks / Stopwatch.Frequency;
        double sendEl = (double)Interlocked.Read(ref sendTicks) / Stopwatch.Frequency;
        long delivered = tun.Packets;
        long drops = 0;
        var byReason = new SortedDictionary<string, long>();
        foreach (var st in dp.GetPeers())
        {
            foreach (var (k, v) in st.Drops)
            {
                drops += v;
                byReason[k] = byReason.GetValueOrDefault(k) + v;
            }
        }

        double pps = delivered / el;
        Console.WriteLine($"{label,-34} {Interlocked.Read(ref offered) / sendEl,12:F0} {pps,12:F0} {tun.Bytes * 8 / el / 1e9,8:F2} {delivered * 100.0 / total,9:F1}% {cpu,7:F1}" +
            (drops > 0 ? $"  (engine drops: {string.Join(", ", byReason)})" : ""));
        dp.Dispose();
        managedReader?.Join(1000);
        batch?.Dispose();
        tun.Dispose();
        foreach (var s in senderSockets)
        {
            s.Dispose();
        }

        return (label, pps);
    }

    private static PacketBuffer[] Preseal(List<Peer> peers, int count, int size, IPEndPoint to)
    {
        var dst = to.Serialize();
        var ip = new byte[size];
        ip[0] = 0x45;
        BinaryPrimitives.WriteUInt16BigEndian(ip.AsSpan(2), (ushort)size);
        ip[8] = 64;
        ip[9] = 17;
        ServerVpn.GetAddressBytes().CopyTo(ip, 16);
        var list = new PacketBuffer[count];
        for (int i = 0; i < count; i++)
        {
            var p = peers[i % peers.Count];
            p.Vpn.GetAddressBytes().CopyTo(ip, 12);
            var b = new PacketBuffer(size + 64);
            b.Length = p.Aead.SealDataV2(b.Array, 0, p.Id, ++p.NextId, ip);
            b.SetAddress(dst);
            list[i] = b;
        }

        return list;
    }

    private static void Blast(Socket sock, PacketBuffer[] packets, bool gso, ref long offered)
    {
        using var bs = new UdpBatchSocket(sock, 64, gso: gso, gro: false);
        var batch = new PacketBuffer[32];
        for (int i = 0; i < packets.Length; i += batch.Length)
        {
            int n = Math.Min(batch.Length, packets.Length - i);
            Array.Copy(packets, i, batch, 0, n);
            Interlocked.Add(ref offered, bs.SendBatch(batch, n));
        }
    }

    private sealed class Peer(uint id, IPAddress vpn, IPacketAead aead)
    {
        public uint Id { get; } = id;

        public IPAddress Vpn { get; } = vpn;

        public IPacketAead Aead { get; } = aead;

        public uint NextId;
    }

    /// <summary>A TUN stand-in that counts what the engine writes and never produces packets.</summary>
    private sealed class CountingTun : ITunDevice
    {
        private readonly ManualResetEventSlim _closed = new();
        private long _packets, _bytes;

        public long Packets => Interlocked.Read(ref _packets);

        public long Bytes => Interlocked.Read(ref _bytes);

        public string Name => "count0";

        public int Read(Span<byte> buffer)
        {
            _closed.Wait();
            throw new ObjectDisposedException(nameof(CountingTun));
        }

        public void Write(ReadOnlySpan<byte> packet)
        {
            Interlocked.Increment(ref _packets);
            Interlocked.Add(ref _bytes, packet.Length);
        }

        public void Dispose() => _closed.Set();
    }

    private sealed class NullEvents : IDataPlaneEvents
    {
        public void OnPeerDeleted(uint peerId, PeerDeleteReason reason)
        {
        }

        public void OnKeyRenegotiationDue(uint peerId, int keyId)
        {
        }

        public void OnControlPacket(ILinkTransport link, ReadOnlySpan<byte> packet)
        {
        }

        public void OnPeerFloated(uint peerId, ILinkTransport newLink)
        {
        }
    }
}
