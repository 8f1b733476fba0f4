// SPDX-License-Identifier: MIT
using System.Diagnostics;
using System.Net;
using System.Runtime.InteropServices;
using Ovpn.ControlPlane;
using Ovpn.ControlPlane.Client;
using Ovpn.DataPlane;
using Ovpn.DataPlane.Offload;
using Ovpn.Platform.Dco;
using Ovpn.Platform.Net;

namespace Ovpn.Cli;

/// <summary>
/// `ovpnas connect PROFILE.ovpn [--dco auto|userspace|kernel|off] [--data-dir DIR]`: the built-in
/// OpenVPN client (Linux). The tunnel is a TUN device configured from the server's push; the data
/// channel runs where <see cref="ClientDcoPolicy"/> says: by default (auto) the kernel ovpn module in
/// P2P mode when it is usable and the link UDP with an AEAD cipher, else the userspace offload
/// engine in client mode (multi-queue TUN, batched UDP, OpenSSL EVP), the managed engine with
/// --dco off or `disable-dco` in the profile. Ctrl-C / SIGTERM sends EXIT and removes the TUN and
/// its routes. The status file (DIR/client-status.json) is what `ovpnas connect --status` prints.
/// </summary>
public static class ConnectCommand
{
    public const string StatusFileName = "client-status.json";

    public static async Task<int> RunAsync(string dataDir, string profilePath, CancellationToken ct) =>
        await RunAsync(dataDir, profilePath, ClientDcoMode.Auto, ct).ConfigureAwait(false);

    public static async Task<int> RunAsync(string dataDir, string profilePath, ClientDcoMode dco, CancellationToken ct)
    {
        if (profilePath == "--status")
        {
            return PrintStatus(dataDir, Console.Out);
        }

        if (!OperatingSystem.IsLinux())
        {
            throw new NotSupportedException("connect: the client needs Linux (TUN device)");
        }

        var profile = ClientProfile.Load(profilePath);
        foreach (var issue in profile.Issues)
        {
            if (issue.IsError)
            {
                Log.Error("profile", issue.ToString());
            }
            else
            {
                Log.Warn("profile", issue.ToString());
            }
        }

        profile.ThrowIfErrors();
        if (profile.AuthUserPass && profile.Username is null)
        {
            PromptCredentials(profile);
        }

        string? statusPath = null;
        try
        {
            Directory.CreateDirectory(dataDir);
            statusPath = Path.Combine(dataDir, StatusFileName);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Log.Warn("client", $"no status file: {e.Message}");
        }

        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        // SIGTERM and SIGINT both end the client cleanly (EXIT to the server, TUN removed).
        using var term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; stop.Cancel(); });
        using var intr = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; stop.Cancel(); });
        if (dco == ClientDcoMode.Kernel && !profile.DisableDco)
        {
            // Fail before connecting for what is known now (module, TCP); the cipher and peer-id are
            // checked by ClientDcoPolicy once the server pushed them.
            var st = KernelDco.Probe();
            bool allTcp = profile.Remotes.Count > 0 && profile.Remotes.All(r => r.Tcp);
            if (ClientDcoPolicy.KernelBlocker(allTcp, Protocol.Keys.DataCipher.Aes256Gcm, null, st.Usable ? null : st.ToString()) is { } why)
            {
                throw new NotSupportedException($"--dco kernel: {why}; use --dco auto or --dco userspace");
            }
        }

        var client = new VpnClient(profile, new LinuxClientDataPathFactory(dco), statusPath);
        try
        {
            return await client.RunAsync(stop.Token).ConfigureAwait(false);
        }
        finally
        {
            client.DeleteStatus();
        }
    }

    /// <summary>Prints the running client's status file; 1 if no client is running.</summary>
    public static int PrintStatus(string dataDir, TextWriter output)
    {
        string path = Path.Combine(dataDir, StatusFileName);
        if (!File.Exists(path))
        {
            output.WriteLine("no client running (no status file at " + path + ")");
            return 1;
        }

        output.WriteLine(File.ReadAllText(path));
        return 0;
    }

    private static void PromptCredentials(ClientProfile profile)
    {
        if (Console.IsInputRedirected)
        {
            // Non-interactive: username and password as the first two lines of stdin.
            profile.Username = Console.ReadLine()?.Trim();
            profile.Password = Console.ReadLine();
        }
        else
        {
            Console.Error.Write("Username: ");
            profile.Username = Console.ReadLine()?.Trim();
            Console.Error.Write("Password: ");
            var sb = new System.Text.StringBuilder();
            while (true)
            {
                var key = Console.ReadKey(intercept: true);
                if (key.Key == ConsoleKey.Enter)
                {
                    break;
                }

                if (key.Key == ConsoleKey.Backspace && sb.Length > 0)
                {
                    sb.Length--;
                }
                else if (!char.IsControl(key.KeyChar))
                {
                    sb.Append(key.KeyChar);
                }
            }

            Console.Error.WriteLine();
            profile.Password = sb.ToString();
        }

        if (string.IsNullOrEmpty(profile.Username) || profile.Password is null)
        {
            throw new ProfileException("auth-user-pass: no username/password given");
        }
    }

    /// <summary>
    /// The client's data path on Linux: <see cref="ClientDcoPolicy"/> decides, then the kernel module in
    /// P2P mode (<see cref="KernelClientDataPlane"/>), the userspace offload engine in client mode over a
    /// multi-queue TUN (<see cref="OffloadClientPlatform"/>) or the managed engine over a single-queue TUN.
    /// The kernel module is probed once per client (auto and kernel). auto falls back (kernel → userspace →
    /// managed) when an engine cannot start; an explicit --dco kernel|userspace fails instead.
    /// </summary>
    private sealed class LinuxClientDataPathFactory(ClientDcoMode mode) : IClientDataPathFactory
    {
        /// <summary>What "this engine cannot run on this host" looks like (auto then falls back).</summary>
        private static bool IsStartFailure(Exception e) =>
            e is Platform.PlatformException or IOException or InvalidOperationException or NotSupportedException
                or UnauthorizedAccessException or ArgumentException or DllNotFoundException;

        private readonly LinuxClientTunFactory _tuns = new();
        private KernelDcoStatus? _kernel;

        public IClientDataPlane Create(ClientDataPathRequest r)
        {
            bool tcp = r.Link.IsTcp;
            bool wantKernel = mode is ClientDcoMode.Auto or ClientDcoMode.Kernel;
            if (wantKernel && !r.DisableDco && !tcp && _kernel is null)
            {
                _kernel = KernelDco.Probe();
            }

            string? kernelStatus = _kernel is null ? "kernel DCO not probed" : _kernel.Usable ? null : _kernel.ToString();
            var (kind, reason) = ClientDcoPolicy.Choose(mode, r.DisableDco, tcp, r.Cipher, r.Peer.OffloadBlocker, kernelStatus);
            return ClientEngineStarter.Start<IClientDataPlane>(mode, kind, reason,
                kernel: why => new KernelClientDataPlane(r, why),
                userspace: why => new OffloadClientDataPlane(r, why),
                managed: why => new ManagedClientDataPlane(_tuns, r, why),
                isStartFailure: IsStartFailure,
                warn: m => Log.Warn("client", m));
        }
    }

    /// <summary>
    /// The kernel ovpn module in P2P mode: an ovpn-dco netdev (ovpncN) configured exactly like the TUN
    /// (<see cref="LinuxClientTunFactory.Configure(string, Action{int}, Action{IPAddress, int}, Action, ClientTunSettings)"/>),
    /// one peer (the server) on the client's UDP socket. The kernel encrypts and decrypts; the client keeps
    /// reading the socket (control packets are not consumed by the module), so <see cref="ReadsUdpSocket"/> is
    /// false. Keepalive runs in the kernel (SET_PEER from ping/ping-restart), its expiry comes back as a DEL_PEER
    /// notification (EXPIRED), which the client turns into ping-restart. Counters come from GET_PEER.
    /// </summary>
    private sealed class KernelClientDataPlane : IClientDataPlane
    {
        private readonly KernelDataPlane _dp;
        private readonly List<string> _routes;
        private long _userspaceData;

        public KernelClientDataPlane(ClientDataPathRequest r, string reason)
        {
            if (r.UdpSocket is null)
            {
                throw new NotSupportedException("the client's kernel data path carries UDP only");
            }

            Reason = reason;
            _dp = KernelClientPlatform.Create(r.UdpSocket, r.Events);
            try
            {
                _routes = LinuxClientTunFactory.Configure(_dp.InterfaceName, _dp.SetMtu, _dp.AddAddress, () => _dp.SetUp(), r.Tun);
            }
            catch
            {
                _dp.Dispose();
                throw;
            }
        }

        public IDataPlane Engine => _dp;

        public string Description => $"{_dp.EngineName} {_dp.EngineVersion} (P2P, device {_dp.InterfaceName} kind {_dp.LinkKind})";

        public string Reason { get; }

        public string TunName => _dp.InterfaceName;

        public bool ReadsUdpSocket => false;

        public void Start()
        {
        }

        public void Tick()
        {
            // Keepalive and its expiry run in the kernel (SET_PEER); nothing to drive from here.
        }

        public void SendOccExit(uint peerId)
        {
            // The data channel keys live in the kernel, so userspace cannot seal an OCC EXIT; servers that
            // announce cc-exit get EXIT on the control channel instead (VpnClient prefers it).
            Log.Info("client", "kernel data path: OCC EXIT not sent (keys are in the kernel; the server sees the keepalive expire)");
        }

        public void OnLinkPacket(ILinkTransport link, ReadOnlySpan<byte> packet, Span<byte> scratch)
        {
            // A data packet the module handed back (e.g. one that raced NEW_PEER/NEW_KEY, or an unknown
            // key-id): userspace holds no keys, so it is dropped, as the kernel would.
            Interlocked.Increment(ref _userspaceData);
        }

        public void Dispose()
        {
            LinuxClientTunFactory.RemoveRoutes(_routes);
            // RTM_DELLINK frees the peer and its keys in the kernel.
            _dp.Dispose();
        }
    }

    /// <summary>The userspace offload engine in client mode plus the TUN routes it added.</summary>
    private sealed class OffloadClientDataPlane : IClientDataPlane
    {
        private readonly OffloadDataPlane _dp;
        private readonly List<string> _routes = [];
        private readonly string _tunName;
        private readonly int _queues;

        public OffloadClientDataPlane(ClientDataPathRequest r, string reason)
        {
            Reason = reason;
            _queues = OffloadClientPlatform.DefaultQueues;
            string name = "";
            _dp = OffloadClientPlatform.Create(r.UdpSocket, "ovpnc%d", _queues, tun =>
            {
                name = tun.Name;
                _routes.AddRange(LinuxClientTunFactory.Configure(tun, r.Tun));
            }, r.Events);
            _tunName = name;
            ReadsUdpSocket = r.UdpSocket is not null;
        }

        public IDataPlane Engine => _dp;

        public string Description => $"{_dp.EngineName} (userspace, {_queues} TUN queues, {_dp.CipherImplementation}, {_dp.TunSegmentationDescription})";

        public string Reason { get; }

        public string TunName => _tunName;

        public bool ReadsUdpSocket { get; }

        public void Start() => _dp.Start();

        public void Tick() => _dp.Tick();

        public void SendOccExit(uint peerId) => _dp.SendOccExit(peerId);

        public void OnLinkPacket(ILinkTransport link, ReadOnlySpan<byte> packet, Span<byte> scratch) => _dp.OnLinkPacket(link, packet, scratch);

        public void Dispose()
        {
            LinuxClientTunFactory.RemoveRoutes(_routes);
            _dp.Dispose();
        }
    }

    /// <summary>TUN "ovpnc%d" with the pushed address and MTU; routes through iproute2.</summary>
    private sealed class LinuxClientTunFactory : IClientTunFactory
    {
        public ITunDevice Create(ClientTunSettings s)
        {
            var tun = Platform.Linux.TunDevice.Create("ovpnc%d");
            try
            {
                return new Adapter(tun, Configure(tun, s));
            }
            catch
            {
                tun.Dispose();
                throw;
            }
        }

        public static void RemoveRoutes(List<string> routes)
        {
            foreach (var r in routes)
            {
                // The kernel drops a device's routes with it; removing them first keeps that explicit
                // (and removes the server host route, which is on another device).
                Ip("route", "del", r);
            }
        }

        /// <summary>MTU, addresses, link up and routes; returns the routes added (for removal).</summary>
        public static List<string> Configure(Platform.Linux.TunDevice tun, ClientTunSettings s) =>
            Configure(tun.Name, tun.SetMtu, tun.AddAddress, tun.SetUp, s);

        /// <summary>The same for any netdev (the kernel data path's ovpn-dco device is configured exactly like the TUN).</summary>
        public static List<string> Configure(string name, Action<int> setMtu, Action<IPAddress, int> addAddress, Action setUp,
            ClientTunSettings s)
        {
            var routes = new List<string>();
            setMtu(s.Mtu);
            if (s.PeerAddress is { } peer)
            {
                // net30 / p2p topology: a point-to-point address pair.
                addAddress(s.Address, 32);
                setUp();
                Ip("route", "add", $"{peer}/32", "dev", name);
                routes.Add($"{peer}/32");
            }
            else
            {
                addAddress(s.Address, s.PrefixLength);
                setUp();
            }

            if (s.Address6 is { } a6)
            {
                addAddress(a6, s.Prefix6);
            }

            if (s.RedirectGatewayServer is { } server && !IPAddress.IsLoopback(server))
            {
                // Keep the tunnel's own packets on the current path before the def1 halves win.
                string? via = CurrentRoute(server);
                if (via is not null && Ip(["route", "replace", $"{server}/32", .. via.Split(' ', StringSplitOptions.RemoveEmptyEntries)]))
                {
                    routes.Add($"{server}/32");
                }

                foreach (var half in new[] { "0.0.0.0/1", "128.0.0.0/1" })
                {
                    if (Ip("route", "replace", half, "dev", name))
                    {
                        routes.Add(half);
                    }
                }
            }

            foreach (var (net, prefix) in s.Routes.Concat(s.Routes6))
            {
                string cidr = $"{net}/{prefix}";
                if (Ip("route", "replace", cidr, "dev", name))
                {
                    routes.Add(cidr);
                }
            }

            return routes;
        }

        /// <summary>"via GW dev IF" / "dev IF" of the route the kernel uses now for <paramref name="dst"/>.</summary>
        private static string? CurrentRoute(IPAddress dst)
        {
            var psi = new ProcessStartInfo("ip") { RedirectStandardError = true, RedirectStandardOutput = true };
            foreach (var a in new[] { "-o", "route", "get", dst.ToString() })
            {
                psi.ArgumentList.Add(a);
            }

            using var p = Process.Start(psi)!;
            string output = p.StandardOutput.ReadToEnd();
            p.StandardError.ReadToEnd();
            if (!p.WaitForExit(5000) || p.ExitCode != 0)
            {
                return null;
            }

            var t = output.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            int via = Array.IndexOf(t, "via"), dev = Array.IndexOf(t, "dev");
            if (dev < 0 || dev + 1 >= t.Length)
            {
                return null;
            }

            return via >= 0 && via + 1 < t.Length ? $"via {t[via + 1]} dev {t[dev + 1]}" : $"dev {t[dev + 1]}";
        }

        internal static bool Ip(params string[] args)
        {
            var psi = new ProcessStartInfo("ip") { RedirectStandardError = true, RedirectStandardOutput = true };
            foreach (var a in args)
            {
                psi.ArgumentList.Add(a);
            }

            using var p = Process.Start(psi)!;
            string err = p.StandardError.ReadToEnd();
            p.StandardOutput.ReadToEnd();
            if (!p.WaitForExit(5000))
            {
                p.Kill();
                Log.Warn("client", $"ip {string.Join(' ', args)}: timed out");
                return false;
            }

            if (p.ExitCode != 0)
            {
                Log.Warn("client", $"ip {string.Join(' ', args)}: {err.Trim()}");
                return false;
            }

            return true;
        }
    }

    private sealed class Adapter(Platform.Linux.TunDevice tun, List<string> routes) : ITunDevice
    {
        public string Name => tun.Name;

        public int Read(Span<byte> buffer) => tun.Read(buffer);

        public void Write(ReadOnlySpan<byte> packet) => tun.Write(packet);

        public void Dispose()
        {
            LinuxClientTunFactory.RemoveRoutes(routes);
            tun.Dispose();
        }
    }
}
