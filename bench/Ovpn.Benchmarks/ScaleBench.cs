// SPDX-License-Identifier: MIT
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Ovpn.ControlPlane;
using Ovpn.ControlPlane.Client;
using Ovpn.DataPlane;
using Ovpn.DataPlane.Transport;

namespace Ovpn.Benchmarks;

/// <summary>
/// Scale benchmark: N simulated clients (our client-side protocol code, no TUN) connect to one
/// server with the same profile; prints handshakes/s, time until all are connected, and the
/// server's resident memory per connected idle peer (from /proc/PID/status of the server process).
///   scale --profile P.ovpn --clients N [--concurrency C] [--server-pid PID] [--timeout S] [--warmup K] [--window W]
/// Server CPU per handshake is reported twice: over the whole connect phase (raw, includes the
/// server's one-time start-up cost such as .NET's JIT) and over the handshakes after the first K
/// (steady state, what a long-running server pays per handshake; default K = 200, capped at N/2).
/// With --window W (and --server-pid) it also prints the server CPU per handshake in consecutive
/// windows of W handshakes (0-W, W-2W, ...: a "scale-windows:" line), which shows how long the
/// server's warm-up (JIT tiering, GC heap growth, thread-pool ramp-up) lasts.
/// Works against ovpnas and the stock openvpn server alike (both speak the same protocol).
/// </summary>
internal static class ScaleBench
{
    public static async Task<int> RunAsync(string[] args)
    {
        string? profilePath = null;
        int clients = 100, concurrency = 64, timeoutS = 600, warmup = 200, window = 0, blastPackets = 0, blastSize = 1400, blastBurst = 32;
        int? serverPid = null;
        for (int i = 0; i + 1 < args.Length; i += 2)
        {
            switch (args[i])
            {
                case "--profile": profilePath = args[i + 1]; break;
                case "--clients": clients = int.Parse(args[i + 1], CultureInfo.InvariantCulture); break;
                case "--concurrency": concurrency = int.Parse(args[i + 1], CultureInfo.InvariantCulture); break;
                case "--server-pid": serverPid = int.Parse(args[i + 1], CultureInfo.InvariantCulture); break;
                case "--window": window = int.Parse(args[i + 1], CultureInfo.InvariantCulture); break;
                case "--warmup": warmup = int.Parse(args[i + 1], CultureInfo.InvariantCulture); break;
                case "--timeout": timeoutS = int.Parse(args[i + 1], CultureInfo.InvariantCulture); break;
                case "--blast-packets": blastPackets = int.Parse(args[i + 1], CultureInfo.InvariantCulture); break;
                case "--blast-size": blastSize = int.Parse(args[i + 1], CultureInfo.InvariantCulture); break;
                case "--blast-burst": blastBurst = Math.Clamp(int.Parse(args[i + 1], CultureInfo.InvariantCulture), 1, 64); break;
                default: Console.Error.WriteLine($"scale: unknown option {args[i]}"); return 1;
            }
        }

        if (profilePath is null)
        {
            Console.Error.WriteLine("scale: --profile is required");
            return 1;
        }

        Log.MinLevel = LogLevel.Error;
        var profile = ClientProfile.Load(profilePath);
        if (profile.Errors.Any())
        {
            Console.Error.WriteLine("scale: profile errors: " + string.Join("; ", profile.Errors));
            return 1;
        }

        var remote = profile.Remotes[0];
        var ep = new IPEndPoint(IPAddress.Parse(remote.Host), remote.Port);
        long rssBefore = serverPid is { } p0 ? ReadRssKb(p0) : 0;
        double cpuBefore = serverPid is { } c0 ? ReadCpuSeconds(c0) : 0;
        var live = new ConcurrentBag<(ClientConnection Conn, Socket Sock, IdlePath Path)>();
        using var gate = new SemaphoreSlim(concurrency);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(timeoutS));
        var conns = new ConcurrentDictionary<ClientConnection, byte>();
        using var ticker = new Timer(_ =>
        {
            foreach (var c in conns.Keys)
            {
                c.PostTick();
            }
        }, null, 250, 250);

        int established = 0, failed = 0;
        warmup = Math.Clamp(warmup, 0, clients / 2);
        // Server CPU and wall time when the warmup-th client came up (written once, by that client's task).
        double cpuAtWarmup = cpuBefore, secondsAtWarmup = 0;
        // Server CPU when the (k*window)-th client came up, k = 1.. (each slot written once, by that client's task).
        var windowCpu = window > 0 && serverPid is not null ? new double[(clients / window) + 1] : [];
        var sw = Stopwatch.StartNew();
        var tasks = new List<Task>(clients);
        for (int i = 0; i < clients; i++)
        {
            await gate.WaitAsync(cts.Token).ConfigureAwait(false);
            tasks.Add(Task.Run(async () =>
            {
                var sock = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
                sock.Bind(new IPEndPoint(IPAddress.Any, 0));
                var link = new UdpLinkTransport(sock, ep.Serialize());
                var path = new IdlePath(keepKeys: blastPackets > 0);
                var conn = new ClientConnection(profile, remote, link, path);
                conns[conn] = 0;
                _ = ReceiveAsync(sock, conn, cts.Token);
                conn.Start();
                try
                {
                    await path.Established.Task.WaitAsync(cts.Token).ConfigureAwait(false);
                    int count = Interlocked.Increment(ref established);
                    if (count == warmup && serverPid is { } cw)
                    {
                        cpuAtWarmup = ReadCpuSeconds(cw);
                        secondsAtWarmup = sw.Elapsed.TotalSeconds;
                    }

                    if (windowCpu.Length > 0 && count % window == 0 && serverPid is { } cwin)
                    {
                        windowCpu[count / window] = ReadCpuSeconds(cwin);
                    }

                    live.Add((conn, sock, path));
                }
                catch (OperationCanceledException)
                {
                    Interlocked.Increment(ref failed);
                }
                finally
                {
                    gate.Release();
                }
            }));
        }

        await Task.WhenAll(tasks).ConfigureAwait(false);
        double seconds = sw.Elapsed.TotalSeconds;
        // Server CPU (utime+stime, all threads) spent while the clients connected: per handshake this
        // is the server's cost whatever the generator's own speed, and 1/cost x cores its capacity.
        double cpuNow = serverPid is { } c1 ? ReadCpuSeconds(c1) : 0;
        double cpuSpent = serverPid is not null ? cpuNow - cpuBefore : 0;
        int steadyCount = established - warmup;
        double steadyCpuMs = steadyCount > 0 && serverPid is not null ? (cpuNow - Volatile.Read(ref cpuAtWarmup)) * 1000 / steadyCount : 0;
        double steadyRate = steadyCount > 0 ? steadyCount / Math.Max(1e-9, seconds - Volatile.Read(ref secondsAtWarmup)) : 0;
        // Let the server settle with every peer idle, then measure its memory.
        await Task.Delay(3000).ConfigureAwait(false);
        long rssAfter = serverPid is { } p1 ? ReadRssKb(p1) : 0;
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"scale: clients={clients} established={established} failed={failed} seconds={seconds:F2} handshakes_per_s={established / seconds:F1} " +
            $"server_rss_before_kb={rssBefore} server_rss_after_kb={rssAfter} kb_per_peer={(established > 0 ? (rssAfter - rssBefore) / (double)established : 0):F1} " +
            $"server_cpu_s={cpuSpent:F2} server_cpu_ms_per_hs={(established > 0 ? cpuSpent * 1000 / established : 0):F2} " +
            $"warmup={warmup} steady_handshakes_per_s={steadyRate:F1} steady_server_cpu_ms_per_hs={steadyCpuMs:F2}"));

        if (windowCpu.Length > 0)
        {
            windowCpu[0] = cpuBefore;
            var parts = new List<string>();
            for (int k = 1; k < windowCpu.Length && k * window <= established; k++)
            {
                parts.Add(string.Create(CultureInfo.InvariantCulture, $"{(k - 1) * window}-{k * window}={(Volatile.Read(ref windowCpu[k]) - Volatile.Read(ref windowCpu[k - 1])) * 1000 / window:F2}"));
            }

            Console.WriteLine($"scale-windows: ms_per_hs {string.Join(' ', parts)}");
        }

        if (blastPackets > 0)
        {
            Blast(live.ToList(), ep, blastPackets, blastSize, blastBurst);
        }

        await cts.CancelAsync().ConfigureAwait(false);
        foreach (var (conn, sock, _) in live)
        {
            conn.PostStop(ClientExitKind.Stopped, "bench done");
            sock.Dispose();
        }

        return failed == 0 ? 0 : 2;
    }

    /// <summary>
    /// Load generator: every connected client sends pre-sealed DATA_V2 packets (UDP to the server's
    /// tunnel address, discard port) from its own socket, round-robin over the clients, BURST packets
    /// of one client at a time. BURST > 1 sends each burst as one UDP GSO message (UdpBatchSocket:
    /// one syscall, one trip through the sender's stack), which makes the generator cheap enough to
    /// offer more than a server on the same 2 cores can forward; the datagrams still arrive one by one
    /// at a server that does not enable UDP_GRO (the kernel segments them), so every server sees
    /// the same packets. BURST = 1 is one sendto per packet (the first version of this generator).
    /// Inner packets carry valid IPv4/UDP checksums and go to the server's tunnel address, port
    /// <see cref="BlastSinkPort"/>, where bench/forward.sh counts what arrives (udpsink).
    /// </summary>
    private static void Blast(List<(ClientConnection Conn, Socket Sock, IdlePath Path)> peers, IPEndPoint server, int total, int size, int burst)
    {
        int perPeer = Math.Max(1, total / Math.Max(1, peers.Count));
        var dst = server.Serialize();
        var wires = new List<(Socket Sock, Ovpn.DataPlane.Offload.PacketBuffer[] Packets)>();
        foreach (var (_, sock, path) in peers)
        {
            if (path.Key is not { } key || path.Config is not { } cfg)
            {
                continue;
            }

            using var codec = new Ovpn.Protocol.Data.AeadCodec(key.Cipher, key.Encrypt.CipherKey, key.Encrypt.NonceTail);
            var gw = BlastGateway(cfg);
            var packets = new Ovpn.DataPlane.Offload.PacketBuffer[perPeer];
            var ip = new byte[size];
            for (int i = 0; i < perPeer; i++)
            {
                BuildBlastPacket(ip, cfg.Address, gw, (uint)i);
                var b = new Ovpn.DataPlane.Offload.PacketBuffer(size + 64);
                b.Length = codec.SealDataV2(b.Array, key.KeyId, cfg.PeerId ?? 0, (uint)(i + 1), ip);
                b.SetAddress(dst);
                packets[i] = b;
            }

            wires.Add((sock, packets));
        }

        var batchers = wires.Select(w => new Ovpn.Platform.Net.UdpBatchSocket(w.Sock, 64, gso: burst > 1, gro: false)).ToArray();
        var batch = new Ovpn.DataPlane.Offload.PacketBuffer[burst];
        // Marker for bench/forward.sh (it starts its profiler here, after the handshakes).
        Console.WriteLine("blast: sending");
        Console.Out.Flush();
        var sw = Stopwatch.StartNew();
        long sent = 0;
        for (int i = 0; i < perPeer; i += burst)
        {
            int n = Math.Min(burst, perPeer - i);
            for (int w = 0; w < wires.Count; w++)
            {
                if (burst == 1)
                {
                    try
                    {
                        wires[w].Sock.SendTo(wires[w].Packets[i].Data, server);
                        sent++;
                    }
                    catch (SocketException)
                    {
                    }

                    continue;
                }

                Array.Copy(wires[w].Packets, i, batch, 0, n);
                sent += batchers[w].SendBatch(batch, n);
            }
        }

        double secs = sw.Elapsed.TotalSeconds;
        long gsoMessages = batchers.Sum(b => b.Counters.GsoMessages);
        foreach (var b in batchers)
        {
            b.Dispose();
        }

        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"blast: peers={wires.Count} sent={sent} size={size} burst={burst} gso_messages={gsoMessages} seconds={secs:F3} offered_pps={sent / secs:F0}"));
        Thread.Sleep(1500);
    }

    /// <summary>UDP port the blast's inner packets go to (bench/forward.sh runs a counting sink on it).</summary>
    public const int BlastSinkPort = 9;

    /// <summary>The server's address in the tunnel: the pushed route-gateway, else the first host of
    /// the client's subnet (both servers put their own address there with topology subnet).</summary>
    private static IPAddress BlastGateway(Ovpn.ControlPlane.Client.PushedConfig cfg)
    {
        var rg = cfg.Options.FirstOrDefault(o => o.Name == "route-gateway" && o.Args.Count > 0);
        if (rg is not null && IPAddress.TryParse(rg.Args[0], out var a))
        {
            return a;
        }

        uint addr = System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(cfg.Address.GetAddressBytes());
        uint mask = cfg.PrefixLength == 0 ? 0 : uint.MaxValue << (32 - cfg.PrefixLength);
        var gw = new byte[4];
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(gw, (addr & mask) + 1);
        return new IPAddress(gw);
    }

    /// <summary>
    /// One inner packet of the blast: IPv4 (valid header checksum, DF, TTL 64) / UDP from the
    /// client's VPN address port 40000 to the server's gateway address port <see cref="BlastSinkPort"/>,
    /// payload = the packet's index then zeros, with a valid (non-zero) UDP checksum, so the server's
    /// kernel accepts it and a socket receives it intact (what bench/forward.sh counts).
    /// </summary>
    private static void BuildBlastPacket(byte[] ip, IPAddress src, IPAddress dst, uint index)
    {
        int size = ip.Length;
        Array.Clear(ip);
        ip[0] = 0x45;
        System.Buffers.Binary.BinaryPrimitives.WriteUInt16BigEndian(ip.AsSpan(2), (ushort)size);
        ip[6] = 0x40;
        ip[8] = 64;
        ip[9] = 17;
        src.GetAddressBytes().CopyTo(ip, 12);
        dst.GetAddressBytes().CopyTo(ip, 16);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt16BigEndian(ip.AsSpan(10),
            Ovpn.DataPlane.Offload.InternetChecksum.Ipv4HeaderChecksum(ip.AsSpan(0, 20)));
        System.Buffers.Binary.BinaryPrimitives.WriteUInt16BigEndian(ip.AsSpan(20), 40000);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt16BigEndian(ip.AsSpan(22), BlastSinkPort);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt16BigEndian(ip.AsSpan(24), (ushort)(size - 20));
        if (size >= 32)
        {
            System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(ip.AsSpan(28), index);
        }

        ushort pseudo = Ovpn.DataPlane.Offload.InternetChecksum.PseudoHeaderSum(ip.AsSpan(12, 4), ip.AsSpan(16, 4), 17, size - 20);
        ushort csum = (ushort)~Ovpn.DataPlane.Offload.InternetChecksum.Sum(ip.AsSpan(20), pseudo);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt16BigEndian(ip.AsSpan(26), csum == 0 ? (ushort)0xFFFF : csum);
    }

    private static async Task ReceiveAsync(Socket sock, ClientConnection conn, CancellationToken ct)
    {
        var buf = new byte[4096];
        var from = new SocketAddress(AddressFamily.InterNetwork);
        try
        {
            while (!ct.IsCancellationRequested)
            {
                int n = await sock.ReceiveFromAsync(buf, SocketFlags.None, from, ct).ConfigureAwait(false);
                if (n > 0)
                {
                    conn.PostPacket(buf.AsSpan(0, n).ToArray());
                }
            }
        }
        catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
        {
        }
    }

    /// <summary>utime + stime of a process in seconds (/proc/PID/stat fields 14 and 15, USER_HZ = 100).</summary>
    private static double ReadCpuSeconds(int pid)
    {
        var stat = File.ReadAllText($"/proc/{pid}/stat");
        // The command name (field 2) may contain spaces; fields after its closing parenthesis are plain.
        var rest = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        return (long.Parse(rest[11], CultureInfo.InvariantCulture) + long.Parse(rest[12], CultureInfo.InvariantCulture)) / 100.0;
    }

    private static long ReadRssKb(int pid)
    {
        foreach (var line in File.ReadLines($"/proc/{pid}/status"))
        {
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
            {
                return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture);
            }
        }

        return 0;
    }

    /// <summary>A client that only records that its data channel is up (no TUN, no traffic).</summary>
    private sealed class IdlePath(bool keepKeys) : IClientDataPath
    {
        public TaskCompletionSource Established { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public KeyConfig? Key { get; private set; }

        public PushedConfig? Config { get; private set; }

        public void Establish(PushedConfig config, KeyConfig firstKey)
        {
            if (keepKeys)
            {
                // The load generator seals with these (copies: the originals are wiped).
                Key = firstKey with { Encrypt = new KeyDirection((byte[])firstKey.Encrypt.CipherKey.Clone(), (byte[])firstKey.Encrypt.NonceTail.Clone()) };
                Config = config;
            }

            firstKey.Encrypt.Clear();
            firstKey.Decrypt.Clear();
            Established.TrySetResult();
        }

        public void InstallSecondary(KeyConfig key)
        {
            key.Encrypt.Clear();
            key.Decrypt.Clear();
        }

        public void SwapKeys()
        {
        }
    }
}
