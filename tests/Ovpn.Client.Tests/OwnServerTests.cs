// SPDX-License-Identifier: MIT
using System.Net;
using System.Text.RegularExpressions;
using Ovpn.Testing;

namespace Ovpn.Client.Tests;

/// <summary>`ovpnas connect` against `ovpnas serve`, with the profile `ovpnas profile` writes.</summary>
public sealed partial class OwnServerTests
{
    [GeneratedRegex("listening on UDP")]
    private static partial Regex Listening();

    [RequiresTheory(Requirement.Root, Requirement.Tun)]
    [InlineData(false)]
    [InlineData(true)]
    public async Task ConnectsToOwnServer(bool tcp)
    {
        Requirements.RequireOrFail(Requirement.Root, Requirement.Tun);
        NetNs.CleanupStale();
        var (srv, cli) = NetNs.CreateVethPair("10.77.0.1/24", "10.77.0.2/24");
        string dir = Directory.CreateTempSubdirectory("ovpnt-client-own-").FullName;
        NetNsProcess? server = null, client = null;
        try
        {
            string data = Path.Combine(dir, "srv");
            string dll = ClientRig.OvpnasDll;
            Check(srv.Exec(TimeSpan.FromSeconds(60), "dotnet", dll, "init", "--data-dir", data, "--hostname", "10.77.0.1"));
            Check(srv.Exec(TimeSpan.FromSeconds(60), "dotnet", dll, "user", "add", "alice", "--data-dir", data));
            string profile = Path.Combine(dir, "alice.ovpn");
            Check(srv.Exec(TimeSpan.FromSeconds(60), "dotnet", dll, "profile", "alice", "--data-dir", data, "--out", profile));
            string text = File.ReadAllText(profile);
            if (tcp)
            {
                // Keep only the TCP remote(s) of the generated profile.
                var lines = text.Split('\n').Where(l => !l.StartsWith("remote ", StringComparison.Ordinal) || l.Contains("tcp", StringComparison.Ordinal));
                text = string.Join('\n', lines);
                Assert.Contains("remote ", text, StringComparison.Ordinal);
            }

            File.WriteAllText(profile, text);
            server = srv.Start("dotnet", dll, "serve", "--data-dir", data);
            await server.WaitForLineAsync(Listening(), TimeSpan.FromSeconds(30));
            client = cli.StartIn(dir, "dotnet", dll, "connect", profile, "--data-dir", Path.Combine(dir, "cli"));
            try
            {
                await client.WaitForLineAsync(ClientRig.Initialized(), TimeSpan.FromSeconds(40));
            }
            catch (Exception e) when (e is TimeoutException or InvalidOperationException)
            {
                throw new Xunit.Sdk.XunitException($"{e.Message}\n--- server ---\n{server.Tail(40)}");
            }

            Assert.Contains(client.Lines, l => l.Contains(tcp ? "connected to tcp:" : "connected to udp:", StringComparison.Ordinal));
            var gw = IPAddress.Parse("172.27.224.1");
            var ping = await TrafficCheck.PingAsync(cli, gw, count: 3);
            Assert.True(ping.Loss == 0, $"loss {ping.Loss}\n{client.Tail(30)}\n{server.Tail(30)}");
            var t = await TrafficCheck.TransferAsync(cli, srv, gw, 4 << 20, TimeSpan.FromSeconds(60));
            Assert.Equal(4 << 20, t.Bytes);

            // Status file of the running client shows the path, cipher and peer-id.
            var st = cli.Exec(TimeSpan.FromSeconds(30), "dotnet", dll, "connect", "--status", "--data-dir", Path.Combine(dir, "cli"));
            Assert.True(st.ExitCode == 0, st.ToString());
            Assert.Contains("\"state\": \"connected\"", st.Stdout, StringComparison.Ordinal);
            Assert.Contains("\"cipher\": \"AES-256-GCM\"", st.Stdout, StringComparison.Ordinal);
            Assert.Contains("\"peerId\": ", st.Stdout, StringComparison.Ordinal);
        }
        finally
        {
            if (client is not null)
            {
                client.Signal(Ovpn.Platform.Linux.LinuxProcess.SIGTERM);
                await client.WaitForExitAsync(TimeSpan.FromSeconds(10));
                await client.DisposeAsync();
            }

            if (server is not null)
            {
                server.Signal(Ovpn.Platform.Linux.LinuxProcess.SIGTERM);
                await server.WaitForExitAsync(TimeSpan.FromSeconds(10));
                await server.DisposeAsync();
            }

            await cli.DisposeAsync();
            await srv.DisposeAsync();
            Directory.Delete(dir, recursive: true);
        }
    }

    private static void Check(ExecResult r) => Assert.True(r.ExitCode == 0, r.ToString());
}
