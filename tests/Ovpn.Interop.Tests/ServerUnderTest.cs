// SPDX-License-Identifier: MIT
using System.Net;
using System.Text.RegularExpressions;
using Ovpn.Testing;

namespace Ovpn.Interop.Tests;

/// <summary>
/// A real `ovpnas serve` process in its own network namespace, with a client namespace joined to
/// it by a veth pair, a fresh data directory made with `ovpnas init`, and a user "alice".
/// Everything is removed on dispose.
/// </summary>
public sealed partial class ServerUnderTest : IAsyncDisposable
{
    private static int _counter;

    public NetNs ServerNs { get; }

    public NetNs ClientNs { get; }

    public string DataDir { get; }

    public IPAddress ServerLinkAddress { get; }

    public NetNsProcess? Process { get; private set; }

    public static readonly IPAddress TunnelServerAddress = IPAddress.Parse("172.27.224.1");

    private ServerUnderTest(NetNs srv, NetNs cli, IPAddress serverAddr, string dataDir)
    {
        ServerNs = srv;
        ClientNs = cli;
        ServerLinkAddress = serverAddr;
        DataDir = dataDir;
    }

    /// <summary>Creates namespaces and the data dir; applies config keys; does not start the server yet.</summary>
    public static ServerUnderTest Create(params (string Key, string Value)[] config)
    {
        Requirements.RequireOrFail(Requirement.Root, Requirement.Tun, Requirement.OpenVpn);
        NetNs.CleanupStale();
        int n = Interlocked.Increment(ref _counter) + (Environment.ProcessId % 50) * 4;
        string net = $"10.{200 + (n / 250) % 50}.{n % 250}";
        var (srv, cli) = NetNs.CreateVethPair($"{net}.1/24", $"{net}.2/24");
        string dir = Path.Combine(Path.GetTempPath(), "ovpnas-interop-" + Guid.NewGuid().ToString("N"));
        var s = new ServerUnderTest(srv, cli, IPAddress.Parse($"{net}.1"), dir);
        s.Cli("init", "--hostname", s.ServerLinkAddress.ToString());
        foreach (var (k, v) in config)
        {
            s.Cli("sacli", "-k", k, "-v", v, "ConfigPut");
        }

        s.Cli("user", "add", "alice");
        return s;
    }

    /// <summary>Runs `ovpnas ARGS --data-dir DIR` in-process; fails the test on a non-zero exit.</summary>
    public string Cli(params string[] args)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        int code = Ovpn.Cli.Program.Run([.. args, "--data-dir", DataDir], o, e);
        Assert.True(code == 0, $"ovpnas {string.Join(' ', args)} exited {code}: {e}");
        return o.ToString();
    }

    public async Task StartAsync()
    {
        string dll = Path.Combine(AppContext.BaseDirectory, "ovpnas.dll");
        Process = ServerNs.Start("dotnet", dll, "serve", "--data-dir", DataDir);
        try
        {
            await Process.WaitForLineAsync(InitRegex(), TimeSpan.FromSeconds(60));
        }
        catch (Exception e)
        {
            throw new InvalidOperationException($"server did not start: {e.Message}\n{Process.Tail()}", e);
        }
    }

    /// <summary>
    /// A client config for the stock openvpn: our generated profile with its remote lines replaced
    /// by the one under test.
    /// </summary>
    public string ClientConfig(string user, string proto, string? cipher = null, params string[] extra)
    {
        string profile = Cli("profile", user);
        var lines = profile.Split('\n').Where(l => !l.StartsWith("remote ", StringComparison.Ordinal)).ToList();
        int port = proto.StartsWith("tcp", StringComparison.Ordinal) ? 443 : 1194;
        lines.Insert(1, $"remote {ServerLinkAddress} {port} {(proto == "tcp" ? "tcp-client" : proto)}");
        if (cipher is not null)
        {
            lines = lines.Select(l => l.StartsWith("data-ciphers ", StringComparison.Ordinal) ? $"data-ciphers {cipher}" : l).ToList();
        }

        lines.AddRange(extra);
        return string.Join('\n', lines) + "\n";
    }

    /// <summary>The tunnel address the server pushed to a client, read from the client's log.</summary>
    public static IPAddress ClientVpnAddress(OpenVpnProcess client)
    {
        foreach (var l in client.Log)
        {
            var m = PushedIfconfig().Match(l);
            if (m.Success)
            {
                return IPAddress.Parse(m.Groups[1].Value);
            }
        }

        throw new InvalidOperationException("no pushed ifconfig in the client log");
    }

    [GeneratedRegex(@"PUSH_REPLY.*,ifconfig (\d+\.\d+\.\d+\.\d+) ")]
    private static partial Regex PushedIfconfig();

    public int CountServerLines(string substring) => Process?.Lines.Count(l => l.Contains(substring, StringComparison.Ordinal)) ?? 0;

    /// <summary>Stops the server with SIGTERM and returns its exit code (null if it had to be killed).</summary>
    public async Task<int?> StopAsync()
    {
        if (Process is null || Process.HasExited)
        {
            return Process?.ExitCode;
        }

        Process.Signal(15);
        if (!await Process.WaitForExitAsync(TimeSpan.FromSeconds(15)))
        {
            Process.Kill();
            return null;
        }

        return Process.ExitCode;
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync();
        Process?.Dispose();
        await ClientNs.DisposeAsync();
        await ServerNs.DisposeAsync();
        try
        {
            Directory.Delete(DataDir, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    [GeneratedRegex("Initialization Sequence Completed")]
    private static partial Regex InitRegex();
}
