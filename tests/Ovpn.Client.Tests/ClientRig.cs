// SPDX-License-Identifier: MIT
using System.Net;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.RegularExpressions;
using Ovpn.ControlPlane.Config;
using Ovpn.ControlPlane.Pki;
using Ovpn.Testing;

[assembly: CollectionBehavior(DisableTestParallelization = true)]

namespace Ovpn.Client.Tests;

/// <summary>Throwaway PKI made with our CertificateAuthority, plus an OpenVPN static key from `openvpn --genkey`.</summary>
public sealed class TestPki : IDisposable
{
    public TestPki(string serverHost)
    {
        Dir = Directory.CreateTempSubdirectory("ovpnt-client-pki-").FullName;
        var db = OvpnDatabase.Create(Dir);
        var ca = CertificateAuthority.Initialize(db, serverHost);
        CaPem = ca.CaCertificatePem;
        ServerCertPem = ca.ServerCertificatePem;
        using (var srv = ca.LoadServerCertificate())
        {
            using var rsa = srv.GetRSAPrivateKey()!;
            ServerKeyPem = rsa.ExportPkcs8PrivateKeyPem();
        }

        var client = ca.IssueClientCertificate("alice");
        ClientCertPem = client.CertificatePem;
        ClientKeyPem = client.PrivateKeyPem!;
        string keyPath = Path.Combine(Dir, "ta.key");
        var psi = new System.Diagnostics.ProcessStartInfo(Requirements.OpenVpnPath) { RedirectStandardError = true, RedirectStandardOutput = true };
        psi.ArgumentList.Add("--genkey");
        psi.ArgumentList.Add("secret");
        psi.ArgumentList.Add(keyPath);
        using (var proc = System.Diagnostics.Process.Start(psi)!)
        {
            string err = proc.StandardError.ReadToEnd();
            proc.StandardOutput.ReadToEnd();
            if (!proc.WaitForExit(20000) || proc.ExitCode != 0)
            {
                throw new InvalidOperationException("openvpn --genkey failed: " + err);
            }
        }

        StaticKey = File.ReadAllText(keyPath);
    }

    public string Dir { get; }
    public string CaPem { get; }
    public string ServerCertPem { get; }
    public string ServerKeyPem { get; }
    public string ClientCertPem { get; }
    public string ClientKeyPem { get; }
    public string StaticKey { get; }

    public void Dispose()
    {
        try
        {
            Directory.Delete(Dir, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

/// <summary>Options of one interop scenario.</summary>
public sealed record Scenario(bool Tcp = false, string Wrap = "tls-crypt", string Cipher = "AES-256-GCM", int? RenegSec = null, string ExtraServer = "", string ExtraProfile = "");

/// <summary>
/// Two namespaces joined by a veth pair: SRV (10.77.0.1) runs the stock openvpn server, CLI
/// (10.77.0.2) runs `ovpnas connect`. Everything is removed on dispose.
/// </summary>
public sealed partial class ClientRig : IAsyncDisposable
{
    public static readonly IPAddress ServerLink = IPAddress.Parse("10.77.0.1");
    public static readonly IPAddress ServerVpn = IPAddress.Parse("10.8.0.1");

    private ClientRig(NetNs srv, NetNs cli, TestPki pki, Scenario s, string workDir)
    {
        Srv = srv;
        Cli = cli;
        Pki = pki;
        Scenario = s;
        WorkDir = workDir;
    }

    public NetNs Srv { get; }
    public NetNs Cli { get; }
    public TestPki Pki { get; }
    public Scenario Scenario { get; }
    public string WorkDir { get; }
    public OpenVpnProcess? Server { get; private set; }
    public NetNsProcess? Client { get; private set; }

    public string DataDir => Path.Combine(WorkDir, "data");

    public static ClientRig Create(Scenario s)
    {
        Requirements.RequireOrFail(Requirement.Root, Requirement.Tun, Requirement.OpenVpn);
        NetNs.CleanupStale();
        var (srv, cli) = NetNs.CreateVethPair("10.77.0.1/24", "10.77.0.2/24");
        var pki = new TestPki(ServerLink.ToString());
        string dir = Directory.CreateTempSubdirectory("ovpnt-client-").FullName;
        return new ClientRig(srv, cli, pki, s, dir);
    }

    public string ServerConfig()
    {
        var s = Scenario;
        var sb = new StringBuilder();
        sb.AppendLine("mode server").AppendLine("tls-server").AppendLine("dev tun").AppendLine("topology subnet");
        sb.AppendLine(s.Tcp ? "proto tcp-server" : "proto udp").AppendLine("port 1194");
        sb.AppendLine("server 10.8.0.0 255.255.255.0");
        sb.AppendLine("ca ca.crt").AppendLine("cert server.crt").AppendLine("key server.key").AppendLine("dh none");
        sb.AppendLine(s.Wrap == "tls-auth" ? "tls-auth ta.key 0" : "tls-crypt ta.key");
        sb.AppendLine($"data-ciphers {s.Cipher}");
        sb.AppendLine("keepalive 2 10");
        if (!s.Tcp)
        {
            sb.AppendLine("explicit-exit-notify 1");
        }

        if (s.RenegSec is { } r)
        {
            sb.AppendLine($"reneg-sec {r}");
        }

        sb.AppendLine(s.ExtraServer);
        return sb.ToString();
    }

    public string Profile()
    {
        var s = Scenario;
        var sb = new StringBuilder();
        sb.AppendLine("client").AppendLine("dev tun").AppendLine(s.Tcp ? "proto tcp" : "proto udp");
        sb.AppendLine($"remote {ServerLink} 1194").AppendLine("nobind").AppendLine("remote-cert-tls server");
        sb.AppendLine($"data-ciphers {s.Cipher}");
        sb.AppendLine("connect-retry 1 2");
        sb.AppendLine($"<ca>\n{Pki.CaPem.Trim()}\n</ca>");
        sb.AppendLine($"<cert>\n{Pki.ClientCertPem.Trim()}\n</cert>");
        sb.AppendLine($"<key>\n{Pki.ClientKeyPem.Trim()}\n</key>");
        if (s.Wrap == "tls-auth")
        {
            sb.AppendLine("key-direction 1");
            sb.AppendLine($"<tls-auth>\n{Pki.StaticKey.Trim()}\n</tls-auth>");
        }
        else
        {
            sb.AppendLine($"<tls-crypt>\n{Pki.StaticKey.Trim()}\n</tls-crypt>");
        }

        sb.AppendLine(s.ExtraProfile);
        return sb.ToString();
    }

    private Dictionary<string, string>? _extraServerFiles;

    public async Task StartServerAsync(Dictionary<string, string>? extraFiles = null)
    {
        _extraServerFiles = extraFiles ?? _extraServerFiles;
        var files = new Dictionary<string, string>
        {
            ["ca.crt"] = Pki.CaPem,
            ["server.crt"] = Pki.ServerCertPem,
            ["server.key"] = Pki.ServerKeyPem,
            ["ta.key"] = Pki.StaticKey,
        };
        foreach (var (k, v) in _extraServerFiles ?? [])
        {
            files[k] = v;
        }

        Server = OpenVpnProcess.Start(Srv, ServerConfig(), files);
        foreach (var name in (_extraServerFiles ?? []).Keys.Where(n => n.EndsWith(".sh", StringComparison.Ordinal)))
        {
            File.SetUnixFileMode(Path.Combine(Server.WorkDir, name), UnixFileMode.UserRead | UnixFileMode.UserExecute | UnixFileMode.UserWrite);
        }

        await Server.WaitInitializedAsync(TimeSpan.FromSeconds(30));
    }

    public async Task StopServerAsync()
    {
        if (Server is not null)
        {
            await Server.StopAsync(TimeSpan.FromSeconds(10));
            await Server.DisposeAsync();
            Server = null;
        }
    }

    public static string OvpnasDll => Path.Combine(AppContext.BaseDirectory, "ovpnas.dll");

    public string ProfilePath => Path.Combine(WorkDir, "client.ovpn");

    public NetNsProcess StartClient(string? profileText = null)
    {
        File.WriteAllText(ProfilePath, profileText ?? Profile());
        File.SetUnixFileMode(ProfilePath, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        Client = Cli.StartIn(WorkDir, "dotnet", OvpnasDll, "connect", ProfilePath, "--data-dir", DataDir);
        return Client;
    }

    [GeneratedRegex("Initialization Sequence Completed")]
    public static partial Regex Initialized();

    public async Task WaitClientConnectedAsync(int fromLine = 0, int seconds = 40)
    {
        try
        {
            await Client!.WaitForLineAsync(Initialized(), TimeSpan.FromSeconds(seconds), fromLine);
        }
        catch (Exception e) when (e is TimeoutException or InvalidOperationException)
        {
            throw new Xunit.Sdk.XunitException($"client did not connect: {e.Message}\n--- client ---\n{Client!.Tail(60)}\n--- server ---\n{Server?.Process.Tail(40)}");
        }
    }

    public string Logs() => $"--- client ---\n{Client?.Tail(60)}\n--- server ---\n{Server?.Process.Tail(40)}";

    public async ValueTask DisposeAsync()
    {
        if (Client is not null)
        {
            Client.Signal(Ovpn.Platform.Linux.LinuxProcess.SIGTERM);
            await Client.WaitForExitAsync(TimeSpan.FromSeconds(10));
            await Client.DisposeAsync();
        }

        if (Server is not null)
        {
            await Server.DisposeAsync();
        }

        await Cli.DisposeAsync();
        await Srv.DisposeAsync();
        Pki.Dispose();
        try
        {
            Directory.Delete(WorkDir, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
