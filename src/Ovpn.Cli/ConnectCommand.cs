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
/// channel runs where <see cref="ClientDcoPolicy"/> says: by default (auto) the userspace offload
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
            // Fail loudly rather than quietly running elsewhere than asked.
            throw new NotSupportedException("--dco kernel: the client's kernel ovpn (point-to-point) data path is not implemented yet; " +
                "use --dco auto or --dco userspace (userspace offload engine)");
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
    /// The client's data path on Linux: <see cref="ClientDcoPolicy"/> decides, then either the
    /// userspace offload engine in client mode over a multi-queue TUN (<see cref="OffloadClientPlatform"/>)
    /// or the managed engine over a single-queue TUN. The kernel module is probed once (auto); its
    /// client path is not implemented, so a usable module still gets the userspace engine, with the reason logged.
    /// </summary>
    private sealed class LinuxClientDataPathFactory(ClientDcoMode mode) : IClientDataPathFactory
    {
        private readonly LinuxClientTunFactory _tuns = new();
        private string? _kernelStatus;
        private bool _probed;

        public IClientDataPlane Create(ClientDataPathRequest r)
        {
            bool tcp = r.Link.IsTcp;
            if (mode == ClientDcoMode.Auto && !r.DisableDco && !tcp && !_probed)
            {
                _probed = true;
                var st = KernelDco.Probe();
                _kernelStatus = st.Usable ? null : st.ToString();
            }

            var (kind, reason) = ClientDcoPolicy.Choose(mode, r.DisableDco, tcp, r.Cipher, r.Peer.OffloadBlocker,
                _probed ? _kernelStatus : "kernel DCO not probed");
            if (kind == ClientEngineKind.Kernel)
            {
                if (mode == ClientDcoMode.Kernel)
                {
                    throw new NotSupportedException("--dco kernel: the client's kernel ovpn (point-to-point) data path is not implemented yet");
                }

                kind = ClientEngineKind.Userspace;
                reason = "auto: kernel ovpn module usable, but the client's kernel data path is not implemented yet";
            }

            if (kind == ClientEngineKind.Managed)
            {
                return new ManagedClientDataPlane(_tuns, r, reason);
            }

            if (mode != ClientDcoMode.Auto)
            {
                return new OffloadClientDataPlane(r, reason);
            }

            try
            {
                return new OffloadClientDataPlane(r, reason);
            }
            catch (Exception e) when (e is Platform.PlatformException or IOException or InvalidOperationException or NotSupportedException
                or UnauthorizedAccessException or DllNotFoundException)
            {
                // auto must still connect: the managed engine needs only a plain TUN device.
                Log.Warn("client", $"userspace offload could not start ({e.Message}); using the managed engine");
                return new ManagedClientDataPlane(_tuns, r, $"auto: offload engine failed to start: {e.Message}");
            }
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

        public string Description => $"{_dp.EngineName} (userspace, {_queues} TUN queues, {_dp.CipherImplementation})";

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
        public static List<string> Configure(Platform.Linux.TunDevice tun, ClientTunSettings s)
        {
            var routes = new List<string>();
            tun.SetMtu(s.Mtu);
            if (s.PeerAddress is { } peer)
            {
                // net30 / p2p topology: a point-to-point address pair.
                tun.AddAddress(s.Address, 32);
                tun.SetUp();
                Ip("route", "add", $"{peer}/32", "dev", tun.Name);
                routes.Add($"{peer}/32");
            }
            else
            {
                tun.AddAddress(s.Address, s.PrefixLength);
                tun.SetUp();
            }

            if (s.Address6 is { } a6)
            {
                tun.AddAddress(a6, s.Prefix6);
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
                    if (Ip("route", "replace", half, "dev", tun.Name))
                    {
                        routes.Add(half);
                    }
                }
            }

            foreach (var (net, prefix) in s.Routes.Concat(s.Routes6))
            {
                string cidr = $"{net}/{prefix}";
                if (Ip("route", "replace", cidr, "dev", tun.Name))
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
