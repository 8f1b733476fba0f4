// SPDX-License-Identifier: MIT
// Drives KernelDataPlane against the real ovpn-dco-v2 module (inside the tests/kernel-dco VM, as root).
// Plays the OpenVPN client itself with the managed AEAD codec, so the kernel's use of our key mapping
// (key direction, nonce tail, key id, peer id) is checked end to end in both directions. All traffic
// stays on loopback and on the VM-local addresses of the device this program creates.
// Exit codes: 0 all checks passed, 1 a check failed, 3 kernel DCO unusable here (reason printed).
using System.Buffers.Binary;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using Ovpn.DataPlane;
using Ovpn.DataPlane.Transport;
using Ovpn.Platform.Dco;
using Ovpn.Protocol.Data;
using Ovpn.Protocol.Keys;

var sw = Stopwatch.StartNew();
int failures = 0;
void Check(string name, bool ok, string detail = "")
{
    Console.WriteLine($"[{sw.Elapsed.TotalSeconds,6:F1}s] CHECK {name}: {(ok ? "PASS" : "FAIL")}{(detail.Length > 0 ? " - " + detail : "")}");
    if (!ok)
        failures++;
}

// `--peers IFNAME`: read-only GET_PEER dump of a device another process (ovpnas serve) owns, so the VM
// flow can see from outside the server which peers the kernel holds. Prints "PEERS n" then one line each.
if (args.Length == 2 && args[0] == "--peers")
{
    int ifindex = int.Parse(File.ReadAllText($"/sys/class/net/{args[1]}/ifindex").Trim(), System.Globalization.CultureInfo.InvariantCulture);
    using var genl = new Ovpn.Platform.Netlink.NetlinkSocket(Ovpn.Platform.Netlink.NetlinkConst.NETLINK_GENERIC);
    var fam = genl.ResolveFamily(OvpnDcoV2.FamilyName) ?? throw new NotSupportedException($"no genl family {OvpnDcoV2.FamilyName}");
    var peers = genl.Request(OvpnDcoV2.GetPeersDump(fam.Id, ifindex), "OVPN GET_PEER dump")
        .Where(m => m.Type == fam.Id).Select(OvpnDcoV2.ParsePeer).ToList();
    Console.WriteLine($"PEERS {peers.Count} on {args[1]} (ifindex {ifindex})");
    foreach (var p in peers)
        Console.WriteLine($"PEER {p.PeerId} {p.Remote} vpn {p.VpnIPv4} vpn-rx {p.VpnRxPackets}p/{p.VpnRxBytes}B vpn-tx {p.VpnTxPackets}p/{p.VpnTxBytes}B");
    return 0;
}

// `--dco-reload DATA_DIR KO LOG`: runs `ovpnas dco-reload` (src/Ovpn.Cli/DcoReloadCommand.cs) for as long as
// the command is not registered in ovpnas' Program.cs; guest/flow.sh prefers the real `ovpnas dco-reload`.
if (args.Length == 4 && args[0] == "--dco-reload")
    return await Ovpn.Cli.DcoReloadCommand.RunAsync(args[1], args[2], args[3], TimeSpan.FromSeconds(90), Console.Out, CancellationToken.None);

string ifName = args.Length > 0 ? args[0] : "as0t0";
string? family = args.Length > 1 ? args[1] : null; // null: KernelDataPlane's default choice
var status = KernelDco.Probe();
Console.WriteLine($"probe: {status}");
Console.WriteLine($"probe: family={status.FamilyName} id={status.FamilyId} version={status.FamilyVersion} module={status.ModuleName} " +
                  $"moduleVersion={status.ModuleVersion} capNetAdmin={status.HasCapNetAdmin} initUserNs={status.InInitialUserNamespace}");
if (!status.Usable)
{
    Console.WriteLine($"SKIP: kernel DCO unusable: {status.Reason}");
    return 3;
}

var serverIp = IPAddress.Parse("172.27.224.1");
var clientVpnIp = IPAddress.Parse("172.27.224.2");
const DataCipher mainCipher = DataCipher.Aes256Gcm;
// Fixed key2 blocks (any 256 bytes serve; deterministic so a failure can be reproduced).
byte[] key2a = Enumerable.Range(0, 256).Select(i => (byte)(i * 7 + 1)).ToArray();
byte[] key2b = Enumerable.Range(0, 256).Select(i => (byte)(i * 13 + 5)).ToArray();

using var serverUdp = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
serverUdp.Bind(new IPEndPoint(IPAddress.Loopback, 0));
using var clientUdp = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
clientUdp.Bind(new IPEndPoint(IPAddress.Loopback, 0));
clientUdp.ReceiveTimeout = 500;
var serverEp = (IPEndPoint)serverUdp.LocalEndPoint!;
var clientEp = (IPEndPoint)clientUdp.LocalEndPoint!;
Console.WriteLine($"server UDP {serverEp}, fake client UDP {clientEp}");

var events = new Events();
KernelDataPlane dp;
try
{
    dp = new KernelDataPlane(new KernelDataPlaneOptions { InterfaceName = ifName, UdpSocket = serverUdp, MultiPeer = true, Family = family }, events);
}
catch (Exception e)
{
    Check($"create {family ?? "kernel DCO"} interface", false, e.Message);
    return 1;
}
Check($"create {dp.LinkKind} interface", true, $"{dp.InterfaceName} ifindex {dp.InterfaceIndex}, {dp.EngineName} {dp.EngineVersion}, family id {dp.Family.Id}");
try
{
    string details = Run("ip", $"-details link show {ifName}");
    Console.Write(details);
    // `ip -details` prints the rtnetlink kind on the third line ("ovpn-dco ..." or "ovpn ...").
    var kindLine = details.Split('\n').Skip(2).FirstOrDefault()?.Trim() ?? "";
    Check($"ip -details shows kind {dp.LinkKind}", kindLine.StartsWith(dp.LinkKind + " ", StringComparison.Ordinal), kindLine.Split(' ')[0]);

    dp.AddAddress(serverIp, 20);
    dp.SetUp();
    Check("address + up", Run("ip", $"addr show {ifName}").Contains("172.27.224.1/20", StringComparison.Ordinal));

    // Refusals happen before any kernel call.
    var blocked = new PeerConfig(9, new UdpLinkTransport(serverUdp, clientEp.Serialize()), IPAddress.Parse("172.27.224.9"), null) { DataV2 = false };
    Check("peer with OffloadBlocker refused", Throws<NotSupportedException>(() => dp.NewPeer(blocked)));

    var transport = new UdpLinkTransport(serverUdp, clientEp.Serialize());
    dp.NewPeer(new PeerConfig(1, transport, clientVpnIp, null));
    dp.SetPeer(1, TimeSpan.FromSeconds(10), TimeSpan.FromSeconds(60));
    var s0 = dp.GetPeer(1);
    Check("NEW_PEER + GET_PEER", s0 is not null && s0.PeerId == 1 && clientVpnIp.Equals(s0.VpnIPv4) && s0.Remote == $"udp:{clientEp}",
        s0 is null ? "no peer" : $"remote {s0.Remote}, vpn {s0.VpnIPv4}");

    // Key id 0 in the primary slot, exactly as the control plane maps DataChannelKeys to KeyConfig.
    InstallKey(dp, key2a, 1, KeySlot.Primary, 0);
    using var cliEnc0 = ClientCodec(key2a, encrypt: true);
    using var cliDec0 = ClientCodec(key2a, encrypt: false);

    // Server -> client: an app on the server sends to the client's VPN address; the kernel routes it into the
    // ovpn-dco device, encrypts with peer 1's key and sends DATA_V2 to the fake client.
    using var appSrv = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
    appSrv.Bind(new IPEndPoint(serverIp, 0));
    var (got, keyId, detail) = SendAndCapture(appSrv, clientUdp, cliDec0, "hello-from-server-0"u8.ToArray());
    Check("kernel encrypts to peer (server->client, key-id 0)", got && keyId == 0, detail);

    // Client -> server: we seal an IPv4/UDP packet from the client's VPN address; the kernel decrypts it
    // and delivers it to a socket on the server's VPN address.
    appSrv.ReceiveTimeout = 500;
    var appPort = ((IPEndPoint)appSrv.LocalEndPoint!).Port;
    bool delivered = ClientSend(cliEnc0, keyId: 0, packetId: 1, appPort, "hello-from-client-0"u8.ToArray(), appSrv);
    Check("kernel decrypts from peer (client->server, key-id 0)", delivered);

    var s1 = dp.GetPeer(1);
    Check("GET_PEER stats count traffic", s1 is not null && s1.VpnTxPackets >= 1 && s1.VpnRxPackets >= 1 && s1.LinkTxBytes > 0 && s1.LinkRxBytes > 0,
        s1 is null ? "no peer" : $"vpn rx {s1.VpnRxPackets}p/{s1.VpnRxBytes}B tx {s1.VpnTxPackets}p/{s1.VpnTxBytes}B, link rx {s1.LinkRxPackets}p/{s1.LinkRxBytes}B tx {s1.LinkTxPackets}p/{s1.LinkTxBytes}B");

    // Renegotiation: new key (id 1) into the secondary slot, swap, the kernel now sends with key-id 1.
    InstallKey(dp, key2b, 1, KeySlot.Secondary, 1);
    dp.SwapKeys(1);
    using var cliEnc1 = ClientCodec(key2b, encrypt: true);
    using var cliDec1 = ClientCodec(key2b, encrypt: false);
    (got, keyId, detail) = SendAndCapture(appSrv, clientUdp, cliDec1, "hello-from-server-1"u8.ToArray());
    Check("SWAP_KEYS: kernel encrypts with key-id 1", got && keyId == 1, detail);
    Check("old key still decrypts in secondary slot", ClientSend(cliEnc0, 0, 2, appPort, "late-key-0"u8.ToArray(), appSrv));
    dp.DeleteKey(1, KeySlot.Secondary);
    Check("DEL_KEY: old key-id 0 no longer accepted", !ClientSend(cliEnc0, 0, 3, appPort, "after-del-key"u8.ToArray(), appSrv));
    Check("new key-id 1 accepted", ClientSend(cliEnc1, 1, 1, appPort, "hello-from-client-1"u8.ToArray(), appSrv));

    // The other ciphers OpenVPN 2.6 offloads: CIPHER_ALG numbers and key lengths, both directions, on a fresh peer.
    foreach (var (c, n) in new[] { (DataCipher.Aes128Gcm, 3u), (DataCipher.ChaCha20Poly1305, 4u) })
    {
        var vpn = IPAddress.Parse($"172.27.224.{n + 1}");
        dp.NewPeer(new PeerConfig(n, new UdpLinkTransport(serverUdp, clientEp.Serialize()), vpn, null));
        InstallKey(dp, key2a, n, KeySlot.Primary, 2, c);
        using var enc = ClientCodec(key2a, encrypt: true, c);
        using var dec = ClientCodec(key2a, encrypt: false, c);
        var (okOut, kid, det) = SendAndCapture(appSrv, clientUdp, dec, System.Text.Encoding.ASCII.GetBytes($"out-{c}"), vpn);
        bool okIn = ClientSend(enc, 2, 1, appPort, System.Text.Encoding.ASCII.GetBytes($"in-{c}"), appSrv, n, vpn);
        Check($"{c}: kernel encrypts and decrypts", okOut && kid == 2 && okIn, $"{det}; client->server {(okIn ? "delivered" : "lost")}");
        dp.DeletePeer(n);
    }

    // Kernel refusals surface as NetlinkException with errno (and the kernel's extack text when it gives one).
    var dup = Catch(() => dp.NewPeer(new PeerConfig(1, transport, clientVpnIp, null)));
    Check("duplicate NEW_PEER refused by the kernel", dup is Ovpn.Platform.Netlink.NetlinkException, dup?.Message ?? "no error");
    var unknown = Catch(() => dp.SetPeer(77, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(5)));
    Check("SET_PEER of an unknown peer refused", unknown is Ovpn.Platform.Netlink.NetlinkException, unknown?.Message ?? "no error");

    var all = dp.GetPeers();
    Check("GET_PEER dump lists the peer", all.Any(p => p.PeerId == 1), $"{all.Count} peer(s)");

    // Keepalive expiry in the kernel -> DEL_PEER notification (reason EXPIRED) on the peers group.
    using var deadUdp = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
    deadUdp.Bind(new IPEndPoint(IPAddress.Loopback, 0));
    dp.NewPeer(new PeerConfig(2, new UdpLinkTransport(serverUdp, deadUdp.LocalEndPoint!.Serialize()), IPAddress.Parse("172.27.224.3"), null));
    dp.SetPeer(2, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(2));
    bool expired = events.WaitFor(2, TimeSpan.FromSeconds(30), out var reason);
    Check("DEL_PEER notification EXPIRED forwarded", expired && reason == PeerDeleteReason.Expired, expired ? $"reason {reason}" : "no notification in 30 s");
    Check("expired peer gone", dp.GetPeer(2) is null);

    dp.DeletePeer(1);
    Check("DEL_PEER removes the peer", dp.GetPeer(1) is null && !dp.GetPeers().Any(p => p.PeerId == 1));
    Thread.Sleep(500);
    Check("own DEL_PEER not reported as data-plane deletion", !events.Deleted.ContainsKey(1));
}
catch (Exception e)
{
    Check("unexpected exception", false, e.ToString());
}
finally
{
    dp.Dispose();
}
Check("RTM_DELLINK on dispose", !Run("ip", "-o link show").Contains($" {ifName}:", StringComparison.Ordinal));

// IPv6 transport: a second device whose UDP socket is IPv6 (sockaddr_in6 / remote-ipv6 in NEW_PEER).
try
{
    using var srv6 = new Socket(AddressFamily.InterNetworkV6, SocketType.Dgram, ProtocolType.Udp);
    srv6.Bind(new IPEndPoint(IPAddress.IPv6Loopback, 0));
    using var cli6 = new Socket(AddressFamily.InterNetworkV6, SocketType.Dgram, ProtocolType.Udp);
    cli6.Bind(new IPEndPoint(IPAddress.IPv6Loopback, 0));
    cli6.ReceiveTimeout = 500;
    using var dp6 = new KernelDataPlane(new KernelDataPlaneOptions { InterfaceName = ifName + "v6", UdpSocket = srv6, MultiPeer = true, Family = family }, events);
    var net6 = IPAddress.Parse("172.28.0.1");
    var cli6Vpn = IPAddress.Parse("172.28.0.2");
    dp6.AddAddress(net6, 24);
    dp6.SetUp();
    dp6.NewPeer(new PeerConfig(1, new UdpLinkTransport(srv6, cli6.LocalEndPoint!.Serialize()), cli6Vpn, null));
    InstallKey(dp6, key2a, 1, KeySlot.Primary, 0);
    var p6 = dp6.GetPeer(1);
    using var dec6 = ClientCodec(key2a, encrypt: false);
    using var app6 = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
    app6.Bind(new IPEndPoint(net6, 0));
    var (ok6, _, det6) = SendAndCapture(app6, cli6, dec6, "over-ipv6"u8.ToArray(), cli6Vpn);
    Check("IPv6 transport: peer remote + kernel encrypts over UDP/IPv6", ok6 && p6?.Remote == $"udp:{cli6.LocalEndPoint}", $"{p6?.Remote}; {det6}");
}
catch (Exception e)
{
    Check("IPv6 transport", false, e.Message);
}
Console.WriteLine($"{(failures == 0 ? "ALL CHECKS PASSED" : $"{failures} CHECK(S) FAILED")} in {sw.Elapsed.TotalSeconds:F1}s");
return failures == 0 ? 0 : 1;

void InstallKey(KernelDataPlane plane, byte[] key2, uint peerId, KeySlot slot, int keyId, DataCipher cipher = mainCipher)
{
    var k = DataChannelKeys.FromKey2(key2, cipher, isServer: true);
    plane.NewKey(new KeyConfig(peerId, slot, keyId, cipher, new KeyDirection(k.EncryptKey, k.EncryptImplicitIv), new KeyDirection(k.DecryptKey, k.DecryptImplicitIv)));
}

static AeadCodec ClientCodec(byte[] key2, bool encrypt, DataCipher cipher = mainCipher)
{
    var k = DataChannelKeys.FromKey2(key2, cipher, isServer: false);
    return encrypt ? new AeadCodec(cipher, k.EncryptKey, k.EncryptImplicitIv) : new AeadCodec(cipher, k.DecryptKey, k.DecryptImplicitIv);
}

(bool Got, int KeyId, string Detail) SendAndCapture(Socket app, Socket client, AeadCodec dec, byte[] marker, IPAddress? dst = null)
{
    app.SendTo(marker, new IPEndPoint(dst ?? clientVpnIp, 7777));
    var buf = new byte[4096];
    var plain = new byte[4096];
    var deadline = Stopwatch.StartNew();
    string last = "nothing received";
    // Bounded: 10 s, each receive waits at most 500 ms. Keepalive pings may arrive first; skip them.
    while (deadline.Elapsed < TimeSpan.FromSeconds(10))
    {
        int n;
        try { n = client.Receive(buf); }
        catch (SocketException) { continue; }
        if (n < 1 || DataPacketHeader.GetOpcode(buf[0]) != 9)
        {
            last = $"non-DATA_V2 packet ({n} B)";
            continue;
        }
        DataPacketHeader.TryGetPeerId(buf.AsSpan(0, n), out uint pid);
        var r = dec.Open(buf.AsSpan(0, n), plain, out int w, out uint packetId);
        if (r != DataDropReason.None)
        {
            last = $"decrypt failed: {r} (key-id {DataPacketHeader.GetKeyId(buf[0])}, peer-id {pid})";
            continue;
        }
        if (plain.AsSpan(0, w).IndexOf(marker) >= 0)
            return (true, DataPacketHeader.GetKeyId(buf[0]), $"DATA_V2 peer-id {pid} key-id {DataPacketHeader.GetKeyId(buf[0])} packet-id {packetId}, {w} B IP packet");
        last = $"decrypted {w} B without marker (keepalive?)";
    }
    return (false, -1, last);
}

bool ClientSend(AeadCodec enc, int keyId, uint packetId, int dstPort, byte[] payload, Socket app, uint peerId = 1, IPAddress? src = null)
{
    byte[] ip = Ipv4Udp(src ?? clientVpnIp, serverIp, 40000, (ushort)dstPort, payload);
    var wire = new byte[ip.Length + 64];
    int len = enc.SealDataV2(wire, keyId, peerId, packetId, ip);
    clientUdp.SendTo(wire.AsSpan(0, len), serverEp);
    var buf = new byte[2048];
    var deadline = Stopwatch.StartNew();
    while (deadline.Elapsed < TimeSpan.FromSeconds(5))
    {
        try
        {
            int n = app.Receive(buf);
            if (buf.AsSpan(0, n).SequenceEqual(payload))
                return true;
        }
        catch (SocketException)
        {
        }
    }
    return false;
}

static byte[] Ipv4Udp(IPAddress src, IPAddress dst, ushort sport, ushort dport, byte[] payload)
{
    var p = new byte[28 + payload.Length];
    p[0] = 0x45;
    BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(2), (ushort)p.Length);
    BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(4), (ushort)RandomNumberGenerator.GetInt32(65536));
    p[8] = 64;
    p[9] = 17;
    src.GetAddressBytes().CopyTo(p, 12);
    dst.GetAddressBytes().CopyTo(p, 16);
    uint sum = 0;
    for (int i = 0; i < 20; i += 2)
        sum += BinaryPrimitives.ReadUInt16BigEndian(p.AsSpan(i));
    while (sum > 0xffff)
        sum = (sum & 0xffff) + (sum >> 16);
    BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(10), (ushort)~sum);
    BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(20), sport);
    BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(22), dport);
    BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(24), (ushort)(8 + payload.Length));
    // UDP checksum 0 = none (allowed for IPv4).
    payload.CopyTo(p, 28);
    return p;
}

static Exception? Catch(Action a)
{
    try { a(); return null; }
    catch (Exception e) { return e; }
}

static bool Throws<T>(Action a) where T : Exception
{
    try { a(); return false; }
    catch (T) { return true; }
}

static string Run(string file, string arguments)
{
    using var p = Process.Start(new ProcessStartInfo(file, arguments) { RedirectStandardOutput = true, RedirectStandardError = true })!;
    string o = p.StandardOutput.ReadToEnd() + p.StandardError.ReadToEnd();
    if (!p.WaitForExit(10_000))
        p.Kill();
    return o;
}

internal sealed class Events : IDataPlaneEvents
{
    public readonly System.Collections.Concurrent.ConcurrentDictionary<uint, PeerDeleteReason> Deleted = new();

    public void OnPeerDeleted(uint peerId, PeerDeleteReason reason)
    {
        Console.WriteLine($"event: peer {peerId} deleted by the kernel, reason {reason}");
        Deleted[peerId] = reason;
    }

    public void OnKeyRenegotiationDue(uint peerId, int keyId) { }

    public void OnControlPacket(ILinkTransport link, ReadOnlySpan<byte> packet) { }

    public void OnPeerFloated(uint peerId, ILinkTransport newLink) { }

    public bool WaitFor(uint peerId, TimeSpan timeout, out PeerDeleteReason reason)
    {
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed < timeout)
        {
            if (Deleted.TryGetValue(peerId, out reason))
                return true;
            Thread.Sleep(100);
        }
        reason = default;
        return false;
    }
}
