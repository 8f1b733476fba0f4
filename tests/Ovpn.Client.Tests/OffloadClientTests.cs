// SPDX-License-Identifier: MIT
using System.Net;
using System.Text.Json;
using System.Text.RegularExpressions;
using Ovpn.ControlPlane.Client;
using Ovpn.Protocol.Keys;
using Ovpn.Testing;

namespace Ovpn.Client.Tests;

/// <summary>
/// `ovpnas serve` (optionally with vpn.server.daemon.ovpndco=true) in one namespace and
/// `ovpnas connect --dco MODE` in another, with the profile `ovpnas profile` writes.
/// </summary>
internal sealed partial class OwnServerRig : IAsyncDisposable
{
    public static readonly IPAddress Gateway = IPAddress.Parse("172.27.224.1");

    private OwnServerRig(NetNs srv, NetNs cli, string dir)
    {
        Srv = srv;
        Cli = cli;
        Dir = dir;
    }

    public NetNs Srv { get; }
    public NetNs Cli { get; }
    public string Dir { get; }
    public NetNsProcess? Server { get; private set; }
    public NetNsProcess? Client { get; private set; }
    public string ServerData => Path.Combine(Dir, "srv");
    public string ClientData => Path.Combine(Dir, "cli");
    public string ProfilePath => Path.Combine(Dir, "alice.ovpn");

    [GeneratedRegex("listening on UDP")]
    private static partial Regex Listening();

    [GeneratedRegex(@"data channel( offload)?: ")]
    public static partial Regex DataChannelLine();

    /// <summary>Initialises the server's data dir with <paramref name="config"/> (sacli ConfigPut),
    /// user alice and her profile (UDP remotes only unless <paramref name="tcp"/>), and starts the server.</summary>
    public static async Task<OwnServerRig> StartAsync(bool tcp, string extraProfile = "", params (string Key, string Value)[] config)
    {
        Requirements.RequireOrFail(Requirement.Root, Requirement.Tun);
        NetNs.CleanupStale();
        var (srv, cli) = NetNs.CreateVethPair("10.77.0.1/24", "10.77.0.2/24");
        var rig = new OwnServerRig(srv, cli, Directory.CreateTempSubdirectory("ovpnt-client-dco-").FullName);
        try
        {
            rig.Ovpnas("init", "--hostname", "10.77.0.1");
            foreach (var (k, v) in config)
            {
                rig.Ovpnas("sacli", "-k", k, "-v", v, "ConfigPut");
            }

            rig.Ovpnas("user", "add", "alice");
            rig.Ovpnas("profile", "alice", "--out", rig.ProfilePath);
            var lines = File.ReadAllText(rig.ProfilePath).Split('\n')
                .Where(l => !l.StartsWith("remote ", StringComparison.Ordinal) || l.Contains(tcp ? "tcp" : "udp", StringComparison.Ordinal));
            string text = string.Join('\n', lines) + "\n" + extraProfile + "\n";
            Assert.Contains("remote ", text, StringComparison.Ordinal);
            File.WriteAllText(rig.ProfilePath, text);
            rig.Server = srv.Start("dotnet", ClientRig.OvpnasDll, "serve", "--data-dir", rig.ServerData);
            await rig.Server.WaitForLineAsync(Listening(), TimeSpan.FromSeconds(60));
            return rig;
        }
        catch
        {
            await rig.DisposeAsync();
            throw;
        }
    }

    private void Ovpnas(params string[] args)
    {
        var r = Srv.Exec(TimeSpan.FromSeconds(60), "dotnet", [ClientRig.OvpnasDll, .. args, "--data-dir", ServerData]);
        Assert.True(r.ExitCode == 0, r.ToString());
    }

    /// <summary>Starts `ovpnas connect PROFILE [--dco MODE]` and waits for the tunnel and its data-path line.</summary>
    public async Task<string> ConnectAsync(string? dco)
    {
        string[] args = [ClientRig.OvpnasDll, "connect", ProfilePath, "--data-dir", ClientData];
        Client = Cli.StartIn(Dir, "dotnet", dco is null ? args : [.. args, "--dco", dco]);
        try
        {
            await Client.WaitForLineAsync(ClientRig.Initialized(), TimeSpan.FromSeconds(45));
            return await Client.WaitForLineAsync(DataChannelLine(), TimeSpan.FromSeconds(5));
        }
        catch (Exception e) when (e is TimeoutException or InvalidOperationException)
        {
            throw new Xunit.Sdk.XunitException($"client did not connect: {e.Message}\n{Logs()}");
        }
    }

    /// <summary>`ovpnas connect --status` of the running client, parsed.</summary>
    public JsonElement Status()
    {
        var st = Cli.Exec(TimeSpan.FromSeconds(30), "dotnet", ClientRig.OvpnasDll, "connect", "--status", "--data-dir", ClientData);
        Assert.True(st.ExitCode == 0, st.ToString());
        using var doc = JsonDocument.Parse(st.Stdout);
        return doc.RootElement.Clone();
    }

    public string Logs() => $"--- client ---\n{Client?.Tail(40)}\n--- server ---\n{Server?.Tail(40)}";

    public async ValueTask DisposeAsync()
    {
        foreach (var p in new[] { Client, Server })
        {
            if (p is not null)
            {
                p.Signal(Ovpn.Platform.Linux.LinuxProcess.SIGTERM);
                await p.WaitForExitAsync(TimeSpan.FromSeconds(10));
                await p.DisposeAsync();
            }
        }

        await Cli.DisposeAsync();
        await Srv.DisposeAsync();
        try
        {
            Directory.Delete(Dir, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

/// <summary>Our client with its data channel offloaded (`--dco userspace`, and the default auto) or not (`--dco off`, `disable-dco`).</summary>
public sealed class OffloadClientTests
{
    private static readonly (string, string) ServerOffload = ("vpn.server.daemon.ovpndco", "true");

    [RequiresTheory(Requirement.Root, Requirement.Tun)]
    [InlineData(false)]
    [InlineData(true)]
    public async Task OffloadedClientAgainstOffloadedServerCarries50MbIntact(bool tcp)
    {
        await using var rig = await OwnServerRig.StartAsync(tcp, "", ServerOffload);
        Assert.Contains(rig.Server!.Lines, l => l.Contains("data channel offload: active: ovpnas-offload", StringComparison.Ordinal));
        // Read-side TSO on both ends (TUN TSO is in every kernel this runs on): the server's download
        // and the client's upload read TCP super-packets and segment them (TcpSegmenter).
        Assert.Contains(rig.Server!.Lines, l => l.Contains("data channel offload: active:", StringComparison.Ordinal) && l.Contains("tun tso on", StringComparison.Ordinal));
        string line = await rig.ConnectAsync("userspace");
        Assert.Contains("data channel offload: ovpnas-offload (userspace, 2 TUN queues", line, StringComparison.Ordinal);
        Assert.Contains("tun tso on", line, StringComparison.Ordinal);
        Assert.Contains("--dco userspace", line, StringComparison.Ordinal);
        Assert.Equal(!tcp, rig.Client!.Lines.Any(l => l.Contains("UDP socket handed over", StringComparison.Ordinal)));
        // The server carries this client in its offload engine too.
        await rig.Server.WaitForLineAsync(new Regex("alice/.*data path offload"), TimeSpan.FromSeconds(10));

        var ping = await TrafficCheck.PingAsync(rig.Cli, OwnServerRig.Gateway, count: 3);
        Assert.True(ping.Loss == 0, $"loss {ping.Loss}\n{rig.Logs()}");
        var up = await TrafficCheck.TransferAsync(rig.Cli, rig.Srv, OwnServerRig.Gateway, 50L << 20, TimeSpan.FromSeconds(180));
        Assert.Equal(50L << 20, up.Bytes);
        // Download through the server's TSO reader: the receiver checks length and SHA-256.
        var down = await TrafficCheck.TransferAsync(rig.Srv, rig.Cli, IPAddress.Parse(ClientVpnAddress(rig)), 20L << 20, TimeSpan.FromSeconds(120), seed: 9);
        Assert.Equal(20L << 20, down.Bytes);

        // The status file is rewritten once a second: wait (bounded) until it covers the transfer.
        var st = rig.Status();
        for (int i = 0; i < 10 && st.GetProperty("vpnTxBytes").GetInt64() < 50L << 20; i++)
        {
            await Task.Delay(500);
            st = rig.Status();
        }

        Assert.Equal("connected", st.GetProperty("state").GetString());
        Assert.StartsWith("ovpnas-offload (userspace", st.GetProperty("path").GetString(), StringComparison.Ordinal);
        Assert.Equal("AES-256-GCM", st.GetProperty("cipher").GetString());
        Assert.Equal(JsonValueKind.Number, st.GetProperty("peerId").ValueKind);
        Assert.True(st.GetProperty("vpnTxBytes").GetInt64() >= 50L << 20, st.ToString());
        Assert.True(st.GetProperty("linkTxBytes").GetInt64() > st.GetProperty("vpnTxBytes").GetInt64(), st.ToString());
        Assert.True(st.GetProperty("vpnRxBytes").GetInt64() > 0, st.ToString());
    }

    [RequiresFact(Requirement.Root, Requirement.Tun)]
    public async Task DefaultAutoPicksTheUserspaceOffloadEngine()
    {
        await using var rig = await OwnServerRig.StartAsync(false);
        string line = await rig.ConnectAsync(null);
        Assert.Contains("data channel offload: ovpnas-offload", line, StringComparison.Ordinal);
        Assert.Contains("auto: ", line, StringComparison.Ordinal);
        Assert.Equal(0.0, (await TrafficCheck.PingAsync(rig.Cli, OwnServerRig.Gateway, count: 3)).Loss);
        var down = await TrafficCheck.TransferAsync(rig.Srv, rig.Cli, IPAddress.Parse(ClientVpnAddress(rig)), 8L << 20, TimeSpan.FromSeconds(60), seed: 5);
        Assert.Equal(8L << 20, down.Bytes);
    }

    [RequiresFact(Requirement.Root, Requirement.Tun)]
    public async Task RenegotiatesUnderLoadWithBothSidesOffloaded()
    {
        await using var rig = await OwnServerRig.StartAsync(false, "", ServerOffload, ("vpn.server.reneg_sec", "8"));
        await rig.ConnectAsync("userspace");
        var until = DateTime.UtcNow.AddSeconds(22);
        int transfers = 0;
        while (DateTime.UtcNow < until)
        {
            var t = await TrafficCheck.TransferAsync(rig.Cli, rig.Srv, OwnServerRig.Gateway, 4 << 20, TimeSpan.FromSeconds(30));
            Assert.Equal(4 << 20, t.Bytes);
            transfers++;
        }

        Assert.True(transfers > 2);
        Assert.True(rig.Client!.Lines.Any(l => l.Contains("key-id 1 is now primary", StringComparison.Ordinal)), rig.Logs());
        Assert.True(rig.Client.Lines.Any(l => l.Contains("key-id 2 is now primary", StringComparison.Ordinal)), rig.Logs());
        var ping = await TrafficCheck.PingAsync(rig.Cli, OwnServerRig.Gateway, count: 3);
        Assert.True(ping.Loss == 0, $"ping after renegotiation: loss {ping.Loss}\n{rig.Logs()}");
        var st = rig.Status();
        Assert.StartsWith("ovpnas-offload", st.GetProperty("path").GetString(), StringComparison.Ordinal);
        if (st.GetProperty("drops").ValueKind == JsonValueKind.Object)
        {
            foreach (var d in st.GetProperty("drops").EnumerateObject())
            {
                Assert.True(d.Name is not ("UnknownKey" or "AuthFailed" or "Replay"), $"client dropped {d.Value} packets: {d.Name}");
            }
        }
    }

    [RequiresFact(Requirement.Root, Requirement.Tun)]
    public async Task DcoOffKeepsTheManagedEngine()
    {
        await using var rig = await OwnServerRig.StartAsync(false, "", ServerOffload);
        string line = await rig.ConnectAsync("off");
        Assert.Contains("data channel: ovpnas-userspace (managed engine", line, StringComparison.Ordinal);
        Assert.Contains("offload off: --dco off", line, StringComparison.Ordinal);
        Assert.DoesNotContain(rig.Client!.Lines, l => l.Contains("UDP socket handed over", StringComparison.Ordinal));
        Assert.Equal(0.0, (await TrafficCheck.PingAsync(rig.Cli, OwnServerRig.Gateway, count: 3)).Loss);
        Assert.Equal(4 << 20, (await TrafficCheck.TransferAsync(rig.Cli, rig.Srv, OwnServerRig.Gateway, 4 << 20, TimeSpan.FromSeconds(60))).Bytes);
        Assert.StartsWith("ovpnas-userspace (managed", rig.Status().GetProperty("path").GetString(), StringComparison.Ordinal);
    }

    [RequiresFact(Requirement.Root, Requirement.Tun)]
    public async Task ProfileDisableDcoSelectsTheManagedEngine()
    {
        await using var rig = await OwnServerRig.StartAsync(false, "disable-dco");
        string line = await rig.ConnectAsync(null);
        Assert.Contains("offload off: disable-dco in profile", line, StringComparison.Ordinal);
        Assert.Equal(0.0, (await TrafficCheck.PingAsync(rig.Cli, OwnServerRig.Gateway, count: 3)).Loss);
        Assert.StartsWith("ovpnas-userspace (managed", rig.Status().GetProperty("path").GetString(), StringComparison.Ordinal);
    }

    [RequiresFact(Requirement.Root, Requirement.Tun)]
    public async Task DcoKernelFailsLoudly()
    {
        await using var rig = await OwnServerRig.StartAsync(false);
        if (Ovpn.Platform.Dco.KernelDco.Probe().Usable)
        {
            // A host with the module: --dco kernel must then really run on it (P2P ovpn-dco device).
            string line = await rig.ConnectAsync("kernel");
            Assert.Contains("data channel offload: kernel ovpn", line, StringComparison.Ordinal);
            Assert.StartsWith("kernel ovpn", rig.Status().GetProperty("path").GetString(), StringComparison.Ordinal);
            return;
        }

        var r = rig.Cli.Exec(TimeSpan.FromSeconds(60), "dotnet", ClientRig.OvpnasDll, "connect", rig.ProfilePath, "--dco", "kernel", "--data-dir", rig.ClientData);
        Assert.NotEqual(0, r.ExitCode);
        // This host has no usable module (the VM test tests/kernel-dco covers the kernel path): the client
        // refuses before connecting and says why, instead of running another engine than asked.
        Assert.Contains("--dco kernel", r.Stderr, StringComparison.Ordinal);
        Assert.Contains("kernel DCO unusable", r.Stderr, StringComparison.Ordinal);
        Assert.Contains("NotSupportedException", r.Stderr, StringComparison.Ordinal);
    }

    private static string ClientVpnAddress(OwnServerRig rig)
    {
        string? vpn = rig.Status().GetProperty("vpnAddress").GetString();
        Assert.NotNull(vpn);
        return vpn.Split('/')[0];
    }
}
