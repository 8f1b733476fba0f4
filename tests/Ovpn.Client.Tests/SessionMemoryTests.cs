// SPDX-License-Identifier: MIT
using System.Net;
using System.Threading.Channels;
using Ovpn.ControlPlane.Client;
using Ovpn.ControlPlane.Config;
using Ovpn.ControlPlane.Pki;
using Ovpn.ControlPlane.Sessions;
using Ovpn.ControlPlane.Users;
using Ovpn.DataPlane;
using Ovpn.DataPlane.Engine;
using Ovpn.Protocol.Keys;
using Xunit.Abstractions;

namespace Ovpn.Client.Tests;

/// <summary>
/// Per-peer memory of idle server sessions: once a key state is established and idle, the server
/// session releases what only the handshake needed (the TLS read buffer, the reliability layer's
/// windows), and a renegotiation afterwards still works. Our client against our server over an
/// in-memory wire, as in <see cref="InMemoryHandshakeTests"/>.
/// </summary>
public sealed class SessionMemoryTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "ovpnas-sessmem-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        try
        {
            Directory.Delete(_dir, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    private (ClientProfile Profile, ControlPlaneOptions Control) Setup()
    {
        var db = OvpnDatabase.Create(_dir);
        var ca = CertificateAuthority.Initialize(db, "127.0.0.1");
        var config = new ConfigStore(db);
        config.Put("vpn.server.tls_cc_security", "tls-crypt");
        var users = new UserStore(db);
        users.Add("alice");
        var profile = ClientProfile.Parse(ClientProfileBuilder.Build(config, ca, users, "alice"), _dir);
        Assert.Empty(profile.Errors);
        var (_, control, _) = Ovpn.Server.ServerFactory.Load(_dir);
        return (profile, control);
    }

    [Fact]
    public async Task IdleEstablishedSessionReleasesHandshakeStateAndStillRenegotiates()
    {
        var (profile, control) = Setup();
        using var mgr = new SessionManager(control);
        using var serverPlane = new ManagedDataPlane(null, mgr);
        mgr.Paths = new DaemonSelector([new DataPath("memory", serverPlane, control.Pool, isOffload: false, "mem")], []);

        var wire = new MemoryWire(loss: 0, seed: 1);
        var clientPath = new SignalClientPath();
        var conn = new ClientConnection(profile, profile.Remotes[0], wire.ClientEnd, clientPath);
        wire.DeliverToServer = p => serverPlane.OnLinkPacket(wire.ServerEnd, p, new byte[4096]);
        wire.DeliverToClient = conn.PostPacket;
        using var ticker = new Timer(_ => conn.PostTick(), null, 100, 100);
        var authenticated = new TaskCompletionSource<ServerSession>(TaskCreationOptions.RunContinuationsAsynchronously);
        mgr.SessionAuthenticated += s => authenticated.TrySetResult(s);
        conn.Start();
        await clientPath.Established.Task.WaitAsync(TimeSpan.FromSeconds(60));
        var session = await authenticated.Task.WaitAsync(TimeSpan.FromSeconds(10));
        var wait = TimeSpan.FromSeconds(5);

        // Idle (everything acked, nothing pending for 2 s): the session trims key state 0 on its timer.
        Assert.True(SpinWait.SpinUntil(() => session.GetKeyStateForTests(0, wait) is { Trimmed: true }, TimeSpan.FromSeconds(30)),
            $"key state 0 was not trimmed: {session.GetKeyStateForTests(0, wait)}");
        var st = session.GetKeyStateForTests(0, wait)!;
        Assert.True(st.DataKeysReady);
        Assert.True(st.ReliabilityIdle);
        Assert.False(st.HasReadBuffer, "the TLS reader holds a buffer while idle");
        Assert.Equal(0, st.ReliabilityBufferedBytes);
        Assert.True(SpinWait.SpinUntil(() => session.IsQuietForTests, TimeSpan.FromSeconds(10)), "a trimmed session is not marked quiet");
        Assert.True(st.TlsBuffersReleased, "OpenSSL keeps the idle key state's record buffers (SSL_MODE_RELEASE_BUFFERS not set)");

        // A renegotiation after that still works: the client starts key-id 1, both sides end up on it.
        conn.PostRenegotiate("test");
        var second = await clientPath.Secondary.Task.WaitAsync(TimeSpan.FromSeconds(60));
        Assert.Equal(1, second.KeyId);
        Assert.True(SpinWait.SpinUntil(() => serverPlane.GetKeyId(session.PeerId!.Value, KeySlot.Primary) == 1, TimeSpan.FromSeconds(30)));

        // The replaced key 0 is retired once the swap has settled; key 1 is trimmed in turn.
        Assert.True(SpinWait.SpinUntil(() => session.GetKeyStateForTests(0, wait) is null, TimeSpan.FromSeconds(30)), "key state 0 was not retired");
        Assert.True(SpinWait.SpinUntil(() => session.GetKeyStateForTests(1, wait) is { Trimmed: true }, TimeSpan.FromSeconds(30)), "key state 1 was not trimmed");

        // The trimmed key state still carries control messages: the client's EXIT ends the session.
        var closed = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        mgr.SessionClosed += (_, reason) => closed.TrySetResult(reason);
        Assert.True(conn.CcExit, "the server did not announce cc-exit");
        await conn.SendExitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal("client exited", await closed.Task.WaitAsync(TimeSpan.FromSeconds(30)));
        conn.PostStop(ClientExitKind.Stopped, "test done");
    }

    /// <summary>
    /// Not a test of behaviour: a measurement (set OVPN_MEASURE_SESSIONS=N) of managed heap and RSS
    /// per idle in-memory session. Skipped by default.
    /// </summary>
    [Fact]
    public async Task MeasureIdleSessionMemory()
    {
        if (!int.TryParse(Environment.GetEnvironmentVariable("OVPN_MEASURE_SESSIONS"), out int n) || n <= 0)
        {
            return;
        }

        var (profile, control) = Setup();
        using var mgr = new SessionManager(control);
        using var serverPlane = new ManagedDataPlane(null, mgr);
        mgr.Paths = new DaemonSelector([new DataPath("memory", serverPlane, control.Pool, isOffload: false, "mem")], []);

        var conns = new List<ClientConnection>();
        async Task ConnectBatch(int count)
        {
            var waits = new List<Task>();
            for (int i = 0; i < count; i++)
            {
                var wire = new MemoryWire(loss: 0, seed: 1);
                var path = new SignalClientPath();
                var conn = new ClientConnection(profile, profile.Remotes[0], wire.ClientEnd, path);
                wire.DeliverToServer = p => serverPlane.OnLinkPacket(wire.ServerEnd, p, new byte[4096]);
                wire.DeliverToClient = conn.PostPacket;
                conn.Start();
                conns.Add(conn);
                waits.Add(path.Established.Task.WaitAsync(TimeSpan.FromSeconds(120)));
            }

            await Task.WhenAll(waits);
        }

        await ConnectBatch(20); // warm up JIT, pools
        await Task.Delay(3000);
        long m0 = Settle(), r0 = Rss();
        for (int done = 0; done < n; done += 50)
        {
            await ConnectBatch(Math.Min(50, n - done));
        }

        await Task.Delay(3000);
        long m1 = Settle(), r1 = Rss();
        // The clients live in the same process: this is client + server per pair.
        output.WriteLine($"sessions={n} managed_per_pair={(m1 - m0) / 1024.0 / n:F1}KiB rss_per_pair={(r1 - r0) / 1024.0 / n:F1}KiB");
        Console.WriteLine($"sessions={n} managed_per_pair={(m1 - m0) / 1024.0 / n:F1}KiB rss_per_pair={(r1 - r0) / 1024.0 / n:F1}KiB");
        if (int.TryParse(Environment.GetEnvironmentVariable("OVPN_MEASURE_HOLD"), out int hold) && hold > 0)
        {
            // Time to take a heap dump of this process (dotnet-gcdump collect -p PID).
            Console.WriteLine($"holding pid={Environment.ProcessId} for {hold}s");
            await Task.Delay(TimeSpan.FromSeconds(Math.Min(hold, 600)));
        }

        foreach (var c in conns)
        {
            c.PostStop(ClientExitKind.Stopped, "done");
        }
    }

    private static long Settle()
    {
        GC.Collect(2, GCCollectionMode.Forced, true, true);
        GC.WaitForPendingFinalizers();
        GC.Collect(2, GCCollectionMode.Forced, true, true);
        return GC.GetTotalMemory(true);
    }

    private static long Rss()
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
        {
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
            {
                return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) * 1024;
            }
        }

        return 0;
    }

    private sealed class SignalClientPath : IClientDataPath
    {
        public TaskCompletionSource Established { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource<KeyConfig> Secondary { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public void Establish(PushedConfig config, KeyConfig firstKey) => Established.TrySetResult();

        public void InstallSecondary(KeyConfig key) => Secondary.TrySetResult(key with { });

        public void SwapKeys()
        {
        }
    }
}
