// SPDX-License-Identifier: MIT
using System.Diagnostics;
using System.Net;
using System.Runtime.InteropServices;
using Ovpn.ControlPlane;
using Ovpn.ControlPlane.Client;
using Ovpn.DataPlane;

namespace Ovpn.Cli;

/// <summary>
/// `ovpnas connect PROFILE.ovpn [--data-dir DIR]`: the built-in OpenVPN client (Linux). The
/// tunnel is a TUN device configured from the server's push; the data channel runs in the managed
/// engine in client mode. Ctrl-C / SIGTERM sends EXIT and removes the TUN and its routes.
/// The status file (DIR/client-status.json) is what `ovpnas connect --status` prints.
/// </summary>
public static class ConnectCommand
{
    public const string StatusFileName = "client-status.json";

    public static async Task<int> RunAsync(string dataDir, string profilePath, CancellationToken ct)
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
        var client = new VpnClient(profile, new LinuxClientTunFactory(), statusPath);
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

    /// <summary>TUN "ovpnc%d" with the pushed address and MTU; routes through iproute2.</summary>
    private sealed class LinuxClientTunFactory : IClientTunFactory
    {
        public ITunDevice Create(ClientTunSettings s)
        {
            var tun = Platform.Linux.TunDevice.Create("ovpnc%d");
            var routes = new List<string>();
            try
            {
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
            }
            catch
            {
                tun.Dispose();
                throw;
            }

            return new Adapter(tun, routes);
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
            foreach (var r in routes)
            {
                // The kernel drops a device's routes with it; removing them first keeps that explicit
                // (and removes the server host route, which is on another device).
                LinuxClientTunFactory.Ip("route", "del", r);
            }

            tun.Dispose();
        }
    }
}
