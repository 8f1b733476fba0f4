// SPDX-License-Identifier: MIT
using System.Runtime.InteropServices;
using Ovpn.Admin;
using Ovpn.ControlPlane;
using Ovpn.ControlPlane.Config;
using Ovpn.ControlPlane.Sessions;
using Ovpn.Server;
using Ovpn.Server.Management;

namespace Ovpn.Cli;

/// <summary>`ovpnas serve`: composition of the running server (listeners, data plane, management).</summary>
public static class ServeCommand
{
    /// <summary>ovpnas serve: runs the VPN server in the foreground until SIGINT/SIGTERM or `sacli stop`.</summary>
    public static async Task<int> RunAsync(string dataDir, CancellationToken ct)
    {
        if (Environment.GetEnvironmentVariable("OVPNAS_LOG_LEVEL") is { } lvl && Enum.TryParse<LogLevel>(lvl, true, out var level))
        {
            Log.MinLevel = level;
        }

        var (listen, control, settings) = ServerFactory.Load(dataDir);
        control = DcoPolicy.Apply(control, settings);
        if (!settings.DaemonEnabled)
        {
            Console.Error.WriteLine("ovpnas: vpn.server.daemon.enable is false; not starting");
            return 1;
        }

        var stop = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; stop.TrySetResult(); });
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; stop.TrySetResult(); });
        using var reg = ct.Register(() => stop.TrySetResult());

        // `sacli start` with changes that cannot be applied live: the new configuration is loaded
        // (and so validated) inside the request, then the loop below swaps the host.
        var restart = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        (ListenOptions, ControlPlaneOptions, ServerSettings)? pending = null;
        var target = new ServerManagementTarget(dataDir, () => stop.TrySetResult());
        target.RestartRequested += _ =>
        {
            var (l, c, s) = ServerFactory.Load(dataDir);
            pending = (l, DcoPolicy.Apply(c, s), s);
            Volatile.Read(ref restart).TrySetResult();
        };

        await using var mgmt = ManagementServer.Start(target, dataDir);
        await using var admin = await StartAdminAsync(target, dataDir, settings).ConfigureAwait(false);
        while (true)
        {
            var host = new ServerHost(listen, control);
            try
            {
                host.Start();
                host.AttachSettings(settings);
                target.Host = host;
                Log.Info("server", $"data plane: {host.DataPlane.EngineName} {host.DataPlane.EngineVersion}");
                Log.Info("server", "Initialization Sequence Completed");
                var which = await Task.WhenAny(stop.Task, Volatile.Read(ref restart).Task).ConfigureAwait(false);
                target.Host = null;
                if (which == stop.Task)
                {
                    return 0;
                }
            }
            finally
            {
                target.Host = null;
                await host.StopAsync().ConfigureAwait(false);
            }

            Volatile.Write(ref restart, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));
            (listen, control, settings) = pending!.Value;
            Log.Info("server", "restarting the VPN service with the new configuration");
        }
    }

    /// <summary>
    /// The admin web UI (HTTPS on cs.https.port). OVPNAS_ADMIN=off disables it; a port that cannot
    /// be bound is logged and the VPN service runs on without the UI.
    /// </summary>
    private static async Task<IAsyncDisposable?> StartAdminAsync(IManagementTarget target, string dataDir, ServerSettings settings)
    {
        if (string.Equals(Environment.GetEnvironmentVariable("OVPNAS_ADMIN"), "off", StringComparison.OrdinalIgnoreCase))
        {
            return null;
        }

        try
        {
            return await AdminHost.StartAsync(target, dataDir, new AdminOptions { Port = settings.HttpsPort }).ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException or InvalidOperationException)
        {
            Log.Error("admin", $"admin web UI not started on port {settings.HttpsPort}: {e.Message}");
            return null;
        }
    }
}
