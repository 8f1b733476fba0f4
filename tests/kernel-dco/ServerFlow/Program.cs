// SPDX-License-Identifier: MIT
// A minimal server composition for the VM test: the data dir's control plane (SessionManager) with the
// kernel data plane instead of the managed engine. UDP only. Prints "STATUS ..." lines every 2 s and runs
// until SIGTERM (bounded by an optional max-seconds argument).
// usage: ServerFlow <data-dir> [max-seconds] [family: ovpn-dco-v2 | ovpn]
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Ovpn.ControlPlane.Sessions;
using Ovpn.DataPlane.Transport;
using Ovpn.Platform.Dco;
using Ovpn.Server;

string dataDir = args.Length > 0 ? args[0] : throw new ArgumentException("usage: ServerFlow <data-dir> [max-seconds]");
int maxSeconds = args.Length > 1 ? int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 600;
string? family = args.Length > 2 ? args[2] : null;
var (listen, control, _) = ServerFactory.Load(dataDir);
Console.WriteLine($"probe: {KernelDco.Probe()}");

var stop = new CancellationTokenSource(TimeSpan.FromSeconds(maxSeconds));
using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; stop.Cancel(); });
using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; stop.Cancel(); });

var sessions = new SessionManager(control);
sessions.SessionClosed += (s, reason) => Console.WriteLine($"SESSION-CLOSED peer {s.PeerId}: {reason}");
var udp = new Socket(listen.Address.AddressFamily, SocketType.Dgram, ProtocolType.Udp);
if (listen.Address.AddressFamily == AddressFamily.InterNetworkV6)
    udp.DualMode = true;
udp.ReceiveBufferSize = 4 << 20;
udp.SendBufferSize = 4 << 20;
udp.Bind(new IPEndPoint(listen.Address, listen.UdpPort));

string tunName = listen.TunPrefix + "0";
var dp = new KernelDataPlane(new KernelDataPlaneOptions { InterfaceName = tunName, UdpSocket = udp, MultiPeer = true, Family = family }, sessions);
var pool = control.Pool;
dp.SetMtu(listen.TunMtu);
dp.AddAddress(pool.ServerAddress, pool.PrefixLength);
dp.SetUp();
// One offloaded path for every client; no fallback daemon here, so a client the kernel cannot carry is refused.
sessions.Paths = new OffloadSelector(new DataPath($"kernel {dp.Family.Name}", dp, pool, isOffload: true, tunName), null);
Console.WriteLine($"data plane: {dp.EngineName} {dp.EngineVersion} on {dp.InterfaceName} (ifindex {dp.InterfaceIndex}), {pool.ServerAddress}/{pool.PrefixLength}, UDP {udp.LocalEndPoint}");

long userspaceData = 0;
var rx = new Thread(() =>
{
    var buf = new byte[65536];
    var from = new SocketAddress(udp.AddressFamily);
    while (!stop.IsCancellationRequested)
    {
        int n;
        try { n = udp.ReceiveFrom(buf, SocketFlags.None, from); }
        catch (SocketException) { continue; }
        catch (ObjectDisposedException) { return; }
        if (n == 0)
            continue;
        int op = buf[0] >> 3;
        // The module consumes DATA_V2 of known peers; data that still reaches us is for an unknown peer id
        // (or DATA_V1, which this composition does not offload) and is dropped, as the kernel would.
        if (op is 6 or 9)
        {
            Interlocked.Increment(ref userspaceData);
            continue;
        }
        var link = sessions.FindUdpLink(from) ?? new UdpLinkTransport(udp, from);
        try { sessions.OnControlPacket(link, buf.AsSpan(0, n)); }
        catch (Exception e) { Console.WriteLine($"control packet handling failed: {e.Message}"); }
    }
}) { IsBackground = true, Name = "udp-rx" };
rx.Start();
Console.WriteLine("Initialization Sequence Completed");

while (!stop.IsCancellationRequested)
{
    try { await Task.Delay(2000, stop.Token); } catch (OperationCanceledException) { break; }
    try
    {
        var peers = dp.GetPeers();
        Console.WriteLine($"STATUS peers={peers.Count} sessions={sessions.SessionCount} userspace-data-drops={Interlocked.Read(ref userspaceData)}");
        foreach (var p in peers)
            Console.WriteLine($"STATUS peer {p.PeerId} {p.Remote} vpn {p.VpnIPv4} vpn-rx {p.VpnRxPackets}p/{p.VpnRxBytes}B vpn-tx {p.VpnTxPackets}p/{p.VpnTxBytes}B link-rx {p.LinkRxBytes}B link-tx {p.LinkTxBytes}B");
    }
    catch (Exception e)
    {
        Console.WriteLine($"STATUS failed: {e.Message}");
    }
}

Console.WriteLine("shutting down: notifying clients");
await sessions.ShutdownAsync(TimeSpan.FromSeconds(2));
udp.Dispose();
rx.Join(TimeSpan.FromSeconds(2));
dp.Dispose();
sessions.Dispose();
Console.WriteLine("stopped");
return 0;
